"""Closing counts every request: a read (a report, the stats, the learning status, the request
log, the keys) and a key's check are let in or refused as a chat request is, and a synchronous
call let in before closing began is waited for, not refused as its turn on the gateway's own
loop comes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint import Gateway
from switchpoint.config import load_settings
from switchpoint.errors import GatewayClosedError, StoreError
from switchpoint.gateway import ChatCompletion
from switchpoint.governance.reports import Reports
from switchpoint.learning.learner import OutcomeResult
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    FACTORY,
    KEYS,
    closing_in_background,
    config_text,
    db_rows,
    user,
)
from tests.integration.servers import thread_server

ADMIN_ENV = "SP_ADMISSION_ADMIN"
ADMIN = {"Authorization": "Bearer admission-admin-token"}


def _gateway(fake: FakeProviderProcess, root: Path) -> Gateway:
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake), encoding="utf-8")
    return Gateway.from_config(config, loader=FACTORY, env=KEYS)


def _on_a_thread(call: Any) -> tuple[threading.Thread, list[object]]:
    """``call()`` on a thread of its own: the thread, started, and a list that takes what it
    returned or the exception it raised."""
    got: list[object] = []

    def run() -> None:
        try:
            got.append(call())
        except Exception as exc:  # (the test tells)
            got.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, got


def _held(owner: object, name: str, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[threading.Event, threading.Event]:
    """``owner.name`` waits, the first time it is called, for ``go``, having set ``inside``."""
    real, inside, go = getattr(owner, name), threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        if not inside.is_set():
            inside.set()
            assert go.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, held)
    return inside, go


def test_a_synchronous_call_let_in_as_the_gateway_closes_is_waited_for_and_logged(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A thread's ``complete`` passes its open check while the gateway's own loop is busy;
    another thread then closes the gateway. The call starts on the loop once closing has
    begun: it was refused there, saying the gateway is closed, nothing logged. Now it was
    counted in on its own thread, so closing waits for it: it is answered and logged, and
    closing ends after it."""
    gateway = _gateway(gw_fake, tmp_path)
    gateway.route("What is the capital of France?")  # (the synchronous door's loop runs)
    sync = gateway._sync
    assert sync is not None
    busy, go = threading.Event(), threading.Event()

    def hold() -> None:  # the loop's turn, taken until go
        busy.set()
        go.wait(10)

    sync.loop.call_soon_threadsafe(hold)
    assert busy.wait(10)
    caller, got = _on_a_thread(lambda: gateway.complete(user("Hello"), model="good"))
    time.sleep(0.3)  # (past its open check: it waits for the loop's turn)
    closer, closed = closing_in_background(gateway)
    time.sleep(0.2)
    go.set()
    caller.join(30)
    closer.join(30)
    assert not caller.is_alive() and closed.is_set()
    [answer] = got
    assert isinstance(answer, ChatCompletion), repr(answer)
    assert answer.model == "good"
    assert db_rows(tmp_path / "data", "SELECT status FROM requests") == [("ok",)]
    with pytest.raises(StoreError, match="the gateway is closed"):
        gateway.complete(user("Hello again"), model="good")


