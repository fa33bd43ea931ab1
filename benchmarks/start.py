"""Service start: `switchpoint serve` from launch to a ready ``/health``, beside OpenTracy's engine.

Starts each server on loopback with its bundled default weights (switchpoint: a fresh data
directory each time, no config; OpenTracy: the Go binary inside its wheel on its bundled
weights, as ``benchmarks/service.py`` launches it), polls ``/health`` until it answers 200,
and reads the process's CPU time (user + system, every thread) at that moment from /proc.
The servers start in alternating rounds (ours, then OpenTracy, then ours again, ...) since
the shared machine's speed drifts; each figure is the median over rounds.

``--baseline-src DIR`` also starts switchpoint from another source tree (``DIR`` is its
``src`` folder, run with this environment's packages: e.g. a ``git worktree`` of an earlier
commit), alternated with this one, to measure a change. Compile that tree first
(``python -m compileall -q DIR``), as an install does, or each of its starts compiles it.

``--config FILE`` starts switchpoint (each tree) with that config: e.g. one whose
``policies:`` lists weights packages, each read and checked at start.

Usage: python benchmarks/start.py [--rounds 9] [--baseline-src DIR] [--peer-site DIR]
       [--config FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from _common import Spread
from service import PEER_SITE, Service, cpu_seconds, start_opentracy, start_serve, wait_up


def switchpoint_start(src: str | None, log: IO[bytes], config: str | None = None
                      ) -> Callable[[Path], Service | str]:
    """Start `switchpoint serve` (from source tree ``src``, else this environment's; with the
    config file ``config``, if given), its output to ``log``."""

    def start(data_dir: Path) -> Service | str:
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = src
        given = ["--config", config] if config else []
        proc, base = start_serve(["--data-dir", str(data_dir), "--log-level", "warning",
                                  *given], env, log=log)
        wait_up(f"{base}/health", proc, timeout=120)
        return Service("switchpoint", base, proc)

    return start


def timed(start: Callable[[Path], Service | str]) -> tuple[float, float] | str:
    """(seconds from launch to ready, CPU seconds spent by then), or why it did not start."""
    with tempfile.TemporaryDirectory(prefix="sp-start-") as tmp:
        t0 = time.perf_counter()
        service = start(Path(tmp) / "data")
        if isinstance(service, str):
            return service
        ready = time.perf_counter() - t0
        cpu = cpu_seconds(service.proc.pid)
        service.stop()
        return ready, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--baseline-src", help="another switchpoint source tree's src folder")
    parser.add_argument("--peer-site", default=str(PEER_SITE),
                        help="OpenTracy's installed package folder")
    parser.add_argument("--config", help="a config file switchpoint starts with")
    args = parser.parse_args()
    with open(os.devnull, "wb") as quiet:  # (the notice that chat is off, at each start)
        run(args, quiet)


def run(args: argparse.Namespace, quiet: IO[bytes]) -> None:
    starters: dict[str, Callable[[Path], Service | str]] = {
        "switchpoint": switchpoint_start(None, quiet, args.config)}
    if args.baseline_src:
        starters["switchpoint (baseline)"] = switchpoint_start(args.baseline_src, quiet,
                                                               args.config)
    starters["OpenTracy Go"] = lambda _: start_opentracy(Path(args.peer_site))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in starters}
    notes: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, start in starters.items():
            if name in notes:
                continue
            got = timed(start)
            if isinstance(got, str):
                notes[name] = got
            else:
                results[name].append(got)
    print(f"Start to a ready /health, median of {args.rounds} alternated starts each, "
          f"{os.cpu_count()} cores (CPU: user + system of every thread, read at ready)")
    print(f"{'':24} {'ready s':>8} {'CPU s':>8} {'CPU min':>8}")
    for name, runs in results.items():
        if not runs:
            print(f"{name:24} {notes.get(name, 'not measured')}")
            continue
        cpu = Spread.of(c for _, c in runs)
        print(f"{name:24} {statistics.median(r for r, _ in runs):8.2f} "
              f"{cpu.median:8.2f} {cpu.least:8.2f}")
    ours, peer = results["switchpoint"], results["OpenTracy Go"]
    if ours and peer:
        ratio = statistics.median(r for r, _ in ours) / statistics.median(r for r, _ in peer)
        print(f"ours / OpenTracy, ready: {ratio:.2f}x")


if __name__ == "__main__":
    main()
