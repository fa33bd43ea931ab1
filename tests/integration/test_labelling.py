"""``switchpoint label`` against the fake provider (a real upstream process on loopback): the
records it writes feed ``add-model`` and ``fit``; a run killed mid-way (Ctrl-C, then SIGKILL)
resumes to a complete output without duplicates; bad input exits 2 having called nothing."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from switchpoint.catalog import ModelCard
from switchpoint.gateway.learning import LiveLearning
from switchpoint.labelling.journal import done_path, journal_path
from switchpoint.labelling.lock import lock_path
from switchpoint.records import load_records
from switchpoint.store import SQLiteStore
from switchpoint.weights import load_weights
from tests.command_line import run
from tests.fakes.fake_provider import Answer, FakeProviderProcess

PRICES = {"a": (1.0, 2.0), "b": (3.0, 15.0), "judge": (0.5, 0.5)}
JUDGE_SAYS = 'say:text={"score": 0.7}'


def config(fake: FakeProviderProcess, root: Path) -> Path:
    path = root / "switchpoint.yaml"
    path.write_text(f"""models:
  - {{name: a, base_url: "{fake.openai_base_url}", input_per_mtok: 1, output_per_mtok: 2}}
  - {{name: b, provider: anthropic, base_url: "{fake.url}", api_key_env: B_KEY,
     input_per_mtok: 3, output_per_mtok: 15}}
  - {{name: judge, base_url: "{fake.openai_base_url}", input_per_mtok: 0.5,
     output_per_mtok: 0.5}}
data_dir: {root / "data"}
gateway: {{backoff_base_s: 0.01, backoff_cap_s: 0.02, read_timeout_s: 5}}
""", encoding="utf-8")
    return path


def write_prompts(path: Path, n: int, **extra: Any) -> Path:
    lines = [json.dumps({"id": f"q{i}", "prompt": f"Short science question {i}: why is the sky "
                                                   f"blue at hour {i}?", **extra})
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def records_of(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)), f"duplicate records: {ids}"
    return {r["id"]: r for r in lines}


def expected_cost(model: str, prompt: str) -> float:
    """What the fake charges for an answer to ``prompt`` (its usage) at the catalog's prices."""
    usage = Answer(model, [{"role": "user", "content": prompt}], None, None, False).usage()
    inp, outp = PRICES[model]
    return ModelCard(name=model, input_per_mtok=inp, output_per_mtok=outp).price(
        usage["prompt_tokens"], usage["completion_tokens"])


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B_KEY", "sk-ant-test")
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)


def test_label_then_add_model_and_fit_take_the_records(
        fake: FakeProviderProcess, keys: None, tmp_path: Path, real_weights_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    fake.default("judge", JUDGE_SAYS)
    fake.script("judge", 'say:text={"score": 0.2}', "say:text=0.9")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 8, split="train")
    with prompts.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "math", "prompt": "What is 6 times 7? Say 42",
                             "reference": "42", "split": "train"}) + "\n")
    out = tmp_path / "records.jsonl"
    code, stdout, err = run(["label", prompts, "--models", "a,b", "--judge", "judge",
                             "--out", out, "--config", config(fake, tmp_path),
                             "--concurrency", "3", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["labelled"] == 9 and summary["remaining"] == 0
    assert summary["answer_calls"] == 18 and summary["judge_calls"] == 16
    assert summary["by_reference"] == 2
    records = records_of(out)
    assert records["math"]["scores"] == {"a": 1.0, "b": 1.0}  # the echo ends with 42
    judged = [s for r in records.values() if r["id"] != "math" for s in r["scores"].values()]
    assert sorted(judged) == sorted([0.2, 0.9] + [0.7] * 14)
    for record in records.values():  # real token costs: the upstream's usage × catalog prices
        for model in ("a", "b"):
            assert record["costs"][model] == pytest.approx(
                expected_cost(model, record["prompt"]), rel=1e-9)
    answers = sum(sum(r["costs"].values()) for r in records.values())
    assert summary["cost_usd"]["answers"] == pytest.approx(answers)
    assert summary["cost_usd"]["judge"] > 0
    assert summary["cost_usd"]["total"] == pytest.approx(answers + summary["cost_usd"]["judge"])
    assert "labelling 9 prompts with 2 models (18 answers, judged by judge)" in err
    # Every call went through the gateway, exactly to the model named, and is in its log.
    store = SQLiteStore(tmp_path / "data" / "switchpoint.db").open()
    try:
        entries, _ = store.requests(limit=100)
    finally:
        store.close()
    assert len(entries) == 18 + 16
    assert all(e["models_tried"] == [e["requested_model"]] for e in entries)
    assert {e["requested_model"] for e in entries} == {"a", "b", "judge"}

    # add-model: teach the fitted weights model "a" from these records.
    weights = Path(shutil.copytree(real_weights_dir, tmp_path / "weights"))
    code, _, err = run(["add-model", "a", out, "--weights", weights], capsys)
    assert code == 0, err
    package = load_weights(weights)
    assert "a" in package.models
    assert package.provenance["added_models"][-1]["n_records"] == 9
    mean_cost = sum(r["costs"]["a"] for r in records.values()) / 9
    assert package.policy.global_cost()["a"] == pytest.approx(mean_cost)
    code, stdout, err = run(["route", "Why is the sky blue?", "--weights", weights, "--json",
                             "--models", f"a,{package.models[0]}"], capsys)
    assert code == 0, err
    assert "a" in json.loads(stdout)["all_scores"]
    # fit: weights of the team's own models from the records alone.
    code, _, err = run(["fit", out, "--out", tmp_path / "mine", "--policy", "cluster",
                        "--n-clusters", "2"], capsys)
    assert code == 0, err
    assert load_weights(tmp_path / "mine").models == ["a", "b"]
    assert load_records(out).models == ["a", "b"]


def test_one_prompt_one_model_labels_and_the_next_commands_it_names_take_its_record(
        fake: FakeProviderProcess, keys: None, tmp_path: Path, real_weights_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The smallest team: one prompt, one model. The summary counts in the singular and ends
    with the commands that make weights of its output; both take its one record."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "m", "prompt": "What is 6 times 7? Say 42",
                                   "reference": "42"}) + "\n", encoding="utf-8")
    out = tmp_path / "records.jsonl"
    code, stdout, err = run(["label", prompts, "--models", "a", "--out", out,
                             "--config", config(fake, tmp_path)], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[1] == "calls: 1 answer (1 scored by reference)"
    assert lines[-1].startswith(f"next: `switchpoint fit {out} --out DIR` (weights of these "
                                f"models alone), or `switchpoint add-model MODEL {out} "
                                "--weights DIR` for each model"), stdout
    code, _, err = run(["fit", out, "--out", tmp_path / "mine"], capsys)
    assert code == 0, err
    assert "embedding 1 prompt with " in err
    assert 'fitting the "cluster" policy on 1 record, 1 model... done' in err
    assert load_weights(tmp_path / "mine").models == ["a"]
    weights = Path(shutil.copytree(real_weights_dir, tmp_path / "weights"))
    code, _, err = run(["add-model", "a", out, "--weights", weights], capsys)
    assert code == 0, err
    assert load_weights(weights).provenance["added_models"][-1]["n_records"] == 1


def test_a_run_takes_up_none_of_the_feedback_log_of_its_data_dir(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A run calls the models it names and routes nothing: it takes up none of the feedback
    log of the data_dir it logs its calls in (at 100,000 outcomes that took 20 s and 240 MB
    more) and writes no learning checkpoint there; nor does it warn of the models an
    experiment arm's weights do not profile, which concern routing alone."""
    def replayed(self: LiveLearning, rows: Any) -> None:
        raise AssertionError("the feedback log was taken up")

    monkeypatch.setattr(LiveLearning, "replay", replayed)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "m", "prompt": "What is 6 times 7? Say 42",
                                   "reference": "42"}) + "\n", encoding="utf-8")
    configured = config(fake, tmp_path)
    with configured.open("a", encoding="utf-8") as fh:
        fh.write("experiments:\n  thrift:\n    arms:\n      control: {}\n"
                 "      neighbours: {policy: knn}\n")
    with caplog.at_level("WARNING"):
        code, _, err = run(["label", prompts, "--models", "a", "--out",
                            tmp_path / "records.jsonl", "--config", configured], capsys)
    assert code == 0, err
    assert "experiment arm" not in err + caplog.text, err + caplog.text
    assert (tmp_path / "data" / "switchpoint.db").is_file()
    assert not (tmp_path / "data" / "learning.checkpoint").exists()


