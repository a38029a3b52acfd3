"""mtc on one VM without a cluster or containers: a systemd unit for each process `make run`
starts (`gateway.local_stack`: one per model service, the jobs Redis and worker, the
gateway), grouped by `mtc.target`, and an nginx site in front of the gateway (docs/vm.md).

The units are written from the same plan and environment functions as `make run`, so the
VM runs the processes and settings the local stack is tested with, plus what a machine on a
network needs: API keys on, `/metrics` on a port of its own, every process bound to
127.0.0.1 behind nginx, restarts on failure, and systemd's sandboxing.

`python -m deploy.vm` rewrites `deploy/vm/` (the example for a checkout in `/opt/mtc`);
`--check` exits 1 when those files differ from what this module writes; `--prefix`,
`--user`, `--server-name` and `--out` write the files for another machine.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from deploy.external_tools import REPO
from deploy.render import stale_paths, write_files
from gateway.local_stack import (
    DEFAULT_MODELS,
    JOBS_WORKER,
    ServiceProcess,
    gateway_environment,
    jobs_environment,
    plan_services,
)
from gateway.settings import GatewaySettings

OUTPUT_DIR = REPO / "deploy" / "vm"
HOST = "127.0.0.1"
REDIS_MAX_MEMORY = "256mb"
CONFIG_DIR = Path("/etc/mtc")
API_KEYS_FILE = CONFIG_DIR / "api-keys"
SHARED_ENVIRONMENT_FILE = CONFIG_DIR / "mtc.env"
CACHE_DIR = Path("/var/cache/mtc")
REDIS_SERVER = Path("/usr/bin/redis-server")
TARGET = "mtc.target"
NGINX_SITE = "mtc.nginx.conf"
PROXY_TIMEOUT_MARGIN_SECONDS = 10
"""The proxy waits this much longer than the gateway's longest wait, so a slow model's
answer is always the API's own error body, never nginx's."""

# systemd's sandbox: the processes read the checkout and write only their cache.
SANDBOX = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    # AF_NETLINK: glibc's getaddrinfo asks the kernel which address families are configured.
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    "CapabilityBoundingSet=",
)


@dataclass(frozen=True)
class Machine:
    """Where and as whom mtc runs on the VM."""

    prefix: Path = Path("/opt/mtc")
    """The checkout, with `.venv` and the models `make models` built in `.mtc/models`."""
    user: str = "mtc"
    server_name: str = "mtc.example.com"
    gateway_port: int = 8080
    gateway_metrics_port: int = 9180
    first_service_port: int = 8101
    """The model services take this port and the next ones; the jobs worker's metrics the
    port after the last."""
    redis_port: int = 6390

    @property
    def python(self) -> Path:
        """The checkout's virtualenv interpreter."""
        return self.prefix / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Unit:
    """One systemd unit file."""

    name: str
    description: str
    exec_start: list[str]
    environment: dict[str, str]
    after: tuple[str, ...] = ("network-online.target",)
    uses_cache: bool = True


def services(machine: Machine) -> list[ServiceProcess]:
    """The model service processes, as `make run` plans them."""
    return plan_services(dict(DEFAULT_MODELS), {}, machine.first_service_port)


def jobs_unit_environment(machine: Machine) -> dict[str, str]:
    """The jobs settings of the gateway and the worker: `make run`'s, on the VM's Redis, with
    the worker's metrics on the port after the last service's."""
    planned = services(machine)
    return jobs_environment(planned, HOST, machine.redis_port, planned[-1].port + 1)


def gateway_unit_environment(machine: Machine) -> dict[str, str]:
    """The gateway's settings: `make run`'s, with the jobs, API keys and a metrics port."""
    return {
        **gateway_environment(services(machine), HOST, machine.gateway_port),
        **jobs_unit_environment(machine),
        "MTC_GATEWAY_METRICS_PORT": str(machine.gateway_metrics_port),
        "MTC_GATEWAY_AUTHENTICATION": "keys",
        "MTC_GATEWAY_API_KEYS_FILE": str(API_KEYS_FILE),
        "MTC_GATEWAY_REDIS_URL": f"redis://{HOST}:{machine.redis_port}/2",
    }


