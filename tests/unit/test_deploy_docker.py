"""The Dockerfiles follow the image rules (deploy/dockerfile_lint.py) and the rules bite; the
build script picks its engine, base and torch source as docs/images.md says."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.dockerfile_lint import DOCKER_DIR, EXTRAS, kind_image_problems, parse, problems
from deploy.images import image_builds
from deploy.render import REPO

IMAGES = ("text", "pose", "audio", "gateway", "worker")
MODEL_IMAGES = ("text", "pose", "audio")
OFFLINE_BASE = "localhost/mtc-python:3.11-bookworm"
REGISTRY_BASE = "docker.io/library/python:3.11.11-slim-bookworm"


def dockerfile(image: str) -> str:
    return (DOCKER_DIR / f"{image}.Dockerfile").read_text()


@pytest.mark.parametrize("image", sorted(EXTRAS))
def test_dockerfile_follows_the_rules(image: str) -> None:
    assert problems(image, dockerfile(image)) == []


def test_every_kind_declares_an_image_the_build_can_make() -> None:
    assert kind_image_problems() == []
    builds = {build.name: build for build in image_builds()}
    assert tuple(builds) == IMAGES
    assert dict(builds["pose"].build_args) == {
        "SERVICE_EXTRA": "pose",
        "SERVICE_MODULE": "services.pose",
        "SYSTEM_PACKAGES": "libgl1,libglib2.0-0",
    }
    assert [name for name, build in builds.items() if build.model_image] == list(MODEL_IMAGES)


def test_the_service_image_runs_its_kinds_module_and_bakes_nothing_by_default() -> None:
    instructions = parse(dockerfile("service"))
    (bake,) = [i for i in instructions if i.keyword == "ARG" and "BAKE_MODEL_URI" in i.arguments]
    assert bake.arguments == 'BAKE_MODEL_URI=""'
    cmd = [i.arguments for i in instructions if i.keyword == "CMD"][-1]
    assert cmd == '["/bin/sh", "-c", "exec python -m \\"$SERVICE_MODULE\\""]'
    env = " ".join(i.arguments for i in instructions if i.keyword == "ENV")
    assert "SERVICE_MODULE=${SERVICE_MODULE}" in env
    assert not any(i.keyword == "COPY" and ".mtc" in i.arguments for i in instructions)


def test_worker_image_runs_the_worker_without_torch_or_model() -> None:
    instructions = parse(dockerfile("worker"))
    cmd = [i.arguments for i in instructions if i.keyword == "CMD"][-1]
    assert cmd == '["python", "-m", "services.jobs.worker"]'
    runs = " ".join(i.arguments for i in instructions if i.keyword == "RUN")
    assert '"/src[jobs]"' in runs
    assert not any("BAKE_MODEL_URI" in i.arguments for i in instructions)
    exposed = [i.arguments for i in instructions if i.keyword == "EXPOSE"]
    assert exposed == ["8105"], "the metrics port (MTC_JOBS_METRICS_PORT)"
    with_torch = dockerfile("worker").replace('"/src[jobs]"', '"/src[jobs]" torch==2.13.0')
    assert any("torch" in p for p in problems("worker", with_torch))


TEXT = dockerfile("service")
EXTRA = '"/src[${SERVICE_EXTRA}]"'
SECRET = "--mount=type=secret,id=pip_cert,target=/run/secrets/pip_cert,required=false"
WHEELS_MOUNT = "--mount=type=bind,from=wheels,target=/wheels"
# (what is broken, the broken Dockerfile, words the problem must contain)
BROKEN = [
    ("root user", TEXT.replace("USER 10001:10001", "USER root"), "non-root"),
    ("healthcheck", TEXT + "HEALTHCHECK CMD curl -f http://localhost:8000/health/live\n", "HEALTH"),
    ("every extra", TEXT.replace(EXTRA, '"/src[text,pose,audio]"'), "extras"),
    ("starter extra", TEXT.replace(EXTRA, '"/src[${SERVICE_EXTRA},starter]"'), "extras"),
    ("CUDA torch", TEXT.replace('"torch==$torch+cpu"', '"torch==$torch"'), "CPU build"),
    (
        "unlocked project",
        TEXT.replace(f"--constraint /src/constraints.txt {EXTRA}", EXTRA),
        "lock",
    ),
    (
        "unlocked torch",
        TEXT.replace('--constraint /src/constraints.txt "torch==', '"torch=='),
        "lock",
    ),
    (
        "single stage",
        "FROM python:3.11.11-slim-bookworm\nUSER 10001\nRUN pip install '/src[text]'\n",
        "multi-stage",
    ),
    ("unpinned base", TEXT.replace("python:3.11.11-slim-bookworm", "python:latest"), "pinned"),
    ("syntax line", "# syntax=docker/dockerfile:1.7\n" + TEXT, "syntax"),
    (
        "another torch index",
        TEXT.replace("--extra-index-url $TORCH_INDEX", "--extra-index-url https://example.com/cu"),
        "index",
    ),
    (
        "TORCH_INDEX default not the CPU index",
        TEXT.replace(
            "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu",
            "ARG TORCH_INDEX=https://download.pytorch.org/whl/cu121",
        ),
        "CPU index",
    ),
    (
        "index replacing PyPI",
        TEXT.replace(
            f"pip install --constraint /src/constraints.txt {EXTRA}",
            "pip install --index-url https://example.com/simple "
            f"--constraint /src/constraints.txt {EXTRA}",
        ),
        "--index-url",
    ),
    (
        "wheels from elsewhere",
        TEXT.replace("--find-links /wheels", "--find-links /tmp/wheels"),
        "/wheels",
    ),
    ("wheels not mounted", TEXT.replace(WHEELS_MOUNT + " \\\n    ", ""), "mounted"),
    (
        "wheels stage with content",
        TEXT.replace("FROM scratch AS wheels\n", "FROM python:3.11.11-slim-bookworm AS wheels\n"),
        "scratch",
    ),
    (
        "pip without the CA secret",
        TEXT.replace(SECRET + " \\\n    if", "if", 1),
        "pip_cert",
    ),
    (
        "CA bundle baked in",
        TEXT.replace("FROM deps AS build\n", "FROM deps AS build\nENV PIP_CERT=/etc/ca.crt\n"),
        "PIP_CERT",
    ),
    (
        "no model baking",
        TEXT.replace('ARG BAKE_MODEL_URI=""\n', ""),
        "BAKE_MODEL_URI",
    ),
]


@pytest.mark.parametrize(("what", "broken", "words"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_dockerfiles_are_caught(what: str, broken: str, words: str) -> None:
    assert broken != TEXT, f"the {what} mutation changed nothing"
    found = problems("service", broken)
    assert any(words in p for p in found), found


def test_a_service_image_that_stops_sharing_torch_is_caught() -> None:
    per_kind = TEXT.replace("ARG TORCH_INDEX\n", "ARG TORCH_INDEX\nARG SERVICE_EXTRA\n", 1)
    assert per_kind != TEXT
    assert any("reach the torch stage" in p for p in problems("service", per_kind))
    late = "COPY --from=torch /opt/venv /opt/venv\n"
    reordered = TEXT.replace(late, "", 1).replace(
        "COPY --from=deps /opt/layers", late + "COPY --from=deps /opt/layers"
    )
    assert reordered != TEXT
    assert any("does not start with COPY" in p for p in problems("service", reordered))


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*", "everything is excluded unless allowed"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "services/",
        "gateway/",
        "models/",
    }


# A stand-in for docker and podman (and for mmdebstrap and dpkg-query, which the offline base
# needs): each call is logged, `pull` and `docker info` answer as the test says, images exist
# as the test says, and every image has the test's size.
STUB = r"""#!/usr/bin/env bash
tool="$(basename "$0")"
echo "$tool $*" >>"$STUB_LOG"
case "$tool" in
  mmdebstrap)
    for arg in "$@"; do [[ "$arg" == *.tar ]] && : >"$arg"; done
    exit 0 ;;
  dpkg-query) echo "install ok installed"; exit 0 ;;
