"""keys.db is bounded: a revoked or expired key's record goes once it ended longer ago than the
retention (``switchpoint prune``, the service's hourly retention), and past
``governance.max_keys`` ended keys the oldest go as a key is made; never a live key. Reports
name a pruned key's spend by its id and say it was pruned; a lookup of one is a 404 saying a
key may have been pruned. Real SQLite, the CLI in-process, a real server and the official
``openai`` client; a prune killed part-way leaves a consistent keys.db."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import schemathesis

from switchpoint.config import load_settings
from switchpoint.errors import StoreError
from switchpoint.gateway import Gateway
from switchpoint.governance import keys as keys_module
from switchpoint.governance.keys import KeySpec, KeyStore
from switchpoint.server import create_app
from switchpoint.store import RequestRecord, SQLiteStore
from tests.command_line import run
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.full_disk import DamagedFile
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text, user
from tests.integration.servers import thread_server, until

DAY = 86_400.0
CONFIG = """models:
  - {name: small, input_per_mtok: 0.2, output_per_mtok: 0.6}
data_dir: data
tenants:
  acme: {}
"""
ADMIN_TOKEN = "admin-secret-token-for-prune"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def key_ids(data: Path) -> set[str]:
    with sqlite3.connect(data / "keys.db") as db:
        ids = {r[0] for r in db.execute("SELECT id FROM keys")}
    db.close()
    return ids


def made_at(data: Path, when: float, *, revoke: bool = False, expires_after: float | None = None
            ) -> tuple[str, str]:
    """A key (its id and secret) as if made at ``when``, then revoked there with ``revoke``,
    or expiring ``expires_after`` seconds after it (its times moved back in the file, as an
    operator's edit would: the store's own time never goes back)."""
    with KeyStore.in_dir(data) as store:
        issued = store.create(KeySpec(tenant="acme"))
    with sqlite3.connect(data / "keys.db") as db:
        db.execute("UPDATE keys SET created_at = ?, revoked_at = ?, expires_at = ? WHERE id = ?",
                   (when, when if revoke else None,
                    None if expires_after is None else when + expires_after, issued.record.id))
    db.close()
    return issued.record.id, issued.key


@pytest.fixture
def aged(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A data_dir with a log and keys: live, revoked and expired, long ago and lately."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    data = tmp_path / "data"
    now = time.time()
    with SQLiteStore(data / "switchpoint.db") as store:
        store.append(RequestRecord(
            id="r0", ts=now - 60, requested_model="small", status="ok", http_status=200,
            pin_state="fresh", stream=False, latency_ms=10.0, model="small", prompt_tokens=1,
            completion_tokens=1, cost_usd=1e-6, tenant="acme", key_id="0123456789")).result()
    ids = {"late_revoked": made_at(data, now - 90 * DAY)[0],  # made long ago, revoked now
           "old_live": made_at(data, now - 90 * DAY)[0],
           "old_revoked": made_at(data, now - 90 * DAY, revoke=True)[0],
           "old_expired": made_at(data, now - 90 * DAY, expires_after=DAY)[0],
           "new_revoked": made_at(data, now - 2 * DAY, revoke=True)[0],
           "new_expired": made_at(data, now - 3 * DAY, expires_after=DAY)[0]}
    with KeyStore.in_dir(data) as keys:
        keys.revoke(ids["late_revoked"])
    return config, data, ids


def test_prune_deletes_keys_that_ended_before_the_cutoff_and_never_a_live_one(
        aged: tuple[Path, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    config, data, ids = aged
    before = key_ids(data)
    # A dry run counts what would go and changes nothing.
    code, out, err = run(["prune", "--config", config, "--older-than", "30", "--dry-run",
                          "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["keys_deleted"] == 2
    assert "would delete 2 revoked or expired keys from" in err, err
    assert key_ids(data) == before
    code, out, err = run(["prune", "--config", config, "--older-than", "30", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["keys_deleted"] == 2
    assert key_ids(data) == before - {ids["old_revoked"], ids["old_expired"]}
    # Again: nothing more is old enough.
    code, out, err = run(["prune", "--config", config, "--older-than", "30", "--json"], capsys)
    assert code == 0 and json.loads(out)["keys_deleted"] == 0, err
    # A day's retention takes those that ended days ago; the live key, made 90 days ago,
    # stays, and so does the one made then and revoked now (it ended when it was revoked).
    code, out, err = run(["prune", "--config", config, "--older-than", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["keys_deleted"] == 2, err
    assert key_ids(data) == {ids["old_live"], ids["late_revoked"]}
    # A pruned key's show is a 404-like refusal saying it may have been pruned.
    code, _, err = run(["keys", "show", ids["old_revoked"], "--config", config], capsys)
    assert code == 2
    assert (f'no key has the id "{ids["old_revoked"]}": none was made here, or it was revoked '
            "or expired and its record was pruned since") in err, err


def test_prune_of_a_data_dir_holding_keys_but_no_log_prunes_the_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Keys made with the command line before any service ran there: the data_dir holds
    keys.db alone, and prune deletes its ended keys (it was refused as holding no log, so they
    were never pruned), saying there was no log to prune, and makes no log."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    data = tmp_path / "data"
    now = time.time()
    live, _ = made_at(data, now - 90 * DAY)
    old, _ = made_at(data, now - 90 * DAY, revoke=True)
    recent, _ = made_at(data, now - 2 * DAY, revoke=True)
    for dry_run in (True, False):
        code, out, err = run(["prune", "--config", config, "--older-than", "30", "--json",
                              *(["--dry-run"] if dry_run else [])], capsys)
        assert code == 0, err
        report = json.loads(out)
        assert report["keys_deleted"] == 1 and report["deleted"] == {}, report
        assert report["files"] == ["keys.db"] and report["dry_run"] is dry_run, report
        log = data / "switchpoint.db"
        assert f"no log to prune: {log} does not exist (no service has logged there)" in err
        verb = "would delete" if dry_run else "deleted"
        assert f"{verb} 1 revoked or expired key from {data / 'keys.db'}" in err, err
        assert key_ids(data) == ({live, old, recent} if dry_run else {live, recent})
        assert sorted(p.name for p in data.iterdir()) == ["keys.db"]  # (no log made)
    # A data_dir holding a log but no keys.db prunes the log and says there was no key.
    other = tmp_path / "logged"
    with SQLiteStore(other / "switchpoint.db"):
        pass
    code, out, err = run(["prune", "--data-dir", other, "--older-than", "30", "--json"],
                         capsys)
    assert code == 0, err
    assert json.loads(out)["files"] == ["switchpoint.db"]
    assert json.loads(out)["keys_db_missing"] is False  # (its log names no key)
    assert (f"no key to prune: {other / 'keys.db'} does not exist (no key was made there)"
            in err), err
    assert not (other / "keys.db").exists()


def test_the_service_s_retention_prunes_keys_too(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    old, _ = made_at(data, time.time() - 40 * DAY, revoke=True)
    live, secret = made_at(data, time.time() - 40 * DAY)
    # (within the 2 ended keys max_keys keeps: the start deletes those past it)
    kept, _ = made_at(data, time.time() - DAY, revoke=True)
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\nadmin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\nstore: {retention_days: 30}\n"
                      "governance: {max_keys: 2}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    with caplog.at_level("INFO", logger="switchpoint.gateway"), thread_server(
            create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        # (a request runs the hourly housekeeping, on a thread of its own)
        client(server, secret).chat.completions.create(model="cheap", messages=user("hi"))
        until(lambda: key_ids(data) == {live, kept}, "the revoked keys pruned", timeout=60)
        # The log gives both reasons, as prune does (it said all had ended over 30 days ago).
        until(lambda: "pruned 1 revoked or expired keys" in caplog.text, "the log", timeout=10)
        assert ("pruned 1 revoked or expired keys (those that ended more than 30 days ago, and "
                "the oldest past the 2 ended keys governance.max_keys keeps)") in caplog.text
        r = httpx.get(f"{server.base}/v1/router/keys/{old}", headers=ADMIN, timeout=10)
        assert r.status_code == 404 and "its record was pruned since" in r.json()["error"][
            "message"], r.text


def test_a_service_start_applies_max_keys_to_keys_db_as_a_reload_does(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # governance.max_keys lowered while no service ran: the start kept the records past it
    # until a key was made, a reload or a prune.
    data = tmp_path / "data"
    now = time.time()
    ended = [made_at(data, now - (9 - i) * 60, revoke=True)[0] for i in range(3)]
    live = {made_at(data, now - 60)[0], made_at(data, now - 30)[0]}
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\nadmin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\ngovernance: {max_keys: 1}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    with caplog.at_level("INFO", logger="switchpoint.gateway"), thread_server(
            create_app(settings, loader=FACTORY, provider_env=KEYS)):
        assert key_ids(data) == {*live, ended[-1]}  # (the newest ended key kept)
    assert ("service started: governance.max_keys is 1: deleted the records of 2 ended "
            "(revoked or expired) keys past the newest 1") in caplog.text, caplog.text
    assert ("service started: 2 keys are live (neither revoked nor expired), more than "
            "governance.max_keys (1) allows: they keep working, but no key can be made until "
            "2 of them are revoked") in caplog.text, caplog.text


def damaged_keys_db(data: Path) -> Path:
    """A keys.db in ``data`` whose header and clock open but whose keys' pages are damaged
    (every page from the last root page on overwritten), made of 40 revoked keys."""
    with KeyStore.in_dir(data) as store:
        for _ in range(40):
            store.revoke(store.create(KeySpec(tenant="acme", name="n" * 200)).record.id)
    # (without the revocations kept beside it, which its opening would read the keys for)
    (data / "keys.revocations.jsonl").unlink()
    db = data / "keys.db"
    with sqlite3.connect(db) as conn:
        last_root = max(r[0] for r in conn.execute("SELECT rootpage FROM sqlite_master"))
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    damaged = bytearray(db.read_bytes())
    assert len(damaged) > (last_root + 1) * size  # (pages of keys past every root page)
    damaged[last_root * size:] = b"\xff" * (len(damaged) - last_root * size)
    db.write_bytes(bytes(damaged))
    return db


def test_a_start_on_a_keys_db_damaged_past_its_opening_is_refused_naming_it(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A keys.db whose header and clock open but whose keys' pages are damaged: the start,
    counting the ended keys past governance.max_keys, is refused naming the file and what
    mends it, where a raw ``sqlite3.DatabaseError`` came out of it."""
    data = tmp_path / "data"
    db = damaged_keys_db(data)
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\ntenants: {acme: {}}\n"
                      "governance: {max_keys: 5}\n", encoding="utf-8")
    with pytest.raises(StoreError) as refused:
        Gateway(load_settings(config, environ={}), loader=FACTORY, env=KEYS).start()
    message = str(refused.value)
    assert f"{str(db)!r}: cannot count the ended keys to prune (database disk image is " \
           "malformed); the file is damaged" in message, message
    assert "restore it from a backup" in message