def units(machine: Machine) -> list[Unit]:
    """Every unit, dependencies first."""
    planned = services(machine)
    redis = Unit(
        "mtc-redis.service",
        "mtc: Redis of the batch jobs (broker and store) and the quotas",
        [
            str(REDIS_SERVER),
            *("--bind", HOST, "--port", str(machine.redis_port)),
            *("--save", "", "--appendonly", "no"),
            *("--maxmemory", REDIS_MAX_MEMORY, "--maxmemory-policy", "noeviction"),
        ],
        {},
        uses_cache=False,
    )
    model_units = [
        Unit(
            f"mtc-{service.task}"
            + (f"-{service.replica}" if service.replicas > 1 else "")
            + ".service",
            f"mtc: {service.name}",
            [str(machine.python), "-m", service.module],
            {
                "MTC_TASK": service.task,
                "MTC_MODEL_URI": service.model_uri,
                "MTC_HOST": HOST,
                "MTC_PORT": str(service.port),
            },
        )
        for service in planned
    ]
    after_models = ("network-online.target", redis.name, *(unit.name for unit in model_units))
    worker = Unit(
        "mtc-jobs-worker.service",
        "mtc: batch jobs worker",
        [str(machine.python), "-m", JOBS_WORKER],
        jobs_unit_environment(machine),
        after=after_models,
    )
    gateway = Unit(
        "mtc-gateway.service",
        "mtc: gateway (the public API, behind nginx)",
        [str(machine.python), "-m", "gateway"],
        gateway_unit_environment(machine),
        after=after_models,
    )
    return [redis, *model_units, worker, gateway]


def unit_file(unit: Unit, machine: Machine) -> str:
    """The text of `unit`'s file."""
    lines = [
        "# Written by `python -m deploy.vm` (docs/vm.md); regenerate instead of editing.",
        "[Unit]",
        f"Description={unit.description}",
        f"After={' '.join(unit.after)}",
        "Wants=network-online.target",
        f"PartOf={TARGET}",
        "",
        "[Service]",
        "Type=exec",
        f"User={machine.user}",
        f"Group={machine.user}",
        f"WorkingDirectory={machine.prefix}",
    ]
    if unit.uses_cache:
        # As in the images: caches and $HOME under the one writable directory.
        lines += [
            "CacheDirectory=mtc",
            f'Environment="HOME={CACHE_DIR}" "XDG_CACHE_HOME={CACHE_DIR}"',
            f'Environment="MTC_MODEL_CACHE_DIR={CACHE_DIR}/models"',
            f'Environment="NUMBA_CACHE_DIR={CACHE_DIR}/numba"',
        ]
    lines += [
        f"Environment={_quoted(f'{name}={value}')}" for name, value in unit.environment.items()
    ]
    if unit.uses_cache:
        # Site settings (image URL hosts, S3 allow-lists, credentials) without editing units.
        lines.append(f"EnvironmentFile=-{SHARED_ENVIRONMENT_FILE}")
    lines += [
        f"ExecStart={' '.join(_quoted(part) for part in unit.exec_start)}",
        "Restart=on-failure",
        "RestartSec=2",
        # Above the services' own drain time (they finish the requests in flight).
        "TimeoutStopSec=30",
        *SANDBOX,
        "",
        "[Install]",
        f"WantedBy={TARGET}",
        "",
    ]
    return "\n".join(lines)


