"""Experiments created at run time over HTTP, on a real server on loopback: ``POST
/v1/router/experiments`` answers 201 with the report, requests join it (the route door by its
name, chat by session), its arm can be promoted, ``DELETE`` ends it keeping its report, a
restart on the same data_dir keeps it with its decisions; bad bodies are 400s and taken names
409s naming the field, and change nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt
from tests.integration.learning_env import chat, feedback, get, learning_server, post
from tests.integration.published_schema import Published
from tests.integration.servers import ThreadServer
from tests.integration.test_ab_tests import CONFIG

PATH = "/v1/router/experiments"


def delete(server: ThreadServer, path: str) -> httpx.Response:
    return httpx.delete(f"{server.base}{path}", timeout=30)


def test_an_experiment_created_over_http_is_routed_promoted_ended_and_kept_across_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, CONFIG) as server:
        published = Published(get(server, "/openapi.json").json())
        made = post(server, PATH, {"name": "quality-vs-cost", "split": 0.5, "min_n": 4})
        report = published.valid("POST", PATH, made, status=201)
        assert made.headers["location"] == f"{PATH}/quality-vs-cost"
        assert (report["experiment"], report["split"], report["ended_at"]) == (
            "quality-vs-cost", 0.5, None)
        assert [(a["arm"], a["cost_weight"], a["decisions"]) for a in report["arms"]] == [
            ("a", None, 0), ("b", 0.0, 0)]
        other = post(server, PATH, {"name": "knn-arms", "tenants": ["acme"], "arms": {
            "x": {}, "y": {"policy": "knn"}}})
        assert other.status_code == 400 and other.json()["error"]["param"] == "tenants"
        listed = get(server, PATH).json()["data"]
        assert [e["experiment"] for e in listed] == ["thrift", "quality-vs-cost"]

        routed = [post(server, "/v1/route", {"prompt": math_prompt(i),
                                             "ab_test": "quality-vs-cost"}) for i in range(20)]
        assert all(r.status_code == 200 for r in routed)
        arms = {r.json()["arm"] for r in routed}
        assert {r.json()["experiment"] for r in routed} == {"quality-vs-cost"}
        assert arms == {"a", "b"}
        decisions = []
        for s in range(12):
            headers, _ = chat(server, math_prompt(s), session=f"s-{s}")
            assert headers["x-switchpoint-experiment"] == "quality-vs-cost"
            decisions.append(headers["x-switchpoint-decision-id"])
        for decision_id in decisions:
            assert feedback(server, decision_id, success=True).status_code == 200
        promoted = post(server, f"{PATH}/quality-vs-cost/promote", {"arm": "b"}).json()
        assert (promoted["promoted"], promoted["promotion"]) == ("b", "chosen")
        assert {chat(server, math_prompt(50 + s), session=f"n-{s}")[0]["x-switchpoint-arm"]
                for s in range(4)} == {"b"}
        ended = published.valid("DELETE", f"{PATH}/{{name}}", delete(
            server, f"{PATH}/quality-vs-cost"))
        assert ended["ended_at"] is not None and not ended["enabled"]
        counted = sum(a["decisions"] for a in ended["arms"])
        assert counted == 36 and sum(a["n"] for a in ended["arms"]) == 12
        assert chat(server, math_prompt(99))[0].get("x-switchpoint-experiment") is None
        # Another one, left running.
        assert post(server, PATH, {"name": "cheap-first", "strategy_b": {
            "cost_weight": 4}}).status_code == 201
        # A configured one is ended in the config; an ended one not again; an unknown one is
        # a 404.
        refused = delete(server, f"{PATH}/thrift")
        assert refused.status_code == 409 and "in the config" in refused.json()["error"][
            "message"]
        again = delete(server, f"{PATH}/quality-vs-cost")
        assert again.status_code == 409 and "ended already" in again.json()["error"]["message"]
        assert delete(server, f"{PATH}/nope").status_code == 404
    # A restart on the same data_dir: both are there, the ended one with its decisions.
    with learning_server(fake, tmp_path, CONFIG) as server:
        kept = get(server, f"{PATH}/quality-vs-cost").json()
        assert kept["ended_at"] == ended["ended_at"]
        assert sum(a["decisions"] for a in kept["arms"]) == counted
        assert kept["promoted"] == "b"
        running = get(server, f"{PATH}/cheap-first").json()
        assert running["ended_at"] is None and running["arms"][1]["cost_weight"] == 4
        assert [e["experiment"] for e in get(server, PATH).json()["data"]] == [
            "thrift", "cheap-first", "quality-vs-cost"]
        headers, _ = chat(server, math_prompt(1), session="later")
        assert headers["x-switchpoint-experiment"] == "cheap-first"


def test_a_split_out_of_range_is_quoted_as_sent(fake: FakeProviderProcess,
                                                tmp_path: Path) -> None:
    """An integer is quoted as the integer sent (1), as the library quotes it, not as the float
    it reads as (1.0)."""
    with learning_server(fake, tmp_path, CONFIG) as server:
        for sent, says in ((b"1", "got 1:"), (b"0", "got 0:"), (b"-2", "got -2:"),
                           (b"1.0", "got 1.0:")):
            r = httpx.post(f"{server.base}{PATH}", content=b'{"name": "x", "split": ' + sent
                           + b"}", headers={"content-type": "application/json"}, timeout=30)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["param"] == "split" and says in error["message"], error
        assert [e["experiment"] for e in get(server, PATH).json()["data"]] == ["thrift"]



def test_an_arms_cost_weight_of_negative_zero_is_taken_as_zero(fake: FakeProviderProcess,
                                                                tmp_path: Path) -> None:
    # It was taken as it came: kept, reported as -0.0 and said as "lambda -0" in the
    # reasoning of every decision of the arm.
    with learning_server(fake, tmp_path, CONFIG) as server:
        made = httpx.post(f"{server.base}{PATH}", headers={"content-type": "application/json"},
                          content=b'{"name": "zero", "tenants": ["default"], "strategy_a": '
                                  b'{"cost_weight": -0.0}, "strategy_b": {"cost_weight": 1}}',
                          timeout=30)
        assert made.status_code == 201, made.text
        assert "-0" not in made.text and '"cost_weight":0.0' in made.text, made.text
        reasons = {chat(server, math_prompt(n), session=f"s{n}")[0]["x-switchpoint-reasoning"]
                   for n in range(12)}
        said = [r for r in reasons if 'arm "a"' in r]
        assert said and all("lambda 0 " in r or "lambda 0)" in r for r in said), said
        assert not any("-0" in r for r in reasons), reasons
        assert "-0" not in get(server, f"{PATH}/zero").text

def test_an_empty_strategy_over_http_is_the_configured_routing(fake: FakeProviderProcess,
                                                              tmp_path: Path) -> None:
    """strategy_b {} (no setting changed) made arm b quality_first (λ 0), the strategy for
    one left out."""
    with learning_server(fake, tmp_path, CONFIG) as server:
        made = post(server, PATH, {"name": "plain", "strategy_a": "quality_first",
                                   "strategy_b": {}})
        assert made.status_code == 201, made.text
        assert [(a["arm"], a["cost_weight"]) for a in made.json()["arms"]] == [
            ("a", 0.0), ("b", None)]


@pytest.fixture(scope="module")
def refusing(fake: FakeProviderProcess,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    """One server for the bodies refused below: a refusal changes nothing (each case checks),
    so each case finds the server as the first did, where each made a server of its own."""
    with learning_server(fake, tmp_path_factory.mktemp("refusing"), CONFIG) as server:
        yield server


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"name": "x", "split": 0}, 400, "split"),
    ({"name": "x", "split": 1.5}, 400, "split"),
    ({"name": "x", "split": "half"}, 400, "split"),
    ({"name": "x", "strategy_b": "fastest"}, 400, "strategy_b"),
    ({"name": "x", "strategy_b": ""}, 400, "strategy_b"),
    ({"name": "x", "strategy_a": {"cost_weight": 1e9}}, 400, "strategy_a"),
    ({"name": "x", "tenants": ["nobody"]}, 400, "tenants"),
    ({"name": "x", "tenants": ["globex"] * 5000}, 400, "tenants"),
    ({"name": "x", "min_n": 0}, 400, "min_n"),
    ({"name": "x", "arms": {"p": {}}}, 400, "arms"),
    # An arm's bad setting names the arm's path, as the arm's own checks do.
    ({"name": "x", "arms": {"p": {}, "q": {"weight": 5e-324}}}, 400, "arms.q.weight"),
    ({"name": "x", "arms": {"p": {}, "q": {"weight": "heavy"}}}, 400, "arms.q.weight"),
    ({"name": "x", "arms": {"p": {}, "q": {"weight": -1}}}, 400, "arms.q.weight"),
    ({"name": "x", "arms": {"p": {}, "q": 5}}, 400, "arms.q"),
    ({"name": "x", "split": 1e-9}, 400, "split"),
    ({"name": "x", "arms": {"p": {}, "q": {}}, "strategy_a": "quality_first"}, 400, "arms"),
    ({"name": "x", "colour": "red"}, 400, "colour"),
    ({"name": "no way"}, 400, "name"),
    ({"split": 0.5}, 400, "name"),
    ({"name": "thrift"}, 409, "name"),
    ({"name": "x", "tenants": ["acme"]}, 400, "tenants"),
])
def test_a_bad_experiment_body_is_refused_naming_the_field_and_nothing_is_made(
        refusing: ThreadServer, body: dict[str, Any], status: int, param: str) -> None:
    r = post(refusing, PATH, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert len(error["message"]) < 800
    assert [e["experiment"] for e in get(refusing, PATH).json()["data"]] == ["thrift"]
    assert not post(refusing, "/v1/route", {"prompt": "hi"}).json().get("experiment")


def test_an_unknown_name_is_a_404_naming_the_experiments_there_are_ended_ones_too(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """It said 'there are: thrift' while an ended one's report was there to read too."""
    with learning_server(fake, tmp_path, CONFIG) as server:
        assert post(server, PATH, {"name": "finished"}).status_code == 201
        assert delete(server, f"{PATH}/finished").status_code == 200
        assert get(server, f"{PATH}/finished").status_code == 200  # (its report is read)
        for r in (get(server, f"{PATH}/nope"), post(server, f"{PATH}/nope/promote", {})):
            assert r.status_code == 404, r.text
            error = r.json()["error"]
            assert error["param"] == "name", error
            assert error["message"].startswith('name: no experiment "nope" '), error
        assert get(server, f"{PATH}/nope").json()["error"]["message"].endswith(
            'there are: "thrift", "finished"')
        # Promoting an ended one is refused for that, so promote names those it may take.
        assert post(server, f"{PATH}/nope/promote", {}).json()["error"]["message"].endswith(
            'there are: "thrift"')


