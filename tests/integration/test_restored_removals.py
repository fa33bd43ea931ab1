"""A ``switchpoint.db`` restored from a backup taken before a model was unregistered or an
experiment ended does not bring either back: the journal beside it
(``switchpoint.removals.jsonl``) keeps each, and a start makes them again, saying so. A model
registered again after its removal, or an experiment of the same name made after the end, is
left alone. A real gateway (real SQLite files in ``tmp_path``) over the fake provider; the
backup is taken with SQLite's backup API, as the deployment guide takes it."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.cli import main
from switchpoint.config import Settings
from switchpoint.gateway import Gateway
from switchpoint.server import create_app
from switchpoint.store.removals import REMOVALS_FILENAME, kept_removals
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import poem_prompt
from tests.integration.learning_env import KEYS, loader, settings_for
from tests.integration.servers import thread_server

CONFIG = "tenants:\n  acme: {}\n"


def card(fake: FakeProviderProcess, name: str = "free") -> dict[str, Any]:
    """A model at the fake provider, free, so ``auto`` chooses it over the priced three."""
    return {"name": name, "base_url": fake.openai_base_url, "api_key_env": "FAKE_KEY",
            "input_per_mtok": 0, "output_per_mtok": 0, "tier": "simple"}


@pytest.fixture
def settings(fake: FakeProviderProcess, tmp_path: Path) -> Settings:
    return settings_for(fake, tmp_path, CONFIG)


def started(settings: Settings) -> Gateway:
    gateway = Gateway(settings, loader=loader, env=KEYS)
    gateway.start()
    return gateway


def back_up(db: Path, into: Path) -> None:
    """A copy of ``db`` as SQLite's backup API takes it (what the guide does)."""
    with sqlite3.connect(db) as source, sqlite3.connect(into) as copy:
        source.backup(copy)
    source.close()
    copy.close()


def restore(backup: Path, db: Path) -> None:
    """``backup`` put back at ``db`` as an operator restores it, the service stopped: the
    file's ``-wal`` and ``-shm`` removed with it."""
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.write_bytes(backup.read_bytes())


def running(gateway: Gateway) -> list[str]:
    return list(gateway.ab_tests.running)


@pytest.fixture
def taken_away(settings: Settings, fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Path]:
    """A model ``free`` and an experiment ``trial`` made, the database backed up, then the
    model unregistered and the experiment ended: yields the backup."""
    db = Path(settings.db_path)
    with started(settings) as gateway:
        gateway.register_model(card(fake))
        gateway.register_model(card(fake, "spare"))
        gateway.create_ab_test("trial", "cost_optimized", "quality_first")
    backup = tmp_path / "backup.db"
    back_up(db, backup)
    with started(settings) as gateway:
        gateway.unregister_model("free")
        gateway.end_ab_test("trial")
    yield backup


