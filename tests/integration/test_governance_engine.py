"""Governance through the in-process door: a key or a tenant on ``complete``/``route``, the
budget curve and confidence-gated escalation steering real requests, and what the decision log
keeps for reports (per-model estimates, governance, who asked)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from switchpoint import Gateway
from switchpoint.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from switchpoint.governance.keys import KeySpec
from switchpoint.governance.ledger import tenant_account
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.held_lock import held_lock
from tests.integration.gateway_env import FACTORY, KEYS


def catalog(fake: FakeProviderProcess) -> list[dict[str, Any]]:
    return [
        {"name": "good", "profile": "gpt-4-1106-preview", "base_url": fake.openai_base_url,
         "input_per_mtok": 10, "output_per_mtok": 30, "context_window": 128000},
        {"name": "cheap", "profile": "gpt-3.5-turbo-1106", "base_url": fake.openai_base_url,
         "input_per_mtok": 0.5, "output_per_mtok": 1.5, "context_window": 16000}]


def messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{text} [{uuid.uuid4().hex[:8]}]"}]


@pytest.fixture
def gateway_of(gw_fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Any]:
    made: list[Gateway] = []

    def make(**config: Any) -> Gateway:
        settings = {"models": catalog(gw_fake), "data_dir": str(tmp_path / f"d{len(made)}"),
                    "gateway": {"max_attempts_per_model": 1}, **config}
        gateway = Gateway.from_config(settings, loader=FACTORY, env=KEYS)
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()


def test_in_process_key_and_tenant(gateway_of: Any) -> None:
    gw = gateway_of(tenants={"acme": {"models": ["cheap", "auto"], "budgets": ["1/day"]}})
    key = gw.governor.keys.create(KeySpec(tenant="acme").checked(["acme"], None)).key
    reply = gw.complete(messages("hello"), key=key, max_tokens=20)
    info = reply.switchpoint
    assert info.model == "cheap" and info.key_id == key[3:13] and info.tenant == "acme"
    assert info.charged_usd == pytest.approx(info.cost_usd)
    assert gw.complete(messages("hi"), tenant="acme").switchpoint.tenant == "acme"
    with pytest.raises(PermissionDeniedError, match='tenant "acme" may not use "good"'):
        gw.complete(messages("x"), model="good", tenant="acme")  # (no key was given)
    with pytest.raises(PermissionDeniedError, match='this key may not use "good"'):
        gw.complete(messages("x"), model="good", key=key)
    with pytest.raises(AuthenticationError):
        gw.complete(messages("x"), key="sp-0123456789_" + "a" * 43)
    with pytest.raises(InvalidInputError, match='belongs to tenant "acme"'):
        gw.complete(messages("x"), key=key, tenant="other")
    with pytest.raises(NotFoundError, match='tenant: "other" is not in the config'):
        gw.complete(messages("x"), tenant="other")
    decision = gw.route("What is 2+2?", key=key)
    assert decision.selected_model == "cheap" and list(decision.all_scores) == ["cheap"]
    assert gw.store is not None
    logged = gw.store.decisions(1)[0]
    assert logged["key_id"] == key[3:13] and logged["tenant"] == "acme"
    assert set(logged["expected_errors"]) == {"cheap"}
    assert gw.budget_status()[0]["spent_usd"] > 0


def test_the_models_a_caller_may_use_are_read_by_the_rule_chat_uses(gateway_of: Any) -> None:
    """Gateway.models and Gateway.model (GET /v1/models and /v1/models/{id}) list what a key
    may use and refuse a model it may not as a chat request naming it is refused."""
    from switchpoint.errors import ModelNotFoundError

    gw = gateway_of(tenants={"acme": {"models": ["cheap", "auto"]}})
    key = gw.governor.keys.create(KeySpec(tenant="acme").checked(["acme"], None)).key
    assert [m["id"] for m in gw.models()] == ["auto", "good", "cheap"]
    assert [m["id"] for m in gw.models(key=key)] == ["auto", "cheap"]
    assert gw.models(tenant="acme") == gw.models(key=key)
    assert gw.model("cheap", key=key) == gw.models(key=key)[1] == gw.model("cheap",
                                                                           tenant="acme")
    assert gw.model("good")["id"] == "good"
    for name in ("good", "nope"):
        with pytest.raises(PermissionDeniedError) as refused:
            gw.model(name, key=key)
        with pytest.raises(PermissionDeniedError) as chat:
            gw.complete(messages("x"), model=name, key=key)
        assert str(refused.value) == str(chat.value), chat.value
        assert 'may use "cheap", "auto"' in str(chat.value), chat.value
    with pytest.raises(ModelNotFoundError, match='"nope" is not a model of this gateway; use '
                                                 'one of "auto", "good", "cheap"'):
        gw.model("nope")
    with pytest.raises(InvalidInputError) as bad:
        gw.model(5)
    assert bad.value.field == "model_id", bad.value
    # The caller is checked as complete checks it: a key verified, a tenant known, the two
    # agreeing.
    def one(**who: str) -> object:
        return gw.model("cheap", **who)

    for read in (gw.models, one):
        with pytest.raises(AuthenticationError):
            read(key="sp-0123456789_" + "a" * 43)
        with pytest.raises(InvalidInputError, match='belongs to tenant "acme"'):
            read(key=key, tenant="other")
        with pytest.raises(NotFoundError, match='tenant: "other" is not in the config'):
            read(tenant="other")


def test_the_learning_status_takes_its_caller_as_complete_does(gateway_of: Any) -> None:
    """Gateway.learning_status names its caller by key= (verified) or tenant= (trusted), as
    complete does: the caller's own tenant alone, narrowed to the models it may use, and a
    bad key, a key of another tenant or an unknown tenant refused as complete refuses them."""
    gw = gateway_of(tenants={"acme": {"models": ["cheap", "auto"]}})
    key = gw.governor.keys.create(KeySpec(tenant="acme").checked(["acme"], None)).key
    whole = gw.learning_status()
    assert list(whole["tenants"]) == ["acme"] and "replayed" in whole
    assert "narrowed_to" not in whole["tenants"]["acme"]
    mine = gw.learning_status(key=key)
    assert list(mine["tenants"]) == ["acme"] and "replayed" not in mine
    assert mine["tenants"]["acme"]["narrowed_to"] == ["cheap"]
    assert gw.learning_status(tenant="acme") == mine == gw.learning_status(["acme"], key=key)
    with pytest.raises(InvalidInputError) as other:
        gw.learning_status(["default"], key=key)
    assert other.value.field == "tenants", other.value
    assert "its own tenant's status alone (\"acme\")" in str(other.value)
    for who, refusal in (({"key": "sp-0123456789_" + "a" * 43}, AuthenticationError),
                         ({"key": key, "tenant": "other"}, InvalidInputError),
                         ({"tenant": "other"}, NotFoundError)):
        with pytest.raises(refusal) as status:
            gw.learning_status(**who)
        with pytest.raises(refusal) as chat:
            gw.complete(messages("x"), **who)
        assert str(status.value) == str(chat.value), (status.value, chat.value)
        assert refusal is AuthenticationError or str(status.value).startswith("tenant: ")


def test_the_budget_curve_steers_auto_to_cheaper_models(gateway_of: Any) -> None:
    gw = gateway_of(cost_weight=0.0, tenants={"acme": {"budgets": ["1/day"]}})
    quality_first = gw.complete(messages("Prove that there are infinitely many primes."),
                                tenant="acme", max_tokens=20)
    assert quality_first.switchpoint.model == "good"
    gw.governor.ledger._charge(tenant_account("acme"), 0.95, gw.governor.clock())
    pressed = gw.complete(messages("Prove that there are infinitely many primes."),
                          tenant="acme", max_tokens=20)
    d = pressed.switchpoint.decision
    assert d is not None and d.budget_pressure is not None
    assert d.budget_pressure["fraction_used"] >= 0.95 and d.cost_weight >= 1.0
    assert pressed.switchpoint.model == "cheap"
    assert any("λ raised from 0 to" in r for r in pressed.switchpoint.reasoning)
    assert gw.store is not None
    governance = gw.store.decisions(1)[0]["governance"]
    assert governance["budget_pressure"]["budget"] == "tenant acme $1/day"


def test_escalation_leads_with_the_escalation_model(gateway_of: Any) -> None:
    # At λ 0.5 the router picks cheap for this prompt, with a confidence near 0.9.
    hello = [{"role": "user", "content": "Hello there [abc]"}]
    gw = gateway_of(cost_weight=0.5, escalation={"low_confidence_threshold": 0.99,
                                                 "escalation_model": "good"})
    reply = gw.complete(hello, max_tokens=20)
    d = reply.switchpoint.decision
    assert d is not None and d.escalated and d.selected_model == "good"
    assert reply.switchpoint.model == "good"  # the planner put it first
    assert d.original_model == "cheap" and "Original model: cheap" in d.escalation_reason
    assert "[Escalated from original confidence" in d.explain()
    ask = gateway_of(cost_weight=0.5, escalation={"low_confidence_threshold": 0.99,
                                                  "escalation_model": "good",
                                                  "strategy": "ask"})
    reply = ask.complete(hello, max_tokens=20)
    d = reply.switchpoint.decision
    assert d is not None and d.escalated and reply.switchpoint.model == "cheap"
    assert "suggested escalation: good" in d.escalation_reason


def test_feedback_on_an_escalated_decision_teaches_the_escalation_model(
        gateway_of: Any, tmp_path: Path) -> None:
    # The escalation keeps the router's decision id and names another model; feedback that
    # names no model used to teach the router's original pick (cheap) with good's outcome,
    # and so did the pending decision kept in the store, read after a restart.
    escalation = {"low_confidence_threshold": 0.99, "escalation_model": "good"}
    gw = gateway_of(cost_weight=0.5, escalation=escalation)
    first = gw.route("Hello there [abc]")
    assert first.escalated and first.selected_model == "good"
    assert first.original_model == "cheap"
    assert gw.report_outcome(first.decision_id, quality_score=0.0).outcome.model == "good"
    second = gw.route("Hello there [def]")
    assert second.selected_model == "good"
    gw.close()
    again = gateway_of(cost_weight=0.5, escalation=escalation,
                       data_dir=str(tmp_path / "d0"))
    assert again.report_outcome(second.decision_id, success=True).outcome.model == "good"


def test_a_decision_an_sla_re_routed_is_remembered_once(gateway_of: Any) -> None:
    """A decision the SLA re-routed (its quality floor breached) left the first decision,
    whose id no caller got and no pending row kept, in the router's memory beside it: two
    entries of the tenant's share for each request. The one returned alone is remembered,
    as the pending table keeps it."""
    # (at λ 5 the router picks cheap for both prompts, below the floor; good is above it)
    gw = gateway_of(cost_weight=5, sla={"min_quality_score": 0.8,
                                        "auto_escalate_on_breach": True})
    memory = gw.router.learner.memory
    before = len(memory)
    routed = gw.route("Prove that the square root of two is irrational.")
    answered = gw.complete([{"role": "user",
                             "content": "Write a haiku about routers. [abcd1234]"}])
    assert routed.sla_adjustments and answered.switchpoint.decision is not None
    assert answered.switchpoint.decision.sla_adjustments
    assert len(memory) == before + 2
    assert memory.get(routed.decision_id) is not None
    assert memory.get(answered.switchpoint.decision_id) is not None


@pytest.mark.parametrize("strategy", ["always", "ask"])
def test_escalation_does_not_name_a_model_the_key_may_not_use(
        gateway_of: Any, gw_fake: FakeProviderProcess, strategy: str) -> None:
    # Two candidates of one profile: the confidence between them is low, so escalation to
    # good triggers; the key may not use good. The decision's escalation_reason and its
    # reasoning (the /v1/route answer, x-switchpoint-reasoning) used to name it: "escalation
    # model good is not among the candidates", or under "ask" suggest it.
    twin = {**catalog(gw_fake)[1], "name": "twin", "input_per_mtok": 0.6}
    gw = gateway_of(models=[*catalog(gw_fake), twin], cost_weight=0.5,
                    tenants={"acme": {"models": ["cheap", "twin", "auto"]}},
                    escalation={"low_confidence_threshold": 0.99, "escalation_model": "good",
                                "strategy": strategy})
    key = gw.governor.keys.create(KeySpec(tenant="acme").checked(["acme"], None)).key
    d = gw.route("Hello there", key=key)
    assert d.confidence < 0.99 and not d.escalated and d.selected_model in ("cheap", "twin")
    assert "not among the models this caller may use" in d.escalation_reason
    assert "good" not in d.escalation_reason and "good" not in " ".join(d.reasoning)
    reply = gw.complete(messages("Hello there"), key=key, max_tokens=20)
    assert reply.switchpoint.model in ("cheap", "twin")
    assert "good" not in " ".join(reply.switchpoint.reasoning)
    # A caller that may use it is still escalated to it (or, under "ask", told of it).
    wide = gw.route("Hello there")
    assert wide.escalated and "good" in wide.selected_model + wide.escalation_reason


def test_an_experiment_arm_s_note_names_only_models_the_key_may_use(
        gateway_of: Any, gw_fake: FakeProviderProcess) -> None:
    # Each arm narrows routing to good and cheap; acme's keys may use cheap and twin. The
    # arm's note in the reasoning used to list its models: "models good, cheap".
    twin = {**catalog(gw_fake)[1], "name": "twin", "input_per_mtok": 0.6}
    arm = {"models": ["good", "cheap"]}
    gw = gateway_of(models=[*catalog(gw_fake), twin],
                    tenants={"acme": {"models": ["cheap", "twin", "auto"]}},
                    experiments={"narrow": {"arms": {"a": arm, "b": arm}}})
    key = gw.governor.keys.create(KeySpec(tenant="acme").checked(["acme"], None)).key
    d = gw.route("Hello there", key=key)
    assert d.experiment == "narrow" and d.selected_model == "cheap"
    note = next(r for r in d.reasoning if r.startswith('Experiment "narrow"'))
    assert '(models "cheap")' in note and "good" not in " ".join(d.reasoning), d.reasoning
    wide = gw.route("Hello there")
    assert any('(models "good", "cheap")' in r for r in wide.reasoning), wide.reasoning


def test_named_models_drop_fallbacks_the_key_may_not_use(gateway_of: Any,
                                                         gw_fake: FakeProviderProcess) -> None:
    models = catalog(gw_fake)
    models[1]["fallbacks"] = ["good"]
    gw = gateway_of(models=models, tenants={"acme": {"models": ["cheap"]}})
    gw_fake.script("cheap", "500")
    from switchpoint.errors import FailoverError

    with pytest.raises(FailoverError) as info:
        gw.complete(messages("x"), model="cheap", tenant="acme")
    assert info.value.info.models_tried == ["cheap"]  # never good
    reasoning = " ".join(info.value.info.reasoning)
    assert "Fallbacks this key may not use are left out." in reasoning
    assert "good" not in reasoning  # (it could be another tenant's)
    gw_fake.reset()


def test_a_reload_applies_new_tenants_and_budgets(gw_fake: FakeProviderProcess,
                                                  tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "switchpoint.yaml"
    base = {"models": catalog(gw_fake), "data_dir": str(tmp_path / "data"), "auth": "keys"}
    config.write_text(yaml.safe_dump({**base, "tenants": {"acme": {}, "beta": {}}}))
    gw = Gateway.from_config(config, loader=FACTORY, env=KEYS)
    try:
        acme = gw.governor.keys.create(KeySpec(tenant="acme")).key
        beta = gw.governor.keys.create(KeySpec(tenant="beta")).key
        gw.complete(messages("before"), model="cheap", key=acme, max_tokens=5)
        config.write_text(yaml.safe_dump({**base, "tenants": {
            "acme": {"budgets": ["0.0000001/day"]}}}))
        gw.state.reload()
        from switchpoint.errors import BudgetExceededError

        with pytest.raises(BudgetExceededError, match="tenant acme"):
            gw.complete(messages("after"), model="cheap", key=acme, max_tokens=5)
        with pytest.raises(PermissionDeniedError, match='tenant "beta" is not in the conf'):
            gw.complete(messages("after"), model="cheap", key=beta)
    finally:
        gw.close()


@pytest.mark.anyio
async def test_an_in_process_refusal_waits_for_its_clock_write_off_the_event_loop(
        gateway_of: Any) -> None:
    """The async in-process doors refuse a key expired at a time the key store's file does not
    hold yet once the file holds it (as the HTTP door does), waiting for that write off the
    event loop: while another process holds the file's write lock, the loop goes on."""
    gw: Gateway = gateway_of(tenants={"acme": {}})
    keys = gw.governor.keys
    expiring = keys.create(KeySpec(tenant="acme", expires="1m").checked(["acme"], None))
    keys_db = keys.path
    with sqlite3.connect(keys_db) as db:  # (the file's time is behind the clock by a little)
        held_time = float(db.execute("SELECT latest FROM clock").fetchone()[0])
        await asyncio.sleep(0.05)
        expired_at = max(held_time + 0.01, time.time() - 0.02)
        db.execute("UPDATE keys SET expires_at = ? WHERE id = ?",
                   (expired_at, expiring.record.id))
    db.close()
    doors: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        "aroute": lambda: gw.aroute("What is 2+2?", key=expiring.key),
        "acomplete": lambda: gw.acomplete(messages("x"), key=expiring.key),
        "astream": lambda: gw.astream(messages("x"), key=expiring.key),
        "areport_outcome": lambda: gw.areport_outcome("0" * 32, 1.0, key=expiring.key),
        "ascore": lambda: gw.ascore("0" * 32, {"cheap": 1.0}, key=expiring.key),
        "acompare": lambda: gw.acompare(messages("x"), key=expiring.key),
    }
    with held_lock(keys_db) as holder:
        tasks = {name: asyncio.create_task(door()) for name, door in doors.items()}
        started = time.monotonic()
        await asyncio.sleep(0.3)
        stalled = time.monotonic() - started
        assert stalled < 1.0, f"the event loop stalled {stalled:.1f} s behind a refusal"
        assert not any(t.done() for t in tasks.values()), \
            "refused before the file held the time of the refusal"
        assert holder.stdin is not None
        holder.stdin.close()  # the lock let go
        await asyncio.wait(tasks.values(), timeout=30)
    for name, task in tasks.items():
        assert task.done(), name
        error = task.exception()
        assert isinstance(error, AuthenticationError) and "expired at" in str(error), name
    with sqlite3.connect(keys_db) as db:
        assert float(db.execute("SELECT latest FROM clock").fetchone()[0]) >= expired_at
    db.close()