def test_a_read_under_way_as_the_gateway_closes_is_waited_for_and_the_next_refused(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``stats`` reads the log in two steps; the gateway closes between them. Closing did not
    wait for it, and its second step met a closed log. Now closing waits for the read, which
    answers; the reports, the stats and the learning status asked once closing has begun are
    refused with the closed error a chat request gets, and read nothing."""
    gateway = _gateway(gw_fake, tmp_path)
    gateway.route("What is the capital of France?")
    assert gateway.store is not None
    inside, go = _held(gateway.store, "request_stats", monkeypatch)
    reader, got = _on_a_thread(gateway.stats)
    assert inside.wait(10)
    closer, closed = closing_in_background(gateway)
    for read in (gateway.stats, gateway.cost_report, gateway.budget_status,
                 gateway.learning_status, gateway.experiment_reports, gateway.get_sla_report):
        with pytest.raises(StoreError, match="the gateway is closed"):
            read()
    time.sleep(0.2)
    assert not closed.is_set()  # closing waits for the read under way
    go.set()
    reader.join(10)
    closer.join(30)
    assert not reader.is_alive() and closed.is_set()
    [stats] = got
    assert isinstance(stats, dict), repr(stats)
    assert stats["total"] == 1


def test_a_read_of_the_reports_object_under_way_as_the_gateway_closes_is_waited_for(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gateway.reports`` read directly (the reports object, not the gateway's methods):
    a cost report is under way as the gateway closes. Closing did not wait for it, and its
    reads went on over a closing gateway; and a read of reports taken before closing, or
    after, read the log of a closed gateway. Now closing waits for the report, which
    answers; every read of the reports (held from before, or taken now) and of the models'
    health asked once closing has begun is refused with the closed error, as the gateway's
    own methods are."""
    gateway = _gateway(gw_fake, tmp_path)
    answer = gateway.complete(user("Hello"), model="good")
    held_reports = gateway.reports  # (taken while open, read after closing began)
    inside, go = _held(Reports, "_rows", monkeypatch)
    reader, got = _on_a_thread(held_reports.cost_report)
    assert inside.wait(10)
    closer, closed = closing_in_background(gateway)
    reads: list[Callable[[], object]] = [
        held_reports.cost_report, held_reports.logged_tenants,
        lambda: held_reports.check_tenant("acme"), held_reports.get_sla_report,
        held_reports.check_budget_alert, lambda: held_reports.forecast_cost(10, 100, 100),
        lambda: gateway.reports.savings_estimate(), lambda: gateway.reports.what_if(),
        lambda: gateway.reports.routing_mix(), gateway.health_snapshot,
        lambda: gateway.get_provider_health("good")]
    for read in reads:
        with pytest.raises(GatewayClosedError, match="the gateway is closed"):
            read()
    time.sleep(0.2)
    assert not closed.is_set()  # closing waits for the report under way
    go.set()
    reader.join(10)
    closer.join(30)
    assert not reader.is_alive() and closed.is_set()
    [report] = got
    assert isinstance(report, dict), repr(report)
    assert report["requests"] == 1
    assert list(report["by_model"]) == [answer.model]
    with pytest.raises(GatewayClosedError, match="the gateway is closed"):
        gateway.reports.cost_report()


def test_the_gateways_router_is_let_in_and_refused_as_the_gateways_own_methods_are(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gateway.router``'s own methods reach the gateway's learning, feedback log and models
    without its methods: an outcome reported to the router is under way as the gateway closes.
    Closing did not wait for it, and the router routed, learned and logged over a closing
    gateway, and after close met its closed feedback log. Now closing waits for the outcome,
    which is learned and logged; the router's routing, learning and model calls asked once
    closing has begun, or after (through the router taken before, or taken now), are refused
    with the closed error, and route, learn, log and call nothing."""
    gateway = _gateway(gw_fake, tmp_path)
    router = gateway.router
    first = router.route("What is the capital of France?")
    second = router.route("Prove that the square root of 2 is irrational.")
    called = len(gw_fake.requests())
    inside, go = _held(router.learner, "report", monkeypatch)
    reporter, got = _on_a_thread(lambda: router.report_outcome(first.decision_id, 0.9))
    assert inside.wait(10)
    closer, closed = closing_in_background(gateway)
    calls: list[Callable[[], object]] = [
        lambda: router.report_outcome(second.decision_id, 0.2),
        lambda: router.route("Summarise the meeting notes."),
        lambda: router.route_batch(["Say hello.", "Say goodbye."]),
        lambda: router.analyze_routing_distribution(["Say hello."]),
        lambda: router.estimates(["Say hello."]),
        lambda: router.route_and_execute("Say hello.")]
    for call in calls:
        with pytest.raises(GatewayClosedError, match="the gateway is closed"):
            call()
    time.sleep(0.2)
    assert not closed.is_set()  # closing waits for the outcome under way
    go.set()
    reporter.join(10)
    closer.join(30)
    assert not reporter.is_alive() and closed.is_set()
    [outcome] = got
    assert isinstance(outcome, OutcomeResult), repr(outcome)
    assert outcome.decision_id == first.decision_id and outcome.quality == 0.9
    for call in [*calls, lambda: gateway.router.report_outcome(second.decision_id, 0.2)]:
        with pytest.raises(GatewayClosedError, match="the gateway is closed"):
            call()
    assert db_rows(tmp_path / "data", "SELECT decision_id, quality FROM feedback") == [
        (first.decision_id, 0.9)]
    assert router.stats.total_requests == 2  # (the two routed before closing, no more)
    assert router.learner.n_outcomes() == 1
    assert len(gw_fake.requests()) == called


def test_a_chat_request_routing_as_the_gateway_closes_is_waited_for_not_refused(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An async chat request for ``auto``, on an event loop of its own, is counted in and
    held before it is routed; the gateway then closes. Its routing, on the live router that
    refuses calls made once closing has begun, is a part of the request let in, so it is
    routed, answered and logged, and closing waits for it."""
    gateway = _gateway(gw_fake, tmp_path)
    inside, go = _held(gateway._housekeeping, "maintain", monkeypatch)
    caller, got = _on_a_thread(lambda: asyncio.run(gateway.acomplete(user("Hello"))))
    assert inside.wait(10)
    closer, closed = closing_in_background(gateway)
    time.sleep(0.2)
    assert not closed.is_set()  # closing waits for the request being planned
    go.set()
    caller.join(30)
    closer.join(30)
    assert not caller.is_alive() and closed.is_set()
    [answer] = got
    assert isinstance(answer, ChatCompletion), repr(answer)
    decision = answer.switchpoint.decision
    assert decision is not None and answer.model == decision.selected_model
    assert db_rows(tmp_path / "data", "SELECT status, decision_id FROM requests") == [
        ("ok", decision.decision_id)]


def _keys_config(fake: FakeProviderProcess, root: Path) -> Path:
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake) + f"auth: keys\nadmin_token_env: {ADMIN_ENV}\n"
                      "tenants: {acme: {}}\n", encoding="utf-8")
    return config


