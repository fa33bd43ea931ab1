"""The gateway's learning parts on their own: intervals and the winner rule, experiment
assignment, comparisons waiting for scores, the feedback rows and pending decisions in the
store, a tenant memory's cap, the learning config."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchpoint.catalog import Catalog, ModelCard, usd_text
from switchpoint.config import load_settings
from switchpoint.errors import ConfigError, ConflictError, NotFoundError
from switchpoint.gateway.experiments import (
    Experiments,
    experiment_report,
    interval,
    t_quantile,
    wilson,
)
from switchpoint.gateway.learning import LiveLearning, answer_cost
from switchpoint.gateway.live import RouterFactory
from switchpoint.gateway.preferences import Compare, Compares
from switchpoint.learning.events import FeedbackEvent
from switchpoint.learning.memory import PendingDecision
from switchpoint.policies import ClusterPolicy, Inputs
from switchpoint.router import Router
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import (
    ComparePrune,
    LearningReader,
    PendingForget,
    PendingRecord,
    PromotionRecord,
    feedback_record,
)
from switchpoint.weights import WeightsPackage
from tests.conftest import FakeEmbedder
from tests.fakes.two_kinds import MODELS, labels, math_prompt, two_kinds_package

EXPERIMENT = {"experiments": {"x": {"min_n": 3, "arms": {
    "a": {"weight": 3}, "b": {"weight": 1, "cost_weight": 2}}}}}


def test_t_quantiles_and_wilson_intervals_match_their_tables() -> None:
    assert t_quantile(1) == 12.706 and t_quantile(30) == 2.042
    assert t_quantile(40) == pytest.approx(2.021, abs=1e-3)
    assert t_quantile(120) == pytest.approx(1.980, abs=1e-3)
    assert t_quantile(10**6) == pytest.approx(1.95996, abs=1e-4)
    low, high = wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)  # the textbook values
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_intervals_say_which_method_they_use() -> None:
    assert interval([]) == (None, None, None, "none")
    mean, low, high, method = interval([1.0, 0.0, 1.0, 1.0])
    assert (mean, method) == (0.75, "wilson")
    assert (low, high) == wilson(3, 4)
    mean, low, high, method = interval([0.5, 0.7, 0.9])
    assert method == "t" and mean == pytest.approx(0.7)
    half = 4.303 * 0.2 / math.sqrt(3)
    assert low == pytest.approx(0.7 - half) and high == pytest.approx(min(1.0, 0.7 + half))
    assert interval([0.4])[3] == "t" and interval([0.4])[1] is None


def test_scores_all_alike_are_not_taken_as_certain() -> None:
    """Two arms scored 0.9, 0.9 and 0.2, 0.2 show no spread: a t-interval would be a point
    each and name a winner from four scores; the Wilson interval of each mean overlaps."""
    high_arm, low_arm = interval([0.9, 0.9]), interval([0.2, 0.2])
    assert high_arm[3] == low_arm[3] == "wilson"
    assert (high_arm[1], high_arm[2]) == pytest.approx(wilson(1.8, 2))
    assert high_arm[1] is not None and low_arm[2] is not None and high_arm[1] < low_arm[2]


def test_assignment_is_deterministic_weighted_and_follows_a_promotion() -> None:
    settings = load_settings(overrides=EXPERIMENT)
    experiments = Experiments(settings, {})
    first = [experiments.assign("default", f"s{i}") for i in range(4000)]
    again = [experiments.assign("default", f"s{i}") for i in range(4000)]
    assert [a.arm if a else None for a in first] == [a.arm if a else None for a in again]
    counts = Counter(a.arm for a in first if a is not None)
    assert 0.72 < counts["a"] / 4000 < 0.78  # weights 3 : 1
    assert Experiments(settings, {"x": "b"}).assign("default", "s1").arm == "b"  # type: ignore[union-attr]
    scoped = load_settings(overrides={"tenants": {"acme": {}}, "experiments": {"x": {
        "tenants": ["acme"], "arms": {"a": {}, "b": {}}}}})
    assert Experiments(scoped, {}).assign("default", "s1") is None
    assert Experiments(scoped, {}).assign("acme", "s1") is not None


def test_the_experiment_tally_a_reader_keeps_equals_a_whole_read_after_each_batch(
        tmp_path: Path) -> None:
    """Repeated reports read only what was logged since: batches of decisions, requests that
    come after their decision (some twice), outcomes that replace earlier ones, and a prune,
    each tallied to what a reader new to the file reads whole."""
    import random

    from switchpoint.store import DecisionRecord, RequestRecord
    from switchpoint.store.retention import prune

    settings = load_settings(overrides=EXPERIMENT)
    store = SQLiteStore(tmp_path / "s.db").open()
    rng = random.Random(7)
    kept = LearningReader(store.path)
    made: list[str] = []

    def batch(start: float) -> None:
        for _ in range(40):
            i = len(made)
            arm = rng.choice(["a", "b", "other"])
            store.append(DecisionRecord(
                id=f"d{i}", ts=start + i, selected_model="m", cluster_id=0, cost_weight=0.5,
                candidates=["m"], cache_hit=False, routing_ms=0, embedding_ms=0, policy="p",
                weights_id="w", expected_error=0.1, cost_adjusted_score=0.1,
                expected_costs={"m": 0.01 * rng.randint(1, 5)} if i % 3 else None,
                experiment="x" if arm != "other" else None,
                arm=arm if arm != "other" else None)).result()
            made.append(f"d{i}")
        for _ in range(60):  # requests and outcomes, old decisions' as well as new ones'
            decision = rng.choice(made)
            if rng.random() < 0.4:
                store.append(RequestRecord(
                    id=f"r{rng.random()}", ts=time.time(), requested_model="auto",
                    status="ok", http_status=200, pin_state="none", stream=False,
                    latency_ms=1.0, decision_id=decision,
                    cost_usd=rng.choice([None, 0.002, 0.004]))).result()
            else:
                event = FeedbackEvent(decision_id=decision, model="m",
                                      quality=rng.choice([0.0, 1.0, 0.25, 0.5]),
                                      tenant=rng.choice(["default", "acme"]))
                store.append(feedback_record(event, "decision", weights_id="w")).result()

    def same(kept_report: dict[str, Any], whole: dict[str, Any]) -> None:
        assert kept_report.keys() == whole.keys()
        for arm in whole:
            a, b = kept_report[arm], whole[arm]
            assert (a["decisions"], a["quality_counts"]) == (b["decisions"],
                                                             b["quality_counts"]), arm
            assert a["mean_cost_usd"] == pytest.approx(b["mean_cost_usd"], abs=1e-12)
            assert a["cost_unknown"] == b["cost_unknown"], arm

    for round_ in range(6):
        batch(1000.0 * round_)
        same(kept.experiment("x"), LearningReader(store.path).experiment("x"))
        assert experiment_report("x", settings, kept, {})["arms"][0]["n"] == experiment_report(
            "x", settings, LearningReader(store.path), {})["arms"][0]["n"]
    assert sum(sum(arm["quality_counts"].values())
               for arm in kept.experiment("x").values()) > 50
    store.close()
    prune(store.path, 2500.0)  # the oldest decisions and requests go
    store = SQLiteStore(tmp_path / "s.db").open()
    same(kept.experiment("x"), LearningReader(store.path).experiment("x"))
    batch(9000.0)
    same(kept.experiment("x"), LearningReader(store.path).experiment("x"))
    store.close()


def test_an_experiment_tally_read_while_a_prune_runs_is_read_whole_once_it_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune beside the service deletes in short batches: a report read after the prune
    was noted but before its rows were gone kept them in its tally for good (the prune it
    had seen was the last one), counting decisions no longer in the log."""
    from switchpoint.store import DecisionRecord, retention

    store = SQLiteStore(tmp_path / "s.db").open()
    for i in range(30):
        store.append(DecisionRecord(
            id=f"d{i}", ts=1000.0 + i if i < 20 else time.time(), selected_model="m",
            cluster_id=0, cost_weight=0.5, candidates=["m"], cache_hit=False, routing_ms=0,
            embedding_ms=0, policy="p", weights_id="w", expected_error=0.1,
            cost_adjusted_score=0.1, experiment="x", arm="a")).result()
        store.append(feedback_record(FeedbackEvent(decision_id=f"d{i}", model="m",
                                                   quality=1.0), "decision",
                                     weights_id="w")).result()
    kept = LearningReader(store.path)
    assert kept.experiment("x")["a"]["decisions"] == 30
    monkeypatch.setattr(retention, "BATCH", 7)
    delete = retention._delete_older

    def read_meanwhile(conn: sqlite3.Connection, table: str, cutoff: float,
                       max_rows: int | None) -> int:
        kept.experiment("x")  # the service's report, between two of the prune's batches
        return delete(conn, table, cutoff, max_rows)

    monkeypatch.setattr(retention, "_delete_older", read_meanwhile)
    report = retention.prune(store.path, 2000.0)
    assert report.deleted["decisions"] == 20
    whole = LearningReader(store.path).experiment("x")
    # (the pruned decisions count from the totals the store kept as it deleted them)
    assert (whole["a"]["decisions"], whole["a"]["pruned_decisions"]) == (30, 20)
    assert whole["a"]["kept_scores"]["n"] == 20 and sum(whole["a"]["quality_counts"].values()) == 10
    assert kept.experiment("x") == whole
    store.close()


