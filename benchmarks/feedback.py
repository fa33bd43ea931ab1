"""Feedback throughput and latency through the in-process gateway: ``--n`` outcomes reported
on routed decisions (the bundled default weights, SQLite in a temporary data_dir, the store
fsynced per commit as ``switchpoint serve`` runs it), one caller at a time and from
``--threads`` callers at once.

Every outcome is learned only once the feedback log has committed it, so each report waits for
its commit; this measures what that costs. ``--src DIR`` runs the same measurement against
another checkout's ``src`` (say, one from before a change), in a subprocess of its own, and
prints both side by side, interleaved round after round (``--rounds``, medians reported).

Usage: python benchmarks/feedback.py [--n 1000] [--threads 8] [--rounds 3] [--src OTHER/src]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import percentile

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "question {} about the history of ships, harbours and the trade winds"


def measure(n: int, threads: int) -> dict[str, float]:
    """Outcomes per second and their median / p99 latency (ms), with ``threads`` callers."""
    from switchpoint.gateway import Gateway

    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as data, Gateway.from_config({"data_dir": data}) as gw:
        ids = [gw.route(PROMPT.format(i)).decision_id for i in range(n)]
        time.sleep(0.5)  # the decisions' log entries are written

        def one(i: int) -> None:
            t0 = time.perf_counter()
            gw.report_outcome(ids[i], 0.5 if i % 2 else 1.0)
            latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(n)))
        elapsed = time.perf_counter() - t0
    return {"per_s": n / elapsed, "median_ms": statistics.median(latencies) * 1e3,
            "p99_ms": percentile(latencies, 0.99, round_down=True) * 1e3}


def run_in(src: Path, n: int, threads: int) -> dict[str, float]:
    """:func:`measure` in a subprocess importing switchpoint from ``src``."""
    code = (f"import sys, json; sys.path.insert(0, {str(src)!r}); "
            f"sys.path.insert(1, {str(ROOT / 'benchmarks')!r}); import feedback; "
            f"print(json.dumps(feedback.measure({n}, {threads})))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", type=Path, help="another checkout's src, measured beside")
    args = parser.parse_args()
    targets = {"this checkout": ROOT / "src"}
    if args.src is not None:
        targets[f"{args.src}"] = args.src.resolve()
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for threads in (1, args.threads):
            for name, src in targets.items():
                results.setdefault((name, threads), []).append(run_in(src, args.n, threads))
    print(f"Feedback through the in-process gateway: {args.n} outcomes, median of "
          f"{args.rounds} rounds")
    print(f"{'checkout':<40} {'callers':>7} {'outcomes/s':>11} {'median ms':>10} {'p99 ms':>8}")
    for (name, threads), runs in results.items():
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{name[:40]:<40} {threads:>7} {row['per_s']:>11.0f} {row['median_ms']:>10.2f} "
              f"{row['p99_ms']:>8.2f}")


if __name__ == "__main__":
    main()
