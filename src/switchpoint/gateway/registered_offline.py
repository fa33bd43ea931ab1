"""The models registered at run time as a stopped service's ``data_dir`` keeps them, for the
command line (``switchpoint models list``, ``switchpoint models unregister NAME``): listed
beside the config's, and one unregistered with the gateway's own refusals
(:mod:`switchpoint.gateway.registered_models`) while no gateway runs on it.

A gateway holds its registered models in memory, so a removal written beside a running one
would not reach it: the caller holds ``data_dir``'s lock while it writes (see
:mod:`switchpoint.gateway.owner`). A row that no longer reads as a model under this
switchpoint (the rules changed since), which a gateway skips at its start, is listed flagged,
and unregistered here too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchpoint.config import ModelEntry, Settings
from switchpoint.errors import ConfigError
from switchpoint.gateway.ab_tests import running_kept, started
from switchpoint.gateway.kept import written
from switchpoint.gateway.registered_models import (
    KeptModel,
    check_no_key_names,
    held_out,
    held_out_words,
    kept_models,
    not_registered,
    serving_held,
    still_named,
    with_registered,
)
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import LearningReader, RuntimeModelRemoval
from switchpoint.store.removals import MODEL, Removal, make_again

if TYPE_CHECKING:
    from switchpoint.governance.keys import KeyRecord

#: What a row of ``models list`` says of each model (its ``status``).
CONFIG, REGISTERED, SHADOWED, NOT_SERVED, UNREADABLE = (
    "config", "registered", "shadowed", "not served", "unreadable")


def listed_models(settings: Settings, kept: Sequence[KeptModel],
                  profiles: Iterable[str] | None) -> list[dict[str, Any]]:
    """The config's models (``settings``), then those registered at run time (``kept``, in
    the order they were registered), as ``switchpoint models list`` shows them: name,
    ``status`` (``config``; ``registered``; ``shadowed``, the config listing a model of its
    name, which wins; ``not served``, the config listing no models, or one naming a link-local
    or metadata host while its ``gateway.allow_registered_metadata_hosts`` is false, which a
    service keeps but does not serve (see :func:`held_out`; ``kept`` read with them allowed);
    ``unreadable``, a row that no longer reads as a model), provider, tier, prices,
    ``registered_at``, whether the weights have a learned profile of it (``profiled``; None
    when ``profiles`` is unknown) and ``problem``, what keeps one registered from being
    served."""
    known = None if profiles is None else set(profiles)
    config = [m for m in settings.models or [] if m.registered_at is None]
    names = {m.name for m in config}
    held = dict((entry.name, problem) for entry, problem in
                held_out(settings, [m.entry for m in kept if m.entry is not None]))
    out = [_row(m, CONFIG, known) for m in config]
    for model in kept:
        if model.entry is None:
            out.append({"name": model.name, "status": UNREADABLE, "provider": None,
                        "tier": None, "input_per_mtok": None, "output_per_mtok": None,
                        "registered_at": model.registered_at, "profiled": None,
                        "problem": f"no longer reads as a model ({model.problem}), so it is not "
                                   "served; unregister it and register it again as this "
                                   "switchpoint reads models"})
        elif settings.models is None:
            out.append(_row(model.entry, NOT_SERVED, known,
                            "the config lists no models: (the weights' own profiles are "
                            "routed), so no registered model is served"))
        elif model.name in names:
            out.append(_row(model.entry, SHADOWED, known,
                            "the config lists a model of its name, which is served; a start "
                            "drops this one"))
        elif model.name in held:
            out.append(_row(model.entry, NOT_SERVED, known,
                            held_out_words(model.name, held[model.name])))
        else:
            out.append(_row(model.entry, REGISTERED, known))
    return out


def _row(entry: ModelEntry, status: str, profiles: set[str] | None,
         problem: str | None = None) -> dict[str, Any]:
    return {"name": entry.name, "status": status, "provider": entry.provider,
            "tier": entry.tier, "input_per_mtok": entry.input_per_mtok,
            "output_per_mtok": entry.output_per_mtok, "registered_at": entry.registered_at,
            "profiled": None if profiles is None else (entry.profile or entry.name) in profiles,
            "problem": problem}


def served_settings(settings: Settings) -> Settings:
    """``settings`` as a service started on them serves them: the config's models, then those
    its ``data_dir`` keeps as registered at run time (each that reads as a model, merged as a
    start merges them; one unregistered since a backup of the store was restored left out, as
    the store's reader reads them: see
    :meth:`~switchpoint.store.learning.LearningReader.runtime_models`). ``settings`` as they
    are when the config lists no models (the weights' own profiles are routed) or no store
    is there. What a command judging models against a service's catalog reads: the check of
    ``keys create --models``, the reports' prices."""
    if settings.models is None or not Path(settings.db_path).is_file():
        return settings
    reader = LearningReader(settings.db_path)
    try:
        gateway = settings.gateway
        kept = kept_models(reader, metadata_hosts=gateway.allow_registered_metadata_hosts,
                           nat64=gateway.nat64_networks)
    finally:
        reader.close()
    return with_registered(settings, [m.entry for m in kept if m.entry is not None],
                           check=False)


def catalog_names(settings: Settings) -> list[str] | None:
    """The names of the models a service started on ``settings`` serves (see
    :func:`served_settings`), or None when the config lists no models (the weights' own
    profiles are routed): what ``keys create --models`` checks model names against, as the
    service's own routes do."""
    if settings.models is None:
        return None
    return [m.name for m in served_settings(settings).models or []]


def check_unregistrable(reader: LearningReader, settings: Settings, name: str,
                        keys: Sequence[KeyRecord], now: float) -> None:
    """Refuse unregistering ``name`` from the store ``reader`` reads as
    :meth:`RuntimeModels.unregister <switchpoint.gateway.registered_models.RuntimeModels.
    unregister>` refuses it in a gateway started on ``settings`` there: a model of the config,
    one not registered, one a live one of ``keys`` (judged at ``now``), a running run-time
    experiment's arm or another registered model's fallbacks names. A row that no longer reads
    as a model is not served, so nothing served names it: it may go. When a gateway on
    ``settings`` would not start as things are, a removal is refused only when what is left
    breaks a rule the start did not already break. One kept not served for naming a
    link-local or metadata host the config does not allow (see :func:`held_out`) is a model
    all the same, served again once the setting is true: it is judged as a gateway serving
    it judges it (what still names it would lose it then), never as a row that does not read
    as a model."""
    kept = kept_models(reader, metadata_hosts=True)  # (as a gateway reads them)
    held = {entry.name for entry, _ in held_out(settings, [m.entry for m in kept
                                                           if m.entry is not None])}
    if name in held:
        settings, held = serving_held(settings), set()
    served = [m.entry for m in kept if m.entry is not None and m.name not in held]
    config = {m.name for m in settings.models or [] if m.registered_at is None}
    # (a gateway drops at its start one the config lists: it is the config's then)
    removable = [m.name for m in kept
                 if m.entry is None or settings.models is None or m.name not in config]
    if name not in removable:
        raise not_registered(name, settings, removable)
    if any(m.name == name and m.entry is None for m in kept):
        return
    rest = [m for m in served if m.name != name]
    # (the catalog a start would serve, merged by the one rule a start merges by)
    catalog = [m.name for m in with_registered(settings, served, check=False).models or []]
    check_no_key_names(name, keys, settings.tenants, catalog, now)
    try:
        running = running_kept(reader)
        start = started(settings, served, running)
    except ConfigError as before:  # (it would not start: is the removal's the new fault?)
        try:
            started(settings, rest, running_kept(reader))
        except ConfigError as after:
            if after.key != before.key:
                raise still_named(name, after) from None
        return
    try:  # what a gateway checks: its live settings with the others alone
        with_registered(start, rest)
    except ConfigError as exc:
        raise still_named(name, exc) from None


def unregister_kept(store: SQLiteStore, settings: Settings, name: str,
                    keys: Sequence[KeyRecord], now: float) -> None:
    """Unregister ``name`` in ``store`` while no gateway runs on it (the caller holds
    ``data_dir``'s lock) as a gateway does: its row goes, kept beside the store too (see
    :mod:`switchpoint.store.removals`, whose removals a restored backup lacks are made again
    first, as a start makes them). Refused as :func:`check_unregistrable` refuses it, and
    then nothing changes."""
    make_again(store)
    reader = LearningReader(store.path, store.gone)
    try:
        check_unregistrable(reader, settings, name, keys, now)
        made = next(row.created for row in reader.runtime_models() if row.name == name)
    finally:
        reader.close()
    written(store, RuntimeModelRemoval(name), "the model's removal", "it is still registered",
            removal=Removal(MODEL, name, made, time.time()))


__all__ = ["catalog_names", "check_unregistrable", "listed_models", "served_settings",
           "unregister_kept"]
