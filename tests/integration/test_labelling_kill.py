"""``kill -9`` of ``switchpoint label`` at each of its steps on disk, then a rerun each time
(:mod:`tests.integration.kill_points`): every rerun resumes, and the output ends valid JSONL
with every prompt once, labelled by every model. ``kill -9`` of a run whose answers are all in
while the judge holds its replies: the rerun only judges them."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from switchpoint.labelling.journal import done_path, journal_path
from switchpoint.records import load_records
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.kill_points import run_killed_at
from tests.integration.test_labelling import (
    JUDGE_SAYS,
    _spawn,
    config,
    expected_cost,
    records_of,
    write_prompts,
)


def test_a_run_killed_at_every_step_resumes_without_losing_or_repeating_a_record(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B_KEY", "sk-ant-test")
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    for model in ("a", "b"):
        fake.default(model, "ok")
    fake.default("judge", JUDGE_SAYS)
    n = 2
    prompts = write_prompts(tmp_path / "prompts.jsonl", n)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "records.jsonl"
    argv = [str(a) for a in ("label", prompts, "--models", "a,b", "--judge", "judge", "--out",
                             out, "--config", config(fake, tmp_path), "-q")]
    step, finished = 0, False
    while not finished:
        step += 1
        assert step < 200, "the command never finished"
        status = run_killed_at(step, [*argv, "--restart"] if step > 1 else argv, str(work))
        finished = os.WIFEXITED(status)
        if finished:
            assert os.WEXITSTATUS(status) == 0, step
        else:
            assert os.WTERMSIG(status) == signal.SIGKILL
        # A rerun after the kill completes the output.
        rerun = run_killed_at(0, argv, str(work))
        assert os.WIFEXITED(rerun) and os.WEXITSTATUS(rerun) == 0, f"killed at step {step}"
        lines = out.read_text(encoding="utf-8").splitlines()
        ids = [json.loads(line)["id"] for line in lines]
        assert sorted(ids) == [f"q{i}" for i in range(n)], f"killed at step {step}: {ids}"
        assert load_records(out).models == ["a", "b"]
        assert done_path(out).exists() and not journal_path(out).exists()
    assert step > 3, step


def test_answers_kept_for_the_judge_are_never_asked_for_again_whatever_step_a_rerun_dies_at(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run's judge fails, so its answers are kept; a rerun that judges them again is
    killed at each of its steps on disk, then run again: the models are never called again."""
    monkeypatch.setenv("B_KEY", "sk-ant-test")
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    for model in ("a", "b"):
        fake.default(model, "ok")
    fake.default("judge", "500")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 1)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "records.jsonl"
    argv = [str(a) for a in ("label", prompts, "--models", "a,b", "--judge", "judge", "--out",
                             out, "--config", config(fake, tmp_path), "-q")]
    status = run_killed_at(0, argv, str(work))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    kept = journal_path(out).read_bytes()
    assert kept.count(b'"answer": ') == 2
    answered = sum(r["body"]["model"] in ("a", "b") for r in fake.requests())
    assert answered == 2
    fake.default("judge", JUDGE_SAYS)
    step, finished = 0, False
    while not finished:
        step += 1
        assert step < 200, "the command never finished"
        for path in (out, done_path(out)):
            path.unlink(missing_ok=True)
        journal_path(out).write_bytes(kept)
        status = run_killed_at(step, argv, str(work))
        finished = os.WIFEXITED(status)
        if finished:
            assert os.WEXITSTATUS(status) == 0, step
        else:
            assert os.WTERMSIG(status) == signal.SIGKILL
            rerun = run_killed_at(0, argv, str(work))
            assert os.WIFEXITED(rerun) and os.WEXITSTATUS(rerun) == 0, f"killed at step {step}"
        record = json.loads(out.read_text(encoding="utf-8"))
        assert record["id"] == "q0" and record["scores"] == {"a": 0.7, "b": 0.7}, step
        assert done_path(out).exists() and not journal_path(out).exists()
        now = sum(r["body"]["model"] in ("a", "b") for r in fake.requests())
        assert now == answered, f"killed at step {step}: a model was asked again"
    assert step > 3, step


