"""A data_dir, or a file in it, that the user switchpoint runs as may not use (another user's, a
read-only one, a file made unreadable): each command and ``switchpoint serve`` stops with one
line naming the file or directory, whose it is, and the command that lets it be used; nothing
is created or changed. File modes do not stop root, so these tests run as another user (or as
root without the capabilities that pass over them, ``setpriv --bounding-set
-dac_override,-dac_read_search,-fowner -- python -m pytest ...``) and are skipped otherwise."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from switchpoint._files import output_problem, write_problem
from switchpoint.cli import main
from switchpoint.config import load_settings
from switchpoint.gateway import Gateway
from tests.integration.servers import refused_start


def _modes_bind() -> bool:
    """Whether a file's mode stops this process (it does not stop root, unless root was
    stripped of the capabilities that pass over it)."""
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("x", encoding="utf-8")
        probe.chmod(0)
        try:
            probe.read_text(encoding="utf-8")
        except PermissionError:
            return True
        finally:
            probe.chmod(0o600)
    return False


pytestmark = pytest.mark.skipif(
    not _modes_bind(), reason="file modes do not stop this process (root): run as another user "
    "or under `setpriv --bounding-set -dac_override,-dac_read_search,-fowner --`")


def _config(folder: Path) -> tuple[Path, Path]:
    """A config naming ``folder``/data as its data_dir: (config, data_dir)."""
    data = folder / "data"
    config = folder / "switchpoint.yaml"
    config.write_text(f"data_dir: {data}\ntenants: {{acme: {{}}}}\n", encoding="utf-8")
    return config, data


@pytest.fixture(scope="module")
def made_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding a store and a key store, as a service and `switchpoint keys create`
    leave them, made once: each test takes a copy."""
    config, data = _config(tmp_path_factory.mktemp("made"))
    with Gateway(load_settings(config, environ={})) as gateway:
        gateway.open()
    assert main(["keys", "create", "--tenant", "acme", "--config", str(config)]) == 0
    assert (data / "switchpoint.db").is_file() and (data / "keys.db").is_file()
    return data


