"""Weights packages: round trip, atomic save, and a WeightsError naming the file for every fault."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

import switchpoint
from switchpoint import _files, training
from switchpoint import weights as weights_module
from switchpoint.catalog import MAX_CATALOG_MODELS
from switchpoint.config import load_settings
from switchpoint.errors import InvalidInputError, WeightsError
from switchpoint.policies import ClusterPolicy, Inputs
from switchpoint.records import RecordSet
from switchpoint.training import add_model, fit, remove_model
from switchpoint.weights import (
    FORMAT_VERSION,
    MAX_PROVENANCE_ITEMS,
    WeightsPackage,
    bundled_policies,
    default_weights_path,
    listed,
    load_weights,
    save_weights,
    with_entry,
)
from tests.conftest import SMALL_SPLIT, FakeEmbedder


@pytest.fixture
def pkg_dir(tiny_weights_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny package that a test may corrupt."""
    return Path(shutil.copytree(tiny_weights_dir, tmp_path / "pkg"))


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _queries(fake_embedder, small_records) -> np.ndarray:  # type: ignore[no-untyped-def]
    return fake_embedder.embed([*small_records.prompts[:10], "a prompt nobody has seen"])


def test_round_trip_same_id_and_estimates(
    tiny_package: WeightsPackage, tiny_weights_dir: Path, fake_embedder: FakeEmbedder,
    small_records: RecordSet,
) -> None:
    loaded = load_weights(tiny_weights_dir)
    assert loaded.weights_id == tiny_package.weights_id
    assert _manifest(tiny_weights_dir)["weights_id"] == loaded.weights_id
    assert loaded.embedder_id == "fake/hash-384"
    assert loaded.dimension == 384
    assert loaded.models == tiny_package.models
    assert loaded.path == tiny_weights_dir
    assert loaded.policy.get_params() == tiny_package.policy.get_params()
    assert loaded.provenance["n_records"] == 120
    assert loaded.provenance["split"] == "test"
    x = Inputs(embeddings=_queries(fake_embedder, small_records))
    a, b = tiny_package.policy.estimate(x), loaded.policy.estimate(x)
    np.testing.assert_array_equal(a.unit_ids, b.unit_ids)
    np.testing.assert_allclose(b.error, a.error, atol=1e-7)
    np.testing.assert_allclose(b.cost, a.cost, rtol=1e-12)
    np.testing.assert_array_equal(b.support, a.support)
    # Saving the loaded package again reproduces the same id.
    assert load_weights(loaded.save(tiny_weights_dir.parent / "again")).weights_id == \
        loaded.weights_id


def test_manifest_lists_checksums_for_every_file(tiny_weights_dir: Path) -> None:
    m = _manifest(tiny_weights_dir)
    assert m["format"] == "switchpoint-weights"
    assert m["format_version"] == FORMAT_VERSION
    on_disk = {p.relative_to(tiny_weights_dir).as_posix()
               for p in tiny_weights_dir.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(m["files"]) == on_disk
    for rel, digest in m["files"].items():
        assert hashlib.sha256((tiny_weights_dir / rel).read_bytes()).hexdigest() == digest
    assert set(m["profiles"]) == set(m["models"])
    assert m["profiles"]["meta/llama-2-70b-chat"] == "profiles/meta__llama-2-70b-chat.json"


def test_weights_id_changes_when_the_policy_changes(tiny_weights_dir: Path) -> None:
    package = load_weights(tiny_weights_dir)
    original = package.weights_id
    changed = remove_model(package, "claude-v1")
    assert changed.weights_id != original and package.weights_id == original
    assert "claude-v1" not in changed.models


def test_save_replaces_atomically_and_leaves_no_temp_dirs(
    pkg_dir: Path, tmp_path: Path
) -> None:
    package = load_weights(pkg_dir)
    package = remove_model(package, "claude-v2")
    save_weights(package, pkg_dir)  # over an existing package
    reloaded = load_weights(pkg_dir)
    assert "claude-v2" not in reloaded.models
    assert not (pkg_dir / "profiles" / "claude-v2.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_package_a_killed_save_set_aside_goes_back_before_the_next_save(
    pkg_dir: Path, tmp_path: Path
) -> None:
    # Where the system cannot swap two folders in one step, a save renames the old package
    # aside, then the new one in: a kill between the two leaves no package at its path.
    package = load_weights(pkg_dir)
    pid = _dead_pid()
    pkg_dir.rename(tmp_path / f".pkg.{pid}.old")
    (tmp_path / f".pkg.{pid}.1a2b.tmp").mkdir()  # the new one, half-written
    with pytest.raises(WeightsError, match=rf"cut short .* at .*\.pkg\.{pid}\.old'; rename"):
        load_weights(pkg_dir)
    _files.clear_leftovers(pkg_dir)  # what a save does first
    assert load_weights(pkg_dir).weights_id == package.weights_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    package = remove_model(package, "claude-v2")
    save_weights(package, pkg_dir)
    assert "claude-v2" not in load_weights(pkg_dir).models


def test_a_save_clears_only_leftovers_of_dead_writers_not_files_of_the_same_name(
    pkg_dir: Path, tmp_path: Path
) -> None:
    pid = _dead_pid()
    mine = [f".pkg.{pid}.bak", f".pkg.{pid}", ".pkg.notes.tmp"]  # a person's own files
    for name in mine:
        (tmp_path / name).write_text("keep me")
    (tmp_path / f".pkg.{pid}.0f3a9c21.tmp").mkdir()  # a killed save's work
    alive = tmp_path / f".pkg.{os.getpid()}.77aa00bb.tmp"  # a save under way
    alive.mkdir()
    save_weights(load_weights(pkg_dir), pkg_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*mine, alive.name, "pkg"])


def test_a_package_an_earlier_version_set_aside_goes_back_and_its_work_is_cleared(
    pkg_dir: Path, tmp_path: Path
) -> None:
    # Earlier versions named the package set aside ``.NAME.old-PID`` and their work folder
    # ``.NAME.<12 hex digits>.tmp``, which names no pid.
    package = load_weights(pkg_dir)
    pid = _dead_pid()
    pkg_dir.rename(tmp_path / f".pkg.old-{pid}")
    work = tmp_path / ".pkg.0123456789ab.tmp"
    work.mkdir()
    (work / "centroids.npy").write_bytes(b"half")
    hour_ago = time.time() - _files.LEGACY_QUIET_S - 60
    for path in (work / "centroids.npy", work):
        os.utime(path, (hour_ago, hour_ago))
    with pytest.raises(WeightsError, match=rf"cut short .* at .*\.pkg\.old-{pid}'; rename"):
        load_weights(pkg_dir)
    package = remove_model(package, "claude-v2")
    save_weights(package, pkg_dir)  # puts the old package back first, then replaces it
    assert "claude-v2" not in load_weights(pkg_dir).models
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_leftovers_named_the_older_way_of_live_or_recent_writers_are_kept(
    pkg_dir: Path, tmp_path: Path
) -> None:
    live_old = tmp_path / f".pkg.old-{os.getpid()}"  # a running save's package set aside
    live_old.mkdir()
    recent = tmp_path / ".pkg.a1b2c3d4e5f6.tmp"  # being written now (its writer names no pid)
    recent.mkdir()
    # All-digit hex: still an older work folder, judged by its age, not a pid out of range.
    digits = tmp_path / ".pkg.123456789012.tmp"
    digits.mkdir()
    stale = time.time() - _files.LEGACY_QUIET_S - 60
    os.utime(recent, (stale, stale))
    (recent / "manifest.json").write_text("{}")  # ... and a file just written in it
    mine = [".pkg.old-notes", ".pkg.0123456789abc.tmp", ".pkg.old-12.bak"]  # a person's own files
    for name in mine:
        (tmp_path / name).write_text("keep me")
    save_weights(load_weights(pkg_dir), pkg_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*mine, live_old.name, recent.name, digits.name, "pkg"])
    os.utime(digits, (stale, stale))
    save_weights(load_weights(pkg_dir), pkg_dir)
    assert not digits.exists() and recent.exists() and live_old.exists()


def test_digits_no_writer_puts_in_a_name_are_no_dead_writer() -> None:
    assert _files.writer_gone(str(_dead_pid())) is True
    assert _files.writer_gone(str(os.getpid())) is False
    # A leading zero, or a number beyond any pid the system hands out: not a pid at all.
    for digits in ("99999999999999999999", str(_files.PID_MAX + 1), "0123456789", "0"):
        assert _files.writer_gone(digits) is False, digits


