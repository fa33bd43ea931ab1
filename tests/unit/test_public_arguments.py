"""Every function and class ``switchpoint`` exports refuses an argument of the wrong type with
an :class:`InvalidInputError` naming the argument and what it takes, before it reads, writes
or changes anything (no ``AttributeError`` or ``TypeError`` from deep inside)."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import switchpoint
from switchpoint import (
    Gateway,
    InvalidInputError,
    RecordSet,
    Router,
    RoutingDecision,
    RoutingStats,
    Usage,
    WeightsPackage,
    add_model,
    fit,
    load_records,
    load_router,
    load_weights,
    remove_model,
    save_weights,
)
from switchpoint.config import Settings, load_settings
from switchpoint.learning import LearningSettings
from switchpoint.learning.config import NAME_RULE
from tests.conftest import SAMPLE, FakeEmbedder


@dataclass
class World:
    package: WeightsPackage
    records: RecordSet
    settings: Settings
    root: Path
    embedder: FakeEmbedder


@pytest.fixture
def world(tiny_package: WeightsPackage, small_records: RecordSet,
          fake_embedder: FakeEmbedder, tmp_path: Path) -> World:
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data")}, environ={})
    return World(tiny_package, small_records, settings, tmp_path, fake_embedder)


Call = Callable[[World], object]
M = [[0.5]]

CASES: list[tuple[str, str, Call]] = [
    ("fit", "records", lambda w: fit(None)),  # type: ignore[arg-type]
    ("fit", "records", lambda w: fit(5)),  # type: ignore[arg-type]
    ("fit", "policy", lambda w: fit(w.records, 5)),  # type: ignore[arg-type]
    ("fit", "split", lambda w: fit(w.records, split=1)),  # type: ignore[arg-type]
    ("fit", "embedder", lambda w: fit(w.records, embedder=5)),  # type: ignore[arg-type]
    ("fit", "progress", lambda w: fit(w.records, progress="loud")),  # type: ignore[arg-type]
    ("add_model", "package", lambda w: add_model(None, "x", w.records)),  # type: ignore[arg-type]
    ("add_model", "name", lambda w: add_model(w.package, 5, w.records)),  # type: ignore[arg-type]
    ("add_model", "records", lambda w: add_model(w.package, "x", None)),  # type: ignore[arg-type]
    ("add_model", "embedder",
     lambda w: add_model(w.package, "x", w.records, embedder="minilm")),  # type: ignore[arg-type]
    ("add_model", "source_model",
     lambda w: add_model(w.package, "x", w.records, source_model=3)),  # type: ignore[arg-type]
    ("remove_model", "package", lambda w: remove_model(None, "x")),  # type: ignore[arg-type]
    ("remove_model", "name", lambda w: remove_model(w.package, 5)),  # type: ignore[arg-type]
    ("load_records", "path", lambda w: load_records(None)),  # type: ignore[arg-type]
    ("load_records", "path", lambda w: load_records(b"records.jsonl")),  # type: ignore[arg-type]
    ("load_weights", "path", lambda w: load_weights(5)),  # type: ignore[arg-type]
    ("load_weights", "policy", lambda w: load_weights(None, 5)),  # type: ignore[arg-type]
    ("save_weights", "package",
     lambda w: save_weights(None, w.root / "out")),  # type: ignore[arg-type]
    ("save_weights", "path", lambda w: save_weights(w.package, 5)),  # type: ignore[arg-type]
    ("save_weights", "bundled",
     lambda w: save_weights(w.package, w.root / "out", bundled="no")),  # type: ignore[arg-type]
    ("load_router", "weights_path", lambda w: load_router(5)),  # type: ignore[arg-type]
    ("load_router", "use_soft_assignment",
     lambda w: load_router(use_soft_assignment="soft")),  # type: ignore[arg-type]
    ("load_router", "embedder", lambda w: load_router(embedder=5)),  # type: ignore[arg-type]
    ("load_router", "verbose", lambda w: load_router(verbose="yes")),  # type: ignore[arg-type]
    ("load_router", "weights_name", lambda w: load_router(weights_name=5)),  # type: ignore[arg-type]
    ("load_router", "embedding_model",
     lambda w: load_router(embedding_model=5)),  # type: ignore[arg-type]
    ("load_router", "engine", lambda w: load_router(engine=5)),  # type: ignore[arg-type]
    ("load_router", "download_if_missing",
     lambda w: load_router(download_if_missing=None)),  # type: ignore[arg-type]
    ("load_router", "policy", lambda w: load_router(policy=5)),  # type: ignore[arg-type]
    ("load_router", "catalog", lambda w: load_router(catalog=5)),  # type: ignore[arg-type]
    ("load_router", "cost_weight", lambda w: load_router(cost_weight="0.5")),  # type: ignore[arg-type]
    ("load_router", "allowed_models",
     lambda w: load_router(allowed_models="gpt-4")),
    ("load_router", "cache_size", lambda w: load_router(cache_size="big")),  # type: ignore[arg-type]
    ("load_router", "warm", lambda w: load_router(warm=1)),  # type: ignore[arg-type]
    ("Router", "weights", lambda w: Router(None)),  # type: ignore[arg-type]
    ("Router", "weights", lambda w: Router(str(w.root))),  # type: ignore[arg-type]
    ("Router", "catalog", lambda w: Router(w.package, catalog=5)),  # type: ignore[arg-type]
    ("Router", "embedder", lambda w: Router(w.package, embedder=5)),  # type: ignore[arg-type]
    ("Router", "learning", lambda w: Router(w.package, learning=5)),  # type: ignore[arg-type]
    ("Router", "feedback_log",
     lambda w: Router(w.package, embedder=w.embedder, feedback_log=[])),  # type: ignore[arg-type]
    ("Router", "cache_ttl",
     lambda w: Router(w.package, embedder=w.embedder, cache_ttl=None)),  # type: ignore[arg-type]
    ("Gateway", "settings", lambda w: Gateway(None)),  # type: ignore[arg-type]
    ("Gateway", "settings", lambda w: Gateway({"data_dir": str(w.root)})),  # type: ignore[arg-type]
    ("Gateway", "loader", lambda w: Gateway(w.settings, loader=5)),  # type: ignore[arg-type]
    ("Gateway", "store", lambda w: Gateway(w.settings, store="log.db")),  # type: ignore[arg-type]
    ("Gateway", "env", lambda w: Gateway(w.settings, env=["KEY=1"])),  # type: ignore[arg-type]
    ("Gateway", "providers", lambda w: Gateway(w.settings, providers=5)),  # type: ignore[arg-type]
    ("Gateway", "observer", lambda w: Gateway(w.settings, observer=5)),  # type: ignore[arg-type]
    ("Gateway", "serves_chat",
     lambda w: Gateway(w.settings, serves_chat="no")),  # type: ignore[arg-type]
    ("Gateway.from_config", "config", lambda w: Gateway.from_config(5)),  # type: ignore[arg-type]
    ("Gateway.from_config", "start",
     lambda w: Gateway.from_config(w.settings, start="no")),  # type: ignore[arg-type]
    ("RecordSet", "ids",
     lambda w: RecordSet(None, [], [], [], [], np.zeros((0, 0)), np.zeros((0, 0)))),  # type: ignore[arg-type]
    ("RecordSet", "scores",
     lambda w: RecordSet([], [], [], [], [], M, np.zeros((0, 0)))),  # type: ignore[arg-type]
    ("RecordSet", "embeddings",
     lambda w: RecordSet([], [], [], [], [], np.zeros((0, 0)), np.zeros((0, 0)), M)),  # type: ignore[arg-type]
    ("WeightsPackage", "policy",
     lambda w: WeightsPackage(None, "fake/hash-384", 384)),  # type: ignore[arg-type]
    ("WeightsPackage", "embedder_id",
     lambda w: WeightsPackage(w.package.policy, 384, 384)),  # type: ignore[arg-type]
    ("WeightsPackage", "dimension",
     lambda w: WeightsPackage(w.package.policy, "fake/hash-384", "384")),  # type: ignore[arg-type]
    ("WeightsPackage", "path",
     lambda w: WeightsPackage(w.package.policy, "fake/hash-384", 384, path=5)),  # type: ignore[arg-type]
    ("RoutingDecision", "selected_model",
     lambda w: RoutingDecision(None, 0.1, 0.2, {}, 0)),  # type: ignore[arg-type]
    ("RoutingDecision", "expected_error",
     lambda w: RoutingDecision("a", "low", 0.2, {}, 0)),  # type: ignore[arg-type]
    ("RoutingDecision", "all_scores",
     lambda w: RoutingDecision("a", 0.1, 0.2, ["a"], 0)),  # type: ignore[arg-type]
    ("RoutingDecision", "cluster_id",
     lambda w: RoutingDecision("a", 0.1, 0.2, {}, True)),
    ("RoutingDecision", "usage",
     lambda w: RoutingDecision("a", 0.1, 0.2, {}, 0, usage=3.0)),  # type: ignore[arg-type]
    ("RoutingDecision", "cluster_probabilities",
     lambda w: RoutingDecision("a", 0.1, 0.2, {}, 0, "x")),  # type: ignore[arg-type]
    ("RoutingDecision", "cluster_probabilities",
     lambda w: RoutingDecision("a", 0.1, 0.2, {}, 0, ["0.5", "x"])),  # type: ignore[arg-type]
    ("RoutingDecision", "cluster_probabilities",
     lambda w: RoutingDecision("a", 0.1, 0.2, {}, 0, [[0.5], [0.5]])),  # type: ignore[arg-type]
    ("Usage", "routing_ms", lambda w: Usage("fast")),  # type: ignore[arg-type]
    ("Usage", "embedding_ms", lambda w: Usage(1.0, None)),  # type: ignore[arg-type]
    ("RoutingStats", "total_requests", lambda w: RoutingStats("many")),  # type: ignore[arg-type]
    ("RoutingStats", "model_selections",
     lambda w: RoutingStats(model_selections={"a": 1})),  # type: ignore[arg-type]
    ("RoutingStats", "avg_cost_score",
     lambda w: RoutingStats(avg_cost_score="0")),  # type: ignore[arg-type]
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("target", "field", "call"), CASES,
                         ids=[f"{t}-{f}-{i}" for i, (t, f, _) in enumerate(CASES)])
def test_a_wrong_type_is_refused_naming_the_argument(world: World, target: str, field: str,
                                                     call: Call) -> None:
    before = _tree(world.root)
    with pytest.raises(InvalidInputError) as caught:
        call(world)
    assert caught.value.field == field, caught.value
    assert str(caught.value).startswith(f"{field}: must be "), caught.value
    assert _tree(world.root) == before  # nothing made: no data_dir, no weights directory


def test_every_exported_function_and_class_is_covered() -> None:
    exported = {name for name in switchpoint.__all__
                if name != "__version__"
                and not (inspect.isclass(getattr(switchpoint, name))
                         and issubclass(getattr(switchpoint, name), BaseException))}
    covered = {target.split(".")[0] for target, _, _ in CASES}
    assert exported == covered


RouterCall = Callable[[Router, World], object]

ROUTER_CASES: list[tuple[str, str, RouterCall]] = [
    ("route", "prompt", lambda r, w: r.route(5)),  # type: ignore[arg-type]
    ("route", "available_models", lambda r, w: r.route("hi", 5)),  # type: ignore[arg-type]
    ("route", "cost_weight_override", lambda r, w: r.route("hi", None, "x")),  # type: ignore[arg-type]
    ("route", "tenant", lambda r, w: r.route("hi", tenant=5)),  # type: ignore[arg-type]
    ("route", "estimate_tokens", lambda r, w: r.route("hi", estimate_tokens=5)),  # type: ignore[arg-type]
    ("check_estimate_tokens", "estimate_tokens", lambda r, w: r.check_estimate_tokens("x")),
    ("route_batch", "prompts", lambda r, w: r.route_batch(5)),  # type: ignore[arg-type]
    ("route_batch", "cost_weights",
     lambda r, w: r.route_batch(["hi"], cost_weights=5)),  # type: ignore[arg-type]
    ("estimates", "prompts", lambda r, w: r.estimates(5)),  # type: ignore[arg-type]
    ("explain", "decision", lambda r, w: r.explain("route")),  # type: ignore[arg-type]
    ("estimates", "embeddings", lambda r, w: r.estimates(embeddings=5)),  # type: ignore[arg-type]
    ("prepare", "embeddings", lambda r, w: r.prepare(None, 5)),  # type: ignore[arg-type]
    ("report_outcome", "decision_id", lambda r, w: r.report_outcome(5, 0.5)),  # type: ignore[arg-type]
    ("report_outcome", "quality_score",
     lambda r, w: r.report_outcome(r.route("hi").decision_id, "good")),  # type: ignore[arg-type]
    ("report_outcome", "model",
     lambda r, w: r.report_outcome(r.route("hi").decision_id, 0.5, model=5)),  # type: ignore[arg-type]
    ("learnable_cost", "model", lambda r, w: r.learnable_cost(5, 0.1, None)),  # type: ignore[arg-type]
    ("learnable_cost", "cost",
     lambda r, w: r.learnable_cost(r.models[0], "0.1", None)),  # type: ignore[arg-type]
    ("learnable_cost", "prompt_tokens",
     lambda r, w: r.learnable_cost(r.models[0], 0.1, "5")),  # type: ignore[arg-type]
    ("rebased_cost", "profile", lambda r, w: r.rebased_cost(5, 0.1, r)),  # type: ignore[arg-type]
    ("rebased_cost", "cost",
     lambda r, w: r.rebased_cost(r.models[0], "0.1", r)),  # type: ignore[arg-type]
    ("rebased_cost", "source",
     lambda r, w: r.rebased_cost(r.models[0], 0.1, 5)),  # type: ignore[arg-type]
    ("prompt_tokens", "text", lambda r, w: r.prompt_tokens(5)),  # type: ignore[arg-type]
    ("cost_scale", "available_models", lambda r, w: r.cost_scale(5)),  # type: ignore[arg-type]
    ("cost_scale_of", "models", lambda r, w: r.cost_scale_of(5)),  # type: ignore[arg-type]
    ("get_best_model_for_cluster", "cluster_id",
     lambda r, w: r.get_best_model_for_cluster("0")),  # type: ignore[arg-type]
    ("route_and_execute", "prompt", lambda r, w: r.route_and_execute(5)),  # type: ignore[arg-type]
    ("route_and_execute", "messages",
     lambda r, w: r.route_and_execute("hi", "hello")),  # type: ignore[arg-type]
    ("route_and_execute", "gateway",
     lambda r, w: r.route_and_execute("hi", gateway=5)),  # type: ignore[arg-type]
    ("analyze_routing_distribution", "prompts",
     lambda r, w: r.analyze_routing_distribution(5)),  # type: ignore[arg-type]
    ("outcome_profile", "model", lambda r, w: r.outcome_profile(5)),  # type: ignore[arg-type]
    ("register_model", "card", lambda r, w: r.register_model(5)),  # type: ignore[arg-type]
    ("register_model", "tier", lambda r, w: r.register_model("new", tier=5)),
    ("unregister_model", "name", lambda r, w: r.unregister_model(5)),  # type: ignore[arg-type]
    ("join_model", "card", lambda r, w: r.join_model({"name": "new"})),  # type: ignore[arg-type]
    ("unlearned_copy", "registered",
     lambda r, w: r.unlearned_copy(5)),  # type: ignore[arg-type]
    ("unlearned_copy", "catalog",
     lambda r, w: r.unlearned_copy(catalog=5)),  # type: ignore[arg-type]
    # (a candidate list, named as route names it)
    ("check_candidates", "available_models",
     lambda r, w: r.check_candidates(5)),  # type: ignore[arg-type]
]
# Methods that take no argument (or only ones of any type) have nothing to refuse.
ROUTER_WITHOUT_ARGUMENTS = {"reset_stats", "warm_up"}


@pytest.mark.parametrize(("method", "field", "call"), ROUTER_CASES,
                         ids=[f"{m}-{f}-{i}" for i, (m, f, _) in enumerate(ROUTER_CASES)])
def test_a_router_method_refuses_a_wrong_type_naming_the_argument(
        world: World, method: str, field: str, call: RouterCall) -> None:
    router = Router(world.package, embedder=world.embedder)
    with pytest.raises(InvalidInputError) as caught:
        call(router, world)
    assert caught.value.field == field, caught.value
    assert str(caught.value).startswith(f"{field}: must be "), caught.value


def test_every_public_router_method_is_covered() -> None:
    public = {name for name, member in inspect.getmembers(Router, inspect.isfunction)
              if not name.startswith("_")}
    covered = {method for method, _, _ in ROUTER_CASES}
    assert public == covered | ROUTER_WITHOUT_ARGUMENTS


def test_right_types_of_other_kinds_are_still_taken(world: World) -> None:
    """A path may be any os.PathLike, numbers NumPy's scalars, a reasoning one string."""
    assert len(load_records(SAMPLE)) == len(load_records(str(SAMPLE))) > 0
    decision = RoutingDecision("a", np.float32(0.1), np.float64(0.2), {"a": 0.2},  # type: ignore[arg-type]
                               np.int64(3), reasoning="one sentence")  # type: ignore[arg-type]
    assert decision.reasoning == ["one sentence"] and decision.cluster_id == 3
    assert Usage(np.float32(1.5), 0).routing_ms == 1.5  # type: ignore[arg-type]
    assert RoutingStats(model_selections=Counter(a=1)).model_selections["a"] == 1
    saved = world.package.save(world.root / "weights")
    package = WeightsPackage(world.package.policy, "fake/hash-384", np.int64(384),  # type: ignore[arg-type]
                             path=str(saved))  # type: ignore[arg-type]
    assert package.path == saved


