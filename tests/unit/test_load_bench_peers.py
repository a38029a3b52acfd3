"""The pieces of `python -m load.bench --peers` that work without a peer installed: the
results table, the correctness check, each peer's command line and settings, the request
and answer shapes, the virtualenv recipes. The peers themselves are measured by the
benchmark command (`--peers --smoke` checks the harness end to end), never by a test:
their virtualenvs come from PyPI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from load import bench
from load.peers.correctness import (
    FIXED_SENTENCES,
    MIN_AGREEMENT,
    Correctness,
    agreeing_labels,
    check_server,
    reference_labels,
)
from load.peers.systems import (
    MTC_WIRE,
    PEER_FILES,
    PEER_SYSTEMS,
    V2_WIRE,
    LaunchContext,
    PeerEnvironment,
    pinned,
    ranked_top_label,
    select_peers,
    torch_source_args,
    v2_request,
    v2_top_label,
)

MLSERVER_ANSWER = {
    "model_name": "sentiment",
    "outputs": [
        {
            "name": "output",
            "shape": [1, 1],
            "datatype": "BYTES",
            "parameters": {"content_type": "hg_jsonlist"},
            "data": ['{"label": "NEGATIVE", "score": 0.998}'],
        }
    ],
}
"""What MLServer 1.7.1's Hugging Face runtime answered one review on the benchmark machine."""


def ports() -> Iterator[int]:
    yield from range(40001, 40100)


def context(tmp_path: Path) -> LaunchContext:
    free = ports()
    return LaunchContext(
        model_dir=tmp_path / "model",
        port=40000,
        workdir=tmp_path / "work",
        free_port=lambda: next(free),
        venv_cache=tmp_path / "venvs",
    )


# -- Request and answer shapes.


def test_mtc_litserve_and_bentoml_answers_give_their_top_label() -> None:
    ranked = [{"label": "POSITIVE", "score": 0.9}, {"label": "NEGATIVE", "score": 0.1}]
    assert ranked_top_label({"predictions": [ranked]}) == "POSITIVE"
    assert ranked_top_label([ranked]) == "POSITIVE"  # BentoML's batchable API: the bare list
    assert ranked_top_label({"predictions": [list(reversed(ranked))]}) == "POSITIVE"
    assert MTC_WIRE.request("fine") == {"text": ["fine"]}


