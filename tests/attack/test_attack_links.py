"""A local user who may write in data_dir (one made world-writable by hand, or in a shared folder)
plants a symbolic link where a state file goes, leading to a file of their own: the store, the
key store, the session pins and the spill file are refused by their name, not written through
(nor read: a report), and the planted file stays empty. A link of this process's user to a file
of its own (a database kept on another disk) is followed as before. Links of another user are
made with ``lchown``, so those tests run as root (and are skipped otherwise). A data_dir others
may write in is warned about, once, with the ``chmod`` that mends it."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from switchpoint.errors import StoreError
from switchpoint.gateway.sessions import SQLitePinStore
from switchpoint.governance.keys import KeyStore
from switchpoint.store import DecisionRecord, SQLiteStore
from tests.fakes.full_disk import full_disk

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="a link of another user is made with "
                             "lchown, which only root may call")

OTHER = 65534  # nobody


def _planted(data_dir: Path, name: str, *, link_owner: int = OTHER) -> Path:
    """A link at ``data_dir/name`` to an empty file another user owns (and all may write), the
    link made by ``link_owner``: the planted file."""
    data_dir.mkdir(mode=0o777, exist_ok=True)
    theirs = data_dir.parent / f"theirs-{name}"
    theirs.touch()
    theirs.chmod(0o666)
    os.chown(theirs, OTHER, OTHER)
    (data_dir / name).symlink_to(theirs)
    os.lchown(data_dir / name, link_owner, link_owner)
    return theirs


def _opened(kind: str, path: Path) -> Any:
    opener: dict[str, Callable[[], Any]] = {
        "store": lambda: SQLiteStore(path).open(),
        "keys": lambda: KeyStore(path).open(),
        "pins": lambda: SQLitePinStore(path)}
    return opener[kind]()


@as_root
@pytest.mark.parametrize(("kind", "name"), [
    ("store", "switchpoint.db"), ("keys", "keys.db"), ("pins", "sessions.db")])
@pytest.mark.parametrize("link_owner", [OTHER, 0])
def test_a_database_linked_to_another_users_file_is_refused_and_not_written(
        tmp_path: Path, kind: str, name: str, link_owner: int) -> None:
    data = tmp_path / "data"
    theirs = _planted(data, name, link_owner=link_owner)
    with pytest.raises(StoreError) as info:
        opened = _opened(kind, data / name)
        opened.close()
    said = str(info.value)
    assert f"'{data / name}': cannot open" in said, said
    who = ("made by uid 65534" if link_owner == OTHER
           else f"symbolic link to '{theirs}', a file owned by uid 65534")
    assert who in said and f"remove the link (`rm {data / name}`)" in said, said
    assert theirs.stat().st_size == 0
    assert not (tmp_path / f"theirs-{name}-wal").exists()


def test_a_database_this_user_linked_to_its_own_file_is_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "disk"
    elsewhere.mkdir()
    (elsewhere / "switchpoint.db").touch(mode=0o600)
    data = tmp_path / "data"
    data.mkdir()
    (data / "switchpoint.db").symlink_to(elsewhere / "switchpoint.db")
    with SQLiteStore(data / "switchpoint.db"):
        pass
    assert (elsewhere / "switchpoint.db").stat().st_size > 0


@as_root
def test_the_spill_file_linked_to_another_users_file_is_not_written_through(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    with SQLiteStore(data / "switchpoint.db"):  # the schema, as a first start makes it
        pass
    record = DecisionRecord(
        id=uuid.uuid4().hex, ts=time.time(), selected_model="a", cluster_id=1,
        cost_weight=0.5, candidates=["a", "b"], cache_hit=False, routing_ms=0.2,
        embedding_ms=3.0, policy="cluster", weights_id="w1", expected_error=0.1,
        cost_adjusted_score=0.2)
    with SQLiteStore(data / "switchpoint.db") as store, full_disk(store) as disk:
        # (planted while the store runs: one there at its opening is taken up and removed)
        theirs = _planted(data, "switchpoint.db.unwritten.jsonl")
        store.append_lazy(record)  # refused: kept for retry, and it would go to the spill file
        deadline = time.monotonic() + 10
        while not store._retry:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        disk.full = False
    assert theirs.stat().st_size == 0


@pytest.mark.parametrize(("mode", "who"), [(0o777, "every user"), (0o770, "the users of its group"),
                                           (0o755, None), (0o700, None)])
def test_a_data_dir_others_may_write_in_is_warned_about_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, who: str | None) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="switchpoint"):
        for _ in range(2):
            with SQLiteStore(data / "switchpoint.db"), KeyStore(data / "keys.db") as keys:
                keys.open()
    said = [r.getMessage() for r in caplog.records if "can be written by" in r.getMessage()]
    if who is None:
        assert said == []
        return
    assert said == [f"{data} can be written by {who} (mode {mode:03o}), who may then delete or "
                    "replace the databases and files switchpoint keeps there, or plant files in "
                    f"their place; make it writable by its owner alone: chmod 700 {data}"]


@as_root
def test_a_report_does_not_read_a_store_another_user_linked_in_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reader (``switchpoint report``) opened the database the link led to, and reported
    that user's figures as the service's."""
    from switchpoint.cli import main

    theirs = tmp_path / "theirs.db"
    with SQLiteStore(theirs):  # (a store of their making)
        pass
    os.chown(theirs, OTHER, OTHER)
    data = tmp_path / "data"
    data.mkdir()
    (data / "switchpoint.db").symlink_to(theirs)
    os.lchown(data / "switchpoint.db", OTHER, OTHER)
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"data_dir: {data}\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["report", "cost", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err, err
    assert (f"'{data / 'switchpoint.db'}': cannot read the request and decision logs (the "
            f"symbolic link to '{theirs}' in its place was made by uid 65534") in err, err
    assert f"remove the link (`rm {data / 'switchpoint.db'}`)" in err, err
