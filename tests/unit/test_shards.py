"""The suite's parts (tests/shards.py): every file in exactly one part, dealt out by duration,
and the ``--shard`` / ``--record-durations`` options of a real pytest run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.child_pytest import pytest_argv
from tests.shards import (
    assign,
    file_of,
    files_to_deal,
    merge_durations,
    parse_shard,
    read_durations,
)

ROOT = Path(__file__).resolve().parents[2]


def test_parse_shard_takes_i_of_n() -> None:
    assert parse_shard("1/2") == (1, 2)
    assert parse_shard("3/3") == (3, 3)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2", ""])
def test_parse_shard_refuses_what_is_not_i_of_n(text: str) -> None:
    with pytest.raises(ValueError, match="write I/N"):
        parse_shard(text)


def test_assign_puts_each_file_in_one_part_longest_first() -> None:
    durations = {"a": 100.0, "b": 60.0, "c": 50.0, "d": 10.0}
    part = assign(["d", "c", "b", "a"], durations, 2)
    assert set(part) == {"a", "b", "c", "d"}
    # a (100) to part 1, b (60) to 2, c (50) to 2 (60 < 100), d (10) to 1 (100 < 110)
    assert part == {"a": 1, "b": 2, "c": 2, "d": 1}
    assert assign(["a", "b", "c", "d"], durations, 2) == part  # order of the files is no matter


def test_a_file_without_a_duration_counts_as_the_median_one() -> None:
    durations = {"a": 10.0, "b": 20.0, "c": 30.0}
    part = assign(["a", "b", "c", "new"], durations, 2)
    # c (30) -> 1; b (20) and new (20, the median) -> 2 (b first by name), then a -> 1 (30 < 40)
    assert part == {"c": 1, "b": 2, "new": 2, "a": 1}


def test_files_of_no_recorded_time_are_shared_out_too() -> None:
    assert assign(["x", "y", "z"], {"x": 0.0, "y": 0.0, "z": 0.0}, 2) == {"x": 1, "y": 2,
                                                                         "z": 1}
    assert assign(["new", "other"], {"x": 0.0}, 2) == {"new": 1, "other": 2}


def test_more_parts_than_files_leaves_parts_empty() -> None:
    assert assign(["a"], {}, 3) == {"a": 1}
    assert assign([], {}, 2) == {}


def test_durations_merge_over_the_recorded_ones(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    assert read_durations(path) == {}
    merge_durations(path, {"tests/b.py": 2.345, "tests/a.py": 1.0})
    merge_durations(path, {"tests/b.py": 3.0})
    assert read_durations(path) == {"tests/a.py": 1.0, "tests/b.py": 3.0}
    assert list(json.loads(path.read_text(encoding="utf-8"))) == ["tests/a.py", "tests/b.py"]


def test_file_of_a_node_id() -> None:
    assert file_of("tests/unit/test_x.py::test_y[a::b]") == "tests/unit/test_x.py"
    assert file_of("tests/unit/test_x.py") == "tests/unit/test_x.py"


def collected(*args: str) -> set[str]:
    proc = subprocess.run(pytest_argv("--collect-only", "-q", *args), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_the_parts_of_a_real_run_cover_its_tests_once() -> None:
    folder = "tests/unit/test_shards.py"
    whole = collected(folder, "tests/unit/test_progress.py")
    first = collected(folder, "tests/unit/test_progress.py", "--shard", "1/2")
    second = collected(folder, "tests/unit/test_progress.py", "--shard", "2/2")
    assert whole and first and second
    assert first | second == whole
    assert not first & second
    assert {file_of(n) for n in first}.isdisjoint({file_of(n) for n in second})


def test_a_bad_shard_is_a_usage_error() -> None:
    proc = subprocess.run(pytest_argv("--collect-only", "-q", "--shard", "3/2",
                                      "tests/unit/test_shards.py"),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4  # pytest's usage error
    assert "--shard '3/2': write I/N" in proc.stderr


def test_a_run_records_its_seconds_per_file(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    proc = subprocess.run(pytest_argv("-q", "--record-durations", str(path),
                                      "tests/unit/test_shards.py::test_file_of_a_node_id"),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = read_durations(path)
    assert list(recorded) == ["tests/unit/test_shards.py"]
    assert 0 <= recorded["tests/unit/test_shards.py"] < 60


def test_the_files_dealt_out_are_those_the_paths_name(tmp_path: Path) -> None:
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / ".hidden").mkdir()
    for name in ("tests/unit/test_a.py", "tests/unit/helpers.py", "tests/unit/b_check.py",
                 "tests/test_c.py", "tests/.hidden/test_d.py", "tests/unit/conftest.py"):
        (tmp_path / name).write_text("", encoding="utf-8")
    assert files_to_deal(["tests"], tmp_path, tmp_path) == ["tests/test_c.py",
                                                        "tests/unit/test_a.py"]
    assert files_to_deal(["unit", "unit/b_check.py::test_x"], tmp_path / "tests", tmp_path,
                      ["test_*.py", "*_check.py"]) == ["tests/unit/b_check.py",
                                                      "tests/unit/test_a.py"]
    assert files_to_deal(["tests/test_c.py::test_y[a::b]", "tests/missing"], tmp_path,
                      tmp_path) == ["tests/test_c.py"]
