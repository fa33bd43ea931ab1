"""``switchpoint serve --config`` as a user runs it (a subprocess), with a catalog of four
models: the openai client gets answers, and the request log and the session pins survive a
graceful restart and a crash.

Starting the service is most of what these tests cost, so a test that restarts one leaves the
service it restarted running for the next test that only needs one running before it stops it
(:class:`Warm`), which then works on that service's data_dir, each reading only what it made
there."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import KEYS, config_text
from tests.integration.servers import ProcessServer


def openai_client(server: ProcessServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything", max_retries=0,
                         timeout=15)


def log(server: ProcessServer) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(f"{server.base}/v1/router/requests",
                                           params={"limit": 100}).json()["data"]
    return data


def pins_in(path: Path, sessions: list[str]) -> int:
    """How many of the pins of the conversations ``sessions`` (explicit session ids) the file
    at ``path`` holds, as another process reads it."""
    from switchpoint.gateway.sessions import session_key

    keys = [session_key(session, []) for session in sessions]
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            return int(db.execute(
                f"SELECT COUNT(*) FROM session_pins WHERE session_id IN "
                f"({', '.join('?' * len(keys))})", keys).fetchone()[0])
    except sqlite3.Error:  # not there (yet)
        return 0


def start(config: Path, data: Path) -> ProcessServer:
    server = ProcessServer("--config", config, data_dir=data, env=KEYS).start()
    server.wait_ready()
    return server


@dataclass(frozen=True)
class Running:
    """A service running ``--config config`` on ``data``."""

    server: ProcessServer
    config: Path
    data: Path


class Warm:
    """The service a test restarted and left running (:meth:`hand_on`), which the next test
    that needs one running takes (:meth:`take`) instead of starting its own."""

    def __init__(self) -> None:
        self._left: Running | None = None

    def take(self, fake: FakeProviderProcess, tmp_path: Path) -> Running:
        """The service left running, else one started on a fresh data_dir in ``tmp_path``."""
        left, self._left = self._left, None
        if left is not None and left.server.proc is not None and left.server.proc.poll() is None:
            return left
        config = tmp_path / "switchpoint.yaml"
        data = tmp_path / "data"
        config.write_text(config_text(fake, str(data)), encoding="utf-8")
        return Running(start(config, data), config, data)

    @contextlib.contextmanager
    def hand_on(self, running: Running) -> Iterator[ProcessServer]:
        """Yield ``running``'s server; left running for the next test if the block ends
        well, else stopped."""
        try:
            yield running.server
        except BaseException:
            running.server.terminate()
            raise
        self.close()
        self._left = running

    def close(self) -> None:
        if self._left is not None:
            self._left.server.terminate()
            self._left = None


@pytest.fixture(scope="module")
def warm() -> Iterator[Warm]:
    kept = Warm()
    try:
        yield kept
    finally:
        kept.close()


def test_the_request_log_and_pins_survive_restart_and_crash(
        gw_fake: FakeProviderProcess, tmp_path: Path, warm: Warm) -> None:
    """... and serve makes the data_dir it makes, and each file in it, its owner's alone."""
    config = tmp_path / "switchpoint.yaml"
    data = tmp_path / "fresh" / "data"
    config.write_text(config_text(gw_fake, str(data)), encoding="utf-8")
    session = {"x-session-id": f"restart-{uuid.uuid4().hex}"}
    with start(config, data) as server:  # serve opens the request log before anything else
        c = openai_client(server)
        answer = c.chat.completions.create(model="auto", messages=[
            {"role": "user", "content": "Name three prime numbers."}])
        assert answer.model in {"good", "other", "cheap", "fresh"}
        assert data.stat().st_mode & 0o777 == 0o700
        modes = {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()}
        assert "switchpoint.db" in modes and set(modes.values()) == {0o600}, modes
        text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="good", messages=[{"role": "user", "content": "Stream it"}], stream=True)
            if ch.choices)
        assert text.startswith("Echo from good: Stream it")
        gw_fake.script("good", "content_filter")
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="good", messages=[{"role": "user",
                                                               "content": "filtered"}])
        pinned = c.chat.completions.create(model="cheap", extra_headers=session, messages=[
            {"role": "user", "content": "Remember me"}])
        assert pinned.model == "cheap"
        before = log(server)
        assert [e["status"] for e in before] == ["ok", "error", "ok", "ok"]
        code, err = server.terminate()
        assert code == 0, err  # it stopped as it was told to

    with start(config, data) as server:
        assert log(server) == before  # every field of every entry, after a graceful restart
        stats = httpx.get(f"{server.base}/v1/router/stats").json()["requests"]
        assert stats["total"] == 4 and stats["ok"] == 3 and stats["errors"] == 1
        # The pin survived too: price-first routing would pick `fresh`, the pin keeps `cheap`.
        again = openai_client(server).chat.completions.with_raw_response.create(
            model="auto", extra_headers={**session, "x-switchpoint-cost-weight": "1000"},
            messages=[{"role": "user", "content": "Remember me"},
                      {"role": "user", "content": "Still there?"}])
        assert again.parse().model == "cheap" and again.headers["x-switchpoint-pin"] == "hard"
        request_id = again.headers["x-switchpoint-request-id"]
        raw = openai_client(server).chat.completions.with_raw_response.create(
            model="good", messages=[{"role": "user", "content": "Stream, then crash"}],
            stream=True)
        streamed = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
        assert streamed.startswith("Echo from good: Stream, then crash")
        stream_id = raw.headers["x-switchpoint-request-id"]
        server.kill()  # a crash right after [DONE]: both answers were already committed

    with warm.hand_on(Running(start(config, data), config, data)) as server:
        entries = log(server)
        assert entries[0]["id"] == stream_id and entries[0]["status"] == "ok"
        assert entries[0]["model"] == "good" and entries[0]["stream"] is True
        assert entries[1]["id"] == request_id and entries[1]["pin_state"] == "hard"
        assert len(entries) == 6


