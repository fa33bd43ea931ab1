"""A labelling run through the in-process gateway, its upstream an in-process adapter: the
judge's reminder and failures, reference scoring, costs, bounded concurrency, progress, resuming
what a failed or stopped run left, and every check made before anything is called."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchpoint import records
from switchpoint.catalog import ModelCard
from switchpoint.config import Settings, load_settings
from switchpoint.errors import (
    ConfigError,
    InvalidInputError,
    LabellingError,
    ServerError,
    SwitchpointError,
)
from switchpoint.gateway import Gateway
from switchpoint.gateway.live import RouterFactory
from switchpoint.gateway.providers import ProviderResponse, Timeouts
from switchpoint.labelling import CONTRACT, Judge, alabel, label, read_prompts
from switchpoint.labelling import journal as jr
from switchpoint.labelling.journal import journal_path
from switchpoint.labelling.judge import JUDGE_REPLY_ECHOED_CHARS
from switchpoint.labelling.lock import OutputLock, lock_path
from switchpoint.records import MAX_RECORD_CHARS, load_records

pytestmark = pytest.mark.anyio

FACTORY = RouterFactory()  # one router build for the module's gateways
PRICES = {"a": (1.0, 2.0), "b": (3.0, 4.0), "judge": (0.5, 0.5)}
GATEWAY = {"max_attempts_per_model": 1, "backoff_base_s": 0, "backoff_cap_s": 0,
           "failure_threshold": 1000, "error_rate_threshold": 1.0}


class Upstream:
    """Answers as models do: ``answer of MODEL: PROMPT`` (or ``answers[(model, prompt)]``); the
    judge says the next of ``judge_script``, else ``judge_default``. Usage: 10 prompt tokens per
    message, 5 completion tokens (``usage=False`` or ``no_usage(model, prompt)``: none)."""

    def __init__(self, *, judge_default: str = '{"score": 0.6}', delay: float = 0.0) -> None:
        self.judge_script: deque[str] = deque()
        self.judge_default = judge_default
        self.answers: dict[tuple[str, str], str] = {}
        self.fail: Callable[[str, str], bool] = lambda model, prompt: False
        self.no_usage: Callable[[str, str], bool] = lambda model, prompt: False
        self.delay = delay
        self.calls: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def prompts_called(self, model: str) -> list[str]:
        return [m[-1]["content"] for name, m, _ in self.calls if name == model]

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        model, messages = card.name, list(request["messages"])
        self.calls.append((model, messages, dict(request)))
        prompt = messages[-1]["content"]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.fail(model, prompt):
            raise ServerError("upstream exploded", model=model, status=500)
        if model == "judge":
            text = self.judge_script.popleft() if self.judge_script else self.judge_default
        else:
            text = self.answers.get((model, prompt), f"answer of {model}: {prompt}")
        body: dict[str, Any] = {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]}
        if not self.no_usage(model, prompt):
            body["usage"] = {"prompt_tokens": 10 * len(messages), "completion_tokens": 5,
                             "total_tokens": 10 * len(messages) + 5}
        return ProviderResponse(body=body, model=model)

    def stream(self, request: Mapping[str, Any], card: ModelCard,
               timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError


def cost(model: str, messages: int = 1) -> float:
    inp, outp = PRICES[model]
    return (10 * messages * inp + 5 * outp) / 1e6


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    models = [{"name": n, "base_url": "http://127.0.0.1:9/v1", "input_per_mtok": i,
               "output_per_mtok": o} for n, (i, o) in PRICES.items()]
    data: dict[str, Any] = {"models": models, "data_dir": str(tmp_path / "data"),
                            "gateway": GATEWAY}
    data.update(changes)
    return load_settings(overrides=data, environ={})


def gateway_for(tmp_path: Path, upstream: Upstream, **changes: Any) -> Gateway:
    gateway = Gateway(settings_for(tmp_path, **changes), loader=FACTORY, store=False, env={},
                      providers={"openai-compatible": upstream})
    gateway.start()
    return gateway


def write_prompts(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"p{i}", "prompt": f"Question {i}?", **extra} for i in range(n)]


def records_of(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({r["id"] for r in lines}) == len(lines), "duplicate records"
    return {r["id"]: r for r in lines}


# A whole run -----------------------------------------------------------------------------------


async def test_labels_by_judge_and_by_reference_with_real_costs(tmp_path: Path) -> None:
    up = Upstream()
    up.answers[("b", "Capital of France?")] = "The answer is Paris."
    prompts = write_prompts(tmp_path / "prompts.jsonl", [
        {"id": "open", "prompt": "Write a haiku about rain.", "task": "poetry",
         "split": "train"},
        {"id": "open2", "prompt": "Explain recursion briefly.", "split": "test"},
        {"id": "num", "prompt": "What is 6 times 7? 42", "reference": 42},
        {"id": "text", "prompt": "Capital of France?", "reference": "Paris"},
    ])
    out = tmp_path / "out" / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        report = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    records = records_of(out)
    assert set(records) == {"open", "open2", "num", "text"}
    assert records["open"]["scores"] == {"a": 0.6, "b": 0.6}
    assert records["open"]["task"] == "poetry" and records["open"]["split"] == "train"
    assert "task" not in records["num"] and "split" not in records["num"]
    assert records["num"]["scores"] == {"a": 1.0, "b": 1.0}
    assert records["text"]["scores"] == {"a": 0.0, "b": 1.0}
    for record in records.values():  # the upstream's usage at the catalog's prices
        assert record["costs"] == {"a": pytest.approx(cost("a")), "b": pytest.approx(cost("b"))}
    loaded = load_records(out)  # the routing-records format, as fit and add-model read it
    assert loaded.models == ["a", "b"] and len(loaded) == 4
    # Every call was exact: the models and the judge, nothing else; no judge for references.
    assert sorted(up.prompts_called("a")) == sorted(
        ["Write a haiku about rain.", "Explain recursion briefly.", "What is 6 times 7? 42",
         "Capital of France?"])
    judge_calls = [m for name, m, _ in up.calls if name == "judge"]
    assert len(judge_calls) == 4
    assert all(m[0]["content"].endswith(CONTRACT) for m in judge_calls)
    assert {m[1]["content"] for m in judge_calls} >= {
        "[Request]\nWrite a haiku about rain.\n\n[Answer to grade]\nanswer of a: Write a haiku "
        "about rain."}
    # The judge's cost is counted apart, not in the records.
    assert report.answer_calls == 8 and report.judge_calls == 4 and report.by_reference == 4
    assert report.answers_cost_usd == pytest.approx(4 * (cost("a") + cost("b")))
    assert report.judge_cost_usd == pytest.approx(4 * cost("judge", messages=2))
    assert report.total_cost_usd == pytest.approx(report.answers_cost_usd
                                                  + report.judge_cost_usd)
    assert report.complete and report.labelled == 4 and not report.failures
    assert report.mean_scores == {"a": pytest.approx(0.55), "b": pytest.approx(0.8)}
    assert not journal_path(out).exists()  # done: the journal goes
    text = report.summary()
    assert "labelled 4 of 4 prompts with a, b (judge: judge)" in text
    assert "4 scored by reference" in text and "4 to the judge" in text
    assert json.loads(json.dumps(report.to_dict()))["cost_usd"]["judge"] > 0


async def test_an_unreadable_judge_is_reminded_once_then_a_failure_that_a_rerun_retries(
        tmp_path: Path) -> None:
    up = Upstream()
    # concurrency 1: units go p0/a, p0/b, p1/a, p1/b.
    up.judge_script.extend(["I would say 0.8", '{"score": 0.9}', "8/10", "Score: eight"])
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(2))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        report = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway,
                              concurrency=1)
        judge_calls = [m for name, m, _ in up.calls if name == "judge"]
        assert len(judge_calls) == 6 and report.judge_calls == 6
        reminder = judge_calls[1]
        assert reminder[2] == {"role": "assistant", "content": "I would say 0.8"}
        assert "neither a JSON object" in reminder[3]["content"]
        assert report.judge_reminders == 2
        [failure] = report.failures
        assert (failure.id, failure.model, failure.stage) == ("p0", "b", "judge")
        assert '"8/10"' in failure.message and '"Score: eight"' in failure.message
        assert not report.complete and report.remaining == 1
        assert set(records_of(out)) == {"p1"}
        assert "1 prompt not labelled yet: run the same command again" in report.summary()
        journal = journal_path(out).read_text().splitlines()
        assert json.loads(journal[0])["judge"] == "judge"
        assert any(json.loads(line).get("failed") == "judge" for line in journal)

        # The rerun asks only for what failed: the judge, for p0/b's journalled answer.
        up.calls.clear()
        again = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    assert [(name, m[-1]["content"]) for name, m, _ in up.calls] == [
        ("judge", "[Request]\nQuestion 0?\n\n[Answer to grade]\nanswer of b: Question 0?")]
    assert again.reused == 1 and again.kept_scored == 1 and again.answer_calls == 0
    assert again.labelled == 1 and again.already_labelled == 1
    assert again.complete
    assert records_of(out)["p0"]["scores"] == {"a": 0.9, "b": 0.6}
    assert not journal_path(out).exists()


async def test_a_rambling_judge_is_reminded_with_its_reply_cut_short(tmp_path: Path) -> None:
    # A judge that wrote a megabyte instead of a score: its reply went whole into the reminder,
    # which the gateway refused as too large (never sent, yet counted as a reminder), and the
    # failure said to shorten messages or raise max_request_bytes.
    up = Upstream()
    up.judge_script.extend(["Let me think. " * 80_000, '{"score": 0.4}'])
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(1))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        report = await alabel(prompts, ["a"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    assert not report.failures, report.failures
    assert records_of(out)["p0"]["scores"] == {"a": 0.4}
    reminder = [m for name, m, _ in up.calls if name == "judge"][1]
    assert reminder[2]["content"].startswith("Let me think. Let me think.")
    assert len(reminder[2]["content"]) <= JUDGE_REPLY_ECHOED_CHARS
    assert (report.judge_calls, report.judge_reminders) == (2, 1)


async def test_a_reminder_that_could_not_be_sent_is_no_reminder_and_the_failure_says_why(
        tmp_path: Path) -> None:
    # The reminder's call failed: the summary counted it as a reminder made, and the failure
    # named the call's error alone, not the unreadable reply that needed it.
    up = Upstream()
    up.judge_script.append("eight")
    up.fail = lambda model, prompt: model == "judge" and "could not be read" in prompt
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(1))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        report = await alabel(prompts, ["a"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    [failure] = report.failures
    assert failure.stage == "judge"
    assert failure.message.startswith('the judge\'s reply could not be read as a score: "eight" '
                                      "is neither"), failure.message
    assert "then the reminder failed: " in failure.message and "upstream exploded" in \
        failure.message, failure.message
    assert (report.judge_calls, report.judge_reminders) == (1, 0)
    assert "with a format reminder" not in report.summary()


class _Shouting(Upstream):
    """Model "a" fails with an upstream message that holds a terminal's control sequence."""

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        if card.name == "a":
            raise ServerError("overloaded\x1b[2J\x1b[31m, retry", model="a", status=500)
        return await super().complete(request, card, timeouts)


