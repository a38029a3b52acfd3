"""Fine-tune a text classifier with low-rank adapters, and turn the result into a model dir.

Training freezes the base encoder and learns, for every Linear layer inside it, a low-rank
update `W + (B @ A) * scale` (LoRA), while the classification head (and the pooler, where
the architecture has one) is trained in full. What is learned is a few MB, so it can be
kept (or committed) on its own and merged into the base weights later: the merged model is
a plain Hugging Face sequence-classification directory that needs no custom code.

Batches group texts of similar token length, because padding to a batch's longest text is
where most CPU time goes on realistic length distributions.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from services.artifacts.manifest import (
    sha256_file,
)

logger = logging.getLogger(__name__)

ADAPTER_FORMAT: Final = "mtc-lora/1"
HELDOUT_PERCENT: Final = 15
SPLIT_RULE: Final = (
    f"held-out iff int(sha256(utf-8 text)[:8], 16) % 100 < {HELDOUT_PERCENT}, "
    "text whitespace-normalised; train otherwise"
)
_LORA_A: Final = ".lora_A"
_LORA_B: Final = ".lora_B"
_HEAD_PREFIXES: Final = ("pooler",)


class TrainingError(RuntimeError):
    """Training data, base model or adapter cannot be used, or the result is not good enough."""


class DataError(TrainingError):
    """A labelled CSV file is missing, malformed, or uses labels it should not."""


@dataclass(frozen=True)
class LabelledText:
    """One training or evaluation example."""

    text: str
    label: str


@dataclass(frozen=True)
class Split:
    """Deduplicated examples, split into train and held-out by a hash of each text."""

    train: list[LabelledText]
    heldout: list[LabelledText]
    duplicates_removed: int
    conflicting_texts_removed: int

    def description(self, labels: Sequence[str]) -> dict[str, Any]:
        """JSON-ready counts and the split rule, for manifests."""
        return {
            "split_rule": SPLIT_RULE,
            "deduplication": "whitespace-normalised text; a text seen with two labels is dropped",
            "duplicates_removed": self.duplicates_removed,
            "conflicting_texts_removed": self.conflicting_texts_removed,
            "train_examples": len(self.train),
            "heldout_examples": len(self.heldout),
            "train_label_counts": label_counts(self.train, labels),
            "heldout_label_counts": label_counts(self.heldout, labels),
        }


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe."""

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
    max_length: int = 128
    """Tokens per text during training (longer texts are truncated)."""


@dataclass
class Adapter:
    """Trained tensors (LoRA A/B per adapted layer, full head weights) and their description."""

    tensors: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """Multiplier applied to B @ A (alpha / rank)."""
        return float(self.info["scale"])


# --------------------------------------------------------------------------- data


def normalise(text: str) -> str:
    """Collapse runs of whitespace, so copies differing only in spacing count as one text."""
    return " ".join(text.split())


def is_heldout(text: str) -> bool:
    """Whether a normalised text belongs to the held-out split (a pure function of the text)."""
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    return bucket < HELDOUT_PERCENT


def split_examples(examples: Iterable[LabelledText]) -> Split:
    """Deduplicate and split; both lists are sorted by text, independent of input order."""
    labels_by_text: dict[str, set[str]] = {}
    duplicates = 0
    for example in examples:
        text = normalise(example.text)
        if not text:
            continue
        seen = labels_by_text.setdefault(text, set())
        if seen:
            duplicates += 1
        seen.add(example.label)
    conflicting = sum(1 for labels in labels_by_text.values() if len(labels) > 1)
    unique = sorted(
        (
            LabelledText(text, next(iter(labels)))
            for text, labels in labels_by_text.items()
            if len(labels) == 1
        ),
        key=lambda example: example.text,
    )
    return Split(
        train=[e for e in unique if not is_heldout(e.text)],
        heldout=[e for e in unique if is_heldout(e.text)],
        duplicates_removed=duplicates,
        conflicting_texts_removed=conflicting,
    )