def test_an_experiment_s_mean_cost_counts_unknown_costs_apart_from_usd(tmp_path: Path) -> None:
    """An unpriced answer, or a decision no answer followed, used to count at the decision's
    expected cost, which an unpriced catalog gives in the weights' units, not in USD: the
    mean now averages the known USD costs only and counts the others apart."""
    from switchpoint.store import DecisionRecord, RequestRecord

    settings = load_settings(overrides=EXPERIMENT)
    store = SQLiteStore(tmp_path / "s.db").open()
    reader = LearningReader(store.path)
    for i, cost in enumerate([0.01, 0.03, None, "no answer"]):
        store.append(DecisionRecord(
            id=f"d{i}", ts=time.time(), selected_model="m", cluster_id=0, cost_weight=0.5,
            candidates=["m"], cache_hit=False, routing_ms=0, embedding_ms=0, policy="p",
            weights_id="w", expected_error=0.1, cost_adjusted_score=0.1,
            expected_costs={"m": 40.0}, experiment="x", arm="a")).result()
        if i == 1:
            reader.experiment("x")  # read in between: the running tally must agree
        if cost != "no answer":
            store.append(RequestRecord(
                id=f"r{i}", ts=time.time(), requested_model="auto", status="ok",
                http_status=200, pin_state="fresh", stream=False, latency_ms=1.0,
                decision_id=f"d{i}", cost_usd=cost if isinstance(cost, float) else None)
                         ).result()
    arm = {a["arm"]: a for a in experiment_report("x", settings, reader, {})["arms"]}["a"]
    assert arm["decisions"] == 4
    assert arm["mean_cost_usd"] == pytest.approx(0.02)
    assert arm["cost_unknown_decisions"] == 2
    whole = LearningReader(store.path).experiment("x")["a"]
    assert (whole["mean_cost_usd"], whole["cost_unknown"]) == (pytest.approx(0.02), 2)
    store.close()


