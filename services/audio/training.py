"""`mtc train audio`: train the audio branch on a labelled folder of clips, fit the fusion
with a transcript classifier, and write a servable emergency-call model directory.

The folder holds one sub-folder per call label (`<label>/*.wav|flac|ogg|mp3`) and
optionally `transcripts.csv` (`file,text`, file relative to the folder, and optionally an
`urgency` column, `calm` or `urgent`). The audio branch learns calm-versus-urgent: from the
`urgency` column where there is one, otherwise from the call label (an ordinary label such
as `regular` is calm, every other label urgent). Clips are split into train and held-out by
a hash of their transcript when there is one (so every recording of a sentence falls on one
side, and held-out scores measure unseen sentences), else of their bytes. The classifier is
trained on pooled acoustic features (`features.py`); the fusion rates and weights are
chosen on the held-out clips (see `fusion.py`).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.artifacts.manifest import Manifest, write_manifest
from services.artifacts.model_dir import write_model_dir
from services.audio.decoding import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    AudioLimits,
    decode_audio,
    decoded_bytes,
)
from services.audio.evaluation import (
    CallMix,
    emergency_scores,
    macro_f1,
    mix_weights,
    weighted_accuracy,
    weighted_confusion,
)
from services.audio.features import AcousticFeatureConfig, acoustic_features
from services.audio.fusion import FusionRule, fit_fusion, fit_weights
from services.audio.models.emergency_call import AUDIO_DIR, KOREAN_TRANSCRIPT_DIR, TRANSCRIPT_DIR
from services.audio.models.urgency import URGENCY_LABELS, UrgencyClassifier
from services.core.errors import MtcError
from services.lifecycle.evaluation import confusion_table
from services.text.training import DataError, TrainingError, is_heldout, normalise

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TRANSCRIPTS_FILE = "transcripts.csv"
SPLIT_RULE = (
    "held out when sha256(normalised transcript, or the file's bytes when there is none) "
    "falls in the text training's held-out bucket"
)
_READ_LIMITS = AudioLimits(
    max_bytes=100 * 1024 * 1024,
    max_seconds=120.0,
    min_seconds=0.1,
    silence_threshold_dbfs=-80,
    # Training folders are the operator's own files: any rate and channel count accepted.
    max_decoded_bytes=decoded_bytes(120.0, MAX_CHANNELS, MAX_SAMPLE_RATE),
)


@dataclass(frozen=True)
class LabelledClip:
    """One training clip."""

    path: Path
    label: str
    transcript: str | None
    urgency: str | None = None
    """`calm` or `urgent` when the folder says so; otherwise read from the label."""

    @property
    def split_key(self) -> str:
        """What decides the clip's side of the split."""
        if self.transcript:
            return normalise(self.transcript)
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def sounds(self, ordinary_labels: Sequence[str]) -> str:
        """The clip's urgency label: annotated, or implied by its call label."""
        if self.urgency is not None:
            return self.urgency
        return "calm" if self.label in ordinary_labels else "urgent"


@dataclass(frozen=True)
class AudioTrainConfig:
    """The audio branch's training recipe."""

    epochs: int = 14
    batch_size: int = 32
    learning_rate: float = 5e-3
    weight_decay: float = 1e-3
    hidden_units: int = 32
    """0 trains a logistic regression."""
    dropout: float = 0.2
    seed: int = 2026
    workers: int = 2
    """Threads measuring clips (the transforms release the GIL)."""
    ordinary_labels: tuple[str, ...] = ("regular",)
    features: AcousticFeatureConfig = field(default_factory=AcousticFeatureConfig)


