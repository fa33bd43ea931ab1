"""``switchpoint models list`` and ``switchpoint models unregister NAME`` on a real data_dir
whose models a real gateway registered at run time (SQLite in ``tmp_path``, the fake
provider): the list shows the config's models and the registered ones (a row that no longer
reads as a model flagged, not hidden) and leaves the data_dir as it was; ``unregister`` refuses
as the gateway does (a config model, an unknown name, a live key, a run-time experiment's arm
or another registered model's fallbacks naming it), changing nothing, and is refused while a
service runs on the data_dir; once it succeeds a gateway opened there no longer serves the
model. ``experiments list`` judges a run-time experiment whose arm names a registered model
against the config and the registered models together."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from switchpoint.config import Settings
from switchpoint.errors import ConfigError, ConflictError, ModelNotFoundError
from switchpoint.governance.keys import KeySpec, KeyStore
from tests.command_line import run
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.learning_env import (
    learning_server,
    package,
    post,
    settings_for,
    started_gateway,
)
from tests.integration.test_registered_models import ADMIN, CONFIG, card, stored

#: When the row that no longer reads as a model was registered (by an earlier switchpoint).
OLD_AT = 1.7e9


def _files(data: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data.iterdir())}


def _rows(settings: Settings) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(settings.db_path)) as db:
        return db.execute("SELECT seq, name, created, card FROM runtime_models "
                          "ORDER BY seq").fetchall()


@pytest.fixture
def made(fake: FakeProviderProcess, tmp_path: Path) -> Settings:
    """A data_dir where a gateway, now closed, registered ``free`` (no profile in the
    weights), ``spare`` (profiled as ``cheap``) and ``backup`` (falling back to ``free``),
    and made ``free-only``, running, whose arm names ``free``; beside them a row an earlier
    switchpoint kept, ``old``, whose tier this one does not know."""
    weights = package().save(tmp_path / "weights")
    settings = settings_for(fake, tmp_path, CONFIG + f"weights: {weights}\n")
    with started_gateway(settings) as gateway:
        gateway.register_model(card(fake))
        gateway.register_model(card(fake, "spare", profile="cheap", input_per_mtok=2,
                                    output_per_mtok=3))
        gateway.register_model(card(fake, "backup", fallbacks=["free"]))
        gateway.create_ab_test("free-only", {"models": ["free"]}, "cost_optimized")
    with closing(sqlite3.connect(settings.db_path)) as db, db:
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("old", OLD_AT, json.dumps({"name": "old", "tier": "huge"})))
    return settings


def test_list_shows_the_config_s_models_and_the_registered_ones_and_reads_only(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(made.source_path)
    data = Path(made.data_dir)
    before = _files(data)
    code, out, err = run(["models", "list", "--config", config, "--json"], capsys)
    assert (code, err) == (0, "")
    listed = {row["name"]: row for row in json.loads(out)}
    assert list(listed) == ["strong", "runner", "cheap", "free", "spare", "backup", "old"]
    assert [listed[n]["status"] for n in listed] == ["config"] * 3 + ["registered"] * 3 + [
        "unreadable"]
    assert listed["strong"]["registered_at"] is None and listed["strong"]["profiled"] is True
    rows = {name: created for _, name, created, _ in _rows(made)}
    spare = listed["spare"]
    assert (spare["provider"], spare["tier"], spare["input_per_mtok"], spare["output_per_mtok"],
            spare["registered_at"], spare["profiled"]) == ("openai-compatible", "simple", 2, 3,
                                                           rows["spare"], True)
    assert listed["free"]["profiled"] is False and listed["free"]["problem"] is None
    old = listed["old"]
    assert (old["registered_at"], old["provider"], old["profiled"]) == (OLD_AT, None, None)
    assert old["problem"].startswith("no longer reads as a model (tier: must be one of ")

    code, out, err = run(["models", "list", "--config", config], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "status", "provider", "tier"]
    assert lines[2].startswith("strong") and lines[2].rstrip().endswith("yes")
    assert lines[6].split()[:2] == ["spare", "registered"]
    assert lines[8].split()[:2] == ["old", "unreadable"]
    assert err.startswith('note: model "old": no longer reads as a model (tier: must be '), err
    assert "unregister it" in err
    assert _files(data) == before  # (no file added, none changed)


def test_unregister_refuses_as_the_gateway_does_and_changes_nothing(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(made.source_path)
    key = KeyStore.in_dir(made.data_dir)
    with key:
        key_id = key.create(KeySpec(tenant="acme", models=["free", "cheap"]).checked(
            ["acme"], None)).record.id
    data = Path(made.data_dir)
    before, files = _rows(made), _files(data)
    for name, words in [
            ("strong", 'model "strong" is in the config, not registered at run time'),
            ("nope", 'no model "nope" was registered at run time; check the name: those '
                     'registered are "free", "spare", "backup", "old"'),
            ("free", f'key {key_id}: it can no longer use "free"'),
            ("x" * 5000, 'no model "xxxx')]:
        code, out, err = run(["models", "unregister", name, "--config", config], capsys)
        assert code == 2 and out == "", (name, out)
        assert err.startswith("switchpoint: error: NAME: ") and words in err, err
        assert len(err) < 1000
        assert _rows(made) == before and _files(data) == files
    with key:
        key.revoke(key_id)
    before, files = _rows(made), _files(data)
    code, out, err = run(["models", "unregister", "free", "--config", config], capsys)
    assert code == 2 and "still named by models.backup.fallbacks[0]" in err, err
    assert _rows(made) == before and _files(data) == files
    code, _, err = run(["models", "unregister", "old", "--data-dir", made.data_dir], capsys)
    assert code == 2 and "give the service's config with --config" in err, err

    # The row that no longer reads as a model goes; so does backup; then the arm refuses.
    assert run(["models", "unregister", "old", "--config", config], capsys)[0] == 0
    code, out, err = run(["models", "unregister", "backup", "--config", config,
                          "--json"], capsys)
    assert (code, err) == (0, "") and json.loads(out) == {"id": "backup", "object": "model",
                                                          "deleted": True}
    assert [name for _, name, _, _ in _rows(made)] == ["free", "spare"]
    code, _, err = run(["models", "unregister", "free", "--config", config], capsys)
    assert code == 2 and "still named by experiments.free-only.arms.a.models[0]" in err, err
    assert run(["experiments", "end", "free-only", "--config", config], capsys)[0] == 0
    code, out, err = run(["models", "unregister", "free", "--config", config], capsys)
    assert (code, err) == (0, "")
    assert out.startswith("unregistered model free: a service started on ")
    assert [name for _, name, _, _ in _rows(made)] == ["spare"]

    with started_gateway(made) as gateway:  # a gateway opened on it no longer serves it
        assert gateway.router.catalog.names == ["strong", "runner", "cheap", "spare"]
        with pytest.raises(ModelNotFoundError):
            gateway.complete([{"role": "user", "content": "hello"}], model="free")
    assert [name for name, _ in stored(made)] == ["spare"]


def test_unregister_is_refused_while_a_service_runs_on_the_data_dir_and_list_reads_beside_it(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(made.source_path)
    before = _rows(made)
    with started_gateway(made) as gateway:
        code, out, err = run(["models", "unregister", "spare", "--config", config], capsys)
        assert code == 2 and out == ""
        assert "is serving from data_dir" in err and 'serving model "spare" from its memory' in err
        assert "unregister it through the service, DELETE /v1/router/models/spare" in err
        assert _rows(made) == before
        assert "spare" in gateway.router.catalog.names
        code, out, _ = run(["models", "list", "--config", config, "--json"], capsys)
        assert code == 0 and [r["name"] for r in json.loads(out)][-4:] == [
            "free", "spare", "backup", "old"]
        gateway.unregister_model("spare")  # (the service's own way, meanwhile)
    code, _, err = run(["models", "unregister", "spare", "--config", config], capsys)
    assert code == 2 and 'no model "spare" was registered at run time' in err


def test_experiments_list_judges_an_arm_naming_a_registered_model_with_the_registered_ones(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["experiments", "list", "--config", str(made.source_path)], capsys)
    assert code == 0 and out.splitlines()[2].startswith("free-only")
    assert err == ""  # (the arm names "free", registered: a service would start)
    with started_gateway(made) as gateway:  # (and it does)
        assert gateway.route("hello").experiment == "free-only"


def test_list_flags_a_registered_model_the_config_comes_to_list_and_unregister_refuses_it(
        made: Settings, fake: FakeProviderProcess, capsys: pytest.CaptureFixture[str]) -> None:
    path = made.source_path
    assert path is not None
    spare = (f'  - {{name: spare, base_url: "{fake.openai_base_url}", api_key_env: FAKE_KEY, '
             "input_per_mtok: 20, output_per_mtok: 20}\n")
    path.write_text(path.read_text(encoding="utf-8").replace("models:\n", "models:\n" + spare, 1),
                    encoding="utf-8")
    code, out, err = run(["models", "list", "--config", str(path), "--json"], capsys)
    assert code == 0
    listed = [(r["name"], r["status"]) for r in json.loads(out)]
    assert listed[:4] == [("spare", "config"), ("strong", "config"), ("runner", "config"),
                          ("cheap", "config")]
    assert ("spare", "shadowed") in listed[4:]
    before = _rows(made)
    code, _, err = run(["models", "unregister", "spare", "--config", str(path)], capsys)
    assert code == 2 and 'model "spare" is in the config, not registered at run time' in err
    assert _rows(made) == before


def test_list_says_a_model_naming_a_metadata_host_is_kept_not_served_as_the_service_says(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    # A service keeps it in data_dir without serving it while the config does not allow such
    # hosts, and DELETE unregisters it: the list says so, and serves it once the config does.
    with closing(sqlite3.connect(made.db_path)) as db, db:
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("meta", OLD_AT, json.dumps({"name": "meta", "tier": "simple",
                                                "base_url": "http://169.254.169.254/v1"})))
    path = made.source_path
    assert path is not None
    code, out, err = run(["models", "list", "--config", str(path), "--json"], capsys)
    assert (code, err) == (0, "")
    meta = {row["name"]: row for row in json.loads(out)}["meta"]
    assert (meta["status"], meta["tier"], meta["registered_at"]) == ("not served", "simple",
                                                                     OLD_AT), meta
    said = meta["problem"]
    assert said.startswith('base_url "http://169.254.169.254/v1" names '), said
    assert "set gateway.allow_registered_metadata_hosts: true" in said, said
    assert "served again once the setting is true" in said, said
    assert "DELETE /v1/router/models/meta" in said, said
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("gateway:\n", "gateway:\n  allow_registered_metadata_hosts: "
                                              "true\n", 1), encoding="utf-8")
    code, out, err = run(["models", "list", "--config", str(path), "--json"], capsys)
    assert (code, err) == (0, "")
    meta = {row["name"]: row for row in json.loads(out)}["meta"]
    assert (meta["status"], meta["problem"]) == ("registered", None), meta


def test_a_row_that_is_not_json_is_skipped_at_start_listed_unreadable_and_unregistered(
        made: Settings, fake: FakeProviderProcess, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with closing(sqlite3.connect(made.db_path)) as db, db:
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("torn", OLD_AT, '{"name": "torn", "tier'))
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("binary", OLD_AT, b"\xff\xfe"))
    with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"), \
            started_gateway(made) as gateway:  # the others are served; the torn rows skipped
        assert gateway.router.catalog.names == ["strong", "runner", "cheap", "free", "spare",
                                                "backup"]
        # Its name stays taken, and only the command line takes it out: each says so.
        rows = _rows(made)
        with pytest.raises(ConflictError) as taken:
            gateway.register_model(card(fake, "torn"))
        said = str(taken.value)
        assert taken.value.param == "name" and said.startswith(
            'name: model "torn" was registered at run time at '), said
        assert said.endswith("no longer reads as a model, so it is not served; pick another "
                             "name, or unregister that one with the service stopped "
                             "(`switchpoint models unregister torn`)"), said
        with pytest.raises(ConflictError, match="so this service cannot unregister it; "
                                                "unregister it with the service stopped"):
            gateway.unregister_model("binary")
        assert _rows(made) == rows
    warned = [r.getMessage() for r in caplog.records if "no longer reads" in r.getMessage()]
    assert any(w.startswith('model "torn", registered at run time at ') and
               "card: is not valid JSON (" in w for w in warned), warned
    assert any(w.startswith('model "binary"') and "card: is not UTF-8 text" in w
               for w in warned), warned

    config = str(made.source_path)
    code, out, err = run(["models", "list", "--config", config, "--json"], capsys)
    assert (code, err) == (0, "")
    listed = {row["name"]: row for row in json.loads(out)}
    assert (listed["torn"]["status"], listed["torn"]["registered_at"]) == ("unreadable", OLD_AT)
    assert listed["torn"]["problem"].startswith("no longer reads as a model (card: is not "
                                                "valid JSON ("), listed["torn"]
    assert listed["binary"]["status"] == "unreadable"
    code, _, err = run(["experiments", "list", "--config", config], capsys)
    assert code == 0 and "would not start" not in err, err
    for name in ("torn", "binary"):
        assert run(["models", "unregister", name, "--config", config], capsys)[0] == 0
    assert [name for _, name, _, _ in _rows(made)] == ["free", "spare", "backup", "old"]


def test_keys_create_takes_a_registered_model_s_name_as_the_running_service_does(
        fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server:
        assert post(server, "/v1/router/models", card(fake), ADMIN).status_code == 201
        made = post(server, "/v1/router/keys", {"tenant": "acme", "models": ["free", "auto"]},
                    ADMIN)
        assert made.status_code == 201 and made.json()["models"] == ["free", "auto"], made.text
        bad = post(server, "/v1/router/keys", {"tenant": "acme", "models": ["nope"]}, ADMIN)
        assert bad.status_code == 400, bad.text
        served = bad.json()["error"]["message"]
        assert 'not in the catalog: "nope"; use "strong", "runner", "cheap", "free"' in served
    config = str(tmp_path / "switchpoint.yaml")
    with closing(sqlite3.connect(tmp_path / "data" / "switchpoint.db")) as db, db:
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("old", OLD_AT, json.dumps({"name": "old", "tier": "huge"})))
    code, out, err = run(["keys", "create", "--tenant", "acme", "--models",
                          "free,auto", "--config", config, "--json"], capsys)
    assert (code, err) == (0, ""), err
    assert json.loads(out)["models"] == ["free", "auto"]
    code, out, err = run(["keys", "create", "--tenant", "acme", "--models", "nope",
                          "--config", config], capsys)
    assert code == 2 and out == ""
    assert 'not in the catalog: "nope"; use "strong", "runner", "cheap", "free"' in err, err
    assert served.split("not in the catalog")[1] in err  # (the same words)
    # (a row that does not read as a model: unserved)
    code, _, err = run(["keys", "create", "--tenant", "acme", "--models", "old",
                        "--config", config], capsys)
    assert code == 2 and 'not in the catalog: "old"' in err, err


def test_a_registered_model_falling_back_to_a_model_the_config_drops_is_named_with_the_way_out(
        fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(fake, tmp_path, CONFIG)
    path = settings.source_path
    assert path is not None
    with started_gateway(settings) as gateway:
        gateway.register_model(card(fake, "onto-cheap", fallbacks=["cheap"]))
        text = path.read_text(encoding="utf-8")
        path.write_text(re.sub(r"  - \{name: cheap,[^}]*\}\n", "", text), encoding="utf-8")
        with pytest.raises(ConfigError) as refused:  # the reload changes nothing
            gateway.reload()
        assert refused.value.key == "models.onto-cheap.fallbacks[0]", refused.value
        assert str(refused.value).startswith(
            'models.onto-cheap.fallbacks[0]: "cheap" is not a model in the catalog'), refused
        assert ('model "onto-cheap" was registered at run time, so no config lists it: '
                "unregister it (Gateway.unregister_model or DELETE /v1/router/models/onto-cheap"
                in str(refused.value)), refused.value
        assert gateway.router.catalog.names == ["strong", "runner", "cheap", "onto-cheap"]
    with pytest.raises(ConfigError) as refused:  # a start on the new config says the same
        started_gateway(settings.reloaded())
    assert refused.value.key == "models.onto-cheap.fallbacks[0]"
    assert "`switchpoint models unregister onto-cheap` while it is stopped" in str(refused.value)
    code, _, err = run(["models", "list", "--config", str(path)], capsys)
    assert code == 0 and "would not start: models.onto-cheap.fallbacks[0]: " in err, err
    assert run(["models", "unregister", "onto-cheap", "--config", str(path)], capsys)[0] == 0
    with started_gateway(settings.reloaded()) as gateway:  # (then it starts)
        assert gateway.router.catalog.names == ["strong", "runner"]


def test_unregister_the_store_refuses_says_it_is_still_registered_and_changes_nothing(
        made: Settings, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process holds the database's write lock past the store's busy timeout (short
    # here): the removal is refused saying what could not be kept, what to do and that the
    # model is still registered, as the service says it (it said only that the write failed,
    # naming the file).
    from tests.fakes.held_lock import held_lock, short_lock_waits

    short_lock_waits(monkeypatch, seconds=1.0)
    config = str(made.source_path)
    before = _rows(made)
    with held_lock(made.db_path):
        code, out, err = run(["models", "unregister", "spare", "--config", config], capsys)
    assert code == 2 and out == "", err
    assert err.startswith("switchpoint: error: the model's removal could not be kept "
                          "(database is locked)"), err
    assert err.rstrip().endswith("(it is still registered)") and "Traceback" not in err, err
    assert _rows(made) == before
    assert run(["models", "unregister", "spare", "--config", config], capsys)[0] == 0
    assert "spare" not in [name for _, name, _, _ in _rows(made)]


def test_unregister_of_a_model_not_served_is_refused_as_a_served_one_s_is(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    # A model naming a metadata host, kept not served while the config does not allow such
    # hosts, is still a model: a live key, another model's fallbacks or a running
    # experiment's arm naming it keeps it, as for a served one (it was taken as unreadable
    # and unregistered unchecked).
    meta = {"name": "meta", "tier": "simple", "base_url": "http://169.254.169.254/v1",
            "input_per_mtok": 0, "output_per_mtok": 0}
    with closing(sqlite3.connect(made.db_path)) as db, db:
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("meta", OLD_AT, json.dumps(meta)))
    config = str(made.source_path)
    code, out, _ = run(["models", "list", "--config", config, "--json"], capsys)
    assert code == 0 and {r["name"]: r["status"] for r in json.loads(out)}["meta"] == (
        "not served")
    key = KeyStore.in_dir(made.data_dir)
    with key:
        key_id = key.create(KeySpec(tenant="acme", models=["meta"]).checked(
            ["acme"], None)).record.id
    data = Path(made.data_dir)
    before, files = _rows(made), _files(data)
    code, out, err = run(["models", "unregister", "meta", "--config", config], capsys)
    assert code == 2 and out == "", out
    assert f'key {key_id}: it can no longer use "meta"' in err, err
    assert _rows(made) == before and _files(data) == files
    with key:
        key.revoke(key_id)
    with closing(sqlite3.connect(made.db_path)) as db, db:
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("onto-meta", OLD_AT, json.dumps({**meta, "name": "onto-meta",
                                                     "base_url": "http://127.0.0.1:9/v1",
                                                     "fallbacks": ["meta"]})))
    before = _rows(made)
    code, out, err = run(["models", "unregister", "meta", "--config", config], capsys)
    assert code == 2 and "still named by models.onto-meta.fallbacks[0]" in err, err
    assert _rows(made) == before
    for name in ("onto-meta", "meta"):
        code, out, err = run(["models", "unregister", name, "--config", config], capsys)
        assert code == 0, (name, err)
    assert "meta" not in [name for _, name, _, _ in _rows(made)]
