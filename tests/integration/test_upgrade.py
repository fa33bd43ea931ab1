"""A team upgrades: the current code starts on a data_dir an older switchpoint wrote while it
served (tests/fixtures/schema21: its databases as SQL dumps, and what its admin routes answered
before it stopped, made by make_store.py there) and keeps everything; a kill in the middle of
the upgrade leaves the old schema whole, and the next start finishes it."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchpoint.store.sqlite import SCHEMA_VERSION
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.published_schema import Published
from tests.integration.servers import ProcessServer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "schema21"
ADMIN = "fixture-admin-token-0123456789"
ENV = {"SP_ADMIN": ADMIN, "FAKE_KEY": "sk-fake"}
# The prompt acme's feedback taught (make_store.py's TAUGHT).
EXPECTED_PROMPT = "Translate the following sentence into French: the cat sleeps on the mat."
# The prompt of the decision acme scores after the upgrade (make_store.py's pending_decision).
PENDING_PROMPT = "A question whose feedback comes after the upgrade."
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
# The tables of running totals (the requests the service took since add to them).
TOTALS = {"sqlite_sequence", "stat_counts", "tenant_stat_counts", "decision_errors"}


def old_data_dir(root: Path, base_url: str) -> tuple[Path, Path]:
    """The config and the data_dir of the fixture, loaded from its dumps: (config, data)."""
    data = root / "data"
    data.mkdir(mode=0o700)
    for name in ("switchpoint", "keys", "sessions"):
        conn = sqlite3.connect(data / f"{name}.db")
        try:
            conn.executescript(gzip.decompress((FIXTURE / f"{name}.sql.gz").read_bytes()).decode())
        finally:
            conn.close()
        os.chmod(data / f"{name}.db", 0o600)
    config = root / "switchpoint.yaml"
    config.write_text((FIXTURE / "switchpoint.yaml").read_text().replace("{base}", base_url))
    return config, data


def rows(path: Path) -> dict[str, list[Any]]:
    """Every row of every table of the database ``path``, by table."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    finally:
        conn.close()


def as_they_were(rows: list[Any], old_rows: list[Any]) -> list[Any]:
    """The first ``len(old_rows)`` of a table's ``rows`` upgraded, each with the columns it
    had before (a column added since comes after them)."""
    return [row[:len(old)] for row, old in zip(rows[:len(old_rows)], old_rows, strict=True)]


