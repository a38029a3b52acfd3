"""The disaster-tweet set written for this project (see data/DATASHEET.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.text.starter import load_written_set
from services.text.training import LabelledText, read_labelled_csv

LABELS: tuple[str, str] = ("not_disaster", "disaster")
DATA_DIR = Path(__file__).with_name("data")
TWEETS_FILE = DATA_DIR / "disaster_tweets.csv"
FIGURATIVE_AND_CASUAL_FILE = DATA_DIR / "disaster_tweets_figurative_casual.csv"
"""A second written set: everyday posts that use disaster words figuratively, and real
emergencies told casually, misspelled or indirectly."""
TRAPS_FILE = DATA_DIR / "disaster_traps.csv"
"""40 further tweets (mostly figurative uses of disaster words) that no model trains on."""


def load_tweets() -> tuple[list[LabelledText], dict[str, Any]]:
    """Every labelled tweet, and a description of the data."""
    corpus = "mtc disaster tweets: hand-written, English, see DATASHEET.md"
    return load_written_set(TWEETS_FILE, LABELS, corpus)


def load_figurative_and_casual() -> tuple[list[LabelledText], dict[str, Any]]:
    """The second written set, and a description of it."""
    corpus = "mtc figurative and casual disaster tweets: hand-written, English, see DATASHEET.md"
    return load_written_set(FIGURATIVE_AND_CASUAL_FILE, LABELS, corpus)


def load_traps() -> list[LabelledText]:
    """The fixed challenge set of figurative and tricky tweets."""
    return read_labelled_csv(TRAPS_FILE, LABELS)
