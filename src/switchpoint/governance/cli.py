"""``switchpoint keys ...`` and ``switchpoint report ...``: client keys and cost / SLA reports.

Both read the config (``--config``, else ``$SWITCHPOINT_CONFIG``) for the data directory, the
tenants, the catalog's prices and the SLAs, and work on the files in ``data_dir`` directly, so
they work with or without a running service (a running service sees key changes at once).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from switchpoint import _options
from switchpoint._lists import comma_items
from switchpoint._messages import (
    json_quoted,
    listed_names,
    people_number,
    printable,
    quoted_path,
)
from switchpoint.errors import InvalidInputError, StoreError


def _settings(args: argparse.Namespace) -> Any:
    """The config's settings (``--config``, else ``$SWITCHPOINT_CONFIG``; ``--data-dir``
    overrides its own), refused (:class:`StoreError`) when this process may not reach the files
    in ``data_dir``, saying whose it is and what to run. The admin token it may name need not
    be exported: it guards HTTP routes, which these commands do not serve."""
    from switchpoint._files import unreachable
    from switchpoint.config import COMMAND_LINE, load_settings

    settings = load_settings(args.config or os.environ.get("SWITCHPOINT_CONFIG") or None,
                             overrides={"data_dir": args.data_dir}, path_arg="--config",
                             overrides_from=COMMAND_LINE)
    problem = unreachable(Path(settings.data_dir))
    if problem is not None:  # (another user's data_dir: no file in it can even be looked for)
        raise StoreError(f"data_dir: {problem}")
    return settings


def _tenant_models(settings: Any, tenant: object) -> list[str] | None:
    """The models ``tenant`` may use, when its config lists them."""
    t = settings.tenants.get(tenant) if isinstance(tenant, str) else None
    return None if t is None or t.models is None else list(t.models)


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _print_json(value: Any) -> None:
    print(_json_text(value))


def _when(ts: float | None) -> str:
    """An instant as every table and message of the commands shows it (``-``: none)."""
    from switchpoint._times import when_text

    return "-" if ts is None else when_text(ts)


def _expires(ts: float | None, *, zone: bool = True) -> str:
    """When a key expires, as its creation reports it (``-``: never), wherever it is shown."""
    from switchpoint.governance.keys import expiry_text

    return "-" if ts is None else expiry_text(ts, zone=zone)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _usd(x: float | None, places: int = 6) -> str:
    """An amount of dollars as the commands show it (``-``: unknown), to at least ``places``
    decimal places (a report's :func:`~switchpoint.catalog.usd_places`)."""
    from switchpoint.catalog import usd_text

    return "-" if x is None else usd_text(x, places)


def _amounts(amounts: Sequence[float | None]) -> Callable[..., str]:
    """How one command's output shows its amounts of dollars: each of ``amounts`` (all it
    shows but those made from them by a division) to the places the widest needs
    (:func:`~switchpoint.catalog.usd_places`), and, given ``made=True``, an average or a
    projection rounded to those places (:func:`~switchpoint.catalog.usd_rounded`)."""
    from switchpoint.catalog import usd_places, usd_rounded

    places = usd_places(amounts)

    def shown(x: float | None, made: bool = False) -> str:
        return _usd(usd_rounded(x, places) if made and x is not None else x, places)

    return shown


def _pct(fraction: float) -> str:
    from switchpoint._numbers import percent_text

    return percent_text(fraction)


# keys ------------------------------------------------------------------------------------------


def _models(record: Any) -> str:
    """A key's models as its tables show them: the list, or its tenant's when it names none."""
    return ", ".join(record.models) if record.models else "(tenant's)"


def _store(settings: Any, *, create: bool = False, reads_only: bool = False) -> Any:
    """The key store in ``data_dir``. Only ``keys create`` makes one: the other commands find
    no keys where there is none (a mistyped --data-dir, say) and create nothing there.
    ``reads_only``: a command that only reads the keys, which reads a file it may not write."""
    from switchpoint.governance.keys import KeyStore

    store = KeyStore.in_dir(settings.data_dir, reads_only=reads_only)
    if not create and not store.path.is_file():
        return None
    return store


def _checked(store: Any, settings: Any) -> Any:
    """``store`` (keys.db, not yet open) set to be checked, as it opens, for being the file in
    use (:meth:`~switchpoint.governance.keys.KeyStore.check_in_use`: a file that lacks keys
    the log names since it was last in use, an older backup or an empty file put in place, is
    refused before anything is written, as a start refuses it). The rule of the ``keys``
    changes: those that can let a key in are checked, ``keys create`` (a new key, unless
    ``--new-keys-db`` goes on with the file on purpose), ``keys rotate`` (a new secret) and
    ``keys clock --reset`` (keys the later time had expired work again); each would also
    write the file's time, after which it passes for the file in use. ``keys revoke``, which
    only shuts a key out, never is: it is safe on any file, and it is how a revocation made
    since a backup is made again on it (which makes it the one in use, as it notes:
    :func:`_taken_in_use_note`)."""
    from functools import partial

    from switchpoint.governance.keys import logged_keys

    store.logged = partial(logged_keys, settings.db_path)
    return store


def existing_state(settings: Any, holds_none: str, *, keys_count: bool = False) -> None:
    """A ``data_dir`` that does not exist, or holds no store (a typo, say, or a folder no
    service has run on), is a mistake, not a place to make an empty state: the command says
    so and creates nothing. ``holds_none`` says what it would have held and where to point
    it (``no log to prune; point it at ...``). With ``keys_count``, a folder holding the key
    store is one too (keys made before the service first logged: the reports speak of their
    budgets, and prune deletes the ended ones), and one holding neither file says so."""
    from switchpoint.governance.keys import KEYS_FILENAME

    data_dir = Path(settings.data_dir)
    if not data_dir.is_dir():
        raise InvalidInputError("data_dir", f"{quoted_path(data_dir)} does not exist, so it "
                                            f"holds {holds_none}")
    if keys_count and _store(settings) is not None:
        return
    if not Path(settings.db_path).is_file():
        log = Path(settings.db_path).name
        held = (f"neither {log} nor {KEYS_FILENAME} (no service has logged there, and no key "
                "was made there)" if keys_count else f"no {log} (no service has logged there)")
        raise InvalidInputError("data_dir", f"{quoted_path(data_dir)} holds {held}, so it "
                                            f"holds {holds_none}")


def _no_store(settings: Any, key_id: str) -> InvalidInputError:
    from switchpoint.governance.keys import KEYS_FILENAME, check_key_id

    check_key_id(key_id)  # (a whole key given as the id is refused without repeating it)
    return InvalidInputError("id", f"no key has the id {json_quoted(key_id)}: "
                                   f"{quoted_path(settings.data_dir)} holds no {KEYS_FILENAME} "
                                   "(check --data-dir / the config's data_dir)")


def _budget_list(items: Sequence[str] | None) -> list[str]:
    """The budgets of ``--budget`` (repeatable), each a comma-separated list
    (:func:`~switchpoint._lists.comma_items`: an empty item refused naming its place). Each
    is then held to the rule of a budget by :meth:`KeySpec.checked`."""
    budgets = []
    for item in items or []:
        try:
            budgets += comma_items(item, "budget", _BUDGETS_EXAMPLE)
        except ValueError as exc:
            raise InvalidInputError("budget", str(exc)) from None
    return budgets


def _model_list(value: str | None) -> list[str] | None:
    """``--models`` as the key's list, comma-separated
    (:func:`~switchpoint._lists.comma_items`: the spaces around each name dropped, an empty
    item refused naming its place, as a blank entry of the API's list is). Each name is then
    held to the rule of a model's name by :meth:`KeySpec.checked`."""
    if value is None:
        return None
    try:
        return comma_items(value, "model name", _MODELS_EXAMPLE,
                           ", or leave --models out to allow the tenant's")
    except ValueError as exc:
        raise InvalidInputError("models", str(exc)) from None


_BUDGETS_EXAMPLE = "50/month,5/day"
_MODELS_EXAMPLE = "gpt-4o-mini,auto"


def cmd_keys_create(args: argparse.Namespace) -> int:
    from switchpoint.gateway.registered_offline import catalog_names
    from switchpoint.governance.keys import KeySpec, expiry_text
    from switchpoint.learning.events import check_tenant

    check_tenant(args.tenant, "--tenant")
    budgets, models = _budget_list(args.budget), _model_list(args.models)  # (before the state)
    settings = _settings(args)
    if settings.source_path is None and not settings.tenants:
        raise InvalidInputError(
            "--tenant", f"unknown tenant {json_quoted(args.tenant)}: no config file was given, "
            "so no tenant is configured; give the service's config with --config FILE (or "
            "$SWITCHPOINT_CONFIG): its tenants: name the key's tenant, and its data_dir is "
            "where the service looks keys up")
    cost_weight = args.cost_weight
    catalog = catalog_names(settings)  # (the config's models and those registered at run time)
    spec = KeySpec(tenant=args.tenant, name=args.name, budgets=budgets, rpm=args.rpm,
                   tpm=args.tpm, models=models, cost_weight=cost_weight,
                   expires=args.expires).checked(
        list(settings.tenants), catalog, tenant_models=_tenant_models(settings, args.tenant))
    store = _store(settings, create=True)
    if not args.new_keys_db:  # (the log is read before keys.db opens: see KeyStore.logged)
        _checked(store, settings)
    out = _HandOut("made", json_output=args.json)
    with store:
        issued = out.kept(lambda: store.create(spec, max_live=settings.governance.max_keys,
                                               deliver=out))
        ahead = store.ahead_note() if issued.record.expires_at else ""
    if args.json:
        return 0
    r = issued.record
    print(f"key id {r.id}, tenant {r.tenant}"
          + (f", budgets {', '.join(r.budgets)}" if r.budgets else "")
          + (f", rpm {r.rpm}" if r.rpm else "") + (f", tpm {r.tpm}" if r.tpm else "")
          + (f", models {', '.join(r.models)}" if r.models else "")
          + (f", expires {expiry_text(r.expires_at)}{ahead}" if r.expires_at else ""),
          file=sys.stderr)
    print("the key is shown this once; only its hash is stored", file=sys.stderr)
    return 0


def _past_max_keys_note(settings: Any, store: Any) -> str | None:
    """What to say when ``store`` (keys.db, open) keeps the records of more ended keys than
    ``governance.max_keys`` (lowered since, with no key made, no start or reload of the
    service and no prune after): how many and what deletes them. None when it keeps none past
    it."""
    from switchpoint.governance.keys import KEYS_FILENAME

    if store is None or not store.path.is_file():
        return None
    most = settings.governance.max_keys
    past = store.prune(None, most, dry_run=True)
    if not past:
        return None
    return (f"note: {KEYS_FILENAME} keeps the records of {past:,} ended (revoked or expired) "
            f"keys past the newest {most:,} that governance.max_keys keeps (it was lowered "
            "since they ended); the next key made, the service's next start, a reload of "
            "the service, its hourly "
            "retention (with store.retention_days) or switchpoint prune deletes them, and "
            "their spend is then reported under their ids as (pruned)")


def _known_tenants(settings: Any) -> Collection[str] | None:
    """The configured tenants a key's may be gone from, or None when there is no config to
    tell (no file given and no tenants)."""
    if settings.source_path is None and not settings.tenants:
        return None
    return list(settings.tenants)


def _tenant_gone_note(settings: Any, records: Sequence[Any], now: float) -> str | None:
    """What to say of the live keys among ``records`` whose tenant the config no longer
    names (a reload removed it): listed active, they are refused by the gateway. None when
    there is none, or no config to tell (no file given and no tenants)."""
    tenants = _known_tenants(settings)
    if tenants is None:
        return None
    gone = [r for r in records if r.status(now) == "active" and r.tenant_gone(tenants)]
    if not gone:
        return None
    shown = listed_names(f"{r.id} ({printable(r.tenant)})" for r in gone)
    return (f"note: {len(gone):,} active key(s) belong to a tenant the config no longer "
            f"names, so the gateway refuses them: {shown}; add the tenant back under "
            "tenants: (and reload the service), or revoke them (switchpoint keys revoke ID)")


def cmd_keys_list(args: argparse.Namespace) -> int:
    if args.tenant is not None:
        from switchpoint.learning.events import check_tenant

        check_tenant(args.tenant, "--tenant")
    settings = _settings(args)
    store = _store(settings, reads_only=True)
    now = 0.0  # (no keys to judge)
    if store is None:
        records = []
    else:
        with store:
            records = store.list(args.tenant, include_revoked=args.all)
            now = store.now()
            past = _past_max_keys_note(settings, store)
        if past is not None:
            print(past, file=sys.stderr)
        gone = _tenant_gone_note(settings, records, now)
        if gone is not None:
            print(gone, file=sys.stderr)
    if args.tenant is not None and not records:
        # A tenant the gateway does not know (a misspelling) is refused, not "no keys".
        from switchpoint.governance.reports import Reports

        unknown = Reports.from_settings(settings).unknown_tenant(args.tenant, "--tenant")
        if unknown is not None:
            raise InvalidInputError("--tenant", unknown)
    if args.json:
        _print_json([r.to_dict(now, _known_tenants(settings)) for r in records])
        return 0
    if not records:
        print("no keys" + (f" for tenant {args.tenant}" if args.tenant else "")
              + (f": {printable(str(settings.data_dir))} holds no key store" if store is None
                 else ""))
        return 0
    rows = [[r.id, r.tenant, printable(r.name or ""), r.status(now), ", ".join(r.budgets) or "-",
             r.rpm or "-", r.tpm or "-", _models(r),
             _when(r.created_at), _expires(r.expires_at, zone=False)] for r in records]
    print(_table(["id", "tenant", "name", "status", "budgets", "rpm", "tpm", "models",
                  "created (UTC)", "expires (UTC)"], rows))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(settings)  # (never refused for not being the file in use: see _checked)
    if store is None:
        raise _no_store(settings, args.id)
    taken = _taken_in_use_note(store, settings)  # (read before the revocation writes its time)
    with store:
        record = store.revoke(args.id)
    if taken is not None:
        print(taken, file=sys.stderr)
    if args.json:
        _print_json(record.to_dict(store.now()))
    else:
        print(f"revoked key {record.id} (tenant {record.tenant})")
    return 0


def _taken_in_use_note(store: Any, settings: Any) -> str | None:
    """What ``keys revoke`` says of a ``store`` (keys.db, not yet open) that the check of the
    other ``keys`` changes would refuse (:func:`_checked`: not the file last in use, an older
    backup or an empty file put in place): the revocation goes on, as it must on a backup
    restored on purpose, and makes it the file in use (its time written, it passes the check
    from then on), which the note says, with how to undo that. None for the file in use, or
    where the log cannot be read (the revocation is not held up for it)."""
    from switchpoint.governance.keys import KEYS_FILENAME, logged_keys

    def logged(**kwargs: Any) -> Sequence[str]:
        try:
            return logged_keys(settings.db_path, **kwargs)
        except StoreError:
            return []

    try:
        store.check_in_use(logged, "revoke")
    except StoreError:
        return (f"note: {quoted_path(store.path)} lacks keys the request log names in requests "
                "logged after it was last in use (an older backup, or an empty file, put in "
                f"place); it is now taken as the {KEYS_FILENAME} in use (those keys stay "
                f"unknown: 401); to undo, restore the newest backup of {KEYS_FILENAME} (and "
                "revoke the key there again)")
    return None


def _grace(text: str) -> float:
    """``keys rotate --grace``, an ``argparse`` type: a grace as a rotation reads one
    (:func:`~switchpoint.governance.keys.duration_s`), refused as every option's value is."""
    from switchpoint.governance.keys import duration_s

    try:
        return duration_s(text, "--grace")
    except InvalidInputError as exc:  # (its reason quotes the value as JSON, then says why)
        raise argparse.ArgumentTypeError(exc.reason) from None


class _HandOut:
    """A new secret's way out (a key made, or rotated): given to the key store as its
    ``deliver`` (:data:`~switchpoint.governance.keys.Deliver`), it prints the secret (or the
    JSON holding it) and flushes stdout before the store commits the change, so a command
    whose output cannot be written (a closed pipe, a full disk) leaves no secret that works
    and that nobody was shown: the change is rolled back, and the key's secrets work as
    before. A rotation is kept beside keys.db before its secret is printed (see
    :meth:`~switchpoint.governance.keys.KeyStore.rotate`): a command killed after that
    leaves it to the next opening of keys.db, which makes it."""

    def __init__(self, what: str, *, json_output: bool) -> None:
        self.what = what  # ("made", "rotated": what the change does to the key)
        self.json_output = json_output
        self.shown = False

    def __call__(self, issued: Any, now: float) -> None:
        text = _json_text(issued.to_dict(now)) if self.json_output else issued.key
        try:
            if sys.stdout is None:  # (the command started with its stdout closed)
                raise OSError(errno.EBADF, "it is closed")
            print(text)
            sys.stdout.flush()
        except Exception as exc:  # (the CLI's stdout raises its own error for an OSError)
            reason = getattr(exc, "error", exc)
            reason = getattr(reason, "strerror", None) or reason
            from switchpoint.cli import CliError

            raise CliError(f"could not write the new secret to stdout ({reason}), so the key "
                           f"was not {self.what}: nothing changed"
                           + (", and its secrets work as before" if self.what == "rotated"
                              else "") + "; run the command again with stdout writable"
                           ) from None
        self.shown = True

    def kept(self, change: Callable[[], Any]) -> Any:
        """``change`` (the store's, given this as ``deliver``); a store that then fails to
        keep it says that the secret printed does not work (unless the rotation stands, which
        the store's error says)."""
        try:
            return change()
        except StoreError as exc:
            from switchpoint.governance.keys import RotationKeptError

            if not self.shown or isinstance(exc, RotationKeptError):
                raise
            raise StoreError(f"{exc}; the secret printed above was not kept and does not work "
                             f"(the key was not {self.what})", reason=exc.reason) from None


def _configured_tenants(settings: Any) -> list[str]:
    """The tenants a key rotated by the command may belong to: the config's (none given, a
    rotation is refused as ``keys create`` is, saying to give it)."""
    if settings.source_path is None and not settings.tenants:
        raise InvalidInputError(
            "--config", "no config file was given, so no tenant is configured and no key's "
            "tenant can be checked; give the service's config with --config FILE (or "
            "$SWITCHPOINT_CONFIG)")
    return list(settings.tenants)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    grace: float = args.grace if args.grace is not None else 0.0
    store = _store(settings)
    if store is None:
        raise _no_store(settings, args.id)
    _checked(store, settings)
    tenants = _configured_tenants(settings)
    out = _HandOut("rotated", json_output=args.json)
    with store:
        issued = out.kept(lambda: store.rotate(args.id, grace, tenants=tenants, deliver=out))
    now = store.now()
    if args.json:
        return 0
    earlier = [until for _, until, _ in issued.record.older_secrets if until > now]
    print(f"key {issued.record.id} has a new secret; the old one "
          + (f"works until {_when(issued.record.previous_valid_until)} UTC" if grace
             else "no longer works")
          + (f"; {len(earlier)} earlier secret(s) still work, until "
             f"{', '.join(_when(until) + ' UTC' for until in earlier)}" if earlier else ""),
          file=sys.stderr)
    return 0


def _expiring(records: Sequence[Any], start: float, end: float) -> list[str]:
    """The ids of the keys that expire after ``start`` and by ``end``: expired at the later
    time, working at the earlier."""
    return [r.id for r in records if r.expires_at is not None and start < r.expires_at <= end]


def cmd_keys_clock(args: argparse.Namespace) -> int:
    """The time keys are judged at (the latest the key store has seen) beside this machine's
    clock; ``--reset`` sets it back to the clock, with no service on the data directory."""
    from switchpoint.gateway.owner import lock_while_stopped

    settings = _settings(args)
    store = _store(settings, reads_only=not args.reset)
    if store is None:
        if args.json:
            _print_json({"latest": None, "was": None, "revived": []} if args.reset else
                        {"latest": None, "clock": time.time(), "ahead_s": 0.0})
        else:
            print(f"no keys: {printable(str(settings.data_dir))} holds no key store")
        return 0
    clock = float(store.clock())
    if not args.reset:
        with store:
            latest = store.now()
            records = store.list(include_revoked=False)
        ahead = latest - clock
        if args.json:
            _print_json({"latest": latest, "clock": clock, "ahead_s": max(ahead, 0.0)})
        elif ahead < 60:
            print(f"keys are judged at this machine's clock ({_when(clock)} UTC)")
        else:
            held = _expiring(records, clock, latest)
            print(f"keys are judged at {_when(latest)} UTC, the latest time the key store has "
                  f"seen, {ahead / 3600:.1f} h ahead of this machine's clock ({_when(clock)} UTC)"
                  + (f"; {len(held)} key(s) expired by it would work by the clock: "
                     f"{', '.join(held)}" if held else "")
                  + ". If the clock was once set ahead by mistake, stop the service and run "
                  "`switchpoint keys clock --reset`")
        return 0
    # A running service keeps the later time in memory and would write it back: not beside it.
    lock = lock_while_stopped(settings.data_dir, (
        "keeping the later time in its memory, where a reset written here would not reach (it "
        "would write that time back): stop it, reset, then start it again"))
    try:
        with _checked(store, settings):
            before = store.reset_clock()
            after = store.now()
            revived = _expiring(store.list(include_revoked=False), after, before)
    finally:
        lock.release()
    if args.json:
        _print_json({"latest": after, "was": before, "revived": revived})
    else:
        print(f"the key store's time is {_when(after)} UTC, the clock's (it was "
              f"{_when(before)} UTC)" + (f"; {len(revived)} key(s) it had judged expired work "
                                         f"again until their expiry: {', '.join(revived)}"
                                         if revived else ""))
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from switchpoint.governance.reports import Reports

    settings = _settings(args)
    store = _store(settings, reads_only=True)
    if store is None:
        raise _no_store(settings, args.id)
    with store:
        record = store.find(args.id)
    reports = Reports.from_settings(settings)
    from switchpoint.governance.budgets import parse_budgets
    from switchpoint.governance.ledger import key_account

    statuses = [reports.ledger.status(key_account(record.id), b)
                for b in parse_budgets(list(record.budgets), stored=True)]
    out = {**record.to_dict(store.now(), _known_tenants(settings)), "budget_status": statuses}
    gone = _tenant_gone_note(settings, [record], store.now())
    if gone is not None:
        print(gone, file=sys.stderr)
    if args.json:
        _print_json(out)
        return 0
    shown = {**out, "models": _models(record)}
    for name in ("id", "tenant", "name", "status", "rpm", "tpm", "models", "cost_weight"):
        print(f"{name:<12} {printable(str(shown[name])) if shown[name] is not None else '-'}")
    print(f"{'created':<12} {_when(record.created_at)} UTC")
    print(f"{'expires':<12} {_expires(record.expires_at)}")
    usd = _amounts([x for s in statuses for x in (s["spent_usd"], s["held_usd"])])
    for s in statuses:
        # (a budget of 0 allows no spend after a reset either, and a key's budgets are kept
        # as it was made: rotate keeps them)
        state = (f"{_pct(s['used_fraction'])} used, resets {_when(s['resets_at'])} UTC"
                 if s["limit_usd"] > 0 else "allows no spend in any period (for a key "
                 "that may spend, create one with a larger budget and revoke this one)")
        print(f"budget       {s['budget']}: spent {usd(s['spent_usd'])}, held "
              f"{usd(s['held_usd'])}, {state}")
    return 0


# report ----------------------------------------------------------------------------------------


def _reports(args: argparse.Namespace, *, routing: bool = False) -> Any:
    """What reads the logs in ``data_dir``. Every report is of what was logged, so a
    ``data_dir`` that does not exist or holds no log (a typo, say) is an error, not a report
    of nothing (:func:`existing_state`)."""
    from switchpoint.gateway.registered_offline import served_settings
    from switchpoint.governance.reports import Reports

    settings = _settings(args)
    existing_state(settings, "no log to report on; point it at the data_dir of the service "
                             "whose requests to report", keys_count=True)
    # (priced as the service prices them: its models registered at run time too)
    catalog = served_settings(settings).catalog()
    if routing and (catalog is None or not catalog.all_priced):
        from switchpoint.router import load_router

        router = load_router(settings.weights, catalog=catalog, policy=settings.policy,
                             warm=False, cost_weight=settings.cost_weight)
        reports = Reports.from_settings(settings, catalog=router.catalog,
                                        cost_scale=router.cost_scale)
    else:
        reports = Reports.from_settings(settings, catalog=catalog)
    unknown = reports.unknown_tenant(getattr(args, "tenant", None), "--tenant")
    if unknown is not None:
        raise InvalidInputError("--tenant", unknown)
    return reports


def cmd_report_cost(args: argparse.Namespace) -> int:
    reports = _reports(args)
    report = reports.cost_report(args.period, tenant=args.tenant,
                                 comparison_model=args.comparison_model)
    past = None
    if reports.keys is not None and reports.keys.path.is_file():
        with reports.keys:
            past = _past_max_keys_note(reports.settings, reports.keys)
    if past is not None:
        print(past, file=sys.stderr)
    if args.json:
        _print_json(report)
        return 0
    # Every amount of the report to the same places, the most one of them needs; the average,
    # a quotient whose further digits are the division's, to those places too (unless that
    # made it read as zero).
    s = report["savings"]
    usd = _amounts([report["total_cost_usd"], s["comparison_cost_usd"], s["savings_usd"],
                    *(v["cost_usd"] for key in ("by_model", "by_tenant", "by_key")
                      for v in report[key].values())])
    print(f"Cost over the last {args.period} ({_when(report['since'])} to "
          f"{_when(report['until'])} UTC): {report['requests']} requests, "
          f"{report['answered']} answered, {usd(report['total_cost_usd'])} "
          + (f"(avg {usd(report['avg_cost_per_request_usd'], made=True)} per answered "
             "request of known "
             "cost)" if report["answered"] > report["cost_unknown_requests"]
             else "(no answered request of known cost to average)"))
    if report["cost_unknown_requests"]:
        print(f"not counted: {report['cost_unknown_requests']} answered requests of unknown "
              "cost (a model without prices, or no usage reported)")
    for title, key in (("model", "by_model"), ("tenant", "by_tenant"), ("key", "by_key")):
        table = report[key]
        if not table:
            continue
        print()
        pruned = set(report["pruned_keys"]) if key == "by_key" else set()
        rows = [[name + (" (pruned)" if name in pruned else ""), v["requests"],
                 usd(v["cost_usd"]), v["cost_unknown_requests"]]
                for name, v in table.items()]
        print(_table([f"by {title}", "requests", "cost", "cost unknown"], rows))
    if s["comparison_model"] and not s["requests"]:
        print()
        print(f"Against {s['comparison_model']} ({s['basis']}): no priced request to compare")
    elif s["comparison_model"]:
        print()
        print(f"Against {s['comparison_model']} ({s['basis']}) on the same tokens: "
              f"{usd(s['comparison_cost_usd'])}; routing saved {usd(s['savings_usd'])} "
              f"({_pct(s['savings_pct'])}) over {s['requests']} priced requests")
    return 0


def cmd_report_sla(args: argparse.Namespace) -> int:
    report = _reports(args).get_sla_report(args.since_hours, tenant=args.tenant)
    if args.json:
        _print_json(report)
        return 0
    from switchpoint._times import latency_text

    total = report["total_requests"]
    # The JSON's rate over no request is 1.0 (nothing breached); said here as what it is.
    print(f"SLA over the last {args.since_hours:g} h: "
          + (f"{total} requests, compliance {_pct(report['compliance_rate'])}" if total
             else "no requests in the window, so no compliance to report"))
    b = report["breaches"]
    usd = _amounts([report["cost_savings_usd"]])
    print(f"breaches: latency {b['latency']}, cost {b['cost']}, quality {b['quality']}; "
          f"adjustments {report['adjustments_made']} (saved {usd(report['cost_savings_usd'])})")
    latency = report["avg_latency_ms"]
    if latency is not None:
        print(f"average latency {latency_text(latency)}")
    if report["budget_utilization"] is not None:
        print(f"hourly budget used: {_pct(report['budget_utilization'])}")
    if report["sla"] is None:
        print("(no SLA configured: add sla: to the config)")
    return 0


def cmd_report_forecast(args: argparse.Namespace) -> int:
    reports = _reports(args)
    report = reports.forecast_cost(args.requests_per_hour, args.avg_input_tokens,
                                   args.avg_output_tokens, tenant=args.tenant)
    if args.json:
        _print_json(report)
        return 0
    print(f"{args.requests_per_hour:g} requests/hour of {args.avg_input_tokens:g} in / "
          f"{args.avg_output_tokens:g} out tokens, mix from the {report['mix_basis']}:")
    if report["hourly_cost_usd"] is None:  # (no model of the mix priced: said below)
        print("hourly, daily and monthly spend unknown")
    else:
        print(f"hourly {_usd(report['hourly_cost_usd'])}, daily "
              f"{_usd(report['daily_cost_usd'])}, monthly (30 d) "
              f"{_usd(report['monthly_cost_usd'])}")
    # The not-counted lines say why a share has no cost and the fix, with the command's
    # words; with no model of the mix priced the tip, which then says the same, is left out.
    unpriced = report["unpriced_models"]
    if unpriced and reports.catalog is None:
        print("not counted: every request, since no catalog was given and so no model has a "
              "price; pass --config with the service's config (its models:, with "
              "input_per_mtok and output_per_mtok)")
    elif unpriced:
        print(f"not counted: {report['unpriced_requests_pct']:.1%} of the requests go to "
              f"{listed_names(unpriced, quoted=True)}, which the catalog does not price (cost "
              f"unknown: give {'it' if len(unpriced) == 1 else 'them'} input_per_mtok and "
              "output_per_mtok)")
    removed = report["removed_models"]
    if removed:
        one = len(removed) == 1
        print(f"not counted: {report['removed_requests_pct']:.1%} of the requests went to "
              f"{listed_names(removed, quoted=True)}, which {'is' if one else 'are'} no longer "
              f"in the catalog ({'its' if one else 'their'} share will go to the models there are)")
    print()
    rows = [[m, f"{v['requests_pct']:.1%}", _usd(v["cost_per_request_usd"]),
             _usd(v["hourly_cost_usd"])] for m, v in report["breakdown_by_model"].items()]
    print(_table(["model", "share", "per request", "per hour"], rows))
    if report["hourly_cost_usd"] is not None:
        print()
        print(f"tip: {report['optimization_tip']}")
    return 0


def cmd_report_suggest(args: argparse.Namespace) -> int:
    reports = _reports(args, routing=True)
    report = reports.suggestion_report(period=args.period, tenant=args.tenant)
    items = report["data"]
    if args.json:
        _print_json(items)
        return 0
    if report["note"] is not None:
        print(f"no suggestion: {report['note']}")
        return 0
    for i, item in enumerate(items, start=1):
        print(f"{i}. {item['suggestion']}")
        print(f"   saves about {_usd(item['estimated_savings_usd_per_day'])}/day; "
              f"{item['tradeoff']}")
    return 0


def cmd_report_alert(args: argparse.Namespace) -> int:
    from switchpoint.governance.budgets import amount_text, describe_seconds
    from switchpoint.governance.reports import MIN_RATE_WINDOW

    reports = _reports(args)
    try:
        report = reports.check_budget_alert(args.tenant)
    finally:  # (the key store it read keys' budgets from: closed, it leaves no side file)
        reports.keys.close()
    if args.json:
        _print_json(report)
        return 0
    print(f"status: {report['status'].upper()}")
    budget = report["budget_usd"]
    # The amounts spent and held to the places the widest needs; a projection, a rate over a
    # window times the hour or the period, rounded to them. (A budget is shown as written.)
    usd = _amounts([report["hourly_spend_usd"],
                    *(x for b in report["budgets"] for x in (b["spent_usd"], b["held_usd"]))])
    print(f"this hour: {usd(report['hourly_spend_usd'])} spent, projected "
          f"{usd(report['projected_hourly_usd'], made=True)}"
          + (f" against a budget of ${amount_text(budget)}/hour" if budget is not None
             else ""))
    if report["projection_low_confidence"] or any(b["projection_low_confidence"]
                                                  for b in report["budgets"]):
        floor = describe_seconds(MIN_RATE_WINDOW)
        print(f"(low confidence: the logs began less than {floor} ago; a projection takes "
              f"what they hold as the spend of the last {floor})")
    if report["hourly_cost_unknown_requests"]:
        print(f"not counted: {report['hourly_cost_unknown_requests']} answered requests of "
              "unknown cost this hour (a model without prices, or no usage reported)")
    if report["budgets"]:
        print()
        # (a budget of 0 allows no spend after it resets either: its reset frees nothing)
        rows = [[b["account"], b["budget"], usd(b["spent_usd"]), usd(b["held_usd"]),
                 _pct(b["utilization"]), usd(b["projected_usd"], made=True), b["status"],
                 b["resets_in"] if b["limit_usd"] > 0 else "never allows spend"]
                for b in report["budgets"]]
        print(_table(["account", "budget", "spent", "held", "used", "projected", "status",
                      "resets in"], rows))
    print()
    print(report["recommendation"])
    return 0


# Parser ----------------------------------------------------------------------------------------


TENANT_HELP = "only this tenant's requests (default: every tenant's)"
KEY_ID_HELP = "the key's id: the 10 characters after sp- (never the whole key)"
#: Where every command that reads or writes the state finds it when --data-dir is left out, as
#: the config's loading resolves it (the variable overrides the file).
DATA_DIR_HELP = ("where the state lives (default: $SWITCHPOINT_DATA_DIR, else the config's "
                 "data_dir, else ./data)")


def _common(p: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
    p.add_argument("--config", type=_options.CONFIG,
                   help="YAML config (default: $SWITCHPOINT_CONFIG)")
    data_dir = p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=func)
    _options.fills(p, data_dir=data_dir)


def add_commands(sub: Any) -> None:
    """Register ``keys`` and ``report`` on the main parser's subcommands."""
    # From _limits, not the reports and settings that enforce them: those import the config.
    from switchpoint._limits import (
        MAX_REQUESTS_PER_HOUR,
        MAX_RPM,
        MAX_SINCE_HOURS,
        MAX_TPM,
        SINCE_HOURS,
    )
    from switchpoint.catalog import MAX_TOKENS
    from switchpoint.decision import MAX_COST_WEIGHT

    keys = sub.add_parser("keys", help="client keys: create, list, show, revoke, rotate, clock")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    p = ks.add_parser("create", help="make a key for a tenant (printed once)")
    tenant = p.add_argument("--tenant", required=True,
                            help="the tenant the key belongs to (a name under tenants: in the "
                                 "config)")
    name = p.add_argument("--name", help="a label for the key, shown in lists; a label only: "
                                         "two keys may share one, and every command and route "
                                         "addresses a key by its id")
    budget = p.add_argument("--budget", action="append", metavar="AMOUNT/PERIOD",
                            help="e.g. 50/month (USD; hour, day, week, month; repeatable)")
    rpm = p.add_argument("--rpm", type=_options.COUNT,
                         help=f"requests per minute, from 1 to {MAX_RPM:,} (default: none of "
                              "its own: its tenant's applies)")
    tpm = p.add_argument("--tpm", type=_options.COUNT,
                         help=f"tokens per minute, from 1 to {MAX_TPM:,} (default: none of "
                              "its own: its tenant's applies)")
    models = p.add_argument("--models",
                            help="comma-separated models the key may use (\"auto\": routing)")
    cost_weight = p.add_argument("--cost-weight", type=_options.COST_WEIGHT,
                                 help="the key's default λ, from 0 to "
                                      f"{people_number(MAX_COST_WEIGHT)} (default: its tenant's)")
    expires = p.add_argument("--expires", help="the last day the key works, an ISO date "
                                               "(2027-01-31: it expires as that day ends, UTC), "
                                               "an exact date-time (2027-01-31T12:00:00Z), a "
                                               "duration (30d), or epoch seconds (1800000000 "
                                               "or 1.8e9)")
    p.add_argument("--new-keys-db", action="store_true",
                   help="make a new, empty keys.db though the request log names keys made in "
                        "one now missing, or make the key in the keys.db there though it lacks "
                        "keys the request log names (an older backup: it is the one in use "
                        "from then on; those keys then stay unknown: 401); restore the "
                        "missing one, or the newest backup, instead where there is one")
    _common(p, cmd_keys_create)
    _options.fills(p, tenant=tenant, name=name, budget=budget, rpm=rpm, tpm=tpm, models=models,
                   cost_weight=cost_weight, expires=expires)
    p = ks.add_parser("list", help="list keys (never a secret)")
    tenant = p.add_argument("--tenant", help="only this tenant's keys")
    p.add_argument("--all", action="store_true", default=True, help=argparse.SUPPRESS)
    p.add_argument("--active", dest="all", action="store_false", help="hide revoked keys")
    _common(p, cmd_keys_list)
    _options.fills(p, tenant=tenant)
    p = ks.add_parser("show", help="one key and its budgets' state")
    p.add_argument("id", help=KEY_ID_HELP)
    _common(p, cmd_keys_show)
    p = ks.add_parser("revoke", help="revoke a key at once")
    p.add_argument("id", help=KEY_ID_HELP)
    _common(p, cmd_keys_revoke)
    p = ks.add_parser("rotate", help="a new secret for a key (same id, budgets and limits)")
    p.add_argument("id", help=KEY_ID_HELP)
    p.add_argument("--grace", type=_grace,
                   help="how long the old secret keeps working, from 0 to 30d, e.g. 1h "
                        "(default 0)")
    _common(p, cmd_keys_rotate)
    p = ks.add_parser("clock", help="the time keys are judged at (the latest the key store has "
                                    "seen) beside the clock")
    p.add_argument("--reset", action="store_true",
                   help="set it back to the clock (after a clock set far ahead by mistake); "
                        "stop the service first")
    _common(p, cmd_keys_clock)

    report = sub.add_parser("report", help="cost, SLA, forecast, suggestions, budget alert "
                                           "from the request log")
    rs = report.add_subparsers(dest="report_command", required=True)
    p = rs.add_parser("cost", help="requests and cost by model, tenant and key; savings")
    p.add_argument("--period", choices=["day", "week", "month"], default="day",
                   help="the last 24 h, 7 d or 30 d (default: day)")
    tenant = p.add_argument("--tenant", help=TENANT_HELP)
    comparison_model = p.add_argument("--comparison-model",
                                      help="default: the strongest model of the pool")
    _common(p, cmd_report_cost)
    _options.fills(p, tenant=tenant, comparison_model=comparison_model)
    p = rs.add_parser("sla", help="SLA compliance, breaches and adjustments")
    since_hours = p.add_argument("--since-hours", default=1.0,
                                 type=_options.number_option(SINCE_HOURS, "24", 0.0,
                                                             MAX_SINCE_HOURS, above_low=True),
                                 help=f"the requests of the last this many hours: {SINCE_HOURS} "
                                      "(default: 1)")
    tenant = p.add_argument("--tenant", help=TENANT_HELP)
    _common(p, cmd_report_sla)
    _options.fills(p, tenant=tenant, since_hours=since_hours)
    p = rs.add_parser("forecast", help="projected spend over the logged routing mix")
    requests_per_hour = p.add_argument("--requests-per-hour", type=_options.NUMBER,
                                       required=True,
                                       help="the traffic to price, in requests per hour (0 to "
                                            f"{MAX_REQUESTS_PER_HOUR:,.0f})")
    avg_input_tokens = p.add_argument("--avg-input-tokens", type=_options.NUMBER, required=True,
                                      help="prompt tokens of an average request (0 to "
                                           f"{MAX_TOKENS:,})")
    avg_output_tokens = p.add_argument("--avg-output-tokens", type=_options.NUMBER,
                                       required=True,
                                       help="answer tokens of an average request (0 to "
                                            f"{MAX_TOKENS:,})")
    tenant = p.add_argument("--tenant", help=TENANT_HELP)
    _common(p, cmd_report_forecast)
    _options.fills(p, tenant=tenant, requests_per_hour=requests_per_hour,
                   avg_input_tokens=avg_input_tokens, avg_output_tokens=avg_output_tokens)
    p = rs.add_parser("suggest", help="cost optimisations from re-routing the logged traffic")
    p.add_argument("--period", choices=["day", "week", "month"], default="week",
                   help="re-route the last 24 h, 7 d or 30 d (default: week)")
    tenant = p.add_argument("--tenant", help=TENANT_HELP)
    _common(p, cmd_report_suggest)
    _options.fills(p, tenant=tenant)
    p = rs.add_parser("alert", help="budget alert: ok / warning / critical")
    tenant = p.add_argument("--tenant", help="judge by this tenant's SLA and budgets (default: the "
                                             "deployment's)")
    _common(p, cmd_report_alert)
    _options.fills(p, tenant=tenant)
