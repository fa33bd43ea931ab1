"""An observer's callback runs on the thread of the loop that serves the gateway's synchronous
calls; a synchronous call made from it (a route, a chat, an outcome, ``close``) would wait for
that loop, which waits for the callback: it is refused at once with ``ReentrantCallError``,
nothing done, and the call the callback tells of ends as it would have. The real gateway over
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
from tests.integration.gateway_env import FACTORY, KEYS, config_text

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