def test_the_winner_needs_min_n_each_and_intervals_that_do_not_overlap(tmp_path: Path) -> None:
    settings = load_settings(overrides=EXPERIMENT)
    store = SQLiteStore(tmp_path / "s.db").open()
    from switchpoint.store import DecisionRecord, RequestRecord

    def decide(i: int, arm: str, quality: float) -> None:
        model = "m" if arm == "a" else 'our "m"'
        decision = DecisionRecord(id=f"d{arm}{i}", ts=time.time(), selected_model=model,
                                  cluster_id=0, cost_weight=0.5, candidates=[model],
                                  cache_hit=False, routing_ms=0, embedding_ms=0, policy="p",
                                  weights_id="w", expected_error=0.1, cost_adjusted_score=0.1,
                                  expected_costs={model: 0.01 if arm == "a" else 0.002},
                                  experiment="x", arm=arm)
        store.append(decision).result()
        store.append(RequestRecord(
            id=f"r{arm}{i}", ts=time.time(), requested_model="auto", status="ok",
            http_status=200, pin_state="fresh", stream=False, latency_ms=1.0,
            decision_id=decision.id, cost_usd=0.01 if arm == "a" else 0.002)).result()
        event = FeedbackEvent(decision_id=decision.id, model="m", quality=quality)
        store.append(feedback_record(event, "decision", weights_id="w")).result()

    reader = LearningReader(store.path)
    for i in range(2):
        decide(i, "a", 1.0)
        decide(i, "b", 0.0)
    report = experiment_report("x", settings, reader, {})
    assert report["winner"] is None  # two each: below min_n
    decide(2, "a", 1.0)
    decide(2, "b", 0.0)
    report = experiment_report("x", settings, reader, {})
    arms = {a["arm"]: a for a in report["arms"]}
    assert (arms["a"]["n"], arms["b"]["n"]) == (3, 3)
    assert arms["a"]["mean_cost_usd"] == pytest.approx(0.01)
    assert arms["b"]["mean_cost_usd"] == pytest.approx(0.002)
    assert arms["a"]["interval"][0] < arms["b"]["interval"][1]
    assert report["winner"] is None  # enough of each, but the intervals still overlap
    for i in range(3, 6):
        decide(i, "a", 1.0)
        decide(i, "b", 0.0)
    report = experiment_report("x", settings, reader, {})
    assert report["winner"] == "a"
    # A repeat replaces: the latest quality of each decision counts once.
    for decision_id in ("db0", "db1"):
        store.append(feedback_record(FeedbackEvent(decision_id=decision_id, model="m",
                                                   quality=1.0),
                                     "decision", weights_id="w")).result()
    arms = {a["arm"]: a for a in experiment_report("x", settings, reader, {})["arms"]}
    assert arms["b"]["n"] == 6 and arms["b"]["mean_quality"] == pytest.approx(2 / 6)
    with pytest.raises(NotFoundError):
        experiment_report("nope", settings, reader, {})
    store.append(PromotionRecord(time.time(), "x", "a", "winner")).result()
    assert reader.promotions()["x"][0] == "a"
    store.close()


