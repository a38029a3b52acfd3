"""The `mtc` command line: help everywhere, usage errors, data errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.lifecycle.cli import build_parser, main


def command_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += command_paths(sub, (*prefix, name))
    return paths


@pytest.mark.parametrize("path", command_paths(build_parser()), ids=lambda p: " ".join(p) or "mtc")
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    assert "usage: mtc" in capsys.readouterr().out


def test_expected_commands_exist() -> None:
    paths = {" ".join(p) for p in command_paths(build_parser())}
    for expected in (
        "models build",
        "models push",
        "models pull",
        "models ls",
        "train text",
        "train pose",
        "eval",
    ):
        assert expected in paths


def test_labels_must_be_two_distinct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text("text,label\nhello,a\n")
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "train",
                "text",
                "--base",
                str(tmp_path),
                "--data",
                str(data),
                "--labels",
                "a",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    assert exited.value.code == 2
    assert "at least two distinct" in capsys.readouterr().err


def test_unknown_label_in_data_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    data.write_text("text,label\nhello,a\nbye,c\n")
    code = main(
        [
            "train",
            "text",
            "--base",
            str(tmp_path),
            "--data",
            str(data),
            "--labels",
            "a,b",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1
    assert "data.csv:3: label 'c' is not one of ['a', 'b']" in capsys.readouterr().err


def test_missing_columns_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text("sentence,label\nhello,a\n")
    assert main(["eval", "--model", str(tmp_path), "--data", str(data)]) == 1
    assert "missing column(s) ['text']" in capsys.readouterr().err


def test_push_refuses_latest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["models", "push", str(tmp_path), "s3://bucket/models/x/latest"])
    assert exited.value.code == 2
    assert "exact version" in capsys.readouterr().err


def test_eval_needs_a_model_unless_a_starter_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    data.write_text("text,label\nhello,a\n")
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--data", str(data)])
    assert exited.value.code == 2
    assert "--model is required unless --starter is given" in capsys.readouterr().err


def test_eval_of_a_starter_names_its_own_splits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--starter", "sentiment", "--split", "train"])
    assert exited.value.code == 2
    assert "--split does not apply to --starter" in capsys.readouterr().err


def test_every_starter_data_name_loads_rows() -> None:
    from services.lifecycle.cli import STARTER_DATA, _starter_examples

    # The corpus behind `sentiment` is slow to read; the independent sets have their own tests.
    names = [n for n in STARTER_DATA if n.startswith("disaster") and "independent" not in n]
    assert names
    for name in names:
        assert _starter_examples(name), name