def test_a_digits_only_part_that_is_no_pid_is_not_taken_for_a_dead_writers(
    pkg_dir: Path, tmp_path: Path
) -> None:
    pid = _dead_pid()
    dead = tmp_path / f".pkg.{pid}.tmp"  # a killed writer's (as checkpoints once named theirs)
    dead.mkdir()
    kept = [".pkg.0123456789.tmp", f".pkg.{_files.PID_MAX + 1}.tmp", f".pkg.0{pid}.old"]
    for name in kept:
        (tmp_path / name).mkdir()
    stale = time.time() - _files.LEGACY_QUIET_S - 60
    for name in kept:
        os.utime(tmp_path / name, (stale, stale))
    save_weights(load_weights(pkg_dir), pkg_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "pkg"])


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for inner in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(inner, (then, then))


def test_tempfile_named_work_of_earlier_versions_is_cleared_once_quiet(
    pkg_dir: Path, tmp_path: Path
) -> None:
    # Earlier versions made their work folder with tempfile.mkdtemp(prefix=".NAME."), which
    # names no pid: ``.NAME.`` and eight random letters, readable by its owner alone.

    stale = Path(tempfile.mkdtemp(prefix=".pkg.", dir=tmp_path))
    (stale / "centroids.npy").write_bytes(b"half")
    _age(stale, _files.LEGACY_QUIET_S + 60)
    recent = Path(tempfile.mkdtemp(prefix=".pkg.", dir=tmp_path))  # a save under way
    _age(recent, _files.LEGACY_QUIET_S + 60)
    (recent / "manifest.json").write_text("{}")  # ... writing now
    # A person's own copy, readable by others as files are made by default: kept, however old.
    mine = tmp_path / ".pkg.original"
    shutil.copytree(pkg_dir, mine)
    mine.chmod(0o755)
    _age(mine, _files.LEGACY_QUIET_S + 60)
    save_weights(load_weights(pkg_dir), pkg_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [recent.name, mine.name, "pkg"])


def test_tempfile_named_files_of_earlier_versions_are_cleared_once_quiet(tmp_path: Path) -> None:
    # route --output wrote through tempfile.mkstemp(prefix=".NAME."), eval plots through
    # tempfile.mkstemp(prefix=".NAME.", suffix=".png").

    out, plot = tmp_path / "routed.jsonl", tmp_path / "curves.png"
    stale = [tempfile.mkstemp(prefix=".routed.jsonl.", dir=tmp_path),
             tempfile.mkstemp(prefix=".curves.png.", suffix=".png", dir=tmp_path)]
    recent = tempfile.mkstemp(prefix=".routed.jsonl.", dir=tmp_path)
    for fd, _name in [*stale, recent]:
        os.close(fd)
    for _, name in stale:
        _age(Path(name), _files.LEGACY_QUIET_S + 60)
    shared = tmp_path / ".routed.jsonl.backup01"  # looks like one, but others may read it
    shared.write_text("keep me")
    shared.chmod(0o644)
    _age(shared, _files.LEGACY_QUIET_S + 60)
    _files.write_atomically(out, lambda fh: fh.write(b"{}\n"))
    _files.write_atomically(plot, lambda fh: fh.write(b"png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [Path(recent[1]).name, shared.name, out.name, plot.name])


def test_a_save_without_the_one_step_swap_replaces_the_package(
    pkg_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "_renameat2", lambda: None)
    package = load_weights(pkg_dir)
    package = remove_model(package, "claude-v2")
    save_weights(package, pkg_dir)
    assert "claude-v2" not in load_weights(pkg_dir).models
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


SAVES_FOREVER = """
import sys
from switchpoint.training import remove_model
from switchpoint.weights import load_weights, save_weights
a = load_weights(sys.argv[1])
b = remove_model(a, sys.argv[2])
print("saving", flush=True)
while True:
    save_weights(a, sys.argv[1])
    save_weights(b, sys.argv[1])
"""


def test_a_package_read_while_saves_replace_it_is_always_one_of_them_whole(
    pkg_dir: Path,
) -> None:
    # What a reload (or a start) reads while `add-model --weights DIR` rewrites DIR.
    old = load_weights(pkg_dir)
    writer = subprocess.Popen([sys.executable, "-c", SAVES_FOREVER, str(pkg_dir), "claude-v2"],
                              stdout=subprocess.PIPE, text=True)
    ids: set[str] = set()
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "saving\n"
        # At least 400 reads, and on until both packages were read (a loaded machine may give
        # the writer no time slice for a while), bounded.
        reads, deadline = 0, time.monotonic() + 60
        while (reads < 400 or len(ids) < 2) and time.monotonic() < deadline:
            ids.add(load_weights(pkg_dir).weights_id)
            reads += 1
    finally:
        writer.kill()
        writer.wait()
    assert old.weights_id in ids and len(ids) == 2, ids


def test_a_file_a_save_takes_away_mid_read_means_the_new_package_is_read(
    pkg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = load_weights(pkg_dir)
    new = remove_model(old, "claude-v2")
    open_file = os.open
    swapped: list[Path] = []

    def swap_then_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        # The save lands between the reader seeing the profile and opening it.
        if Path(path).name == "claude-v2.json" and not swapped:
            swapped.append(path)
            save_weights(new, pkg_dir)
        return open_file(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", swap_then_open)
    read = load_weights(pkg_dir)
    assert swapped and read.weights_id == new.weights_id != old.weights_id


def test_a_read_torn_by_a_save_is_read_again_when_the_next_save_puts_the_old_one_back(
    pkg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer saving the old package and the new one in turn (add-model, then remove-model):
    # the new package lands while the old one's profile is being opened, and the old package
    # lands again before the reader looks at which folder is there. A new folder may be given
    # the number of one just removed (ext4 does), so the folder there now looked like the one
    # the reader started on, and the torn read was refused as a broken package.
    old = load_weights(pkg_dir)
    new = remove_model(old, "claude-v2")
    open_file, stat_path = os.open, os.stat
    saves: list[str] = []
    saving = False

    def save(package: WeightsPackage) -> None:
        nonlocal saving
        saving = True  # (the save's own looks at pkg_dir are not the reader's)
        save_weights(package, pkg_dir)
        saves.append(package.weights_id)
        saving = False

    def swap_then_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path).name == "claude-v2.json" and not saves and not saving:
            save(new)
        return open_file(path, *args, **kwargs)

    def swap_back_then_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path) == pkg_dir and saves == [new.weights_id] and not saving:
            save(old)
        return stat_path(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", swap_then_open)
    monkeypatch.setattr(os, "stat", swap_back_then_stat)
    read = load_weights(pkg_dir)
    assert saves == [new.weights_id, old.weights_id]
    assert read.weights_id == old.weights_id and "claude-v2" in read.models


def test_a_package_a_save_replaces_each_time_it_is_read_is_refused_saying_so(
    pkg_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two packages, each without a model the other has, saved in turn: every read takes one's
    # manifest and the other's files.
    old = load_weights(pkg_dir)
    other = next(m for m in old.models if m != "claude-v2")
    packages = [remove_model(old, "claude-v2"), remove_model(old, other)]
    open_file = os.open
    saves: list[str] = []
    saving = False

    def open_then_swap(path: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal saving
        fd = open_file(path, *args, **kwargs)
        if Path(path) == pkg_dir / "manifest.json" and not saving:  # (the reader's open)
            saving = True
            package = packages[len(saves) % 2]
            save_weights(package, pkg_dir)
            saves.append(package.weights_id)
            saving = False
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)
    with pytest.raises(WeightsError) as caught:
        load_weights(pkg_dir)
    monkeypatch.undo()
    assert str(caught.value) == (
        f"{str(pkg_dir)!r}: a save replaced the package each of the 5 times it was read, before "
        "the read was done; load it again once it is no longer being saved")
    assert len(saves) == 5 and set(saves) == {p.weights_id for p in packages}
    assert load_weights(pkg_dir).weights_id == saves[-1]  # (what is there is whole)


def test_save_writes_into_a_new_or_empty_directory(pkg_dir: Path, tmp_path: Path) -> None:
    package = load_weights(pkg_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_weights(save_weights(package, empty)).weights_id == package.weights_id
    new = tmp_path / "new" / "deeper"
    assert load_weights(save_weights(package, new)).weights_id == package.weights_id
    # The usual permissions (the process's umask), not owner-only ones: another user (a
    # service account) can read the package.
    umask = os.umask(0o022)
    os.umask(umask)
    assert new.stat().st_mode & 0o777 == 0o777 & ~umask
    assert not [p for p in new.parent.iterdir() if p.name.startswith(".")]  # nothing left


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file()}


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: p.write_text("keep me\n"), "is a file, not a weights package"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("keep me\n")),
     "holds other files than a weights package"),
    (lambda p: (p.mkdir(), (p / "switchpoint.db").write_bytes(b"SQLite format 3\0")),
     "holds other files than a weights package"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text('{"name": "my web app"}')),
     "holds other files than a weights package"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)),
     "holds other files than a weights package"),
    # A package's manifest beside someone's own files: the files would go with it.
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text('{"format": "switchpoint-weights"}'),
                (p / "src").mkdir(), (p / "src" / "main.py").write_text("print(1)\n")),
     "holds other files than a weights package"),
])
def test_save_never_replaces_what_is_not_a_weights_package(
        pkg_dir: Path, tmp_path: Path, make: Any, reason: str) -> None:
    target = tmp_path / "taken"
    make(target)
    before = target.read_bytes() if target.is_file() else _tree(target)
    with pytest.raises(WeightsError) as info:
        save_weights(load_weights(pkg_dir), target)
    assert str(info.value).startswith(f"'{target}': ")
    assert reason in str(info.value) and "choose a new or empty directory" in str(info.value)
    assert (target.read_bytes() if target.is_file() else _tree(target)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "taken"]


