"""Job results as output rows, and output files (JSON Lines or CSV) built from them."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any, Literal

from services.jobs.inputs import InputRow
from services.jobs.store import ItemResult

OutputFormat = Literal["csv", "jsonl"]
CONTENT_TYPES: dict[OutputFormat, str] = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
}
FORMAT_OF_EXTENSION: dict[str, OutputFormat] = {".jsonl": "jsonl", ".csv": "csv"}


def output_format_of(key: str) -> OutputFormat | None:
    """`jsonl` or `csv` from the output key's extension, else None."""
    lowered = key.lower()
    return FORMAT_OF_EXTENSION.get(lowered[lowered.rfind(".") :])


def result_rows(
    first_index: int, rows: Sequence[InputRow], predictions: Sequence[Sequence[dict[str, Any]]]
) -> list[ItemResult]:
    """Output rows of one chunk: its rows' predictions (every label, highest first, as the
    service returned them) with their index in the input and their id when given."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} texts")
    results: list[ItemResult] = []
    for offset, (row, scores) in enumerate(zip(rows, predictions, strict=True)):
        result: ItemResult = {"index": first_index + offset}
        if row.id is not None:
            result["id"] = row.id
        best = max(scores, key=lambda entry: float(entry["score"]))
        result.update(label=best["label"], score=best["score"], scores=list(scores))
        results.append(result)
    return results


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (or, tab and carriage
return, that some of them strip before doing so)."""


def spreadsheet_safe(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula gets a
    leading `'` (`=HYPERLINK(...)` becomes `'=HYPERLINK(...)`); numbers stay numbers, and
    None is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class OutputRenderer:
    """An output file piece by piece: `header()`, then `rows(...)` chunk after chunk.

    CSV columns: index, id (when `with_ids`: the input gave ids), label, score, scores (the
    JSON list of every label and score); text cells are `spreadsheet_safe`, as ids come from
    the caller's file and a spreadsheet opening the output would run a formula hidden in
    one. JSON Lines keeps every value as it was."""

    def __init__(self, file_format: OutputFormat, *, with_ids: bool) -> None:
        self.file_format = file_format
        self.columns = ["index", *(["id"] if with_ids else []), "label", "score", "scores"]

    def header(self) -> bytes:
        """The CSV header line; nothing for JSON Lines."""
        return self._csv([self.columns]) if self.file_format == "csv" else b""

    def rows(self, results: Sequence[ItemResult]) -> bytes:
        """The lines of `results`."""
        if self.file_format == "jsonl":
            return "".join(
                json.dumps(result, ensure_ascii=False) + "\n" for result in results
            ).encode()
        lines = []
        for result in results:
            row = {**result, "scores": json.dumps(result["scores"], ensure_ascii=False)}
            lines.append([spreadsheet_safe(row.get(column)) for column in self.columns])
        return self._csv(lines)

    @staticmethod
    def _csv(lines: Sequence[Sequence[object]]) -> bytes:
        buffer = io.StringIO(newline="")
        # CRLF, as RFC 4180 has it: the csv module quotes a cell holding a character of the
        # line terminator, so a carriage return in an id is quoted instead of breaking its row.
        csv.writer(buffer, lineterminator="\r\n").writerows(lines)
        return buffer.getvalue().encode()
