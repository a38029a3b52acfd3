"""Reading a labelled clip folder for `mtc train audio`: where the calm/urgent labels come
from, and what is refused before any training."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.audio.training import LabelledClip, read_clip_folder, train_audio_model
from services.text.training import DataError
from tests.support.audio_clips import encode, tone


def clip_folder(root: Path, rows: list[str] | None) -> Path:
    for label in ("regular", "help"):
        (root / label).mkdir(parents=True)
        for n in range(2):
            (root / label / f"{n}.wav").write_bytes(encode(tone(0.5)))
    if rows is not None:
        (root / "transcripts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_urgency_comes_from_the_folder_when_given(tmp_path: Path) -> None:
    rows = [
        "file,text,label,urgency",
        "regular/0.wav,book a table,regular,urgent",
        "help/0.wav,my father fell,help,calm",
    ]
    folder = clip_folder(tmp_path, rows)
    clips = {c.path.relative_to(folder).as_posix(): c for c in read_clip_folder(folder)}
    assert clips["regular/0.wav"].sounds(["regular"]) == "urgent"
    assert clips["help/0.wav"].sounds(["regular"]) == "calm"
    # Without an urgency, the call label decides: ordinary labels sound calm.
    assert clips["regular/1.wav"].sounds(["regular"]) == "calm"
    assert clips["help/1.wav"].sounds(["regular"]) == "urgent"
    assert clips["help/0.wav"].transcript == "my father fell"


def test_without_transcripts_the_label_decides(tmp_path: Path) -> None:
    clips = read_clip_folder(clip_folder(tmp_path, None))
    assert {(c.label, c.sounds(["regular"])) for c in clips} == {
        ("regular", "calm"),
        ("help", "urgent"),
    }


def test_an_unknown_urgency_is_refused(tmp_path: Path) -> None:
    rows = ["file,text,urgency", "help/0.wav,my father fell,panicky"]
    with pytest.raises(DataError, match="panicky"):
        read_clip_folder(clip_folder(tmp_path, rows))


def test_labels_without_an_ordinary_one_are_refused(tmp_path: Path) -> None:
    text_model = tmp_path / "text"
    text_model.mkdir()
    (text_model / "config.json").write_text("{}")
    clips = [LabelledClip(tmp_path / "a.wav", "help", None)]
    with pytest.raises(DataError, match="needs both"):
        train_audio_model(
            clips, ["help", "theft"], text_model, tmp_path / "out", name="x", version="1"
        )
    assert not (tmp_path / "out").exists()
