"""``scripts/setup`` installs only when something asked for is missing: an install with extras
covers the base install and each of its extras, in any order and any later combination. It
installs with uv, from where pip would, and with pip where uv cannot."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Stands in for .venv/bin/python: notes each call and succeeds (so no package is installed).
FAKE_PYTHON = '#!/bin/sh\necho "$@" >> "$(dirname "$0")/../calls.log"\ncat > /dev/null\n'
# The same, in an environment without pip (its making cut short after the venv was made).
FAKE_PYTHON_WITHOUT_PIP = FAKE_PYTHON.replace(
    "cat", '[ "$1 $2" = "-c import pip" ] && exit 1\ncat')
# Stands in for uv: notes each call in the clone's log, locks the environment as uv does (an
# empty .venv/.lock) and exits with $FAKE_UV_STATUS.
FAKE_UV = ('#!/bin/sh\necho "uv $*" >> .venv/calls.log\n: > .venv/.lock\n'
           'exit "${FAKE_UV_STATUS:-0}"\n')
# Stands in for python3 on PATH: fetching uv (pip install --target DIR) puts the fake uv in DIR
# (nothing is downloaded); anything else runs the real python3.
FAKE_PYTHON3 = """#!/bin/sh
if [ "$1 $2 $3" = "-m pip install" ]; then
  for arg; do [ "$previous" = --target ] && target="$arg"; previous="$arg"; done
  mkdir -p "$target/bin" && cp "$(dirname "$0")/fake-uv" "$target/bin/uv"
  exit 0
