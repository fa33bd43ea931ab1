"""Routing policies, one per file, all behind :class:`~switchpoint.policies.base.Policy`.

A new policy is one class registered here by name (imported only when it is used).
"""

from __future__ import annotations

import importlib
from typing import Any

from switchpoint._messages import json_quoted, one_of
from switchpoint.errors import InvalidInputError
from switchpoint.policies.base import (
    Estimates,
    Inputs,
    Policy,
    PolicyState,
    ProfileTable,
    check_param_names,
)
from switchpoint.policies.baselines import FixedPolicy, RandomPolicy
from switchpoint.policies.cluster import ClusterPolicy
from switchpoint.policies.knn import KnnPolicy

POLICIES: dict[str, str] = {
    "cluster": "switchpoint.policies.cluster:ClusterPolicy",
    "knn": "switchpoint.policies.knn:KnnPolicy",
    "tiers": "switchpoint.policies.tiers:TiersPolicy",
    "tfidf": "switchpoint.policies.tfidf:TfidfPolicy",
    "fixed": "switchpoint.policies.baselines:FixedPolicy",
    "random": "switchpoint.policies.baselines:RandomPolicy",
}

__all__ = [
    "POLICIES",
    "ClusterPolicy",
    "Estimates",
    "FixedPolicy",
    "Inputs",
    "KnnPolicy",
    "Policy",
    "PolicyState",
    "ProfileTable",
    "RandomPolicy",
    "make_policy",
    "policy_class",
    "policy_from_state",
]


def policy_class(name: str) -> type[Policy]:
    """The policy class registered under ``name``."""
    target = POLICIES.get(name) if isinstance(name, str) else None
    if target is None:
        raise InvalidInputError(
            "policy", f"unknown policy {json_quoted(name)}; choose one of "
                      f"{one_of(sorted(POLICIES))}")
    module, _, attr = target.partition(":")
    cls: type[Policy] = getattr(importlib.import_module(module), attr)
    return cls


def make_policy(name: str, **params: Any) -> Policy:
    """A new, unfitted policy by registered name, e.g. ``make_policy("knn", k=10)``."""
    cls = policy_class(name)
    check_param_names(cls, params)
    try:
        policy = cls(**params)
    except TypeError as exc:
        raise InvalidInputError("policy",
                                f"bad parameters for {json_quoted(name)}: {exc}") from None
    policy.validate_params()
    return policy


def policy_from_state(state: PolicyState) -> Policy:
    """Rebuild a fitted policy from its saved state (its parameters are validated first)."""
    cls = policy_class(state.name)
    cls(**state.params).validate_params()
    return cls.from_state(state)
