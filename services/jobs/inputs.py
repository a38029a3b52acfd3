"""Input files of jobs: CSV with a `text` column, or JSON Lines with a `text` field.

Parsing is strict and says where it stopped (`input row 17: ...`), because the reason is
all a user gets back from a job that failed on their file. Rows are numbered from 1, the
CSV header not counted; `input line N` counts lines of the file.

Files are read as a stream of lines of bounded length, and rows come out one at a time:
a job holds a block of the file and a chunk of rows, never the whole file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
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


READ_BLOCK_BYTES = 256 * 1024
"""Bytes read from an input stream at a time."""
LINE_BYTES_PER_TEXT_CHAR = 12
"""Most bytes a line may spend on one character of text: JSON writes a character outside
the Basic Multilingual Plane as two `\\uXXXX` escapes."""
LINE_BYTES_BESIDE_THE_TEXT = 64 * 1024
"""Room on a line for the id, other CSV columns and the JSON around the text."""
_LONE_CARRIAGE_RETURN = re.compile(r"(?<=\r)(?!\n)")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A code point UTF-8 cannot encode: JSON can carry lone surrogates ("\\ud800"), and no
tokenizer reads them."""


@dataclass(frozen=True)
class InputLimits:
    """What an input file may hold."""

    max_rows: int
    max_text_chars: int

    @property
    def max_line_bytes(self) -> int:
        """Longest line a valid file can have: its text at the limit, fully escaped, and
        room for the rest; a longer line fails the job before it is held whole."""
        return self.max_text_chars * LINE_BYTES_PER_TEXT_CHAR + LINE_BYTES_BESIDE_THE_TEXT


def format_from_name(key: str) -> InputFormat | None:
    """`csv` or `jsonl` from the object key's extension (case-insensitive), else None."""
    lowered = key.lower()
    return FORMAT_OF_EXTENSION.get(lowered[lowered.rfind(".") :])


def read_rows(
    read: Callable[[int], bytes], file_format: InputFormat, limits: InputLimits
) -> Iterator[InputRow]:
    """The rows of an input file read from a stream (`read(n)` gives up to n more bytes,
    b"" at the end), one at a time, in file order; raises JobFailure at the first problem."""
    lines = decoded_lines(read, limits.max_line_bytes)
    if file_format == "csv":
        return _parse_csv(lines, limits)
    return _parse_json_lines(lines, limits)


def decoded_lines(read: Callable[[int], bytes], max_line_bytes: int) -> Iterator[str]:
    """The stream's lines (split at `\\n`, ends kept), decoded as UTF-8 without a leading
    byte order mark (spreadsheet exports often start with one); JobFailure for invalid
    UTF-8 or a line longer than `max_line_bytes`."""
    offset = 0
    for number, line in enumerate(_bounded_lines(read, max_line_bytes), start=1):
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise JobFailure(
                f"input line {number}: not valid UTF-8 (byte {offset + error.start} of the file)"
            ) from None
        offset += len(line)
        yield text


def _bounded_lines(read: Callable[[int], bytes], max_line_bytes: int) -> Iterator[bytes]:
    pending = b""
    number = 1
    while block := read(READ_BLOCK_BYTES):
        pending += block
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if end + 1 - start > max_line_bytes:
                raise _line_too_long(number, max_line_bytes)
            yield pending[start : end + 1]
            number += 1
            start = end + 1
        pending = pending[start:]
        if len(pending) > max_line_bytes:
            raise _line_too_long(number, max_line_bytes)
    if pending:
        yield pending


def _line_too_long(number: int, max_line_bytes: int) -> JobFailure:
    return JobFailure(
        f"input line {number} is longer than {max_line_bytes} bytes, more than a text of "
        "MTC_JOBS_MAX_TEXT_CHARS characters needs"
    )


def _csv_lines(lines: Iterable[str]) -> Iterator[str]:
    # The csv module also ends lines at a lone carriage return (old Mac files).
    for line in lines:
        if "\r" in line[:-1]:
            yield from _LONE_CARRIAGE_RETURN.split(line)
        else:
            yield line


def _parse_csv(lines: Iterable[str], limits: InputLimits) -> Iterator[InputRow]:
    reader = csv.reader(_csv_lines(lines), strict=True)
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
        number = 0
        for values in reader:
            if not values:
                continue  # a blank line
            number += 1
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
            yield InputRow(row_text, row_id)
    except csv.Error as error:
        raise JobFailure(f"input line {reader.line_num}: malformed CSV ({error})") from None


def _parse_json_lines(lines: Iterable[str], limits: InputLimits) -> Iterator[InputRow]:
    number = 0
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        number += 1
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
        yield InputRow(row_text, row_id)


def _check_row_count(number: int, limits: InputLimits) -> None:
    if number > limits.max_rows:
        raise JobFailure(
            f"the input has more than {limits.max_rows} rows (MTC_JOBS_MAX_INPUT_ROWS)"
        )


def _check_length(number: int, text: str, limits: InputLimits) -> None:
    if LONE_SURROGATE.search(text):
        raise JobFailure(
            f"input row {number}: the text is not valid Unicode (a lone surrogate escape)"
        )
    if len(text) > limits.max_text_chars:
        raise JobFailure(
            f"input row {number}: the text has {len(text)} characters; the limit is "
            f"{limits.max_text_chars} (MTC_JOBS_MAX_TEXT_CHARS)"
        )
