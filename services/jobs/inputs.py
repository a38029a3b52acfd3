"""Input files of jobs: CSV with a `text` column, or JSON Lines with a `text` field.

Parsing is strict and says where it stopped (`input row 17: ...`), because the reason is
all a user gets back from a job that failed on their file. Rows are numbered from 1, the
CSV header not counted; `input line N` counts lines of the file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from services.jobs.errors import JobFailure
from services.jobs.store import InputFormat

TEXT_FIELD = "text"
ID_FIELD = "id"
FORMAT_OF_EXTENSION: dict[str, InputFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


@dataclass(frozen=True)
class InputRow:
    """One item to classify, with the caller's id for it when the file gave one."""

    text: str
    id: str | int | float | None = None


@dataclass(frozen=True)
class InputLimits:
    """What an input file may hold."""

    max_rows: int
    max_text_chars: int


def format_from_name(key: str) -> InputFormat | None:
    """`csv` or `jsonl` from the object key's extension (case-insensitive), else None."""
    lowered = key.lower()
    for extension, file_format in FORMAT_OF_EXTENSION.items():
        if lowered.endswith(extension):
            return file_format
    return None


def parse_input(data: bytes, file_format: InputFormat, limits: InputLimits) -> list[InputRow]:
    """Every row of an input file, in file order; raises JobFailure naming the first problem."""
    text = _decode(data)
    if file_format == "csv":
        return _parse_csv(text, limits)
    return _parse_json_lines(text, limits)


def _decode(data: bytes) -> str:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise JobFailure(
            f"input line {line}: not valid UTF-8 (byte {error.start} of the file)"
        ) from None


def _parse_csv(text: str, limits: InputLimits) -> list[InputRow]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise JobFailure("the CSV input is empty: it has no header row")
        columns = [name.strip() for name in header]
        if TEXT_FIELD not in columns:
            listed = ", ".join(columns) if any(columns) else "none"
            raise JobFailure(f"CSV has no '{TEXT_FIELD}' column (columns: {listed})")
        text_column = columns.index(TEXT_FIELD)
        id_column = columns.index(ID_FIELD) if ID_FIELD in columns else None
        rows: list[InputRow] = []
        for values in reader:
            if not values:
                continue  # a blank line
            number = len(rows) + 1
            _check_row_count(number, limits)
            if len(values) <= text_column:
                raise JobFailure(
                    f"input row {number}: it has {len(values)} fields and no value in the "
                    f"'{TEXT_FIELD}' column"
                )
            row_text = values[text_column]
            _check_length(number, row_text, limits)
            row_id = (
                values[id_column] if id_column is not None and id_column < len(values) else None
            )
            rows.append(InputRow(row_text, row_id))
    except csv.Error as error:
        raise JobFailure(f"input line {reader.line_num}: malformed CSV ({error})") from None
    return rows


def _parse_json_lines(text: str, limits: InputLimits) -> list[InputRow]:
    rows: list[InputRow] = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        number = len(rows) + 1
        _check_row_count(number, limits)
        try:
            item = json.loads(line)
        except ValueError as error:
            raise JobFailure(
                f"input line {line_number}: not valid JSON ({error.args[0]})"
            ) from None
        if not isinstance(item, dict):
            raise JobFailure(f"input line {line_number}: not a JSON object")
        row_text = item.get(TEXT_FIELD)
        if not isinstance(row_text, str):
            raise JobFailure(f"input line {line_number}: no '{TEXT_FIELD}' string field")
        row_id = item.get(ID_FIELD)
        if row_id is not None and (
            isinstance(row_id, bool) or not isinstance(row_id, str | int | float)
        ):
            raise JobFailure(f"input line {line_number}: '{ID_FIELD}' must be a string or a number")
        _check_length(number, row_text, limits)
        rows.append(InputRow(row_text, row_id))
    return rows


def _check_row_count(number: int, limits: InputLimits) -> None:
    if number > limits.max_rows:
        raise JobFailure(
            f"the input has more than {limits.max_rows} rows (MTC_JOBS_MAX_INPUT_ROWS)"
        )


def _check_length(number: int, text: str, limits: InputLimits) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # JSON can carry lone surrogates ("\ud800"); no tokenizer reads them.
            raise JobFailure(
                f"input row {number}: the text is not valid Unicode (a lone surrogate escape)"
            ) from None
    if len(text) > limits.max_text_chars:
        raise JobFailure(
            f"input row {number}: the text has {len(text)} characters; the limit is "
            f"{limits.max_text_chars} (MTC_JOBS_MAX_TEXT_CHARS)"
        )
