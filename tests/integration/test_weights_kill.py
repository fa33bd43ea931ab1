"""``kill -9`` of a command that rewrites a weights package in place (``remove-model``), at
every step it takes on disk: the package is afterwards the old one or the new one, whole,
never missing or a mix, and what a killed run left beside it is cleared by the next save.

Each run is a forked child that runs the command and kills itself with SIGKILL just before
its N-th file-system operation in the package's folder (opening a file to write, making or
renaming or removing a file or folder), for N = 1, 2, ... until a run finishes untouched."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from switchpoint.weights import default_weights_path, load_weights

_STEPS = {"open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir",
          "shutil.rmtree", "os.unlink"}


def _run_killed_at(step: int, argv: list[str], under: str) -> int:
    """Run the CLI with ``argv`` in a forked child that SIGKILLs itself before its ``step``-th
    write step under ``under``; its wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        seen = 0

        def hook(event: str, args: tuple[Any, ...]) -> None:
            nonlocal seen
            if event not in _STEPS or not args:
                return
            if event == "open" and (not isinstance(args[1], str) or args[1] == "r"
                                    or args[1] == "rb" or (args[1] is None and not args[2] & 3)):
                return  # a read
            paths = [a for a in args if isinstance(a, str | bytes | os.PathLike)]
            if not any(os.fsdecode(p).startswith(under) for p in paths):
                return
            seen += 1
            if seen == step:
                os.kill(os.getpid(), signal.SIGKILL)

        try:
            from switchpoint.cli import main

            sys.addaudithook(hook)
            code = main(argv)
        except BaseException:  # the child reports by its exit status alone
            code = 99
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def test_a_package_rewritten_in_place_is_old_or_new_whatever_the_moment_of_a_kill(
        tmp_path: Path) -> None:
    bundled = default_weights_path("tfidf")
    old = load_weights(bundled)
    gone = old.models[1]
    folder = tmp_path / "pkgs"
    folder.mkdir()
    target = folder / "w"
    outcomes: dict[str, int] = {"old": 0, "new": 0}
    argv = ["remove-model", "-q", "--weights", str(target), gone]
    step, finished, left_behind = 0, False, 0
    while not finished:
        step += 1
        assert step < 200, "the command never finished"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(bundled, target)
        status = _run_killed_at(step, argv, str(folder))
        finished = os.WIFEXITED(status)
        if finished:
            assert os.WEXITSTATUS(status) == 0
        else:
            assert os.WTERMSIG(status) == signal.SIGKILL
        # What `serve --weights` and `info` would find after the kill.
        package = load_weights(target)
        if package.models == old.models:
            assert package.weights_id == old.weights_id, f"a mix after a kill at step {step}"
            outcomes["old"] += 1
        else:
            assert package.models == [m for m in old.models if m != gone], step
            outcomes["new"] += 1
        # A run killed mid-way leaves its work beside the package; the next save clears it.
        left_behind = max(left_behind, sum(1 for p in folder.iterdir() if p != target))
    assert outcomes["old"] >= 1 and outcomes["new"] >= 1, outcomes
    assert left_behind >= 1, "the sweep killed nothing mid-write"
    assert sorted(p.name for p in folder.iterdir()) == ["w"]