def test_v2_request_and_mlserver_answer() -> None:
    assert v2_request("fine") == {
        "inputs": [{"name": "array_inputs", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]
    }
    assert v2_top_label(MLSERVER_ANSWER) == "NEGATIVE"
    assert V2_WIRE.path == "/v2/models/sentiment/infer"


# -- Correctness.


def test_agreement_is_flagged_below_the_threshold() -> None:
    assert MIN_AGREEMENT == 0.98
    assert Correctness(4, 4, agreeing=196, reviews=200, failed_requests=0).ok
    assert not Correctness(4, 4, agreeing=195, reviews=200, failed_requests=0).ok
    assert not Correctness(3, 4, agreeing=200, reviews=200, failed_requests=0).ok


def test_agreeing_labels_counts_a_missing_answer_as_a_disagreement() -> None:
    assert agreeing_labels(["A", None, "B"], ["A", "A", "A"]) == 1
    with pytest.raises(ValueError, match="2 labels for 3"):
        agreeing_labels(["A", "B"], ["A", "B", "C"])


def test_check_server_asks_every_text_and_compares_with_the_reference() -> None:
    fixed = dict(FIXED_SENTENCES)
    reviews = ["good one", "bad one", "broken one"]
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == MTC_WIRE.path
        text = json.loads(request.content)["text"][0]
        asked.append(text)
        if text == "broken one":
            return httpx.Response(500)
        label = fixed.get(text, "POSITIVE")
        return httpx.Response(200, json={"predictions": [[{"label": label, "score": 1.0}]]})

    result = check_server(
        "http://peer",
        MTC_WIRE,
        reviews,
        ["POSITIVE", "NEGATIVE", "POSITIVE"],
        transport=httpx.MockTransport(answer),
    )
    assert asked == [text for text, _ in FIXED_SENTENCES] + reviews
    assert result == Correctness(
        fixed_right=len(FIXED_SENTENCES),
        fixed_total=len(FIXED_SENTENCES),
        agreeing=1,
        reviews=3,
        failed_requests=1,
    )


def test_reference_labels_come_from_the_model_directory(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    labels = reference_labels(tiny_model_dir, ["one text", "another, longer text than that"])
    assert len(labels) == 2
    assert set(labels) <= set(config["id2label"].values())
    assert reference_labels(tiny_model_dir, ["one text"]) == labels[:1]


# -- Command lines and settings.


def test_litserve_runs_its_server_file_from_its_virtualenv(tmp_path: Path) -> None:
    (bf16,) = select_peers(["litserve-bf16"])
    launch = bf16.launch(context(tmp_path))
    assert launch.command == [
        str(tmp_path / "venvs" / "litserve" / "bin" / "python"),
        str(PEER_FILES / "litserve_sentiment.py"),
        str(tmp_path / "model"),
        "40000",
        "bfloat16",
    ]
    assert launch.cwd == tmp_path / "work"
    (fp32,) = select_peers(["litserve-fp32"])
    assert fp32.launch(context(tmp_path)).command[-1] == "float32"
    assert bf16.ready_path == "/health"
    assert bf16.wire is MTC_WIRE


def test_bentoml_serves_the_batchable_service(tmp_path: Path) -> None:
    (peer,) = select_peers(["bentoml"])
    launch = peer.launch(context(tmp_path))
    assert launch.command == [
        str(tmp_path / "venvs" / "bentoml" / "bin" / "bentoml"),
        "serve",
        "bentoml_sentiment:SentimentService",
        "--working-dir",
        str(PEER_FILES),
        "--host",
        "127.0.0.1",
        "--port",
        "40000",
    ]
    module, service = launch.command[2].split(":")
    assert f"class {service}" in (PEER_FILES / f"{module}.py").read_text()
    assert launch.env["MTC_PEER_MODEL_DIR"] == str(tmp_path / "model")
    assert launch.env["BENTOML_HOME"].startswith(str(tmp_path / "work"))
    assert peer.ready_path == "/readyz"


def test_mlserver_gets_a_model_repository_with_adaptive_batching(tmp_path: Path) -> None:
    (peer,) = select_peers(["mlserver"])
    (tmp_path / "work").mkdir()
    launch = peer.launch(context(tmp_path))
    repository = tmp_path / "work" / "models"
    assert launch.command == [
        str(tmp_path / "venvs" / "mlserver" / "bin" / "mlserver"),
        "start",
        str(repository),
    ]
    assert launch.env == {"PYTHONPATH": str(PEER_FILES)}
    server = json.loads((repository / "settings.json").read_text())
    assert server == {
        "host": "127.0.0.1",
        "http_port": 40000,
        "grpc_port": 40001,
        "metrics_port": 40002,
        "parallel_workers": 2,
    }
    model = json.loads((repository / "sentiment" / "model-settings.json").read_text())
    module, runtime = model["implementation"].split(".")
    assert runtime in (PEER_FILES / f"{module}.py").read_text()
    assert model["max_batch_size"] > 1
    assert model["max_batch_time"] > 0
    assert model["parameters"]["extra"]["pretrained_model"] == str(tmp_path / "model")
    assert peer.ready_path == "/v2/health/ready"
    assert peer.wire is V2_WIRE


def test_every_peer_server_file_is_in_the_peers_directory(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    for peer in PEER_SYSTEMS:
        launch = peer.launch(context(tmp_path))
        files = [Path(arg) for arg in launch.command if arg.endswith(".py")]
        for file in files:
            assert file.parent == PEER_FILES
            assert file.is_file()


def test_unknown_peers_are_refused() -> None:
    assert [peer.name for peer in select_peers(None)] == [peer.name for peer in PEER_SYSTEMS]
    with pytest.raises(SystemExit, match="unknown peer"):
        select_peers(["tgi"])


# -- Virtualenvs.


def test_each_peer_environment_is_pinned_with_mtcs_torch() -> None:
    torch_pin = pinned("torch")
    for environment in {peer.environment for peer in PEER_SYSTEMS}:
        assert torch_pin in environment.requirements
        for requirement in environment.requirements:
            assert "==" in requirement, requirement


def test_pins_are_read_from_constraints(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# header\ntorch==9.9.9 ; sys_platform == 'linux'\ntqdm==1.0\n")
    assert pinned("torch", constraints) == "torch==9.9.9"
    with pytest.raises(LookupError):
        pinned("numpy", constraints)


def test_torch_comes_from_a_wheel_directory_or_the_cpu_index(tmp_path: Path) -> None:
    assert torch_source_args({"WHEELS": str(tmp_path), "TORCH_INDEX": "https://cpu"}) == [
        "--extra-index-url",
        "https://cpu",
    ]
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").touch()
    assert torch_source_args({"WHEELS": str(tmp_path)}) == ["--find-links", str(tmp_path)]


def test_a_cached_virtualenv_is_reused_and_a_changed_one_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = PeerEnvironment("peer", ("peer==1.0",))
    installs: list[list[str]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        installs.append(command)
        if command[1:3] == ["-m", "venv"]:
            Path(command[3]).mkdir(parents=True)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    directory = environment.ensure(tmp_path)
    assert directory == tmp_path / "peer"
    assert installs[-1][-1] == "peer==1.0"
    count = len(installs)
    assert environment.ensure(tmp_path) == directory
    assert len(installs) == count  # the second run installs nothing
    PeerEnvironment("peer", ("peer==2.0",)).ensure(tmp_path)
    assert installs[-1][-1] == "peer==2.0"


# -- Summary and table.


def round_of(
    system: str, throughput: float, p99: float, cpu: float, clients: int = 16
) -> bench.Round:
    return bench.Round(
        system=system,
        requests=int(throughput * 10),
        failed=0,
        seconds=10.0,
        throughput=throughput,
        p50_ms=p99 / 2,
        p95_ms=p99 * 0.9,
        p99_ms=p99,
        cpu_seconds_per_1000=cpu,
        clients=clients,
        rss_mib=500.0,
    )


def test_mtcs_ratios_are_taken_round_by_round() -> None:
    rounds = [
        round_of("mtc", 400, 100, 4.0),
        round_of("litserve-bf16", 200, 200, 8.0),
        round_of("mtc", 300, 100, 4.0),
        round_of("litserve-bf16", 100, 50, 4.0),
    ]
    single = [round_of("mtc", 100, 10, 4.0, 1), round_of("litserve-bf16", 50, 20, 5.0, 1)]
    summary = bench.summarise_systems({"mtc": "ours", "litserve-bf16": "LitServe"}, rounds, single)
    peer = summary["litserve-bf16"]
    # 400/200 = 2 in the first round, 300/100 = 3 in the second: the median of the ratios.
    assert peer["mtc_throughput_ratio"] == {"median": 2.5, "min": 2.0, "max": 3.0}
    assert peer["cpu_ratio_to_mtc"] == {"median": 1.5, "min": 1.0, "max": 2.0}
    assert peer["mtc_p99_ratio"] == {"median": 1.25, "min": 0.5, "max": 2.0}
    assert peer["mtc_one_connection_ratio"] == 2.0
    assert peer["one_connection"] == {"throughput": 50, "p50_ms": 10.0, "p99_ms": 20}
    assert "mtc_throughput_ratio" not in summary["mtc"]


def test_the_table_has_a_row_per_system_and_flags_wrong_answers() -> None:
    rounds = [round_of("mtc", 400, 100, 4.0), round_of("mlserver", 100, 200, 12.0)]
    single = [round_of("mtc", 100, 10, 4.0, 1), round_of("mlserver", 25, 40, 12.0, 1)]
    systems_summary = bench.summarise_systems(
        {"mtc": "mtc text service", "mlserver": "MLServer 1.7.1"}, rounds, single
    )
    correctness = bench.correctness_summary(
        {"mtc": Correctness(4, 4, 200, 200, 0), "mlserver": Correctness(4, 4, 190, 200, 0)}
    )
    settings = {"rounds": 1, "seconds": 30.0, "clients": 16, "one_connection_seconds": 10.0}
    table = bench.systems_table(systems_summary, correctness, settings)
    header, rule, mtc_row, peer_row = table[2:]
    assert header.count("|") == rule.count("|") == mtc_row.count("|") == peer_row.count("|")
    assert mtc_row.startswith("| mtc: mtc text service | 400 (400-400) |")
    assert "| 1.000 | - | - | - | - |" in mtc_row
    assert peer_row.startswith("| mlserver: MLServer 1.7.1 | 100 (100-100) |")
    assert "0.950 **flagged**" in peer_row
    assert "**4 (4-4)**" in peer_row  # mtc req/s / MLServer's
    assert "| 3 (3-3) |" in peer_row  # MLServer's CPU / mtc's
    assert peer_row.endswith("| 4 |")  # one connection: 100 / 25


def test_wrong_answers_fail_the_benchmark_and_the_smoke_check() -> None:
    summary = {
        "text": {"throughput_ratio": {"median": 7.0}, "p99_ratio": {"median": 0.5}},
        "correctness": bench.correctness_summary(
            {"mtc": Correctness(4, 4, 200, 200, 0), "bentoml": Correctness(2, 4, 200, 200, 2)}
        ),
    }
    assert bench.targets_missed(summary) == [
        "bentoml answers unlike float32 transformers (fixed sentences 2/4, agreement 1.000)"
    ]
    report = bench.Report("cmd", "abc", 2, "cpu", "now", {}, summary=summary)
    report.rounds = [round_of("mtc", 100, 10, 4.0)]
    report.rounds.append(bench.Round("bentoml", 10, 3, 5.0, 2.0, 1.0, 1.0, 1.0, 1.0, 16))
    assert bench.smoke_problems(report) == [
        "bentoml answers unlike float32 transformers",
        "bentoml (16 connections): 3 of 10 requests failed",
    ]


# -- Process trees.


def test_cpu_and_memory_are_read_from_the_whole_process_tree() -> None:
    # A shell whose child burns CPU: the shell itself uses none.
    process = subprocess.Popen(
        ["sh", "-c", "python3 -c 'while True: pass' & wait"], start_new_session=True
    )
    try:
        # Polled, not slept for: on a busy machine the child may get little CPU at first.
        deadline = time.monotonic() + 20
        while bench.tree_cpu_seconds(process.pid) < 0.1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(bench.process_tree(process.pid)) >= 2
        assert bench.tree_cpu_seconds(process.pid) >= 0.1
        assert bench.tree_rss_mib(process.pid) > 1
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_the_other_systems_are_frozen_while_one_is_measured(tmp_path: Path) -> None:
    processes = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(2)]
    systems = [
        bench.MeasuredSystem(
            f"system-{index}",
            "a sleeping process",
            bench.Server(f"system-{index}", process, "http://127.0.0.1:1", tmp_path / "log"),
            MTC_WIRE,
            tmp_path / "bodies.jsonl",
        )
        for index, process in enumerate(processes)
    ]

    def settled_state(process: subprocess.Popen[bytes], wanted: str) -> str:
        # Signals are delivered asynchronously: give the state a moment to change.
        deadline = time.monotonic() + 5
        while True:
            stat = Path(f"/proc/{process.pid}/stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if (state == "T") == (wanted == "T") or time.monotonic() > deadline:
                return state
            time.sleep(0.02)

    try:
        with bench.alone(systems[0], systems):
            assert settled_state(processes[1], "T") == "T"  # stopped
            assert settled_state(processes[0], "S") != "T"
        assert settled_state(processes[1], "S") != "T"
    finally:
        for system in systems:
            bench.stop(system.server)
    assert [process.returncode for process in processes] == [-signal.SIGTERM] * 2
