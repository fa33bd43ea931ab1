"""Real servers on loopback for the service tests: uvicorn in a thread, or `switchpoint serve`
in a process of its own (for restarts and crashes), forked from the tests' fork server (see
tests/fork_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import uvicorn
from fastapi import FastAPI
from uvicorn.config import HTTPProtocolType

from switchpoint.server.context import Service
from tests.fakes.fake_provider import PORTS_ENV, reserved_ports
from tests.fork_server import Forked, popen


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port, not yet listening (``asyncio.start_server(
    ..., sock=...)`` takes it): one of the ports ``$SWITCHPOINT_TEST_PORTS`` reserves
    (``FIRST-LAST``), tried in random order, on a host that reserves some; else any."""
    reserved = reserved_ports()
    candidates = list(reserved) if reserved is not None else [0]
    random.shuffle(candidates)  # processes sharing the range seldom reach for the same one
    for candidate in candidates:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", candidate))
        except OSError:
            sock.close()
            continue
        return sock
    raise RuntimeError(f"no free port in {PORTS_ENV}={os.environ.get(PORTS_ENV)}")


def free_port() -> int:
    """A free loopback port (see :func:`loopback_socket`), for a server that binds it itself."""
    with loopback_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait until ``condition()`` holds, failing the test saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def wait_ready(base: str, timeout: float = 60.0) -> dict[str, object]:
    """Poll /health until it says ready; returns its body."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/health", timeout=2)
            last = r.text
            if r.status_code == 200:
                body: dict[str, object] = r.json()
                return body
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{base} not ready after {timeout} s (last: {last})")


class PromptServer(uvicorn.Server):
    """uvicorn's server, whose main loop notices :meth:`exit` at once: uvicorn's own looks at
    ``should_exit`` on its next tick, a tenth of a second on, which each test's server stop
    waited out. Between ticks it does what uvicorn's does (:meth:`on_tick`); its shutdown is
    uvicorn's."""

    _loop: asyncio.AbstractEventLoop | None = None
    _woken: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._woken = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    def exit(self) -> None:
        """Stop serving (from any thread), as ``should_exit = True`` does, without the wait."""
        self.should_exit = True
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None:
            with contextlib.suppress(RuntimeError):  # (the loop has closed: it has stopped)
                loop.call_soon_threadsafe(woken.set)


class ThreadServer:
    """uvicorn serving ``app`` on a free loopback port, in a background thread. The port is
    bound here and the bound socket handed to uvicorn: no other process can take it between
    its choice and the server's start. ``http``: uvicorn's HTTP protocol (a class, as
    ``switchpoint serve`` gives its guarded one, or uvicorn's name for its own); ``root_path``:
    the ASGI root path uvicorn gives the app (``uvicorn --root-path``)."""

    def __init__(self, app: FastAPI, http: type[asyncio.Protocol] | HTTPProtocolType = "auto",
                 root_path: str = "") -> None:
        self.app = app
        sock = loopback_socket()
        self.port = int(sock.getsockname()[1])
        self.base = f"http://127.0.0.1:{self.port}"
        # (X-Forwarded-For is the app's to read, as under `switchpoint serve`)
        self.server = PromptServer(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on",
                                                    proxy_headers=False, http=http,
                                                    root_path=root_path))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)

    @property
    def service(self) -> Service:
        service = self.app.state.service
        assert isinstance(service, Service)
        return service

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.exit()
        self.thread.join(timeout=30)


@contextmanager
def thread_server(app: FastAPI, ready: bool = True,
                  http: type[asyncio.Protocol] | HTTPProtocolType = "auto", root_path: str = ""
                  ) -> Iterator[ThreadServer]:
    server = ThreadServer(app, http, root_path).start()
    try:
        if ready:
            wait_ready(server.base)
        yield server
    finally:
        server.stop()


LISTENING = "switchpoint: listening on "