def test_feedback_rows_replay_exactly_and_pending_decisions_are_bounded(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db").open()
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    event = FeedbackEvent(decision_id="d1", model="strong", quality=0.25, tenant="acme",
                          embedding=tuple(float(v) for v in vector), units=((1, 0.75), (3, 0.25)),
                          chosen="strong", cost=0.001, served="big", measured_cost=0.0042)
    store.append(feedback_record(event, "decision", weights_id="w1", key_id="k",
                                 comment="late")).result()
    (row,) = LearningReader(store.path).feedback()
    assert row.event == event and (row.kind, row.weights_id) == ("decision", "w1")
    assert row.event.measured_cost == 0.0042
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM feedback")
    finally:
        conn.close()

    for i in range(20):
        entry = PendingDecision(decision_id=f"p{i}", tenant="default", chosen="cheap",
                                candidates=("cheap", "strong"), embedding=vector,
                                units=((0, 1.0),), expected_cost=0.002,
                                prompt_tokens=None if i % 2 else 40 + i,
                                prompt_hash="" if i % 2 else f"{i % 4:064x}")
        store.append(PendingRecord(entry, "w1")).result()
    store.append(PendingForget(tuple(f"p{i}" for i in range(15)))).result()
    reader = LearningReader(store.path)
    assert reader.pending("p14") is None and reader.pending("p15") is not None
    kept, weights_id = reader.pending("p19")  # type: ignore[misc]
    assert weights_id == "w1" and kept.candidates == ("cheap", "strong")
    assert kept.prompt_tokens is None and reader.pending("p18")[0].prompt_tokens == 58  # type: ignore[index]
    assert kept.embedding is not None and float(kept.embedding @ vector) > 0.9999
    assert kept.prompt_hash == "" and reader.pending("p18")[0].prompt_hash == f"{2:064x}"  # type: ignore[index]
    # (the latest kept of each prompt; one pruned is not found, nor one not among the newest)
    assert [reader.latest_pending(f"{n:064x}") for n in range(4)] == ["p16", None, "p18", None]
    # (with held, the first of the prompt's newest rows it says is open: p12 and p8, pruned,
    # are not rows of it)
    assert reader.latest_pending(f"{0:064x}", "default", held=lambda d: d != "p16",
                                 rows=3) is None
    assert reader.latest_pending(f"{2:064x}", "default", held=lambda d: True) == "p18"
    assert reader.latest_pending(f"{0:064x}", "acme") is None
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 5
        assert conn.execute("SELECT count(*) FROM pending WHERE prompt_hash IS NULL"
                            ).fetchone()[0] == 3  # (a decision without a prompt keeps none)
    finally:
        conn.close()
    store.close()


def test_the_quality_by_model_tally_equals_a_whole_read_however_the_log_grew(
        tmp_path: Path) -> None:
    """Read between appends, the running tally counts each decision's latest outcome once,
    as a whole read of the log does, with repeats replacing outcomes read by an earlier call
    (also about another model) and others within one batch; a log in a replaced file is
    read whole again."""
    rng = np.random.default_rng(3)
    store = SQLiteStore(tmp_path / "s.db").open()
    tallied = LearningReader(store.path)
    assert tallied.quality_by_model() == {}
    n = 0
    for batch in range(6):
        for _ in range(40):
            decision = f"d{rng.integers(30)}"  # about 1 in 3 a repeat, across batches too
            model = str(rng.choice(["cheap", "strong"]))
            served = "ours" if rng.random() < 0.5 else None
            store.append(feedback_record(FeedbackEvent(
                decision_id=decision, model=model, quality=float(rng.random()),
                tenant=str(rng.choice(["default", "acme"])), served=served), "decision",
                weights_id="w")).result()
            n += 1
        whole = LearningReader(store.path).quality_by_model()
        assert tallied.quality_by_model() == whole, batch
        assert tallied.quality_by_model("acme") == {"acme": whole["acme"]}
    assert sum(m["n"] for t in whole.values() for m in t.values()) < n  # repeats replaced
    store.close()
    (tmp_path / "s.db").unlink()
    store = SQLiteStore(tmp_path / "s.db").open()
    store.append(feedback_record(FeedbackEvent(decision_id="x", model="cheap", quality=1.0),
                                 "decision", weights_id="w")).result()
    assert tallied.quality_by_model() == {"default": {"cheap": {"n": 1, "mean_quality": 1.0}}}
    store.close()


def test_comparisons_expire_are_bounded_and_belong_to_one_tenant() -> None:
    def compare(cid: str, tenant: str = "acme", ttl: float = 60.0) -> Compare:
        now = time.time()
        return Compare(cid, tenant, {"A": "x", "B": "y"}, frozenset({"x", "y"}),
                       np.zeros(4, np.float32), None, "w", now, now + ttl)

    compares = Compares(capacity=2, ttl_s=60)
    compares.put(compare("c1"))
    assert compares.get("c1", "acme").model_of("A") == "x"
    assert compares.get("c1", "acme").model_of("y") == "y"
    with pytest.raises(NotFoundError):
        compares.get("c1", "globex")
    compares.put(compare("c2"))
    compares.put(compare("c3"))
    with pytest.raises(NotFoundError):
        compares.get("c1", "acme")  # the oldest went first
    compares.put(compare("old", ttl=-1))
    with pytest.raises(NotFoundError):
        compares.get("old", "acme")
    assert len(compares) == 2
    # The cap is each tenant's: another tenant's comparisons push none of acme's out.
    for i in range(5):
        compares.put(compare(f"g{i}", "globex"))
    assert compares.get("c3", "acme") and compares.get("g4", "globex")
    assert len(compares) == 4
    compares.resize(1, 60)  # a reload lowering the cap: each tenant keeps its newest
    assert len(compares) == 2 and compares.get("g4", "globex")
    with pytest.raises(NotFoundError):
        compares.get("g3", "globex")



def test_stored_comparisons_read_back_whole_and_are_pruned(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db").open()
    now = time.time()
    vector = np.linspace(-1, 1, 8).astype(np.float32)
    for i in range(6):
        store.append(Compare(f"c{i}", "acme", {"A": "x", "B": "y"}, frozenset({"x"}), vector,
                             ((0, 0.75), (3, 0.25)), "w1", now, now + 60)).result()
    store.append(Compare("gone", "acme", {"A": "x"}, frozenset({"x"}), vector, None, "w1",
                         now - 90, now - 30)).result()
    reader = LearningReader(store.path)
    back = reader.compare("c2")
    assert back is not None and back.labels == {"A": "x", "B": "y"}
    assert back.answered == frozenset({"x"}) and back.units == ((0, 0.75), (3, 0.25))
    np.testing.assert_array_equal(back.embedding, vector)  # float32: exact
    # A store-backed Compares finds what a restart took out of memory, for its tenant only.
    compares = Compares(capacity=3, ttl_s=60, lookup=reader.compare)
    assert compares.get("c2", "acme").model_of("B") == "y"
    with pytest.raises(NotFoundError):
        compares.get("c2", "globex")
    with pytest.raises(NotFoundError):
        compares.get("gone", "acme")  # expired, even though still stored
    for i in range(4):  # another tenant's, made later
        store.append(Compare(f"g{i}", "globex", {"A": "x"}, frozenset({"x"}), vector, None,
                             "w1", now, now + 60)).result()
    assert reader.compare("c5", newest=3) is not None  # among acme's newest three
    assert reader.compare("c2", newest=3) is None and reader.compare("g0", newest=3) is None
    store.append(ComparePrune(3, now)).result()
    assert reader.compare("gone") is None  # expired rows go
    assert [reader.compare(f"c{i}") is not None for i in range(6)] == [False] * 4 + [True] * 2
    assert [reader.compare(f"g{i}") is not None for i in range(4)] == [False] + [True] * 3
    store.close()


def test_a_tenants_memory_holds_at_most_its_cap_oldest_out(fake_embedder) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(overrides={"tenants": {"acme": {"memory": {
        "k": 3, "min_neighbours": 1, "min_records": 3, "max_records": 3}}}})
    router = Router(two_kinds_package(fake_embedder), embedder=fake_embedder)
    learning = LiveLearning(router, settings, {}, Experiments(settings, {}))
    for i in range(5):
        vector = fake_embedder.embed([math_prompt(i)])[0]
        applied = learning.learn(FeedbackEvent(
            decision_id=f"d{i}", model="cheap", quality=1.0, tenant="acme",
            embedding=tuple(float(v) for v in vector)), router.weights.weights_id)
        assert applied.memory and applied.routers == 1
    status = learning.memory_status("acme")
    assert (status["examples"], status["models"]) == (3, {"cheap": 3})
    other = learning.learn(FeedbackEvent(decision_id="g", model="cheap", quality=1.0,
                                         tenant="globex", embedding=tuple(
                                             float(v) for v in vector)),
                           router.weights.weights_id)
    assert not other.memory and learning.memory_status("globex") == {"enabled": False}


def test_the_learning_config_names_what_is_wrong() -> None:
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"experiments": {"x": {"arms": {"a": {}}}}})
    assert bad.value.key == "experiments.x.arms"
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"experiments": {"x": {"tenants": ["nobody"],
                                                       "arms": {"a": {}, "b": {}}}}})
    assert bad.value.key == "experiments.x.tenants[0]"
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"models": [{"name": "m", "input_per_mtok": 1,
                                             "output_per_mtok": 1}],
                                 "experiments": {"x": {"arms": {"a": {"models": ["z"]},
                                                                "b": {}}}}})
    assert bad.value.key == "experiments.x.arms.a.models[0]"
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"tenants": {"acme": {"memory": {"k": 2,
                                                                 "min_neighbours": 5}}}})
    assert bad.value.key == "tenants.acme.memory"
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"learning": {"exploration": 1.5}})
    assert bad.value.key == "learning.exploration"
    with pytest.raises(ConfigError) as bad:
        load_settings(overrides={"learning": {"seed": -1}})
    assert bad.value.key == "learning.seed"