def test_the_state_switchpoint_makes_is_its_owners_alone(gw_fake: FakeProviderProcess,
                                                         tmp_path: Path) -> None:
    from switchpoint.config import load_settings
    from switchpoint.gateway import Gateway
    from tests.integration.gateway_env import FACTORY

    config = tmp_path / "switchpoint.yaml"
    data = tmp_path / "made" / "data"
    config.write_text(config_text(gw_fake, str(data)), encoding="utf-8")
    with Gateway(load_settings(config, environ={}), loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        gateway.route("What is 2 + 2?")
        gateway.governor.keys.list()  # opens keys.db
        assert data.stat().st_mode & 0o777 == 0o700
        made = sorted(p.name for p in data.iterdir() if p.suffix == ".db")
        assert {"switchpoint.db", "sessions.db", "keys.db"} <= set(made)
        assert {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()} == {
            p.name: 0o600 for p in data.iterdir()}


@pytest.mark.parametrize("how", ["deleted", "deleted_alone", "deleted_then_crash", "replaced"])
def test_session_pins_deleted_or_replaced_under_the_service_survive_a_restart(
        gw_fake: FakeProviderProcess, tmp_path: Path, warm: Warm, how: str) -> None:
    """``sessions.db`` deleted (with its ``-wal`` and ``-shm``, or alone, leaving them behind)
    or replaced (a backup moved over it) while the service runs: the pins made before and
    after it, and those of the file now at the path, are all there after a restart (a
    graceful one, or one after a crash once the pin made after is written)."""
    from switchpoint.gateway.sessions import Pin, SQLitePinStore, session_key

    running = warm.take(gw_fake, tmp_path)
    config, data = running.config, running.data
    tag = uuid.uuid4().hex
    before, after, restored = (f"{name}-{tag}" for name in ("before", "after", "restored"))
    expected = {before: "cheap", after: "good"}
    pins = data / "sessions.db"
    with running.server as server:
        c = openai_client(server)
        assert c.chat.completions.create(model="cheap", extra_headers={"x-session-id": before},
                                         messages=[{"role": "user", "content": "hi"}]
                                         ).model == "cheap"
        if how == "replaced":  # a backup holding another conversation's pin, moved over it
            backup = SQLitePinStore(tmp_path / "backup.db")
            backup.put(str(session_key(restored, [])), Pin("other", time.time()))
            backup.close()
            os.replace(tmp_path / "backup.db", pins)  # (the old -wal and -shm stay behind)
            expected[restored] = "other"
        else:
            for suffix in ("",) if how == "deleted_alone" else ("", "-wal", "-shm"):
                Path(f"{pins}{suffix}").unlink()
        assert c.chat.completions.create(model="good", extra_headers={"x-session-id": after},
                                         messages=[{"role": "user", "content": "hi"}]
                                         ).model == "good"
        if how == "deleted_then_crash":
            deadline = time.monotonic() + 15
            # Both written behind the answers, into the new file, and the move said (it is
            # logged just after the pins it moved are committed).
            while (pins_in(pins, [before, after]) < 2
                   or "sessions.db was deleted" not in server.stderr):
                assert time.monotonic() < deadline, (pins_in(pins, [before, after]),
                                                     server.stderr)
                time.sleep(0.05)
            server.kill()
            err = server.stderr
        else:
            code, err = server.terminate()
            assert code == 0, err
        said = "deleted" if how != "replaced" else "replaced"
        assert err.count(f"sessions.db was {said} while the service ran") == 1, err

    with warm.hand_on(Running(start(config, data), config, data)) as server:
        c = openai_client(server)
        for session, model in expected.items():
            # Price-first routing would pick `fresh`: the pin keeps the session where it was.
            again = c.chat.completions.with_raw_response.create(
                model="auto", extra_headers={"x-session-id": session,
                                             "x-switchpoint-cost-weight": "1000"},
                messages=[{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}])
            assert (session.split("-")[0], again.parse().model,
                    again.headers["x-switchpoint-pin"]) == (session.split("-")[0], model, "hard")
        with contextlib.closing(sqlite3.connect(pins)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# (after the pins' tests, so that the first takes the service they leave running, and the
# case that restarts before the one that leaves none)
@pytest.mark.parametrize("how", ["wal", "deleted", "replaced"])
def test_a_request_log_deleted_or_replaced_under_the_service_is_said_so_on_read(
        gw_fake: FakeProviderProcess, tmp_path: Path, warm: Warm, how: str) -> None:
    """Reads of a log whose file was deleted (or replaced, or whose -wal was deleted) under
    the running service say so and that a restart is needed, not that the disk may be full
    or a lock held."""
    running = warm.take(gw_fake, tmp_path)
    config, data = running.config, running.data
    with running.server as server:
        earlier = [e["id"] for e in log(server)]
        made = openai_client(server).chat.completions.with_raw_response.create(
            model="good", messages=[{"role": "user", "content": "hello"}])
        logged = [e["id"] for e in log(server)]
        assert logged == [made.headers["x-switchpoint-request-id"], *earlier][:100]
        db = data / "switchpoint.db"
        for suffix in ("-wal",) if how == "wal" else ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if how == "replaced":
            db.write_bytes(b"")  # an empty file now at the path (a restore gone wrong, say)
        said = "had its -wal file deleted" if how == "wal" else f"was {how}"
        for path in ("/v1/router/requests", "/v1/router/stats"):
            answer = httpx.get(f"{server.base}{path}", timeout=15)
            assert answer.status_code == 503, answer.text
            message = answer.json()["error"]["message"]
            assert f"switchpoint.db in data_dir {said}" in message, message
            assert "restart" in message, message
            assert "disk is full" not in message and "lock" not in message, message
            assert "Retry-After" not in answer.headers  # waiting does not mend it
            # no path of the server's
            assert str(config.parent) not in message and str(tmp_path) not in message
        code, err = server.terminate()
        assert code == 0, err
    if how == "wal":  # the log it had was written into the file: the request is still there
        with warm.hand_on(Running(start(config, data), config, data)) as server:
            assert [e["id"] for e in log(server)] == logged
