"""A command beside the running service (``switchpoint feedback``, which holds no lock) books
nothing of the service's budget reservations: a request that outran its reservation's deadline
is still the service's, charged what it cost when it ends, once.

A real service on loopback (the fake provider trickling a stream), a budgeted key, the official
``openai`` client, ``switchpoint feedback`` run as a user runs it, the ledger read back from the
SQLite file. The request is made to outrun its reservation by the service's ledger clocks alone
(its wall clock at noon UTC the day before, its monotonic clock stepped on once the reservation
is on disk): a request cannot outlive ``gateway.max_total_s`` plus its reservation's grace
(``governance.reservation_grace_s``, 30 s) otherwise, as one that overran them (a slow
settlement, a host that stalled) would. At noon, its requests are dated in one day whatever
the time of day the test runs at."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from switchpoint.cli import main
from switchpoint.config import load_settings
from switchpoint.governance.budgets import period_start
from switchpoint.governance.ledger import CHARGED_ROWS
from switchpoint.governance.reports import Reports
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text, db_rows
from tests.integration.servers import thread_server, until

ADMIN_TOKEN = "admin-secret-token"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
ENV = {"SP_TEST_ADMIN": ADMIN_TOKEN}
GATEWAY = """gateway:
  connect_timeout_s: 1
  read_timeout_s: 5
  first_token_timeout_s: 5
  max_total_s: 20
"""
GOVERNANCE = """auth: keys
admin_token_env: SP_TEST_ADMIN
tenants:
  acme:
    models: [good]
"""
# A stream of 40 chunks a quarter of a second apart: ten seconds under way.
SLOW = "[[fake:ok:chunk_delay=0.25]] " + " ".join(f"word{i}" for i in range(40))
STEP_S = 60.0  # the service's monotonic clock, stepped past its reservations' deadlines (50 s)


def test_feedback_beside_the_service_charges_none_of_its_requests_still_running(
        gw_fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(data), gateway=GATEWAY) + GOVERNANCE,
                      encoding="utf-8")
    settings = load_settings(config, environ=ENV)
    app = create_app(settings, loader=FACTORY, provider_env=KEYS)
    with thread_server(app) as server:
        # The service's budgets read a wall clock at noon the day before, running on from there:
        # its reservations' deadlines are past by the real clock (a command beside reads that).
        shift = time.time() - (period_start("day", time.time()) - 12 * 3600.0)

        def wall() -> float:
            return time.time() - shift

        governor = server.service.gateway.governor
        governor.clock = governor.ledger.clock = wall
        r = httpx.post(f"{server.base}/v1/router/keys", headers=ADMIN, timeout=10,
                       json={"tenant": "acme", "budget": "5/day"})
        assert r.status_code == 201, r.text
        key, key_id = r.json()["key"], r.json()["id"]
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0,
                               timeout=30)
        answer = client.chat.completions.with_raw_response.create(
            model="good", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
        decision_id = answer.headers["x-switchpoint-decision-id"]

        ledger = governor.ledger
        ahead = [0.0]
        ledger.monotonic = lambda: time.monotonic() + ahead[0]
        got: list[str] = []

        def read() -> None:
            stream = client.chat.completions.create(
                model="good", max_tokens=500, stream=True,
                messages=[{"role": "user", "content": SLOW}])
            got.extend(chunk.choices[0].delta.content or "" for chunk in stream
                       if chunk.choices)
            got.append("[DONE]")

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        until(lambda: bool(db_rows(data, "SELECT 1 FROM spend WHERE kind = 'reserve' AND "
                                        "key_id = ?", key_id)), "the reservation is on disk")
        [(reserved, expires_at, worst)] = db_rows(
            data, "SELECT reservation_id, expires_at, amount_usd FROM spend WHERE "
                  "kind = 'reserve' AND key_id = ?", key_id)
        assert expires_at < time.time()  # its deadline is past, by any wall clock
        ahead[0] = STEP_S  # ... and by the service's: it books the expiry, the request runs
        until(lambda: bool(db_rows(data, "SELECT 1 FROM spend WHERE reservation_id = ? AND "
                                        "kind = 'expire_running'", reserved)),
               "the service books the expiry")
        assert "[DONE]" not in got

        capsys.readouterr()
        assert main(["feedback", decision_id, "--score", "0.5", "--tenant", "acme",
                     "--config", str(config), "--json"]) == 0
        assert '"replaced"' in capsys.readouterr().out
        assert "[DONE]" not in got  # (it ran beside the request)
        reader.join(timeout=30)
        assert got[-1] == "[DONE]" and "word29" in "".join(got)  # (answered whole)
        until(lambda: len(db_rows(data, "SELECT 1 FROM spend WHERE reservation_id = ? AND "
                                       "kind = 'settle'", reserved)) > 0,
               "the request settles")
        [(request_id, cost)] = db_rows(data, "SELECT id, charged_usd FROM requests WHERE "
                                           "key_id = ? AND stream = 1", key_id)
        assert 0 < cost < worst
        # The reservation was closed once, by its request's settlement: charged what it cost.
        closings = [kind for (kind,) in db_rows(
            data, "SELECT kind FROM spend WHERE reservation_id = ? AND kind != 'reserve' "
                  "ORDER BY rowid", reserved)]
        assert closings == ["expire_running", "settle"]
        [(charged,)] = db_rows(data, f"SELECT sum(amount_usd) FROM spend WHERE {CHARGED_ROWS} "
                                   "AND key_id = ? AND request_id = ?", key_id, request_id)
        assert charged == pytest.approx(cost)
    # Read back with no service running, the key's day holds the two requests' costs alone.
    [(spent,)] = db_rows(data, f"SELECT sum(amount_usd) FROM spend WHERE {CHARGED_ROWS} AND "
                             "key_id = ?", key_id)
    reports = Reports.from_settings(settings, clock=wall)
    assert reports.ledger.spent(f"key:{key_id}", "day") == pytest.approx(spent)
    assert reports.ledger.held(f"key:{key_id}") == 0.0