def test_the_files_a_run_makes_are_readable_by_their_owner_alone(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The prompts and answers are the team's traffic: --out, its journal (answers kept for
    the judge) and its mark are made mode 0600, as route --output is; an --out that was there
    keeps its mode."""
    fake.script("judge", "say:text=8/10", "say:text=8/10")
    fake.default("judge", JUDGE_SAYS)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    out = tmp_path / "records.jsonl"
    argv = ["label", prompts, "--models", "a", "--judge", "judge", "--out", out,
            "--config", config(fake, tmp_path), "--concurrency", "1"]
    code, _, err = run(argv, capsys)
    assert code == 1, err
    modes = {p.name: p.stat().st_mode & 0o777 for p in (out, journal_path(out))}
    assert modes == dict.fromkeys(modes, 0o600), modes
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert (out.stat().st_mode & 0o777, done_path(out).stat().st_mode & 0o777) == (0o600, 0o600)
    out.chmod(0o640)  # the team's own choice, for a file already there
    with prompts.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "more", "prompt": "One more question?"}) + "\n")
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert out.stat().st_mode & 0o777 == 0o640 and len(records_of(out)) == 3


def test_failures_exit_1_and_the_rerun_retries_them(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    fake.default("judge", JUDGE_SAYS)
    fake.script("judge", "say:text=It is a good answer.", "say:text=8/10")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    out = tmp_path / "records.jsonl"
    argv = ["label", prompts, "--models", "a", "--judge", "judge", "--out", out,
            "--config", config(fake, tmp_path), "--concurrency", "1"]
    code, stdout, err = run(argv, capsys)
    assert code == 1, err
    assert "failures: 1" in stdout and "q0 / a (judge)" in stdout
    assert '"It is a good answer."' in stdout and '"8/10"' in stdout
    assert "1 prompt not labelled yet: run the same command again" in stdout
    assert set(records_of(out)) == {"q1"}
    before = len(fake.requests())
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    # The answer the judge could not score was kept: only the judge is asked again.
    rerun = fake.requests()[before:]
    assert [r["body"]["model"] for r in rerun] == ["judge"]
    first_answer = next(r for r in fake.requests()[:before] if r["body"]["model"] == "a")
    assert rerun[0]["body"]["messages"][-1]["content"].endswith(
        "[Answer to grade]\n" + _answer_text(first_answer))
    assert set(records_of(out)) == {"q0", "q1"} and not journal_path(out).exists()
    assert "1 of 2 prompts are already labelled" in err
    assert "1 answer kept unscored from an earlier run scored now (not asked for again)" in stdout


def test_a_judge_s_bare_number_with_an_exponent_is_told_how_to_write_it(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A bare 1e-400 was told it was "neither a JSON object ... nor a bare number": the
    reminder says a bare number takes no exponent and how to write it, and the judge's next
    reply scores the answer."""
    fake.default("judge", JUDGE_SAYS)
    fake.script("judge", "say:text=1e-400")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 1)
    out = tmp_path / "records.jsonl"
    code, _, err = run(["label", prompts, "--models", "a", "--judge", "judge", "--out", out,
                        "--config", config(fake, tmp_path)], capsys)
    assert code == 0, err
    asked = [r["body"]["messages"] for r in fake.requests() if r["body"]["model"] == "judge"]
    assert len(asked) == 2 and asked[1][-2]["content"] == "1e-400", asked
    assert ('"1e-400" is a bare number with an exponent, which a bare score does not take: '
            'write it in plain digits (0.1, not 1e-1), or as a JSON object ({"score": 1e-1})'
            in asked[1][-1]["content"]), asked[1][-1]
    assert records_of(out)["q0"]["scores"] == {"a": 0.7}


