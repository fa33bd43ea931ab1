"""Commands the tests start, forked from a fork server that has imported what they import.

A start of ``switchpoint serve`` spent most of its CPU (some 1.3 s) importing FastAPI, uvicorn,
NumPy and the service's schemas, and the suite starts dozens. The fork server is a fresh
interpreter (multiprocessing's ``forkserver``, one per pytest process) that imports those
modules once (:mod:`tests.fork_preload`) and runs no thread or event loop; each command is a
fork of it, so a start costs the fork and the command's own work. pytest's own process is never
forked: its threads (a session's gateway, a store's writer) may hold locks a child would wait on
for good.

The child is the real command: :func:`switchpoint.cli.main` with the same arguments,
``sys.argv``, environment, working folder, ``sys.path``, and standard streams a process started
by :class:`subprocess.Popen` with ``close_fds`` has (no other descriptor is left open), under its
own pid, in the process group and session of pytest's process. It exits as such a process
does: non-daemon threads joined, ``atexit`` handlers run, streams flushed, then its status (a
signal that ends it is seen as that signal, a negative ``returncode``). :class:`Forked` gives
the parts of :class:`subprocess.Popen` the tests use.

A command is forked only where a real interpreter would run it alike: ``python -m
switchpoint.cli ...`` with an environment that agrees with the fork server's on every variable
read as an interpreter or its preloaded libraries start (``PYTHON*``, the locale, the thread
counts of the numeric libraries); any other is started with a real exec, as are the tests that
check a start itself (its time, what it imports). If the fork server dies, the commands are
started with a real exec from then on, and one line on stderr says so.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.reduction
import multiprocessing.resource_tracker
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

#: The fork server's context (one server per process; tests/integration/kill_points.py forks
#: from it too).
forks = multiprocessing.get_context("forkserver")
forks.set_forkserver_preload(["tests.fork_preload"])

#: The argv a forked start takes: the interpreter running the CLI's module.
CLI = (sys.executable, "-m", "switchpoint.cli")

# Variables an interpreter, or a library the fork server preloads, reads as it starts or
# imports: a command whose environment differs from the fork server's on one runs by exec.
# (Not ORT_*: ONNX Runtime is not preloaded, and pytest's process gets ORT_DISABLE_TELEMETRY
# once a test loads the embedder in it.)
_READ_AT_START = ("PYTHON", "LANG", "LC_", "TZ", "OPENBLAS", "OMP_", "MKL_", "NPY_", "NUMPY_",
                  "TOKENIZERS_", "HTTPX_", "UVICORN_")

_lock = threading.Lock()
_server: tuple[int, dict[str, str], list[str]] | None = None  # pid, its environment, sys.path
_gone = False


def forkable(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """Whether ``argv`` with ``env`` can be forked from the fork server (else: a real exec)."""
    if tuple(argv[:3]) != CLI or _gone:
        return False
    server = _running()
    if server is None:
        return False
    started_with = server[1]
    return all(env.get(name) == started_with.get(name)
               for name in {*env, *started_with} if name.startswith(_READ_AT_START))


def _running() -> tuple[int, dict[str, str], list[str]] | None:
    """The fork server (started on first use): its pid, environment and the ``sys.path`` a
    fresh ``python -m`` gets past its first entry; None once it has died (said once)."""
    global _server, _gone
    with _lock:
        if _gone:
            return None
        try:
            multiprocessing.forkserver.ensure_running()
            pid = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        except OSError as exc:
            pid, reason = None, f"it could not start ({exc})"
        else:
            reason = "it died"
        if _server is None and pid is not None:
            path = subprocess.run([sys.executable, "-c", "import json, sys; "
                                   "print(json.dumps(sys.path[1:]))"], capture_output=True,
                                  text=True, check=True).stdout
            _server = pid, dict(os.environ), json.loads(path)
            return _server
        if _server is not None and pid == _server[0]:
            return _server
        _gone = True
        print(f"tests: the fork server of the commands the tests start is gone: {reason}; "
              "they start with a real exec from now on", file=sys.stderr)
        return None


class _PassedFd:
    """A descriptor sent to the fork server with the command (pickled while it starts)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        return _received, (multiprocessing.reduction.DupFd(self.fd),)


def _received(passed: Any) -> int:
    fd: int = passed.detach()
    return fd


