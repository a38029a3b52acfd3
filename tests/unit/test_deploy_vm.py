"""The VM recipe's files (`deploy/vm/`, written by `python -m deploy.vm`): committed as
generated, accepted by systemd's own checker, carrying settings the processes accept, and an
nginx site that lets the gateway's limits and timeouts decide."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.vm import (
    NGINX_SITE,
    OUTPUT_DIR,
    REPO,
    Machine,
    main,
    render,
    services,
    settings_values,
)
from gateway.local_stack import gateway_environment
from gateway.settings import GatewaySettings
from services.core.settings import ServiceSettings
from services.jobs.settings import JobsSettings
from tests.support.systemd_units import exec_start, unit_environment

UNIT_SUFFIXES = (".service", ".target")


def test_the_committed_files_are_the_generated_ones() -> None:
    assert main(["--check"]) == 0, "run python -m deploy.vm"
    committed = sorted(path.name for path in OUTPUT_DIR.iterdir())
    assert committed == sorted(render(Machine()))


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    # Written for this checkout, so the commands they run exist here.
    systemd_analyze = shutil.which("systemd-analyze")
    assert systemd_analyze is not None, "systemd-analyze is missing (apt-get install systemd)"
    for name, content in render(Machine(prefix=REPO)).items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    unit_files = sorted(str(path) for path in tmp_path.iterdir() if path.suffix in UNIT_SUFFIXES)

    result = subprocess.run(
        [systemd_analyze, "verify", *unit_files],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    # Unknown or misspelt keys are only warned about: any output is a failure here.
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_there_is_a_unit_per_process_of_make_run() -> None:
    files = render(Machine())
    models = [f"mtc-{service.task}.service" for service in services(Machine())]

    assert set(models) | {"mtc-redis.service", "mtc-jobs-worker.service"} < set(files)
    target = files["mtc.target"]
    for name in files:
        if name.endswith(".service"):
            assert name in target
            assert "PartOf=mtc.target" in files[name]


def test_the_model_services_run_as_make_run_starts_them() -> None:
    files = render(Machine())
    for service in services(Machine()):
        text = files[f"mtc-{service.task}.service"]
        settings = ServiceSettings.model_validate(settings_values(unit_environment(text), "MTC_"))

        assert exec_start(text) == ["/opt/mtc/.venv/bin/python", "-m", service.module]
        assert (settings.task, settings.host, settings.port) == (
            service.task,
            "127.0.0.1",
            service.port,
        )


def test_the_gateway_runs_with_keys_behind_the_proxy() -> None:
    text = render(Machine())["mtc-gateway.service"]
    environment = unit_environment(text)

    gateway = GatewaySettings.model_validate(settings_values(environment, "MTC_GATEWAY_"))
    jobs = JobsSettings.model_validate(settings_values(environment, "MTC_JOBS_"))

    expected = gateway_environment(services(Machine()), "127.0.0.1", 8080)
    assert {name: environment[name] for name in expected} == expected
    assert (gateway.host, gateway.port, gateway.metrics_port) == ("127.0.0.1", 8080, 9180)
    assert gateway.authentication == "keys"
    assert gateway.api_keys_file == Path("/etc/mtc/api-keys")
    assert jobs.upstreams == gateway.upstreams
    worker = unit_environment(render(Machine())["mtc-jobs-worker.service"])
    assert JobsSettings.model_validate(settings_values(worker, "MTC_JOBS_")) == jobs


def test_the_proxy_lets_the_gateway_decide() -> None:
    site = render(Machine(server_name="calls.example.org"))[NGINX_SITE]
    gateway = GatewaySettings.model_validate(
        settings_values(unit_environment(render(Machine())["mtc-gateway.service"]), "MTC_GATEWAY_")
    )

    body_mib = int(re.search(r"client_max_body_size (\d+)m;", site).group(1))  # type: ignore[union-attr]
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", site).group(1))  # type: ignore[union-attr]
    assert body_mib * 1024 * 1024 >= gateway.max_body_bytes
    assert read_timeout > max(gateway.upstream_deadline_for(task) for task in gateway.tasks)
    assert read_timeout > gateway.compat_async_wait_seconds
    assert "server 127.0.0.1:8080;" in site
    assert re.search(r"location = /metrics \{\s+return 404;", site)
    assert "server_name calls.example.org;" in site
    assert "/etc/letsencrypt/live/calls.example.org/fullchain.pem" in site
    assert site.count("{") == site.count("}")


@pytest.mark.parametrize("value", ['{"a": "b c"}', "50%", 'say "hi"', "back\\slash"])
def test_environment_values_survive_systemds_quoting(value: str) -> None:
    from deploy.vm import _quoted

    line = f"Environment={_quoted(f'NAME={value}')}"

    assert unit_environment(line) == {"NAME": value}
