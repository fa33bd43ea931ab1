"""The gateway benchmark measures each target alone: every phase starts its server in a process
group of its own and stops the whole group (port closed) before the next one starts, the order
rotates across rounds, and a timed run is refused while another target's process lives."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.fakes.fake_provider import reserved_ports

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "routerbench-sample.jsonl"


@pytest.fixture(scope="module")
def gateway() -> Iterator[ModuleType]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("gateway")  # the benchmarks' folder, not a package
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _prompt_data(folder: Path, count: int) -> Path:
    """Both record sets the benchmarks read, made of the sample's first record under ``count``
    distinct short prompts (the benchmark takes each prompt's first sentence of 6-16 words)."""
    folder.mkdir()
    first = json.loads(SAMPLE.read_text(encoding="utf-8").splitlines()[0])
    lines = [json.dumps({**first, "id": f"gateway-bench.{i}",
                         "prompt": f"Question {i} asks which gateway answers first on loopback"})
             for i in range(count)]
    for name in ("routerbench-3task.jsonl", "llmrouter-14task.jsonl"):
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _processes_naming(text: str) -> list[str]:
    out = []
    for entry in os.listdir("/proc"):
        try:
            command = (Path("/proc") / entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.isdigit() and text.encode() in command:
            out.append(f"{entry}: {command!r}")
    return out


def test_each_target_runs_alone_and_the_order_rotates(tmp_path: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    ports = reserved_ports()
    env = {**os.environ, "SWITCHPOINT_DATA": str(_prompt_data(tmp_path / "data", 200)),
           "TMPDIR": str(temp),
           **({"SWITCHPOINT_BENCH_PORTS": f"{ports.start}-{ports.stop - 1}"} if ports else {})}
    run = subprocess.run(
        [sys.executable, "gateway.py", "--order", "switchpoint,direct", "--rounds", "2",
         "--n", "5", "--rps-n", "20", "--concurrency", "4"], cwd=ROOT / "benchmarks", env=env,
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    phases = re.findall(r"^(round \d \S+): \S+ measured and stopped", run.stderr, re.MULTILINE)
    assert phases == ["round 1 switchpoint", "round 1 direct", "round 2 direct",
                      "round 2 switchpoint"], run.stderr
    assert "refusing" not in run.stderr
    assert "Round 1 of 2 (order: switchpoint, direct)" in run.stdout
    assert "Round 2 of 2 (order: direct, switchpoint)" in run.stdout
    medians = run.stdout.split("Medians over 2 rounds")
    assert len(medians) == 2, run.stdout
    number = r"(-?\d+\.\d\d)"
    overhead = re.search(rf"^plain median\s+{number}\s+{number}\s*$", medians[1], re.MULTILINE)
    assert overhead is not None, run.stdout  # switchpoint and switchpoint auto, no peer
    assert float(overhead.group(2)) > float(overhead.group(1)) - 50  # both real figures
    throughput = re.search(r"^stream\s+(\d+) \(.*?, (\d+\.\d\d)\)\s+(\d+) \(.*?\)\s+(\d+) \(",
                           medians[1], re.MULTILINE)
    assert throughput is not None, run.stdout
    assert int(throughput.group(1)) > 0 and float(throughput.group(2)) > 0  # ours, its CPU
    assert int(throughput.group(4)) > 0  # direct, measured in its own phase
    assert "LiteLLM (plain/stream): left out (not in --order)" in medians[1]
    assert _processes_naming(str(temp)) == []  # nothing of the run outlives it


def test_a_timed_run_is_refused_while_another_targets_process_lives(
        gateway: ModuleType) -> None:
    # A peer whose server left a child behind: the leader exits, its child lives on.
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & exec sleep 0.1"],
                              start_new_session=True)
    leader.wait(timeout=10)
    peer = gateway.Server("LiteLLM", "http://127.0.0.1:9", leader, "bench")
    guard = gateway.Guard()
    guard.add(peer)
    assert gateway.group_pids(leader.pid)  # the child, still in the peer's group
    with pytest.raises(SystemExit, match=r"refusing to time switchpoint \(throughput\): "
                                         r"LiteLLM \(process group \d+, pids \[\d+\]\)"):
        guard.check("switchpoint (throughput)", None)
    peer.stop()
    assert gateway.group_pids(leader.pid) == []
    guard.check("switchpoint (throughput)", None)  # alone now: no refusal
