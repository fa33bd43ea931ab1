"""A data_dir on a file system mounted read-only: a command that writes there stops with one
line saying so and what mends it (mount it read-write, or choose a folder elsewhere), not a
``chmod`` that cannot help; so does an ``--output`` there. Mounting takes root (with its
capabilities): skipped otherwise."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchpoint.cli import main
from switchpoint.config import load_settings
from switchpoint.gateway import Gateway


def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs at tmp_path/mnt, unmounted afterwards."""
    point = tmp_path / "mnt"
    point.mkdir()
    if os.geteuid() != 0 or not _mount(["-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point)]):
        pytest.skip("mounting a file system takes root with its capabilities")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, check=False)


def test_a_command_that_writes_names_the_read_only_file_system(
        mounted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = mounted / "data"
    config = mounted / "switchpoint.yaml"
    config.write_text(f"data_dir: {data}\n", encoding="utf-8")
    with Gateway(load_settings(config, environ={})) as gateway:
        gateway.open()
    files = {p.name: p.read_bytes() for p in data.iterdir()}
    assert _mount(["-o", "remount,ro", str(mounted)])
    capsys.readouterr()
    assert main(["feedback", "0" * 32, "--success", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"'{data}' is on a file system mounted read-only" in err, err
    assert "mount it read-write, or choose a folder on one that is not" in err
    assert "chmod" not in err, err
    assert {p.name: p.read_bytes() for p in data.iterdir()} == files


def test_an_output_on_a_read_only_file_system_is_refused_saying_so(
        mounted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n", encoding="utf-8")
    assert _mount(["-o", "remount,ro", str(mounted)])
    capsys.readouterr()
    code = main(["route", "--input", str(prompts), "--output", str(mounted / "out.jsonl")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"'{mounted}' is on a file system mounted read-only" in err, err
    assert "data_dir" not in err and "chmod" not in err, err
