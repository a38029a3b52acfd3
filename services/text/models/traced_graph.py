"""A text model's forward pass as one TorchScript graph, checked against the model itself.

Run eagerly, a Hugging Face model interprets dozens of Python modules per forward pass and
takes the GIL back after every operator, so two inference threads and the event loop keep
waiting on each other. The traced graph runs in C++ from first operator to last: on the
sentiment starter (2 CPUs, 16 clients) the service answered about 20 % more texts per
second. Tracing records one path through the model's Python code; a model whose path
depends on its inputs would trace wrongly, so the graph is run beside the model on other
batch sizes and lengths than the trace's, and is used only if their logits agree.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Tokenizer outputs a traced (or exported) graph may take, in no particular order."""

TRACE_TEXTS = ("a short text", "a somewhat longer text, so that the batch needs padding")
"""The batch a graph is traced with: two lengths, so the padding mask is real."""

CHECK_TEXTS = (
    "an entirely different sentence, longer than either text the graph was traced with",
    "short",
    "",
)
"""Another batch size and other lengths than the trace's: catches shapes frozen into it."""

LOGIT_TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}
"""Largest logit difference to the model itself accepted from its graph. bfloat16 keeps
about three significant digits, and fused operators round in another order."""


def trace_batch(model: Any, tokenizer: Any) -> tuple[Any, list[str]]:
    """The batch a graph is traced with (`TRACE_TEXTS` tokenized), and the graph inputs it
    holds in the order of the model's `forward` parameters: the order positional graph
    inputs must follow."""
    example = tokenizer(list(TRACE_TEXTS), padding=True, return_tensors="pt")
    return example, [
        name
        for name in inspect.signature(model.forward).parameters
        if name in GRAPH_INPUTS and name in example
    ]


@dataclass(frozen=True)
class TracedLogits:
    """A frozen graph from the tokenizer's tensors to logits."""

    graph: Any
    input_names: list[str]
    """The tensors the graph takes, positionally, in this order."""

    def __call__(self, encoded: Any) -> Any:
        """Logits of a batch: `encoded` maps tensor names to tensors."""
        return self.graph(*(encoded[name] for name in self.input_names))


def trace_logits(model: Any, tokenizer: Any, dtype: str) -> TracedLogits | None:
    """`model` (in eval mode) traced and frozen into a graph returning logits; None when
    the graph does not reproduce the model, which then runs eagerly."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, wrapped: Any, names: Sequence[str]) -> None:
            super().__init__()
            self.wrapped = wrapped
            self.names = list(names)

        def forward(self, *tensors: Any) -> Any:
            inputs = dict(zip(self.names, tensors, strict=True))
            return self.wrapped(**inputs, return_dict=False)[0]

    example, names = trace_batch(model, tokenizer)
    check = tokenizer(list(CHECK_TEXTS), padding=True, return_tensors="pt")
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            # TorchScript warns of its own deprecation and of values fixed at trace time;
            # the comparison below is what decides whether the graph is used.
            warnings.simplefilter("ignore")
            wrapper = LogitsOnly(model, names).eval()
            graph = torch.jit.freeze(
                torch.jit.trace(  # type: ignore[no-untyped-call]
                    wrapper, tuple(example[name] for name in names), strict=False
                )
            )
            expected = model(**{name: check[name] for name in names}).logits.float()
            traced = TracedLogits(graph, names)
            actual = traced(check).float()
    except Exception as error:  # noqa: BLE001 - any failure to trace means: run eagerly
        logger.warning("the model cannot be traced (%s); it runs eagerly", error)
        return None
    difference = float((actual - expected).abs().max())
    tolerance = LOGIT_TOLERANCE[dtype]
    if not difference <= tolerance:
        logger.warning(
            "the traced graph's logits differ from the model's by %.3g (over %.3g) on "
            "new input shapes; the model runs eagerly",
            difference,
            tolerance,
        )
        return None
    return traced