PathCall = Callable[[World, Path], object]
PATH_CASES: list[tuple[str, PathCall]] = [
    ("load_records", lambda w, p: load_records(p)),
    ("load_weights", lambda w, p: load_weights(p)),
    ("load_router", lambda w, p: load_router(p, warm=False)),
    ("fit", lambda w, p: fit(p, embedder=w.embedder)),
    ("add_model", lambda w, p: add_model(w.package, "new", p, embedder=w.embedder)),
    ("save_weights", lambda w, p: save_weights(w.package, p)),
    ("Gateway.from_config", lambda w, p: Gateway.from_config(p, start=False)),
]


@pytest.mark.parametrize(("bad", "shown"), [("\0", "NUL"), ("\ud800", "'\\ud800'")],
                         ids=["NUL", "lone surrogate"])
@pytest.mark.parametrize(("target", "call"), PATH_CASES, ids=[t for t, _ in PATH_CASES])
def test_a_path_no_file_system_can_name_is_refused_saying_why(
        world: World, target: str, call: PathCall, bad: str, shown: str) -> None:
    """A path holding a character no path may hold (a NUL, a lone surrogate the file system's
    encoding cannot write) is switchpoint's error saying which, not Python's bare ValueError
    or UnicodeEncodeError from deep inside, and nothing is made."""
    before = _tree(world.root)
    with pytest.raises(switchpoint.SwitchpointError) as caught:
        call(world, world.root / f"in{bad}valid")
    assert shown in str(caught.value), caught.value
    assert _tree(world.root) == before