fi
if [ "$1 $2" = "-m pip" ]; then echo "python3 $*" >> .venv/calls.log; exit 0; fi
exec {python3} "$@"
"""


def _clone(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "setup", root / "scripts" / "setup")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    shutil.copy2(ROOT / "scripts" / "uv_install.py", root / "scripts" / "uv_install.py")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("fake-uv", FAKE_UV),
                       ("python3", FAKE_PYTHON3.format(python3=shutil.which("python3")))):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    old = time.time() - 60  # pyproject.toml older than any stamp made from now on
    os.utime(root / "pyproject.toml", (old, old))
    return root


def test_an_environment_without_pip_gets_the_latest_pip_once(tmp_path: Path) -> None:
    root = _clone(tmp_path)
    (root / ".venv" / "bin" / "python").write_text(FAKE_PYTHON_WITHOUT_PIP)
    result = _run(root, SWITCHPOINT_SETUP_UV="0")
    assert result.returncode == 0, result.stderr
    assert "setup: installing pip in .venv" in result.stderr
    calls = (root / ".venv" / "calls.log").read_text()
    assert "python3 -m pip --python .venv/bin/python install --quiet --no-compile pip" in calls
    assert "--upgrade pip" not in calls  # just fetched: the latest
    assert _calls(root) == (0, 1)


def _run(root: Path, *extras: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{root.parent / 'bin'}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", "scripts/setup", *extras], cwd=root, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": path, **env})


def _calls(root: Path) -> tuple[int, int]:
    """How many times uv and pip installed so far."""
    log = root / ".venv" / "calls.log"
    text = log.read_text() if log.exists() else ""
    return text.count("uv pip install"), text.count("pip install --progress-bar")


def _installs(root: Path, *extras: str, **env: str) -> int:
    """How many times ``scripts/setup EXTRAS`` installed, with uv or pip."""
    before = sum(_calls(root))
    _run(root, *extras, **env).check_returncode()
    return sum(_calls(root)) - before


def test_an_install_with_extras_covers_the_base_and_each_extra(tmp_path: Path) -> None:
    root = _clone(tmp_path)
    pip = {"SWITCHPOINT_SETUP_UV": "0"}  # the rule is the installer's; pip's path is the quicker
    assert _installs(root, "test,dev", **pip) == 1
    assert _installs(root, **pip) == 0  # what scripts/run asks for
    assert _installs(root, "dev", **pip) == 0
    assert _installs(root, "dev,test", **pip) == 0
    assert _installs(root, "eval", **pip) == 1
    assert _installs(root, "test,eval", **pip) == 0
    # A changed pyproject.toml asks for an install again.
    later = time.time() + 60
    os.utime(root / "pyproject.toml", (later, later))
    assert _installs(root, **pip) == 1


def test_uv_installs_with_pip_and_everything_asked_for_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    root = _clone(tmp_path)
    assert _installs(root, "test,dev") == 1
    assert _calls(root) == (1, 0)
    uv_call = next(line for line in (root / ".venv" / "calls.log").read_text().splitlines()
                   if line.startswith("uv pip install"))
    assert uv_call.endswith("--upgrade-package pip pip -e .[test,dev]")  # pip alone upgraded
    assert "--index-strategy unsafe-best-match" in uv_call
    assert not [p.name for p in (root / ".venv").iterdir()
                if p.name.startswith(".setup-uv") or p.name == ".lock"]


def test_pip_installs_where_uv_fails_or_is_not_wanted(tmp_path: Path) -> None:
    root = _clone(tmp_path)
    result = _run(root, "eval", FAKE_UV_STATUS="1")
    assert result.returncode == 0, result.stderr
    assert "installing with pip instead" in result.stderr
    assert _calls(root) == (1, 1)
    assert (root / ".venv" / ".switchpoint-installed-extra-eval").exists()
    assert _installs(root, "dev", SWITCHPOINT_SETUP_UV="0") == 1
    assert _calls(root) == (1, 2)


@pytest.mark.parametrize("value", ["2", "yes", " 1"])
def test_a_wrong_uv_choice_is_refused_before_anything_is_installed(tmp_path: Path,
                                                                   value: str) -> None:
    root = _clone(tmp_path)
    result = _run(root, SWITCHPOINT_SETUP_UV=value)
    assert result.returncode == 2
    assert f"SWITCHPOINT_SETUP_UV={value}: write 1" in result.stderr
    assert not (root / ".venv" / "calls.log").exists()


def _uv_command(**env: str) -> subprocess.CompletedProcess[str]:
    settings = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "uv_install.py"), "--print", "uv", "py", "-e", "."],
        capture_output=True, text=True, timeout=60,
        env={**settings, "PIP_CONFIG_FILE": os.devnull, **env})


def test_uv_is_given_the_indexes_links_constraints_certificate_and_proxy_pip_would_use() -> None:
    result = _uv_command(PIP_INDEX_URL="https://mirror.example/simple",
                         PIP_EXTRA_INDEX_URL="https://a.example/simple https://b.example/simple",
                         PIP_FIND_LINKS="/wheels", PIP_CONSTRAINT="/c.txt",
                         PIP_TRUSTED_HOST="a.example", PIP_CERT="/ca.pem",
                         PIP_PROXY="http://proxy.example:3128")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "uv", "pip", "install", "--python", "py", "--index-strategy", "unsafe-best-match",
        "--index-url", "https://mirror.example/simple",
        "--extra-index-url", "https://a.example/simple",
        "--extra-index-url", "https://b.example/simple", "--find-links", "/wheels",
        "--constraint", "/c.txt", "--allow-insecure-host", "a.example", "-e", ".",
        "SSL_CERT_FILE=/ca.pem", "HTTP_PROXY=http://proxy.example:3128",
        "HTTPS_PROXY=http://proxy.example:3128"]
    assert "--no-index" in _uv_command(PIP_NO_INDEX="1").stdout.splitlines()


def test_a_pip_setting_uv_would_not_follow_leaves_the_install_to_pip() -> None:
    result = _uv_command(PIP_PRE="1", PIP_ONLY_BINARY=":all:", PIP_REQUIRE_HASHES="1")
    assert result.returncode == 3
    assert ("pip is set up with pre (pre-releases), only-binary, require-hashes, which uv would "
            "not follow the same way: installing with pip instead") in result.stderr
    assert result.stdout == ""
