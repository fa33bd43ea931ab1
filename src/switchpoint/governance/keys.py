"""Client keys ("virtual keys"): made at run time, shown once, stored hashed, revocable, expiring.

A key looks like ``sp-3f9a1c0b7e_<43 random characters>``: the ``sp-`` prefix, a 10-character
id that is not secret (it names the key in logs, reports and the admin API) and 256 random bits.
Only the SHA-256 of the whole key is stored; a presented key is looked up by its id and its hash
compared in constant time. Each key belongs to a tenant of the config and may narrow what the
tenant allows: its own budgets, RPM/TPM limits, models and default λ.

Rotation gives the key a new secret under the same id (so its spend, limits and log history
carry on); the old secret keeps working for ``grace_s`` seconds (0: not at all). Each old secret
keeps its own grace: rotating again does not cut short an earlier secret's. A key remembers its
last :data:`MAX_OLD_SECRETS` old secrets (those whose grace is over are forgotten first, then
the oldest). Revocation is immediate and final. Neither is undone by restoring an older backup
of keys.db: both are kept in :data:`REVOCATIONS_FILENAME` beside it too, and made again.

A revoked or expired key's record stays until it ended longer ago than the retention
(:meth:`KeyStore.prune`, run by ``switchpoint prune`` and the service's hourly retention), and
making a key first deletes the oldest ended keys' records past the newest ``max_keys`` of them,
so the file holds at most twice ``governance.max_keys`` records. A live key is never deleted.

Keys live in ``keys.db`` in ``data_dir`` (SQLite, file mode 0600), apart from the request log:
the CLI edits it while the service runs, and the service notices each change (SQLite's
``data_version``) before its next lookup, without polling.

Expiry (and the end of an old secret's grace) is judged against the latest time the store has
ever seen, not the clock alone (:meth:`KeyStore.now`): a clock set back (an NTP step, an
operator's mistake) brings no expired key back. That time is kept in ``keys.db``, written when
it has moved on by :data:`CLOCK_STEP_S` (on a thread of its own: a lookup never waits for the
disk), when the store closes, and whenever a key is refused for a time the file does not yet
hold (the refusal answered once the file holds it), so it survives a restart, a crash included.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from datetime import time as dt_time
from pathlib import Path
from typing import Any

from switchpoint._files import (
    check_database_writable,
    database_identity,
    database_stamp,
    file_identity,
    private_dir,
    private_file,
)
from switchpoint._messages import (
    cut,
    got,
    invalid_at,
    json_quoted,
    listed_names,
    people_number,
    quoted_path,
    too_long,
    unprintable,
)
from switchpoint._numbers import (
    NOT_FINITE_TEXT,
    TOO_SMALL,
    negative_text,
    not_finite_text,
    number_text,
    too_small,
)
from switchpoint._times import LATEST
from switchpoint.catalog import MAX_CATALOG_MODELS, model_name_problem
from switchpoint.errors import (
    ConflictError,
    InvalidInputError,
    InvalidKeyError,
    KeyExpiredError,
    KeyRevokedError,
    NotFoundError,
    StoreError,
)
from switchpoint.governance.budgets import parse_budgets
from switchpoint.governance.clock_writer import ClockWriter
from switchpoint.governance.settings import DEFAULT_MAX_KEYS, MAX_RPM, MAX_TPM, MOST_MAX_KEYS
from switchpoint.learning.events import check_tenant
from switchpoint.store.errors import store_error
from switchpoint.store.line_journal import LineJournal, kept_time, line_of, not_kept_remedy
from switchpoint.store.logs import DEFAULT_PAGE, MAX_PAGE
from switchpoint.store.moved import (
    Files,
    close_moved,
    forget_log_owner,
    how_it_left,
    opened_for_writing,
    remove_stale_side_files,
)
from switchpoint.store.reading import MAX_UPGRADE_COPY_BYTES, read_only, read_upgraded
from switchpoint.store.schema import upgrade_schema, wal_mode

log = logging.getLogger("switchpoint.governance")
KEYS_FILENAME = "keys.db"
#: How a refusal to make keys.db again (see :meth:`KeyStore.missing`) says to make a new,
#: empty one on purpose: once, by the command that makes keys, never by a start's flag (a
#: flag kept in a service's unit would make the next lost keys.db again, unsaid).
START_OVER = ("; or, to start over without them (every key made in it then stays unknown: "
              "401), make a new keys.db with `switchpoint keys create --new-keys-db "
              "--tenant NAME`")
#: How a refusal of a keys.db that lacks keys the request log names (see
#: :meth:`KeyStore.open`) says to go on with it on purpose: by the command that makes keys,
#: which takes the file as the one in use from then on (see :data:`IN_USE_SLACK_S`).
GO_ON = ("; or, to go on with this one without them (each then stays unknown: 401), make a "
         "key in it with `switchpoint keys create --new-keys-db --tenant NAME`")
#: How long after the latest time keys.db holds (see :meth:`KeyStore.now`: written within
#: :data:`CLOCK_STEP_S` of each lookup, and as it closes) a request the log names a key of is
#: taken to have been checked against another file. A key a file pruned ended before the prune,
#: so its requests were logged before the file's latest time; one named in a request logged
#: later that the file does not hold was never in it (an older backup restored, an empty file
#: put in place). The margin covers what may come between a key's last check and the file's
#: latest time or its request's: the clock writes a crash lost (up to two steps of
#: :data:`CLOCK_STEP_S`: the one under way and the one before it), and the reading of the
#: request's body (a request is logged at the time it is planned, after its key was checked
#: and its body read: 30 s by default, server.body_timeout_s), so that a key revoked and pruned
#: while one of its requests came in never counts; no more, as a key made and used within the
#: margin after a backup was taken goes unseen. (Within one machine's clock: the log and the
#: key store take their times from the same clock, and the store's time never lags it.)
IN_USE_SLACK_S = 300.0
#: The most key ids of the log's later requests an opening checks the file for.
_MOST_CHECKED = 100
#: The file beside keys.db that keeps every revocation (the key's id and when) and every
#: rotation (the key's id, when, the hashes of its new and old secrets, never a secret, and the
#: end of the old one's grace), appended and synced before the change is committed to keys.db:
#: a keys.db restored from a backup taken before a revocation holds the key live again, and
#: before a rotation takes the old (perhaps leaked) secret again; its next opening for writing
#: (a start, any ``switchpoint keys`` command that changes it) makes those changes again,
#: saying so (see :meth:`KeyStore.open`). A backup of keys.db does not hold it, nor does a
#: restore of keys.db bring an older one back.
REVOCATIONS_FILENAME = "keys.revocations.jsonl"
#: Most bytes :data:`REVOCATIONS_FILENAME` grows to (some 60,000 revocations, 20,000
#: rotations); past it the older half of its lines is let go (those keys' records were pruned
#: long since, most likely), the newer half written to a new file renamed in its place.
MAX_REVOCATIONS_BYTES = 4 * 1024 * 1024
PREFIX = "sp-"
ID_CHARS = 10
#: The longest a key's name (a note of whose it is) may be.
MAX_KEY_NAME = 200
#: Where a key's name is shown: no log line shows it (each names a key by its id).
NAME_SHOWN = ("`switchpoint keys list` and `keys show`, the admin API's answers of a key and a "
              "reload's keys_affected")
_KEY = re.compile(r"sp-([0-9a-f]{10})_([A-Za-z0-9_-]{43})")
_ID = re.compile(r"[0-9a-f]{10}")
# A key list's next_cursor: where the page ended, in the order keys were made.
_CURSOR = "seq-"
_CURSOR_FORM = re.compile(r"seq-(0|[1-9][0-9]{0,18})")
# A duration: a number (a negative one too, told so rather than as no duration) and its unit.
# (ASCII digits: a digit of another script, which ``float()`` reads, is not taken for one.)
_RELATIVE = re.compile(r"\s*([-+]?[0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d|w)\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The longest a rotated key's old secret may keep working (seconds): 30 days.
MAX_GRACE_S = 30 * 86400
# The latest expiry a key may have: the last second of 9999 (UTC), the last a date can show.
MAX_EXPIRY = LATEST
# The shortest life a key may be given (seconds): a key that expires sooner would be dead by
# the time it is handed over.
MIN_LIFETIME_S = 60.0
SCHEMA_VERSION = 5
# How far the store's latest time gets ahead of the one in keys.db before it is written (it is
# also written on close, and when a key is refused for a time the file does not yet hold).
CLOCK_STEP_S = 60.0
# How long a write waits for another connection's (the CLI's) write lock, in ms.
_BUSY_MS = 5000
# The store's latest time into the file, never moving the file's back.
_SAVE_CLOCK = ("INSERT INTO clock (id, latest) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET "
               "latest = CASE WHEN typeof(latest) IN ('integer', 'real') THEN "
               "max(latest, excluded.latest) ELSE excluded.latest END")
# The store's time set to the clock (even back), the time it held kept as the time the file
# was in use until (never moving that back). Arguments: the clock, the time it held.
_RESET_CLOCK = ("INSERT INTO clock (id, latest, in_use_until) VALUES (1, ?, ?) ON CONFLICT (id) "
                "DO UPDATE SET latest = excluded.latest, in_use_until = CASE WHEN "
                "typeof(in_use_until) IN ('integer', 'real') THEN max(in_use_until, "
                "excluded.in_use_until) ELSE excluded.in_use_until END")
# The most old secrets a key remembers (the one replaced last included).
MAX_OLD_SECRETS = 4
# The latest time the keys of a file recorded (made, rotated, revoked): where the store's time
# starts in a file that holds none (of an older schema, or its clock row edited away).
_KEYS_LATEST = ("SELECT coalesce(max(max(created_at, coalesce(rotated_at, 0), "
                "coalesce(revoked_at, 0))), 0) FROM keys")
_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    rotated_at REAL,
    previous_hash TEXT,
    previous_valid_until REAL,
    budgets TEXT NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    models TEXT,
    cost_weight REAL
);
CREATE INDEX keys_tenant ON keys (tenant);
""",
    # The order keys were made in, whatever the clock said then (a clock set back made a
    # later key look older, and a page went on past it): the key list pages by it. Keys made
    # before are numbered in the order they were stored.
    2: """
ALTER TABLE keys ADD COLUMN seq INTEGER;
UPDATE keys SET seq = rowid;
CREATE UNIQUE INDEX keys_seq ON keys (seq);
""",
    # The old secrets before the one replaced last (previous_hash), each with the end of its
    # own grace: a second rotation cut the first one's short.
    3: """
ALTER TABLE keys ADD COLUMN older_secrets TEXT;
""",
    # The latest time the store has seen (expiry is judged against it as well as the clock, so
    # a clock set back brings no expired key back); a file of an older schema starts from the
    # latest time its keys recorded.
    4: """
CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 1), latest REAL NOT NULL);
INSERT INTO clock (id, latest) SELECT 1, (""" + _KEYS_LATEST + """);
""",
    # The latest time the file held before `keys clock --reset` set its time back (NULL: never
    # set back): the requests logged until then were checked against this file, so a key
    # pruned from it meanwhile is no key it never held (see KeyStore.check_in_use).
    5: """
ALTER TABLE clock ADD COLUMN in_use_until REAL;
""",
}
_COLUMNS = ("id", "hash", "tenant", "name", "created_at", "expires_at", "revoked_at",
            "rotated_at", "previous_hash", "previous_valid_until", "budgets", "rpm", "tpm",
            "models", "cost_weight", "older_secrets")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(key: str) -> str:
    """The id of a well-formed key; :class:`InvalidKeyError` for anything else."""
    match = _KEY.fullmatch(key)
    if match is None:
        raise InvalidKeyError("the key is malformed: switchpoint keys look like "
                              "sp-<10 hex characters>_<43 characters>, as printed once by "
                              "`switchpoint keys create`", param="authorization")
    return match.group(1)


