"""An experiment's creation at run time, and its end: ``POST /v1/router/experiments`` and
``DELETE /v1/router/experiments/{name}`` from send to answer.

Starts `switchpoint serve` on loopback with its bundled default weights and a config of three
priced models (at a loopback URL nothing is sent to), then, ``--rounds`` times, creates an
experiment through the HTTP door with the admin token (a new name each round) and ends it,
and prints the median, the fastest and the slowest answer of each. Each change is kept in
``data_dir`` (a SQLite write, waited for) before it answers. The experiment's arms are the
configured routing and quality first (λ 0); with ``--other-policy`` its second arm is routed
by the bundled knn policy's weights instead, the knn package listed under ``policies:`` (what a
service that compares two policies runs) and used by no arm of the config.

``--baseline-src DIR`` also measures switchpoint from another source tree (``DIR`` is its
``src`` folder, run with this environment's packages: e.g. a ``git worktree`` of an earlier
commit, compiled with ``python -m compileall -q DIR`` as an install is), started beside this
one: each creation and each end is sent to one service, then to the other, since the shared
machine's speed drifts.

Usage: python benchmarks/experiments_runtime.py [--rounds 20] [--other-policy]
       [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
from pathlib import Path
from typing import Any

from registration import CONFIG, admin_clients, knn_package, print_table, send_to_each, start_with

KNN_POLICY = "policies:\n  knn: KNN_DIR\n"


def start(src: str | None, tmp: Path, other_policy: bool
          ) -> tuple[subprocess.Popen[bytes], str]:
    """A ready service of source tree ``src`` (None: this environment's) on ``tmp``, its
    config listing the knn package under ``policies:`` when ``other_policy``."""
    extra = KNN_POLICY.replace("KNN_DIR", knn_package(tmp)) if other_policy else ""
    return start_with(src, tmp, CONFIG + extra)


def experiment(i: int, other_policy: bool) -> dict[str, Any]:
    """The body that creates round ``i``'s experiment."""
    second: dict[str, Any] = {"policy": "knn"} if other_policy else {"cost_weight": 0.0}
    return {"name": f"round-{i}", "arms": {"control": {}, "second": second}}


def rounds(sources: list[str | None], count: int, other_policy: bool
           ) -> tuple[list[list[float]], list[list[float]]]:
    """Seconds each of ``count`` creations took, then each of their ends (each round's end
    follows its creation), through a service of each source tree of ``sources``, sent to each
    in turn (the shared machine's speed drifts)."""
    with contextlib.ExitStack() as stack:
        clients = admin_clients(stack, sources, "sp-exp-",
                                lambda src, tmp: start(src, tmp, other_policy))
        made: list[list[float]] = [[] for _ in sources]
        ended: list[list[float]] = [[] for _ in sources]
        for i in range(count):
            send_to_each(clients, made, "POST", "/v1/router/experiments", (201,), "creation",
                         experiment(i, other_policy))
            send_to_each(clients, ended, "DELETE", f"/v1/router/experiments/round-{i}", (200,),
                         "end")
        return made, ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--other-policy", action="store_true",
                        help="the second arm routed by the knn policy, listed under policies:")
    parser.add_argument("--baseline-src", default=None)
    args = parser.parse_args()
    sources: list[str | None] = [None] if args.baseline_src is None else [
        None, args.baseline_src]
    made, ended = rounds(sources, args.rounds, args.other_policy)
    for what, times in (("creation", made), ("end", ended)):
        print_table(what, times)
        print(f"{'':<24} (first round: "
              + ", ".join(f"{t[0] * 1e3:.1f}" for t in times) + " ms)")


if __name__ == "__main__":
    main()
