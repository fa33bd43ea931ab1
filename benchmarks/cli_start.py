"""Offline commands: each `switchpoint` command's wall time from launch to exit, as a user runs
it, beside the same command from another source tree.

Builds a small world first: the fake provider (``tests/fakes/fake_provider.py --lean``), a
config of two models served by it (and a tenant), a data_dir holding a decision per timed
``feedback`` run (routed with the library) and an outcome, a client key, and a prompts file of
two prompts with reference answers. Then runs each command in a fresh interpreter
(``python -m switchpoint ...``, the shell's environment with ``PYTHONPATH`` set to the tree's
``src``): ``feedback`` and ``label`` with ``--help`` and for real (an outcome learned on the
state in data_dir; two prompts labelled by two models of the fake), ``keys list``, ``report
cost``, ``models list``, ``experiments list``, ``prune --dry-run``, ``learn --export``,
``info`` and ``route``. Each figure is the median of ``--rounds`` runs: the wall time and the
CPU time (user + system) the command's process spent, which a busy machine inflates less; the
trees alternate command by command (which goes first alternating by round), since the shared
machine's speed drifts.

``--baseline-src DIR`` also runs each command from another source tree (``DIR`` is its
``src`` folder, run with this environment's packages: e.g. a ``git worktree`` of an earlier
commit). Both trees are compiled first (``compileall``), as an install does: with
``PYTHONDONTWRITEBYTECODE=1`` set (as this project's shell sets it) a tree never compiled
compiles itself at every start, some 0.4 s more.

Usage: python benchmarks/cli_start.py [--rounds 5] [--baseline-src DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import ROOT

sys.path.insert(0, str(ROOT))
from tests.fakes.fake_provider import FakeProviderProcess

KEYS = {"GOOD_KEY": "sk-good-bench", "CHEAP_KEY": "sk-cheap-bench"}
PROMPTS = ('{"prompt": "What is 2 + 2?", "reference": "4"}\n'
           '{"prompt": "What is the capital of France?", "reference": "Paris"}\n')


class World:
    """The config, data_dir and inputs the commands run on, in ``root``."""

    def __init__(self, root: Path, fake: FakeProviderProcess, decisions: int) -> None:
        self.root = root
        self.config = root / "switchpoint.yaml"
        self.data = root / "data"
        self.config.write_text(f"""models:
  - {{name: good, profile: gpt-4-1106-preview, base_url: "{fake.openai_base_url}",
     api_key_env: GOOD_KEY, input_per_mtok: 10, output_per_mtok: 30, context_window: 128000}}
  - {{name: cheap, profile: gpt-3.5-turbo-1106, base_url: "{fake.openai_base_url}",
     api_key_env: CHEAP_KEY, input_per_mtok: 0.5, output_per_mtok: 1.5, context_window: 16000}}
data_dir: {self.data}
tenants:
  acme: {{}}
