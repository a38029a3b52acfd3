"""docs/configuration.md, written from the settings classes: every variable, its default and
its meaning, so the reference cannot drift from what the processes read.

`python -m deploy.config_reference` rewrites the page (`make config-docs`);
`--check` exits 1 when the committed page differs from what the classes say (the unit
suite runs the same comparison).
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
import re
import sys
from dataclasses import dataclass

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from deploy.external_tools import REPO
from deploy.render import stale_paths
from gateway.settings import GatewaySettings
from services.audio.settings import AudioSettings
from services.core.settings import ServiceSettings
from services.jobs.settings import JobsSettings
from services.pose.settings import PoseSettings
from services.text.settings import TextSettings

PAGE = REPO / "docs" / "configuration.md"


@dataclass(frozen=True)
class SettingsSection:
    """One table of the page: a settings class and who reads it."""

    anchor: str
    title: str
    readers: str
    settings: type[BaseSettings]
    prefix: str
    inherited_from: type[BaseSettings] | None = None
    """Fields of this class are listed once, in its own section, not again here."""


def _service_section(anchor: str, title: str, settings: type[BaseSettings]) -> SettingsSection:
    """The section of one model service, `python -m services.<anchor>`."""
    return SettingsSection(
        anchor, title, f"`python -m services.{anchor}`", settings, "MTC_", ServiceSettings
    )


SECTIONS = (
    SettingsSection(
        "model-services",
        "Every model service",
        "`python -m services.text`, `services.pose` and `services.audio`",
        ServiceSettings,
        "MTC_",
    ),
    _service_section("text", "Text services", TextSettings),
    _service_section("pose", "Pose service", PoseSettings),
    _service_section("audio", "Audio service", AudioSettings),
    SettingsSection("gateway", "Gateway", "`python -m gateway`", GatewaySettings, "MTC_GATEWAY_"),
    SettingsSection(
        "batch-jobs",
        "Batch jobs",
        "the gateway (`/v1/jobs`) and the worker (`python -m services.jobs.worker`)",
        JobsSettings,
        "MTC_JOBS_",
    ),
)

HEADER = """\
# Configuration reference

Every setting is an environment variable, read and validated when the process starts: a bad
value stops it with a message naming the variable. This page is generated from the settings
classes (`python -m deploy.config_reference`, or `make config-docs`) and a unit test fails
when it differs from them, so the defaults and meanings below are the ones the code uses.
"""


def variable_name(name: str, field: FieldInfo, prefix: str) -> str:
    """The environment variable of a field: its alias when it reads a shared variable."""
    alias = field.validation_alias
    return alias if isinstance(alias, str) else f"{prefix}{name.upper()}"


def shown_default(field: FieldInfo) -> str:
    """The default as a user would write the variable, or `unset` / `required`."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict | list | tuple):
        return f"`{json.dumps(value, default=str)}`" if value else "empty"
    return f"`{value}`"


def meaning(field: FieldInfo) -> str:
    """The field's docstring on one line, table-safe."""
    text = inspect.cleandoc(field.description or "")
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def section_table(section: SettingsSection) -> list[str]:
    inherited = section.inherited_from.model_fields if section.inherited_from else {}
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in section.settings.model_fields.items():
        default, text = shown_default(field), meaning(field)
        parent = inherited.get(name)
        # A parent's field is listed here again only with a changed default or meaning.
        if parent is not None and (shown_default(parent), meaning(parent)) == (default, text):
            continue
        variable = variable_name(name, field, section.prefix)
        lines.append(f"| `{variable}` | {default} | {text} |")
    return lines


def render() -> str:
    """The whole page."""
    lines = [HEADER]
    lines.append("Sections: " + ", ".join(f"[{s.title}](#{s.anchor})" for s in SECTIONS) + ".")
    for section in SECTIONS:
        lines += ["", f'<a id="{section.anchor}"></a>', "", f"## {section.title}", ""]
        lines.append(f"Read by {section.readers}.")
        if section.inherited_from is not None:
            lines.append(
                "Besides the settings of [every model service](#model-services); a setting "
                "listed here again has a different default or meaning for this service."
            )
        lines += ["", *section_table(section)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/configuration.md is out of date"
    )
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if stale_paths({PAGE: page}):
            print(f"{PAGE.relative_to(REPO)} is out of date: run make config-docs")
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
