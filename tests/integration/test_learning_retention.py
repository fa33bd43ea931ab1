"""What the learning loop answers once retention pruned the feedback rows the learning
checkpoint holds: the status's figures and what they cover, a repeat of a pruned outcome (live
and after a restart), and the outcomes a decision takes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from switchpoint.gateway import Gateway
from switchpoint.gateway.feedback_log import MAX_OUTCOMES
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import chat, feedback, get, learning_server, post
from tests.integration.servers import ThreadServer

ADMIN = "a" * 32
EXTRA = "auth: keys\nadmin_token_env: ADMIN_TOKEN\ntenants: {acme: {}, beta: {}}\n"


@contextmanager
def _server(fake: FakeProviderProcess, root: Path) -> Iterator[ThreadServer]:
    with learning_server(fake, root, EXTRA, environ={"ADMIN_TOKEN": ADMIN}) as server:
        yield server


def _prune(gateway: Gateway) -> None:
    """Checkpoint what was learned, then run the service's own retention on every row older
    than now: the feedback rows the checkpoint holds go, all but the one it ends at."""
    assert gateway.learning.checkpoint() is not None
    time.sleep(0.05)
    gateway._housekeeping.run(False, 1e-9)


def _rows(gateway: Gateway, decision_id: str | None = None) -> list[int]:
    """The log positions of the feedback rows kept (of one decision, if given)."""
    reader = gateway.learning.reader
    assert reader is not None
    return [row.seq for row in reader.feedback()
            if decision_id is None or row.event.decision_id == decision_id]


def _status(server: ThreadServer, key: str = ADMIN) -> dict[str, Any]:
    r = get(server, "/v1/router/status", key)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _scored(server: ThreadServer, key: str, decision_id: str, score: float) -> dict[str, Any]:
    r = feedback(server, decision_id, key, score=score)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_after_a_prune_the_status_says_its_feedback_figures_cover_only_the_rows_kept(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Each tenant's ``feedback`` (quality per model) is read from the log, ``learned_router``
    from what was learned: once retention pruned rows the checkpoint holds, the first no
    longer counts them while the second does. ``feedback_log`` says so: whether rows were
    pruned and the time of the oldest kept (to every caller), and, to the operator, the log
    position of the oldest kept and how many rows went before it. A restart from the
    checkpoint says the same."""
    with _server(fake, tmp_path) as server:
        gateway = server.service.gateway
        key = post(server, "/v1/router/keys", {"tenant": "acme"}, key=ADMIN).json()["key"]
        routed = [chat(server, math_prompt(i), key=key)[0]["x-switchpoint-decision-id"]
                  for i in range(3)]
        for decision_id in routed:
            _scored(server, key, decision_id, 0.0)
        before = _status(server)
        log = before["feedback_log"]
        assert (log["pruned"], log["first_kept"], log["pruned_rows"]) == (False, 1, 0)
        assert isinstance(log["kept_since"], float)
        acme = before["tenants"]["acme"]
        assert acme["learned_router"] == {"events": 3, "outcomes": 3}
        assert acme["feedback"]["strong"] == {"n": 3, "mean_quality": 0.0}

        _prune(gateway)
        assert _rows(gateway) == [3]  # the row the checkpoint ends at stays
        after = _status(server)
        assert after["feedback_log"]["pruned"] is True
        assert (after["feedback_log"]["first_kept"], after["feedback_log"]["pruned_rows"]) == (
            3, 2)
        assert after["feedback_log"]["kept_since"] > log["kept_since"]
        acme = after["tenants"]["acme"]
        assert acme["learned_router"] == {"events": 3, "outcomes": 3}  # nothing learned lost
        assert acme["feedback"]["strong"]["n"] == 1  # the row kept
        # A client's key is told whether its figures are whole and since when, not the
        # deployment's log positions or row counts.
        client = _status(server, key)["feedback_log"]
        assert client == {"pruned": True, "kept_since": after["feedback_log"]["kept_since"]}

    with _server(fake, tmp_path) as server:  # a start from the checkpoint and the pruned log
        again = _status(server)
        assert again["from_checkpoint"] == 3
        assert again["feedback_log"] == after["feedback_log"]
        assert again["tenants"]["acme"]["learned_router"] == {"events": 3, "outcomes": 3}


