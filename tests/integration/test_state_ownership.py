"""A command run as root on a service's data_dir, which belongs to the service's user (the
systemd layout's), gives every file it makes or replaces there the data_dir's owner and group:
the databases and the session pins' file it creates, the learning checkpoint, the spill file,
the lock file, the ``*.wal-owner`` notes, each temporary file renamed into place; SQLite gives
its own ``-wal``, ``-shm`` and ``-journal`` files their database's owner. Each was root's, and
the service, running as its user, could then not use it. A run as any other user, or as root
in root's own data_dir, makes its files its own, as before.

Giving a file away needs root: these tests run as root (as CI does) and are skipped otherwise.
No user needs to exist for the data_dir's owner: it is given to a scratch uid and gid."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from switchpoint._files import locked_file, open_lock, private_file, write_atomically
from switchpoint.cli import main
from switchpoint.config import load_settings
from switchpoint.gateway import Gateway
from switchpoint.labelling.journal import done_path, journal_path
from switchpoint.labelling.lock import OutputLock, lock_path
from switchpoint.store import SQLiteStore
from tests.decisions import a_decision
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.full_disk import full_disk
from tests.integration.test_labelling import JUDGE_SAYS, write_prompts
from tests.integration.test_labelling import config as labelling_config

#: The service user's uid and gid (no such user exists: none needs to).
OWNER = (12345, 12345)
#: Another user's, for a run that is not root's.
OTHER = (23456, 23456)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user "
                                "takes root: these tests run as root (as CI does)")


def _owners(data: Path) -> dict[str, tuple[int, int]]:
    """The owner and group of every file (and folder) in ``data``, by name."""
    return {str(p.relative_to(data)): (p.lstat().st_uid, p.lstat().st_gid)
            for p in data.rglob("*")}


def _owned_by(data: Path, owner: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """:func:`_owners` of ``data``, after asserting that every one is ``owner``."""
    owners = _owners(data)
    assert owners, f"nothing in {data}"
    assert {name: who for name, who in owners.items() if who != owner} == {}, owners
    return owners


@pytest.fixture
def service_dir(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A config and its data_dir (empty, mode 700), the service user's: (config, data_dir)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, *OWNER)
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"data_dir: {data}\ntenants: {{acme: {{}}}}\n", encoding="utf-8")
    yield config, data


def _run(config: Path, *argv: str) -> None:
    assert main([*argv, "--config", str(config)]) == 0, argv


def test_each_command_run_as_root_leaves_every_file_the_data_dirs_owners(
        service_dir: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = service_dir
    _run(config, "keys", "create", "--tenant", "acme")  # (keys.db created)
    assert "keys.db" in _owned_by(data, OWNER)
    with Gateway(load_settings(config, environ={})) as gateway:  # the databases created
        gateway.start()
        decision = gateway.route("Prove that the square root of 2 is irrational.",
                                 tenant="acme")
        gateway.create_ab_test("kept", split=0.3, tenants=["acme"])
        # While it is open: SQLite's side files took their databases' owner.
        owners = _owned_by(data, OWNER)
        for name in ("switchpoint.db", "sessions.db"):
            assert {name + side for side in ("-wal", "-shm", ".wal-owner")} <= set(owners)
        assert "serve.lock" in owners
    _owned_by(data, OWNER)

    _run(config, "feedback", decision.decision_id, "--success")
    _owned_by(data, OWNER)
    checkpoint = data / "learning.checkpoint"
    inodes = []
    for score in (1.0, 0.0):  # a checkpoint written as the gateway closes, then replaced
        with Gateway(load_settings(config, environ={}), serves_chat=False) as gateway:
            gateway.start()
            gateway.report_outcome(decision.decision_id, score, tenant="acme")
        inodes.append(checkpoint.stat().st_ino)
    assert inodes[0] != inodes[1]
    assert "learning.checkpoint" in _owned_by(data, OWNER)
    for argv in (["learn", "--export", str(tmp_path / "exported"), "--tenant", "acme"],
                 ["experiments", "end", "kept"], ["prune", "--older-than", "0.0001"],
                 ["report", "cost"], ["keys", "list"], ["keys", "create", "--tenant", "acme"]):
        _run(config, *argv)
        _owned_by(data, OWNER)
    # The service's user may use what they left: a start as that user needs nothing mended.
    assert _owners(data).keys() >= {"switchpoint.db", "keys.db", "sessions.db",
                                    "learning.checkpoint", "serve.lock"}


def test_sqlite_gives_its_rollback_journal_its_databases_owner(
        service_dir: tuple[Path, Path]) -> None:
    """A database not in WAL mode keeps a -journal beside it while a write is under way: made
    by SQLite, as root, it is the database's owner's."""
    _, data = service_dir
    db = private_file(data / "probe.db")
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (1)")
        assert "probe.db-journal" in _owned_by(data, OWNER)
        conn.execute("COMMIT")


def test_the_spill_file_a_root_run_store_writes_is_the_data_dirs_owners(
        service_dir: tuple[Path, Path]) -> None:
    """A database that refuses writes (a full disk) keeps them in the spill file beside it."""
    _, data = service_dir
    with SQLiteStore(data / "switchpoint.db") as store, full_disk(store):
        store.append_lazy(a_decision())
        deadline = time.monotonic() + 10
        while not store._retry:
            assert time.monotonic() < deadline, "the record was not kept for retry"
            time.sleep(0.01)
        assert store.spill_path.name in _owned_by(data, OWNER)
    _owned_by(data, OWNER)


def test_each_way_a_state_file_is_made_gives_it_the_folders_owner(
        service_dir: tuple[Path, Path]) -> None:
    """A file made empty, a lock file, a file appended to that another process removed
    meanwhile, and one replaced whole (root's before, as an older version left it)."""
    _, data = service_dir
    private_file(data / "made.db")
    os.close(open_lock(data / "made.lock"))
    with locked_file(data / "made.jsonl", append=True) as fd:
        assert fd is not None
    replaced = data / "replaced"
    replaced.write_bytes(b"root's")
    write_atomically(replaced, lambda fh: fh.write(b"new"), mode=0o600, state=True)
    assert replaced.read_bytes() == b"new"
    assert set(_owned_by(data, OWNER)) == {"made.db", "made.lock", "made.jsonl", "replaced"}
    # An output (not a state file) written there stays root's, as before.
    write_atomically(data / "output.json", lambda fh: fh.write(b"{}"))
    assert _owners(data)["output.json"] == (0, 0)


def test_a_label_run_as_root_gives_its_journal_mark_and_lock_the_folders_owner(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``switchpoint label`` run as root with an --out in another user's folder: its own files
    beside the output (the journal a failed run leaves, the mark a complete one leaves, the
    lock held while it runs) are that user's, so the user's next run may use them; the
    output, as every command's output, is the writer's."""
    monkeypatch.setenv("B_KEY", "sk-ant-test")
    folder = tmp_path / "labels"
    folder.mkdir(mode=0o755)
    os.chown(folder, *OWNER)
    out = folder / "records.jsonl"
    with OutputLock(out):
        assert _owners(folder) == {lock_path(out).name: OWNER}
    assert not lock_path(out).exists()
    fake.default("judge", JUDGE_SAYS)
    fake.script("judge", "say:text=It is a good answer.", "say:text=8/10")  # (no score)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    argv = ["label", str(prompts), "--models", "a", "--judge", "judge", "--out", str(out),
            "--config", str(labelling_config(fake, tmp_path)), "--concurrency", "1"]
    assert main(argv) == 1  # (a prompt left to label: the journal stays)
    assert _owners(folder) == {out.name: (0, 0), journal_path(out).name: OWNER}
    assert main(argv) == 0
    assert _owners(folder) == {out.name: (0, 0), done_path(out).name: OWNER}


def test_root_in_its_own_data_dir_and_another_user_in_anyones_make_their_files_their_own(
        service_dir: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = service_dir
    os.chown(data, 0, 0)
    _run(config, "keys", "create", "--tenant", "acme")
    _owned_by(data, (0, 0))

    # Another user (not root) in a data_dir of the service user's that it may write in: its
    # files are its own (none can be given away without root), and nothing is said of them.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed: no run as another user")
    with tempfile.TemporaryDirectory() as scratch:
        theirs = Path(scratch) / "data"
        theirs.mkdir()
        Path(scratch).chmod(0o755)
        theirs.chmod(0o777)
        os.chown(theirs, *OWNER)
        their_config = Path(scratch) / "switchpoint.yaml"
        their_config.write_text(f"data_dir: {theirs}\ntenants: {{acme: {{}}}}\n",
                                encoding="utf-8")
        script = ("import sys; from switchpoint.cli import main; "
                  "sys.exit(main(['keys', 'create', '--tenant', 'acme', '--config', "
                  f"{str(their_config)!r}]))")
        run = subprocess.run(
            [setpriv, f"--reuid={OTHER[0]}", f"--regid={OTHER[1]}", "--clear-groups", "--",
             sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
            check=False, cwd=scratch,
            env={**os.environ, "HOME": scratch, "PYTHONDONTWRITEBYTECODE": "1"})
        assert run.returncode == 0, run.stderr
        assert "chown" not in run.stderr, run.stderr
        assert "keys.db" in _owned_by(theirs, OTHER)