def test_a_reload_on_a_keys_db_damaged_past_its_opening_is_refused_before_it_swaps(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """keys.db replaced, while the service runs, by one whose keys' pages are damaged: the
    reload, reading the live keys to weigh the new config against, is a 503 naming the file
    and what mends it, and the running config serves on, where a raw
    ``sqlite3.DatabaseError`` (a 500) came out of it after the new config had gone live."""
    damaged = damaged_keys_db(tmp_path / "aside")
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\nadmin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    data = Path(settings.data_dir)
    with caplog.at_level("ERROR", logger="switchpoint"), thread_server(
            create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        os.replace(damaged, data / "keys.db")  # (restored from a bad backup, say)
        config.write_text(config.read_text(encoding="utf-8").replace(
            "tenants: {acme: {}}", "tenants: {acme: {}, beta: {}}"), encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "storage_unavailable", r.text
        assert ("keys.db in data_dir is damaged (database disk image is malformed); the "
                "operator must restore it from a backup; the config was not reloaded: the "
                "running one keeps serving") in error["message"], r.text
        tenants = httpx.get(f"{server.base}/v1/router/tenants", headers=ADMIN, timeout=10)
        assert tenants.status_code == 200, tenants.text
        assert list(tenants.json()["data"]) == ["acme"], tenants.text  # (beta not live)
    assert (f"POST /v1/router/reload: {str(data / 'keys.db')!r}: cannot read the keys "
            "(database disk image is malformed); the file is damaged") in caplog.text, \
        caplog.text


def test_every_read_of_a_keys_db_damaged_past_its_opening_is_a_503_naming_it(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """keys.db replaced, while the service runs, by one whose keys' pages are damaged: a
    client's key verified on its request and an admin's read of a key are each a 503
    storage_unavailable naming keys.db and what mends it, logged in one line (no traceback),
    and the service serves on; ``keys show`` says the same and exits non-zero. A raw
    ``sqlite3.DatabaseError`` (a 500, a traceback a request) came out of each."""
    aside = tmp_path / "aside"
    with KeyStore.in_dir(aside) as store:
        issued = store.create(KeySpec(tenant="acme"))
    damaged = damaged_keys_db(aside)
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\nadmin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    data = Path(settings.data_dir)
    told = ("keys.db in data_dir is damaged (database disk image is malformed); the operator "
            "must restore it from a backup")
    with caplog.at_level("ERROR", logger="switchpoint"), thread_server(
            create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        os.replace(damaged, data / "keys.db")  # (restored from a bad backup, say)
        with pytest.raises(openai.APIStatusError) as refused:
            client(server, issued.key).chat.completions.create(model="auto",
                                                               messages=user("hello"))
        assert refused.value.status_code == 503, refused.value
        assert refused.value.code == "storage_unavailable", refused.value
        assert told in refused.value.message, refused.value.message
        shown = httpx.get(f"{server.base}/v1/router/keys/{issued.record.id}", headers=ADMIN,
                          timeout=10)
        assert shown.status_code == 503, shown.text
        assert shown.json()["error"]["code"] == "storage_unavailable", shown.text
        assert told in shown.json()["error"]["message"], shown.text
        # (waiting does not mend it: the openai clients are told not to try again)
        assert shown.headers["x-should-retry"] == "false" and "Retry-After" not in shown.headers
        tenants = httpx.get(f"{server.base}/v1/router/tenants", headers=ADMIN, timeout=10)
        assert tenants.status_code == 200, tenants.text  # (the service serves on)
    path = repr(str(data / "keys.db"))
    assert f"POST /v1/chat/completions: {path}: cannot look the key up (database disk image " \
           "is malformed); the file is damaged" in caplog.text, caplog.text
    assert caplog.text.count("POST /v1/chat/completions: ") == 1, caplog.text
    assert f"GET /v1/router/keys/{issued.record.id}: {path}: cannot read the key" \
        in caplog.text, caplog.text
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [], caplog.text
    code, out, err = run(["keys", "show", issued.record.id, "--config", config], capsys)
    assert code != 0 and out == "", (code, out, err)
    assert f"{path}: cannot read the key (database disk image is malformed)" in err, err
    assert "restore it from a backup" in err and "Traceback" not in err, err


def test_ended_keys_past_max_keys_go_oldest_first_as_keys_are_made(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A create/revoke loop grew keys.db without bound: a revoked key's record was never deleted.
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\nadmin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\ngovernance: {max_keys: 2}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    data = Path(settings.data_dir)
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        url = f"{server.base}/v1/router/keys"
        live = httpx.post(url, json={"tenant": "acme"}, headers=ADMIN, timeout=10).json()
        made: list[dict[str, Any]] = []
        for i in range(8):
            issued = httpx.post(url, json={"tenant": "acme", "name": f"k{i}"}, headers=ADMIN,
                                timeout=10)
            assert issued.status_code == 201, issued.text
            made.append(issued.json())
            if i == 0:  # the first spends, so the reports have its rows
                client(server, made[0]["key"]).chat.completions.create(
                    model="cheap", messages=user("spend"))
            assert httpx.delete(f"{url}/{made[-1]['id']}", headers=ADMIN,
                                timeout=10).status_code == 200
            # Never more than twice max_keys records.
            assert len(key_ids(data)) <= 4
        # The newest ended keys stay (the 2 kept as the last was made, and it), and the live
        # one, whatever its age.
        assert key_ids(data) == {live["id"], *(m["id"] for m in made[-3:])}
        first = made[0]["id"]
        r = httpx.get(f"{url}/{first}", headers=ADMIN, timeout=10)
        assert r.status_code == 404 and r.json()["error"]["param"] == "id", r.text
        assert "revoked or expired and its record was pruned since" in r.json()["error"][
            "message"]
        # The pruned key is no key of the gateway any more, said so.
        with pytest.raises(openai.AuthenticationError, match="forgotten once pruned"):
            client(server, made[0]["key"]).chat.completions.create(
                model="cheap", messages=user("again"))
        # The reports name its spend by its id, and say it was pruned.
        cost = httpx.get(f"{server.base}/v1/router/report/cost", headers=ADMIN, timeout=10)
        assert cost.status_code == 200, cost.text
        assert first in cost.json()["by_key"] and cost.json()["pruned_keys"] == [first]
        document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
        schemathesis.openapi.from_dict(document)["/v1/router/report/cost"][
            "GET"].validate_response(cost)
        listed = {k["id"] for k in httpx.get(url, headers=ADMIN, timeout=10).json()["data"]}
        assert listed == key_ids(data)
    code, out, err = run(["report", "cost", "--config", config], capsys)
    assert code == 0, err
    assert f"{first} (pruned)" in out, out
    assert f"{live['id']} (pruned)" not in out


def test_a_prune_killed_part_way_leaves_keys_db_consistent(
        aged: tuple[Path, Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config, data, ids = aged
    # Many ended keys, so the prune goes in several batches.
    for _ in range(7):
        made_at(data, time.time() - 60 * DAY, revoke=True)
    before = key_ids(data)
    pid = os.fork()
    if pid == 0:  # SIGKILLed as it commits its second batch
        try:
            monkeypatch.setattr(keys_module, "_PRUNE_BATCH", 3)
            commits = 0
            write = KeyStore._write

            def dying(self: KeyStore, conn: sqlite3.Connection, what: str, sql: str,
                      args: tuple[object, ...]) -> None:
                nonlocal commits
                if what == "prune the ended keys" and sql == "COMMIT":
                    commits += 1
                    if commits == 2:
                        os.kill(os.getpid(), signal.SIGKILL)
                write(self, conn, what, sql, args)

            monkeypatch.setattr(KeyStore, "_write", dying)
            keys_module.prune_keys(data, time.time() - 30 * DAY, 10_000)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with sqlite3.connect(data / "keys.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    after = key_ids(data)
    assert len(before - after) == 3 and after < before  # the first batch, whole
    assert {ids["old_live"], ids["new_revoked"], ids["late_revoked"]} <= after
    # The next prune goes on where it stopped.
    code, out, err = run(["prune", "--config", config, "--older-than", "30", "--json"], capsys)
    assert code == 0 and json.loads(out)["keys_deleted"] == 9 - 3, err
    assert key_ids(data) == before - {ids["old_revoked"], ids["old_expired"]} - {
        k for k in before if k not in ids.values()}
    # The keys kept still work as they did.
    store = KeyStore.in_dir(data)
    with store:
        assert store.find(ids["old_live"]).status(store.now()) == "active"


def test_a_change_of_a_key_on_a_keys_db_damaged_as_it_writes_is_the_503_the_routes_publish(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """keys.db damaged between a change's read and its write: a key's revocation, rotation
    and making are each the 503 of a damaged keys.db (x-should-retry: false, naming the file
    and saying to restore it), as its reads are, and a prune says the same; the write was a
    503 saying to try again shortly, as if a full disk or a lock held too long. The key
    routes' published 503 says so (it said the router was still loading its weights)."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\nadmin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    told = ("keys.db in data_dir is damaged (database disk image is malformed); the operator "
            "must restore it from a backup")
    with caplog.at_level("ERROR", logger="switchpoint"), thread_server(
            create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        url = f"{server.base}/v1/router/keys"
        made = httpx.post(url, json={"tenant": "acme"}, headers=ADMIN, timeout=10)
        assert made.status_code == 201, made.text
        key_id = made.json()["id"]
        keys = server.service.gateway.governor.keys
        real = keys._db()
        keys._conn = DamagedFile(real)  # type: ignore[assignment]
        for answer in (httpx.delete(f"{url}/{key_id}", headers=ADMIN, timeout=10),
                       httpx.post(f"{url}/{key_id}/rotate", json={}, headers=ADMIN, timeout=10),
                       httpx.post(url, json={"tenant": "acme"}, headers=ADMIN, timeout=10)):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "storage_unavailable", answer.text
            assert told in answer.json()["error"]["message"], answer.text
            assert answer.headers["x-should-retry"] == "false", answer.headers
            assert "retry-after" not in answer.headers, answer.headers
        keys._conn = real
        shown = httpx.get(f"{url}/{key_id}", headers=ADMIN, timeout=10)
        assert shown.json()["status"] == "active", shown.text  # (nothing changed)
        # Each key route's published 503 says what it means there, not that the router is
        # still loading its weights (a key route never waits for it).
        paths = httpx.get(f"{server.base}/openapi.json", timeout=15).json()["paths"]
        for path in ("/v1/router/keys", "/v1/router/keys/{key_id}",
                     "/v1/router/keys/{key_id}/revoke", "/v1/router/keys/{key_id}/rotate"):
            for method, operation in paths[path].items():
                about = operation["responses"]["503"]["description"]
                assert about.startswith("storage_unavailable: keys.db in data_dir"), about
                assert "damaged (x-should-retry: false" in about and "service_closing" in about
                assert ("or written" in about) is (method in ("post", "delete")), (path, about)
                assert "loading" not in about, (method, path, about)
    assert f"DELETE /v1/router/keys/{key_id}: {str(Path(settings.data_dir) / 'keys.db')!r}: " \
           "cannot revoke the key (database disk image is malformed); the file is damaged" \
        in caplog.text, caplog.text
    with KeyStore.in_dir(settings.data_dir) as store:
        real = store._db()
        store._conn = DamagedFile(real)  # type: ignore[assignment]
        with pytest.raises(StoreError) as refused:
            store.prune(None, 0)
        store._conn = real
        assert refused.value.damaged and refused.value.reason == told, refused.value


def log_a_key(data: Path, key_id: str) -> None:
    """A request of key ``key_id`` in ``data``'s log, a minute ago (its keys.db not there)."""
    with SQLiteStore(data / "switchpoint.db") as store:
        store.append(RequestRecord(
            id="r0", ts=time.time() - 60, requested_model="small", status="ok",
            http_status=200, pin_state="fresh", stream=False, latency_ms=10.0, model="small",
            prompt_tokens=1, completion_tokens=1, cost_usd=1e-6, tenant="acme",
            key_id=key_id)).result()


def test_a_key_made_over_http_beside_a_log_naming_keys_of_a_missing_keys_db_is_a_503(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A service without auth: keys (the key store opened at its first use) whose log names
    keys made in a keys.db now missing: a key made by the admin API is a 503
    storage_unavailable saying to restore it, x-should-retry false, and no file is made,
    where an empty keys.db was made, every key made before then unknown (401). Its hourly
    retention prunes the log and warns once that keys.db is missing, as switchpoint prune
    does, where it said nothing (not again each hour)."""
    data = tmp_path / "data"
    log_a_key(data, "0123456789")
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "admin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    with caplog.at_level("WARNING", logger="switchpoint"), thread_server(
            create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        for _ in range(2):  # (the hourly retention, twice)
            server.service.gateway._housekeeping.run(False, 30)
        r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                       headers=ADMIN, timeout=10)
    said = [m for m in caplog.messages if "cannot prune the ended keys" in m]
    assert said == [f"retention: {str(data / 'keys.db')!r}: cannot prune the ended keys: it is "
                    "missing, yet the request log names keys made in it (0123456789): a pruned "
                    "key loses its record, never the file; restore it from a backup"], \
        caplog.messages
    assert r.status_code == 503 and r.headers["x-should-retry"] == "false", r.text
    assert r.json()["error"]["code"] == "storage_unavailable", r.text
    assert ("keys.db in data_dir is missing, yet the request log names keys made in it; the "
            "operator must restore it from a backup") in r.json()["error"]["message"], r.text
    assert not (data / "keys.db").exists()


def test_a_reload_to_auth_keys_beside_a_log_naming_keys_of_a_missing_keys_db_is_refused(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A service without auth: keys whose log names keys made in a keys.db now missing,
    reloaded (POST /v1/router/reload; SIGHUP runs the same reload) with auth: keys: a 503
    storage_unavailable, x-should-retry false, naming the file and saying to restore it,
    nothing swapped (a request without a key is still served) and no keys.db made, as a
    start with auth: keys is refused; every key made before would otherwise get 401."""
    data = tmp_path / "data"
    log_a_key(data, "0123456789")
    config = tmp_path / "switchpoint.yaml"
    text = config_text(gw_fake) + "admin_token_env: SP_PRUNE_ADMIN\ntenants: {acme: {}}\n"
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        config.write_text(text + "auth: keys\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert r.status_code == 503 and r.headers["x-should-retry"] == "false", r.text
        assert r.json()["error"]["code"] == "storage_unavailable", r.text
        assert ("keys.db in data_dir is missing, yet the request log names keys made in it; "
                "the operator must restore it from a backup; the config was not reloaded: the "
                "running one keeps serving") in r.json()["error"]["message"], r.text
        client(server, "no-key").chat.completions.create(model="cheap", messages=user("hi"))
    assert not (data / "keys.db").exists()


def test_keys_db_deleted_while_the_service_holds_keys_is_not_made_again_empty(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """keys.db (with its -wal and -shm) deleted while the service runs with keys: a reload,
    and a client's request, are each a 503 storage_unavailable naming the missing file and
    saying to restore it from a backup, and the reload swaps nothing; a new, empty keys.db was
    made, so the reload went through and every key stopped working (401) silently. So are
    the cost report and the budgets' lists, which said every key was pruned and left the keys'
    budgets out, and the hourly prune says so in the log, where it found no key to prune. The
    backup put back, the keys work again at once."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\nadmin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    db = Path(settings.data_dir) / "keys.db"
    told = ("keys.db in data_dir was deleted while the service ran, holding keys; the "
            "operator must restore it from a backup")
    with caplog.at_level("ERROR", logger="switchpoint"), thread_server(
            create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        made = httpx.post(f"{server.base}/v1/router/keys",
                          json={"tenant": "acme", "budget": "50/day"}, headers=ADMIN, timeout=10)
        assert made.status_code == 201, made.text
        client(server, made.json()["key"]).chat.completions.create(  # (spent: in the report)
            model="cheap", messages=user("hi"))
        backup = tmp_path / "backup.db"
        with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)
        src.close()
        dst.close()
        for name in ("keys.db", "keys.db-wal", "keys.db-shm"):
            (db.parent / name).unlink(missing_ok=True)
        config.write_text(config.read_text(encoding="utf-8").replace(
            "tenants: {acme: {}}", "tenants: {acme: {}, beta: {}}"), encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "storage_unavailable", r.text
        assert f"{told}; the config was not reloaded: the running one keeps serving" in r.json()[
            "error"]["message"], r.text
        assert r.headers["x-should-retry"] == "false", r.headers
        tenants = httpx.get(f"{server.base}/v1/router/tenants", headers=ADMIN, timeout=10)
        assert list(tenants.json()["data"]) == ["acme"], tenants.text  # (nothing swapped)
        with pytest.raises(openai.APIStatusError) as refused:
            client(server, made.json()["key"]).chat.completions.create(
                model="cheap", messages=user("hi"))
        assert refused.value.status_code == 503 and told in refused.value.message
        for path in ("/v1/router/report/cost", "/v1/router/budgets", "/v1/router/budget/alert"):
            r = httpx.get(f"{server.base}{path}", headers=ADMIN, timeout=10)
            assert r.status_code == 503 and told in r.json()["error"]["message"], (path, r.text)
            assert r.headers["x-should-retry"] == "false", r.headers
        with caplog.at_level("WARNING", logger="switchpoint.gateway"):
            server.service.gateway._housekeeping.run(False, 30)  # (the hourly retention)
        assert (f"{str(db)!r}: cannot prune the ended keys: it was deleted while the service "
                "ran, holding keys; restore it from a backup") in caplog.text, caplog.text
        assert not db.exists()  # (none made, empty)
        os.replace(backup, db)  # (restored from the backup)
        cost = httpx.get(f"{server.base}/v1/router/report/cost", headers=ADMIN, timeout=10)
        assert cost.json()["pruned_keys"] == [], cost.text  # (the key is held again)
        client(server, made.json()["key"]).chat.completions.create(model="cheap",
                                                                    messages=user("hi"))
        assert httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN,
                          timeout=30).status_code == 200
        about = httpx.get(f"{server.base}/openapi.json", timeout=15).json()["paths"][
            "/v1/router/reload"]["post"]["responses"]["503"]["description"]
        assert "or deleted while the service held keys in it: restore it from a backup" in about
    assert (f"POST /v1/router/reload: {str(db)!r}: cannot read the keys: it was deleted while "
            "the service ran, holding keys; restore it from a backup") in caplog.text, \
        caplog.text


def test_an_older_keys_db_put_in_place_while_the_service_runs_is_refused_not_taken(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """keys.db replaced by an older backup while the service runs with keys, the log naming a
    key made since: each use is a 503 storage_unavailable saying the file lacks keys the log
    names (x-should-retry false), as a start refuses it, and the hourly retention warns once
    and leaves the file as it is, where the service took it (the key made since got 401, a key
    revoked since worked again) and its clock writes and prunes made it pass for the file in
    use at the next start. The newest file put back, the keys work again at once."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + "auth: keys\nadmin_token_env: SP_PRUNE_ADMIN\n"
                      "tenants: {acme: {}}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_PRUNE_ADMIN": ADMIN_TOKEN})
    db = Path(settings.data_dir) / "keys.db"
    older, newest = tmp_path / "older.db", tmp_path / "newest.db"
    with caplog.at_level("WARNING", logger="switchpoint"), thread_server(
            create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        made = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                          headers=ADMIN, timeout=10).json()
        with sqlite3.connect(db) as src, sqlite3.connect(older) as dst:
            src.backup(dst)
            dst.execute("UPDATE clock SET latest = ?", (time.time() - 2 * DAY,))  # (taken then)
        src.close()
        dst.close()
        since = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                           headers=ADMIN, timeout=10).json()
        log_a_key(Path(settings.data_dir), since["id"])  # (used a minute ago)
        with sqlite3.connect(db) as src, sqlite3.connect(newest) as dst:
            src.backup(dst)
        src.close()
        dst.close()
        os.replace(older, db)
        wrong = db.read_bytes()
        with pytest.raises(openai.APIStatusError) as refused:
            client(server, made["key"]).chat.completions.create(model="cheap",
                                                                messages=user("hi"))
        assert refused.value.status_code == 503, refused.value.message
        assert refused.value.response.headers["x-should-retry"] == "false"
        assert ("keys.db in data_dir lacks keys the request log names in requests logged after "
                "it was last in use; the operator must restore the newest backup of it"
                ) in refused.value.message
        for _ in range(2):  # (the hourly retention, twice)
            server.service.gateway._housekeeping.run(False, 30)
        said = [m for m in caplog.messages if m.startswith("retention: ")]
        assert said == [f"retention: {str(db)!r}: cannot open the key store: the request log "
                        f"names 1 key it does not hold ({since['id']}), in requests logged "
                        "after the latest time it was in use (" + said[0].split("(", 2)[2]
                        ], caplog.messages
        assert db.read_bytes() == wrong  # (no time written, nothing pruned)
        os.replace(newest, db)  # (the newest put back)
        for key in (made["key"], since["key"]):
            client(server, key).chat.completions.create(model="cheap", messages=user("hi"))