def _answer_text(request: dict[str, Any]) -> str:
    """The text the fake answered ``request`` with (its echo)."""
    body = request["body"]
    return str(Answer(body["model"], body["messages"], None, None, False).text)


def test_an_answer_the_judge_failed_to_score_is_judged_again_never_asked_for_twice(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The judge's call fails (after the gateway's retries) in two runs, then answers: each
    model is called once per prompt across the three runs, and each record's cost is that one
    call's."""
    fake.default("judge", "500")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    out = tmp_path / "records.jsonl"
    argv = ["label", prompts, "--models", "a,b", "--judge", "judge", "--out", out,
            "--config", config(fake, tmp_path), "--concurrency", "2", "--json"]
    costs = []
    for attempt in range(2):
        code, stdout, err = run(argv, capsys)
        assert code == 1, err
        summary = json.loads(stdout)
        assert summary["labelled"] == 0 and len(summary["failures"]) == 6
        assert all(f["stage"] == "judge" for f in summary["failures"])
        assert summary["answer_calls"] == (6 if attempt == 0 else 0)
        assert summary["kept_answers_scored"] == (0 if attempt == 0 else 6)
        costs.append(summary["cost_usd"]["answers"])
        # Each answer journalled once, as it arrived; each failure on a line of its own.
        lines = [json.loads(line) for line in journal_path(out).read_text().splitlines()[1:]]
        kept = [e for e in lines if "answer" in e]
        assert len(kept) == 6 and all(isinstance(e["answer"], str) for e in kept)
        assert all("failed" not in e for e in kept)
        assert [e["failed"] for e in lines if "answer" not in e] == ["judge"] * 6 * (attempt + 1)
    assert costs[0] > 0 and costs[1] == 0  # the answers were paid for once
    fake.default("judge", JUDGE_SAYS)
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["labelled"] == 3 and summary["answer_calls"] == 0
    assert summary["kept_answers_scored"] == 6 and summary["cost_usd"]["answers"] == 0
    assert "6 answers an earlier run got but did not score are kept" in err
    answered = Counter((r["body"]["model"], json.dumps(r["body"]["messages"][-1]["content"]))
                       for r in fake.requests() if r["body"]["model"] in ("a", "b"))
    assert len(answered) == 6 and set(answered.values()) == {1}, answered
    records = records_of(out)
    assert set(records) == {"q0", "q1", "q2"} and not journal_path(out).exists()
    for record in records.values():
        assert record["scores"] == {"a": 0.7, "b": 0.7}
        for model in ("a", "b"):
            assert record["costs"][model] == pytest.approx(
                expected_cost(model, record["prompt"]), rel=1e-9)
    assert sum(sum(r["costs"].values()) for r in records.values()) == pytest.approx(costs[0])


def _command() -> list[str]:
    exe = Path(sys.executable).parent / "switchpoint"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "switchpoint.cli"]


# What a command's environment adds to this one's (the judge's key); it has no
# $SWITCHPOINT_CONFIG.
_COMMAND_ENV = {"B_KEY": "sk-ant-test"}


def _env() -> dict[str, str]:
    env = {**os.environ, **_COMMAND_ENV}
    env.pop("SWITCHPOINT_CONFIG", None)
    return env


def _as_the_command_runs(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's folder and environment as :func:`_spawn` gives a command's: in ``cwd``,
    with the judge's key and no $SWITCHPOINT_CONFIG."""
    monkeypatch.chdir(cwd)
    for name, value in _COMMAND_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)


def _spawn(argv: list[Any], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*_command(), *map(str, argv)], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_interruptible)