def _said(answer: httpx.Response) -> tuple[str, str]:
    """An error answer's code and message (chat's carries OpenAI's type too)."""
    error = answer.json()["error"]
    return error["code"], error["message"]


def test_over_http_a_read_under_way_as_the_gateway_closes_is_waited_for_and_the_rest_refused(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real server with client keys: ``GET /v1/router/requests`` is under way as the
    gateway closes. Closing waits for it, and it answers 200. Once closing has begun, the
    reads (the request log, the keys, the stats, the budgets, a report, the learning status),
    a key's check and a chat request are each refused as chat is, a 503 ``service_closing``
    with ``Retry-After`` saying the service is shutting down and did nothing (it read as a
    storage failure, ``storage_unavailable``, "try again when data_dir's disk is full..."):
    nothing reads the log or the key store being closed (the key store was opened again, on
    data_dir let go, by a read after closing)."""
    settings = load_settings(_keys_config(gw_fake, tmp_path),
                             environ={ADMIN_ENV: ADMIN["Authorization"].split()[1]})
    app = create_app(settings, loader=FACTORY, provider_env=KEYS)
    with thread_server(app) as server:
        base, gateway = server.base, server.service.gateway
        made = httpx.post(f"{base}/v1/router/keys", json={"tenant": "acme"}, headers=ADMIN,
                          timeout=10)
        assert made.status_code == 201, made.text
        key = {"Authorization": f"Bearer {made.json()['key']}"}
        answered = httpx.post(f"{base}/v1/chat/completions", headers=key, timeout=15,
                              json={"model": "good", "messages": user("Hello")})
        assert answered.status_code == 200, answered.text
        assert gateway.store is not None
        inside, go = _held(gateway.store, "requests", monkeypatch)
        reader, got = _on_a_thread(lambda: httpx.get(f"{base}/v1/router/requests",
                                                     headers=ADMIN, timeout=30))
        assert inside.wait(10)
        closer, closed = closing_in_background(gateway)
        chat = httpx.post(f"{base}/v1/chat/completions", headers=key, timeout=15,
                          json={"model": "good", "messages": user("Hello again")})
        assert chat.status_code == 503, chat.text
        refusal = _said(chat)
        assert refusal[0] == "service_closing", chat.text
        assert refusal[1].startswith("the service is shutting down, so it did nothing with "
                                     "this request"), chat.text
        assert "storage" not in refusal[1] and "data_dir" not in refusal[1], chat.text
        assert chat.headers["retry-after"] == "1"
        assert chat.json()["error"]["type"] == "service_unavailable"  # (OpenAI's shape)
        reads = ["/v1/router/requests", "/v1/router/keys", "/v1/router/stats",
                 "/v1/router/budgets", "/v1/router/report/cost", "/v1/router/status",
                 "/v1/router/experiments"]
        for path in reads:
            r = httpx.get(f"{base}{path}", headers=ADMIN, timeout=15)
            assert (r.status_code, _said(r)) == (503, refusal), (path, r.text)
            assert r.headers["retry-after"] == "1", path
        checked = httpx.get(f"{base}/v1/models", headers=key, timeout=15)
        assert (checked.status_code, _said(checked)) == (503, refusal), checked.text
        time.sleep(0.2)
        assert not closed.is_set()  # closing waits for the read under way
        go.set()
        reader.join(30)
        closer.join(30)
        assert not reader.is_alive() and closed.is_set()
        [page] = got
        assert isinstance(page, httpx.Response) and page.status_code == 200, page
        assert [e["status"] for e in page.json()["data"]] == ["ok"]
        after = httpx.get(f"{base}/v1/router/keys", headers=ADMIN, timeout=15)
        assert (after.status_code, _said(after)) == (503, refusal), after.text
        assert gateway.governor.keys._conn is None  # (not opened again)


def test_threads_making_their_first_synchronous_calls_at_once_share_one_loop(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight threads make the gateway's first synchronous calls at the same moment: they share
    one loop on one thread (each made its own, and all but the last were left running, never
    closed), and every call is answered."""
    from switchpoint.gateway import engine, sync_bridge

    made: list[Any] = []

    class Slow(sync_bridge.LoopThread):  # (widens the moment between looking and making)
        def __init__(self) -> None:
            time.sleep(0.1)
            super().__init__()
            made.append(self)

    monkeypatch.setattr(engine, "LoopThread", Slow)
    gateway = _gateway(gw_fake, tmp_path)
    start = threading.Barrier(8)

    def first_call() -> object:
        start.wait(10)
        return gateway.route("What is the capital of France?")

    calls = [_on_a_thread(first_call) for _ in range(8)]
    for thread, _ in calls:
        thread.join(30)
    answers = [got for _, got in calls]
    gateway.close()
    assert all(len(got) == 1 and not isinstance(got[0], Exception) for got in answers), answers
    assert len(made) == 1
    assert not made[0].thread.is_alive()  # (closing stopped the one made)
