"""`python -m services.audio.starter.asr_evaluation`: the starter model on held-out clips
whose transcript comes from Whisper, as in the service when no transcript is sent.

Speech recognition takes about half a second per clip on two cores, too slow for the
starter build's time budget, so this runs on its own, on a fixed subsample: the first
`--sentences-per-label` held-out sentences of each label (in `sentence_digest` order)
that the build did not use to fit the weights of recognised transcripts, each spoken calm
and urgent exactly as in the build. Every clip goes through the
model's own `predict` three times (Whisper's transcript, the written transcript, none) and
is scored as the build scores: every sentence counts once, its two clips weighted by the
recipe's call mix. The transcript-only answer is the transcript classifier's top label;
when Whisper hears nothing it has no answer and counts as wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from services.artifacts.manifest import read_manifest
from services.audio.evaluation import emergency_scores, mix_weights
from services.audio.models.emergency_call import CallClip, EmergencyCallModel
from services.audio.starter import recipe, synthesis
from services.audio.starter.synthesis import SpokenClip
from services.audio.training import first_sentence_keys, sentence_digest
from services.text.starter import emergency_transcripts
from services.text.training import normalise

DEFAULT_MODEL = Path(".mtc/models/audio")


def chosen_clips(
    sentences_per_label: int, excluded: set[str]
) -> tuple[list[SpokenClip], list[SpokenClip]]:
    """(the subsample, the whole planned set it was drawn from); sentences whose
    `sentence_digest` is in `excluded` (those the build fitted on) are passed over."""
    sentences, _ = emergency_transcripts.load_transcripts()
    planned = synthesis.plan_set(
        ((example.text, example.label) for example in sentences),
        variants=recipe.VARIANTS_PER_SENTENCE,
    )
    usable = (
        (normalise(clip.text), clip.label)
        for clip in planned
        if clip.heldout and sentence_digest(normalise(clip.text)) not in excluded
    )
    chosen = first_sentence_keys(usable, sentences_per_label)
    return [clip for clip in planned if normalise(clip.text) in chosen], planned


def _top(prediction: Sequence[Any] | None) -> str | None:
    return None if not prediction else str(prediction[0].label)


def evaluate(
    model_dir: Path, sentences_per_label: int, *, clip_dir: Path | None = None
) -> dict[str, Any]:
    """Accuracies of the fused and the transcript-only answers on the subsample; its clips
    are read from `clip_dir` when given (already synthesised there, as `mtc eval --starter
    audio` caches them), else synthesised into a temporary directory."""
    manifest = read_manifest(model_dir)
    if manifest is None:
        raise SystemExit(f"{model_dir}: no manifest.json; build it with `mtc models build`")
    fitted_on = manifest.metrics.get("asr_weights_fitted_on", {})
    clips, planned = chosen_clips(sentences_per_label, set(fitted_on.get("sentences", [])))
    model = EmergencyCallModel(asr_enabled=True)
    asyncio.run(model.start(model_dir))
    assert model.fusion is not None
    labels = list(model.labels)
    ordinary = set(model.fusion.ordinary_labels)
    answers: dict[str, list[str | None]] = defaultdict(list)
    transcripts: list[str] = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if clip_dir is None:
            scratch = tempfile.TemporaryDirectory(prefix="mtc-asr-evaluation-")
            clip_dir = Path(stack.enter_context(scratch))
            synthesis.synthesise_clips(clips, clip_dir, whole_set=planned)
        for clip in clips:
            samples, rate = soundfile.read(clip_dir / clip.file, dtype="float32")
            # An empty transcript skips both Whisper and the transcript classifier: the
            # answer the service gives a clip without words (ASR off, none sent).
            runs = {"asr": None, "written": clip.text, "none": ""}
            for source, transcript in runs.items():
                (prediction,) = model.predict([CallClip(samples, rate, transcript)])
                answers[f"fused_{source}"].append(_top(prediction.scores))
                if source != "none":
                    answers[f"text_{source}"].append(_top(prediction.text))
                if source == "asr":
                    transcripts.append(prediction.transcript or "")
    seconds = time.perf_counter() - started
    gold = np.array([labels.index(clip.label) for clip in clips])
    weights = mix_weights(
        [normalise(clip.text) for clip in clips],
        [clip.label in ordinary for clip in clips],
        [clip.recipe.delivery for clip in clips],
        recipe.CALL_MIX,
    )

    def same_label(answer: str | None, clip: SpokenClip) -> bool:
        return answer == clip.label

    def same_kind(answer: str | None, clip: SpokenClip) -> bool:
        """Regular-versus-emergency: right when the answer is of the gold label's kind."""
        return answer is not None and (answer in ordinary) == (clip.label in ordinary)

    def accuracy(name: str, right: Callable[[str | None, SpokenClip], bool] = same_label) -> float:
        """The share of the weight on the clips whose answer is `right`."""
        hits = np.array([right(a, clip) for a, clip in zip(answers[name], clips, strict=True)])
        return round(float(weights[hits].sum() / weights.sum()), 4)

    none_scores = np.zeros((len(clips), len(labels)))
    for row, answer in enumerate(answers["fused_none"]):
        none_scores[row, labels.index(str(answer))] = 1.0
    no_transcript = emergency_scores(none_scores, gold, model.fusion.ordinary_mask, weights)

    def changed(right: Callable[[str | None, SpokenClip], bool]) -> dict[str, int]:
        """Clips (unweighted) the fusion got right and the transcript alone wrong, and back."""
        pairs = zip(answers["fused_asr"], answers["text_asr"], clips, strict=True)
        outcomes = Counter((right(fused, clip), right(text, clip)) for fused, text, clip in pairs)
        return {
            "fused right, transcript only wrong": outcomes[True, False],
            "fused wrong, transcript only right": outcomes[False, True],
        }

    by_sound: dict[str, dict[str, float]] = {}
    for delivery in synthesis.DELIVERIES:
        rows = [i for i, clip in enumerate(clips) if clip.recipe.delivery == delivery]
        by_sound[f"sounds {delivery}"] = {
            name: round(float(np.mean([answers[name][i] == clips[i].label for i in rows])), 4)
            for name in ("fused_asr", "text_asr")
        }
    return {
        "model": str(model_dir),
        "clips": len(clips),
        "sentences": len({clip.text for clip in clips}),
        "seconds": round(seconds, 1),
        "asr_empty_transcripts": sum(1 for text in transcripts if not text.strip()),
        "accuracy": {
            "fused, Whisper transcript": accuracy("fused_asr"),
            "transcript only, Whisper transcript": accuracy("text_asr"),
            "fused, written transcript": accuracy("fused_written"),
            "transcript only, written transcript": accuracy("text_written"),
        },
        "regular_vs_emergency_accuracy": {
            "fused, Whisper transcript": accuracy("fused_asr", same_kind),
            "transcript only, Whisper transcript": accuracy("text_asr", same_kind),
        },
        "no_transcript_regular_vs_emergency": {
            "fused (audio alone)": round(no_transcript.accuracy, 4),
            "balanced": round(no_transcript.balanced_accuracy, 4),
            "always the more common kind": round(no_transcript.majority_accuracy, 4),
        },
        "unweighted_by_sound": by_sound,
        "clips_the_fusion_changed": {
            "label": changed(same_label),
            "regular_vs_emergency": changed(same_kind),
        },
        "asr_weights": {
            "audio": model.fusion.asr_audio_weight,
            "text": model.fusion.asr_text_weight,
        },
        "weighting": {
            "call_mix": recipe.CALL_MIX.to_json(),
            "rule": "every sentence counts once, its calm and urgent clips weighted by the "
            "call mix (unweighted_by_sound and clips_the_fusion_changed are not weighted)",
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="default %(default)s")
    parser.add_argument("--sentences-per-label", type=int, default=5, help="default %(default)s")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = evaluate(args.model, args.sentences_per_label)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
