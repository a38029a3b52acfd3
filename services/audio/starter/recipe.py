"""Building the offline starter emergency-call model (`mtc models build --only audio`).

1. The transcript classifier: the `emergency-transcript` text starter (a committed LoRA
   adapter merged into the bundled MiniLM), trained on the written sentences.
2. The audio set: every held-out sentence and `AUDIO_TRAINING_SHARE` of the training ones
   spoken `VARIANTS_PER_SENTENCE` times, alternately calm and urgent, in voices and noise
   levels that depend on its side of the split (synthesis.py).
3. The calm/urgent classifier trained on clips of the training sentences, the fusion fitted
   and the whole model evaluated on clips of held-out sentences (the text model's held-out
   split), weighted by `CALL_MIX`.
4. The Korean transcript head (`korean_transcript_head/`, trained by
   `mtc train starter korean-transcript` and committed) copied in as it is: Korean
   transcripts are scored by it and fused with the same weights.

The result is rebuilt only when an input changes (sentences, adapter, Korean head,
synthesis, features or training code, recipe), and refused below `MIN_HELDOUT_ACCURACY`
(fused, with written transcripts) or `MIN_AUDIO_ACCURACY` (calm/urgent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.artifacts.model_dir import BuildResult, current_build
from services.audio import evaluation, features, fusion
from services.audio import training as audio_training
from services.audio.evaluation import CallMix
from services.audio.models import urgency
from services.audio.models.korean_transcripts import HEAD_CONFIG
from services.audio.starter import korean_transcripts, soundscape, synthesis
from services.audio.training import AudioTrainConfig, read_clip_folder, train_audio_model
from services.audio.transcription import bundled_whisper_dir
from services.core.errors import ModelLoadError
from services.text.starter import emergency_transcripts
from services.text.starter.recipes import EMERGENCY_TRANSCRIPT, build
from services.text.training import is_heldout, normalise

logger = logging.getLogger(__name__)

NAME = "mtc-emergency-call"
VERSION = "2.1.0"
VARIANTS_PER_SENTENCE = 2
"""One calm and one urgent clip of every sentence."""
MIN_HELDOUT_ACCURACY = 0.75
MIN_AUDIO_ACCURACY = 0.8
TRAIN_CONFIG = AudioTrainConfig()
AUDIO_TRAINING_SHARE = (2, 3)
"""The audio branch trains on this fraction of the training sentences (chosen by a hash of
the text), all of them spoken both ways: more did not raise held-out accuracy noticeably,
and synthesis is most of the build's time. The transcript classifier uses them all, and
every held-out sentence is spoken."""
ASR_SENTENCES_PER_LABEL = 2
"""Held-out sentences per label whose clips (calm and urgent) Whisper transcribes in the
build, to fit the weights of recognised transcripts (about half a second each)."""
CALL_MIX = CallMix(urgent_when_emergency=0.8, urgent_when_ordinary=0.1)
"""An assumption, not a measurement: four emergency calls in five sound urgent, one
ordinary call in ten does (see DATASHEET.md). The fusion rates are fitted, and the fused
figures computed, under it."""


def inputs_digest() -> str:
    """SHA-256 over everything the build reads; a change to any of them rebuilds."""
    digest = hashlib.sha256()
    sources = (
        emergency_transcripts.TRANSCRIPTS_FILE,
        EMERGENCY_TRANSCRIPT.adapter_path,
        *sorted(korean_transcripts.HEAD_DIR.iterdir()),
        *(
            Path(module.__file__ or "")
            for module in (
                synthesis,
                soundscape,
                features,
                urgency,
                fusion,
                evaluation,
                audio_training,
            )
        ),
    )
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    settings = (
        VARIANTS_PER_SENTENCE,
        AUDIO_TRAINING_SHARE,
        asdict(TRAIN_CONFIG),
        asdict(CALL_MIX),
        ASR_SENTENCES_PER_LABEL,
    )
    digest.update(repr(settings).encode())
    return digest.hexdigest()


def korean_head_summary() -> dict[str, Any]:
    """What the manifest records of the committed Korean transcript head."""
    config = json.loads((korean_transcripts.HEAD_DIR / HEAD_CONFIG).read_text(encoding="utf-8"))
    return {
        "name": config["name"],
        "encoder": config["encoder"],
        "transcripts": "services/audio/starter/data/korean_transcripts.csv (hand-written, "
        "CC0-1.0, see services/audio/starter/DATASHEET.md)",
        "heldout": {
            key: config["metrics"]["heldout"][key]
            for key in ("accuracy", "macro_f1", "expected_calibration_error", "examples")
        },
    }


def _spoken(text: str) -> bool:
    """Whether the starter synthesises `text`: every held-out sentence, and
    AUDIO_TRAINING_SHARE of the training ones."""
    key = normalise(text)
    if is_heldout(key):
        return True
    share, whole = AUDIO_TRAINING_SHARE
    return int(hashlib.sha256(b"audio\0" + key.encode("utf-8")).hexdigest()[:8], 16) % whole < share


def _whisper_available() -> bool:
    try:
        bundled_whisper_dir()
    except ModelLoadError as exc:
        logger.warning("recognised transcripts get the written ones' fusion weights: %s", exc)
        return False
    return True


def build_audio_starter(out: Path, *, force: bool = False, progress: bool = False) -> BuildResult:
    """Build the starter into `out` unless it already holds this build."""
    started = time.perf_counter()
    digest = inputs_digest()
    current = current_build(
        out,
        NAME,
        VERSION,
        logger,
        lambda manifest: manifest.training_data.get("inputs_sha256") == digest,
        force=force,
    )
    if current is not None:
        return BuildResult(out.absolute(), False, current, time.perf_counter() - started)
    sentences, _ = emergency_transcripts.load_transcripts()
    with tempfile.TemporaryDirectory(prefix="mtc-audio-starter-") as scratch:
        text_dir = Path(scratch) / "transcript"
        text = build(EMERGENCY_TRANSCRIPT, text_dir, onnx=False, progress=progress)
        clip_dir = Path(scratch) / "clips"
        spoken = synthesis.synthesise_set(
            ((example.text, example.label) for example in sentences if _spoken(example.text)),
            clip_dir,
            variants=VARIANTS_PER_SENTENCE,
        )
        logger.info("synthesised %d clips", len(spoken))
        clips = read_clip_folder(clip_dir, emergency_transcripts.LABELS)
        asr_sentences = ASR_SENTENCES_PER_LABEL if _whisper_available() else 0
        manifest = train_audio_model(
            clips,
            emergency_transcripts.LABELS,
            text_dir,
            out,
            name=NAME,
            version=VERSION,
            config=TRAIN_CONFIG,
            min_heldout_accuracy=MIN_HELDOUT_ACCURACY,
            min_audio_accuracy=MIN_AUDIO_ACCURACY,
            call_mix=CALL_MIX,
            asr_sentences_per_label=asr_sentences,
            korean_head_dir=korean_transcripts.HEAD_DIR,
            progress=progress,
            training_data={
                "inputs_sha256": digest,
                "transcripts": "services/text/starter/data/emergency_transcripts.csv "
                "(hand-written, CC0-1.0, see services/audio/starter/DATASHEET.md)",
                "audio": "synthetic: every held-out sentence and "
                f"{AUDIO_TRAINING_SHARE[0]}/{AUDIO_TRAINING_SHARE[1]} of the training ones "
                f"spoken {VARIANTS_PER_SENTENCE} times by "
                "espeak-ng, alternately calm and urgent whatever its label (rate, pitch, pitch "
                "range, shouting; sirens, screams, breaking glass and crowds made with numpy), "
                "with noise, telephone band and reverb drawn alike for both; held-out sentences "
                "in accents, voice variants and SNR bands training never used",
                "voices": {
                    "train": asdict(synthesis.TRAINING_POOL),
                    "heldout": asdict(synthesis.HELDOUT_POOL),
                },
                "transcript_model": {
                    "name": text.manifest.name,
                    "version": text.manifest.version,
                    "heldout_accuracy": text.manifest.metrics.get("heldout_accuracy"),
                },
                "korean_transcript_model": korean_head_summary(),
            },
        )
    return BuildResult(out.absolute(), True, manifest, time.perf_counter() - started)
