"""Reading back the systemd unit files `deploy.vm` writes: their environment and command."""

from __future__ import annotations

import shlex


def unit_environment(text: str) -> dict[str, str]:
    """NAME -> value of every `Environment=` line, unquoted as systemd does."""
    environment: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            for assignment in shlex.split(line.removeprefix("Environment=")):
                name, _, value = assignment.partition("=")
                environment[name] = value.replace("%%", "%")
    return environment


def exec_start(text: str) -> list[str]:
    """The words of the unit's `ExecStart=` command."""
    (line,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))