async def test_the_summary_shows_ids_and_upstream_messages_as_text_never_as_control_codes(
        tmp_path: Path) -> None:
    # A prompt's id and an upstream's error message went to the terminal as they were: an
    # escape sequence cleared the screen or recoloured it, a line break split the failure.
    up = _Shouting()
    prompts = write_prompts(tmp_path / "prompts.jsonl",
                            [{"id": "evil\x1b[31m\nid\u2028", "prompt": "Question?"}])
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        report = await alabel(prompts, ["a"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    [failure] = report.failures
    assert failure.id == "evil\x1b[31m\nid\u2028"  # (the report keeps them as they are)
    summary = report.summary()
    assert "\x1b" not in summary and "\u2028" not in summary, summary
    shown = [line for line in summary.splitlines() if line.startswith("  ")]
    assert shown == [
        "  evil\\u001b[31m\\u000aid\\u2028 / a (answer): no model answered (1 attempt(s) on 1 "
        "model(s)): a: server_error (HTTP 500): overloaded\\u001b[2J\\u001b[31m, retry"], shown


async def test_a_failed_answer_is_a_failure_not_a_score(tmp_path: Path) -> None:
    up = Upstream()
    up.fail = lambda model, prompt: model == "b" and prompt == "Question 1?"
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(3))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        report = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        [failure] = report.failures
        assert (failure.id, failure.model, failure.stage) == ("p1", "b", "answer")
        assert "upstream exploded" in failure.message
        assert set(records_of(out)) == {"p0", "p2"}
        up.fail = lambda model, prompt: False
        up.calls.clear()
        again = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    assert [name for name, _, _ in up.calls] == ["b", "judge"]
    assert again.complete and set(records_of(out)) == {"p0", "p1", "p2"}


async def test_an_answer_that_is_not_unicode_text_is_a_failure_and_the_run_goes_on(
        tmp_path: Path) -> None:
    up = Upstream()
    up.answers[("b", "Question 1?")] = "bad \udc80 answer"
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(3))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        report = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway,
                              concurrency=1)
    finally:
        await gateway.aclose()
    [failure] = report.failures
    assert (failure.id, failure.model, failure.stage) == ("p1", "b", "answer")
    assert "lone surrogate" in failure.message and "judge" in failure.message
    assert set(records_of(out)) == {"p0", "p2"}
    assert report.answer_calls == 6 and report.judge_calls == 5  # the answer was paid for
    assert all("\udc80" not in m[-1]["content"] for name, m, _ in up.calls if name == "judge")


