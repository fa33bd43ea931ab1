"""Routing policies, one per file, all behind :class:`~switchpoint.policies.base.Policy`.

A built-in policy is one class listed here by name (imported only when it is used). A policy
of your own is one class too, registered by name with :func:`register_policy` in the process
that uses it, or, for the command line and the service, by an entry point of its package in
the ``switchpoint.policies`` group (loaded when its name is first asked for).
"""

from __future__ import annotations

import copy
import importlib
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from switchpoint._lazy import names_on_use
from switchpoint._messages import cut, got, json_quoted, one_of
from switchpoint._names import NAME, NAME_RULE
from switchpoint.errors import InvalidInputError

if TYPE_CHECKING:
    from switchpoint.policies.base import (
        Estimates,
        Inputs,
        Policy,
        PolicyState,
        ProfileTable,
    )
    from switchpoint.policies.baselines import FixedPolicy, RandomPolicy
    from switchpoint.policies.cluster import ClusterPolicy
    from switchpoint.policies.knn import KnnPolicy

# The classes load on use (and NumPy with them): the command line's parser reads the names
# below to list the policies, and every command builds it.
_LAZY = {"Estimates": "base", "Inputs": "base", "Policy": "base", "PolicyState": "base",
         "ProfileTable": "base", "FixedPolicy": "baselines", "RandomPolicy": "baselines",
         "ClusterPolicy": "cluster", "KnnPolicy": "knn"}
__getattr__ = names_on_use(__name__, _LAZY)

POLICIES: dict[str, str] = {
    "cluster": "switchpoint.policies.cluster:ClusterPolicy",
    "knn": "switchpoint.policies.knn:KnnPolicy",
    "tiers": "switchpoint.policies.tiers:TiersPolicy",
    "tfidf": "switchpoint.policies.tfidf:TfidfPolicy",
    "fixed": "switchpoint.policies.baselines:FixedPolicy",
    "random": "switchpoint.policies.baselines:RandomPolicy",
}

#: The group of the entry points that name policies of other packages, each as
#: ``name = "package.module:Class"``.
ENTRY_POINT_GROUP = "switchpoint.policies"
#: The most policies :func:`register_policy` (and the entry points looked up) hold.
MAX_REGISTERED = 100

_registered: dict[str, type[Policy]] = {}
_registering = threading.Lock()
_P = TypeVar("_P", bound="type[Policy]")

__all__ = [
    "ENTRY_POINT_GROUP",
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
    "new_policy",
    "policy_class",
    "policy_from_state",
    "policy_names",
    "register_policy",
]


def register_policy(cls: _P) -> _P:
    """Register the policy class ``cls`` under its ``name``, so that ``fit``, ``evaluate``,
    ``make_policy`` and loading a weights package find it by that name; returns ``cls``, so
    it serves as a class decorator. The name follows the rule for names the config gives
    (:data:`~switchpoint._names.NAME_RULE`), and may not be a built-in policy's or another
    class's; registering the same class again changes nothing. A class that is no
    :class:`Policy`, or that lacks what a policy must define, is refused, naming it."""
    from switchpoint.policies.base import Policy, check_policy_class

    if not isinstance(cls, type) or not issubclass(cls, Policy):
        raise InvalidInputError("policy", f"must be a class that subclasses "
                                          f"switchpoint.policies.Policy{got(cls)}")
    check_policy_class(cls)
    name = cls.name
    if NAME.fullmatch(name) is None:
        raise InvalidInputError("policy", f"{cls.__name__}.name is {json_quoted(name)}; a "
                                          f"policy's name is {NAME_RULE}")
    if name in POLICIES:
        raise InvalidInputError("policy", f"{json_quoted(name)} is the name of a built-in "
                                          f"policy; give {cls.__name__} a name of its own")
    with _registering:
        held = _registered.get(name)
        if held is not None and _same_class(held, cls):
            _registered[name] = cls
            return cls
        if held is not None:
            raise InvalidInputError("policy", f"{json_quoted(name)} is already registered, to "
                                              f"{held.__module__}.{held.__qualname__}; give "
                                              f"{cls.__name__} another name")
        if len(_registered) >= MAX_REGISTERED:
            raise InvalidInputError("policy", f"{MAX_REGISTERED} policies are registered "
                                              "already, the most a process holds")
        _registered[name] = cls
    return cls


def _same_class(one: type[Policy], other: type[Policy]) -> bool:
    """Whether two classes are one class's definitions (as a module run again defines it)."""
    return (one.__module__, one.__qualname__) == (other.__module__, other.__qualname__)


def policy_names() -> list[str]:
    """The names of the policies there are: the built-in ones, those registered in this
    process and those the installed packages' entry points name."""
    found = [e.name for e in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys([*POLICIES, *_registered, *found]))