def _interruptible() -> None:
    """In the child before it runs: Ctrl-C as a terminal gives it. A suite started in the
    background of a shell without job control has SIGINT ignored, and a process started with
    it ignored keeps ignoring it (as it should, like any command under nohup)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str],
                    timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"{path} never reached {n} lines")


def test_a_killed_run_resumes_to_a_complete_output_without_duplicates(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    for model in ("a", "b"):
        fake.default(model, "ok:delay=0.15")
    fake.default("judge", JUDGE_SAYS)
    n = 16
    prompts = write_prompts(tmp_path / "prompts.jsonl", n)
    out = tmp_path / "records.jsonl"
    argv = ["label", prompts, "--models", "a,b", "--judge", "judge", "--out", out,
            "--config", config(fake, tmp_path), "--concurrency", "2"]

    # Ctrl-C: the run stops cleanly and says how to resume.
    proc = _spawn(argv, tmp_path)
    _wait_for_lines(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted: what was finished is kept" in err and "Traceback" not in err
    first = records_of(out)
    assert 2 <= len(first) < n

    # A crash mid-write leaves half a line; SIGKILL another run mid-way.
    with out.open("a", encoding="utf-8") as fh:
        fh.write('{"id": "q9", "prompt": "Short sci')
    proc = _spawn(argv, tmp_path)
    _wait_for_lines(out, len(first) + 2, proc)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert "dropped the half-written last line" in err
    second = records_of(out) if out.read_text().endswith("\n") else None
    assert second is None or len(second) < n

    # The last run finishes the job, asking only for prompts not yet in the output.
    done_before = {line.split('"id": "')[1].split('"')[0]
                   for line in out.read_text(encoding="utf-8").splitlines(keepends=True)
                   if line.endswith("\n")}
    seen = len(fake.requests())
    proc = _spawn(argv, tmp_path)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    records = records_of(out)
    assert set(records) == {f"q{i}" for i in range(n)}
    assert all(set(r["scores"]) == {"a", "b"} for r in records.values())
    asked = [r["body"]["messages"][-1]["content"] for r in fake.requests()[seen:]
             if r["body"]["model"] in ("a", "b")]
    for rid in done_before:
        assert records[rid]["prompt"] not in asked, f"{rid} was asked for again"
    assert not journal_path(out).exists()
    assert load_records(out).models == ["a", "b"]
    assert "labelled" in stdout and "16 prompts" in stdout


def test_a_second_run_of_the_same_command_refuses_while_the_first_writes(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    fake.default("a", "ok:delay=0.15")
    fake.default("judge", JUDGE_SAYS)
    n = 8
    prompts = write_prompts(tmp_path / "prompts.jsonl", n)
    out = tmp_path / "records.jsonl"
    argv = ["label", prompts, "--models", "a", "--judge", "judge", "--out", out,
            "--config", config(fake, tmp_path), "--concurrency", "1"]
    proc = _spawn(argv, tmp_path)
    _wait_for_lines(out, 1, proc)
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"another label run is writing {out} (pid {proc.pid})" in err
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(records_of(out)) == n  # each prompt once
    assert len(fake.requests()) == 2 * n  # each answer and each judgement paid for once
    assert not lock_path(out).exists()
    # The same file through another name (a symbolic link): still one run at a time.
    other, link = tmp_path / "other.jsonl", tmp_path / "link.jsonl"
    link.symlink_to(other)
    first = _spawn([a if a != out else other for a in argv], tmp_path)
    _wait_for_lines(other, 1, first)
    code, _, err = run([a if a != out else link for a in argv], capsys)
    # (named as the file written: a link is written through to the file it leads to)
    assert code == 2 and f"another label run is writing {other} (pid {first.pid})" in err
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert len(records_of(other)) == n


def test_an_out_file_of_someone_elses_is_refused_and_left_as_it_was(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    notes = tmp_path / "notes.txt"
    notes.write_text("my important notes", encoding="utf-8")  # one line, no newline
    code, _, err = run(["label", prompts, "--models", "a", "--judge", "judge", "--out", notes,
                        "--config", config(fake, tmp_path)], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"switchpoint: error: '{notes}', line 1: not valid JSON" in err
    assert "another --out" in err and "--restart" not in err  # never offered up for discarding
    assert "dropped" not in err
    assert notes.read_text(encoding="utf-8") == "my important notes"
    assert fake.requests() == []
    code, _, err = run(["label", prompts, "--models", "a", "--judge", "judge", "--out",
                        notes / "out.jsonl", "--config", config(fake, tmp_path)], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"its parent '{notes}' is not a directory" in err
    assert fake.requests() == []


def test_restart_discards_only_an_out_this_command_wrote(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, reference="blue")
    argv = ["label", prompts, "--models", "a", "--config", config(fake, tmp_path), "--restart"]
    notes = tmp_path / "notes.txt"
    notes.write_text("my important notes\n", encoding="utf-8")
    others = tmp_path / "others.jsonl"
    others.write_text(json.dumps({"id": "x1", "prompt": "Someone else's prompt",
                                  "scores": {"a": 1.0}, "costs": {"a": 0.1}}) + "\n",
                      encoding="utf-8")
    for foreign in (notes, others):
        before = foreign.read_bytes()
        code, _, err = run([*argv, "--out", foreign], capsys)
        assert code == 2 and "Traceback" not in err, err
        assert "--restart discards only a file this command wrote" in err, err
        assert "another --out" in err, err
        assert foreign.read_bytes() == before
    assert fake.requests() == []
    # Its own output, finished (no journal left) or part-way (its journal beside it), restarts.
    out = tmp_path / "records.jsonl"
    code, _, err = run([*argv, "--out", out], capsys)
    assert code == 0 and len(records_of(out)) == 2 and not journal_path(out).exists(), err
    code, _, err = run([*argv, "--out", out, "--models", "a,b"], capsys)
    assert code == 0 and set(records_of(out)["q0"]["scores"]) == {"a", "b"}, err
    out.write_text("not a record\n", encoding="utf-8")
    journal_path(out).write_text("", encoding="utf-8")
    code, _, err = run([*argv, "--out", out], capsys)
    assert code == 0 and len(records_of(out)) == 2, err
    # A file at the journal's name that no run began is someone else's too: it was deleted.
    fresh = tmp_path / "fresh.jsonl"
    journal_path(fresh).write_text("my important notes\n", encoding="utf-8")
    code, _, err = run([*argv, "--out", fresh], capsys)
    assert code == 2 and "--restart discards only a journal this command began" in err, err
    assert journal_path(fresh).read_text(encoding="utf-8") == "my important notes\n"
    assert not fresh.exists()


def test_an_out_given_as_a_symbolic_link_writes_the_file_it_leads_to(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, reference="blue")
    argv = ["label", prompts, "--models", "a", "--config", config(fake, tmp_path)]
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "records.jsonl"
    real.touch()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)
    for extra in ([], ["--restart"]):  # --restart discards the file, not the link
        code, _, err = run([*argv, "--out", link, *extra], capsys)
        assert code == 0, err
        assert link.is_symlink() and link.resolve() == real
        assert sorted(records_of(real)) == ["q0", "q1"]
        assert done_path(real).exists() and not done_path(link).exists()
    # A link that leads to no file is refused, naming it, before anything is called or made.
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "missing" / "records.jsonl")
    calls = len(fake.requests())
    code, _, err = run([*argv, "--out", dangling], capsys)
    assert code == 2 and "Traceback" not in err
    assert (f"'{dangling}': --out is a symbolic link to "
            f"'{tmp_path / 'missing' / 'records.jsonl'}', which leads to no file") in err
    assert dangling.is_symlink() and not (tmp_path / "missing").exists()
    assert len(fake.requests()) == calls


def test_restart_knows_its_own_output_by_its_mark_not_by_the_prompts(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, reference="blue")
    argv = ["label", prompts, "--models", "a", "--config", config(fake, tmp_path)]
    out = tmp_path / "records.jsonl"
    code, _, err = run([*argv, "--out", out], capsys)
    assert code == 0 and done_path(out).exists() and not journal_path(out).exists(), err
    # The prompts file edited since: its own finished output is still its own to discard.
    prompts.write_text(prompts.read_text(encoding="utf-8").replace("sky", "sea"),
                       encoding="utf-8")
    code, _, err = run([*argv, "--out", out], capsys)
    assert code == 2 and "--restart to start over" in err, err  # offered: it is its own
    code, _, err = run([*argv, "--out", out, "--restart"], capsys)
    assert code == 0, err
    assert "sea" in records_of(out)["q0"]["prompt"] and done_path(out).exists()
    # The same records under another name carry no mark of this command: never discarded.
    copy = tmp_path / "copy.jsonl"
    shutil.copyfile(out, copy)
    # Its own output edited by hand since it finished no longer matches the mark.
    edited = tmp_path / "edited.jsonl"
    code, _, err = run([*argv, "--out", edited], capsys)
    assert code == 0, err
    edited.write_text(edited.read_text(encoding="utf-8").replace('"q1"', '"q1" '),
                      encoding="utf-8")
    # Nor is a mark copied beside a file it was not written for taken for one.
    forged = tmp_path / "forged.jsonl"
    shutil.copyfile(out, forged)
    forged.write_text(forged.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    shutil.copyfile(done_path(out), done_path(forged))
    asked = len(fake.requests())
    for foreign in (copy, edited, forged):
        before = foreign.read_bytes()
        code, _, err = run([*argv, "--out", foreign, "--restart"], capsys)
        assert code == 2 and "Traceback" not in err, (foreign, err)
        assert "--restart discards only a file this command wrote" in err, err
        assert foreign.read_bytes() == before
    assert len(fake.requests()) == asked
    # A resume that finds someone else's records complete leaves no mark on them.
    code, _, err = run([*argv, "--out", copy], capsys)
    assert code == 0 and "already labelled" in err and not done_path(copy).exists(), err


def test_a_finished_output_takes_more_prompts_only_under_its_own_settings(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Its journal gone, a finished output took prompts added since under another judge or
    # max_tokens, silently: one records file held scores of two judges.
    fake.default("judge", JUDGE_SAYS)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 1)
    out = tmp_path / "records.jsonl"
    argv = ["label", prompts, "--models", "a", "--config", config(fake, tmp_path), "--out", out]
    code, _, err = run([*argv, "--judge", "judge"], capsys)
    assert code == 0 and done_path(out).exists() and not journal_path(out).exists(), err
    write_prompts(prompts, 2)  # a prompt more
    before, mark, asked = out.read_bytes(), done_path(out).read_bytes(), len(fake.requests())
    for other, named in ((["--judge", "a"], '--judge judge then, a now'),
                         (["--judge", "judge", "--max-tokens", "50"],
                          "--max-tokens (none) then, 50 now")):
        code, _, err = run([*argv, *other], capsys)
        assert code == 2 and "Traceback" not in err, err
        assert "was finished by a run with other settings" in err and named in err, err
        assert "Rerun with that run's settings to add to it" in err and "--restart" in err, err
        assert out.read_bytes() == before and done_path(out).read_bytes() == mark
        assert not journal_path(out).exists()
    assert len(fake.requests()) == asked
    code, _, err = run([*argv, "--judge", "judge"], capsys)
    assert code == 0 and set(records_of(out)) == {"q0", "q1"}, err


def test_records_and_journal_carry_costs_without_float_noise(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Token counts × prices per million leave noise (2.6999999999999996e-06); the files get
    the cost to 12 significant digits, within 1e-12 of the exact one."""
    fake.default("judge", JUDGE_SAYS)
    # q0's judge never answers readably (a failure: the journal stays); q1's on the reminder.
    fake.script("judge", "say:text=nope", "say:text=nope", "say:text=nope")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 12)
    out = tmp_path / "records.jsonl"
    path = config(fake, tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace(
        "input_per_mtok: 1, output_per_mtok: 2", "input_per_mtok: 1.1, output_per_mtok: 2.7"),
        encoding="utf-8")
    code, _, err = run(["label", prompts, "--models", "a", "--judge", "judge", "--out", out,
                        "--config", path, "--concurrency", "1"], capsys)
    assert code == 1, err
    assert journal_path(out).exists()  # a judgement failed: the journal is kept
    written = [r["costs"]["a"] for r in records_of(out).values()]
    journal = [json.loads(line) for line in journal_path(out).read_text().splitlines()[1:]]
    # (an answer's line keeps its cost, until it is scored)
    written += [e[k] for e in journal for k in ("cost_usd", "judge_cost_usd") if k in e]
    assert any("answer" in e and "cost_usd" in e for e in journal)
    assert written and all(cost == float(f"{cost:.12g}") for cost in written), written
    card = ModelCard(name="a", input_per_mtok=1.1, output_per_mtok=2.7)
    usages = [Answer("a", [{"role": "user", "content": r["prompt"]}], None, None, False).usage()
              for r in records_of(out).values()]
    exact = [card.price(u["prompt_tokens"], u["completion_tokens"]) for u in usages]
    assert any(x != float(f"{x:.12g}") for x in exact)  # the noise was there to drop
    assert sorted(written[:len(exact)]) == pytest.approx(sorted(exact), rel=1e-12)


