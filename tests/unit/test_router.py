"""The Router: decisions, the decision cache, candidate filters, batches, stats, threads."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from switchpoint.catalog import MAX_CATALOG_MODELS, Catalog, ModelCard, model_names
from switchpoint.decision import RoutingDecision
from switchpoint.errors import (
    InvalidInputError,
    NoCandidatesError,
    NoUpstreamError,
    UnknownModelError,
    WeightsError,
)
from switchpoint.learning import InMemoryFeedbackLog, LearningSettings
from switchpoint.policies import ClusterPolicy
from switchpoint.records import RecordSet
from switchpoint.router import Router, RoutingStats, load_router
from switchpoint.training import fit
from switchpoint.weights import load_weights
from tests.conftest import SMALL_SPLIT, FakeEmbedder, RouterFactory
from tests.fakes.racing import while_changing
from tests.fakes.two_kinds import math_prompt, poem_prompt, two_kinds_package

PROMPTS = [
    "What is the capital of France?",
    "Write a python function that reverses a linked list.",
    "Which gas do plants absorb? A) oxygen B) carbon dioxide C) helium D) neon",
    "Explain the difference between weather and climate in two sentences.",
    "Sam put the book on the shelf because it was heavy. What was heavy?",
]
CHEAP = ["mistralai/mistral-7b-chat", "WizardLM/WizardLM-13B-V1.2"]


def _scale(router: Router, candidates: list[str] | None = None) -> float:
    """The λ scale by definition: the global mean cost of the priciest candidate."""
    costs = router.policy.global_cost()
    return max(costs[m] for m in (candidates or router.models))


def _state(router: Router) -> tuple[dict, int, int, int]:  # type: ignore[type-arg]
    return (router.stats.to_dict(), len(router.cache), router.embedder.hits,
            router.embedder.misses)


def _same(a: RoutingDecision, b: RoutingDecision) -> None:
    assert a.selected_model == b.selected_model
    assert a.cluster_id == b.cluster_id
    # Batched and single embeddings differ in the last float32 bits; soft assignment carries
    # that into the sixth decimal of the rounded scores.
    assert a.expected_error == pytest.approx(b.expected_error, abs=1e-5)
    assert a.cost_adjusted_score == pytest.approx(b.cost_adjusted_score, abs=1e-5)
    assert a.all_scores == pytest.approx(b.all_scores, abs=1e-5)


# A decision ---------------------------------------------------------------------------------


def test_route_returns_a_full_decision(router: Router) -> None:
    d = router.route(PROMPTS[0])
    assert d.selected_model in router.models
    assert 0 <= d.cluster_id < 6
    assert 0.0 <= d.expected_error <= 1.0
    assert set(d.all_scores) == set(router.models)
    # all_scores is sorted best first, and the chosen model has the lowest score.
    assert next(iter(d.all_scores)) == d.selected_model
    assert d.cost_adjusted_score == pytest.approx(min(d.all_scores.values()))
    assert list(d.all_scores.values()) == sorted(d.all_scores.values())
    assert d.fallback_models == list(d.all_scores)[1:]
    # F7: score = expected error + λ·cost / (mean cost of the priciest model).
    assert d.cost_weight == 0.5
    assert d.cost_adjusted_score == pytest.approx(
        d.expected_error + 0.5 * d.expected_cost / _scale(router), abs=2e-6)
    for m, score in d.all_scores.items():
        assert score == pytest.approx(
            d.expected_errors[m] + 0.5 * d.expected_costs[m] / _scale(router), abs=2e-6)
    assert d.cache_hit is False
    assert d.usage.routing_ms >= 0 and d.usage.embedding_ms >= 0
    assert 0.0 <= d.confidence <= 1.0
    assert d.cluster_probabilities is not None  # soft: the cluster policy's default
    assert np.count_nonzero(d.cluster_probabilities) > 1
    assert d.reasoning and d.evidence
    # (the policy named as JSON writes a name, not as Python's repr: 'cluster')
    assert d.reasoning[0] == f'Cluster {d.cluster_id} of the "cluster" policy.', d.reasoning
    assert d.policy == "cluster"
    assert d.basis == f"cluster policy, cluster {d.cluster_id}"
    assert d.expected_cost == pytest.approx(d.expected_costs[d.selected_model])
    out = json.loads(json.dumps(d.to_dict()))
    assert out["selected_model"] == d.selected_model
    assert set(out["usage"]) == {"routing_ms", "embedding_ms"}
    text = d.explain()
    assert text.startswith(f"Model selected: {d.selected_model}")


def test_lambda_zero_is_quality_first_and_huge_lambda_is_cheapest(router: Router) -> None:
    q = router.route(PROMPTS[1], cost_weight_override=0)
    assert q.expected_error == pytest.approx(min(q.expected_errors.values()), abs=1e-6)
    c = router.route(PROMPTS[1], cost_weight_override=1e4)
    assert c.expected_cost == min(c.expected_costs.values())
    assert c.selected_model == "mistralai/mistral-7b-chat"
    assert q.cluster_id == c.cluster_id  # λ does not move the prompt


# The decision cache -------------------------------------------------------------------------


def test_cache_hit_exact_per_call(router: Router) -> None:
    first = router.route(PROMPTS[2])
    second = router.route(PROMPTS[2])
    assert (first.cache_hit, second.cache_hit) == (False, True)
    _same(first, second)
    assert second.decision_id != first.decision_id
    assert second.usage.embedding_ms == 0.0
    # The same λ given explicitly is the same key.
    assert router.route(PROMPTS[2], cost_weight_override=0.5).cache_hit is True
    # Another λ or another candidate set is another key.
    assert router.route(PROMPTS[2], cost_weight_override=0.7).cache_hit is False
    assert router.route(PROMPTS[2], cost_weight_override=0.7).cache_hit is True
    assert router.route(PROMPTS[2], available_models=CHEAP).cache_hit is False
    assert router.route(PROMPTS[2], available_models=CHEAP[::-1]).cache_hit is True  # a set
    assert router.route(PROMPTS[2] + " ").cache_hit is False  # another prompt
    stats = router.stats
    assert stats.total_requests == 8
    assert stats.cache_hits == 4
    assert router.embedder.misses == 2  # the embedder saw two distinct texts


def test_cache_disabled_and_expiry(make_router: RouterFactory) -> None:
    off = make_router(cache_size=0)
    assert [off.route(PROMPTS[0]).cache_hit for _ in range(3)] == [False] * 3
    short = make_router(cache_ttl=0.05)
    assert short.route(PROMPTS[0]).cache_hit is False
    assert short.route(PROMPTS[0]).cache_hit is True
    time.sleep(0.1)
    assert short.route(PROMPTS[0]).cache_hit is False


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"cache_size": -1}, "cache_size"),
    ({"cache_size": 1.5}, "cache_size"),
    ({"cache_size": "10"}, "cache_size"),
    ({"cache_size": True}, "cache_size"),
    # Past the bound the config's cache.size has: a cache that large never evicts, so its
    # memory grows with every prompt (10**400 was taken).
    ({"cache_size": 10_000_001}, "cache_size"),
    ({"cache_size": 10**400}, "cache_size"),
    ({"cache_ttl": -1}, "cache_ttl"),
    ({"cache_ttl": math.nan}, "cache_ttl"),  # (would never expire)
    ({"cache_ttl": "60"}, "cache_ttl"),
    ({"cache_ttl": 366 * 86_400 + 1}, "cache_ttl"),
    ({"embedding_cache_size": -1}, "embedding_cache_size"),
    ({"embedding_cache_size": 10**12}, "embedding_cache_size"),
])
def test_bad_cache_settings_are_a_typed_error_naming_them(
        make_router: RouterFactory, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        make_router(**kwargs)
    assert info.value.field == field
    assert len(str(info.value)) < 200
    if field != "embedding_cache_size":  # (load_router takes the decision cache's two)
        with pytest.raises(InvalidInputError) as info:
            load_router(**kwargs, warm=False)  # type: ignore[arg-type]
        assert info.value.field == field


def test_cache_evicts_least_recently_used(make_router: RouterFactory) -> None:
    r = make_router(cache_size=2)
    r.route(PROMPTS[0])
    r.route(PROMPTS[1])
    r.route(PROMPTS[0])  # most recently used
    r.route(PROMPTS[2])  # evicts PROMPTS[1]
    assert len(r.cache) == 2
    assert r.route(PROMPTS[0]).cache_hit is True
    assert r.route(PROMPTS[1]).cache_hit is False


# Embeddings instead of prompts ----------------------------------------------------------------


def test_route_by_embedding_skips_the_embedder(router: Router, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    by_prompt = router.route(PROMPTS[3])
    misses = router.embedder.misses
    vector = fake_embedder.embed_one(PROMPTS[3])
    by_vector = router.route(embedding=vector.tolist())
    assert by_vector.usage.embedding_ms == 0.0
    assert by_vector.cache_hit is False  # an embedding key is not a prompt key
    assert router.embedder.misses == misses
    _same(by_prompt, by_vector)
    # Scale does not matter: the vector is normalised.
    assert router.route(embedding=(vector * 7.5).tolist()).selected_model == \
        by_prompt.selected_model
    assert router.route(embedding=vector).cache_hit is True
    # The candidate set is part of an embedding's key too.
    assert router.route(embedding=vector, available_models=CHEAP).cache_hit is False
    assert router.route(embedding=vector, available_models=CHEAP).cache_hit is True
    assert router.route(embedding=vector, cost_weight_override=0.9).cache_hit is False


def test_route_by_embedding_rejects_bad_vectors(router: Router) -> None:
    before = _state(router)
    with pytest.raises(InvalidInputError) as info:
        router.route(embedding=[0.1] * 10)
    assert info.value.field == "embedding"
    assert "384" in str(info.value)
    with pytest.raises(InvalidInputError, match="not both"):
        router.route(PROMPTS[0], embedding=[0.1] * 384)
    with pytest.raises(InvalidInputError, match=r"embedding\[0\]: is NaN, not a finite number"):
        router.route(embedding=[math.nan] * 384)
    assert _state(router) == before


# Candidate filters ---------------------------------------------------------------------------


def test_available_models_restricts(router: Router) -> None:
    d = router.route(PROMPTS[0], available_models=CHEAP, cost_weight_override=0)
    assert d.selected_model in CHEAP
    assert set(d.all_scores) == set(CHEAP)
    assert d.fallback_models == [m for m in CHEAP if m != d.selected_model]
    # The λ scale is the priciest *candidate's* cost.
    d1 = router.route(PROMPTS[0], available_models=CHEAP, cost_weight_override=1.0)
    for m in CHEAP:
        assert d1.all_scores[m] == pytest.approx(
            d1.expected_errors[m] + d1.expected_costs[m] / _scale(router, CHEAP), abs=2e-6)
    single = router.route(PROMPTS[0], available_models=["claude-v2"])
    assert single.selected_model == "claude-v2"
    assert single.fallback_models == []
    assert single.confidence == 1.0


def test_allowed_models_restricts(make_router: RouterFactory) -> None:
    r = make_router(allowed_models=["claude-v1", "gpt-4-1106-preview"])
    for p in PROMPTS:
        d = r.route(p)
        assert set(d.all_scores) == {"claude-v1", "gpt-4-1106-preview"}
    assert r.route(PROMPTS[0], available_models=["claude-v1"]).selected_model == "claude-v1"
    with pytest.raises(NoCandidatesError) as info:
        r.route(PROMPTS[0], available_models=["claude-v2"])
    assert info.value.field == "available_models"
    # (names as JSON writes them, listed as every message lists names: never Python's lists)
    assert str(info.value) == (
        'available_models: none of "claude-v2" is in this router\'s allowed models '
        '("claude-v1", "gpt-4-1106-preview"); list one of those')
    assert r.check_candidates(None) == ["claude-v1", "gpt-4-1106-preview"]
    with pytest.raises(UnknownModelError, match='"nope"'):
        make_router(allowed_models=["nope"])
    with pytest.raises(NoCandidatesError):
        make_router(allowed_models=[])


def test_a_model_named_twice_in_a_list_of_candidates_is_refused_naming_it(
        make_router: RouterFactory) -> None:
    """A list of models to choose among names each once, as a record set's models do: a
    repeat was kept (``allowed_models`` read back with it, its errors listing it twice)."""
    with pytest.raises(InvalidInputError) as info:
        make_router(allowed_models=["claude-v1", "claude-v2", "claude-v1"])
    assert str(info.value) == ('allowed_models: names "claude-v1" more than once; name each '
                               'model once')
    router = make_router()
    before = router.stats.total_requests
    with pytest.raises(InvalidInputError) as info:
        router.route(PROMPTS[0], available_models=["claude-v2", "claude-v2"])
    assert info.value.field == "available_models" and '"claude-v2" more than once' in str(
        info.value)
    assert router.stats.total_requests == before


def test_unknown_model_is_named(router: Router) -> None:
    before = _state(router)
    with pytest.raises(UnknownModelError) as info:
        router.route(PROMPTS[0], available_models=["claude-v1", "gpt-7-ultra"])
    assert info.value.names == ["gpt-7-ultra"]
    assert info.value.field == "available_models"
    assert '"gpt-7-ultra"' in str(info.value)
    assert "claude-v1" in str(info.value)  # the known models are listed
    assert _state(router) == before


def test_an_unknown_model_error_stays_short_whatever_was_sent(router: Router) -> None:
    many = [f"model-{i}" for i in range(MAX_CATALOG_MODELS)]  # (the most a list may name)
    with pytest.raises(UnknownModelError) as info:
        router.route(PROMPTS[0], available_models=many)
    message = str(info.value)
    assert len(message) < 1000 and info.value.names == many  # every name stays on the error
    assert '"model-0"' in message and f"and {MAX_CATALOG_MODELS - 20} more;" in message
    with pytest.raises(UnknownModelError) as info:
        router.route(PROMPTS[0], available_models=["x" * 256])  # (the longest a name may be)
    assert len(str(info.value)) < 1000 and "\"" + "x" * 97 + '…"' in str(info.value)
    with pytest.raises(InvalidInputError) as too_long:  # (longer: not looked up)
        router.route(PROMPTS[0], available_models=["x" * 1_000_000])
    assert str(too_long.value) == ("available_models[0]: must have at most 256 characters, got "
                                   "1,000,000")


@pytest.mark.parametrize("bad", [[], "claude-v1", [3], ["claude-v1", 5], 7])
def test_bad_model_lists(router: Router, bad: object) -> None:
    before = _state(router)
    with pytest.raises(InvalidInputError) as info:
        router.route(PROMPTS[0], available_models=bad)  # type: ignore[arg-type]
    assert info.value.field == "available_models"
    assert _state(router) == before


def test_empty_list_is_no_candidates(router: Router) -> None:
    with pytest.raises(NoCandidatesError, match="empty"):
        router.route(PROMPTS[0], available_models=[])


@pytest.mark.parametrize("kind", [set, frozenset])
def test_a_set_of_models_is_refused_as_a_list_in_an_order_is_asked_for(
        router: Router, kind: type) -> None:
    """A set of candidates was taken, its order Python's hash order, which changes from run to
    run (as HTTP's JSON list never does): each door that takes a list of models refuses one,
    naming its argument and saying to pass a list, and changes nothing."""
    before = _state(router)
    names = kind(CHEAP)
    for call in (lambda: router.route(PROMPTS[0], available_models=names),
                 lambda: router.route_batch(PROMPTS[:2], available_models=names),
                 lambda: router.cost_scale(names),
                 lambda: router.check_candidates(names)):
        with pytest.raises(InvalidInputError) as info:
            call()
        assert info.value.field == "available_models"
        assert str(info.value) == (
            f"available_models: must be a list of model names, got {kind.__name__}, whose "
            "order is not kept (it changes from run to run); pass a list, in the order you "
            "prefer (sorted(available_models) for a fixed one)")
    assert _state(router) == before
    allowed = router.allowed_models
    with pytest.raises(InvalidInputError) as info:
        router.allowed_models = names
    assert info.value.field == "allowed_models" and "sorted(allowed_models)" in str(info.value)
    assert router.allowed_models == allowed
    assert router.route(PROMPTS[0], available_models=sorted(names)).selected_model in CHEAP


def test_a_dict_of_models_is_refused_and_any_other_iterable_read_once(
        make_router: RouterFactory) -> None:
    """A dict of candidates was taken as its keys, a list nobody wrote: it is refused, naming
    the argument and saying to pass a list. A generator is read once, as the list that is
    checked: it can name a model only within the router's allowed models."""
    allowed = ["claude-v1", "gpt-4-1106-preview"]
    router = make_router(allowed_models=allowed)
    before = _state(router)
    outside = "meta/llama-2-70b-chat"
    mapping: Any = {outside: 1}
    for call in (lambda: router.route(PROMPTS[0], available_models=mapping),
                 lambda: router.route_batch(PROMPTS[:2], available_models=mapping),
                 lambda: router.check_candidates(mapping)):
        with pytest.raises(InvalidInputError) as info:
            call()
        assert str(info.value) == (
            "available_models: must be a list of model names, got dict (a mapping); pass a "
            "list of the names (list(available_models) for its keys)")
    with pytest.raises(InvalidInputError, match="got dict"):
        router.allowed_models = mapping
    assert router.allowed_models == allowed
    assert _state(router) == before
    with pytest.raises(NoCandidatesError):
        router.route(PROMPTS[0], available_models=cast(Any, (m for m in [outside])))
    chosen = router.route(PROMPTS[0],
                          available_models=cast(Any, (m for m in ["gpt-4-1106-preview"])))
    assert chosen.selected_model == "gpt-4-1106-preview"
    assert set(chosen.all_scores) == {"gpt-4-1106-preview"}


def test_an_endless_generator_of_models_is_refused_not_read_forever(router: Router) -> None:
    """A generator of candidates was read whole: an endless one hung the caller. It is read
    no further than the most models a catalog may list and one more, and refused, naming the
    argument and the bound; a list of exactly that many is still read."""
    before = _state(router)
    for call in (lambda names: router.route(PROMPTS[0], available_models=names),
                 lambda names: router.check_candidates(names)):
        endless = map(str, itertools.count())
        with pytest.raises(InvalidInputError) as info:
            call(endless)
        assert info.value.field == "available_models"
        assert str(info.value) == (
            f"available_models: names more than {MAX_CATALOG_MODELS:,} models; it may name at "
            f"most {MAX_CATALOG_MODELS:,} (the most a catalog may list): name each model once")
        assert next(endless) == str(MAX_CATALOG_MODELS + 1)  # read the bound and one more
    with pytest.raises(InvalidInputError, match="names more than"):
        router.allowed_models = cast(Any, map(str, itertools.count()))
    assert _state(router) == before
    names = [f"m{i}" for i in range(MAX_CATALOG_MODELS)]
    assert model_names(iter(names), "available_models") == names


# Bad input changes nothing ---------------------------------------------------------------------


@pytest.mark.parametrize("lam", [-0.1, -1, math.nan, math.inf, True, "0.5", 1e5])
def test_bad_lambda_rejected_and_state_unchanged(router: Router, lam: object) -> None:
    router.route(PROMPTS[0])
    before = _state(router)
    with pytest.raises(InvalidInputError) as info:
        router.route(PROMPTS[1], cost_weight_override=lam)  # type: ignore[arg-type]
    assert info.value.field == "cost_weight_override"
    with pytest.raises(InvalidInputError):
        router.route_batch(PROMPTS, cost_weight_override=lam)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(PROMPTS, cost_weights=[0.0, lam])  # type: ignore[list-item]
    assert info.value.field == "cost_weights[1]"
    assert _state(router) == before


@pytest.mark.parametrize("prompt", ["", "   ", None, 42, "lone \ud800 surrogate"])
def test_bad_prompt_rejected_and_state_unchanged(router: Router, prompt: object) -> None:
    before = _state(router)
    with pytest.raises(InvalidInputError) as info:
        router.route(prompt)  # type: ignore[arg-type]
    assert info.value.field == "prompt"
    with pytest.raises(InvalidInputError) as info:
        router.route_batch([PROMPTS[0], prompt])  # type: ignore[list-item]
    assert info.value.field == "prompts[1]"
    assert _state(router) == before


def test_a_prompt_past_the_router_s_bound_is_refused_naming_it_and_how_to_raise_it(
        make_router: RouterFactory, fake_embedder: FakeEmbedder) -> None:
    """A 100 MB prompt was routed: only the gateway bounded a request's size. A router takes
    what the HTTP door's default body limit takes, and more when built to."""
    from switchpoint._limits import DEFAULT_MAX_REQUEST_BYTES, MAX_BYTES

    router = make_router()
    assert router.max_prompt_chars == DEFAULT_MAX_REQUEST_BYTES
    calls = len(fake_embedder.calls)
    before = _state(router)
    over = "x" * (DEFAULT_MAX_REQUEST_BYTES + 1)
    said = (f"is {DEFAULT_MAX_REQUEST_BYTES + 1:,} characters, over the "
            f"{DEFAULT_MAX_REQUEST_BYTES:,} a prompt may have; send the end of a long prompt "
            "(the router reads only its last part), or raise max_prompt_chars "
            "(Router(..., max_prompt_chars=...) or load_router(..., max_prompt_chars=...), at "
            f"most {MAX_BYTES:,})")
    with pytest.raises(InvalidInputError) as info:
        router.route(over)
    assert str(info.value) == f"prompt: {said}"
    for call in (router.route_batch, router.estimates):
        with pytest.raises(InvalidInputError) as info:
            call([PROMPTS[0], over])
        assert str(info.value) == f"prompts[1]: {said}"
    assert len(fake_embedder.calls) == calls and _state(router) == before
    # The bound itself is taken, and a router built to take more takes more.
    assert router.route("x" * DEFAULT_MAX_REQUEST_BYTES).selected_model in router.models
    assert make_router(max_prompt_chars=len(over)).route(over).selected_model in router.models
    small = make_router(max_prompt_chars=10)
    with pytest.raises(InvalidInputError) as info:
        small.route_batch(["short", "eleven char"])
    assert info.value.field == "prompts[1]" and "over the 10 a prompt may have" in str(info.value)


@pytest.mark.parametrize("bound", [0, -1, 1.5, "100", True, None, (1 << 30) + 1])
def test_a_bad_bound_on_a_prompt_is_refused_naming_it(make_router: RouterFactory,
                                                     router: Router, bound: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        make_router(max_prompt_chars=bound)
    assert info.value.field == "max_prompt_chars"
    assert "must be a whole number of characters from 1 to 1,073,741,824" in str(info.value)
    with pytest.raises(InvalidInputError):
        router.max_prompt_chars = bound  # type: ignore[assignment]
    assert router.max_prompt_chars == 1 << 20


def test_a_batch_that_is_no_list_of_prompts_is_refused_naming_prompts(router: Router) -> None:
    from types import MappingProxyType

    before = _state(router)
    for prompts, got in (({"a": 1}, "dict, a mapping whose keys would be routed as prompts; "
                                    "pass a list of the prompt texts"),
                         (MappingProxyType({PROMPTS[0]: 1}), "mappingproxy, a mapping whose"),
                         (PROMPTS[0], "str; pass [prompt] for one prompt (or route it with "
                                      "route())"),
                         (b"hi", "bytes; pass [prompt]"), (42, "int")):
        for call in (router.route_batch, router.estimates):
            with pytest.raises(InvalidInputError) as info:
                call(prompts)  # type: ignore[arg-type]
            assert info.value.field == "prompts"
            assert str(info.value).startswith(f"prompts: must be a list of strings, got {got}")
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(embeddings={"a": [0.0]})  # type: ignore[arg-type]
    assert str(info.value).startswith("embeddings: must be a list of vectors")
    assert _state(router) == before
    assert [d.selected_model for d in router.route_batch(tuple(PROMPTS[:2]))] == [
        router.route(p).selected_model for p in PROMPTS[:2]]


@pytest.mark.parametrize("lam", [-1, math.nan, math.inf, "0.5", None])
def test_a_bad_lambda_set_on_the_router_is_refused_and_the_old_one_kept(router: Router,
                                                                         lam: object) -> None:
    router.cost_weight = 0.0
    quality_first = router.route(PROMPTS[0]).selected_model
    with pytest.raises(InvalidInputError) as info:
        router.cost_weight = lam  # type: ignore[assignment]
    assert info.value.field == "cost_weight"
    assert router.cost_weight == 0.0
    decision = router.route(PROMPTS[0])
    assert decision.cost_weight == 0.0 and decision.selected_model == quality_first
    assert math.isfinite(decision.cost_adjusted_score)


@pytest.mark.parametrize(("models", "error"), [
    ([], NoCandidatesError), (["no-such-model"], UnknownModelError),
    ("mistralai/mistral-7b-chat", InvalidInputError), ([5], InvalidInputError),
    (["claude-v1", "claude-v2", "claude-v1"], InvalidInputError)])
def test_bad_allowed_models_set_on_the_router_are_refused_and_the_old_ones_kept(
        router: Router, models: object, error: type[Exception]) -> None:
    router.allowed_models = CHEAP
    with pytest.raises(error) as info:
        router.allowed_models = models  # type: ignore[assignment]
    assert getattr(info.value, "field", None) == "allowed_models"
    assert router.allowed_models == CHEAP
    assert router.route(PROMPTS[1]).selected_model in CHEAP
    router.allowed_models = None
    assert router.allowed_models is None


class _TenDims:
    id = "ten/10"
    dimension = 10

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 10), np.float32) / np.sqrt(10)


