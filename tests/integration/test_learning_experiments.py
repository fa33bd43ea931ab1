"""Experiments and exploration through the service: sessions stay in their arm, decisions and
their log rows carry the experiment and arm, the report gives per-arm n, mean quality with a
95% interval and mean cost, names a winner by its stated rule, and promotion sends everyone to
it; exploration sends auto decisions to another candidate, never a named model's."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import httpx
import openai
import pytest

from switchpoint.errors import InvalidInputError
from switchpoint.gateway import Gateway, housekeeping
from switchpoint.gateway import learning as gateway_learning
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import (
    KEYS,
    chat,
    feedback,
    get,
    hold_readying,
    learning_server,
    loader,
    post,
    settings_for,
)

EXPERIMENT = """experiments:
  thrift:
    min_n: 8
    arms:
      control: {}
      thrifty: {cost_weight: 5}
      neighbours: {policy: knn, weight: 0.5}
"""


def test_an_experiment_assigns_sessions_reports_arms_names_a_winner_and_promotes_it(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, EXPERIMENT) as server:
        arms: dict[str, str] = {}
        decisions: dict[str, list[str]] = {}
        for s in range(48):
            headers, _ = chat(server, math_prompt(s), session=f"session-{s}")
            assert headers["x-switchpoint-experiment"] == "thrift"
            arm = headers["x-switchpoint-arm"]
            arms[f"session-{s}"] = arm
            decisions.setdefault(arm, []).append(headers["x-switchpoint-decision-id"])
            if arm == "thrifty":
                assert headers["x-switchpoint-model"] == "cheap"  # λ 5 on the priciest
            elif arm == "control":
                assert headers["x-switchpoint-model"] == "strong"
        assert set(decisions) == {"control", "thrifty", "neighbours"}
        for s in (0, 1, 2, 3):  # a session stays in its arm, turn after turn
            again, _ = chat(server, math_prompt(100 + s), session=f"session-{s}")
            assert again["x-switchpoint-arm"] == arms[f"session-{s}"]

        report = get(server, "/v1/router/experiments/thrift").json()
        assert report["winner"] is None
        assert {a["arm"]: a["n"] for a in report["arms"]} == {"control": 0, "thrifty": 0,
                                                              "neighbours": 0}
        refused = post(server, "/v1/router/experiments/thrift/promote", {})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"

        quality = {"control": True, "thrifty": False, "neighbours": False}
        for arm, ids in decisions.items():
            for decision_id in ids:
                r = feedback(server, decision_id, success=quality[arm])
                assert r.status_code == 200, r.text
        report = get(server, "/v1/router/experiments/thrift").json()
        by_arm = {a["arm"]: a for a in report["arms"]}
        for arm, ids in decisions.items():
            assert by_arm[arm]["n"] == len(ids)
            assert by_arm[arm]["decisions"] >= len(ids)
            assert by_arm[arm]["interval_method"] == "wilson"
        control, thrifty = by_arm["control"], by_arm["thrifty"]
        assert control["mean_quality"] == 1.0 and thrifty["mean_quality"] == 0.0
        low, high = control["interval"]
        assert 0.6 < low < 1.0 and high == 1.0
        assert thrifty["mean_cost_usd"] < control["mean_cost_usd"]
        assert report["winner"] == "control" and "min_n" in report["rule"]

        promoted = post(server, "/v1/router/experiments/thrift/promote", {}).json()
        assert (promoted["promoted"], promoted["promotion"]) == ("control", "winner")
        after = Counter(chat(server, math_prompt(200 + s), session=f"new-{s}")[0][
            "x-switchpoint-arm"] for s in range(12))
        assert after == Counter({"control": 12})
        listed = get(server, "/v1/router/experiments").json()["data"]
        assert [e["experiment"] for e in listed] == ["thrift"]

        # The decision log says which arm (and which arm's policy) decided.
        assert server.service.store is not None
        rows = server.service.store.decisions(200)
        logged = {r["id"]: r for r in rows}
        for decision_id in decisions["neighbours"]:
            assert logged[decision_id]["arm"] == "neighbours"
            assert logged[decision_id]["policy"] == "knn"
        for decision_id in decisions["control"]:
            assert (logged[decision_id]["experiment"], logged[decision_id]["policy"]) == (
                "thrift", "cluster")
    # The promotion is kept in the store: it survives a restart.
    with learning_server(fake, tmp_path, EXPERIMENT) as server:
        kept = get(server, "/v1/router/experiments/thrift").json()
        assert (kept["promoted"], kept["promotion"]) == ("control", "winner")
        assert chat(server, math_prompt(300), session="later")[0][
            "x-switchpoint-arm"] == "control"
        missing = get(server, "/v1/router/experiments/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        bad = post(server, "/v1/router/experiments/thrift/promote", {"arm": "nope"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "arm"


def test_an_arm_whose_policy_weights_do_not_profile_a_catalog_model_is_warned_of(
        fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An arm of another policy routes on that policy's weights: the service says at load
    which catalog models they leave to tier and price there, naming the arm, and how to give
    the policy weights of its own; the arms whose weights profile every model are not named.
    It says so once, not again at each reload (it did), and a gateway that routes no traffic
    (switchpoint learn and feedback open one) does not say it (it did). A model registered
    that the arms' weights do not profile is said of each arm, and what the service remembers
    having said stays within its bound (it grew with every model registered)."""
    mine = "  - {name: mine, base_url: \"{base}\", api_key_env: FAKE_KEY, input_per_mtok: 2,\n" \
           "     output_per_mtok: 2, tier: simple}\n"
    caplog.set_level("WARNING", logger="switchpoint")
    with learning_server(fake, tmp_path, EXPERIMENT, more_models=mine) as server:
        assert get(server, "/health").json()["ready"]
        for _ in range(2):
            assert post(server, "/v1/router/reload", None).status_code == 200
        settings = server.service.gateway.settings
        assert settings.source_path is not None
        config = Path(settings.source_path)
        config.write_text(config.read_text(encoding="utf-8").replace(
            "      neighbours:", "      tiered: {policy: tiers, weight: 0.2}\n      neighbours:"),
            encoding="utf-8")  # (an arm new at a reload is said, alone)
        assert post(server, "/v1/router/reload", None).status_code == 200
        monkeypatch.setattr(gateway_learning, "MAX_ARMS_WARNED", 2)  # (the two arms said)
        assert post(server, "/v1/router/models", {
            "name": "newbie", "base_url": fake.openai_base_url, "api_key_env": "FAKE_KEY",
            "input_per_mtok": 1, "output_per_mtok": 1, "tier": "simple"}).status_code == 201
        remembered = server.service.gateway.learning._arms_warned
        assert [arm for arm, _, models in remembered] == [
            "thrift/tiered", "thrift/neighbours"] and all(
                "newbie" in models for _, _, models in remembered), remembered
    offline = Gateway(settings, loader=loader, env=KEYS, serves_chat=False)
    offline.start()
    with offline:
        assert offline.router.catalog.names[-2:] == ["mine", "newbie"]
    said = [r.getMessage() for r in caplog.records if "experiment arm(s)" in r.getMessage()]
    warned = [m for m in said if '"newbie"' not in m]
    assert len(warned) == 2 and len(said) == 4, said
    assert warned[0].startswith('experiment arm(s) "thrift/neighbours" of policy knn: the knn '
                                "weights ")
    assert warned[1].startswith('experiment arm(s) "thrift/tiered" of policy tiers: '), warned
    assert 'no learned profile for catalog model(s) "mine": they are routed by tier and price ' \
           "alone" in warned[0]
    assert "policies: {knn: DIR}" in warned[0]
    assert "switchpoint fit RECORDS --policy knn --out DIR" in warned[0]


