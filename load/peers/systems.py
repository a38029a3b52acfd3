"""The peer servers of `python -m load.bench --peers`: how each is installed, started, asked
and answered.

Each peer runs from its own virtualenv, cached under `.mtc/bench-peers/` (the peers pin
versions that conflict with mtc's and with each other's), with torch at mtc's pin from
constraints.txt, its CPU build, so that the comparison is between serving systems rather
than torch builds. LitServe and BentoML also get mtc's transformers; mlserver-huggingface
needs an old 4.x one. Each peer has batching on, in the settings that served it best when
measured by hand on the 2-CPU benchmark machine (LitServe: batches of 16, 10 ms; MLServer:
adaptive batching of 32, 10 ms), and two inference processes with one torch thread each,
one per CPU, as mtc runs its inference.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PEER_FILES = Path(__file__).resolve().parent
"""The peers' server files, each run by its peer's virtualenv."""
VENV_CACHE = REPO / ".mtc" / "bench-peers"
CONSTRAINTS = REPO / "constraints.txt"

PREDICT_PATH = "/v1/sentiment/predict"
V2_MODEL_NAME = "sentiment"

LITSERVE_VERSION = "0.2.19"
BENTOML_VERSION = "1.4.40"
MLSERVER_VERSION = "1.7.1"

MLSERVER_MAX_BATCH_SIZE = 32
MLSERVER_MAX_BATCH_SECONDS = 0.01
PEER_WORKERS = 2
"""Inference processes per peer, one torch thread each: one per CPU of the benchmark machine,
as mtc runs its inference threads."""


# -- How each system is asked for one text, and where the top label is in its answer.


def text_request(text: str) -> dict[str, Any]:
    """mtc's request body: `{"text": [text]}` (the naive baseline, LitServe and BentoML
    peers take the same)."""
    return {"text": [text]}


def v2_request(text: str) -> dict[str, Any]:
    """An Open Inference Protocol (V2) request for MLServer's Hugging Face runtime: the text
    as the BYTES input `array_inputs`, which the runtime hands the pipeline as a list, so
    that adaptive batching can concatenate requests."""
    return {"inputs": [{"name": "array_inputs", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def ranked_top_label(answer: Any) -> str:
    """The first text's best label from `{"predictions": [[{"label", "score"}, ...]]}`
    (mtc, the baseline, LitServe) or from the bare list BentoML's batchable API returns."""
    predictions = answer["predictions"] if isinstance(answer, dict) else answer
    first = predictions[0]
    best = max(first, key=lambda entry: entry["score"]) if isinstance(first, list) else first
    return str(best["label"])


def v2_top_label(answer: Any) -> str:
    """The first text's best label from a V2 answer of MLServer's Hugging Face runtime: its
    first output holds one pipeline result per text, JSON-encoded when sent as BYTES."""
    first = answer["outputs"][0]["data"][0]
    if isinstance(first, str | bytes):
        first = json.loads(first)
    if isinstance(first, list):
        first = max(first, key=lambda entry: entry["score"])
    return str(first["label"])


@dataclass(frozen=True)
class Wire:
    """Where a system takes one text and how its answer names the top label."""

    path: str
    request: Callable[[str], dict[str, Any]]
    top_label: Callable[[Any], str]


MTC_WIRE = Wire(PREDICT_PATH, text_request, ranked_top_label)
V2_WIRE = Wire(f"/v2/models/{V2_MODEL_NAME}/infer", v2_request, v2_top_label)


# -- Virtualenvs.


def pinned(package: str, constraints: Path = CONSTRAINTS) -> str:
    """`package==version` as mtc's constraints.txt pins it."""
    prefix = f"{package}=="
    for line in constraints.read_text().splitlines():
        if line.lower().startswith(prefix):
            return line.split(";", 1)[0].strip()
    raise LookupError(f"{package} is not pinned in {constraints}")