def version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def kept(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where ``actual`` lost or changed what ``expected`` held (fields added since are fine)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: {actual!r} is no object"]
        return [problem for k, v in expected.items()
                for problem in ([f"{where}.{k}: gone"] if k not in actual
                                else kept(v, actual[k], f"{where}.{k}"))]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: {len(expected)} items became {actual!r:.200}"]
        return [p for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for p in kept(e, a, f"{where}[{i}]")]
    return [] if expected == actual else [f"{where}: {expected!r} became {actual!r}"]


def get(base: str, path: str, **params: str) -> Any:
    r = httpx.get(f"{base}{path}", params=params, headers={"authorization": f"Bearer {ADMIN}"},
                  timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def post(base: str, path: str, body: Any, key: str) -> httpx.Response:
    return httpx.post(f"{base}{path}", json=body, headers={"authorization": f"Bearer {key}"},
                      timeout=30)


def requests_log(base: str) -> list[Any]:
    """Every entry of the request log, each page valid against the published schema (the
    entries the older switchpoint wrote hold fewer fields than those written since)."""
    published = Published(get(base, "/openapi.json"))
    entries: list[Any] = []
    params: dict[str, str] = {"limit": "100"}
    while True:
        page = published.valid("GET", "/v1/router/requests", httpx.get(
            f"{base}/v1/router/requests", params=params,
            headers={"authorization": f"Bearer {ADMIN}"}, timeout=30))
        entries += page["data"]
        if page["next_cursor"] is None:
            return entries
        params["cursor"] = str(page["next_cursor"])


@pytest.fixture(scope="module")
def fake() -> Any:
    with FakeProviderProcess() as provider:
        yield provider


def test_a_store_an_older_switchpoint_wrote_keeps_everything_it_held_after_the_upgrade(
        tmp_path: Path, fake: FakeProviderProcess) -> None:
    config, data = old_data_dir(tmp_path, fake.openai_base_url)
    assert version(data / "switchpoint.db") == 21
    before = rows(data / "switchpoint.db")
    server = ProcessServer("--config", config, data_dir=data, env=ENV).start()
    with server:
        server.wait_ready()
        assert version(data / "switchpoint.db") == SCHEMA_VERSION
        base = server.base
        # What the admin routes answered before the upgrade, they answer after it: every
        # request (its decision, cost, charge, pin state, attempts), the stats, the keys, the
        # experiment (its arms' outcomes and the promotion), each tenant's learned router,
        # memory and feedback.
        status = get(base, "/v1/router/status")
        after = {"requests": requests_log(base),
                 "stats": get(base, "/v1/router/stats"),
                 "stats_acme": get(base, "/v1/router/stats", tenant="acme"),
                 "keys": get(base, "/v1/router/keys")["data"],
                 "experiment": get(base, "/v1/router/experiments/thrift"),
                 "status_tenants": status["tenants"]}
        assert kept({k: EXPECTED[k] for k in after}, after) == []
        assert status["replayed"] == 12  # (every outcome, learned again from the log)
        # The taught prompt is routed as before, to the same estimates.
        secrets = EXPECTED["keys_secrets"]
        for tenant in ("acme", "beta"):
            r = post(base, "/v1/route", {"prompt": EXPECTED_PROMPT}, secrets[tenant])
            assert r.status_code == 200, r.text
            assert kept(EXPECTED["route"][tenant], r.json()) == [], tenant
        # The old secrets still open the gateway, and charge the old spend's budgets.
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=secrets["acme"], max_retries=0)
        assert client.chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}]).choices
        # A decision routed before the upgrade still takes its feedback, by its id: it was
        # kept without its prompt's hash, which finds no decision.
        hashed = hashlib.sha256(PENDING_PROMPT.encode()).hexdigest()
        r = post(base, "/v1/feedback", {"prompt_hash": hashed, "score": 0.5}, secrets["acme"])
        assert r.status_code == 404 and r.json()["error"]["param"] == "prompt_hash", r.text
        r = post(base, "/v1/feedback", {"decision_id": EXPECTED["pending_decision"],
                                        "score": 0.5}, secrets["acme"])
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == "decision" and r.json()["teaches_routing"]
    # The rows the old code wrote are all still there, each as it was.
    upgraded = rows(data / "switchpoint.db")
    for table, old_rows in before.items():
        if table not in TOTALS:
            assert as_they_were(upgraded[table], old_rows) == old_rows, table

_KILLED_AT = textwrap.dedent("""
    import os, signal, sys
    import switchpoint.store.schema as schema
    import switchpoint.store.sqlite as store

    step, seen = int(sys.argv[2]), 0
    statements = schema._statements

    def killing(script):
        global seen
        for statement in statements(script):
            seen += 1
            if seen == step:
                os.kill(os.getpid(), signal.SIGKILL)
            yield statement

    schema._statements = killing
    store.SQLiteStore(sys.argv[1]).open().close()
    print(seen)
""")


def test_a_kill_in_the_middle_of_the_upgrade_leaves_the_old_schema_whole_and_the_next_start_finishes_it(  # noqa: E501
        tmp_path: Path, fake: FakeProviderProcess) -> None:
    _, data = old_data_dir(tmp_path, fake.openai_base_url)
    path = data / "switchpoint.db"
    before = rows(path)
    step = 1
    while True:  # SIGKILL before each statement of the upgrade in turn
        done = subprocess.run([sys.executable, "-c", _KILLED_AT, str(path), str(step)],
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode == 0:
            break
        assert done.returncode == -9, done.stderr
        assert version(path) == 21 and rows(path) == before, step
        step += 1
    assert step > 3 and int(done.stdout) == step - 1  # (every statement was a kill point)
    assert version(path) == SCHEMA_VERSION
    upgraded = rows(path)
    assert all(len(upgraded[table]) == len(old_rows)
               and as_they_were(upgraded[table], old_rows) == old_rows
               for table, old_rows in before.items() if table not in TOTALS)