def test_a_multiple_choice_reference_that_is_an_article_scores_the_answers_naming_it(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Normalising drops the articles a, an, the; the choice A must still be matched, or every
    answer to an A question scores 0."""
    fake.default("a", "say:text=Let me think. The answer is (A)")
    fake.default("b", "say:text=Answer: B")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({
        "id": f"q{choice}", "prompt": f"Which option? A) x B) y C) z. End with Answer: {choice}",
        "reference": choice}) + "\n" for choice in ("A", "B", "C")), encoding="utf-8")
    out = tmp_path / "records.jsonl"
    code, stdout, err = run(["label", prompts, "--models", "a,b", "--out", out, "--config",
                             config(fake, tmp_path), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["by_reference"] == 6
    assert {i: r["scores"] for i, r in records_of(out).items()} == {
        "qA": {"a": 1.0, "b": 0.0}, "qB": {"a": 0.0, "b": 1.0}, "qC": {"a": 0.0, "b": 0.0}}
    # A reference no answer could match (punctuation is ignored) is refused before any call.
    fake.reset()
    prompts.write_text(json.dumps({"prompt": "Which punctuation?", "reference": "..."}) + "\n",
                       encoding="utf-8")
    code, _, err = run(["label", prompts, "--models", "a", "--out", tmp_path / "other.jsonl",
                        "--config", config(fake, tmp_path)], capsys)
    assert code == 2 and 'line 1: field "reference" "..." is only punctuation' in err, err
    assert fake.requests() == []


def test_a_negative_answer_written_with_the_minus_sign_is_a_negative_number(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Models write U+2212 (−) as often as '-': −3 is minus three, not three."""
    fake.default("a", "say:text=Subtracting: the answer is \u22123")
    fake.default("b", "say:text=Subtracting: the answer is 3")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{ref}", "prompt": f"What is 0 - ({-ref})?",
                                           "reference": ref}) + "\n" for ref in (-3, 3)),
                       encoding="utf-8")
    out = tmp_path / "records.jsonl"
    code, _, err = run(["label", prompts, "--models", "a,b", "--out", out, "--config",
                        config(fake, tmp_path)], capsys)
    assert code == 0, err
    assert {i: r["scores"] for i, r in records_of(out).items()} == {
        "q-3": {"a": 1.0, "b": 0.0}, "q3": {"a": 0.0, "b": 1.0}}


