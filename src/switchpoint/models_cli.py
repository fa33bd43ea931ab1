"""``switchpoint models``: the config's models and those registered at run time, and one of
those unregistered while the service is stopped.

``models list`` lists the config's models, then those ``data_dir`` keeps as registered at run
time (``POST /v1/router/models``), each with its provider, tier, prices, when it was
registered and whether the weights have a learned profile of it; one a service on that config
would not serve (the config lists a model of its name, or lists no models, or does not allow
the link-local or metadata host it names, or its row no longer reads as a model under this
switchpoint) is listed flagged, saying why. It only reads,
so it works beside a running service too, and leaves a stopped one's ``data_dir`` as it was.

``models unregister NAME`` unregisters one as ``DELETE /v1/router/models/{name}`` does, with
the same refusals (see :mod:`switchpoint.gateway.registered_offline`), with no service on
``data_dir``: it takes the directory's lock while it writes, and is refused while a service
holds it, since that service serves the model from its memory. It also removes a row that no
longer reads as a model, which a service skips.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchpoint._messages import json_quoted, printable, quoted_path
from switchpoint.errors import ConfigError, InvalidInputError, WeightsError
from switchpoint.governance.cli import _common, _settings, _store, _table, _when, existing_state

if TYPE_CHECKING:
    from switchpoint.config import Settings
    from switchpoint.governance.keys import KeyRecord


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _profiles(settings: Settings) -> tuple[list[str] | None, str | None]:
    """The models the configured weights have a learned profile of, or None and why when
    they cannot be read. With a catalog that a start's check of them passes (every model
    profiled or priced: :func:`~switchpoint.catalog.uncosted`), read from their manifest
    alone (no array, no NumPy, no embedder); else loaded and checked as a start does, which
    says what is wrong."""
    from switchpoint.catalog import uncosted
    from switchpoint.weights import manifest_models, weights_source

    if settings.catalog() is not None:
        listed = manifest_models(*weights_source(settings)[:2])
        if listed is not None and not uncosted([m.card() for m in settings.models or []],
                                               listed):
            return listed, None
    from switchpoint.gateway.live import checked_package

    try:
        return checked_package(settings).models, None
    except (WeightsError, ConfigError, InvalidInputError) as exc:
        return None, (f"the weights could not be read ({exc}), so whether they profile each "
                      "model is not known")


def _price(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def cmd_models_list(args: argparse.Namespace) -> int:
    from switchpoint._redact import redact
    from switchpoint.gateway.ab_tests import start_clash
    from switchpoint.gateway.registered_models import kept_models, serving_held
    from switchpoint.gateway.registered_offline import listed_models
    from switchpoint.store.learning import LearningReader

    settings = _settings(args)
    existing_state(settings, "no model registered at run time; point it at the data_dir of "
                             "the service that registered them")
    reader = LearningReader(settings.db_path)
    try:
        # (one naming a metadata host the config does not allow is kept and not served, as
        # a service holds it: listed as such, not as a row that does not read as a model)
        # (as a service enforces them: without those unregistered since a backup restored,
        # which the reader leaves out)
        kept = kept_models(reader, metadata_hosts=True)
        # (without a config file, what a service would serve is unknown: nothing to judge)
        clash = None if settings.source_path is None else start_clash(settings, reader)
    finally:
        reader.close()
    notes = []
    if settings.source_path is None:
        unjudged = serving_held(settings).model_copy(update={"models": []})
        rows = listed_models(unjudged, kept, None)
        notes.append("no config was given (--config, or $SWITCHPOINT_CONFIG): its models are "
                     "not listed, and what a service would serve is not judged")
    else:
        profiles, unknown = _profiles(settings)
        rows = listed_models(settings, kept, profiles)
        if unknown is not None:
            notes.append(unknown)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no model is in the config, and none was registered at run time")
    else:
        print(_table(["name", "status", "provider", "tier", "input $/Mtok", "output $/Mtok",
                      "registered (UTC)", "profiled"],
                     [[printable(r["name"]), r["status"], r["provider"] or "-",
                       r["tier"] or "-", _price(r["input_per_mtok"]),
                       _price(r["output_per_mtok"]), _when(r["registered_at"]),
                       {True: "yes", False: "no", None: "-"}[r["profiled"]]] for r in rows]))
    for row in rows:
        if row["problem"] is not None:
            print(f"note: model {printable(json_quoted(row['name'], 100))}: "
                  f"{printable(row['problem'])}", file=sys.stderr)
    if clash is not None:
        print(f"note: a service on {quoted_path(settings.source_path)} would not start: "
              f"{redact(str(clash))}", file=sys.stderr)
    for note in notes:
        print(f"note: {redact(note)}", file=sys.stderr)
    return 0


def _keys(settings: Settings) -> tuple[list[KeyRecord], float]:
    """The client keys ``data_dir`` holds, not revoked, and the time they are judged at."""
    store = _store(settings, reads_only=True)
    if store is None:
        return [], 0.0
    with store:
        return store.list(include_revoked=False), store.now()


def cmd_models_unregister(args: argparse.Namespace) -> int:
    from switchpoint.gateway.owner import lock_while_stopped
    from switchpoint.gateway.registered_models import deletion_path
    from switchpoint.gateway.registered_offline import check_unregistrable, unregister_kept
    from switchpoint.store import SQLiteStore
    from switchpoint.store.learning import LearningReader

    name = str(args.name)
    settings = _settings(args)
    if settings.source_path is None:
        raise InvalidInputError("config", "no config file was given; give the service's "
                                          "config with --config FILE (or $SWITCHPOINT_CONFIG), "
                                          "against which what still names the model (its "
                                          "keys, experiments and models) is judged")
    existing_state(settings, f"no model {json_quoted(name, 100)} to unregister; point it at "
                             "the data_dir of the service that registered it")
    records, now = _keys(settings)
    reader = LearningReader(settings.db_path)
    try:  # refused before anything is locked or opened: a refusal changes nothing
        check_unregistrable(reader, settings, name, records, now)
    finally:
        reader.close()
    lock = lock_while_stopped(settings.data_dir, (
        f"serving model {json_quoted(name, 100)} from its memory, where a removal written "
        f"here would not reach: unregister it through the service, DELETE {deletion_path(name)} "
        "(an admin route; Gateway.unregister_model in a Python program), or stop it and run "
        "this again"))
    try:
        records, now = _keys(settings)  # (as they are now the lock is held)
        store = SQLiteStore(settings.db_path, synchronous=settings.store.synchronous,
                            logs=False)
        with store.open(serving=True):  # (this process holds the lock, as a service does)
            unregister_kept(store, settings, name, records, now)
    finally:
        lock.release()
    if args.json:
        _print_json({"id": name, "object": "model", "deleted": True})
        return 0
    print(f"unregistered model {printable(name)}: a service started on "
          f"{quoted_path(Path(settings.data_dir))} no longer serves it")
    return 0


def add_commands(sub: Any) -> None:
    """Register ``models`` on the main parser's subcommands."""
    from switchpoint import _options

    models = sub.add_parser("models", help="the config's models and those registered at run "
                                           "time: list them, or unregister one while the "
                                           "service is stopped")
    ms = models.add_subparsers(dest="models_command", required=True)
    p = ms.add_parser("list", help="each model of the config and each registered at run time: "
                                   "provider, tier, prices, when registered, whether the "
                                   "weights profile it, and one not served flagged")
    _common(p, cmd_models_list)
    p = ms.add_parser("unregister", help="unregister a model registered at run time, with the "
                                         "service stopped")
    name = p.add_argument("name", metavar="NAME", help="the model's name")
    _common(p, cmd_models_unregister)
    _options.fills(p, name=name)


__all__ = ["add_commands"]