def read_clip_folder(data_dir: Path, labels: Sequence[str] | None = None) -> list[LabelledClip]:
    """Every clip of a labelled folder, sorted by path; transcripts (and urgency, where
    given) from `transcripts.csv`."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory")
    found = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    wanted = list(labels) if labels is not None else found
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise DataError(f"{data_dir}: no folder for label(s) {missing}")
    rows: dict[str, dict[str, str]] = {}
    transcript_file = data_dir / TRANSCRIPTS_FILE
    if transcript_file.is_file():
        with transcript_file.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"file", "text"} <= set(reader.fieldnames):
                raise DataError(f"{transcript_file}: needs `file` and `text` columns")
            for row in reader:
                urgency = (row.get("urgency") or "").strip()
                if urgency and urgency not in URGENCY_LABELS:
                    raise DataError(
                        f"{transcript_file}: urgency {urgency!r} for {row['file']} is not one "
                        f"of {list(URGENCY_LABELS)}"
                    )
                rows[Path(row["file"]).as_posix()] = {"text": row["text"], "urgency": urgency}
    clips: list[LabelledClip] = []
    for label in wanted:
        for path in sorted((data_dir / label).rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                row = rows.get(path.relative_to(data_dir).as_posix(), {})
                clips.append(LabelledClip(path, label, row.get("text"), row.get("urgency") or None))
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


def decoded_samples(clip: LabelledClip, sample_rate: int) -> NDArray[np.float32]:
    """The clip decoded the way the service decodes uploads."""
    try:
        audio = decode_audio(
            clip.path.read_bytes(),
            label=str(clip.path),
            limits=_READ_LIMITS,
            sample_rate=sample_rate,
        )
    except MtcError as exc:
        raise DataError(f"cannot use {clip.path}: {exc.detail}") from None
    return audio.samples


def clip_features(
    clips: Sequence[LabelledClip], config: AcousticFeatureConfig, workers: int = 1
) -> NDArray[np.float32]:
    """(clips, features): every clip decoded, then measured."""

    def measure(clip: LabelledClip) -> NDArray[np.float32]:
        return acoustic_features(decoded_samples(clip, config.sample_rate), config)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return np.stack(list(pool.map(measure, clips)))


def train_urgency_classifier(
    features: NDArray[np.float32],
    targets: Sequence[int],
    config: AudioTrainConfig,
    *,
    progress: bool = False,
) -> UrgencyClassifier:
    """An MLP (logistic regression with no hidden units) trained with AdamW on standardised
    features. Classes are weighted to balance, so the output reads as if calm and urgent
    were equally common: the fusion supplies the real proportions."""
    import torch

    if len(set(targets)) < len(URGENCY_LABELS):
        raise DataError(
            "the audio branch needs both calm and urgent training clips; add an `urgency` "
            "column to transcripts.csv or clips of both ordinary and emergency labels"
        )
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-6] = 1.0
    inputs = torch.from_numpy(((features - mean) / scale).astype(np.float32))
    labels = torch.tensor(list(targets))
    counts = torch.bincount(labels, minlength=len(URGENCY_LABELS)).float()
    class_weights = counts.sum() / (len(URGENCY_LABELS) * counts)
    # A private generator stream: training is reproducible and leaves torch's global
    # random state as it found it.
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        modules: list[torch.nn.Module] = []
        width = inputs.shape[1]
        if config.hidden_units:
            modules += [
                torch.nn.Linear(width, config.hidden_units),
                torch.nn.ReLU(),
                torch.nn.Dropout(config.dropout),
            ]
            width = config.hidden_units
        modules.append(torch.nn.Linear(width, len(URGENCY_LABELS)))
        network = torch.nn.Sequential(*modules)
        optimiser = torch.optim.AdamW(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        order = torch.Generator().manual_seed(config.seed)
        network.train()
        for epoch in range(config.epochs):
            total = 0.0
            permutation = torch.randperm(len(inputs), generator=order)
            for start in range(0, len(inputs), config.batch_size):
                chosen = permutation[start : start + config.batch_size]
                loss = torch.nn.functional.cross_entropy(
                    network(inputs[chosen]), labels[chosen], weight=class_weights
                )
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                total += float(loss.item()) * len(chosen)
            message = f"audio epoch {epoch + 1}/{config.epochs}: loss {total / len(inputs):.4f}"
            if progress:
                print(message, flush=True)
            logger.info(message)
        network.eval()
    linear = [module for module in network if isinstance(module, torch.nn.Linear)]
    return UrgencyClassifier(
        features=config.features,
        feature_mean=mean.astype(np.float32),
        feature_scale=scale.astype(np.float32),
        layers=tuple(
            (
                layer.weight.detach().numpy().astype(np.float32),
                layer.bias.detach().numpy().astype(np.float32),
            )
            for layer in linear
        ),
    )


class TranscriptScorer:
    """The transcript classifier, loaded once, scoring transcripts in `labels` order."""

    def __init__(self, text_model_dir: Path, labels: Sequence[str]) -> None:
        from services.text.evaluation import load_classifier

        self._model = load_classifier(text_model_dir)
        if sorted(self._model.metadata.labels) != sorted(labels):
            raise TrainingError(
                f"{text_model_dir}: labels {self._model.metadata.labels} differ from the "
                f"clips' {list(labels)}"
            )
        self.labels = list(labels)

    def __call__(self, transcripts: Sequence[str]) -> NDArray[np.float64]:
        """(transcripts, labels) probabilities; each distinct text is classified once."""
        unique = sorted(set(transcripts))
        by_text: dict[str, list[float]] = {}
        for start in range(0, len(unique), 32):
            batch = unique[start : start + 32]
            for text, prediction in zip(batch, self._model.predict(batch), strict=True):
                scores = {s.label: s.score for s in prediction.scores}
                by_text[text] = [scores[label] for label in self.labels]
        return np.asarray([by_text[text] for text in transcripts], dtype=np.float64)


def sentence_digest(key: str) -> str:
    """A sentence's (split key's) name in manifests and its place in sampling orders."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def first_sentence_keys(keyed: Iterable[tuple[str, str]], per_label: int) -> set[str]:
    """Of (sentence key, label) pairs, the first `per_label` keys of every label in
    `sentence_digest` order."""
    keys_by_label: dict[str, set[str]] = {}
    for key, label in keyed:
        keys_by_label.setdefault(label, set()).add(key)
    return {
        key
        for keys in keys_by_label.values()
        for key in sorted(keys, key=sentence_digest)[:per_label]
    }


