"""``switchpoint experiments list`` and ``switchpoint experiments end NAME`` on a real data_dir
whose run-time experiments a real gateway made (SQLite in ``tmp_path``, the fake provider):
the list shows each, running or ended; a start whose config clashes with a running one is
refused naming the command; ``end`` frees it, as ``end_ab_test`` would, and the start then
succeeds. Refusals (a config experiment, an ended one, none, a bad name, a service on the
data_dir) exit non-zero, naming it, and change nothing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.config import Settings, load_settings
from switchpoint.errors import ConfigError, ConflictError
from tests.command_line import run
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.gateway_env import KEYS as GATEWAY_KEYS
from tests.integration.gateway_env import config_text
from tests.integration.learning_env import serve, settings_for, started_gateway
from tests.integration.servers import refused_start
from tests.integration.test_ab_tests import CONFIG

# The config's own experiment of the name a run-time one holds: a clash while that one runs.
PATH = "/v1/router/experiments"
CLASH = "  kept:\n    tenants: [globex]\n    arms: {p: {}, q: {cost_weight: 1}}\n"


def _rows(settings: Settings) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.db_path) as db:
        return db.execute("SELECT name, created, experiment, split, ended "
                          "FROM runtime_experiments ORDER BY seq").fetchall()


@pytest.fixture
def made(fake: FakeProviderProcess, tmp_path: Path) -> Settings:
    """A data_dir where a gateway, now closed, made ``kept`` (globex, split 0.3, five
    decisions; running) and ``after`` (of arms; ended)."""
    settings = settings_for(fake, tmp_path, CONFIG)
    with started_gateway(settings) as gateway:
        gateway.create_ab_test("kept", split=0.3, tenants=["globex"])
        for i in range(5):
            assert gateway.route(math_prompt(i), tenant="globex").experiment == "kept"
        gateway.create_ab_test("after", arms={"x": {}, "y": {"cost_weight": 2, "weight": 3}})
        gateway.end_ab_test("after")
    return settings


def test_list_shows_each_run_time_experiment_running_or_ended(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(made.source_path)
    code, out, _ = run(["experiments", "list", "--config", config, "--json"], capsys)
    assert code == 0
    listed = json.loads(out)
    assert [(e["name"], e["status"]) for e in listed] == [("kept", "running"),
                                                          ("after", "ended")]
    kept, after = listed
    assert kept["tenants"] == ["globex"] and kept["split"] == 0.3 and kept["min_n"] == 30
    assert kept["ended_at"] is None and kept["decisions"] == 5
    assert {arm: (a["strategy"], a["share"]) for arm, a in kept["arms"].items()} == {
        "a": ("cost_optimized", 0.7), "b": ("quality_first", 0.3)}
    assert sum(a["decisions"] for a in kept["arms"].values()) == 5
    assert after["tenants"] is None and after["split"] is None and after["decisions"] == 0
    assert after["arms"]["y"] == {"strategy": None, "settings": {"cost_weight": 2.0},
                                  "share": 0.75, "decisions": 0}
    rows = _rows(made)
    assert (kept["created_at"], after["ended_at"]) == (rows[0][1], rows[1][4])

    code, out, err = run(["experiments", "list", "--data-dir", str(made.data_dir)], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "status", "tenants"]
    assert lines[2].startswith("kept") and "running" in lines[2] and "globex" in lines[2]
    assert "a (cost_optimized) 70%; b (quality_first) 30%" in lines[2]
    assert lines[3].startswith("after") and "ended" in lines[3]
    assert "x (configured routing) 25%; y (cost_weight 2.0) 75%" in lines[3]
    assert lines[2].rstrip().endswith("5") and lines[3].rstrip().endswith("0")


def test_a_start_refused_for_a_clash_starts_once_the_cli_ended_the_run_time_experiment(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    path = made.source_path
    assert path is not None
    config = str(path)
    original = path.read_text(encoding="utf-8")
    path.write_text(original + CLASH, encoding="utf-8")
    clashing = load_settings(path, environ={})
    with pytest.raises(ConfigError, match="created at run time") as refused:
        started_gateway(clashing)
    assert refused.value.key == "experiments.kept"
    assert "`switchpoint experiments end kept` while it is stopped" in str(refused.value)
    assert "DELETE /v1/router/experiments/kept" in str(refused.value)

    # The list says why, and the way out.
    code, out, err = run(["experiments", "list", "--config", config], capsys)
    assert code == 0 and out.splitlines()[2].startswith("kept")
    assert err.startswith(f"note: a service on '{path}' would not start: experiments.kept: ")
    assert "`switchpoint experiments end kept`" in err

    before = _rows(made)
    t0 = time.time()
    code, out, err = run(["experiments", "end", "kept", "--config", config], capsys)
    t1 = time.time()
    assert (code, err) == (0, "")
    assert out.startswith("ended experiment kept at ") and "5 decisions and report stay" in out
    after = _rows(made)
    assert after[1:] == before[1:]  # (the ended one, untouched)
    assert after[0][:4] == before[0][:4] and before[0][4] is None
    ended_at = after[0][4]
    assert t0 <= ended_at <= t1
    # Its decisions are kept; the list says it ended, when.
    code, out, err = run(["experiments", "list", "--config", config, "--json"], capsys)
    kept = json.loads(out)[0]
    assert err == ""
    assert (kept["status"], kept["ended_at"], kept["decisions"]) == ("ended", ended_at, 5)

    # The start refused now succeeds: the config's experiment takes the name.
    with started_gateway(clashing) as gateway:
        assert list(gateway.settings.experiments) == ["thrift", "kept"]
        assert gateway.settings.experiments["kept"].created_at is None
        assert gateway.route(math_prompt(1), tenant="globex").arm in ("p", "q")
    # The original config sees it ended, at the time the command wrote, as end_ab_test would.
    path.write_text(original, encoding="utf-8")
    with started_gateway(load_settings(path, environ={})) as gateway:
        report = gateway.experiment_report("kept")
        assert report["ended_at"] == ended_at and not report["enabled"]
        assert sum(a["decisions"] for a in report["arms"]) == 5
        assert gateway.route(math_prompt(2), tenant="globex").experiment == ""


def test_a_row_that_cannot_be_read_is_skipped_at_start_listed_unreadable_and_ended(
        made: Settings, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with sqlite3.connect(made.db_path) as db:
        for name, created, experiment in [("torn", 1.7e9, '{"arms": {"a'),
                                          ("binary", 1.7e9, b"\xff\xfe"),
                                          ("timeless", "soon", "{}")]:
            db.execute("INSERT INTO runtime_experiments (name, created, experiment) "
                       "VALUES (?, ?, ?)", (name, created, experiment))
    db.close()
    with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"), \
            started_gateway(made) as gateway:  # the others run; the torn rows are skipped
        assert gateway.route(math_prompt(7), tenant="globex").experiment == "kept"
        with pytest.raises(ConflictError, match="cannot be read, so it does not run"):
            gateway.create_ab_test("torn")
        with pytest.raises(ConflictError, match="cannot be read from data_dir, so it does not "
                                                "run and this service cannot end it; end it "
                                                "with the service stopped"):
            gateway.end_ab_test("torn")
    warned = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert any(w.startswith('experiment "torn", created at run time at ') and
               "experiment: is not valid JSON (" in w and
               "`switchpoint experiments end torn`" in w for w in warned), warned
    assert any(w.startswith('experiment "binary"') and "experiment: is not UTF-8 text" in w
               for w in warned), warned
    assert any(w.startswith('experiment "timeless"') and
               'created: "soon" is not a time in seconds' in w for w in warned), warned

    config = str(made.source_path)
    code, out, err = run(["experiments", "list", "--config", config, "--json"], capsys)
    assert (code, err) == (0, "")
    listed = {e["name"]: e for e in json.loads(out)}
    assert (listed["torn"]["status"], listed["torn"]["created_at"]) == ("unreadable", 1.7e9)
    assert listed["torn"]["problem"].startswith("cannot be read (experiment: is not valid "
                                                "JSON ("), listed["torn"]
    assert listed["kept"]["problem"] is None and listed["kept"]["status"] == "running"
    code, out, err = run(["experiments", "list", "--config", config], capsys)
    assert code == 0 and "would not start" not in err, err
    assert 'note: experiment "binary": cannot be read (experiment: is not UTF-8' in err
    for name in ("torn", "binary", "timeless"):
        code, out, err = run(["experiments", "end", name, "--config", config], capsys)
        assert (code, err) == (0, ""), err
        assert out.startswith(f"ended experiment {name} at ")
    assert [row[0] for row in _rows(made) if row[4] is None] == ["kept"]


def test_the_way_out_a_kept_experiment_names_is_written_as_it_is_sent(
        made: Settings, caplog: pytest.LogCaptureFixture) -> None:
    # A kept row whose name holds a space, "?", "#" or "%" (written into data_dir by hand): the
    # path a refusal names %-escapes it (it was the name as it is, a path ending at its "?")
    # and the command quotes it for a shell, as a registered model's way out is written.
    with sqlite3.connect(made.db_path) as db:
        db.execute("INSERT INTO runtime_experiments (name, created, experiment) "
                   "VALUES (?, ?, ?)", ("torn #1", 1.7e9, '{"arms": {"a'))
    db.close()
    with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"), started_gateway(made):
        pass
    warned = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert any("(`switchpoint experiments end 'torn #1'`)" in w for w in warned), warned
    with sqlite3.connect(made.db_path) as db:
        db.execute("INSERT INTO runtime_experiments (name, created, experiment) "
                   "VALUES (?, ?, ?)", ("old 50%?", 1.7e9, '{"arms": 5}'))
    db.close()
    with pytest.raises(ConfigError, match="no longer reads as one") as refused:
        started_gateway(made)
    message = str(refused.value)
    assert "DELETE /v1/router/experiments/old%2050%25%3F while the service runs" in message
    assert "`switchpoint experiments end 'old 50%?'` while it is stopped" in message


@pytest.mark.parametrize(("name", "words"), [
    ("thrift", 'experiment "thrift" is in the config, not created at run time'),
    ("after", 'experiment "after" ended already, at '),
    ("never-made", 'no experiment "never-made" was created at run time; check the name: '
                   'those running are "kept"'),
    ("x" * 5000, "NAME: an experiment's name \"xxxx"),
    ("bad/name", "must be 1-64 letters, digits"),
])
def test_end_refused_names_it_and_changes_nothing(
        made: Settings, capsys: pytest.CaptureFixture[str], name: str, words: str) -> None:
    before = _rows(made)
    code, out, err = run(["experiments", "end", name, "--config",
                          str(made.source_path)], capsys)
    assert code == 2 and out == ""
    # (each names the experiment's name as the usage line does, not as the library's field)
    assert err.startswith("switchpoint: error: NAME: ") and words in err, err
    assert len(err) < 400
    assert _rows(made) == before


def test_end_is_refused_while_a_service_runs_on_the_data_dir_and_list_reads_beside_it(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(made.source_path)
    before = _rows(made)
    with started_gateway(made) as gateway:
        code, out, err = run(["experiments", "end", "kept", "--config", config], capsys)
        assert code == 2 and out == ""
        assert "is serving from data_dir" in err
        assert "end it through the service, DELETE /v1/router/experiments/kept" in err
        assert _rows(made) == before
        assert gateway.route(math_prompt(3), tenant="globex").experiment == "kept"
        code, out, _ = run(["experiments", "list", "--config", config, "--json"], capsys)
        assert code == 0
        assert [(e["name"], e["decisions"]) for e in json.loads(out)] == [("kept", 6),
                                                                         ("after", 0)]
        gateway.end_ab_test("kept")  # (the service's own way, meanwhile)
    code, _, err = run(["experiments", "end", "kept", "--config", config], capsys)
    assert code == 2 and 'experiment "kept" ended already' in err


def test_list_on_a_data_dir_no_service_made_is_refused_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "typo"
    code, _, err = run(["experiments", "list", "--data-dir", str(data_dir)], capsys)
    assert code == 2 and "--data-dir:" in err and "does not exist" in err
    assert not data_dir.exists()
    data_dir.mkdir()
    code, _, err = run(["experiments", "end", "kept", "--data-dir", str(data_dir)], capsys)
    assert code == 2 and "holds no" in err
    assert list(data_dir.iterdir()) == []


def test_list_refuses_a_store_a_newer_switchpoint_wrote_as_end_does(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """Its rows may be of a kind this switchpoint reads wrong: list said what it made of them."""
    with sqlite3.connect(made.db_path) as db:
        db.execute("PRAGMA user_version = 99")
    for argv in (["list"], ["end", "kept"]):
        code, out, err = run(["experiments", *argv, "--config", str(made.source_path)], capsys)
        assert code == 2 and out == "", (argv, out)
        assert "schema version 99 is newer than this switchpoint's" in err, (argv, err)
        assert "upgrade switchpoint or point data_dir elsewhere" in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err


def test_beside_and_after_switchpoint_serve_as_a_user_runs_them(
        gw_fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # (switchpoint serve in a process of its own; the command in this one, as another process)
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    text = config_text(gw_fake, str(data))
    config.write_text(text, encoding="utf-8")
    with serve(config, data) as server:
        made = httpx.post(f"{server.base}{PATH}", json={"name": "kept", "split": 0.4},
                          timeout=30)
        assert made.status_code == 201, made.text
        code, out, err = run(["experiments", "end", "kept", "--config", config], capsys)
        assert code == 2 and out == ""
        assert server.proc is not None and f"(pid {server.proc.pid})" in err, err
        assert "DELETE /v1/router/experiments/kept" in err
        assert httpx.get(f"{server.base}{PATH}/kept", timeout=15).json()["ended_at"] is None
        assert server.terminate()[0] == 0
    # A config of its own "kept": serve refuses to start, naming the command.
    config.write_text(text + "experiments:\n  kept:\n    arms: {p: {}, q: {cost_weight: 1}}\n",
                      encoding="utf-8")
    code, err = refused_start("--config", config, data_dir=data, env=GATEWAY_KEYS)
    assert code == 2 and "`switchpoint experiments end kept` while it is stopped" in err
    code, out, err = run(["experiments", "end", "kept", "--config", config, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["status"] == "ended"
    with serve(config, data) as server:
        report = httpx.get(f"{server.base}{PATH}/kept", timeout=15).json()
        assert report["created_at"] is None and report["enabled"]  # (the config's now)
        assert server.terminate()[0] == 0


def test_end_the_store_refuses_says_it_still_runs_and_changes_nothing(
        made: Settings, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process holds the database's write lock past the store's busy timeout (short
    # here): the end is refused saying what could not be kept, what to do and that it still
    # runs, as the service says it (it said only that the write failed, naming the file).
    from tests.fakes.held_lock import held_lock, short_lock_waits

    short_lock_waits(monkeypatch, seconds=1.0)
    before = _rows(made)
    with held_lock(made.db_path):
        code, out, err = run(["experiments", "end", "kept", "--config",
                              str(made.source_path)], capsys)
    assert code == 2 and out == "", err
    assert err.startswith("switchpoint: error: the end of the experiment could not be kept "
                          "(database is locked)"), err
    assert err.rstrip().endswith("(it still runs)") and "Traceback" not in err, err
    assert _rows(made) == before
    assert run(["experiments", "end", "kept", "--config",
                str(made.source_path)], capsys)[0] == 0
    assert [row[-1] is not None for row in _rows(made)] == [True, True]
