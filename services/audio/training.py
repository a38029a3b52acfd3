"""`mtc train audio`: train the audio classifier on a labelled folder of clips, fit the
fusion with a transcript classifier, and write a servable emergency-call model directory.

The folder holds one sub-folder per label (`<label>/*.wav|flac|ogg|mp3`) and optionally
`transcripts.csv` (`file,text`, file relative to the folder). Clips are split into train
and held-out by a hash of their transcript when there is one (so every recording of a
sentence falls on one side, and held-out scores measure unseen sentences), else of their
bytes. The ResNet trains on random 3-second crops with time and frequency masking; the
fusion weights are chosen on the held-out clips (see `fusion.py`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.audio.decoding import AudioLimits, decode_audio
from services.audio.features import LogMelConfig, log_mel, pad_batch
from services.audio.fusion import FusionRule, fit_fusion
from services.audio.models.emergency_call import AUDIO_DIR, TRANSCRIPT_DIR
from services.audio.models.resnet import RESNET_LAYERS, build_resnet
from services.core.errors import MtcError
from services.core.evaluation import EvaluationReport, evaluate_predictions
from services.core.manifest import Manifest, write_manifest
from services.core.model import rank_scores
from services.core.model_dir import write_model_dir
from services.text.training import DataError, TrainingError, is_heldout, normalise

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TRANSCRIPTS_FILE = "transcripts.csv"
SPLIT_RULE = (
    "held out when sha256(normalised transcript, or the file's bytes when there is none) "
    "falls in the text training's held-out bucket"
)
_READ_LIMITS = AudioLimits(
    max_bytes=100 * 1024 * 1024, max_seconds=120.0, min_seconds=0.1, silence_threshold_dbfs=-80
)


@dataclass(frozen=True)
class LabelledClip:
    """One training clip."""

    path: Path
    label: str
    transcript: str | None

    @property
    def split_key(self) -> str:
        """What decides the clip's side of the split."""
        if self.transcript:
            return normalise(self.transcript)
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class AudioTrainConfig:
    """The audio classifier's training recipe."""

    epochs: int = 14
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-3
    crop_seconds: float = 3.0
    frequency_masks: int = 2
    time_masks: int = 2
    seed: int = 2026
    threads: int = 2
    features: LogMelConfig = field(default_factory=LogMelConfig)
    resnet_layers: tuple[int, int, int, int] = RESNET_LAYERS


