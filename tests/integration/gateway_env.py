"""The gateway's test world: a fake provider process, a catalog pointing at it, a real
switchpoint server, and the official ``openai`` client against it.

The catalog holds the issue's ``good`` entry verbatim (the fake listens on 127.0.0.1:9100 when
that port is free; otherwise the port in that one line is the fake's), its fallback ``other``
served through the Anthropic Messages adapter, ``cheap`` (small context, no vision) and
``fresh``, which has no learned profile and is routed by its tier and price.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai

from switchpoint.config import DB_FILENAME, load_settings
from switchpoint.gateway.live import RouterFactory
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess, reserved_ports
from tests.integration.servers import ThreadServer, thread_server, until

if TYPE_CHECKING:
    from switchpoint.gateway import Gateway

ISSUE_PORT = 9100
GOOD_LINE = ('  - {name: good, profile: gpt-4-1106-preview, base_url: "http://127.0.0.1:9100/v1", '
             'api_key_env: GOOD_KEY, input_per_mtok: 10, output_per_mtok: 30, '
             'context_window: 128000, capabilities: [tools, vision], fallbacks: [other]}')
KEYS = {"GOOD_KEY": "sk-good-test", "OTHER_KEY": "sk-ant-other-test",
        "CHEAP_KEY": "sk-cheap-test"}
# Short enough that the whole gateway suite runs in well under a minute.
GATEWAY = """gateway:
  connect_timeout_s: 1
  read_timeout_s: 0.5
  first_token_timeout_s: 0.5
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  max_retry_after_s: 2
  max_total_s: 10
"""
# One factory for every gateway server of the session: MiniLM loads once.
FACTORY = RouterFactory()


def start_fake() -> FakeProviderProcess:
    """The fake provider on the issue's port 9100 if it is free (and among the ports
    ``$SWITCHPOINT_TEST_PORTS`` reserves, when it names some), else on any free port."""
    reserved = reserved_ports()
    if reserved is None or ISSUE_PORT in reserved:
        try:
            return FakeProviderProcess(port=ISSUE_PORT).start()
        except RuntimeError:
            pass
    return FakeProviderProcess().start()


def config_text(fake: FakeProviderProcess, data_dir: str = "data", gateway: str = GATEWAY) -> str:
    good = GOOD_LINE.replace("127.0.0.1:9100", f"127.0.0.1:{fake.port}")
    return f"""models:
{good}
  - {{name: other, provider: anthropic, profile: claude-v2, base_url: "{fake.url}",
     api_key_env: OTHER_KEY, upstream_model: claude-fake-2, input_per_mtok: 8,
     output_per_mtok: 24, context_window: 200000, capabilities: [tools, vision]}}
  - {{name: cheap, profile: gpt-3.5-turbo-1106, base_url: "{fake.openai_base_url}",
     api_key_env: CHEAP_KEY, input_per_mtok: 0.5, output_per_mtok: 1.5, context_window: 16000,
     capabilities: [tools], fallbacks: [good]}}
  - {{name: fresh, base_url: "{fake.openai_base_url}", input_per_mtok: 0.05,
     output_per_mtok: 0.1, context_window: 8000, tier: simple}}
data_dir: {data_dir}
{gateway}"""


@contextmanager
def gateway_server(fake: FakeProviderProcess, root: Path,
                   gateway: str = GATEWAY) -> Iterator[ThreadServer]:
    """The test world's server in front of ``fake``, its config's ``gateway`` section
    ``gateway``."""
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake, gateway=gateway), encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


def fresh_health(server: ThreadServer) -> None:
    """Forget every model's health (tests must not open each other's circuits)."""
    server.service.gateway.reset_health()


def client(server: ThreadServer, key: str = "sk-anything", *, timeout: float = 15,
           **kw: Any) -> openai.OpenAI:
    """The official client against ``server``, with ``key`` (a client key where keys are on)."""
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0,
                         timeout=timeout, **kw)


def new_key(server: ThreadServer, admin: Mapping[str, str], tenant: str, **body: Any) -> str:
    """A client key of ``tenant`` made through the admin API (``admin``: its headers)."""
    r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": tenant, **body},
                   headers=dict(admin), timeout=10)
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def user(text: str) -> list[Any]:
    """A one-turn conversation whose first message is unique (so its session is new)."""
    return [{"role": "user", "content": f"{text} [{uuid.uuid4().hex[:8]}]"}]


def async_client(server: ThreadServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base}/v1", api_key="sk-anything",
                              max_retries=0, timeout=15)


def log_entry(server: ThreadServer, request_id: str, timeout: float = 5.0,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The request log entry of ``request_id`` (a stream's is written as its body ends);
    ``headers`` carry the admin token where one is set."""
    deadline = time.monotonic() + timeout
    while True:
        page = httpx.get(f"{server.base}/v1/router/requests", params={"limit": 100},
                         headers=headers).json()
        for entry in page["data"]:
            if entry["id"] == request_id:
                return dict(entry)
        if time.monotonic() > deadline:
            raise AssertionError(f"request {request_id} is not in the log")
        time.sleep(0.02)


def last_entry(server: ThreadServer, timeout: float = 5.0, after: int = 0) -> dict[str, Any]:
    """The newest log entry with a ``seq`` above ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        data = httpx.get(f"{server.base}/v1/router/requests", params={"limit": 1}).json()["data"]
        if data and data[0]["seq"] > after:
            return dict(data[0])
        if time.monotonic() > deadline:
            raise AssertionError("no new request log entry")
        time.sleep(0.02)


def last_seq(server: ThreadServer) -> int:
    data = httpx.get(f"{server.base}/v1/router/requests", params={"limit": 1}).json()["data"]
    return int(data[0]["seq"]) if data else 0


def outcomes(entry: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["model"], a["outcome"]) for a in entry["attempts"]]


def in_background(call: Callable[[], Coroutine[Any, Any, object]]
                  ) -> tuple[threading.Thread, list[object]]:
    """``call()`` run to its end on a thread of its own, on an event loop of its own: the
    thread, started, and a list that takes what it returned or the exception it raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(call()))
        except Exception as exc:  # (the caller tells)
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def closing_in_background(gateway: Gateway) -> tuple[threading.Thread, threading.Event]:
    """``gateway.close()`` on a thread of its own, begun (new requests refused) on return;
    the event is set once it has returned."""
    closed = threading.Event()

    def close() -> None:
        gateway.close()
        closed.set()

    closer = threading.Thread(target=close)
    closer.start()
    until(lambda: gateway._admission.is_shut, "closing has begun")
    return closer, closed


def db_rows(data: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` in the database of ``data`` (a data_dir), read only."""
    with closing(sqlite3.connect(f"{(data / DB_FILENAME).as_uri()}?mode=ro", uri=True)) as db:
        return db.execute(sql, args).fetchall()
