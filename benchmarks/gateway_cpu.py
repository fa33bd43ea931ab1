"""Server CPU per chat request of switchpoint from several source trees, up at once and loaded in
turn, so a busy host weighs on each alike.

Each tree (``LABEL=DIR``, ``DIR`` its ``src`` folder, run with this environment's packages by
``PYTHONPATH``: e.g. a ``git worktree`` of an earlier commit; ``.`` for this checkout's) serves
``switchpoint serve`` with the catalog ``benchmarks/gateway.py`` gives it (two models whose
``base_url`` is one shared fake provider, ``--lean``), in a process group of its own. All are
started, warmed (200 requests each, plain and streamed), then each round loads each server in
turn with ``--n`` requests at ``--concurrency`` (plain, then streamed), the trees' order
reversed every other round, and takes the CPU its whole process group spent (every thread: the
event loop, the log's and the pins' writers) per request, and the requests per second. It
prints each round, then each tree's median over the rounds (with the lowest and highest).

CPU per request is less sensitive to other work on the host than latency is, but not immune:
on a shared host read the medians, over several rounds.

Usage: python benchmarks/gateway_cpu.py now=. before=/tmp/before/src [--rounds 6] [--n 600]
                                        [--concurrency 64] [--modes plain,stream]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import ROOT, Spread, source_trees
from gateway import Prompts, Server, measured_load, start_switchpoint
from gateway import load as run_load
from service import bench_ports, pick_prompts

sys.path.insert(0, str(ROOT))
from tests.fakes.fake_provider import FakeProviderProcess

WARM = 200  # requests per server and mode before the rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", help="LABEL=DIR, DIR a source tree's src folder")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--n", type=int, default=600, help="requests per server, mode, round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--modes", default="plain,stream")
    args = parser.parse_args()
    trees = source_trees(args.trees)
    modes = [m.strip() == "stream" for m in args.modes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="switchpoint-gateway-cpu-"))
    fake = FakeProviderProcess(lean=True, ports=bench_ports()).start()
    servers: dict[str, Server] = {}
    try:
        for label, src in trees.items():
            os.environ["PYTHONPATH"] = src  # (the server started next inherits it)
            servers[label] = start_switchpoint(tmp / label, fake, name=label)
        os.environ.pop("PYTHONPATH", None)
        prompts = Prompts(pick_prompts(400))
        for server in servers.values():
            for stream in modes:
                asyncio.run(run_load(server, prompts.take("x", WARM), 16, stream))
        cpu: dict[tuple[str, bool], list[float]] = {(t, s): [] for t in servers for s in modes}
        rps: dict[tuple[str, bool], list[float]] = {(t, s): [] for t in servers for s in modes}
        errors = 0
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for stream in modes:
                for label in order:
                    run = measured_load(servers[label], prompts.take("x", args.n),
                                        args.concurrency, stream)
                    cpu[(label, stream)].append(run.cpu_ms)
                    rps[(label, stream)].append(run.rps)
                    errors += run.errors
            shown = [f"{t} {'streamed' if s else 'plain'} {cpu[(t, s)][-1]:.2f} ms "
                     f"{rps[(t, s)][-1]:.0f}/s" for t, s in cpu]
            print(f"round {r + 1}: " + "  ".join(shown)
                  + f"  (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        for server in servers.values():
            server.stop()
        fake.stop()
    print(f"\nServer CPU ms per request, median over {args.rounds} rounds (lowest-highest), and "
          f"requests/s (median), {args.n} requests a round at concurrency {args.concurrency}:")
    for (label, stream), values in cpu.items():
        ms = Spread.of(values)
        print(f"{label:>12} {'streamed' if stream else 'plain':>8}  "
              f"{ms.median:.2f} ({ms.least:.2f}-{ms.most:.2f})  "
              f"{statistics.median(rps[(label, stream)]):.0f}/s")
    if errors:
        print(f"errors: {errors}")


if __name__ == "__main__":
    main()