""", encoding="utf-8")
        self.prompts = root / "prompts.jsonl"
        self.prompts.write_text(PROMPTS, encoding="utf-8")
        self.decisions = self._route(decisions)
        self.used = 0

    def _route(self, count: int) -> list[str]:
        """``count`` decisions logged in the data_dir (one with an outcome, for learn)."""
        from switchpoint.config import load_settings
        from switchpoint.gateway import Gateway

        settings = load_settings(self.config, environ={})
        with Gateway(settings, env=KEYS) as gateway:
            gateway.start()
            ids = [gateway.route(f"Prove that the square root of {i + 2} is irrational.",
                                 ["good", "cheap"]).decision_id for i in range(count + 1)]
            gateway.report_outcome(ids[-1], 0.8)
        return ids[:-1]

    def next_decision(self) -> str:
        self.used += 1
        return self.decisions[self.used - 1]

    def fresh(self, *paths: str) -> None:
        """Remove what an earlier run of a command wrote (so each run does the same work)."""
        for name in paths:
            for path in self.root.glob(name + "*"):
                if path.is_dir():
                    for inner in sorted(path.rglob("*"), reverse=True):
                        inner.rmdir() if inner.is_dir() else inner.unlink()
                    path.rmdir()
                else:
                    path.unlink()


# name -> (the arguments, given the world; what to remove before each run)
Command = tuple[Callable[[World], list[str]], tuple[str, ...]]


def commands() -> dict[str, Command]:
    def c(w: World) -> list[str]:
        return ["--config", str(w.config)]

    return {
        "feedback --help": (lambda w: ["feedback", "--help"], ()),
        "feedback (offline)": (lambda w: ["feedback", w.next_decision(), "--score", "1", *c(w)],
                               ()),
        "label --help": (lambda w: ["label", "--help"], ()),
        "label (2 prompts x 2)": (lambda w: ["label", str(w.prompts), "--models", "good,cheap",
                                             "--out", str(w.root / "records.jsonl"), *c(w)],
                                  ("records.jsonl",)),
        "keys list": (lambda w: ["keys", "list", *c(w)], ()),
        "report cost": (lambda w: ["report", "cost", *c(w)], ()),
        "models list": (lambda w: ["models", "list", *c(w)], ()),
        "experiments list": (lambda w: ["experiments", "list", *c(w)], ()),
        "prune --dry-run": (lambda w: ["prune", "--dry-run", "--older-than", "30", *c(w)], ()),
        "learn --export": (lambda w: ["learn", "--export", str(w.root / "learned"), *c(w)],
                           ("learned",)),
        "info": (lambda w: ["info"], ()),
        "route": (lambda w: ["route", "Write a haiku about the sea."], ()),
    }


def run_once(world: World, src: str, command: Command) -> tuple[float, float] | str:
    """Seconds from launch to exit of the command from the tree ``src`` and the CPU seconds
    its process spent, or why it failed."""
    argv, leftovers = command
    world.fresh(*leftovers)
    env = {**os.environ, **KEYS, "PYTHONPATH": src, "PYTHONDONTWRITEBYTECODE": "1"}
    args = [sys.executable, "-m", "switchpoint", *argv(world)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=world.root, capture_output=True, text=True,
                          timeout=300)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        return f"failed (status {done.returncode}): {(done.stderr.strip() or '?')[:200]}"
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-src", help="another switchpoint source tree's src folder")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="time only the commands whose name begins so (e.g. feedback)")
    args = parser.parse_args()
    trees = {"after": str(ROOT / "src")}
    if args.baseline_src:
        trees = {"before": str(Path(args.baseline_src).resolve()), **trees}
    for src in trees.values():
        compileall.compile_dir(src, quiet=1)
    chosen = {name: cmd for name, cmd in commands().items()
              if not args.only or any(name.startswith(o) for o in args.only)}
    feedbacks = sum(name.startswith("feedback (") for name in chosen)
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    notes: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="sp-cli-start-") as tmp, \
            FakeProviderProcess(lean=True) as fake:
        world = World(Path(tmp), fake, feedbacks * args.rounds * len(trees))
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
            for name, command in chosen.items():
                for tree, src in order:
                    if (name, tree) in notes:
                        continue
                    got = run_once(world, src, command)
                    if isinstance(got, str):
                        notes[name, tree] = got
                    else:
                        times.setdefault((name, tree), []).append(got)
    print(f"Offline commands, launch to exit: median of {args.rounds} runs each, trees "
          f"alternated, {os.cpu_count()} cores, both trees compiled (wall s; CPU s: user + "
          "system of the command's process)")
    print(f"{'command':24}" + "".join(f"{t + ' wall':>13}{t + ' CPU':>12}" for t in trees)
          + ("   wall  CPU" if len(trees) == 2 else ""))
    for name in chosen:
        line = f"{name:24}"
        medians: list[tuple[float, float]] = []
        for tree in trees:
            runs = times.get((name, tree))
            if not runs:
                line += f"{'-':>13}{'-':>12}"
                continue
            medians.append((statistics.median(w for w, _ in runs),
                            statistics.median(c for _, c in runs)))
            line += f"{medians[-1][0]:13.2f}{medians[-1][1]:12.2f}"
        if len(trees) == 2 and len(medians) == 2:
            (wall0, cpu0), (wall1, cpu1) = medians
            line += f" {(wall1 - wall0) / wall0:+5.0%} {(cpu1 - cpu0) / cpu0:+5.0%}"
        print(line)
    for (name, tree), why in notes.items():
        print(f"{name} ({tree}): {why}")


if __name__ == "__main__":
    main()
