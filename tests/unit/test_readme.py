"""The README opens with the two commands a new user needs. Every setting is documented in
the generated docs/configuration.md (tests/unit/test_config_reference.py)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "make run" in first_block
    assert "make test" in first_block


def test_readme_links_the_configuration_reference() -> None:
    assert "(docs/configuration.md)" in README
