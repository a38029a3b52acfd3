"""`mtc eval --starter audio`: the built starter emergency-call model evaluated for real.

Two halves, each on the held-out split of the written transcripts and, when it exists, on
the English set written apart from them (services/text/starter/data/independent/):

- `text`: the model's transcript classifier (`transcript/`) on the sentences themselves;
- `spoken`: the sentences spoken as the build speaks them (`synthesis.plan_set`, the
  recipe's `VARIANTS_PER_SENTENCE`, one calm and one urgent clip each; held-out voices and
  noise levels, which the independent set's sentences all get), cached under the cache
  directory, decoded as the build decodes them and run through the serving
  `EmergencyCallModel` twice: with the written transcript and with none.

Weighting follows the build (`services/audio/evaluation.py`): calm-versus-urgent counts
every clip once; the call-label figures count every sentence once, its calm and urgent
clips weighted by the recipe's `CALL_MIX`. The served fusion was fitted by the build on the
held-out clips themselves, so its held-out answers are in-sample for its four fitted
numbers; the build's recorded figures are cross-fitted instead (each half of the held-out
sentences answered by a fusion fitted on the other half), and are recomputed here from the
served model's branch scores (`cross_fitted`) to compare with manifest.json. The
independent set was never fitted on: the served answers are its honest figures.
Whisper transcripts (slow) are scored by `asr_evaluation`, only when asked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.artifacts.manifest import read_manifest
from services.audio.evaluation import emergency_scores, mix_weights
from services.audio.fusion import FusionRule
from services.audio.models.emergency_call import TRANSCRIPT_DIR, CallClip, EmergencyCallModel
from services.audio.models.urgency import URGENCY_LABELS
from services.audio.starter import asr_evaluation, recipe, soundscape, synthesis
from services.audio.starter.synthesis import SpokenClip
from services.audio.training import (
    Figures,
    HeldoutSet,
    LabelledClip,
    decoded_samples,
    figures,
    first_sentence_keys,
    heldout_metrics,
)
from services.audio.transcription import quiet_whisper
from services.core.errors import ModelLoadError
from services.lifecycle.evaluation import EvaluationReport, set_table
from services.text.starter import emergency_transcripts, independent_sets
from services.text.starter.recipes import EMERGENCY_TRANSCRIPT
from services.text.training import LabelledText, is_heldout, normalise

logger = logging.getLogger(__name__)

CLIP_CACHE = "audio-starter-clips"
"""Under the cache directory: one folder of clips per spoken set and synthesis digest."""
PREDICT_BATCH = 16
REGULAR_VS_EMERGENCY = ("regular", "emergency")
WEIGHTING = (
    "calm vs urgent: every clip counts once; call labels and regular vs emergency: every "
    "sentence counts once, its calm and urgent clips weighted by the call mix (an emergency "
    "call sounds urgent {emergency:.0%} of the time, an ordinary one {ordinary:.0%}), as the "
    "build's figures and docs/audio.md's table are"
)
BUILD_FIGURES = {
    "heldout_audio_accuracy": "calm vs urgent, audio branch alone",
    "heldout_accuracy": "6 labels, true transcript, fused",
    "heldout_macro_f1": "6 labels, true transcript, fused (macro-F1)",
    "heldout_text_accuracy": "6 labels, transcript only",
    "heldout_emergency_accuracy": "regular vs emergency, true transcript, fused",
    "heldout_no_transcript_emergency_accuracy": "regular vs emergency, no transcript",
    "heldout_no_transcript_emergency_balanced_accuracy": "  balanced",
    "heldout_no_transcript_majority_accuracy": "  always the more common kind",
}
"""The manifest's held-out figures, and what each measures (the comparison's rows)."""


@dataclass(frozen=True)
class BranchScores:
    """What the served model said about each clip of a spoken set, in clip order."""

    urgency: NDArray[np.float64]
    """(clips, 2) calm/urgent scores of the audio branch."""
    text: NDArray[np.float64]
    """(clips, labels) transcript classifier scores of the written transcript."""
    fused: NDArray[np.float64]
    """(clips, labels) the served answer with the written transcript."""
    no_transcript: NDArray[np.float64]
    """(clips, labels) the served answer without a transcript."""


@dataclass(frozen=True)
class SpokenSetReport:
    """The served model on one spoken set."""

    clips: int
    sentences: int
    calm_vs_urgent: Figures
    """The audio branch's own answer; every clip counts once."""
    fused: Figures
    """The six call labels, fused with the written transcript."""
    transcript_only: Figures
    """The six call labels from the transcript classifier alone, on the same clips."""
    no_transcript: Figures
    """Regular versus emergency, fused with no transcript (the sound alone)."""
    no_transcript_balanced_accuracy: float
    majority_accuracy: float
    """Regular versus emergency by always answering the more common kind."""
    fused_regular_vs_emergency: float
    """Regular versus emergency, fused with the written transcript."""
    cross_fitted: dict[str, Any] | None = None
    """For the set the fusion was fitted on: the build's figures recomputed (its keys)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "clips": self.clips,
            "sentences": self.sentences,
            "calm_vs_urgent": self.calm_vs_urgent.to_json(),
            "fused": self.fused.to_json(),
            "transcript_only": self.transcript_only.to_json(),
            "no_transcript": {
                **self.no_transcript.to_json(),
                "balanced_accuracy": self.no_transcript_balanced_accuracy,
                "majority_accuracy": self.majority_accuracy,
            },
            "fused_regular_vs_emergency_accuracy": self.fused_regular_vs_emergency,
            **({} if self.cross_fitted is None else {"cross_fitted": self.cross_fitted}),
        }


def score_spoken_set(
    clips: Sequence[LabelledClip],
    scores: BranchScores,
    fusion: FusionRule,
    *,
    cross_fit: bool,
) -> SpokenSetReport:
    """The figures of one spoken set from the served model's answers; `cross_fit` also
    recomputes the build's cross-fitted figures from the branch scores."""
    labels = list(fusion.labels)
    ordinary = list(fusion.ordinary_labels)
    gold = np.array([labels.index(clip.label) for clip in clips])
    weights = mix_weights(
        [clip.split_key for clip in clips],
        [clip.label in ordinary for clip in clips],
        [clip.sounds(ordinary) for clip in clips],
        recipe.CALL_MIX,
    )
    sounds = np.array([URGENCY_LABELS.index(clip.sounds(ordinary)) for clip in clips])
    is_emergency = (~fusion.ordinary_mask).astype(np.int64)
    kind = emergency_scores(scores.no_transcript, gold, fusion.ordinary_mask, weights)
    cross_fitted = None
    if cross_fit:
        heldout = HeldoutSet(list(clips), scores.urgency, scores.text, gold, weights)
        cross_fitted = heldout_metrics(heldout, fusion)
    return SpokenSetReport(
        clips=len(clips),
        sentences=len({clip.split_key for clip in clips}),
        calm_vs_urgent=figures(
            scores.urgency.argmax(axis=1), sounds, np.ones(len(clips)), URGENCY_LABELS
        ),
        fused=figures(scores.fused.argmax(axis=1), gold, weights, labels),
        transcript_only=figures(scores.text.argmax(axis=1), gold, weights, labels),
        no_transcript=figures(
            is_emergency[scores.no_transcript.argmax(axis=1)],
            is_emergency[gold],
            weights,
            REGULAR_VS_EMERGENCY,
        ),
        no_transcript_balanced_accuracy=kind.balanced_accuracy,
        majority_accuracy=kind.majority_accuracy,
        fused_regular_vs_emergency=emergency_scores(
            scores.fused, gold, fusion.ordinary_mask, weights
        ).accuracy,
        cross_fitted=cross_fitted,
    )