async def test_concurrency_is_bounded_and_progress_counts_every_answer(tmp_path: Path) -> None:
    up = Upstream(delay=0.02)
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(8))
    out = tmp_path / "records.jsonl"
    seen: list[tuple[str, int, int]] = []
    gateway = gateway_for(tmp_path, up)
    try:
        report = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway,
                              concurrency=3, progress=lambda *a: seen.append(a))
    finally:
        await gateway.aclose()
    assert up.max_in_flight == 3
    assert report.complete and len(records_of(out)) == 8
    assert seen[0][1:] == (0, 16) and seen[-1][1:] == (16, 16)
    assert [d for _, d, _ in seen] == list(range(17))
    assert seen[0][0] == "labelling 8 prompts with 2 models (16 answers, judged by judge)"


async def test_an_upstream_without_usage_stops_the_run_keeping_what_was_finished(
        tmp_path: Path) -> None:
    up = Upstream()
    up.no_usage = lambda model, prompt: model == "b" and prompt == "Question 1?"
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(3))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        with pytest.raises(LabellingError) as info:
            await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway,
                         concurrency=1)
    finally:
        await gateway.aclose()
    message = str(info.value)
    assert '"b" answered without a usable token usage' in message
    assert "base_url" in message and "rerun to resume" in message
    assert set(records_of(out)) == {"p0"}
    journal = [json.loads(line) for line in journal_path(out).read_text().splitlines()]
    assert ("p1", "a") in {(e.get("id"), e.get("model")) for e in journal}