def torch_source_args(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Where pip finds torch's CPU build, by the Makefile's rule (TORCH_SOURCE): a local wheel
    directory when it holds one, else PyTorch's CPU index (PyPI's default build pulls ~3 GB
    of CUDA libraries)."""
    wheels = Path(environ.get("WHEELS", "/opt/wheels"))
    if any(wheels.glob("torch-*+cpu-*.whl")):
        return ["--find-links", str(wheels)]
    return ["--extra-index-url", environ.get("TORCH_INDEX", "https://download.pytorch.org/whl/cpu")]


@dataclass(frozen=True)
class PeerEnvironment:
    """One peer's virtualenv: a name and the pinned requirements installed into it."""

    name: str
    requirements: tuple[str, ...]

    def directory(self, cache: Path = VENV_CACHE) -> Path:
        """Where the virtualenv lives."""
        return cache / self.name

    def executable(self, name: str, cache: Path = VENV_CACHE) -> Path:
        """A program of the virtualenv (`python`, `bentoml`, `mlserver`)."""
        return self.directory(cache) / "bin" / name

    def fingerprint(self) -> str:
        """What the virtualenv was built from: a change rebuilds it."""
        recipe = json.dumps([platform.python_version(), *self.requirements])
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def install_commands(self, cache: Path = VENV_CACHE) -> list[list[str]]:
        """The commands that build the virtualenv from nothing."""
        python = str(self.executable("python", cache))
        return [
            [sys.executable, "-m", "venv", str(self.directory(cache))],
            [python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [python, "-m", "pip", "install", *torch_source_args(), *self.requirements],
        ]

    def ensure(self, cache: Path = VENV_CACHE) -> Path:
        """Build the virtualenv unless the cache holds one of the same fingerprint; returns
        its directory. pip's output goes to `<cache>/<name>.pip.log`."""
        directory = self.directory(cache)
        marker = directory / ".mtc-fingerprint"
        if marker.is_file() and marker.read_text().strip() == self.fingerprint():
            return directory
        shutil.rmtree(directory, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        log = cache / f"{self.name}.pip.log"
        print(f"installing the {self.name} peer into {directory} (log: {log})", flush=True)
        with log.open("w") as out:
            for command in self.install_commands(cache):
                out.write("$ " + " ".join(command) + "\n")
                out.flush()
                if subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode:
                    raise SystemExit(f"installing the {self.name} peer failed; see {log}")
        marker.write_text(self.fingerprint() + "\n")
        return directory

    def installed_versions(self, cache: Path = VENV_CACHE) -> dict[str, str]:
        """Every package of the built virtualenv with its version, for the report."""
        listing = subprocess.run(
            [str(self.executable("python", cache)), "-m", "pip", "list", "--format=json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {package["name"]: package["version"] for package in json.loads(listing)}


def _mtc_pins(*packages: str) -> tuple[str, ...]:
    return tuple(pinned(package) for package in packages)


LITSERVE_ENVIRONMENT = PeerEnvironment(
    "litserve",
    (f"litserve=={LITSERVE_VERSION}", *_mtc_pins("torch", "transformers", "tokenizers")),
)
BENTOML_ENVIRONMENT = PeerEnvironment(
    "bentoml",
    (f"bentoml=={BENTOML_VERSION}", *_mtc_pins("torch", "transformers", "tokenizers")),
)
MLSERVER_ENVIRONMENT = PeerEnvironment(
    "mlserver",
    (
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-huggingface=={MLSERVER_VERSION}",
        *_mtc_pins("torch"),
        # mlserver-huggingface 1.7.1 imports transformers' `Conversation` (gone in 4.42) and
        # optimum 1.x, whose newer releases import torch.onnx helpers torch has since moved.
        "transformers==4.41.2",
        "tokenizers==0.19.1",
        "optimum==1.20.0",
        "huggingface-hub==0.36.2",
        "datasets==3.6.0",
        "tensorflow==2.21.0",
        # uvloop 0.23 raises in `asyncio.get_event_loop()`, which MLServer's workers call.
        "uvloop==0.21.0",
    ),
)


# -- Starting a peer.


@dataclass(frozen=True)
class LaunchContext:
    """What a peer's command line is built from."""

    model_dir: Path
    port: int
    workdir: Path
    """An empty directory of the benchmark's scratch space for this peer's files."""
    free_port: Callable[[], int]
    venv_cache: Path = VENV_CACHE


@dataclass(frozen=True)
class Launch:
    """A peer server's command line, its extra environment and its working directory."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def litserve_launch(dtype: str) -> Callable[[LaunchContext], Launch]:
    """LitServe with the model in `dtype` (`bfloat16` or `float32`)."""

    def launch(context: LaunchContext) -> Launch:
        python = LITSERVE_ENVIRONMENT.executable("python", context.venv_cache)
        script = PEER_FILES / "litserve_sentiment.py"
        command = [str(python), str(script), str(context.model_dir), str(context.port), dtype]
        return Launch(command, cwd=context.workdir)

    return launch


def bentoml_launch(context: LaunchContext) -> Launch:
    """`bentoml serve` of the batchable service in bentoml_sentiment.py."""
    command = [
        str(BENTOML_ENVIRONMENT.executable("bentoml", context.venv_cache)),
        "serve",
        "bentoml_sentiment:SentimentService",
        "--working-dir",
        str(PEER_FILES),
        "--host",
        "127.0.0.1",
        "--port",
        str(context.port),
    ]
    env = {
        "MTC_PEER_MODEL_DIR": str(context.model_dir),
        # BentoML keeps its store and logs under BENTOML_HOME (default ~/bentoml).
        "BENTOML_HOME": str(context.workdir / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    return Launch(command, env, cwd=context.workdir)


def mlserver_settings(context: LaunchContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """MLServer's server settings and the model's settings: adaptive batching, two parallel
    inference workers, the Hugging Face runtime with the batch size undone in
    mlserver_sentiment.py, one torch thread per worker."""
    server = {
        "host": "127.0.0.1",
        "http_port": context.port,
        # Both also listen by default (on 8081 and 8082): free ports, not the defaults.
        "grpc_port": context.free_port(),
        "metrics_port": context.free_port(),
        "parallel_workers": PEER_WORKERS,
    }
    model = {
        "name": V2_MODEL_NAME,
        "implementation": "mlserver_sentiment.BatchedTextClassificationRuntime",
        "max_batch_size": MLSERVER_MAX_BATCH_SIZE,
        "max_batch_time": MLSERVER_MAX_BATCH_SECONDS,
        "parameters": {
            "extra": {
                "task": "text-classification",
                "pretrained_model": str(context.model_dir),
                "framework": "pt",
                "intra_op_threads": 1,
            }
        },
    }
    return server, model


def mlserver_launch(context: LaunchContext) -> Launch:
    """`mlserver start` on a model repository written into the peer's working directory."""
    repository = context.workdir / "models"
    (repository / V2_MODEL_NAME).mkdir(parents=True, exist_ok=True)
    server, model = mlserver_settings(context)
    (repository / "settings.json").write_text(json.dumps(server, indent=2) + "\n")
    (repository / V2_MODEL_NAME / "model-settings.json").write_text(
        json.dumps(model, indent=2) + "\n"
    )
    command = [
        str(MLSERVER_ENVIRONMENT.executable("mlserver", context.venv_cache)),
        "start",
        str(repository),
    ]
    # The runtime subclass is imported by name from the peers' directory.
    return Launch(command, {"PYTHONPATH": str(PEER_FILES)}, cwd=context.workdir)


@dataclass(frozen=True)
class PeerSystem:
    """One peer configuration measured against mtc."""

    name: str
    description: str
    environment: PeerEnvironment
    wire: Wire
    ready_path: str
    launch: Callable[[LaunchContext], Launch]


PEER_SYSTEMS: tuple[PeerSystem, ...] = (
    PeerSystem(
        "litserve-bf16",
        f"LitServe {LITSERVE_VERSION}, batch <= 16 (10 ms), 2 workers, bfloat16 weights",
        LITSERVE_ENVIRONMENT,
        MTC_WIRE,
        "/health",
        litserve_launch("bfloat16"),
    ),
    PeerSystem(
        "litserve-fp32",
        f"LitServe {LITSERVE_VERSION}, batch <= 16 (10 ms), 2 workers, float32",
        LITSERVE_ENVIRONMENT,
        MTC_WIRE,
        "/health",
        litserve_launch("float32"),
    ),
    PeerSystem(
        "mlserver",
        f"MLServer {MLSERVER_VERSION} + mlserver-huggingface, adaptive batching "
        f"<= {MLSERVER_MAX_BATCH_SIZE} ({MLSERVER_MAX_BATCH_SECONDS * 1000:g} ms), "
        f"{PEER_WORKERS} parallel workers, float32",
        MLSERVER_ENVIRONMENT,
        V2_WIRE,
        "/v2/health/ready",
        mlserver_launch,
    ),
    PeerSystem(
        "bentoml",
        f"BentoML {BENTOML_VERSION}, batchable API (batch <= 16), 2 workers, float32",
        BENTOML_ENVIRONMENT,
        MTC_WIRE,
        "/readyz",
        bentoml_launch,
    ),
)


def select_peers(names: Sequence[str] | None) -> list[PeerSystem]:
    """The peers named (all when `names` is None or empty), in the table's order."""
    if not names:
        return list(PEER_SYSTEMS)
    known = {peer.name: peer for peer in PEER_SYSTEMS}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [peer for peer in PEER_SYSTEMS if peer.name in names]