@pytest.mark.parametrize("where", ["pkg/sub", "pkg/profiles/deeper/w", "link/sub"])
def test_save_refuses_a_place_inside_a_weights_package(
        pkg_dir: Path, tmp_path: Path, where: str) -> None:
    # Inside a package (by any name), a save would leave that package holding files of
    # others, which no later save could replace: refused, naming it, nothing written.
    (tmp_path / "link").symlink_to(pkg_dir)
    before = _tree(pkg_dir)
    with pytest.raises(WeightsError) as info:
        save_weights(load_weights(pkg_dir), tmp_path / where)
    assert str(info.value).startswith(f"'{tmp_path / where}': is inside the weights package "
                                      f"'{pkg_dir}', ")
    assert f"write the weights beside it, e.g. '{pkg_dir}-2'" in str(info.value)
    assert _tree(pkg_dir) == before and not (pkg_dir / "sub").exists()
    save_weights(load_weights(pkg_dir), pkg_dir)  # (the package itself is still replaced)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "pkg"]


@pytest.mark.parametrize(("where", "reason"), [
    ("file/w", "its parent '{tmp}/file' is not a directory"),
    ("file/sub/w", "its path goes through '{tmp}/file', which is not a directory"),
    ("/proc/w", "cannot write a weights package there"),
    (".", "names no directory of its own"),
    ("..", "names no directory of its own"),
])
def test_a_place_weights_cannot_be_written_is_a_weights_error(
        pkg_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str,
        reason: str) -> None:
    (tmp_path / "file").write_text("records\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    target = where if where.startswith(("/", ".")) else tmp_path / where
    with pytest.raises(WeightsError) as info:
        save_weights(load_weights(pkg_dir), target)
    assert reason.format(tmp=tmp_path) in str(info.value)
    assert (tmp_path / "file").read_text() == "records\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "pkg", "work"]
    assert list(work.iterdir()) == []


def test_add_model_then_save_and_load(
    pkg_dir: Path, small_records: RecordSet, fake_embedder: FakeEmbedder
) -> None:
    package = load_weights(pkg_dir)
    centroids = cast(ClusterPolicy, package.policy).centroids_.copy()
    package = add_model(package, "gpt-4-clone", small_records.subset(range(30)),
                        embedder=fake_embedder, source_model="gpt-4-1106-preview")
    package.save(pkg_dir)
    reloaded = load_weights(pkg_dir)
    reloaded_policy = cast(ClusterPolicy, reloaded.policy)
    assert reloaded.models[-1] == "gpt-4-clone"
    np.testing.assert_array_equal(reloaded_policy.centroids_, centroids)
    assert reloaded.provenance["added_models"][0]["model"] == "gpt-4-clone"
    assert reloaded.provenance["added_models"][0]["n_records"] == 30
    assert sum(reloaded_policy.table_.count[:, -1]) == 30


@pytest.mark.parametrize("long_name", ["m" * 5000, "vendor/" + "é" * 300])
def test_a_model_with_a_long_name_saves_and_loads(
    pkg_dir: Path, small_records: RecordSet, fake_embedder: FakeEmbedder, long_name: str
) -> None:
    # (add_model refuses a name no catalog could hold; a policy taught in Python, or a package
    # of an earlier version, may still hold one, and saves and loads)
    package = load_weights(pkg_dir)
    labels = small_records.subset(range(30))
    j = labels.models.index("gpt-4-1106-preview")
    inputs = Inputs(texts=list(labels.prompts), embeddings=fake_embedder.embed(labels.prompts))
    policy = package.policy
    for name in (long_name, long_name + "-twin"):  # two long names of the same start
        policy = policy.add_model(name, inputs, labels.scores[:, j], labels.costs[:, j])
    package = WeightsPackage(policy=policy, embedder_id=package.embedder_id,
                             dimension=package.dimension, provenance=package.provenance)
    package.save(pkg_dir)
    files = [p.name for p in (pkg_dir / "profiles").iterdir()]
    assert max(len(f) for f in files) <= 120 and len(set(files)) == len(files)
    reloaded = load_weights(pkg_dir)
    assert reloaded.models[-2:] == [long_name, long_name + "-twin"]


# Every corruption: WeightsError naming the file --------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-weights"
    with pytest.raises(WeightsError) as info:
        load_weights(missing)
    assert info.value.path == missing
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value) and "not a directory" not in str(info.value)


def test_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "weights.json"
    f.write_text("{}")
    with pytest.raises(WeightsError, match="not a directory"):
        load_weights(f)


def test_missing_manifest(pkg_dir: Path) -> None:
    (pkg_dir / "manifest.json").unlink()
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert str(pkg_dir / "manifest.json") in str(info.value)
    assert "missing" in str(info.value)