def test_a_client_key_is_told_when_its_own_tenant_first_gave_feedback_not_another(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``kept_since`` to a client's key is the time of its own tenant's oldest feedback row
    kept (null while it has none), never another tenant's first feedback, which would time
    that tenant's traffic; the admin token still reads the whole log's oldest row."""
    with _server(fake, tmp_path) as server:
        gateway = server.service.gateway
        reader = gateway.learning.reader
        assert reader is not None
        acme = post(server, "/v1/router/keys", {"tenant": "acme"}, key=ADMIN).json()["key"]
        beta = post(server, "/v1/router/keys", {"tenant": "beta"}, key=ADMIN).json()["key"]
        _scored(server, beta, chat(server, math_prompt(0), key=beta)[0][
            "x-switchpoint-decision-id"], 1.0)
        whole = _status(server)["feedback_log"]["kept_since"]
        assert whole == next(reader.feedback(tenant="beta")).event.timestamp
        assert _status(server, acme)["feedback_log"] == {"pruned": False, "kept_since": None}

        time.sleep(0.01)
        _scored(server, acme, chat(server, math_prompt(1), key=acme)[0][
            "x-switchpoint-decision-id"], 0.5)
        own = next(reader.feedback(tenant="acme")).event.timestamp
        assert own > whole
        assert _status(server, acme)["feedback_log"] == {"pruned": False, "kept_since": own}
        assert _status(server, beta)["feedback_log"]["kept_since"] == whole
        assert _status(server)["feedback_log"]["kept_since"] == whole


def test_a_repeat_of_an_outcome_retention_pruned_replaces_it_live_and_after_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The learned state, not the log, says what a repeat replaced: the learned router holds
    each decision's outcome whether or not the log still keeps its row, so a repeat of a
    pruned outcome says ``replaced: true`` with the quality it replaced, as it would had
    nothing been pruned, while live and after a start from the checkpoint. A named model's
    quality observation, which nothing learns, is kept only in the log: once its row is
    pruned, so is the request it scored (logged before it), and a repeat is a 404, as for any
    request no longer kept."""
    with _server(fake, tmp_path) as server:
        gateway = server.service.gateway
        key = post(server, "/v1/router/keys", {"tenant": "acme"}, key=ADMIN).json()["key"]
        named = chat(server, math_prompt(10), key=key, model="cheap")[0][
            "x-switchpoint-decision-id"]
        assert _scored(server, key, named, 0.2)["kind"] == "model"
        routed = [chat(server, math_prompt(i), key=key)[0]["x-switchpoint-decision-id"]
                  for i in range(3)]
        for decision_id, score in zip(routed, (0.0, 0.3, 1.0), strict=True):
            _scored(server, key, decision_id, score)
        _prune(gateway)
        assert _rows(gateway) == [4]
        live = _scored(server, key, routed[0], 0.9)
        assert (live["replaced"], live["previous_quality"]) == (True, 0.0)
        gone = feedback(server, named, key, score=0.4)
        assert gone.status_code == 404, gone.text
        assert gone.json()["error"]["code"] == "decision_not_found"
        learned = _status(server)["tenants"]["acme"]["learned_router"]
        assert learned == {"events": 4, "outcomes": 3}
        _prune(gateway)  # the repeat's row goes too
        assert _rows(gateway) == [5]

    with _server(fake, tmp_path) as server:
        restarted = _scored(server, key, routed[1], 0.6)
        assert (restarted["replaced"], restarted["previous_quality"]) == (True, 0.3)
        again = _scored(server, key, routed[0], 0.5)
        assert (again["replaced"], again["previous_quality"]) == (True, 0.9)
        learned = _status(server)["tenants"]["acme"]["learned_router"]
        assert learned == {"events": 6, "outcomes": 3}


def test_a_decision_takes_its_outcomes_again_once_pruned_each_replacing_the_last(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The bound on a decision's outcomes counts the rows the log keeps: it bounds what one
    decision adds to the log between two prunes. Once retention pruned them, the decision
    takes as many again, which is harmless: each replaces the last in the learned state (the
    decision stays one outcome), and the log still keeps at most the bound of its rows."""
    with _server(fake, tmp_path) as server:
        gateway = server.service.gateway
        key = post(server, "/v1/router/keys", {"tenant": "acme"}, key=ADMIN).json()["key"]
        decision = chat(server, math_prompt(1), key=key)[0]["x-switchpoint-decision-id"]
        for i in range(MAX_OUTCOMES):
            _scored(server, key, decision, (i % 2) * 1.0)
        refused = feedback(server, decision, key, score=0.5)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["param"] == "decision_id"

        _prune(gateway)
        assert len(_rows(gateway, decision)) == 1  # the row the checkpoint ends at
        for i in range(MAX_OUTCOMES - 1):
            taken = _scored(server, key, decision, 0.25 * (i % 4))
            assert taken["replaced"] is True
        assert feedback(server, decision, key, score=0.5).status_code == 409
        assert len(_rows(gateway, decision)) == MAX_OUTCOMES
        status = _status(server)["tenants"]["acme"]
        assert status["learned_router"] == {"events": 2 * MAX_OUTCOMES - 1, "outcomes": 1}
        assert status["feedback"]["strong"]["n"] == 1


def test_a_repeat_without_a_cost_keeps_the_one_taken_before_once_retention_pruned_it(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A repeat without a cost keeps the cost its outcome took before (``cost_from:
    "kept"``), as the learned state does, whether or not the log still keeps that outcome's
    row (nor the request it priced): live and after a start from the checkpoint. A repeat
    about another model keeps none."""
    with _server(fake, tmp_path) as server:
        gateway = server.service.gateway
        key = post(server, "/v1/router/keys", {"tenant": "acme"}, key=ADMIN).json()["key"]
        routed = [chat(server, math_prompt(20 + i), key=key)[0]["x-switchpoint-decision-id"]
                  for i in range(3)]
        for decision_id in routed:
            taken = _scored(server, key, decision_id, 0.0)
            assert (taken["cost_from"], taken["teaches_routing"]) == ("answer", True)
        _prune(gateway)
        assert _rows(gateway) == [3]
        live = _scored(server, key, routed[0], 0.9)
        assert (live["replaced"], live["cost"], live["cost_from"]) == (True, None, "kept")
        other = feedback(server, routed[1], key, score=0.5, model="cheap").json()
        assert (other["replaced"], other["cost"], other["cost_from"]) == (True, None, None)
        _prune(gateway)  # the repeats' rows go too
        assert _rows(gateway) == [5]

    with _server(fake, tmp_path) as server:
        restarted = _scored(server, key, routed[0], 0.6)
        assert (restarted["replaced"], restarted["cost_from"]) == (True, "kept")
        back = _scored(server, key, routed[1], 0.7)  # about strong again, after cheap
        assert (back["replaced"], back["cost"], back["cost_from"]) == (True, None, None)


def test_after_a_prune_an_experiments_report_says_what_it_covers(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """An experiment's report is read from the logs and from the totals the store keeps of
    the decisions retention pruned: once retention pruned them, its ``n`` still counts their
    outcomes (``pruned_decisions`` says how many decisions it counts so), and its
    ``feedback_log`` says rows were pruned (as the status's does), where before it said none
    were."""
    config = "experiments:\n  split:\n    arms:\n      a: {}\n      b: {cost_weight: 5}\n"
    with learning_server(fake, tmp_path, config) as server:
        gateway = server.service.gateway
        for s in range(6):
            headers, _ = chat(server, math_prompt(s), session=f"session-{s}")
            r = feedback(server, headers["x-switchpoint-decision-id"], score=1.0)
            assert r.status_code == 200, r.text

        def report() -> dict[str, Any]:
            r = get(server, "/v1/router/experiments/split")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        before = report()
        assert sum(a["n"] for a in before["arms"]) == 6
        assert before["feedback_log"]["pruned"] is False
        assert "pruned_rows" not in before["feedback_log"]  # (positions: the status's only)
        _prune(gateway)
        after = report()
        assert after["feedback_log"]["pruned"] is True
        # The one feedback row kept (the checkpoint ends at it) belongs to a decision the
        # same retention pruned (every row older than now): every outcome counts from the
        # kept totals.
        assert len(_rows(gateway)) == 1
        assert sum(a["n"] for a in after["arms"]) == 6
        assert sum(a["pruned_decisions"] for a in after["arms"]) == sum(
            a["decisions"] for a in before["arms"])


def test_each_tenant_is_told_whether_its_own_rows_were_pruned_to_its_keys_and_the_admin(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``pruned`` to a client's key says whether retention deleted rows of its own tenant:
    beta, whose feedback all came after acme's was pruned, reads false (that acme gave
    feedback longer ago than retention keeps is not beta's to learn), acme true; the admin
    token reads the whole log's, and each tenant's entry of its ``tenants`` reads what that
    tenant's keys read. A restart from the checkpoint says the same."""
    with _server(fake, tmp_path) as server:
        acme = post(server, "/v1/router/keys", {"tenant": "acme"}, key=ADMIN).json()["key"]
        beta = post(server, "/v1/router/keys", {"tenant": "beta"}, key=ADMIN).json()["key"]
        for i in range(3):
            _scored(server, acme, chat(server, math_prompt(i), key=acme)[0][
                "x-switchpoint-decision-id"], 0.0)
        _prune(server.service.gateway)
        assert _status(server)["feedback_log"]["pruned_rows"] == 2
        assert _status(server, beta)["feedback_log"] == {"pruned": False, "kept_since": None}
        _scored(server, beta, chat(server, math_prompt(3), key=beta)[0][
            "x-switchpoint-decision-id"], 1.0)
        seen = {who: _status(server, key)["feedback_log"]["pruned"]
                for who, key in (("admin", ADMIN), ("acme", acme), ("beta", beta))}
        assert seen == {"admin": True, "acme": True, "beta": False}
        tenants = _status(server)["tenants"]
        for name, key in (("acme", acme), ("beta", beta)):
            assert tenants[name]["feedback_log"] == _status(server, key)["feedback_log"]
        assert _status(server, acme)["tenants"]["acme"]["feedback_log"]["pruned"] is True

    with _server(fake, tmp_path) as server:
        again = {who: _status(server, key)["feedback_log"]["pruned"]
                 for who, key in (("admin", ADMIN), ("acme", acme), ("beta", beta))}
        assert again == seen
        assert {name: view["feedback_log"]["pruned"]
                for name, view in _status(server)["tenants"].items()} == {
            "acme": True, "beta": False}