def write_call_model_files(
    directory: Path,
    *,
    classifier: UrgencyClassifier,
    labels: Sequence[str],
    text_model_dir: Path,
) -> None:
    """Everything of an emergency-call model directory but the manifest."""
    classifier.save(directory / AUDIO_DIR, {"labels": list(labels)})
    shutil.copytree(
        text_model_dir,
        directory / TRANSCRIPT_DIR,
        ignore=shutil.ignore_patterns("manifest.json", "onnx"),
    )


def _rounded(value: float) -> float:
    return round(float(value), 6)


def _by_sound(
    heldout: Sequence[LabelledClip],
    ordinary_labels: Sequence[str],
    answers: dict[str, NDArray[np.int64]],
    gold: NDArray[np.int64],
) -> dict[str, Any]:
    """Unweighted accuracies per (kind of call, how it sounds)."""
    groups: dict[str, Any] = {}
    for kind in ("emergency", "ordinary"):
        for urgency in URGENCY_LABELS:
            chosen = np.array(
                [
                    (clip.label in ordinary_labels) == (kind == "ordinary")
                    and clip.sounds(ordinary_labels) == urgency
                    for clip in heldout
                ]
            )
            if not chosen.any():
                continue
            groups[f"{kind} call, sounds {urgency}"] = {
                "clips": int(chosen.sum()),
                **{
                    name: _rounded(float(np.mean(answer[chosen] == gold[chosen])))
                    for name, answer in answers.items()
                },
            }
    return groups


def _cross_fitted(
    keys: Sequence[str],
    fit: Callable[[NDArray[np.bool_]], FusionRule],
    apply: Callable[[FusionRule, NDArray[np.bool_]], NDArray[np.float64]],
) -> NDArray[np.float64] | None:
    """Each half of the sentences (by `sentence_digest`) answered by a rule fitted on the
    other half; None when a half cannot be fitted (too few clips of one kind)."""
    folds = np.array([int(sentence_digest(key), 16) % 2 for key in keys])
    answers: NDArray[np.float64] | None = None
    for fold in (0, 1):
        scored = folds == fold
        if not scored.any() or scored.all():
            return None
        try:
            rule = fit(~scored)
        except ValueError:
            return None
        part = apply(rule, scored)
        if answers is None:
            answers = np.zeros((len(keys), part.shape[1]))
        answers[scored] = part
    return answers


