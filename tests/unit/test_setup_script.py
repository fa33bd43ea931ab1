"""``scripts/setup`` installs only when something asked for is missing: an install with extras
covers the base install and each of its extras, in any order and any later combination."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Stands in for .venv/bin/python: notes each call and succeeds (so no package is installed).
FAKE_PYTHON = '#!/bin/sh\necho "$@" >> "$(dirname "$0")/../calls.log"\ncat > /dev/null\n'


def _clone(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "setup", root / "scripts" / "setup")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    old = time.time() - 60  # pyproject.toml older than any stamp made from now on
    os.utime(root / "pyproject.toml", (old, old))
    return root


def _installs(root: Path, *extras: str) -> int:
    """How many times ``scripts/setup EXTRAS`` ran pip install."""
    log = root / ".venv" / "calls.log"
    before = log.read_text().count("pip install --progress-bar") if log.exists() else 0
    subprocess.run(["bash", "scripts/setup", *extras], cwd=root, check=True,
                   capture_output=True, timeout=60)
    return log.read_text().count("pip install --progress-bar") - before


def test_an_install_with_extras_covers_the_base_and_each_extra(tmp_path: Path) -> None:
    root = _clone(tmp_path)
    assert _installs(root, "test,dev") == 1
    assert _installs(root) == 0  # what scripts/run asks for
    assert _installs(root, "dev") == 0
    assert _installs(root, "dev,test") == 0
    assert _installs(root, "eval") == 1
    assert _installs(root, "test,eval") == 0
    # A changed pyproject.toml asks for an install again.
    later = time.time() + 60
    os.utime(root / "pyproject.toml", (later, later))
    assert _installs(root) == 1


# Stands in for .venv/bin/python in an environment without pip (its setup cut short after the
# venv was made): `-c import pip` fails, every other call is noted and succeeds.
FAKE_PYTHON_WITHOUT_PIP = FAKE_PYTHON.replace(
    "cat", '[ "$1 $2" = "-c import pip" ] && exit 1\ncat')
# Stands in for python3 on PATH: notes its pip calls (installing nothing), runs the rest.
FAKE_PYTHON3 = """#!/bin/sh
if [ "$1 $2" = "-m pip" ]; then echo "python3 $*" >> .venv/calls.log; exit 0; fi
exec {python3} "$@"
"""


def test_an_environment_without_pip_gets_the_latest_pip_once(tmp_path: Path) -> None:
    """A .venv made without pip whose setup stopped before pip was in it gets pip back (it
    failed with No module named pip), and a pip just fetched is not upgraded a second time."""
    root = _clone(tmp_path)
    python = root / ".venv" / "bin" / "python"
    python.write_text(FAKE_PYTHON_WITHOUT_PIP)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"
    python3.write_text(FAKE_PYTHON3.format(python3=shutil.which("python3")))
    python3.chmod(python3.stat().st_mode | stat.S_IXUSR)
    result = subprocess.run(
        ["bash", "scripts/setup"], cwd=root, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert "setup: installing pip in .venv" in result.stderr
    calls = (root / ".venv" / "calls.log").read_text()
    assert "python3 -m pip --python .venv/bin/python install --quiet --no-compile pip" in calls
    assert "--upgrade pip" not in calls  # just fetched: the latest
    assert calls.count("pip install --progress-bar") == 1