def _child(argv: list[str], env: dict[str, str], cwd: str, path: list[str],
           preexec_fn: Callable[[], object] | None, streams: tuple[int, int, int]) -> None:
    """In the forked child: become the command a real exec of ``argv`` would be, run it, and
    end as that interpreter would."""
    if sys.stdin is not None:
        sys.stdin.close()  # (multiprocessing's stand-in, on a descriptor closed below)
    for fd, std in zip(streams, (0, 1, 2), strict=True):
        os.dup2(fd, std)
    for name in os.listdir("/proc/self/fd"):  # (what the fork server's machinery passed on)
        if int(name) > 2:
            with contextlib.suppress(OSError):
                os.close(int(name))
    tracker: Any = multiprocessing.resource_tracker._resource_tracker
    tracker._fd = None  # (closed: one the command needs is started anew)
    multiprocessing.current_process().daemon = False
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    if preexec_fn is not None:
        preexec_fn()
    tempfile.tempdir = None  # (read from TMPDIR on first use, as in a fresh interpreter)
    import switchpoint.cli

    sys.path[:] = [os.getcwd(), *path]
    sys.argv = [str(switchpoint.cli.__file__), *argv[3:]]
    # The streams a fresh interpreter makes on these descriptors (no terminal: pipes or files)
    streams_now = (_stream(0, "r"), _stream(1, "w", line_buffering=os.isatty(1)),
                   _stream(2, "w", errors="backslashreplace", line_buffering=True))
    sys.stdin, sys.stdout, sys.stderr = streams_now
    setattr(sys, "__stdin__", streams_now[0])  # noqa: B010  (final to the type checker)
    setattr(sys, "__stdout__", streams_now[1])  # noqa: B010
    setattr(sys, "__stderr__", streams_now[2])  # noqa: B010
    code = 1
    try:
        code = switchpoint.cli.main(argv[3:])
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
    threading._shutdown()  # type: ignore[attr-defined]  # (as the interpreter does, then atexit)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code == -signal.SIGINT:  # (an interpreter ended by ^C ends by SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def _stream(fd: int, mode: str, **text: Any) -> io.TextIOWrapper:
    """A standard stream on ``fd``, as the interpreter makes it (the descriptor stays open)."""
    raw = io.FileIO(fd, mode, closefd=False)
    return io.TextIOWrapper(io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw),
                            **text)


class Forked:
    """A command forked from the fork server, with what the tests use of
    :class:`subprocess.Popen`: ``args``, ``pid``, ``stdout``, ``stderr`` (text, when piped),
    ``returncode``, :meth:`poll`, :meth:`wait`, :meth:`send_signal`, :meth:`terminate`,
    :meth:`kill`."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None,
                 stdout: int | IO[Any] | None, stderr: int | IO[Any] | None,
                 stdin: int | IO[Any] | None = None,
                 preexec_fn: Callable[[], object] | None = None) -> None:
        assert _server is not None, "forkable() first"
        self.args = list(argv)
        self.stdout: IO[str] | None = None
        self.stderr: IO[str] | None = None
        ours: list[int] = []  # the parent's ends of the pipes made here, closed once sent

        def end(to: int | IO[Any] | None, default: int) -> tuple[int, IO[str] | None]:
            if to is None:
                return default, None
            if to == subprocess.PIPE:
                read, write = os.pipe()
                ours.append(write)
                return write, io.TextIOWrapper(io.FileIO(read, "r"))
            if to == subprocess.DEVNULL:
                null = os.open(os.devnull, os.O_RDWR)
                ours.append(null)
                return null, None
            return (to if isinstance(to, int) else to.fileno()), None

        try:
            assert stdin != subprocess.PIPE, "a forked command's stdin is not piped here"
            into, _ = end(stdin, 0)
            out, self.stdout = end(stdout, 1)
            err, self.stderr = (out, None) if stderr == subprocess.STDOUT else end(stderr, 2)
            self._process = forks.Process(
                target=_child, daemon=True,  # (daemon: one a test left running is stopped
                # as pytest exits, rather than waited for)
                args=(self.args, dict(env), cwd or os.getcwd(), _server[2],
                      preexec_fn, (_PassedFd(into), _PassedFd(out), _PassedFd(err))))
            self._process.start()
        finally:
            for fd in ours:
                os.close(fd)
        assert self._process.pid is not None
        self.pid: int = self._process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self.poll()
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # (a pid that ended may be another process's by now)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def popen(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
          stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
          stdin: int | IO[Any] | None = None, preexec_fn: Callable[[], object] | None = None,
          exec_: bool = False) -> Forked | subprocess.Popen[str]:
    """``argv`` started as ``subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout,
    stderr=stderr, stdin=stdin, preexec_fn=preexec_fn, text=True)`` starts it: forked from
    the fork server where it can be (see :func:`forkable`), else (or with ``exec_``) by a real
    exec. A forked command's ``preexec_fn`` is pickled to the fork server: a module's function
    or a partial of a builtin one (``resource.setrlimit``)."""
    environ = dict(os.environ if env is None else env)
    if not exec_ and forkable(argv, environ):
        return Forked(argv, environ, None if cwd is None else str(cwd), stdout, stderr, stdin,
                      preexec_fn)
    return subprocess.Popen(list(argv), env=environ, cwd=cwd, stdout=stdout, stderr=stderr,
                            stdin=stdin, preexec_fn=preexec_fn, text=True)


def is_forked(proc: object) -> bool:
    """Whether ``proc`` was forked from the fork server (not a real exec)."""
    return isinstance(proc, Forked)
