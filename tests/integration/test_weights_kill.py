"""``kill -9`` of a command that rewrites a weights package in place (``remove-model``), at
every step it takes on disk: the package is afterwards the old one or the new one, whole,
never missing or a mix, and what a killed run left beside it is cleared by the next save.
(a kill at each of its steps: :mod:`tests.integration.kill_points`)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from switchpoint.weights import default_weights_path, load_weights
from tests.integration.kill_points import run_killed_at


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
        status = run_killed_at(step, argv, str(folder))
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
