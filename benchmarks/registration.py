"""A model's registration at run time, and its removal: ``POST /v1/router/models`` and
``DELETE /v1/router/models/{name}`` from send to answer.

Starts `switchpoint serve` on loopback with its bundled default weights and a config of three
priced models (at a loopback URL nothing is sent to), then registers ``--count`` models one
after the other through the HTTP door with the admin token, each a new name, then unregisters
them in turn, and prints the median, the fastest and the slowest answer of each. Each change
is kept in ``data_dir`` (a SQLite write, waited for) before it answers. ``--experiment`` adds
an experiment of two arms to the config, one routed by the live weights and one by the
bundled knn policy's, with the knn package listed under ``policies:`` (what a service that
compares two policies runs).

``--baseline-src DIR`` also measures switchpoint from another source tree (``DIR`` is its
``src`` folder, run with this environment's packages: e.g. a ``git worktree`` of an earlier
commit), started beside this one, to measure a change: each registration is sent to one
service, then to the other, since the shared machine's speed drifts.

Usage: python benchmarks/registration.py [--count 20] [--experiment] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from service import start_serve, wait_up

ADMIN = "registration-benchmark-admin-0123456789"
CONFIG = """models:
  - {name: strong, base_url: "http://127.0.0.1:9/v1", input_per_mtok: 10, output_per_mtok: 10}
  - {name: runner, base_url: "http://127.0.0.1:9/v1", input_per_mtok: 5, output_per_mtok: 5}
  - {name: cheap, base_url: "http://127.0.0.1:9/v1", input_per_mtok: 1, output_per_mtok: 1}
admin_token_env: SP_BENCH_ADMIN
"""
EXPERIMENT = """experiments:
  compare:
    arms:
      control: {}
      knn: {policy: knn}
policies:
  knn: KNN_DIR
"""


def knn_package(tmp: Path) -> str:
    """The bundled knn policy's weights, saved as a package of their own in ``tmp``."""
    from switchpoint.weights import load_weights

    out = tmp / "knn"
    load_weights(None, policy="knn").save(out)
    return str(out)


def start(src: str | None, tmp: Path, experiment: bool = False
          ) -> tuple[subprocess.Popen[bytes], str]:
    """A service of source tree ``src`` (None: this environment's) on ``tmp``, ready (with
    the experiment of two arms when ``experiment``)."""
    return start_with(src, tmp, CONFIG + (EXPERIMENT.replace("KNN_DIR", knn_package(tmp))
                                          if experiment else ""))


def start_with(src: str | None, tmp: Path, text: str) -> tuple[subprocess.Popen[bytes], str]:
    """A service of source tree ``src`` (None: this environment's) on ``tmp`` and config
    ``text``, ready, with the admin token :data:`ADMIN`."""
    env = {**os.environ, "SP_BENCH_ADMIN": ADMIN}
    if src is not None:
        env["PYTHONPATH"] = src
    config = tmp / "switchpoint.yaml"
    config.write_text(text)
    proc, base = start_serve(["--config", str(config), "--data-dir", str(tmp / "d"),
                              "--log-level", "error"], env)
    wait_up(f"{base}/health", proc)
    return proc, base


def registrations(sources: list[str | None], count: int, experiment: bool = False
                  ) -> tuple[list[list[float]], list[list[float]]]:
    """Seconds each of ``count`` registrations took, then each of their removals, through a
    service of each source tree of ``sources``, sent to each in turn (the shared machine's
    speed drifts)."""
    with contextlib.ExitStack() as stack:
        clients = []
        for src in sources:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sp-register-")))
            proc, base = start(src, tmp, experiment)
            stack.callback(proc.wait, 30)
            stack.callback(proc.terminate)
            clients.append(stack.enter_context(httpx.Client(
                base_url=base, headers={"authorization": f"Bearer {ADMIN}"}, timeout=60)))
        took: list[list[float]] = [[] for _ in sources]
        for i in range(count):
            card = {"name": f"newbie-{i}", "tier": "simple", "input_per_mtok": 0.1,
                    "output_per_mtok": 0.2, "base_url": "http://127.0.0.1:9/v1"}
            for client, times in zip(clients, took, strict=True):
                t0 = time.perf_counter()
                answer = client.post("/v1/router/models", json=card)
                times.append(time.perf_counter() - t0)
                if answer.status_code not in (200, 201):
                    raise RuntimeError(f"registration refused: {answer.text}")
        removed: list[list[float]] = [[] for _ in sources]
        for i in range(count):
            for client, times in zip(clients, removed, strict=True):
                t0 = time.perf_counter()
                answer = client.delete(f"/v1/router/models/newbie-{i}")
                times.append(time.perf_counter() - t0)
                if answer.status_code != 200:
                    raise RuntimeError(f"removal refused: {answer.text}")
        return took, removed


def row(name: str, took: list[float]) -> str:
    ms = [t * 1e3 for t in took]
    return (f"{name:<24} {statistics.median(ms):>10.1f} {min(ms):>9.1f} {max(ms):>9.1f}")


def print_table(what: str, times: list[list[float]]) -> None:
    """The times of ``what`` (each tree's, ours first, the baseline's after) as rows in ms."""
    print(f"{what:<24} {'median ms':>10} {'min ms':>9} {'max ms':>9}")
    for name, each in zip(["switchpoint", "baseline"], times, strict=False):
        print(row(name, each))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--experiment", action="store_true",
                        help="configure an experiment of two arms (live weights, knn)")
    parser.add_argument("--baseline-src", default=None)
    args = parser.parse_args()
    sources: list[str | None] = [None] if args.baseline_src is None else [
        None, args.baseline_src]
    took, removed = registrations(sources, args.count, args.experiment)
    for what, times in (("registration", took), ("removal", removed)):
        print_table(what, times)


if __name__ == "__main__":
    main()
