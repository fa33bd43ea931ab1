"""A long database outage then ``kill -9``: ``switchpoint serve`` as a user runs it (a
subprocess), another process holding the database's write lock, a small spill file, requests
in flight when it fills, a crash, a restart: every answered request is in the log."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchpoint.store.sqlite import SPILL_PER_REQUEST
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.held_lock import held_lock
from tests.integration.gateway_env import config_text
from tests.integration.learning_env import serve
from tests.integration.servers import ProcessServer

CONNECTIONS = 4
# Room for a few answers before the gateway closes its door, and the reserve for the
# requests that may be in flight then (the connection cap) beside it.
SPILL_MB = 2 * CONNECTIONS * SPILL_PER_REQUEST / 2**20
# The two slow answers wait at the provider for a third request, sent once the door is closed.
HELD = "[[fake:together:n=3,seconds=60]]"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess() as fake:  # it binds a free port itself and says which
        yield fake


def _chat(server: ProcessServer, prompt: str) -> httpx.Response:
    return httpx.post(f"{server.base}/v1/chat/completions", timeout=120, json={
        "model": "auto", "messages": [{"role": "user", "content": prompt}]})


def _logged(db: Path, ids: list[str]) -> set[str]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute(
            f"SELECT id FROM requests WHERE id IN ({', '.join('?' for _ in ids)})", ids)}
    finally:
        conn.close()


def test_requests_in_flight_when_the_spill_file_fills_survive_kill_9(
        provider: FakeProviderProcess, tmp_path: Path) -> None:
    """The gateway turns new requests away once the spill file reaches its limit less a
    reserve for the requests in flight (one per connection): two slow answers under way then
    are added to the reserve before they are answered, so a crash before the database takes
    writes again loses none of them (they waited in memory only, and a crash lost them)."""
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    text = (config_text(provider, str(data))
            .replace("read_timeout_s: 0.5", "read_timeout_s: 60")
            .replace("first_token_timeout_s: 0.5", "first_token_timeout_s: 60")
            .replace("max_total_s: 10", "max_total_s: 120"))
    config.write_text(text + f"store: {{spill_max_mb: {SPILL_MB}}}\n"
                      f"server: {{max_connections: {CONNECTIONS}}}\n", encoding="utf-8")
    db = data / "switchpoint.db"
    spill = db.with_name(db.name + ".unwritten.jsonl")
    server = serve(config, data)
    answered: list[str] = []
    try:
        assert _chat(server, "Say hello.").status_code == 200  # the schema is there
        with held_lock(db):
            slow: list[httpx.Response] = []
            done_at: list[float] = []

            def call_slow(n: int) -> None:
                # Answered only once the test's own call below meets them at the provider.
                slow.append(_chat(server, f"Tell a story {n}. {HELD}"))
                done_at.append(time.monotonic())

            threads = [threading.Thread(target=call_slow, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            refused_at = None
            for n in range(200):
                r = _chat(server, f"What is {n} plus {n}?")
                if r.status_code == 503:
                    refused_at = time.monotonic()
                    assert r.json()["error"]["code"] == "storage_unavailable"
                    break
                assert r.status_code == 200, r.text
                answered.append(r.headers["x-switchpoint-request-id"])
            assert refused_at is not None, "the spill file never filled"
            # The door is closed: let the two slow answers go (a third caller they waited for,
            # straight to the provider).
            met = httpx.post(f"{provider.openai_base_url}/chat/completions", timeout=120, json={
                "model": "meeting", "messages": [{"role": "user", "content": HELD}]})
            assert met.status_code == 200, met.text
            for t in threads:
                t.join(timeout=120)
            assert [r.status_code for r in slow] == [200, 200]
            assert min(done_at) > refused_at  # in flight when the gateway closed its door
            assert spill.stat().st_size <= SPILL_MB * 2**20  # they fit in the reserve
            answered += [r.headers["x-switchpoint-request-id"] for r in slow]
            server.kill()  # a crash while the database still refuses writes
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    server = serve(config, data)  # the lock is let go: the spill file is written
    try:
        assert not spill.exists()
        assert _logged(db, answered) == set(answered)
    finally:
        server.terminate()