class Unshowable:
    """A value whose repr and str raise (a caller's object with a broken __repr__)."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class Unreadable(float):
    """A float whose __float__ raises."""

    def __float__(self) -> float:
        raise RuntimeError("no float")


ShownCall = Callable[[Router, World, object], object]
SHOWN_CASES: list[tuple[str, ShownCall]] = [
    ("cost_weight", lambda r, w, v: Router(w.package, embedder=w.embedder,
                                           cost_weight=v)),  # type: ignore[arg-type]
    ("cache_size", lambda r, w, v: Router(w.package, embedder=w.embedder,
                                          cache_size=v)),  # type: ignore[arg-type]
    ("cache_ttl", lambda r, w, v: Router(w.package, embedder=w.embedder,
                                         cache_ttl=v)),  # type: ignore[arg-type]
    ("exploration", lambda r, w, v: LearningSettings(exploration=v)),  # type: ignore[arg-type]
    ("cost_weight_override", lambda r, w, v: r.route("hi", None, v)),  # type: ignore[arg-type]
    ("tenant", lambda r, w, v: r.route("hi", tenant=v)),  # type: ignore[arg-type]
    ("available_models", lambda r, w, v: r.route("hi", [v])),  # type: ignore[list-item]
    ("cluster_id", lambda r, w, v: r.get_best_model_for_cluster(v)),  # type: ignore[arg-type]
    ("quality_score", lambda r, w, v: r.report_outcome(
        r.route("hi").decision_id, v)),  # type: ignore[arg-type]
    ("success", lambda r, w, v: r.report_outcome(
        r.route("hi").decision_id, None, v)),  # type: ignore[arg-type]
    ("cost", lambda r, w, v: r.report_outcome(
        r.route("hi").decision_id, 0.5, cost=v)),  # type: ignore[arg-type]
    ("name", lambda r, w, v: remove_model(w.package, v)),  # type: ignore[arg-type]
]
SHOWN_VALUES: dict[str, Callable[[], object]] = {
    "a megabyte of text": lambda: "x" * 2**20,
    "an object whose repr raises": Unshowable,
    "a float whose __float__ raises": lambda: Unreadable(0.5)}


@pytest.mark.parametrize("value", list(SHOWN_VALUES))
@pytest.mark.parametrize(("field", "call"), SHOWN_CASES, ids=[f for f, _ in SHOWN_CASES])
def test_a_refused_value_is_shown_in_a_few_words_whatever_it_is(
        world: World, field: str, call: ShownCall, value: str) -> None:
    """The error refusing a value names the argument and shows the value cut short (a
    megabyte passed as a number is not a megabyte of message), or by its type when it cannot
    be shown (its repr raises): never the caller's exception from inside the message."""
    router = Router(world.package, embedder=world.embedder)
    models = list(world.package.models)
    with pytest.raises(InvalidInputError) as caught:
        call(router, world, SHOWN_VALUES[value]())
    assert caught.value.field == field, caught.value
    assert len(str(caught.value)) < 1000, str(caught.value)[:1000]
    assert world.package.models == models