def _quoted(word: str) -> str:
    """A word for a systemd command line or `Environment=`: double-quoted when it holds
    anything but plain characters, with `\\`, `"` and `%` escaped (`%` starts a specifier)."""
    escaped = word.replace("%", "%%")
    if escaped and all(character.isalnum() or character in "-_./:=@," for character in escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def target_file(unit_names: list[str]) -> str:
    """`mtc.target`: starts every unit (`systemctl enable --now mtc.target`)."""
    return "\n".join(
        [
            "# Written by `python -m deploy.vm` (docs/vm.md); regenerate instead of editing.",
            "[Unit]",
            "Description=mtc: every process of the stack",
            f"Wants={' '.join(unit_names)}",
            "After=network-online.target",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def proxy_timeout_seconds(gateway: GatewaySettings) -> int:
    """How long nginx waits for the gateway: more than the gateway waits for any task."""
    longest = max(gateway.upstream_deadline_for(task) for task in gateway.tasks)
    longest = max(longest, gateway.compat_async_wait_seconds, gateway.image_url_timeout_seconds)
    return math.ceil(longest) + PROXY_TIMEOUT_MARGIN_SECONDS


def nginx_site(machine: Machine, gateway: GatewaySettings) -> str:
    """The nginx site: TLS in front of the gateway, bodies up to the gateway's limit, waits
    longer than the gateway's, `/metrics` never exposed."""
    timeout = proxy_timeout_seconds(gateway)
    body_mib = math.ceil(gateway.max_body_bytes / (1024 * 1024))
    name = machine.server_name
    return f"""\
# Written by `python -m deploy.vm` (docs/vm.md); regenerate instead of editing.
# /etc/nginx/sites-available/mtc, linked from sites-enabled. Certificates: certbot or your own.
upstream mtc_gateway {{
    server {HOST}:{machine.gateway_port};
    keepalive 32;
}}

server {{
    listen 80;
    listen [::]:80;
    server_name {name};
    return 301 https://$host$request_uri;
}}

server {{
    listen 443 ssl;
    listen [::]:443 ssl;
    http2 on;
    server_name {name};

    ssl_certificate /etc/letsencrypt/live/{name}/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/{name}/privkey.pem;
    ssl_protocols TLSv1.2 TLSv1.3;

    # The gateway refuses larger bodies itself (413 in its error shape); nginx lets them
    # through up to its limit and streams them, so the gateway's limits are the ones in force.
    client_max_body_size {body_mib}m;
    proxy_request_buffering off;
    proxy_buffering off;

    # Longer than the gateway waits for its slowest task, so its 504 is the one clients get.
    proxy_connect_timeout 5s;
    proxy_send_timeout {timeout}s;
    proxy_read_timeout {timeout}s;

    # The gateway serves /metrics on port {machine.gateway_metrics_port} only; never through it.
    location = /metrics {{
        return 404;
    }}

    location / {{
        proxy_pass http://mtc_gateway;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
    }}
}}
"""


def settings_values(environment: dict[str, str], prefix: str) -> dict[str, object]:
    """The field values a settings class with `prefix` reads from `environment` (JSON
    objects and lists decoded, as pydantic-settings does)."""
    return {
        name.removeprefix(prefix).lower(): json.loads(value) if value[:1] in "[{" else value
        for name, value in environment.items()
        if name.startswith(prefix)
    }


def render(machine: Machine) -> dict[str, str]:
    """File name -> content of every file."""
    all_units = units(machine)
    files = {unit.name: unit_file(unit, machine) for unit in all_units}
    files[TARGET] = target_file([unit.name for unit in all_units])
    gateway = GatewaySettings.model_validate(
        settings_values(gateway_unit_environment(machine), "MTC_GATEWAY_")
    )
    files[NGINX_SITE] = nginx_site(machine, gateway)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the systemd units and nginx site")
    parser.add_argument("--prefix", type=Path, default=Machine.prefix, help="the checkout")
    parser.add_argument("--user", default=Machine.user, help="the user the processes run as")
    parser.add_argument("--server-name", default=Machine.server_name, help="nginx server_name")
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR, help="where to write them")
    parser.add_argument("--check", action="store_true", help="exit 1 if deploy/vm/ is stale")
    args = parser.parse_args(argv)
    machine = Machine(args.prefix, args.user, args.server_name)
    files = {args.out / name: content for name, content in render(machine).items()}
    if args.check:
        stale = [shlex.quote(path.name) for path in stale_paths(files)]
        if stale:
            print("out of date (run python -m deploy.vm): " + ", ".join(stale))
        return 1 if stale else 0
    for path in write_files(files):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
