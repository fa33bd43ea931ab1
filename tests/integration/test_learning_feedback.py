"""Feedback through the service: decision ids on every answer, POST /v1/feedback, the lesson
moving ``auto`` and surviving a restart and a reload; named-model feedback; bad input; tenant
scoping with client keys; the in-process door."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from switchpoint.catalog import MAX_MODEL_NAME
from switchpoint.cli import main
from switchpoint.config import Settings, load_settings
from switchpoint.decision import RoutingDecision
from switchpoint.errors import DecisionNotFoundError, InvalidInputError, StoreError
from switchpoint.gateway import Gateway, open_decisions
from switchpoint.store.sqlite import SQLiteStore
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.full_disk import FULL, full_disk
from tests.fakes.two_kinds import math_prompt, poem_prompt
from tests.integration.learning_env import (
    KEYS,
    chat,
    feedback,
    get,
    learning_server,
    loader,
    post,
    scored,
    settings_for,
)
from tests.integration.servers import ThreadServer


def _status(server: ThreadServer, tenant: str = "default") -> dict[str, Any]:
    body = get(server, "/v1/router/status", tenant=tenant).json()
    return dict(body["tenants"][tenant])


def test_sixty_zeros_move_auto_to_the_runner_up_and_the_lesson_survives_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        headers, _ = chat(server, math_prompt(5000))
        assert headers["x-switchpoint-model"] == "strong"
        assert headers["x-switchpoint-source"] == "router"
        poem_before = chat(server, poem_prompt(5000))[0]["x-switchpoint-model"]
        taken = 60
        for n in range(60):
            headers, _ = chat(server, math_prompt(1000 + n))
            if headers["x-switchpoint-model"] != "strong":
                taken = n
                break
            r = feedback(server, headers["x-switchpoint-decision-id"], score=0)
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["model"], body["quality"], body["replaced"]) == ("strong", 0.0, False)
            assert body["kind"] == "decision" and body["teaches_routing"] is True
        assert 10 < taken < 60  # 150 labels outweigh a few failures, not sixty
        after = chat(server, math_prompt(5002))[0]
        assert after["x-switchpoint-model"] == "runner"
        assert chat(server, poem_prompt(5002))[0]["x-switchpoint-model"] == poem_before
        assert _status(server)["learned_router"]["events"] == taken
        quality = _status(server)["feedback"]["strong"]
        assert quality == {"n": taken, "mean_quality": 0.0}
    # A graceful restart on the same data_dir: the log is replayed before the router serves.
    with learning_server(fake, tmp_path) as server:
        assert _status(server)["learned_router"]["events"] == taken
        assert chat(server, math_prompt(5003))[0]["x-switchpoint-model"] == "runner"
        assert chat(server, poem_prompt(5003))[0]["x-switchpoint-model"] == poem_before


FRESH = """  - {name: fresh, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 0.1,
     output_per_mtok: 0.1}
"""


def test_outcomes_of_a_model_without_a_profile_teach_its_routing_across_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``fresh`` has no profile: priced below the others, it takes the poems (every measured
    model gets them right) but not math. Its failures on poems move them to a measured model,
    and the lesson is replayed after a restart."""
    with learning_server(fake, tmp_path, more_models=FRESH) as server:
        assert chat(server, math_prompt(5000))[0]["x-switchpoint-model"] == "strong"
        first = chat(server, poem_prompt(5000))[0]
        assert first["x-switchpoint-model"] == "fresh"
        taken = 60
        for n in range(60):
            headers, _ = chat(server, poem_prompt(1000 + n))
            if headers["x-switchpoint-model"] != "fresh":
                taken = n
                break
            body = feedback(server, headers["x-switchpoint-decision-id"], score=0).json()
            assert (body["model"], body["kind"], body["teaches_routing"]) == (
                "fresh", "decision", True), body
        assert 0 < taken < 60
        moved = chat(server, poem_prompt(5001))[0]
        assert moved["x-switchpoint-model"] != "fresh"
        assert chat(server, math_prompt(5001))[0]["x-switchpoint-model"] == "strong"
        assert _status(server)["learned_router"]["events"] == taken
    with learning_server(fake, tmp_path, more_models=FRESH) as server:
        assert _status(server)["learned_router"]["events"] == taken
        assert chat(server, poem_prompt(5002))[0]["x-switchpoint-model"] != "fresh"