# --------------------------------------------------------------------------- the clips


def heldout_sentences() -> list[LabelledText]:
    """The training transcripts' held-out sentences, as the build reads them."""
    sentences, _ = emergency_transcripts.load_transcripts()
    return [example for example in sentences if is_heldout(normalise(example.text))]


def independent_set_file() -> Path:
    """Where the independently written English transcripts are (or will be)."""
    return independent_sets.independent_set_path(EMERGENCY_TRANSCRIPT.task)


def independent_sentences() -> list[LabelledText] | None:
    """The independently written English transcripts (each distinct text once), or None
    while the file does not exist."""
    if not independent_set_file().is_file():
        return None
    rows = independent_sets.load_independent_set(
        EMERGENCY_TRANSCRIPT.task, EMERGENCY_TRANSCRIPT.labels
    )
    unique = {normalise(example.text): example for example in reversed(rows)}
    return [example for example in rows if unique[normalise(example.text)] is example]


def plan_heldout(
    sentences: Sequence[LabelledText], *, all_heldout: bool = False
) -> list[SpokenClip]:
    """The held-out clips exactly as the build plans them; `all_heldout` (the independent
    set) puts every sentence in held-out voices and noise levels."""
    return synthesis.plan_set(
        ((example.text, example.label) for example in sentences),
        variants=recipe.VARIANTS_PER_SENTENCE,
        all_heldout=all_heldout,
    )