def read_labelled_csv(path: Path, labels: Sequence[str] | None = None) -> list[LabelledText]:
    """Rows of a CSV with `text` and `label` columns; labels outside `labels` are refused."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    allowed = set(labels) if labels is not None else None
    examples: list[LabelledText] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"text", "label"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: missing column(s) {sorted(missing)}; expected text,label")
        for line, row in enumerate(reader, start=2):
            text, label = (row["text"] or "").strip(), (row["label"] or "").strip()
            if not text:
                raise DataError(f"{path}:{line}: empty text")
            if allowed is not None and label not in allowed:
                raise DataError(f"{path}:{line}: label {label!r} is not one of {sorted(allowed)}")
            examples.append(LabelledText(text, label))
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples


def label_counts(examples: Iterable[LabelledText], labels: Sequence[str]) -> dict[str, int]:
    """How many examples carry each label."""
    # Every label, in order, even when absent; a label outside `labels` comes last.
    return {**dict.fromkeys(labels, 0), **Counter(example.label for example in examples)}


# --------------------------------------------------------------------------- models


def load_base_classifier(base_dir: Path, labels: Sequence[str]) -> Any:
    """The base encoder with a (new, when label sets differ) classification head."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    # A freshly initialised head is expected here; the load report saying so is noise.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity(logging.ERROR)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base_dir),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: index for index, label in enumerate(labels)},
            problem_type="single_label_classification",
            ignore_mismatched_sizes=True,
            dtype=torch.float32,
            local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{base_dir}: cannot load a base model: {exc}") from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model