def test_an_unknown_decision_id_is_shown_cut_short(world: World) -> None:
    router = Router(world.package, embedder=world.embedder)
    with pytest.raises(switchpoint.DecisionNotFoundError) as caught:
        router.report_outcome("a" * 32, 0.5)
    assert f'"{"a" * 32}"' in str(caught.value) and len(str(caught.value)) < 400
    with pytest.raises(switchpoint.DecisionNotFoundError) as hashed:  # (shown whole)
        router.report_outcome("a" * 64, 0.5)
    assert f'"{"a" * 64}"' in str(hashed.value) and len(str(hashed.value)) < 400
    for sent in ("a" * 200, "a" * 2**20):  # (of neither shape: not looked up)
        with pytest.raises(InvalidInputError) as long:
            router.report_outcome(sent, 0.5)
        assert long.value.field == "decision_id" and len(str(long.value)) < 400


@pytest.mark.parametrize(("field", "call"), [
    ("cost_weights", lambda r: r.route_batch(["hi"], cost_weights=b"\x00\x01")),
    ("cost_weights", lambda r: r.route_batch(["hi"], cost_weights=bytearray(b"\x01"))),
    ("cost_weights", lambda r: r.route_batch(["hi"], cost_weights={0.1, 0.9})),
    ("cost_weights", lambda r: r.route_batch(["hi"], cost_weights={0.1: "low"})),
    ("prompts", lambda r: r.route_batch({"a question", "another"})),
    ("prompts", lambda r: r.estimates(frozenset({"a question"}))),
    ("prompts", lambda r: r.analyze_routing_distribution({"a question"})),
], ids=["bytes", "bytearray", "a set of λ", "a mapping of λ", "a set of prompts",
        "a frozenset to estimates", "a set to analyze_routing_distribution"])