@pytest.mark.parametrize(("text", "said"), [
    ("{not json", "not valid JSON"), ("", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ('{"format_version": 1' + "0" * 5000 + "}", "not valid JSON"),
    ("\xff\xfe", "is not UTF-8 text (byte 0xFF at byte 1)"),
    ('{"format": "\xe9"}', "is not UTF-8 text (byte 0xE9 at byte 13)")])
def test_manifest_not_json(pkg_dir: Path, text: str, said: str) -> None:
    (pkg_dir / "manifest.json").write_text(text, encoding="latin-1")
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert str(pkg_dir / "manifest.json") in str(info.value)
    assert said in str(info.value)


def test_manifest_of_another_format(pkg_dir: Path) -> None:
    _write_manifest(pkg_dir, {"format": "something-else"})
    with pytest.raises(WeightsError, match="not a switchpoint weights manifest") as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / "manifest.json"
    _write_manifest(pkg_dir, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(WeightsError, match=r"manifest\.json"):
        load_weights(pkg_dir)


@pytest.mark.parametrize("version", [3, 0, "1", None, True])
def test_wrong_format_version(pkg_dir: Path, version: object) -> None:
    m = _manifest(pkg_dir)
    m["format_version"] = version
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert str(pkg_dir / "manifest.json") in str(info.value)
    assert "format_version" in str(info.value)


@pytest.mark.parametrize("field", ["embedder", "models", "arrays", "profiles", "policy", "files"])
def test_manifest_missing_field(pkg_dir: Path, field: str) -> None:
    m = _manifest(pkg_dir)
    del m[field]
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert str(pkg_dir / "manifest.json") in str(info.value)
    assert field in str(info.value)


def test_missing_profile_for_a_listed_model(pkg_dir: Path) -> None:
    target = pkg_dir / "profiles" / "claude-v1.json"
    target.unlink()
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == target
    assert str(target) in str(info.value)
    assert '"claude-v1"' in str(info.value)


def test_model_listed_without_a_profile_entry(pkg_dir: Path) -> None:
    m = _manifest(pkg_dir)
    m["models"].append("ghost-model")
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert str(pkg_dir / "profiles" / "ghost-model.json") in str(info.value)
    assert '"ghost-model"' in str(info.value)


@pytest.mark.parametrize(("name", "shown", "char"), [
    ("evil\x1b[2J\nmodel", '"evil\\u001b[2J\\nmodel"', "U+001B (character 5)"),
    ("gpt-4\r\nX-Admin: yes", '"gpt-4\\r\\nX-Admin: yes"', "U+000D (character 6)"),
    ("safe\u202eldom", '"safe\\u202eldom"', "U+202E (character 5)"),
    ("zero\u200bwidth", '"zero\\u200bwidth"', "U+200B (character 5)"),
])
def test_a_model_name_with_an_unprintable_character_is_refused_on_load(
        pkg_dir: Path, name: str, shown: str, char: str) -> None:
    """A name the router would print (answers, logs, `switchpoint info`) must show as itself:
    the package is refused, naming its manifest and the model, escaped."""
    m = _manifest(pkg_dir)
    old = m["models"][0]
    m["models"][0] = name
    m["profiles"][name] = m["profiles"].pop(old)
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    message = str(info.value)
    assert message.startswith(f"'{pkg_dir / 'manifest.json'}': model {shown} holds {char}")
    assert "\n" not in message and "\x1b" not in message and "\u202e" not in message


def test_a_model_name_with_an_unprintable_character_is_never_written(
        pkg_dir: Path, small_records: RecordSet, fake_embedder: FakeEmbedder,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (refused as the name is given, before its labels are learned: the package's save keeps
    # the same rule for a package built otherwise)
    package = load_weights(pkg_dir)
    with pytest.raises(InvalidInputError) as info:
        add_model(package, "new\nmodel", small_records.subset(range(30)),
                  embedder=fake_embedder, source_model="gpt-4-1106-preview")
    assert info.value.field == "name" and '"new\\nmodel": holds U+000A' in str(info.value)
    assert "new\nmodel" not in package.models
    # A package holding such a name all the same (built past add_model's check) is never saved.
    monkeypatch.setattr(training, "catalog_name_problem", lambda name: None)
    package = add_model(package, "new\nmodel", small_records.subset(range(30)),
                        embedder=fake_embedder, source_model="gpt-4-1106-preview")
    target = tmp_path / "out"
    with pytest.raises(WeightsError) as saved:
        package.save(target)
    assert str(target) in str(saved.value) and '"new\\nmodel" holds U+000A' in str(saved.value)
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_long_and_non_ascii_model_names_still_load(pkg_dir: Path) -> None:
    names = ["vendor/模型-é", "m" * 300, "a b"]
    m = _manifest(pkg_dir)
    for old, new in zip(list(m["models"]), names, strict=False):
        m["models"][m["models"].index(old)] = new
        m["profiles"][new] = m["profiles"].pop(old)
    _write_manifest(pkg_dir, m)
    assert load_weights(pkg_dir).models[:3] == names


def test_checksum_mismatch_after_editing_a_profile(pkg_dir: Path) -> None:
    target = pkg_dir / "profiles" / "gpt-4-1106-preview.json"
    profile = json.loads(target.read_text())
    profile["error"][0] = 0.123456  # a hand edit
    target.write_text(json.dumps(profile, separators=(",", ":")))
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == target
    assert str(target) in str(info.value)
    assert "SHA-256" in str(info.value)


@pytest.mark.parametrize("rel", ["clusters/centroids.npy", "profiles/claude-v1.json"])
def test_a_file_the_manifest_gives_no_checksum_for_is_refused_unread(pkg_dir: Path,
                                                                      rel: str) -> None:
    # Every save lists each file with its SHA-256: one taken off the list and then edited
    # would otherwise be read unchecked.
    m = _manifest(pkg_dir)
    del m["files"][rel]
    _write_manifest(pkg_dir, m)
    target = pkg_dir / rel
    target.write_bytes(target.read_bytes() + b" ")
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == target
    assert 'no SHA-256 in manifest.json\'s field "files"' in str(info.value)


def test_checksum_mismatch_in_an_array(pkg_dir: Path) -> None:
    target = pkg_dir / "clusters" / "centroids.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256") as info:
        load_weights(pkg_dir)
    assert str(target) in str(info.value)


def _replace_array(root: Path, rel: str, array: np.ndarray) -> None:
    """Rewrite one .npy AND its checksum, so only later checks can trip."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    (root / rel).write_bytes(buf.getvalue())
    m = _manifest(root)
    m["files"][rel] = hashlib.sha256(buf.getvalue()).hexdigest()
    _write_manifest(root, m)


def test_centroids_of_wrong_dimension(pkg_dir: Path) -> None:
    rel = "clusters/centroids.npy"
    centroids = np.load(pkg_dir / rel)
    _replace_array(pkg_dir, rel, centroids[:, :100].copy())
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    msg = str(info.value)
    assert info.value.path == pkg_dir / rel
    assert str(pkg_dir / rel) in msg
    assert "dimension 384" in msg and "(6, 100)" in msg


def test_a_package_refuses_what_a_router_built_from_it_could_not_route_with(
        tiny_package: WeightsPackage, fake_embedder: FakeEmbedder, small_records: RecordSet,
        tmp_path: Path) -> None:
    from dataclasses import replace

    from switchpoint.router import Router

    # A dimension other than the width of the policy's vectors was taken: the first route
    # raised NumPy's "matmul: Input operand 1 has a mismatch in its core dimension", and the
    # package saved was one load_weights refuses. 0, negative and absurd dimensions alike.
    for dimension, message in ((10, "dimension: is 10, but the policy holds 384-d vectors; "
                                    "give dimension=384"),
                               (0, "dimension: is 0; an embedder's dimension is from 1 to "
                                   "65,536"),
                               (-5, "dimension: is -5"), (10**12, "dimension: is 10000")):
        with pytest.raises(InvalidInputError) as info:
            replace(tiny_package, dimension=dimension)
        assert str(info.value).startswith(message), str(info.value)
    knn = fit(small_records, policy="knn", split=SMALL_SPLIT, embedder=fake_embedder)
    with pytest.raises(InvalidInputError, match="the policy holds 384-d vectors"):
        replace(knn, dimension=383)
    # An unfitted policy was an AttributeError ('models_') from the router built on it.
    with pytest.raises(InvalidInputError) as info:
        WeightsPackage(ClusterPolicy(), fake_embedder.id, 384)
    assert str(info.value).startswith("policy: ClusterPolicy is not fitted; fit it first")
    with pytest.raises(InvalidInputError) as info:
        replace(tiny_package, embedder_id=" ")
    assert info.value.field == "embedder_id"
    # A policy that reads text holds no vectors: any dimension its embedder has is taken.
    tiers = fit(small_records, policy="tiers", split=SMALL_SPLIT, embedder=fake_embedder)
    assert replace(tiers, dimension=1).dimension == 1
    assert Router(tiny_package, embedder=fake_embedder).route("hi").selected_model
    # A manifest that says so is a corrupt package, named.
    saved = tiers.save(tmp_path / "tiers")
    manifest = _manifest(saved)
    manifest["embedder"]["dimension"] = 0
    _write_manifest(saved, manifest)
    with pytest.raises(WeightsError) as caught:
        load_weights(saved)
    assert "dimension: is 0" in str(caught.value) and "manifest.json" in str(caught.value)


def test_centroids_count_not_matching_profiles(pkg_dir: Path) -> None:
    rel = "clusters/centroids.npy"
    _replace_array(pkg_dir, rel, np.load(pkg_dir / rel)[:4].copy())
    with pytest.raises(WeightsError, match="cannot rebuild") as info:
        load_weights(pkg_dir)
    assert str(pkg_dir) in str(info.value)


def test_npy_that_is_not_an_array(pkg_dir: Path) -> None:
    rel = "clusters/parent.npy"
    garbage = b"definitely not numpy"
    (pkg_dir / rel).write_bytes(garbage)
    m = _manifest(pkg_dir)
    m["files"][rel] = hashlib.sha256(garbage).hexdigest()
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError, match=r"\.npy") as info:
        load_weights(pkg_dir)
    assert str(pkg_dir / rel) in str(info.value)


@pytest.mark.parametrize("rel", ["clusters/centroids.npy", "clusters/parent.npy",
                                 "clusters/coarse_centroids.npy"])
def test_missing_npy(pkg_dir: Path, rel: str) -> None:
    (pkg_dir / rel).unlink()
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel
    assert str(pkg_dir / rel) in str(info.value)
    assert "missing" in str(info.value)


@pytest.mark.parametrize(("bad", "said"), [
    (b"{oops", "not valid JSON"), (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"a": 1, "a": 2}', 'the key "a" is written twice in one object'),
    # (a UnicodeDecodeError traceback; UTF-16 was read, though no save writes it)
    (b'{"count": [1], "x": "\xff"}', "is not UTF-8 text (byte 0xFF at byte 22)"),
    ('{"count": [1]}'.encode("utf-16"), "is not UTF-8 text (byte 0xFF at byte 1)")])
def test_profile_not_json_with_matching_checksum(pkg_dir: Path, bad: bytes, said: str) -> None:
    rel = "profiles/claude-v2.json"
    (pkg_dir / rel).write_bytes(bad)
    m = _manifest(pkg_dir)
    m["files"][rel] = hashlib.sha256(bad).hexdigest()
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert str(pkg_dir / rel) in str(info.value) and said in str(info.value)


@pytest.mark.parametrize(("path", "value", "needle"), [
    ("provenance", "notes", 'field "provenance" must be a JSON object, got "notes"'),
    ("provenance", [1, 2], 'field "provenance" must be a JSON object, got a list'),
    ("policy", "cluster", 'lacks the field "policy.name"'),
    ("policy.params", [1], 'field "policy.params" must be a JSON object'),
    ("policy.meta", [1], 'field "policy.meta" must be a JSON object'),
    ("embedder.dimension", "384", 'field "embedder.dimension" must be a whole number'),
    ("embedder.dimension", True, 'field "embedder.dimension" must be a whole number'),
    ("arrays", ["a"], 'field "arrays" must be a JSON object'),
    ("models", None, 'field "models" must be a JSON list, got null'),
    ("models", [1], 'field "models" must hold strings'),
    ("files", {"manifest.json": 5}, 'field "files" must hold strings'),
])
def test_manifest_field_of_the_wrong_kind_is_named(pkg_dir: Path, path: str, value: object,
                                                    needle: str) -> None:
    m = _manifest(pkg_dir)
    *parents, last = path.split(".")
    node = m
    for key in parents:
        node = node[key]
    node[last] = value
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert needle in str(info.value) and "re-create it" in str(info.value)
    assert info.value.path == pkg_dir / "manifest.json"


@pytest.mark.parametrize("content", [b"[1, 2]", b"null", b"0.5", b'"a profile"'])
def test_profile_json_that_is_not_an_object(pkg_dir: Path, content: bytes) -> None:
    rel = "profiles/claude-v2.json"
    (pkg_dir / rel).write_bytes(content)
    m = _manifest(pkg_dir)
    m["files"][rel] = hashlib.sha256(content).hexdigest()
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError, match="not a model's profile") as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel


def test_profile_without_a_field_names_the_field(pkg_dir: Path) -> None:
    rel = "profiles/claude-v2.json"
    profile = json.loads((pkg_dir / rel).read_bytes())
    del profile["count"]
    data = json.dumps(profile).encode()
    (pkg_dir / rel).write_bytes(data)
    m = _manifest(pkg_dir)
    m["files"][rel] = hashlib.sha256(data).hexdigest()
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError, match='lacks the field "count"'):
        load_weights(pkg_dir)



class _Boom:
    """Unpickling one runs code: a weights package must never unpickle."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch unpickled",))


def _raw_npy(root: Path, rel: str, data: bytes) -> None:
    """Put ``data`` at ``rel`` with its checksum, so only the array checks can trip."""
    (root / rel).write_bytes(data)
    m = _manifest(root)
    m["files"][rel] = hashlib.sha256(data).hexdigest()
    _write_manifest(root, m)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False,
                                                "shape": shape})
    return out.getvalue()