def load_tokenizer(base_dir: Path) -> Any:
    """The base model's tokenizer, from local files only."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)


def adapter_layout(model: Any) -> tuple[list[str], list[str]]:
    """(Linear layers that get adapters, modules trained in full) for a classifier.

    Every Linear inside the base encoder gets an adapter, except its pooler; the pooler and
    everything outside the encoder (the classification head) are trained in full.
    """
    from torch import nn

    prefix = str(model.base_model_prefix)
    adapted = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and name.startswith(prefix + ".")
        and not name.removeprefix(prefix + ".").startswith(_HEAD_PREFIXES)
    ]
    full = [
        name
        for name, module in model.named_children()
        if name != prefix and any(True for _ in module.parameters())
    ]
    encoder = getattr(model, prefix)
    full += [
        f"{prefix}.{name}"
        for name, module in encoder.named_children()
        if name.startswith(_HEAD_PREFIXES) and any(True for _ in module.parameters())
    ]
    if not adapted:
        raise TrainingError(f"no Linear layers found under {prefix!r} to adapt")
    return adapted, sorted(full)


def _lora_module(base: Any, rank: int, alpha: float, dropout: float) -> Any:
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        """A frozen Linear plus a trainable low-rank update; B starts at zero."""

        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.scale = alpha / rank
            self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
            # Same initialisation as the LoRA paper's reference code.
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.dropout = nn.Dropout(dropout)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            update = nn.functional.linear(
                nn.functional.linear(self.dropout(inputs), self.lora_A), self.lora_B
            )
            output: torch.Tensor = self.base(inputs) + update * self.scale
            return output

    return LoRALinear()


def _collate(token_ids: Sequence[list[int]], indices: Sequence[int], pad_id: int) -> Any:
    import torch

    width = max(len(token_ids[index]) for index in indices)
    input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, index in enumerate(indices):
        ids = token_ids[index]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, generator: Any
) -> list[list[int]]:
    """Batches of similar length in a seeded random order (ties broken by a seeded shuffle)."""
    import torch

    tiebreak = torch.randperm(len(lengths), generator=generator).tolist()
    order = sorted(range(len(lengths)), key=lambda index: (lengths[index], tiebreak[index]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[index] for index in torch.randperm(len(batches), generator=generator)]


def train_adapter(
    base_dir: Path,
    train: Sequence[LabelledText],
    labels: Sequence[str],
    config: TrainConfig,
    *,
    progress: bool = True,
    initial: Adapter | None = None,
) -> Adapter:
    """Fine-tune adapters + head on `train`; deterministic for a given config and data.

    With `initial`, training continues from that adapter's tensors (same rank and labels)
    instead of a fresh low-rank update and a new head.
    """
    import torch

    if len({example.label for example in train}) < 2:
        raise TrainingError("training needs examples of at least two labels")
    unknown = sorted({e.label for e in train} - set(labels))
    if unknown:
        raise TrainingError(f"training labels {unknown} are not in {list(labels)}")
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(base_dir, train, labels, config, progress, initial)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _train(
    base_dir: Path,
    train: Sequence[LabelledText],
    labels: Sequence[str],
    config: TrainConfig,
    progress: bool,
    initial: Adapter | None,
) -> Adapter:
    import torch
    from tqdm import tqdm

    started = time.perf_counter()
    tokenizer = load_tokenizer(base_dir)
    encoded = tokenizer([e.text for e in train], truncation=True, max_length=config.max_length)
    token_ids: list[list[int]] = encoded["input_ids"]
    lengths = [len(ids) for ids in token_ids]
    label_index = {label: index for index, label in enumerate(labels)}
    targets = torch.tensor([label_index[e.label] for e in train], dtype=torch.long)
    pad_id = tokenizer.pad_token_id
    if not isinstance(pad_id, int):
        raise TrainingError("the base tokenizer defines no padding token")

    model = load_base_classifier(base_dir, labels)
    adapted_names, full_names = adapter_layout(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapters: dict[str, Any] = {}
    for name in adapted_names:
        adapters[name] = _lora_module(
            model.get_submodule(name), config.rank, config.alpha, config.lora_dropout
        )
        model.set_submodule(name, adapters[name])
    for name in full_names:
        model.get_submodule(name).requires_grad_(True)
    if initial is not None:
        _start_from(model, adapters, full_names, initial, labels, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    logger.info(
        "training %d parameters (%d adapters of rank %d) on %d texts",
        sum(p.numel() for p in trainable),
        len(adapters),
        config.rank,
        len(train),
    )
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    total_steps = math.ceil(len(train) / config.batch_size) * config.epochs
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
        batches = _length_bucketed_batches(lengths, config.batch_size, generator)
        running_loss = 0.0
        bar = tqdm(
            batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress
        )
        for step, indices in enumerate(bar, start=1):
            loss = model(**_collate(token_ids, indices, pad_id), labels=targets[indices]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, max_norm=1.0)
            optimizer.step()
            scheduler.step()
            running_loss += float(loss.item())
            if step % 10 == 0:
                bar.set_postfix(loss=f"{running_loss / step:.4f}")
        bar.close()
        epoch_seconds.append(time.perf_counter() - epoch_started)
        logger.info("epoch %d: mean loss %.4f", epoch + 1, running_loss / max(1, len(batches)))

    tensors: dict[str, Any] = {}
    for name, adapter in adapters.items():
        # float16 halves the file; the merge runs in float64, so nothing is lost there.
        tensors[name + _LORA_A] = adapter.lora_A.detach().to(torch.float16).contiguous()
        tensors[name + _LORA_B] = adapter.lora_B.detach().to(torch.float16).contiguous()
    for name in full_names:
        for key, value in model.get_submodule(name).state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to(torch.float32).contiguous()
    # The whole recipe is recorded; its `threads` under the name the sidecar has always used.
    recipe = asdict(config)
    recipe["torch_threads"] = recipe.pop("threads")
    info: dict[str, Any] = {
        **recipe,
        "initial_adapter_sha256": initial.info.get("adapter_sha256") if initial else None,
        "format": ADAPTER_FORMAT,
        "labels": list(labels),
        "base_model_sha256": sha256_file(_base_weights_file(base_dir)),
        "scale": config.alpha / config.rank,
        "lora_dtype": "float16",
        "adapted_layers": len(adapters),
        "fully_trained_modules": full_names,
        "train_examples": len(train),
        "training_seconds": round(time.perf_counter() - started, 1),
        "epoch_seconds": [round(seconds, 1) for seconds in epoch_seconds],
        "torch_version": torch.__version__,
    }
    return Adapter(tensors=tensors, info=info)


def _start_from(
    model: Any,
    adapters: dict[str, Any],
    full_names: Sequence[str],
    initial: Adapter,
    labels: Sequence[str],
    config: TrainConfig,
) -> None:
    """Load an earlier adapter's low-rank factors and head into freshly built modules."""
    import torch

    # Older adapter records lack labels; the head's shape is still checked when it loads.
    if "labels" in initial.info and list(initial.info["labels"]) != list(labels):
        raise TrainingError(f"the initial adapter's labels are not {list(labels)}")
    if (
        int(initial.info["rank"]) != config.rank
        or float(initial.scale) != config.alpha / config.rank
    ):
        raise TrainingError(
            f"the initial adapter has rank {initial.info['rank']} and scale {initial.scale}; "
            f"the recipe asks for rank {config.rank} and scale {config.alpha / config.rank}"
        )
    with torch.no_grad():
        for name, adapter in adapters.items():
            try:
                adapter.lora_A.copy_(initial.tensors[name + _LORA_A].to(torch.float32))
                adapter.lora_B.copy_(initial.tensors[name + _LORA_B].to(torch.float32))
            except KeyError as exc:
                raise TrainingError(f"the initial adapter has no {exc} for {name}") from exc
        _load_full_modules(model, full_names, initial.tensors, "initial adapter")


def _load_full_modules(
    model: Any, full_names: Sequence[str], tensors: dict[str, Any], source: str
) -> None:
    """Load the fully trained modules' weights from an adapter's tensors (`source` names it
    in errors); the caller holds `torch.no_grad()`."""
    import torch

    for module_name in full_names:
        prefix = module_name + "."
        state = {
            key.removeprefix(prefix): value.to(torch.float32)
            for key, value in tensors.items()
            if key.startswith(prefix)
        }
        try:
            model.get_submodule(module_name).load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise TrainingError(f"{source}: {module_name}: {exc}") from exc


