"""A command the tests fork from their fork server (tests/fork_server.py) behaves as the same
command started by a real exec: same status, output and errors, its own pid, and the caller's
environment and folder; a command whose environment an interpreter reads differently at its
start is started by a real exec."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.fork_server import CLI, is_forked, popen
from tests.integration.servers import ProcessServer


def _run(argv: list[str], env: dict[str, str], cwd: Path, exec_: bool) -> tuple[int, str, str]:
    proc = popen(argv, env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 exec_=exec_)
    assert is_forked(proc) is not exec_
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    return proc.wait(timeout=60), out, err


def test_a_forked_command_answers_as_the_command_run_by_exec(tmp_path: Path) -> None:
    """The arguments, the environment (a ``SWITCHPOINT_*`` variable set for this call alone)
    and the working folder (a relative path) reach the forked command as they reach a real
    exec: the same exit status, stdout and stderr for a start refused on its config, a usage
    error and the version."""
    (tmp_path / "bad.yaml").write_text("cost_weight: [1\n", encoding="utf-8")
    env = {**os.environ, "SWITCHPOINT_CONFIG": "bad.yaml"}
    for args in (["serve", "--data-dir", "data", "--port", "0"], ["serve", "--port", "x"],
                 ["--version"]):
        forked = _run([*CLI, *args], env, tmp_path, exec_=False)
        assert forked == _run([*CLI, *args], env, tmp_path, exec_=True), args
        assert (forked[0] == 0) is (args == ["--version"]), forked
    assert "bad.yaml" in _run([*CLI, "serve", "--port", "0"], env, tmp_path, exec_=False)[2]


def _descriptors(pid: int, data: Path) -> list[tuple[int, str]]:
    """What each of the process's open descriptors other than its sockets is (pipes, files,
    its data_dir spelled DATA); sockets come and go with the connections it serves."""
    held = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        with contextlib.suppress(FileNotFoundError):  # (closed meanwhile)
            what = os.readlink(f"/proc/{pid}/fd/{fd}")
            if not what.startswith("socket:"):
                held.append((int(fd), re.sub(r"\[\d+\]", "", what.replace(str(data), "DATA"))))
    return held


def _kinds(pid: int, data: Path) -> tuple[list[str], set[str]]:
    """The kinds of the process's descriptors outside its data_dir, sorted (one entry each),
    and the set of its data_dir's files it holds (see :func:`_descriptors`)."""
    held = [what for _, what in _descriptors(pid, data)]
    return (sorted(what for what in held if not what.startswith("DATA/")),
            {what for what in held if what.startswith("DATA/")})


def _group_and_session(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2:4]


def test_a_forked_service_holds_what_one_run_by_exec_holds_and_ends_by_a_signal(
        tmp_path: Path) -> None:
    """A forked ``switchpoint serve`` has the descriptors a real exec of it has, one by one
    (none of the fork server's: its pipes), the process group and session of one, a pid of
    its own, and a SIGKILL ends it as it ends a real process: ``returncode`` is minus the
    signal."""
    forked = ProcessServer(data_dir=tmp_path / "forked").start()
    real = ProcessServer(data_dir=tmp_path / "real", exec_=True).start()
    with forked, real:
        forked.wait_ready()
        real.wait_ready()
        assert forked.proc is not None and real.proc is not None
        assert is_forked(forked.proc) and not is_forked(real.proc)
        assert forked.proc.pid not in (os.getpid(), os.getppid(), real.proc.pid)
        # Every descriptor but the data_dir's files, as many of each kind (a pipe the fork
        # server leaked shows as one pipe more), and the data_dir's files each held: how many
        # connections a store holds at a moment differs from run to run (a start's background
        # read of the decisions open to feedback may still hold its own).
        assert _kinds(forked.proc.pid, tmp_path / "forked") == _kinds(
            real.proc.pid, tmp_path / "real")
        assert _group_and_session(forked.proc.pid) == _group_and_session(real.proc.pid)
        forked.proc.send_signal(signal.SIGKILL)
        assert forked.wait_exit(timeout=30)[0] == -signal.SIGKILL


def test_an_environment_an_interpreter_reads_at_start_differently_is_started_by_exec(
        tmp_path: Path) -> None:
    """A variable the interpreter reads as it starts (``PYTHONWARNINGS`` here) set otherwise
    than the fork server had it cannot reach a forked command: it runs by a real exec."""
    env = {**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"}
    proc = popen([*CLI, "--version"], env, stdout=subprocess.PIPE)
    assert not is_forked(proc)
    assert proc.wait(timeout=60) == 0
    assert popen([sys.executable, "-c", "pass"]).wait(timeout=60) == 0  # (not the CLI: exec)