async def test_a_resumed_runs_mean_scores_cover_every_record_of_the_output(
        tmp_path: Path) -> None:
    """The summary's mean scores are over the whole output, the records an interrupted run
    wrote too, and it says over how many; not over this run's records alone."""
    up = Upstream(judge_default='{"score": 0.2}')
    up.fail = lambda model, prompt: model == "b" and prompt != "Question 0?"
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(3))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        first = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        assert set(records_of(out)) == {"p0"} and len(first.failures) == 2
        up.fail = lambda model, prompt: False
        up.judge_default = '{"score": 0.8}'
        again = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        nothing_left = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    records = records_of(out).values()
    assert again.complete and len(records) == 3 and again.labelled == 2
    whole = {m: sum(r["scores"][m] for r in records) / 3 for m in ("a", "b")}
    assert whole["b"] != pytest.approx(0.8)  # this run's answers of b alone would say 0.8
    assert again.mean_scores == {m: pytest.approx(v) for m, v in whole.items()}
    assert nothing_left.labelled == 0 and nothing_left.mean_scores == again.mean_scores
    assert (f"mean score over the output's 3 records (1 from an earlier run): "
            f"a {whole['a']:.3f}, b {whole['b']:.3f}") in again.summary()
    assert json.loads(json.dumps(again.to_dict()))["records"] == 3
    assert "mean score over the output's 3 records (3 from an earlier run)" in (
        nothing_left.summary())


async def test_a_run_of_one_answer_says_so_in_the_singular_and_names_the_next_command(
        tmp_path: Path) -> None:
    """A rerun that finds one scored answer kept says "1 scored answer", its summary "calls:
    1 answer"; a run that leaves a prompt unlabelled says to rerun, and one that labels every
    prompt ends with the commands that turn its output into weights."""
    up = Upstream()
    up.fail = lambda model, prompt: model == "b"
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(1))
    out = tmp_path / "my records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        first = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        up.fail = lambda model, prompt: False
        noted: list[str] = []
        again = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway,
                             notes=noted.append)
    finally:
        await gateway.aclose()
    assert first.remaining == 1 and "next:" not in first.summary()
    assert "calls: 1 answer, 1 to the judge" in first.summary()
    assert f"{journal_path(out)}: 1 scored answer kept from an interrupted run" in noted, noted
    assert again.complete and again.answer_calls == 1 and again.reused == 1
    lines = again.summary().splitlines()
    assert lines[1] == "calls: 1 answer, 1 to the judge; 1 answer reused from an interrupted run"
    assert lines[-1] == (f"next: `switchpoint fit '{out}' --out DIR` (weights of these models "
                         f"alone), or `switchpoint add-model MODEL '{out}' --weights DIR` for each "
                         "model (added to the weights in DIR; --out DIR in place of --weights "
                         "starts from the bundled weights)")


async def test_a_corrected_reference_scores_the_kept_answer_again_never_asking_its_model(
        tmp_path: Path) -> None:
    """A run stops with a prompt's answers scored against a wrong reference; the user corrects
    it: the rerun scores the kept answer against the new reference (the model is not called
    again, its cost counted once), and says how many it scored again and why. The score of a
    prompt whose reference did not change is reused."""
    up = Upstream()
    up.answers[("a", "Capital of France?")] = "The answer is Paris."
    up.fail = lambda model, prompt: model == "b"
    rows_then = [{"id": "fr", "prompt": "Capital of France?", "reference": "London"},
                 {"id": "es", "prompt": "Capital of Spain?", "reference": "Madrid"}]
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows_then)
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        first = await alabel(prompts, ["a", "b"], out, gateway=gateway)
        assert len(first.failures) == 2 and first.labelled == 0
        assert first.answers_cost_usd == pytest.approx(2 * cost("a"))
        rows_then[0]["reference"] = "Paris"  # corrected
        write_prompts(prompts, rows_then)
        up.fail = lambda model, prompt: False
        up.calls.clear()
        noted: list[str] = []
        again = await alabel(prompts, ["a", "b"], out, gateway=gateway, notes=noted.append)
    finally:
        await gateway.aclose()
    assert sorted(name for name, _, _ in up.calls) == ["b", "b"]  # a is not asked again
    assert again.complete and again.answer_calls == 2
    assert (again.rescored, again.reused, again.kept_scored) == (1, 1, 0)
    assert again.answers_cost_usd == pytest.approx(2 * cost("b"))
    records = records_of(out)
    assert records["fr"]["scores"] == {"a": 1.0, "b": 0.0}  # against Paris, not London
    assert records["fr"]["costs"]["a"] == pytest.approx(cost("a"))  # (the first run's)
    assert records["es"]["scores"]["a"] == 0.0
    assert any("1 score was made against a prompt's reference that changed since (or was added "
               "or removed): 1 kept answer scored again, not asked for again" in n
               for n in noted), noted
    assert ("1 answer kept from an earlier run scored again, the prompt's reference having "
            "changed since (not asked for again)") in again.summary()
    assert again.to_dict()["rescored_answers"] == 1


async def test_a_reference_removed_has_the_judge_score_the_kept_answer(tmp_path: Path) -> None:
    up = Upstream(judge_default='{"score": 0.3}')
    up.fail = lambda model, prompt: model == "b"
    prompts = write_prompts(tmp_path / "prompts.jsonl", [
        {"id": "p0", "prompt": "Question 0?", "reference": "42"},
        {"id": "p1", "prompt": "Question 1?"}])
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        write_prompts(prompts, [{"id": "p0", "prompt": "Question 0?"},  # now for the judge
                                {"id": "p1", "prompt": "Question 1?"}])
        up.fail = lambda model, prompt: False
        up.calls.clear()
        again = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    assert sorted(name for name, _, _ in up.calls) == ["b", "b", "judge", "judge", "judge"]
    assert "[Request]\nQuestion 0?\n\n[Answer to grade]\nanswer of a: Question 0?" in [
        m[1]["content"] for name, m, _ in up.calls if name == "judge"]
    assert again.complete and (again.rescored, again.reused) == (1, 1)
    assert records_of(out)["p0"]["scores"] == {"a": 0.3, "b": 0.3}