def test_bad_constructor_arguments(make_router: RouterFactory) -> None:
    with pytest.raises(InvalidInputError, match="384") as info:
        make_router(embedder=_TenDims())
    assert info.value.field == "embedder"
    with pytest.raises(InvalidInputError):
        make_router(cost_weight=-1)
    with pytest.raises(InvalidInputError) as infinite:  # (in the words a request's is told in)
        make_router(cost_weight=float("inf"))
    assert str(infinite.value).startswith("cost_weight: is infinity, too large a number")
    assert str(infinite.value).endswith("; send finite numbers only")
    r = make_router(cost_weight=0)
    assert r.route(PROMPTS[0]).cost_weight == 0.0


# Batches ------------------------------------------------------------------------------------


def test_route_batch_equals_individual_routes(make_router: RouterFactory,
                                              fake_embedder: FakeEmbedder) -> None:
    batch_router = make_router()
    single_router = make_router()
    batch = batch_router.route_batch(PROMPTS, available_models=None)
    assert len(batch) == len(PROMPTS)
    for p, d in zip(PROMPTS, batch, strict=True):
        _same(d, single_router.route(p))
        assert d.cache_hit is False
    assert batch_router.stats.total_requests == len(PROMPTS)
    # Embedded in one pass: the fake embedder saw one batch of all five prompts.
    calls_before = len(fake_embedder.calls)
    fresh = make_router()
    fresh.route_batch(PROMPTS)
    assert fake_embedder.calls[calls_before:] == [PROMPTS]
    assert fresh.route_batch([]) == []


