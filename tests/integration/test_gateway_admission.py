"""Closing counts every request: a synchronous call let in before closing began is waited for,
not refused as its turn on the gateway's own loop comes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from switchpoint import Gateway
from switchpoint.errors import StoreError
from switchpoint.gateway import ChatCompletion
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    FACTORY,
    KEYS,
    closing_in_background,
    config_text,
    db_rows,
    user,
)


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