def test_an_arm_narrowing_to_models_the_weights_lack_is_refused_without_a_catalog(
        fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    package = two_kinds_package(fake_embedder)
    package.save(tmp_path / "w")
    experiments = {"x": {"arms": {"a": {"models": ["cheap", "zzz"]}, "b": {}}}}
    settings = load_settings(overrides={"weights": str(tmp_path / "w"),
                                        "experiments": experiments})
    factory = RouterFactory()
    factory._embedders[package.embedder_id] = fake_embedder
    with pytest.raises(ConfigError) as bad:
        factory(settings)
    assert bad.value.key == "experiments.x.arms.a.models[1]"
    assert '"zzz"' in str(bad.value) and "cheap" in str(bad.value)
    experiments["x"]["arms"]["a"]["models"] = ["cheap"]
    assert factory(load_settings(overrides={"weights": str(tmp_path / "w"),
                                            "experiments": experiments})).models == MODELS
    # An arm with a policy of its own is checked against that policy's weights, when they load.
    package.save(tmp_path / "alt")
    arm = {"a": {}, "b": {"policy": "alt", "models": ["cheap", "zzz"]}}
    with_policy = load_settings(overrides={"weights": str(tmp_path / "w"),
                                           "policies": {"alt": str(tmp_path / "alt")},
                                           "experiments": {"x": {"arms": arm}}})
    assert factory(with_policy).models == MODELS  # the live weights: not its arm
    with pytest.raises(ConfigError) as bad:
        factory(with_policy, "alt")
    assert bad.value.key == "experiments.x.arms.b.models[1]"


def test_an_answer_priced_far_beyond_its_models_prices_does_not_teach_its_cost(
        fake_embedder: FakeEmbedder, caplog: pytest.LogCaptureFixture) -> None:
    catalog = Catalog([ModelCard("cheap", profile="cheap", input_per_mtok=1, output_per_mtok=1),
                       ModelCard("strong", profile="strong", input_per_mtok=10,
                                 output_per_mtok=10)])
    router = Router(two_kinds_package(fake_embedder), embedder=fake_embedder, catalog=catalog)
    flat = catalog["strong"].price(100, catalog.expected_output_tokens)
    mean = router.policy.global_cost()["strong"]
    assert answer_cost(router, "strong", 3 * flat, 100) == pytest.approx(3 * mean)
    assert answer_cost(router, "strong", 900 * flat, 100) == pytest.approx(900 * mean)
    assert "not learned" not in caplog.text
    assert answer_cost(router, "strong", 1100 * flat, 100) is None
    assert f"priced at {usd_text(1100 * flat)} was not learned as its cost" in caplog.text
    assert answer_cost(router, "strong", 5000.0, 100) is None  # over any answer's cost


def _dearer_package(embedder: FakeEmbedder, factor: float) -> WeightsPackage:
    """The two kinds' weights with every cost ``factor`` times as high (other cost units)."""
    prompts, scores, costs = labels()
    policy = ClusterPolicy(n_clusters=2, n_coarse=1)
    policy.fit(Inputs(embeddings=embedder.embed(prompts)), scores, factor * costs, MODELS)
    return WeightsPackage(policy=policy, embedder_id=embedder.id, dimension=embedder.dimension)


def _priced() -> Catalog:
    return Catalog([ModelCard(m, profile=m, input_per_mtok=p, output_per_mtok=p)
                    for m, p in zip(MODELS, (10.0, 5.0, 1.0), strict=True)])


@pytest.mark.parametrize("priced", [True, False])
def test_an_arm_on_other_weights_learns_a_measured_cost_in_its_own_units(
        fake_embedder: FakeEmbedder, priced: bool) -> None:
    settings = load_settings()
    catalog = _priced() if priced else None
    live = Router(two_kinds_package(fake_embedder), embedder=fake_embedder, catalog=catalog)
    arm = Router(_dearer_package(fake_embedder, 10.0), embedder=fake_embedder,
                 catalog=_priced() if priced else None)
    direct = Router(_dearer_package(fake_embedder, 10.0), embedder=fake_embedder,
                    catalog=_priced() if priced else None)
    learning = LiveLearning(live, settings, {"other": arm}, Experiments(settings, {}))
    prompt = math_prompt(3)
    usd = 0.004
    d, e = live.route(prompt), direct.route(prompt)
    outcome = live.report_outcome(d.decision_id, 0.9, model="strong", cost=usd)
    applied = learning.learn(outcome.event, live.weights_id, skip=live)
    assert applied.routers == 2
    direct.report_outcome(e.decision_id, 0.9, model="strong", cost=usd)

    def cost(router: Router) -> float:
        return router.route(math_prompt(9999), cost_weight_override=0).expected_costs["strong"]
    # The arm learns the same answer's cost as a router on its weights told it directly.
    assert cost(arm) == pytest.approx(cost(direct), rel=1e-9)
    if priced:  # (same catalog: both price the prompt alike)
        assert cost(arm) == pytest.approx(cost(live), rel=1e-9)
    # An event logged under weights no longer loaded: with prices its cost's units are
    # unknown, so it teaches the error alone; without, the units are USD per request.
    rebased = arm.rebased_cost("strong", 1.0, None)
    assert rebased is None if priced else rebased == 1.0
    assert arm.rebased_cost("strong", 1.0, live) == pytest.approx(10.0 if priced else 1.0)


def test_a_gateway_without_a_store_keeps_the_newest_outcomes_and_still_counts_repeats(
        tmp_path: Path) -> None:
    """Without a store the feedback log is in memory: past ``learning.memory_size`` outcomes
    it drops the oldest, while the live router keeps what it learned from every one, a
    decision's repeats are still counted (then refused), and a reload relearns the rows kept."""
    from switchpoint.gateway import Gateway
    from switchpoint.gateway.feedback_log import MAX_OUTCOMES, MIN_MEMORY_ROWS

    size = 2 * MIN_MEMORY_ROWS
    config = {"data_dir": str(tmp_path / "data"), "learning": {"memory_size": size}}
    with Gateway.from_config(config, loader=RouterFactory(), store=False, env={}) as gateway:
        log = gateway.learning.log
        assert log.memory_rows == size
        ids = []
        for i in range(3 * size):
            decision = gateway.route(f"question {i}: how do I sort a list in python")
            gateway.report_outcome(decision.decision_id, (i % 10) / 10)
            ids.append(decision.decision_id)
            assert len(log) == min(i + 1, size)
        learned = gateway.learning_status(["default"])["tenants"]["default"]["learned_router"]
        assert learned["outcomes"] == 3 * size  # learned from every one, dropped or not
        kept = list(log.replay())
        assert [row.event.decision_id for row in kept] == ids[-size:]
        assert [row.seq for row in kept] == list(range(2 * size + 1, 3 * size + 1))

        newest = ids[-1]
        for i in range(MAX_OUTCOMES - 1):  # its first outcome, then the repeats it takes
            assert gateway.report_outcome(newest, i / MAX_OUTCOMES).outcome.replaced
        with pytest.raises(ConflictError, match=f"takes at most {MAX_OUTCOMES}"):
            gateway.report_outcome(newest, 1.0)
        assert len(log) == size
        assert len(log._by_decision) == len({r.event.decision_id for r in log.replay()})

        gateway.state.reload()  # replays the log: the rows kept
        learned = gateway.learning_status(["default"])["tenants"]["default"]["learned_router"]
        assert learned["outcomes"] == len({r.event.decision_id for r in log.replay()})


def test_an_experiment_tally_forgets_a_score_that_every_repeat_replaced(tmp_path: Path) -> None:
    """A reader's running tally holds the scores decisions hold now: one decision's repeats,
    each a score of its own, leave one entry, not one per repeat."""
    from switchpoint.gateway.feedback_log import MAX_OUTCOMES
    from switchpoint.store import DecisionRecord

    store = SQLiteStore(tmp_path / "s.db").open()
    for i in range(2):
        store.append(DecisionRecord(
            id=f"d{i}", ts=1000.0 + i, selected_model="m", cluster_id=0, cost_weight=0.5,
            candidates=["m"], cache_hit=False, routing_ms=0, embedding_ms=0, policy="p",
            weights_id="w", expected_error=0.1, cost_adjusted_score=0.1, experiment="x",
            arm="a")).result()
    kept = LearningReader(store.path)
    for repeat in range(MAX_OUTCOMES):
        scores = [round(0.3 + 0.01 * repeat + 0.3 * i, 2) for i in range(2)]
        for i, score in enumerate(scores):
            store.append(feedback_record(FeedbackEvent(decision_id=f"d{i}", model="m",
                                                       quality=score), "decision",
                                         weights_id="w")).result()
        assert kept.experiment("x")["a"]["quality_counts"] == dict.fromkeys(scores, 1)
        tally = kept._experiments["x"].arms["a"].qualities
        assert len(tally) == 2  # the two latest scores: nothing of the repeats before
    assert kept.experiment("x") == LearningReader(store.path).experiment("x")
    store.close()


def test_retention_prunes_only_the_feedback_a_checkpoint_of_this_log_holds(
        tmp_path: Path) -> None:
    """Feedback rows older than the cutoff go only when the learning checkpoint beside the
    store holds them (its log position, the row there kept); the database refuses deleting a
    newer row; a reader's running tally of qualities is read whole again after the prune."""
    from switchpoint.learning.checkpoint import (
        CHECKPOINT_FILENAME,
        Checkpoint,
        State,
        write_checkpoint,
    )
    from switchpoint.store import retention

    store = SQLiteStore(tmp_path / "s.db").open()
    for i in range(30):
        event = FeedbackEvent(decision_id=f"d{i % 25}", model="m", quality=(i % 4) / 4,
                              timestamp=1000.0 + i if i < 20 else time.time())
        store.append(feedback_record(event, "decision", weights_id="w",
                                     comment="c" * 2000)).result()
    kept = LearningReader(store.path)
    tally = kept.quality_by_model()
    assert retention.prune(store.path, 2000.0).deleted["feedback"] == 0  # no checkpoint yet
    at = kept.event_id_at(12)
    assert at is not None
    write_checkpoint(tmp_path / CHECKPOINT_FILENAME, Checkpoint("k", 12, at, State()))
    dry = retention.prune(store.path, 2000.0, dry_run=True)
    assert dry.deleted["feedback"] == 11
    report = retention.prune(store.path, 2000.0)
    assert report.deleted["feedback"] == 11  # rows 1 to 11: the 12th is where it ends
    assert [row.seq for row in kept.feedback()] == list(range(12, 31))
    assert kept.event_id_at(12) == at
    assert kept.quality_by_model() == LearningReader(store.path).quality_by_model() != tally
    conn = sqlite3.connect(store.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM feedback WHERE seq = 25")
    finally:
        conn.close()
    # A checkpoint of another log (its event not there): nothing more goes.
    write_checkpoint(tmp_path / CHECKPOINT_FILENAME, Checkpoint("k", 25, "other", State()))
    assert retention.prune(store.path, 2000.0).deleted["feedback"] == 0
    # One further on: the start of the log goes, up to the first row not older than the
    # cutoff (the 21st), though the checkpoint holds more.
    at = kept.event_id_at(25)
    assert at is not None
    write_checkpoint(tmp_path / CHECKPOINT_FILENAME, Checkpoint("k", 25, at, State()))
    assert retention.prune(store.path, 2000.0).deleted["feedback"] == 9
    assert [row.seq for row in kept.feedback()] == list(range(21, 31))
    store.close()


def test_a_prune_given_a_checkpoint_key_goes_only_by_a_checkpoint_of_that_key(
        tmp_path: Path) -> None:
    """A service prunes by its own learning's checkpoint key: a checkpoint written for other
    weights or learning settings (which its next start passes over) lets no feedback go, in a
    dry run either; one of its key does."""
    from switchpoint.learning.checkpoint import (
        CHECKPOINT_FILENAME,
        Checkpoint,
        State,
        write_checkpoint,
    )
    from switchpoint.store import retention

    store = SQLiteStore(tmp_path / "s.db").open()
    for i in range(10):
        event = FeedbackEvent(decision_id=f"d{i}", model="m", quality=0.5,
                              timestamp=1000.0 + i)
        store.append(feedback_record(event, "decision", weights_id="w")).result()
    at = LearningReader(store.path).event_id_at(8)
    assert at is not None
    write_checkpoint(tmp_path / CHECKPOINT_FILENAME, Checkpoint("old", 8, at, State()))
    for dry_run in (True, False):
        report = retention.prune(store.path, 2000.0, dry_run=dry_run, checkpoint_key="new")
        assert report.deleted["feedback"] == 0
    assert LearningReader(store.path).first_feedback() == 1
    assert retention.prune(store.path, 2000.0, checkpoint_key="old").deleted["feedback"] == 7
    assert LearningReader(store.path).first_feedback() == 8
    store.close()


def test_an_unattended_prune_keeps_the_window_before_the_newest_entry_when_the_clock_jumped(
        tmp_path: Path) -> None:
    """Entries logged 100 days before the clock now reads (it jumped ahead: an NTP step, a
    machine resumed with a wrong clock) are all older than a 30-day retention: a held prune,
    the service's own and store.retention_days', keeps the 30 days logged before the newest
    entry (and deletes only what is older than that), saying how far ahead the clock read;
    a prune given its age outright still deletes every entry older than it, saying so too."""
    from dataclasses import replace

    from switchpoint.learning.checkpoint import (
        CHECKPOINT_FILENAME,
        Checkpoint,
        State,
        write_checkpoint,
    )
    from switchpoint.store import retention
    from tests.unit.test_store import record, request

    day = 86_400.0
    then = time.time() - 100 * day  # when they were logged, by the clock before its jump
    store = SQLiteStore(tmp_path / "s.db").open()
    store.append(replace(request(), ts=then - 40 * day)).result()  # older than the window
    for i in range(10):
        store.append(replace(record(), ts=then + i)).result()
        store.append(replace(request(), ts=then + i)).result()
        event = FeedbackEvent(decision_id=f"d{i}", model="m", quality=0.5, timestamp=then + i)
        store.append(feedback_record(event, "decision", weights_id="w")).result()
    at = LearningReader(store.path).event_id_at(8)
    assert at is not None
    write_checkpoint(tmp_path / CHECKPOINT_FILENAME, Checkpoint("k", 8, at, State()))
    cutoff = retention.cutoff_for(30)
    for dry_run in (True, False):
        report = retention.prune(store.path, cutoff, dry_run=dry_run, checkpoint_key="k",
                                 hold=True)
        assert report.deleted == {"decisions": 0, "requests": 1, "spend": 0, "feedback": 0}
        assert report.held and report.clock_ahead is not None
        assert 100 * day - 60 < report.clock_ahead < 100 * day
        assert report.cutoff == pytest.approx(then + 9 - 30 * day, abs=60)
        note = report.clock_note(30)
        assert note is not None and "100.0 days past the newest entry logged" in note
        assert "set it right" in note
    assert LearningReader(store.path).first_feedback() == 1
    whole = retention.prune(store.path, cutoff, checkpoint_key="k")  # an age given outright
    assert whole.deleted == {"decisions": 10, "requests": 10, "spend": 0, "feedback": 7}
    assert not whole.held and whole.clock_ahead is not None
    assert "went, as asked" in (whole.clock_note(30) or "")
    store.close()


def test_the_retention_clock_leaves_out_steps_ahead_and_takes_them_back_when_set_right(
        ) -> None:
    """A service's retention goes by the wall clock less its steps ahead beyond the time
    that passed (by the clock since boot): a minute's drift is no step; a step back takes back
    what was left out, never more (a clock set behind prunes by it, later, never sooner)."""
    from switchpoint.store.retention import CLOCK_STEP_S, RetentionClock

    wall, mono = [1e9], [0.0]
    clock = RetentionClock(wall=lambda: wall[0], since_boot=lambda: mono[0])
    assert clock.read() == (1e9, None)
    wall[0] += 3600 + CLOCK_STEP_S / 2  # an hour passed, and the clock drifted half a minute
    mono[0] += 3600
    assert clock.read() == (wall[0], None)
    wall[0] += 100 * 86_400.0  # a step ahead
    assert clock.read() == (wall[0] - 100 * 86_400.0, 100 * 86_400.0)
    wall[0] += 3600
    mono[0] += 3600
    assert clock.read() == (wall[0] - 100 * 86_400.0, None)  # still left out
    wall[0] -= 100 * 86_400.0  # set right
    assert clock.read() == (wall[0], -100 * 86_400.0) and clock.left_out == 0
    wall[0] -= 86_400.0  # set behind: no time is added
    assert clock.read() == (wall[0], -86_400.0) and clock.left_out == 0


def test_the_retention_clock_goes_on_from_its_last_reading_after_a_restart_or_a_reboot(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Read with a data_dir, the retention clock keeps its last reading there: a restart on
    the same boot sees a step ahead taken while it was stopped; after a reboot what was left
    out stays left out, less a step back below the time it read last; a damaged file is a
    start from the clock, said."""
    from switchpoint.store.retention import RETENTION_CLOCK_FILENAME, RetentionClock

    day = 86_400.0
    wall, mono, boot = [1e9], [0.0], ["a"]

    def restarted() -> RetentionClock:
        return RetentionClock(wall=lambda: wall[0], since_boot=lambda: mono[0],
                              boot=lambda: boot[0])

    assert restarted().read(tmp_path) == (1e9, None)
    wall[0] += 100 * day  # a step ahead while it was stopped
    assert restarted().read(tmp_path) == (wall[0] - 100 * day, 100 * day)
    boot[0], mono[0] = "b", 5.0  # rebooted, the clock still ahead: still left out
    assert restarted().read(tmp_path) == (wall[0] - 100 * day, None)
    boot[0], mono[0] = "c", 1.0  # rebooted, the clock set right an hour after the last read
    wall[0] -= 100 * day - 3600
    clock = restarted()
    assert clock.read(tmp_path) == (wall[0] - 3600, -(100 * day - 3600))
    assert clock.left_out == 3600
    (tmp_path / RETENTION_CLOCK_FILENAME).write_text("{damaged", encoding="utf-8")
    with caplog.at_level("WARNING", logger="switchpoint"):
        assert restarted().read(tmp_path) == (wall[0], None)
    assert "not a reading this wrote" in caplog.text


def test_the_retention_clock_takes_a_machines_sleep_for_time_that_passed(
        tmp_path: Path) -> None:
    """Eight hours of sleep (suspend) move the wall clock and the clock since boot on
    together, the monotonic clock not: no step, where the monotonic clock saw one eight hours
    ahead and kept entries that much longer; a restart on the same boot goes on likewise."""
    from switchpoint.store.retention import RetentionClock

    hours = 8 * 3600.0
    wall, booted, mono = [1e9], [100.0], [100.0]

    def clock() -> RetentionClock:
        return RetentionClock(wall=lambda: wall[0], since_boot=lambda: booted[0],
                              monotonic=lambda: mono[0], boot=lambda: "a")

    running = clock()
    assert running.read(tmp_path) == (1e9, None)
    wall[0] += hours  # asleep: the monotonic clock stood still
    booted[0] += hours
    assert running.read(tmp_path) == (wall[0], None) and running.left_out == 0
    wall[0] += hours  # asleep again, the service stopped
    booted[0] += hours
    restarted = clock()
    assert restarted.read(tmp_path) == (wall[0], None) and restarted.left_out == 0


def test_the_retention_clock_takes_up_a_reading_of_an_older_version_by_its_monotonic_clock(
        tmp_path: Path) -> None:
    """A file written before the clock since boot was kept (a reading of the monotonic clock
    alone) is taken up on the same boot by the monotonic clock, which that reading is of; and
    the file this writes keeps the monotonic clock's reading for such a version."""
    from switchpoint.store.retention import RETENTION_CLOCK_FILENAME, RetentionClock

    day = 86_400.0
    path = tmp_path / RETENTION_CLOCK_FILENAME
    path.write_text(json.dumps({"boot": "a", "wall": 1e9, "monotonic": 50.0,
                                "left_out": 3600.0}), encoding="utf-8")
    clock = RetentionClock(wall=lambda: 1e9 + 100 * day + 10, since_boot=lambda: 9e5,
                           monotonic=lambda: 60.0, boot=lambda: "a")
    # A step of 100 days ahead while the older version was stopped, on top of what it left out.
    assert clock.read(tmp_path) == (1e9 + 10 - 3600.0, 100 * day)
    kept = json.loads(path.read_text(encoding="utf-8"))
    assert (kept["boottime"], kept["monotonic"]) == (9e5, 60.0)


def test_an_experiment_keeps_its_newest_promotions_and_the_last_still_applies(
        tmp_path: Path) -> None:
    from switchpoint.store.learning import PromotionRecord
    from switchpoint.store.sqlite import PROMOTIONS_KEPT

    store = SQLiteStore(tmp_path / "s.db").open()
    try:
        for i in range(PROMOTIONS_KEPT + 30):
            store.append(PromotionRecord(float(i), "x", f"arm{i}", "by hand")).result()
        store.append(PromotionRecord(1e6, "y", "only", "winner")).result()
        reader = LearningReader(store.path)
        assert reader.promotions() == {"x": (f"arm{PROMOTIONS_KEPT + 29}", PROMOTIONS_KEPT + 29.0,
                                             "by hand"), "y": ("only", 1e6, "winner")}
        conn = sqlite3.connect(store.path)
        try:
            rows = conn.execute("SELECT experiment, count(*), min(ts) FROM promotions "
                                "GROUP BY experiment ORDER BY experiment").fetchall()
            assert rows == [("x", PROMOTIONS_KEPT, 30.0), ("y", 1, 1e6)]
            for sql in ("DELETE FROM promotions WHERE experiment = 'y'",
                        "DELETE FROM promotions WHERE experiment = 'x' AND ts = 30.0",
                        "UPDATE promotions SET arm = 'other'"):
                with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                    conn.execute(sql)
        finally:
            conn.close()
    finally:
        store.close()