@pytest.mark.parametrize("restart", [False, True])
def test_an_out_that_is_the_prompts_file_is_refused_and_the_prompts_kept(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], restart: bool) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, reference="blue")
    before = prompts.read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(prompts)
    for out in (prompts, link, tmp_path / "." / "prompts.jsonl"):
        code, _, err = run(["label", prompts, "--models", "a", "--out", out, "--config",
                            config(fake, tmp_path), *(["--restart"] if restart else [])],
                           capsys)
        assert code == 2 and "Traceback" not in err, err
        assert "is the prompts file itself" in err and "another --out" in err, err
        assert prompts.read_bytes() == before
    journal = journal_path(tmp_path / "records.jsonl")
    journal.write_bytes(before)  # the prompts, under the name of --out's journal
    code, _, err = run(["label", journal, "--models", "a", "--out", tmp_path / "records.jsonl",
                        "--config", config(fake, tmp_path)], capsys)
    assert code == 2 and "--out's journal" in err, err
    assert journal.read_bytes() == before
    assert fake.requests() == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_label_dash_reads_the_prompts_from_stdin_and_resumes_as_for_a_file(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``label -`` reads the prompts from stdin; a rerun given them again (reordered, with
    blank lines) resumes, each prompt checked by its text, and one whose text changed is asked
    again."""
    fake.default("judge", JUDGE_SAYS)
    fake.script("judge", "say:text=8/10", "say:text=8/10")  # q0's answer: not scored
    lines = write_prompts(tmp_path / "prompts.jsonl", 3).read_text(encoding="utf-8")
    out = tmp_path / "records.jsonl"
    argv = ["label", "-", "--models", "a", "--judge", "judge", "--out", out, "--config",
            config(fake, tmp_path), "--concurrency", "1", "--json"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code, stdout, err = run(argv, capsys)
    assert code == 1, err
    assert set(records_of(out)) == {"q1", "q2"}
    assert [f["id"] for f in json.loads(stdout)["failures"]] == ["q0"]
    before = len(fake.requests())
    rows = lines.splitlines()
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n\n" + "\n".join(reversed(rows)) + "\n"))
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["answer_calls"] == 0 and summary["already_labelled"] == 2
    assert [r["body"]["model"] for r in fake.requests()[before:]] == ["judge"]
    assert set(records_of(out)) == {"q0", "q1", "q2"} and not journal_path(out).exists()
    # A bad line is named as stdin's, as route --input - names it (not quoted as a file named
    # stdin would be), having called nothing.
    before = len(fake.requests())
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"prompt": "ok"}\n\n{"prompt": ""}\n'))
    code, _, err = run([*argv[:7], tmp_path / "other.jsonl", *argv[8:]], capsys)
    assert code == 2, err
    assert err == ('switchpoint: error: stdin, line 3: field "prompt" must be a non-empty '
                   "string\n"), err
    assert len(fake.requests()) == before and not (tmp_path / "other.jsonl").exists()


def test_label_dash_from_a_terminal_says_to_pipe_the_prompts_in(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal())
    out = tmp_path / "records.jsonl"
    code, stdout, err = run(["label", "-", "--models", "a", "--judge", "judge", "--out", out,
                             "--config", config(fake, tmp_path)], capsys)
    assert code == 2 and stdout == "", err
    assert ("label -: stdin is a terminal; pipe the prompts in, e.g. cat prompts.jsonl | "
            "switchpoint label - --models A,B --out records.jsonl") in err
    assert not out.exists() and fake.requests() == []


def test_label_dash_refuses_an_out_that_is_the_file_stdin_reads(
        fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``label - --out p.jsonl < p.jsonl``: the run would write its records into the prompts
    (and --restart delete them), as with ``label p.jsonl --out p.jsonl``."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, reference="blue")
    before = prompts.read_bytes()
    journal = journal_path(tmp_path / "records.jsonl")
    journal.write_bytes(before)  # the prompts, under the name of --out's journal
    _as_the_command_runs(tmp_path, monkeypatch)
    for source, out, what in ((prompts, prompts, "--out"),
                              (journal, tmp_path / "records.jsonl", "--out's journal")):
        with source.open(encoding="utf-8") as stdin:  # (`< source`: stdin is that file)
            monkeypatch.setattr(sys, "stdin", stdin)
            code, _, err = run(["label", "-", "--models", "a", "--out", out,
                                "--config", config(fake, tmp_path), "--restart"], capsys)
        assert code == 2, err
        assert f"{what} ('{source}') is the file the prompts are read from (stdin)" in err, err
        assert "another --out" in err and "Traceback" not in err
        assert source.read_bytes() == before
    assert fake.requests() == []
    with prompts.open(encoding="utf-8") as stdin:  # (to another --out, the same are labelled)
        monkeypatch.setattr(sys, "stdin", stdin)
        code, _, err = run(["label", "-", "--models", "a", "--out", tmp_path / "labels.jsonl",
                            "--config", config(fake, tmp_path)], capsys)
    assert code == 0, err
    assert set(records_of(tmp_path / "labels.jsonl")) == {"q0", "q1"}


@pytest.mark.parametrize("name", ["switchpoint.db", "sessions.db", "records.jsonl"])
def test_an_out_inside_data_dir_is_refused_having_made_and_called_nothing(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], name: str) -> None:
    """The run's gateway makes its databases in data_dir as it starts: an --out named as one
    of them had its records written into the request log's database (and lost, the run
    saying all was labelled); any file there is the service's state's place, not records'."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    fake.default("judge", JUDGE_SAYS)
    data = tmp_path / "data"
    code, _, err = run(["label", prompts, "--models", "a", "--judge", "judge",
                        "--out", data / name, "--config", config(fake, tmp_path)], capsys)
    assert code == 2, err
    assert f"switchpoint: error: '{data / name}': --out is inside data_dir ('{data}'), " in err
    assert "write the records outside it, e.g. --out records.jsonl" in err
    assert not data.exists() and fake.requests() == []
    # A link to a file there is refused too: the records would go where it leads.
    data.mkdir()
    (data / name).write_bytes(b"")
    (tmp_path / "link.jsonl").symlink_to(data / name)
    code, _, err = run(["label", prompts, "--models", "a", "--judge", "judge",
                        "--out", tmp_path / "link.jsonl", "--config", config(fake, tmp_path)],
                       capsys)
    assert code == 2 and "--out is inside data_dir" in err, err
    assert sorted(p.name for p in data.iterdir()) == [name] and fake.requests() == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--models", "a,zeta", "--judge", "judge"], "\"zeta\" is not in the catalog of the config"),
    (["--models", "a", "--judge", "nobody"], 'judge: "nobody" is not in the catalog'),
    (["--models", "a"], 'have no "reference", so a judge must score the answers'),
    (["--models", "a", "--rubric", "rubric.txt"], "--rubric: give --judge MODEL too"),
    (["--models", "a", "--judge", "judge", "--rubric", "missing.txt"],
     "--rubric: cannot read 'missing.txt'"),
    (["--models", "a", "--judge", "judge", "--rubric", "empty.txt"],
     "--rubric: 'empty.txt' is empty; give the grading criteria"),
    (["--models", "a", "--judge", "judge", "--rubric", "latin1.txt"],
     "--rubric: 'latin1.txt', line 2: is not UTF-8 text (byte 0xE9 at byte 2 of the line); "
     "save the file as UTF-8"),
    (["--models", "a", "--judge", "judge", "--rubric", "/dev/zero"],
     "--rubric: '/dev/zero' is longer than 100,000 characters; shorten it"),
    (["--models", "a", "--judge", "judge", "--rubric", "long.txt"],
     "--rubric: 'long.txt' is longer than 100,000 characters; shorten it"),
    (["--models", "a", "--judge", ""], "judge: must be a catalog model's name"),
    (["--models", "a", "--judge", "judge", "--concurrency", "0"],
     "switchpoint: error: --concurrency: must be an integer from 1 to 256, got 0\n"),
    # (the range its --help says: upstream calls at once, from 1 to 256)
    (["--models", "a", "--judge", "judge", "--concurrency", "257"],
     "switchpoint: error: --concurrency: must be an integer from 1 to 256, got 257\n"),
    # a model no catalog could hold, by the catalog's rule (its records would name it)
    (["--models", "a,modèle", "--judge", "judge", "--bad-line"],
     'switchpoint: error: --models (item 2): model "modèle": holds U+00E8 (character 4)'),
    (["--models", "a", "--judge", "judge", "--bad-line"], 'line 2: field "prompt" must be'),
    (["--models", "a", "--judge", "judge", "--no-key"], '$B_KEY (the API key of "b") is not'),
    (["--models", "a", "--judge", "judge", "--no-config"], "label: give --config FILE"),
])
def test_bad_input_exits_2_before_calling_anything(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    if "--bad-line" in argv:
        argv.remove("--bad-line")
        prompts.write_text('{"prompt": "fine"}\n{"prompt": ""}\n', encoding="utf-8")
    models = "a,b"
    if "--no-key" in argv:
        argv.remove("--no-key")
        monkeypatch.delenv("B_KEY")
        argv[argv.index("--models") + 1] = models
    cfg: list[Any] = ["--config", config(fake, tmp_path)]
    if "--no-config" in argv:
        argv.remove("--no-config")
        cfg = []
    (tmp_path / "rubric.txt").write_text("Grade strictly.", encoding="utf-8")
    (tmp_path / "empty.txt").write_text(" \n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_text("Be stern.\nRéponds.", encoding="latin-1")
    (tmp_path / "long.txt").write_text("Grade strictly. " * 10_000, encoding="utf-8")
    out = tmp_path / "records.jsonl"
    code, _, err = run(["label", prompts, "--out", out, *cfg, *argv], capsys)
    assert code == 2
    assert err.startswith("switchpoint: error:") and "Traceback" not in err
    assert message in err, err
    assert fake.requests() == []
    assert not out.exists() and not (tmp_path / "data").exists()


def test_the_services_config_labels_without_its_admin_token_exported(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin token guards the service's HTTP routes; a labelling run serves none, so the
    service's own config works as is, as it does for the other offline commands."""
    monkeypatch.delenv("LABEL_TEST_ADMIN", raising=False)
    cfg = config(fake, tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8") + "admin_token_env: LABEL_TEST_ADMIN\n",
                   encoding="utf-8")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2, reference="42")
    out = tmp_path / "records.jsonl"
    code, said, err = run(["label", prompts, "--models", "a", "--out", out, "--config", cfg],
                          capsys)
    assert code == 0, err
    assert "labelled 2 of 2 prompts" in said, said
    assert sorted(records_of(out)) == ["q0", "q1"]


def test_labelling_never_loads_the_embedder(fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A labelling run calls the models it names and routes nothing, so it does not pay for
    the embedding model: the command finishes without ever importing its runtime."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    fake.default("judge", JUDGE_SAYS)
    out = tmp_path / "records.jsonl"
    argv = ["label", prompts, "--models", "a", "--judge", "judge", "--out", out,
            "--config", config(fake, tmp_path), "-q"]
    script = ("import sys\nfrom switchpoint.cli import main\ncode = main(sys.argv[1:])\n"
              "print('embedder loaded' if 'onnxruntime' in sys.modules else 'no embedder')\n"
              "sys.exit(code)\n")
    env = {k: v for k, v in os.environ.items() if k != "SWITCHPOINT_CONFIG"}
    done = subprocess.run([sys.executable, "-c", script, *map(str, argv)], cwd=tmp_path,
                          env=env, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "no embedder", done.stdout
    assert sorted(records_of(out)) == ["q0", "q1"]


def test_a_judge_without_usage_stops_the_run_keeping_the_answer_for_the_next(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    fake.default("judge", "usage:prompt=-1,completion=1")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 1)
    out = tmp_path / "records.jsonl"
    argv = ["label", prompts, "--models", "a", "--judge", "judge", "--out", out,
            "--config", config(fake, tmp_path)]
    code, _, err = run(argv, capsys)
    assert code == 2 and "without a usable token usage" in err, err
    assert '"answer": ' in journal_path(out).read_text(encoding="utf-8")
    fake.default("judge", JUDGE_SAYS)
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert [r["body"]["model"] for r in fake.requests()] == ["a", "judge", "judge"]
    assert records_of(out)["q0"]["costs"]["a"] == pytest.approx(
        expected_cost("a", records_of(out)["q0"]["prompt"]), rel=1e-9)


@pytest.mark.parametrize(("suffix", "what"), [
    (".journal", "journal"), (".done", "mark"), (".done.part", "mark")])
def test_a_link_planted_as_the_runs_own_file_is_refused_before_any_call(
        fake: FakeProviderProcess, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], suffix: str, what: str) -> None:
    """A user who may write in --out's folder plants a link where the run's journal or mark
    goes, to a file of theirs: the journal's prompts and answers were appended to it, and the
    mark's side file overwrote the file it led to, once every answer was paid for."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    fake.default("judge", JUDGE_SAYS)
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("", encoding="utf-8") if suffix == ".journal" else theirs.write_text(
        "precious\n", encoding="utf-8")
    before = theirs.read_text(encoding="utf-8")
    out = tmp_path / "shared" / "records.jsonl"
    out.parent.mkdir()
    link = out.with_name(out.name + suffix)
    link.symlink_to(theirs)
    code, _, err = run(["label", prompts, "--models", "a", "--judge", "judge", "--out", out,
                        "--config", config(fake, tmp_path)], capsys)
    assert code == 2, err
    assert (f"'{link}' is a symbolic link, not a label run's {what}: a run never reads or "
            "writes its own files through a link") in err, err
    assert theirs.read_text(encoding="utf-8") == before and fake.requests() == []
