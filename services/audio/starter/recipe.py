"""Building the offline starter emergency-call model (`mtc models build --only audio`).

1. The transcript classifier: the `emergency-transcript` text starter (a committed LoRA
   adapter merged into the bundled MiniLM), trained on the written sentences.
2. The audio set: every sentence spoken `VARIANTS_PER_SENTENCE` times (synthesis.py).
3. The audio ResNet trained on clips of the training sentences, the fusion fitted and the
   whole model evaluated on clips of held-out sentences (the text model's held-out split).

The result is rebuilt only when an input changes (sentences, adapter, synthesis or training
code, recipe), and refused below `MIN_HELDOUT_ACCURACY`.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from services.audio import training as audio_training
from services.audio.features import LogMelConfig
from services.audio.starter import synthesis
from services.audio.training import AudioTrainConfig, read_clip_folder, train_audio_model
from services.core.errors import ModelLoadError
from services.core.manifest import Manifest, read_manifest, verify_model_dir
from services.text.starter import emergency_transcripts
from services.text.starter.recipes import EMERGENCY_TRANSCRIPT, BuildResult, build
from services.text.training import read_labelled_csv

logger = logging.getLogger(__name__)

NAME = "mtc-emergency-call"
VERSION = "1.0.0"
VARIANTS_PER_SENTENCE = 2
MIN_HELDOUT_ACCURACY = 0.75
TRAIN_CONFIG = AudioTrainConfig(features=LogMelConfig())


def inputs_digest() -> str:
    """SHA-256 over everything the build reads; a change to any of them rebuilds."""
    digest = hashlib.sha256()
    sources = (
        emergency_transcripts.TRANSCRIPTS_FILE,
        EMERGENCY_TRANSCRIPT.adapter_path,
        Path(synthesis.__file__),
        Path(audio_training.__file__),
    )
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(repr((VARIANTS_PER_SENTENCE, asdict(TRAIN_CONFIG))).encode())
    return digest.hexdigest()


def _current_build(out: Path, digest: str) -> Manifest | None:
    try:
        manifest = read_manifest(out)
        if manifest is None or manifest.name != NAME or manifest.version != VERSION:
            return None
        if manifest.training_data.get("inputs_sha256") != digest:
            return None
        verify_model_dir(out, manifest)
    except ModelLoadError as exc:
        logger.warning("%s will be rebuilt: %s", out, exc)
        return None
    return manifest


def build_audio_starter(out: Path, *, force: bool = False, progress: bool = False) -> BuildResult:
    """Build the starter into `out` unless it already holds this build."""
    started = time.perf_counter()
    digest = inputs_digest()
    current = None if force else _current_build(out, digest)
    if current is not None:
        return BuildResult(out.absolute(), False, current, time.perf_counter() - started)
    sentences = read_labelled_csv(
        emergency_transcripts.TRANSCRIPTS_FILE, emergency_transcripts.LABELS
    )
    with tempfile.TemporaryDirectory(prefix="mtc-audio-starter-") as scratch:
        text_dir = Path(scratch) / "transcript"
        text = build(EMERGENCY_TRANSCRIPT, text_dir, onnx=False, progress=progress)
        clip_dir = Path(scratch) / "clips"
        spoken = synthesis.synthesise_set(
            ((example.text, example.label) for example in sentences),
            clip_dir,
            variants=VARIANTS_PER_SENTENCE,
        )
        logger.info("synthesised %d clips", len(spoken))
        clips = read_clip_folder(clip_dir, emergency_transcripts.LABELS)
        manifest = train_audio_model(
            clips,
            emergency_transcripts.LABELS,
            text_dir,
            out,
            name=NAME,
            version=VERSION,
            config=TRAIN_CONFIG,
            min_heldout_accuracy=MIN_HELDOUT_ACCURACY,
            progress=progress,
            training_data={
                "inputs_sha256": digest,
                "transcripts": "services/text/starter/data/emergency_transcripts.csv "
                "(hand-written, CC0-1.0, see services/audio/starter/DATASHEET.md)",
                "audio": f"synthetic: every sentence spoken {VARIANTS_PER_SENTENCE} times by "
                "espeak-ng (8 accents, 13 voice variants, varied rate, pitch and pauses) through "
                "sox (telephone band, reverb) plus coloured noise at 5-30 dB SNR",
                "transcript_model": {
                    "name": text.manifest.name,
                    "version": text.manifest.version,
                    "heldout_accuracy": text.manifest.metrics.get("heldout_accuracy"),
                },
            },
        )
    return BuildResult(out.absolute(), True, manifest, time.perf_counter() - started)
