"""How long one large, dense upstream answer holds the gateway's event loop, from several source
trees: the worst ``GET /health`` latency while it is served, and the request's own time.

Each tree (``LABEL=DIR``, ``DIR`` its ``src`` folder, as ``benchmarks/gateway_cpu.py`` takes
them: e.g. a ``git worktree`` of an earlier commit) serves ``switchpoint serve`` in front of one
shared fake provider. In each round, each tree in turn gets one request whose answer is the fake's
``dense`` one (empty objects, the densest JSON there is: a plain answer of ``--plain-mb``
megabytes, just under ``gateway.max_plain_answer_bytes``, and a stream whose content event is
one line of ``--line-mb``, just under ``gateway.max_sse_line_bytes``), while another client asks
``/health`` every 10 ms; the trees' order is reversed every other round. It prints each round,
then each tree's median over the rounds (with the lowest and highest).

Usage: python benchmarks/loop_hold.py now=. before=/tmp/before/src [--rounds 5]
                                      [--plain-mb 3.9] [--line-mb 0.95] [--modes plain,stream]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import ROOT, Spread, source_trees
from gateway import Server, start_switchpoint
from service import bench_ports

sys.path.insert(0, str(ROOT))
from tests.fakes.fake_provider import FakeProviderProcess

POLL_S = 0.01  # how often /health is asked while the answer is served


@dataclass(frozen=True)
class Held:
    """One dense request's time, and the worst /health latency while it was served."""

    request_s: float
    worst_health_s: float
    polls: int


async def one_dense(server: Server, stream: bool) -> Held:
    """Serve one dense answer of ``server``'s model (scripted beforehand), asking /health every
    :data:`POLL_S` until it is read whole."""
    latencies: list[float] = []
    done = asyncio.Event()
    async with httpx.AsyncClient(timeout=60) as health, httpx.AsyncClient(timeout=60) as chat:
        await health.get(f"{server.base}/health")  # (its connection open before the request)

        async def poll() -> None:
            while not done.is_set():
                started = time.perf_counter()
                r = await health.get(f"{server.base}/health")
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
                await asyncio.sleep(POLL_S)

        poller = asyncio.create_task(poll())
        await asyncio.sleep(3 * POLL_S)
        started = time.perf_counter()
        payload: dict[str, object] = {"model": server.model,
                                      "messages": [{"role": "user", "content": "dense"}]}
        if stream:
            payload["stream"] = True
        r = await chat.post(f"{server.base}/v1/chat/completions", json=payload)
        took = time.perf_counter() - started
        done.set()
        await poller
    if r.status_code != 200 or "DENSE" not in r.text[:100_000]:
        raise RuntimeError(f"the dense answer did not come through: {r.status_code} "
                           f"{r.text[:300]}")
    return Held(took, max(latencies), len(latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="LABEL=DIR, DIR a source tree's src folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plain-mb", type=float, default=3.9)
    parser.add_argument("--line-mb", type=float, default=0.95)
    parser.add_argument("--modes", default="plain,stream")
    args = parser.parse_args()
    trees = source_trees(args.trees)
    modes = [m.strip() == "stream" for m in args.modes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="switchpoint-loop-hold-"))
    fake = FakeProviderProcess(lean=True, ports=bench_ports()).start()
    servers: dict[str, Server] = {}
    held: dict[tuple[str, bool], list[Held]] = {(t, s): [] for t in trees for s in modes}
    try:
        for label, src in trees.items():
            os.environ["PYTHONPATH"] = src  # (the server started next inherits it)
            servers[label] = start_switchpoint(tmp / label, fake, name=label)
        os.environ.pop("PYTHONPATH", None)
        for r in range(args.rounds + 1):  # (the first warms each: not counted)
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            shown = []
            for stream in modes:
                behaviour = (f"dense:line=1,mb={args.line_mb}" if stream
                             else f"dense:mb={args.plain_mb}")
                for label in order:
                    server = servers[label]
                    fake.script(server.model, behaviour)
                    run = asyncio.run(one_dense(server, stream))
                    if r:
                        held[(label, stream)].append(run)
                    shown.append(f"{label} {'streamed' if stream else 'plain'} "
                                 f"{run.request_s:.2f} s /health "
                                 f"{run.worst_health_s * 1000:.0f} ms")
            print(f"{'warm-up' if not r else f'round {r}'}: " + "  ".join(shown)
                  + f"  (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        fake.stop()
    print(f"\nA dense answer (plain {args.plain_mb} MiB, a stream line of {args.line_mb} MiB), "
          f"median over {args.rounds} rounds (lowest-highest):")
    print(f"{'tree':>12} {'mode':>8}  {'request s':>18}  {'worst /health ms':>18}")
    for (label, stream), runs in held.items():
        took = Spread.of(h.request_s for h in runs)
        worst = Spread.of(h.worst_health_s * 1000 for h in runs)
        print(f"{label:>12} {'streamed' if stream else 'plain':>8}  "
              f"{took.median:6.2f} ({took.least:.2f}-{took.most:.2f})  "
              f"{worst.median:6.0f} ({worst.least:.0f}-{worst.most:.0f})")


if __name__ == "__main__":
    main()
