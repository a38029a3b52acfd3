"""Tenant isolation in S3: each API key names only its own locations (the keys file's `s3=`
option, or its folder under each allow-listed entry), and a forbidden object gets the same
404 as a missing one, from the audio service's `predict-s3` and from `/v1/jobs`.

Two keys throughout: alice (her folder, `<entry>/alice/`) and team (`s3=` locations).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.api_keys import ApiKeysFileError, hash_api_key, main, parse_api_keys
from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.audio.api import build_app
from services.audio.settings import AudioSettings
from services.jobs.settings import JobsSettings
from services.wire.s3_locations import (
    S3_SCOPE_HEADER,
    UNRESTRICTED,
    S3Allowlist,
    S3Scope,
    parse_object_uri,
    scope_from_header,
)
from tests.support.audio_clips import build_tiny_call_model, encode, tone
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import CLIENT_TIMEOUT, served_gateway, serving
from tests.support.processes import free_port
from tests.support.service_client import wait_ready

ALICE_KEY = "mtc_alice-isolation-key-0123456789"
TEAM_KEY = "mtc_team-isolation-key-9876543210"
ALICE = S3Scope("alice")
TEAM = S3Scope("team", ("calls/incoming/team-shared",))
NOT_FOUND = "no such object in the S3 locations this caller may read"


def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(
        f"alice {hash_api_key(ALICE_KEY)}\n"
        f"team {hash_api_key(TEAM_KEY)} s3=calls/incoming/team-shared,batch/out/team-shared\n",
        encoding="utf-8",
    )
    return path


# --------------------------------------------------------------------------- the keys file


def test_the_s3_option_lists_a_keys_own_locations(tmp_path: Path) -> None:
    alice, team = parse_api_keys(keys_file(tmp_path).read_text(), "keys.txt")

    assert alice.s3_scope == ALICE
    assert team.s3_scope == S3Scope("team", ("calls/incoming/team-shared", "batch/out/team-shared"))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("s3=", "s3=: '' is not `bucket` or `bucket/prefix`"),
        ("s3=calls/../secrets", "s3=: 'calls/../secrets' is not `bucket`"),
        ("s3=Calls/x", "s3=: 'Calls/x' is not `bucket`"),
        ("s3=calls/a,,calls/b", "s3=: '' is not `bucket`"),
        ("s3=" + ",".join(f"calls/{n}" for n in range(17)), "at most 16 s3= locations"),
    ],
)
def test_invalid_s3_options_are_refused_naming_the_line(option: str, message: str) -> None:
    with pytest.raises(ApiKeysFileError, match="keys.txt line 1: " + message.replace("(", r"\(")):
        parse_api_keys(f"alice {'0' * 64} {option}", "keys.txt")


def test_the_new_key_command_writes_the_s3_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "team", "--s3", "calls/incoming/team-shared"]) == 0

    file_line = capsys.readouterr().out.splitlines()[3].strip()
    (parsed,) = parse_api_keys(file_line, "printed line")
    assert parsed.s3_locations == ("calls/incoming/team-shared",)


# --------------------------------------------------------------------------- scopes


@pytest.mark.parametrize(
    ("scope", "uri", "opened"),
    [
        (UNRESTRICTED, "s3://calls/incoming/bob/a.wav", True),
        (ALICE, "s3://calls/incoming/alice/a.wav", True),
        (ALICE, "s3://calls/incoming/bob/a.wav", False),
        (ALICE, "s3://calls/incoming/alice.old/a.wav", False),
        (ALICE, "s3://calls/incoming/a.wav", False),
        (TEAM, "s3://calls/incoming/team-shared/a.wav", True),
        (TEAM, "s3://calls/incoming/team/a.wav", False),
        # Locations outside the allow-list open nothing, however they are written.
        (S3Scope("team", ("secrets",)), "s3://secrets/a.wav", False),
        (S3Scope("team", ("calls",)), "s3://calls/private/a.wav", False),
        (S3Scope("team", ("calls",)), "s3://calls/incoming/x/a.wav", True),
    ],
)
def test_a_scope_opens_only_its_own_part_of_the_allowlist(
    scope: S3Scope, uri: str, opened: bool
) -> None:
    allowlist = S3Allowlist(["calls/incoming"], setting_name="TEST", purpose="reading")

    assert allowlist.allows(parse_object_uri(uri), scope) is opened


def test_a_scope_travels_as_json_and_back() -> None:
    for scope in (UNRESTRICTED, ALICE, TEAM):
        assert S3Scope.from_json(scope.to_json()) == scope
        assert scope_from_header(scope.to_json()) == scope


@pytest.mark.parametrize(
    "header",
    [
        "",
        "alice",
        '{"tenant": 1}',
        '{"tenant": ""}',
        '{"tenant": "a", "locations": ["../x"]}',
        "[" * 100_000,
    ],
)
def test_a_scope_header_that_does_not_parse_opens_nothing(header: str) -> None:
    allowlist = S3Allowlist(["calls"], setting_name="TEST", purpose="reading")
    scope = scope_from_header(header)

    assert not allowlist.allows(parse_object_uri("s3://calls/any/a.wav"), scope)


def test_without_the_header_a_service_keeps_its_whole_allowlist() -> None:
    assert scope_from_header(None) == UNRESTRICTED


# --------------------------------------------------------------------------- the gateway


@pytest.fixture(scope="module")
def recording_service() -> Iterator[tuple[FakeTextService, str]]:
    service = FakeTextService("sentiment")
    with serving(service.create_app()) as url:
        yield service, url


def test_the_gateway_sends_each_keys_scope_and_drops_the_clients_own(
    tmp_path: Path, recording_service: tuple[FakeTextService, str]
) -> None:
    service, url = recording_service
    settings = GatewaySettings(upstreams={"sentiment": url}, api_keys_file=keys_file(tmp_path))
    forged = {S3_SCOPE_HEADER: UNRESTRICTED.to_json()}
    with served_gateway(settings) as gateway:
        for key in (ALICE_KEY, TEAM_KEY):
            response = gateway.post(
                "/v1/sentiment/predict",
                json={"text": ["fine"]},
                headers={"x-api-key": key, **forged},
            )
            assert response.status_code == 200

    alice_seen, team_seen = (request.headers for request in service.received[-2:])
    assert scope_from_header(alice_seen[S3_SCOPE_HEADER]) == ALICE
    assert scope_from_header(team_seen[S3_SCOPE_HEADER]).locations == (
        "calls/incoming/team-shared",
        "batch/out/team-shared",
    )


def test_without_keys_the_gateway_sends_no_scope_and_drops_the_clients(
    recording_service: tuple[FakeTextService, str],
) -> None:
    service, url = recording_service
    with served_gateway(GatewaySettings(upstreams={"sentiment": url})) as gateway:
        response = gateway.post(
            "/v1/sentiment/predict",
            json={"text": ["fine"]},
            headers={S3_SCOPE_HEADER: S3Scope("x", ("calls",)).to_json()},
        )

    assert response.status_code == 200
    assert S3_SCOPE_HEADER not in service.received[-1].headers


# --------------------------------------------------------------------------- predict-s3


@pytest.fixture(scope="module")
def audio_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_call_model(tmp_path_factory.mktemp("tiny-call"))


@pytest.fixture
def audio_service(audio_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The audio service over an in-process S3 (moto) holding alice's and bob's calls."""
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="calls")
        for owner in ("alice", "bob"):
            s3.put_object(Bucket="calls", Key=f"incoming/{owner}/call.wav", Body=encode(tone(1.0)))
        settings = AudioSettings(
            model_uri=str(audio_model_dir),
            asr_enabled=False,
            s3_input_allowlist=["calls/incoming"],
        )
        with TestClient(build_app(settings)) as client:
            wait_ready(client)
            yield client


