"""The README documents every setting a user can change (in its configuration tables, or
in those of the component pages it links to)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from services.audio.settings import AudioSettings
from services.jobs.settings import JobsSettings
from services.pose.settings import PoseSettings
from services.text.settings import TextSettings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
# The README's configuration section links these pages for the gateway and batch jobs.
COMPONENT_PAGES: dict[type[BaseSettings], str] = {
    GatewaySettings: (REPO / "docs" / "gateway.md").read_text(encoding="utf-8"),
    JobsSettings: (REPO / "docs" / "jobs.md").read_text(encoding="utf-8"),
}


@pytest.mark.parametrize(
    ("settings", "prefix"),
    [
        (TextSettings, "MTC_"),
        (PoseSettings, "MTC_"),
        (AudioSettings, "MTC_"),
        (GatewaySettings, "MTC_GATEWAY_"),
        (JobsSettings, "MTC_JOBS_"),
    ],
)
def test_every_setting_is_in_the_configuration_table(
    settings: type[BaseSettings], prefix: str
) -> None:
    for name, field in settings.model_fields.items():
        assert field.description, f"{name} has no docstring"
        # A field read from a shared variable (e.g. MTC_S3_ENDPOINT_URL) is listed under it.
        alias = field.validation_alias
        variable = alias if isinstance(alias, str) else f"{prefix}{name.upper()}"
        row = f"| `{variable}` |"
        assert row in README or row in COMPONENT_PAGES.get(settings, ""), f"{variable} missing"


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "make run" in first_block
    assert "make test" in first_block
