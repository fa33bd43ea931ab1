"""Signals to ``switchpoint serve`` as an operator sends them (``kill -HUP``): the service in a
subprocess, as a user runs it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import KEYS, config_text
from tests.integration.servers import LISTENING, ProcessServer, wait_ready

ADDED = ('  - {name: added, base_url: "http://127.0.0.1:9/v1", input_per_mtok: 1, '
         'output_per_mtok: 1, tier: simple}\n')

# A provider key pasted where a number goes: the error quotes the value.
LEAKED = "sk-proj-" + "Q" * 40


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_sighup_reloads_the_config_and_a_broken_one_leaves_the_running_one_serving(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``SIGHUP`` reloads the config as ``POST /v1/router/reload`` does (it ended the process
    at once, dropping what it had in flight unlogged); a config that cannot load is logged
    with its key (and redacted, as the HTTP reload's answer is), and the running one keeps
    serving."""
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    text = config_text(fake, str(data))
    config.write_text(text, encoding="utf-8")
    server = ProcessServer("--config", config, "--log-level", "info", data_dir=data,
                           env=KEYS).start()
    assert server.proc is not None
    try:
        server.wait_ready()

        def models() -> list[str]:
            listed = httpx.get(f"{server.base}/v1/models", timeout=10).json()["data"]
            return [m["id"] for m in listed]

        assert "added" not in models()
        config.write_text(text.replace("data_dir:", ADDED + "data_dir:"), encoding="utf-8")
        server.proc.send_signal(signal.SIGHUP)
        _until(lambda: "SIGHUP: config reloaded" in server.stderr, "reloaded on SIGHUP")
        assert server.proc.poll() is None
        assert "added" in models()

        config.write_text(text + f"cost_weight: {LEAKED}\n", encoding="utf-8")
        server.proc.send_signal(signal.SIGHUP)
        _until(lambda: "SIGHUP: the config was not reloaded" in server.stderr,
               "a broken config refused")
        assert "cost_weight" in server.stderr.split("SIGHUP: the config was not reloaded")[1]
        assert LEAKED not in server.stderr  # a secret pasted in the wrong place is redacted
        assert server.proc.poll() is None
        assert "added" in models()  # the running config still serves
        code, err = server.terminate()
        assert code == 0, err  # it stopped as it was told to
    finally:
        if server.proc.poll() is None:
            server.kill()


# A gateway slow enough for a stream to be in flight when the service is told to stop: a chunk
# every 0.2 s of a long answer (some 40 s in all, far past each test's drain and signals), well
# within the read timeout.
SLOW_GATEWAY = """gateway:
  connect_timeout_s: 2
  read_timeout_s: 30
  first_token_timeout_s: 30
  max_total_s: 120
"""
SLOW_PROMPT = "[[fake:ok:chunk_delay=0.2]] " + " ".join(f"word{i}" for i in range(200))


def _slow_stream_server(fake: FakeProviderProcess, tmp_path: Path,
                        drain_s: float) -> tuple[ProcessServer, Path]:
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(fake, str(data), gateway=SLOW_GATEWAY)
                      + f"server: {{shutdown_timeout_s: {drain_s}}}\n"
                      + "budgets: {models: {good: 50/day}}\n", encoding="utf-8")
    # (at info, the service says when it begins to stop: a test waits for it, not a while)
    server = ProcessServer("--config", config, "--log-level", "info", data_dir=data,
                           env=KEYS).start()
    server.wait_ready()
    return server, data


def _draining(server: ProcessServer) -> None:
    """Wait until ``server``, told to stop, has begun its drain (it logs it)."""
    _until(lambda: ": stopping; requests in flight may finish for " in server.stderr,
           "the drain begins")


def _stream_in_flight(server: ProcessServer) -> tuple[threading.Thread, list[object]]:
    """A streamed request to ``good`` read in a thread; what it got (lines, or the error)."""
    got: list[object] = []

    def read() -> None:
        try:
            with httpx.stream("POST", f"{server.base}/v1/chat/completions", timeout=60,
                              json={"model": "good", "stream": True,
                                    "messages": [{"role": "user",
                                                  "content": SLOW_PROMPT}]}) as answer:
                got.append(answer.status_code)
                for line in answer.iter_lines():
                    got.append(line)
        except httpx.HTTPError as exc:
            got.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _until(lambda: sum(1 for g in got if isinstance(g, str) and g.startswith("data:")) >= 3,
           "the stream is under way")
    return reader, got


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def _assert_ended_by_the_stop(data: Path, err: str, got: list[object]) -> None:
    assert "Traceback" not in err, err
    assert "Exception in ASGI application" not in err, err
    requests = _rows(data / "switchpoint.db",
                     "SELECT id, status, error_kind, error, stream FROM requests")
    assert len(requests) == 1, requests  # logged once
    request_id, status, kind, error, stream = requests[0]
    assert (status, kind, stream) == ("stream_broken", "service_stopped", 1), requests
    assert "stopped" in error and "shutdown_timeout_s" in error, error
    spend = _rows(data / "switchpoint.db",
                  "SELECT kind, amount_usd, model FROM spend WHERE request_id = "
                  f"'{request_id}' ORDER BY seq")
    kinds = [row[0] for row in spend]
    assert kinds[-1] == "settle" and kinds.count("settle") == 1, spend
    assert spend[-1][1] > 0 and spend[-1][2] == "good", spend
    # The client was told, in the stream, why it ended: not a clean [DONE].
    lines = [g for g in got if isinstance(g, str)]
    assert "data: [DONE]" not in lines, lines
    assert any("service_stopped" in line for line in lines), lines


