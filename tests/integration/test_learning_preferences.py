"""Preference collection and tenants' memories through the service: compare fans one prompt
out to several models at once (exact calls, each logged), score teaches the tenant, status
shows it warm, and then that tenant's ``auto`` follows what it was taught while another
tenant's does not."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.config import load_settings
from switchpoint.errors import InvalidInputError
from switchpoint.server import create_app
from switchpoint.store.learning import LearningReader
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.full_disk import full_disk
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import (
    KEYS,
    chat,
    config_text,
    get,
    learning_server,
    loader,
    post,
)
from tests.integration.servers import ThreadServer, thread_server

TENANTS = """auth: keys
tenants:
  acme: {memory: {k: 10, min_neighbours: 3, min_records: 8, confidence_floor: 0.6}}
  globex: {memory: {k: 10, min_neighbours: 3, min_records: 8}}
  initech: {}
"""


class _Unshowable:
    """A key whose str and repr raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


@pytest.fixture
def server(fake: FakeProviderProcess, tmp_path: Path):  # type: ignore[no-untyped-def]
    with learning_server(fake, tmp_path, TENANTS) as server:
        yield server


def _keys(server: ThreadServer) -> dict[str, str]:
    return {t: post(server, "/v1/router/keys", {"tenant": t}).json()["key"]
            for t in ("acme", "globex", "initech")}


def _memory(server: ThreadServer, key: str) -> dict:  # type: ignore[type-arg]
    tenants = get(server, "/v1/router/status", key=key).json()["tenants"]
    (only,) = tenants.values()
    return dict(only["memory"])


def test_a_cold_tenant_taught_through_compare_and_score_routes_as_taught(
        server: ThreadServer, fake: FakeProviderProcess) -> None:
    keys = _keys(server)
    cold = chat(server, math_prompt(900), key=keys["acme"])[0]
    assert cold["x-switchpoint-model"] == "strong"
    assert (cold["x-switchpoint-source"], cold["x-switchpoint-memory-fallback"]) == (
        "router", "cold_start")
    memory = _memory(server, keys["acme"])
    assert (memory["enabled"], memory["examples"], memory["cold"]) == (True, 0, True)

    fake.reset()
    for i in range(4):
        # (not blind: the scores name the models, so that the teaching is known)
        compared = post(server, "/v1/router/preferences/compare",
                        {"prompt": math_prompt(100 + i), "models": ["strong", "cheap"],
                         "blind": False}, key=keys["acme"])
        assert compared.status_code == 200, compared.text
        body = compared.json()
        assert body["blind"] is False and body["tenant"] == "acme"
        assert [a["label"] for a in body["answers"]] == ["A", "B"]
        assert all(a["model"] in ("strong", "cheap") and a["content"] and a["error"] is None
                   for a in body["answers"])
        scored = post(server, "/v1/router/preferences/score",
                      {"compare_id": body["compare_id"], "scores": {"cheap": 1, "strong": 0}},
                      key=keys["acme"])
        assert scored.status_code == 200, scored.text
        revealed = {s["label"]: s["model"] for s in scored.json()["scores"]}
        assert sorted(revealed.values()) == ["cheap", "strong"]
        assert all(s["teaches_routing"] and s["teaches_memory"]
                   for s in scored.json()["scores"])
    # Each comparison made one exact call per model, logged as the tenant's requests.
    sent = [r["body"]["model"] for r in fake.requests()]
    assert sorted(sent) == ["cheap"] * 4 + ["strong"] * 4
    log = get(server, "/v1/router/requests", limit=8).json()["data"]
    assert {(e["tenant"], e["requested_model"]) for e in log} == {("acme", "strong"),
                                                                  ("acme", "cheap")}

    memory = _memory(server, keys["acme"])
    assert (memory["examples"], memory["cold"], memory["progress"]) == (8, False, 1.0)
    assert memory["models"] == {"cheap": 4, "strong": 4}
    taught = chat(server, math_prompt(901), key=keys["acme"])[0]
    assert taught["x-switchpoint-model"] == "cheap"
    assert taught["x-switchpoint-source"] == "memory"
    assert "x-switchpoint-memory-fallback" not in taught
    assert "Tenant memory" in taught["x-switchpoint-reasoning"]
    # Strict isolation: the other tenants learned nothing and still get the router's choice.
    other = chat(server, math_prompt(901), key=keys["globex"])[0]
    assert other["x-switchpoint-model"] == "strong"
    assert other["x-switchpoint-memory-fallback"] == "cold_start"
    plain = chat(server, math_prompt(902), key=keys["initech"])[0]
    assert (plain["x-switchpoint-model"], plain["x-switchpoint-source"]) == ("strong",
                                                                              "router")
    assert "x-switchpoint-memory-fallback" not in plain
    assert _memory(server, keys["globex"])["examples"] == 0
    assert _memory(server, keys["initech"]) == {"enabled": False}
    # A tool request falls back to the learned router, and says so.
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {}}}}]
    tooled = chat(server, math_prompt(903), key=keys["acme"], tools=tools)[0]
    assert tooled["x-switchpoint-memory-fallback"] == "tool_request"


def test_the_comparison_runs_the_models_concurrently(server: ThreadServer,
                                                     fake: FakeProviderProcess) -> None:
    keys = _keys(server)
    # Each upstream answers only once all three requests are waiting at once: asked one after
    # the other, the first would fail (after 5 s) for want of the other two.
    for model in ("strong", "runner", "cheap"):
        fake.default(model, "together:n=3,seconds=5")
    try:
        r = post(server, "/v1/router/preferences/compare",
                 {"prompt": "Write a haiku about rivers.", "models": ["strong", "runner",
                                                                     "cheap"],
                  "blind": False}, key=keys["globex"])
    finally:
        for model in ("strong", "runner", "cheap"):
            fake.default(model, None)
    assert r.status_code == 200, r.text
    answers = r.json()["answers"]
    assert sorted(a["model"] for a in answers) == ["cheap", "runner", "strong"]
    assert all(a["content"] and a["error"] is None for a in answers), answers