class ProcessServer:
    """`switchpoint serve` in a process of its own, as a user runs it: forked from the tests'
    fork server, which has imported what a start imports (it is still the command's ``main()``
    with the same argv, environment and streams, its own pid, signals and exit status; see
    tests/fork_server.py), or a real exec with ``exec_``. The server binds its own port, any
    free one (a free one of ``$SWITCHPOINT_TEST_PORTS`` where it reserves some), and says which
    on stdout: no other process can take it between its choice and the start."""

    def __init__(self, *args: str | Path, data_dir: Path, env: dict[str, str] | None = None,
                 log_file: Path | None = None, exec_: bool = False):
        """``log_file``: where the service's stdout and stderr go (as ``serve > FILE 2>&1``
        sends them), instead of pipes; the port is then read from that file. ``exec_``: start
        it with a real exec (a test of the start itself: its time, what it imports)."""
        self.log_file = log_file
        self.exec_ = exec_
        reserved = reserved_ports()
        port = "0" if reserved is None else f"{reserved.start}-{reserved.stop - 1}"
        self.argv = [sys.executable, "-m", "switchpoint.cli", "serve", "--port", port,
                     "--data-dir", str(data_dir), "--log-level", "warning",
                     *(str(a) for a in args)]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | Forked | None = None
        self._port: int | None = None
        self._listening = threading.Event()
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers: list[threading.Thread] = []

    def start(self) -> ProcessServer:
        if self.log_file is not None:
            with self.log_file.open("ab") as out:
                self.proc = popen(self.argv, self.env, stdout=out, stderr=subprocess.STDOUT,
                                  exec_=self.exec_)
            return self
        self.proc = popen(self.argv, self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          exec_=self.exec_)
        # Both pipes are drained as the server writes, so it never blocks on a full one.
        self._readers = [threading.Thread(target=self._read, args=(pipe, into), daemon=True)
                         for pipe, into in ((self.proc.stdout, self._out),
                                            (self.proc.stderr, self._err))]
        for reader in self._readers:
            reader.start()
        return self

    def _read(self, pipe: IO[str] | None, into: list[str]) -> None:
        assert pipe is not None
        for line in pipe:
            into.append(line)
            if into is self._out and line.startswith(LISTENING) and self._port is None:
                self._port = int(line.strip().rsplit(":", 1)[1])
                self._listening.set()
        if into is self._out:
            self._listening.set()  # it ended, said its port or not: waiters stop waiting

    @property
    def port(self) -> int:
        """The port the server listens on (waits until it says so)."""
        assert self.proc is not None, "start() the server first"
        if self.log_file is not None and self._port is None:
            self._port = self._port_from_log(timeout=60)
            self._listening.set()
        if not self._listening.wait(timeout=60) or self._port is None:
            self.proc.poll()
            raise RuntimeError(f"switchpoint serve did not say its port (exit code "
                               f"{self.proc.returncode}): {''.join(self._err)[-2000:]}")
        return self._port

    def _port_from_log(self, timeout: float) -> int | None:
        """The port the server said in ``log_file`` (None if it ended or took too long)."""
        assert self.log_file is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_file.read_text(errors="replace").splitlines():
                if line.startswith(LISTENING):
                    return int(line.strip().rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> dict[str, object]:
        return wait_ready(self.base, timeout)

    def _finish(self, timeout: float) -> tuple[int, str]:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)
        return code, "".join(self._err)

    @property
    def stdout(self) -> str:
        """What the server wrote on stdout so far (uvicorn's access log goes there)."""
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        """What the server wrote on stderr so far (its log)."""
        return "".join(self._err)

    def __enter__(self) -> ProcessServer:
        return self

    def __exit__(self, *exc: object) -> None:
        """Leaving a ``with`` block, a server still running is killed (a test that wants a
        graceful stop calls :meth:`terminate` inside the block)."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is flushed or closed."""
        assert self.proc is not None
        self.proc.kill()
        self._finish(timeout=30)

    def terminate(self) -> tuple[int, str]:
        """SIGTERM: uvicorn's graceful shutdown. Returns (exit code, stderr)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self._finish(timeout=30)

    def wait_exit(self, timeout: float = 60.0) -> tuple[int, str]:
        return self._finish(timeout=timeout)


def refused_start(*args: str | Path, data_dir: Path, env: dict[str, str] | None = None,
                  timeout: float = 60.0) -> tuple[int, str]:
    """Start a service expected to refuse (to exit on its own): its exit code and stderr. One
    still running after ``timeout`` is killed (and the wait's error raised)."""
    with ProcessServer(*args, data_dir=data_dir, env=env).start() as server:
        return server.wait_exit(timeout=timeout)