def _kept(server: ThreadServer) -> list[tuple[str, bool]]:
    """data_dir's run-time experiments: (name, ended)."""
    with sqlite3.connect(server.service.gateway.settings.db_path) as db:
        return [(name, ended is not None) for name, ended in db.execute(
            "SELECT name, ended FROM runtime_experiments ORDER BY seq")]


def _shown(server: ThreadServer) -> list[tuple[str, bool]]:
    """The service's run-time experiments as it lists them: (name, ended)."""
    return [(e["experiment"], e["ended_at"] is not None)
            for e in get(server, PATH).json()["data"] if e["experiment"] != "thrift"]


def test_an_experiment_the_store_refuses_to_create_end_or_promote_is_a_503_changing_nothing(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer waits out the busy timeout (short here) and the write fails: a 503 with
    # Retry-After saying nothing was created (or it still runs, or nothing was promoted),
    # the service and data_dir as they were; once the lock is let go, it is taken. It was a
    # 503 that did not say what happened (or a 500 after 30 s, the write left queued).
    from tests.fakes.held_lock import (
        held_lock,
        refused_unkept,
        short_lock_waits,
        until_writable,
    )

    short_lock_waits(monkeypatch, seconds=1.0)
    with learning_server(fake, tmp_path, CONFIG) as server:
        store = server.service.gateway.learning.store
        assert store is not None
        sends: list[tuple[Callable[[], httpx.Response], str, str, list[tuple[str, bool]]]] = [
            (lambda: post(server, PATH, {"name": "held"}), "the experiment",
             "nothing was created", []),
            (lambda: delete(server, f"{PATH}/held"), "the end of the experiment",
             "it still runs", [("held", False)])]
        for send, what, words, before in sends:
            with held_lock(store.path):
                refused = send()
            refused_unkept(refused, what, words)
            assert _kept(server) == before and _shown(server) == before
            until_writable(store)  # (refused at once for a moment more)
            taken = send()
            assert taken.status_code in (200, 201), taken.text
        assert _kept(server) == _shown(server) == [("held", True)]
        # A promotion alike: nothing was promoted, here or in data_dir.
        until_writable(store)
        with held_lock(store.path):
            refused = post(server, f"{PATH}/thrift/promote", {"arm": "thrifty"})
        refused_unkept(refused, "the promotion", "nothing was promoted")
        assert get(server, f"{PATH}/thrift").json()["promoted"] is None
        with sqlite3.connect(store.path) as db:
            assert db.execute("SELECT count(*) FROM promotions").fetchone() == (0,)
        until_writable(store)
        promoted = post(server, f"{PATH}/thrift/promote", {"arm": "thrifty"})
        assert promoted.status_code == 200 and promoted.json()["promoted"] == "thrifty"


def test_promotions_and_experiments_queued_behind_a_stuck_write_are_bounded(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The store's writer is stuck: one promotion waits for its write, the next for the
    # promotions' lock it holds, and past the bound on changes waiting the next promotion,
    # creation or end is refused at once, not queued on a lock without limit. One refused
    # for its own fault hears that first: an experiment there is none of its 404, a name
    # taken its 409, an arm the experiment does not have its 400 (they heard the 503 of one
    # too many waiting, and were told to retry).
    from switchpoint.gateway.kept import waiting
    from tests.fakes.held_lock import queued_while_held, refused_as_too_many, short_lock_waits

    short_lock_waits(monkeypatch, seconds=120.0)
    monkeypatch.setattr("switchpoint.gateway.kept.MAX_WAITING", 2)
    with learning_server(fake, tmp_path, CONFIG) as server:
        store = server.service.gateway.learning.store
        assert store is not None
        made = post(server, PATH, {"name": "made"})
        assert made.status_code == 201, made.text

        def refused() -> None:
            refused_as_too_many(post(server, f"{PATH}/thrift/promote", {"arm": "thrifty"}),
                                "the promotion", "nothing was promoted", queued=2)
            refused_as_too_many(post(server, f"{PATH}/made/promote", {"arm": "b"}),
                                "the promotion", "nothing was promoted", queued=2)
            refused_as_too_many(post(server, PATH, {"name": "late"}), "the experiment",
                                "nothing was created", queued=2)
            refused_as_too_many(delete(server, f"{PATH}/made"), "the end of the experiment",
                                "it still runs", queued=2)
            for answer, status, said in [
                    (post(server, f"{PATH}/nope/promote", {"arm": "b"}), 404,
                     'name: no experiment "nope" is configured or was created at run time'),
                    (post(server, f"{PATH}/made/promote", {"arm": "c"}), 400,
                     'arm: "c" is not an arm of "made" ("a", "b")'),
                    (post(server, f"{PATH}/thrift/promote", {"arm": "c"}), 400,
                     'arm: "c" is not an arm of "thrift"'),
                    (post(server, PATH, {"name": "made"}), 409,
                     'name: experiment "made" was created at run time already'),
                    (delete(server, f"{PATH}/nope"), 404,
                     'name: no experiment "nope" was created at run time')]:
                assert answer.status_code == status, answer.text
                assert answer.json()["error"]["message"].startswith(said), answer.text
            assert waiting(store) == 2

        answers = queued_while_held(store.path, store, [
            lambda: post(server, f"{PATH}/thrift/promote", {"arm": "thrifty"}),
            lambda: post(server, f"{PATH}/thrift/promote", {"arm": "thrifty"})], refused)
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert get(server, f"{PATH}/thrift").json()["promoted"] == "thrifty"
        assert get(server, f"{PATH}/made").json()["promoted"] is None
        assert _kept(server) == _shown(server) == [("made", False)]
        with sqlite3.connect(store.path) as db:
            assert db.execute("SELECT count(*) FROM promotions").fetchone() == (2,)
        assert waiting(store) == 0


def test_an_experiment_waits_for_data_dir_to_keep_it_and_the_service_follows_the_store(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process holds the database's write lock for longer than a client would wait:
    # the creation and the end wait for the write, the service listing what data_dir holds
    # meanwhile, and the answer says what was kept once the lock is let go.
    from tests.fakes.held_lock import sent_while_held, short_lock_waits

    short_lock_waits(monkeypatch, seconds=120.0)
    with learning_server(fake, tmp_path, CONFIG) as server:
        store = server.service.gateway.learning.store
        assert store is not None
        sends: list[tuple[Callable[[], httpx.Response], list[tuple[str, bool]]]] = [
            (lambda: post(server, PATH, {"name": "held"}), [("held", False)]),
            (lambda: delete(server, f"{PATH}/held"), [("held", True)])]
        before: list[tuple[str, bool]] = []
        for send, after in sends:

            def unchanged(before: list[tuple[str, bool]] = before) -> None:
                assert _kept(server) == before and _shown(server) == before

            answer = sent_while_held(store.path, send, unchanged)
            assert answer.status_code in (200, 201), answer.text
            assert answer.json()["experiment"] == "held"
            assert _kept(server) == _shown(server) == after
            before = after
