"""Classification metrics for held-out evaluation: accuracy, F1, confusion, calibration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from services.core.model import LabelScore

CALIBRATION_BINS = 15


@dataclass(frozen=True)
class ClassReport:
    """Precision, recall and F1 of one label, and how many gold items carry it."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics of a set of predictions against gold labels."""

    examples: int
    accuracy: float
    macro_f1: float
    expected_calibration_error: float
    labels: list[str]
    per_class: dict[str, ClassReport]
    confusion_matrix: list[list[int]]
    """Rows are gold labels, columns predicted labels, both in `labels` order."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    def table(self) -> str:
        """Human-readable summary: headline metrics, per-class table, confusion matrix."""
        width = max(len("label"), *(len(label) for label in self.labels))
        lines = [
            f"examples  {self.examples}",
            f"accuracy  {self.accuracy:.4f}",
            f"macro-F1  {self.macro_f1:.4f}",
            f"ECE       {self.expected_calibration_error:.4f}",
            "",
            f"{'label':<{width}}  precision  recall  f1      support",
        ]
        for label in self.labels:
            row = self.per_class[label]
            lines.append(
                f"{label:<{width}}  {row.precision:9.4f}  {row.recall:6.4f}  {row.f1:6.4f}  "
                f"{row.support:7d}"
            )
        lines += ["", "confusion matrix (rows: gold, columns: predicted)"]
        lines.append(confusion_table(self.labels, self.confusion_matrix, corner="", width=width))
        return "\n".join(lines)


def confusion_table(
    labels: Sequence[str],
    matrix: Sequence[Sequence[float]],
    *,
    corner: str,
    width: int,
    cells: str = "d",
) -> str:
    """A confusion matrix as text: `corner` above the gold labels (`width` wide), a column
    per predicted label, each count in the format `cells`."""
    cell = max(7, *(len(label) + 1 for label in labels))
    lines = [f"{corner:<{width}}  " + "".join(f"{label:>{cell}}" for label in labels)]
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"{label:<{width}}  " + "".join(f"{value:>{cell}{cells}}" for value in row))
    return "\n".join(lines)


def set_table(sets: Mapping[str, EvaluationReport]) -> str:
    """One line per evaluation set, side by side: examples, accuracy, macro-F1 and ECE."""
    width = max([len("set"), *(len(name) for name in sets)])
    lines = [f"{'set':<{width}}  examples  accuracy  macro-F1  ECE"]
    for name, report in sets.items():
        lines.append(
            f"{name:<{width}}  {report.examples:8d}  {report.accuracy:8.4f}  "
            f"{report.macro_f1:8.4f}  {report.expected_calibration_error:.4f}"
        )
    return "\n".join(lines)


def evaluate_predictions(
    predictions: Sequence[Sequence[LabelScore]], gold: Sequence[str], labels: Sequence[str]
) -> EvaluationReport:
    """Score ranked predictions (highest first, as models return them) against gold labels."""
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions for {len(gold)} gold labels")
    if not gold:
        raise ValueError("nothing to evaluate")
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise ValueError(f"gold labels {unknown} are not labels of the model {list(labels)}")
    index = {label: position for position, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    confidences: list[float] = []
    hits: list[bool] = []
    for ranked, truth in zip(predictions, gold, strict=True):
        top = ranked[0]
        confusion[index[truth]][index[top.label]] += 1
        confidences.append(top.score)
        hits.append(top.label == truth)

    per_class: dict[str, ClassReport] = {}
    for label, position in index.items():
        true_positive = confusion[position][position]
        predicted = sum(row[position] for row in confusion)
        support = sum(confusion[position])
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = ClassReport(precision, recall, f1, support)
    present = [label for label in labels if per_class[label].support > 0]
    macro_f1 = sum(per_class[label].f1 for label in present) / len(present)
    return EvaluationReport(
        examples=len(gold),
        accuracy=sum(hits) / len(hits),
        macro_f1=macro_f1,
        expected_calibration_error=expected_calibration_error(confidences, hits),
        labels=list(labels),
        per_class=per_class,
        confusion_matrix=confusion,
    )


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = CALIBRATION_BINS
) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins."""
    totals = [0] * bins
    confidence_sums = [0.0] * bins
    correct_sums = [0] * bins
    for confidence, hit in zip(confidences, correct, strict=True):
        position = min(int(confidence * bins), bins - 1)
        totals[position] += 1
        confidence_sums[position] += confidence
        correct_sums[position] += int(hit)
    count = len(confidences)
    return sum(
        abs(confidence_sums[b] / totals[b] - correct_sums[b] / totals[b]) * totals[b] / count
        for b in range(bins)
        if totals[b]
    )
