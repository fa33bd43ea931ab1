"""``scripts/run`` serves on 127.0.0.1:8080 and passes its arguments on; where the state goes is
left to ``serve`` (``./data``, or the ``data_dir`` of a config), never overridden, and ``serve``
runs in the folder ``scripts/run`` was run in."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _set_up_clone(root: Path, switchpoint: str) -> None:
    """A clone at ``root`` holding the scripts, set up already, whose ``switchpoint`` is the
    shell body ``switchpoint``."""
    (root / "scripts").mkdir(parents=True)
    for name in ("run", "setup"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    old = time.time() - 60
    os.utime(root / "pyproject.toml", (old, old))
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in (("python", "exit 0"), ("switchpoint", switchpoint)):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755 | stat.S_IXUSR)
    (root / ".venv" / ".switchpoint-installed-base").touch()  # set up: nothing to install


def test_run_leaves_the_data_dir_to_the_config(tmp_path: Path) -> None:
    root = tmp_path / "clone"
    _set_up_clone(root, 'printf "%s\\n" "$@"')
    run = subprocess.run(["bash", "scripts/run", "--config", "deploy/switchpoint.yaml"],
                         cwd=root, capture_output=True, text=True, check=True, timeout=60)
    argv = run.stdout.split()
    assert argv[:5] == ["serve", "--host", "127.0.0.1", "--port", "8080"], argv
    assert argv[5:] == ["--config", "deploy/switchpoint.yaml"]  # no --data-dir over the config's


def test_run_serves_from_the_folder_it_is_run_in(tmp_path: Path) -> None:
    # A relative --config is read where it was typed: run from another folder, it was read
    # from the clone's root, and a config beside the caller was "not found".
    root = tmp_path / "clone"
    _set_up_clone(root, 'pwd; printf "%s\\n" "$@"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(["bash", str(root / "scripts" / "run"), "--config", "mine.yaml"],
                         cwd=elsewhere, capture_output=True, text=True, check=True, timeout=60)
    lines = run.stdout.splitlines()
    assert Path(lines[0]).resolve() == elsewhere.resolve(), lines
    assert lines[1:] == ["serve", "--host", "127.0.0.1", "--port", "8080",
                         "--config", "mine.yaml"], lines
