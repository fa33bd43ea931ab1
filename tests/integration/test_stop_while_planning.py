"""A request still being planned (routed, its budget hold reserved) when the service's drain
runs out is ended like one waiting on its model: its client gets a 503 ``service_stopped``, it
is logged once, and its budget hold is released (no model was called), whatever stage its
planning was in: nothing is left holding a budget until the hold expires, in this run or the
next. The service runs as ``switchpoint serve`` runs it (the runner's server, on loopback, with
its drain, on the main thread as there), told to stop as SIGTERM tells it; only its routing is
slowed, by a policy that waits for the test."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from switchpoint.config import DB_FILENAME, load_settings
from switchpoint.errors import ServiceStoppingError
from switchpoint.gateway import Gateway
from switchpoint.gateway.parsing import check_chat_body
from switchpoint.gateway.planning import ChatCall
from switchpoint.gateway.results import CallInfo
from switchpoint.governance.ledger import load_state
from switchpoint.server import create_app
from switchpoint.server.serving import _Server
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text
from tests.integration.servers import loopback_socket, wait_ready

GATEWAY = """gateway:
  connect_timeout_s: 2
  read_timeout_s: 30
  first_token_timeout_s: 30
  max_total_s: 120
"""
DRAIN_S = 0.2


class SlowPolicy:
    """The gateway's routing, held until the test lets it go (as a slow policy would be)."""

    def __init__(self, gateway: Gateway) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        decide = gateway._decide

        def slow(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            self.release.wait(30)
            return decide(*args, **kwargs)

        gateway._decide = slow


class Service:
    """The runner's server (the drain of ``switchpoint serve``) on loopback."""

    def __init__(self, fake: FakeProviderProcess, root: Path) -> None:
        self.data = root / "data"
        config = root / "switchpoint.yaml"
        config.write_text(config_text(fake, str(self.data), gateway=GATEWAY)
                          + f"server: {{shutdown_timeout_s: {DRAIN_S}}}\n"
                          + "budgets: {models: {good: 50/day}}\n", encoding="utf-8")
        app = create_app(load_settings(config, environ={}), loader=FACTORY, provider_env=KEYS)
        self.gateway: Gateway = app.state.service.gateway
        sock = loopback_socket()
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = _Server(
            uvicorn.Config(app, host="127.0.0.1", log_level="warning", lifespan="on"),
            "{url}", chosen=False, service=app.state.service, shutdown_timeout_s=DRAIN_S)
        self.sock = sock
        self.stopped = threading.Event()  # the drain ran out: what was in flight was ended
        stop_in_flight = self.gateway.stop_in_flight

        def stop(why: str) -> int:
            ended = stop_in_flight(why)
            self.stopped.set()
            return ended

        self.gateway.stop_in_flight = stop

    def run(self, client: Callable[[], None]) -> None:
        """Serve on this (the main) thread, as ``switchpoint serve`` does, until the service
        stops; ``client`` runs meanwhile on a thread of its own, once the router is ready.
        What ``client`` raises is raised here."""
        raised: list[BaseException] = []

        def drive() -> None:
            try:
                _until(lambda: self.server.started, "the service serves")
                wait_ready(self.base)
                client()
            except BaseException as exc:
                raised.append(exc)
                self.server.should_exit = True

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        self.server.run(sockets=[self.sock])
        driver.join(timeout=30)
        if raised:
            raise raised[0]

    def sigterm(self) -> None:
        self.server.handle_exit(signal.SIGTERM, None)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.data / DB_FILENAME)) as db:
            return db.execute(sql).fetchall()


def _until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@contextmanager
def asked(service: Service) -> Iterator[list[object]]:
    """A chat request for ``auto`` among ``good`` (which a budget watches) in a thread; what
    it got (the answer, or the error)."""
    got: list[object] = []

    def ask() -> None:
        try:
            got.append(httpx.post(f"{service.base}/v1/chat/completions", timeout=60, json={
                "model": "auto", "models": ["good"],
                "messages": [{"role": "user", "content": "[[fake:ok:delay=20]] hi"}]}))
        except httpx.HTTPError as exc:
            got.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        yield got
    finally:
        asker.join(timeout=30)