@pytest.mark.parametrize(("make", "said"), [
    (lambda c: np.full_like(c, np.nan), "holds nan at [0, 0], which is no finite number"),
    (lambda c: np.where(np.arange(c.size).reshape(c.shape) == 7, np.inf, c),
     "holds inf at [0, 7], which is no finite number (1 such values in all)"),
    (lambda c: c.astype(np.complex128), "holds values of type complex128"),
    (lambda c: np.array(["a"] * len(c)), "holds values of type <U1"),
])
def test_an_array_of_other_than_finite_real_numbers_is_refused(
        pkg_dir: Path, make: Any, said: str) -> None:
    # NaN or infinite centroids loaded, and every estimate of the router was NaN; complex
    # ones lost their imaginary part without a word.
    rel = "clusters/centroids.npy"
    _replace_array(pkg_dir, rel, make(np.load(pkg_dir / rel)))
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel and said in str(info.value), str(info.value)
    assert "re-create it" in str(info.value)


def test_an_array_of_objects_is_never_unpickled(pkg_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pkg_dir)
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Boom()] * 6, dtype=object), allow_pickle=True)
    _raw_npy(pkg_dir, "clusters/centroids.npy", buffer.getvalue())
    with pytest.raises(WeightsError, match="holds values of type object"):
        load_weights(pkg_dir)
    assert not (pkg_dir / "unpickled").exists()


@pytest.mark.parametrize(("data", "said"), [
    (_npy_header((10**6, 10**6)) + bytes(64), "its header says (1000000, 1000000) values of "
     "float32 (4,000,000,000,000 bytes), and 64 bytes follow it"),
    (_npy_header((10**10, 10**10)), "(400,000,000,000,000,000,000 bytes), and 0 bytes"),
    (_npy_header((6, 16)) + bytes(100), "(384 bytes), and 100 bytes follow it"),
    (_npy_header((6, 16)) + bytes(400), "(384 bytes), and 400 bytes follow it"),
])
def test_an_npy_header_that_does_not_match_its_data_is_refused_before_allocating(
        pkg_dir: Path, data: bytes, said: str) -> None:
    # A header claiming a trillion values was a MemoryError (a traceback), or, where the
    # system lets a process reserve that much, a read of the terabytes it claimed.
    rel = "clusters/centroids.npy"
    _raw_npy(pkg_dir, rel, data)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel and said in str(info.value), str(info.value)


@pytest.mark.parametrize("rel", ["clusters/centroids.npy", "clusters/coarse_centroids.npy"])
def test_a_vector_past_what_float32_holds_is_refused(pkg_dir: Path, rel: str) -> None:
    # A float64 file's 1e300 passed as finite, became infinite as the float32 the policy holds,
    # and every route was then a traceback (a NaN support).
    vectors = np.load(pkg_dir / rel).astype(np.float64)
    vectors[1, 2] = -1e300
    _replace_array(pkg_dir, rel, vectors)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel
    assert ("holds -1e+300 at [1, 2], past the largest number a vector holds (float32's, "
            "3.403e+38; 1 such values in all)") in str(info.value)
    vectors[1, 2] = 1e38  # (held as it is)
    _replace_array(pkg_dir, rel, vectors)
    assert load_weights(pkg_dir).models


@pytest.mark.parametrize(("parent", "said"), [
    (np.array([0, 1, -3, 0, 1, 0]), "each an index from 0 to"),
    (np.array([0.0, 0.5, 0.0, 1.0, 0.0, 1.0]), "parent holds values of type float64"),
    # (each cluster learned later, none a fit made: "zero-size array to reduction operation
    # maximum which has no identity")
    (np.full(6, -1), "parent holds -1 (a cluster learned later) for every cluster"),
])
def test_a_parent_that_is_no_coarse_cluster_is_refused(pkg_dir: Path, parent: np.ndarray,
                                                       said: str) -> None:
    # A negative index picked a coarse cluster from the end, a fraction was cut to a whole one.
    _replace_array(pkg_dir, "clusters/parent.npy", parent)
    with pytest.raises(WeightsError, match="cannot rebuild") as info:
        load_weights(pkg_dir)
    assert said in str(info.value), str(info.value)


def _replace_profile(root: Path, rel: str, profile: dict[str, Any]) -> None:
    data = json.dumps(profile).encode()
    (root / rel).write_bytes(data)
    m = _manifest(root)
    m["files"][rel] = hashlib.sha256(data).hexdigest()
    _write_manifest(root, m)


@pytest.mark.parametrize(("key", "value", "said"), [
    ("error", "nan", 'field "error"[0] is "nan"; it must be a finite number in [0, 1] or null'),
    ("error", 5.0, 'field "error"[0] is 5.0; it must be a finite number in [0, 1]'),
    ("error", 1e999, 'field "error"[0] is infinity, too large a number (what 1e400'),
    ("error", float("nan"), 'field "error"[0] is NaN;'),
    ("error", True, 'field "error"[0] is true;'),
    ("error", [0.1], 'field "error"[0] is [0.1]'),
    ("cost", -1, 'field "cost"[0] is -1; it must be a finite number in [0, 1000] or null'),
    ("count", -10, 'field "count"[0] is -10; it must be a finite number in [0, '
     "9,007,199,254,740,992];"),
    ("count", None, 'field "count"[0] is null; it must be a finite number in [0, '),
    # (a count no labels could reach, whose sums overflowed: every estimate was NaN)
    ("count", 1e308, 'field "count"[0] is 1e+308; it must be a finite number in [0, '
     "9,007,199,254,740,992];"),
    ("prior_error", float("nan"), 'field "prior_error"[0] is NaN; it must be a finite number '
     "in [0, 1];"),
])
def test_a_profile_number_out_of_its_bounds_is_named(pkg_dir: Path, key: str, value: object,
                                                     said: str) -> None:
    # Each loaded: an error of 5 or a negative cost and count skewed every estimate, and NaN
    # (also the string "nan", read by float()) made them NaN.
    rel = "profiles/claude-v2.json"
    profile = json.loads((pkg_dir / rel).read_bytes())
    profile[key] = [value, *profile.get(key, profile["error"])[1:]]
    _replace_profile(pkg_dir, rel, profile)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel and said in str(info.value), str(info.value)


@pytest.mark.parametrize(("values", "said"), [
    ([None, 0.2, float("nan"), None], 'field "error"[2] is NaN;'),
    ([None, 0.2, 0.3, 1], None),
    ([0.1, 0.2, 2**53 + 1, None], 'field "error"[2] is 9007199254740993;'),
    ([0.1, None, 0.3, False], 'field "error"[3] is false;'),
])
def test_a_profile_list_is_checked_whole_past_its_nulls(pkg_dir: Path, values: list[Any],
                                                        said: str | None) -> None:
    # A list of plain numbers and nulls is told good at once; a NaN among its nulls, a bool
    # or an integer a float cannot hold is still found and named at its place.
    rel = "profiles/claude-v2.json"
    profile = json.loads((pkg_dir / rel).read_bytes())
    units = len(profile["error"])
    profile["error"] = [*values, *profile["error"][len(values):]][:units]
    profile["count"] = [0 if v is None else c for v, c in zip(profile["error"],
                                                             profile["count"], strict=True)]
    _replace_profile(pkg_dir, rel, profile)
    if said is None:
        assert load_weights(pkg_dir).models
        return
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert said in str(info.value), str(info.value)