def _headers(out: Path) -> list[dict[str, Any]]:
    return [obj for obj in map(json.loads, journal_path(out).read_text().splitlines())
            if "labelling_journal" in obj]


async def test_a_rerun_without_a_judge_goes_on_where_every_answer_left_has_a_reference(
        tmp_path: Path) -> None:
    """A run judged the prompt without a reference, so its journal names the judge; the prompt
    gains a reference since. A rerun without --judge was refused ("--judge judge then, (none)
    now") and only --restart, paying for every answer again, got past: it goes on, scoring the
    kept answer against the new reference, and the journal keeps the judge it named. A prompt
    added without a reference then needs the judge: a rerun without --judge is refused naming
    it, before anything is called; with it, the run completes."""
    up = Upstream(judge_default='{"score": 0.3}')
    up.fail = lambda model, prompt: model == "b"
    then = [{"id": "p0", "prompt": "Capital of France?", "reference": "Paris"},
            {"id": "p1", "prompt": "Capital of Spain?"}]
    prompts = write_prompts(tmp_path / "prompts.jsonl", then)
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        first = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        assert first.labelled == 0 and first.judge_calls == 1
        now = [then[0], {**then[1], "reference": "Madrid"}]
        write_prompts(prompts, now)
        up.fail = lambda model, prompt: model == "b" and prompt == "Capital of France?"
        up.calls.clear()
        again = await alabel(prompts, ["a", "b"], out, gateway=gateway)
        assert sorted(name for name, _, _ in up.calls) == ["b", "b"]  # no judge, a not asked
        assert again.labelled == 1 and again.rescored == 1 and again.judge is None
        assert records_of(out)["p1"]["scores"] == {"a": 0.0, "b": 0.0}  # (against Madrid)
        assert [h["judge"] for h in _headers(out)] == ["judge"]  # (as recorded)

        write_prompts(prompts, [*now, {"id": "p2", "prompt": "Capital of Italy?"}])
        journal = journal_path(out).read_bytes()
        up.calls.clear()
        with pytest.raises(LabellingError) as info:
            await alabel(prompts, ["a", "b"], out, gateway=gateway)
        assert up.calls == [] and journal_path(out).read_bytes() == journal
        assert str(info.value) == (
            'the prompt of line 3 has no "reference", so a judge must score the answers; '
            f"give --judge \"judge\", the judge the run it resumes named (its journal "
            f"'{journal_path(out)}' says so), or write to another --out, or pass --restart to "
            "start over (discarding it)")
        up.fail = lambda model, prompt: False
        last = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    assert last.complete and last.judge_calls == 2
    assert sorted(name for name, _, _ in up.calls) == ["a", "b", "b", "judge", "judge"]
    assert records_of(out)["p2"]["scores"] == {"a": 0.3, "b": 0.3}


async def test_a_rerun_given_the_judge_it_no_longer_needs_resumes(tmp_path: Path) -> None:
    """Given the journal's own judge once every prompt has a reference, the run (which then
    calls no judge) was refused all the same: "--judge judge then, (none) now"."""
    up = Upstream(judge_default='{"score": 0.3}')
    up.fail = lambda model, prompt: model == "b"
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(2))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        write_prompts(prompts, rows(2, reference="Question"))
        up.fail = lambda model, prompt: False
        up.calls.clear()
        noted: list[str] = []
        again = await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway,
                             notes=noted.append)
    finally:
        await gateway.aclose()
    assert again.complete and again.judge_calls == 0 and again.rescored == 2
    assert sorted(name for name, _, _ in up.calls) == ["b", "b"]
    assert 'every prompt has a reference, so the judge "judge" is not called' in noted


async def test_a_rerun_without_a_judge_needs_one_only_for_answers_left_to_score(
        tmp_path: Path) -> None:
    """A prompt without a reference whose answers are all in the output, or all scored by the
    judge in the journal, leaves nothing for a judge: a rerun without --judge goes on. Without
    a journal naming one, a prompt left to judge is refused as before."""
    up = Upstream(judge_default='{"score": 0.3}')
    up.fail = lambda model, prompt: model == "b" and prompt == "Question 1?"
    prompts = write_prompts(tmp_path / "prompts.jsonl", [
        {"id": "p0", "prompt": "Question 0?"}, {"id": "p1", "prompt": "Question 1?",
                                                "reference": "1"}])
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        assert set(records_of(out)) == {"p0"}  # (judged; p1's b failed)
        up.fail = lambda model, prompt: False
        up.calls.clear()
        again = await alabel(prompts, ["a", "b"], out, gateway=gateway)
        assert again.complete and [name for name, _, _ in up.calls] == ["b"]
        with pytest.raises(LabellingError, match=r'line 1 has no "reference", so a judge must '
                           r"score the answers; give --judge MODEL \(a catalog model; it may "
                           r"be one of --models\)$"):
            await alabel(prompts, ["a", "b"], tmp_path / "other.jsonl", gateway=gateway)
    finally:
        await gateway.aclose()
    assert not (tmp_path / "other.jsonl").exists()


