"""Routing latency: switchpoint's route() beside OpenTracy's Go engine, same prompts, same run.

Prints, for short (~10 tokens) and long (~400 tokens) distinct prompts, the median and p99 of one
``route()`` call on the default embedder (fused int8) and on the exact fp32 source graph, plus
switchpoint's cached route, import + load time, route_batch throughput and resident memory.
OpenTracy runs in its own interpreter (``--peer-python``, default ``.venv-peers/bin/python``;
create it with ``scripts/setup-peers``) so neither pollutes the other.

The machine is shared and its speed drifts over seconds, so the two routers are measured in
alternating rounds (``--rounds``, default 5: ours, then OpenTracy, then ours again, ...); each
figure is the median over rounds, and the ratio is the median of the per-round ratios with
their range beside it.

Usage: python benchmarks/latency.py [--n 200] [--rounds 5] [--peer-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import DATASETS, ROOT, dataset_records, percentile


def pick_prompts(n: int) -> tuple[list[str], list[str]]:
    """Distinct real prompts: short ones (~10 tokens) and long ones (~400 tokens)."""
    prompts: list[str] = []
    for name in DATASETS:
        prompts.extend(dataset_records(name).prompts)
    seen: set[str] = set()
    short, long = [], []
    for p in prompts:
        text = " ".join(p.split())
        first = text.split("?")[0].split(".")[0]
        words = first.split()
        if 7 <= len(words) <= 9 and first not in seen:
            seen.add(first)
            short.append(first + "?")
        if 1500 <= len(text) <= 1900 and text not in seen:
            seen.add(text)
            long.append(text)
    return short[:n], long[:n]


def quantiles(samples: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(samples) * 1e3,
            "p99_ms": percentile(samples, 0.99) * 1e3}


def measure_switchpoint(short: list[str], long: list[str], precision: str = "int8"
                        ) -> dict[str, object]:
    from switchpoint import load_router
    from switchpoint.embedding import MiniLMEmbedder

    router = load_router(warm=False, embedder=MiniLMEmbedder(precision=precision))  # type: ignore[arg-type]
    router.warm_up()
    router.route("warm-up prompt that is not in the benchmark set")
    out: dict[str, object] = {}
    for name, prompts in (("short", short), ("long", long)):
        times = []
        for p in prompts:
            t0 = time.perf_counter()
            router.route(p)
            times.append(time.perf_counter() - t0)
        out[name] = quantiles(times)
    cached = []
    for _ in range(2000):
        t0 = time.perf_counter()
        router.route(short[0])
        cached.append(time.perf_counter() - t0)
    out["cached"] = quantiles(cached)
    batch = [f"{p} (variant {i})" for i, p in enumerate(short + long)]
    t0 = time.perf_counter()
    router.route_batch(batch)
    out["batch_prompts_per_s"] = len(batch) / (time.perf_counter() - t0)
    return out


def import_and_load_seconds(repeats: int = 5) -> dict[str, float]:
    code = textwrap.dedent("""
        import time, resource
        t0 = time.perf_counter()
        import switchpoint
        router = switchpoint.load_router()
        loaded = time.perf_counter() - t0
        router.route("a first prompt once the model is ready")
        ready = time.perf_counter() - t0
        rss = int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024
        print(loaded, ready, rss)
    """)
    loads, readies, rss = [], [], []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        a, b, c = (float(x) for x in res.stdout.split())
        loads.append(a)
        readies.append(b)
        rss.append(c)
    return {"import_load_s": statistics.median(loads), "first_route_s": statistics.median(readies),
            "rss_mb": statistics.median(rss)}


PEER_SCRIPT = textwrap.dedent("""
    import json, statistics, sys, time
    from opentracy.loader import load_router
    prompts = json.load(open(sys.argv[1]))
    router = load_router(engine="go", verbose=False)
    router.route("warm-up prompt that is not in the benchmark set")
    out = {}
    for name in ("short", "long"):
        times = []
        for p in prompts[name]:
            t0 = time.perf_counter(); router.route(p); times.append(time.perf_counter() - t0)
        times.sort()
        out[name] = {"median_ms": statistics.median(times) * 1e3,
                     "p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))] * 1e3}
    print(json.dumps(out))
""")


def measure_opentracy(python: str, short: list[str], long: list[str]) -> dict[str, object] | str:
    if not Path(python).exists():
        return f"not measured: {python} missing (run scripts/setup-peers)"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"short": short, "long": long}, fh)
    try:
        res = subprocess.run([python, "-c", PEER_SCRIPT, fh.name], capture_output=True, text=True,
                             timeout=900)
    finally:
        os.unlink(fh.name)
    if res.returncode != 0:
        return "failed: " + res.stderr.strip().splitlines()[-1] if res.stderr else "failed"
    result: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def median_of_rounds(rounds: list[dict[str, object]] | list[dict[str, object] | str]
                     ) -> dict[str, object]:
    """Each figure's median over the rounds (nested ``{"median_ms", "p99_ms"}`` dicts too)."""
    first = rounds[0]
    assert isinstance(first, dict)
    out: dict[str, object] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = {k: statistics.median(float(r[key][k]) for r in rounds)  # type: ignore[index]
                        for k in value}
        else:
            out[key] = statistics.median(float(r[key]) for r in rounds)  # type: ignore[index, arg-type]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    args = parser.parse_args()
    short, long = pick_prompts(args.n)
    our_rounds, peer_rounds = [], []
    for _ in range(max(1, args.rounds)):
        our_rounds.append(measure_switchpoint(short, long))
        peer_rounds.append(measure_opentracy(args.peer_python, short, long))
    ours = median_of_rounds(our_rounds)
    peer = median_of_rounds(peer_rounds) if all(isinstance(p, dict) for p in peer_rounds) \
        else peer_rounds[0]
    exact = measure_switchpoint(short, long, precision="fp32")
    startup = import_and_load_seconds()
    print(f"prompts: {len(short)} short, {len(long)} long (distinct, from ../shared/data); "
          f"{len(our_rounds)} alternating rounds, medians over rounds")
    print(f"{'case':<8} {'switchpoint median/p99 ms':>27} {'OpenTracy Go median/p99 ms':>28} "
          f"{'ratio (median)':>15}  per-round ratios")
    for name in ("short", "long"):
        o = ours[name]
        assert isinstance(o, dict)
        rounds_txt = ""
        peer_median: float | None = None
        if isinstance(peer, dict):
            p = peer[name]
            assert isinstance(p, dict)
            ratios = sorted(
                float(r[name]["median_ms"]) / float(q[name]["median_ms"])  # type: ignore[index]
                for r, q in zip(our_rounds, peer_rounds, strict=True)
            )
            peer_median = float(p["median_ms"])
            peer_txt = f"{p['median_ms']:10.2f} / {p['p99_ms']:7.2f}"
            ratio_txt = f"{statistics.median(ratios):.2f}x"
            rounds_txt = "  " + " ".join(f"{r:.2f}" for r in ratios)
        else:
            peer_txt, ratio_txt = peer, "-"
        print(f"{name:<8} {o['median_ms']:17.2f} / {o['p99_ms']:7.2f} {peer_txt:>28} "
              f"{ratio_txt:>15}{rounds_txt}")
        f = exact[name]
        assert isinstance(f, dict)
        ratio_f = f"{f['median_ms'] / peer_median:.2f}x" if peer_median else "-"
        print(f"{'  fp32':<8} {f['median_ms']:17.2f} / {f['p99_ms']:7.2f} {'':>28} "
              f"{ratio_f:>15}")
    cached = ours["cached"]
    assert isinstance(cached, dict)
    print(f"cached route: median {cached['median_ms'] * 1e3:.1f} µs, "
          f"p99 {cached['p99_ms'] * 1e3:.1f} µs")
    print(f"route_batch: {ours['batch_prompts_per_s']:.0f} prompts/s")
    print(f"import switchpoint + load_router(): {startup['import_load_s']:.3f} s "
          f"(first route done at {startup['first_route_s']:.3f} s); "
          f"resident memory {startup['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
