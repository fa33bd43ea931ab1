"""A half-open circuit's probe slot through the gateway: a model passed over (never called) while
its circuit is half-open leaves the slot free, so the next request to it is its probe."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, client, log_entry, outcomes
from tests.integration.servers import ThreadServer, thread_server

COOLDOWN_S = 0.3


def probe_config(fake: FakeProviderProcess, data: Path) -> str:
    """``big`` falls back to ``small`` (a smaller context window) and then ``last``."""
    return f"""models:
  - {{name: big, tier: simple, base_url: "{fake.openai_base_url}", context_window: 32000,
     input_per_mtok: 1, output_per_mtok: 1, fallbacks: [small, last]}}
  - {{name: small, tier: simple, base_url: "{fake.openai_base_url}", context_window: 8000,
     input_per_mtok: 1, output_per_mtok: 1}}
  - {{name: last, tier: simple, base_url: "{fake.openai_base_url}", context_window: 100000,
     input_per_mtok: 1, output_per_mtok: 1}}
data_dir: {data}
gateway:
  connect_timeout_s: 1
  read_timeout_s: 1
  first_token_timeout_s: 1
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  failure_threshold: 1
  cooldown_s: {COOLDOWN_S}
  max_cooldown_s: {COOLDOWN_S}
"""


@pytest.fixture()
def probing(tmp_path: Path) -> Iterator[tuple[ThreadServer, FakeProviderProcess]]:
    with FakeProviderProcess() as fake:
        config = tmp_path / "switchpoint.yaml"
        config.write_text(probe_config(fake, tmp_path / "data"), encoding="utf-8")
        settings = load_settings(config, environ={})
        with thread_server(create_app(settings, loader=FACTORY, provider_env={})) as server:
            yield server, fake


def user() -> list[Any]:
    return [{"role": "user", "content": f"Name a prime. [{uuid.uuid4().hex[:8]}]"}]


def circuit(server: ThreadServer, model: str) -> str:
    health = httpx.get(f"{server.base}/v1/router/health").json()
    return str(health["models"][model]["circuit"])


def assert_opened_by_its_failure(server: ThreadServer, model: str) -> None:
    """``model``'s circuit opened at its last failure: open, or half-open once the cooldown
    since that failure has run out by the service's own clock (the age of the error it
    recorded), as it has on a host too busy to ask within the cooldown."""
    health = httpx.get(f"{server.base}/v1/router/health").json()["models"][model]
    age = health["recent_errors"][0]["age_s"]
    expected = ({"open"} if age < COOLDOWN_S - 0.01 else
                {"half_open"} if age > COOLDOWN_S + 0.01 else {"open", "half_open"})
    assert health["circuit"] in expected, health


def test_a_half_open_model_passed_over_for_its_context_window_is_probed_next(
        probing: tuple[ThreadServer, FakeProviderProcess]) -> None:
    server, fake = probing
    fake.script("small", "500")  # small's circuit opens at its first failure
    with pytest.raises(openai.APIStatusError):
        client(server).chat.completions.create(model="small", messages=user())
    assert_opened_by_its_failure(server, "small")
    deadline = time.monotonic() + 30
    while circuit(server, "small") != "half_open":
        assert time.monotonic() < deadline, "small's circuit never went half-open"
        time.sleep(COOLDOWN_S / 3)
    # big's context is exceeded: small, no larger, is passed over (not called); last answers.
    fake.script("big", "context_length")
    answer = client(server).chat.completions.with_raw_response.create(model="big",
                                                                      messages=user())
    assert answer.parse().model == "last"
    entry = log_entry(server, answer.headers["x-switchpoint-request-id"])
    assert outcomes(entry) == [("big", "context_length_exceeded"),
                               ("small", "context_too_small"), ("last", "ok")]
    assert circuit(server, "small") == "half_open"
    # The next request to small is its probe (not refused until a probe timeout runs out),
    # and its answer closes the circuit.
    again = client(server).chat.completions.create(model="small", messages=user())
    assert again.model == "small"
    assert circuit(server, "small") == "closed"


def test_a_request_let_through_before_the_circuit_opened_gives_back_no_probe_slot_it_never_held(
        tmp_path: Path) -> None:
    """A request let through while the circuit was closed, whose client leaves once the circuit
    has gone half-open and another request is its probe, judges nothing and frees nothing: the
    probe in flight stays the only one, and a third request to the model is refused."""
    with FakeProviderProcess() as fake:
        config = tmp_path / "switchpoint.yaml"
        text = probe_config(fake, tmp_path / "data")
        config.write_text(text.replace("read_timeout_s: 1", "read_timeout_s: 10")
                          .replace("first_token_timeout_s: 1", "first_token_timeout_s: 10"),
                          encoding="utf-8")
        settings = load_settings(config, environ={})
        with thread_server(create_app(settings, loader=FACTORY, provider_env={})) as server:
            def send(content: str, timeout: float) -> None:
                payload = {"model": "small", "messages": [{"role": "user", "content": content}]}
                with contextlib.suppress(httpx.TimeoutException):  # (the client leaves)
                    httpx.post(f"{server.base}/v1/chat/completions", json=payload,
                               timeout=timeout)

            # The straggler: let through while closed; its client leaves after 1.5 s.
            straggler = threading.Thread(target=send, args=(
                f"[[fake:hold:seconds=8]] straggler {uuid.uuid4().hex[:8]}", 1.5))
            straggler.start()
            time.sleep(0.2)
            fake.script("small", "500")  # the circuit opens at this failure
            with pytest.raises(openai.APIStatusError):
                client(server).chat.completions.create(model="small", messages=user())
            deadline = time.monotonic() + 30
            while circuit(server, "small") != "half_open":
                assert time.monotonic() < deadline, "small's circuit never went half-open"
                time.sleep(COOLDOWN_S / 3)
            # The probe: holds the slot (its model answers nothing for 8 s) until its client
            # leaves, once the third request has been refused.
            body = json.dumps({"model": "small", "messages": [{"role": "user", "content": (
                f"[[fake:hold:seconds=8]] probe {uuid.uuid4().hex[:8]}")}]}).encode()
            probe = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            try:
                probe.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: application/json\r\n"
                              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                straggler.join()
                time.sleep(0.5)  # (the gateway sees the straggler's client gone)
                with pytest.raises(openai.APIStatusError) as refused:
                    client(server).chat.completions.create(model="small", messages=user())
                entry = log_entry(server,
                                  refused.value.response.headers["x-switchpoint-request-id"])
                assert outcomes(entry) == [("small", "circuit_open")]
            finally:
                probe.close()  # the probe's client leaves