esac
while [[ "${1:-}" == --runtime || "${1:-}" == --cgroup-manager ]]; do shift 2; done
case "${1:-}" in
  --version) [[ "$tool" == podman ]] && echo "podman version 4.3.1" || echo "Docker 28.2.2" ;;
  info) exit "${STUB_DOCKER_INFO:-1}" ;;
  pull) exit "${STUB_PULL:-1}" ;;
  image)
    if [[ "$4" == *base-recipe* ]]; then echo "${STUB_BASE_RECIPE:-}"; exit 0; fi
    if [[ "$3" == --format ]]; then echo "${STUB_SIZE:-100000000}"; exit 0; fi
    for have in ${STUB_IMAGES:-}; do [[ "$3" == "$have" ]] && exit 0; done
    exit 1 ;;
esac
exit 0
"""


@pytest.fixture
def stub(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "podman", "mmdebstrap", "dpkg-query"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    cert = tmp_path / "ca.crt"
    cert.write_text("not a real bundle\n")
    return {
        # The stubs come first: they stand in for any real docker or podman on the machine.
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STUB_LOG": str(tmp_path / "calls.log"),
        "SIZES_FILE": str(tmp_path / "sizes.txt"),
        "WHEELS": str(wheels),
        "PIP_CERT": str(cert),
    }


def build_images(
    env: dict[str, str], **extra: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    result = subprocess.run(
        ["bash", str(DOCKER_DIR / "build-images.sh")],
        env={**env, **extra},
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    log = Path(env["STUB_LOG"])
    calls = log.read_text().splitlines() if log.exists() else []
    # Hosts with cgroup v1 get runc's flags ahead of every command; the rest does not vary.
    calls = [c.replace(" --runtime runc --cgroup-manager cgroupfs", "") for c in calls]
    return result, calls


def builds(calls: list[str]) -> list[str]:
    return [c for c in calls if re.match(r"^\S+ build ", c)]


def test_offline_the_base_is_made_from_debian_and_torch_comes_from_the_wheels(
    stub: dict[str, str],
) -> None:
    result, calls = build_images(stub, REGISTRY="registry.example.com/mtc")
    assert result.returncode == 0, result.stderr
    assert f"podman pull {REGISTRY_BASE}" in calls
    (debootstrap,) = [c for c in calls if c.startswith("mmdebstrap ")]
    assert "--variant=minbase" in debootstrap
    assert "python3,python3-venv,python-is-python3,ca-certificates,passwd" in debootstrap
    assert any(c.startswith("podman import ") and c.endswith(OFFLINE_BASE) for c in calls)
    secret = f"--secret id=pip_cert,src={stub['PIP_CERT']}"
    wheels = f"--build-context wheels={stub['WHEELS']}"
    expected = []
    for image in IMAGES:
        dockerfile_name = "service" if image in MODEL_IMAGES else image
        command = (
            f"podman build --network host --file docker/{dockerfile_name}.Dockerfile"
            f" --tag registry.example.com/mtc/mtc-{image}:0.1.0"
            f" --build-arg PYTHON_IMAGE={OFFLINE_BASE} {secret}"
        )
        if image in MODEL_IMAGES:
            command += f" --build-arg SERVICE_EXTRA={image}"
            command += f" --build-arg SERVICE_MODULE=services.{image}"
            if image == "pose":
                command += " --build-arg SYSTEM_PACKAGES=libgl1,libglib2.0-0"
        expected.append(command + (f" {wheels} ." if image in MODEL_IMAGES else " ."))
    assert builds(calls) == expected
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == [f"registry.example.com/mtc/mtc-{i}:0.1.0" for i in IMAGES]
    assert all(row[1] == "100" for row in rows)
    assert Path(stub["SIZES_FILE"]).read_text() == result.stdout


def test_an_offline_base_is_reused_until_its_recipe_changes(stub: dict[str, str]) -> None:
    recipe = hashlib.sha256((REPO / "deploy/tools/build-base-image.sh").read_bytes()).hexdigest()
    result, calls = build_images(
        stub, STUB_IMAGES=OFFLINE_BASE, STUB_BASE_RECIPE=recipe[:12], IMAGES="gateway"
    )
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c.startswith(("mmdebstrap", "podman import"))]
    assert f"--build-arg PYTHON_IMAGE={OFFLINE_BASE}" in builds(calls)[0]
    Path(stub["STUB_LOG"]).unlink()
    result, calls = build_images(
        stub, STUB_IMAGES=OFFLINE_BASE, STUB_BASE_RECIPE="0123456789ab", IMAGES="gateway"
    )
    assert result.returncode == 0, result.stderr
    (imported,) = [c for c in calls if c.startswith("podman import")]
    assert f"LABEL mtc.base-recipe={recipe[:12]}" in imported


def test_online_the_registry_base_and_torch_index_are_used(stub: dict[str, str]) -> None:
    env = {k: v for k, v in stub.items() if k != "PIP_CERT"}
    result, calls = build_images(
        env, STUB_PULL="0", WHEELS="", TORCH_INDEX="https://mirror.example.com/whl/cpu"
    )
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c.startswith("mmdebstrap")]
    for command in builds(calls):
        assert f"--build-arg PYTHON_IMAGE={REGISTRY_BASE}" in command
        assert "--secret" not in command, "no PIP_CERT, nothing mounted"
        assert "--build-context" not in command
        model_image = "docker/service.Dockerfile" in command
        assert ("TORCH_INDEX=https://mirror.example.com/whl/cpu" in command) == model_image


def test_a_given_base_is_used_without_trying_a_pull(stub: dict[str, str]) -> None:
    result, calls = build_images(stub, PYTHON_IMAGE="registry.example.com/python:3.11.9-slim")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if " pull " in c]
    assert all("PYTHON_IMAGE=registry.example.com/python:3.11.9-slim" in c for c in builds(calls))


def test_docker_is_used_when_its_daemon_answers(stub: dict[str, str]) -> None:
    result, calls = build_images(stub, STUB_DOCKER_INFO="0", STUB_PULL="0")
    assert result.returncode == 0, result.stderr
    assert [c.split()[0] for c in builds(calls)] == ["docker"] * 5
    assert all("--network host" not in c for c in builds(calls)), "podman's flags only"


def test_an_image_over_its_budget_fails_the_build_and_is_not_pushed(stub: dict[str, str]) -> None:
    result, calls = build_images(stub, STUB_SIZE=str(10**12), PUSH="1")
    assert result.returncode == 1
    assert result.stdout.count("OVER BUDGET") == 5
    assert not [c for c in calls if " push " in c]
    result, calls = build_images(stub, STUB_SIZE=str(10**12), PUSH="1", SIZE_BUDGETS="0")
    assert result.returncode == 0, result.stderr
    assert [c for c in calls if " push " in c] == [f"podman push mtc-{i}:0.1.0" for i in IMAGES]


def test_bad_requests_fail_before_building(stub: dict[str, str], tmp_path: Path) -> None:
    result, calls = build_images(stub, IMAGES="text web")
    assert result.returncode == 2
    assert "no image called web" in result.stderr
    assert not builds(calls)
    result, calls = build_images(stub, WHEELS=str(tmp_path))
    assert result.returncode == 2
    assert "no torch-2.13.0+cpu wheel" in result.stderr
    assert not builds(calls)


def test_an_s3_model_is_baked_with_the_aws_credentials_as_a_secret(
    stub: dict[str, str], tmp_path: Path
) -> None:
    credentials = tmp_path / ".aws" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text("[default]\n")
    result, calls = build_images(
        stub, BAKE_MODEL_URI="s3://mtc-models/sentiment/1.0.0", IMAGES="text gateway"
    )
    assert result.returncode == 0, result.stderr
    text, gateway = builds(calls)
    assert "--build-arg BAKE_MODEL_URI=s3://mtc-models/sentiment/1.0.0" in text
    assert f"--secret id=aws,src={credentials}" in text
    assert "BAKE_MODEL_URI" not in gateway


def test_docs_state_the_budgets_the_build_enforces() -> None:
    budgets = {build.name: build.size_budget_mb for build in image_builds()}
    assert set(budgets) == set(IMAGES)
    docs = (REPO / "docs" / "images.md").read_text()
    documented = {
        m[1]: int(m[2]) for m in re.finditer(r"^\| `mtc-(\w+)` \|[^|]*\| *(\d+) *\|", docs, re.M)
    }
    assert documented == budgets


def test_a_model_from_the_context_must_exist(stub: dict[str, str]) -> None:
    result, calls = build_images(stub, BAKE_MODEL_URI="file:///context/models/no-such-model")
    assert result.returncode == 2
    assert "not a directory of the context" in result.stderr
    assert not builds(calls)