def _learned(profile: dict[str, Any]) -> dict[str, Any]:
    """``profile`` with what an export of a learned router adds to it."""
    units = len(profile["count"])
    return {**profile, "expected_cost": [0.001] * units, "mean_cost": 0.002,
            "stderr_count": [3.0] * units, "label_variance": 0.2}


@pytest.mark.parametrize(("key", "value", "said"), [
    ("expected_cost", [-1.0], 'field "expected_cost"[0] is -1.0; it must be a finite number '
     "in [0, 1000];"),
    ("expected_cost", [None], 'field "expected_cost"[0] is null;'),
    ("stderr_count", [float("nan")], 'field "stderr_count"[0] is NaN; it must be a finite '
     "number in [0, 9,007,199,254,740,992];"),
    ("mean_cost", 1e999, 'field "mean_cost" is infinity, too large a number (what 1e400, or '
     "any number past about 1.8e308, reads as); it must be a finite number in [0, 1000]"),
    ("mean_cost", "0.1", 'field "mean_cost" is "0.1"; it must be a finite number'),
    ("label_variance", 0.5, 'field "label_variance" is 0.5; it must be a finite number in '
     "[0, 0.25]"),
    ("label_variance", True, 'field "label_variance" is true'),
])
def test_what_an_export_adds_to_a_profile_is_bounded_too(pkg_dir: Path, key: str,
                                                         value: object, said: str) -> None:
    rel = "profiles/claude-v2.json"
    profile = _learned(json.loads((pkg_dir / rel).read_bytes()))
    assert load_weights(_copy_with_profile(pkg_dir, rel, profile)).models  # (whole: loads)
    profile[key] = [*value, *profile[key][1:]] if isinstance(value, list) else value
    _replace_profile(pkg_dir, rel, profile)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel and said in str(info.value), str(info.value)


def _copy_with_profile(root: Path, rel: str, profile: dict[str, Any]) -> Path:
    copy = Path(shutil.copytree(root, root.parent / f"{root.name}-copy"))
    _replace_profile(copy, rel, profile)
    return copy


@pytest.mark.parametrize(("change", "said"), [
    (lambda p: p.pop("label_variance"), 'has "expected_cost", "mean_cost", "stderr_count" '
     'but not "label_variance"'),
    (lambda p: p["stderr_count"].pop(), 'field "stderr_count" holds 5 values, where field '
     '"count" of "profiles/gpt-3.5-turbo-1106.json" holds 6'),
])
def test_what_an_export_adds_is_whole_or_the_package_is_refused(
        pkg_dir: Path, change: Any, said: str) -> None:
    rel = "profiles/claude-v2.json"
    profile = _learned(json.loads((pkg_dir / rel).read_bytes()))
    change(profile)
    _replace_profile(pkg_dir, rel, profile)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert said in str(info.value), str(info.value)


@pytest.mark.parametrize("key", ["error", "cost"])
def test_a_null_where_a_unit_counts_labels_is_refused(pkg_dir: Path, key: str) -> None:
    # A null is a unit without labels: where the count says it has some, the unit's mean was
    # NaN, and every route near it failed ("all_scores[...]: must be a finite number, got NaN").
    rel = "profiles/claude-v2.json"
    profile = json.loads((pkg_dir / rel).read_bytes())
    assert profile["count"][2] > 0
    profile[key][2] = None
    _replace_profile(pkg_dir, rel, profile)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel
    assert (f'field "{key}"[2] is null (no label), where "count"[2] counts '
            f'{json.dumps(profile["count"][2])} labels') in str(info.value)
    profile["count"][2] = 0  # (a unit of no label: null, as a fit writes it)
    _replace_profile(pkg_dir, rel, profile)
    assert load_weights(pkg_dir).models


def test_a_profile_list_that_is_no_list_is_named(pkg_dir: Path) -> None:
    rel = "profiles/claude-v2.json"
    profile = json.loads((pkg_dir / rel).read_bytes())
    _replace_profile(pkg_dir, rel, {**profile, "cost": "0.1"})
    with pytest.raises(WeightsError, match=r'field "cost" must be a JSON list, got "0\.1"'):
        load_weights(pkg_dir)


def test_unlabelled_units_stay_null_in_a_profile(pkg_dir: Path) -> None:
    rel = "profiles/claude-v2.json"
    profile = json.loads((pkg_dir / rel).read_bytes())
    profile["error"][0] = profile["cost"][0] = None
    profile["count"][0] = 0  # (a unit of no label)
    _replace_profile(pkg_dir, rel, profile)
    assert load_weights(pkg_dir).models


@pytest.mark.parametrize("rel", ["manifest.json", "profiles/claude-v2.json"])
def test_a_json_file_over_the_bound_is_refused_unread(
        pkg_dir: Path, monkeypatch: pytest.MonkeyPatch, rel: str) -> None:
    monkeypatch.setattr(weights_module, "MAX_JSON_BYTES", 1 << 20)
    data = (pkg_dir / rel).read_bytes()
    padded = data[:-1] + b" " * (1 << 20) + data[-1:]
    if rel == "manifest.json":
        (pkg_dir / rel).write_bytes(padded)
    else:
        _raw_npy(pkg_dir, rel, padded)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel
    assert "is over 1 MiB, more than a weights package's JSON file holds" in str(info.value)


def test_a_manifest_listing_more_models_than_a_catalog_holds_is_refused(pkg_dir: Path) -> None:
    m = _manifest(pkg_dir)
    m["models"] = [f"m{i}" for i in range(MAX_CATALOG_MODELS + 1)]
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError, match='field "models" lists 1,001 models; a package '
                                           "holds at most 1,000"):
        load_weights(pkg_dir)


@pytest.mark.parametrize(("field", "most", "what"), [
    ("arrays", 16, "arrays"), ("profiles", 1000, "profiles, one per model"),
    ("files", 1016, "files, its arrays and profiles")])
def test_a_manifest_naming_more_files_than_a_package_holds_is_refused_unread(
        pkg_dir: Path, field: str, most: int, what: str) -> None:
    # Each file named is looked at, read and hashed: a manifest of 7 MB naming one small array
    # 200,000 times took a minute to load (the most a manifest holds, 256 MiB, most of an hour).
    m = _manifest(pkg_dir)
    some = next(iter(m[field]))
    m[field].update({f"x{i}": m[field][some] for i in range(most + 1 - len(m[field]))})
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / "manifest.json"
    assert (f'field "{field}" lists {most + 1:,} entries; a package holds at most {most:,} '
            f"{what};") in str(info.value)


@pytest.mark.parametrize(("models", "said"), [
    ([], 'field "models" lists no model; a package holds the profile of at least one'),
    (["claude-v1", "claude-v2", "claude-v1"], 'field "models" names "claude-v1" more than once')])
def test_a_manifest_listing_no_model_or_one_twice_is_refused(pkg_dir: Path, models: list[str],
                                                             said: str) -> None:
    # (no model was "need at least one array to concatenate"; one listed twice was read once)
    m = _manifest(pkg_dir)
    m["models"] = models
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / "manifest.json" and said in str(info.value)


@pytest.mark.parametrize(("model", "edited", "said"), [
    ("gpt-3.5-turbo-1106", {"error": 2}, 'field "error" holds 2 values, where its field "count" '
                                         "holds 6"),
    ("claude-v1", {"count": 5, "error": 5, "cost": 5, "prior_error": 5},
     'field "count" holds 5 values, where field "count" of "profiles/gpt-3.5-turbo-1106.json" '
     "holds 6")])
def test_a_profile_list_of_another_length_than_the_others_is_named(
        pkg_dir: Path, model: str, edited: dict[str, int], said: str) -> None:
    # Each list holds one value per cluster: one cut short was a NumPy message naming neither
    # the file nor the field ("all the input array dimensions ... must match exactly").
    m = _manifest(pkg_dir)
    assert m["models"][0] == "gpt-3.5-turbo-1106"  # (the profile read first)
    rel = m["profiles"][model]
    profile = json.loads((pkg_dir / rel).read_text())
    for key, length in edited.items():
        if key in profile:
            profile[key] = profile[key][:length]
    _raw_npy(pkg_dir, rel, json.dumps(profile).encode())
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / rel
    assert said in str(info.value) and "one value per unit of the policy" in str(info.value)