def test_sigterm_ends_a_stream_in_flight_within_the_shutdown_timeout_logged_and_charged(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """On SIGTERM the requests in flight may finish for ``server.shutdown_timeout_s``; then
    those still running are ended by the service: the client gets an error event, the
    request is logged once as broken by the stop, its budget hold is settled, and the process
    exits 0 well before an orchestrator's kill, with no traceback."""
    server, data = _slow_stream_server(fake, tmp_path, drain_s=1)
    assert server.proc is not None
    try:
        reader, got = _stream_in_flight(server)
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.wait_exit(timeout=30)
        took = time.monotonic() - sent
        reader.join(timeout=10)
        assert code == 0, err
        assert 1 <= took < 6, took  # the drain, then the end: not the stream's ~100 s
        _assert_ended_by_the_stop(data, err, got)
    finally:
        if server.proc.poll() is None:
            server.kill()


def test_a_second_sigint_ends_the_drain_at_once_losing_nothing(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Ctrl-C twice: the second ends the drain at once, as its timeout would."""
    server, data = _slow_stream_server(fake, tmp_path, drain_s=60)
    assert server.proc is not None
    try:
        reader, got = _stream_in_flight(server)
        server.proc.send_signal(signal.SIGINT)
        _draining(server)
        assert server.proc.poll() is None  # draining
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        code, err = server.wait_exit(timeout=30)
        took = time.monotonic() - sent
        reader.join(timeout=10)
        assert code == 0, err
        assert took < 5, took
        _assert_ended_by_the_stop(data, err, got)
    finally:
        if server.proc.poll() is None:
            server.kill()


def test_a_sighup_while_the_service_stops_reloads_nothing_and_says_so(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A SIGHUP during the drain is not a reload (it ran a whole one, or was logged as an
    error of a closed gateway, with advice for Python): one warning says why."""
    server, data = _slow_stream_server(fake, tmp_path, drain_s=60)
    assert server.proc is not None
    try:
        reader, got = _stream_in_flight(server)
        server.proc.send_signal(signal.SIGTERM)
        _draining(server)
        assert server.proc.poll() is None  # draining
        server.proc.send_signal(signal.SIGHUP)
        _until(lambda: "SIGHUP came while the service stops" in server.stderr,
               "the SIGHUP is taken up")
        server.proc.send_signal(signal.SIGINT)
        code, err = server.wait_exit(timeout=30)
        reader.join(timeout=10)
        assert code == 0, err
        assert "SIGHUP came while the service stops: the config is not reloaded" in err, err
        assert "config reloaded" not in err and "was not reloaded" not in err, err
        _assert_ended_by_the_stop(data, err, got)
    finally:
        if server.proc.poll() is None:
            server.kill()


def test_sigterm_ends_a_plain_request_waiting_on_its_model_with_a_503_logged_and_charged(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A plain request whose model has not answered when the drain runs out gets a 503
    ``service_stopped`` (it may be sent again); it is logged once, its hold settled."""
    server, data = _slow_stream_server(fake, tmp_path, drain_s=1)
    assert server.proc is not None
    try:
        got: list[object] = []

        def ask() -> None:
            got.append(httpx.post(f"{server.base}/v1/chat/completions", timeout=60,
                                  json={"model": "good", "messages": [
                                      {"role": "user", "content": "[[fake:ok:delay=20]] hi"}]}))

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        _until(lambda: len(httpx.get(f"{fake.url}/_requests").json()) >= 1,
               "the model is called")
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.wait_exit(timeout=30)
        took = time.monotonic() - sent
        asker.join(timeout=10)
        assert code == 0, err
        assert 1 <= took < 6, took
        assert "Traceback" not in err, err
        answer = got[0]
        assert isinstance(answer, httpx.Response)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "service_stopped", answer.text
        requests = _rows(data / "switchpoint.db",
                         "SELECT id, status, error_kind, http_status FROM requests")
        assert [r[1:] for r in requests] == [("error", "service_stopped", 503)], requests
        spend = _rows(data / "switchpoint.db", "SELECT kind, amount_usd FROM spend WHERE "
                      f"request_id = '{requests[0][0]}' AND kind = 'settle'")
        assert len(spend) == 1 and spend[0][1] > 0, spend
    finally:
        if server.proc.poll() is None:
            server.kill()


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: a process writing to it blocks until it is read."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    with suppress(BlockingIOError):
        while True:
            os.write(write_end, b"x" * 4096)
    os.set_blocking(write_end, True)
    return read_end, write_end


def test_a_sighup_while_the_service_starts_is_taken_up_once_it_serves(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A ``SIGHUP`` before the port opens (its default action would end the process) is
    noted, and the config reloaded once the service serves. The service is held at its first
    log line (its stderr a full pipe) while the signal comes: before its port can open."""
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(fake, str(data)), encoding="utf-8")
    argv = ProcessServer("--config", config, "--log-level", "debug", data_dir=data,
                         env=KEYS).argv
    read_end, write_end = _full_pipe()
    proc = subprocess.Popen(argv, env={**os.environ, **KEYS}, stdout=subprocess.PIPE,
                            stderr=write_end, text=True)
    os.close(write_end)
    err: list[bytes] = []
    drain = threading.Thread(target=lambda: err.extend(iter(
        lambda: os.read(read_end, 1 << 16), b"")), daemon=True)
    try:
        wchan = Path(f"/proc/{proc.pid}/wchan")
        _until(lambda: "pipe_write" in wchan.read_text() or proc.poll() is not None,
               "the start blocks on its first log line")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        drain.start()
        assert proc.stdout is not None
        listening = proc.stdout.readline()
        assert listening.startswith(LISTENING), (proc.poll(), b"".join(err)[-3000:])
        base = f"http://127.0.0.1:{int(listening.strip().rsplit(':', 1)[1])}"
        wait_ready(base)
        _until(lambda: b"SIGHUP: config reloaded" in b"".join(err), "reloaded once serving")
        log = b"".join(err).decode(errors="replace")
        assert "SIGHUP came while the service started" in log, log[-3000:]
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if drain.is_alive():
            drain.join(timeout=10)  # the pipe ends with the process
        os.close(read_end)


def test_sigterm_amid_routes_and_feedback_keeps_all_it_answered_and_refuses_the_rest(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Routes and feedback sent from several threads as the service is told to stop: each is
    either answered, and then in the log (a route's decision, the feedback's row), or refused
    (a 503, or its connection refused or closed), never a traceback; the next start on the same
    data_dir serves from a whole store and has learned every feedback row kept."""
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(fake, str(data)), encoding="utf-8")
    server = ProcessServer("--config", config, data_dir=data, env=KEYS).start()
    assert server.proc is not None
    routed: list[str] = []
    taught: list[str] = []
    refused: list[object] = []
    stop = threading.Event()

    def work(worker: int) -> None:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = http.post("/v1/route", json={"prompt": f"What is {worker} plus {n}?"})
                    if r.status_code != 200:
                        refused.append(r.status_code)
                        continue
                    decision = r.json()["decision_id"]
                    routed.append(decision)
                    f = http.post("/v1/feedback", json={"decision_id": decision, "score": 1.0})
                    if f.status_code == 200:
                        taught.append(decision)
                    else:
                        refused.append(f.status_code)
                except httpx.HTTPError:
                    refused.append("gone")
                    return

    try:
        server.wait_ready()
        workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(4)]
        for worker in workers:
            worker.start()
        _until(lambda: len(taught) >= 8, "routes and feedback under way")
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.wait_exit(timeout=60)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        assert code == 0, err
        assert "Traceback" not in err and "not logged" not in err, err
        assert set(refused) <= {"gone", 503}, refused
        decisions = {row[0] for row in _rows(data / "switchpoint.db", "SELECT id FROM decisions")}
        assert set(routed) <= decisions, set(routed) - decisions
        rows = [row[0] for row in _rows(data / "switchpoint.db",
                                        "SELECT decision_id FROM feedback")]
        assert set(taught) <= set(rows), set(taught) - set(rows)
        assert _rows(data / "switchpoint.db", "PRAGMA integrity_check") == [("ok",)]
    finally:
        if server.proc.poll() is None:
            server.kill()
    again = ProcessServer("--config", config, data_dir=data, env=KEYS).start()
    try:
        again.wait_ready()
        status = httpx.get(f"{again.base}/v1/router/status", timeout=30).json()
        assert status["replayed"] == len(rows), status
        code, err = again.terminate()
        assert code == 0, err
    finally:
        if again.proc is not None and again.proc.poll() is None:
            again.kill()
