"""Policy parameters, the scikit-learn way: derived from the constructor, validated out of it."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from switchpoint.errors import InvalidInputError, NotFittedError
from switchpoint.policies import (
    POLICIES,
    ClusterPolicy,
    FixedPolicy,
    Inputs,
    KnnPolicy,
    make_policy,
    policy_class,
)
from switchpoint.policies.base import param_names
from switchpoint.router import load_router
from switchpoint.weights import WeightsPackage, load_weights
from tests.conftest import FakeEmbedder


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_get_params_is_the_constructor_signature(name: str) -> None:
    cls = policy_class(name)
    signature = inspect.signature(cls.__init__).parameters
    defaults = {k: p.default for k, p in signature.items() if k != "self"}
    policy = cls()
    assert policy.get_params() == defaults
    assert param_names(cls) == tuple(defaults)
    # Every policy repr shows its parameters, and a clone from them has the same parameters.
    assert repr(policy).startswith(f"{cls.__name__}(")
    assert cls(**policy.get_params()).get_params() == defaults


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_no_policy_defines_its_own_get_params(name: str) -> None:
    cls = policy_class(name)
    owner = next(c for c in cls.__mro__ if "get_params" in vars(c))
    assert owner.__name__ == "Policy"


def test_constructor_stores_bad_values_and_fit_rejects_them() -> None:
    policy = KnnPolicy(k=0)  # no validation in __init__
    assert policy.k == 0
    with pytest.raises(InvalidInputError) as info:
        policy.fit(Inputs(embeddings=np.eye(3, dtype=np.float32)), np.ones((3, 1)),
                   np.ones((3, 1)), ["m"])
    assert info.value.field == "k"
    assert "must be >= 1" in str(info.value)


def test_set_params_returns_self_and_applies() -> None:
    policy = ClusterPolicy()
    assert policy.set_params(n_clusters=7, temperature=0.1) is policy
    assert policy.get_params()["n_clusters"] == 7
    assert policy.temperature == 0.1


def test_set_params_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError) as info:
        KnnPolicy().set_params(assignment="soft")
    assert info.value.field == "assignment"
    message = str(info.value)
    assert '"knn" policy has no parameter(s) "assignment"; its parameters are "k", ' in message


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_make_policy_unknown_name_lists_the_parameters(name: str) -> None:
    # What `fit --param` and `fit(..., **params)` go through: the same answer as set_params.
    with pytest.raises(InvalidInputError) as info:
        make_policy(name, no_such_parameter=1)
    assert info.value.field == "no_such_parameter"
    message = str(info.value)
    assert f'"{name}" policy has no parameter(s) "no_such_parameter"' in message
    listed = ", ".join(f'"{param}"' for param in param_names(policy_class(name)))
    assert f"its parameters are {listed}" in message
    assert "__init__" not in message


def test_a_choice_or_a_model_refused_lists_what_it_may_be_as_words() -> None:
    with pytest.raises(InvalidInputError, match=r'^assignment: must be one of "hard" or "soft", '
                                                r'got "firm"$'):
        ClusterPolicy().set_params(assignment="firm")
    with pytest.raises(InvalidInputError, match=r'^model: "c" is not among "a", "b"$'):
        FixedPolicy(model="c").fit(Inputs(embeddings=np.eye(3, dtype=np.float32)),
                                   np.ones((3, 2)), np.ones((3, 2)), ["a", "b"])


def test_set_params_bad_value_changes_nothing() -> None:
    policy = ClusterPolicy(n_clusters=9)
    with pytest.raises(InvalidInputError) as info:
        policy.set_params(n_clusters=12, temperature=-1.0)
    assert info.value.field == "temperature"
    assert policy.n_clusters == 9 and policy.temperature == 0.05


def test_set_params_on_a_fitted_policy_takes_effect(tiny_package: WeightsPackage,
                                                     tmp_path: Path) -> None:
    policy = load_weights(tiny_package.save(tmp_path / "w")).policy
    assert isinstance(policy, ClusterPolicy)
    x = np.asarray(policy.centroids_[:2] + policy.centroids_[2:4], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    soft = policy.estimate(Inputs(embeddings=x))
    assert soft.unit_probabilities is not None
    hard = policy.set_params(assignment="hard").estimate(Inputs(embeddings=x))
    assert hard.unit_probabilities is None
    np.testing.assert_allclose(hard.error, policy.error_[hard.unit_ids])
    # A shrinkage parameter re-shrinks the fitted tables at once.
    before = policy.error_.copy()
    policy.set_params(prior_strength=0.0)
    raw = policy.table_.error
    labelled = policy.table_.count > 0
    np.testing.assert_allclose(policy.error_[labelled], raw[labelled])
    assert not np.allclose(before, policy.error_)


def test_load_router_goes_through_set_params(tiny_package: WeightsPackage, tmp_path: Path,
                                             fake_embedder: FakeEmbedder) -> None:
    path = tiny_package.save(tmp_path / "w")
    router = load_router(path, embedder=fake_embedder, use_soft_assignment=False, warm=False)
    assert router.policy.get_params()["assignment"] == "hard"
    knn_dir = tmp_path / "knn"
    package = load_weights(path)
    package.policy = KnnPolicy(k=3).fit(
        Inputs(embeddings=np.eye(4, 384, dtype=np.float32)), np.ones((4, 1)), np.ones((4, 1)),
        ["gpt-4-1106-preview"])
    package.save(knn_dir)
    with pytest.raises(InvalidInputError) as info:
        load_router(knn_dir, embedder=fake_embedder, use_soft_assignment=True, warm=False)
    assert info.value.field == "use_soft_assignment"
    assert 'no parameter(s) "assignment"' in str(info.value)


def test_weights_with_a_bad_parameter_are_refused(tiny_package: WeightsPackage,
                                                  tmp_path: Path) -> None:
    import json

    from switchpoint.errors import WeightsError

    path = tiny_package.save(tmp_path / "w")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["policy"]["params"]["temperature"] = -1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="temperature"):
        load_weights(path)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_an_unfitted_policy_asked_for_a_unit_says_it_is_not_fitted(name: str) -> None:
    policy = make_policy(name)
    with pytest.raises(NotFittedError, match="call fit"):
        policy.unit_estimate(0)
    if name in ("cluster", "knn"):  # (their units are what fitting found)
        with pytest.raises(NotFittedError, match="call fit"):
            _ = policy.n_units


@pytest.mark.parametrize("policy", ["cluster", "knn", "tiers", "fixed"])
@pytest.mark.parametrize("unit", [-1, 10**9, 1.0, True, "0", None])
def test_a_unit_a_fitted_policy_does_not_have_is_refused_naming_the_ids_it_has(
        policy: str, unit: object) -> None:
    fitted = load_weights(policy=policy).policy
    with pytest.raises(InvalidInputError, match=rf"\[0, {fitted.n_units - 1}\]") as info:
        fitted.unit_estimate(unit)  # type: ignore[arg-type]
    assert info.value.field == "unit_id"
    last = fitted.unit_estimate(fitted.n_units - 1)
    assert last.error.shape == (1, len(fitted.models_))
