"""Fixtures shared by every suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.models import build_tiny_text_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT sequence classifier directory (no manifest)."""
    return build_tiny_text_model(tmp_path_factory.mktemp("tiny-bert"))