def _base_weights_file(base_dir: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (base_dir / name).is_file():
            return base_dir / name
    raise TrainingError(f"{base_dir}: no model.safetensors (sharded bases are not supported)")


# --------------------------------------------------------------------------- adapter files


def sidecar_path(adapter_path: Path) -> Path:
    """The JSON description that goes with an adapter file."""
    return adapter_path.with_suffix(".json")


def save_adapter(adapter: Adapter, path: Path) -> None:
    """Write the tensors (safetensors) and, last, the JSON sidecar with the file's sha256."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # The header carries what is needed to apply the file, so it stays checkable on its own.
    metadata = {
        "format": ADAPTER_FORMAT,
        "rank": str(adapter.info["rank"]),
        "alpha": str(adapter.info["alpha"]),
        "scale": repr(float(adapter.info["scale"])),
        "base_model_sha256": str(adapter.info["base_model_sha256"]),
    }
    save_file(dict(sorted(adapter.tensors.items())), str(partial), metadata=metadata)
    partial.chmod(0o644)  # safetensors creates owner-only files
    partial.replace(path)
    adapter.info["adapter_sha256"] = sha256_file(path)
    info_path = sidecar_path(path)
    partial = info_path.with_name(info_path.name + ".partial")
    partial.write_text(json.dumps(adapter.info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(info_path)


def read_adapter(path: Path) -> Adapter:
    """Load an adapter, checking it against its sidecar and its own header."""
    from safetensors import safe_open

    info_path = sidecar_path(path)
    if not path.is_file() or not info_path.is_file():
        raise TrainingError(f"{path} or {info_path.name} is missing")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{info_path}: unreadable: {exc}") from exc
    if not isinstance(info, dict):
        raise TrainingError(f"{info_path}: not a JSON object")
    digest = sha256_file(path)
    if info.get("adapter_sha256") != digest:
        raise TrainingError(
            f"{path.name} (sha256 {digest[:12]}...) does not match {info_path.name}: "
            "the two files come from different runs"
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if metadata.get("format") != ADAPTER_FORMAT or info.get("format") != ADAPTER_FORMAT:
        raise TrainingError(f"{path}: not a {ADAPTER_FORMAT} adapter")
    if metadata.get("base_model_sha256") != info.get("base_model_sha256"):
        raise TrainingError(f"{path}: its header and {info_path.name} disagree")
    return Adapter(tensors=tensors, info=info)


def check_base(adapter: Adapter, base_dir: Path) -> str:
    """Refuse a base other than the one the adapter was trained on; return its sha256."""
    weights = _base_weights_file(base_dir)
    digest = sha256_file(weights)
    expected = str(adapter.info["base_model_sha256"])
    if digest != expected:
        raise TrainingError(
            f"base model mismatch: {weights} has sha256 {digest}, but the adapter was trained "
            f"on {expected}; it only works on the exact weights it was trained on (install "
            "that version of the base, or retrain)"
        )
    return digest


def merge_adapter(adapter: Adapter, base_dir: Path, labels: Sequence[str]) -> Any:
    """A plain sequence classifier: base weights with the adapters merged in, head loaded."""
    import torch

    model = load_base_classifier(base_dir, labels)
    adapted_names, full_names = adapter_layout(model)
    full_keys = {
        f"{module}.{key}"
        for module in full_names
        for key in model.get_submodule(module).state_dict()
    }
    expected = {n + suffix for n in adapted_names for suffix in (_LORA_A, _LORA_B)} | full_keys
    if set(adapter.tensors) != expected:
        missing = sorted(expected - set(adapter.tensors))
        unexpected = sorted(set(adapter.tensors) - expected)
        raise TrainingError(
            f"adapter does not fit the base model: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )
    with torch.no_grad():
        for name in adapted_names:
            linear = model.get_submodule(name)
            lora_a = adapter.tensors[name + _LORA_A]
            lora_b = adapter.tensors[name + _LORA_B]
            if lora_a.shape[1] != linear.in_features or lora_b.shape[0] != linear.out_features:
                raise TrainingError(f"wrong adapter shapes for {name}")
            # In float64 the products of float16 values are exact and the rank-sized sums
            # (nearly) so: after rounding to float32 the merged weights do not depend on the
            # BLAS kernel or thread count, which keeps builds bit-identical.
            update = lora_b.to(torch.float64) @ lora_a.to(torch.float64)
            merged = linear.weight.to(torch.float64) + update * adapter.scale
            linear.weight.copy_(merged.to(torch.float32))
        _load_full_modules(model, full_names, adapter.tensors, "adapter")
    model.train(False)
    return model


# --------------------------------------------------------------------------- model directories


def save_classifier(model: Any, tokenizer: Any, directory: Path) -> None:
    """`save_pretrained` of model (safetensors) and tokenizer."""
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