def test_a_run_killed_while_the_judge_holds_its_answers_leaves_them_to_the_rerun(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Every model has answered and the judge holds every reply when the run is SIGKILLed: the
    rerun only judges the answers, each model called once per prompt across both runs, each
    record's cost that first call's (the rerun's prices are ten times higher)."""
    for model in ("a", "b"):
        fake.default(model, "ok")
    fake.default("judge", "hold:seconds=120")
    n = 3
    prompts = write_prompts(tmp_path / "prompts.jsonl", n)
    out = tmp_path / "records.jsonl"
    path = config(fake, tmp_path)
    argv = ["label", prompts, "--models", "a,b", "--judge", "judge", "--out", out,
            "--config", path, "--concurrency", 2 * n]
    proc = _spawn(argv, tmp_path)
    deadline = time.monotonic() + 60
    # (each judge's request is sent once the answer it grades is journalled)
    while sum(r["body"]["model"] == "judge" for r in fake.requests()) < 2 * n:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the judge never had {2 * n} answers to grade")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert out.read_text(encoding="utf-8") == ""  # nothing was scored
    lines = journal_path(out).read_text(encoding="utf-8").splitlines()
    kept = [obj for obj in map(json.loads, lines) if "answer" in obj]
    assert sorted((e["id"], e["model"]) for e in kept) == [
        (f"q{i}", m) for i in range(n) for m in ("a", "b")]
    assert all("failed" not in e for e in kept)

    path.write_text(path.read_text(encoding="utf-8").replace(
        "input_per_mtok: 1, output_per_mtok: 2", "input_per_mtok: 10, output_per_mtok: 20")
        .replace("input_per_mtok: 3, output_per_mtok: 15",
                 "input_per_mtok: 30, output_per_mtok: 150"), encoding="utf-8")
    fake.default("judge", JUDGE_SAYS)
    proc = _spawn([*argv, "--json"], tmp_path)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert (f"{2 * n} answers an earlier run got but did not score are kept; they are scored "
            "now by the judge, not asked for again") in err
    summary = json.loads(stdout)
    # (never judged before: the judge held them; counted with those whose judging failed)
    assert summary["answer_calls"] == 0 and summary["kept_answers_scored"] == 2 * n
    assert summary["reused_answers"] == 0 and summary["rescored_answers"] == 0
    assert summary["cost_usd"]["answers"] == 0  # (paid for by the killed run)
    asked = Counter((r["body"]["model"], json.dumps(r["body"]["messages"][-1]["content"]))
                    for r in fake.requests() if r["body"]["model"] in ("a", "b"))
    assert len(asked) == 2 * n and set(asked.values()) == {1}, asked
    records = records_of(out)
    assert sorted(records) == [f"q{i}" for i in range(n)]
    for record in records.values():
        assert record["scores"] == {"a": 0.7, "b": 0.7}
        for model in ("a", "b"):
            assert record["costs"][model] == pytest.approx(
                expected_cost(model, record["prompt"]), rel=1e-9)
    assert done_path(out).exists() and not journal_path(out).exists()


def test_a_corrected_reference_rescores_kept_answers_whatever_step_a_rerun_dies_at(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run scores a's answers against a wrong reference (b fails, so nothing is
    finished); the reference is corrected, and a rerun killed at each of its steps on disk is
    run again: a is never asked again, and its records score it against the new reference."""
    monkeypatch.setenv("B_KEY", "sk-ant-test")
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    fake.default("a", "say:text=blue")
    fake.default("b", "500")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, reference="red")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "records.jsonl"
    argv = [str(a) for a in ("label", prompts, "--models", "a,b", "--out", out, "--config",
                             config(fake, tmp_path), "-q")]
    status = run_killed_at(0, argv, str(work))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    kept = journal_path(out).read_bytes()
    answered = sum(r["body"]["model"] == "a" for r in fake.requests())
    assert answered == 2
    write_prompts(prompts, 2, reference="blue")
    fake.default("b", "say:text=red")
    _rerun_killed_at_each_step(fake, argv, work, kept, answered, {"a": 1.0, "b": 0.0})


def test_a_journal_begun_without_a_judge_gains_one_whatever_step_a_rerun_dies_at(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run has a reference for every prompt, so its journal names no judge (b fails,
    so nothing is finished); the references are removed, and a rerun given --judge, killed at
    each of its steps on disk (before, while and after its journal's header gains the judge),
    is run again: it resumes rather than asking for --restart, a is never asked again, and
    the judge scores every answer."""
    monkeypatch.setenv("B_KEY", "sk-ant-test")
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    fake.default("a", "say:text=blue")
    fake.default("b", "500")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, reference="red")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "records.jsonl"
    argv = [str(a) for a in ("label", prompts, "--models", "a,b", "--out", out, "--config",
                             config(fake, tmp_path), "-q")]
    status = run_killed_at(0, argv, str(work))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    kept = journal_path(out).read_bytes()
    assert json.loads(kept.splitlines()[0])["judge"] is None
    answered = sum(r["body"]["model"] == "a" for r in fake.requests())
    assert answered == 2
    write_prompts(prompts, 2)
    fake.default("b", "say:text=red")
    fake.default("judge", JUDGE_SAYS)
    argv += ["--judge", "judge"]
    _rerun_killed_at_each_step(fake, argv, work, kept, answered, {"a": 0.7, "b": 0.7})


def _rerun_killed_at_each_step(fake: FakeProviderProcess, argv: list[str], work: Path,
                               kept: bytes, answered: int, scores: dict[str, float]) -> None:
    """From the journal ``kept``, run ``argv`` killed at each of its steps on disk in turn
    (then run again to its end), until a run finishes unkilled: each time both prompts are
    written with ``scores``, the run is marked done, and model a was asked nothing more than
    its ``answered`` answers."""
    out = work / "records.jsonl"
    step, finished = 0, False
    while not finished:
        step += 1
        assert step < 200, "the command never finished"
        for path in (out, done_path(out)):
            path.unlink(missing_ok=True)
        journal_path(out).write_bytes(kept)
        status = run_killed_at(step, argv, str(work))
        finished = os.WIFEXITED(status)
        if finished:
            assert os.WEXITSTATUS(status) == 0, step
        else:
            assert os.WTERMSIG(status) == signal.SIGKILL
            rerun = run_killed_at(0, argv, str(work))
            assert os.WIFEXITED(rerun) and os.WEXITSTATUS(rerun) == 0, f"killed at step {step}"
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert sorted(r["id"] for r in records) == ["q0", "q1"], step
        assert all(r["scores"] == scores for r in records), (step, records)
        assert done_path(out).exists() and not journal_path(out).exists()
        now = sum(r["body"]["model"] == "a" for r in fake.requests())
        assert now == answered, f"killed at step {step}: a was asked again"
    assert step > 3, step
