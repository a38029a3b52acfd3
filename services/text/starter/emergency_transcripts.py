"""The emergency-call transcript set written for this project (see
services/audio/starter/DATASHEET.md): the words half of the audio starter model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.text.starter import load_written_set
from services.text.training import LabelledText

LABELS: tuple[str, ...] = ("regular", "help", "robbery", "sexual", "theft", "violence")
TRANSCRIPTS_FILE = Path(__file__).with_name("data") / "emergency_transcripts.csv"


def load_transcripts() -> tuple[list[LabelledText], dict[str, Any]]:
    """Every labelled sentence, and a description of the data."""
    corpus = (
        "mtc emergency-call transcripts: hand-written, English, see "
        "services/audio/starter/DATASHEET.md"
    )
    return load_written_set(TRANSCRIPTS_FILE, LABELS, corpus)
