"""What a policy swap and a config reload check and answer, whichever door asked.

:meth:`Gateway.swap_policy <switchpoint.gateway.engine.Gateway.swap_policy>` and
:meth:`Gateway.reload <switchpoint.gateway.engine.Gateway.reload>` (and through them ``POST
/v1/router/policy/{name}``, ``POST /v1/router/reload`` and ``SIGHUP`` to ``switchpoint
serve``) make a new snapshot live through :class:`~switchpoint.gateway.live.RouterState`; this
checks the policy a swap names, turns the input a load refuses into a :class:`ConfigError`,
and composes the answer: the new snapshot beside the one it replaced, and for a reload the
live keys the new config takes something from (also logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from switchpoint._args import expect
from switchpoint._messages import json_quoted, listed_names
from switchpoint.config import Settings
from switchpoint.errors import ConfigError, InvalidInputError, StoreError
from switchpoint.gateway.live import Live, policy_choices
from switchpoint.governance.keys import KeyRecord, KeyStore
from switchpoint.governance.reload_check import key_losses, losses_note, named

log = logging.getLogger("switchpoint.gateway")
Swap = tuple[Live, Live, float]


def check_policy(settings: Settings, name: object) -> None:
    """Refuse a swap to ``name`` unless it is a policy ``settings`` offers (a bundled one or
    one under ``policies:``), with :class:`InvalidInputError` naming ``name``."""
    expect("name", name, str, "a policy's name (a string)")
    choices = policy_choices(settings)
    if name not in choices:
        raise InvalidInputError("name", f"unknown policy {json_quoted(name, 80)}; choose one of "
                                        f"{listed_names(choices, quoted=True)} (or add it under "
                                        "policies: in the config)")


def config_checked(swap: Callable[[], Swap]) -> Swap:
    """Run ``swap``; input its load refuses (e.g. a catalog the new weights cannot serve) is
    a fault of the config, so a :class:`ConfigError` (over HTTP, a 400 ``invalid_config``),
    and leaves the old router serving."""
    try:
        return swap()
    except InvalidInputError as exc:
        raise ConfigError(exc.field, exc.reason) from None


def swap_answer(old: Live, new: Live, ms: float) -> dict[str, Any]:
    """A swap's answer: the policy, weights and models now live, those replaced, how long the
    load took, the settings that wait for a restart and the models the weights do not
    profile; no key is affected (a policy swap changes no config: a reload says which)."""
    return {"policy": new.policy, "weights_id": new.weights_id, "models": new.router.models,
            "previous_policy": old.policy, "previous_weights_id": old.weights_id,
            "load_ms": round(ms, 1), "restart_required": list(new.restart_required),
            **new.unprofiled_answer(), "keys_affected": [], "keys_affected_count": 0,
            "keys_note": None}


#: What a reload refused by a keys.db it cannot read tells the client.
NOT_RELOADED = "the config was not reloaded: the running one keeps serving"


def live_keys(keys: KeyStore) -> list[KeyRecord]:
    """The live keys of ``keys`` that :func:`reload_answer` weighs the new config against,
    read before a reload swaps anything: a keys.db that cannot be read (a damaged one) refuses
    the reload with the :class:`~switchpoint.errors.StoreError` naming the file and what
    mends it, saying that the running config keeps serving, and nothing is swapped."""
    try:
        return keys.list(include_revoked=False)
    except StoreError as exc:
        if not exc.damaged:  # (the client is told the database's words alone, as before)
            raise
        raise StoreError(str(exc), reason=f"{exc.reason}; {NOT_RELOADED}",
                         damaged=True) from None


def reload_answer(old: Live, new: Live, ms: float, keys: KeyStore,
                  held: list[KeyRecord]) -> dict[str, Any]:
    """A reload's answer: :func:`swap_answer` with the live keys (``held``, read by
    :func:`live_keys` before the swap) the new config leaves short of a tenant or a model
    they could use under the old one (the first of them named, how many in all, and a note
    in words, which is logged as a warning); then ``governance.max_keys`` is applied to
    ``keys`` (:func:`apply_max_keys`)."""
    losses = key_losses(held, old.settings.tenants, new.settings.tenants,
                        old.router.catalog.names, new.router.catalog.names, keys.now())
    note = losses_note(losses)
    if note is not None:
        log.warning("config reloaded: %s", note)
    apply_max_keys(keys, new.settings.governance.max_keys, when="config reloaded",
                   before=old.settings.governance.max_keys)
    return {**swap_answer(old, new, ms), "keys_affected": [x.to_dict() for x in named(losses)],
            "keys_affected_count": len(losses), "keys_note": note}


def apply_max_keys(keys: KeyStore, most: int, *, when: str, before: int | None = None,
                   start: bool = False) -> None:
    """``governance.max_keys`` (``most``) applied to keys.db at once, at a service's start or
    a reload (``when``: ``service started``, ``config reloaded``, which begins each line
    logged; ``before``: the bound before a reload): the records of the oldest ended keys
    (revoked or expired) past the newest ``most`` go, as the next key made would delete them
    (a live key never does), so a bound lowered while no service ran, or by a reload, holds
    from then on rather than until a key is made or a prune runs; logged, as is a file that
    refuses (the start or reload stands: the next key made, the hourly retention or
    ``switchpoint prune`` deletes them), unless it is damaged: a ``start`` is then refused with
    the :class:`~switchpoint.errors.StoreError` naming the file and what mends it, as an
    opening that finds it damaged is (every key's check would fail on it). More live keys
    than ``most`` stay, and a warning says that no key can be made until enough of them
    end. Where there is no keys.db, nothing is made."""
    try:  # (counted first: a start or reload with none past it writes nothing)
        pruned = keys.prune(None, most) if keys.prune(None, most, dry_run=True) else 0
        live = keys.live_count()
    except StoreError as exc:
        if exc.damaged and start:  # (nothing serves from the file yet)
            raise
        log.warning("%s: the records of ended keys past governance.max_keys (%d) could not be "
                    "deleted now (the next key made, or switchpoint prune, deletes them): %s",
                    when, most, exc)
        return
    if pruned:
        log.info("%s: governance.max_keys %s: deleted the records of %d ended (revoked or "
                 "expired) keys past the newest %d", when,
                 f"lowered from {before} to {most}" if before is not None and most < before
                 else f"is {most}", pruned, most)
    if live > most:
        log.warning("%s: %d keys are live (neither revoked nor expired), more than "
                    "governance.max_keys (%d) allows: they keep working, but no key can be made "
                    "until %d of them are revoked (switchpoint keys revoke ID, or DELETE "
                    "/v1/router/keys/ID) or expire", when, live, most, live - most + 1)
