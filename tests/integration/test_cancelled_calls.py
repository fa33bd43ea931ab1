"""A model call cancelled (its caller left, or the service stopped it) is charged against the
budgets only when a try was under way upstream: then the worst case of the model being called
(its usage is unknown, and a provider bills what it made until the connection closed). A call
cancelled before any model was called, or while it waited between two tries, sent nothing
that could be billed: its hold is released and it is logged with no cost. Through the
in-process door, against the fake provider; the ledger and the log read back from SQLite."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from switchpoint.config import DB_FILENAME
from switchpoint.gateway import Gateway
from switchpoint.gateway.failover import RetryPolicy
from switchpoint.gateway.parsing import check_chat_body
from switchpoint.gateway.planning import ChatCall
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text

# A long wait between two tries of a model, so that a test can cancel the call during it.
GATEWAY = """gateway:
  connect_timeout_s: 2
  read_timeout_s: 30
  first_token_timeout_s: 30
  backoff_base_s: 30
  backoff_cap_s: 30
  max_retry_after_s: 60
  max_total_s: 120
"""


@pytest.fixture
def gateway(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Gateway]:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(fake, str(tmp_path / "data"), gateway=GATEWAY)
                      + "budgets: {models: {good: 50/day}}\n", encoding="utf-8")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gw:
        yield gw


def _call(text: str) -> ChatCall:
    return ChatCall(body=check_chat_body({"model": "good", "max_tokens": 1000, "messages": [
        {"role": "user", "content": f"{text} [{uuid.uuid4().hex[:8]}]"}]}), caller="test")


def _read(gateway: Gateway, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(Path(gateway.settings.data_dir) / DB_FILENAME)) as db:
        return db.execute(sql, args).fetchall()


def _logged(gateway: Gateway, request_id: str) -> tuple[Any, ...]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = _read(gateway, "SELECT status, error_kind, cost_usd, charged_usd, attempts "
                              "FROM requests WHERE id = ?", request_id)
        if rows:
            return rows[0]
        time.sleep(0.02)
    raise AssertionError(f"request {request_id} is not in the log")


def _only_request(gateway: Gateway) -> str:
    """The id of the one request the log holds (a request its caller left is logged without
    being waited for)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = _read(gateway, "SELECT id FROM requests")
        if rows:
            assert len(rows) == 1, rows
            return str(rows[0][0])
        time.sleep(0.02)
    raise AssertionError("no request is in the log")


def _charges(gateway: Gateway, request_id: str) -> list[tuple[Any, ...]]:
    """What the ledger charged ``request_id``: its settle rows (a hold released leaves a
    release row, or none when it was never written down)."""
    return _read(gateway, "SELECT model, amount_usd FROM spend WHERE request_id = ? "
                          "AND kind = 'settle' ORDER BY seq", request_id)


async def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_a_call_cancelled_before_it_began_is_released_not_charged(
        gateway: Gateway, fake: FakeProviderProcess) -> None:
    # The caller leaves as planning ends (its task cancelled with the hold taken): the
    # budget was charged good's worst case though no model had been called.
    planned: list[Any] = []

    async def call() -> Any:
        plan, live = await gateway.plan(_call("hello"))
        planned.append(plan)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # (it lands at the next await: the call's)
        return await gateway.execute(plan, live)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.ensure_future(call())
    plan = planned[0]
    assert plan.ticket is not None and plan.ticket.worst_usd > 0  # a hold had been taken
    assert fake.requests() == []
    status, kind, cost, charged, attempts = _logged(gateway, plan.request_id)
    assert (status, kind, cost, charged, attempts) == (
        "client_closed", "client_closed", None, None, "[]")
    assert _charges(gateway, plan.request_id) == []
    reasoning = _read(gateway, "SELECT reasoning FROM requests WHERE id = ?", plan.request_id)
    assert "no try under way upstream (before any model was called" in reasoning[0][0]
    assert gateway.governor.ledger.open_tickets() == 0
    assert [b["spent_usd"] for b in gateway.budget_status()] == [0]