def test_a_batch_without_an_order_or_of_bytes_is_refused(
        world: World, field: str, call: Callable[[Router], object]) -> None:
    """Bytes are not a list of λ (each byte was routed at as a λ: b'\\x00\\x01' at 0 and 1),
    and a set has no order to give the results back in, so each is refused naming the
    argument; nothing is routed or counted."""
    router = Router(world.package, embedder=world.embedder)
    with pytest.raises(InvalidInputError) as caught:
        call(router)
    assert caught.value.field == field, caught.value
    assert router.stats.total_requests == 0


@pytest.mark.parametrize(("field", "call"), [
    ("cost", lambda r: r.learnable_cost(r.models[0], float("nan"), None)),
    ("cost", lambda r: r.learnable_cost(r.models[0], float("inf"), None)),
    ("cost", lambda r: r.learnable_cost(r.models[0], -0.5, None)),
    ("cost", lambda r: r.learnable_cost(r.models[0], 10**400, None)),
    ("prompt_tokens", lambda r: r.learnable_cost(r.models[0], 0.1, -5)),
    ("prompt_tokens", lambda r: r.learnable_cost(r.models[0], 0.1, 10**400)),
    ("estimate_tokens", lambda r: r.check_estimate_tokens((10**5000, 1))),
    ("estimate_tokens", lambda r: r.route("hi", estimate_tokens=(1, -10**5000))),
], ids=["NaN", "infinite", "negative", "beyond a float", "negative tokens", "too many tokens",
        "more digits than Python prints", "as many below zero"])
