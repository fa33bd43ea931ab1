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
import functools
import os
import subprocess
import tempfile
from collections.abc import Callable, Container
from pathlib import Path

import httpx
from _common import Spread, timed
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


def admin_clients(stack: contextlib.ExitStack, sources: list[str | None], prefix: str,
                  start: Callable[[str | None, Path], tuple[subprocess.Popen[bytes], str]]
                  ) -> list[httpx.Client]:
    """A client with the admin token of a service of each source tree of ``sources`` (None:
    this environment's), each started by ``start`` on a temporary folder named ``prefix...``;
    services, clients and folders are closed with ``stack``."""
    clients = []
    for src in sources:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        proc, base = start(src, tmp)
        stack.callback(proc.wait, 30)
        stack.callback(proc.terminate)
        clients.append(stack.enter_context(httpx.Client(
            base_url=base, headers={"authorization": f"Bearer {ADMIN}"}, timeout=60)))
    return clients


def send_to_each(clients: list[httpx.Client], times: list[list[float]], method: str, path: str,
                 ok: Container[int], what: str, body: object = None) -> None:
    """``METHOD path`` (with the JSON ``body``, if any) through each client in turn (the shared
    machine's speed drifts), the seconds of each added to that client's list of ``times``; an
    answer whose status is not in ``ok`` stops the run, naming ``what`` was refused."""
    for client, took in zip(clients, times, strict=True):
        seconds, answer = timed(functools.partial(client.request, method, path, json=body))
        took.append(seconds)
        if answer.status_code not in ok:
            raise RuntimeError(f"{what} refused: {answer.text}")


def registrations(sources: list[str | None], count: int, experiment: bool = False
                  ) -> tuple[list[list[float]], list[list[float]]]:
    """Seconds each of ``count`` registrations took, then each of their removals, through a
    service of each source tree of ``sources``, sent to each in turn (the shared machine's
    speed drifts)."""
    with contextlib.ExitStack() as stack:
        clients = admin_clients(stack, sources, "sp-register-",
                                lambda src, tmp: start(src, tmp, experiment))
        took: list[list[float]] = [[] for _ in sources]
        for i in range(count):
            card = {"name": f"newbie-{i}", "tier": "simple", "input_per_mtok": 0.1,
                    "output_per_mtok": 0.2, "base_url": "http://127.0.0.1:9/v1"}
            send_to_each(clients, took, "POST", "/v1/router/models", (200, 201),
                         "registration", card)
        removed: list[list[float]] = [[] for _ in sources]
        for i in range(count):
            send_to_each(clients, removed, "DELETE", f"/v1/router/models/newbie-{i}", (200,),
                         "removal")
        return took, removed


def row(name: str, took: list[float]) -> str:
    ms = Spread.of(t * 1e3 for t in took)
    return f"{name:<24} {ms.median:>10.1f} {ms.least:>9.1f} {ms.most:>9.1f}"


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