@dataclass(frozen=True)
class Figures:
    """One kind of answer on one set of clips: accuracy, macro-F1, confusion matrix."""

    labels: tuple[str, ...]
    accuracy: float
    macro_f1: float
    confusion_matrix: list[list[float]]
    """Rows gold, columns predicted, in `labels` order; cells are summed clip weights."""
    weighted: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict, the matrix rounded to two decimals."""
        document = asdict(self)
        document["labels"] = list(self.labels)
        document["confusion_matrix"] = [[round(v, 2) for v in row] for row in self.confusion_matrix]
        return document

    def matrix_table(self) -> str:
        """The confusion matrix as text."""
        width = max(len("gold"), *(len(label) for label in self.labels))
        cells = ".1f" if self.weighted else ".0f"
        return confusion_table(
            self.labels, self.confusion_matrix, corner="gold", width=width, cells=cells
        )


def figures(
    predicted: NDArray[np.int64],
    gold: NDArray[np.int64],
    weights: NDArray[np.float64],
    labels: Sequence[str],
) -> Figures:
    """Weighted accuracy, macro-F1 and confusion matrix of `predicted` against `gold`
    (indices into `labels`); all weights 1 gives the plain counts."""
    confusion = weighted_confusion(predicted, gold, weights, len(labels))
    return Figures(
        labels=tuple(labels),
        accuracy=weighted_accuracy(predicted, gold, weights),
        macro_f1=macro_f1(confusion),
        confusion_matrix=confusion.tolist(),
        weighted=not bool(np.all(weights == 1.0)),
    )


@dataclass(frozen=True)
class HeldoutSet:
    """What the held-out figures are computed from."""

    clips: list[LabelledClip]
    urgency: NDArray[np.float64]
    text: NDArray[np.float64] | None
    gold: NDArray[np.int64]
    weights: NDArray[np.float64]

    def fit(
        self,
        rows: NDArray[np.bool_],
        labels: Sequence[str],
        ordinary_labels: Sequence[str],
        prior: Sequence[float],
    ) -> FusionRule:
        """A fusion fitted on the masked clips."""
        return fit_fusion(
            self.urgency[rows],
            None if self.text is None else self.text[rows],
            list(self.gold[rows]),
            labels=labels,
            ordinary_labels=ordinary_labels,
            prior=prior,
            weights=self.weights[rows],
        )


def heldout_metrics(heldout: HeldoutSet, fusion: FusionRule) -> dict[str, Any]:
    """Fused, transcript-only and sound-only figures; every fitted answer cross-fitted (by
    a rule with `fusion`'s labels and prior) when the set allows."""

    def fit(rows: NDArray[np.bool_]) -> FusionRule:
        return heldout.fit(rows, fusion.labels, fusion.ordinary_labels, fusion.prior)

    keys = [clip.split_key for clip in heldout.clips]
    gold, weights, urgency, text = heldout.gold, heldout.weights, heldout.urgency, heldout.text
    audio_only = _cross_fitted(keys, fit, lambda rule, rows: rule.audio_only(urgency[rows]))
    method = (
        "cross-fitted: each half of the held-out sentences answered by a fusion fitted on the "
        "other half"
        if audio_only is not None
        else "in-sample: too few held-out clips to fit the fusion on half of them"
    )
    if audio_only is None:
        audio_only = fusion.audio_only(urgency)
    no_transcript = emergency_scores(audio_only, gold, fusion.ordinary_mask, weights)
    metrics: dict[str, Any] = {
        "heldout_figures": method,
        "heldout_no_transcript_emergency_accuracy": _rounded(no_transcript.accuracy),
        "heldout_no_transcript_emergency_balanced_accuracy": _rounded(
            no_transcript.balanced_accuracy
        ),
        "heldout_no_transcript_majority_accuracy": _rounded(no_transcript.majority_accuracy),
    }
    if text is None:
        return metrics
    fused = _cross_fitted(keys, fit, lambda rule, rows: rule.fuse(urgency[rows], text[rows]))
    if fused is None:
        fused = fusion.fuse(urgency, text)
    fused_figures = figures(fused.argmax(axis=1), gold, weights, fusion.labels)
    with_text = emergency_scores(fused, gold, fusion.ordinary_mask, weights)
    text_kind = emergency_scores(text, gold, fusion.ordinary_mask, weights)
    metrics.update(
        {
            "heldout_text_accuracy": _rounded(
                weighted_accuracy(text.argmax(axis=1), gold, weights)
            ),
            "heldout_accuracy": _rounded(fused_figures.accuracy),
            "heldout_macro_f1": _rounded(fused_figures.macro_f1),
            "heldout_emergency_accuracy": _rounded(with_text.accuracy),
            "heldout_text_emergency_accuracy": _rounded(text_kind.accuracy),
            "heldout_confusion_matrix": np.round(fused_figures.confusion_matrix, 2).tolist(),
            "heldout_accuracy_by_sound": _by_sound(
                heldout.clips,
                fusion.ordinary_labels,
                {"fused": fused.argmax(axis=1), "text": text.argmax(axis=1)},
                gold,
            ),
        }
    )
    return metrics


def fit_asr_weights(
    heldout: HeldoutSet,
    fusion: FusionRule,
    scorer: TranscriptScorer,
    sentences_per_label: int,
    sample_rate: int,
    threads: int,
) -> tuple[FusionRule, dict[str, Any]]:
    """The fusion with weights for recognised transcripts fitted on Whisper's transcripts of
    a few held-out sentences' clips, and what was fitted on (a record for the manifest)."""
    from services.audio.transcription import WhisperTranscriber, bundled_whisper_dir, quiet_whisper

    started = time.perf_counter()
    # The clips of the first `sentences_per_label` sentences of every label.
    keys = first_sentence_keys(((c.split_key, c.label) for c in heldout.clips), sentences_per_label)
    chosen = [index for index, clip in enumerate(heldout.clips) if clip.split_key in keys]
    transcriber = WhisperTranscriber(bundled_whisper_dir(), language="en", threads=threads)
    with quiet_whisper():
        recognitions = [
            transcriber.transcribe(decoded_samples(heldout.clips[index], sample_rate))
            for index in chosen
        ]
    # A clip Whisper heard nothing in is answered from the sound alone, whatever the weights.
    heard = [(index, r) for index, r in zip(chosen, recognitions, strict=True) if r.text.strip()]
    record: dict[str, Any] = {
        "clips": len(chosen),
        "empty_transcripts": len(chosen) - len(heard),
        "sentences": sorted({sentence_digest(heldout.clips[i].split_key) for i in chosen}),
    }
    if not heard:
        return fusion, {**record, "fitted": False}
    asr_text = scorer([recognition.text for _, recognition in heard])
    confidence = np.array([recognition.confidence for _, recognition in heard])
    rows = np.array([index for index, _ in heard])
    urgency, gold, weights = heldout.urgency[rows], heldout.gold[rows], heldout.weights[rows]
    audio_weight, text_weight = fit_weights(
        fusion, urgency, asr_text, list(gold), weights, asr_confidence=confidence
    )
    fitted = replace(fusion, asr_audio_weight=audio_weight, asr_text_weight=text_weight)
    fused = fitted.fuse(urgency, asr_text, asr_confidence=confidence)
    record.update(
        {
            "fitted": True,
            "text_accuracy": _rounded(weighted_accuracy(asr_text.argmax(axis=1), gold, weights)),
            "mean_confidence": _rounded(float(confidence.mean())),
            "fused_accuracy_in_sample": _rounded(
                weighted_accuracy(fused.argmax(axis=1), gold, weights)
            ),
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    return fitted, record


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
    min_audio_accuracy: float | None = None,
    call_mix: CallMix | None = None,
    asr_sentences_per_label: int = 0,
    korean_head_dir: Path | None = None,
    progress: bool = False,
) -> Manifest:
    """Train, fit the fusion, evaluate on held-out clips, write the model directory.

    `call_mix` weights the held-out clips when their urgency was drawn independently of
    their words (synthetic sets); leave it None for real recordings. With
    `asr_sentences_per_label`, that many held-out sentences per label are transcribed by
    Whisper to fit the weights of recognised transcripts (otherwise they get the written
    transcripts' weights). With `min_heldout_accuracy` / `min_audio_accuracy`, a model
    below either is refused before anything is written. `korean_head_dir` (a trained
    Korean transcript head, `models/korean_transcripts.py`) is copied in as it is.
    """
    config = config or AudioTrainConfig()
    started = time.perf_counter()
    if not (text_model_dir / "config.json").is_file():
        raise TrainingError(f"{text_model_dir}: not a Hugging Face text classifier directory")
    ordinary = [label for label in labels if label in config.ordinary_labels]
    if not ordinary or len(ordinary) == len(labels):
        raise DataError(
            f"labels {list(labels)}: the audio branch separates ordinary calls "
            f"({list(config.ordinary_labels)}) from emergencies, so it needs both"
        )
    train, heldout_clips = split_clips(clips)
    train_features = clip_features(train, config.features, config.workers)
    heldout_features = clip_features(heldout_clips, config.features, config.workers)
    classifier = train_urgency_classifier(
        train_features,
        [URGENCY_LABELS.index(clip.sounds(ordinary)) for clip in train],
        config,
        progress=progress,
    )
    urgency = classifier.probabilities(heldout_features)
    sounds = np.array([URGENCY_LABELS.index(clip.sounds(ordinary)) for clip in heldout_clips])
    said = urgency.argmax(axis=1)
    metrics: dict[str, Any] = {
        "heldout_examples": len(heldout_clips),
        "heldout_audio_labels": list(URGENCY_LABELS),
        "heldout_audio_accuracy": _rounded(float(np.mean(said == sounds))),
        "heldout_audio_recall": {
            label: _rounded(float(np.mean(said[sounds == position] == position)))
            for position, label in enumerate(URGENCY_LABELS)
            if (sounds == position).any()
        },
    }
    # The prior is the labelled set's label shares, not the held-out split's, which is a
    # hash's draw.
    counts = np.array([sum(c.label == label for c in clips) for label in labels], float)
    prior = tuple(float(p) for p in (counts + 1) / (counts + 1).sum())
    scorer = (
        TranscriptScorer(text_model_dir, labels)
        if all(clip.transcript for clip in heldout_clips)
        else None
    )
    heldout = HeldoutSet(
        clips=list(heldout_clips),
        urgency=urgency,
        text=None if scorer is None else scorer([str(c.transcript) for c in heldout_clips]),
        gold=np.array([labels.index(clip.label) for clip in heldout_clips]),
        weights=mix_weights(
            [clip.split_key for clip in heldout_clips],
            [clip.label in ordinary for clip in heldout_clips],
            [clip.sounds(ordinary) for clip in heldout_clips],
            call_mix,
        ),
    )
    fusion = heldout.fit(np.ones(len(heldout_clips), dtype=bool), labels, ordinary, prior)
    metrics.update(heldout_metrics(heldout, fusion))
    metrics["fusion_fitted_on"] = (
        "held-out clips, written transcripts"
        if heldout.text is not None
        else "held-out clips, rates only (no transcripts: the branch weights stay 1 and 1)"
    )
    asr_record: dict[str, Any] = {"fitted": False, "clips": 0}
    if scorer is not None and asr_sentences_per_label > 0:
        fusion, asr_record = fit_asr_weights(
            heldout,
            fusion,
            scorer,
            asr_sentences_per_label,
            config.features.sample_rate,
            config.workers,
        )
    metrics["asr_weights_fitted_on"] = asr_record
    if call_mix is not None:
        metrics["heldout_weighting"] = {
            "call_mix": call_mix.to_json(),
            "rule": "every held-out sentence counts once, its calm and urgent clips weighted "
            "by the call mix (accuracy_by_sound and the audio figures are unweighted)",
        }
    logger.info("held-out metrics: %s", {k: v for k, v in metrics.items() if "accuracy" in k})
    audio_accuracy = metrics["heldout_audio_accuracy"]
    for what, reached, floor in (
        ("held-out", metrics.get("heldout_accuracy", audio_accuracy), min_heldout_accuracy),
        ("held-out calm/urgent", audio_accuracy, min_audio_accuracy),
    ):
        if floor is not None and reached < floor:
            raise TrainingError(
                f"{name}: {what} accuracy {reached:.4f} is below the floor {floor}; "
                "refusing to write an unusable model"
            )

    def fill(staging: Path) -> Manifest:
        write_call_model_files(
            staging, classifier=classifier, labels=labels, text_model_dir=text_model_dir
        )
        if korean_head_dir is not None:
            shutil.copytree(korean_head_dir, staging / KOREAN_TRANSCRIPT_DIR)
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
                "heldout_clips": len(heldout_clips),
                "audio_training": recipe,
                "training_seconds": round(time.perf_counter() - started, 1),
            },
            config={"fusion": fusion.to_json()},
        )

    return write_model_dir(out, fill, replaceable=lambda manifest: manifest.name == name)