def policy_class(name: str) -> type[Policy]:
    """The policy class registered under ``name``: a built-in one, one registered with
    :func:`register_policy`, or one an installed package's entry point names."""
    from switchpoint.policies.base import Policy

    target = POLICIES.get(name) if isinstance(name, str) else None
    if target is not None:
        module, _, attr = target.partition(":")
        cls: type[Policy] = getattr(importlib.import_module(module), attr)
        return cls
    held = _registered.get(name) if isinstance(name, str) else None
    if held is not None:
        return held
    found = (entry_points(group=ENTRY_POINT_GROUP, name=name)
             if isinstance(name, str) and NAME.fullmatch(name) else ())
    for point in found:
        where = (f"the entry point {json_quoted(name)} of the group {ENTRY_POINT_GROUP} names "
                 f"{cut(point.value, 200)}")
        try:
            loaded = point.load()
        except Exception as exc:  # (the package's own code, which may raise anything)
            raise InvalidInputError("policy", f"{where}, which cannot be loaded "
                                              f"({type(exc).__name__}: {cut(str(exc), 300)}); "
                                              "fix or reinstall the package that declares it"
                                    ) from None
        if not isinstance(loaded, type) or not issubclass(loaded, Policy) or getattr(
                loaded, "name", None) != name:
            raise InvalidInputError("policy", f"{where}, which is no policy class whose name "
                                              f"is {json_quoted(name)}")
        try:
            return register_policy(loaded)
        except TypeError as exc:  # (a class that lacks what a policy defines)
            raise InvalidInputError("policy", f"{where}: {exc}") from None
    raise InvalidInputError(
        "policy", f"unknown policy {json_quoted(name)}; choose one of "
                  f"{one_of(sorted(policy_names()))} (a policy of your own is registered "
                  "in the process that uses it with switchpoint.policies.register_policy, or "
                  f"for the command line and the service by an entry point in the group "
                  f"{ENTRY_POINT_GROUP} of the package it lives in)")


def make_policy(name: str, **params: Any) -> Policy:
    """A new, unfitted policy by registered name, e.g. ``make_policy("knn", k=10)``."""
    from switchpoint.policies.base import check_param_names

    cls = policy_class(name)
    check_param_names(cls, params)
    try:
        policy = cls(**params)
    except TypeError as exc:
        raise InvalidInputError("policy",
                                f"bad parameters for {json_quoted(name)}: {exc}") from None
    policy.validate_params()
    return policy


def new_policy(policy: str | Policy, params: Mapping[str, Any] | None = None, *,
               field: str = "policy") -> Policy:
    """A new, unfitted policy to fit, from what a caller gives as its ``policy``: a registered
    name with its ``params`` (:func:`make_policy`), or an unfitted :class:`Policy` instance
    carrying its hyper-parameters, as a scikit-learn estimator is given (``KnnPolicy(k=20)``).
    An instance is copied as scikit-learn's ``clone`` copies one: a new object of its class
    made from its parameters (each copied), so fitting the copy leaves the caller's as it was.
    Refused, naming ``field``: a fitted instance, parameters given beside an instance (they
    belong in its constructor), and anything that is neither a name nor a policy."""
    from switchpoint.policies.base import Policy

    if isinstance(policy, str):
        return make_policy(policy, **(params or {}))
    if isinstance(policy, type) and issubclass(policy, Policy):
        raise InvalidInputError(field, f"is the class {policy.__name__}; give an instance of "
                                       f"it, carrying its parameters: {policy.__name__}(...)")
    if not isinstance(policy, Policy):
        raise InvalidInputError(field, f"must be a policy's name ({one_of(policy_names())}) "
                                       "or an unfitted Policy instance such as "
                                       f"KnnPolicy(k=20), got {type(policy).__name__}")
    if hasattr(policy, "models_"):
        raise InvalidInputError(field, f"{type(policy).__name__} is fitted already (on "
                                       f"{len(policy.models_)} models); give an unfitted one "
                                       f"(such as {type(policy).__name__}(**policy."
                                       "get_params())) or its name: fitting starts from its "
                                       "hyper-parameters, never from what it learned")
    if params:
        raise InvalidInputError(next(iter(params)), (
            f"is a parameter given beside the instance {type(policy).__name__}, which carries "
            f"its own; give it to the constructor ({type(policy).__name__}("
            f"{next(iter(params))}=...)), or name the policy ({json_quoted(policy.name)}) "
            "with its parameters"))
    fresh = type(policy)(**copy.deepcopy(policy.get_params()))
    fresh.validate_params()
    return fresh


def policy_from_state(state: PolicyState) -> Policy:
    """Rebuild a fitted policy from its saved state (its parameters are validated first)."""
    cls = policy_class(state.name)
    cls(**state.params).validate_params()
    return cls.from_state(state)