def read_clip_folder(data_dir: Path, labels: Sequence[str] | None = None) -> list[LabelledClip]:
    """Every clip of a labelled folder, sorted by path; transcripts from `transcripts.csv`."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory")
    found = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    wanted = list(labels) if labels is not None else found
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise DataError(f"{data_dir}: no folder for label(s) {missing}")
    transcripts: dict[str, str] = {}
    transcript_file = data_dir / TRANSCRIPTS_FILE
    if transcript_file.is_file():
        with transcript_file.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"file", "text"} <= set(reader.fieldnames):
                raise DataError(f"{transcript_file}: needs `file` and `text` columns")
            for row in reader:
                transcripts[Path(row["file"]).as_posix()] = row["text"]
    clips: list[LabelledClip] = []
    for label in wanted:
        for path in sorted((data_dir / label).rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                relative = path.relative_to(data_dir).as_posix()
                clips.append(LabelledClip(path, label, transcripts.get(relative)))
    empty = [label for label in wanted if not any(c.label == label for c in clips)]
    if empty:
        raise DataError(f"{data_dir}: no audio files for label(s) {empty}")
    return clips


def split_clips(clips: Sequence[LabelledClip]) -> tuple[list[LabelledClip], list[LabelledClip]]:
    """(train, held-out) by the text training's hash rule applied to each clip's split key."""
    train = [clip for clip in clips if not is_heldout(clip.split_key)]
    heldout = [clip for clip in clips if is_heldout(clip.split_key)]
    if not train or not heldout:
        raise DataError(
            f"{len(clips)} clips give {len(train)} to train and {len(heldout)} held out; "
            "more clips (or more distinct transcripts) are needed"
        )
    return train, heldout


def spectrograms(clips: Sequence[LabelledClip], config: LogMelConfig) -> list[NDArray[np.float32]]:
    """Log-mel spectrogram of every clip (decoded like the service decodes uploads)."""
    result = []
    for clip in clips:
        try:
            audio = decode_audio(
                clip.path.read_bytes(),
                label=str(clip.path),
                limits=_READ_LIMITS,
                sample_rate=config.sample_rate,
            )
        except MtcError as exc:
            raise DataError(f"cannot use {clip.path}: {exc.detail}") from None
        result.append(log_mel(audio.samples, config))
    return result


def _crop(spec: NDArray[np.float32], frames: int, rng: random.Random) -> NDArray[np.float32]:
    if spec.shape[1] <= frames:
        padded = np.full((spec.shape[0], frames), spec.min(), dtype=np.float32)
        start = rng.randint(0, frames - spec.shape[1])
        padded[:, start : start + spec.shape[1]] = spec
        return padded
    start = rng.randint(0, spec.shape[1] - frames)
    return spec[:, start : start + frames].copy()


def _mask(spec: NDArray[np.float32], config: AudioTrainConfig, rng: random.Random) -> None:
    # SpecAugment-style masking: the network may not rely on any one band or moment.
    floor = float(spec.min())
    for _ in range(config.frequency_masks):
        width = rng.randint(0, spec.shape[0] // 8)
        start = rng.randint(0, spec.shape[0] - width)
        spec[start : start + width, :] = floor
    for _ in range(config.time_masks):
        width = rng.randint(0, spec.shape[1] // 10)
        start = rng.randint(0, spec.shape[1] - width)
        spec[:, start : start + width] = floor


def train_network(
    train_specs: Sequence[NDArray[np.float32]],
    targets: Sequence[int],
    num_labels: int,
    config: AudioTrainConfig,
    *,
    progress: bool = False,
) -> Any:
    """A trained ResNet (eval mode)."""
    import torch

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)
    network = build_resnet(num_labels, config.resnet_layers)
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = (len(train_specs) + config.batch_size - 1) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=config.learning_rate,
        total_steps=steps_per_epoch * config.epochs,
        pct_start=0.15,
    )
    crop_frames = config.features.frames(int(config.crop_seconds * config.features.sample_rate))
    order = list(range(len(train_specs)))
    network.train()
    for epoch in range(config.epochs):
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            chosen = order[start : start + config.batch_size]
            crops = []
            for index in chosen:
                crop = _crop(train_specs[index], crop_frames, rng)
                _mask(crop, config, rng)
                crops.append(crop)
            inputs = torch.from_numpy(np.stack(crops)[:, None, :, :])
            labels = torch.tensor([targets[index] for index in chosen])
            optimiser.zero_grad()
            loss: Any = torch.nn.functional.cross_entropy(network(inputs), labels)
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += float(loss.item()) * len(chosen)
        message = f"audio epoch {epoch + 1}/{config.epochs}: loss {total / len(order):.4f}"
        if progress:
            print(message, flush=True)
        logger.info(message)
    network.eval()
    return network


def network_probabilities(
    network: Any, specs: Sequence[NDArray[np.float32]], batch_size: int = 16
) -> NDArray[np.float64]:
    """Softmax outputs for whole clips, grouped by length to limit padding."""
    import torch

    order = sorted(range(len(specs)), key=lambda index: specs[index].shape[1])
    rows: dict[int, NDArray[np.float64]] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = torch.from_numpy(pad_batch([specs[index] for index in chosen]))
            probabilities = network(batch).float().softmax(dim=-1).numpy()
            for index, row in zip(chosen, probabilities, strict=True):
                rows[index] = np.asarray(row, dtype=np.float64)
    return np.stack([rows[index] for index in range(len(specs))])


def _report(
    probabilities: NDArray[np.float64], gold: Sequence[str], labels: Sequence[str]
) -> EvaluationReport:
    return evaluate_predictions(rank_scores(labels, probabilities.tolist()), gold, labels)


def text_probabilities(
    text_model_dir: Path, transcripts: Sequence[str], labels: Sequence[str]
) -> NDArray[np.float64]:
    """The transcript classifier's scores in `labels` order."""
    import asyncio

    from services.text.models.sequence_classifier import SequenceClassifier

    model = SequenceClassifier()
    asyncio.run(model.start(text_model_dir))
    if sorted(model.metadata.labels) != sorted(labels):
        raise TrainingError(
            f"{text_model_dir}: labels {model.metadata.labels} differ from the clips' {labels}"
        )
    rows = []
    for start in range(0, len(transcripts), 32):
        for ranked in model.predict(list(transcripts[start : start + 32])):
            by_label = {s.label: s.score for s in ranked}
            rows.append([by_label[label] for label in labels])
    return np.asarray(rows, dtype=np.float64)