def test_the_route_answer_carries_the_learning_fields(fake: FakeProviderProcess,
                                                      tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, EXPERIMENT) as server:
        body = post(server, "/v1/route", {"prompt": math_prompt(1)}).json()
        assert body["experiment"] == "thrift" and body["arm"] in ("control", "thrifty",
                                                                  "neighbours")
        assert body["source"] == "router" and body["memory_fallback"] == ""
    with learning_server(fake, tmp_path / "plain") as server:
        body = post(server, "/v1/route", {"prompt": math_prompt(1)}).json()
        assert "source" not in body and "experiment" not in body


def test_exploration_sends_auto_elsewhere_but_never_a_named_model(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    extra = "learning: {exploration: 1.0, seed: 7}\n"
    with learning_server(fake, tmp_path, extra) as server:
        for i in range(6):
            headers, _ = chat(server, math_prompt(40 + i))
            assert headers["x-switchpoint-source"] == "exploration"
            assert headers["x-switchpoint-model"] == headers["x-switchpoint-routed-model"]
            assert headers["x-switchpoint-model"] != "strong"  # the greedy choice
            assert "Exploring" in headers["x-switchpoint-reasoning"]
            body = feedback(server, headers["x-switchpoint-decision-id"], score=0.5).json()
            assert body["model"] == headers["x-switchpoint-model"]
        for model in ("strong", "cheap"):
            named, _ = chat(server, math_prompt(60), model=model)
            assert named["x-switchpoint-model"] == model
            assert "x-switchpoint-source" not in named
        one = post(server, "/v1/route", {"prompt": math_prompt(61),
                                         "available_models": ["runner"]}).json()
        assert (one["selected_model"], one["source"]) == ("runner", "router")


TWINS = """  - {name: twin-a, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 2,
     output_per_mtok: 2, tier: simple}
  - {name: twin-b, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 2,
     output_per_mtok: 2, tier: simple}
"""


def test_exploration_between_models_of_one_score_is_answered_by_the_explored_one(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # Two models without a profile, of one tier and one price, score alike: the explored one
    # must answer (it was sent to the router's choice, while the decision named the other).
    extra = "learning: {exploration: 1.0, seed: 7}\n"
    with learning_server(fake, tmp_path, extra, more_models=TWINS) as server:
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything",
                               max_retries=0, timeout=15)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": math_prompt(3)}],
            extra_headers={"x-switchpoint-models": "twin-a,twin-b"})
        headers, reply = raw.headers, raw.parse()
        assert headers["x-switchpoint-source"] == "exploration"
        explored = headers["x-switchpoint-routed-model"]
        assert f"Exploring: sent to {explored}" in unquote(headers["x-switchpoint-reasoning"])
        assert reply.model == headers["x-switchpoint-model"] == explored
        entry = get(server, "/v1/router/requests").json()["data"][0]
        assert entry["models_tried"] == [explored]
        body = feedback(server, headers["x-switchpoint-decision-id"], score=0.5).json()
        assert body["model"] == explored