@pytest.mark.parametrize("error", [[None], [], [0.5, 0.5]])
def test_a_baseline_profile_without_its_one_number_is_refused_on_load(
        tmp_path: Path, error: list[object]) -> None:
    # A null error was loaded as NaN, and every route then failed ("expected_error: must be a
    # finite number >= 0, got NaN"); no value was an IndexError.
    root = Path(shutil.copytree(default_weights_path("fixed"), tmp_path / "fixed"))
    first = _manifest(root)["models"][0]
    for rel in _manifest(root)["profiles"].values():  # (each: all hold as many values)
        profile = json.loads((root / rel).read_text())
        profile.update(error=error, cost=[0.001] * len(error), count=[0] * len(error))
        _raw_npy(root, rel, json.dumps(profile).encode())
    with pytest.raises(WeightsError) as info:
        load_weights(root)
    assert f'the profile of "{first}" holds {json.dumps(error)} as "error"' in str(info.value)
    assert "a fixed policy's profile holds one number there" in str(info.value)


# The bundled default -----------------------------------------------------------------------


def test_default_weights_path_is_inside_the_package() -> None:
    path = default_weights_path()
    assert isinstance(path, Path)
    assert path.name == "cluster"
    assert path.parent.name == "_default_weights"
    assert path.parent.parent.resolve() == Path(switchpoint.__file__).resolve().parent


def test_every_policy_has_bundled_default_weights() -> None:
    assert bundled_policies() == sorted(["cluster", "knn", "tiers", "tfidf", "fixed", "random"])
    for policy in bundled_policies():
        package = load_weights(None, policy=policy)
        assert package.path == default_weights_path(policy)
        assert package.policy.name == policy
        assert package.embedder_id.startswith("all-MiniLM-L6-v2/")
        assert "gpt-4-1106-preview" in package.models
        assert package.provenance["split"] == "train"
    assert load_weights(None).policy.name == "cluster"


def test_each_bundled_package_says_the_id_it_loads_as() -> None:
    """The weights_id a bundled package's manifest records is the id the package has once
    loaded (what the request log, /health and switchpoint info name it by)."""
    for policy in bundled_policies():
        path = default_weights_path(policy)
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["weights_id"] == load_weights(path).weights_id, policy


def test_unknown_bundled_policy_names_the_choices() -> None:
    with pytest.raises(WeightsError, match='no bundled weights for policy "nope"'):
        load_weights(None, policy="nope")


def test_fit_knn_package_round_trip(
    small_records: RecordSet, fake_embedder: FakeEmbedder, tmp_path: Path
) -> None:
    package = fit(small_records.subset(range(40)), policy="knn", split="test",
                  embedder=fake_embedder, k=5)
    path = package.save(tmp_path / "knn")
    assert (path / "examples" / "examples.npy").is_file()
    loaded = load_weights(path)
    assert loaded.weights_id == package.weights_id
    assert loaded.policy.get_params()["k"] == 5
    x = Inputs(embeddings=fake_embedder.embed(small_records.prompts[50:55]))
    np.testing.assert_allclose(loaded.policy.estimate(x).error,
                               package.policy.estimate(x).error, atol=1e-6)
    # Profiles not of one value per example name the first model as JSON writes a name.
    model = loaded.models[0]
    kept = {rel: json.loads((path / rel).read_bytes())
            for rel in _manifest(path)["profiles"].values()}
    for rel, profile in kept.items():
        _replace_profile(path, rel, {**profile, "error": profile["error"][:-1],
                                     "cost": profile["cost"][:-1]})
    with pytest.raises(WeightsError) as short:
        load_weights(path)
    assert (f'cannot rebuild the "knn" policy: profile of "{model}" has 39 error values but '
            "there are 40 examples") in str(short.value)
    for rel, profile in kept.items():
        _replace_profile(path, rel, profile)
    # The example matrix must match the embedder's dimension too.
    _replace_array(path, "examples/examples.npy", np.ones((40, 10), np.float32))
    with pytest.raises(WeightsError, match="dimension 384"):
        load_weights(path)