def test_route_batch_by_embeddings(router: Router, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    vectors = fake_embedder.embed(PROMPTS)
    by_vec = router.route_batch(embeddings=vectors)
    by_text = router.route_batch(PROMPTS)
    for a, b in zip(by_vec, by_text, strict=True):
        _same(a, b)
        assert a.usage.embedding_ms == 0.0
    with pytest.raises(InvalidInputError, match="align"):
        router.route_batch(PROMPTS[:2], embeddings=vectors)
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(embeddings=[vectors[0].tolist(), [1.0, 2.0]])
    assert info.value.field == "embeddings[1]"
    with pytest.raises(InvalidInputError):
        router.route_batch("a single string, not a list")
    with pytest.raises(InvalidInputError):
        router.route_batch()


def test_route_batch_with_cost_weights(router: Router) -> None:
    weights = [0.0, 0.1, 1.0, 10.0]
    out = router.route_batch(PROMPTS, available_models=[*CHEAP, "gpt-4-1106-preview"],
                             cost_weights=weights)
    assert len(out) == len(PROMPTS) * len(weights)
    reference = Router(router.weights, embedder=router.embedder.inner)
    for w_i, lam in enumerate(weights):
        for i, p in enumerate(PROMPTS):
            d = out[w_i * len(PROMPTS) + i]
            assert d.cost_weight == lam
            _same(d, reference.route(p, available_models=[*CHEAP, "gpt-4-1106-preview"],
                                     cost_weight_override=lam))
    # Larger λ never picks a pricier model for the same prompt.
    for i in range(len(PROMPTS)):
        costs = [out[w_i * len(PROMPTS) + i].expected_cost for w_i in range(len(weights))]
        assert costs == sorted(costs, reverse=True)
    assert router.stats.total_requests == len(out)


@pytest.mark.parametrize(("cost_weights", "needle"), [
    ([], "cost_weights: is empty"),  # (was: [] back, as if there were no prompts)
    ("0,1", "cost_weights: must be a list of numbers"),
    ([0.5, -1], "cost_weights[1]: "),
])
def test_route_batch_refuses_a_bad_sweep(router: Router, cost_weights: object,
                                         needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(PROMPTS[:2], cost_weights=cost_weights)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert router.stats.total_requests == 0


def test_route_batch_refuses_a_sweep_beside_one_cost_weight(router: Router) -> None:
    """(The cost_weight_override was ignored: every decision at the sweep's λ.)"""
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(PROMPTS[:2], None, 0.5, cost_weights=[3.0])
    assert info.value.field == "cost_weights" and "not both" in str(info.value)
    assert router.stats.total_requests == 0


def test_a_batch_over_the_bound_is_refused_naming_the_argument_before_anything_is_embedded(
        router: Router, fake_embedder: FakeEmbedder) -> None:
    from switchpoint.router import MAX_BATCH

    calls = len(fake_embedder.calls)
    before = _state(router)
    split = f"split the batch into calls of {MAX_BATCH:,} prompts or fewer"
    for call in (router.route_batch, router.estimates, router.analyze_routing_distribution):
        with pytest.raises(InvalidInputError) as info:
            call(["What is 2 + 2?"] * 1_000_000)
        assert str(info.value) == (f"prompts: holds 1,000,000 prompts, over the {MAX_BATCH:,} "
                                   f"one call takes; {split}")
    # An iterator is read one prompt past the bound, no further.
    endless = iter(lambda: "What is 2 + 2?", None)
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(endless)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"prompts: holds more than {MAX_BATCH:,} prompts, ")
    assert next(endless) == "What is 2 + 2?"
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(embeddings=np.ones((MAX_BATCH + 1, 384), np.float32))
    assert str(info.value).startswith(f"embeddings: holds {MAX_BATCH + 1:,} embeddings, ")
    # Prompts times cost weights are the decisions one call makes.
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(["What is 2 + 2?"] * 5_000, cost_weights=[0.0, 1.0, 2.0])
    assert str(info.value) == (
        "prompts: holds 5,000 prompts, which at 3 cost weights each make 15,000 decisions, "
        f"over the {MAX_BATCH:,} one call makes; split the batch into calls of "
        f"{MAX_BATCH // 3:,} prompts or fewer")
    with pytest.raises(InvalidInputError) as info:
        router.route_batch(PROMPTS[:1], cost_weights=[0.5] * (MAX_BATCH + 1))
    assert info.value.field == "cost_weights"
    assert len(fake_embedder.calls) == calls  # nothing was embedded
    assert _state(router) == before
    # The bound itself is taken.
    assert router.estimates(embeddings=np.ones((MAX_BATCH, 384), np.float32)).error.shape[0] \
        == MAX_BATCH


# Per-cluster best model ----------------------------------------------------------------------


def test_get_best_model_for_cluster_matches_the_decision_rule(router: Router) -> None:
    policy = cast(ClusterPolicy, router.policy)
    centroids = policy.centroids_
    for c in range(policy.n_units):
        err, cost = policy.error_[c], policy.cost_[c]
        quality_first = min(range(len(router.models)), key=lambda j: (err[j], cost[j]))
        cheapest = int(np.argmin(cost))
        best = router.get_best_model_for_cluster
        assert best(c, cost_weight_override=0) == router.models[quality_first]
        assert best(c, cost_weight_override=1e4) == router.models[cheapest]
        for lam in (0.0, 0.5, 1e4):
            d = router.route(embedding=centroids[c], cost_weight_override=lam)
            assert d.cluster_id == c
            assert best(c, cost_weight_override=lam) == d.selected_model
    # Default λ is the router's own.
    assert router.get_best_model_for_cluster(0) == router.get_best_model_for_cluster(
        0, cost_weight_override=0.5)
    # Narrowed to one model, that model is the answer; in positional order as in other routers.
    only = router.models[-1]
    assert router.get_best_model_for_cluster(0, [only], 0.0) == only


@pytest.mark.parametrize("bad", [-1, 6, 100, 1.0, "0", True, None])
def test_get_best_model_for_cluster_rejects_bad_ids(router: Router, bad: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        router.get_best_model_for_cluster(bad)  # type: ignore[arg-type]
    assert info.value.field == "cluster_id"
    with pytest.raises(InvalidInputError):
        router.get_best_model_for_cluster(0, cost_weight_override=-1.0)


def test_get_best_model_accepts_numpy_ints(router: Router) -> None:
    # typed int, and numpy ints are accepted too
    by_numpy = router.get_best_model_for_cluster(np.int64(2),  # type: ignore[arg-type]
                                                 cost_weight_override=0)
    assert by_numpy == router.get_best_model_for_cluster(2, cost_weight_override=0)


# Distribution and stats ---------------------------------------------------------------------


def test_analyze_routing_distribution(router: Router, small_records) -> None:  # type: ignore[no-untyped-def]
    prompts = small_records.prompts[:30] + PROMPTS
    dist = router.analyze_routing_distribution(prompts)
    assert sum(dist.values()) == len(prompts)
    assert set(dist) <= set(router.models)
    expected = Counter(d.selected_model for d in router.route_batch(prompts))
    assert dist == dict(expected)
    assert list(dist.values()) == sorted(dist.values(), reverse=True)
    only = router.analyze_routing_distribution(prompts, available_models=CHEAP)
    assert set(only) <= set(CHEAP) and sum(only.values()) == len(prompts)


def test_stats_and_reset(router: Router) -> None:
    for p in PROMPTS:
        router.route(p)
    router.route(PROMPTS[0])
    router.route_batch(PROMPTS[:3])
    s = router.stats
    assert s.total_requests == 9
    assert s.cache_hits == 1
    assert sum(s.model_selections.values()) == 9
    assert sum(s.cluster_distributions.values()) == 9
    assert 0 <= s.avg_expected_error <= 1 and s.avg_cost_score >= s.avg_expected_error
    d = s.to_dict()
    assert json.loads(json.dumps(d))["total_requests"] == 9
    assert all(isinstance(k, str) for k in d["cluster_distributions"])
    s.model_selections["tampered"] = 100  # a snapshot, not the live counters
    assert "tampered" not in router.stats.model_selections
    router.reset_stats()
    s = router.stats
    assert (s.total_requests, s.cache_hits, sum(s.model_selections.values()),
            sum(s.cluster_distributions.values()), s.avg_expected_error) == (0, 0, 0, 0, 0.0)
    assert router.route(PROMPTS[0]).cache_hit is True  # the cache survives a stats reset
    assert router.stats.total_requests == 1 and router.stats.cache_hits == 1


# Threads ------------------------------------------------------------------------------------


def test_the_fake_embedder_makes_each_words_vector_once_from_many_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Routers embed from many threads: the fake's word cache was read and written without a
    # lock, so threads meeting a new word at once each made its vector and wrote it (a race
    # a free-threaded interpreter would not forgive). Making a vector is slowed here so that
    # they meet: each word is made once, and every thread's vectors are alike.
    embedder = FakeEmbedder()
    made: list[int] = []
    default_rng = np.random.default_rng

    def slow_rng(seed: int) -> np.random.Generator:
        made.append(seed)
        time.sleep(0.002)
        return default_rng(seed)

    monkeypatch.setattr(np.random, "default_rng", slow_rng)
    texts = [f"word{i} shared words here" for i in range(20)]
    out: list[np.ndarray] = []

    def embed() -> None:
        out.append(embedder.embed(texts))

    threads = [threading.Thread(target=embed) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    words = {w for text in texts for w in text.split()}
    seeds = {int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little") for w in words}
    assert sorted(s for s in made if s in seeds) == sorted(seeds)  # each word's made once
    assert len(out) == 8 and all(np.array_equal(o, out[0]) for o in out)
    assert len(embedder.calls) == 8


def test_thread_safety(router: Router) -> None:
    n_threads, calls = 16, 25
    shared = "One prompt that many threads route at the same moment."
    prompts = [shared if t % 2 == 0 else f"{PROMPTS[t % 5]} (thread {t})"
               for t in range(n_threads)]
    barrier = threading.Barrier(n_threads)
    results: dict[int, list[RoutingDecision]] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            results[t] = [router.route(prompts[t]) for _ in range(calls)]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    decisions = [d for t in range(n_threads) for d in results[t]]
    stats = router.stats
    assert stats.total_requests == n_threads * calls == len(decisions)
    assert stats.cache_hits == sum(d.cache_hit for d in decisions)
    assert sum(stats.model_selections.values()) == stats.total_requests
    assert sum(stats.cluster_distributions.values()) == stats.total_requests
    # The same prompt always gets the same decision.
    for p in set(prompts):
        mine = [d for t in range(n_threads) if prompts[t] == p for d in results[t]]
        assert len({(d.selected_model, d.cluster_id, d.expected_error) for d in mine}) == 1
    # cache_hit is exact: a thread's first call may miss, every later call is a hit; a key used
    # by one thread misses exactly once; the shared key misses at least once.
    for t in range(n_threads):
        assert all(d.cache_hit for d in results[t][1:])
        if prompts[t] != shared:
            assert results[t][0].cache_hit is False
    shared_misses = sum(not results[t][0].cache_hit for t in range(n_threads)
                        if prompts[t] == shared)
    assert 1 <= shared_misses <= n_threads // 2
    assert stats.cache_hits == n_threads * calls - (n_threads // 2) - shared_misses
    assert len({d.decision_id for d in decisions}) == len(decisions)


# A package changed once a router is built from it: (its policy's parameters to change, the
# parameters to fit it with).
CHANGES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cluster": ({"assignment": "hard", "prior_strength": 1000.0}, {"n_clusters": 6}),
    "knn": ({"k": 3, "prior_strength": 50.0}, {}),
    "tiers": ({"prior_strength": 1000.0}, {}),
    "tfidf": ({"prior_strength": 1000.0, "temperature": 5.0}, {}),
    "fixed": ({"model": CHEAP[0]}, {}),
    "random": ({"random_state": 5}, {}),
}


def _choices(router: Router, prompts: list[str] = PROMPTS) -> list[tuple[str, dict[str, float]]]:
    return [(d.selected_model, d.all_scores) for d in router.route_batch(prompts)]


@pytest.mark.parametrize("policy", sorted(CHANGES))
def test_a_package_changed_after_a_router_is_built_from_it_leaves_the_router_as_it_was(
        policy: str, small_records: RecordSet, fake_embedder: FakeEmbedder) -> None:
    change, params = CHANGES[policy]
    prompts = [*PROMPTS, *small_records.prompts[:3]]  # (some in every tier the tiers fill)
    package = fit(small_records, policy=policy, split=SMALL_SPLIT, embedder=fake_embedder, **params)
    router = Router(package, embedder=fake_embedder, cache_size=0)
    twin = Router(fit(small_records, policy=policy, split=SMALL_SPLIT, embedder=fake_embedder,
                      **params), embedder=fake_embedder, cache_size=0)
    weights_id = router.weights_id
    # The router's copy shares the package's arrays (none is copied)...
    arrays = {k: v for k, v in vars(package.policy).items() if isinstance(v, np.ndarray)}
    assert arrays and all(vars(router.policy)[k] is v for k, v in arrays.items())
    assert router.policy is not package.policy and router.weights is not package

    package.policy.set_params(**change)
    package.provenance["note"] = "changed"

    # ...and routes on as before, as one built from an unchanged package does.
    assert _choices(router, prompts) == _choices(twin, prompts)
    assert router.weights_id == weights_id != package.weights_id
    assert router.policy.get_params() == twin.policy.get_params()
    assert "note" not in router.weights.provenance
    # A router built from the changed package routes with the change.
    changed = Router(package, embedder=fake_embedder, cache_size=0)
    assert _choices(changed, prompts) != _choices(twin, prompts)


@pytest.mark.parametrize("policy", sorted(CHANGES))
def test_a_router_s_own_policy_changed_routes_at_once_and_serves_no_decision_cached_before(
        policy: str, small_records: RecordSet, fake_embedder: FakeEmbedder) -> None:
    # A decision cached before router.policy.set_params(...) was served for up to the
    # cache's hour after it, so the same prompt routed as before the change.
    change, params = CHANGES[policy]
    prompts = [*PROMPTS, *small_records.prompts[:3]]
    router = Router(fit(small_records, policy=policy, split=SMALL_SPLIT, embedder=fake_embedder,
                        **params), embedder=fake_embedder)
    fresh = Router(fit(small_records, policy=policy, split=SMALL_SPLIT, embedder=fake_embedder,
                       **params), embedder=fake_embedder, cache_size=0)
    before = [router.route(p) for p in prompts]
    assert all(router.route(p).cache_hit for p in prompts)
    router.policy.set_params(**change)
    fresh.policy.set_params(**change)
    after = [router.route(p) for p in prompts]
    assert not any(d.cache_hit for d in after)
    assert ([(d.selected_model, d.all_scores) for d in after]
            == [(d.selected_model, d.all_scores) for d in (fresh.route(p) for p in prompts)])
    assert [d.all_scores for d in after] != [d.all_scores for d in before]
    assert all(router.route(p).cache_hit for p in prompts)  # (and are cached anew)
    # A change refused changes nothing, and leaves the cache as it was.
    with pytest.raises(InvalidInputError):
        router.policy.set_params(**{next(iter(change)): -1})
    assert all(router.route(p).cache_hit for p in prompts)


def test_a_router_routes_on_from_threads_while_its_package_is_changed_from_another(
        tiny_weights_dir: Path, fake_embedder: FakeEmbedder) -> None:
    package = load_weights(tiny_weights_dir)
    router = Router(package, embedder=fake_embedder, cache_size=0)
    before = _choices(router)

    def change() -> None:
        for i in range(40):
            package.policy.set_params(assignment=("hard", "soft")[i % 2],
                                      prior_strength=float(1 + 100 * (i % 3)))

    seen = while_changing(lambda: _choices(router), change)
    assert seen and all(s == before for s in seen), next(s for s in seen if s != before)
    assert _choices(router) == before
    assert package.policy.get_params()["prior_strength"] == 1.0  # (the last change)


def test_a_route_beside_a_change_of_its_policy_reads_the_policy_before_or_after_it(
        tiny_weights_dir: Path, fake_embedder: FakeEmbedder) -> None:
    # set_params rebound the policy's estimates one after another, so a route beside it could
    # read the errors before the change with the costs and standard errors after it.
    router = Router(load_weights(tiny_weights_dir), embedder=fake_embedder, cache_size=0)
    states = [{"assignment": "hard", "prior_strength": 1.0, "pessimism": 0.0},
              {"assignment": "soft", "prior_strength": 300.0, "pessimism": 3.0}]

    def decided(i: int) -> tuple[int, tuple[object, ...]]:
        d = router.route(PROMPTS[i])
        return i, (d.selected_model, d.all_scores, d.expected_errors, d.expected_costs,
                   d.confidence, None if d.cluster_probabilities is None
                   else np.asarray(d.cluster_probabilities).tolist())

    under = []
    for state in states:
        router.policy.set_params(**state)
        under.append([decided(i)[1] for i in range(len(PROMPTS))])
    assert all(a != b for a, b in zip(*under, strict=True))  # (each state decides otherwise)
    turns = itertools.count()

    def change() -> None:
        for n in range(300):
            router.policy.set_params(**states[n % 2])

    seen = while_changing(lambda: decided(next(turns) % len(PROMPTS)), change)
    assert seen and not [s for s in seen if not isinstance(s, tuple)]
    mixed = [(i, got) for i, got in cast(list[tuple[int, tuple[object, ...]]], seen)
             if got not in (under[0][i], under[1][i])]
    assert not mixed, mixed[0]


def test_every_decision_takes_its_feedback_once_from_many_threads(
        make_router: RouterFactory) -> None:
    """Threads routing one at a time and in batches, for several tenants, while others report
    outcomes and change λ and the allowed models: every decision returned takes its first
    outcome as new and its second as a replacement, the log holds every outcome, and the
    counters add up to the decisions returned."""
    log = InMemoryFeedbackLog()
    router = make_router(learning=LearningSettings(exploration=0.2, seed=7), feedback_log=log)
    n_threads, rounds = 8, 12
    barrier = threading.Barrier(n_threads + 1)
    decided: list[list[str]] = [[] for _ in range(n_threads)]
    replaced: list[list[tuple[bool, bool]]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        tenant = None if t % 3 == 0 else f"tenant-{t % 3}"
        try:
            barrier.wait()
            for i in range(rounds):
                batch = router.route_batch([f"{PROMPTS[(t + i + j) % 5]} #{j}" for j in range(3)],
                                           tenant=tenant)
                ids = [router.route(f"{PROMPTS[(t + i) % 5]} ({t}, {i})",
                                    tenant=tenant).decision_id, *(d.decision_id for d in batch)]
                decided[t].extend(ids)
                for decision_id in ids:
                    first = router.report_outcome(decision_id, success=i % 2 == 0)
                    second = router.report_outcome(decision_id, quality_score=0.5)
                    replaced[t].append((first.replaced, second.replaced))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def meddler() -> None:
        barrier.wait()
        for i in range(rounds * 4):
            router.cost_weight = (0.0, 0.5, 1.0)[i % 3]
            router.allowed_models = None if i % 2 else router.models[:2]
        router.allowed_models = None

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    threads.append(threading.Thread(target=meddler))
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    made = [d for ids in decided for d in ids]
    assert len(made) == len(set(made)) == n_threads * rounds * 4
    assert all(pair == (False, True) for pairs in replaced for pair in pairs)
    assert len(log) == 2 * len(made)
    assert router.stats.total_requests == len(made)


# load_router ---------------------------------------------------------------------------------


def test_load_router_with_soft_assignment(tiny_weights_dir: Path, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    r = load_router(weights_path=tiny_weights_dir, embedder=fake_embedder,
                    use_soft_assignment=True, cost_weight=0.2, warm=False)
    assert r.cost_weight == 0.2
    d = r.route(PROMPTS[0])
    probs = d.cluster_probabilities
    assert probs is not None and probs.shape == (6,)  # a distribution over every cluster
    assert np.all(probs >= 0) and abs(probs.sum() - 1.0) < 1e-6
    assert int(np.argmax(probs)) == d.cluster_id
    assert json.loads(json.dumps(d.to_dict()))["cluster_probabilities"] == pytest.approx(
        probs.tolist(), abs=1e-6)
    # Soft estimates mix the cluster estimates, so they differ from the hard ones in general.
    hard = load_router(weights_path=tiny_weights_dir, embedder=fake_embedder, warm=False,
                       use_soft_assignment=False)
    one_hot = hard.route(PROMPTS[0])
    assert one_hot.cluster_probabilities is not None
    assert one_hot.cluster_probabilities.tolist() == [
        1.0 if k == one_hot.cluster_id else 0.0 for k in range(6)]
    kept = load_router(weights_path=tiny_weights_dir, embedder=fake_embedder, warm=False)
    # None keeps the package's own setting
    assert cast(ClusterPolicy, kept.policy).assignment == "soft"


def test_load_router_warm_and_verbose(
    tiny_weights_dir: Path, fake_embedder: FakeEmbedder, capsys: pytest.CaptureFixture[str]
) -> None:
    r = load_router(tiny_weights_dir, embedder=fake_embedder, verbose=True)
    assert r.route(PROMPTS[0]).selected_model in r.models
    out = capsys.readouterr().out
    assert r.weights.weights_id in out and str(tiny_weights_dir) in out


def test_load_router_soft_assignment_needs_a_cluster_policy(
    small_records: RecordSet, fake_embedder: FakeEmbedder, tmp_path: Path
) -> None:
    path = fit(small_records.subset(range(20)), policy="knn", split=SMALL_SPLIT,
               embedder=fake_embedder, k=3).save(tmp_path / "knn")
    with pytest.raises(InvalidInputError) as info:
        load_router(path, embedder=fake_embedder, use_soft_assignment=True, warm=False)
    assert info.value.field == "use_soft_assignment"
    r = load_router(path, embedder=fake_embedder, warm=False)
    d = r.route(PROMPTS[1])
    assert d.policy == "knn" and 0 <= d.cluster_id < 20
    assert r.get_best_model_for_cluster(d.cluster_id, cost_weight_override=0) in r.models


def test_a_knn_decision_says_how_many_neighbours_its_estimate_averages(
    small_records: RecordSet, fake_embedder: FakeEmbedder, tmp_path: Path
) -> None:
    """A knn estimate is its nearest labelled examples' mean, weighted by similarity: the
    evidence named the weights' sum, rounded ("0 labelled examples behind ..."), as if none
    stood behind it. It says how many neighbours it averaged and what they weigh."""
    path = fit(small_records.subset(range(20)), policy="knn", split=SMALL_SPLIT,
               embedder=fake_embedder, k=3).save(tmp_path / "knn")
    r = load_router(path, embedder=fake_embedder, warm=False)
    for prompt in PROMPTS:
        d = r.route(prompt)
        first = d.evidence[0]
        assert first.startswith(f"the 3 nearest labelled examples behind {d.selected_model}'s "
                                "estimate, weighing, by their similarity to the prompt, as "
                                "much as "), first
        weight = float(first.split("as much as ")[1].split(" ")[0])
        assert 0 < weight <= 3 and first.endswith(" labels of the prompt itself")
        assert f"{weight:.2g}" == first.split("as much as ")[1].split(" ")[0]


def test_a_decision_on_one_labelled_example_says_example() -> None:
    """One example is "1 labelled example", not "1 labelled examples" (the bundled tiers
    weights have one label of a model in their trivial tier)."""
    router = load_router(weights_name="tiers", warm=False)
    d = router.route("hi", available_models=["gpt-3.5-turbo-1106"])
    assert d.evidence[0] == "1 labelled example behind gpt-3.5-turbo-1106's estimate"
    many = router.route("Prove that the square root of 2 is irrational.",
                        available_models=["gpt-3.5-turbo-1106"])
    assert many.evidence[0].endswith(" labelled examples behind gpt-3.5-turbo-1106's estimate")


# End to end with the real embedder (sparingly) ---------------------------------------------------


def test_real_router_prompt_and_embedding_agree(real_router: Router, minilm) -> None:  # type: ignore[no-untyped-def]
    prompt = "Which planet is known as the red planet? A) Venus B) Mars C) Jupiter D) Saturn"
    d = real_router.route(prompt, cost_weight_override=0.25)
    assert d.selected_model in real_router.models
    assert d.usage.embedding_ms > 0 or d.cache_hit
    vector = minilm.embed([prompt])[0]
    e = real_router.route(embedding=vector, cost_weight_override=0.25)
    assert e.usage.embedding_ms == 0.0
    _same(d, e)
    assert real_router.weights.embedder_id == "all-MiniLM-L6-v2/tail-64"


def test_real_router_batch_matches_single(real_router: Router, small_records) -> None:  # type: ignore[no-untyped-def]
    prompts = small_records.prompts[:3]
    batch = real_router.route_batch(prompts, cost_weight_override=0.0)
    for p, d in zip(prompts, batch, strict=True):
        _same(d, real_router.route(p, cost_weight_override=0.0))


# Parameters other UniRoute-style loaders take ----------------------------------------------


def test_load_router_by_bundled_name() -> None:
    default = load_router(weights_name="default", warm=False)
    assert default.policy.name == "cluster"
    assert load_router(weights_name="knn", warm=False).policy.name == "knn"
    with pytest.raises(InvalidInputError, match="never downloads") as info:
        load_router(weights_name="weights-mmlu-v1", warm=False)
    assert info.value.field == "weights_name"


def test_a_script_that_exits_while_routers_warm_up_exits_cleanly() -> None:
    """load_router warms the embedder on a thread; an interpreter that exited under it, while
    ONNX Runtime was still making its session, was aborted (SIGABRT, status 134)."""
    script = ("from switchpoint import load_router\n"
              "for policy in ('cluster', 'knn', 'tiers'):\n"
              "    load_router(policy=policy)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_load_router_engines_all_mean_the_in_process_engine(tiny_weights_dir: Path,
                                                            fake_embedder: FakeEmbedder) -> None:
    for engine in ("auto", "python", "go"):
        r = load_router(tiny_weights_dir, embedder=fake_embedder, engine=engine, warm=False,
                        download_if_missing=False)
        assert r.route(PROMPTS[0]).selected_model in r.models
    with pytest.raises(InvalidInputError) as info:
        load_router(tiny_weights_dir, embedder=fake_embedder, engine="rust", warm=False)
    assert info.value.field == "engine"


def test_load_router_embedding_model_names() -> None:
    named = load_router(embedding_model="sentence-transformers/all-MiniLM-L6-v2", warm=False)
    assert named.embedder.id == named.weights.embedder_id
    with pytest.raises(InvalidInputError) as info:
        load_router(embedding_model="text-embedding-3-small", warm=False)
    assert info.value.field == "embedding_model"


def test_a_missing_package_is_an_error_even_when_download_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_router(tmp_path / "absent", download_if_missing=True, warm=False)


def test_route_and_execute_needs_a_gateway(router: Router) -> None:
    with pytest.raises(NoUpstreamError, match=r"Gateway\.from_config"):
        router.route_and_execute(PROMPTS[0])


def test_a_model_without_a_profile_is_not_trusted_over_the_measured_ones(
        fake_embedder: FakeEmbedder) -> None:
    """Its expected error is the mean of its tier's profiled models, or, with none of its tier,
    the weakest profiled model's on that prompt: it does not win on price alone."""
    package = two_kinds_package(fake_embedder)

    def card(name: str, profile: str | None, tier: str | None = None) -> ModelCard:
        return ModelCard(name, profile=profile, input_per_mtok=1, output_per_mtok=1, tier=tier)

    profiled = [card("strong", "strong", "complex"), card("runner", "runner", "complex"),
                card("cheap", "cheap", "simple")]
    catalog = Catalog([*profiled, ModelCard("tiny", input_per_mtok=0.01,
                                            output_per_mtok=0.01, tier="trivial"),
                       ModelCard("peer", input_per_mtok=0.01, output_per_mtok=0.01,
                                 tier="complex")])
    router = Router(package, embedder=fake_embedder, catalog=catalog, cost_weight=0.5)
    d = router.route(math_prompt(1), cost_weight_override=0.5)
    errors = d.expected_errors
    weakest = max(("strong", "runner", "cheap"), key=package.policy.global_error().__getitem__)
    assert errors["tiny"] == errors[weakest]
    assert errors["peer"] == pytest.approx((errors["strong"] + errors["runner"]) / 2, abs=1e-6)
    assert d.selected_model != "tiny"  # (the unprofiled model of a profiled tier may win)
    alone = router.route(math_prompt(1), available_models=["tiny"])
    assert f"that of the weakest profiled model, {weakest}" in " ".join(alone.reasoning)
    # (its tier named as JSON writes it, as every note names a tier: it was a Python repr)
    peer = " ".join(router.route(math_prompt(1), available_models=["peer"]).reasoning)
    assert 'the mean of the profiled models of tier "complex" on this prompt' in peer, peer
    assert "'complex'" not in peer


def test_a_model_without_a_profile_or_tier_takes_only_prompts_the_measured_ones_agree_on(
        fake_embedder: FakeEmbedder) -> None:
    """With only the weakest profiled model beside it, an unprofiled cheaper one ties its error;
    its uncertainty (as wide as the profiled models disagree on the prompt) decides: on math
    (errors 0.1 / 0.25 / 0.8) the measured model keeps the prompt, on poems (every model 0.1)
    the cheaper unknown takes it."""
    package = two_kinds_package(fake_embedder)
    catalog = Catalog([ModelCard("strong", profile="strong", input_per_mtok=10, output_per_mtok=10),
                       ModelCard("runner", profile="runner", input_per_mtok=5, output_per_mtok=5),
                       ModelCard("cheap", profile="cheap", input_per_mtok=1, output_per_mtok=1),
                       ModelCard("tiny", input_per_mtok=0.01, output_per_mtok=0.01)])
    router = Router(package, embedder=fake_embedder, catalog=catalog, cost_weight=0.5)
    assert package.policy.global_error()["cheap"] == max(package.policy.global_error().values())
    pair = ["cheap", "tiny"]
    for i in range(5):
        on_math = router.route(math_prompt(i), available_models=pair)
        assert on_math.expected_errors["tiny"] == on_math.expected_errors["cheap"]
        assert on_math.selected_model == "cheap", on_math.all_scores
        assert router.route(poem_prompt(i), available_models=pair).selected_model == "tiny"
    assert router.route(poem_prompt(0)).selected_model == "tiny"  # the easy prompts go to it


def test_a_catalog_with_no_profiled_model_routes_without_numpy_warnings(
        fake_embedder: FakeEmbedder) -> None:
    """With no profiled model there is no spread to measure: no RuntimeWarning (NaN from the
    standard deviation of nothing) reaches the service's log on every request."""
    package = two_kinds_package(fake_embedder)
    catalog = Catalog([ModelCard("tiny", input_per_mtok=0.01, output_per_mtok=0.01, tier="simple"),
                       ModelCard("big", input_per_mtok=1, output_per_mtok=1, tier="complex")])
    router = Router(package, embedder=fake_embedder, catalog=catalog, cost_weight=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = router.route(math_prompt(1))
    assert d.selected_model in ("tiny", "big")
    assert all(np.isfinite(v) for v in d.expected_errors.values())


def test_a_model_kept_out_of_auto_is_never_chosen_nor_explored_to(
        fake_embedder: FakeEmbedder) -> None:
    """``auto: false`` (a judge): the strongest and cheapest model, yet routing, exploration
    and the per-cluster choice pass it over; a candidate list of it alone says why."""
    from switchpoint.learning import LearningSettings

    package = two_kinds_package(fake_embedder)
    catalog = Catalog([ModelCard("strong", profile="strong", input_per_mtok=0, output_per_mtok=0,
                                 auto=False),
                       ModelCard("runner", profile="runner", input_per_mtok=5, output_per_mtok=5),
                       ModelCard("cheap", profile="cheap", input_per_mtok=1, output_per_mtok=1)])
    router = Router(package, embedder=fake_embedder, catalog=catalog, cost_weight=0.5,
                    learning=LearningSettings(exploration=1.0, seed=1))
    assert router.models == ["strong", "runner", "cheap"]
    for i in range(6):
        for prompt in (math_prompt(i), poem_prompt(i)):
            d = router.route(prompt)
            assert d.selected_model != "strong" and "strong" not in d.all_scores, d
        d = router.route(math_prompt(i), available_models=["strong", "cheap"])
        assert d.selected_model == "cheap"
    for unit in range(int(package.policy.n_units)):
        assert router.get_best_model_for_cluster(unit) != "strong"
    assert "strong" not in router.check_candidates(None)
    with pytest.raises(NoCandidatesError) as info:
        router.route(math_prompt(0), available_models=["strong"])
    assert info.value.field == "available_models"
    assert '"strong" is never chosen by routing (auto: false' in str(info.value)
    assert "strong" not in router.analyze_routing_distribution([math_prompt(9), poem_prompt(9)])
    router.allowed_models = ["cheap"]  # (a list naming both kinds says what is wrong with each)
    with pytest.raises(NoCandidatesError) as info:
        router.route(math_prompt(0), available_models=["strong", "runner"])
    assert str(info.value) == (
        'available_models: none of "runner" is in this router\'s allowed models ("cheap"), and '
        '"strong" is never chosen by routing (auto: false in the catalog: served only when a '
        "request names it as its model); list one of those")


def test_the_cache_bounds_are_the_config_s(make_router: RouterFactory) -> None:
    """The library takes the largest cache and the longest time the config takes, no more."""
    from switchpoint.config import CacheSettings
    from switchpoint.router import MAX_CACHE_ENTRIES, MAX_CACHE_TTL_S

    widest = CacheSettings(size=MAX_CACHE_ENTRIES, ttl_seconds=MAX_CACHE_TTL_S)
    router = make_router(cache_size=widest.size, cache_ttl=widest.ttl_seconds)
    assert (router.cache.size, router.cache.ttl) == (10_000_000, 366 * 86_400)
    with pytest.raises(ValueError):
        CacheSettings(size=MAX_CACHE_ENTRIES + 1)


@pytest.mark.parametrize(("ttl", "kept"), [(0.0, True), (3600.0, False)])
def test_a_cache_ttl_of_zero_keeps_decisions_until_the_lru_evicts_them(
        monkeypatch: pytest.MonkeyPatch, ttl: float, kept: bool) -> None:
    from types import SimpleNamespace

    import switchpoint.router as router_module

    clock = [1000.0]
    monkeypatch.setattr(router_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    cache = router_module.DecisionCache(size=2, ttl_seconds=ttl)
    decision = cast(RoutingDecision, object())
    cache.put(("a",), decision, np.zeros(1))
    clock[0] += 10 * 366 * 86_400  # ten years on
    assert (cache.get(("a",)) is not None) is kept
    for key in ("b", "c"):
        cache.put((key,), decision, np.zeros(1))
    assert cache.get(("a",)) is None  # the LRU evicts it whatever the TTL


@pytest.mark.parametrize(("price", "reason"), [
    (-1.0, "must be >= 0, got -1.0"),
    (math.inf, "must be a finite number (not NaN or infinity)"),
    (math.nan, "must be a finite number (not NaN or infinity)"),
    (1e300, "must be <= 100,000, got 1e+300"),
    (100_000.5, "must be <= 100,000, got 100000.5"),
])
def test_a_catalog_refuses_a_price_that_is_not_finite_between_0_and_its_bound(
        price: float, reason: str) -> None:
    """A price past any real model's (USD per million tokens) is a mistake, and would make
    the request log's cost totals overflow."""
    with pytest.raises(InvalidInputError) as info:
        Catalog([ModelCard(name="a", input_per_mtok=1.0, output_per_mtok=price)])
    assert str(info.value) == f"models.a.output_per_mtok: {reason}"
    assert Catalog([ModelCard(name="a", input_per_mtok=0.0, output_per_mtok=100_000.0)])


@pytest.mark.parametrize(("auto", "unprofiled"), [(True, ["grader"]), (False, [])])
def test_a_judge_kept_out_of_auto_is_not_reported_as_routed_without_a_profile(
        fake_embedder: FakeEmbedder, auto: bool, unprofiled: list[str]) -> None:
    """A catalog model without a profile is routed by tier and price alone, and the router
    says so; a judge (``auto: false``) is never routed, so there is nothing to say of it."""
    package = two_kinds_package(fake_embedder)
    catalog = Catalog([ModelCard("strong", profile="strong", input_per_mtok=5,
                                 output_per_mtok=5),
                       ModelCard("cheap", profile="cheap", input_per_mtok=1, output_per_mtok=1),
                       ModelCard("grader", input_per_mtok=2.5, output_per_mtok=10,
                                 auto=auto)])
    router = Router(package, embedder=fake_embedder, catalog=catalog)
    assert router.unprofiled_models == unprofiled


@pytest.mark.parametrize(("given", "field", "said"), [
    ({"total_requests": -1}, "total_requests", "must be a count >= 0, got -1"),
    ({"cache_hits": -2}, "cache_hits", "must be a count >= 0, got -2"),
    ({"total_requests": 1, "cache_hits": 5}, "cache_hits",
     "is 5, more than total_requests (1); a cache hit is one of the requests counted"),
    ({"avg_expected_error": math.nan}, "avg_expected_error", "got NaN"),
    ({"avg_cost_score": math.inf}, "avg_cost_score", "a finite number"),
], ids=["negative requests", "negative hits", "more hits than requests", "a NaN mean",
        "an infinite mean"])
def test_routing_stats_hold_counts_and_finite_means(given: dict[str, Any], field: str,
                                                    said: str) -> None:
    """Counters built by hand are counters: a negative count, more cache hits than requests or
    a mean that is no finite number is refused naming it (each was kept, and to_dict() wrote
    NaN, which no strict JSON reader takes)."""
    with pytest.raises(InvalidInputError) as caught:
        RoutingStats(**given)
    assert caught.value.field == field and said in caught.value.reason, caught.value
    kept = RoutingStats(total_requests=2, cache_hits=2, avg_expected_error=np.float32(0.25))  # type: ignore[arg-type]
    assert kept.to_dict()["avg_expected_error"] == 0.25 and kept.copy() == kept


def test_routing_stats_repr_shows_the_first_units_of_thousands() -> None:
    """A knn router's units are its examples: the counts of 5,000 of them are a line, not
    every one (the repr printed each)."""
    stats = RoutingStats(total_requests=5000, model_selections=Counter({"a": 5000}),
                         cluster_distributions=Counter(dict.fromkeys(range(5000), 1)))
    shown = repr(stats)
    assert len(shown) < 600, shown[:600]
    assert shown.startswith("RoutingStats(total_requests=5000, cache_hits=0, "
                            "model_selections={'a': 5000}, cluster_distributions={0: 1, 1: 1, ")
    assert "... 4,988 more}" in shown and shown.endswith("avg_cost_score=0.0)")
