"""Head starts: a command a test runs that keeps the CPU busy for long and needs nothing else
(the real ``switchpoint eval`` embedding thousands of prompts) starts when the session's first
test does, at a low CPU priority, so it takes the CPU the serial suite leaves idle while its
tests wait on their servers and processes, and barely slows a test that measures time. The test
it belongs to runs last and waits for it, then checks its output as it would have had it run it
itself; only a selected test's command starts, and one still running when the session ends is
killed.

Mark the test ``@pytest.mark.head_start.with_args(command)`` (a bare callable would be taken as
the function to mark), where ``command(workdir)`` gives the argv to run in ``workdir`` (a fresh
folder) or None when it cannot run here (its test then skips on its own, e.g. through
``shared_data``), and take the ``head_start`` fixture: the :class:`HeadStart`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

MARKER = "head_start"
Command = Callable[[Path], Sequence[str] | None]


@dataclass
class HeadStart:
    """One command running in ``workdir`` since the session started."""

    proc: subprocess.Popen[bytes]
    workdir: Path

    def result(self, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Wait for the command; its status, stdout and stderr, as ``subprocess.run`` gives.
        Waited for, it runs at the usual priority again where the system lets it (on a busy
        machine a low one leaves it little CPU, and nothing else of the suite runs now)."""
        _usual_priority(self.proc.pid)
        self.proc.wait(timeout=timeout)
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode,
            (self.workdir / ".stdout").read_text(encoding="utf-8"),
            (self.workdir / ".stderr").read_text(encoding="utf-8"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# Low enough that a test timing something keeps nearly all of a core it contends for (nice 10
# weighs about a tenth of nice 0); not the lowest, which on a machine busy with other work can
# leave a command (and a server it starts and waits on) no CPU for minutes.
NICE = 10


def _low_priority() -> None:
    os.nice(NICE)  # in the child, before it runs: every thread and process it starts inherits it


def _usual_priority(pid: int) -> None:
    """Every thread of ``pid`` and of the processes under it back to priority 0: a process's
    threads have one each, and a child took its parent's when it started."""
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:  # no /proc, or the process has ended
        return
    for tid in threads:
        # (not allowed: only root may raise a priority; or the thread has ended)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, 0)
        with contextlib.suppress(OSError, ValueError):
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            for child in children:
                _usual_priority(int(child))


def begin(argv: Sequence[str], workdir: Path) -> HeadStart:
    """Start ``argv`` in ``workdir`` at a low priority; its output goes to files there (a
    pipe nobody reads would fill and stall it)."""
    with (workdir / ".stdout").open("wb") as out, (workdir / ".stderr").open("wb") as err:
        proc = subprocess.Popen(list(argv), cwd=workdir, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, preexec_fn=_low_priority)
    return HeadStart(proc, workdir)


def last(items: list[pytest.Item]) -> None:
    """Move the tests marked with a head start to the end of the run, in their order."""
    marked = [item for item in items if item.get_closest_marker(MARKER) is not None]
    if marked:
        items[:] = [item for item in items if item not in marked] + marked


def begin_all(items: Sequence[pytest.Item],
              workdir: Callable[[], Path]) -> dict[str, HeadStart]:
    """Start the command of every marked test among ``items``, by the test's node id."""
    started: dict[str, HeadStart] = {}
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        folder = workdir()
        argv = marker.args[0](folder)
        if argv is not None:
            started[item.nodeid] = begin(argv, folder)
    return started
