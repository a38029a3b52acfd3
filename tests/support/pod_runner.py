"""Run rendered Kubernetes workloads as podman containers on one host.

The deployment test (`make test-deploy`) renders an overlay with kustomize and runs what it
rendered, as a cluster would run one pod of each Deployment and StatefulSet: init containers in
order to completion, then the containers; environment from `env` and `envFrom` with
ConfigMaps, Secrets and `$(VAR)` references resolved as the kubelet does; emptyDir, ConfigMap,
Secret and claim volumes; the security context (user, group, fsGroup, read-only root
filesystem, dropped capabilities, no privilege escalation); and the startup and readiness
probes as written. `podman kube play` cannot be used for this: podman 4.3 removes init
containers while they run and fails on Secret volumes.

What a single host cannot mirror is left out and stays the overlay's business: Services (every
pod is on the host network; Service names resolve to 127.0.0.1), resource limits, HPAs and
NetworkPolicies.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Manifest = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
# The settings hosts like the CI machines need (runc, cgroupfs, lower default limits), used
# unless CONTAINERS_CONF names another file.
CONTAINERS_CONF = Path(__file__).resolve().parents[2] / "deploy" / "tools" / "containers.conf"


class DeploymentError(RuntimeError):
    """A workload did not start, or broke a rule of the manifest while it ran."""


@dataclass
class RunningContainer:
    """A container started from a pod spec."""

    pod: str
    name: str
    spec: Manifest
    user: int | None
    container_name: str


@dataclass
class Pod:
    """One pod of a workload: its volumes on the host and its containers."""

    name: str
    spec: Manifest
    volume_dirs: dict[str, Path]
    init_logs: dict[str, str] = field(default_factory=dict)
    containers: list[RunningContainer] = field(default_factory=list)


class PodRunner:
    """Runs the workloads of a rendered overlay with podman, and removes everything it made."""

    def __init__(
        self,
        objects: Sequence[Manifest],
        work_dir: Path,
        *,
        podman: Sequence[str] = ("podman",),
        label: str = "mtc-deployment-test",
        name_prefix: str = "",
        unwritable_volumes: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.objects = list(objects)
        self.work_dir = work_dir
        self.podman = list(podman)
        self.label = label
        self.name_prefix = name_prefix
        # (pod, volume) pairs made unwritable for the pod's user: how a test shows that a
        # broken volume makes the run fail.
        self.unwritable_volumes = set(unwritable_volumes)
        self.pods: dict[str, Pod] = {}
        self.config_maps = {o["metadata"]["name"]: o for o in self._of_kind("ConfigMap")}
        self.secrets = {o["metadata"]["name"]: o for o in self._of_kind("Secret")}
        self.service_names = sorted(o["metadata"]["name"] for o in self._of_kind("Service"))

    # ---------------------------------------------------------------- objects

    def _of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o.get("kind") == kind]

    def workload(self, name: str) -> Manifest:
        """The Deployment or StatefulSet called `name`."""
        for kind in WORKLOAD_KINDS:
            for item in self._of_kind(kind):
                if item["metadata"]["name"] == name:
                    return item
        raise DeploymentError(f"no Deployment or StatefulSet {name!r} in the rendered objects")

    def workload_names(self) -> list[str]:
        """Every Deployment and StatefulSet, in the order rendered."""
        return [o["metadata"]["name"] for o in self.objects if o.get("kind") in WORKLOAD_KINDS]

    def _config_data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        store = self.config_maps if kind == "ConfigMap" else self.secrets
        item = store.get(name)
        if item is None:
            if optional:
                return None
            raise DeploymentError(f"{kind} {name!r} is referenced but not rendered")
        if kind == "ConfigMap":
            return {key: str(value) for key, value in (item.get("data") or {}).items()}
        data = {
            key: base64.b64decode(value).decode() for key, value in (item.get("data") or {}).items()
        }
        data.update(item.get("stringData") or {})
        return data

    # ---------------------------------------------------------------- environment

    def environment(self, pod_name: str, container: Manifest) -> dict[str, str]:
        """The container's environment as the kubelet computes it."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    reference = source[key]
                    data = self._config_data(kind, reference["name"], reference.get("optional"))
                    env.update({prefix + k: v for k, v in (data or {}).items()})
        for variable in container.get("env", []):
            name = variable["name"]
            if "value" in variable:
                env[name] = _expand(str(variable["value"]), env)
                continue
            source = variable.get("valueFrom", {})
            value = self._value_from(pod_name, source)
            if value is not None:
                env[name] = value
        return env

    def _value_from(self, pod_name: str, source: Manifest) -> str | None:
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if key in source:
                reference = source[key]
                optional = bool(reference.get("optional"))
                data = self._config_data(kind, reference["name"], optional)
                if data is None or reference["key"] not in data:
                    if optional:
                        return None
                    raise DeploymentError(f"{kind} {reference['name']!r} has no {reference['key']}")
                return data[reference["key"]]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.name": pod_name, "status.podIP": "127.0.0.1"}
            return fields.get(path, "")
        raise DeploymentError(f"unsupported valueFrom {source}")

    # ---------------------------------------------------------------- volumes

    def _volumes(self, pod_name: str, workload: Manifest, pod_spec: Manifest) -> dict[str, Path]:
        root = self.work_dir / pod_name / "volumes"
        claims = [t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])]
        volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
        directories: dict[str, Path] = {}
        for name in [*volumes, *claims]:
            directory = root / name
            directory.mkdir(parents=True, exist_ok=True)
            volume = volumes.get(name, {"persistentVolumeClaim": {}})
            files: dict[str, str] | None = None
            if "configMap" in volume:
                files = self._config_data("ConfigMap", volume["configMap"]["name"], False)
            elif "secret" in volume:
                files = self._config_data("Secret", volume["secret"]["secretName"], False)
            if files is not None:
                mode = int(
                    (volume.get("configMap") or volume.get("secret") or {}).get(
                        "defaultMode", 0o644
                    )
                )
                for file_name, content in files.items():
                    path = directory / file_name
                    path.write_text(content, encoding="utf-8")
                    path.chmod(mode)
                directory.chmod(0o755)
            elif (pod_name, name) in self.unwritable_volumes:
                directory.chmod(0o755)
            else:
                # emptyDir and claims: writable by the pod's users, as on a node.
                directory.chmod(0o777)
            directories[name] = directory
        return directories

    # ---------------------------------------------------------------- containers

    def _run_arguments(self, pod: Pod, container: Manifest, *, detach: bool) -> list[str]:
        pod_context = pod.spec.get("securityContext", {})
        context = {**pod_context, **container.get("securityContext", {})}
        arguments = [
            "run",
            "--name",
            f"{self.name_prefix}{pod.name}-{container['name']}",
            "--label",
            f"{self.label}=1",
            "--pull",
            "never",
            "--network",
            "host",
        ]
        if detach:
            arguments.append("--detach")
        for service in self.service_names:
            arguments += ["--add-host", f"{service}:127.0.0.1"]
        user = context.get("runAsUser")
        if user is not None:
            group = context.get("runAsGroup", user)
            arguments += ["--user", f"{user}:{group}"]
        if "fsGroup" in pod_context:
            arguments += ["--group-add", str(pod_context["fsGroup"])]
        if context.get("readOnlyRootFilesystem"):
            # As in Kubernetes: nothing writable but the declared volumes (podman would add
            # tmpfs mounts on /tmp, /run and /var/tmp otherwise).
            arguments += ["--read-only", "--read-only-tmpfs=false"]
        capabilities = context.get("capabilities", {})
        for capability in capabilities.get("drop", []):
            arguments += ["--cap-drop", str(capability)]
        for capability in capabilities.get("add", []):
            arguments += ["--cap-add", str(capability)]
        if context.get("allowPrivilegeEscalation") is False:
            arguments += ["--security-opt", "no-new-privileges"]
        for mount in container.get("volumeMounts", []):
            source = pod.volume_dirs[mount["name"]]
            if "subPath" in mount:
                source = source / mount["subPath"]
            suffix = ":ro" if mount.get("readOnly") else ""
            arguments += ["--volume", f"{source}:{mount['mountPath']}{suffix}"]
        for key, value in self.environment(pod.name, container).items():
            arguments += ["--env", f"{key}={value}"]
        if "workingDir" in container:
            arguments += ["--workdir", container["workingDir"]]
        if "command" in container:
            arguments += ["--entrypoint", json.dumps(container["command"])]
        arguments.append(container["image"])
        arguments += [str(argument) for argument in container.get("args", [])]
        return arguments

    def _podman(self, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ}
        return subprocess.run(
            [*self.podman, *arguments],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )

    def start(self, name: str, *, init_timeout: float = 600) -> Pod:
        """Run the workload's init containers to completion, then start its containers."""
        workload = self.workload(name)
        spec = workload["spec"]["template"]["spec"]
        pod = Pod(name, spec, self._volumes(name, workload, spec))
        self.pods[name] = pod
        for init in spec.get("initContainers", []):
            arguments = self._run_arguments(pod, init, detach=False)
            result = self._podman(*arguments, timeout=init_timeout)
            pod.init_logs[init["name"]] = result.stdout + result.stderr
            if result.returncode != 0:
                raise DeploymentError(
                    f"{name}: init container {init['name']} exited {result.returncode}:\n"
                    f"{(result.stdout + result.stderr)[-3000:]}"
                )
        context = spec.get("securityContext", {})
        for container in spec["containers"]:
            result = self._podman(*self._run_arguments(pod, container, detach=True))
            if result.returncode != 0:
                raise DeploymentError(
                    f"{name}: container {container['name']} did not start: {result.stderr}"
                )
            user = {**context, **container.get("securityContext", {})}.get("runAsUser")
            pod.containers.append(
                RunningContainer(
                    name,
                    container["name"],
                    container,
                    user,
                    f"{self.name_prefix}{name}-{container['name']}",
                )
            )
        return pod

    # ---------------------------------------------------------------- probes

    def wait_ready(self, name: str) -> None:
        """Poll each container's startup probe, then its readiness probe, as the manifest
        writes them (period, timeout, failure threshold)."""
        for container in self.pods[name].containers:
            for probe_name in ("startupProbe", "readinessProbe"):
                probe = container.spec.get(probe_name)
                if probe is None:
                    continue
                threshold = int(probe.get("failureThreshold", 3))
                if probe_name == "readinessProbe" and "startupProbe" not in container.spec:
                    # Without a startup probe a pod is simply not ready until this passes; give
                    # it the time a cluster would keep retrying before anyone noticed.
                    threshold = max(threshold, 60)
                if not self._probe_until(container, probe, threshold):
                    logs = self.logs(container)
                    raise DeploymentError(
                        f"{container.container_name}: {probe_name} failed {threshold} times\n"
                        f"{logs[-3000:]}"
                    )

    def _probe_until(self, container: RunningContainer, probe: Manifest, threshold: int) -> bool:
        period = float(probe.get("periodSeconds", 10))
        time.sleep(float(probe.get("initialDelaySeconds", 0)))
        for _ in range(threshold):
            if not self.is_running(container):
                return False
            if self.probe(container, probe):
                return True
            time.sleep(period)
        return False

    def probe(self, container: RunningContainer, probe: Manifest) -> bool:
        """One attempt of an httpGet, tcpSocket or exec probe."""
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            http = probe["httpGet"]
            port = self._port(container, http["port"])
            url = f"http://127.0.0.1:{port}{http.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= int(response.status) < 400
            except (urllib.error.URLError, OSError):
                return False
        if "tcpSocket" in probe:
            port = self._port(container, probe["tcpSocket"]["port"])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                    return True
            except OSError:
                return False
        if "exec" in probe:
            command = [str(part) for part in probe["exec"]["command"]]
            try:
                result = self._podman(
                    "exec", container.container_name, *command, timeout=timeout + 5
                )
            except subprocess.TimeoutExpired:
                return False
            return result.returncode == 0
        raise DeploymentError(f"unsupported probe {probe}")

    @staticmethod
    def _port(container: RunningContainer, port: int | str) -> int:
        if isinstance(port, int):
            return port
        for declared in container.spec.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise DeploymentError(f"{container.container_name}: no port named {port!r}")

    # ---------------------------------------------------------------- checks

    def is_running(self, container: RunningContainer) -> bool:
        """Whether the container is still running (it never exited)."""
        result = self._podman("inspect", "--format", "{{.State.Status}}", container.container_name)
        return result.stdout.strip() == "running"

    def logs(self, container: RunningContainer) -> str:
        """The container's output so far."""
        result = self._podman("logs", container.container_name)
        return result.stdout + result.stderr

    def problems(self) -> list[str]:
        """Every rule a running container broke: it exited or restarted, runs as another user
        than the manifest says, or wrote outside its declared volumes."""
        found = []
        for pod in self.pods.values():
            for container in pod.containers:
                name = container.container_name
                state = self._podman(
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{.RestartCount}} {{.State.Pid}}",
                    name,
                ).stdout.split()
                if len(state) != 3 or state[0] != "running" or state[1] != "0":
                    found.append(f"{name}: not running without restarts ({' '.join(state)})")
                    continue
                uid = _process_uid(int(state[2]))
                if container.user is not None and uid != container.user:
                    found.append(f"{name}: runs as uid {uid}, the manifest says {container.user}")
                changed = self._podman("diff", name).stdout.splitlines()
                expected = _mount_points(container.spec)
                written = [
                    line
                    for line in changed
                    if line.strip() and line.split(maxsplit=1)[-1] not in expected
                ]
                if written:
                    found.append(f"{name}: wrote outside its volumes: {written[:10]}")
        return found

    def teardown(self) -> None:
        """Remove every container this runner (or an earlier run with its label) made."""
        listed = self._podman("ps", "--all", "--quiet", "--filter", f"label={self.label}=1")
        identifiers = listed.stdout.split()
        if identifiers:
            self._podman("rm", "--force", "--time", "5", *identifiers, timeout=300)
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir, ignore_errors=True)


def _expand(value: str, env: dict[str, str]) -> str:
    # Kubernetes' $(VAR) references: defined variables are replaced, $$ escapes a dollar,
    # unknown references stay as written.
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, value)


# Files podman itself writes into every container (names, DNS), and their directories.
PODMAN_WRITES = frozenset({"/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run"})


def _mount_points(container: Manifest) -> set[str]:
    # A volume's mount point, and the directories above it, appear in `podman diff` because
    # podman creates them; writes into the volume itself never do.
    points = set(PODMAN_WRITES)
    for mount in container.get("volumeMounts", []):
        path = Path(mount["mountPath"])
        points.update(str(part) for part in (path, *path.parents) if str(part) != "/")
    return points


def _process_uid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def podman_command() -> list[str]:
    """The podman command line to use: `MTC_PODMAN` (split on spaces), else `podman`."""
    return os.environ.get("MTC_PODMAN", "podman").split()
