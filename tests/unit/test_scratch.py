"""The tests' scratch folder in memory (tests/scratch.py): taken only where it is this user's
own, with room, and never over a TMPDIR the caller set."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.scratch import use_memory_scratch


@pytest.fixture
def no_tmpdir(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TMPDIR set; the process's temporary folder and TMPDIR restored after the test."""
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)


def test_a_private_folder_of_the_memory_file_system_becomes_the_temporary_folder(
        tmp_path: Path, no_tmpdir: None) -> None:
    folder = use_memory_scratch(tmp_path, min_free=1)
    assert folder == tmp_path / f"switchpoint-tests-{os.getuid()}"
    assert folder.stat().st_mode & 0o777 == 0o711  # (others pass through, never list)
    assert os.environ["TMPDIR"] == str(folder) and tempfile.gettempdir() == str(folder)
    assert use_memory_scratch(tmp_path, min_free=1) is None  # (TMPDIR is set now)


def test_a_tmpdir_the_caller_set_is_kept(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert use_memory_scratch(tmp_path, min_free=1) is None
    assert os.environ["TMPDIR"] == str(tmp_path) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("taken", ["link", "file", "shared"])
def test_a_name_taken_by_anything_but_a_private_folder_leaves_the_default(
        tmp_path: Path, no_tmpdir: None, taken: str) -> None:
    name = tmp_path / f"switchpoint-tests-{os.getuid()}"
    if taken == "link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        name.symlink_to(tmp_path / "elsewhere")
    elif taken == "file":
        name.write_text("not a folder")
    else:
        name.mkdir()
        name.chmod(0o777)
    before = tempfile.gettempdir()
    assert use_memory_scratch(tmp_path, min_free=1) is None
    assert "TMPDIR" not in os.environ and tempfile.gettempdir() == before


def test_a_memory_file_system_without_room_or_none_leaves_the_default(
        tmp_path: Path, no_tmpdir: None) -> None:
    assert use_memory_scratch(tmp_path, min_free=1 << 62) is None
    assert use_memory_scratch(tmp_path / "absent", min_free=1) is None
    assert "TMPDIR" not in os.environ and not list(tmp_path.iterdir())