def test_an_arms_reasoning_says_when_the_request_overrode_its_cost_weight(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, EXPERIMENT) as server:
        for s in range(40):
            session = f"override-{s}"
            headers, _ = chat(server, math_prompt(s), session=session)
            if headers["x-switchpoint-arm"] == "thrifty":
                break
        else:
            raise AssertionError("no session landed in the thrifty arm")
        assert "overridden" not in unquote(headers["x-switchpoint-reasoning"])
        r = httpx.post(f"{server.base}/v1/chat/completions", timeout=15, headers={
            "x-session-id": session, "x-switchpoint-cost-weight": "0"}, json={
            "model": "auto", "messages": [{"role": "user", "content": math_prompt(s)}]})
        assert r.headers["x-switchpoint-arm"] == "thrifty"
        reasoning = unquote(r.headers["x-switchpoint-reasoning"])
        assert ('Experiment "thrift", arm "thrifty" (lambda 5, overridden by the request\'s '
                "lambda 0)") in reasoning


def test_a_disabled_experiment_takes_no_traffic_and_no_promotion(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    disabled = EXPERIMENT.replace("    min_n: 8\n", "    min_n: 8\n    enabled: false\n")
    with learning_server(fake, tmp_path, disabled) as server:
        headers, _ = chat(server, math_prompt(1), session="s")
        assert "x-switchpoint-experiment" not in headers
        refused = post(server, "/v1/router/experiments/thrift/promote", {"arm": "control"})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "conflict" and "disabled" in error["message"]
        report = get(server, "/v1/router/experiments/thrift").json()
        assert report["promoted"] is None
    with learning_server(fake, tmp_path, EXPERIMENT) as server:  # enabled again: nothing kept
        assert get(server, "/v1/router/experiments/thrift").json()["promoted"] is None


def test_a_promotion_whose_arm_a_reload_removed_is_reported_as_not_applied(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, EXPERIMENT) as server:
        promoted = post(server, "/v1/router/experiments/thrift/promote", {"arm": "thrifty"})
        assert promoted.json()["promoted"] == "thrifty", promoted.text
        config = tmp_path / "switchpoint.yaml"
        config.write_text(config.read_text(encoding="utf-8").replace(
            "      thrifty: {cost_weight: 5}\n", "      frugal: {cost_weight: 5}\n"),
            encoding="utf-8")
        assert post(server, "/v1/router/reload").status_code == 200
        arms = Counter(chat(server, math_prompt(s), session=f"after-{s}")[0][
            "x-switchpoint-arm"] for s in range(24))
        assert len(arms) > 1  # the promotion no longer applies: traffic is split
        report = get(server, "/v1/router/experiments/thrift").json()
        assert report["promoted"] is None
        assert report["promotion"].startswith(
            'not applied: the promoted arm "thrifty" is no longer an arm of ')
        assert '"control", "frugal", "neighbours"' in report["promotion"]
        listed = get(server, "/v1/router/experiments").json()["data"][0]
        assert (listed["promoted"], listed["promotion"]) == (None, report["promotion"])



def test_an_experiment_listing_several_tenants_pools_their_outcomes_into_its_arms(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The arms of an experiment that lists several tenants count every listed tenant's
    decisions and outcomes together: one tenant's feedback alone names the winner, and its
    promotion sends every listed tenant's traffic to that arm."""
    admin = "a" * 32
    extra = ("auth: keys\nadmin_token_env: ADMIN_TOKEN\ntenants:\n  acme: {}\n  globex: {}\n"
             "experiments:\n  shared:\n    tenants: [acme, globex]\n    min_n: 6\n"
             "    arms:\n      control: {}\n      thrifty: {cost_weight: 5}\n")
    with learning_server(fake, tmp_path, extra, environ={"ADMIN_TOKEN": admin}) as server:
        keys = {tenant: post(server, "/v1/router/keys", {"tenant": tenant}, key=admin).json()[
            "key"] for tenant in ("acme", "globex")}
        decisions: dict[str, dict[str, list[str]]] = {"acme": {}, "globex": {}}
        for s in range(40):
            for tenant, key in keys.items():
                headers, _ = chat(server, math_prompt(s), key=key, session=f"{tenant}-{s}")
                assert headers["x-switchpoint-experiment"] == "shared"
                decisions[tenant].setdefault(headers["x-switchpoint-arm"], []).append(
                    headers["x-switchpoint-decision-id"])
        assert set(decisions["acme"]) == set(decisions["globex"]) == {"control", "thrifty"}
        for arm, ids in decisions["globex"].items():  # globex alone says how the arms do
            for decision_id in ids:
                r = feedback(server, decision_id, keys["globex"], success=arm == "thrifty")
                assert r.status_code == 200, r.text
        report = get(server, "/v1/router/experiments/shared", admin).json()
        by_arm = {a["arm"]: a for a in report["arms"]}
        for arm in ("control", "thrifty"):
            assert by_arm[arm]["decisions"] == (len(decisions["acme"][arm])
                                                + len(decisions["globex"][arm]))
            assert by_arm[arm]["n"] == len(decisions["globex"][arm])
        assert report["winner"] == "thrifty"  # though acme never said a word
        promoted = post(server, "/v1/router/experiments/shared/promote", {}, key=admin)
        assert promoted.json()["promoted"] == "thrifty", promoted.text
        served = Counter(chat(server, math_prompt(100 + s), key=keys["acme"],
                              session=f"acme-new-{s}")[0]["x-switchpoint-arm"]
                         for s in range(8))
        assert served == Counter({"thrifty": 8})


def test_an_experiment_that_earlier_ones_leave_no_traffic_is_refused_at_reload(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    tenants = "tenants:\n  acme: {}\n  globex: {}\n"
    with learning_server(fake, tmp_path, tenants + EXPERIMENT) as server:
        config = tmp_path / "switchpoint.yaml"
        good = config.read_text(encoding="utf-8")
        shadowed = [  # everyone is in thrift already / acme is in the first one already
            "  second:\n    arms: {a: {}, b: {cost_weight: 2}}\n",
            "  second:\n    tenants: [acme]\n    arms: {a: {}, b: {cost_weight: 2}}\n"]
        for second in shadowed:
            config.write_text(good + second, encoding="utf-8")
            refused = post(server, "/v1/router/reload")
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["code"] == "invalid_config"
            assert "experiments.second: would get no traffic" in error["message"]
            assert '"thrift"' in error["message"] and "enabled: false" in error["message"]
        # The old config keeps serving: one experiment, everyone in it.
        assert [e["experiment"] for e in get(server, "/v1/router/experiments").json()[
            "data"]] == ["thrift"]
        assert chat(server, math_prompt(1), session="s")[0][
            "x-switchpoint-experiment"] == "thrift"
        # Scoped to acme first, then everyone else: both take traffic, so both are fine; so
        # is a shadowed experiment that is disabled.
        scoped = good.replace("  thrift:\n", "  thrift:\n    tenants: [acme]\n")
        config.write_text(scoped + shadowed[0] + "  third:\n    enabled: false\n"
                          "    arms: {a: {}, b: {}}\n", encoding="utf-8")
        assert post(server, "/v1/router/reload").status_code == 200
        assert chat(server, math_prompt(2), session="s")[0][
            "x-switchpoint-experiment"] == "second"


def test_a_promotion_while_the_database_is_locked_is_refused_at_once_and_changes_nothing(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the store is known to refuse writes (another process holds the database's
    lock), a promotion is a 503 in a moment (it waited out SQLite's busy timeout) and
    promotes nothing; once the lock is let go it goes through."""
    import time

    from tests.fakes.held_lock import held_lock, short_lock_waits

    # A promotion that waited out the busy timeout would take all of it: a loaded machine
    # makes a refusal at once take a second at worst, well within it.
    busy_s = short_lock_waits(monkeypatch, seconds=3.0)
    with learning_server(fake, tmp_path, EXPERIMENT) as server:
        store = server.service.gateway.learning.store
        assert store is not None
        chat(server, math_prompt(1), session="s")  # the schema is there
        with held_lock(store.path):
            chat(server, math_prompt(2), session="s")  # the store finds the lock held
            deadline = time.monotonic() + 30
            while store.refusing() is None:
                assert time.monotonic() < deadline, "the store never refused"
                time.sleep(0.05)
            started = time.monotonic()
            refused = post(server, "/v1/router/experiments/thrift/promote", {"arm": "thrifty"})
            took = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "storage_unavailable"
            assert "nothing was promoted" in error["message"]
            assert took < busy_s, f"the promotion took {took:.1f} s to be refused"
            assert get(server, "/v1/router/experiments/thrift").json()["promoted"] is None
        deadline = time.monotonic() + 30
        while store.refusing() is not None:  # (it is refused at once for a few seconds more)
            assert time.monotonic() < deadline
            time.sleep(0.1)
        promoted = post(server, "/v1/router/experiments/thrift/promote", {"arm": "thrifty"})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["promoted"] == "thrifty"


def test_promotions_sent_at_once_apply_the_one_the_store_keeps_last(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # Each promotion wrote its row, then set the live arm: of two at once, the row written
    # last could be set first, so the arm served until a restart was not the one a restart
    # reads back from the store.
    arms = ["control", "thrifty", "neighbours", "thrifty"]
    with learning_server(fake, tmp_path, EXPERIMENT) as server:
        (db,) = tmp_path.rglob("switchpoint.db")
        with ThreadPoolExecutor(len(arms)) as pool:
            for _ in range(25):
                answers = list(pool.map(lambda arm: post(
                    server, "/v1/router/experiments/thrift/promote", {"arm": arm}), arms))
                assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
                live = get(server, "/v1/router/experiments/thrift").json()["promoted"]
                conn = sqlite3.connect(db)
                try:
                    (kept,) = conn.execute("SELECT arm FROM promotions WHERE experiment = ? "
                                           "ORDER BY seq DESC LIMIT 1", ("thrift",)).fetchone()
                finally:
                    conn.close()
                assert live == kept
    with learning_server(fake, tmp_path, EXPERIMENT) as server:  # what a restart serves
        assert get(server, "/v1/router/experiments/thrift").json()["promoted"] == live


def test_promoting_in_process_refuses_an_arm_that_is_not_a_name_and_keeps_a_named_one(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path, EXPERIMENT)
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        for bad in (5, ["thrifty"], b"thrifty"):
            with pytest.raises(InvalidInputError) as info:
                gateway.promote("thrift", bad)  # type: ignore[arg-type]
            assert info.value.field == "arm" and "must be the name of an arm" in str(info.value)
            assert gateway.experiment_report("thrift")["promoted"] is None  # nothing changed
        with pytest.raises(InvalidInputError, match='"nope" is not an arm of "thrift"'):
            gateway.promote("thrift", "nope")
        assert gateway.promote("thrift", "thrifty")["promoted"] == "thrifty"
        assert {gateway.route(math_prompt(i)).arm for i in range(10)} == {"thrifty"}
    with Gateway(settings, loader=loader, env=KEYS) as gateway:  # kept across a restart
        gateway.start()
        assert gateway.experiment_report("thrift")["promoted"] == "thrifty"



REBUILT = """tenants: {acme: {}}
experiments:
  thrift:
    tenants: [default]
    arms:
      control: {}
      thrifty: {cost_weight: 5}
"""


@pytest.mark.parametrize("rebuild", ["reload", "create"])
def test_a_promotion_made_while_a_new_snapshot_is_readied_applies_to_it(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        rebuild: str) -> None:
    # A reload, or an experiment made at run time, readies its snapshot with the promotions
    # of that moment; one made meanwhile went to the snapshot serving then, so once the new
    # one went live the report said "promoted" while the traffic was split among the arms.
    with learning_server(fake, tmp_path, REBUILT) as server:
        readied, go_on = hold_readying(server.service.gateway.state, monkeypatch)
        path, body = (("/v1/router/reload", {}) if rebuild == "reload" else
                      ("/v1/router/experiments", {"name": "other", "tenants": ["acme"]}))
        with ThreadPoolExecutor(1) as pool:
            rebuilt = pool.submit(post, server, path, body)
            assert readied.wait(30)
            promoted = post(server, "/v1/router/experiments/thrift/promote", {"arm": "thrifty"})
            go_on.set()
            assert rebuilt.result().status_code in (200, 201), rebuilt.result().text
        assert promoted.status_code == 200, promoted.text
        assert get(server, "/v1/router/experiments/thrift").json()["promoted"] == "thrifty"
        arms = {post(server, "/v1/route", {"prompt": math_prompt(i)}).json()["arm"]
                for i in range(12)}
        assert arms == {"thrifty"}

TWO_ARMS = """experiments:
  thrift:
    min_n: 2
    arms:
      control: {}
      thrifty: {cost_weight: 5}
"""


def test_an_experiments_report_keeps_the_decisions_retention_pruned(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Retention prunes the decisions, requests and feedback logs; the report reads them, and
    counts each pruned decision as it stood when pruned (its rows, its answer's cost, its
    latest outcome), from totals the store kept; what comes after adds to them."""
    with learning_server(fake, tmp_path, TWO_ARMS) as server:
        gateway = server.service.gateway
        scores = [0.2, 0.9, 0.4, 1.0, 0.0, 0.7, 0.5, 0.3]
        for s, score in enumerate(scores):
            headers, _ = chat(server, math_prompt(s), session=f"session-{s}")
            decision_id = headers["x-switchpoint-decision-id"]
            assert feedback(server, decision_id, score=0.6).status_code == 200
            assert feedback(server, decision_id, score=score).status_code == 200  # replaces
        chat(server, math_prompt(50), session="unscored")
        before = get(server, "/v1/router/experiments/thrift").json()
        assert sum(a["n"] for a in before["arms"]) == len(scores)
        assert all(a["pruned_decisions"] == 0 for a in before["arms"])

        time.sleep(0.05)
        gateway._housekeeping.run(False, 1e-9)  # the service's retention: every row older than now
        db = tmp_path / "data" / "switchpoint.db"
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)
        after = get(server, "/v1/router/experiments/thrift").json()
        for was, now in zip(before["arms"], after["arms"], strict=True):
            assert now["pruned_decisions"] == now["decisions"] == was["decisions"] > 0
            for figure in ("n", "interval_method", "cost_unknown_decisions"):
                assert now[figure] == was[figure], figure
            assert now["mean_quality"] == pytest.approx(was["mean_quality"], abs=1e-6)
            assert now["mean_cost_usd"] == pytest.approx(was["mean_cost_usd"], abs=1e-9)
            assert now["interval"] == pytest.approx(was["interval"], abs=1e-6)
        assert after["winner"] == before["winner"]

        # New traffic adds to the kept totals; a further prune keeps counting them once.
        headers, _ = chat(server, math_prompt(60), session="session-0")
        arm = headers["x-switchpoint-arm"]
        assert feedback(server, headers["x-switchpoint-decision-id"],
                        score=1.0).status_code == 200
        more = {a["arm"]: a for a in get(server, "/v1/router/experiments/thrift").json()["arms"]}
        was = {a["arm"]: a for a in after["arms"]}
        assert more[arm]["n"] == was[arm]["n"] + 1
        assert more[arm]["decisions"] == was[arm]["decisions"] + 1
        assert more[arm]["pruned_decisions"] == was[arm]["pruned_decisions"]
        time.sleep(0.05)
        gateway._housekeeping.run(False, 1e-9)
        again = {a["arm"]: a for a in get(server, "/v1/router/experiments/thrift").json()["arms"]}
        assert again[arm]["n"] == more[arm]["n"]
        assert again[arm]["pruned_decisions"] == again[arm]["decisions"] == more[arm]["decisions"]
        assert again[arm]["mean_quality"] == pytest.approx(more[arm]["mean_quality"], abs=1e-6)


def test_a_prune_cut_short_by_its_bound_keeps_each_decisions_answers_and_outcomes(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's retention deletes at most a bound of rows per table each run, so the
    decisions it leaves may be older than answers and outcomes another table's oldest rows
    hold: those stay with their decision until it goes (a request's row, an outcome and every
    one after it in the feedback log), so the report counts every decision with its cost and
    latest outcome, during the runs and once all is pruned."""
    monkeypatch.setattr(housekeeping, "PRUNE_MAX_ROWS", 2)
    with learning_server(fake, tmp_path, TWO_ARMS) as server:
        gateway = server.service.gateway
        # Two decisions routed alone first (no request row), then four answered; outcomes
        # sent newest decision first, so the feedback log's oldest rows are of the newest.
        ids = [post(server, "/v1/route", {"prompt": math_prompt(s)}).json()["decision_id"]
               for s in range(2)]
        ids += [chat(server, math_prompt(s), session=f"session-{s}")[0]
                ["x-switchpoint-decision-id"] for s in range(2, 6)]
        for decision_id, score in reversed(list(zip(ids, [0.2, 0.9, 0.4, 1.0, 0.0, 0.7],
                                                    strict=True))):
            assert feedback(server, decision_id, score=score).status_code == 200
        before = get(server, "/v1/router/experiments/thrift").json()["arms"]
        assert sum(a["n"] for a in before) == len(ids)
        assert gateway.learning.checkpoint() is not None
        time.sleep(0.05)
        db = tmp_path / "data" / "switchpoint.db"
        for _ in range(10):  # each run deletes at most two rows of each table
            gateway._housekeeping.run(False, 1e-9)
            now = get(server, "/v1/router/experiments/thrift").json()["arms"]
            for was, arm in zip(before, now, strict=True):
                for figure in ("decisions", "n", "cost_unknown_decisions"):
                    assert arm[figure] == was[figure], (figure, arm, was)
                assert arm["mean_quality"] == pytest.approx(was["mean_quality"], abs=1e-6)
                assert arm["mean_cost_usd"] == pytest.approx(was["mean_cost_usd"], abs=1e-9)
        with sqlite3.connect(db) as conn:
            for table in ("decisions", "requests", "feedback"):
                left = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                assert left <= 1, (table, left)  # (the row the checkpoint ends at stays)
        assert sum(a["pruned_decisions"] for a in now) == len(ids)