def new_key() -> tuple[str, str]:
    """A fresh (key id, key)."""
    key_id = secrets.token_hex(ID_CHARS // 2)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse_expiry(value: str | float | None, now: float | None = None) -> float | None:
    """When a key expires: an ISO date (``2027-01-31``: the last day the key works, so it
    expires as that day ends, at midnight UTC starting the next; 9999-12-31 at its last
    second), an ISO date-time (exact; UTC unless it names a zone), a duration from now
    (``30d``, ``12h``, ``90m``, ``2w``; a negative one is refused saying so) or epoch seconds
    (a number as :func:`~switchpoint._numbers.number_text` reads one: ``1800000000``,
    ``1.8e9``; a negative one is refused saying so, and one a float holds only as 0,
    ``1e-400``, as 1970; NaN or an infinity written as text, ``-inf``, as not finite). Must lie
    at least :data:`MIN_LIFETIME_S` in the future."""
    if value is None:
        return None
    now = time.time() if now is None else now
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            raise InvalidInputError("expires", "is NaN, not a time; give epoch seconds, an ISO "
                                               "date (2027-01-31) or a duration (30d, 12h)")
        ts = float(value) if -MAX_EXPIRY <= value <= MAX_EXPIRY else (
            math.inf if value > 0 else -math.inf)
        if ts < 0:
            raise InvalidInputError("expires", f"{json_quoted(value, 40)} {_NEGATIVE_EPOCH}")
        epoch_given = True
    elif isinstance(value, str):
        if not value.strip():
            raise InvalidInputError("expires", f"{json_quoted(value, 40)} is empty; "
                                               f"{_ANY_EXPIRY}, or leave it out for a key that "
                                               "never expires")
        relative = _RELATIVE.fullmatch(value)
        # A number is epoch seconds (the command line's, and a JSON string's), never a
        # basic-format ISO date: Python reads 1797040523 as a day in 1797.
        epoch = number_text(value)
        epoch_given = epoch is not None
        day = None if epoch is not None else _date_only(value)
        if relative is not None:
            amount = float(relative.group(1))
            if amount < 0:
                raise InvalidInputError("expires", f"{json_quoted(value, 40)} is a negative "
                                                   "duration; a duration counts from now; give "
                                                   "one of at least 1m (30d, 12h), or a date")
            ts = now + amount * _UNITS[relative.group(2)]
        elif epoch is not None:
            if epoch < 0:
                raise InvalidInputError("expires", f"{json_quoted(value, 40)} "
                                                   f"{_NEGATIVE_EPOCH}")
            ts = epoch if epoch <= MAX_EXPIRY else math.inf
        elif too_small(value):  # (epoch seconds a float holds only as 0: 1970, or before it)
            raise InvalidInputError("expires", f"{json_quoted(value, 40)} " + (
                _NEGATIVE_EPOCH if negative_text(value) else
                "is too small a number to be told from 0: as epoch seconds it is "
                f"1970-01-01T00:00:00Z, in the past; {_LATER_EPOCH}"))
        elif _not_finite_duration(value):
            raise InvalidInputError("expires", f"{json_quoted(value, 40)} {NOT_FINITE_TEXT}; "
                                               f"{_ANY_EXPIRY}")
        elif day is not None:
            ts = min(datetime.combine(day, dt_time(), UTC).timestamp() + 86400.0, MAX_EXPIRY)
        else:
            try:
                parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise InvalidInputError("expires", f"{json_quoted(value, 40)} is not a date; "
                                                   f"{_ANY_EXPIRY}") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ts = parsed.timestamp()
    else:
        raise InvalidInputError("expires", f"must be a date or a duration, got "
                                           f"{json_quoted(value, 40)}")
    if ts > MAX_EXPIRY:  # (infinity too; minus infinity is in the past)
        raise InvalidInputError("expires", f"{json_quoted(value, 40)} is too far off; a key "
                                           "expires by 9999-12-31 at the latest (leave expires "
                                           "out for a key that never does)")
    if ts <= now:
        # A number is epoch seconds: one meant as a date (20270131) is told the instant it
        # names, which "not in the future" alone leaves a puzzle.
        read_as = (f" (a number is read as epoch seconds: this one is {_iso(ts)})"
                   if epoch_given and ts >= 0 else "")
        raise InvalidInputError("expires", f"{json_quoted(value, 40)} is not in the future"
                                           f"{read_as}; {_LATER_EPOCH if epoch_given else _LATER}")
    if ts < now + MIN_LIFETIME_S:
        raise InvalidInputError("expires", f"{json_quoted(value, 40)} is {ts - now:.3g} s from "
                                           f"now; a key must live at least {MIN_LIFETIME_S:g} s "
                                           "(give e.g. 1m, 1h or 30d, or leave expires out "
                                           "for a key that never expires)")
    return ts


#: What an expiry that is not in the future is told to give instead (after ``give``).
_LATER = "give a later date (YYYY-MM-DD, UTC) or a duration from now (30d, 12h)"
#: The same, where the expiry was written as epoch seconds.
_LATER_EPOCH = ("give epoch seconds past now, a later date (YYYY-MM-DD, UTC) or a duration "
                "from now (30d, 12h)")
#: Why epoch seconds below 0 are refused, as a message goes on after the value it quotes.
_NEGATIVE_EPOCH = ("is negative: epoch seconds count from 1970-01-01, so it is in the past; "
                   + _LATER_EPOCH)
#: Every form an expiry takes, as one that is none of them is told (after ``;``).
_ANY_EXPIRY = ("give an ISO date (2027-01-31), a date-time (2027-01-31T12:00:00Z), a duration "
               "(30d, 12h) or epoch seconds")


def _not_finite_duration(text: str) -> bool:
    """Whether ``text`` is NaN or an infinity as ``float()`` reads one, alone or with a
    duration's unit (``-inf``, ``infd``): told it is not finite, not that it is no date."""
    text = text.strip()
    return not_finite_text(text) or (text[-1:] in _UNITS and not_finite_text(text[:-1]))


def _date_only(value: str) -> date | None:
    """The calendar day ``value`` names when it is an ISO date without a time, else None."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


def expiry_text(ts: float, *, zone: bool = True) -> str:
    """When a key expires, as its creation, ``keys list`` and ``keys show`` say it: the instant
    as every time a command shows (:func:`~switchpoint._times.when_text`, to the second), with
    `` UTC`` unless ``zone`` is false (a table whose header says it), and the last day it works
    when it expires at midnight (as a key given a date does)."""
    from switchpoint._times import when_text

    text = when_text(ts) + (" UTC" if zone else "")
    if ts % 86400 == 0:
        last = datetime.fromtimestamp(ts - 86400, UTC)
        text += f" (usable through {last:%Y-%m-%d})"
    return text


@dataclass(frozen=True)
class KeyRecord:
    """A key as stored (never its secret)."""

    id: str
    hash: str
    tenant: str
    created_at: float
    name: str | None = None
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_at: float | None = None
    previous_hash: str | None = None
    previous_valid_until: float | None = None
    budgets: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] | None = None
    cost_weight: float | None = None
    # The old secrets before previous_hash, newest first: (hash, valid until, replaced at).
    older_secrets: tuple[tuple[str, float, float], ...] = ()

    def old_secrets(self) -> tuple[tuple[str, float, float], ...]:
        """Every old secret the key remembers, newest first: (hash, valid until, replaced
        at)."""
        if self.previous_hash is None:
            return self.older_secrets
        latest = (self.previous_hash, self.previous_valid_until or 0.0, self.rotated_at or 0.0)
        return (latest, *self.older_secrets)

    def status(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now`` (the key store's
        :meth:`KeyStore.now`, which a clock set back does not move back)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def tenant_gone(self, tenants: Collection[str]) -> bool:
        """Whether the key's tenant is none of ``tenants`` (the configured ones: a reload
        removed it), so the gateway refuses the key and a new secret would open nothing."""
        return self.tenant not in tenants

    def to_dict(self, now: float, tenants: Collection[str] | None = None) -> dict[str, Any]:
        """What the admin API and ``keys list`` show: everything but the hashes (the status at
        ``now``, see :meth:`status`); given the configured ``tenants``, ``tenant_removed``
        too (see :meth:`tenant_gone`)."""
        removed = {} if tenants is None else {"tenant_removed": self.tenant_gone(tenants)}
        return {"id": self.id, "tenant": self.tenant, **removed, "name": self.name,
                "status": self.status(now), "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at,
                "rotated_at": self.rotated_at,
                "previous_valid_until": self.previous_valid_until,
                "previous_secrets": [{"rotated_at": replaced, "valid_until": until}
                                     for _, until, replaced in self.old_secrets()],
                "budgets": list(self.budgets), "rpm": self.rpm, "tpm": self.tpm,
                "models": None if self.models is None else list(self.models),
                "cost_weight": self.cost_weight}

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> KeyRecord:
        d = dict(zip(_COLUMNS, row, strict=True))
        d["budgets"] = tuple(json.loads(d["budgets"]))
        d["models"] = None if d["models"] is None else tuple(json.loads(d["models"]))
        d["older_secrets"] = tuple((str(h), float(until), float(at)) for h, until, at
                                   in json.loads(d["older_secrets"] or "[]"))
        return cls(**d)

    def row(self) -> tuple[Any, ...]:
        d = {name: getattr(self, name) for name in _COLUMNS}
        d["budgets"] = json.dumps(list(self.budgets))
        d["models"] = None if self.models is None else json.dumps(list(self.models))
        d["older_secrets"] = (json.dumps([list(old) for old in self.older_secrets])
                              if self.older_secrets else None)
        return tuple(d[name] for name in _COLUMNS)


@dataclass(frozen=True)
class IssuedKey:
    """A key just made or rotated: ``key`` is the secret, shown this once. Its ``repr`` leaves
    the secret out (a log line or a traceback showing the object does not carry it): read
    ``key`` itself to show it."""

    key: str = field(repr=False)
    record: KeyRecord

    def to_dict(self, now: float, tenants: Collection[str] | None = None) -> dict[str, Any]:
        return {"key": self.key, **self.record.to_dict(now, tenants)}


@dataclass(frozen=True)
class KeySpec:
    """What a new key may do (each field narrows its tenant's)."""

    tenant: str
    name: str | None = None
    budgets: Sequence[str] = ()
    rpm: int | None = None
    tpm: int | None = None
    models: Sequence[str] | None = None
    cost_weight: float | None = None
    expires: str | float | None = None

    def checked(self, tenants: Sequence[str] | None,
                catalog: Sequence[str] | None, *,
                tenant_models: Sequence[str] | None = None) -> KeySpec:
        """This spec once every field checks out (an :class:`InvalidInputError` naming the
        field otherwise). ``tenants`` are the configured tenant names; ``catalog`` the model
        names, when known; ``tenant_models`` the models the key's tenant may use, when it
        lists them (a key narrows them: one that shares none could do nothing)."""
        if not isinstance(self.tenant, str) or not self.tenant:
            raise InvalidInputError("tenant", "is required: the tenant the key belongs to")
        check_tenant(self.tenant)
        if tenants is not None and self.tenant not in tenants:
            known = listed_names(sorted(tenants), quoted=True) or "none: add tenants: to the config"
            raise InvalidInputError("tenant", f"unknown tenant {json_quoted(self.tenant)}; tenants "
                                              f"are defined under tenants: in the config "
                                              f"(configured: {known})")
        if self.name is not None and not isinstance(self.name, str):
            raise InvalidInputError("name", f"must be a string{got(self.name)}")
        if self.name is not None and len(self.name) > MAX_KEY_NAME:
            raise InvalidInputError("name", too_long(MAX_KEY_NAME, len(self.name)))
        if self.name is not None and not self.name.strip():
            # (shown blank in `switchpoint keys list`, as a key without a name is)
            raise InvalidInputError("name", f"is {json_quoted(self.name, 20)}, blank; a name "
                                            f"tells a key apart in {NAME_SHOWN}; give one "
                                            "with a visible character, or leave name out for "
                                            "a key without one")
        hidden = None if self.name is None else unprintable(self.name)
        if hidden is not None:
            raise InvalidInputError("name", f"holds U+{ord(hidden[1]):04X} (character "
                                            f"{hidden[0] + 1}): a name is shown in "
                                            f"{NAME_SHOWN}, so control characters (newline, "
                                            "NUL, ...) and invisible or direction-changing "
                                            "ones are refused")
        if self.name is not None:
            from switchpoint._redact import redact

            shown = redact(self.name)
            if shown != self.name:  # (kept in keys.db and shown in lists: never a secret)
                raise InvalidInputError("name", f"holds text shaped like a credential (a key, "
                                                f"token or password: {json_quoted(shown, 200)}); "
                                                "a name is kept in keys.db and shown in "
                                                f"{NAME_SHOWN}, so name the key without it")
        try:
            budgets = [str(b) for b in parse_budgets(list(self.budgets))]
        except ValueError as exc:
            raise InvalidInputError("budget", str(exc)) from None
        for field_name, most in (("rpm", MAX_RPM), ("tpm", MAX_TPM)):
            value = getattr(self, field_name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= most):
                raise InvalidInputError(field_name, f"must be a whole number from 1 to "
                                                    f"{most:,}, got {json_quoted(value, 30)}")
        models = None
        if self.models is not None:
            for i, name in enumerate(self.models):
                if not str(name).strip():  # (a list the caller wrote: none of it dropped unsaid)
                    raise invalid_at("models", f"models[{i}]", f"is {json_quoted(name, 20)}, "
                                     "blank; list model names (and \"auto\"), or leave models "
                                     "out to allow the tenant's")
                # (the one rule of a model's name, as it is written: " good " is not good)
                if name != "auto" and (problem := model_name_problem(str(name))) is not None:
                    raise invalid_at("models", f"models[{i}]", f"{json_quoted(name, 80)} "
                                     f"{problem}; list the catalog's names as they are "
                                     "written (and \"auto\")")
            models = [str(m) for m in self.models]
            if not models:
                raise InvalidInputError("models", "is empty; list model names (and \"auto\") or "
                                                  "leave it out to allow the tenant's")
            if catalog is not None:
                unknown = [m for m in models if m != "auto" and m not in catalog]
                if unknown:
                    shown = listed_names(unknown, quoted=True)
                    raise InvalidInputError("models", f"not in the catalog: {shown}; use "
                                                      f"{listed_names(catalog, quoted=True)}"
                                                      " or \"auto\"")
            if tenant_models is not None and not [m for m in models if m in tenant_models]:
                shown = listed_names(models, quoted=True)
                raise InvalidInputError("models", f"none of {shown} is among the models tenant "
                                                  f"{json_quoted(self.tenant, 100)} may use "
                                                  f"({listed_names(tenant_models, quoted=True)}"
                                                  "); a key "
                                                  "narrows its tenant's models")
            models = list(dict.fromkeys(models))
            if len(models) > MAX_CATALOG_MODELS + 1:
                raise InvalidInputError("models", f"lists {people_number(len(models))} names; a "
                                                  "key may name at most "
                                                  f"{people_number(MAX_CATALOG_MODELS + 1)} (a "
                                                  "catalog's models and \"auto\")")
        cost_weight = None
        if self.cost_weight is not None:
            from switchpoint.decision import check_cost_weight

            cost_weight = check_cost_weight(self.cost_weight, "cost_weight")
        parse_expiry(self.expires)
        return KeySpec(tenant=self.tenant, name=self.name, budgets=tuple(budgets),
                       rpm=self.rpm, tpm=self.tpm,
                       models=None if models is None else tuple(models),
                       cost_weight=cost_weight, expires=self.expires)


@dataclass
class KeyStore:
    """The keys of one data directory. Opens on first use (or ``open()``); ``close()`` after.
    Thread-safe. Opened for writing, a file of it this process may not write is named as it
    opens; ``reads_only`` (a command that only reads the keys: ``keys list``, the reports)
    opens the file read-only and changes nothing beside it either: no time written, no schema
    upgrade (a file of an older schema is read as upgraded, see
    :func:`~switchpoint.store.reading.read_upgraded`), no note of its log, no ``-shm`` made
    beside a file found with its ``-wal`` alone (read from a copy of the two); a file it may
    not write is read all the same."""

    path: Path
    clock: Any = time.time
    reads_only: bool = False
    # The ids of keys the request log beside it names (see logged_keys; given after=T, those
    # of the requests logged after T alone), read before its first opening: where there is no
    # file, one the log names keys of is refused, not made again, empty (see missing); where
    # there is one, a file lacking keys of requests logged after its latest time is refused
    # (see open). Read by a prune by age too (see prune's logged), which a missing file
    # refuses alike. None: the file is taken as it is, or made (a first start, --new-keys-db).
    logged: Callable[..., Sequence[str]] | None = field(default=None, repr=False)
    _conn: sqlite3.Connection | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _cache: dict[str, KeyRecord] = field(default_factory=dict, init=False, repr=False)
    _version: int = field(default=-1, init=False, repr=False)
    # The files opened (the database, its -wal and -shm: see _db); those of a file that left
    # its path whose side files left at the path could not be removed yet.
    _files: Files = field(default=(), init=False, repr=False)
    _stale: Files = field(default=(), init=False, repr=False)
    # The latest time seen (see now), the latest time keys.db is known to hold, and the latest
    # time a write of it was tried (whether or not the file took it).
    _latest: float = field(default=-math.inf, init=False, repr=False)
    _saved: float = field(default=-math.inf, init=False, repr=False)
    _tried: float = field(default=-math.inf, init=False, repr=False)
    # Writes the latest time off the caller's thread (see ClockWriter); whether its last
    # write was refused (said once until one goes through).
    _writer: ClockWriter | None = field(default=None, init=False, repr=False)
    # The writer's own connection, opened with the store's (see _write_latest), and the lock
    # its writes and its closing take.
    _clock_conn: sqlite3.Connection | None = field(default=None, init=False, repr=False)
    _clock_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _refusing: bool = field(default=False, init=False, repr=False)
    # The latest time a refusal had written (see hold_refusals).
    _owed: float = field(default=-math.inf, init=False, repr=False)
    # Whether a prune by age found the log naming no key while there was no file (see prune):
    # read once, not each hour (a key used since made the file), until a file opens.
    _none_logged: bool = field(default=False, init=False, repr=False)
    # The refusal of the file at the path as not the one in use (see _check_opening), with
    # the file's stamp when it was refused.
    _refusal: tuple[object, StoreError] | None = field(default=None, init=False, repr=False)

    @classmethod
    def in_dir(cls, data_dir: str | Path, *, reads_only: bool = False) -> KeyStore:
        return cls(Path(data_dir) / KEYS_FILENAME, reads_only=reads_only)

    def open(self) -> KeyStore:
        if self._conn is not None:
            return self
        if self.reads_only:
            return self._open_reading()
        if self.logged is not None:  # (the lock may be held: see _db)
            if not self._files and not self.path.is_file():
                named = self.logged()
                if named:
                    raise self._gone("open the key store", named, making=True)
            elif not self._files or (self.path.is_file()
                                     and file_identity(self.path) != self._files[0]):
                # (a first opening, or the file that replaced the one open: a backup restored
                # while the service runs is checked as a start checks it)
                self._check_opening(self.logged)
        try:
            if self._stale:  # a file that left the path: its log must not be replayed here
                remove_stale_side_files(self.path, self._stale)
                self._stale = ()
            private_file(private_dir(self.path.parent) / self.path.name)
            conn = opened_for_writing(self.path, self._connect)
            try:
                clock_conn = sqlite3.connect(self.path, check_same_thread=False,
                                             isolation_level=None)
                try:
                    clock_conn.execute("PRAGMA synchronous=FULL")
                    clock_conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
                except BaseException:
                    clock_conn.close()
                    raise
            except BaseException:
                conn.close()
                forget_log_owner(self.path)
                raise
            try:
                self._revoke_again(conn)
            except BaseException:
                clock_conn.close()
                conn.close()
                forget_log_owner(self.path)
                raise
        except (OSError, sqlite3.Error) as exc:
            raise store_error(self.path, "open the key store", exc) from None
        self._conn = conn
        with self._clock_lock:
            self._clock_conn = clock_conn
        self._files = database_identity(self.path)
        self._none_logged = False
        if not self.reads_only:
            self._writer = self._writer or self._clock_writer()
        return self

    def _check_opening(self, logged: Callable[..., Sequence[str]]) -> None:
        """:meth:`check_in_use` of the file about to be opened; its refusal is kept while the
        file and its ``-wal`` stay as they are (see :func:`~switchpoint._files.database_stamp`):
        each use of a refused file is told at once, the log read again only once the file
        changed (a backup restored, a key made in it by ``keys create --new-keys-db``). A new
        refusal is logged once: a service keeps refusing the file's uses (a 503) until then."""
        stamp = database_stamp(self.path)
        if self._refusal is not None and self._refusal[0] == stamp:
            raise self._refusal[1]
        try:
            self.check_in_use(logged)
        except StoreError as exc:
            self._refusal = (stamp, exc)
            log.warning("%s", exc)
            raise
        self._refusal = None

    def _open_reading(self) -> KeyStore:
        """:meth:`open` for a store that ``reads_only``: the file is read as it is, and nothing
        at its path is made or changed."""
        try:
            conn = read_upgraded(self.path, _MIGRATIONS, newer="upgrade switchpoint")
            try:
                self._read_clock(conn)
                conn = self._as_kept(conn)
            except BaseException:
                conn.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise store_error(self.path, "open the key store", exc) from None
        self._conn = conn
        self._files = database_identity(self.path)
        return self

    def _as_kept(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """For a store that ``reads_only``, ``conn``; or, where the file lacks revocations or
        rotations :attr:`revocations_path` keeps (a backup restored, not yet opened for
        writing), a copy of it in memory with them made, as the next opening for writing makes
        them, saying so: what a reader shows is what the service enforces. A file past
        :data:`~switchpoint.store.reading.MAX_UPGRADE_COPY_BYTES` is not copied: it is shown
        as it is, saying which keys the next opening for writing changes."""
        changed, revoked, rotated = self._undone(conn, self._kept())
        if not changed:
            return conn
        size = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute(
            "PRAGMA page_size").fetchone()[0]
        if size > MAX_UPGRADE_COPY_BYTES:
            log.warning("%s lacks changes %s keeps (a backup restored), which the next start "
                        "(or `switchpoint keys` change) makes in it; the keys are shown as the "
                        "file holds them (too big to copy), not as the service enforces them: "
                        "%s", self.path, self.revocations_path.name,
                        _made_again(revoked, rotated, done=("the service revokes",
                                                            "the service rotates")))
            return conn
        copy = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        try:
            conn.backup(copy)
            for record in changed:
                copy.execute(_REPLAY, _replayed_row(record))
            copy.execute("PRAGMA query_only=ON")
        except BaseException:
            copy.close()
            raise
        conn.close()
        log.warning("%s lacks changes %s keeps (a backup restored), which the next start (or "
                    "`switchpoint keys` change) makes in it; the keys are shown with them made: "
                    "%s", self.path, self.revocations_path.name, _made_again(revoked, rotated))
        return copy

    def _connect(self) -> sqlite3.Connection:
        """A connection to the file in WAL mode, with the schema up to date and the store's
        clock read."""
        check_database_writable(self.path)  # (SQLite opens one it may not write read-only)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            wal_mode(conn)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
            upgrade_schema(conn, _MIGRATIONS, newer="upgrade switchpoint")
            self._read_clock(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _clock_writer(self) -> ClockWriter:
        return ClockWriter(self._write_latest, self._write_refused, "switchpoint-keys-clock")

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()  # (outside the lock: a write under way may need it to finish)
            self._saved = max(self._saved, writer.written)
        with self._lock:
            if self._conn is not None:
                if self._latest > self._saved and not self.reads_only:
                    self._save_clock(self._conn)
                self._let_go(how_it_left(self._files, database_identity(self.path)))
                if not self.reads_only:
                    forget_log_owner(self.path)
            self._cache.clear()

    def __enter__(self) -> KeyStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self, what: str = "use the key store") -> sqlite3.Connection:
        """The connection (opened on first use: a gateway without keys makes no file). A file
        replaced since it was opened (restored from a backup, say), or whose ``-wal`` or
        ``-shm`` was, is opened again: the old one's keys and changes are no longer at the
        path (or in a log no other connection sees), and a key made in it would be lost at
        the next start. The old connection writes its log into its file and is closed, and
        that file's side files left at the path are removed first, so SQLite does not replay
        the old file's changes into the one now there (see
        :func:`~switchpoint.store.moved.close_moved`). A file deleted that held keys is not
        made again, empty (every key would stop working unsaid): each use (to ``what``) is
        refused, as a damaged file's is (:meth:`_deleted`), until a file is at the path again
        (a backup restored) or the service restarts; one that held none is made again. Three
        stats a call."""
        if self._conn is not None:
            left = how_it_left(self._files, database_identity(self.path))
            if self._lost_keys(left):
                raise self._deleted(what)
            if left is not None:
                log.warning("%s %s while open; the key store opens the file now at that path "
                            "(a new, empty one if there is none)", self.path, left)
                self._let_go(left)
                self._cache.clear()
                self._version = -1
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    def _lost_keys(self, left: str | None) -> bool:
        """Whether the file open (the lock held), which ``left`` its path so (see
        :func:`~switchpoint.store.moved.how_it_left`), was deleted holding keys: every use of
        the store is then refused (:meth:`_deleted`), none is made in its place."""
        return left == "was deleted" and self._conn is not None and self._held_keys(self._conn)

    def missing(self, what: str, named: Sequence[str] = ()) -> bool:
        """Whether there is no key file to read (and none is made): none at the path, unless
        the one this store had open was deleted holding keys, or the log names keys made in
        it (``named``: their ids, see :func:`logged_keys`), whose use (to ``what``) is refused
        as every other use is (see :meth:`_db`, :meth:`_gone`): a report would otherwise say
        every key was pruned, a budget list leave the keys' budgets out and a prune find none
        (an opening that would make a file there, a start's or ``keys create``'s, is refused
        alike: see :attr:`logged`). Pruning deletes a key's record, never the file: a file
        gone that the log names keys of was deleted or lost."""
        if self.path.is_file():
            return False
        with self._lock:
            if self._lost_keys(how_it_left(self._files, database_identity(self.path))):
                raise self._deleted(what)
        if named:
            raise self._gone(what, named)
        return True

    @staticmethod
    def _held_keys(conn: sqlite3.Connection) -> bool:
        """Whether the file ``conn`` has open (one deleted since, say) holds a key, revoked
        ones included; one that cannot be read counts as holding some (what cannot be read is
        never thrown away, as :func:`holds_keys` has it)."""
        try:
            return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM keys)").fetchone()[0])
        except sqlite3.Error:
            return True

    def _deleted(self, what: str) -> StoreError:
        """The refusal of a use (to ``what``) of a key store whose file was deleted while it
        was open, holding keys: marked ``damaged`` (waiting does not bring it back), naming
        the file, and saying to restore it from a backup or how to start over (a file made
        at the path is opened at the next use; a restart makes none while the log names the
        keys, see :meth:`missing`)."""
        return StoreError(f"{quoted_path(self.path)}: cannot {what}: it was deleted while the "
                          "service ran, holding keys; restore it from a backup (it is opened "
                          "at its next use, its keys working again)" + START_OVER,
                          reason=f"{self.path.name} in data_dir was deleted while the service "
                                 "ran, holding keys; the operator must restore it from a backup",
                          damaged=True)

    def _gone(self, what: str, named: Sequence[str], *, making: bool = False) -> StoreError:
        """The refusal of a use (to ``what``) of a key store with no file at its path while the
        log names keys made in it (``named``: some of their ids): marked ``damaged`` (waiting
        does not bring it back), naming the file and saying to restore it from a backup (or,
        for a use ``making`` a new file, how to start over on purpose)."""
        return StoreError(f"{quoted_path(self.path)}: cannot {what}: it is missing, yet the "
                          f"request log names keys made in it ({listed_names(named, 3)}): a "
                          "pruned key loses its record, never the file; restore it from a "
                          "backup" + (START_OVER if making else ""),
                          reason=f"{self.path.name} in data_dir is missing, yet the request "
                                 "log names keys made in it; the operator must restore it "
                                 "from a backup",
                          damaged=True)

    def check_in_use(self, logged: Callable[..., Sequence[str]],
                     what: str = "open the key store") -> None:
        """Refuse (to ``what``; before anything is written) the file at the path when the log
        (``logged``: see :attr:`logged`) names keys it does not hold in requests logged well
        after the latest time it holds (or held before ``keys clock --reset`` set it back,
        see :meth:`reset_clock`; past :data:`IN_USE_SLACK_S`): keys checked against
        another keys.db, so this one is not the file last in use (an older backup, an empty
        file put in its place), where every such key would get 401 and the reports would
        call it pruned. A key the file pruned ended before the prune, its requests logged
        before the file's latest time, so it never counts. Read without changing the file:
        one that cannot be read is left to the opening, which names it."""
        try:
            conn = read_only(self.path)
            try:
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                # (an empty file, 0 bytes, was never in use: every key the log names counts)
                row = conn.execute("SELECT latest FROM clock").fetchone() \
                    if "clock" in tables else None
                latest = (row[0] if row is not None and isinstance(row[0], (int, float))
                          else conn.execute(_KEYS_LATEST).fetchone()[0] if "keys" in tables
                          else -math.inf)
                # (a time set back by `keys clock --reset`: in use until the time it held)
                until = conn.execute("SELECT in_use_until FROM clock").fetchone() \
                    if "in_use_until" in {r[1] for r in conn.execute(
                        "SELECT * FROM pragma_table_info('clock')")} else None
                if until is not None and isinstance(until[0], (int, float)):
                    latest = max(float(latest), float(until[0]))
                named = logged(after=float(latest) + IN_USE_SLACK_S, most=_MOST_CHECKED)
                near = logged(after=float(latest), most=_MOST_CHECKED)
                if not near:
                    return
                held = {str(r[0]) for r in conn.execute(
                    "SELECT id FROM keys WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps([*named, *near]),))} if "keys" in tables else set()
            finally:
                conn.close()
        except (OSError, sqlite3.Error):
            return
        unheld = [i for i in named if i not in held]
        if unheld:
            raise self._not_in_use(what, unheld,
                                   more=len(named) >= _MOST_CHECKED, since=float(latest))
        unsure = [i for i in near if i not in held]
        if named or unsure:
            self._older_than_the_log(float(latest), unsure)

    def _older_than_the_log(self, since: float, unsure: Sequence[str]) -> None:
        """Say (a warning) that the file is older than the request log beside it, which names
        keys in requests logged after its latest time (``since``): an older keys.db (a backup)
        put in place, taken as it is, and what it cannot know of what changed since;
        ``unsure``: the keys the log names within :data:`IN_USE_SLACK_S` of that time that it
        does not hold (made after the backup, or revoked and pruned as they were used)."""
        among = (f"; the log names {people_number(len(unsure))} key"
                 f"{'' if len(unsure) == 1 else 's'} it does not hold "
                 f"({listed_names(unsure, 3)}) in requests logged within "
                 f"{IN_USE_SLACK_S / 60:g} minutes of that time: made after the backup was "
                 "taken (they stay unknown: restore a newer backup if there is one), or "
                 "revoked and pruned as they were used" if unsure else "")
        log.warning("%s: the request log names keys in requests logged after the latest time "
                    "this file was in use (%s): an older keys.db (a backup) was put in place; "
                    "what changed in it since is not in it: keys made since are unknown "
                    "(401), and a key's settings are as they were then (revocations and "
                    "rotations since are made again from %s; spend is counted in the request "
                    "log, not here)%s", self.path,
                    _iso(since), REVOCATIONS_FILENAME, among)

    def _not_in_use(self, what: str, unheld: Sequence[str], *, more: bool,
                    since: float) -> StoreError:
        """The refusal of a use (to ``what``) of a file that lacks keys (``unheld``: their
        ids, ``more``: of the first of the log's requests read) that requests logged after
        its latest time (``since``) name: marked ``damaged`` (waiting does not mend it),
        naming the file, how many keys and which, saying to restore the file that holds them
        or how to go on with this one on purpose (see :data:`GO_ON`)."""
        count = f"{'at least ' if more else ''}{people_number(len(unheld))}"
        when = (f"logged after the latest time it was in use ({_iso(since)})"
                if math.isfinite(since) and since > 0 else
                "logged while it was never in use (it is empty)")
        return StoreError(f"{quoted_path(self.path)}: cannot {what}: the request log names "
                          f"{count} key{'' if len(unheld) == 1 else 's'} it does not hold "
                          f"({listed_names(unheld, 3)}), in requests {when}: a pruned key "
                          "ended before it "
                          "was pruned, so this is not the keys.db those keys were made in (an "
                          "older backup, or an empty file put in its place); restore a backup "
                          "that holds them (the newest)" + GO_ON,
                          reason=f"{self.path.name} in data_dir lacks keys the request log "
                                 "names in requests logged after it was last in use; the "
                                 "operator must restore the newest backup of it",
                          damaged=True)

    @contextlib.contextmanager
    def _using(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection (:meth:`_db`) with the lock held, for a block that reads the file
        (and may change it, see :meth:`_serial`): every lookup, list, count and change goes
        through it. A database error the block meets (a file damaged past its opening, a lock
        held past the busy timeout) is the :class:`StoreError` naming the file and what mends
        it (:func:`~switchpoint.store.errors.store_error`: a damaged one is a 503
        ``storage_unavailable`` over HTTP), never a bare :class:`sqlite3.Error`."""
        with self._lock:
            conn = self._db(what)
            try:
                yield conn
            except sqlite3.Error as exc:
                raise store_error(self.path, what, exc) from None

    def _let_go(self, left: str | None) -> None:
        """Close the connection (the lock held). When its file (or its ``-wal`` or ``-shm``)
        ``left`` the path (see :func:`~switchpoint.store.moved.how_it_left`), its log is first
        written into that file, and the file's side files still at the path are removed, so
        that SQLite does not replay its changes into the file opened there next (see
        :func:`~switchpoint.store.moved.close_moved`). Those that cannot be are tried again
        by :meth:`open`, which refuses until they are gone (and logged, for a stop)."""
        with self._clock_lock:  # (first: the store's connection closing last cleans the log up)
            clock_conn, self._clock_conn = self._clock_conn, None
            if clock_conn is not None:
                clock_conn.close()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if left is None or self.reads_only:  # (a reader has no log to write, nor files to tidy)
            conn.close()
            return
        try:
            close_moved(conn, self.path, self._files)
        except OSError as exc:
            self._stale = self._files
            log.error("%s %s while open, and the old file's -wal and -shm left at that path "
                      "could not be removed (%s): remove them before the service opens the "
                      "file there again", self.path, left, exc.strerror or exc)

    # The store's clock ---------------------------------------------------------------------------

    def now(self) -> float:
        """The time keys are judged at: the clock, or the latest time this store (or another
        process sharing its file, the CLI beside the service) has seen when the clock is
        behind it. It never goes back, so a clock set back brings no expired key back."""
        with self._lock:
            return self._now()

    def _now(self) -> float:
        """:meth:`now` with the lock held: moves the latest time on, handing it to the clock
        writer once it is :data:`CLOCK_STEP_S` ahead of the last time written (an open
        store's). The caller never waits for the disk: the write happens on the writer's
        thread (see :mod:`~switchpoint.governance.clock_writer`)."""
        now = max(float(self.clock()), self._latest)
        self._latest = now
        if self._conn is not None and self._writer is not None \
                and now - self._tried >= CLOCK_STEP_S:
            self._tried = now
            self._writer.post(now)
        return now

    def _read_clock(self, conn: sqlite3.Connection) -> None:
        """Catch up with the latest time the file holds (lock held, or while opening). A time
        past :data:`MAX_EXPIRY` (infinity: a hand edit) is read as it, by which every key with
        an expiry has expired; one that is no number, or none at all, as the latest time the
        keys recorded, until the next write puts a time back."""
        row = conn.execute("SELECT latest FROM clock").fetchone()
        held = None if row is None else row[0]
        if isinstance(held, (int, float)) and not isinstance(held, bool):
            self._saved = min(float(held), MAX_EXPIRY)
            self._tried = max(self._tried, self._saved)
            self._latest = max(self._latest, self._saved)
            return
        fallback = float(conn.execute(_KEYS_LATEST).fetchone()[0])
        log.warning("%s: the key store's latest time is %s, not a time; keys are judged at the "
                    "latest time they recorded (%s) until it is written again", self.path,
                    "missing" if row is None else json_quoted(str(held), 40), _iso(fallback))
        self._saved = -math.inf  # (so the next write puts one back)
        self._latest = max(self._latest, min(fallback, MAX_EXPIRY))

    def _save_clock(self, conn: sqlite3.Connection) -> None:
        """Write the latest time to the file on ``conn`` (lock held: on closing), never
        moving the file's back. A refused write is logged (once until one goes through)."""
        self._tried = max(self._tried, self._latest)
        try:
            conn.execute(_SAVE_CLOCK, (self._latest,))
        except sqlite3.Error as exc:
            self._write_refused(exc)
            return
        self._refusing = False
        self._saved = self._latest

    def _write_latest(self, latest: float) -> None:
        """The clock writer's write (on its thread): ``latest`` into the file, on a connection
        of its own, so that a lookup on the store's connection never waits behind the commit.
        That connection is opened with the store's and closed with it, never at the path later:
        a connection opened after the file's ``-wal`` was deleted would read the old ``-shm``
        against a new log and damage the file. So it writes where the store's connection does
        (a file that left the path included: the store's next lookup writes that file's log
        into it and opens the one there, see :meth:`_db`); while the store is closed or opening
        again, the write is refused and the next one tries again."""
        with self._clock_lock:
            conn = self._clock_conn
            if conn is None:
                raise StoreError(f"{quoted_path(self.path)}: the key store is not open; its "
                                 "time is written "
                                 "once it is", reason="closed")
            conn.execute(_SAVE_CLOCK, (latest,))
        self._refusing = False

    def _write_refused(self, exc: Exception) -> None:
        if not self._refusing:
            self._refusing = True
            log.warning("%s: could not record the key store's latest time (%s); a key that "
                        "expired could work again after a restart with the clock set back",
                        self.path, exc)

    def ahead_note(self) -> str:
        """When the store's time is ahead of the clock (one once set ahead), what a new key's
        expiry is reckoned from, said for the operator (else empty)."""
        with self._lock:
            return self._ahead_note(self._now())

    def _ahead_note(self, now: float) -> str:
        ahead = now - float(self.clock())
        if ahead < CLOCK_STEP_S:
            return ""
        return (f" (expiry is reckoned from the key store's time, {_iso(now)}, the latest it "
                f"has seen, {ahead / 3600:.1f} h ahead of this machine's clock: see "
                "`switchpoint keys clock`)")

    def reset_clock(self) -> float:
        """Set the store's latest time to the clock, even back (the way out of a clock once
        set far ahead, which expired every key due before the time it showed); returns the
        time the store held, which the file keeps as the time it was in use until (see
        :meth:`check_in_use`: the requests logged by the clock that ran ahead name keys it
        held, some pruned since, not keys of another file). Only with no service on the data
        directory: a running one keeps the later time it has seen (the CLI takes the data
        directory's lock first)."""
        writer, self._writer = self._writer, None
        if writer is not None:  # (a write under way would put the later time back)
            writer.stop()
        with self._using("reset the key store's time") as conn:
            self._writer = self._writer or self._clock_writer()
            self._read_clock(conn)
            before, now = self._latest, float(self.clock())
            # (the time it held is kept as the time the file was in use until: see
            # check_in_use)
            conn.execute(_RESET_CLOCK, (now, before))
            self._latest = self._saved = self._tried = now
            return before

    def _refused_at(self, until: float, *, wait: bool) -> None:
        """A key was refused because ``until`` (its expiry, or an old secret's end of grace)
        has passed: make sure the file holds a time past it, so the refusal outlasts a crash
        and a clock set back (one write the first time only). With ``wait`` this returns once
        the write was tried; else the refusal is owed (see :meth:`hold_refusals`)."""
        with self._lock:
            writer = self._writer
            if writer is None or self._conn is None or max(self._saved,
                                                           writer.written) >= until:
                return
            # (what is owed is the write posted now: one tried before for it, refused by the
            # disk, does not count as this one)
            self._owed = max(self._owed, self._latest)
            self._tried = max(self._tried, self._latest)
            writer.post(self._latest)
        if wait:
            self.hold_refusals()

    def refusals_pending(self) -> bool:
        """Whether a refusal made so far waits for a clock write not yet tried: only then has
        a caller that refused without waiting (on an event loop) to call
        :meth:`hold_refusals` off the loop; a key refused for being unknown, malformed,
        revoked, or expired at a time the file holds, owes nothing."""
        writer = self._writer
        return writer is not None and writer.pending(self._owed)

    def hold_refusals(self) -> None:
        """Block until the file holds the times of the refusals made so far (each a write
        tried: one the disk refused is logged, and the refusal stands in this run). The async
        door refuses a key without waiting (``verify(..., wait=False)``) and calls this off
        the event loop before it answers."""
        writer = self._writer
        if writer is not None and writer.wait_for(self._owed):
            with self._lock:
                self._saved = max(self._saved, writer.written)

    # Lookups (the hot path) --------------------------------------------------------------------

    def _fresh(self, conn: sqlite3.Connection) -> None:
        """Forget cached keys if another connection (the CLI) changed the file, and catch up
        with the latest time it recorded."""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self._cache.clear()
            self._version = version
            self._read_clock(conn)

    def get(self, key_id: str) -> KeyRecord | None:
        with self._using("look the key up") as conn:
            self._fresh(conn)
            record = self._cache.get(key_id)
            if record is None:
                row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM keys WHERE id = ?",
                                   (key_id,)).fetchone()
                if row is None:
                    return None
                record = KeyRecord.from_row(row)
                self._cache[key_id] = record
            return record

    def cached(self, key_id: str) -> KeyRecord | None:
        """``key_id``'s record as last looked up (by :meth:`verify` in the same request, say),
        without asking the file whether it changed since; :meth:`get` when not cached."""
        record = self._cache.get(key_id)
        return record if record is not None else self.get(key_id)

    def verify(self, key: str, *, wait: bool = True) -> KeyRecord:
        """The record of a presented key, or :class:`InvalidKeyError` (malformed or unknown),
        :class:`KeyRevokedError` or :class:`KeyExpiredError`. A refusal for a time the file
        does not yet hold returns once the file holds it; with ``wait=False`` (on an event
        loop) at once, and the caller must :meth:`hold_refusals` (off the loop) before it
        answers."""
        key_id = key_id_of(key)
        record = self.get(key_id)
        digest = hash_key(key)
        if record is None:
            hmac.compare_digest(digest, digest)  # the same work as a known id
            raise _not_a_key(key_id)
        now = self.now()
        current = hmac.compare_digest(digest, record.hash)
        # Every old secret is compared (the same work whichever matches).
        matches = [old for old in record.old_secrets() if hmac.compare_digest(digest, old[0])]
        previous = bool(matches)
        if not current and not previous:
            raise _not_a_key(key_id)
        if record.revoked_at is not None:
            raise KeyRevokedError(f"key {key_id} was revoked at {_iso(record.revoked_at)}; ask "
                                  "for a new key", param="authorization")
        if record.expires_at is not None and record.expires_at <= now:
            self._refused_at(record.expires_at, wait=wait)
            raise KeyExpiredError(f"key {key_id} expired at {_iso(record.expires_at)}; ask for "
                                  "a new key", param="authorization")
        if previous and not current and matches[0][1] <= now:
            self._refused_at(matches[0][1], wait=wait)
            raise KeyRevokedError(f"key {key_id} was rotated at {_iso(matches[0][2])} and "
                                  "this secret's grace period is over; use the new key",
                                  param="authorization")
        return record

    # Changes -----------------------------------------------------------------------------------

    def create(self, spec: KeySpec, *, max_live: int = DEFAULT_MAX_KEYS,
               deliver: Deliver | None = None) -> IssuedKey:
        """Make a key (``spec`` already checked, see :meth:`KeySpec.checked`); its expiry is
        reckoned from :meth:`now`. While the file holds ``max_live`` live keys (neither
        revoked nor expired: the config's ``governance.max_keys``), a :class:`ConflictError`
        saying so and how to make room; counted and stored in one transaction, so the CLI
        beside the service cannot pass the bound either. In the same transaction the records
        of the oldest ended keys (revoked or expired) past the newest ``max_live`` go (see
        :meth:`prune`), so the file never holds more than twice ``max_live`` records.
        ``deliver`` (see :data:`Deliver`) hands the key out before the file keeps it."""
        with self._using("store the new key") as conn:
            now = self._now()
            try:
                expires_at = parse_expiry(spec.expires, now)
            except InvalidInputError as exc:
                raise InvalidInputError(exc.field, exc.reason + self._ahead_note(now)) from None
            key_id, key = new_key()
            record = KeyRecord(id=key_id, hash=hash_key(key), tenant=spec.tenant,
                               name=spec.name, created_at=now, expires_at=expires_at,
                               budgets=tuple(spec.budgets), rpm=spec.rpm, tpm=spec.tpm,
                               models=None if spec.models is None else tuple(spec.models),
                               cost_weight=spec.cost_weight)
            with self._serial(conn, "store the new key"):
                live = int(conn.execute(_LIVE_KEYS, (now,)).fetchone()[0])
                if live >= max_live:
                    raise _full(live, max_live)
                # (the count bound on ended keys' records: the file holds at most twice
                # max_live records, however many keys were made and revoked)
                self._write(conn, "store the new key",
                            *self._prunable("DELETE", now, None, max_live, -1))
                if conn.execute("SELECT changes()").fetchone()[0]:
                    self._cache.clear()
                self._write(conn, "store the new key",
                            f"INSERT INTO keys ({', '.join(_COLUMNS)}, seq) VALUES "
                            f"({', '.join('?' for _ in _COLUMNS)}, "
                            "(SELECT coalesce(max(seq), 0) + 1 FROM keys))", record.row())
                if deliver is not None:
                    deliver(IssuedKey(key, record), now)
            self._cache[key_id] = record
        return IssuedKey(key, record)

    def _write(self, conn: sqlite3.Connection, what: str, sql: str,
               args: tuple[object, ...]) -> None:
        """One change, or :class:`StoreError` saying the database refused it (a full disk, a
        file made read-only, a damaged one) and what to do about it, by the one rule the reads
        go by (:func:`~switchpoint.store.errors.store_error`: a damaged file is a 503 that
        says not to try again); the client is told the database's words alone otherwise."""
        try:
            conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise store_error(self.path, what, exc, reason=str(exc)) from None

    def list(self, tenant: str | None = None, *, include_revoked: bool = True
             ) -> list[KeyRecord]:
        """The keys (``tenant``'s, or all; without the revoked ones unless
        ``include_revoked``), oldest first; a file that cannot be read (a damaged one) is a
        :class:`StoreError` naming it and what mends it."""
        with self._using("read the keys") as conn:
            where, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM keys {where} "
                                "ORDER BY seq", args).fetchall()
        records = [KeyRecord.from_row(r) for r in rows]
        return [r for r in records if include_revoked or r.revoked_at is None]

    def live_count(self) -> int:
        """How many keys are live (neither revoked nor expired by :meth:`now`): what
        ``governance.max_keys`` bounds. 0 where there is no file (and none is made)."""
        if self.missing("count the live keys"):
            return 0
        with self._using("count the live keys") as conn:
            return int(conn.execute(_LIVE_KEYS, (self._now(),)).fetchone()[0])

    def held(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (ids the log names) the file holds a record of; with no file
        there, none is made and the read is refused (see :meth:`missing`): a key missing from
        the file was revoked or expired and then pruned (see :meth:`prune`), or its keys.db
        was replaced, but a file missing is no pruned key."""
        if not ids or self.missing("read the keys", ids):
            return set()
        with self._using("read the keys") as conn:
            rows = conn.execute("SELECT id FROM keys WHERE id IN (SELECT value FROM "
                                "json_each(?))", (json.dumps(list(ids)),)).fetchall()
        return {str(r[0]) for r in rows}

    def budgeted(self, tenant: str | None = None, *, since: int = 0, limit: int | None = None
                 ) -> Sequence[tuple[int, KeyRecord]]:
        """The keys not revoked that have budgets (``tenant``'s, or all), each with the number
        it was made as (its place in :meth:`page`'s order), in that order: from the number
        ``since`` on, ``limit`` keys at most (None: all)."""
        clauses = ["revoked_at IS NULL", "budgets != '[]'", "seq >= ?"]
        args: list[object] = [since]
        if tenant is not None:
            clauses.append("tenant = ?")
            args.append(tenant)
        with self._using("read the keys' budgets") as conn:
            rows = conn.execute(
                f"SELECT seq, {', '.join(_COLUMNS)} FROM keys WHERE {' AND '.join(clauses)} "
                "ORDER BY seq LIMIT ?", (*args, -1 if limit is None else limit)).fetchall()
        return [(int(r[0]), KeyRecord.from_row(r[1:])) for r in rows]

    def page(self, tenant: str | None = None, limit: int = DEFAULT_PAGE,
             cursor: str | None = None) -> tuple[Sequence[KeyRecord], str | None]:
        """A page of the keys (``tenant``'s, or all), oldest first like :meth:`list` (in the
        order they were made, whatever the clock said), with the cursor of the next page (None
        on the last): ``seq-N``, where this page ended. Keys made meanwhile never shift a page,
        unlike an offset, and come last."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not (
                1 <= limit <= MAX_PAGE):
            raise InvalidInputError("limit", f"must be a whole number of keys from 1 to "
                                             f"{MAX_PAGE}, got {json_quoted(limit)}")
        clauses: Sequence[str] = ("tenant = ?",) if tenant is not None else ()
        args: Sequence[object] = (tenant,) if tenant is not None else ()
        with self._using("read the keys") as conn:
            if cursor is not None:
                clauses = (*clauses, "seq > ?")
                args = (*args, _seq_of(cursor))
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            rows = conn.execute(f"SELECT seq, {', '.join(_COLUMNS)} FROM keys {where} "
                                "ORDER BY seq LIMIT ?", (*args, limit + 1)).fetchall()
        records = [KeyRecord.from_row(r[1:]) for r in rows[:limit]]
        return records, (f"{_CURSOR}{rows[limit - 1][0]}" if len(rows) > limit else None)

    def _require(self, conn: sqlite3.Connection, key_id: str) -> KeyRecord:
        check_key_id(key_id)
        row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM keys WHERE id = ?",
                           (key_id,)).fetchone()
        if row is None:  # (a well-formed id: the answer is a 404, like any unknown name's)
            raise NotFoundError(f"id: no key has the id {json_quoted(key_id)}: none was made "
                                "here, or it was revoked or expired and its record was pruned "
                                "since (switchpoint keys list shows the keys kept)",
                                param="id")
        return KeyRecord.from_row(row)

    def find(self, key_id: str) -> KeyRecord:
        """The record of ``key_id`` (:class:`InvalidInputError` for a malformed id,
        :class:`~switchpoint.errors.NotFoundError` for an unknown one)."""
        with self._using("read the key") as conn:
            return self._require(conn, key_id)

    @contextlib.contextmanager
    def _serial(self, conn: sqlite3.Connection, what: str,
                undo: Callable[[BaseException], None] | None = None) -> Iterator[None]:
        """One write transaction, taken before anything is read (``BEGIN IMMEDIATE``): what
        it reads no other connection (another process's store, the CLI's beside the
        service's) changes before it commits, so changes of one key made at once are made one
        after the other, each on what the one before left (a rotation never follows a
        revocation it did not see). Rolled back on an error (the commit's too), ``undo``
        given the error first, while the transaction still holds the write lock;
        :class:`StoreError` saying the database refused it (a full disk, a lock held past the
        busy timeout)."""
        self._write(conn, what, "BEGIN IMMEDIATE", ())
        try:
            yield
            self._write(conn, what, "COMMIT", ())
        except BaseException as exc:
            try:
                if undo is not None:
                    undo(exc)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key at once (revoking a revoked key changes nothing)."""
        with self._using("revoke the key") as conn:
            with self._serial(conn, "revoke the key"):
                record = self._require(conn, key_id)
                if record.revoked_at is None:
                    at = self._now()
                    # (first: a restore cannot undo it. Kept, then not made here (keys.db
                    # refused it, the process died), it is made by the next opening for
                    # writing, unlike a rotation, which is taken back (see rotate): no secret
                    # goes out with it, and the key it ends is one its caller meant to end.)
                    self._keep(_Kept("revoked", key_id, at))
                    self._write(conn, "revoke the key",
                                "UPDATE keys SET revoked_at = ? WHERE id = ?", (at, key_id))
                updated = KeyRecord.from_row(conn.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM keys WHERE id = ?", (key_id,)
                ).fetchone())
            self._cache.pop(key_id, None)
            return updated

    @property
    def revocations_path(self) -> Path:
        """The file that keeps every revocation beside keys.db (:data:`REVOCATIONS_FILENAME`)."""
        return self.path.with_name(REVOCATIONS_FILENAME)

    def _journal(self) -> LineJournal:
        """The file that keeps the revocations and rotations (:attr:`revocations_path`),
        bounded to :data:`MAX_REVOCATIONS_BYTES` (its older half let go)."""
        return LineJournal(self.revocations_path, MAX_REVOCATIONS_BYTES,
                           "a revocation or a rotation",
                           "no revocation or rotation it keeps is made again")

    def _keep(self, change: _Kept) -> None:
        """Append ``change`` (a revocation, or a rotation: its old secret's hash, never a
        secret) to :attr:`revocations_path`, on disk before this returns (past
        :data:`MAX_REVOCATIONS_BYTES`, its older half let go); :class:`StoreError` naming the
        file when it cannot be, the change not made."""
        try:
            self._journal().append(change.line())
        except OSError as exc:
            what, keeps, done = (("revocation", "keeps it revoked", "revoked")
                                 if change.kind == "revoked" else
                                 ("rotation", "keeps its old secret refused", "rotated"))
            raise StoreError(f"{quoted_path(self.revocations_path)}: cannot keep the {what} "
                             f"of key {change.id} there ({exc.strerror or exc}), which "
                             f"{keeps} should an older backup of keys.db be restored; the key "
                             f"was not {done}: {not_kept_remedy(exc)}, and "
                             f"{'revoke' if change.kind == 'revoked' else 'rotate'} it "
                             "again") from None

    def _take_back(self, change: _Kept, failure: BaseException) -> None:
        """Take the rotation ``change``, which :meth:`_keep` kept, back out of
        :attr:`revocations_path` (it was not made, and the new secret may not have gone out:
        no opening must make it), its transaction not yet rolled back (so no other opening
        reads the file meanwhile); ``failure``: why it was not made. Should that fail too,
        :class:`RotationKeptError` saying the rotation stands, as the next opening for
        writing makes it."""
        try:
            self._journal().take_back(change.line())
        except OSError as exc:
            raise RotationKeptError(
                f"key {change.id} was not rotated ({str(failure) or type(failure).__name__}), and "
                f"the rotation kept in {quoted_path(self.revocations_path)} could not be taken "
                f"back ({exc.strerror or exc}): the next opening of keys.db for writing (a "
                "start, a `switchpoint keys` command that changes it) makes it, giving the key "
                "a new secret that was perhaps never shown and refusing the old one once its "
                "grace is over; make room on the disk (or let this process write the file) and "
                "rotate the key again then") from failure

    def _kept(self) -> Mapping[str, Sequence[_Kept]]:
        """The revocations and rotations :attr:`revocations_path` keeps, each key's in the
        order they were made; lines that are neither (a damaged file) are passed over, saying
        which."""
        kept: dict[str, list[_Kept]] = {}  # (each key's, in order)
        for change in self._journal().read(_Kept.of):
            kept.setdefault(change.id, []).append(change)
        return kept

    @staticmethod
    def _undone(conn: sqlite3.Connection, kept: Mapping[str, Sequence[_Kept]]
                ) -> tuple[Sequence[KeyRecord], Sequence[str], Sequence[str]]:
        """The keys the file open holds live whose revocations or rotations ``kept`` holds
        and it does not (a backup taken before them, restored), as those changes make them,
        with the ids of those revoked and of those rotated (in the order keys were made)."""
        if not kept:
            return [], [], []
        rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM keys WHERE revoked_at IS NULL "
                            "AND id IN (SELECT value FROM json_each(?)) ORDER BY seq",
                            (json.dumps(list(kept)),)).fetchall()
        changed: list[KeyRecord] = []
        revoked: list[str] = []
        rotated: list[str] = []
        for row in rows:
            record = before = KeyRecord.from_row(row)
            for change in kept[record.id]:
                record = change.applied(record)
            if record != before:
                changed.append(record)
                if record.hash != before.hash:
                    rotated.append(record.id)
                if record.revoked_at is not None:
                    revoked.append(record.id)
        return changed, revoked, rotated

    def _revoke_again(self, conn: sqlite3.Connection) -> None:
        """Make again the revocations and rotations :attr:`revocations_path` keeps that the
        file opened lacks (a backup taken before them, restored), saying so: a key revoked
        since is revoked again, at its time; a key rotated since takes the secret it was
        given, its old one refused past its grace, as the rotation left them."""
        kept = self._kept()
        if not self._undone(conn, kept)[0]:
            return
        with self._serial(conn, "make again the revocations and rotations made since the "
                                "file was taken"):
            # (read again, the write lock held: a rotation kept and then taken back meanwhile,
            # not made, is not made here either)
            changed, revoked, rotated = self._undone(conn, self._kept())
            for record in changed:
                self._write(conn, "make the change again", _REPLAY, _replayed_row(record))
        self._cache.clear()
        if changed:
            log.warning("%s: %s, made after this file was taken (a backup restored), as %s "
                        "keeps them: what else changed in keys.db since that backup is not "
                        "in it (keys made since are unknown: 401; settings are as they were)",
                        self.path, _made_again(revoked, rotated), self.revocations_path.name)

    def prune(self, cutoff: float | None, most_ended: int, *, dry_run: bool = False,
              logged: bool = False) -> int:
        """Delete the records of the keys that ended (revoked, or expired by :meth:`now`)
        before ``cutoff`` (None: none for their age), and of the oldest ended keys past the
        newest ``most_ended`` (ended last first): a live key is never deleted. Returns how many
        went (with ``dry_run``, how many would, and nothing changes). In batches, each its own
        transaction: a prune killed part-way leaves every key either whole or gone, and the
        next one goes on. A store whose file does not exist has none (and none is made);
        ``logged`` (a prune by age, the retention's): unless the log names keys made in it
        (read by the :attr:`logged` hook, when set), which is the refusal :meth:`missing`
        gives, not a file with none to prune. A log found naming none is not read again until
        a file opens: a key used since would have made one."""
        named: Sequence[str] = ()
        if logged and self.logged is not None and not self._none_logged \
                and not self.path.is_file():
            named = self.logged()
            self._none_logged = not named
        if self.missing("prune the ended keys", named):
            return 0
        if dry_run:
            with self._using("count the ended keys to prune") as conn:
                return int(conn.execute(*self._prunable("SELECT count(*)", self._now(), cutoff,
                                                        most_ended, -1)).fetchone()[0])
        total = 0
        while True:
            with self._using("prune the ended keys") as conn:
                with self._serial(conn, "prune the ended keys"):
                    self._write(conn, "prune the ended keys",
                                *self._prunable("DELETE", self._now(), cutoff, most_ended,
                                                _PRUNE_BATCH))
                    n = int(conn.execute("SELECT changes()").fetchone()[0])
                self._cache.clear()
            total += n
            if n < _PRUNE_BATCH:
                return total

    @staticmethod
    def _prunable(verb: str, now: float, cutoff: float | None, most_ended: int,
                  limit: int) -> tuple[str, tuple[object, ...]]:
        """``verb`` (``DELETE``, ``SELECT count(*)``) of the ended keys :meth:`prune` lets go
        at ``now``, the oldest ended first, ``limit`` at most (-1: all), with its arguments."""
        aged = f"{_ENDED_AT} < ? OR " if cutoff is not None else ""
        return (f"{verb} FROM keys WHERE id IN (SELECT id FROM keys WHERE {_ENDED} AND "
                f"({aged}id IN ({_PAST_MOST_ENDED})) ORDER BY {_ENDED_AT}, seq LIMIT ?)",
                (now, *(() if cutoff is None else (cutoff,)), now, most_ended, limit))

    def rotate(self, key_id: str, grace_s: float = 0.0, *,
               tenants: Collection[str] | None = None,
               deliver: Deliver | None = None) -> IssuedKey:
        """A new secret for the key; the old one works for ``grace_s`` more seconds, and the
        secrets it replaced earlier until their own grace ends (the key remembers
        :data:`MAX_OLD_SECRETS` old secrets: past that, one whose grace is over is forgotten,
        else the oldest). ``tenants``: the configured tenants; a key whose tenant is none of
        them (a reload removed it) is refused, as the gateway refuses its requests: a new
        secret for it would open nothing. ``deliver`` (see :data:`Deliver`) hands the new
        secret out once :attr:`revocations_path` keeps the rotation, before keys.db commits it.

        The order makes a secret handed out one that works. The rotation is kept in
        :attr:`revocations_path` first: from then on it stands, as every opening of keys.db
        for writing makes a rotation kept there that the file lacks (a crash at any later
        point leaves it to the next opening: the secret, if it went out, works from then).
        Only then does the secret go out, and keys.db commit. A rotation not made after it was
        kept (the secret could not be handed out, keys.db refused the commit) is taken back
        out of the file (:meth:`_take_back`), so the file means nothing and the key keeps its
        secret; should even that fail, the error says the rotation stands. A file that cannot
        keep the rotation refuses it before any secret goes out. (Were the secret handed out
        first, a file that then failed to keep the rotation would void a secret already
        shown.)"""
        if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not (
                0 <= grace_s <= MAX_GRACE_S):
            raise InvalidInputError("grace_s", f"must be a number of seconds between 0 and "
                                               f"{people_number(MAX_GRACE_S)}, got "
                                               f"{json_quoted(grace_s)}")
        kept: list[_Kept] = []  # (the rotation, once the file keeps it)

        def take_back(failure: BaseException) -> None:
            if kept:  # (kept, then not made: no opening must make it)
                self._take_back(kept[0], failure)

        with self._using("rotate the key") as conn:
            # (Read, checked and changed in one transaction: a revocation by another
            # connection comes before it, and is refused here, or after it.)
            with self._serial(conn, "rotate the key", undo=take_back):
                record = self._require(conn, key_id)
                now = self._now()
                if record.status(now) != "active":
                    raise InvalidInputError("id", f"key {key_id} is {record.status(now)}, so "
                                                  "it cannot be rotated; make a new key "
                                                  "instead (switchpoint keys create)")
                if tenants is not None and record.tenant_gone(tenants):
                    raise InvalidInputError("id", _tenant_gone(record, tenants))
                _, fresh = new_key()
                key = f"{PREFIX}{key_id}_{fresh.split('_', 1)[1]}"
                older = _remembered(list(record.old_secrets()), now)
                self._write(conn, "rotate the key",
                            "UPDATE keys SET hash = ?, previous_hash = ?, "
                            "previous_valid_until = ?, rotated_at = ?, older_secrets = ? "
                            "WHERE id = ?",
                            (hash_key(key), record.hash, now + float(grace_s), now,
                             json.dumps([list(old) for old in older]) if older else None,
                             key_id))
                updated = KeyRecord.from_row(conn.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM keys WHERE id = ?", (key_id,)
                ).fetchone())
                change = _Kept("rotated", key_id, now, updated.hash, record.hash,
                               now + float(grace_s))
                self._keep(change)  # (first: the rotation stands from here, see above)
                kept.append(change)
                if deliver is not None:
                    deliver(IssuedKey(key, updated), now)
            self._cache.pop(key_id, None)
        return IssuedKey(key, updated)


# The keys that count against governance.max_keys at a time: those neither revoked nor expired.
_LIVE_KEYS = ("SELECT count(*) FROM keys WHERE revoked_at IS NULL AND "
              "(expires_at IS NULL OR expires_at > ?)")
# A key that ended at the time given (revoked, or expired by it), and when it ended: the earlier
# of its revocation and its expiry (a revoked key that expires later ended when revoked).
_ENDED = "(revoked_at IS NOT NULL OR expires_at <= ?)"
_ENDED_AT = "min(coalesce(revoked_at, expires_at), coalesce(expires_at, revoked_at))"
# The ended keys past the newest ``most`` (ended last first; the later made on a tie): those the
# count bound lets go, oldest first. Arguments: the time, most.
_PAST_MOST_ENDED = (f"SELECT id FROM keys WHERE {_ENDED} ORDER BY {_ENDED_AT} DESC, seq DESC "
                    "LIMIT -1 OFFSET ?")
# Ended keys' records deleted per transaction.
_PRUNE_BATCH = 2_000


# Hands a new secret out (prints it, say) while the change that makes it work is not yet
# committed: given the key and the store's time, it runs inside the change's transaction, so a
# failure to hand it out (raised) rolls the change back (a rotation is taken back out of
# keys.revocations.jsonl too), and a process killed before the commit leaves a new key unmade
# (a rotation, kept in that file before its secret goes out, is made by the next opening: see
# KeyStore.rotate). No secret the file accepts is lost between keeping and telling.
Deliver = Callable[[IssuedKey, float], None]


class RotationKeptError(StoreError):
    """A rotation kept in keys.revocations.jsonl was not made (its secret could not be handed
    out, keys.db refused it) and could not be taken back out of that file: the next opening
    of keys.db for writing makes it (the message says so, and to rotate the key again)."""


_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class _Kept:
    """A change :data:`REVOCATIONS_FILENAME` keeps: a key ``revoked`` at ``at``, or
    ``rotated`` at ``at`` to the secret hashed ``hash``, its secret hashed ``replaced`` valid
    until ``until`` (hashes alone: the file holds no secret)."""

    kind: str
    id: str
    at: float
    hash: str = ""
    replaced: str = ""
    until: float = 0.0

    def line(self) -> bytes:
        return line_of({"id": self.id, "revoked_at": self.at} if self.kind == "revoked" else
                       {"id": self.id, "rotated_at": self.at, "hash": self.hash,
                        "replaced": self.replaced, "valid_until": self.until})

    @classmethod
    def of(cls, item: object) -> _Kept | None:
        """The change a line's JSON value holds; None for one that holds none."""
        if not isinstance(item, dict):
            return None
        try:
            key_id = item["id"]
            if "revoked_at" in item:
                change = cls("revoked", key_id, float(item["revoked_at"]))
            else:
                change = cls("rotated", key_id, float(item["rotated_at"]), item["hash"],
                             item["replaced"], float(item["valid_until"]))
        except (ValueError, TypeError, KeyError):
            return None
        fine = (isinstance(key_id, str) and _ID.fullmatch(key_id) is not None
                and kept_time(change.at) is not None and kept_time(change.until) is not None)
        if change.kind == "rotated":
            fine = fine and all(isinstance(h, str) and _HASH.fullmatch(h)
                                for h in (change.hash, change.replaced))
        return change if fine else None

    def applied(self, record: KeyRecord) -> KeyRecord:
        """``record`` (this key's) as this change leaves it: a revoked key stays as it is; a
        rotation changes the key only while it holds the secret the rotation replaced."""
        if record.revoked_at is not None:
            return record
        if self.kind == "revoked":
            return replace(record, revoked_at=self.at)
        if record.hash != self.replaced:
            return record
        older = _remembered(list(record.old_secrets()), self.at)
        return replace(record, hash=self.hash, previous_hash=self.replaced,
                       previous_valid_until=self.until, rotated_at=self.at,
                       older_secrets=tuple(older))


# A revocation or rotation made again (see KeyStore._revoke_again): its arguments are
# _replayed_row's.
_REPLAY = ("UPDATE keys SET hash = ?, revoked_at = ?, rotated_at = ?, previous_hash = ?, "
           "previous_valid_until = ?, older_secrets = ? WHERE id = ?")


def _replayed_row(record: KeyRecord) -> tuple[object, ...]:
    """The arguments of :data:`_REPLAY` for ``record``, as the changes made again leave
    it."""
    d = dict(zip(_COLUMNS, record.row(), strict=True))
    return tuple(d[name] for name in ("hash", "revoked_at", "rotated_at", "previous_hash",
                                      "previous_valid_until", "older_secrets", "id"))


def _made_again(revoked: Sequence[str], rotated: Sequence[str], *,
                done: tuple[str, str] = ("revoked again", "rotated again")) -> str:
    """What making again the changes a restore undid does: which keys it revokes again and
    which it rotates again (``done``: how each is said)."""
    def keys(ids: Sequence[str]) -> str:
        return (f"{people_number(len(ids))} key{'' if len(ids) == 1 else 's'} it held live "
                f"({listed_names(ids, 5)})")
    return "; ".join(
        [*([f"{done[0]} {keys(revoked)}"] if revoked else []),
         *([f"{done[1]} {keys(rotated)} (each takes the secret it was given then, its "
            "old secret refused once its grace is over)"] if rotated else [])])


def _tenant_gone(record: KeyRecord, tenants: Collection[str]) -> str:
    """Why a key whose tenant the config no longer names is not given a new secret."""
    known = listed_names(sorted(tenants), quoted=True) or "none"
    return (f"key {record.id}'s tenant {json_quoted(record.tenant)} is no longer configured "
            f"(tenants: {known}), so the gateway refuses the key and a new secret would open "
            "nothing; add the tenant back under tenants: in the config (and reload the "
            "service) to rotate it, or revoke the key (switchpoint keys revoke ID, or DELETE "
            "/v1/router/keys/ID)")


def _full(live: int, most: int) -> ConflictError:
    """The refusal of a key past ``most`` live keys (``live`` held: more than ``most`` when
    the bound was lowered since they were made, which says how many to revoke)."""
    held = (f"the most the config's governance.max_keys allows ({people_number(most)}); "
            "revoke keys no longer used" if live <= most else
            f"more than the config's governance.max_keys allows ({people_number(most)}: it was "
            f"lowered since they were made); revoke at least {people_number(live - most + 1)} "
            "keys no longer used")
    return ConflictError(f"governance.max_keys: {people_number(live)} keys are live (neither "
                         f"revoked nor expired), {held} (switchpoint keys revoke ID, or DELETE "
                         "/v1/router/keys/ID), or raise governance.max_keys in the config (at "
                         f"most {people_number(MOST_MAX_KEYS)})", param="governance.max_keys")


def _remembered(old: list[tuple[str, float, float]], now: float
                ) -> list[tuple[str, float, float]]:
    """The old secrets (newest first) a key keeps beside the one a rotation replaces: at most
    :data:`MAX_OLD_SECRETS` - 1, forgetting first those whose grace is over, oldest first,
    then the oldest."""
    while len(old) > MAX_OLD_SECRETS - 1:
        over = [i for i, (_, until, _) in enumerate(old) if until <= now]
        old.pop(over[-1] if over else -1)
    return old


def prune_keys(data_dir: str | Path, cutoff: float | None, most_ended: int, *,
               dry_run: bool = False) -> int:
    """:meth:`KeyStore.prune` of ``data_dir``'s key store, opened for it alone (read-only for
    a ``dry_run``, which changes nothing); 0 where there is none (and none is made)."""
    store = KeyStore.in_dir(data_dir, reads_only=dry_run)
    if not store.path.is_file():
        return 0
    with store:
        return store.prune(cutoff, most_ended, dry_run=dry_run)


def logged_keys(db: str | Path, most: int = 3, *, after: float | None = None) -> list[str]:
    """Up to ``most`` ids of the keys the data_dir's main store ``db`` names (who asked, in its
    requests and decisions; who was charged, in its spend ledger; who gave feedback): keys
    made in the keys.db beside it; ``after``: those of the requests logged after that time
    alone (newest first, read by the requests' time index). None where there is no store, or
    the tables of an older schema name none; read without changing the file. A store that
    cannot be read is the :class:`StoreError` naming it: whether a keys.db is missing cannot
    be told without it."""
    path = Path(db)
    if not path.is_file():
        return []
    found: list[str] = []
    try:
        conn = read_only(path)
        try:
            if after is not None:
                columns = {r[1] for r in conn.execute(
                    "SELECT * FROM pragma_table_info('requests')")}
                if "key_id" in columns:
                    found = [str(r[0]) for r in conn.execute(
                        "SELECT key_id FROM requests WHERE ts > ? AND key_id IS NOT NULL "
                        "GROUP BY key_id ORDER BY max(ts) DESC LIMIT ?", (after, most))]
                return found
            for table in ("requests", "spend", "decisions", "feedback"):
                columns = {r[1] for r in conn.execute(
                    "SELECT * FROM pragma_table_info(?)", (table,))}
                if "key_id" not in columns:
                    continue
                for (key_id,) in conn.execute(
                        f"SELECT DISTINCT key_id FROM {table} WHERE key_id IS NOT NULL "
                        "LIMIT ?", (most,)):
                    if key_id not in found and len(found) < most:
                        found.append(str(key_id))
                if len(found) >= most:
                    break
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise store_error(path, "read which keys its log names", exc) from None
    return found


def holds_keys(data_dir: str | Path) -> bool:
    """Whether ``data_dir``'s key store holds a key (live or revoked), read without changing
    it. An unreadable store counts as holding some: what cannot be read is never thrown away."""
    path = Path(data_dir) / KEYS_FILENAME
    if not path.exists():
        return False
    try:
        conn = read_only(path)
        try:
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM keys)").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return True
    return bool(row[0])


def _not_a_key(key_id: str) -> InvalidKeyError:
    """The one answer for a key id this gateway never issued and for a wrong secret of one it
    did: which of the two it was would tell a caller guessing ids which exist."""
    return InvalidKeyError(f"key {PREFIX}{key_id}_... is not a key of this gateway: check the "
                           "key you were given (a rotated key's old secret stops working when "
                           "its grace period ends; a revoked or expired key is forgotten "
                           "once pruned; a replaced data_dir forgets every key)",
                           param="authorization")


def check_key_id(value: object) -> str:
    """``value`` if it is a key id (10 hex characters); else an :class:`InvalidInputError`
    that never repeats a secret (see :func:`_not_an_id`)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidInputError("id", _not_an_id(value))
    return value


def has_key_shape(value: str) -> bool:
    """Whether ``value`` is written as a client key is (``sp-<id>_<secret>``), whether or not
    such a key exists: what a message may say of a credential without checking it."""
    return _KEY.fullmatch(value.strip()) is not None


def _not_an_id(value: object) -> str:
    """Why ``value`` is not a key id, never repeating a secret: a whole key pasted where its id
    goes is named by its id alone, anything else is shown redacted and cut short."""
    from switchpoint._redact import redact

    how = "10 hex characters, as `switchpoint keys list` shows"
    if isinstance(value, str):
        whole = _KEY.fullmatch(value.strip())
        if whole is not None:
            return (f"is a whole client key (its secret included), not its id; use its id, "
                    f"{whole.group(1)} ({how})")
    return f"{cut(redact(json_quoted(value, 1000)))} is not a key id ({how})"


def _seq_of(cursor: object) -> int:
    """Where a page of the key list goes on from: the number of a ``next_cursor``
    (``seq-N``); an :class:`InvalidInputError` naming the problem for anything else (a key id
    is the cursor of a version of switchpoint that paged by the keys' clock)."""
    from switchpoint._redact import redact

    if isinstance(cursor, str):
        match = _CURSOR_FORM.fullmatch(cursor)
        if match is not None and int(match.group(1)) < 2**63:
            return int(match.group(1))
        if _ID.fullmatch(cursor):
            raise InvalidInputError("cursor", f"{json_quoted(cursor)} is a key id, the cursor of "
                                              "an older switchpoint's key list (which paged by "
                                              "the clock when each key was made); list again "
                                              "from the first page, without a cursor")
    shown = cut(redact(json_quoted(cursor, 1000)))
    raise InvalidInputError("cursor", f"{shown} is not a cursor of the key "
                                      f"list ({_CURSOR}<number>); pass the next_cursor of the "
                                      "previous page")


def _iso(ts: float | None) -> str:
    """``ts`` as an ISO date-time in UTC, to the second (``2027-02-01T00:00:00Z``)."""
    if ts is None:
        return "an unknown time"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_s(text: str, field: str) -> float:
    """A rotation's grace written as seconds (``90``) or with a unit (``90m``, ``1h``,
    ``2d``, ``1w``) in seconds, ``"1h"`` → 3600.0, if it is from 0 to :data:`MAX_GRACE_S`;
    anything else (not a duration, negative, too long, infinite as ``1e999`` is) is an
    :class:`InvalidInputError` naming ``field`` (the command line's option)."""
    give = f"give 0 to {people_number(MAX_GRACE_S)} seconds, or e.g. 90m, 1h, 2d or 30d"
    match = _RELATIVE.fullmatch(text)
    if match is None:
        seconds = number_text(text)
        if seconds is None:  # (told as the command line's other numbers are: _options)
            raise InvalidInputError(field, f"{json_quoted(text)} " + (
                f"is empty; {give}" if not text.strip() else
                f"is negative; {give}" if negative_text(text) else  # (-1e-400 too)
                TOO_SMALL if too_small(text) else
                f"{NOT_FINITE_TEXT}; {give}" if _not_finite_duration(text)
                else "is not a duration; give seconds or e.g. 90m, 1h, 2d"))
    else:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 <= seconds <= MAX_GRACE_S:  # (an infinite one too: 1e999, or 400 digits and d)
        raise InvalidInputError(field, f"{json_quoted(text)} is " + (
            "negative" if seconds < 0 else "longer than 30 days, the longest grace there is")
            + f"; {give}")
    return seconds
