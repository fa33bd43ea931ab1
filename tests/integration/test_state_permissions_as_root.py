"""The permission checks of ``test_state_permissions`` run under root too: file modes do not stop
root, so there they run in a child pytest without the capabilities that pass over them
(``setpriv --bounding-set``), and this test asserts that every one of them passed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.child_pytest import pytest_argv
from tests.integration.test_state_permissions import _modes_bind

ROOT = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).with_name("test_state_permissions.py")
# (the capabilities that let root read, write and chmod what its modes forbid)
DROPPED = "-dac_override,-dac_read_search,-fowner"


def test_the_permission_checks_pass_without_roots_capabilities() -> None:
    if _modes_bind():
        pytest.skip("file modes stop this process, so test_state_permissions ran itself")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed: the permission checks cannot "
                    "drop root's capabilities")
    run = subprocess.run(
        [setpriv, "--bounding-set", DROPPED, "--",
         *pytest_argv("-q", str(CHECKS.relative_to(ROOT)))],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed.group(1)) >= 8, summary
    assert "skipped" not in summary, summary
