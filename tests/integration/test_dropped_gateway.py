"""A gateway its program drops without closing is collected at once, whatever it did last and
whatever its threads do meanwhile: none of them holds it, so it is closed as it goes (with a
ResourceWarning), and ``data_dir``'s lock is let go for the next one."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchpoint import Gateway
from switchpoint.gateway.housekeeping import Housekeeping
from switchpoint.gateway.parsing import check_chat_body
from switchpoint.gateway.planning import ChatCall
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text
from tests.integration.servers import until


def _messages() -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Tell me about failover [{uuid.uuid4().hex[:8]}]"}]


async def _use(gateway: Gateway, last: str) -> None:
    """What the program did last with ``gateway`` before dropping it."""
    if last == "plan":  # planned, never executed
        call = ChatCall(body=check_chat_body({"model": "good", "messages": _messages()}),
                        caller="test")
        await gateway.plan(call)
    elif last == "acomplete":
        await gateway.acomplete(_messages(), model="good")
    elif last == "stream":
        async for _ in await gateway.astream(_messages(), model="good"):
            pass
    elif last == "acompare":
        await gateway.acompare(_messages(), models=["good", "cheap"])


@pytest.fixture
def housekeeping_held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Each housekeeping run stays under way until the event is set (set at the end)."""
    release = threading.Event()
    run = Housekeeping.run

    def held(self: Housekeeping, purge: bool, retention_days: float | None) -> None:
        release.wait(30)
        run(self, purge, retention_days)

    monkeypatch.setattr(Housekeeping, "run", held)
    yield release
    release.set()


@pytest.mark.parametrize("last", ["nothing", "plan", "acomplete", "stream", "acompare"])
@pytest.mark.parametrize("loop_state", ["running", "closed"])
def test_a_gateway_dropped_unclosed_is_collected_at_once_while_its_housekeeping_runs(
        gw_fake: FakeProviderProcess, tmp_path: Path, housekeeping_held: threading.Event,
        last: str, loop_state: str) -> None:
    """Dropped with its housekeeping run under way (the first request starts one), on its loop
    still running or closed, the gateway is collected while that run is under way and closed as
    it goes, where the run's thread held it (through the settings and lock it reads) until the
    run ended, so a collection meanwhile left it, unclosed, for a later one."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(tmp_path / "data")), encoding="utf-8")
    loop = asyncio.new_event_loop()
    runner = None
    if loop_state == "running":
        runner = threading.Thread(target=loop.run_forever, daemon=True)
        runner.start()
    try:
        gateway = Gateway.from_config(config, loader=FACTORY, env=KEYS)
        if runner is None:
            loop.run_until_complete(_use(gateway, last))
        else:
            asyncio.run_coroutine_threadsafe(_use(gateway, last), loop).result(30)
        if last != "nothing":
            assert any(t.name == "switchpoint-housekeeping" and t.is_alive()
                       for t in threading.enumerate())  # (held under way)
        if runner is None:
            loop.close()
        dropped = weakref.ref(gateway)
        with pytest.warns(ResourceWarning, match="dropped without being closed"):
            del gateway
            # (Collected while the run is still held, which holds it 30 s: a comparison's
            # calls on a closed loop may be let go of a moment after it returns, so a few
            # collections are allowed, each 50 ms apart.)
            until(lambda: gc.collect() >= 0 and dropped() is None,
                  "the dropped gateway is collected", timeout=5)
        assert not housekeeping_held.is_set()  # (the run was under way all along)
    finally:
        housekeeping_held.set()
        if runner is not None:
            loop.call_soon_threadsafe(loop.stop)
            runner.join(10)
            loop.close()
    until(lambda: not any(t.name == "switchpoint-gateway-close" and t.is_alive()
                          for t in threading.enumerate()), "the dropped gateway is closed")
    again = Gateway.from_config(config, loader=FACTORY, env=KEYS)  # data_dir's lock is free
    again.close()
