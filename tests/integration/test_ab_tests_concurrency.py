"""Experiments created at run time from many threads at once: of one name exactly one is made
and the others are refused as taken; of many names past the bound no more than the bound are
made; the store's rows and the live set agree, and a restart reads the same set."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from switchpoint.config import Settings
from switchpoint.errors import ConflictError, SwitchpointError
from switchpoint.gateway import Gateway, kept
from switchpoint.learning.config import MAX_EXPERIMENTS
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.learning_env import (
    get,
    hold_readying,
    learning_server,
    post,
    settings_for,
    started_gateway,
)

TENANTS = 120
PATH = "/v1/router/experiments"
CONFIG = "tenants:\n" + "".join(f"  t{i}: {{}}\n" for i in range(TENANTS))


def _rows(settings: Settings) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.db_path) as db:
        return db.execute("SELECT name, ended FROM runtime_experiments ORDER BY seq").fetchall()


def _at_once(n: int, work: Any) -> list[object]:
    results: list[object] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except SwitchpointError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.fixture
def settings(fake: FakeProviderProcess, tmp_path: Path) -> Settings:
    return settings_for(fake, tmp_path, CONFIG)


def test_one_name_made_from_many_threads_at_once_is_made_once(settings: Settings) -> None:
    with started_gateway(settings) as gateway:
        results = _at_once(16, lambda i: gateway.create_ab_test("same", tenants=[f"t{i}"]))
        made = [r for r in results if not isinstance(r, Exception)]
        assert len(made) == 1, results
        assert all(isinstance(r, ConflictError) and r.param == "name"
                   for r in results if r not in made), results
        assert list(gateway.settings.experiments) == ["same"]
        assert [r[0] for r in _rows(settings)] == ["same"]
    with started_gateway(settings) as gateway:
        assert list(gateway.settings.experiments) == ["same"]


def test_names_past_the_bound_from_many_threads_never_pass_it(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    n = MAX_EXPERIMENTS + 12
    # (each may wait its turn at once: the bound on changes waiting is tested elsewhere)
    monkeypatch.setattr(kept, "MAX_WAITING", n)
    with started_gateway(settings) as gateway:
        results = _at_once(n, lambda i: gateway.create_ab_test(f"e{i}", tenants=[f"t{i}"]))
        kinds = Counter(type(r).__name__ for r in results)
        assert kinds == {"ABTest": MAX_EXPERIMENTS, "ConflictError": 12}, kinds
        live = list(gateway.settings.experiments)
        assert len(live) == MAX_EXPERIMENTS
        assert [r[0] for r in _rows(settings)] == live
    with started_gateway(settings) as gateway:
        assert list(gateway.settings.experiments) == live


def test_creates_over_http_at_once_make_one_per_name_and_never_pass_the_bound(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = MAX_EXPERIMENTS + 8
    # (each may wait its turn at once: the bound on changes waiting is tested elsewhere)
    monkeypatch.setattr(kept, "MAX_WAITING", n)
    with learning_server(fake, tmp_path, CONFIG) as server:
        same = _at_once(12, lambda i: post(server, PATH, {"name": "same",
                                                           "tenants": [f"t{i}"]}))
        codes = Counter(r.status_code for r in same)  # type: ignore[attr-defined]
        assert codes == {201: 1, 409: 11}, codes
        many = _at_once(n, lambda i: post(server, PATH, {"name": f"e{i}",
                                                          "tenants": [f"t{i + 12}"]}))
        codes = Counter(r.status_code for r in many)  # type: ignore[attr-defined]
        assert codes == {201: MAX_EXPERIMENTS - 1, 409: 9}, codes
        refused = [r.json()["error"] for r in many  # type: ignore[attr-defined]
                   if r.status_code == 409]  # type: ignore[attr-defined]
        assert {e["param"] for e in refused} == {"name"}
        listed = [e["experiment"] for e in get(server, PATH).json()["data"]]
        assert len(listed) == MAX_EXPERIMENTS
    assert [r[0] for r in _rows(settings_for(fake, tmp_path, CONFIG))] == listed
    with learning_server(fake, tmp_path, CONFIG) as server:
        assert [e["experiment"] for e in get(server, PATH).json()["data"]] == listed


def _ending(gateway: Gateway, name: str, outcome: dict[str, object]) -> threading.Thread:
    """End experiment ``name`` on a thread of its own, its report kept as ``ended``."""
    thread = threading.Thread(target=lambda: outcome.update(ended=gateway.end_ab_test(name)))
    thread.start()
    return thread


def _promoting(gateway: Gateway, name: str, outcome: dict[str, object]) -> threading.Thread:
    """Promote arm ``b`` of ``name`` on a thread of its own, its answer or refusal kept as
    ``promoted``."""
    def promote() -> None:
        try:
            outcome["promoted"] = gateway.promote(name, "b")
        except SwitchpointError as exc:
            outcome["promoted"] = exc

    thread = threading.Thread(target=promote)
    thread.start()
    return thread


def test_a_promotion_sent_while_its_experiment_ends_waits_and_is_refused(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # A promotion checked "not ended" before the end went live, then stored for the ended
    # experiment: its report said promoted. It now waits for the end, and is refused.
    with started_gateway(settings) as gateway:
        gateway.create_ab_test("rt", tenants=["t0"])
        readied, go_on = hold_readying(gateway.state, monkeypatch)
        outcome: dict[str, object] = {}
        ending = _ending(gateway, "rt", outcome)
        assert readied.wait(30)
        promoting = _promoting(gateway, "rt", outcome)
        promoting.join(0.5)
        assert promoting.is_alive(), outcome  # it waits for the end under way
        go_on.set()
        ending.join(30)
        promoting.join(30)
        assert not ending.is_alive() and not promoting.is_alive()
        refused = outcome["promoted"]
        assert isinstance(refused, ConflictError) and refused.param == "name", refused
        assert "has ended" in str(refused)
        assert gateway.experiment_report("rt").get("promoted") is None


def test_a_promotion_sent_as_an_ended_experiment_goes_live_is_refused(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The end takes the experiment out of the run-time set, then its snapshot goes live: a
    # promotion between the two found it neither running (so took no lock) nor gone from the
    # live settings (so not ended), and was stored for the ended experiment.
    with started_gateway(settings) as gateway:
        gateway.create_ab_test("rt", tenants=["t0"])
        state = gateway.state
        reached, go_on = threading.Event(), threading.Event()

        def hold(live: Any) -> None:  # (runs as the end's snapshot goes live)
            if "rt" not in live.settings.experiments and not reached.is_set():
                reached.set()
                go_on.wait(30)

        state.on_swap(hold)
        learning_promote = gateway.learning.promote
        promoting_now = threading.Event()

        def promote_seen(*args: Any) -> Any:
            promoting_now.set()
            return learning_promote(*args)

        monkeypatch.setattr(gateway.learning, "promote", promote_seen)
        outcome: dict[str, object] = {}
        ending = _ending(gateway, "rt", outcome)
        assert reached.wait(30)
        assert "rt" not in gateway.ab_tests.running and "rt" in gateway.ab_tests.ended
        assert "rt" in gateway.settings.experiments  # (not live yet)
        promoting = _promoting(gateway, "rt", outcome)
        # A promotion that does not wait for the end reaches the learning part meanwhile (one
        # that waits never does: the bound only keeps this test from hanging on it).
        promoting_now.wait(2)
        go_on.set()
        ending.join(30)
        promoting.join(30)
        assert not ending.is_alive() and not promoting.is_alive()
        assert outcome["ended"]["experiment"] == "rt"  # type: ignore[index]
        refused = outcome["promoted"]
        assert isinstance(refused, ConflictError) and refused.param == "name", refused
        assert "has ended" in str(refused)
        assert gateway.experiment_report("rt").get("promoted") is None
        with sqlite3.connect(settings.db_path) as db:
            assert db.execute("SELECT count(*) FROM promotions").fetchone() == (0,)
