"""A budgeted stream cut by a crash (``kill -9``) after it had run: a provider may have billed
it, so its reservation, on disk, is charged its worst case when it expires, once, and the
key's budget counts it, live, in the reports and after a further restart. Requests answered
whole before the crash keep what they were charged, their reservations closed.

``switchpoint serve`` in a subprocess as a user runs it, the official ``openai`` client with a
key that has a budget, the fake provider; the ledger read back from the SQLite file."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchpoint.catalog import usd_text
from switchpoint.config import load_settings
from switchpoint.governance.governor import prompt_bound, worst_cost
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import KEYS, config_text, db_rows
from tests.integration.servers import ProcessServer, until

ADMIN_TOKEN = "admin-secret-token"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
ENV = {**KEYS, "SP_TEST_ADMIN": ADMIN_TOKEN}
# A request's deadline of 3 s: its reservation expires 8 s after it was made (the deadline
# plus a reservation grace of 5 s, set below: the default 30 s is a wait, no more), room
# enough for the crash, a second or so in, and the restart, a few seconds more, to see it still
# held, unless a loaded machine slows the restart (the test then skips that one check).
GATEWAY = """gateway:
  connect_timeout_s: 1
  read_timeout_s: 2
  first_token_timeout_s: 2
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  max_retry_after_s: 2
  max_total_s: 3
"""
# The tenant may use `good` alone (its fallback is left out): the reservation names its model.
GOVERNANCE = """auth: keys
admin_token_env: SP_TEST_ADMIN
tenants:
  acme:
    models: [good]
budgets:
  models: {good: 1000/day}
governance:
  reservation_grace_s: 5
"""
MAX_TOKENS = 40_000  # a worst case of about $1.2 on `good` ($30 per million output tokens)
SLOW = "[[fake:ok:chunk_delay=0.5]] " + " ".join(f"word{i}" for i in range(200))


def _start(config: Path, data: Path) -> ProcessServer:
    server = ProcessServer("--config", config, data_dir=data, env=ENV).start()
    server.wait_ready()
    return server


def _key_status(server: ProcessServer, key_id: str) -> dict[str, Any]:
    """The key's budget as the service reports it (spent, held)."""
    r = httpx.get(f"{server.base}/v1/router/keys/{key_id}", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    status: dict[str, Any] = r.json()["budget_status"][0]
    return status


def _alert_status(server: ProcessServer, key_id: str) -> dict[str, Any]:
    """The key's budget as the budget report says it."""
    r = httpx.get(f"{server.base}/v1/router/budget/alert", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    [status] = [b for b in r.json()["budgets"] if b["account"] == f"key:{key_id}"]
    return dict(status)


def _stream(server: ProcessServer, key: str) -> list[object]:
    """A slow stream to ``good``, read in a thread (it dies with the service): what it got."""
    got: list[object] = []

    def read() -> None:
        try:
            with httpx.stream("POST", f"{server.base}/v1/chat/completions", timeout=60,
                              headers={"authorization": f"Bearer {key}"},
                              json={"model": "good", "stream": True, "max_tokens": MAX_TOKENS,
                                    "messages": [{"role": "user", "content": SLOW}]}) as answer:
                got.append(answer.status_code)
                for line in answer.iter_lines():
                    got.append(line)
        except httpx.HTTPError as exc:
            got.append(exc)

    threading.Thread(target=read, daemon=True).start()
    return got


def test_a_stream_a_crash_cut_is_charged_its_worst_case_once_when_its_reservation_expires(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(data), gateway=GATEWAY) + GOVERNANCE,
                      encoding="utf-8")
    settings = load_settings(config, environ=ENV)
    catalog = settings.catalog()
    assert catalog is not None
    good = catalog["good"]
    body = {"model": "good", "max_tokens": MAX_TOKENS, "messages": [{"role": "user",
                                                                      "content": SLOW}]}
    worst = worst_cost(good, prompt_bound(body, settings.governance.image_tokens), MAX_TOKENS)
    # Room for one such request, not two.
    budget = f"{worst * 1.5:.6f}/day"

    with _start(config, data) as server:
        r = httpx.post(f"{server.base}/v1/router/keys", headers=ADMIN, timeout=10,
                       json={"tenant": "acme", "budget": budget})
        assert r.status_code == 201, r.text
        key, key_id = r.json()["key"], r.json()["id"]
        got = _stream(server, key)
        until(lambda: sum(1 for g in got if isinstance(g, str) and g.startswith("data:")) >= 2,
               "the stream is under way")
        # It runs past half a second: its reservation reaches disk.
        until(lambda: bool(db_rows(data, "SELECT 1 FROM spend WHERE kind = 'reserve' AND "
                                        "key_id = ?", key_id)), "the reservation is on disk")
        server.kill()  # a crash mid-stream: the request never settles
    assert "data: [DONE]" not in got
    [(reserved, expires_at, amount, model, provider)] = db_rows(
        data, "SELECT reservation_id, expires_at, amount_usd, model, provider FROM spend "
              "WHERE kind = 'reserve' AND key_id = ?", key_id)
    assert amount == pytest.approx(worst, rel=1e-9) and (model, provider) == ("good",
                                                                              good.provider)
    assert not db_rows(data, "SELECT * FROM spend WHERE kind != 'reserve'")

    with _start(config, data) as server:
        # Until its request's deadline passes, the reservation holds; nothing is spent yet.
        # (A restart slower than the grace, on a loaded machine, finds it past already: what
        # follows still holds, and this is judged only of a status read before the deadline.)
        status = _key_status(server, key_id)
        if time.time() < expires_at:
            assert status["held_usd"] == pytest.approx(worst) and status["spent_usd"] == 0.0
        until(lambda: _key_status(server, key_id)["spent_usd"] > 0,
               "the reservation expires",
              timeout=max(expires_at - time.time(), 0) + 15)
        status = _key_status(server, key_id)
        assert status["spent_usd"] == pytest.approx(worst) and status["held_usd"] == 0.0
        assert _alert_status(server, key_id)["spent_usd"] == pytest.approx(worst)
        closing_rows: list[tuple[Any, ...]] = []

        def closed() -> bool:  # (the row follows the live ledger within a flush or two)
            closing_rows[:] = db_rows(data, "SELECT kind, amount_usd, key_id, tenant, model, "
                                          "provider FROM spend WHERE reservation_id = ? AND "
                                          "kind != 'reserve'", reserved)
            return bool(closing_rows)

        until(closed, "the expiry is on disk")
        assert closing_rows == [("expire_charge", pytest.approx(worst), key_id, "acme", "good",
                                 good.provider)]
        assert "a provider may have billed it" in server.stderr
        # The cost report counts it with what budgets were charged, though no request did.
        report = httpx.get(f"{server.base}/v1/router/report/cost", headers=ADMIN,
                           timeout=10).json()
        assert report["charged_at_expiry_usd"] == pytest.approx(worst)
        assert report["charged_usd"] == pytest.approx(worst)
        assert report["requests"] == 0
        other = httpx.get(f"{server.base}/v1/router/report/cost", headers=ADMIN, timeout=10,
                          params={"tenant": "default"}).json()
        assert other["charged_at_expiry_usd"] == 0.0
        # The charge filled the budget: a request of the same worst case is refused.
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0,
                               timeout=15)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="good", max_tokens=MAX_TOKENS,
                                           messages=[{"role": "user", "content": SLOW}])
        assert refused.value.code == "budget_exceeded", refused.value
        assert f"has spent {usd_text(worst)} of its" in str(refused.value)
        code, err = server.terminate()
        assert code == 0, err

    with _start(config, data) as server:  # a restart charges nothing twice
        assert _key_status(server, key_id)["spent_usd"] == pytest.approx(worst)
        assert _alert_status(server, key_id)["spent_usd"] == pytest.approx(worst)
        code, err = server.terminate()
        assert code == 0, err
    assert len(db_rows(data, "SELECT 1 FROM spend WHERE reservation_id = ? AND kind != "
                           "'reserve'", reserved)) == 1