def test_an_observation_of_a_model_without_a_profile_replaces_only_the_feedback_figures(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Under the knn policy an outcome about ``fresh`` (no profile) is a quality observation:
    logged and counted in the status's feedback figures per model, where it takes the place
    of the decision's last outcome (``replaced``, ``previous_quality``), whichever model that
    was about. The outcome the learned router holds for the decision stays (the status's
    learned_router still counts it), and the observation's note says so. An outcome that
    teaches routing again speaks of the decision's last outcome too, the observation's, and
    its note names the learned one it replaced in routing."""
    with learning_server(fake, tmp_path, more_models=FRESH) as server:
        assert post(server, "/v1/router/policy/knn").json()["policy"] == "knn"
        decision = chat(server, math_prompt(40))[0]["x-switchpoint-decision-id"]
        learned = feedback(server, decision, score=0.9).json()
        assert (learned["kind"], learned["replaced"]) == ("decision", False)
        about = learned["model"]
        observed = feedback(server, decision, score=0.2, model="fresh").json()
        assert (observed["kind"], observed["teaches_routing"]) == ("model", False)
        assert (observed["replaced"], observed["previous_quality"]) == (True, 0.9)
        assert observed["note"].endswith(
            f"; the learned router keeps this decision's outcome about {about} (quality 0.9), "
            "which teaches its routing still: an observation takes the place of the "
            "decision's last outcome in the feedback figures per model only"), observed["note"]
        status = _status(server)
        assert status["feedback"] == {"fresh": {"n": 1, "mean_quality": 0.2}}
        assert status["learned_router"] == {"events": 1, "outcomes": 1}
        again = feedback(server, decision, score=0.4, model="fresh").json()
        assert (again["replaced"], again["previous_quality"]) == (True, 0.2)
        assert f"outcome about {about} (quality 0.9)" in again["note"]
        # Back to the model the router learned: it takes the place of the decision's last
        # outcome (the observation's, in the feedback figures: its previous_quality) and of
        # the router's learned outcome, which its note names.
        back = feedback(server, decision, score=0.5).json()
        assert (back["kind"], back["replaced"], back["previous_quality"]) == (
            "decision", True, 0.4)
        assert back["note"] == (
            "this outcome takes the place of the decision's last outcome (quality 0.4) in the "
            f"feedback figures per model, and of the learned router's outcome about {about} "
            "(quality 0.9) in its routing"), back["note"]
        again = feedback(server, decision, score=0.6).json()  # the last is the learned one
        assert (again["replaced"], again["previous_quality"]) == (True, 0.5)
        assert "note" not in again
        status = _status(server)
        assert status["feedback"] == {about: {"n": 1, "mean_quality": 0.6}}
        assert status["learned_router"] == {"events": 3, "outcomes": 1}
        # An observation first, then a routing outcome: the router held none, and the
        # observation is the decision's last outcome it takes the place of.
        other = chat(server, math_prompt(41))[0]["x-switchpoint-decision-id"]
        assert feedback(server, other, score=0.3, model="fresh").json()["replaced"] is False
        first = feedback(server, other, score=0.7).json()
        assert (first["kind"], first["replaced"], first["previous_quality"]) == (
            "decision", True, 0.3)
        assert "note" not in first
        assert _status(server)["learned_router"] == {"events": 4, "outcomes": 2}


def test_a_decision_made_before_a_restart_or_reload_still_takes_feedback(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        scored = chat(server, math_prompt(1))[0]["x-switchpoint-decision-id"]
        assert feedback(server, scored, score=0.25).json()["replaced"] is False
        later = chat(server, math_prompt(2))[0]["x-switchpoint-decision-id"]
        routed = post(server, "/v1/route", {"prompt": math_prompt(3)}).json()["decision_id"]
    with learning_server(fake, tmp_path) as server:
        again = feedback(server, scored, score=0.75).json()
        assert (again["replaced"], again["previous_quality"]) == (True, 0.25)
        first = feedback(server, later, success=True).json()
        assert (first["replaced"], first["quality"], first["model"]) == (False, 1.0, "strong")
        assert feedback(server, routed, score=0.5).json()["model"] == "strong"
        assert _status(server)["learned_router"]["events"] == 4  # a repeat counts again
        assert post(server, "/v1/router/reload").status_code == 200
        assert _status(server)["learned_router"]["events"] == 4
        third = feedback(server, scored, score=1).json()
        assert (third["replaced"], third["previous_quality"]) == (True, 0.75)


def test_a_decision_route_and_execute_made_before_a_restart_still_takes_feedback(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # Routed by the router itself, the decision was remembered in memory alone: after a
    # restart its answer's feedback was a 404 not found.
    settings = settings_for(fake, tmp_path)
    with Gateway(settings, loader=loader, env=KEYS) as gw:
        gw.start()
        reply = gw.router.route_and_execute(math_prompt(37), gateway=gw)
        decision = reply.switchpoint.decision
        assert decision is not None
    with Gateway(settings, loader=loader, env=KEYS) as gw:
        gw.start()
        result = gw.report_outcome(decision.decision_id, quality_score=0.5)
        assert (result.kind, result.outcome.model) == ("decision", reply.switchpoint.model)


def test_feedback_on_an_answer_of_a_model_a_reload_removed_says_it_left_the_catalog(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # The note said the model "has no learned profile in these weights", which still hold it:
    # it is the catalog that no longer lists it.
    with learning_server(fake, tmp_path) as server:
        decision = chat(server, math_prompt(750))[0]["x-switchpoint-decision-id"]
        config = tmp_path / "switchpoint.yaml"
        text = config.read_text(encoding="utf-8")
        start, end = text.index("  - {name: strong"), text.index("  - {name: runner")
        config.write_text(text[:start] + text[end:], encoding="utf-8")
        assert post(server, "/v1/router/reload").status_code == 200
        body = scored(server, decision, 0.25)
        assert (body["model"], body["kind"], body["teaches_routing"]) == (
            "strong", "model", False)
        assert "strong is not in this gateway's catalog" in body["note"], body["note"]
        assert "learned profile" not in body["note"], body["note"]


def test_named_model_answers_carry_their_request_id_for_quality_feedback(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        headers, completion = chat(server, math_prompt(7), model="cheap")
        assert headers["x-switchpoint-decision-id"] == headers["x-switchpoint-request-id"]
        body = feedback(server, headers["x-switchpoint-decision-id"], score=0.3).json()
        assert body["kind"] == "model" and body["teaches_routing"] is False
        # what the gateway priced the answer at is kept with the observation
        assert body["cost_from"] == "answer"
        assert body["cost"] == pytest.approx(completion.to_dict()["usage"]["cost"], rel=1e-6)
        assert (body["model"], body["quality"], body["replaced"]) == ("cheap", 0.3, False)
        assert "does not teach routing" in body["note"]
        assert _status(server)["learned_router"]["events"] == 0
        assert _status(server)["feedback"]["cheap"] == {"n": 1, "mean_quality": 0.3}
        repeat = feedback(server, headers["x-switchpoint-request-id"], score=0.6).json()
        assert (repeat["replaced"], repeat["previous_quality"]) == (True, 0.3)
        # The request id of a routed request names its decision.
        auto, _ = chat(server, math_prompt(8))
        by_request = feedback(server, auto["x-switchpoint-request-id"], score=0.9).json()
        assert by_request["decision_id"] == auto["x-switchpoint-decision-id"]
        assert by_request["kind"] == "decision"


# Ids no decision could have: each holds a character no id the service makes holds (they are
# lowercase hexadecimal digits), with the character named as the refusal names it.
NO_IDS = [("\u0000", "U+0000 (character 1)"), ("0ff\n", "U+000A (character 4)"),
          (" ", "U+0020 (character 1)"), (" " + "0" * 32, "U+0020 (character 1)"),
          ("3F2A", '"F" (character 2)'), ("abc\ud800", "U+D800 (character 4)"),
          ("id", '"i" (character 1)')]
ID_IS = ("which no decision id holds: a decision id is the 32 lowercase hexadecimal digits "
         "(0-9, a-f) an answer carried (x-switchpoint-decision-id, or decision_id)")
OR_HASH = "decision id or prompt hash holds"
HASH_IS = (", a prompt hash the 64 digits of the SHA-256 of the prompt a decision routed on "
           "(its prompt_hash)")


def test_an_id_no_decision_could_have_is_a_400_saying_what_an_id_is(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """An id holding a character no id holds was looked up ("\\u0000", "id\\n": 404, no such
    decision) while " " was a 400: now each is a 400 naming decision_id and saying what an id
    looks like, before any lookup; a well-formed id of no decision is still a 404. The
    published schema says what an id holds."""
    with learning_server(fake, tmp_path) as server:
        decision = chat(server, math_prompt(12))[0]["x-switchpoint-decision-id"]
        assert re.fullmatch("[0-9a-f]{32}", decision)
        for sent, where in NO_IDS:
            r = httpx.post(f"{server.base}/v1/feedback", timeout=15,
                           headers={"content-type": "application/json"},
                           content=json.dumps({"decision_id": sent, "score": 0.5}))
            assert r.status_code == 400, (sent, r.text)
            error = r.json()["error"]
            assert (error["code"], error["param"]) == ("invalid_request", "decision_id"), error
            if "\ud800" in sent:  # (no text holds it: refused as any field of a body is)
                assert "lone surrogate" in error["message"], error
                continue
            assert error["message"] == f"decision_id: holds {where}, {ID_IS}", error
        missing = feedback(server, "0" * 32, score=0.5)
        assert missing.status_code == 404, missing.text
        assert _status(server)["learned_router"]["events"] == 0
        assert feedback(server, decision, score=0.5).status_code == 200
        document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
        body = document["paths"]["/v1/feedback"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]
        field = body["properties"]["decision_id"]
        assert field["pattern"] == "^[0-9a-f]+$", field
        assert all(re.fullmatch(field["pattern"], example["decision_id"])
                   for example in body["examples"] if "decision_id" in example)


def test_the_in_process_door_refuses_an_id_no_decision_could_have_alike(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path)
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        decision = gateway.route(math_prompt(13))
        router = gateway.state.live().router
        for sent, where in NO_IDS:
            with pytest.raises(InvalidInputError) as refused:
                gateway.report_outcome(sent, 0.5)
            assert str(refused.value) == f"decision_id: holds {where}, {ID_IS}"
            # (the library's router takes a decision's prompt hash in its place, and says so)
            with pytest.raises(InvalidInputError) as refused:
                router.report_outcome(sent, 0.5)
            assert str(refused.value) == (
                f"decision_id: holds {where}, {ID_IS.replace('decision id holds', OR_HASH)}"
                f"{HASH_IS}")
        assert gateway.report_outcome(decision.decision_id, 0.5).outcome.replaced is False


def test_bad_feedback_is_a_400_naming_the_field_and_changes_nothing(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        decision = chat(server, math_prompt(11))[0]["x-switchpoint-decision-id"]
        cases: list[tuple[dict[str, Any], str]]
        cases = [({"score": 1.5}, "score"), ({"score": -0.1}, "score"),
                 ({"score": "0.5"}, "score"), ({"score": True}, "score"),
                 ({"success": "yes"}, "success"), ({"score": 0.5, "success": True},
                                                   "score"),
                 ({}, "score"), ({"score": 0.5, "comment": "x" * 2001}, "comment"),
                 # Kept as sent, they would print as a terminal escape, a line that
                 # overwrites itself, text shown in another order than it reads.
                 ({"score": 0.5, "comment": "fine\x1b[2J"}, "comment"),
                 ({"score": 0.5, "comment": "good\rbad"}, "comment"),
                 ({"score": 0.5, "comment": "cost \u202e01$"}, "comment"),
                 ({"score": 0.5, "comment": "a \u2066b\u2069"}, "comment"),
                 ({"score": 0.5, "model": "gpt-99"}, "model"),
                 ({"score": 0.5, "model": "m" * (MAX_MODEL_NAME + 1)}, "model"),
                 ({"score": 0.5, "extra": 1}, "extra")]
        for body, field in cases:
            r = feedback(server, decision, **body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["param"] == field, (body, r.json())
        # A comment's bound is one rule, said alike over HTTP and in Python (the command
        # line's names --comment).
        said = "comment: must have at most 2,000 characters, got 2,001"
        assert feedback(server, decision, score=0.5, comment="x" * 2001).json()["error"][
            "message"] == said
        with pytest.raises(InvalidInputError) as refused:
            server.service.gateway.report_outcome(decision, 0.5, comment="x" * 2001)
        assert str(refused.value) == said
        # A model's name is bounded as everywhere else a request names a model.
        long = feedback(server, decision, score=0.5, model="m" * (MAX_MODEL_NAME + 1)).json()
        assert f"at most {MAX_MODEL_NAME} characters" in long["error"]["message"], long
        neither = feedback(server, decision).json()["error"]["message"]
        assert "score" in neither and "success" in neither and "quality_score" not in neither
        assert "true/false" in neither  # JSON's words, not Python's
        raw = httpx.post(f"{server.base}/v1/feedback", timeout=10, headers={
            "content-type": "application/json"},
            content=b'{"decision_id": "%s", "score": NaN}' % decision.encode())
        assert raw.status_code == 400 and raw.json()["error"]["param"] == "score"
        assert "finite" in raw.json()["error"]["message"]
        missing = feedback(server, "0" * 32, score=0.5)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "decision_not_found"
        assert _status(server)["learned_router"]["events"] == 0
        assert _status(server)["feedback"] == {}
        bidi = feedback(server, decision, score=0.5, comment="cost \u202e01$").json()
        assert "U+202E (character 6)" in bidi["error"]["message"], bidi
        # Lines (as a browser's form sends them), tabs and right-to-left text are a note's.
        ok = feedback(server, decision, score=0.5,
                      comment="fine\r\nall of it\t\u05e9\u05dc\u05d5\u05dd").json()
        assert ok["replaced"] is False  # nothing before it was learned


def _prompt_hash(prompt: str) -> str:
    """What a chat request's decision carries as its prompt_hash: the SHA-256 of its last user
    turn (what ``auto`` routes on), stripped."""
    return hashlib.sha256(prompt.strip().encode("utf-8")).hexdigest()


def _by_hash(server: ThreadServer, body: dict[str, Any], key: str | None = None
             ) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.base}/v1/feedback", json=body, headers=headers, timeout=15)


def test_feedback_by_prompt_hash_teaches_the_latest_decision_of_that_prompt_across_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """An outcome may name its decision by the prompt's hash: the latest decision routed on
    that prompt takes it, exactly as by its id (the log keeps that id, so a restart replays
    it). The store keeps each decision's hash with it: after a restart or a reload the latest
    decision made before is found by it, as by its id (an older one of the same prompt read
    back by its id does not take its place), until one is made since."""
    prompt = f"  {math_prompt(41)}\n"
    hashed = _prompt_hash(prompt)
    with learning_server(fake, tmp_path) as server:
        first = chat(server, prompt)[0]["x-switchpoint-decision-id"]
        latest = chat(server, prompt)[0]["x-switchpoint-decision-id"]
        assert first != latest
        r = _by_hash(server, {"prompt_hash": hashed, "score": 0.0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["decision_id"], body["model"], body["quality"], body["kind"],
                body["teaches_routing"], body["replaced"]) == (
            latest, "strong", 0.0, "decision", True, False)
        again = feedback(server, latest, score=1.0).json()  # the same decision, by its id
        assert (again["replaced"], again["previous_quality"]) == (True, 0.0)
        assert _status(server)["learned_router"]["events"] == 2
        assert _status(server)["feedback"]["strong"] == {"n": 1, "mean_quality": 1.0}
    with learning_server(fake, tmp_path) as server:
        assert _status(server)["learned_router"]["events"] == 2  # replayed from the log
        found = _by_hash(server, {"prompt_hash": hashed, "score": 0.5})
        assert found.status_code == 200, found.text
        body = found.json()
        assert (body["decision_id"], body["model"], body["kind"], body["teaches_routing"],
                body["replaced"], body["previous_quality"]) == (
            latest, "strong", "decision", True, True, 1.0)
        older = feedback(server, first, score=0.0).json()  # read back from the store by its id
        assert (older["decision_id"], older["replaced"]) == (first, False)
        still = _by_hash(server, {"prompt_hash": hashed, "score": 0.25}).json()
        assert (still["decision_id"], still["previous_quality"]) == (latest, 0.5)
        assert _status(server)["learned_router"]["events"] == 5
        assert post(server, "/v1/router/reload").status_code == 200
        reloaded = _by_hash(server, {"prompt_hash": hashed, "score": 0.75}).json()
        assert (reloaded["decision_id"], reloaded["previous_quality"]) == (latest, 0.25)
        since = chat(server, prompt)[0]["x-switchpoint-decision-id"]
        taken = _by_hash(server, {"prompt_hash": hashed, "success": True}).json()
        assert (taken["decision_id"], taken["quality"], taken["replaced"]) == (since, 1.0, False)
        assert _status(server)["learned_router"]["events"] == 7
        assert _status(server)["feedback"]["strong"] == {"n": 3, "mean_quality": 0.583333}
    with learning_server(fake, tmp_path) as server:  # the log names each decision by its id
        assert _status(server)["learned_router"]["events"] == 7
        unknown = _by_hash(server, {"prompt_hash": "0" * 64, "score": 0.5})
        assert unknown.status_code == 404, unknown.text
        error = unknown.json()["error"]
        assert (error["code"], error["param"]) == ("decision_not_found", "prompt_hash"), error
        assert f'no remembered decision has prompt hash "{"0" * 64}"' in error["message"]


# The routing answer's first fields, always there, in their order.
ROUTE_FIELDS = ["selected_model", "cluster_id", "expected_error", "cost_adjusted_score",
                "all_scores", "cache_hit", "usage", "decision_id"]


def test_a_routing_answer_carries_the_prompt_hash_feedback_takes(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """POST /v1/route's answer carries its decision's prompt_hash, after its first eight fields,
    when it routed on a prompt: feedback naming the decision by it teaches that decision, as
    by its id. A decision routed on an embedding alone has none, and the answer carries none."""
    prompt = math_prompt(43)
    with learning_server(fake, tmp_path) as server:
        routed = post(server, "/v1/route", {"prompt": prompt})
        assert routed.status_code == 200, routed.text
        answer = routed.json()
        assert list(answer)[:9] == [*ROUTE_FIELDS, "prompt_hash"], list(answer)
        assert answer["prompt_hash"] == hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        taught = _by_hash(server, {"prompt_hash": answer["prompt_hash"], "score": 0.0})
        assert taught.status_code == 200, taught.text
        body = taught.json()
        assert (body["decision_id"], body["model"], body["kind"], body["teaches_routing"],
                body["replaced"]) == (answer["decision_id"], answer["selected_model"],
                                      "decision", True, False)
        assert _status(server)["learned_router"]["events"] == 1
        # The same decision, by its id: the outcome given by the hash is the one replaced.
        again = feedback(server, answer["decision_id"], score=1.0).json()
        assert (again["replaced"], again["previous_quality"]) == (True, 0.0), again
        # The same prompt routed again carries the same hash, which names the latest decision.
        later = post(server, "/v1/route", {"prompt": prompt}).json()
        assert later["decision_id"] != answer["decision_id"]
        assert later["prompt_hash"] == answer["prompt_hash"]
        latest = _by_hash(server, {"prompt_hash": later["prompt_hash"], "score": 0.5}).json()
        assert (latest["decision_id"], latest["replaced"]) == (later["decision_id"], False)
        # Routed on an embedding alone: no prompt_hash.
        dimension = server.service.gateway.state.live().router.weights.dimension
        alone = post(server, "/v1/route", {"embedding": [0.1] * dimension})
        assert alone.status_code == 200, alone.text
        assert "prompt_hash" not in alone.json() and alone.json()["decision_id"]


def test_feedback_names_its_decision_by_exactly_one_of_decision_id_and_prompt_hash(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        headers = chat(server, math_prompt(42))[0]
        decision, hashed = headers["x-switchpoint-decision-id"], _prompt_hash(math_prompt(42))
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"decision_id": decision, "prompt_hash": hashed, "score": 0.5}, "prompt_hash",
             "give decision_id or prompt_hash, not both"),
            ({"score": 0.5}, "decision_id", "is needed, or prompt_hash in its place"),
            ({"decision_id": None, "prompt_hash": None, "score": 0.5}, "decision_id",
             "is needed, or prompt_hash in its place"),
            ({"prompt_hash": "F" * 64, "score": 0.5}, "prompt_hash",
             'holds "F" (character 1), which no prompt hash holds'),
            ({"prompt_hash": hashed[:63], "score": 0.5}, "prompt_hash",
             "is 63 characters: a prompt hash is the 64 lowercase hexadecimal digits"),
            ({"prompt_hash": decision, "score": 0.5}, "prompt_hash", "is 32 characters"),
            ({"prompt_hash": 5, "score": 0.5}, "prompt_hash", "string"),
            ({"prompt_hash": hashed, "score": 1.5}, "score", "")]
        for body, param, says in cases:
            r = _by_hash(server, body)
            assert r.status_code == 400, (body, r.text)
            error = r.json()["error"]
            assert error["param"] == param and says in error["message"], (body, error)
            if "needed" in says or "not both" in says:  # (both named, and what each is)
                assert "x-switchpoint-decision-id" in error["message"], error
                assert "SHA-256 of the prompt" in error["message"], error
        unknown = _by_hash(server, {"prompt_hash": "0" * 64, "score": 0.5})
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["error"]["param"] == "prompt_hash"
        assert _status(server)["learned_router"]["events"] == 0  # nothing refused was learned
        document = httpx.get(f"{server.base}/openapi.json", timeout=15).json()
        schema = document["paths"]["/v1/feedback"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]
        field = schema["properties"]["prompt_hash"]
        assert field["pattern"] == "^[0-9a-f]{64}$" and field["maxLength"] == 64, field
        assert re.fullmatch(field["pattern"], hashed)
        assert all(re.fullmatch(field["pattern"], example["prompt_hash"])
                   for example in schema["examples"] if "prompt_hash" in example)
        assert {"required": ["prompt_hash"]} in schema["oneOf"]
        assert schema["properties"]["comment"]["maxLength"] == 2000  # (the gateway's bound)
        assert "required" not in schema or "decision_id" not in schema["required"]


def test_with_client_keys_a_prompt_hash_names_the_latest_decision_of_the_callers_tenant(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    extra = "auth: keys\ntenants: {acme: {}, globex: {}, initech: {}}\n"
    with learning_server(fake, tmp_path, extra) as server:
        keys = {t: post(server, "/v1/router/keys", {"tenant": t}).json()["key"]
                for t in ("acme", "globex", "initech")}
        prompt = math_prompt(43)
        acme = chat(server, prompt, key=keys["acme"])[0]["x-switchpoint-decision-id"]
        globex = chat(server, prompt, key=keys["globex"])[0]["x-switchpoint-decision-id"]
        body = {"prompt_hash": _prompt_hash(prompt), "score": 0.25}
        mine = _by_hash(server, body, keys["acme"]).json()
        assert (mine["decision_id"], mine["tenant"]) == (acme, "acme")  # not globex's, later
        theirs = _by_hash(server, body, keys["globex"]).json()
        assert (theirs["decision_id"], theirs["tenant"]) == (globex, "globex")
        none = _by_hash(server, body, keys["initech"])
        assert none.status_code == 404 and none.json()["error"]["code"] == "decision_not_found"
        assert acme not in none.text and globex not in none.text and "acme" not in none.text
        assert _by_hash(server, body).status_code == 401
        for tenant, events in (("acme", 1), ("globex", 1), ("initech", 0)):
            status = get(server, "/v1/router/status", key=keys[tenant]).json()
            assert status["tenants"][tenant]["learned_router"]["events"] == events


def test_with_client_keys_a_prompt_hash_finds_the_callers_tenants_decisions_after_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Read back from the store after a restart, a prompt hash still names the latest
    decision of the caller's tenant (the admin token's: of any tenant); another tenant's
    decision is a 404, as one never made, naming neither it nor its tenant."""
    admin = "a" * 32
    extra = "auth: keys\nadmin_token_env: ADMIN_TOKEN\ntenants: {acme: {}, globex: {}}\n"
    environ = {"ADMIN_TOKEN": admin}
    shared, own = math_prompt(46), math_prompt(47)
    with learning_server(fake, tmp_path, extra, environ=environ) as server:
        keys = {t: post(server, "/v1/router/keys", {"tenant": t}, key=admin).json()["key"]
                for t in ("acme", "globex")}
        acme = chat(server, shared, key=keys["acme"])[0]["x-switchpoint-decision-id"]
        globex = chat(server, shared, key=keys["globex"])[0]["x-switchpoint-decision-id"]
        acme_own = chat(server, own, key=keys["acme"])[0]["x-switchpoint-decision-id"]
    with learning_server(fake, tmp_path, extra, environ=environ) as server:
        mine = _by_hash(server, {"prompt_hash": _prompt_hash(shared), "score": 0.25},
                        keys["acme"]).json()
        assert (mine["decision_id"], mine["tenant"], mine["kind"]) == (acme, "acme", "decision")
        theirs = _by_hash(server, {"prompt_hash": _prompt_hash(own), "score": 0.25},
                          keys["globex"])
        assert theirs.status_code == 404, theirs.text
        error = theirs.json()["error"]
        assert (error["code"], error["param"]) == ("decision_not_found", "prompt_hash"), error
        assert acme_own not in theirs.text and "acme" not in theirs.text
        latest = _by_hash(server, {"prompt_hash": _prompt_hash(shared), "score": 0.5},
                          admin).json()
        assert (latest["decision_id"], latest["tenant"]) == (globex, "globex")
        assert _by_hash(server, {"prompt_hash": _prompt_hash(own), "score": 1.0},
                        keys["acme"]).json()["decision_id"] == acme_own
        for tenant, events in (("acme", 2), ("globex", 1)):
            status = get(server, "/v1/router/status", key=keys[tenant]).json()
            assert status["tenants"][tenant]["learned_router"]["events"] == events


def test_with_client_keys_a_key_scores_only_its_tenants_decisions(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    extra = "auth: keys\ntenants: {acme: {}, globex: {}}\n"
    with learning_server(fake, tmp_path, extra) as server:
        keys = {t: post(server, "/v1/router/keys", {"tenant": t}).json()["key"]
                for t in ("acme", "globex")}
        acme_headers = chat(server, math_prompt(21), key=keys["acme"])[0]
        acme = acme_headers["x-switchpoint-decision-id"]
        # Its request id too: the 404 names what the caller sent, not the decision behind it.
        by_request = feedback(server, acme_headers["x-switchpoint-request-id"],
                              key=keys["globex"], score=0.0)
        assert by_request.status_code == 404 and acme not in by_request.text
        assert acme_headers["x-switchpoint-request-id"] in by_request.text
        assert feedback(server, acme, score=0.5).status_code == 401
        leak = feedback(server, acme, key=keys["globex"], score=0.0)
        assert leak.status_code == 404
        unknown = feedback(server, "f" * 32, key=keys["globex"], score=0.0)
        assert leak.json()["error"]["code"] == unknown.json()["error"]["code"]
        assert leak.json()["error"]["code"] == "decision_not_found"
        assert "acme" not in leak.text
        assert "acme" not in get(server, "/v1/router/status", key=keys["globex"]).text
        body = feedback(server, acme, key=keys["acme"], score=0.0).json()
        assert (body["tenant"], body["replaced"]) == ("acme", False)
        acme_status = get(server, "/v1/router/status", key=keys["acme"]).json()
        assert list(acme_status["tenants"]) == ["acme"]
        assert acme_status["tenants"]["acme"]["learned_router"]["events"] == 1
        globex_status = get(server, "/v1/router/status", key=keys["globex"]).json()
        assert globex_status["tenants"]["globex"]["learned_router"]["events"] == 0


#: Two tenants sharing a memory of 4 decisions open to feedback, each with keys of its own.
_TWO_TENANTS = "auth: keys\ntenants: {acme: {}, globex: {}}\nlearning: {memory_size: 4}\n"


def _flooded(server: ThreadServer) -> tuple[dict[str, str], list[str], list[dict[str, Any]]]:
    """A key of each tenant of :data:`_TWO_TENANTS`, the ids of acme's 2 routing decisions,
    then globex's 12 routing answers (routing calls no model, so flooding costs nothing)."""
    keys = {t: post(server, "/v1/router/keys", {"tenant": t}).json()["key"]
            for t in ("acme", "globex")}
    acme = [post(server, "/v1/route", {"prompt": math_prompt(80 + n)},
                 key=keys["acme"]).json()["decision_id"] for n in range(2)]
    flood = [post(server, "/v1/route", {"prompt": math_prompt(90 + n)},
                  key=keys["globex"]).json() for n in range(12)]
    return keys, acme, flood


def test_a_tenant_routing_without_end_does_not_push_another_tenants_decisions_out(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The decisions open to feedback are shared fairly: a key that routes more than the
    memory holds (routing calls no model, so it costs nothing) pushes out its own tenant's
    oldest decisions, not another tenant's, whose feedback is still taken."""
    with learning_server(fake, tmp_path, _TWO_TENANTS) as server:
        keys, acme, routed = _flooded(server)
        flood = [r["decision_id"] for r in routed]
        for decision_id in acme:
            r = feedback(server, decision_id, key=keys["acme"], score=0.5)
            assert r.status_code == 200, r.text
        # Its own oldest went (it holds the memory's other half, its newest two).
        assert feedback(server, flood[0], key=keys["globex"], score=0.5).status_code == 404
        assert feedback(server, flood[-1], key=keys["globex"], score=0.5).status_code == 200


def test_a_key_narrowed_to_some_models_sees_the_status_of_those_models_only(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    extra = "auth: keys\ntenants: {acme: {memory: {min_records: 4}}}\n"
    with learning_server(fake, tmp_path, extra) as server:
        wide = post(server, "/v1/router/keys", {"tenant": "acme"}).json()["key"]
        narrow = post(server, "/v1/router/keys",
                      {"tenant": "acme", "models": ["cheap", "auto"]}).json()["key"]
        for n in range(2):
            headers = chat(server, math_prompt(40 + n), key=wide)[0]
            assert headers["x-switchpoint-model"] == "strong"
            assert feedback(server, headers["x-switchpoint-decision-id"], key=wide,
                            score=0.9).status_code == 200
        headers = chat(server, math_prompt(50), key=narrow)[0]
        assert headers["x-switchpoint-model"] == "cheap"
        assert feedback(server, headers["x-switchpoint-decision-id"], key=narrow,
                        score=0.5).status_code == 200

        seen = get(server, "/v1/router/status", key=narrow).json()["tenants"]["acme"]
        assert seen["narrowed_to"] == ["cheap"]
        # The models it is told of are the model list's, auto aside (no model of its own).
        listed = [m["id"] for m in get(server, "/v1/models", key=narrow).json()["data"]]
        assert listed == ["auto", *seen["narrowed_to"]]
        assert "strong" not in str(seen)
        assert seen["memory"]["models"] == {"cheap": 1}
        assert (seen["memory"]["examples"], seen["memory"]["progress"]) == (1, 0.25)
        assert seen["learned_router"] == {"events": 1, "outcomes": 1}
        assert list(seen["feedback"]) == ["cheap"]

        whole = get(server, "/v1/router/status", key=wide).json()["tenants"]["acme"]
        assert "narrowed_to" not in whole
        assert whole["memory"]["models"] == {"strong": 2, "cheap": 1}
        assert (whole["memory"]["examples"], whole["memory"]["progress"]) == (3, 0.75)
        assert whole["learned_router"] == {"events": 3, "outcomes": 3}
        assert sorted(whole["feedback"]) == ["cheap", "strong"]
    with learning_server(fake, tmp_path, extra) as server:  # the same, after a restart
        again = get(server, "/v1/router/status", key=narrow).json()["tenants"]["acme"]
        assert again == seen


def test_a_narrowed_keys_status_counts_outcomes_of_its_models_learned_under_their_profiles(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A catalog model whose learned profile has another name (``budget`` answers for the
    ``cheap`` profile): a key narrowed to it sees the learned router's outcomes about it."""
    extra = "auth: keys\ntenants: {acme: {}}\n"
    budget = ("  - {name: budget, profile: cheap, base_url: \"{base}\", api_key_env: FAKE_KEY,"
              " input_per_mtok: 1, output_per_mtok: 1}\n")
    with learning_server(fake, tmp_path, extra, more_models=budget) as server:
        narrow = post(server, "/v1/router/keys",
                      {"tenant": "acme", "models": ["budget", "auto"]}).json()["key"]
        headers = chat(server, math_prompt(60), key=narrow)[0]
        assert headers["x-switchpoint-model"] == "budget"
        assert feedback(server, headers["x-switchpoint-decision-id"], key=narrow,
                        score=0.5).status_code == 200
        seen = get(server, "/v1/router/status", key=narrow).json()["tenants"]["acme"]
        assert seen["narrowed_to"] == ["budget"]
        wide = post(server, "/v1/router/keys", {"tenant": "acme"}).json()["key"]
        whole = get(server, "/v1/router/status", key=wide).json()["tenants"]["acme"]
        assert whole["learned_router"] == {"events": 1, "outcomes": 1}, whole
        assert seen["learned_router"] == whole["learned_router"]


def test_the_admins_status_of_a_tenant_shows_the_models_the_tenant_may_use(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``GET /v1/router/status?tenant=acme`` with the admin token: once acme's config lists
    its models (a reload narrowed it), the view counts those alone, as acme's keys see it;
    the deployment's view of every tenant stays whole."""
    var, token = "SP_STATUS_ADMIN", "status-admin-token-0123456789"
    admin = {"authorization": f"Bearer {token}"}
    memory = "memory: {min_records: 4}"
    wide_config = f"auth: keys\nadmin_token_env: {var}\ntenants: {{acme: {{{memory}}}}}\n"
    with learning_server(fake, tmp_path, wide_config, environ={var: token}) as server:
        def keyed(body: dict[str, Any]) -> str:
            r = httpx.post(f"{server.base}/v1/router/keys", json=body, headers=admin,
                           timeout=15)
            assert r.status_code == 201, r.text
            return str(r.json()["key"])

        def status(**params: str) -> dict[str, Any]:
            r = httpx.get(f"{server.base}/v1/router/status", params=params, headers=admin,
                          timeout=15)
            assert r.status_code == 200, r.text
            return dict(r.json()["tenants"]["acme"])

        wide = keyed({"tenant": "acme"})
        for n in range(2):
            headers = chat(server, math_prompt(70 + n), key=wide)[0]
            assert headers["x-switchpoint-model"] == "strong"
            assert feedback(server, headers["x-switchpoint-decision-id"], key=wide,
                            score=0.9).status_code == 200
        narrow = keyed({"tenant": "acme", "models": ["cheap", "auto"]})
        headers = chat(server, math_prompt(80), key=narrow)[0]
        assert headers["x-switchpoint-model"] == "cheap"
        assert feedback(server, headers["x-switchpoint-decision-id"], key=narrow,
                        score=0.5).status_code == 200
        whole = status(tenant="acme")
        assert "narrowed_to" not in whole and whole["memory"]["models"] == {"strong": 2,
                                                                            "cheap": 1}
        settings_for(fake, tmp_path, wide_config.replace(
            memory, f"models: [cheap, auto], {memory}"), environ={var: token})
        r = httpx.post(f"{server.base}/v1/router/reload", headers=admin, timeout=60)
        assert r.status_code == 200, r.text

        seen = status(tenant="acme")
        assert seen["narrowed_to"] == ["cheap"]
        assert "strong" not in str(seen)
        assert seen["memory"]["models"] == {"cheap": 1}
        assert seen["learned_router"] == {"events": 1, "outcomes": 1}
        assert list(seen["feedback"]) == ["cheap"]
        # as acme's keys see it, the one named to models and the one that is not
        for key in (narrow, wide):
            mine = get(server, "/v1/router/status", key=key).json()["tenants"]["acme"]
            assert mine == seen
        everyone = status()  # (no tenant named: the deployment's whole view)
        assert "narrowed_to" not in everyone
        assert everyone["memory"]["models"] == {"strong": 2, "cheap": 1}


def test_the_in_process_gateway_reports_outcomes(fake: FakeProviderProcess,
                                                 tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path, "tenants: {acme: {}}\n")
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        reply = gateway.complete([{"role": "user", "content": math_prompt(31)}], tenant="acme")
        decision_id = reply.switchpoint.decision_id
        assert reply.switchpoint.decision is not None
        with pytest.raises(DecisionNotFoundError):
            gateway.report_outcome("0" * 32, 0.5)
        with pytest.raises(InvalidInputError) as bad:
            gateway.report_outcome(decision_id, math.nan)
        assert bad.value.field == "quality_score"
        result = gateway.report_outcome(decision_id, success=False, tenant="acme",
                                        comment="wrong")
        assert (result.outcome.tenant, result.outcome.quality, result.kind) == (
            "acme", 0.0, "decision")
        assert gateway.router.learner.n_events("acme") == 1
        assert gateway.router.learner.n_events("default") == 0
        named = gateway.complete([{"role": "user", "content": "hi"}], model="cheap",
                                 exact=True)
        assert named.switchpoint.decision_id == named.switchpoint.request_id
        observed = gateway.report_outcome(named.switchpoint.decision_id, 0.9)
        assert (observed.kind, observed.outcome.model) == ("model", "cheap")
        # By the prompt's hash, which the decision carries: the latest decision of the prompt.
        hashed = reply.switchpoint.decision.prompt_hash
        assert hashed == hashlib.sha256(math_prompt(31).encode()).hexdigest()
        by_hash = gateway.report_outcome(prompt_hash=hashed, quality_score=1.0, tenant="acme")
        assert (by_hash.outcome.decision_id, by_hash.outcome.replaced) == (decision_id, True)
        with pytest.raises(DecisionNotFoundError) as unknown:
            gateway.report_outcome(prompt_hash="0" * 64, quality_score=1.0, tenant="acme")
        assert unknown.value.field == "prompt_hash"
        with pytest.raises(InvalidInputError) as both:
            gateway.report_outcome(decision_id, 1.0, prompt_hash=hashed)
        assert both.value.field == "prompt_hash"
        assert gateway.router.learner.n_events("acme") == 2
        # What cannot be kept is refused before anything is learned.
        with pytest.raises(InvalidInputError) as bad:
            gateway.report_outcome(decision_id, 0.5, tenant="acme", comment="bad \ud800")
        assert bad.value.field == "comment" and "lone surrogate" in str(bad.value)
        assert gateway.router.learner.n_events("acme") == 2
    with pytest.raises(StoreError, match="the gateway is closed"):
        gateway.report_outcome(decision_id, 1.0, tenant="acme")
    assert gateway.router.learner.n_events("acme") == 2


def test_decisions_open_to_feedback_are_bounded_by_the_learning_memory(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    import sqlite3

    from switchpoint.gateway.learning import PRUNE_EVERY

    extra = "learning: {memory_size: 10}\nstore: {synchronous: normal}\n"
    settings = settings_for(fake, tmp_path, extra)
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        ids = [gateway.route(math_prompt(i)).decision_id for i in range(PRUNE_EVERY + 20)]
    conn = sqlite3.connect(settings.db_path)
    try:
        kept = conn.execute("SELECT count(*) FROM pending").fetchone()[0]
    finally:
        conn.close()
    assert 10 <= kept <= 10 + 20  # pruned to the memory at the last prune, plus what came since
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        assert gateway.report_outcome(ids[-1], 0.5).outcome.replaced is False
        with pytest.raises(DecisionNotFoundError):
            gateway.report_outcome(ids[0], 0.5)


def _pending_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM pending").fetchone()[0])
    finally:
        conn.close()


def test_a_reload_that_makes_the_learning_memory_smaller_deletes_the_rows_past_it_at_once(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrinking learning.memory_size at a reload deletes the pending rows past it then, not
    at the next prune (every so many routing decisions): those let go of waited in memory,
    as many as the shrink let go of, and in the table until then."""
    monkeypatch.setattr(open_decisions, "PRUNE_EVERY", 4)
    settings = settings_for(fake, tmp_path, "learning: {memory_size: 12}\n")
    config = tmp_path / "switchpoint.yaml"
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        ids = [gateway.route(math_prompt(720 + i)).decision_id for i in range(12)]
        _until(lambda: _pending_rows(settings.db_path) == 12, "the decisions kept")
        config.write_text(config.read_text(encoding="utf-8").replace(
            "memory_size: 12", "memory_size: 3"), encoding="utf-8")
        gateway.reload()
        _until(lambda: _pending_rows(settings.db_path) == 3, "the rows past the memory deleted")
        with pytest.raises(DecisionNotFoundError):
            gateway.report_outcome(ids[-4], 0.5)
        assert gateway.report_outcome(ids[-3], 0.5).outcome.replaced is False


def test_a_start_with_a_smaller_learning_memory_deletes_the_rows_past_it(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pending table read at a start lets go of the rows past learning.memory_size by the
    memory's rule, and deletes them as a prune does (each full batch at once, the rest at
    the next prune): they are not left in the table to be read again at every start."""
    monkeypatch.setattr(open_decisions, "PRUNE_EVERY", 4)
    settings = settings_for(fake, tmp_path, "learning: {memory_size: 12}\n")
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        ids = [gateway.route(math_prompt(760 + i)).decision_id for i in range(12)]
        _until(lambda: _pending_rows(settings.db_path) == 12, "the decisions kept")
    settings = settings_for(fake, tmp_path, "learning: {memory_size: 3}\n")  # (restarted)
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        with pytest.raises(DecisionNotFoundError):
            restarted.report_outcome(ids[-4], 0.5)
        # (9 let go of: two batches of 4 deleted at once, the last waits for a prune)
        _until(lambda: _pending_rows(settings.db_path) == 4, "the rows past the memory deleted")
        assert restarted.report_outcome(ids[-3], 0.5).outcome.replaced is False


def test_a_decision_restored_after_a_restart_goes_first_as_its_row_does(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A decision feedback restored from the pending table after a restart keeps the place
    its row has: once newer decisions push that row out, a repeat of its feedback is refused
    as it is after another restart, where the memory held it as its newest and took it."""
    settings = settings_for(fake, tmp_path, "learning: {memory_size: 3}\n")
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        ids = [gateway.route(math_prompt(730 + i)).decision_id for i in range(3)]
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        assert restarted.report_outcome(ids[0], 0.5).outcome.replaced is False  # restored
        restarted.route(math_prompt(733))  # the oldest row, ids[0]'s, goes
        with pytest.raises(DecisionNotFoundError):
            restarted.report_outcome(ids[0], 1.0)
        assert restarted.report_outcome(ids[1], 0.5).outcome.replaced is False
    with Gateway(settings, loader=loader, env=KEYS) as again:
        again.start()
        with pytest.raises(DecisionNotFoundError):
            again.report_outcome(ids[0], 1.0)


def test_a_decision_the_pending_table_let_go_of_takes_no_feedback_though_memory_held_it(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """After a restart the pending table counts the decisions kept before it, which the
    memory does not hold: a tenant's decision the table let go of by its rule (another
    tenant held fewer) was still in memory and took feedback, refused after the next restart.
    It is let go of by both, live and after a restart."""
    settings = settings_for(fake, tmp_path,
                            "tenants: {acme: {}, globex: {}}\nlearning: {memory_size: 4}\n")
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        for i in range(4):
            gateway.route(math_prompt(740 + i), tenant="acme")
    ids: list[str] = []
    for restart in range(2):
        with Gateway(settings, loader=loader, env=KEYS) as restarted:
            restarted.start()
            if restart == 0:  # globex's first goes as its third comes (acme then holds 2)
                ids = [restarted.route(math_prompt(750 + i), tenant="globex").decision_id
                       for i in range(3)]
            with pytest.raises(DecisionNotFoundError):
                restarted.report_outcome(ids[0], 0.5, tenant="globex")
            assert restarted.report_outcome(ids[1], 0.5, tenant="globex").outcome is not None


def test_a_decision_past_the_learning_memory_takes_no_feedback_before_the_table_is_pruned(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The pending table is pruned to the last memory_size decisions only every so many
    writes: a decision older than them, gone from memory but not yet pruned, still took
    feedback (it was found in the table), live and after a restart."""
    settings = settings_for(fake, tmp_path, "learning: {memory_size: 5}\n")
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        ids = [gateway.route(math_prompt(700 + i)).decision_id for i in range(8)]
        with pytest.raises(DecisionNotFoundError):
            gateway.report_outcome(ids[0], 0.5)
        assert gateway.report_outcome(ids[-5], 0.5).outcome.replaced is False
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        for old in ids[:3]:
            with pytest.raises(DecisionNotFoundError):
                gateway.report_outcome(old, 0.5)
        assert gateway.report_outcome(ids[-1], 0.5).outcome.replaced is False
        assert gateway.report_outcome(ids[-5], 0.2).outcome.replaced is True


def test_a_policy_swap_replays_the_log_into_the_new_policy(fake: FakeProviderProcess,
                                                          tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        ids = [chat(server, math_prompt(600 + i))[0]["x-switchpoint-decision-id"]
               for i in range(3)]
        for decision_id in ids[:2]:
            assert feedback(server, decision_id, score=0.0).status_code == 200
        swapped = post(server, "/v1/router/policy/knn")
        assert swapped.status_code == 200 and swapped.json()["policy"] == "knn"
        assert _status(server)["learned_router"]["events"] == 2  # replayed by their vectors
        # A decision the cluster router made before the swap still teaches the knn router.
        late = feedback(server, ids[2], score=0.0).json()
        assert (late["kind"], late["teaches_routing"], late["replaced"]) == ("decision", True,
                                                                             False)
        again = feedback(server, ids[0], score=1.0).json()
        assert (again["replaced"], again["previous_quality"]) == (True, 0.0)
        assert _status(server)["learned_router"]["events"] == 4


def test_feedback_on_a_decision_the_live_policy_cannot_read_is_kept_as_an_observation(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A decision made on vectors, then a swap to a policy that reads the text (which is not
    kept), or the reverse: its outcome cannot teach the new policy, so it is kept as a
    quality observation of the model that answered, not refused as unknown."""
    with learning_server(fake, tmp_path) as server:
        made = chat(server, math_prompt(700))[0]["x-switchpoint-decision-id"]
        assert post(server, "/v1/router/policy/tiers").json()["policy"] == "tiers"
        r = feedback(server, made, score=0.25)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["kind"], body["teaches_routing"], body["model"]) == ("model", False,
                                                                          "strong")
        assert "cannot read" in body["note"]
        assert feedback(server, made, score=0.5).json()["replaced"] is True
        text_made = chat(server, math_prompt(701))[0]["x-switchpoint-decision-id"]
        assert post(server, "/v1/router/policy/cluster").json()["policy"] == "cluster"
        back = feedback(server, text_made, score=1.0).json()
        assert (back["kind"], back["teaches_routing"]) == ("model", False)
        assert feedback(server, "0" * 32, score=1.0).status_code == 404  # unknown: still 404


def test_with_prices_feedback_takes_the_answers_cost_from_the_gateways_accounting(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        headers, completion = chat(server, math_prompt(12))
        decision = headers["x-switchpoint-decision-id"]
        priced = completion.to_dict()["usage"]["cost"]
        assert priced > 0
        for cost, words in ((-1, ">= 0"), ("0.1", "number"), (True, "number"),
                            (1e308, "<= 1,000")):
            r = feedback(server, decision, score=0.5, cost=cost)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "cost" and words in r.json()["error"]["message"]
        assert _status(server)["learned_router"]["events"] == 0
        taken = feedback(server, decision, score=0.5).json()
        assert (taken["cost_from"], taken["teaches_routing"]) == ("answer", True)
        assert taken["cost"] == pytest.approx(priced, rel=1e-6)
        # A cost the caller gives is taken instead, in USD.
        other = chat(server, math_prompt(13))[0]["x-switchpoint-decision-id"]
        given = feedback(server, other, score=0.5, cost=0.02).json()
        assert (given["cost"], given["cost_from"]) == (0.02, "feedback")
        assert _status(server)["learned_router"]["events"] == 2
        # The answer shows a cost to the 10 places dollars are kept to, not a float's noise.
        noisy = feedback(server, other, score=0.5, cost=11 * 0.15e-6 + 5 * 0.6e-6)
        assert '"cost":4.65e-06' in noisy.text.replace(" ", ""), noisy.text
        # A repeat without a cost keeps the one taken with the first outcome, given or priced.
        again = feedback(server, other, score=0.7).json()
        assert (again["replaced"], again["cost"], again["cost_from"]) == (True, None, "kept")
        priced_again = feedback(server, decision, score=0.1).json()
        assert (priced_again["cost"], priced_again["cost_from"]) == (None, "kept")
        # About another model first: the answer's cost is still taken when it comes to it.
        third = chat(server, math_prompt(14))
        answered_by = third[1].model
        other_model = next(m for m in ("strong", "cheap") if m != answered_by)
        about_other = feedback(server, third[0]["x-switchpoint-decision-id"], score=0.5,
                               model=other_model).json()
        assert about_other["cost_from"] is None  # no answer of that model to price
        back = feedback(server, third[0]["x-switchpoint-decision-id"], score=0.6).json()
        assert (back["model"], back["cost_from"]) == (answered_by, "answer")
        r = feedback(server, other, score=0.7, cost=True)
        assert r.status_code == 400 and "got true" in r.json()["error"]["message"]


def test_under_knn_a_repeat_says_it_keeps_a_cost_only_when_that_cost_was_measured(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The knn policy keeps a cost with every outcome, the decision's estimate when none was
    given or priced: a repeat about the same model without a cost says it keeps one
    (``cost_from: "kept"``) only when the cost kept was measured, live and after a start from
    the checkpoint."""
    with learning_server(fake, tmp_path, "policy: knn\n") as server:
        headers, completion = chat(server, math_prompt(60))
        estimated = headers["x-switchpoint-decision-id"]
        other = next(m for m in ("strong", "cheap") if m != completion.model)
        first = feedback(server, estimated, score=0.5, model=other).json()
        assert (first["kind"], first["cost"], first["cost_from"]) == ("decision", None, None)
        again = feedback(server, estimated, score=0.6, model=other).json()
        assert (again["replaced"], again["cost"], again["cost_from"]) == (True, None, None)
        priced = chat(server, math_prompt(61))[0]["x-switchpoint-decision-id"]
        assert feedback(server, priced, score=0.5).json()["cost_from"] == "answer"
        kept = feedback(server, priced, score=0.7).json()
        assert (kept["replaced"], kept["cost"], kept["cost_from"]) == (True, None, "kept")
    with learning_server(fake, tmp_path, "policy: knn\n") as server:
        live = server.service.gateway.state.live()
        assert live.router.policy.name == "knn"
        assert live.learning is not None and live.learning.restored == 4
        assert live.learning.replayed == 4  # (all of them from the checkpoint)
        restarted = feedback(server, estimated, score=0.7, model=other).json()
        assert (restarted["replaced"], restarted["cost_from"]) == (True, None)
        assert feedback(server, priced, score=0.8).json()["cost_from"] == "kept"


def strong_cost(gateway: Gateway) -> float:
    """What the gateway expects the strong model's answer to a math prompt to cost."""
    return gateway.route(math_prompt(999), cost_weight=0).expected_costs["strong"]


def test_with_prices_the_answers_costs_teach_and_survive_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path)

    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        before = strong_cost(gateway)
        for i in range(20):
            answer = gateway.complete([{"role": "user", "content": math_prompt(i)}],
                                      cost_weight=0)
            assert answer.switchpoint.model == "strong"
            result = gateway.report_outcome(answer.switchpoint.decision_id, 0.9)
            assert result.cost_from == "answer"
            assert result.cost == pytest.approx(answer.switchpoint.cost_usd, rel=1e-9)
        learned = strong_cost(gateway)
        # The fake's short echoes cost far less than the flat price (expected output tokens),
        # so the strong model's price on such prompts falls, weighed against its labels there.
        assert learned < 0.95 * before
        late = gateway.complete([{"role": "user", "content": math_prompt(50)}], cost_weight=0)
        measured = result.outcome.event.measured_cost
    with Gateway(settings, loader=loader, env=KEYS) as gateway:  # replayed from the log
        gateway.start()
        assert strong_cost(gateway) == pytest.approx(learned, rel=1e-9)
        # A decision made before the restart: its answer's cost and priced tokens were kept.
        result = gateway.report_outcome(late.switchpoint.decision_id, 0.9)
        assert (result.cost, result.cost_from) == (late.switchpoint.cost_usd, "answer")
        assert result.outcome.event.measured_cost == pytest.approx(measured, rel=0.2)


def _unpriced(fake: FakeProviderProcess, root: Path) -> Settings:
    settings_for(fake, root)
    text = re.sub(r"input_per_mtok: \d+,\s*output_per_mtok: \d+, ", "",
                  (root / "switchpoint.yaml").read_text(encoding="utf-8"))
    assert "per_mtok" not in text
    (root / "switchpoint.yaml").write_text(text, encoding="utf-8")
    settings = load_settings(root / "switchpoint.yaml", environ={})
    catalog = settings.catalog()
    assert catalog is not None and not catalog.all_priced
    return settings


def test_without_prices_a_measured_cost_teaches_and_survives_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    settings = _unpriced(fake, tmp_path)

    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        before = strong_cost(gateway)
        for i in range(20):
            d = gateway.route(math_prompt(i), cost_weight=0)
            assert d.selected_model == "strong"
            gateway.report_outcome(d.decision_id, 0.9, cost=20 * before)
        learned = strong_cost(gateway)
        assert learned > 3 * before
    with Gateway(settings, loader=loader, env=KEYS) as gateway:  # replayed from the log
        gateway.start()
        assert strong_cost(gateway) == pytest.approx(learned, rel=1e-9)


def _unanswered(server: ThreadServer, n: int) -> str:
    """The decision id of an ``auto`` chat request no model answered (each try got a 500)."""
    r = httpx.post(f"{server.base}/v1/chat/completions", timeout=30, json={
        "model": "auto", "messages": [{"role": "user",
                                       "content": math_prompt(n) + " [[fake:500]]"}]})
    assert r.status_code == 502, r.text
    return r.headers["x-switchpoint-decision-id"]


def _refused_for_no_answer(server: ThreadServer, decision: str) -> None:
    refused = feedback(server, decision, score=0.0)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
    assert "no answer from any model" in refused.json()["error"]["message"]


def test_feedback_on_an_auto_request_no_model_answered_is_refused_unless_it_names_one(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        decision = _unanswered(server, 31)
        _refused_for_no_answer(server, decision)
        assert _status(server)["learned_router"]["events"] == 0
        named = feedback(server, decision, score=0.0, model="cheap").json()
        assert (named["model"], named["kind"]) == ("cheap", "decision")


def test_feedback_on_an_unanswered_decision_the_live_policy_cannot_read_names_its_model(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A decision no model answered, made on vectors before a swap to a policy that reads the
    text: feedback without a model is refused as for a decision the live policy holds, where it
    was kept as a quality observation of the model the decision chose, which never answered."""
    with learning_server(fake, tmp_path) as server:
        decision = _unanswered(server, 33)
        assert post(server, "/v1/router/policy/tiers").json()["policy"] == "tiers"
        _refused_for_no_answer(server, decision)
        assert _status(server)["feedback"] == {}
        named = feedback(server, decision, score=0.0, model="cheap").json()
        assert (named["model"], named["kind"], named["teaches_routing"]) == ("cheap", "model",
                                                                             False)


def test_named_model_feedback_checks_its_cost_and_keeps_the_order_of_its_scores(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        request = chat(server, math_prompt(32), model="cheap")[0]["x-switchpoint-request-id"]
        r = feedback(server, request, score=0.5, cost=999)
        assert r.status_code == 400 and r.json()["error"]["param"] == "cost", r.text
        assert "$999.000000 is over 1,000 times what cheap's prices make" in (
            r.json()["error"]["message"])
        assert _status(server)["feedback"] == {}
        # Scores sent at once each replace exactly one earlier score.
        scores = [round(0.05 * i, 2) for i in range(12)]
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda q: feedback(server, request, score=q).json(),
                                    scores))
        previous = [a["previous_quality"] for a in answers]
        assert previous.count(None) == 1
        replaced = [p for p in previous if p is not None]
        assert len(set(replaced)) == len(replaced) == 11


def test_status_counts_each_decisions_latest_outcome_once(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        decision = chat(server, math_prompt(33))[0]["x-switchpoint-decision-id"]
        feedback(server, decision, score=1.0, model="strong")
        again = feedback(server, decision, score=0.0, model="cheap").json()
        assert (again["replaced"], again["previous_quality"]) == (True, 1.0)
        assert _status(server)["feedback"] == {"cheap": {"n": 1, "mean_quality": 0.0}}
        assert _status(server)["learned_router"] == {"events": 2, "outcomes": 1}


def test_a_streams_request_id_takes_feedback_while_the_stream_is_under_way(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        for model, prompt in (("auto", math_prompt(40)), ("cheap", math_prompt(41))):
            body = {"model": model, "stream": True, "messages": [
                {"role": "user", "content": prompt + " [[fake:ok:chunk_delay=0.08]]"}]}
            with httpx.stream("POST", f"{server.base}/v1/chat/completions", json=body,
                              timeout=30) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(line for line in lines if line.startswith("data:"))  # under way
                during = feedback(server, response.headers["x-switchpoint-request-id"],
                                  score=0.25)
                assert during.status_code == 200, during.text
                answer = during.json()
                assert answer["model"] == response.headers["x-switchpoint-model"]
                assert answer["kind"] == ("decision" if model == "auto" else "model")
                assert [line for line in lines if line.startswith("data: [DONE]")]
            after = feedback(server, response.headers["x-switchpoint-request-id"], score=0.5)
            assert (after.json()["replaced"], after.json()["previous_quality"]) == (True, 0.25)


class _Stall:
    """A record whose row waits for ``go``: the store's writer stops there, so what is
    appended after it waits for its commit."""

    insert: ClassVar[str] = "UPDATE decisions SET seq = seq WHERE 0 = ?"

    def __init__(self) -> None:
        self.go = threading.Event()

    @property
    def id(self) -> str:
        return "stall"

    def row(self) -> tuple[Any, ...]:
        self.go.wait(15)
        return (1,)


def test_a_stream_whose_client_left_takes_feedback_until_its_entry_is_written(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        store = server.service.gateway.store
        assert store is not None
        body = {"model": "auto", "stream": True, "messages": [
            {"role": "user", "content": math_prompt(42) + " [[fake:ok:chunk_delay=0.2]]"}]}
        stall = _Stall()
        store.append(stall)  # the entry written when the client leaves waits behind it
        try:
            with httpx.stream("POST", f"{server.base}/v1/chat/completions", json=body,
                              timeout=30) as response:
                assert response.status_code == 200
                request_id = response.headers["x-switchpoint-request-id"]
                assert next(line for line in response.iter_lines() if line.startswith("data:"))
            # The client left: the entry is written without anyone waiting for it.
            time.sleep(1.0)  # past the next chunk: the server has seen the client go
            with ThreadPoolExecutor(1) as pool:
                during = pool.submit(feedback, server, request_id, score=0.0)
                time.sleep(0.3)
                stall.go.set()
                answer = during.result(timeout=20)
        finally:
            stall.go.set()
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == response.headers["x-switchpoint-model"]
        after = feedback(server, request_id, score=1.0)  # from the store, once written
        assert (after.json()["replaced"], after.json()["previous_quality"]) == (True, 0.0)


def test_feedback_during_a_stream_that_failed_over_teaches_the_model_that_answers(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    prompt = math_prompt(34) + " [[fake:ok:chunk_delay=0.08]]"
    with learning_server(fake, tmp_path) as server:
        routed = post(server, "/v1/route", {"prompt": prompt}).json()["selected_model"]
        fake.script(routed, *["500"] * 6)
        body = {"model": "auto", "stream": True,
                "messages": [{"role": "user", "content": prompt}]}
        with httpx.stream("POST", f"{server.base}/v1/chat/completions", json=body,
                          timeout=30) as response:
            assert response.status_code == 200
            answering = response.headers["x-switchpoint-model"]
            assert answering != routed
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # under way
            during = feedback(server, response.headers["x-switchpoint-decision-id"],
                              score=0.0).json()
            assert during["model"] == answering, during
            assert [line for line in lines if line.startswith("data: [DONE]")]
        assert routed not in _status(server)["feedback"]


def test_feedback_during_a_failed_over_stream_after_a_reload_teaches_the_model_that_answers(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # The reload's router remembers no decision: the one read back from the store named the
    # router's choice, and the stream's answer was credited to it until its entry was written.
    prompt = math_prompt(36) + " [[fake:ok:chunk_delay=0.08]]"
    with Gateway(settings_for(fake, tmp_path), loader=loader, env=KEYS) as gw:
        gw.start()
        routed = gw.route(prompt).selected_model
        fake.script(routed, *["500"] * 6)
        stream = gw.stream([{"role": "user", "content": prompt}])
        chunks = iter(stream)
        assert next(chunks)  # under way
        answering, decision = stream.switchpoint.model, stream.switchpoint.decision
        assert decision is not None and answering != routed == decision.selected_model
        gw.state.reload()
        during = gw.report_outcome(decision.decision_id, quality_score=0.0)
        assert (during.kind, during.outcome.model) == ("decision", answering)
        assert list(chunks)
        after = gw.report_outcome(decision.decision_id, quality_score=0.5)
        assert (after.outcome.model, after.outcome.replaced) == (answering, True)


def test_without_a_store_feedback_teaches_the_model_that_answered_not_the_routed_one(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # A gateway without a store keeps no request log to read the answering model from: the
    # decision it remembers named the router's choice, and failover's answer was credited
    # to it.
    prompt = math_prompt(35)
    with Gateway(settings_for(fake, tmp_path), loader=loader, env=KEYS, store=False) as gw:
        gw.start()
        routed = gw.route(prompt).selected_model
        fake.script(routed, *["500"] * 6)
        reply = gw.complete([{"role": "user", "content": prompt}])
        decision = reply.switchpoint.decision
        assert decision is not None and decision.selected_model == routed
        assert reply.switchpoint.model != routed
        result = gw.report_outcome(decision.decision_id, quality_score=0.0)
        assert (result.kind, result.outcome.model) == ("decision", reply.switchpoint.model)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_an_outcome_the_store_refuses_is_not_learned_and_nothing_routed_meanwhile_is_lost(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.held_lock import short_lock_waits

    short_lock_waits(monkeypatch)  # the store retries after 1.5 s, not 5
    with learning_server(fake, tmp_path) as server:
        decision = chat(server, math_prompt(35))[0]["x-switchpoint-decision-id"]
        store = server.service.gateway.learning.store
        assert store is not None
        with full_disk(store) as disk:
            refused = feedback(server, decision, score=0.0)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "storage_unavailable"
            assert FULL in refused.text and "free space" in refused.text
            assert int(refused.headers["retry-after"]) >= 1
            assert _status(server)["learned_router"]["events"] == 0  # refused: not learned
            again = feedback(server, decision, score=0.0)  # turned away at once meanwhile
            assert again.status_code == 503 and FULL in again.text
            calls = len(fake.requests())
            compared = post(server, "/v1/router/preferences/compare",
                            {"prompt": math_prompt(36), "models": ["strong", "cheap"]})
            assert compared.status_code == 503, compared.text
            assert len(fake.requests()) == calls  # no answer paid for that could not be kept
            # Routed and answered while nothing can be written: its records wait.
            answered = chat(server, math_prompt(37))[0]
            meanwhile = answered["x-switchpoint-decision-id"]
            routed = post(server, "/v1/route", {"prompt": math_prompt(39)}).json()
            disk.full = False  # space again
            chat(server, math_prompt(38))  # a write goes through; what waited follows it
        reader = server.service.gateway.learning.reader
        assert reader is not None
        request_id = answered["x-switchpoint-request-id"]
        _until(lambda: reader.request(request_id) is not None and routed["decision_id"] in {
            d["id"] for d in store.decisions(limit=1000)}, "the outage's log entries written")
        assert (reader.request(request_id) or {})["decision_id"] == meanwhile
        _until(lambda: store.failing is None and store.refusing() is None, "writes resumed")
        taken = feedback(server, decision, score=0.0).json()
        assert taken["replaced"] is False and _status(server)["learned_router"]["events"] == 1
    with learning_server(fake, tmp_path) as server:  # a restart: the log and the pending rows
        assert _status(server)["learned_router"]["events"] == 1
        later = feedback(server, meanwhile, score=1.0)
        assert later.status_code == 200, later.text
        assert _status(server)["learned_router"]["events"] == 2


def test_status_shows_a_tenant_whose_feedback_is_only_quality_observations(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path) as server:
        request = chat(server, math_prompt(50), model="cheap")[0]["x-switchpoint-request-id"]
        taken = feedback(server, request, score=0.5).json()
        assert taken["kind"] == "model"
        assert _status(server)["feedback"] == {"cheap": {"n": 1, "mean_quality": 0.5}}
        again = feedback(server, request, score=1.0).json()
        assert again["replaced"] is True
        learned = _status(server)["learned_router"]
        assert learned == {"events": 0, "outcomes": 0}


def _spilled_at_a_stop(settings: Settings, seed: int) -> tuple[RoutingDecision, SQLiteStore]:
    """A gateway that routes ``math_prompt(seed)`` while its store refuses writes and stops so:
    the decision is kept in the spill file beside the database (which is returned with it)."""
    gateway = Gateway(settings, loader=loader, env=KEYS)
    gateway.start()
    store = gateway.learning.store
    assert store is not None
    with full_disk(store):
        decision = gateway.route(math_prompt(seed))  # logged to be written later
        gateway.close()  # still refused: kept beside the database at the stop
    assert store.spill_path.exists()
    return decision, store


def test_a_decision_the_disk_refused_until_a_stop_takes_feedback_after_the_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path)
    decision, store = _spilled_at_a_stop(settings, 77)
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        result = restarted.report_outcome(decision.decision_id, 0.0)
        assert result.outcome.model == decision.selected_model
    assert not store.spill_path.exists()


def test_a_decision_spilled_at_a_stop_and_written_after_the_starts_read_takes_feedback(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision kept in the spill file at a stop, which the next start could not write (the
    database locked) until after its read of the pending table, is open to feedback once the
    store writes it: it was in the table but not among the decisions held open, so its
    feedback was a 404 until another restart."""
    from tests.fakes.held_lock import held_lock, short_lock_waits

    short_lock_waits(monkeypatch)
    settings = settings_for(fake, tmp_path)
    decision, store = _spilled_at_a_stop(settings, 78)
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        with held_lock(store.path):
            restarted.start()  # the spill file is not written: the lock is held
            reading = restarted.learning.open_decisions._reading_open
            assert reading is not None
            reading.join()  # the table read without the spilled decision
            assert store.spill_path.exists()
        _until(lambda: not store.spill_path.exists(), "the spill file written")
        result = restarted.report_outcome(decision.decision_id, 0.0)
        assert result.outcome.model == decision.selected_model


def test_a_full_spill_file_turns_new_requests_away_until_the_store_takes_writes_again(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During a long outage the records the store refused fill their spill file (bounded by
    store.spill_max_mb): new requests get a 503 naming the store's problem rather than an
    answer that could not be logged; once writes go through they are taken again, and what
    was answered during the outage is in the log."""
    from tests.fakes.held_lock import short_lock_waits

    short_lock_waits(monkeypatch)  # the store retries after 1.5 s, not 5
    with learning_server(fake, tmp_path, "store: {spill_max_mb: 0.004}\n") as server:
        store = server.service.gateway.learning.store
        assert store is not None and store.spill_limit == int(0.004 * 2**20)
        answered: list[Any] = []
        with full_disk(store) as disk:
            while store.spill_full is None:
                assert len(answered) < 20, "the spill file never filled"
                answered.append(chat(server, math_prompt(60 + len(answered)))[0])
            calls = len(fake.requests())
            refused = httpx.post(f"{server.base}/v1/chat/completions", timeout=15, json={
                "model": "auto", "messages": [{"role": "user", "content": "hi"}]})
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "storage_unavailable"
            assert FULL in error["message"] and "is full" in error["message"]
            assert "free space in data_dir" in error["message"]
            assert int(refused.headers["retry-after"]) >= 1
            routed = post(server, "/v1/route", {"prompt": math_prompt(90)})
            assert routed.status_code == 503 and "spill_max_mb" in routed.text
            assert len(fake.requests()) == calls  # no answer given that could not be logged
            disk.full = False  # space again: the writer tries again by itself
        _until(lambda: store.spill_full is None and not store.spill_path.exists(),
               "the spill file written")
        assert chat(server, math_prompt(91))[0]["x-switchpoint-model"]
        logged = {e["id"] for e in store.requests(limit=100)[0]}
        assert {h["x-switchpoint-request-id"] for h in answered} <= logged


# Another process that takes the database's write lock and holds it until its stdin closes.
_HOLD_LOCK = ("import sqlite3, sys\n"
              "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "conn.execute('BEGIN IMMEDIATE')\n"
              "print('held', flush=True)\n"
              "sys.stdin.read()\n")


def test_a_lock_another_process_holds_does_not_hold_up_every_request_for_its_length(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While another process holds the database's write lock, requests are answered and
    what they log waits in the spill file: the store waits for the lock once, not once for
    every record (each request's decision and entry, one after the other, held every answer
    for as long as the lock was); once the lock is let go every answered request is in the
    log, once."""
    import sqlite3
    import subprocess
    import sys

    from tests.fakes.held_lock import short_lock_waits

    busy_s = short_lock_waits(monkeypatch)
    with learning_server(fake, tmp_path) as server:
        store = server.service.gateway.learning.store
        assert store is not None
        chat(server, math_prompt(119))  # the schema is there
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(store.path)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            started = time.monotonic()
            answered = [chat(server, math_prompt(120 + i))[0] for i in range(6)]
            took = time.monotonic() - started
            assert store.spill_path.exists()
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)
        # (each of the 12 records waiting out SQLite's busy timeout took 12 of them)
        assert took < 5 * busy_s, f"6 requests took {took:.0f} s while the lock was held"
        _until(lambda: store.failing is None and not store.spill_path.exists(),
               "the spill file written")
        ids = [h["x-switchpoint-request-id"] for h in answered]
        conn = sqlite3.connect(f"{store.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = dict(conn.execute(
                f"SELECT id, count(*) FROM requests WHERE id IN ({', '.join('?' for _ in ids)}) "
                "GROUP BY id", ids).fetchall())
            decisions = conn.execute(
                "SELECT count(*) FROM decisions WHERE id IN "
                f"({', '.join('?' for _ in ids)})",
                [h["x-switchpoint-decision-id"] for h in answered]).fetchone()[0]
        finally:
            conn.close()
        assert rows == dict.fromkeys(ids, 1) and decisions == len(ids)
        assert chat(server, math_prompt(130))[0]["x-switchpoint-model"]


def test_feedback_under_a_held_lock_is_refused_at_once_and_taken_after_it_is_let_go(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While another process holds the database's write lock, feedback is a 503
    ``storage_unavailable`` in a moment, not after SQLite's 5 s busy timeout: within a few
    seconds of a refused write the store is known to refuse (refused before anything is
    queued), and after that the next write only checks whether the lock is free (each one
    waited the whole timeout again). Once the lock is let go the same feedback is taken,
    learned once."""
    from tests.fakes.held_lock import held_lock, short_lock_waits

    busy_s = short_lock_waits(monkeypatch)  # the busy timeout, and the refusal's window
    with learning_server(fake, tmp_path) as server:
        store = server.service.gateway.learning.store
        assert store is not None
        decision = chat(server, math_prompt(140))[0]["x-switchpoint-decision-id"]
        with held_lock(store.path):
            chat(server, math_prompt(141))  # answered; the store finds the lock held
            _until(lambda: store.refusing() is not None, "the store refusing")
            took: list[float] = []
            for wait in (0.0, busy_s + 0.5):  # in the refusal's window, then past it
                time.sleep(wait)
                started = time.monotonic()
                refused = feedback(server, decision, score=0.0)
                took.append(time.monotonic() - started)
                assert refused.status_code == 503, refused.text
                error = refused.json()["error"]
                assert error["code"] == "storage_unavailable"
                assert "locked" in error["message"] and "nothing of it was learned" in \
                    error["message"]
            # (waiting out the busy timeout takes busy_s at least; a refusal at once takes
            # milliseconds, up to most of a second on a loaded machine)
            assert max(took) < busy_s, f"feedback took {took} s to be refused"
        assert _status(server)["learned_router"] == {"events": 0, "outcomes": 0}
        _until(lambda: feedback(server, decision, score=0.0).status_code == 200,
               "the feedback taken")
        assert _status(server)["learned_router"] == {"events": 1, "outcomes": 1}
        again = feedback(server, decision, score=1.0).json()  # a repeat replaces it
        assert (again["replaced"], again["previous_quality"]) == (True, 0.0)
        assert _status(server)["learned_router"]["outcomes"] == 1


def test_a_decision_takes_a_bounded_number_of_outcomes(fake: FakeProviderProcess,
                                                        tmp_path: Path) -> None:
    """Each outcome is a row of the feedback log, which is never pruned: repeats of one
    decision's feedback (or of one answer's score) grew it without end, at no cost. A
    decision now takes MAX_OUTCOMES, its first and the repeats; then a 409 that learns
    nothing. Another tenant's decision is still a 404, not told apart by its repeats. Its
    outcomes keep as many characters of comment between them as one comment holds: a repeat
    adds a row, not the longest comment again (a 409 naming comment, which learns nothing)."""
    from switchpoint.gateway.feedback_log import MAX_OUTCOMES

    extra = "auth: keys\ntenants: {acme: {}, globex: {}}\n"
    with learning_server(fake, tmp_path, extra) as server:
        keys = {t: post(server, "/v1/router/keys", {"tenant": t}).json()["key"]
                for t in ("acme", "globex")}
        decision = chat(server, math_prompt(720), key=keys["acme"])[0][
            "x-switchpoint-decision-id"]
        for i, comment in enumerate(["x" * 1500, "y" * 501, "y" * 500, "z"]):
            taken = feedback(server, decision, key=keys["acme"], score=0.5, comment=comment)
            if i % 2:
                assert taken.status_code == 409, taken.text
                assert taken.json()["error"]["param"] == "comment"
                assert ("keep at most 2000 characters of comment between them, and hold "
                        f"{1500 + 500 * (i // 2)} already: "
                        + ("send a comment of at most 500 characters, or none" if i == 1
                           else "send the outcome without a comment")
                        ) in taken.json()["error"]["message"], taken.text
            else:
                assert taken.status_code == 200, taken.text
        assert _status_of(server, keys["acme"])["learned_router"]["events"] == 2
        for i in range(2, MAX_OUTCOMES):
            taken = feedback(server, decision, key=keys["acme"], score=i / MAX_OUTCOMES)
            assert taken.status_code == 200, taken.text
        events = _status_of(server, keys["acme"])["learned_router"]["events"]
        refused = feedback(server, decision, key=keys["acme"], score=1.0)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["param"] == "decision_id"
        assert f"takes at most {MAX_OUTCOMES}" in error["message"]
        assert _status_of(server, keys["acme"])["learned_router"]["events"] == events
        foreign = feedback(server, decision, key=keys["globex"], score=1.0)
        assert foreign.status_code == 404, foreign.text
        # One answer of a comparison (not blind: it may be scored again) likewise.
        compare = post(server, "/v1/router/preferences/compare",
                       {"prompt": math_prompt(721), "models": ["strong", "cheap"],
                        "blind": False}, key=keys["acme"]).json()
        for _ in range(MAX_OUTCOMES):
            assert post(server, "/v1/router/preferences/score",
                        {"compare_id": compare["compare_id"], "scores": {"cheap": 0.5}},
                        key=keys["acme"]).status_code == 200
        events = _status_of(server, keys["acme"])["learned_router"]["events"]
        over = post(server, "/v1/router/preferences/score",
                    {"compare_id": compare["compare_id"], "scores": {"strong": 1.0,
                                                                     "cheap": 0.5}},
                    key=keys["acme"])
        assert over.status_code == 409 and over.json()["error"]["param"] == "scores.cheap"
        # (checked whole: strong's score, first in the request, was not learned either)
        assert _status_of(server, keys["acme"])["learned_router"]["events"] == events
    (db,) = tmp_path.rglob("switchpoint.db")
    import sqlite3
    conn = sqlite3.connect(db)
    try:
        rows, chars = conn.execute("SELECT count(*), sum(length(comment)) FROM feedback"
                                   ).fetchone()
    finally:
        conn.close()
    assert (rows, chars) == (2 * MAX_OUTCOMES, 2000)


def _status_of(server: ThreadServer, key: str) -> dict[str, Any]:
    tenants = get(server, "/v1/router/status", key=key).json()["tenants"]
    (only,) = tenants.values()
    return dict(only)


def test_admin_feedback_on_a_decision_of_a_tenant_a_reload_removed_is_refused(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A reload that removes a tenant turns its keys away (403); the admin's feedback on one
    of its decisions, which goes to the decision's own tenant, was still learned, into an
    overlay of a tenant that no longer exists. It is now a 409 naming the tenant, and nothing
    is kept or learned; the remaining tenants' feedback is taken as before."""
    admin = "a" * 32
    extra = "auth: keys\nadmin_token_env: ADMIN_TOKEN\ntenants: {acme: {}, globex: {}}\n"
    environ = {"ADMIN_TOKEN": admin}
    with learning_server(fake, tmp_path, extra, environ=environ) as server:
        keys = {t: post(server, "/v1/router/keys", {"tenant": t}, key=admin).json()["key"]
                for t in ("acme", "globex")}
        acme = chat(server, math_prompt(730), key=keys["acme"])[0]["x-switchpoint-decision-id"]
        globex = chat(server, math_prompt(731), key=keys["globex"])[0][
            "x-switchpoint-decision-id"]
        named = chat(server, math_prompt(732), key=keys["acme"], model="cheap")[0][
            "x-switchpoint-request-id"]
        config = tmp_path / "switchpoint.yaml"
        config.write_text(config.read_text(encoding="utf-8").replace(
            "tenants: {acme: {}, globex: {}}", "tenants: {globex: {}}"), encoding="utf-8")
        assert post(server, "/v1/router/reload", key=admin).status_code == 200
        before = get(server, "/v1/router/status", key=admin).json()["tenants"]
        for decision_id in (acme, named):
            refused = feedback(server, decision_id, key=admin, score=0.0)
            assert refused.status_code == 409, refused.text
            error = refused.json()["error"]
            assert error["param"] == "decision_id"
            assert '"acme"' in error["message"] and "no longer" in error["message"]
            assert "nothing was learned" in error["message"]
        assert get(server, "/v1/router/status", key=admin).json()["tenants"] == before
        taken = feedback(server, globex, key=admin, score=0.0)
        assert taken.status_code == 200 and taken.json()["tenant"] == "globex"
    (db,) = tmp_path.rglob("switchpoint.db")
    import sqlite3
    conn = sqlite3.connect(db)
    try:
        tenants = [t for (t,) in conn.execute("SELECT tenant FROM feedback")]
    finally:
        conn.close()
    assert tenants == ["globex"]


def test_feedback_refused_for_a_removed_tenant_is_taken_once_a_reload_restores_it(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The 409 says to restore the tenant and reload: done, the same feedback is taken for
    the decision's tenant; the default tenant's decisions are taken throughout."""
    admin = "a" * 32
    extra = "auth: keys\nadmin_token_env: ADMIN_TOKEN\ntenants: {acme: {}, globex: {}}\n"
    with learning_server(fake, tmp_path, extra, environ={"ADMIN_TOKEN": admin}) as server:
        key = post(server, "/v1/router/keys", {"tenant": "acme"}, key=admin).json()["key"]
        acme = chat(server, math_prompt(740), key=key)[0]["x-switchpoint-decision-id"]
        config = tmp_path / "switchpoint.yaml"
        configured = config.read_text(encoding="utf-8")
        config.write_text(configured.replace("tenants: {acme: {}, globex: {}}",
                                             "tenants: {globex: {}}"), encoding="utf-8")
        assert post(server, "/v1/router/reload", key=admin).status_code == 200
        refused = feedback(server, acme, key=admin, score=0.25)
        assert refused.status_code == 409, refused.text
        config.write_text(configured, encoding="utf-8")
        assert post(server, "/v1/router/reload", key=admin).status_code == 200
        taken = feedback(server, acme, key=admin, score=0.25)
        assert taken.status_code == 200, taken.text
        assert taken.json()["tenant"] == "acme"


def test_a_tenant_routing_without_end_does_not_push_another_tenants_decisions_out_across_a_restart(
        fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The decisions kept for feedback after a restart are shared as fairly as the memory
    shares them: another tenant's decision the memory held is still taken, and the flooding
    tenant's oldest, which it let go of, is not, by id and by prompt hash."""
    extra = _TWO_TENANTS
    monkeypatch.setattr(open_decisions, "PRUNE_EVERY", 4)  # (the table pruned 3 times)
    with learning_server(fake, tmp_path, extra) as server:
        keys, acme, flood = _flooded(server)
    with sqlite3.connect(tmp_path / "data" / "switchpoint.db") as conn:
        kept = dict(conn.execute("SELECT tenant, count(*) FROM pending GROUP BY tenant"))
        assert kept == {"acme": 2, "globex": 4}  # (the 2 let go of since its last prune too)
    with learning_server(fake, tmp_path, extra) as server:
        for decision_id in acme:
            r = feedback(server, decision_id, key=keys["acme"], score=0.5)
            assert r.status_code == 200, r.text
        assert feedback(server, flood[0]["decision_id"], key=keys["globex"],
                        score=0.5).status_code == 404
        r = post(server, "/v1/feedback", {"prompt_hash": flood[1]["prompt_hash"], "score": 0.5},
                 key=keys["globex"])
        assert r.status_code == 404, r.text
        r = post(server, "/v1/feedback", {"prompt_hash": flood[-1]["prompt_hash"], "score": 0.5},
                 key=keys["globex"])
        assert r.status_code == 200, r.text
        # Routing on after the restart, globex pushes out its own, never acme's two.
        more = [post(server, "/v1/route", {"prompt": math_prompt(110 + n)},
                     key=keys["globex"]).json()["decision_id"] for n in range(6)]
        assert feedback(server, flood[-1]["decision_id"], key=keys["globex"],
                        score=0.5).status_code == 404
        assert feedback(server, more[-1], key=keys["globex"], score=0.5).status_code == 200
    # switchpoint feedback on the data_dir reads the table by the same rule.
    config = ["--config", str(tmp_path / "switchpoint.yaml"), "--json"]
    capsys.readouterr()
    for decision_id, tenant in [*((d, "acme") for d in acme), (more[-2], "globex")]:
        assert main(["feedback", decision_id, "--score", "0.7", "--tenant", tenant,
                     *config]) == 0
        assert json.loads(capsys.readouterr().out)["decision_id"] == decision_id
    assert main(["feedback", more[0], "--score", "0.7", *config]) != 0
    assert "no decision" in capsys.readouterr().err