def first_sentences(clips: Sequence[SpokenClip], per_label: int | None) -> list[SpokenClip]:
    """The clips of the first `per_label` sentences of every label, in `sentence_digest`
    order (a fixed draw that favours no kind of sentence); all of them for None."""
    if per_label is None:
        return list(clips)
    chosen = first_sentence_keys(((normalise(clip.text), clip.label) for clip in clips), per_label)
    return [clip for clip in clips if normalise(clip.text) in chosen]


def _espeak_version() -> str:
    if shutil.which("espeak-ng") is None:
        return "missing"
    result = subprocess.run(
        ["espeak-ng", "--version"], capture_output=True, timeout=30, check=False
    )
    return result.stdout.decode(errors="replace").strip()


def clip_directory(cache_dir: Path, name: str, whole_set: Sequence[SpokenClip]) -> Path:
    """The cache folder of one spoken set: named by a digest of everything a clip's sound
    depends on (the synthesis code, espeak-ng's version, the planned set, whose sentences
    also make its crowds), so a change to any of them starts a new folder."""
    digest = hashlib.sha256()
    for module in (synthesis, soundscape):
        digest.update(Path(module.__file__ or "").read_bytes())
    digest.update(_espeak_version().encode())
    for clip in whole_set:
        digest.update(repr((clip.file, clip.text, clip.label, clip.recipe)).encode())
    return cache_dir / CLIP_CACHE / f"{name}-{digest.hexdigest()[:16]}"


def ensure_clips(
    clips: Sequence[SpokenClip], whole_set: Sequence[SpokenClip], directory: Path
) -> int:
    """Synthesise those of `clips` not yet in `directory` (as they sound within
    `whole_set`); returns how many were made. Each file is moved in whole once written,
    so a file present is complete."""
    missing = [clip for clip in clips if not (directory / clip.file).is_file()]
    if not missing:
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=".staging-") as scratch:
        synthesis.synthesise_clips(missing, Path(scratch), whole_set=whole_set)
        for clip in missing:
            target = directory / clip.file
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(scratch) / clip.file, target)
    return len(missing)