@pytest.mark.parametrize("routed", ["after-the-drain", "never"])
def test_a_request_being_planned_when_the_drain_runs_out_is_ended_logged_once_its_hold_released(
        fake: FakeProviderProcess, tmp_path: Path, routed: str) -> None:
    service = Service(fake, tmp_path)
    policy = SlowPolicy(service.gateway)
    got: list[object] = []

    def client() -> None:
        with asked(service) as answers:
            assert policy.entered.wait(30), "the request is being routed"
            service.sigterm()
            assert service.stopped.wait(30), "the drain ran out"
            if routed == "after-the-drain":
                policy.release.set()
            _until(lambda: bool(answers), "the client is answered")
        got.extend(answers)

    try:
        service.run(client)
    finally:
        policy.release.set()
    answer = got[0]
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "service_stopped", answer.text
    requests = service.rows("SELECT id, status, error_kind, http_status FROM requests")
    assert [r[1:] for r in requests] == [("error", "service_stopped", 503)], requests
    assert fake.requests() == []  # the service, stopping, called no model
    # Every hold taken was closed: none is open for the next run to keep holding.
    _, live, stale = load_state(service.data / DB_FILENAME)
    assert live == [] and stale == [], (live, stale)
    spend = service.rows("SELECT kind, amount_usd FROM spend")
    assert all(kind != "settle" or amount == 0 for kind, amount in spend), spend


# The in-process door: a request planned (its hold reserved) whose call has not begun ----------

STOP = "the service stopped before this request finished (its drain ran out); send it again"


def _gateway(fake: FakeProviderProcess, root: Path) -> Gateway:
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake, str(root / "data"), gateway=GATEWAY)
                      + "budgets: {models: {good: 50/day}}\n", encoding="utf-8")
    return Gateway.from_config(config, loader=FACTORY, env=KEYS)


def _requests(root: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(root / "data" / DB_FILENAME)) as db:
        return db.execute("SELECT id, status, error_kind, http_status FROM requests").fetchall()


@pytest.mark.anyio
@pytest.mark.parametrize("caller", ["waits", "left"])
async def test_a_planned_request_whose_call_has_not_begun_is_ended_by_the_stop(
        fake: FakeProviderProcess, tmp_path: Path, caller: str) -> None:
    """Planned, its hold reserved, its call not yet begun (the HTTP door starts the call as a
    task of its own; a task cancelled before it ran never runs its code): the stop releases
    the hold and logs it once; the call, if it begins after all, calls no model and raises
    the same error; a request that comes after the stop is ended as it arrives."""
    gateway = _gateway(fake, tmp_path)
    try:
        call = ChatCall(body=check_chat_body({"model": "auto", "models": ["good"], "messages": [
            {"role": "user", "content": "[[fake:ok:delay=20]] hi"}]}), caller="test")
        plan, live = await gateway.plan(call)
        assert plan.ticket is not None and gateway.governor.ledger.open_tickets() == 1
        if caller == "left":  # as the HTTP door's call task, cancelled before it began
            dropped = asyncio.ensure_future(gateway.execute(plan, live))
            dropped.cancel()
            with suppress(asyncio.CancelledError):
                await dropped
        assert gateway.stop_in_flight(STOP) == 1
        await gateway.settled()
        assert gateway.governor.ledger.open_tickets() == 0  # released, not left to expire
        assert [r[1:] for r in _requests(tmp_path)] == [("error", "service_stopped", 503)]
        assert _requests(tmp_path)[0][0] == plan.request_id
        if caller == "waits":
            with pytest.raises(ServiceStoppingError) as info:
                await gateway.execute(plan, live)
            assert isinstance(info.value.info, CallInfo)
            assert info.value.info.request_id == plan.request_id
        with pytest.raises(ServiceStoppingError, match="drain ran out"):
            await gateway.acomplete([{"role": "user", "content": "and now?"}], model="good")
        assert [r[1:] for r in _requests(tmp_path)] == [("error", "service_stopped", 503)] * 2
        assert fake.requests() == []
        assert gateway.governor.ledger.open_tickets() == 0
    finally:
        await gateway.aclose()
    _, open_holds, stale = load_state(tmp_path / "data" / DB_FILENAME)
    assert open_holds == [] and stale == []
