"""The Dockerfiles follow the image rules (deploy/dockerfile_lint.py) and the rules bite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy.dockerfile_lint import DOCKER_DIR, EXTRAS, parse, problems
from deploy.render import REPO


def dockerfile(image: str) -> str:
    return (DOCKER_DIR / f"{image}.Dockerfile").read_text()


@pytest.mark.parametrize("image", sorted(EXTRAS))
def test_dockerfile_follows_the_rules(image: str) -> None:
    assert problems(image, dockerfile(image)) == []


@pytest.mark.parametrize("image", ["text", "pose", "audio"])
def test_model_images_run_their_service_and_bake_nothing_by_default(image: str) -> None:
    instructions = parse(dockerfile(image))
    (bake,) = [i for i in instructions if i.keyword == "ARG" and "BAKE_MODEL_URI" in i.arguments]
    assert bake.arguments == 'BAKE_MODEL_URI=""'
    cmd = [i.arguments for i in instructions if i.keyword == "CMD"][-1]
    assert cmd == f'["python", "-m", "services.{image}"]'
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


def test_broken_dockerfiles_are_caught() -> None:
    text = dockerfile("text")
    as_root = text.replace("USER 10001:10001", "USER root")
    assert any("non-root" in p for p in problems("text", as_root))
    with_healthcheck = text + "HEALTHCHECK CMD curl -f http://localhost:8000/health/live\n"
    assert any("HEALTHCHECK" in p for p in problems("text", with_healthcheck))
    every_extra = text.replace('"/src[text]"', '"/src[text,pose,audio]"')
    assert any("extras" in p for p in problems("text", every_extra))
    cuda_torch = text.replace('+cpu"', '"')
    assert any("CPU build" in p for p in problems("text", cuda_torch))
    unlocked = text.replace('--constraint /src/constraints.txt "/src[text]"', '"/src[text]"')
    assert any("lock" in p for p in problems("text", unlocked))
    single_stage = "FROM python:3.11.11-slim-bookworm\nUSER 10001\nRUN pip install '/src[text]'\n"
    assert any("multi-stage" in p for p in problems("text", single_stage))
    unpinned = text.replace("python:3.11.11-slim-bookworm", "python:latest")
    assert any("pinned" in p for p in problems("text", unpinned))


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


def test_build_script_builds_every_image_with_the_project_version() -> None:
    result = subprocess.run(
        ["bash", str(DOCKER_DIR / "build-images.sh")],
        env={
            # `echo` stands in for docker: no image can be built here, the commands can be read.
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "DOCKER": "echo",
            "REGISTRY": "registry.example.com/mtc",
        },
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    commands = result.stdout.splitlines()
    assert commands == [
        f"build --file docker/{image}.Dockerfile --tag registry.example.com/mtc/mtc-{image}:0.1.0 ."
        for image in ("text", "pose", "audio", "gateway", "worker")
    ]