def test_a_number_out_of_range_is_refused_naming_it(
        world: World, field: str, call: Callable[[Router], object]) -> None:
    """learnable_cost checks a cost as report_outcome does (a NaN, infinite or negative cost
    taught NaN or less than nothing) and its tokens as a count; a count of tokens of more
    digits than Python prints is refused naming it, not a ValueError from its message."""
    router = Router(world.package, embedder=world.embedder)
    with pytest.raises(InvalidInputError) as caught:
        call(router)
    assert caught.value.field == field, caught.value


@pytest.mark.parametrize("call", [
    lambda r: r.route("hi", tenant="acme\ud800"),
    lambda r: r.route_batch(["hi"], tenant="acme\ud800"),
    lambda r: r.estimates(["hi"], tenant="acme\ud800"),
    lambda r: r.report_outcome(r.route("hi").decision_id, 0.5, tenant="\ud800"),
], ids=["route", "route_batch", "estimates", "report_outcome"])
def test_a_tenant_that_is_not_valid_unicode_is_refused(
        world: World, call: Callable[[Router], object]) -> None:
    """A tenant name holding a lone surrogate can be neither stored nor sent (a feedback log
    in SQLite failed to write its outcome): it is no tenant's name, so it is refused naming
    tenant and what a name may hold."""
    router = Router(world.package, embedder=world.embedder)
    with pytest.raises(InvalidInputError) as caught:
        call(router)
    assert caught.value.field == "tenant" and NAME_RULE in str(caught.value)


