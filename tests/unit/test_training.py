"""add_model and remove_model: a new package, the one given untouched, and a router built from
that one routing on as before, from threads too, while the new packages are made."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from switchpoint.errors import InvalidInputError, RecordsError
from switchpoint.policies import Inputs
from switchpoint.records import RecordSet
from switchpoint.router import Router
from switchpoint.training import add_model, fit, remove_model
from switchpoint.weights import WeightsPackage
from tests.conftest import SMALL_SPLIT, FakeEmbedder
from tests.fakes.racing import while_changing

PROMPTS = [
    "What is the capital of France?",
    "Write a python function that reverses a linked list.",
    "Which gas do plants absorb? A) oxygen B) carbon dioxide C) helium D) neon",
    "Explain the difference between weather and climate in two sentences.",
    "Prove that the square root of 2 is irrational.",
]
SOURCE = "gpt-4-1106-preview"
POLICIES: dict[str, dict[str, Any]] = {
    "cluster": {"n_clusters": 6}, "knn": {}, "tiers": {}, "tfidf": {}, "fixed": {},
    "random": {},
}


def _package(policy: str, records: RecordSet, embedder: FakeEmbedder) -> WeightsPackage:
    return fit(records, policy=policy, split=SMALL_SPLIT, embedder=embedder,
               **POLICIES[policy])


def _decisions(router: Router) -> list[tuple[str, dict[str, float]]]:
    return [(d.selected_model, d.all_scores) for d in router.route_batch(PROMPTS)]


def _state(package: WeightsPackage) -> tuple[str, list[str], str, dict[str, np.ndarray]]:
    arrays = {k: np.copy(v) for k, v in vars(package.policy).items()
              if isinstance(v, np.ndarray)}
    return package.weights_id, package.models, repr(package.provenance), arrays


def _removable(package: WeightsPackage) -> str:
    """A model the package can forget (not the fixed policy's own)."""
    fixed = getattr(package.policy, "model_", None)
    return next(m for m in package.models if m != fixed)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_add_and_remove_return_a_new_package_and_leave_the_given_one_as_it_was(
    policy: str, small_records: RecordSet, fake_embedder: FakeEmbedder
) -> None:
    package = _package(policy, small_records, fake_embedder)
    router = Router(package, embedder=fake_embedder, cache_size=0)
    # The same package fitted apart, never changed (the random policy's draws go on: its
    # router must draw as this one's does, none taken by the new packages' routers).
    twin = Router(_package(policy, small_records, fake_embedder), embedder=fake_embedder,
                  cache_size=0)
    assert _decisions(router) == _decisions(twin)
    state, gone = _state(package), _removable(package)

    added = add_model(package, "clone", small_records.subset(range(30)), embedder=fake_embedder,
                      source_model=SOURCE)
    removed = remove_model(package, gone)
    both = remove_model(added, gone)

    assert added is not package and removed is not package and both is not added
    assert added.models == [*package.models, "clone"]
    assert removed.models == [m for m in package.models if m != gone]
    assert both.models == [m for m in added.models if m != gone]
    assert added.provenance["added_models"][0]["model"] == "clone"
    assert "added_models" not in package.provenance
    assert added.path is None and removed.path is None
    after = _state(package)
    assert after[:3] == state[:3]
    assert after[3].keys() == state[3].keys()
    for name, array in state[3].items():
        np.testing.assert_array_equal(after[3][name], array, err_msg=name)
    for changed in (added, removed, both):
        assert {m for m, _ in _decisions(Router(changed, embedder=fake_embedder))
                } <= set(changed.models)
    assert _decisions(router) == _decisions(twin)


def test_a_router_routes_on_from_threads_while_its_package_is_changed(
    small_records: RecordSet, fake_embedder: FakeEmbedder
) -> None:
    package = _package("cluster", small_records, fake_embedder)
    router = Router(package, embedder=fake_embedder, cache_size=0)
    before, models = _decisions(router), package.models
    labels = small_records.subset(range(30))

    def change() -> None:
        for i in range(20):
            grown = add_model(package, f"clone-{i}", labels, embedder=fake_embedder,
                              source_model=SOURCE)
            remove_model(package, package.models[i % len(package.models)])
            remove_model(grown, f"clone-{i}")

    seen = while_changing(lambda: _decisions(router), change, threads=3)
    assert seen and all(s == before for s in seen), next(s for s in seen if s != before)
    assert _decisions(router) == before
    assert package.models == models


def test_the_policy_of_a_new_package_shares_the_arrays_it_did_not_change(
    small_records: RecordSet, fake_embedder: FakeEmbedder
) -> None:
    package = _package("cluster", small_records, fake_embedder)
    added = add_model(package, "clone", small_records.subset(range(30)), embedder=fake_embedder,
                      source_model=SOURCE)
    assert added.policy is not package.policy
    assert added.policy.centroids_ is package.policy.centroids_  # type: ignore[attr-defined]
    assert added.policy.table_ is not package.policy.table_  # type: ignore[attr-defined]
    est = added.policy.estimate(Inputs(embeddings=fake_embedder.embed(PROMPTS)))
    assert est.models[-1] == "clone" and np.isfinite(est.error[:, -1]).all()


def test_a_source_model_the_records_do_not_label_is_refused_naming_those_they_do(
        small_records: RecordSet, fake_embedder: FakeEmbedder) -> None:
    package = _package("fixed", small_records, fake_embedder)
    with pytest.raises(RecordsError) as info:
        add_model(package, "new", small_records, embedder=fake_embedder, source_model="absent")
    assert str(info.value).endswith(
        'no labels for model "absent"; the records label '
        + ", ".join(f'"{m}"' for m in small_records.models))


def test_removing_a_model_the_weights_lack_lists_those_they_hold_as_words(
        small_records: RecordSet, fake_embedder: FakeEmbedder) -> None:
    """Named as add-model's refusal names them (bounded words, not a Python list)."""
    package = _package("fixed", small_records, fake_embedder)
    with pytest.raises(InvalidInputError) as info:
        remove_model(package, "absent")
    assert str(info.value) == (
        'name: model "absent" is not in these weights; they hold '
        + ", ".join(f'"{m}"' for m in package.models)
        + " (`switchpoint info --weights DIR` lists them)")


def test_a_policy_that_is_no_name_is_refused_offering_the_policies_as_choices(
        small_records: RecordSet) -> None:
    """The policies as every fixed list of choices is offered (quoted, the last after "or")."""
    with pytest.raises(InvalidInputError) as info:
        fit(small_records, 3)  # type: ignore[arg-type]
    assert str(info.value) == ("policy: must be a policy's name (\"cluster\", \"knn\", "
                               '"tiers", "tfidf", "fixed" or "random") or an unfitted Policy '
                               "instance such as KnnPolicy(k=20), got int")


# Names a catalog cannot hold: each door that makes a model of the weights refuses them by the
# catalog's rule of a card's name, naming the model (quoted, cut short) and the rule.
UNHELD = [("m" * 300, "must have at most 256 characters, got 300"),
          (" spaced", "holds a space (character 1)"), ("modèle", "holds U+00E8 (character 4)"),
          ("auto", '"auto" is reserved for the router itself')]


@pytest.mark.parametrize(("name", "rule"), UNHELD)
def test_add_model_refuses_a_name_a_catalog_cannot_hold(
        name: str, rule: str, small_records: RecordSet, fake_embedder: FakeEmbedder) -> None:
    package = _package("fixed", small_records, fake_embedder)
    before = _state(package)
    with pytest.raises(InvalidInputError) as info:
        add_model(package, name, small_records, embedder=fake_embedder, source_model=SOURCE)
    assert info.value.field == "name"
    assert info.value.reason.startswith(f"model {json.dumps(name, ensure_ascii=False)[:6]}")
    assert rule in info.value.reason and "m" * 81 not in info.value.reason
    assert info.value.reason.endswith("; name the model so a catalog can hold it")
    assert info.value.reason.count(";") == 1  # (one fix: this door's)
    assert _state(package)[:3] == before[:3]


@pytest.mark.parametrize(("name", "rule"), UNHELD[1:])  # (a RecordSet refuses a long name)
def test_fit_refuses_records_naming_a_model_a_catalog_cannot_hold(
        name: str, rule: str, small_records: RecordSet, fake_embedder: FakeEmbedder) -> None:
    records = RecordSet(ids=list(small_records.ids), prompts=list(small_records.prompts),
                        tasks=list(small_records.tasks), splits=list(small_records.splits),
                        models=[*small_records.models[:-1], name],
                        scores=small_records.scores, costs=small_records.costs)
    with pytest.raises(InvalidInputError) as info:
        fit(records, policy="fixed", split=SMALL_SPLIT, embedder=fake_embedder)
    assert info.value.field == f"records.models[{len(records.models) - 1}]"
    assert rule in info.value.reason
    assert info.value.reason.endswith("; rename the model in the records")
    assert info.value.reason.count(";") == 1  # (one fix: no upstream_model in records)
