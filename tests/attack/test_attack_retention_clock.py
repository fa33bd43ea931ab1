"""``retention.clock`` in data_dir keeps what a service's retention read last and the steps of
the clock ahead it leaves out, and a restart goes on from it. A restored backup, a copy from
another machine or a file damaged by hand can hold anything: whatever it holds, the retention
still prunes what is older than its days (a file no reading could be is said to be damaged and
the retention goes by the clock), and one that leaves days out says so at the start.

Before: a file leaving out 1e300 seconds (or whose clock since boot read ahead of this boot's)
was taken up and kept again at every prune, so the service never pruned again, silently; a
file too big to be a reading, or holding NaN, was passed over without a word.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from switchpoint.store.retention import RETENTION_CLOCK_FILENAME, boot_id, since_boot
from tests.attack.test_attack_disk import _service_keeping_7_days, fill, rows


def _reading(**changed: Any) -> bytes:
    """A reading as a service on this boot keeps it, now, leaving nothing out, ``changed``."""
    kept = {"boot": boot_id(), "wall": time.time(), "boottime": since_boot(),
            "monotonic": time.monotonic(), "left_out": 0.0, **changed}
    return json.dumps(kept).encode()


def _prune_once(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A service keeping 7 days opened on ``db`` runs its retention once, its warnings
    caught."""
    gateway = _service_keeping_7_days(db)
    try:
        with caplog.at_level("WARNING", logger="switchpoint"):
            gateway._housekeeping.run(False, 7)
    finally:
        gateway.close()


HOSTILE = {
    "leaving out 1e300 s, from another boot": _reading(boot="another", left_out=1e300),
    "leaving out 1e308 s": _reading(left_out=1e308),
    "leaving out more than the time since 1970": _reading(left_out=time.time() + 1),
    "its clock since boot ahead of this boot's": _reading(boottime=since_boot() + 1e12),
    "its monotonic clock ahead (an older version's)": json.dumps({
        "boot": boot_id(), "wall": time.time(), "monotonic": time.monotonic() + 1e12,
        "left_out": 0.0}).encode(),
    "NaN": _reading(wall=float("nan")),
    "negative": _reading(left_out=-5.0),
    "too big to be a reading": _reading() + b" " * 4096,
    "not JSON": b"\x00\xff" * 100,
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_retention_clock_no_reading_could_be_is_said_and_the_retention_prunes_by_the_clock(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "switchpoint.db"
    fill(db, n_old=5, n_new=0, age_days=10)  # older than the 7 days kept
    new = fill(db, n_old=0, n_new=5, age_days=0)
    (tmp_path / RETENTION_CLOCK_FILENAME).write_bytes(HOSTILE[kind])
    _prune_once(db, caplog)
    assert [r[0] for r in rows(db)["decisions"]] == new  # (the old entries went)
    assert f"{RETENTION_CLOCK_FILENAME}: not a reading this wrote" in caplog.text, caplog.text
    kept = json.loads((tmp_path / RETENTION_CLOCK_FILENAME).read_bytes())
    assert kept["left_out"] == 0.0  # (nothing of it kept again)


def test_a_retention_clock_from_another_boot_leaving_days_out_says_so_at_the_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "switchpoint.db"
    fill(db, n_old=5, n_new=0, age_days=10)  # (2 days old by the time it keeps)
    old = [r[0] for r in rows(db)["decisions"]]
    (tmp_path / RETENTION_CLOCK_FILENAME).write_bytes(
        _reading(boot="another", wall=time.time() - 60, left_out=8 * 86_400.0))
    _prune_once(db, caplog)
    assert [r[0] for r in rows(db)["decisions"]] == old
    assert "leaves out 8.00 days of steps of the clock ahead" in caplog.text, caplog.text


@pytest.mark.parametrize("kind", ["a FIFO", "a symlink to /dev/zero", "a directory"])
def test_a_retention_clock_that_is_no_regular_file_is_not_waited_on_nor_read_through(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "switchpoint.db"
    fill(db, n_old=5, n_new=0, age_days=10)
    new = fill(db, n_old=0, n_new=5, age_days=0)
    path = tmp_path / RETENTION_CLOCK_FILENAME
    if kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    _prune_once(db, caplog)
    assert [r[0] for r in rows(db)["decisions"]] == new
    assert f"{RETENTION_CLOCK_FILENAME}: not a reading this wrote" in caplog.text, caplog.text
    if kind == "a directory":  # (left in place: said, and the retention goes by the clock)
        assert "cannot keep the retention's clock there" in caplog.text, caplog.text
    else:  # (replaced by a reading of its own)
        assert json.loads(path.read_bytes())["left_out"] == 0.0
