"""The PyTorch runtime's fast paths: one tokenization per batch, the traced graph, bfloat16
weights, and how `auto` picks the precision."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.core.cpu_features import cpu_flags, has_native_bfloat16
from services.text.models import traced_graph
from services.text.models.sequence_classifier import SequenceClassifier, TorchDtype, TorchGraph
from services.text.settings import TextSettings
from tests.unit.test_onnx_runtime import SENTENCES, make_input_sensitive, score_table

LONG_TEXT = "a review that goes on and on about the film " * 20


@pytest.fixture(scope="module")
def sensitive_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose scores depend on the text (so a wrong path shows)."""
    model_dir = tmp_path_factory.mktemp("torch-runtime") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    make_input_sensitive(model_dir)
    return model_dir


def loaded(
    model_dir: Path, *, dtype: TorchDtype = "float32", graph: TorchGraph = "eager"
) -> SequenceClassifier:
    model = SequenceClassifier(dtype=dtype, graph=graph)
    asyncio.run(model.start(model_dir))
    return model


def largest_difference(expected: list[dict[str, float]], actual: list[dict[str, float]]) -> float:
    pairs = zip(expected, actual, strict=True)
    return max(abs(e[label] - a[label]) for e, a in pairs for label in e)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_one_pass_encoding_equals_the_tokenizer_call(
    sensitive_dir: Path, padding_side: str
) -> None:
    model = loaded(sensitive_dir)
    model._tokenizer.padding_side = padding_side
    arrays, counts = model.encode(SENTENCES)
    expected = model._tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="np")
    assert sorted(arrays) == sorted(expected.keys())
    for name, array in arrays.items():
        assert array.dtype == np.int64
        np.testing.assert_array_equal(array, expected[name], err_msg=name)
    assert counts == model.token_counts(SENTENCES)


def test_a_batch_needing_truncation_is_truncated_and_counted_whole(sensitive_dir: Path) -> None:
    model = loaded(sensitive_dir)
    texts = ["short", LONG_TEXT]
    arrays, counts = model.encode(texts)
    assert arrays["input_ids"].shape == (2, model.max_tokens)
    assert counts[1] > model.max_tokens
    assert counts == model.token_counts(texts)
    [_, long_prediction] = model.predict(texts)
    assert long_prediction.tokens == counts[1]
    expected = model._tokenizer(
        texts, padding=True, truncation=True, max_length=model.max_tokens, return_tensors="np"
    )
    for name, array in arrays.items():
        np.testing.assert_array_equal(array, expected[name], err_msg=name)


def test_the_traced_graph_gives_the_model_s_scores(sensitive_dir: Path) -> None:
    eager = loaded(sensitive_dir)
    traced = loaded(sensitive_dir, graph="traced")
    assert traced._traced is not None
    expected = score_table(eager.predict(SENTENCES))
    # Alone and batched (padding exercises the mask), including batch sizes and lengths
    # the graph was not traced with.
    assert largest_difference(expected, score_table(traced.predict(SENTENCES))) < 1e-4
    alone = [traced.predict([text])[0] for text in SENTENCES]
    assert largest_difference(expected, score_table(alone)) < 1e-4


def test_a_graph_that_disagrees_with_the_model_is_not_used(
    sensitive_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No difference can be at most -1: the comparison rejects the graph, as it would a
    # graph that froze an input-dependent branch.
    monkeypatch.setitem(traced_graph.LOGIT_TOLERANCE, "float32", -1.0)
    with caplog.at_level(logging.WARNING, logger=traced_graph.__name__):
        model = loaded(sensitive_dir, graph="traced")
    assert model._traced is None
    assert "runs eagerly" in caplog.text
    expected = score_table(loaded(sensitive_dir).predict(SENTENCES))
    assert largest_difference(expected, score_table(model.predict(SENTENCES))) < 1e-5


def test_a_model_that_cannot_be_traced_runs_eagerly(
    sensitive_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("not traceable")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    with caplog.at_level(logging.WARNING, logger=traced_graph.__name__):
        model = loaded(sensitive_dir, graph="traced")
    assert model._traced is None
    assert "not traceable" in caplog.text
    assert len(model.predict(SENTENCES)) == len(SENTENCES)


@pytest.mark.parametrize("graph", ["eager", "traced"])
def test_bfloat16_weights_keep_scores_within_0_02(sensitive_dir: Path, graph: TorchGraph) -> None:
    reference = score_table(loaded(sensitive_dir).predict(SENTENCES))
    positive = [scores["POSITIVE"] for scores in reference]
    assert max(positive) - min(positive) >= 0.2  # the premise: a wrong path would show
    model = loaded(sensitive_dir, dtype="bfloat16", graph=graph)
    assert model.runtime == "torch-bf16"
    assert largest_difference(reference, score_table(model.predict(SENTENCES))) <= 0.02


def test_float32_and_bfloat16_answers_are_cached_apart(sensitive_dir: Path) -> None:
    assert loaded(sensitive_dir).runtime == "torch"
    assert loaded(sensitive_dir, dtype="bfloat16").runtime == "torch-bf16"


def write_cpuinfo(path: Path, flags: str) -> Path:
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n")
    return path


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    amx = write_cpuinfo(tmp_path / "amx", "fpu sse avx512f amx_bf16 amx_tile")
    avx512 = write_cpuinfo(tmp_path / "avx512", "fpu avx512f avx512_bf16")
    plain = write_cpuinfo(tmp_path / "plain", "fpu sse avx2 avx512f")
    assert "amx_tile" in cpu_flags(amx)
    assert has_native_bfloat16(amx)
    assert has_native_bfloat16(avx512)
    assert not has_native_bfloat16(plain)
    assert not has_native_bfloat16(tmp_path / "missing")


def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import services.text.settings as text_settings

    monkeypatch.setattr(text_settings, "has_native_bfloat16", lambda: True)
    assert TextSettings(model_uri="unused").resolved_torch_dtype == "bfloat16"
    monkeypatch.setattr(text_settings, "has_native_bfloat16", lambda: False)
    assert TextSettings(model_uri="unused").resolved_torch_dtype == "float32"
    monkeypatch.setenv("MTC_TORCH_DTYPE", "float32")
    monkeypatch.setattr(text_settings, "has_native_bfloat16", lambda: True)
    assert TextSettings(model_uri="unused").resolved_torch_dtype == "float32"


def test_models_loading_at_once_each_get_their_own_precision(sensitive_dir: Path) -> None:
    import torch

    async def load_together() -> list[SequenceClassifier]:
        models = [
            SequenceClassifier(dtype="bfloat16" if index % 2 else "float32") for index in range(4)
        ]
        await asyncio.gather(*(model.start(sensitive_dir) for model in models))
        return models

    for model in asyncio.run(load_together()):
        expected = getattr(torch, model.dtype)
        assert {parameter.dtype for parameter in model._model.parameters()} == {expected}
        assert len(model.predict(SENTENCES)) == len(SENTENCES)
