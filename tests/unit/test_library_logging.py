"""switchpoint used in process prints nothing of its log until the program configures logging
(its package logger carries a NullHandler: Python's last resort printed its warnings to
stderr), and prints what it logs once it does; the command line prints its warnings to
stderr as it always has, and ``serve`` logs as it always has.

Each case runs in a fresh Python process, as a program or a user runs it: the test runner
itself sets handlers on the root logger, which hide Python's last resort."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from switchpoint.server.runner import _configure_logging
from switchpoint.store import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]

#: A warning a store opened in process logs: its file is one others may read.
WARNED = "can be read by other users (mode 644)"

_IN_PROCESS = """
import logging, sys
if sys.argv[2] == "configured":
    logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
from switchpoint.store import SQLiteStore
with SQLiteStore(sys.argv[1]):
    pass
print("opened")
"""


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
                          check=False)


def _readable_store(folder: Path) -> Path:
    """A store file in ``folder`` others may read (one made by hand, or before switchpoint
    made its files private): opening it logs a warning and keeps it."""
    folder.mkdir()
    path = folder / "switchpoint.db"
    with SQLiteStore(path):
        pass
    path.chmod(0o644)
    return path


def test_in_process_use_prints_nothing_of_its_log_unless_logging_is_configured(
        tmp_path: Path) -> None:
    path = _readable_store(tmp_path / "data")
    quiet = _python("-c", _IN_PROCESS, str(path), "not configured", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "opened\n"
    assert quiet.stderr == ""
    told = _python("-c", _IN_PROCESS, str(path), "configured", cwd=tmp_path)
    assert told.returncode == 0, told.stderr
    assert told.stdout == "opened\n"
    assert f"switchpoint WARNING {path} {WARNED}" in told.stderr, told.stderr


def test_the_command_line_prints_its_warnings_to_stderr_as_before(tmp_path: Path) -> None:
    """Python's last resort printed a command's warnings, the message alone on a line; the
    command prints them so still, though the package's NullHandler displaces it."""
    path = _readable_store(tmp_path / "data")
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"data_dir: {path.parent}\n", encoding="utf-8")
    ran = _python("-m", "switchpoint", "prune", "--older-than", "5", "--config", str(config),
                  cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.splitlines()[0] == (
        f"{path} {WARNED}: it holds prompts' vectors, feedback comments or key hashes; make "
        "it private with chmod 600"), ran.stderr
    assert "deleted 0 decisions" in ran.stderr  # (what it did, after the warning)


def test_serve_logs_to_its_own_handler_beside_the_packages_null_handler() -> None:
    """The service's log handler is added beside the package's NullHandler (which a logger's
    first handler was taken for), and found again, not doubled, when it serves again."""
    logger = logging.getLogger("switchpoint")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    before = list(logger.handlers)
    level, propagate = logger.level, logger.propagate
    try:
        handler = _configure_logging("info")
        assert not isinstance(handler, logging.NullHandler)
        assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
        assert _configure_logging("info") is handler
        assert logger.handlers == [*before, handler]
    finally:
        logger.handlers = before
        logger.setLevel(level)
        logger.propagate = propagate
