"""The pod runner computes a container's environment and podman flags as a kubelet would."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import pytest

from deploy.render import kustomize
from tests.support.pod_runner import DeploymentError, Pod, PodRunner

OBJECTS = [
    {"kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"PORT": "8000", "A": "a"}},
    {"kind": "ConfigMap", "metadata": {"name": "own"}, "data": {"PORT": "18101"}},
    {
        "kind": "Secret",
        "metadata": {"name": "redis"},
        "data": {"password": base64.b64encode(b"s3cret").decode()},
    },
    {"kind": "Service", "metadata": {"name": "mtc-redis"}},
]


def runner(tmp_path: Path) -> PodRunner:
    return PodRunner(OBJECTS, tmp_path)


def test_later_env_sources_win_and_references_see_only_earlier_variables(tmp_path: Path) -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "shared"}}, {"configMapRef": {"name": "own"}}],
        "env": [
            {"name": "EARLY", "value": "redis://:$(PASSWORD)@mtc-redis"},
            {
                "name": "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}},
            },
            {"name": "URL", "value": "redis://:$(PASSWORD)@mtc-redis:$(PORT)"},
            {"name": "ESCAPED", "value": "$$(PASSWORD)"},
            {
                "name": "MISSING",
                "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}},
            },
        ],
    }
    env = runner(tmp_path).environment("pod", container)
    assert env["PORT"] == "18101"
    assert env["A"] == "a"
    assert env["EARLY"] == "redis://:$(PASSWORD)@mtc-redis"
    assert env["URL"] == "redis://:s3cret@mtc-redis:18101"
    assert env["ESCAPED"] == "$(PASSWORD)"
    assert "MISSING" not in env


def test_a_required_reference_that_is_not_rendered_is_an_error(tmp_path: Path) -> None:
    container = {"envFrom": [{"configMapRef": {"name": "absent"}}]}
    with pytest.raises(DeploymentError, match="absent"):
        runner(tmp_path).environment("pod", container)


def test_security_context_and_volumes_become_podman_flags(tmp_path: Path) -> None:
    spec = {"securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}}
    pod = Pod("mtc-x", spec, {"model": tmp_path / "model", "config": tmp_path / "config"})
    container = {
        "name": "server",
        "image": "mtc-text:0.1.0",
        "command": ["/bin/sh", "-c"],
        "args": ["exec server"],
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "model", "mountPath": "/models"},
            {"name": "config", "mountPath": "/etc/x", "readOnly": True},
        ],
    }
    arguments = runner(tmp_path)._run_arguments(pod, container, detach=True)
    joined = " ".join(arguments)
    assert "--user 10001:10001" in joined
    assert "--group-add 10001" in joined
    assert "--read-only --read-only-tmpfs=false" in joined
    assert "--cap-drop ALL" in joined
    assert "--security-opt no-new-privileges" in joined
    assert f"--volume {tmp_path / 'model'}:/models " in joined
    assert f"--volume {tmp_path / 'config'}:/etc/x:ro" in joined
    assert "--add-host mtc-redis:127.0.0.1" in joined
    assert arguments[-2:] == ["mtc-text:0.1.0", "exec server"]
    assert '--entrypoint ["/bin/sh", "-c"]' in joined


def unhashed(volumes: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Volumes with the content-hash suffix of generated ConfigMap names removed."""
    plain = copy.deepcopy(volumes or [])
    for volume in plain:
        if "configMap" in volume:
            volume["configMap"]["name"] = re.sub(r"-[a-z0-9]{10}$", "", volume["configMap"]["name"])
    return plain


def test_the_single_host_overlay_renders_every_workload_of_the_dev_overlay() -> None:
    repo = Path(__file__).resolve().parents[2]
    dev = PodRunner(kustomize(repo / "overlays" / "dev"), Path("/nonexistent"))
    single = PodRunner(kustomize(repo / "overlays" / "single-host"), Path("/nonexistent"))
    assert single.workload_names() == dev.workload_names()
    # The same pod specs but for ports, probes on them, URLs and the Redis image.
    for name in dev.workload_names():
        dev_spec = dev.workload(name)["spec"]["template"]["spec"]
        single_spec = single.workload(name)["spec"]["template"]["spec"]
        assert single_spec["securityContext"] == dev_spec["securityContext"]
        # ConfigMap names carry a hash of their content, which the single-host ports change.
        assert unhashed(single_spec.get("volumes")) == unhashed(dev_spec.get("volumes"))
        dev_init = [c["name"] for c in dev_spec.get("initContainers", [])]
        assert [c["name"] for c in single_spec.get("initContainers", [])] == dev_init