def test_a_restored_backup_serves_no_model_unregistered_and_runs_no_experiment_ended_since(
        settings: Settings, taken_away: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = Path(settings.db_path)
    restore(taken_away, db)
    with caplog.at_level(logging.WARNING):
        gateway = started(settings)
    with gateway:
        assert "free" not in gateway.router.catalog.names
        assert "spare" in gateway.router.catalog.names  # (never taken away)
        assert "free" not in [m["id"] for m in gateway.models()]
        assert gateway.route(poem_prompt(0)).selected_model != "free"
        assert running(gateway) == [] and "trial" in gateway.ab_tests.ended
    warned = [r.getMessage() for r in caplog.records if "a backup restored" in r.getMessage()]
    assert len(warned) == 1, warned
    assert '"free"' in warned[0] and '"trial"' in warned[0], warned
    with sqlite3.connect(db) as conn:
        assert [n for (n,) in conn.execute("SELECT name FROM runtime_models")] == ["spare"]
        ended = conn.execute("SELECT ended FROM runtime_experiments WHERE name = 'trial'"
                             ).fetchone()[0]
    conn.close()
    kept = kept_removals(db.with_name(REMOVALS_FILENAME))
    assert ended == next(r.at for r in kept if r.name == "trial")  # (ended when it ended)


def test_over_http_a_restored_backup_lists_and_routes_no_model_unregistered_since(
        settings: Settings, taken_away: Path) -> None:
    restore(taken_away, Path(settings.db_path))
    app = create_app(settings, loader=loader, provider_env=KEYS)
    with thread_server(app) as server:
        models = httpx.get(f"{server.base}/v1/models", timeout=15)
        assert models.status_code == 200, models.text
        assert "free" not in [m["id"] for m in models.json()["data"]]
        routed = httpx.post(f"{server.base}/v1/route",
                            json={"prompt": poem_prompt(0)}, timeout=15)
        assert routed.status_code == 200, routed.text
        assert routed.json()["selected_model"] != "free"


def test_a_model_registered_again_after_its_removal_is_served_across_starts_and_a_restore(
        settings: Settings, fake: FakeProviderProcess, tmp_path: Path) -> None:
    with started(settings) as gateway:
        gateway.register_model(card(fake))
        gateway.unregister_model("free")
        gateway.register_model(card(fake))  # (after its removal: the journal's entry is older)
    backup = tmp_path / "backup.db"
    back_up(Path(settings.db_path), backup)
    with started(settings) as gateway:  # a restart
        assert "free" in gateway.router.catalog.names
        gateway.register_model(card(fake, "spare"))
    restore(backup, Path(settings.db_path))  # (a backup that holds it registered again)
    with started(settings) as gateway:
        assert "free" in gateway.router.catalog.names
        assert "spare" not in gateway.router.catalog.names  # (made since: the backup's loss)


def test_the_offline_commands_keep_their_removals_and_make_again_what_a_restore_undid(
        settings: Settings, taken_away: Path, fake: FakeProviderProcess,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    db = Path(settings.db_path)
    config = str(settings.source_path)
    with started(settings) as gateway:
        gateway.register_model(card(fake, "third"))
        gateway.create_ab_test("second", "cost_optimized", "quality_first")
    backup = Path(f"{taken_away}.2")
    back_up(db, backup)
    assert main(["models", "unregister", "third", "--config", config]) == 0
    assert main(["experiments", "end", "second", "--config", config]) == 0
    capsys.readouterr()
    restore(backup, db)  # (holds "third" registered and "second" running)
    with caplog.at_level(logging.WARNING):
        assert main(["models", "unregister", "spare", "--config", config]) == 0
    warned = [r.getMessage() for r in caplog.records if "a backup restored" in r.getMessage()]
    # (its check, before data_dir's lock, reads the file as made; then it makes them)
    assert len(warned) == 2 and "read with them made" in warned[0], warned
    assert '"third"' in warned[1] and '"second"' in warned[1], warned
    with sqlite3.connect(db) as conn:
        assert list(conn.execute("SELECT name FROM runtime_models")) == []
        ended = dict(conn.execute("SELECT name, ended FROM runtime_experiments"))
    conn.close()
    assert ended["second"] is not None and ended["trial"] is not None


def test_the_lists_show_a_restored_backup_as_the_next_start_leaves_it_and_change_nothing(
        settings: Settings, taken_away: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    db = Path(settings.db_path)
    restore(taken_away, db)
    before = db.read_bytes()
    config = str(settings.source_path)
    with caplog.at_level(logging.WARNING):
        assert main(["models", "list", "--json", "--config", config]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert main(["experiments", "list", "--json", "--config", config]) == 0
        experiments = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed if m["status"] != "config"] == ["spare"]
    trial = next(e for e in experiments if e["name"] == "trial")
    kept = kept_removals(db.with_name(REMOVALS_FILENAME))
    assert (trial["status"], trial["ended_at"]) == ("ended", kept[-1].at)
    warned = [r.getMessage() for r in caplog.records if "read with them made" in r.getMessage()]
    assert len(warned) == 2 and '"free"' in warned[0] and '"trial"' in warned[1], warned
    assert db.read_bytes() == before  # (read only: the next start makes them)


def test_keys_create_refuses_a_model_a_restored_backup_holds_and_the_next_start_unregisters(
        settings: Settings, taken_away: Path, capsys: pytest.CaptureFixture[str]) -> None:
    restore(taken_away, Path(settings.db_path))
    config = str(settings.source_path)
    code = main(["keys", "create", "--tenant", "acme", "--models", "free", "--config", config])
    err = capsys.readouterr().err
    assert code == 2 and 'not in the catalog: "free"' in err, err
    assert main(["keys", "create", "--tenant", "acme", "--models", "spare", "--config",
                 config]) == 0


def test_a_gateway_that_only_reads_sees_a_restored_backup_as_the_next_start_leaves_it(
        settings: Settings, taken_away: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = Path(settings.db_path)
    restore(taken_away, db)
    before = db.read_bytes()
    with caplog.at_level(logging.WARNING):
        gateway = Gateway(settings, loader=loader, env=KEYS, reads_only=True)
        gateway.start()
    with gateway:
        assert "free" not in gateway.router.catalog.names
        assert "spare" in gateway.router.catalog.names  # (never taken away)
        assert running(gateway) == [] and "trial" in gateway.ab_tests.ended
        report = next(r for r in gateway.experiment_reports() if r["experiment"] == "trial")
    kept = kept_removals(db.with_name(REMOVALS_FILENAME))
    assert (report["enabled"], report["ended_at"]) == (False, kept[-1].at)
    warned = [r.getMessage() for r in caplog.records if "a backup restored" in r.getMessage()]
    assert len(warned) == 1 and '"free"' in warned[0] and '"trial"' in warned[0], warned
    assert db.read_bytes() == before  # (read only: the next start makes them)


def test_unregister_and_end_refuse_what_a_restored_backup_holds_and_the_next_start_removes(
        settings: Settings, taken_away: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = Path(settings.db_path)
    restore(taken_away, db)
    before = db.read_bytes()
    config = str(settings.source_path)
    assert main(["models", "unregister", "free", "--config", config]) != 0
    err = capsys.readouterr().err
    assert 'no model "free" was registered' in err, err
    assert main(["experiments", "end", "trial", "--config", config]) != 0
    err = capsys.readouterr().err
    assert 'experiment "trial" ended already' in err, err
    assert db.read_bytes() == before  # (refused before anything was opened for writing)
    assert not Path(f"{db}-wal").exists()


def test_the_lists_judge_whether_a_service_starts_on_a_restored_backup_as_the_next_start(
        fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(fake, tmp_path, "tenants:\n  acme: {}\n  beta: {}\n")
    with started(settings) as gateway:
        gateway.create_ab_test("beta-only", "cost_optimized", "quality_first",
                               tenants=["beta"])
    backup = tmp_path / "backup.db"
    back_up(Path(settings.db_path), backup)
    with started(settings) as gateway:
        gateway.end_ab_test("beta-only")
    settings = settings_for(fake, tmp_path, CONFIG)  # (tenant beta gone from the config)
    with started(settings):
        pass  # (it starts: the experiment naming beta has ended)
    restore(backup, Path(settings.db_path))  # (holds it running)
    config = str(settings.source_path)
    for command in (["models", "list"], ["experiments", "list"]):
        assert main([*command, "--config", config]) == 0
        err = capsys.readouterr().err
        assert "would not start" not in err, (command, err)
    with started(settings) as gateway:  # (what the lists said: it starts)
        assert running(gateway) == []


def test_the_offline_reports_price_the_registered_models_a_restored_backup_leaves_served(
        settings: Settings, fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = Path(settings.db_path)
    priced = {"input_per_mtok": 1, "output_per_mtok": 2}
    with started(settings) as gateway:
        for name in ("free", "spare"):
            gateway.register_model({**card(fake, name), **priced})
            for i in range(2):
                gateway.complete([{"role": "user", "content": poem_prompt(i)}], model=name)
    backup = tmp_path / "backup.db"
    back_up(db, backup)
    with started(settings) as gateway:
        gateway.unregister_model("free")
    restore(backup, db)  # (holds "free" registered)
    reader = Gateway(settings, loader=loader, env=KEYS, reads_only=True)
    reader.start()
    with reader:
        served = reader.reports.forecast_cost(10, 1000, 500)
    assert main(["report", "forecast", "--requests-per-hour", "10", "--avg-input-tokens",
                 "1000", "--avg-output-tokens", "500", "--json", "--config",
                 str(settings.source_path)]) == 0
    offline = json.loads(capsys.readouterr().out)
    # (spare priced as the service prices it; free gone from the catalog, as the next start
    # leaves it)
    assert offline["removed_models"] == served["removed_models"] == ["free"]
    assert offline["breakdown_by_model"]["spare"]["hourly_cost_usd"] == 0.01
    assert offline["hourly_cost_usd"] == served["hourly_cost_usd"] == 0.01


def test_unregister_takes_a_model_an_experiment_ended_since_a_restored_backup_named(
        settings: Settings, fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = Path(settings.db_path)
    with started(settings) as gateway:
        gateway.register_model(card(fake, "spare"))
        gateway.create_ab_test("spare-only", {"models": ["spare"]}, "cost_optimized")
    backup = tmp_path / "backup.db"
    back_up(db, backup)
    with started(settings) as gateway:
        gateway.end_ab_test("spare-only")
    restore(backup, db)  # (holds "spare-only" running, its arm naming "spare")
    config = str(settings.source_path)
    assert main(["models", "unregister", "spare", "--config", config]) == 0, \
        capsys.readouterr().err
    with started(settings) as gateway:  # (as a service on it judged it: nothing names it)
        assert "spare" not in gateway.router.catalog.names
        assert running(gateway) == []