PAST = "must be a finite number, got {}, past the largest a number holds (about 1.8e308)"


@pytest.mark.parametrize(("value", "shown"), [
    (10**400, "an integer of 401 digits"), (-10**400, "an integer of 401 digits"),
    (Decimal("1e400"), "1E+400"), (Fraction(10**400, 3), "1" + "0" * 36 + "...")],
    ids=["integer", "negative integer", "Decimal", "Fraction"])
@pytest.mark.parametrize(("field", "call"), [
    ("quality_score", lambda r, v: r.report_outcome(r.route("hi").decision_id, v)),
    ("cost", lambda r, v: r.report_outcome(r.route("hi").decision_id, 0.5, cost=v)),
    ("cost_weight_override", lambda r, v: r.route("hi", cost_weight_override=v)),
    ("cost_weight", lambda r, v: r.route_batch(["hi"], cost_weights=[v])),
    ("cost", lambda r, v: r.learnable_cost(r.models[0], v, None)),
], ids=["quality_score", "cost", "cost_weight_override", "cost_weights", "learnable_cost"])
def test_a_number_past_what_a_float_holds_is_told_so_as_the_http_door_tells_it(
        world: World, field: str, call: Callable[[Router, object], object], value: object,
        shown: str) -> None:
    """A quality score, cost or λ of 10**400 was said to be "inf" (or quoted whole, 401
    digits cut at 60): the HTTP door says what it is, and the library door now says the same
    by the same rule, whatever kind of number holds it."""
    router = Router(world.package, embedder=world.embedder)
    with pytest.raises(InvalidInputError) as caught:
        call(router, value)
    assert caught.value.field.startswith(field), caught.value
    assert caught.value.reason == PAST.format(shown), caught.value