@pytest.mark.anyio
async def test_a_call_cancelled_while_it_waited_between_tries_is_released_not_charged(
        gateway: Gateway, fake: FakeProviderProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # good answered 500 (a failure is not billed) and the call waits before trying again:
    # nothing is under way upstream when the caller leaves. (The wait is the whole 30 s, not
    # drawn between 0 and 30 s: a draw under 0.2 s retried before the cancel, one run in 150.)
    monkeypatch.setattr(RetryPolicy, "backoff",
                        lambda policy, retry, rng: policy.backoff_cap_s)
    task = asyncio.ensure_future(gateway.acomplete(
        [{"role": "user", "content": f"retry [[fake:once:500]] {uuid.uuid4().hex[:8]}"}],
        model="good", max_tokens=1000))
    await _until(lambda: len(fake.requests()) == 1, "good has answered its first try")
    await asyncio.sleep(0.2)  # (the 500 read, the wait begun)
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    assert len(fake.requests()) == 1
    request_id = _only_request(gateway)
    status, _, cost, charged, attempts = _logged(gateway, request_id)
    assert (status, cost, charged) == ("client_closed", None, None)
    assert [(a["outcome"], a["status"]) for a in json.loads(attempts)] == [
        ("server_error", 500), ("client_closed", None)]
    assert _charges(gateway, request_id) == []
    assert [b["spent_usd"] for b in gateway.budget_status()] == [0]
    assert gateway.governor.ledger.open_tickets() == 0


@pytest.mark.anyio
async def test_a_call_cancelled_while_its_model_was_answering_is_charged_its_worst_case(
        gateway: Gateway, fake: FakeProviderProcess) -> None:
    task = asyncio.ensure_future(gateway.acomplete(
        [{"role": "user", "content": f"slow [[fake:ok:delay=20]] {uuid.uuid4().hex[:8]}"}],
        model="good", max_tokens=1000))
    await _until(lambda: len(fake.requests()) == 1, "good has the request")
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    request_id = _only_request(gateway)
    status, _, cost, charged, _ = _logged(gateway, request_id)
    charges = _charges(gateway, request_id)
    assert len(charges) == 1 and charges[0][0] == "good" and charges[0][1] > 0
    assert (status, cost, charged) == ("client_closed", None, charges[0][1])
    assert [b["spent_usd"] for b in gateway.budget_status()] == [pytest.approx(charged)]
    assert gateway.governor.ledger.open_tickets() == 0



@pytest.mark.anyio
async def test_a_call_cancelled_once_answered_as_its_entry_is_written_is_logged_ok_and_charged(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The answer is in hand and its log entry being written when the caller leaves (an
    observer told of the entry cancels the call's task, so the cancel lands on the wait for
    the entry's commit): the caller gets CancelledError, and the request stays logged ``ok``
    and charged its answer, which the provider billed; nothing is logged twice."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(fake, str(tmp_path / "data"), gateway=GATEWAY)
                      + "budgets: {models: {good: 50/day}}\n", encoding="utf-8")
    told: list[str] = []

    class CancelsAsLogged:
        def on_request(self, record: Any) -> None:
            told.append(record.id)
            task = asyncio.current_task()
            assert task is not None
            task.cancel()

        def on_decision(self, decision: Any) -> None:
            pass

        def on_store_error(self) -> None:
            pass

    with Gateway.from_config(config, loader=FACTORY, env=KEYS,
                             observer=CancelsAsLogged()) as gateway:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.ensure_future(gateway.acomplete(
                [{"role": "user", "content": f"hello {uuid.uuid4().hex[:8]}"}],
                model="good", max_tokens=1000))
        [request_id] = told
        status, kind, cost, charged, _ = _logged(gateway, request_id)
        assert (status, kind) == ("ok", None) and cost > 0 and charged == pytest.approx(cost)
        assert _charges(gateway, request_id) == [("good", pytest.approx(cost))]
        assert [b["spent_usd"] for b in gateway.budget_status()] == [pytest.approx(cost)]
        assert gateway.governor.ledger.open_tickets() == 0
        assert len(_read(gateway, "SELECT id FROM requests")) == 1


@pytest.fixture
def one_connection(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway with one upstream connection to the fake: a second call waits for it."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(fake, str(tmp_path / "data"),
                                  gateway=GATEWAY + "  max_upstream_connections: 1\n")
                      + "budgets: {models: {good: 50/day}}\n", encoding="utf-8")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gw:
        yield gw


@pytest.mark.anyio
async def test_a_call_cancelled_before_its_request_was_sent_is_released_not_charged(
        one_connection: Gateway, fake: FakeProviderProcess) -> None:
    # The first call holds the only connection (good answers it late); the second waits for a
    # connection when its caller leaves: nothing was sent, nothing can be billed.
    gateway = one_connection
    first = asyncio.ensure_future(gateway.acomplete(
        [{"role": "user", "content": f"slow [[fake:ok:delay=20]] {uuid.uuid4().hex[:8]}"}],
        model="good", max_tokens=1000))
    await _until(lambda: len(fake.requests()) == 1, "good has the first request")
    second = asyncio.ensure_future(gateway.acomplete(
        [{"role": "user", "content": f"waits {uuid.uuid4().hex[:8]}"}],
        model="good", max_tokens=1000))
    await _until(lambda: len(gateway._chat._calls) == 2, "the second call waits for a connection")
    await asyncio.sleep(0.2)
    second.cancel()
    with suppress(asyncio.CancelledError):
        await second
    assert len(fake.requests()) == 1  # (the second request never reached good)
    first.cancel()
    with suppress(asyncio.CancelledError):
        await first
    await _until(lambda: len(_read(gateway, "SELECT id FROM requests")) == 2,
                 "both requests are logged")
    rows = _read(gateway, "SELECT status, charged_usd, attempts, reasoning FROM requests")
    # The one charged nothing, then the one charged.
    (unsent_status, unsent_paid, unsent_tries, unsent_notes), (_, sent_paid, _, _) = sorted(
        rows, key=lambda row: row[1] or 0.0)
    assert (unsent_status, unsent_paid) == ("client_closed", None)
    assert [(a["outcome"], a.get("charged_usd")) for a in json.loads(unsent_tries)] == [
        ("client_closed", None)]
    assert "before its request was sent" in unsent_notes
    assert sent_paid > 0  # (the first had reached good: charged its worst case)
    assert [b["spent_usd"] for b in gateway.budget_status()] == [pytest.approx(sent_paid)]
    assert gateway.governor.ledger.open_tickets() == 0


@pytest.mark.anyio
@pytest.mark.parametrize("door", ["aroute", "acomplete"])
async def test_a_call_cancelled_while_it_routed_leaves_no_decision_remembered(
        gateway: Gateway, door: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A route or chat call cancelled while its router decided (asyncio.wait_for, Ctrl-C)
    left the decision in the router's memory, though no log or pending row had it and its
    caller never saw its id: its prompt's hash named it (feedback by hash taught on a
    decision a restart would not know), and it took a share of the tenant's memory. It is
    forgotten, and the hash names the decision of that prompt made before it again."""
    prompt = f"Cancelled while routing {uuid.uuid4().hex[:8]}"
    earlier = await gateway.aroute(prompt)
    memory = gateway.router.learner.memory
    remembered = len(memory)
    began, release = threading.Event(), threading.Event()
    decide = gateway._decide

    def slow(*args: Any, **kwargs: Any) -> Any:
        began.set()
        release.wait(10)
        return decide(*args, **kwargs)

    monkeypatch.setattr(gateway, "_decide", slow)
    task = asyncio.ensure_future(
        gateway.aroute(prompt) if door == "aroute" else
        gateway.acomplete([{"role": "user", "content": prompt}], model="auto"))
    await _until(began.is_set, "the router decides")
    task.cancel()
    release.set()
    with suppress(asyncio.CancelledError):
        await task
    monkeypatch.undo()

    def let_go() -> bool:
        latest = memory.latest(earlier.prompt_hash)
        return len(memory) == remembered and latest is not None and (
            latest.decision_id == earlier.decision_id)

    await _until(let_go, "the cancelled call's decision is let go")
    result = await gateway.areport_outcome(prompt_hash=earlier.prompt_hash, quality_score=0.5)
    assert result.outcome.decision_id == earlier.decision_id
    if door == "acomplete":  # a chat that came in is logged once, as a client that left
        request_id = _only_request(gateway)
        assert _read(gateway, "SELECT status, http_status, error_kind, routed_model, "
                              "decision_id, cost_usd, charged_usd FROM requests") == [
            ("client_closed", 499, "client_closed", None, None, None, None)]
        assert _charges(gateway, request_id) == []


@pytest.mark.anyio
async def test_a_stream_read_by_a_second_reader_at_once_refuses_it_and_reads_on(
        gateway: Gateway) -> None:
    """Two threads iterating one gateway.stream(...) (or two tasks one astream) got Python's
    "RuntimeError: anext(): asynchronous generator is already running" from deep inside.
    The second read is refused saying why, and the read under way, and the stream, go on."""
    from switchpoint.errors import StreamInUseError

    stream = await gateway.astream(
        [{"role": "user", "content": f"Count to five [[fake:ok:chunk_delay=0.05]] "
                                     f"{uuid.uuid4().hex[:8]}"}], model="good", max_tokens=50)
    chunks = [await stream.__anext__(), await stream.__anext__()]  # (they came at once)
    under_way = asyncio.ensure_future(stream.__anext__())
    await _until(lambda: not stream.idle, "the next chunk is being waited for")
    with pytest.raises(StreamInUseError, match="being read by another reader"):
        await stream.__anext__()
    chunks.append(await under_way)
    chunks += [chunk async for chunk in stream]
    assert len(chunks) > 2 and stream.ended
    assert _logged(gateway, stream.switchpoint.request_id)[0] == "ok"
    assert gateway.governor.ledger.open_tickets() == 0


def test_feedback_cancelled_at_any_point_took_effect_whole_or_not_at_all_and_a_retry_replaces(
        gateway: Gateway) -> None:
    """Feedback whose caller stops waiting for it (asyncio.wait_for's timeout, from its very
    start to its commit) is either logged and learned, as a restart reads it back, or neither;
    reported again, it replaces the outcome it left, if any, wherever the cancel landed."""
    ids = [gateway.route(f"Cancelled feedback {i} {uuid.uuid4().hex[:8]}").decision_id
           for i in range(16)]
    cancelled = 0

    async def report_each() -> None:
        nonlocal cancelled
        for i, decision_id in enumerate(ids):
            with suppress(TimeoutError):
                await asyncio.wait_for(gateway.areport_outcome(decision_id, 0.25), i * 0.0004)
                continue
            cancelled += 1

    def learned(gw: Gateway) -> dict[str, float | None]:
        held = {d: gw.router.learner.outcome(d, "default") for d in ids}
        return {d: None if h is None else h.quality for d, h in held.items()}

    def logged() -> dict[str, float | None]:
        rows = dict(_read(gateway, "SELECT decision_id, quality FROM feedback"))
        return {d: rows.get(d) for d in ids}

    asyncio.run(report_each())
    assert cancelled  # (some calls were cut, at a point between their start and their end)
    # (feedback on another decision, waited for: a cut call's row the store commits after its
    # caller left is learned when the next feedback is, so read what was learned after that)
    gateway.report_outcome(gateway.route(f"After the cut ones {uuid.uuid4().hex[:8]}")
                           .decision_id, 0.5)
    live = learned(gateway)
    gateway.close()  # (what was handed to the store is written)
    first = logged()
    assert live == first and set(first.values()) <= {0.25, None}
    gateway.start()
    assert learned(gateway) == first  # a restart reads back what was learned, and only that
    for decision_id in ids:
        again = gateway.report_outcome(decision_id, 0.75)
        assert again.outcome.replaced == (first[decision_id] is not None), decision_id
    assert learned(gateway) == dict.fromkeys(ids, 0.75)
    gateway.close()
    gateway.start()
    assert learned(gateway) == logged() == dict.fromkeys(ids, 0.75)