class _Forgetful(Upstream):
    """Keeps no call (what a run holds is measured, not what the fake does): counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: Counter[str] = Counter()

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        self.asked[card.name] += 1
        try:
            return await super().complete(request, card, timeouts)
        finally:
            self.calls.clear()


async def test_a_rerun_holds_the_answers_it_judges_not_every_kept_one(tmp_path: Path) -> None:
    """A rerun over a journal of 400 kept answers of 50 KB (20 MB) judges each, calling no
    model, without holding them all at once: it held every kept answer's text from start to
    end."""
    up = _Forgetful()
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(400))
    out = tmp_path / "records.jsonl"
    key = jr.RunKey(models=("a",), judge="judge", rubric=Judge("judge").rubric_id)
    with journal_path(out).open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(key.header()) + "\n")
        for prompt in read_prompts(prompts):
            line = jr.answer_line(prompt, "a", f"{prompt.id}: " + "x" * 50_000, 0.001)
            fh.write(json.dumps(line) + "\n")
    gateway = gateway_for(tmp_path, up)
    try:
        tracemalloc.start()
        try:
            report = await alabel(prompts, ["a"], out, judge="judge", gateway=gateway,
                                  concurrency=2)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        await gateway.aclose()
    assert report.complete and report.answer_calls == 0 and report.judge_calls == 400
    assert up.asked == {"judge": 400}
    assert peak < 8 << 20, peak  # (20 MB of answers kept: all of them were held)
    assert records_of(out)["p7"]["costs"] == {"a": 0.001}


async def test_resume_restart_and_an_all_reference_run_without_a_judge(tmp_path: Path) -> None:
    up = Upstream()
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(3, reference="Question"))
    out = tmp_path / "records.jsonl"
    noted: list[str] = []
    gateway = gateway_for(tmp_path, up)
    try:
        first = await alabel(prompts, ["a"], out, gateway=gateway)
        assert first.complete and first.judge is None and first.judge_calls == 0
        assert len(up.calls) == 3
        again = await alabel(prompts, ["a"], out, gateway=gateway, notes=noted.append)
        assert len(up.calls) == 3  # nothing left to do
        assert again.already_labelled == 3 and again.labelled == 0
        assert noted == [f"all 3 prompts are already labelled in {out} (--restart labels them "
                         "again)"]
        restarted = await alabel(prompts, ["a"], out, gateway=gateway, resume=False)
    finally:
        await gateway.aclose()
    assert len(up.calls) == 6 and restarted.labelled == 3
    assert len(records_of(out)) == 3


def test_the_sync_wrapper_runs_on_the_gateways_loop(tmp_path: Path) -> None:
    up = Upstream()
    prompts: list[Mapping[str, Any] | str] = [{"prompt": "Question 0?"}, "Question 1?"]
    with Gateway(settings_for(tmp_path), loader=FACTORY, store=False, env={},
                 providers={"openai-compatible": up}) as gateway:
        gateway.start()
        report = label(prompts, "a,b", tmp_path / "records.jsonl",
                       judge=Judge("judge", params={"temperature": 0}), gateway=gateway)
        assert report.complete and report.labelled == 2
        assert all(req.get("temperature") == 0 for name, _, req in up.calls
                   if name == "judge")
        # Every prompt with a reference: the judge given is not called, and that is said.
        up.calls.clear()
        notes: list[str] = []
        label([{"prompt": "Say 4", "reference": 4}], ["a"], tmp_path / "ref.jsonl",
              judge="judge", gateway=gateway, notes=notes.append)
    assert [name for name, _, _ in up.calls] == ["a"]
    assert notes == ["every prompt has a reference, so the judge \"judge\" is not called"]


# Checks before anything is called ----------------------------------------------------------------


@pytest.mark.parametrize(("call", "error", "message"), [
    (dict(models=["a", "zeta"]), InvalidInputError,
     "models: \"zeta\" is not in the catalog of the config (--config FILE) (it has \"a\", \"b\", "
     "\"judge\")"),
    (dict(judge="nobody"), InvalidInputError, "judge: \"nobody\" is not in the catalog"),
    (dict(judge=None), LabellingError, 'the prompts of lines 1, 2 have no "reference", so a '
                                       "judge must score the answers; give --judge MODEL"),
    (dict(judge=None, prompts=[{"prompt": f"p{i}"} for i in range(25)]), LabellingError,
     "the prompts of lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20 "
     'and 5 more have no "reference"'),
    # (each name's refusal names its place in the list, as every list's refusal does)
    (dict(models=["a", "a"]), InvalidInputError,
     'models[1]: "a" is listed twice (as item 1 too); name each model once'),
    # Thousands of names, or a name of thousands of characters: the message names a few, cut.
    (dict(models=[f"m{i}" for i in range(20_000)]), InvalidInputError,
     'models: "m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11", "m12", '
     '"m13", "m14", "m15", "m16", "m17", "m18", "m19" and 19980 more are not in the catalog'),
    (dict(models=["a", "x" * 100_000]), InvalidInputError,
     f'models[1]: model "{"x" * 77}…": must have at most 256 characters, got 100,000; name a '
     "catalog model"),
    # A name no catalog could hold is refused by the catalog's rule, before the prompts are read
    (dict(models=["a", "a "], prompts="missing.jsonl"), InvalidInputError,
     'models[1]: model "a ": holds a space (character 2)'),
    (dict(models=["auto"]), InvalidInputError,
     'models[0]: model "auto": "auto" is reserved for the router itself; name a catalog model'),
    # (what is wrong, and the one fix of this door: no upstream_model to give a name as here)
    (dict(models=["modèle"]), InvalidInputError, 'models[0]: model "modèle": holds U+00E8 '
     "(character 4): a model is named in the x-switchpoint-model header of each answer, so its "
     "name is visible ASCII (letters, digits, punctuation, spaces between them); name a "
     "catalog model"),
    (dict(judge="\x1b[2J" + "j" * 100_000), InvalidInputError,
     f'judge: "\\u001b[2J{"j" * 52}…" is not in the catalog'),
    (dict(models=[f"m{i}" for i in range(30)] * 2), InvalidInputError,
     'models[30]: "m0" is listed twice (as item 1 too)'),
    (dict(models=[]), InvalidInputError, "give at least one catalog model"),
    # The models as one comma-separated string are read as every such list is: an empty item
    # is refused naming its place, where it was dropped unsaid; a list of none as an empty one.
    (dict(models="a,,b"), InvalidInputError, 'models: "a,,b" has no model name at item 2 of 3: '
                                             "write one model name between commas, such as "
                                             "gpt-4o-mini,gpt-4o"),
    (dict(models="a, b,"), InvalidInputError, 'models: "a, b," has no model name at item 3 of '
                                              "3"),
    (dict(models=" , "), InvalidInputError, "models: give at least one catalog model"),
    (dict(concurrency=0), InvalidInputError, "concurrency: must be an integer from 1 to 256"),
    (dict(concurrency=10**5000), InvalidInputError, "got a number of more than 4300 digits, "
                                                    "past the largest a number holds"),
    (dict(concurrency=np.float64(2.5)), InvalidInputError, "to 256, got 2.5"),
    (dict(concurrency=float("inf")), InvalidInputError, "got infinity, too large a number"),
    (dict(max_tokens=0), InvalidInputError, "max_tokens: must be an integer from 1 to "
                                             "100,000,000 (what a chat request's output cap may "
                                             "be), got 0"),
    (dict(max_tokens=10**12), InvalidInputError, "max_tokens: must be an integer from 1 to "),
    (dict(max_tokens=10**5000), InvalidInputError, "got a number of more than 4300 digits"),
    (dict(prompts="missing.jsonl"), LabellingError, "file not found"),
    (dict(prompts=[{"prompt": "ok"}, {"prompt": ""}]), LabellingError,
     "'prompts', line 2: field \"prompt\" must be a non-empty string"),
    (dict(prompts=[{"prompt": "ok"}, {"prompt": "hello \ud800 world"}]), LabellingError,
     "'prompts', line 2: field \"prompt\" holds a lone surrogate"),
    (dict(prompts=[{"prompt": "ok", "reference": 10**400}]), LabellingError,
     "'prompts', line 1: field \"reference\" must be a finite number"),
    (dict(settings=dict(models=[{"name": "a", "profile": "claude-v2"},
                                {"name": "judge", "input_per_mtok": 1, "output_per_mtok": 1}])),
     ConfigError, "models[0].input_per_mtok: \"a\" has no input_per_mtok or output_per_mtok, so "
                  "its answers' cost is unknown; add both prices"),
    (dict(models=["b"], settings=dict(models=[
        {"name": "b", "input_per_mtok": 1, "output_per_mtok": 1},
        {"name": "judge", "input_per_mtok": 1, "profile": "claude-v2"}])),
     ConfigError, "models[1].output_per_mtok: \"judge\" has no output_per_mtok, so the judge's"),
    (dict(settings=dict(models=None)), ConfigError, "has no catalog (models:)"),
    (dict(settings=dict(models=[
        {"name": "a", "input_per_mtok": 1, "output_per_mtok": 1, "api_key_env": "A_KEY"},
        {"name": "judge", "input_per_mtok": 1, "output_per_mtok": 1}])),
     ConfigError, "models[0].api_key_env: $A_KEY (the API key of \"a\") is not set"),
])
async def test_bad_input_is_refused_before_anything_is_called(
        tmp_path: Path, call: dict[str, Any], error: type[SwitchpointError],
        message: str) -> None:
    prompts = call.pop("prompts", None)
    if prompts is None:
        prompts = write_prompts(tmp_path / "prompts.jsonl", rows(2))
    elif isinstance(prompts, str):
        prompts = tmp_path / prompts
    changes = call.pop("settings", {})
    settings = settings_for(tmp_path, **changes)
    out = tmp_path / "records.jsonl"
    kwargs: dict[str, Any] = {"models": ["a"], "judge": "judge", **call}
    with pytest.raises(error) as info:
        await alabel(prompts, kwargs.pop("models"), out, config=settings, env={}, **kwargs)
    assert message in str(info.value)
    assert len(str(info.value)) < 1000 and "\x1b" not in str(info.value)
    assert not out.exists() and not journal_path(out).exists()
    assert not (tmp_path / "data").exists()  # no gateway was even built


async def test_a_prompt_whose_record_fit_could_not_read_is_refused_before_any_call(
        tmp_path: Path) -> None:
    # A line of quotes is a prompt within a prompts file's bound, and each quote takes two
    # characters in the record: a line longer than fit reads.
    up = Upstream()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Question?\n" + '"' * ((8 << 20) - 1) + "\n", encoding="utf-8")
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up, max_request_bytes=64 << 20)  # (the prompt's size)
    try:
        with pytest.raises(LabellingError) as info:
            await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
        assert up.calls == [] and not out.exists() and not journal_path(out).exists()
        assert info.value.line == 2
        assert str(info.value).startswith(
            f"'{prompts}', line 2: the record of this prompt would be a line of 16,777,")
        assert ("over the 16,777,216 a line of routing records may hold, so fit could not "
                "read it; shorten the prompt (nothing was called)") in str(info.value)
        # At the bound, whatever the scores and costs, it is labelled and fit's reader reads it.
        wide = 2.2250738585072014e-308  # a float written as wide as any
        rest = MAX_RECORD_CHARS - len(json.dumps({"id": "p0", "prompt": "", "scores": {"a": wide},
                                                  "costs": {"a": wide}}) + "\n")
        fits = '"' * (rest // 2 - 10) + "x" * (rest - 2 * (rest // 2 - 10))
        up.answers[("a", fits)] = "ok"
        report = await alabel([{"id": "p0", "prompt": fits, "reference": "ok"}], ["a"], out,
                              gateway=gateway)
        assert report.complete and up.prompts_called("a") == [fits]
        assert load_records(out).prompts == [fits]
        with pytest.raises(LabellingError, match="would be a line of 16,777,217 characters"):
            await alabel([{"id": "p0", "prompt": fits + "x", "reference": "ok"}], ["a"],
                         tmp_path / "other.jsonl", gateway=gateway)
    finally:
        await gateway.aclose()
    assert up.prompts_called("a") == [fits]


async def test_prompts_whose_records_fit_could_not_read_are_refused_before_any_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Records of more prompts times models than a records file may make (50 million; a smaller
    # bound here): a run would have called every model, and fit then refused its output.
    monkeypatch.setattr(records, "MAX_LABEL_PLACES", 5)
    up = Upstream()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one?\ntwo?\nthree?\n", encoding="utf-8")
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        with pytest.raises(LabellingError) as info:
            await alabel(prompts, ["a", "b"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    assert up.calls == [] and not out.exists() and not journal_path(out).exists()
    assert str(info.value) == (
        f"'{prompts}': 3 prompts labelled by 2 models make records of 6 labels' places, more "
        "than the 5 a records file may make, so fit could not read them; label the prompts in "
        "smaller files, or fewer models at a time (nothing was called)")


async def test_a_prompt_the_gateway_would_refuse_is_refused_before_any_call(
        tmp_path: Path) -> None:
    # The gateway takes requests of at most max_request_bytes (1 MiB by default): a longer
    # prompt stopped the run at its first call, with a traceback, once other calls were paid.
    up = Upstream()
    gateway = gateway_for(tmp_path, up)
    out = tmp_path / "records.jsonl"
    limit = gateway.settings.max_request_bytes
    try:
        with pytest.raises(LabellingError) as info:
            await alabel(["short one", "x" * limit], ["a"], out, judge="judge",
                         gateway=gateway)
        assert info.value.line == 2
        assert str(info.value).startswith(
            "'prompts', line 2: its question to \"a\" would be too large for the gateway: the "
            "request, as the JSON body the HTTP door would receive, is ")
        assert str(info.value).endswith(
            f"over the limit of {limit} bytes (max_request_bytes in the config). Shorten the "
            "prompt, or raise max_request_bytes in the config (at most 1 GiB) (nothing was "
            "called)")
        # The judge's request holds the prompt and the rubric: a prompt that fits alone may
        # not fit there.
        with pytest.raises(LabellingError, match='line 1: the judge\'s request to "judge" would '
                                                 "be too large for the gateway"):
            await alabel(["y" * (limit - 200)], ["a"], out, judge="judge", gateway=gateway)
        assert up.calls == [] and not out.exists()
        # An answer too long to send to the judge is a failure of that answer, not of the run.
        up.answers[("a", "long answer")] = "z" * limit
        report = await alabel(["long answer", "short answer"], ["a"], out, judge="judge",
                              gateway=gateway)
    finally:
        await gateway.aclose()
    assert report.labelled == 1 and [(f.model, f.stage) for f in report.failures] == [
        ("a", "judge")]
    assert "max_request_bytes" in report.failures[0].message


async def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(
        tmp_path: Path) -> None:
    up = Upstream()
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows(2))
    out = tmp_path / "records.jsonl"
    gateway = gateway_for(tmp_path, up)
    try:
        with OutputLock(out):  # as another process's run holds it
            with pytest.raises(LabellingError, match="another label run is writing"):
                await alabel(prompts, ["a"], out, judge="judge", gateway=gateway)
            assert up.calls == [] and not out.exists()
        report = await alabel(prompts, ["a"], out, judge="judge", gateway=gateway)
    finally:
        await gateway.aclose()
    assert report.complete and set(records_of(out)) == {"p0", "p1"}
    assert not lock_path(out).exists()


async def test_a_gateway_and_a_config_together_are_refused(tmp_path: Path) -> None:
    up = Upstream()
    gateway = gateway_for(tmp_path, up)
    try:
        with pytest.raises(InvalidInputError, match="either a gateway or a config"):
            await alabel(["q"], ["a"], tmp_path / "o.jsonl", judge="judge", gateway=gateway,
                         config=settings_for(tmp_path))
    finally:
        await gateway.aclose()
    assert up.calls == []