@pytest.fixture
def state(made_state: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A config and the data_dir it names, a copy of ``made_state`` (modes kept): (config,
    data_dir). Every mode a test changes in it is made the owner's again afterwards, so that it
    can be removed."""
    config, data = _config(tmp_path)
    shutil.copytree(made_state, data)
    assert (data / "switchpoint.db").is_file() and (data / "keys.db").is_file()
    try:
        yield config, data
    finally:
        data.chmod(0o700)
        for path in data.iterdir():
            path.chmod(0o600)


@contextmanager
def mode(path: Path, bits: int) -> Iterator[None]:
    before = path.stat().st_mode & 0o777
    path.chmod(bits)
    try:
        yield
    finally:
        path.chmod(before)


COMMANDS = [["report", "cost"], ["prune", "--older-than", "5"], ["keys", "list"],
            ["feedback", "0" * 32, "--success"], ["learn", "--export", "{tmp}/exported"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_a_command_on_a_data_dir_it_may_not_search_says_whose_it_is_and_what_to_run(
        state: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    """Another user's data_dir (mode 700) looks to this user as one of mode 000 does: nothing
    in it can be reached (each command raised PermissionError looking for its database, a
    traceback)."""
    config, data = state
    capsys.readouterr()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with mode(data, 0):
        assert main([*argv, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"may not search '{data}', so nothing in it can be reached (mode 000" in err, err
    assert f"`chmod u+rwx {data}`" in err, err
    assert not (tmp_path / "exported").exists()


def test_a_key_store_it_may_not_read_is_named_with_the_command_that_mends_it(
        state: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, data = state
    capsys.readouterr()
    keys = data / "keys.db"
    with mode(keys, 0):
        assert main(["keys", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"may not read '{keys}' (mode 000, its owner): `chmod u+rw {keys}`" in err, err
    assert "writable directory with free space" not in err  # (not what is wrong)
    assert main(["keys", "list", "--config", str(config)]) == 0  # mended, it is read


def test_a_read_only_store_is_named_and_read_leaving_nothing_beside_it(
        state: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database of mode 444: feedback names it. A report reads it and leaves no file beside
    it: SQLite, opening it read-only, made its side files with the file's mode and left them,
    and the next command writing the store, once the file was writable again, was refused
    naming the first of them."""
    config, data = state
    db = data / "switchpoint.db"
    for side in ("-wal", "-shm"):  # (as a clean stop leaves it: none beside it)
        (data / f"switchpoint.db{side}").unlink(missing_ok=True)
    capsys.readouterr()
    held, names = db.read_bytes(), sorted(p.name for p in data.iterdir())
    with mode(db, 0o444):
        assert main(["feedback", "0" * 32, "--success", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert f"may not write '{db}' (mode 444, its owner): `chmod u+rw {db}`" in err, err
        for argv in (["report", "cost"], ["report", "alert"], ["keys", "list"]):
            assert main([*argv, "--config", str(config)]) == 0, argv  # reading is allowed
            out, err = capsys.readouterr()
            assert out and "Traceback" not in err, (argv, err)
        assert sorted(p.name for p in data.iterdir()) == names
    assert db.read_bytes() == held
    assert main(["prune", "--older-than", "5", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "may not write" not in err, err


def test_a_read_only_key_store_stops_a_start_that_checks_keys_and_is_still_read(
        state: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A keys.db of mode 444: SQLite opened it read-only, so a service checking keys started
    and refused only its first write (a key revoked, the store's time). The start names it;
    the commands that only read the keys still read it, and write no time into it."""
    config, data = state
    keys = data / "keys.db"
    for side in ("-wal", "-shm"):  # (as a clean stop leaves it: none beside it)
        (data / f"keys.db{side}").unlink(missing_ok=True)
    checked = tmp_path / "checked.yaml"
    checked.write_text(config.read_text(encoding="utf-8") + "auth: keys\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["keys", "list", "--json", "--config", str(config)]) == 0
    [made] = json.loads(capsys.readouterr().out)
    held = keys.read_bytes()
    with mode(keys, 0o444):
        code, err = refused_start("--config", checked, data_dir=data)
        assert code == 2, err
        assert f"'{keys}': cannot open the key store" in err, err
        assert f"may not write '{keys}' (mode 444, its owner): `chmod u+rw {keys}`" in err, err
        assert "Traceback" not in err
        for argv, shown in ((["keys", "list"], made["id"]), (["keys", "show", made["id"]], "acme"),
                            (["keys", "clock"], "keys are judged at"),
                            (["report", "alert"], "nothing to do")):
            assert main([*argv, "--config", str(config)]) == 0, argv
            out, err = capsys.readouterr()
            assert shown in out, (argv, out)
            assert "latest time" not in err and "Traceback" not in err, (argv, err)
        assert not any((data / f"keys.db{side}").exists() for side in ("-wal", "-shm"))
    assert keys.read_bytes() == held


def test_a_read_only_session_pin_store_stops_the_start(state: tuple[Path, Path]) -> None:
    """A sessions.db of mode 444: SQLite opened it read-only, and the service refused only its
    first pin written. The start names it."""
    _, data = state
    pins = data / "sessions.db"
    assert pins.is_file()
    for side in ("-wal", "-shm"):  # (as a clean stop leaves it: none beside it)
        (data / f"sessions.db{side}").unlink(missing_ok=True)
    with mode(pins, 0o444):
        code, err = refused_start(data_dir=data)
    assert code == 2, err
    assert f"'{pins}': cannot open the session pins" in err, err
    assert f"may not write '{pins}' (mode 444, its owner): `chmod u+rw {pins}`" in err, err
    assert "Traceback" not in err


def test_a_service_on_a_read_only_data_dir_names_it_and_what_to_run(
        state: tuple[Path, Path]) -> None:
    _, data = state
    for side in ("-wal", "-shm"):  # (as a clean stop leaves it: the store must make them)
        (data / f"switchpoint.db{side}").unlink(missing_ok=True)
    with mode(data, 0o555):
        code, err = refused_start(data_dir=data)
    assert code == 2, err
    assert (f"may not write in '{data}', so no file can be made there (mode 555, its owner): "
            f"`chmod u+rwx {data}`") in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["experiments", "list"], ["experiments", "end", "kept"],
                                  ["models", "list"], ["models", "unregister", "kept"]],
                         ids=" ".join)
def test_the_experiments_commands_on_a_read_only_data_dir_name_it_and_what_to_run(
        state: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """SQLite reads a store in WAL mode only where it may make the -shm beside it: the first
    read of a read-only data_dir fails, which these commands met as a traceback."""
    config, data = state
    for side in ("-wal", "-shm"):  # (as a clean stop leaves it: a reader must make them)
        (data / f"switchpoint.db{side}").unlink(missing_ok=True)
    before = sorted(data.iterdir())
    capsys.readouterr()
    with mode(data, 0o555):
        assert main([*argv, "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (f"may not write in '{data}', so no file can be made there (mode 555, its owner): "
            f"`chmod u+rwx {data}`") in err, err
    assert sorted(data.iterdir()) == before


def test_an_output_in_a_directory_it_may_not_write_names_it_and_what_to_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each said only "Permission denied"."""
    folder = tmp_path / "shared"
    folder.mkdir()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2 + 2?\n", encoding="utf-8")
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nmodels:\n  - {{name: a, base_url: "
                      '"http://127.0.0.1:9/v1", input_per_mtok: 1, output_per_mtok: 1}\n',
                      encoding="utf-8")
    capsys.readouterr()
    with mode(folder, 0o555):
        for argv in (["route", "-q", "--input", prompts, "--output", folder / "decisions.jsonl"],
                     ["label", "-q", prompts, "--models", "a", "--judge", "a", "--config", config,
                      "--out", folder / "records.jsonl"]):
            assert main([str(a) for a in argv]) == 2
            err = capsys.readouterr().err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
            assert (f"may not write in '{folder}', so no file can be made there (mode 555, its "
                    f"owner): `chmod u+rwx {folder}`") in err, err
        assert list(folder.iterdir()) == []


def test_an_output_whose_folders_are_yet_to_make_under_one_it_may_not_write_is_refused_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The folders route --output makes go in the nearest one that exists: one it may not
    write there was found only once every prompt had been routed."""
    folder = tmp_path / "shared"
    folder.mkdir()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2 + 2?\n", encoding="utf-8")
    output = folder / "runs" / "today" / "decisions.jsonl"
    capsys.readouterr()
    with mode(folder, 0o555):
        assert main(["route", "--input", str(prompts), "--output", str(output)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "routing" not in err, err  # (before any work)
    assert (f"--output: cannot write '{output}': this process's user") in err, err
    assert (f"may not write in '{folder}', so no file can be made there (mode 555, its "
            f"owner): `chmod u+rwx {folder}`") in err, err
    assert list(folder.iterdir()) == []


def test_a_read_only_output_is_refused_before_any_work_and_kept_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A shell's redirection refuses a file of mode 444; route --output and eval --plot
    replaced it (a new file renamed over it, of mode 600), after all their work."""
    from tests.integration.test_cli_eval import write_records

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 2 + 2?\n", encoding="utf-8")
    records = write_records(tmp_path / "records.jsonl")
    folder = tmp_path / "out"
    folder.mkdir()
    kept = folder / "decisions.jsonl"
    kept.write_text("someone's notes\n", encoding="utf-8")
    curve = folder / "curve.png"
    curve.write_bytes(b"a curve drawn by hand")
    link = tmp_path / "latest.jsonl"  # (written through: the file it leads to is refused)
    link.symlink_to(kept)
    capsys.readouterr()
    with mode(kept, 0o444), mode(curve, 0o444):
        for argv, flag, named in (
                (["route", "--input", prompts, "--output", kept], "--output", kept),
                (["route", "--input", prompts, "--output", link], "--output", kept),
                (["eval", records, "--plot", curve], "--plot", curve)):
            assert main([str(a) for a in argv]) == 2
            out, err = capsys.readouterr()
            assert out == "" and "Traceback" not in err, err
            assert len(err.strip().splitlines()) == 1, err
            assert all(work not in err for work in ("routing", "embedding", "fitting")), err
            assert f"{flag}: cannot write '{argv[-1]}': this process's user" in err, err
            assert (f"may not write '{named}' (mode 444, its owner): `chmod u+rw "
                    f"{named}`") in err, err
        assert kept.read_text(encoding="utf-8") == "someone's notes\n"
        assert curve.read_bytes() == b"a curve drawn by hand"
        assert kept.stat().st_mode & 0o777 == 0o444 == curve.stat().st_mode & 0o777
        assert sorted(p.name for p in folder.iterdir()) == ["curve.png", "decisions.jsonl"]
    # Made writable, as the refusal says, it is written.
    kept.chmod(0o644)
    assert main(["route", "-q", "--input", str(prompts), "--output", str(kept)]) == 0
    assert json.loads(kept.read_text(encoding="utf-8"))["id"] == 1


def test_a_write_refused_under_a_folder_it_may_not_search_is_said_not_raised(
        tmp_path: Path) -> None:
    """Why a write was refused, for a path through a folder this process may not search: the
    permission's owner was looked for before that folder was found wanting, and looking
    raised a PermissionError of its own, out of the handler meant to word the first."""
    locked = tmp_path / "locked"
    locked.mkdir()
    path = locked / "sub" / "out.jsonl"
    with mode(locked, 0o000):
        with pytest.raises(PermissionError) as info:
            path.parent.mkdir(parents=True)
        problem = write_problem(path, info.value)
        assert output_problem(path) is not None  # (it may not make "sub" there)
    assert problem == (f"its path goes through '{locked / 'sub'}', which cannot be used "
                       "(Permission denied)"), problem


def _checkpoint_of_one_outcome(config: Path, data: Path) -> Path:
    """The learning checkpoint a gateway writes as it closes, having learned one outcome of
    tenant acme."""
    with Gateway(load_settings(config, environ={})) as gateway:
        gateway.start()
        decision = gateway.route("Prove that the square root of 2 is irrational.",
                                 tenant="acme")
        gateway.report_outcome(decision.decision_id, 1.0, tenant="acme")
    return data / "learning.checkpoint"


def test_a_learning_checkpoint_it_may_not_read_stops_the_start_and_is_kept(
        state: tuple[Path, Path]) -> None:
    """A checkpoint another user's (a gateway run as root writes it root's, mode 600) was
    passed over with a warning, the feedback log replayed without the outcomes retention had
    pruned, and the stop wrote this process's own checkpoint over it: what it
    alone held was gone. The start now stops, naming it, and the file stays as it was."""
    config, data = state
    checkpoint = _checkpoint_of_one_outcome(config, data)
    held = checkpoint.read_bytes()
    with mode(checkpoint, 0):
        code, err = refused_start("--config", config, data_dir=data)
    assert code == 2, err
    assert (f"'{checkpoint}': cannot use the learning checkpoint; this process's user") in err
    assert f"may not read '{checkpoint}' (mode 000, its owner): `chmod u+rw {checkpoint}`" in err
    assert "Traceback" not in err
    assert checkpoint.read_bytes() == held
    # Mended, it is taken up.
    with Gateway(load_settings(config, environ={})) as gateway:
        gateway.start()
        assert gateway.learning_status()["from_checkpoint"] == 1


def test_learn_takes_up_a_checkpoint_it_may_read_but_not_write(
        state: tuple[Path, Path], tmp_path: Path) -> None:
    """learn writes no checkpoint (it only reads data_dir), so one it may read is enough: it
    was refused with a chmod for a write it never makes."""
    config, data = state
    checkpoint = _checkpoint_of_one_outcome(config, data)
    held = checkpoint.read_bytes()
    with mode(checkpoint, 0o400):
        assert main(["learn", "--export", str(tmp_path / "learned"), "--tenant", "acme",
                     "--config", str(config)]) == 0
    assert (tmp_path / "learned" / "manifest.json").is_file()
    assert checkpoint.read_bytes() == held


def test_learn_stops_on_a_checkpoint_it_may_not_read_and_keeps_it(
        state: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """learn only reads the checkpoint, but it must read it: passed over, the weights it
    exports would miss what the checkpoint alone holds (outcomes retention pruned), so it stops
    naming the file and the chmod that lets it be read, and exports nothing."""
    config, data = state
    checkpoint = _checkpoint_of_one_outcome(config, data)
    held = checkpoint.read_bytes()
    capsys.readouterr()
    with mode(checkpoint, 0):
        code = main(["learn", "--export", str(tmp_path / "learned"), "--tenant", "acme",
                     "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert (f"'{checkpoint}': cannot use the learning checkpoint; this process's user") in err
    assert f"may not read '{checkpoint}' (mode 000, its owner): `chmod u+r {checkpoint}`" in err
    assert "Traceback" not in err
    assert not (tmp_path / "learned").exists()
    assert checkpoint.read_bytes() == held


@pytest.mark.parametrize("rel", ["manifest.json", "profiles/claude-v2.json",
                                 "clusters/centroids.npy"])
def test_a_weights_file_it_may_not_read_is_named_with_the_command_that_mends_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rel: str) -> None:
    """A package handed over with a file only its owner may read: the file is named with the
    chmod that lets it be read (it was a PermissionError, a traceback)."""
    from switchpoint.weights import default_weights_path

    package = Path(shutil.copytree(default_weights_path("cluster"), tmp_path / "weights"))
    capsys.readouterr()
    with mode(package / rel, 0):
        assert main(["info", "--weights", str(package)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"'{package / rel}': cannot be read: this process's user" in err, err
    assert f"(mode 000, its owner): `chmod u+r {package / rel}`" in err, err
    assert main(["info", "--weights", str(package)]) == 0  # mended, it is read