def _predict_s3(client: TestClient, uri: str, scope: S3Scope | None) -> httpx.Response:
    headers = {S3_SCOPE_HEADER: scope.to_json()} if scope is not None else {}
    return client.post(
        "/v1/audio/predict-s3", json={"s3_uri": uri, "transcript": "help"}, headers=headers
    )


def test_predict_s3_reads_the_callers_own_recording(audio_service: TestClient) -> None:
    response = _predict_s3(audio_service, "s3://calls/incoming/alice/call.wav", ALICE)

    assert response.status_code == 200, response.text


def test_another_keys_recording_is_404_exactly_like_a_missing_one(
    audio_service: TestClient,
) -> None:
    bobs = _predict_s3(audio_service, "s3://calls/incoming/bob/call.wav", ALICE)
    missing = _predict_s3(audio_service, "s3://calls/incoming/alice/none.wav", ALICE)
    outside = _predict_s3(audio_service, "s3://calls/elsewhere/call.wav", ALICE)

    for response, uri in (
        (bobs, "s3://calls/incoming/bob/call.wav"),
        (missing, "s3://calls/incoming/alice/none.wav"),
        (outside, "s3://calls/elsewhere/call.wav"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": f"{uri}: {NOT_FOUND}", "error_type": "input_not_found"}


def test_a_service_called_without_a_scope_keeps_its_whole_allowlist(
    audio_service: TestClient,
) -> None:
    # A gateway without keys, or a caller inside the cluster (the network policies admit
    # only the gateway and the workers).
    response = _predict_s3(audio_service, "s3://calls/incoming/bob/call.wav", None)

    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- jobs


@pytest.fixture
def keyed_jobs(tmp_path: Path) -> Iterator[httpx.Client]:
    service = "http://127.0.0.1:9"  # never called: every request here stops at the gateway
    # Nothing listens on the broker's port: a submission that passed every check gets 503.
    jobs_settings = JobsSettings(
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        upstreams={"sentiment": service},
        input_allowlist=["batch/in/"],
        output_allowlist=["batch/out/"],
    )
    settings = GatewaySettings(upstreams={"sentiment": service}, api_keys_file=keys_file(tmp_path))
    with (
        serving(create_app(settings, jobs_settings)) as url,
        httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client,
    ):
        yield client


def _submit(client: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return client.post(
        "/v1/jobs",
        content=json.dumps({"task": "sentiment", **body}),
        headers={"x-api-key": key, "content-type": "application/json"},
    )


def test_a_job_on_another_keys_input_is_404_like_an_input_outside_every_location(
    keyed_jobs: httpx.Client,
) -> None:
    for uri in ("s3://batch/in/bob/reviews.csv", "s3://batch/in/reviews.csv", "s3://x/in/a.csv"):
        response = _submit(keyed_jobs, ALICE_KEY, input_uri=uri)

        assert response.status_code == 404, response.text
        assert response.json() == {"detail": f"{uri}: {NOT_FOUND}", "error_type": "input_not_found"}


def test_a_job_writing_into_another_keys_folder_is_403(keyed_jobs: httpx.Client) -> None:
    response = _submit(
        keyed_jobs,
        ALICE_KEY,
        input_uri="s3://batch/in/alice/reviews.csv",
        output_uri="s3://batch/out/bob/results.jsonl",
    )

    assert response.status_code == 403
    assert response.json() == {
        "detail": "s3://batch/out/bob/results.jsonl is outside the S3 locations open to "
        "this caller (s3://batch/out/alice/)",
        "error_type": "forbidden",
    }


def test_a_job_in_the_keys_own_folder_passes_every_location_check(
    keyed_jobs: httpx.Client,
) -> None:
    response = _submit(
        keyed_jobs,
        ALICE_KEY,
        input_uri="s3://batch/in/alice/reviews.csv",
        output_uri="s3://batch/out/alice/results.jsonl",
    )

    # Past the checks, the (unreachable) job store answers.
    assert response.status_code == 503
    assert response.json()["error_type"] == "job_queue_unavailable"


def test_a_key_with_s3_locations_uses_those_and_nothing_else(keyed_jobs: httpx.Client) -> None:
    own_output = _submit(
        keyed_jobs, TEAM_KEY, inputs=["fine"], output_uri="s3://batch/out/team-shared/r.csv"
    )
    folder_output = _submit(
        keyed_jobs, TEAM_KEY, inputs=["fine"], output_uri="s3://batch/out/team/r.csv"
    )
    # Its locations name no input location within the input allow-list.
    folder_input = _submit(keyed_jobs, TEAM_KEY, input_uri="s3://batch/in/team/r.csv")

    assert own_output.status_code == 503
    assert folder_output.status_code == 403
    assert folder_input.status_code == 404
