"""``kill -9`` of ``switchpoint route --output FILE`` at each of its steps on disk
(:mod:`tests.integration.kill_points`): FILE is afterwards missing or whole, and the next run
clears what a killed one left beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from switchpoint.weights import default_weights_path
from tests.integration.kill_points import run_killed_at


def test_a_route_output_is_whole_or_absent_and_a_killed_runs_leftover_goes(
        tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Summarise this paragraph\nWrite a haiku about rain\n", encoding="utf-8")
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "decisions.jsonl"
    argv = ["route", "-q", "--weights", str(default_weights_path("tfidf")), "--input",
            str(prompts), "--output", str(out)]
    step, finished, left_behind = 0, False, 0
    while not finished:
        step += 1
        assert step < 50, "the command never finished"
        status = run_killed_at(step, argv, str(folder))
        finished = os.WIFEXITED(status)
        assert not finished or os.WEXITSTATUS(status) == 0
        if out.exists():
            lines = out.read_text(encoding="utf-8").splitlines()
            assert [json.loads(line)["id"] for line in lines] == [1, 2], step
        left_behind = max(left_behind, sum(1 for p in folder.iterdir() if p != out))
    assert left_behind >= 1, "the sweep killed nothing mid-write"
    assert sorted(p.name for p in folder.iterdir()) == [out.name]