def test_scores_by_label_ties_partial_and_a_repeat_replaces(server: ThreadServer) -> None:
    keys = _keys(server)
    body = post(server, "/v1/router/preferences/compare",
                {"messages": [{"role": "user", "content": math_prompt(300)}],
                 "models": ["strong", "runner", "cheap"], "blind": False},
                key=keys["acme"]).json()
    label = {a["model"]: a["label"] for a in body["answers"]}
    first = post(server, "/v1/router/preferences/score",
                 {"compare_id": body["compare_id"],
                  "scores": {label["strong"]: 0.5, label["runner"]: 0.5}},
                 key=keys["acme"]).json()
    assert {s["model"]: s["quality"] for s in first["scores"]} == {"strong": 0.5,
                                                                   "runner": 0.5}
    assert first["memory"]["models"] == {"runner": 1, "strong": 1}
    again = post(server, "/v1/router/preferences/score",
                 {"compare_id": body["compare_id"], "scores": {"strong": 0.9}},
                 key=keys["acme"]).json()
    (only,) = again["scores"]
    assert (only["replaced"], only["previous_quality"], only["quality"]) == (True, 0.5, 0.9)
    assert again["memory"]["examples"] == 2


def test_bad_comparisons_and_scores_are_refused_and_change_nothing(
        server: ThreadServer) -> None:
    keys = _keys(server)
    acme = keys["acme"]
    bad_compares = [
        ({"prompt": "hi", "models": ["strong"]}, "models"),
        ({"prompt": "hi", "models": ["strong", "strong"]}, "models"),
        ({"prompt": "hi", "models": ["strong", "gpt-99"]}, "models"),
        ({"prompt": "hi", "models": ["a", "b", "c", "d", "e", "f", "g"]}, "models"),
        ({"models": ["strong", "cheap"]}, "prompt"),
        ({"prompt": "", "models": ["strong", "cheap"]}, "prompt"),
        ({"prompt": "hi", "models": ["strong", "cheap"], "stream": True}, "stream"),
        ({"prompt": "hi", "models": ["strong", "cheap"], "tenant": "globex"}, "tenant"),
        # An output cap is an integer, as a chat request's is: not true, "5" or 5.0.
        ({"prompt": "hi", "models": ["strong", "cheap"], "max_tokens": True}, "max_tokens"),
        ({"prompt": "hi", "models": ["strong", "cheap"], "max_tokens": "5"}, "max_tokens"),
        ({"prompt": "hi", "models": ["strong", "cheap"], "max_tokens": 5.0}, "max_tokens"),
    ]
    field: str | None
    for body, field in bad_compares:
        r = post(server, "/v1/router/preferences/compare", body, key=acme)
        assert r.status_code in (400, 403), (body, r.text)
        assert r.json()["error"]["param"] == field, (body, r.json())
    # Too few or too many models read alike.
    assert post(server, "/v1/router/preferences/compare", bad_compares[0][0], key=acme).json()[
        "error"]["message"] == "models: must have at least 2 items, got 1"
    assert post(server, "/v1/router/preferences/compare", bad_compares[3][0], key=acme).json()[
        "error"]["message"] == "models: must have at most 6 items, got 7"
    compare = post(server, "/v1/router/preferences/compare",
                   {"prompt": math_prompt(400), "models": ["strong", "cheap"]},
                   key=acme).json()
    cid = compare["compare_id"]
    bad_scores = [
        # A bad score names its label, as an unknown label is named.
        ({"compare_id": cid, "scores": {"A": 1.5}}, "scores.A", 400),
        ({"compare_id": cid, "scores": {"B": 0.5, "A": -1}}, "scores.A", 400),
        ({"compare_id": cid, "scores": {"A": "high"}}, "scores.A", 400),
        ({"compare_id": cid, "scores": {"B": None}}, "scores.B", 400),
        ({"compare_id": cid, "scores": {}}, "scores", 400),
        ({"compare_id": cid, "scores": {"Z": 0.5}}, "scores.Z", 400),
        ({"compare_id": cid, "scores": {"runner": 0.5}}, "scores.runner", 400),
        ({"compare_id": cid, "scores": {"Z\x1b[2J": 0.5}}, "scores.Z\\u001b[2J", 400),
        ({"compare_id": cid, "scores": {"A": 0.5, "B": 0.2, "strong": 0.1}}, None, 400),
        ({"compare_id": "0" * 32, "scores": {"A": 0.5}}, "compare_id", 404),
        ({"compare_id": cid, "scores": {"A": 0.5}, "tenant": "globex"}, "tenant", 403),
    ]
    for body, field, status in bad_scores:
        r = post(server, "/v1/router/preferences/score", body, key=acme)
        assert r.status_code == status, (body, r.text)
        if field is not None:
            assert r.json()["error"]["param"] == field, (body, r.json())
    # A key the caller sent is written printable where an error names it: in process, a
    # lone surrogate in it made the message one no UTF-8 stream could print.
    with pytest.raises(InvalidInputError) as unprintable:
        server.service.gateway.score(cid, {"Z\ud800\x1b": 0.5}, tenant="acme")
    assert unprintable.value.field == "scores.Z\\ud800\\u001b"
    assert str(unprintable.value).encode().startswith(b"scores.Z\\ud800\\u001b: is neither")
    with pytest.raises(InvalidInputError) as unshown:  # (its str raised its own exception)
        server.service.gateway.score(cid, {_Unshowable(): 0.5},  # type: ignore[dict-item]
                                     tenant="acme")
    assert unshown.value.field == "scores.a value of type _Unshowable"
    # NaN (which JSON does not have, but some writers send) alike.
    r = httpx.post(f"{server.base}/v1/router/preferences/score",
                   content=f'{{"compare_id": "{cid}", "scores": {{"A": NaN}}}}',
                   headers={"authorization": f"Bearer {acme}",
                            "content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "scores.A", r.text
    assert r.json()["error"]["message"].startswith(
        "scores.A: is NaN, not a finite number; send finite numbers only"), r.text
    # Another tenant's compare id is not found, exactly like an unknown one.
    theirs = post(server, "/v1/router/preferences/score",
                  {"compare_id": cid, "scores": {"A": 0.5}}, key=keys["globex"])
    assert theirs.status_code == 404 and theirs.json()["error"]["param"] == "compare_id"
    assert _memory(server, acme)["examples"] == 0
    assert _memory(server, keys["globex"])["examples"] == 0
    status = get(server, "/v1/router/status", key=acme).json()["tenants"]["acme"]
    assert status["learned_router"]["events"] == 0


def test_compare_reads_its_models_as_every_list_of_model_names_is_read(
        fake: FakeProviderProcess, server: ThreadServer) -> None:
    """In process, a comparison's models were checked by a rule of their own: a generator was
    refused though every other list of model names reads one once, and a set's refusal did
    not say why or what to pass. A set and a mapping are refused as everywhere, naming models
    and saying to pass a list, and call no model; a generator is read once, as the list
    compared, and still holds 2 to 6 different models."""
    gateway = server.service.gateway
    hi = [{"role": "user", "content": "hi"}]
    sent = len(fake.requests())
    with pytest.raises(InvalidInputError) as refused:
        gateway.compare(hi, {"strong", "cheap"}, tenant="acme")
    assert refused.value.field == "models"
    assert str(refused.value).startswith("models: must be a list of model names, got set, "
                                         "whose order is not kept"), refused.value
    assert "sorted(models)" in str(refused.value)
    with pytest.raises(InvalidInputError, match=r"got dict \(a mapping\)"):
        gateway.compare(hi, {"strong": 1, "cheap": 2}, tenant="acme")
    for seven in (f"m{i}" for i in range(7)), iter(["strong", "strong"]):
        with pytest.raises(InvalidInputError, match="models: give 2 to 6 different models"):
            gateway.compare(hi, seven, tenant="acme")
    assert len(fake.requests()) == sent  # no model was called
    compared = gateway.compare(hi, (m for m in ["strong", "cheap"]), tenant="acme",
                               blind=False)
    assert sorted(a["model"] for a in compared["answers"]) == ["cheap", "strong"]
    assert len(fake.requests()) == sent + 2


# Ids no comparison could have: each holds a character no id the gateway makes holds (they
# are lowercase hexadecimal digits), with the character named as the refusal names it.
NO_IDS = [("\u0000", "U+0000 (character 1)"), ("0ff\n", "U+000A (character 4)"),
          (" ", "U+0020 (character 1)"), ("9C1E", '"C" (character 2)'),
          ("nope", '"n" (character 1)'), ("abc\ud800", "U+D800 (character 4)")]
ID_IS = ("which no comparison id holds: a comparison id is the 32 lowercase hexadecimal "
         "digits (0-9, a-f) a comparison answered with (its compare_id)")


def test_an_id_no_comparison_could_have_is_a_400_saying_what_an_id_is(
        server: ThreadServer) -> None:
    """A compare id of any shape was looked up, and one no comparison could have was a 404
    (no open comparison): now it is a 400 naming compare_id and saying what an id looks
    like, before any lookup, over HTTP and in process alike, by the rule decision ids are
    checked by; a well-formed id of no comparison is still a 404. The published schema says
    what an id holds."""
    keys = _keys(server)
    cid = post(server, "/v1/router/preferences/compare",
               {"prompt": math_prompt(410), "models": ["strong", "cheap"]},
               key=keys["acme"]).json()["compare_id"]
    assert re.fullmatch("[0-9a-f]{32}", cid)
    for sent, where in NO_IDS:
        r = httpx.post(f"{server.base}/v1/router/preferences/score", timeout=30,
                       headers={"authorization": f"Bearer {keys['acme']}",
                                "content-type": "application/json"},
                       content=json.dumps({"compare_id": sent, "scores": {"A": 0.5}}))
        assert r.status_code == 400, (sent, r.text)
        error = r.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_request", "compare_id"), error
        if "\ud800" not in sent:  # (no text holds it: refused as any field of a body is)
            assert error["message"] == f"compare_id: holds {where}, {ID_IS}", error
        with pytest.raises(InvalidInputError) as refused:
            server.service.gateway.score(sent, {"A": 0.5}, tenant="acme")
        assert str(refused.value) == f"compare_id: holds {where}, {ID_IS}"
    with pytest.raises(InvalidInputError) as long:  # (longer than any id: not looked up)
        server.service.gateway.score("a" * 2**20, {"A": 0.5}, tenant="acme")
    assert str(long.value) == "compare_id: must have at most 200 characters, got 1,048,576"
    missing = post(server, "/v1/router/preferences/score",
                   {"compare_id": "0" * 32, "scores": {"A": 0.5}}, key=keys["acme"])
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "compare_id"
    assert _memory(server, keys["acme"])["examples"] == 0
    scored = post(server, "/v1/router/preferences/score",
                  {"compare_id": cid, "scores": {"A": 0.5}}, key=keys["acme"])
    assert scored.status_code == 200, scored.text
    document = httpx.get(f"{server.base}/openapi.json", timeout=30).json()
    body = document["paths"]["/v1/router/preferences/score"]["post"]["requestBody"][
        "content"]["application/json"]["schema"]
    field = body["properties"]["compare_id"]
    assert field["pattern"] == "^[0-9a-f]+$", field
    assert all(re.fullmatch(field["pattern"], example["compare_id"])
               for example in body["examples"])


def test_a_caller_without_a_valid_key_is_refused_before_its_input_is_checked(
        server: ThreadServer) -> None:
    """Compare, score and status answer a missing or wrong key with the 401 whatever the body
    or query: a caller who may not use them is told nothing of the fields they check."""
    bodies = [{"zzz": 1}, {"prompt": "hi", "models": ["strong"]}, {"compare_id": "x"},
              {"compare_id": "0" * 32, "scores": {"A": 2}}, {"tenant": "globex"}]
    for path in ("/v1/router/preferences/compare", "/v1/router/preferences/score"):
        for key in (None, "sp-0123456789_" + "x" * 43):
            for body in bodies:
                r = post(server, path, body, key=key)
                assert r.status_code == 401, (path, key, body, r.text)
                assert r.json()["error"]["param"] == "authorization", r.text
        for tenant in ("", "a" * 65, "globex"):
            r = get(server, "/v1/router/status", key=key, tenant=tenant)
            assert r.status_code == 401 and r.json()["error"]["param"] == "authorization"


def test_the_admin_token_acts_for_any_tenant(fake: FakeProviderProcess,
                                             tmp_path: Path) -> None:
    extra = TENANTS + "admin_token_env: ADMIN_TOKEN\n"
    with learning_server(fake, tmp_path, extra, environ={"ADMIN_TOKEN": "r" * 32}) as server:
        admin = "r" * 32
        everyone = get(server, "/v1/router/status", key=admin).json()["tenants"]
        assert {"acme", "globex", "initech"} <= set(everyone)
        compare = post(server, "/v1/router/preferences/compare",
                       {"prompt": math_prompt(500), "models": ["strong", "cheap"],
                        "tenant": "globex"}, key=admin).json()
        assert compare["tenant"] == "globex"
        scored = post(server, "/v1/router/preferences/score",
                      {"compare_id": compare["compare_id"], "scores": {"A": 1},
                       "tenant": "globex"}, key=admin)
        assert scored.json()["memory"]["examples"] == 1
        assert get(server, "/v1/router/status", key="wrong").status_code == 401
        unknown = get(server, "/v1/router/status", key=admin, tenant="nobody")
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "tenant"
        assert '\\"nobody\\" is neither a tenant of the config' in unknown.text
        assert "known: " in unknown.text and "globex" in unknown.text


def test_a_comparison_made_before_a_restart_still_takes_its_scores(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    prompt = "compare me across a restart: " + math_prompt(321)
    with learning_server(fake, tmp_path, TENANTS) as server:
        keys = _keys(server)
        compared = post(server, "/v1/router/preferences/compare",
                        {"prompt": prompt, "models": ["strong", "cheap"]}, key=keys["acme"])
        assert compared.status_code == 200, compared.text
        compare_id = compared.json()["compare_id"]
        before = _memory(server, keys["acme"])["examples"]
    with learning_server(fake, tmp_path, TENANTS) as server:
        # Another tenant cannot see it after the restart either.
        other = post(server, "/v1/router/preferences/score",
                     {"compare_id": compare_id, "scores": {"A": 1}}, key=keys["globex"])
        assert other.status_code == 404 and "compare_id" in other.text
        scored = post(server, "/v1/router/preferences/score",
                      {"compare_id": compare_id, "scores": {"A": 1, "B": 0.5}},
                      key=keys["acme"])
        assert scored.status_code == 200, scored.text
        assert all(s["teaches_routing"] and s["teaches_memory"]
                   for s in scored.json()["scores"])
        assert _memory(server, keys["acme"])["examples"] == before + 2
    # The catalog priced both answers: the scores taught what each cost, too (in the weights'
    # units, so the dear model's answer counts as dearer).
    (db,) = tmp_path.rglob("switchpoint.db")
    taught = {r.event.model: r.event.measured_cost for r in LearningReader(db).feedback()
              if r.kind == "preference"}
    assert set(taught) == {"strong", "cheap"}
    assert taught["strong"] is not None and taught["cheap"] is not None
    assert taught["strong"] > taught["cheap"] > 0
    # What the store keeps of a comparison: labels, models and the prompt's vector, not its text.
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*.db*"))
    assert compare_id.encode() in stored
    assert b"compare me across a restart" not in stored


def test_when_no_compared_model_answers_one_error_names_each_and_why(
        server: ThreadServer, fake: FakeProviderProcess) -> None:
    acme = _keys(server)["acme"]
    fake.default("strong", "500")
    fake.default("cheap", "hang:seconds=3")
    with ThreadPoolExecutor(2) as pool:  # each waits out cheap's read timeouts: at once
        answers = list(pool.map(
            lambda models: post(server, "/v1/router/preferences/compare",
                                {"prompt": math_prompt(600), "models": models}, key=acme),
            (["strong", "cheap"], ["cheap", "strong"])))
    assert [a.status_code for a in answers] == [502, 502], [a.text for a in answers]
    for answer in answers:
        message = answer.json()["error"]["message"]
        assert "none of the compared models answered" in message
        assert "strong: " in message and "cheap: " in message
        assert "server_error" in message and "read_timeout" in message


# What a failed blind answer says: one of these (code, message), whatever the upstream said.
GENERIC_FAILURES = {("upstream_error", "upstream error"), ("timed_out", "timed out"),
                    ("too_long", "refused: too long"), ("refused", "refused")}


def _unlabelled(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "label"} for a in answers]


def test_a_blind_answer_that_failed_does_not_name_its_model(
        server: ThreadServer, fake: FakeProviderProcess) -> None:
    """A failed answer's reason could tell its model: the upstream's own text (a provider's
    content filter, a model's context length), an error kind only one provider has. Blind,
    it says a generic reason; the score's answer reveals each label's model and full reason."""
    acme = _keys(server)["acme"]
    fake.default("strong", "content_filter")  # "... Azure OpenAI's content management ..."
    fake.default("runner", "context_length")  # "... maximum context length is 8192 ..."
    compared = post(server, "/v1/router/preferences/compare",
                    {"prompt": math_prompt(601), "models": ["strong", "runner", "cheap"]},
                    key=acme)
    assert compared.status_code == 200, compared.text
    answers = compared.json()["answers"]
    failed = [a for a in answers if a["error"] is not None]
    assert len(failed) == 2
    for answer in failed:
        assert answer["model"] is None and answer["request_id"] is None
        assert (answer["error"]["code"], answer["error"]["message"]) in GENERIC_FAILURES
        said = str(answer).lower()
        for hint in ("strong", "runner", "azure", "8192", "content_filter",
                     "context_length_exceeded"):
            assert hint not in said, (hint, answer)
    assert {(a["error"]["code"], a["error"]["message"]) for a in failed} == {
        ("refused", "refused"), ("too_long", "refused: too long")}
    # The score reveals every label's model, and what each failed one really said.
    (good,) = [a for a in answers if a["error"] is None]
    scored = post(server, "/v1/router/preferences/score",
                  {"compare_id": compared.json()["compare_id"], "scores": {good["label"]: 0.7}},
                  key=acme)
    assert scored.status_code == 200, scored.text
    revealed = {a["label"]: a for a in scored.json()["answers"]}
    assert set(revealed) == {a["label"] for a in answers}
    assert revealed[good["label"]]["model"] == "cheap"
    assert revealed[good["label"]]["error"] is None
    assert revealed[good["label"]]["request_id"] is not None
    by_model = {a["model"]: a for a in revealed.values()}
    assert by_model["strong"]["error"]["code"] == "content_filter"
    assert "content management policy" in by_model["strong"]["error"]["message"]
    assert by_model["runner"]["error"]["code"] == "context_length_exceeded"
    assert "maximum context length" in by_model["runner"]["error"]["message"]
    store = server.service.gateway.store
    assert store is not None
    logged = {e["id"]: e for e in store.requests(100, None)[0]}
    for model in ("strong", "runner", "cheap"):  # (the log names each request's model)
        entry = logged[by_model[model]["request_id"]]
        assert entry["requested_model"] == model and entry["purpose"] == "compare"


def test_blind_answers_alike_but_for_their_content_are_alike_in_every_field(
        server: ThreadServer, fake: FakeProviderProcess) -> None:
    """Two models that answer the same words look the same blind, whatever else their
    upstreams say (a finish reason of their own, a request id the log would name them by);
    so do two that fail the same generic way (a 500, a reset connection). Not blind, the
    answers say it all."""
    acme = _keys(server)["acme"]
    same = "say:text=Seventeen."
    fake.default("strong", f"{same},finish=eos")  # (a finish reason only some upstreams give)
    fake.default("cheap", same)
    blind = post(server, "/v1/router/preferences/compare",
                 {"prompt": math_prompt(603), "models": ["strong", "cheap"]}, key=acme)
    assert blind.status_code == 200, blind.text
    answers = blind.json()["answers"]
    assert [a["content"] for a in answers] == ["Seventeen."] * 2
    first, second = _unlabelled(answers)
    assert first == second and first["finish_reason"] == "stop", answers
    scored = post(server, "/v1/router/preferences/score",
                  {"compare_id": blind.json()["compare_id"], "scores": {"A": 0.5, "B": 0.5}},
                  key=acme)
    assert scored.status_code == 200, scored.text
    revealed = {a["model"]: a for a in scored.json()["answers"]}
    assert revealed["strong"]["finish_reason"] == "eos"
    assert revealed["cheap"]["finish_reason"] == "stop"
    assert revealed["strong"]["request_id"] != revealed["cheap"]["request_id"]
    # Two that fail alike, blind and in process too.
    fake.default("strong", "500")
    fake.default("runner", "reset")
    in_process = server.service.gateway.compare(
        prompt=math_prompt(604), models=["strong", "runner", "cheap"], tenant="acme")
    failed = [a for a in in_process["answers"] if a["error"] is not None]
    assert len(failed) == 2
    first, second = _unlabelled(failed)
    assert first == second and first["error"] == {"code": "upstream_error",
                                                  "message": "upstream error"}, failed
    # Not blind: as it was.
    plain = post(server, "/v1/router/preferences/compare",
                 {"prompt": math_prompt(605), "models": ["strong", "cheap"], "blind": False},
                 key=acme)
    assert plain.status_code == 200, plain.text
    by_model = {a["model"]: a for a in plain.json()["answers"]}
    assert by_model["strong"]["error"]["code"] == "upstream_failed"
    assert "strong" in by_model["strong"]["error"]["message"]
    assert by_model["cheap"]["request_id"] is not None
    assert by_model["cheap"]["finish_reason"] == "stop"


def test_a_blind_answer_shows_no_cost_that_prices_would_name_its_model(
        server: ThreadServer) -> None:
    acme = _keys(server)["acme"]
    for blind in (True, False):
        compared = post(server, "/v1/router/preferences/compare",
                        {"prompt": math_prompt(602), "models": ["strong", "cheap"],
                         "blind": blind}, key=acme)
        assert compared.status_code == 200, compared.text
        costs = [a["cost_usd"] for a in compared.json()["answers"]]
        if blind:
            assert costs == [None, None]
        else:
            assert all(isinstance(c, float) and c > 0 for c in costs), costs


def test_only_the_newest_max_compares_comparisons_take_scores(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, "learning: {max_compares: 2}\n") as server:
        ids = [post(server, "/v1/router/preferences/compare",
                    {"prompt": math_prompt(610 + i), "models": ["strong", "cheap"]}
                    ).json()["compare_id"] for i in range(4)]
        scored = [post(server, "/v1/router/preferences/score",
                       {"compare_id": cid, "scores": {"A": 1}}).status_code for cid in ids]
        assert scored == [404, 404, 200, 200]


def test_the_cap_on_waiting_comparisons_is_each_tenants(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, TENANTS + "learning: {max_compares: 2}\n") as server:
        keys = _keys(server)

        def compare(tenant: str, i: int) -> str:
            body = {"prompt": math_prompt(650 + i), "models": ["strong", "cheap"]}
            answer = post(server, "/v1/router/preferences/compare", body, key=keys[tenant])
            return str(answer.json()["compare_id"])

        acme = [compare("acme", i) for i in range(2)]
        for i in range(3):  # another tenant's comparisons push none of acme's out
            compare("globex", 10 + i)
        scored = [post(server, "/v1/router/preferences/score",
                       {"compare_id": cid, "scores": {"A": 1}}, key=keys["acme"]).status_code
                  for cid in acme]
        assert scored == [200, 200]


def test_models_named_like_blind_labels_get_other_labels(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # Models named "A" and "B": a score's key must never mean one as a label and the other
    # as a model, nor give away who wrote what.
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(fake, data).replace(
        "{name: strong,", "{name: B, profile: strong,").replace(
        "{name: cheap,", "{name: A, profile: cheap,"), encoding="utf-8")
    app = create_app(load_settings(config), loader=loader, provider_env=KEYS)
    with thread_server(app) as server:
        compare = post(server, "/v1/router/preferences/compare",
                       {"prompt": math_prompt(620), "models": ["A", "B"]}).json()
        labels = sorted(a["label"] for a in compare["answers"])
        assert labels == ["answer-A", "answer-B"]
        # A blind comparison is scored by label: "A" is a model's name here, not a label.
        by_name = post(server, "/v1/router/preferences/score",
                       {"compare_id": compare["compare_id"], "scores": {"A": 1.0}})
        assert by_name.status_code == 400 and "score its answers by label" in by_name.text
        scored = post(server, "/v1/router/preferences/score",
                      {"compare_id": compare["compare_id"], "scores": {"answer-A": 1.0}})
        assert scored.status_code == 200, scored.text
        assert scored.json()["scores"][0]["model"] in ("A", "B")


def test_a_compared_answers_request_id_takes_no_feedback(server: ThreadServer) -> None:
    acme = _keys(server)["acme"]
    compare = post(server, "/v1/router/preferences/compare",
                   {"prompt": math_prompt(630), "models": ["strong", "cheap"]}, key=acme).json()
    # Blind, an answer carries no request id (the request log names its model) ...
    assert [a["request_id"] for a in compare["answers"]] == [None, None]
    plain = post(server, "/v1/router/preferences/compare",
                 {"prompt": math_prompt(631), "models": ["strong", "cheap"], "blind": False},
                 key=acme).json()
    scored = post(server, "/v1/router/preferences/score",
                  {"compare_id": compare["compare_id"], "scores": {"A": 0.2}}, key=acme)
    assert scored.status_code == 200, scored.text
    # ... until the score reveals it; not blind, it has one. Neither takes feedback.
    ids = [a["request_id"] for a in scored.json()["answers"] + plain["answers"]]
    assert len(ids) == 4 and all(isinstance(i, str) for i in ids)
    for request_id in ids:
        r = post(server, "/v1/feedback", {"decision_id": request_id, "score": 0.1}, key=acme)
        assert r.status_code == 400 and r.json()["error"]["param"] == "decision_id", r.text
        assert "preferences/score" in r.text
        assert "strong" not in r.text and "cheap" not in r.text
    status = get(server, "/v1/router/status", key=acme).json()["tenants"]["acme"]
    # (the score's one outcome; the refused feedback taught nothing)
    assert [(f["n"], f["mean_quality"]) for f in status["feedback"].values()] == [(1, 0.2)]


def test_scores_the_store_refuses_part_way_say_which_were_kept_and_a_repeat_completes_them(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.held_lock import short_lock_waits

    short_lock_waits(monkeypatch)  # the store retries after 1.5 s, not 5
    with learning_server(fake, tmp_path) as server:
        compare = post(server, "/v1/router/preferences/compare",
                       {"prompt": math_prompt(640), "models": ["strong", "cheap"]}).json()
        store = server.service.gateway.learning.store
        assert store is not None
        body = {"compare_id": compare["compare_id"], "scores": {"A": 1.0, "B": 0.0}}
        # A's score is written, then the disk is full (for the feedback log's rows)
        with full_disk(store, room=1, only="INSERT INTO feedback"):
            refused = post(server, "/v1/router/preferences/score", body)
            assert refused.status_code == 503, refused.text
            assert "the score of B (after A, kept and learned) could not be kept" in refused.text
            status = get(server, "/v1/router/status").json()["tenants"]["default"]
            assert status["learned_router"]["events"] == 1
        chat(server, math_prompt(641))  # a write goes through
        deadline = time.monotonic() + 15
        while store.failing is not None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        again = post(server, "/v1/router/preferences/score", body)
        assert again.status_code == 200, again.text
        assert [s["replaced"] for s in again.json()["scores"]] == [True, False]


def test_a_client_keys_status_shows_its_tenants_experiments_and_the_models_it_may_use(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    scoped = TENANTS + ("experiments: {x: {tenants: [acme], arms: {a: {weight: 1}, "
                        "b: {weight: 1}}}}\n")
    with learning_server(fake, tmp_path, scoped) as server:
        keys = _keys(server)
        narrow = post(server, "/v1/router/keys", {"tenant": "acme",
                                                  "models": ["cheap", "auto"]}).json()["key"]
        for model in ("strong", "cheap"):  # the tenant learns about both
            decision = chat(server, math_prompt(660), key=keys["acme"])[0][
                "x-switchpoint-decision-id"]
            taught = post(server, "/v1/feedback", {"decision_id": decision, "score": 0.5,
                                                   "model": model}, key=keys["acme"])
            assert taught.status_code == 200, taught.text
        wide = get(server, "/v1/router/status", key=keys["acme"]).json()
        assert wide["experiments"] == ["x"] and "replayed" not in wide
        assert set(wide["tenants"]["acme"]["feedback"]) == {"strong", "cheap"}
        limited = get(server, "/v1/router/status", key=narrow).json()
        assert set(limited["tenants"]["acme"]["feedback"]) == {"cheap"}
        assert set(limited["tenants"]["acme"]["memory"]["models"]) <= {"cheap"}
        other = get(server, "/v1/router/status", key=keys["globex"]).json()
        assert other["experiments"] == [] and list(other["tenants"]) == ["globex"]
        trusted = server.service.gateway.learning_status()  # (the deployment's own view)
        assert "replayed" in trusted and trusted["experiments"] == ["x"]


def test_a_limited_key_learns_nothing_of_other_models_through_comparisons(
        server: ThreadServer) -> None:
    keys = _keys(server)
    pair = post(server, "/v1/router/keys", {"tenant": "acme", "models": [
        "cheap", "runner", "auto"]}).json()["key"]
    routing = post(server, "/v1/router/keys", {"tenant": "acme",
                                                "models": ["auto"]}).json()["key"]
    wide = post(server, "/v1/router/preferences/compare",
                {"prompt": math_prompt(670), "models": ["strong", "cheap"]},
                key=keys["acme"]).json()
    # Naming a hidden model of another key's comparison is told apart from no name at all.
    answers = [post(server, "/v1/router/preferences/score", {
        "compare_id": wide["compare_id"], "scores": {name: 0.9}}, key=pair)
        for name in ("strong", "nonexistent")]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].text.replace("strong", "X") == answers[1].text.replace("nonexistent", "X")
    assert post(server, "/v1/router/preferences/score", {
        "compare_id": wide["compare_id"], "scores": {"A": 1.0, "B": 0.5}},
        key=keys["acme"]).status_code == 200
    own = post(server, "/v1/router/preferences/compare",
               {"prompt": math_prompt(671), "models": ["cheap", "runner"]}, key=pair).json()
    scored = post(server, "/v1/router/preferences/score", {
        "compare_id": own["compare_id"], "scores": {"A": 1.0}}, key=pair).json()
    assert set(scored["memory"]["models"]) <= {"cheap", "runner"}  # no "strong"
    # A key that may only route names no model to compare.
    refused = post(server, "/v1/router/preferences/compare", {"prompt": math_prompt(672)},
                   key=routing)
    assert refused.status_code == 403 and "may name 0 model(s)" in refused.text
    # A model outside the key's is a 403 naming the field the caller filled in.
    outside = post(server, "/v1/router/preferences/compare",
                   {"prompt": math_prompt(673), "models": ["cheap", "strong"]}, key=pair)
    assert outside.status_code == 403 and outside.json()["error"]["param"] == "models"
    assert outside.json()["error"]["message"].startswith('models: this key may not use "strong"')


@pytest.mark.parametrize(("memory", "needle"), [
    ("{min_records: 30, max_records: 10}", "min_records (30) must be <= max_records (10)"),
    ("{k: 10, min_neighbours: 5, min_records: 2, max_records: 3}",
     "min_neighbours (5) must be <= max_records (3)")])
def test_a_memory_that_could_never_answer_is_an_invalid_config(
        fake: FakeProviderProcess, tmp_path: Path, memory: str, needle: str) -> None:
    """A memory keeps at most max_records outcomes: needing more to answer would leave the
    tenant cold (or its neighbourhoods sparse) forever, with nothing saying why."""
    with learning_server(fake, tmp_path, TENANTS) as server:
        config = tmp_path / "switchpoint.yaml"
        config.write_text(config.read_text(encoding="utf-8").replace(
            "  initech: {}\n", f"  initech: {{memory: {memory}}}\n"), encoding="utf-8")
        refused = post(server, "/v1/router/reload")
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid_config"
        assert "tenants.initech.memory" in error["message"] and needle in error["message"]
        assert "never answer" in error["message"]
        # The old config keeps serving: initech has no memory.
        status = server.service.gateway.learning_status(["initech"])
        assert status["tenants"]["initech"]["memory"] == {"enabled": False}


def test_a_blind_comparison_tells_no_model_before_its_one_score(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A caller could learn which label was which model before scoring blind: the answers'
    latencies (the slow model is the large one), a score keyed by model name (its answer
    named the label), or a throwaway score of one label (its answer named the model) followed
    by a repeat that replaced it. A blind comparison now shows no latency, takes labels only,
    and takes one score: the one whose answer reveals the models, across a restart too."""
    with learning_server(fake, tmp_path) as server:
        fake.default("strong", "ok:delay=0.3")
        try:
            compare = post(server, "/v1/router/preferences/compare",
                           {"prompt": math_prompt(700), "models": ["strong", "cheap"]}).json()
        finally:
            fake.default("strong", None)
        cid = compare["compare_id"]
        assert [(a["latency_ms"], a["cost_usd"], a["model"]) for a in compare["answers"]] == [
            (None, None, None)] * 2
        by_name = post(server, "/v1/router/preferences/score",
                       {"compare_id": cid, "scores": {"strong": 0.5}})
        assert by_name.status_code == 400, by_name.text
        assert by_name.json()["error"]["param"] == "scores"
        assert 'blind: score its answers by label ("A", "B")' in by_name.json()["error"]["message"]
        assert "default" not in get(server, "/v1/router/status").json()["tenants"]
        first = post(server, "/v1/router/preferences/score",
                     {"compare_id": cid, "scores": {"A": 0.5}})
        assert first.status_code == 200, first.text
        assert first.json()["scores"][0]["model"] in ("strong", "cheap")
        for scores in ({"A": 0.9}, {"B": 0.1}, {"A": 0.5, "B": 0.5}):
            again = post(server, "/v1/router/preferences/score",
                         {"compare_id": cid, "scores": scores})
            assert again.status_code == 409, again.text
            error = again.json()["error"]
            assert error["param"] == "compare_id" and "revealed" in error["message"]
            assert "preferences/compare again" in error["message"]
        status = get(server, "/v1/router/status").json()["tenants"]["default"]
        assert status["learned_router"]["events"] == 1
        open_one = post(server, "/v1/router/preferences/compare",
                        {"prompt": math_prompt(701), "models": ["strong", "cheap"]}).json()
    with learning_server(fake, tmp_path) as server:
        after = post(server, "/v1/router/preferences/score",
                     {"compare_id": cid, "scores": {"B": 0.1}})
        assert after.status_code == 409, after.text
        # One not scored before the restart still takes its score.
        taken = post(server, "/v1/router/preferences/score",
                     {"compare_id": open_one["compare_id"], "scores": {"B": 0.1}})
        assert taken.status_code == 200, taken.text
        # Its score reveals what the answers were, kept across the restart.
        revealed = taken.json()["answers"]
        assert sorted(a["model"] for a in revealed) == ["cheap", "strong"]
        assert all(a["request_id"] and a["finish_reason"] == "stop" and a["error"] is None
                   for a in revealed), revealed


def test_a_comparison_without_models_compares_those_auto_may_choose(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A comparison teaches auto: left to choose its models, it used to call every model the
    caller may name, a judge kept out of auto (auto: false) too. The library and the service
    now compare only those auto may choose; a kept-out model named is still compared."""
    judge = ('  - {name: judge, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 20,'
             ' output_per_mtok: 20, tier: expert, auto: false}\n')
    with learning_server(fake, tmp_path, "auth: keys\ntenants: {acme: {}}\n",
                         more_models=judge) as server:
        acme = post(server, "/v1/router/keys", {"tenant": "acme"}).json()["key"]
        fake.reset()
        over_http = post(server, "/v1/router/preferences/compare",
                         {"prompt": math_prompt(710), "blind": False}, key=acme)
        assert over_http.status_code == 200, over_http.text
        assert sorted(a["model"] for a in over_http.json()["answers"]) == [
            "cheap", "runner", "strong"]
        in_process = server.service.gateway.compare(prompt=math_prompt(711), blind=False,
                                                    tenant="acme")
        assert sorted(a["model"] for a in in_process["answers"]) == [
            "cheap", "runner", "strong"]
        assert "judge" not in [r["body"]["model"] for r in fake.requests()]
        named = post(server, "/v1/router/preferences/compare",
                     {"prompt": math_prompt(712), "models": ["judge", "cheap"],
                      "blind": False}, key=acme)
        assert named.status_code == 200, named.text
        assert sorted(a["model"] for a in named.json()["answers"]) == ["cheap", "judge"]
        # A key whose models leave auto only one: told to name them, and why.
        pair = post(server, "/v1/router/keys", {"tenant": "acme", "models": [
            "strong", "judge", "auto"]}).json()["key"]
        refused = post(server, "/v1/router/preferences/compare",
                       {"prompt": math_prompt(713)}, key=pair)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "models"
        assert error["message"] == (
            'models: auto may choose 1 of the models to compare ("strong"; "judge" is auto: '
            'false, compared only when named): name the 2 to 6 models to compare')


def test_a_comparison_left_to_choose_its_models_lists_them_as_every_message_does(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Left to choose, a comparison refused names the models it could have compared as JSON
    writes names, as every message lists them: more than it compares at once, or a key that
    may name fewer than two (it joined them unquoted)."""
    more = "".join(f'  - {{name: extra-{i}, base_url: "{{base}}", api_key_env: FAKE_KEY, '
                   'input_per_mtok: 2, output_per_mtok: 2}\n' for i in range(4))
    with learning_server(fake, tmp_path, "auth: keys\ntenants: {acme: {}}\n",
                         more_models=more) as server:
        acme = post(server, "/v1/router/keys", {"tenant": "acme"}).json()["key"]
        many = post(server, "/v1/router/preferences/compare",
                    {"prompt": math_prompt(714)}, key=acme)
        assert many.status_code == 400, many.text
        assert many.json()["error"]["message"] == (
            'models: name the 2 to 6 models to compare (of "strong", "runner", "cheap", '
            '"extra-0", "extra-1", "extra-2", "extra-3")')
        with pytest.raises(InvalidInputError, match=r'\(of "strong", "runner", "cheap", '):
            server.service.gateway.compare(prompt=math_prompt(715), tenant="acme")
        one = post(server, "/v1/router/keys", {"tenant": "acme", "models": [
            "cheap", "auto"]}).json()["key"]
        refused = post(server, "/v1/router/preferences/compare",
                       {"prompt": math_prompt(716)}, key=one)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["param"] == "models"
        assert refused.json()["error"]["message"] == (
            'models: a comparison calls each model by name, and this key may name 1 model(s) '
            '("cheap"); compare with a key that may name at least two')


def test_a_score_shows_the_memory_of_the_models_its_caller_may_use(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A tenant narrowed to some models (after its memory learned of another) is shown by a
    score the memory of its models alone, as its status and its model list show them, whether
    it is named in process (tenant=, trusted), by its key or by the admin acting for it."""
    admin = "r" * 32
    environ = {"ADMIN_TOKEN": admin}
    wide = ("auth: keys\nadmin_token_env: ADMIN_TOKEN\n"
            "tenants: {acme: {memory: {min_records: 8}}}\n")
    with learning_server(fake, tmp_path, wide, environ=environ) as server:
        gateway = server.service.gateway
        taught = gateway.compare(prompt=math_prompt(700), models=["strong", "cheap"],
                                 tenant="acme", blind=False)
        gateway.score(taught["compare_id"], {"strong": 1.0, "cheap": 0.5}, tenant="acme")
        assert set(gateway.learning_status(tenant="acme")["tenants"]["acme"]["memory"][
            "models"]) == {"strong", "cheap"}
    narrow = wide.replace("acme: {", "acme: {models: [cheap, runner, auto], ")
    with learning_server(fake, tmp_path, narrow, environ=environ) as server:
        gateway = server.service.gateway
        key = post(server, "/v1/router/keys", {"tenant": "acme"}, key=admin).json()["key"]

        def compared(n: int) -> str:
            return str(gateway.compare(prompt=math_prompt(n), models=["cheap", "runner"],
                                       tenant="acme", blind=False)["compare_id"])

        in_process = gateway.score(compared(701), {"cheap": 1.0}, tenant="acme")["memory"]
        status = gateway.learning_status(tenant="acme")["tenants"]["acme"]
        assert status["narrowed_to"] == ["cheap", "runner"]
        assert in_process == status["memory"]
        assert set(in_process["models"]) == {"cheap"}  # strong's example is not shown
        assert in_process["examples"] == 2
        listed = [m["id"] for m in gateway.models(tenant="acme")]
        assert set(in_process["models"]) <= set(listed) and "strong" not in listed
        # Over HTTP: the tenant's key, and the admin acting for the tenant, alike.
        for n, (who, body) in enumerate(((key, {}), (admin, {"tenant": "acme"}))):
            scored = post(server, "/v1/router/preferences/score",
                          {"compare_id": compared(702 + n), "scores": {"runner": 1.0}, **body},
                          key=who)
            assert scored.status_code == 200, scored.text
            memory = scored.json()["memory"]
            assert set(memory["models"]) == {"cheap", "runner"}, memory
            assert memory == get(server, "/v1/router/status",
                                 key=key).json()["tenants"]["acme"]["memory"]


def _revealed_kept(server: ThreadServer, compare_id: str) -> bool:
    """Whether data_dir keeps the comparison revealed."""
    with sqlite3.connect(server.service.gateway.settings.db_path) as db:
        (revealed,) = db.execute("SELECT revealed FROM compares WHERE compare_id = ?",
                                 (compare_id,)).fetchone()
    return revealed is not None


def _reveal_under(monkeypatch: pytest.MonkeyPatch, server: ThreadServer,
                  hold: Callable[[], AbstractContextManager[object]]) -> None:
    """Make the scores' reveal run inside ``hold`` (another process taking the database's
    write lock), once the scores are kept and learned: the reveal's own write meets it."""
    learning = server.service.gateway.learning
    reveal = learning.reveal

    def held(compare: Any) -> Any:
        with hold():
            return reveal(compare)

    monkeypatch.setattr(learning, "reveal", held)


def test_a_reveal_the_store_refuses_is_a_503_and_the_models_stay_hidden(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer waits out the busy timeout (short here) and the reveal's write fails: a 503
    # with Retry-After saying the scores were kept and the models are not revealed, neither
    # in memory (the scores are taken again) nor in data_dir; sent again once the lock is let
    # go, the scores reveal them. It gave up after 30 s with the write left queued.
    from tests.fakes.held_lock import (
        held_lock,
        refused_unkept,
        short_lock_waits,
        until_writable,
    )

    short_lock_waits(monkeypatch, seconds=1.0)
    with learning_server(fake, tmp_path) as server:
        store = server.service.gateway.learning.store
        assert store is not None
        cid = post(server, "/v1/router/preferences/compare",
                   {"prompt": math_prompt(720), "models": ["strong", "cheap"]}).json()[
            "compare_id"]
        body = {"compare_id": cid, "scores": {"A": 0.9, "B": 0.1}}
        with monkeypatch.context() as patched:
            _reveal_under(patched, server, lambda: held_lock(store.path))
            refused = post(server, "/v1/router/preferences/score", body)
        refused_unkept(refused, "the comparison's reveal", "the scores were kept and learned, "
                       "and the models are not revealed: send the scores again")
        assert "strong" not in refused.text and "cheap" not in refused.text
        assert not _revealed_kept(server, cid)
        until_writable(store)  # (refused at once for a moment more)
        taken = post(server, "/v1/router/preferences/score", body)
        assert taken.status_code == 200, taken.text
        assert sorted(a["model"] for a in taken.json()["answers"]) == ["cheap", "strong"]
        assert [s["replaced"] for s in taken.json()["scores"]] == [True, True]
        assert _revealed_kept(server, cid)
        again = post(server, "/v1/router/preferences/score", body)
        assert again.status_code == 409 and "revealed" in again.json()["error"]["message"]


def test_a_reveal_waits_for_data_dir_to_keep_it(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process holds the database's write lock, from after the scores were kept until
    # after the store would have waited for it: the answer waits, naming no model while
    # data_dir keeps none revealed, and once the lock is let go it reveals them, as data_dir
    # then does.
    from tests.fakes.held_lock import held_lock, short_lock_waits

    short_lock_waits(monkeypatch, seconds=120.0)
    with learning_server(fake, tmp_path) as server:
        cid = post(server, "/v1/router/preferences/compare",
                   {"prompt": math_prompt(721), "models": ["strong", "cheap"]}).json()[
            "compare_id"]
        holding = ExitStack()
        taken = threading.Event()

        @contextmanager
        def hold() -> Iterator[None]:
            holding.enter_context(held_lock(server.service.gateway.settings.db_path))
            taken.set()
            yield

        _reveal_under(monkeypatch, server, hold)
        with ThreadPoolExecutor(1) as pool, holding:
            sent = pool.submit(post, server, "/v1/router/preferences/score",
                               {"compare_id": cid, "scores": {"A": 0.9, "B": 0.1}})
            assert taken.wait(30), "the scores were not kept"
            done, _ = wait([sent], timeout=1.0)
            assert not done, "answered while the reveal's write was held"
            assert not _revealed_kept(server, cid)
            holding.close()
            answer = sent.result(timeout=60)
        assert answer.status_code == 200, answer.text
        assert sorted(a["model"] for a in answer.json()["answers"]) == ["cheap", "strong"]
        assert _revealed_kept(server, cid)
        again = post(server, "/v1/router/preferences/score",
                     {"compare_id": cid, "scores": {"A": 0.5}})
        assert again.status_code == 409 and "revealed" in again.json()["error"]["message"]