def test_a_decimal_is_a_number_as_a_fraction_is(world: World) -> None:
    """A Decimal quality score, cost or λ is read as the float it is nearest, as a Fraction
    and NumPy's scalars are (it was refused, "must be a number, got "0.5"", as if a string);
    one that is not 0 but too small for a float to tell from 0 is refused as the command line
    refuses 1e-400."""
    router = Router(world.package, embedder=world.embedder)
    decision = router.route("hi", cost_weight_override=Decimal("0.25"))  # type: ignore[arg-type]
    assert decision.cost_weight == 0.25 and type(decision.cost_weight) is float
    assert decision.selected_model == router.route("hi", cost_weight_override=0.25).selected_model
    outcome = router.report_outcome(decision.decision_id, Decimal("0.75"),  # type: ignore[arg-type]
                                    cost=Decimal("0.001"))  # type: ignore[arg-type]
    assert outcome.quality == 0.75 and type(outcome.quality) is float
    assert router.learnable_cost(router.models[0], Decimal("0.001"),  # type: ignore[arg-type]
                                 None) == router.learnable_cost(router.models[0], 0.001, None)
    with pytest.raises(InvalidInputError) as caught:
        router.report_outcome(decision.decision_id, Decimal("1e-400"))  # type: ignore[arg-type]
    assert caught.value.field == "quality_score"
    assert "1E-400 is too small a number to be told from 0" in str(caught.value)
    with pytest.raises(InvalidInputError) as nan:
        router.report_outcome(decision.decision_id, Decimal("NaN"))  # type: ignore[arg-type]
    assert nan.value.field == "quality_score" and "NaN" in str(nan.value)


def test_a_name_longer_than_a_model_s_is_refused_as_the_http_door_refuses_it(
        world: World) -> None:
    # In process, a list naming a model of 10,000 characters was called an unknown model,
    # where a request's body and header say a name has at most 256 characters.
    router = Router(world.package, embedder=world.embedder)
    model = next(iter(world.package.models))
    calls: list[tuple[str, str, Callable[[], object]]] = [
        ("available_models", "10,000", lambda: router.route("hi", [model, "x" * 10_000])),
        ("available_models", "257", lambda: router.check_candidates([model, "x" * 257])),
        ("allowed_models", "10,000",
         lambda: setattr(router, "allowed_models", [model, "x" * 10_000])),
    ]
    for field, given, call in calls:
        with pytest.raises(InvalidInputError) as caught:
            call()
        assert caught.value.field == field, caught.value
        assert str(caught.value) == f"{field}[1]: must have at most 256 characters, got {given}"
    assert router.allowed_models is None
    with pytest.raises(switchpoint.UnknownModelError):  # (one of 256 is looked up)
        router.route("hi", [model, "x" * 256])


class _Lying(str):
    """A str whose own methods say something other than the characters it holds."""

    def __len__(self) -> int:
        return 1

    def __str__(self) -> str:
        return "x"

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"the same for every text"

    def strip(self, chars: str | None = None) -> str:
        return "x"

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 1


def test_a_str_subclass_is_read_by_the_characters_it_holds_not_by_its_own_methods(
        world: World) -> None:
    """A str subclass whose __len__ said 1 took a 2,000,000-character prompt past the bound,
    one of blanks past the empty check, and two prompts whose encode() agreed shared a prompt
    hash (the second served the first's cached decision): the prompt, tenant, decision id and
    model names are each read as the characters they hold."""
    import hashlib

    router = Router(world.package, embedder=world.embedder)
    with pytest.raises(InvalidInputError) as caught:
        router.route(_Lying("a" * 2_000_000))
    assert caught.value.field == "prompt" and "is 2,000,000 characters" in str(caught.value)
    with pytest.raises(InvalidInputError) as caught:
        router.route(_Lying("   "))
    assert caught.value.field == "prompt" and "is empty" in str(caught.value)
    texts = ["What is the capital of France?", "Write a haiku about the sea."]
    first, second = (router.route(_Lying(t), tenant=_Lying("acme")) for t in texts)
    assert [first.prompt_hash, second.prompt_hash] == [
        hashlib.sha256(t.encode()).hexdigest() for t in texts]
    assert not second.cache_hit
    with pytest.raises(InvalidInputError) as caught:
        router.route("hi", tenant=_Lying("a" * 100))
    assert caught.value.field == "tenant"
    outcome = router.report_outcome(_Lying(first.decision_id), 0.5, tenant=_Lying("acme"))
    assert outcome.decision_id == first.decision_id and type(outcome.tenant) is str
    with pytest.raises(InvalidInputError) as caught:
        router.route("hi", available_models=[_Lying("m" * 300)])
    assert str(caught.value).startswith("available_models[0]: must have at most 256 characters")