@pytest.mark.parametrize("name", ["x" * 300, "x" * 300 + "/sub", "ok/" + "y" * 300])
def test_a_name_too_long_for_the_file_system_is_a_weights_error(tmp_path: Path,
                                                                name: str) -> None:
    from switchpoint.weights import check_weights_target

    with pytest.raises(WeightsError, match="cannot write a weights package there"):
        check_weights_target(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field", ["arrays", "profiles"])
@pytest.mark.parametrize("where", ["above", "absolute", "link"])
def test_a_file_named_outside_the_package_is_refused(pkg_dir: Path, tmp_path: Path, field: str,
                                                     where: str) -> None:
    # A package is one folder: a manifest naming a file elsewhere (even an intact copy of its
    # own, checksum and all) would read whatever that path holds, and break when copied.
    m = _manifest(pkg_dir)
    key, rel = next(iter(m[field].items()))
    outside = tmp_path / "elsewhere" / Path(rel).name
    outside.parent.mkdir()
    outside.write_bytes((pkg_dir / rel).read_bytes())
    if where == "above":
        named = os.path.relpath(outside, pkg_dir)
    elif where == "absolute":
        named = str(outside)
    else:
        (pkg_dir / "linked").symlink_to(outside.parent)
        named = f"linked/{Path(rel).name}"
    m[field][key] = named
    m["files"][named] = m["files"].pop(rel)
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert f"field {json.dumps(field)} names {json.dumps(named)}" in str(info.value)
    assert "inside the package's folder" in str(info.value)
    assert info.value.path == pkg_dir / "manifest.json"


def test_a_manifest_linked_from_outside_the_package_is_refused(pkg_dir: Path,
                                                                tmp_path: Path) -> None:
    # The manifest holds every file's checksum: one linked from elsewhere was read, so what
    # the package held was vouched for by a file outside it.
    outside = tmp_path / "elsewhere.json"
    (pkg_dir / "manifest.json").rename(outside)
    (pkg_dir / "manifest.json").symlink_to(outside)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / "manifest.json"
    assert "is a link to a file outside the package's folder" in str(info.value)
    (pkg_dir / "manifest.json").unlink()
    outside.rename(pkg_dir / "inside.json")
    (pkg_dir / "manifest.json").symlink_to("inside.json")  # (a link within it is its own)
    assert load_weights(pkg_dir).models


def _unblocked(call: Any, fifo: Path) -> Any:
    """``call()``'s result or error, failing the test (the FIFO then fed, so it ends) when it
    waits for a writer on ``fifo``."""
    import threading

    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:  # (handed to the test)
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        with fifo.open("wb"):
            pass
        thread.join(10)
        pytest.fail(f"opened the FIFO {fifo} to read it, and waited for a writer")
    return outcome[0]


@pytest.mark.parametrize("rel", ["manifest.json", "profiles/claude-v2.json",
                                 "clusters/centroids.npy"])
def test_a_package_file_that_is_a_fifo_is_named_so_never_opened(
        pkg_dir: Path, tmp_path: Path, rel: str) -> None:
    fifo = pkg_dir / rel
    fifo.unlink()
    os.mkfifo(fifo)
    error = _unblocked(lambda: load_weights(pkg_dir), fifo)
    assert isinstance(error, WeightsError) and error.path == fifo
    assert str(error) == (f"'{fifo}': is a FIFO (named pipe), not a regular file; a weights "
                          "package holds the regular files `switchpoint fit` writes: copy the "
                          "whole folder again or re-create it with `switchpoint fit`")
    if rel != "manifest.json":
        return
    # Nor is it opened by what reads only the manifest: the policy it names, whether a save
    # may replace the folder, the config's check of its weights.
    assert _unblocked(lambda: weights_module.policy_of(pkg_dir), fifo) is None
    refused = _unblocked(lambda: weights_module.check_weights_target(pkg_dir), fifo)
    assert isinstance(refused, WeightsError) and "holds other files" in str(refused)
    config = _unblocked(lambda: load_settings(
        overrides={"weights": str(pkg_dir), "data_dir": str(tmp_path / "data")}, environ={}),
        fifo)
    assert str(config) == (f"weights: '{pkg_dir}' is not a weights package (its manifest.json "
                           "is a FIFO (named pipe), not a regular file); give the folder "
                           "`switchpoint fit --out` wrote (from overrides)")


def test_a_package_past_max_weights_bytes_is_refused_before_any_array_is_read(
        pkg_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [p for p in pkg_dir.rglob("*") if p.is_file() and p.name != "manifest.json"]
    total = sum(p.stat().st_size for p in files)
    assert load_weights(pkg_dir, max_weights_bytes=total).models  # the cap itself is read
    read: list[Path] = []
    real = weights_module._read_regular

    def reading(path: Path, limit: int) -> bytes:
        read.append(path)
        return real(path, limit)

    monkeypatch.setattr(weights_module, "_read_regular", reading)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir, max_weights_bytes=total - 1)
    assert read == [pkg_dir / "manifest.json"]
    most = max(p.stat().st_size for p in files)
    largest = next(p for p in files if f"'{p.relative_to(pkg_dir)}', {most:,})" in str(
        info.value))
    assert str(info.value) == (
        f"'{pkg_dir}': its arrays and profiles hold {total:,} bytes (the largest, "
        f"'{largest.relative_to(pkg_dir)}', {most:,}), more than the "
        f"{total - 1:,} a load reads (max_weights_bytes); if the package is one you trust and "
        "the memory is there, raise it: max_weights_bytes in the config, --max-weights-bytes "
        "on the command line, or load_weights(..., max_weights_bytes=N)")
    # A file that grows once its size was checked is read no further than the cap.
    sizes = {p: p.stat().st_size for p in files}
    monkeypatch.setattr(weights_module, "_read_regular", real)
    original = weights_module._Budget.check

    def then_grow(self: Any, paths: Any) -> None:
        original(self, paths)
        with largest.open("ab") as fh:
            fh.write(b"\0" * (total + 10))

    monkeypatch.setattr(weights_module._Budget, "check", then_grow)
    with pytest.raises(WeightsError, match=f"hold over {total:,} bytes"):
        load_weights(pkg_dir, max_weights_bytes=total)
    assert sizes[largest] + total + 10 == largest.stat().st_size


@pytest.mark.parametrize("cap", [0, -1, (1 << 40) + 1, True, 1.5, "8G"])
def test_max_weights_bytes_is_a_whole_number_of_bytes_up_to_a_tebibyte(cap: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        load_weights(max_weights_bytes=cap)  # type: ignore[arg-type]
    assert str(info.value).startswith("max_weights_bytes: must be ")


def test_the_default_cap_holds_a_package_of_gigabytes_unread(pkg_dir: Path) -> None:
    # 9 GiB of centroids (sparse: no disk taken) are refused at once, nothing allocated.
    with (pkg_dir / "clusters/centroids.npy").open("r+b") as fh:
        fh.truncate(9 << 30)
    start = time.monotonic()
    with pytest.raises(WeightsError, match="more than the 8,589,934,592 a load reads"):
        load_weights(pkg_dir)
    assert time.monotonic() - start < 5


def test_a_load_sets_aside_what_its_files_hold_not_what_the_cap_allows(pkg_dir: Path) -> None:
    # A read asked for the cap's bytes at once (8 GiB by default): a debug allocator (python
    # -X dev) filled them, 30 s a load, and a host without overcommit could refuse them.
    import tracemalloc

    tracemalloc.start()
    try:
        load_weights(pkg_dir, max_weights_bytes=1 << 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, peak


def test_a_packages_repr_names_its_models_and_bounds_its_provenance(
        small_records: RecordSet, fake_embedder: FakeEmbedder, fresh_secrets: None) -> None:
    """A package fitted on records of a task each (each named at length) shows its policy, its
    models and the start of its provenance: the provenance was printed whole, every task."""
    n = len(small_records)
    tasks = [f"task {i:04d} " + "t" * 500 for i in range(n)]
    records = RecordSet(small_records.ids, small_records.prompts, tasks, small_records.splits,
                        small_records.models, small_records.scores, small_records.costs)
    package = fit(records, policy="fixed", split=SMALL_SPLIT, embedder=fake_embedder)
    shown = repr(package)
    assert len(package.provenance["tasks"]) > 12 and len(shown) < 3000, len(shown)
    fitted_on = sum(split == SMALL_SPLIT for split in small_records.splits)
    if fitted_on > MAX_PROVENANCE_ITEMS:  # the first tasks listed, all of them counted
        assert len(package.provenance["tasks"]) == MAX_PROVENANCE_ITEMS
        assert package.provenance["n_tasks"] == fitted_on
    assert shown.startswith(f"WeightsPackage(policy={package.policy!r}, embedder_id=")
    assert f"models={package.models!r}" in shown  # (a few: whole)
    assert f"'tasks': ['task 0000 {'t' * 10}" in shown and "t" * 500 not in shown
    assert f"... {len(package.provenance['tasks']) - 12} more]" in shown
    assert shown.endswith("path=None)")


def test_a_provenance_over_a_mebibyte_is_refused_when_built_and_when_loaded(
        pkg_dir: Path, tiny_package: WeightsPackage) -> None:
    # A 94 MB provenance loaded in 4 s and then took 7.7 s and about 1 GB for every router built
    # from the package (each copies it).
    big = {"records": "r" * (1 << 20)}
    with pytest.raises(InvalidInputError, match=r"^provenance: holds 1\.0 MiB as JSON, over "
                                                "the 1 MiB a package's provenance may hold"):
        WeightsPackage(policy=tiny_package.policy, embedder_id=tiny_package.embedder_id,
                       dimension=tiny_package.dimension, provenance=big)
    m = _manifest(pkg_dir)
    m["provenance"] = big
    _write_manifest(pkg_dir, m)
    with pytest.raises(WeightsError) as info:
        load_weights(pkg_dir)
    assert info.value.path == pkg_dir / "manifest.json"
    assert "provenance: holds 1.0 MiB as JSON" in str(info.value)


def test_lists_of_a_provenance_keep_their_latest_entries_and_count_the_rest() -> None:
    entries: dict[str, Any] = {}
    for i in range(MAX_PROVENANCE_ITEMS + 5):
        entries = with_entry(entries, "learned", {"at": i})
    assert [e["at"] for e in entries["learned"]] == list(range(5, MAX_PROVENANCE_ITEMS + 5))
    assert entries["earlier_learned"] == 5
    again = with_entry(entries, "learned", {"at": "last"})
    assert again["earlier_learned"] == 6 and again["learned"][-1] == {"at": "last"}
    assert entries["earlier_learned"] == 5 and len(entries["learned"]) == MAX_PROVENANCE_ITEMS
    names = [f"t{i:03d}" for i in range(MAX_PROVENANCE_ITEMS + 1)]
    assert listed("tasks", names) == {"tasks": names[:MAX_PROVENANCE_ITEMS],
                                      "n_tasks": MAX_PROVENANCE_ITEMS + 1}
    assert listed("tasks", names[:3]) == {"tasks": names[:3]}


def _profiles_one_value_at_a_time(policy: Any) -> dict[str, dict[str, Any]]:
    """A bundled policy's profiles as its state wrote them value by value in Python (the
    rounding a weights id hashes), beside which the vectorised state must be identical."""
    if hasattr(policy, "table_"):
        table = policy.table_
        out: dict[str, dict[str, Any]] = {m: {
            "count": [round(float(c), 6) for c in table.count[:, j]],
            "error": [None if np.isnan(e) else round(float(e), 8) for e in table.error[:, j]],
            "cost": [None if np.isnan(c) else float(c) for c in table.cost[:, j]],
        } for j, m in enumerate(table.models)}
        return out
    return {m: {
        "error": [None if np.isnan(v) else round(float(v), 6) for v in policy.error_[:, j]],
        "cost": [None if np.isnan(v) else float(v) for v in policy.cost_[:, j]],
    } for j, m in enumerate(policy.models_)}


#: The bundled packages' ids, taken when their state was written one value at a time: each is
#: persisted (decisions, experiments, checkpoints) and compared with a loaded package's.
BUNDLED_IDS = {"knn": "knn-9500f5846d78", "cluster": "cluster-67de7405ca67",
               "tiers": "tiers-1c1317350160", "tfidf": "tfidf-c157283431ba"}


@pytest.mark.parametrize("policy", sorted(BUNDLED_IDS))
def test_bundled_weights_hash_the_same_numbers_as_rounding_each_value(policy: str) -> None:
    package = load_weights(None, policy=policy)
    state = package.policy.get_state()
    slow = _profiles_one_value_at_a_time(package.policy)
    for model, fields in slow.items():
        for name, values in fields.items():
            assert json.dumps(state.profiles[model][name]) == json.dumps(values), (model, name)
    assert package.weights_id == BUNDLED_IDS[policy]


def test_rounded_floats_round_as_python_does_next_to_half_way_points() -> None:
    from switchpoint.policies.base import rounded_floats

    rng = np.random.default_rng(7)
    # Values a product by 10**digits puts on, or a rounding error away from, a half-way
    # point (0.0000005, 2.675e-06, ...), beside random ones, large ones and non-finite ones.
    halves = (np.arange(-2000, 2000) + 0.5) / 1e6
    near = np.concatenate([np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf)])
    values = np.concatenate([halves, near, rng.random(20_000), rng.normal(0, 1e4, 2000),
                             [1e300, -1e300, 5e9 + 0.5, np.inf, -np.inf, np.nan, 0.0, -0.0,
                              -1e-9, 2.675e-6, 1.0000005, 0.1234565]])
    for digits in (6, 8):
        got = rounded_floats(values, digits, nan_as_none=False)
        want = [round(float(v), digits) for v in values]
        assert json.dumps(got) == json.dumps(want)
    assert rounded_floats([np.nan, 0.25], 6, nan_as_none=True) == [None, 0.25]
    assert rounded_floats([np.nan, 0.1], None, nan_as_none=False)[1] == 0.1
