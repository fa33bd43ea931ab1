"""An observer's callback runs on the thread of the loop that serves the gateway's synchronous
calls; a synchronous call made from it (a route, a chat, an outcome, ``close``) would wait for
that loop, which waits for the callback: it is refused at once with ``ReentrantCallError``,
nothing done, and the call the callback tells of ends as it would have. A callback that raises
is logged, and the call it tells of goes on. The real gateway over
the fake provider, on SQLite."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchpoint.decision import RoutingDecision
from switchpoint.errors import ReentrantCallError
from switchpoint.gateway import Gateway
from switchpoint.store.sqlite import RequestRecord
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text, db_rows

HANG_S = 60  # far beyond any call here: past it, the call is waiting for itself


def messages() -> list[dict[str, Any]]:
    """A new conversation each time (one the gateway saw would follow its pin, unrouted)."""
    return [{"role": "user", "content": f"Say hi. [{uuid.uuid4().hex[:8]}]"}]


class Calling:
    """An observer that makes one call (``then``) from the callback named ``on``."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.on = ""
        self.then: Callable[[Gateway], object] | None = None
        self.raised: list[BaseException] = []

    def _call(self, on: str) -> None:
        then, self.then = (self.then, None) if self.on == on else (None, self.then)
        if then is not None and self.gateway is not None:
            try:
                then(self.gateway)
            except BaseException as exc:
                self.raised.append(exc)

    def on_request(self, record: RequestRecord) -> None:
        self._call("request")

    def on_decision(self, decision: RoutingDecision) -> None:
        self._call("decision")

    def on_store_error(self) -> None:
        pass


@pytest.fixture(scope="module")
def observed(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Gateway, Calling]]:
    data_dir: Path = tmp_path_factory.mktemp("reentrant")
    observer = Calling()
    config = yaml.safe_load(config_text(gw_fake, data_dir=str(data_dir)))
    with Gateway.from_config(config, loader=FACTORY, env=KEYS, observer=observer) as gateway:
        observer.gateway = gateway
        yield gateway, observer


INNER: dict[str, Callable[[Gateway], object]] = {
    "route": lambda g: g.route("Again?"),
    "complete": lambda g: g.complete(messages()),
    "stream": lambda g: list(g.stream(messages())),
    "report_outcome": lambda g: g.report_outcome(g.route("seed").decision_id, 0.5),
    "close": lambda g: g.close(),
}


@pytest.mark.parametrize("inner", list(INNER))
@pytest.mark.parametrize("on", ["decision", "request"])
def test_a_synchronous_call_from_an_observer_callback_is_refused_not_waited_for_ever(
        observed: tuple[Gateway, Calling], on: str, inner: str) -> None:
    """(It waited for ever: the loop ran the callback that waited for the loop.)"""
    gateway, observer = observed
    observer.raised.clear()
    observer.on, observer.then = on, INNER[inner]
    answer: list[Any] = []
    outer = threading.Thread(target=lambda: answer.append(gateway.complete(messages())),
                             daemon=True)
    outer.start()
    outer.join(HANG_S)
    assert not outer.is_alive(), f"{inner} from on_{on} waited for itself"
    assert len(observer.raised) == 1 and isinstance(observer.raised[0], ReentrantCallError)
    assert "another thread" in str(observer.raised[0])
    assert answer and answer[0].choices[0].message.content  # the call told of went on
    assert gateway.route("Still open?").selected_model  # nothing was closed


class Raising:
    """An observer each of whose callbacks raises, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_request(self, record: RequestRecord) -> None:
        self.calls.append(f"request {record.status}")
        raise RuntimeError("on_request broke")

    def on_decision(self, decision: RoutingDecision) -> None:
        self.calls.append("decision")
        raise ValueError("on_decision broke")

    def on_store_error(self) -> None:
        raise RuntimeError("on_store_error broke")


def test_an_observer_callback_that_raises_is_logged_and_the_call_goes_on(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
        ) -> None:
    """(Its error ended the call it told of: an answer the upstream gave, and was paid for,
    was lost, the request went unlogged, and the caller got the observer's ValueError.)"""
    observer = Raising()
    config = yaml.safe_load(config_text(gw_fake, data_dir=str(tmp_path / "data")))
    with caplog.at_level("ERROR", logger="switchpoint.gateway"), Gateway.from_config(
            config, loader=FACTORY, env=KEYS, observer=observer) as gateway:
        reply = gateway.complete(messages(), model="auto")
        assert reply.choices[0].message.content.startswith("Echo from ")
        chunks = list(gateway.stream(messages(), model="good"))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert gateway.route("Routed?").selected_model in {"good", "other", "cheap", "fresh"}
    # Each answered request logged (closing waited for the writes), as it was told of.
    assert db_rows(tmp_path / "data", "SELECT status FROM requests") == [("ok",)] * 2
    assert observer.calls.count("decision") == 2  # (auto's, and the route's)
    assert observer.calls.count("request ok") == 2
    told = [r.getMessage() for r in caplog.records if "observer raised" in r.getMessage()]
    assert "the gateway's observer raised ValueError in on_decision; the gateway went on " \
           "without it" in told
    assert any(m.startswith("the gateway's observer raised RuntimeError in on_request")
               for m in told)