def served_scores(
    model: EmergencyCallModel, clips: Sequence[LabelledClip], *, progress: bool = False
) -> BranchScores:
    """Every clip through `model.predict`, with its written transcript and with none."""
    from tqdm import tqdm

    labels = list(model.labels)

    def row(ranking: Sequence[Any], order: Sequence[str]) -> list[float]:
        by_label = {entry.label: entry.score for entry in ranking}
        return [float(by_label[label]) for label in order]

    urgency: list[list[float]] = []
    text: list[list[float]] = []
    fused: list[list[float]] = []
    alone: list[list[float]] = []
    starts = range(0, len(clips), PREDICT_BATCH)
    for start in tqdm(starts, desc="clips", unit="batch", disable=not progress):
        batch = clips[start : start + PREDICT_BATCH]
        samples = [decoded_samples(clip, model.features.sample_rate) for clip in batch]
        rate = model.features.sample_rate
        with_words = model.predict(
            [CallClip(s, rate, str(c.transcript)) for s, c in zip(samples, batch, strict=True)]
        )
        # An empty transcript: no Whisper, no transcript classifier, the sound alone.
        without = model.predict([CallClip(s, rate, "") for s in samples])
        for said, unsaid in zip(with_words, without, strict=True):
            if said.text is None:
                raise ValueError(f"no transcript scores for {said.transcript!r}")
            urgency.append(row(said.audio, URGENCY_LABELS))
            text.append(row(said.text, labels))
            fused.append(row(said.scores, labels))
            alone.append(row(unsaid.scores, labels))
    return BranchScores(
        urgency=np.array(urgency),
        text=np.array(text),
        fused=np.array(fused),
        no_transcript=np.array(alone),
    )


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class AudioStarterReport:
    """Every evaluation of the audio starter, with the build's recorded figures."""

    model: str
    identity: str
    text: dict[str, EvaluationReport]
    spoken: dict[str, SpokenSetReport]
    build_metrics: dict[str, Any]
    build_text_accuracy: float | None
    skipped: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    whisper: dict[str, Any] | None = None

    @property
    def weighting(self) -> str:
        """How the figures weight clips, in a sentence."""
        return WEIGHTING.format(
            emergency=recipe.CALL_MIX.urgent_when_emergency,
            ordinary=recipe.CALL_MIX.urgent_when_ordinary,
        )

    def build_comparison(self) -> dict[str, dict[str, float | None]]:
        """Per manifest figure: served (held-out clips), cross-fitted, and the build's."""
        heldout = self.spoken.get("held-out")
        if heldout is None:
            return {}
        served = {
            "heldout_audio_accuracy": heldout.calm_vs_urgent.accuracy,
            "heldout_accuracy": heldout.fused.accuracy,
            "heldout_macro_f1": heldout.fused.macro_f1,
            "heldout_text_accuracy": heldout.transcript_only.accuracy,
            "heldout_emergency_accuracy": heldout.fused_regular_vs_emergency,
            "heldout_no_transcript_emergency_accuracy": heldout.no_transcript.accuracy,
            "heldout_no_transcript_emergency_balanced_accuracy": (
                heldout.no_transcript_balanced_accuracy
            ),
            "heldout_no_transcript_majority_accuracy": heldout.majority_accuracy,
        }
        crossed = heldout.cross_fitted or {}
        return {
            key: {
                "served": served[key],
                "cross_fitted": crossed.get(key),
                "build": self.build_metrics.get(key),
            }
            for key in BUILD_FIGURES
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict: every set, the comparison, Whisper's figures if run."""
        sets: dict[str, Any] = {
            f"text {name}": report.to_json() for name, report in self.text.items()
        }
        sets.update({f"spoken {name}": report.to_json() for name, report in self.spoken.items()})
        document: dict[str, Any] = {
            "identity": self.identity,
            "weighting": {"call_mix": recipe.CALL_MIX.to_json(), "rule": self.weighting},
            "sentences_per_label": self.limit,
            "sets": sets,
            "skipped": self.skipped,
            "build_comparison": self.build_comparison(),
            "build_transcript_heldout_accuracy": self.build_text_accuracy,
        }
        if self.whisper is not None:
            document["whisper"] = self.whisper
        return document

    def table(self) -> str:
        """What `mtc eval --starter audio` prints."""
        lines = [
            f"model     {self.model} ({self.identity}, served EmergencyCallModel)",
            f"weighting {self.weighting}",
            "fusion    as served: fitted by the build on the held-out clips themselves "
            "(in-sample there); `cross-fitted` answers each half of the held-out sentences "
            "with a fusion fitted on the other half, as the build's recorded figures do",
        ]
        if self.limit is not None:
            lines.append(f"subset    the first {self.limit} sentences per label of each set")
        lines += [f"skipped   {name}: {why}" for name, why in self.skipped.items()]
        lines += ["", "transcript classifier (text)", set_table(self.text)]
        rows: list[tuple[str, str]] = []
        for name, spoken in self.spoken.items():
            text_only = spoken.transcript_only
            for title, shown, baseline in (
                ("calm vs urgent, audio branch alone", spoken.calm_vs_urgent, ""),
                (
                    "6 labels, true transcript, fused",
                    spoken.fused,
                    f"transcript only {text_only.accuracy:.4f} (macro-F1 {text_only.macro_f1:.4f})",
                ),
                (
                    "regular vs emergency, no transcript",
                    spoken.no_transcript,
                    f"majority {spoken.majority_accuracy:.4f}; balanced "
                    f"{spoken.no_transcript_balanced_accuracy:.4f}",
                ),
            ):
                measured = f"{spoken.clips:5d}  {shown.accuracy:8.4f}  {shown.macro_f1:8.4f}  "
                rows.append((f"{name}: {title}", measured + baseline))
        width = max([len("set"), *(len(title) for title, _ in rows)])
        lines += ["", "spoken clips (served model)"]
        lines.append(f"{'set':<{width}}  clips  accuracy  macro-F1  compared with")
        lines += [f"{title:<{width}}  {measured}" for title, measured in rows]
        comparison = self.build_comparison()
        if comparison:
            width = max(len(text) for text in BUILD_FIGURES.values())
            lines += ["", "held-out clips against the build's figures (manifest.json)"]
            lines.append(f"{'':<{width}}  served  cross-fitted   build")
            for key, values in comparison.items():
                cells = [
                    f"{value:.4f}" if isinstance(value, float) else "-"
                    for value in (values["served"], values["cross_fitted"], values["build"])
                ]
                lines.append(
                    f"{BUILD_FIGURES[key]:<{width}}  {cells[0]:>6}  {cells[1]:>12}  {cells[2]:>6}"
                )
            crossed = self.spoken["held-out"].cross_fitted or {}
            method, _, detail = str(crossed.get("heldout_figures", "")).partition(": ")
            if method == "cross-fitted":
                lines.append(f"cross-fitted column: {detail}")
            elif method:
                lines.append(f"cross-fitted column: not cross-fitted, {detail}")
            if self.build_text_accuracy is not None:
                lines.append(
                    "transcript classifier on the held-out transcripts at build time: "
                    f"{self.build_text_accuracy:.4f}"
                )
        if self.whisper is not None:
            lines += ["", _whisper_table(self.whisper)]
        for name, report in self.text.items():
            lines += ["", f"text {name}", report.table()]
        for name, spoken in self.spoken.items():
            for title, shown in (
                ("calm vs urgent, audio branch alone (clips)", spoken.calm_vs_urgent),
                ("6 labels, true transcript, fused", spoken.fused),
                ("6 labels, transcript only", spoken.transcript_only),
                ("regular vs emergency, no transcript", spoken.no_transcript),
            ):
                lines += ["", f"spoken {name}: {title}", shown.matrix_table()]
        return "\n".join(lines)


def _whisper_table(figures: dict[str, Any]) -> str:
    accuracy, kind = figures["accuracy"], figures["regular_vs_emergency_accuracy"]
    return "\n".join(
        [
            f"Whisper transcripts ({figures['clips']} held-out clips of {figures['sentences']} "
            f"sentences the build did not fit on; {figures['asr_empty_transcripts']} heard "
            "nothing)",
            f"{'':<34}  fused  transcript only",
            f"{'6 labels, Whisper transcript':<34}  {accuracy['fused, Whisper transcript']:.4f}"
            f"  {accuracy['transcript only, Whisper transcript']:.4f}",
            f"{'regular vs emergency, Whisper':<34}  {kind['fused, Whisper transcript']:.4f}"
            f"  {kind['transcript only, Whisper transcript']:.4f}",
        ]
    )


def labelled_clips(clips: Sequence[SpokenClip], directory: Path) -> list[LabelledClip]:
    """The synthesised clips as the build's training code reads them."""
    return [
        LabelledClip(directory / clip.file, clip.label, clip.text, clip.recipe.delivery)
        for clip in clips
    ]


def evaluate_audio_starter(
    model_dir: Path,
    cache_dir: Path,
    *,
    model: str | None = None,
    sentences_per_label: int | None = None,
    asr_sentences_per_label: int = 0,
    progress: bool = False,
) -> AudioStarterReport:
    """Evaluate the emergency-call model in `model_dir` (see the module docstring).

    `sentences_per_label` speaks only that many sentences of every label of each set (the
    text figures always use every sentence); `asr_sentences_per_label` > 0 also runs
    `asr_evaluation` on that many held-out sentences per label.
    """
    from services.text.evaluation import evaluate_model_dir

    manifest = read_manifest(model_dir)
    if manifest is None:
        raise ModelLoadError(
            f"{model_dir}: no manifest.json; build it with `mtc models build --only audio`"
        )
    sentence_sets: dict[str, list[LabelledText]] = {"held-out": heldout_sentences()}
    skipped: dict[str, str] = {}
    independent = independent_sentences()
    if independent is None:
        skipped["independent"] = f"no independent English set at {independent_set_file()} yet"
        logger.warning("skipping the independent set: %s", skipped["independent"])
    else:
        sentence_sets["independent"] = independent
    # The written sentences as the text starters are evaluated: the recipe's held-out split.
    written = {
        **sentence_sets,
        "held-out": EMERGENCY_TRANSCRIPT.evaluation_sets(independent=False)["held-out transcripts"],
    }
    text = {
        name: evaluate_model_dir(model_dir / TRANSCRIPT_DIR, examples, progress=progress)
        for name, examples in written.items()
    }
    served = EmergencyCallModel(asr_enabled=False, korean_transcripts_enabled=False)
    asyncio.run(served.start(model_dir))
    assert served.fusion is not None
    spoken: dict[str, SpokenSetReport] = {}
    planned: dict[str, tuple[list[SpokenClip], Path]] = {}
    for name, examples in sentence_sets.items():
        plan = plan_heldout(examples, all_heldout=name != "held-out")
        directory = clip_directory(cache_dir, name, plan)
        planned[name] = plan, directory
        chosen = first_sentences(plan, sentences_per_label)
        made = ensure_clips(chosen, plan, directory)
        logger.info("%s: %d clips, %d synthesised into %s", name, len(chosen), made, directory)
        clips = labelled_clips(chosen, directory)
        scores = served_scores(served, clips, progress=progress)
        spoken[name] = score_spoken_set(clips, scores, served.fusion, cross_fit=name == "held-out")
    whisper = None
    if asr_sentences_per_label > 0:
        heldout_plan, heldout_dir = planned["held-out"]
        fitted_on = manifest.metrics.get("asr_weights_fitted_on", {})
        asr_clips, _ = asr_evaluation.chosen_clips(
            asr_sentences_per_label, set(fitted_on.get("sentences", []))
        )
        ensure_clips(asr_clips, heldout_plan, heldout_dir)
        with quiet_whisper():
            whisper = asr_evaluation.evaluate(
                model_dir, asr_sentences_per_label, clip_dir=heldout_dir
            )
    transcript_model = manifest.training_data.get("transcript_model", {})
    return AudioStarterReport(
        model=model or str(model_dir),
        identity=f"{manifest.name} {manifest.version}",
        text=text,
        spoken=spoken,
        build_metrics=manifest.metrics,
        build_text_accuracy=transcript_model.get("heldout_accuracy"),
        skipped=skipped,
        limit=sentences_per_label,
        whisper=whisper,
    )
