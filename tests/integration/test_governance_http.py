"""Client keys, tenants, budgets and rate limits through a real server and the official
``openai`` client: answers with a key; a wrong, revoked or expired key, a forbidden model, an
exhausted budget and a full rate window each raise the matching typed ``openai`` error; the log
says who asked; the admin API makes, lists, rotates and revokes keys; the reports answer."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import schemathesis

from switchpoint._messages import MAX_LISTED
from switchpoint.catalog import usd_text
from switchpoint.cli import main
from switchpoint.config import load_settings
from switchpoint.governance.governor import prompt_bound, worst_cost
from switchpoint.governance.reload_check import MAX_NAMED
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.full_disk import FULL, FullDisk
from tests.fakes.held_lock import held_lock
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text, log_entry, user
from tests.integration.servers import ThreadServer, thread_server

ADMIN_TOKEN = "admin-secret-token"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
GOVERNANCE = """auth: keys
admin_token_env: SP_TEST_ADMIN
tenants:
  acme:
    models: [cheap, good, fresh, auto]
    cost_weight: 0.4
    budgets: [50/month]
  tight:
    models: [cheap]
  limited:
    rpm: 2
sla:
  max_latency_ms: 60000
"""


@pytest.fixture(scope="module")
def gov(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[ThreadServer]:
    root = tmp_path_factory.mktemp("governance")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + GOVERNANCE, encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


def new_key(server: ThreadServer, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme", **body},
                   headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_the_openai_client_with_a_key_gets_answers(gov: ThreadServer) -> None:
    issued = new_key(gov, name="ci", budget="5/day", rpm=100)
    assert issued["key"].startswith(f"sp-{issued['id']}_") and issued["tenant"] == "acme"
    raw = client(gov, issued["key"]).chat.completions.with_raw_response.create(
        model="auto", messages=user("What is the capital of France?"), max_tokens=64)
    answer = raw.parse()
    assert answer.choices[0].message.content is not None
    assert answer.choices[0].message.content.startswith("Echo from")
    entry = log_entry(gov, raw.headers["x-switchpoint-request-id"], headers=ADMIN)
    assert entry["key_id"] == issued["id"] and entry["tenant"] == "acme"
    assert entry["charged_usd"] == pytest.approx(entry["cost_usd"])
    stream = client(gov, issued["key"]).chat.completions.create(
        model="cheap", messages=user("Stream please"), stream=True)
    assert "Echo from cheap" in "".join(c.choices[0].delta.content or "" for c in stream
                                        if c.choices)
    decision = httpx.post(f"{gov.base}/v1/route", json={"prompt": "Hello"},
                          headers={"authorization": f"Bearer {issued['key']}"}).json()
    assert decision["cost_weight"] == 0.4  # the tenant's λ
    assert decision["sla_compliant"] is True and decision["escalated"] is False
    assert decision["selected_model"] in ("cheap", "good", "fresh")


def test_a_wrong_missing_or_malformed_key_is_an_authentication_error(
        gov: ThreadServer) -> None:
    issued = new_key(gov)
    wrong = issued["key"][:-2] + ("AA" if not issued["key"].endswith("AA") else "BB")
    for key, code in [(wrong, "invalid_api_key"), ("sk-not-ours", "invalid_api_key"),
                      ("sp-0123456789_" + "x" * 43, "invalid_api_key")]:
        with pytest.raises(openai.AuthenticationError) as info:
            client(gov, key).chat.completions.create(model="auto", messages=user("hi"))
        assert info.value.code == code, info.value
    r = httpx.post(f"{gov.base}/v1/chat/completions",
                   json={"model": "auto", "messages": user("hi")})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    assert "Authorization: Bearer sp-" in r.json()["error"]["message"]
    r = httpx.post(f"{gov.base}/v1/route", json={"prompt": "hi"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{gov.base}/v1/models").status_code == 401
    assert httpx.get(f"{gov.base}/health").status_code == 200  # probes stay open


def test_a_client_key_on_an_admin_route_is_told_it_is_a_client_key(gov: ThreadServer) -> None:
    issued = new_key(gov)
    listed = httpx.get(f"{gov.base}/v1/router/keys", headers=ADMIN, timeout=10).json()
    r = httpx.post(f"{gov.base}/v1/router/keys", json={"tenant": "acme"}, timeout=10,
                   headers={"authorization": f"Bearer {issued['key']}"})
    assert r.status_code == 401, r.text
    message = r.json()["error"]["message"]
    assert "with the token in $SP_TEST_ADMIN, not a client key (sp-...)" in message
    assert issued["key"] not in message
    assert httpx.get(f"{gov.base}/v1/router/keys", headers=ADMIN,
                     timeout=10).json() == listed  # no key made
    # A credential of no key's shape is told only what the route needs.
    other = httpx.get(f"{gov.base}/v1/router/keys", timeout=10,
                      headers={"authorization": "Bearer not-a-key"})
    assert other.status_code == 401 and "client key" not in other.json()["error"]["message"]


@pytest.mark.parametrize(("header", "named"), [
    ("Basic {key}", 'names the scheme "Basic"'), ("Token {key}", 'names the scheme "Token"'),
    ("{key}", "names no scheme before its credential"),
    ("{key} {key}", "names an unknown scheme")])
def test_a_credential_sent_with_another_scheme_than_bearer_is_told_so(
        gov: ThreadServer, header: str, named: str) -> None:
    # A valid key sent as `Basic <key>` was told "this gateway needs a client key", and the
    # admin token so sent that the route needs the token: neither said the scheme was at fault.
    issued = new_key(gov)
    r = httpx.post(f"{gov.base}/v1/route", json={"prompt": "hi"}, timeout=10,
                   headers={"authorization": header.format(key=issued["key"])})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == {
        "code": "unauthorized", "param": "authorization",
        "message": f"authorization: the header {named}; a credential is read only after the "
                   "Bearer scheme: send `Authorization: Bearer sp-...`, a key `switchpoint "
                   "keys create` made"}
    r = httpx.get(f"{gov.base}/v1/router/keys", timeout=10,
                  headers={"authorization": header.format(key=ADMIN_TOKEN)})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["message"] == (
        f"authorization: the header {named}; a credential is read only after the Bearer "
        "scheme: send `Authorization: Bearer <token>`, with the token in $SP_TEST_ADMIN")
    assert httpx.post(f"{gov.base}/v1/route", json={"prompt": "hi"}, timeout=10, headers={
        "authorization": f"bearer {issued['key']}"}).status_code == 200


def test_revoked_and_expired_keys(gov: ThreadServer) -> None:
    revoked = new_key(gov)
    client(gov, revoked["key"]).chat.completions.create(model="cheap", messages=user("ok"))
    r = httpx.post(f"{gov.base}/v1/router/keys/{revoked['id']}/revoke", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError) as info:
        client(gov, revoked["key"]).chat.completions.create(model="cheap", messages=user("x"))
    assert info.value.code == "key_revoked"
    expiring = new_key(gov, expires="1m")  # the shortest life a key may have
    # A minute later (the store's file is changed as the CLI would, and the service notices).
    keys_db = Path(gov.service.gateway.settings.data_dir) / "keys.db"
    with sqlite3.connect(keys_db) as db:
        db.execute("UPDATE keys SET expires_at = ? WHERE id = ?",
                   (time.time() - 1, expiring["id"]))
    db.close()
    with pytest.raises(openai.AuthenticationError) as info:
        client(gov, expiring["key"]).chat.completions.create(model="cheap",
                                                             messages=user("x"))
    assert info.value.code == "key_expired" and "expired at" in info.value.message


def test_an_expired_key_is_refused_once_on_file_without_stalling_the_service(
        gov: ThreadServer) -> None:
    """The refusal of a key for a time the key store's file does not hold yet waits for that
    write (so the refusal outlasts a crash), off the event loop: while another process holds
    the file's write lock, the service answers other requests at once, and the refusal comes
    when the lock is let go and the file holds a time past the expiry."""
    expiring = new_key(gov, expires="1m")
    keys_db = Path(gov.service.gateway.settings.data_dir) / "keys.db"
    with sqlite3.connect(keys_db) as db:  # (the file's time is behind the clock by a little)
        held_time = float(db.execute("SELECT latest FROM clock").fetchone()[0])
        time.sleep(0.05)
        expired_at = max(held_time + 0.01, time.time() - 0.02)
        db.execute("UPDATE keys SET expires_at = ? WHERE id = ?", (expired_at, expiring["id"]))
    db.close()
    answers: list[httpx.Response] = []
    with held_lock(keys_db) as holder:
        refused = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{gov.base}/v1/chat/completions", json={"model": "cheap", "messages": user("x")},
            headers={"authorization": f"Bearer {expiring['key']}"}, timeout=30)))
        refused.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert httpx.get(f"{gov.base}/health", timeout=30).status_code == 200
        assert time.monotonic() - started < 1.0, "the service stalled behind the refusal"
        assert not answers, "refused before the file held the time of the refusal"
        assert holder.stdin is not None
        holder.stdin.close()  # the lock let go
        refused.join(30)
    assert answers and answers[0].status_code == 401
    assert answers[0].json()["error"]["code"] == "key_expired"
    with sqlite3.connect(keys_db) as db:
        assert float(db.execute("SELECT latest FROM clock").fetchone()[0]) >= expired_at
    db.close()


def test_a_model_the_key_may_not_use_is_a_permission_error(gov: ThreadServer) -> None:
    narrow = new_key(gov, models=["cheap"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        client(gov, narrow["key"]).chat.completions.create(model="good", messages=user("x"))
    assert info.value.status_code == 403 and 'may not use "good"' in info.value.message
    entry = log_entry(gov, info.value.response.headers["x-switchpoint-request-id"], headers=ADMIN)
    assert entry["status"] == "refused" and entry["http_status"] == 403
    assert re.fullmatch(r"[0-9a-f]{64}", entry["session_id"])  # a hash, as for answers
    assert entry["error_kind"] == "permission_denied" and entry["key_id"] == narrow["id"]
    assert entry["requested_model"] == "good" and entry["model"] is None
    assert entry["models_tried"] == [] and entry["tenant"] == "acme"
    with pytest.raises(openai.PermissionDeniedError, match='may not use "auto"') as info:
        client(gov, narrow["key"]).chat.completions.create(
            model="auto", messages=user("x"), extra_headers={"x-session-id": "secret-conv-7"})
    entry = log_entry(gov, info.value.response.headers["x-switchpoint-request-id"], headers=ADMIN)
    assert re.fullmatch(r"[0-9a-f]{64}", entry["session_id"])  # the client's id is not kept
    listed = client(gov, narrow["key"]).models.list()
    assert [m.id for m in listed.data] == ["cheap"]
    full = new_key(gov)
    assert {m.id for m in client(gov, full["key"]).models.list().data} == {
        "auto", "cheap", "good", "fresh"}  # the tenant's models
    # A key of 'auto' alone routes among its tenant's models, never beyond them.
    routing = client(gov, new_key(gov, models=["auto"])["key"])
    answer = routing.chat.completions.with_raw_response.create(model="auto",
                                                                 messages=user("prove it"))
    assert answer.headers["x-switchpoint-model"] in ("cheap", "good", "fresh")
    with pytest.raises(openai.PermissionDeniedError, match='may not use "cheap"'):
        routing.chat.completions.create(model="cheap", messages=user("x"))
    assert {m.id for m in routing.models.list().data} == {"auto", "cheap", "good", "fresh"}
    chosen = httpx.post(f"{gov.base}/v1/route", json={"prompt": "prove it", "cost_weight": 0},
                        headers={"authorization": f"Bearer {routing.api_key}"}).json()
    assert set(chosen["all_scores"]) == {"cheap", "good", "fresh"}
    # Feedback may name a model the key reaches (by name or through 'auto'), no other.
    decision = answer.headers["x-switchpoint-decision-id"]
    about = httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": decision, "score": 1,
                                                         "model": "cheap"},
                       headers={"authorization": f"Bearer {routing.api_key}"})
    assert about.status_code == 200, about.text
    named = client(gov, narrow["key"]).chat.completions.with_raw_response.create(
        model="cheap", messages=user("x"))
    other = httpx.post(f"{gov.base}/v1/feedback", json={
        "decision_id": named.headers["x-switchpoint-request-id"], "score": 1, "model": "good"},
        headers={"authorization": f"Bearer {narrow['key']}"})
    assert other.status_code == 403 and 'may not use \\"good\\"' in other.text


def test_a_route_for_a_key_that_may_not_use_auto_names_available_models(
        gov: ThreadServer) -> None:
    """POST /v1/route asks for "auto" among its available_models, and has no field model:
    a key that may not use "auto" is refused naming available_models, as a chat request for
    "auto" is refused naming model."""
    narrow = new_key(gov, models=["cheap"])
    headers = {"authorization": f"Bearer {narrow['key']}"}
    for body in ({"prompt": "prove it"}, {"prompt": "prove it", "available_models": ["cheap"]}):
        r = httpx.post(f"{gov.base}/v1/route", json=body, headers=headers)
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["param"] == "available_models", error
        assert error["message"].startswith('available_models: ') and (
            'may not use "auto" (routing); it may use "cheap"' in error["message"]), error
    with pytest.raises(openai.PermissionDeniedError) as info:
        client(gov, narrow["key"]).chat.completions.create(model="auto", messages=user("x"))
    error = info.value.response.json()["error"]
    assert error["param"] == "model" and error["message"].startswith("model: "), error


def _named(message: str) -> set[str]:
    """The models an error lists (after "known models are:", "use one of", "it may use" or
    "choose among")."""
    found = re.search(r'(?:known models are:|use one of|it may use|choose among) ([\w", -]+)',
                      message)
    assert found is not None, message
    return {m.strip().strip('"') for m in found.group(1).split(",")}


def test_errors_to_a_limited_key_name_only_the_models_it_may_use(gov: ThreadServer) -> None:
    # acme may use cheap, good and fresh; the catalog also holds "other".
    routing = {"authorization": f"Bearer {new_key(gov, models=['auto'])['key']}"}
    naming = {"authorization": f"Bearer {new_key(gov, models=['cheap', 'good'])['key']}"}
    base = {"model": "auto", "messages": user("x")}
    answers: dict[str, list[str]] = {}
    for name in ("nope", "other"):  # unknown, and not the tenant's: told apart by nothing
        errors = [
            httpx.post(f"{gov.base}/v1/chat/completions", json={**base, "models": [name]},
                       headers=routing),
            httpx.post(f"{gov.base}/v1/chat/completions", json=base,
                       headers={**routing, "x-switchpoint-models": f"cheap,{name}"}),
            httpx.post(f"{gov.base}/v1/route", json={"prompt": "x",
                                                     "available_models": [name]},
                       headers=routing),
            httpx.post(f"{gov.base}/v1/router/preferences/compare",
                       json={"prompt": "x", "models": ["cheap", name]}, headers=naming),
            httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": "0" * 32, "score": 1,
                                                         "model": name}, headers=naming),
        ]
        for r in errors:
            assert r.status_code == 403, r.text
            assert f'"{name}"' in r.json()["error"]["message"], r.text
            listed = _named(r.json()["error"]["message"])
            assert listed in ({"cheap", "good", "fresh"}, {"cheap", "good"}), r.text
        answers[name] = [r.text.replace(name, "NAME") for r in errors]
    assert answers["nope"] == answers["other"]
    auto = httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": "0" * 32, "score": 1,
                                                        "model": "auto"}, headers=routing)
    assert auto.status_code == 400 and _named(auto.json()["error"]["message"]) == {
        "cheap", "good", "fresh"}, auto.text
    # Reading a model the key may not use is answered as a chat request naming it is: a 403,
    # the same whether it exists or not; the list shows only what the key may use.
    for key in (routing, naming):
        listed = httpx.get(f"{gov.base}/v1/models", headers=key).json()["data"]
        for name in ("nope", "other", *({"auto", "cheap", "good", "fresh", "other"}
                                        - {m["id"] for m in listed})):
            shown = httpx.get(f"{gov.base}/v1/models/{name}", headers=key)
            chat = httpx.post(f"{gov.base}/v1/chat/completions",
                              json={"model": name, "messages": user("x")}, headers=key)
            assert shown.status_code == chat.status_code == 403, (shown.text, chat.text)
            assert shown.json() == chat.json(), (shown.text, chat.text)
            assert shown.json()["error"]["code"] == "permission_denied"
        for model in listed:
            assert httpx.get(f"{gov.base}/v1/models/{model['id']}",
                             headers=key).json() == model
    assert {m["id"] for m in httpx.get(f"{gov.base}/v1/models", headers=naming).json()[
        "data"]} == {"cheap", "good"}
    # Without a key's limits every catalog model may be named.
    limited = new_key(gov, tenant="limited")["key"]
    everyone = httpx.post(f"{gov.base}/v1/route",
                          json={"prompt": "x", "available_models": ["nope"]},
                          headers={"authorization": f"Bearer {limited}"})
    assert everyone.status_code == 400
    assert _named(everyone.json()["error"]["message"]) == {"cheap", "good", "fresh", "other"}


def test_a_narrowed_key_cannot_teach_its_tenant_about_a_model_it_may_not_use(
        gov: ThreadServer) -> None:
    wide = new_key(gov)["key"]
    narrow = {"authorization": f"Bearer {new_key(gov, models=['cheap', 'auto'])['key']}"}
    answered = client(gov, wide).chat.completions.with_raw_response.create(
        model="good", messages=user("x"))
    refused = httpx.post(f"{gov.base}/v1/feedback", headers=narrow, json={
        "decision_id": answered.headers["x-switchpoint-request-id"], "score": 0.0})
    assert refused.status_code == 403 and "good" not in refused.json()["error"]["message"]
    assert "may not use" in refused.text, refused.text
    compare = httpx.post(f"{gov.base}/v1/router/preferences/compare",
                         headers={"authorization": f"Bearer {wide}"},
                         json={"prompt": "x", "models": ["cheap", "good"]}).json()
    refusals = []
    for answer in compare["answers"]:
        r = httpx.post(f"{gov.base}/v1/router/preferences/score", headers=narrow, json={
            "compare_id": compare["compare_id"], "scores": {answer["label"]: 1.0}})
        assert r.status_code == 403 and r.json()["error"]["param"] == "scores", r.text
        assert "good" not in r.json()["error"]["message"]
        refusals.append(r.text)
    by_name = httpx.post(f"{gov.base}/v1/router/preferences/score", headers=narrow, json={
        "compare_id": compare["compare_id"], "scores": {"cheap": 1.0}})
    assert by_name.text == refusals[0]  # (its label would name the other by elimination)


def test_a_session_pinned_by_a_wider_key_does_not_name_its_model_to_a_narrower_one(
        gov: ThreadServer) -> None:
    # Sessions are the tenant's: a key of acme allowed "good" pins a session to it; another
    # key of acme, limited to "cheap", continues the session. It is routed among its own
    # models, and its reasoning used to say "pinned model good cannot serve this request".
    wide = client(gov, new_key(gov)["key"])
    narrow = client(gov, new_key(gov, models=["cheap", "auto"])["key"])
    for stream in (False, True):
        session = {"x-session-id": f"shared-{uuid.uuid4().hex[:8]}"}
        pinned = wide.chat.completions.with_raw_response.create(
            model="good", messages=user("hello"), extra_headers=session)
        assert pinned.headers["x-switchpoint-model"] == "good"
        answered = narrow.chat.completions.with_raw_response.create(
            model="auto", messages=user("hello again"), extra_headers=session, stream=stream)
        headers = answered.headers
        body = answered.http_response.read().decode()
        assert headers["x-switchpoint-model"] == "cheap"
        assert "not among this request's candidates" in headers["x-switchpoint-reasoning"]
        assert headers["x-switchpoint-pin"] == "evicted_missing_model"  # it was "hard"
        assert "good" not in str(dict(headers)) and "good" not in body, headers
    # The operator still sees which model the session was pinned to.
    entry = log_entry(gov, headers["x-switchpoint-request-id"], headers=ADMIN)
    assert entry["pin"]["previous_model"] == "good"
    assert entry["pin_state"] == "evicted_missing_model" and entry["pin"]["pinned_model"] is None
    # A model the caller may choose, left out for what the request needs, is still named.
    other = {"x-session-id": f"tools-{uuid.uuid4().hex[:8]}"}
    wide.chat.completions.create(model="fresh", messages=user("hi"), extra_headers=other)
    named = wide.chat.completions.with_raw_response.create(
        model="auto", messages=user("call it"), extra_headers=other,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert "pinned model fresh cannot serve this request (the request uses tools" in (
        named.headers["x-switchpoint-reasoning"])
    assert named.headers["x-switchpoint-pin"] == "evicted_missing_model"


def test_an_unprofiled_model_s_borrowed_estimate_names_no_model_outside_the_key(
        gov: ThreadServer) -> None:
    # `fresh` has no profile and no profiled peer of its tier: its expected error is the
    # weakest profiled model's, `other`, which the reasoning named, even to a caller of acme,
    # whose models leave `other` out.
    prompt = "What is 2 + 2?"
    anything = new_key(gov, tenant="limited")["key"]  # (a tenant that may use every model)
    seen = client(gov, anything).chat.completions.with_raw_response.create(
        model="auto", messages=user(prompt), extra_headers={"x-switchpoint-cost-weight": "1000"})
    assert "the weakest profiled model, other (none shares its tier)" in (
        seen.headers["x-switchpoint-reasoning"])
    key = new_key(gov, models=["fresh", "cheap", "auto"])["key"]
    answered = client(gov, key).chat.completions.with_raw_response.create(
        model="auto", messages=user(prompt), extra_headers={"x-switchpoint-cost-weight": "1000"})
    reasoning = answered.headers["x-switchpoint-reasoning"]
    assert answered.headers["x-switchpoint-model"] == "fresh"
    assert "the weakest profiled model (none shares its tier)" in reasoning, reasoning
    assert not re.search(r"\bother\b", reasoning), reasoning


def test_no_answer_of_the_score_endpoint_tells_a_blind_label_s_model(
        gov: ThreadServer) -> None:
    wide = {"authorization": f"Bearer {new_key(gov)['key']}"}
    narrow = {"authorization": f"Bearer {new_key(gov, models=['cheap', 'auto'])['key']}"}
    compare = httpx.post(f"{gov.base}/v1/router/preferences/compare", headers=wide,
                         json={"prompt": "x", "models": ["cheap", "good"]}).json()
    cid = compare["compare_id"]
    labels = [a["label"] for a in compare["answers"]]

    def answers(headers: dict[str, str], scores: dict[str, object]) -> tuple[int, str]:
        r = httpx.post(f"{gov.base}/v1/router/preferences/score", headers=headers,
                       json={"compare_id": cid, "scores": scores})
        return r.status_code, r.text.replace(labels[0], "L").replace(labels[1], "L")

    # Whatever the label, the narrow key hears the same, and the wide key is told nothing by
    # a label and a model in one request, or a bad score beside a label.
    probes: list[tuple[dict[str, str], float, dict[str, object]]] = [
        (narrow, 1.0, {}), (narrow, 1.0, {"cheap": 0.0}), (narrow, 2.0, {}),
        (wide, 1.0, {"cheap": 0.0}), (wide, 1.0, {"good": 0.5, "cheap": 0.0})]
    for headers, score, rest in probes:
        told = [answers(headers, {label: score, **rest}) for label in labels]
        assert told[0] == told[1] and told[0][0] in (400, 403), told
    assert answers(wide, {labels[0]: 1.0, labels[1]: 0.0})[0] == 200


def test_key_changes_the_disk_refuses_are_503s_that_name_no_path(gov: ThreadServer) -> None:
    issued = new_key(gov)
    keys = gov.service.gateway.governor.keys
    real = keys._db()
    keys._conn = FullDisk(real)  # type: ignore[assignment]
    try:
        for path, body in (("/v1/router/keys", {"tenant": "acme"}),
                           (f"/v1/router/keys/{issued['id']}/rotate", {}),
                           (f"/v1/router/keys/{issued['id']}/revoke", {})):
            r = httpx.post(f"{gov.base}{path}", json=body, headers=ADMIN, timeout=10)
            assert r.status_code == 503, (path, r.text)
            error = r.json()["error"]
            assert error["code"] == "storage_unavailable" and FULL in error["message"]
            assert "/" not in error["message"].split("(")[1].split(")")[0]  # no path
            assert r.headers["retry-after"] == "5"
    finally:
        keys._conn = real
    assert client(gov, issued["key"]).models.list().data  # nothing changed: the key works


def test_an_exhausted_budget_is_a_rate_limit_error_with_code_budget_exceeded(
        gov: ThreadServer) -> None:
    issued = new_key(gov, budget="0.0001/day")
    c = client(gov, issued["key"])
    answered = 0
    with pytest.raises(openai.RateLimitError) as info:
        for _ in range(20):
            c.chat.completions.create(model="cheap", messages=user("spend"), max_tokens=5)
            answered += 1
    err = info.value
    assert err.code == "budget_exceeded" and err.status_code == 429
    assert answered >= 1
    assert "budget exceeded" in err.message and f"key {issued['id']}" in err.message
    retry = int(err.response.headers["retry-after"])
    assert 1 <= retry <= 86400 and err.response.headers.get("x-should-retry") != "false"
    shown = httpx.get(f"{gov.base}/v1/router/keys/{issued['id']}", headers=ADMIN).json()
    status = shown["budget_status"][0]
    assert status["spent_usd"] <= status["limit_usd"] and status["held_usd"] == 0
    # The refusal is in the request log (who asked, why), charged nothing, and has no
    # answer to give feedback on.
    request_id = err.response.headers["x-switchpoint-request-id"]
    entry = log_entry(gov, request_id, headers=ADMIN)
    assert entry["status"] == "refused" and entry["http_status"] == 429
    assert entry["error_kind"] == "budget_exceeded" and entry["key_id"] == issued["id"]
    assert "budget exceeded" in entry["error"] and entry["charged_usd"] is None
    feedback = httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": request_id,
                                                           "score": 1.0},
                          headers={"authorization": f"Bearer {issued['key']}"})
    assert feedback.status_code == 400, feedback.text
    assert "refused (budget_exceeded)" in feedback.json()["error"]["message"]
    narrow = new_key(gov, budget="0.0000001/day", models=["cheap", "auto"])
    with pytest.raises(openai.RateLimitError) as info:  # routed, then refused
        client(gov, narrow["key"]).chat.completions.create(
            model="auto", messages=user("spend"), max_tokens=5)
    headers = info.value.response.headers
    # Larger than the whole budget: waiting cannot help, so clients are told not to retry.
    assert "whole budget" in info.value.message and "retry-after" not in headers
    assert headers["x-should-retry"] == "false"
    entry = log_entry(gov, headers["x-switchpoint-request-id"], headers=ADMIN)
    assert entry["status"] == "refused" and entry["error_kind"] == "budget_exceeded"
    assert entry["decision_id"] == headers.get("x-switchpoint-decision-id")
    for named in (None, "cheap"):  # nothing answered: nothing to score, whoever is named
        body = {"decision_id": headers["x-switchpoint-decision-id"], "score": 0.0,
                **({"model": named} if named else {})}
        feedback = httpx.post(f"{gov.base}/v1/feedback", json=body,
                              headers={"authorization": f"Bearer {narrow['key']}"})
        assert feedback.status_code == 400 and "refused" in feedback.text, feedback.text
    stranger = new_key(gov, tenant="tight")  # another tenant: not even told it was refused
    feedback = httpx.post(f"{gov.base}/v1/feedback",
                          json={"decision_id": headers["x-switchpoint-decision-id"],
                                "score": 0.0},
                          headers={"authorization": f"Bearer {stranger['key']}"})
    assert feedback.status_code == 404 and "refused" not in feedback.text, feedback.text


def test_a_budget_of_0_blocks_all_spend_and_says_so(gov: ThreadServer) -> None:
    """0 is a budget (the config's, a key's made by the CLI or over HTTP): it allows no spend,
    so each request that may cost anything is refused, told not to retry (no smaller request
    fits, nor does waiting help), charged nothing and logged."""
    issued = new_key(gov, budget="0/day", models=["cheap", "auto"])
    assert issued["budgets"] == ["0/day"]
    for model in ("cheap", "auto"):
        with pytest.raises(openai.RateLimitError) as info:
            client(gov, issued["key"]).chat.completions.create(
                model=model, messages=user("spend"), max_tokens=5)
        err = info.value
        assert err.code == "budget_exceeded", err
        assert (f"key {issued['id']}'s budget of $0/day allows no spend" in err.message
                and "smaller max_tokens" not in err.message), err.message
        headers = err.response.headers
        assert headers["x-should-retry"] == "false" and "retry-after" not in headers
        entry = log_entry(gov, headers["x-switchpoint-request-id"], headers=ADMIN)
        assert entry["status"] == "refused" and entry["error_kind"] == "budget_exceeded"
        assert entry["charged_usd"] is None
    shown = httpx.get(f"{gov.base}/v1/router/keys/{issued['id']}", headers=ADMIN).json()
    status = shown["budget_status"][0]
    assert (status["limit_usd"], status["spent_usd"], status["held_usd"]) == (0, 0, 0)
    # Wholly used from the start, in every view (the key's said 0.0, the λ curve 1.0), and
    # its alert is ok while nothing is spent against it (it warned for ever).
    assert status["used_fraction"] == 1.0
    account = f"key:{issued['id']}"
    budgets = httpx.get(f"{gov.base}/v1/router/budgets", headers=ADMIN).json()["data"]
    assert next(b for b in budgets if b["account"] == account)["used_fraction"] == 1.0
    alerts, cursor = [], None
    while True:
        page = httpx.get(f"{gov.base}/v1/router/budget/alert", headers=ADMIN,
                         params={"cursor": cursor} if cursor else {}).json()
        alerts += page["budgets"]
        if (cursor := page["next_cursor"]) is None:
            break
    mine = next(b for b in alerts if b["account"] == account)
    assert (mine["utilization"], mine["used_fraction"], mine["status"]) == (1.0, 1.0, "ok")


def test_a_budget_refusal_gives_a_worst_case_of_a_millionth_of_a_dollar_as_it_is(
        gov: ThreadServer) -> None:
    """A request of a cheap model may cost about a millionth of a dollar: its refusal says what
    it may cost to the places every amount is kept to, where six places rounded it (a cheaper
    one still told a budget of 0 that it "may cost up to $0.000000", and that one costing
    nothing passes)."""
    issued = new_key(gov, budget="0/day", models=["fresh"])
    with pytest.raises(openai.RateLimitError) as info:
        client(gov, issued["key"]).chat.completions.create(model="fresh", messages=user("hi"),
                                                           max_tokens=1)
    message = info.value.message
    settings = gov.service.gateway.settings
    catalog = settings.catalog()
    assert catalog is not None
    body = {"model": "fresh", "messages": user("hi"), "max_tokens": 1}
    worst = worst_cost(catalog["fresh"], prompt_bound(body, settings.governance.image_tokens), 1)
    assert 1e-7 < worst < 1e-5, worst  # (fresh: $0.05 and $0.1 per million tokens)
    assert info.value.code == "budget_exceeded", message
    assert f"may cost up to {usd_text(worst)} (its worst case)" in message, message
    assert float(usd_text(worst)[1:]) == pytest.approx(worst, rel=1e-3)  # (six places: 0.000001)


def test_a_budget_s_amount_is_shown_as_written_never_rounded(gov: ThreadServer) -> None:
    """A budget of more than six significant digits, or a tiny one, is kept, listed and quoted
    in a refusal as it was written: it read 1.23457e+06/month and 1e-07/day."""
    large = new_key(gov, budget="1234567.89/month", models=["cheap"])
    tiny = new_key(gov, budget="0.0000001/day", models=["fresh"])
    assert (large["budgets"], tiny["budgets"]) == (["1234567.89/month"], ["0.0000001/day"])
    for issued, written in ((large, "1234567.89/month"), (tiny, "0.0000001/day")):
        shown = httpx.get(f"{gov.base}/v1/router/keys/{issued['id']}", headers=ADMIN).json()
        assert shown["budgets"] == [written], shown
        assert [b["budget"] for b in shown["budget_status"]] == [written], shown
    budgets = httpx.get(f"{gov.base}/v1/router/budgets", headers=ADMIN).json()["data"]
    assert next(b for b in budgets if b["account"] == f"key:{large['id']}")["budget"] \
        == "1234567.89/month"
    # (fresh's worst case for one token is about a millionth of a dollar: past the whole budget)
    with pytest.raises(openai.RateLimitError) as info:
        client(gov, tiny["key"]).chat.completions.create(model="fresh", messages=user("hi"),
                                                         max_tokens=1)
    assert info.value.code == "budget_exceeded", info.value.message
    assert (f"more than key {tiny['id']}'s whole budget of $0.0000001/day"
            in info.value.message), info.value.message


def test_a_full_rate_window_is_a_rate_limit_error(gov: ThreadServer) -> None:
    issued = new_key(gov, rpm=2)
    c = client(gov, issued["key"])
    for _ in range(2):
        c.chat.completions.create(model="cheap", messages=user("fast"))
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="cheap", messages=user("fast"))
    assert info.value.code == "rate_limit_exceeded"
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60
    entry = log_entry(gov, info.value.response.headers["x-switchpoint-request-id"], headers=ADMIN)
    assert (entry["status"], entry["error_kind"]) == ("refused", "rate_limit_exceeded")
    stats = httpx.get(f"{gov.base}/v1/router/stats", headers=ADMIN).json()["requests"]
    assert stats["refused"] >= 1 and stats["by_status"]["refused"] == stats["refused"]
    assert stats["ok"] + stats["refused"] + stats["errors"] == stats["total"]
    r = httpx.post(f"{gov.base}/v1/route", json={"prompt": "hi"},
                   headers={"authorization": f"Bearer {issued['key']}"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    # Feedback and scores count too: each is a row of the feedback log.
    for path, body in (("/v1/feedback", {"decision_id": "0" * 32, "score": 0.5}),
                       ("/v1/router/preferences/score", {"compare_id": "0" * 32,
                                                         "scores": {"A": 1}})):
        r = httpx.post(f"{gov.base}{path}", json=body,
                       headers={"authorization": f"Bearer {issued['key']}"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"


def test_a_full_tokens_per_minute_window_says_when_it_has_room(gov: ThreadServer) -> None:
    # The limit holds one request's worst case (its prompt's bound and its output cap): the
    # first answer's tokens stay in the minute's window, so the next of its size waits.
    messages = user("tokens")
    held = prompt_bound({"messages": messages},
                        gov.service.gateway.settings.governance.image_tokens) + 100
    c = client(gov, new_key(gov, tpm=held)["key"])
    c.chat.completions.create(model="cheap", max_tokens=100, messages=messages)
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="cheap", max_tokens=100, messages=user("tokens"))
    assert info.value.code == "rate_limit_exceeded"
    assert "tokens per minute" in info.value.message
    headers = info.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60 and "x-should-retry" not in headers


def test_feedback_naming_an_unknown_decision_counts_against_the_keys_minute(
        gov: ThreadServer) -> None:
    # Each unknown id costs the service a lookup: a flood of them is bounded by the key's RPM
    # as any other requests are.
    issued = new_key(gov, rpm=2, models=["cheap", "auto"])
    auth = {"authorization": f"Bearer {issued['key']}"}
    routed = httpx.post(f"{gov.base}/v1/route", json={"prompt": "Hello"}, headers=auth)
    assert routed.status_code == 200, routed.text  # (the minute's first request)
    unknown = httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": "0" * 32,
                                                          "score": 0.5}, headers=auth)
    assert unknown.status_code == 404, unknown.text  # (the second)
    r = httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": "0" * 32, "score": 0.5},
                   headers=auth)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded", r.text


def test_a_request_refused_before_planning_reports_the_pin_it_would_have_kept(
        gov: ThreadServer) -> None:
    # A request refused before it is planned (a model its key may not use) used to say pin
    # "none", which is not a pin state; it now says what the session's pin would have done,
    # and the pin is left as it was.
    wide = client(gov, new_key(gov)["key"])
    narrow = client(gov, new_key(gov, models=["cheap", "auto"])["key"])
    session = {"x-session-id": f"refused-{uuid.uuid4().hex[:8]}"}
    wide.chat.completions.create(model="good", messages=user("pin me"), extra_headers=session)
    # Naming a model it may not use, the pin (to that very model) could not be followed;
    # routed over a candidate list it may not use, the pin is what the refusal leaves alone.
    forbidden_list = {**session, "x-switchpoint-models": "good,cheap"}
    for model, extra, state in (("good", session, "evicted_missing_model"),
                                ("auto", forbidden_list, "hard"), ("good", None, "fresh")):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            narrow.chat.completions.create(model=model, messages=user("pin me"),
                                           extra_headers=extra)
        headers = refused.value.response.headers
        assert headers["x-switchpoint-pin"] == state
        entry = log_entry(gov, headers["x-switchpoint-request-id"], headers=ADMIN)
        assert (entry["status"], entry["pin_state"]) == ("refused", state)
    # The session is still pinned where it was.
    answered = wide.chat.completions.with_raw_response.create(
        model="auto", messages=user("pin me"), extra_headers=session)
    assert answered.headers["x-switchpoint-pin"] == "hard"
    assert answered.headers["x-switchpoint-model"] == "good"


def test_the_admin_api_makes_lists_rotates_and_revokes_keys(gov: ThreadServer) -> None:
    assert httpx.post(f"{gov.base}/v1/router/keys", json={"tenant": "acme"}
                      ).status_code == 401  # admin token needed
    issued = new_key(gov, name="rotating", budget=["1/day", "10/month"], tpm=50000)
    listed = _all_keys(gov, {"tenant": "acme"})
    mine = next(k for k in listed if k["id"] == issued["id"])
    assert mine["budgets"] == ["1/day", "10/month"] and "key" not in mine
    assert all("hash" not in k and "key" not in k for k in listed)
    rotated = httpx.post(f"{gov.base}/v1/router/keys/{issued['id']}/rotate",
                         json={"grace_seconds": 30}, headers=ADMIN).json()
    assert rotated["id"] == issued["id"] and rotated["key"] != issued["key"]
    client(gov, rotated["key"]).chat.completions.create(model="cheap", messages=user("new"))
    client(gov, issued["key"]).chat.completions.create(model="cheap", messages=user("old"))
    r = httpx.delete(f"{gov.base}/v1/router/keys/{issued['id']}", headers=ADMIN)
    assert r.json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError):
        client(gov, rotated["key"]).chat.completions.create(model="cheap", messages=user("x"))


def test_a_key_given_today_s_date_works_through_today(gov: ThreadServer) -> None:
    """A date is the last day a key works (as the CLI reads it): one given today's date is
    made, and answers, until today ends (UTC); a date-time stays exact."""
    now = datetime.now(UTC)
    day = (now + timedelta(minutes=2)).date()  # (today, unless today ends within a minute)
    issued = new_key(gov, expires=day.isoformat())
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    assert issued["expires_at"] == end.timestamp() and issued["status"] == "active"
    client(gov, issued["key"]).chat.completions.create(model="cheap", messages=user("today"))
    exact = new_key(gov, expires=f"{day + timedelta(days=1)}T00:00:00Z")
    assert exact["expires_at"] == end.timestamp()


def test_a_second_rotation_leaves_the_first_old_secret_its_own_grace(gov: ThreadServer) -> None:
    # The original secret stopped working at the second rotation, an hour early.
    first = new_key(gov)
    url = f"{gov.base}/v1/router/keys/{first['id']}/rotate"
    second = httpx.post(url, json={"grace_seconds": 3600}, headers=ADMIN).json()
    third = httpx.post(url, json={"grace_seconds": 3600}, headers=ADMIN).json()
    for key in (first["key"], second["key"], third["key"]):
        client(gov, key).chat.completions.create(model="cheap", messages=user("still works"))
    graces = [old["valid_until"] for old in third["previous_secrets"]]
    assert len(graces) == 2 and graces[0] > graces[1] > time.time() + 3500, third
    shown = httpx.get(f"{gov.base}/v1/router/keys/{first['id']}", headers=ADMIN).json()
    assert shown["previous_secrets"] == third["previous_secrets"]


def _all_keys(gov: ThreadServer, params: dict[str, Any] | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    """Every key listed, page after page (``limit`` per page, else the default)."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = httpx.get(f"{gov.base}/v1/router/keys", headers=ADMIN, params={
            **(params or {}), **({"limit": limit} if limit else {}),
            **({"cursor": cursor} if cursor else {})}).json()
        out += page["data"]
        assert len(page["data"]) <= (limit or 50)
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def test_the_key_list_comes_a_bounded_page_at_a_time(gov: ThreadServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    made = [new_key(gov, tenant="tight")["id"] for _ in range(5)]
    first = httpx.get(f"{gov.base}/v1/router/keys", headers=ADMIN,
                      params={"tenant": "tight", "limit": 2}).json()
    assert len(first["data"]) == 2 and first["next_cursor"].startswith("seq-")
    # Made while paging, with the clock set back a day: shifts no page, and is not skipped.
    keys = gov.service.gateway.governor.keys
    monkeypatch.setattr(keys, "clock", lambda: time.time() - 86_400)
    later = new_key(gov, tenant="tight")["id"]
    monkeypatch.undo()
    paged = [k["id"] for k in first["data"]] + [k["id"] for k in _all_keys(
        gov, {"tenant": "tight", "cursor": first["next_cursor"]}, limit=2)]
    assert paged[-6:] == [*made, later] and len(set(paged)) == len(paged)
    assert all(k["tenant"] == "tight" for k in _all_keys(gov, {"tenant": "tight"}, limit=3))
    # The default page holds 50 keys, and a page at most 500.
    while len(everyone := _all_keys(gov, limit=500)) <= 50:
        new_key(gov)
    default = httpx.get(f"{gov.base}/v1/router/keys", headers=ADMIN).json()
    assert [k["id"] for k in default["data"]] == [k["id"] for k in everyone[:50]]
    following = httpx.get(f"{gov.base}/v1/router/keys", headers=ADMIN,
                          params={"cursor": default["next_cursor"], "limit": 1}).json()
    assert [k["id"] for k in following["data"]] == [everyone[50]["id"]]
    for params, param, needle in (({"limit": 0}, "limit", ">= 1"),
                                  ({"limit": 501}, "limit", "<= 500"),
                                  ({"cursor": "nope"}, "cursor", "is not a cursor of the key "
                                                                 "list"),
                                  ({"cursor": made[0]}, "cursor",
                                   "the cursor of an older switchpoint's key list"),
                                  ({"tenant": ""}, "tenant", "must not be empty")):
        r = httpx.get(f"{gov.base}/v1/router/keys", headers=ADMIN, params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert needle in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(("body", "param", "needle"), [
    ({"tenant": "nobody"}, "tenant", 'unknown tenant "nobody"'),
    ({"tenant": "acme", "budget": "50/fortnight"}, "budget", '"fortnight" is not a budget'),
    ({"tenant": "acme", "budget": "-5/day"}, "budget", "the amount is negative"),
    ({"tenant": "acme", "budget": "1e-300/day"}, "budget", "less than the least budget, 1e-10"),
    ({"tenant": "acme", "budget": ["1/day"] * 5000}, "budget", "5000 budgets given"),
    ({"tenant": "acme", "models": ["gpt-9"]}, "models", 'not in the catalog: "gpt-9"'),
    # A blank entry is named, not dropped: the key would be made narrower than written.
    ({"tenant": "acme", "models": ["good", ""]}, "models",
     'models[1]: is "", blank; list model names (and "auto"), or leave models out'),
    ({"tenant": "acme", "models": [" ", "auto"]}, "models", 'models[0]: is " ", blank'),
    # A name is held to the rule of a model's name as it is written: not trimmed into another.
    ({"tenant": "acme", "models": ["auto", " good "]}, "models",
     'models[1]: " good " holds a space (character 1): a model is named in the '
     "x-switchpoint-model header of each answer, so its name is visible ASCII (letters, "
     "digits, punctuation, spaces between them); list the catalog's names as they are "
     'written (and "auto")'),
    ({"tenant": "acme", "models": ["good\t"]}, "models",
     'models[0]: "good\\t" holds U+0009 (character 5)'),
    ({"tenant": "acme", "models": ["good", "x" * 300]}, "models",
     "models[1]: \"" + "x" * 77 + "…\" must have at most 256 characters, got 300"),
    ({"tenant": "tight", "models": ["good", "auto"]}, "models",
     'none of "good", "auto" is among the models tenant "tight" may use ("cheap")'),
    ({"tenant": "acme", "rpm": 0}, "rpm", ">= 1"),
    ({"tenant": "acme", "rpm": 10**30}, "rpm", "must be <= 10,000,000"),
    ({"tenant": "acme", "tpm": 2**63}, "tpm", "must be <= 10,000,000,000"),
    ({"tenant": "acme", "expires": 10**30}, "expires", "too far off"),
    ({"tenant": "acme", "expires": "99999999w"}, "expires", "too far off"),
    ({"tenant": "acme", "expires": "yesterday"}, "expires", "is not a date"),
    ({"tenant": "acme", "expires": "0.0001s"}, "expires", "a key must live at least 60 s"),
    # A number is epoch seconds: a date written without its dashes is told the instant it
    # names, not only that it is past.
    ({"tenant": "acme", "expires": "20270131"}, "expires",
     '"20270131" is not in the future (a number is read as epoch seconds: this one is '
     "1970-08-23T14:35:31Z); give epoch seconds past now, a later date (YYYY-MM-DD, UTC)"),
    ({"tenant": "acme", "expires": 0}, "expires",
     "0 is not in the future (a number is read as epoch seconds: this one is "
     "1970-01-01T00:00:00Z)"),
    # A blank name shows as none in the key list: refused, not kept.
    ({"tenant": "acme", "name": ""}, "name", 'name: is "", blank; a name tells a key apart'),
    ({"tenant": "acme", "name": "   "}, "name",
     'is "   ", blank; a name tells a key apart in `switchpoint keys list` and `keys show`, '
     "the admin API's answers of a key and a reload's keys_affected; give one with a visible "
     "character, or leave name out for a key without one"),
    ({"tenant": "acme", "name": "ok\u0000"}, "name", "holds U+0000 (character 3)"),
    ({"tenant": "acme", "name": "a\u202eb"}, "name", "holds U+202E"),
    ({"tenant": "acme", "name": "a\u2028b"}, "name", "holds U+2028"),
    ({"tenant": "acme", "name": "a\u3164b"}, "name", "holds U+3164"),  # a Hangul filler
    ({"tenant": "acme", "name": "a\ufe0fb"}, "name", "holds U+FE0F"),  # a variation selector
    ({"tenant": "acme", "name": "a\ue000b"}, "name", "holds U+E000"),  # private use
    ({"tenant": "acme", "name": "ci sp-0123456789_" + "S" * 43}, "name",
     'holds text shaped like a credential (a key, token or password: "ci '
     'sp-0123456789_[REDACTED]")'),  # a secret is never kept as a name, nor echoed
    ({"tenant": "acme", "name": "ops sk-ant-api03-" + "S" * 40}, "name",
     "shaped like a credential"),
    ({"tenant": "acme", "colour": "red"}, "colour",
     'not a field of this request; the fields are "tenant", "name", "budget", "rpm", "tpm", '
     '"models"'),
    # A field of several types names itself and what it takes, not one of its types
    # (the message said "expires.str: must be a string").
    ({"tenant": "acme", "expires": [1]}, "expires", "expires: must be a string or a number"),
    ({"tenant": "acme", "expires": True}, "expires",
     "expires: must be a string or a number, got true"),
    ({"tenant": "acme", "budget": 5}, "budget", "budget: must be a string or a list, got 5"),
    ({"tenant": "acme", "budget": ["1/day", 5]}, "budget", "budget[1]: must be a string, got 5"),
    ({"tenant": "acme", "cost_weight": "low"}, "cost_weight",
     "cost_weight: must be a number, got \"low\""),
])
def test_bad_key_requests_are_400s_and_create_nothing(gov: ThreadServer, body: dict[str, Any],
                                                      param: str, needle: str) -> None:
    before = len(_all_keys(gov))
    r = httpx.post(f"{gov.base}/v1/router/keys", json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and needle in r.json()["error"]["message"]
    assert "S" * 40 not in r.text
    assert len(_all_keys(gov)) == before
    r = httpx.post(f"{gov.base}/v1/router/keys/not-an-id/revoke", headers=ADMIN)
    assert r.status_code == 400 and "is not a key id" in r.json()["error"]["message"]


def test_a_key_s_cost_weight_a_float_holds_only_as_0_is_refused(gov: ThreadServer) -> None:
    # It was created with cost_weight 0.0 (quality first), which the caller did not write.
    before = len(_all_keys(gov))
    r = httpx.post(f"{gov.base}/v1/router/keys", headers={**ADMIN, "content-type":
                   "application/json"}, content=b'{"tenant": "acme", "cost_weight": 1e-400}')
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {
        "code": "invalid_request", "param": "cost_weight",
        "message": "cost_weight: 1e-400 is too small a number to be told from 0; write 0, or a "
                   "number of at least 1e-300"}
    assert len(_all_keys(gov)) == before


def test_usage_an_upstream_misreports_charges_an_estimate_or_the_worst_case_held(
        gov: ThreadServer) -> None:
    issued = new_key(gov, budget="3/day", tpm=100_000)
    c = client(gov, issued["key"])
    charged = []
    for prompt, completion, stream in ((-10**9, -10**9, False), (10**30, 5, False),
                                       (16_000, 16_000, False), (-10**9, -10**9, True),
                                       (1, 5, False)):
        # numbers of one width: every prompt the same size, so the same worst case held
        text = f"misreport [[fake:usage:prompt={prompt:032d},completion={completion:032d}]]"
        if stream:
            chunks = list(c.chat.completions.create(
                model="cheap", messages=user(text), max_tokens=50, stream=True,
                stream_options={"include_usage": True}))
            request_id = chunks[0].id if not chunks[0].choices else None
            entry = log_entry(gov, _last_request(gov, issued["id"]), headers=ADMIN)
            assert request_id is None or entry["id"]
        else:
            raw = c.chat.completions.with_raw_response.create(
                model="cheap", messages=user(text), max_tokens=50)
            entry = log_entry(gov, raw.headers["x-switchpoint-request-id"], headers=ADMIN)
            assert float(raw.headers["x-switchpoint-charged"]) == entry["charged_usd"]
        # what the log (and the reports) say it cost is never past what was charged
        assert entry["cost_usd"] is None or entry["cost_usd"] <= entry["charged_usd"]
        charged.append(entry["charged_usd"])
        # (an answer without usage to believe, plain or streamed: charged an estimate of it)
        said = "stream ended whole" if stream else "answer came"
        assert any(n.startswith(f"Estimated charge: cheap's {said}")
                   for n in entry["reasoning"]) == (prompt not in (16_000, 1))
    # Never negative, never past the hold: counts past belief are charged the estimate of the
    # answer, the same plain or streamed; believable counts priced past the hold, the worst
    # case held; the last answer's believable usage is below it.
    negative, huge, worst, streamed, believed = charged
    assert 0 < negative < worst and huge == streamed == pytest.approx(negative), charged
    assert 0 < believed < worst, charged
    # The store took every entry, and takes the next one (no transaction left open); 10**30
    # reported tokens did not fill the key's 100,000 tokens a minute either.
    c.chat.completions.create(model="cheap", messages=user("after"), max_tokens=50)
    budgets = httpx.get(f"{gov.base}/v1/router/budgets", headers=ADMIN).json()["data"]
    spent = next(b for b in budgets if b["account"] == f"key:{issued['id']}")["spent_usd"]
    assert sum(charged) < spent < sum(charged) + worst


def test_usage_written_as_a_huge_number_is_logged_unknown_and_charged_an_estimate(
        gov: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    # An upstream reporting 1e30 tokens (sent as the integer 10**30) is not believed: its
    # answer is logged with its usage and cost unknown and charged an estimate of what it
    # used, as an answer that reports no usage at all is (prompts of one length: the same
    # estimate), below the worst case held.
    issued = new_key(gov, budget="3/day")
    c = client(gov, issued["key"])
    charged = {}
    for name, behaviour in (("huge", "usage:prompt=1e30,a=1"), ("none", "usage:nousage=1,abc=1"),
                            ("both", "usage:prompt=1e30,completion=1e30")):
        raw = c.chat.completions.with_raw_response.create(
            model="cheap", messages=user(f"hostile usage [[fake:{behaviour}]]"), max_tokens=50)
        entry = log_entry(gov, raw.headers["x-switchpoint-request-id"], headers=ADMIN)
        answer = raw.parse()
        # (the client reads no count the gateway does not believe: none, as it was charged)
        assert answer.choices[0].message.content and answer.usage is None, answer.usage
        assert entry["status"] == "ok" and entry["cost_usd"] is None, entry
        assert entry["prompt_tokens"] is None and entry["completion_tokens"] is None, entry
        assert float(raw.headers["x-switchpoint-charged"]) == entry["charged_usd"] > 0
        assert [n.split(" with ")[0] for n in entry["reasoning"]
                if n.startswith("Estimated charge: ")] == [
            "Estimated charge: cheap's answer came"], entry["reasoning"]
        charged[name] = entry["charged_usd"]
    assert charged["huge"] == pytest.approx(charged["none"])
    # (the fake sends 1e30 as the whole number it is, as a hostile upstream may)
    direct = httpx.post(f"{gw_fake.openai_base_url}/chat/completions", timeout=10, json={
        "model": "cheap", "messages": user("[[fake:usage:prompt=1e30,completion=-2.5]]")})
    assert b'"prompt_tokens": 1000000000000000000000000000000,' in direct.content
    assert direct.json()["usage"]["completion_tokens"] == -2.5
    # A stream's usage chunk of that size is not believed either: as a plain answer that
    # reports none, it is charged the estimate of the same answer.
    text = "hostile usage [[fake:usage:prompt=1e30,a=1]]"
    chunks = list(c.chat.completions.create(
        model="cheap", messages=user(text), max_tokens=50, stream=True,
        stream_options={"include_usage": True}))
    assert any(ch.choices and ch.choices[0].delta.content for ch in chunks)
    assert [ch.usage for ch in chunks if ch.usage is not None] == []
    entry = log_entry(gov, _last_request(gov, issued["id"]), headers=ADMIN)
    assert entry["stream"] and entry["cost_usd"] is None and entry["prompt_tokens"] is None
    assert entry["charged_usd"] == pytest.approx(charged["none"])
    assert [n.split(" with ")[0] for n in entry["reasoning"]
            if n.startswith("Estimated charge: ")] == [
        "Estimated charge: cheap's stream ended whole"], entry["reasoning"]
    # Believed counts beside a total written as no count a client reads: the total is theirs.
    text = "hostile total [[fake:usage:prompt=10,completion=5,total=1e30]]"
    answer = c.chat.completions.create(model="cheap", messages=user(text), max_tokens=50)
    usage = [ch.usage for ch in c.chat.completions.create(
        model="cheap", messages=user(text), max_tokens=50, stream=True,
        stream_options={"include_usage": True}) if ch.usage is not None]
    for said in [answer.usage, *usage]:
        assert said is not None and (said.prompt_tokens, said.completion_tokens,
                                     said.total_tokens) == (10, 5, 15), said
    assert len(usage) == 1


def test_a_request_naming_both_output_caps_is_held_and_charged_at_the_larger(
        gov: ThreadServer) -> None:
    # An upstream that honours max_tokens alone writes 5,000 tokens: with the hold taken at
    # max_completion_tokens (1), the charge was cut to that one token's worth, so a key
    # spent at will past its budget.
    issued = new_key(gov, budget="3/day")
    c = client(gov, issued["key"])
    text = "both caps [[fake:usage:prompt=10,completion=5000]]"
    for caps in ({"max_completion_tokens": 1, "max_tokens": 6000},
                 {"max_tokens": 1, "max_completion_tokens": 6000}):
        raw = c.chat.completions.with_raw_response.create(
            model="cheap", messages=user(text), **caps)  # type: ignore[call-overload]
        entry = log_entry(gov, raw.headers["x-switchpoint-request-id"], headers=ADMIN)
        # cheap: $1.5 per million output tokens, so 5,000 of them cost $0.0075 at least
        assert entry["charged_usd"] == pytest.approx(entry["cost_usd"])
        assert entry["charged_usd"] > 5000 * 1.5e-6, entry
    # The answer fits the larger cap's hold; one past it is still cut to the hold.
    raw = c.chat.completions.with_raw_response.create(
        model="cheap", messages=user(text), max_tokens=100, max_completion_tokens=50)
    entry = log_entry(gov, raw.headers["x-switchpoint-request-id"], headers=ADMIN)
    assert entry["charged_usd"] < 200 * 1.5e-6 + 0.001, entry


def test_a_streams_usage_chunk_says_the_cost_the_log_and_the_budget_say(
        gov: ThreadServer) -> None:
    # The usage chunk priced an upstream's usage as reported ($0.032 here: as much as cheap's
    # context window holds, each side), while the log, the reports and the budget said what
    # was charged: the worst case held.
    issued = new_key(gov, budget="3/day")
    text = f"misreport [[fake:usage:prompt={16_000:032d},completion={16_000:032d}]]"
    chunks = list(client(gov, issued["key"]).chat.completions.create(
        model="cheap", messages=user(text), max_tokens=50, stream=True,
        stream_options={"include_usage": True}))
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].model_extra is not None
    entry = log_entry(gov, _last_request(gov, issued["id"]), headers=ADMIN)
    assert entry["cost_usd"] == pytest.approx(entry["charged_usd"]) and entry["cost_usd"] < 0.01
    assert usage[0].model_extra["cost"] == pytest.approx(entry["cost_usd"])


def test_a_stream_in_flight_as_its_key_is_revoked_finishes_logged_and_charged(
        gov: ThreadServer) -> None:
    """A key is checked as a request comes in: revoked while its stream is under way, the
    stream still ends whole, and is logged and charged to the key; the key's next request is
    a 401 key_revoked."""
    issued = new_key(gov, budget="3/day")
    c = client(gov, issued["key"])
    stream = c.chat.completions.create(
        model="cheap", messages=user("slowly [[fake:trickle:every=0.002,chunks=4]]"),
        stream=True, stream_options={"include_usage": True})
    chunks = iter(stream)
    first = next(chunks)
    r = httpx.post(f"{gov.base}/v1/router/keys/{issued['id']}/revoke", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    rest = list(chunks)
    text = "".join(part.choices[0].delta.content or "" for part in [first, *rest]
                   if part.choices)
    assert text == "slow answer" * 5
    assert [part.choices[0].finish_reason for part in rest if part.choices][-1] == "stop"
    entry = log_entry(gov, _last_request(gov, issued["id"]), headers=ADMIN)
    assert (entry["status"], entry["stream"], entry["key_id"]) == ("ok", True, issued["id"])
    assert entry["charged_usd"] > 0
    # It was under way as the key was revoked, and ended after.
    assert entry["ts"] < r.json()["revoked_at"] < entry["ts"] + entry["latency_ms"] / 1e3
    shown = httpx.get(f"{gov.base}/v1/router/keys/{issued['id']}", headers=ADMIN).json()
    (budget,) = shown["budget_status"]  # charged to the key's budget, nothing left held
    assert (budget["spent_usd"], budget["held_usd"]) == (pytest.approx(entry["charged_usd"]), 0)
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model="cheap", messages=user("again"))
    assert info.value.code == "key_revoked"


def _last_request(server: ThreadServer, key_id: str) -> str:
    deadline = time.monotonic() + 5
    while True:
        page = httpx.get(f"{server.base}/v1/router/requests", params={"limit": 5},
                         headers=ADMIN).json()
        mine = [e for e in page["data"] if e["key_id"] == key_id and e["charged_usd"]]
        if mine:
            return str(mine[0]["id"])
        assert time.monotonic() < deadline, "no request logged"
        time.sleep(0.02)


def test_a_whole_key_where_its_id_goes_is_never_repeated(gov: ThreadServer) -> None:
    issued = new_key(gov)
    key, secret = issued["key"], issued["key"].split("_", 1)[1]
    base = f"{gov.base}/v1/router/keys/{key}"
    for method, url in [("GET", base), ("DELETE", base), ("POST", f"{base}/revoke"),
                        ("POST", f"{base}/rotate")]:
        r = httpx.request(method, url, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["param"] == "id", r.text
        assert secret not in r.text and "a whole client key" in r.text
        assert issued["id"] in r.text  # the id it meant
    r = httpx.get(f"{gov.base}/v1/router/key/{key}", headers=ADMIN)  # no such route
    assert r.status_code == 404 and secret not in r.text
    r = httpx.get(f"{gov.base}/v1/router/keys/sk-proj-{secret}", headers=ADMIN)
    assert r.status_code == 400 and secret not in r.text
    assert httpx.get(base.replace(key, issued["id"]), headers=ADMIN).json()["status"] == "active"


def test_an_unknown_key_id_is_a_404_and_a_malformed_one_a_400(gov: ThreadServer) -> None:
    # Every other unknown name (an experiment, a comparison, a decision, a tenant) is a 404;
    # an unknown key id was a 400 invalid_request, as if the request were malformed.
    base = f"{gov.base}/v1/router/keys"
    for method, url in [("GET", f"{base}/0123456789"), ("DELETE", f"{base}/0123456789"),
                        ("POST", f"{base}/0123456789/revoke"),
                        ("POST", f"{base}/0123456789/rotate")]:
        r = httpx.request(method, url, headers=ADMIN)
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert error["code"] == "not_found" and error["param"] == "id", error
        assert 'no key has the id "0123456789"' in error["message"], error
        malformed = httpx.request(method, url.replace("0123456789", "0123"), headers=ADMIN)
        assert malformed.status_code == 400, malformed.text


@pytest.mark.parametrize("raw", [b"", b" \r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n",
                                 b"\xff\xfe"])
def test_a_rotation_whose_body_says_nothing_takes_the_defaults(gov: ThreadServer,
                                                               raw: bytes) -> None:
    # A byte order mark alone (which some clients write first) says nothing, as an empty
    # body does: it was refused as "is empty" where an empty one rotated.
    issued = new_key(gov)
    r = httpx.post(f"{gov.base}/v1/router/keys/{issued['id']}/rotate", content=raw,
                   headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["key"] != issued["key"]
    assert rotated["previous_secrets"] == [{"rotated_at": rotated["rotated_at"],
                                            "valid_until": rotated["rotated_at"]}]  # grace 0
    client(gov, rotated["key"]).chat.completions.create(model="cheap", messages=user("new"))
    with pytest.raises(openai.AuthenticationError):
        client(gov, issued["key"]).chat.completions.create(model="cheap", messages=user("x"))


def test_a_body_after_a_byte_order_mark_is_read_and_one_saying_nothing_is_no_body(
        gov: ThreadServer) -> None:
    issued = new_key(gov)
    url = f"{gov.base}/v1/router/keys/{issued['id']}"
    r = httpx.post(f"{url}/rotate", content=b'\xef\xbb\xbf{"grace_seconds": 60}',
                   headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    old = r.json()["previous_secrets"][0]
    assert old["valid_until"] == pytest.approx(old["rotated_at"] + 60)
    # A route that takes no body reads a mark and whitespace as none, as an empty body.
    r = httpx.post(f"{url}/revoke", content=b"\xef\xbb\xbf \n", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "revoked", r.text


def test_a_key_past_the_live_keys_bound_is_a_409_until_one_is_revoked_or_expires(
        gw_fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    # Keys were made without bound: every one a row of keys.db and a key to look up.
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + GOVERNANCE + "governance: {max_keys: 2}\n",
                      encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        first, second = new_key(server), new_key(server, tenant="tight")  # (all tenants')
        url = f"{server.base}/v1/router/keys"
        r = httpx.post(url, json={"tenant": "acme"}, headers=ADMIN, timeout=10)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == {
            "code": "conflict", "param": "governance.max_keys",
            "message": "governance.max_keys: 2 keys are live (neither revoked nor expired), "
                       "the most the config's governance.max_keys allows (2); revoke keys no "
                       "longer used (switchpoint keys revoke ID, or DELETE /v1/router/keys/ID), "
                       "or raise governance.max_keys in the config (at most 1,000,000)"}
        assert len(httpx.get(url, headers=ADMIN).json()["data"]) == 2  # nothing made
        # The refusal is one the published document lists for the route, as it is answered.
        document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
        assert "governance.max_keys" in document["paths"]["/v1/router/keys"]["post"][
            "responses"]["409"]["description"]
        schemathesis.openapi.from_dict(document)["/v1/router/keys"]["POST"].validate_response(r)
        # A revoked key makes room (its record stays, up to max_keys ended ones).
        assert httpx.delete(f"{url}/{first['id']}", headers=ADMIN).status_code == 200
        third = new_key(server, expires="1m")
        assert httpx.post(url, json={"tenant": "acme"}, headers=ADMIN).status_code == 409
        # So does an expired one (its expiry moved into the past, as the CLI's file edit).
        keys_db = Path(settings.data_dir) / "keys.db"
        with sqlite3.connect(keys_db) as db:
            db.execute("UPDATE keys SET expires_at = ? WHERE id = ?",
                       (time.time() - 1, third["id"]))
        db.close()
        fourth = new_key(server)
        statuses = {k["id"]: k["status"] for k in httpx.get(url, headers=ADMIN).json()["data"]}
        assert statuses == {first["id"]: "revoked", second["id"]: "active",
                            third["id"]: "expired", fourth["id"]: "active"}
        client(server, fourth["key"]).chat.completions.create(model="cheap",
                                                              messages=user("made"))
        # governance.max_keys lowered: until the service reloads, keys list and the cost
        # report say which records are past it and what deletes them (they were kept unsaid
        # until the next key made or a prune); the reload deletes them at once.
        config.write_text(config_text(gw_fake) + GOVERNANCE + "governance: {max_keys: 1}\n",
                          encoding="utf-8")
        capsys.readouterr()
        assert main(["keys", "list", "--config", str(config)]) == 0
        assert main(["report", "cost", "--config", str(config)]) == 0
        out, err = capsys.readouterr()
        note = ("note: keys.db keeps the records of 1 ended (revoked or expired) keys past the "
                "newest 1 that governance.max_keys keeps")
        assert err.count(note) == 2 and "a reload of the service" in err, err
        assert first["id"] in out and third["id"] in out
        with caplog.at_level("WARNING", logger="switchpoint.gateway"):
            assert httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN,
                              timeout=30).status_code == 200
        # The two live keys stay, and the log says no key can be made until 2 are revoked.
        assert ("2 keys are live (neither revoked nor expired), more than governance.max_keys "
                "(1) allows: they keep working, but no key can be made until 2 of them are "
                "revoked") in caplog.text, caplog.text
        kept = {k["id"]: k["status"] for k in httpx.get(url, headers=ADMIN).json()["data"]}
        gone = {first["id"], third["id"]} - set(kept)  # (the one that ended first)
        assert len(kept) == 3 and len(gone) == 1, kept
        assert kept[second["id"]] == kept[fourth["id"]] == "active"
        assert httpx.get(f"{url}/{gone.pop()}", headers=ADMIN).status_code == 404
        assert main(["keys", "list", "--config", str(config)]) == 0
        assert "note:" not in capsys.readouterr().err
        # A key made now is refused saying how many to revoke (it said 2 were the most 1
        # allows).
        r = httpx.post(url, json={"tenant": "acme"}, headers=ADMIN, timeout=10)
        assert r.status_code == 409 and r.json()["error"]["message"].startswith(
            "governance.max_keys: 2 keys are live (neither revoked nor expired), more than "
            "the config's governance.max_keys allows (1: it was lowered since they were made); "
            "revoke at least 2 keys no longer used (switchpoint keys revoke ID"), r.text


def test_an_unknown_rotate_field_is_a_400_listing_the_fields(gov: ThreadServer) -> None:
    issued = new_key(gov)
    r = httpx.post(f"{gov.base}/v1/router/keys/{issued['id']}/rotate", json={"grace": 30},
                   headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "grace"
    assert r.json()["error"]["message"].endswith('the fields are "grace_seconds"')


def test_reports_and_budgets_over_http(gov: ThreadServer) -> None:
    # The savings are priced against the model of least expected error over the decisions
    # that weighed the most models: a routed request (of another key, so the key's own figures
    # below are the three of it) weighs all its tenant's, whatever ran before this test.
    client(gov, new_key(gov)["key"]).chat.completions.create(
        model="auto", messages=user("Prove that the square root of 2 is irrational."))
    issued = new_key(gov, budget="3/day")
    c = client(gov, issued["key"])
    for _ in range(3):
        c.chat.completions.create(model="cheap", messages=user("report me"))
    cost = httpx.get(f"{gov.base}/v1/router/report/cost", params={"period": "day"},
                     headers=ADMIN).json()
    mine = cost["by_key"][issued["id"]]
    assert mine["requests"] == 3 and mine["cost_usd"] > 0
    assert cost["by_tenant"]["acme"]["requests"] >= 3
    assert cost["savings"]["comparison_model"] in ("good", "other")
    assert cost["savings"]["basis"].startswith("lowest mean expected error"), cost["savings"]
    budgets = httpx.get(f"{gov.base}/v1/router/budgets", headers=ADMIN).json()["data"]
    key_budget = next(b for b in budgets if b["account"] == f"key:{issued['id']}")
    assert key_budget["spent_usd"] == pytest.approx(mine["cost_usd"])
    alert = httpx.get(f"{gov.base}/v1/router/budget/alert", headers=ADMIN).json()
    assert alert["status"] in ("ok", "warning", "critical") and alert["recommendation"]
    sla = httpx.get(f"{gov.base}/v1/router/report/sla", params={"since_hours": 1},
                    headers=ADMIN).json()
    assert sla["total_requests"] >= 3 and sla["breaches"]["latency"] == 0
    forecast = httpx.get(f"{gov.base}/v1/router/report/forecast",
                         params={"requests_per_hour": 100, "avg_input_tokens": 500,
                                 "avg_output_tokens": 200}, headers=ADMIN).json()
    assert forecast["hourly_cost_usd"] > 0 and "cheap" in forecast["breakdown_by_model"]
    suggest = httpx.get(f"{gov.base}/v1/router/report/suggest", headers=ADMIN)
    assert suggest.status_code == 200 and isinstance(suggest.json()["data"], list)
    tenants = httpx.get(f"{gov.base}/v1/router/tenants", headers=ADMIN).json()["data"]
    assert tenants["acme"]["budget_status"][0]["budget"] == "50/month"
    bad = httpx.get(f"{gov.base}/v1/router/report/cost", params={"period": "fortnight"},
                    headers=ADMIN)
    assert bad.status_code == 400


def test_a_budget_alert_for_a_tenant_the_config_does_not_name_is_a_404(
        gov: ThreadServer) -> None:
    # A misspelt tenant was reported "ok", with the whole gateway's hourly spend as its own:
    # a monitor polling ?tenant=acmee would never alert.
    url = f"{gov.base}/v1/router/budget/alert"
    for typo in ("acmee", "ACME"):
        r = httpx.get(url, params={"tenant": typo}, headers=ADMIN)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["param"] == "tenant" and "acme" in r.text, r.text
    for known in ("acme", "default"):
        r = httpx.get(url, params={"tenant": known}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["tenant"] == known, r.text


def test_an_open_config_refuses_a_public_address(tmp_path: Path) -> None:
    from switchpoint.errors import ServeError
    from switchpoint.server.exposure import exposure_problem
    from switchpoint.server.runner import serve

    open_settings = load_settings(overrides={"data_dir": str(tmp_path)}, environ={})
    with pytest.raises(ServeError, match=r'refusing to serve on "0\.0\.0\.0"'):
        serve(open_settings, "0.0.0.0", 0)
    assert exposure_problem(open_settings, "127.0.0.1") is None
    assert exposure_problem(open_settings, "::1") is None
    keys_only = load_settings(overrides={"data_dir": str(tmp_path), "auth": "keys"},
                              environ={})
    problem = exposure_problem(keys_only, "10.0.0.5")
    assert problem is not None and "admin routes" in problem and "auth: keys" not in problem
    token_only = load_settings(overrides={"data_dir": str(tmp_path),
                                          "admin_token_env": "T"}, environ={"T": "x" * 16})
    problem = exposure_problem(token_only, "10.0.0.5")
    assert problem is not None and "auth: keys" in problem
    protected = load_settings(overrides={"data_dir": str(tmp_path), "auth": "keys",
                                         "admin_token_env": "T"}, environ={"T": "x" * 16})
    assert exposure_problem(protected, "0.0.0.0") is None
    explicit = load_settings(overrides={"data_dir": str(tmp_path),
                                        "allow_unauthenticated": True}, environ={})
    assert exposure_problem(explicit, "0.0.0.0") is None


def test_a_cursor_past_64_bits_is_a_400(gov: ThreadServer) -> None:
    r = httpx.get(f"{gov.base}/v1/router/requests", params={"cursor": 2**63}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "cursor"


@pytest.mark.parametrize("report", ["cost", "savings", "sla", "suggest", "forecast"])
def test_a_report_for_a_tenant_nobody_knows_is_a_404_that_repeats_no_secret(
        gov: ThreadServer, report: str) -> None:
    # A misspelt tenant was reported as having spent nothing, and a key pasted where the
    # tenant goes came back in the answer.
    url = f"{gov.base}/v1/router/report/{report}"
    params: dict[str, Any] = ({"requests_per_hour": 10, "avg_input_tokens": 100,
                               "avg_output_tokens": 100} if report == "forecast" else {})
    pasted = "sp-0123456789_" + "s3cr3t" * 7
    for unknown in ("acmee", pasted):
        r = httpx.get(url, params={**params, "tenant": unknown}, headers=ADMIN)
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert error["code"] == "not_found" and error["param"] == "tenant", error
        assert "known: " in error["message"] and "acme" in error["message"], error
        assert "s3cr3t" not in r.text
    c = client(gov, new_key(gov)["key"])
    c.chat.completions.create(model="cheap", messages=user("so the mix is known"))
    assert httpx.get(url, params={**params, "tenant": "acme"}, headers=ADMIN).status_code == 200
    # 'default' (the requests without a tenant) is always known, though here it logged nothing.
    r = httpx.get(url, params={**params, "tenant": "default"}, headers=ADMIN)
    assert r.status_code == 200 or (report == "forecast" and r.status_code == 400
                                    and r.json()["error"]["param"] == "routing_mix"), r.text


def test_a_key_whose_models_a_reload_took_from_its_tenant_is_told_why(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A reload narrows a tenant to models none of its key's are: the key's requests are
    refused, saying why and naming only the key's own models (it used to answer "it may use "
    and nothing after it)."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + GOVERNANCE, encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        narrow = new_key(server, models=["cheap", "auto"])
        assert client(server, narrow["key"]).chat.completions.create(
            model="cheap", messages=user("x")).model == "cheap"

        def spent() -> list[tuple[str, float]]:
            acme = httpx.get(f"{server.base}/v1/router/tenants", headers=ADMIN).json()
            return [(b["budget"], b["spent_usd"]) for b in acme["data"]["acme"]["budget_status"]]

        before = spent()
        config.write_text(config_text(gw_fake) + GOVERNANCE.replace(
            "models: [cheap, good, fresh, auto]", "models: [good, fresh]").replace(
            "budgets: [50/month]", "budgets: [40/month]"), encoding="utf-8")
        reload = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert reload.status_code == 200, reload.text
        # The tenant's budget the reload changed keeps what was spent against it.
        assert before[0][0] == "50/month" and before[0][1] > 0
        assert spent() == [("40/month", before[0][1])]
        for model in ("cheap", "auto", "good"):
            with pytest.raises(openai.PermissionDeniedError) as info:
                client(server, narrow["key"]).chat.completions.create(model=model,
                                                                       messages=user("x"))
            message = info.value.message
            assert 'this key may use no model: its models ("cheap", "auto") are none of its ' \
                   "tenant's any more" in message, message
            assert "ask the operator" in message and "good" not in message.replace(
                f"'{model}'", "") and "fresh" not in message
        routed = httpx.post(f"{server.base}/v1/route", json={"prompt": "x"},
                            headers={"authorization": f"Bearer {narrow['key']}"})
        assert routed.status_code == 403 and "may use no model" in routed.text
        # It is shown no model, as chat refuses it every one: the model list (it listed the
        # whole catalog) and the learning status alike.
        bearer = {"authorization": f"Bearer {narrow['key']}"}
        listed = httpx.get(f"{server.base}/v1/models", headers=bearer)
        assert listed.status_code == 200 and listed.json()["data"] == [], listed.text
        assert client(server, narrow["key"]).models.list().data == []
        with pytest.raises(openai.PermissionDeniedError):
            client(server, narrow["key"]).models.retrieve("good")
        status = httpx.get(f"{server.base}/v1/router/status", headers=bearer)
        assert status.status_code == 200, status.text
        assert status.json()["tenants"]["acme"]["narrowed_to"] == []


def test_auto_is_listed_to_a_key_only_while_it_may_route_with_it(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A key of auto and one model: once a reload drops that model from the catalog, chat
    refuses the key's auto, and the model list shows it no auto (it showed auto and no
    model), through the openai client as over plain HTTP."""
    config = tmp_path / "switchpoint.yaml"
    governance = GOVERNANCE.replace("    models: [cheap, good, fresh, auto]\n", "")
    config.write_text(config_text(gw_fake) + governance, encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        lone = new_key(server, models=["auto", "fresh"])
        sdk = client(server, lone["key"])
        assert [m.id for m in sdk.models.list().data] == ["auto", "fresh"]
        assert sdk.chat.completions.create(model="auto", messages=user("x")).model == "fresh"
        without = re.sub(r"  - \{name: fresh,[^}]*\}\n", "", config_text(gw_fake))
        assert "fresh" not in without
        config.write_text(without + governance, encoding="utf-8")
        reload = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert reload.status_code == 200, reload.text
        with pytest.raises(openai.PermissionDeniedError) as chat:
            sdk.chat.completions.create(model="auto", messages=user("x"))
        assert "none of the models this key may use is in the catalog" in chat.value.message
        # (it names the key's models, not "auto", which is what has nothing to route to)
        assert '("fresh"), so "auto" has nothing to route to' in chat.value.message
        assert sdk.models.list().data == []
        listed = httpx.get(f"{server.base}/v1/models",
                           headers={"authorization": f"Bearer {lone['key']}"})
        assert listed.status_code == 200 and listed.json()["data"] == [], listed.text
        # auto by name is refused as chat refuses it.
        with pytest.raises(openai.PermissionDeniedError) as one:
            sdk.models.retrieve("auto")
        assert one.value.message == chat.value.message
        # A key whose auto still reaches a model is shown it, as before.
        wide = client(server, new_key(server, models=["auto", "cheap"])["key"])
        assert [m.id for m in wide.models.list().data] == ["auto", "cheap"]


def test_a_reload_that_takes_a_tenant_or_models_from_keys_names_them_and_keeps_them(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + GOVERNANCE, encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        narrow = new_key(server, models=["cheap", "auto"])
        wide = new_key(server)  # acme's models, of which only cheap goes
        tight = new_key(server, tenant="tight")
        untouched = new_key(server, models=["good"])
        same = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert same.status_code == 200 and same.json()["keys_affected"] == [], same.text
        assert same.json()["keys_note"] is None and same.json()["keys_affected_count"] == 0
        config.write_text(config_text(gw_fake) + GOVERNANCE.replace(
            "models: [cheap, good, fresh, auto]", "models: [good, fresh]").replace(
            "  tight:\n    models: [cheap]\n", ""), encoding="utf-8")
        with caplog.at_level("WARNING", logger="switchpoint.server"):
            reload = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert reload.status_code == 200, reload.text
        affected = {k["key_id"]: k for k in reload.json()["keys_affected"]}
        assert set(affected) == {narrow["id"], wide["id"], tight["id"]}, affected
        assert affected[narrow["id"]]["models_removed"] == ["cheap"]
        assert affected[wide["id"]]["models_removed"] == ["cheap"]
        assert affected[wide["id"]]["models_removed_count"] == 1
        assert affected[tight["id"]]["models_removed_count"] == 0
        assert not affected[wide["id"]]["tenant_removed"]
        assert affected[tight["id"]]["tenant_removed"] and affected[tight["id"]]["tenant"] == (
            "tight")
        note = reload.json()["keys_note"]
        assert reload.json()["keys_affected_count"] == 3
        assert "3 key(s)" in note and "The keys stay" in note and untouched["id"] not in note
        assert '"tight" is no longer configured' in note
        assert any(tight["id"] in r.getMessage() for r in caplog.records), caplog.text
        # A warning, not a refusal: the keys are still listed and still answer.
        listed = httpx.get(f"{server.base}/v1/router/keys", headers=ADMIN).json()
        assert {narrow["id"], wide["id"], tight["id"]} <= {k["id"] for k in listed["data"]}
        assert client(server, wide["key"]).chat.completions.create(
            model="good", messages=user("x")).model == "good"
        # A key whose tenant the reload removed gets no new secret, over HTTP or from the
        # command line beside the service (both handed one out, which the gateway then
        # refused): the refusal says the tenant is gone and what to do, and the key is left
        # as it was.
        rotate = httpx.post(f"{server.base}/v1/router/keys/{tight['id']}/rotate",
                            headers=ADMIN, timeout=10)
        assert rotate.status_code == 400 and "sp-" not in rotate.text, rotate.text
        message = rotate.json()["error"]["message"]
        assert f'key {tight["id"]}\'s tenant "tight" is no longer configured (tenants: ' \
               '"acme", "limited")' in message, message
        assert "add the tenant back under tenants:" in message and "revoke the key" in message
        code = main(["keys", "rotate", tight["id"], "--config", str(config)])
        assert code == 2
        # keys list, which shows it active, says the gateway refuses it and what to do.
        capsys.readouterr()
        assert main(["keys", "list", "--config", str(config)]) == 0
        err = capsys.readouterr().err
        assert ("note: 1 active key(s) belong to a tenant the config no longer names, so the "
                f"gateway refuses them: {tight['id']} (tight); add the tenant back") in err, err
        assert main(["keys", "show", tight["id"], "--config", str(config)]) == 0
        assert f"gateway refuses them: {tight['id']} (tight)" in capsys.readouterr().err
        shown = httpx.get(f"{server.base}/v1/router/keys/{tight['id']}", headers=ADMIN).json()
        assert shown["rotated_at"] is None and shown["status"] == "active", shown
        # Each answer showing the key says its tenant is gone, as keys list says it.
        assert shown["tenant_removed"] is True, shown
        listed = httpx.get(f"{server.base}/v1/router/keys", headers=ADMIN).json()
        assert {k["id"] for k in listed["data"] if k["tenant_removed"]} == {tight["id"]}
        assert main(["keys", "show", tight["id"], "--config", str(config), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["tenant_removed"] is True
        # Added back, its tenant's key is rotated again.
        config.write_text(config_text(gw_fake) + GOVERNANCE, encoding="utf-8")
        assert httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN,
                          timeout=30).status_code == 200
        rotate = httpx.post(f"{server.base}/v1/router/keys/{tight['id']}/rotate",
                            headers=ADMIN, timeout=10)
        assert rotate.status_code == 200 and rotate.json()["key"].startswith(
            f"sp-{tight['id']}_"), rotate.text
        assert rotate.json()["tenant_removed"] is False
        assert main(["keys", "list", "--config", str(config)]) == 0
        assert "note:" not in capsys.readouterr().err


def test_a_reload_that_affects_more_keys_than_it_names_lists_as_many_as_its_note_and_counts_all(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    # keys_affected listed every affected key, with no bound; its note named MAX_NAMED.
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + GOVERNANCE, encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        made = [new_key(server, tenant="tight")["id"] for _ in range(MAX_NAMED + 3)]
        config.write_text(config_text(gw_fake) + GOVERNANCE.replace(
            "  tight:\n    models: [cheap]\n", ""), encoding="utf-8")
        reload = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert reload.status_code == 200, reload.text
        answer = reload.json()
        assert answer["keys_affected_count"] == MAX_NAMED + 3
        listed = [k["key_id"] for k in answer["keys_affected"]]
        assert len(listed) == MAX_NAMED and set(listed) <= set(made)
        assert all(k["tenant_removed"] for k in answer["keys_affected"])
        assert f"{MAX_NAMED + 3} key(s)" in answer["keys_note"]
        assert "(and 3 more keys)" in answer["keys_note"]


def test_a_reload_that_takes_more_models_from_a_key_than_it_names_lists_as_many_as_its_note(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    # Each affected key's models_removed listed every model it lost, with no bound.
    spares = [f"spare-{n:03}" for n in range(MAX_LISTED + 5)]
    entries = "".join(f'  - {{name: {name}, base_url: "{gw_fake.openai_base_url}", '
                      "input_per_mtok: 0.05, output_per_mtok: 0.1, context_window: 8000, "
                      "tier: simple}\n" for name in spares)
    many = f"  many:\n    models: [cheap, {', '.join(spares)}]\n"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake).replace("data_dir:", entries + "data_dir:", 1)
                      + GOVERNANCE.replace("  limited:\n", many + "  limited:\n"),
                      encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        key = new_key(server, tenant="many")
        config.write_text(config_text(gw_fake) + GOVERNANCE.replace(
            "  limited:\n", "  many:\n    models: [cheap]\n  limited:\n"), encoding="utf-8")
        reload = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=30)
        assert reload.status_code == 200, reload.text
        answer = reload.json()
        assert answer["keys_affected_count"] == 1
        [lost] = answer["keys_affected"]
        assert lost["key_id"] == key["id"] and not lost["tenant_removed"]
        assert lost["models_removed"] == spares[:MAX_LISTED]
        assert lost["models_removed_count"] == MAX_LISTED + 5
        # The note lists the same models, and how many more.
        assert f'"{spares[MAX_LISTED - 1]}" and 5 more' in answer["keys_note"]
        assert spares[MAX_LISTED] not in answer["keys_note"]
        # The key keeps the model its tenant still offers.
        assert client(server, key["key"]).chat.completions.create(
            model="cheap", messages=user("x")).model == "cheap"


# Every route that reads a query, with a parameter it reads given twice; the answer with one
# value must differ from "the last one counts" for the test to show anything.
_TWICE = [
    ("/v1/router/requests", [("limit", "1"), ("limit", "2")], "limit"),
    ("/v1/router/keys", [("tenant", "acme"), ("tenant", "tight")], "tenant"),
    ("/v1/router/keys", [("limit", "1"), ("limit", "2")], "limit"),
    ("/v1/router/budget/alert", [("tenant", "acme"), ("tenant", "default")], "tenant"),
    ("/v1/router/report/cost", [("period", "day"), ("period", "month")], "period"),
    ("/v1/router/report/savings", [("tenant", "acme"), ("tenant", "acme")], "tenant"),
    ("/v1/router/report/sla", [("since_hours", "1"), ("since_hours", "2")], "since_hours"),
    ("/v1/router/report/suggest", [("period", "week"), ("period", "day")], "period"),
    ("/v1/router/report/forecast", [("requests_per_hour", "1"), ("requests_per_hour", "2"),
                                    ("avg_input_tokens", "1"), ("avg_output_tokens", "1")],
     "requests_per_hour"),
    ("/v1/router/status", [("tenant", "acme"), ("tenant", "default")], "tenant"),
]


@pytest.mark.parametrize(("path", "query", "param"), _TWICE,
                         ids=[f"{p}?{n}" for p, _, n in _TWICE])
def test_a_query_parameter_given_twice_is_a_400_naming_it(
        gov: ThreadServer, path: str, query: list[tuple[str, str]], param: str) -> None:
    # Read as the last of the two, a proxy in front that checked the first let through a
    # request the service answered for the other.
    r = httpx.get(f"{gov.base}{path}", params=tuple(query), headers=ADMIN)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == param, error
    assert error["message"] == f"{param}: is given 2 times; send it once", error
    if path.endswith("/forecast"):  # (which needs a logged routing mix)
        client(gov, new_key(gov)["key"]).chat.completions.create(
            model="cheap", messages=user("so the mix is known"))
    once = [(name, value) for i, (name, value) in enumerate(query)
            if name != param or i == [n for n, _ in query].index(param)]
    assert httpx.get(f"{gov.base}{path}", params=tuple(once), headers=ADMIN).status_code == 200


def test_a_missing_query_parameter_is_a_400_showing_the_query_string_to_send(
        gov: ThreadServer) -> None:
    # A forecast asked for as the other reports are, with no figures, hears where they go.
    r = httpx.get(f"{gov.base}/v1/router/report/forecast", params={"avg_input_tokens": 500},
                  headers=ADMIN)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == "requests_per_hour", error
    assert error["message"] == (
        "requests_per_hour: is required, in the query string: /v1/router/report/forecast"
        "?requests_per_hour=...&avg_output_tokens=..."), error


def test_a_query_parameter_given_twice_is_refused_alike_on_every_route(
        gov: ThreadServer) -> None:
    # The same rule before any route's own checks: the answer tells nothing of the route.
    for headers in (ADMIN, {}):
        r = httpx.get(f"{gov.base}/v1/router/requests", params=[("limit", "1"), ("limit", "2")],
                      headers=headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == "limit", r.text
    # The gateway's routes answer in OpenAI's envelope, which the official client reads.
    c = client(gov, new_key(gov)["key"])
    with pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(model="cheap", messages=user("hi"),
                                  extra_query={"trace": ["a", "b"]})
    assert caught.value.param == "trace[]" and "given 2 times" in caught.value.message


def test_a_query_parameter_a_route_does_not_take_is_refused_and_so_is_one_given_twice(
        gov: ThreadServer) -> None:
    # Ignored, a filter the route does not have would be answered as if it had applied it.
    url = f"{gov.base}/v1/router/tenants"
    r = httpx.get(url, params={"x": "1"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "x", r.text
    assert "it takes none" in r.json()["error"]["message"]
    r = httpx.get(url, params=[("x", "1"), ("x", "1")], headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "x", r.text
    assert "is given 2 times" in r.json()["error"]["message"]
    r = httpx.get(f"{gov.base}/v1/router/budgets", params={"offset": "50"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "offset", r.text
    assert 'it takes "limit", "cursor"' in r.json()["error"]["message"]


def test_the_admin_token_where_a_client_key_goes_is_told_apart(gov: ThreadServer) -> None:
    """An operator sending chat or a routing request with the admin token is told that these
    routes take a client key (and that the token does give feedback), not that the key is
    malformed; the token is not repeated."""
    for path, body in [("/v1/chat/completions", {"model": "auto", "messages": user("hi")}),
                       ("/v1/route", {"prompt": "hi"})]:
        r = httpx.post(f"{gov.base}{path}", json=body, headers=ADMIN, timeout=10)
        assert r.status_code == 401, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key" and error["param"] == "authorization"
        assert "admin token" in error["message"], error
        assert "chat and routing take a client key" in error["message"], error
        assert "may give feedback on any tenant's decision" in error["message"], error
        assert "switchpoint keys create" in error["message"]
        assert ADMIN_TOKEN not in r.text


def test_the_admin_token_gives_feedback_on_any_tenants_decision_as_that_tenants(
        gov: ThreadServer, capsys: pytest.CaptureFixture[str]) -> None:
    """With client keys on, the operator holding the admin token gives feedback over HTTP on
    any tenant's decision: it is kept as the decision's own tenant's, and the answer says
    which. A client key still reaches only its own tenant's decisions."""
    acme = client(gov, new_key(gov, models=["auto"])["key"])
    routed = acme.chat.completions.with_raw_response.create(model="auto",
                                                             messages=user("admin feedback"))
    decision = routed.headers["x-switchpoint-decision-id"]
    tight = new_key(gov, tenant="tight")
    named = client(gov, tight["key"]).chat.completions.with_raw_response.create(
        model="cheap", messages=user("admin feedback, named"))
    request_id = named.headers["x-switchpoint-request-id"]
    # Another tenant's key: not found, as an unknown id, and nothing is kept.
    stranger = httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": decision, "score": 1},
                          headers={"authorization": f"Bearer {tight['key']}"}, timeout=10)
    assert stranger.status_code == 404, stranger.text
    assert stranger.json()["error"]["code"] == "decision_not_found"
    db = sqlite3.connect(gov.service.gateway.settings.db_path)
    try:
        assert db.execute("SELECT count(*) FROM feedback WHERE decision_id = ?",
                          (decision,)).fetchone() == (0,)
    finally:
        db.close()
    answers = {}
    for given, body in ((decision, {"score": 0.3, "comment": "by the operator"}),
                        (request_id, {"success": True})):
        r = httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": given, **body},
                       headers=ADMIN, timeout=10)
        assert r.status_code == 200, r.text
        answers[given] = r.json()
    assert answers[decision]["tenant"] == "acme" and answers[decision]["kind"] == "decision"
    assert answers[decision]["teaches_routing"] is True
    assert answers[request_id]["tenant"] == "tight" and answers[request_id]["kind"] == "model"
    db = sqlite3.connect(gov.service.gateway.settings.db_path)
    try:
        kept = dict(db.execute("SELECT decision_id, tenant FROM feedback "
                               "WHERE decision_id IN (?, ?)", (decision, request_id)))
    finally:
        db.close()
    assert kept == {decision: "acme", request_id: "tight"}
    # The owner's key sees the operator's outcome as its own tenant's: a repeat replaces it.
    again = httpx.post(f"{gov.base}/v1/feedback", json={"decision_id": decision, "score": 0.9},
                       headers={"authorization": f"Bearer {acme.api_key}"}, timeout=10)
    assert again.status_code == 200 and again.json()["replaced"] is True, again.text
    assert again.json()["previous_quality"] == 0.3
    # So does `switchpoint feedback --url` with the admin token as its --api-key.
    assert main(["feedback", request_id, "--failure", "--url", gov.base, "--api-key",
                 ADMIN_TOKEN, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tenant"] == "tight" and shown["replaced"] is True and shown["quality"] == 0


def test_an_authorization_header_sent_twice_names_no_caller(gov: ThreadServer) -> None:
    # The first of two was taken: a proxy in front that checks the last one would let a
    # caller through on a credential the service never saw, or the other way round.
    issued = new_key(gov, budget="1/day")
    mine = f"Bearer {issued['key']}"
    before = _spent(gov, issued["id"])
    for pair in ([mine, "Bearer sp-0123456789_" + "x" * 43], ["Bearer junk", mine],
                 [mine, mine]):
        r = httpx.post(f"{gov.base}/v1/chat/completions",
                       json={"model": "cheap", "messages": user("twice")},
                       headers=[("authorization", value) for value in pair])
        assert r.status_code == 401, r.text
        error = r.json()["error"]
        assert error["param"] == "authorization" and "given 2 times" in error["message"]
        assert issued["key"] not in r.text
        r = httpx.post(f"{gov.base}/v1/route", json={"prompt": "hi"},
                       headers=[("authorization", value) for value in pair])
        assert r.status_code == 401 and "given 2 times" in r.text, r.text
    assert _spent(gov, issued["id"]) == before
    admin = ADMIN["authorization"]
    for pair in ([admin, "Bearer wrong"], ["Bearer wrong", admin]):
        headers = [("authorization", value) for value in pair]
        r = httpx.get(f"{gov.base}/v1/router/keys", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["param"] == "authorization", r.text
        assert "given 2 times" in r.json()["error"]["message"]
        # A probe still learns readiness, and no more.
        health = httpx.get(f"{gov.base}/health", headers=headers)
        assert health.status_code == 200 and "models" not in health.json()
    assert "models" in httpx.get(f"{gov.base}/health", headers=ADMIN).json()


def _spent(server: ThreadServer, key_id: str) -> float:
    budgets = httpx.get(f"{server.base}/v1/router/budgets", headers=ADMIN).json()["data"]
    return float(next((b["spent_usd"] for b in budgets if b["account"] == f"key:{key_id}"),
                      0.0))


def test_a_rotation_of_a_grace_that_is_no_number_names_the_field(gov: ThreadServer) -> None:
    issued = new_key(gov)
    r = httpx.post(f"{gov.base}/v1/router/keys/{issued['id']}/rotate",
                   json={"grace_seconds": "1h"}, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"code": "invalid_request", "param": "grace_seconds",
                                 "message": "grace_seconds: must be a number, got \"1h\""}
    assert httpx.get(f"{gov.base}/v1/router/keys/{issued['id']}",
                     headers=ADMIN).json()["rotated_at"] is None


@pytest.mark.parametrize(("raw", "needle"), [
    # (it said "must be >= 0"; then "must be a finite number (not NaN or infinity)", where the
    # chat gateway said it its own way)
    (b'{"grace_seconds": NaN}', "is NaN, not a finite number; send finite numbers only"),
    (b'{"grace_seconds": Infinity}', "is infinity, too large a number"),
])
def test_a_rotation_of_a_grace_that_is_not_finite_says_so(gov: ThreadServer, raw: bytes,
                                                          needle: str) -> None:
    issued = new_key(gov)
    r = httpx.post(f"{gov.base}/v1/router/keys/{issued['id']}/rotate", content=raw,
                   headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "grace_seconds" and needle in error["message"], error
    assert httpx.get(f"{gov.base}/v1/router/keys/{issued['id']}",
                     headers=ADMIN).json()["rotated_at"] is None


@pytest.mark.parametrize(("raw", "needle"), [
    (b'{"grace_seconds": -1}', "must be >= 0, got -1"),
    (b'{"grace_seconds": -0.5}', "must be >= 0, got -0.5"),
    (b'{"grace_seconds": 2592001}', "must be <= 2,592,000, got 2592001"),
    (b'{"grace_seconds": 2592000.5}', "must be <= 2,592,000, got 2592000.5"),
    (b'{"grace_seconds": 1e999}', "is infinity, too large a number"),  # (JSON's own infinity)
    (b'{"grace_seconds": -1e999}', "is -infinity, too large a negative number"),
    (b'{"grace_seconds": 1' + b"0" * 300 + b"}", "must be <= 2,592,000"),
    (b'{"grace_seconds": "30"}', 'must be a number, got "30"'),
    (b'{"grace_seconds": true}', "must be a number"),
    (b'{"grace_seconds": null}', "must be a number"),
    (b'{"grace_seconds": [30]}', "must be a number"),
])
def test_a_rotation_of_a_grace_out_of_bounds_names_the_field_and_keeps_the_key(
        gov: ThreadServer, raw: bytes, needle: str) -> None:
    # The route takes what the command line's --grace takes, from 0 to 30 days: a negative,
    # longer, infinite or huge grace, or one that is no number, is a 400 naming grace_seconds,
    # and the key keeps its one secret.
    issued = new_key(gov)
    url = f"{gov.base}/v1/router/keys/{issued['id']}"
    before = httpx.get(url, headers=ADMIN).json()
    r = httpx.post(f"{url}/rotate", content=raw,
                   headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == "grace_seconds", error
    assert error["message"].startswith("grace_seconds: ") and needle in error["message"], error
    assert len(error["message"]) < 300, error
    assert httpx.get(url, headers=ADMIN).json() == before
    client(gov, issued["key"]).chat.completions.create(model="cheap", messages=user("same"))


def test_budgets_and_the_budget_alert_are_listed_a_page_at_a_time(gov: ThreadServer) -> None:
    """``GET /v1/router/budgets`` and the budget alert answer ``limit`` budgets a page (50 by
    default, at most 500) and the next page's cursor (null on the last): the config's budgets
    first, then the keys' in the order they were made, so a key made between two pages comes
    last and one revoked between them moves no other budget (every other budget is listed
    once). The alert's status is of every budget, on each page. A bad limit or cursor is a
    400 naming it, saying what to pass."""
    made = [new_key(gov, budget=["1/day", "10/month"]) for _ in range(4)]
    url = f"{gov.base}/v1/router/budgets"
    whole = httpx.get(url, params={"limit": 500}, headers=ADMIN).json()
    assert whole["next_cursor"] is None
    listed = [(b["account"], b["budget"]) for b in whole["data"]]
    assert listed[0] == ("tenant:acme", "50/month")
    assert listed[-8:] == [(f"key:{k['id']}", b) for k in made for b in ("1/day", "10/month")]
    seen: list[tuple[str, str]] = []
    cursors: list[str] = []
    later = revoked = None
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = httpx.get(url, params=params, headers=ADMIN)
        assert page.status_code == 200, page.text
        assert 1 <= len(page.json()["data"]) <= 3
        seen += [(b["account"], b["budget"]) for b in page.json()["data"]]
        if later is None:  # between the first two pages: a key made, a key not yet listed
            later = new_key(gov, budget="2/day")  # revoked
            revoked = made[1]
            r = httpx.post(f"{gov.base}/v1/router/keys/{revoked['id']}/revoke", headers=ADMIN)
            assert r.status_code == 200, r.text
        if page.json()["next_cursor"] is None:
            break
        cursors.append(page.json()["next_cursor"])
        params = {"limit": 3, "cursor": cursors[-1]}
    assert revoked is not None and later is not None
    assert seen == [*(b for b in listed if b[0] != f"key:{revoked['id']}"),
                    (f"key:{later['id']}", "2/day")]
    assert all(re.fullmatch(r"cfg-[0-9]+|key-[0-9]+-[1-4]", c) for c in cursors), cursors
    default = httpx.get(url, headers=ADMIN).json()  # 50 a page unless told
    assert len(default["data"]) == min(50, len(seen))
    assert (default["next_cursor"] is None) == (len(seen) <= 50)

    alert_url = f"{gov.base}/v1/router/budget/alert"
    whole_alert = httpx.get(alert_url, params={"tenant": "acme", "limit": 500},
                            headers=ADMIN).json()
    assert whole_alert["next_cursor"] is None
    paged: list[str] = []
    params = {"tenant": "acme", "limit": 2}
    while True:
        page = httpx.get(alert_url, params=params, headers=ADMIN).json()
        assert len(page["budgets"]) <= 2
        # (The recommendation quotes a projection, which moves with the clock.)
        assert page["status"] == whole_alert["status"] and page["recommendation"]
        paged += [b["account"] for b in page["budgets"]]
        if page["next_cursor"] is None:
            break
        params = {"tenant": "acme", "limit": 2, "cursor": page["next_cursor"]}
    assert paged == [b["account"] for b in whole_alert["budgets"]]
    assert f"key:{later['id']}" in paged and f"key:{revoked['id']}" not in paged

    for route in (url, alert_url):
        for bad in ("0", "501", "ten", "2.5"):
            r = httpx.get(route, params={"limit": bad}, headers=ADMIN)
            assert r.status_code == 400 and r.json()["error"]["param"] == "limit", r.text
        for bad in ("seq-3", "key-0-1", "key-3", "cfg-1-1", "cfg-01", "x" * 65):
            r = httpx.get(route, params={"cursor": bad}, headers=ADMIN)
            assert r.status_code == 400 and r.json()["error"]["param"] == "cursor", r.text
            if len(bad) < 65:
                assert "next_cursor of the previous page" in r.json()["error"]["message"]


def test_the_tenants_route_reads_the_tenants_budgets_alone_not_the_keys(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """GET /v1/router/tenants answers each tenant's own budgets; the keys' budgets, which it
    does not return, are not read (it read every key's, thousands with many keys, to keep the
    tenants' few)."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + GOVERNANCE, encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        for n in range(3):
            new_key(server, name=f"k{n}", budget="5/day")
        keys = server.service.gateway.governor.keys
        statements: list[str] = []
        keys._db().set_trace_callback(statements.append)
        try:
            r = httpx.get(f"{server.base}/v1/router/tenants", headers=ADMIN, timeout=10)
        finally:
            keys._db().set_trace_callback(None)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert sorted(data) == ["acme", "limited", "tight"]
    assert [(b["account"], b["budget"]) for b in data["acme"]["budget_status"]] == [
        ("tenant:acme", "50/month")]
    assert data["tight"]["budget_status"] == data["limited"]["budget_status"] == []
    assert data["acme"]["cost_weight"] == 0.4
    assert not [s for s in statements if "FROM keys" in s], statements


def test_a_routing_request_refused_after_it_is_counted_costs_one_of_the_minutes_requests(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A routing request refused before it is counted (a model its key may not use) costs
    none of the key's requests per minute; one refused once counted (none of its models has
    the capability escalation asks for: the router finds that out) costs one, as
    docs/keys-budgets.md says."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(tmp_path / "data")) + GOVERNANCE
                      + "escalation: {capability: vision}\n", encoding="utf-8")
    settings = load_settings(config, environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        issued = new_key(server, rpm=2, models=["cheap", "fresh", "auto"])
        auth = {"authorization": f"Bearer {issued['key']}"}
        for _ in range(3):  # (refused before it is counted: the key's minute is untouched)
            r = httpx.post(f"{server.base}/v1/route", headers=auth,
                           json={"prompt": "Hello", "available_models": ["good"]})
            assert r.status_code == 403, r.text
        for _ in range(2):  # (counted, then refused: no model of the key's sees images)
            r = httpx.post(f"{server.base}/v1/route", json={"prompt": "Hello"}, headers=auth)
            assert r.status_code == 400 and "vision" in r.json()["error"]["message"], r.text
        r = httpx.post(f"{server.base}/v1/route", json={"prompt": "Hello"}, headers=auth)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded", r.text