def test_what_answered_requests_were_charged_survives_a_crash_right_after_their_answers(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A plain answer and a stream that ran long enough for its reservation to reach disk,
    each received whole, then ``kill -9`` at once: the next start has the key and the model's
    budget charged what the client was told, each reservation closed (none left to be charged
    its worst case at expiry), and both requests in the log."""
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(data), gateway=GATEWAY) + GOVERNANCE,
                      encoding="utf-8")
    with _start(config, data) as server:
        r = httpx.post(f"{server.base}/v1/router/keys", headers=ADMIN, timeout=10,
                       json={"tenant": "acme", "budget": "100/day"})
        assert r.status_code == 201, r.text
        key, key_id = r.json()["key"], r.json()["id"]
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0,
                               timeout=30)
        plain = client.chat.completions.with_raw_response.create(
            model="good", max_tokens=100, messages=[{"role": "user", "content": "Say hi."}])
        told = [float(plain.headers["x-switchpoint-charged"])]
        ids = [plain.headers["x-switchpoint-request-id"]]
        # About a second long: past the half second after which its reservation is on disk.
        slow = "[[fake:ok:chunk_delay=0.1]] " + " ".join(f"word{i}" for i in range(12))
        with client.chat.completions.with_streaming_response.create(
                model="good", max_tokens=100, stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": slow}]) as streamed:
            ids.append(streamed.headers["x-switchpoint-request-id"])
            chunks = list(streamed.parse())
        [usage] = [chunk.usage for chunk in chunks if chunk.usage is not None]
        assert chunks[-2].choices[0].finish_reason == "stop"
        told.append(float((usage.model_extra or {})["cost"]))
        server.kill()  # a crash right after the stream's [DONE]
    assert all(t > 0 for t in told), told
    reserved = db_rows(data, "SELECT reservation_id FROM spend WHERE kind = 'reserve' AND "
                             "key_id = ?", key_id)
    assert len(reserved) == 1, reserved  # the stream's, on disk while it ran

    with _start(config, data) as server:
        status = _key_status(server, key_id)
        assert status["spent_usd"] == pytest.approx(sum(told), rel=1e-6)
        assert status["held_usd"] == 0.0
        r = httpx.get(f"{server.base}/v1/router/budget/alert", headers=ADMIN, timeout=10)
        [model] = [b for b in r.json()["budgets"] if b["account"] == "model:good"]
        assert model["spent_usd"] == pytest.approx(sum(told), rel=1e-6)
        logged = httpx.get(f"{server.base}/v1/router/requests", headers=ADMIN, timeout=10,
                           params={"limit": 10}).json()["data"]
        charged = {e["id"]: e["charged_usd"] for e in logged}
        assert charged == pytest.approx(dict(zip(ids, told, strict=True)))
        code, err = server.terminate()
        assert code == 0, err
    # The stream's reservation was closed by its settlement: no start charges it again.
    assert db_rows(data, "SELECT kind FROM spend WHERE reservation_id = ? AND kind != "
                         "'reserve'", reserved[0][0]) == [("settle",)]