def write_call_model_files(
    directory: Path,
    *,
    network: Any,
    labels: Sequence[str],
    features: LogMelConfig,
    resnet_layers: tuple[int, int, int, int],
    text_model_dir: Path,
) -> None:
    """Everything of an emergency-call model directory but the manifest."""
    from safetensors.torch import save_file

    audio_dir = directory / AUDIO_DIR
    audio_dir.mkdir(parents=True)
    state = {key: value.contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(audio_dir / "model.safetensors"))
    audio_config = {
        "labels": list(labels),
        "features": features.to_json(),
        "resnet_layers": list(resnet_layers),
    }
    (audio_dir / "config.json").write_text(
        json.dumps(audio_config, indent=2) + "\n", encoding="utf-8"
    )
    shutil.copytree(
        text_model_dir,
        directory / TRANSCRIPT_DIR,
        ignore=shutil.ignore_patterns("manifest.json", "onnx"),
    )


def train_audio_model(
    clips: Sequence[LabelledClip],
    labels: Sequence[str],
    text_model_dir: Path,
    out: Path,
    *,
    name: str,
    version: str,
    config: AudioTrainConfig | None = None,
    training_data: dict[str, Any] | None = None,
    min_heldout_accuracy: float | None = None,
    progress: bool = False,
) -> Manifest:
    """Train, fit the fusion, evaluate on held-out clips, write the model directory.

    With `min_heldout_accuracy`, a model below it is refused before anything is written.
    """
    config = config or AudioTrainConfig()
    started = time.perf_counter()
    if not (text_model_dir / "config.json").is_file():
        raise TrainingError(f"{text_model_dir}: not a Hugging Face text classifier directory")
    train, heldout = split_clips(clips)
    index = {label: position for position, label in enumerate(labels)}
    train_specs = spectrograms(train, config.features)
    heldout_specs = spectrograms(heldout, config.features)
    network = train_network(
        train_specs, [index[c.label] for c in train], len(labels), config, progress=progress
    )
    gold = [clip.label for clip in heldout]
    audio = network_probabilities(network, heldout_specs)
    audio_report = _report(audio, gold, labels)
    metrics: dict[str, Any] = {
        "heldout_examples": len(heldout),
        "heldout_audio_accuracy": round(audio_report.accuracy, 6),
        "heldout_audio_macro_f1": round(audio_report.macro_f1, 6),
    }
    if all(clip.transcript for clip in heldout):
        text = text_probabilities(text_model_dir, [str(c.transcript) for c in heldout], labels)
        fusion = fit_fusion(audio, text, [index[label] for label in gold])
        text_report = _report(text, gold, labels)
        fused_report = _report(fusion.fuse(audio, text), gold, labels)
        metrics.update(
            {
                "heldout_text_accuracy": round(text_report.accuracy, 6),
                "heldout_accuracy": round(fused_report.accuracy, 6),
                "heldout_macro_f1": round(fused_report.macro_f1, 6),
                "heldout_expected_calibration_error": round(
                    fused_report.expected_calibration_error, 6
                ),
                "heldout_per_class": fused_report.to_json()["per_class"],
                "heldout_confusion_matrix": fused_report.confusion_matrix,
                "fusion_fitted_on": "held-out clips, written transcripts",
            }
        )
    else:
        # Without transcripts nothing tells how the branches compare: weigh them equally.
        fusion = FusionRule(audio_weight=1.0, text_weight=1.0)
        metrics["fusion_fitted_on"] = "not fitted (held-out clips have no transcripts)"
    logger.info("held-out metrics: %s", {k: v for k, v in metrics.items() if "accuracy" in k})
    reached = metrics.get("heldout_accuracy", metrics["heldout_audio_accuracy"])
    if min_heldout_accuracy is not None and reached < min_heldout_accuracy:
        raise TrainingError(
            f"{name}: held-out accuracy {reached:.4f} is below the floor {min_heldout_accuracy}; "
            "refusing to write an unusable model"
        )

    def fill(staging: Path) -> Manifest:
        write_call_model_files(
            staging,
            network=network,
            labels=labels,
            features=config.features,
            resnet_layers=config.resnet_layers,
            text_model_dir=text_model_dir,
        )
        recipe = {key: value for key, value in asdict(config).items() if key != "features"}
        return write_manifest(
            staging,
            name=name,
            task="audio",
            version=version,
            labels=list(labels),
            metrics=metrics,
            training_data={
                **(training_data or {}),
                "split_rule": SPLIT_RULE,
                "train_clips": len(train),
                "heldout_clips": len(heldout),
                "audio_training": recipe,
                "training_seconds": round(time.perf_counter() - started, 1),
            },
            config={"fusion": fusion.to_json()},
        )

    return write_model_dir(out, fill, replaceable=lambda manifest: manifest.name == name)
