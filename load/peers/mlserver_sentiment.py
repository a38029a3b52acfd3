"""MLServer's Hugging Face runtime, with the batch size its settings ask for.

A peer of `python -m load.bench --peers`; it runs from MLServer's own virtualenv, not mtc's,
named in the model settings the benchmark writes as
`"implementation": "mlserver_sentiment.BatchedTextClassificationRuntime"` (this directory is
on that server's PYTHONPATH). MLServer's adaptive batching concatenates concurrent requests'
`array_inputs` into one list for the pipeline; as shipped (1.7.1) the runtime then runs that
list one text at a time for BERT models, which this subclass undoes.
"""

from __future__ import annotations

from mlserver_huggingface import HuggingFaceRuntime  # type: ignore[import-not-found]


class BatchedTextClassificationRuntime(HuggingFaceRuntime):  # type: ignore[misc]
    """`HuggingFaceRuntime` whose pipeline runs batches of `max_batch_size` texts."""

    async def load(self) -> bool:
        """Load the pipeline, then give it the configured batch size."""
        loaded: bool = await super().load()
        # The runtime falls back to batch size 1 when the tokenizer's pad token id is falsy,
        # and BERT's is 0: a valid id taken for a missing one.
        self._model._batch_size = self.settings.max_batch_size
        return loaded
