"""Budget strings, calendar periods, the λ curve, and client keys (format, hashing, lifecycle)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest

from switchpoint._messages import listed_names
from switchpoint.config import load_settings
from switchpoint.errors import (
    ConfigError,
    ConflictError,
    InvalidInputError,
    InvalidKeyError,
    KeyExpiredError,
    KeyRevokedError,
    NotFoundError,
    StoreError,
)
from switchpoint.governance import keys as keys_module
from switchpoint.governance.budgets import (
    Budget,
    curve_value,
    parse_budget,
    parse_budgets,
    period_end,
    period_start,
)
from switchpoint.governance.keys import (
    MAX_EXPIRY,
    MAX_GRACE_S,
    IssuedKey,
    KeySpec,
    KeyStore,
    duration_s,
    hash_key,
    key_id_of,
    parse_expiry,
)
from switchpoint.store import line_journal
from tests.fakes.held_lock import held_lock
from tests.fakes.racing import at_once
from tests.fork_server import forks


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "budget"), [
    ("50/month", Budget(50.0, "month")), ("2.5/day", Budget(2.5, "day")),
    ("$10 / hour", Budget(10.0, "hour")), ("100 USD/week", Budget(100.0, "week")),
    ("0/day", Budget(0.0, "day")), ("1e-3/Day", Budget(0.001, "day")),
])
def test_budget_strings(text: str, budget: Budget) -> None:
    assert parse_budget(text) == budget
    assert str(parse_budget(str(budget))) == str(budget)


@pytest.mark.parametrize(("text", "shown"), [
    ("50/month", "50/month"), ("5e1/month", "50/month"), ("1234567.89/month", "1234567.89/month"),
    ("0.0000001/day", "0.0000001/day"), ("1e-10/day", "0.0000000001/day"),
    ("1e9/week", "1000000000/week"), ("999999999.99/hour", "999999999.99/hour"),
    ("0.1/day", "0.1/day"),
])
def test_a_budget_is_shown_as_written_and_reads_back_as_itself(text: str, shown: str) -> None:
    budget = parse_budget(text)
    assert str(budget) == shown  # (never rounded to 6 digits, never in scientific notation)
    assert parse_budget(str(budget)) == budget


@pytest.mark.parametrize(("text", "needle"), [
    ("50/fortnight", '"fortnight" is not a budget period; use one of "hour", "day", "week" or '
                     '"month"'),
    ("-5/day", "the amount is negative; write 0/day for a budget that allows no spend, or an "
               "amount from 1e-10 to 1,000,000,000 US dollars"),
    ("1e-300/week", '"1e-300/week": the amount is less than the least budget, 1e-10 US dollars '
                    "(the ledger shows a smaller one as 0); write 0/week"),
    ("9.9e-11/day", "the amount is less than the least budget"),
    ("fifty/month", "write AMOUNT/PERIOD"),
    ("50", "write AMOUNT/PERIOD"),
    ("1e12/day", "the amount is too large; it must be at most 1,000,000,000"),
    # (a number past the largest a float holds is too large, as the other numbers' wording
    # says, not "not finite": NaN is that)
    ("1e400/day", '"1e400/day": the amount is too large; it must be at most 1,000,000,000'),
    ("-1e400/day", "the amount is negative"),
    # (a float holds it as -0.0, but what is written is negative, not 0; -0/day is 0/day)
    ("-1e-400/day", '"-1e-400/day": the amount is negative; write 0/day for a budget'),
    ("1" * 400 + "/day", "the amount is too large; it must be at most"),
    # (float() reads these: each was "not a budget", as a word no number is)
    ("-inf/day", '"-inf/day": the amount is not a finite number (it is NaN or an infinity); '
                 "write 0/day for a budget that allows no spend"),
    ("$Infinity/month", "the amount is not a finite number (it is NaN or an infinity)"),
    ("nan usd/hour", "the amount is not a finite number (it is NaN or an infinity)"),
])
def test_bad_budget_strings_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_budget(text)
    assert needle in str(info.value)


def test_the_least_budget_is_taken_and_a_key_store_s_smaller_one_is_read_as_it_was() -> None:
    assert parse_budget("1e-10/day") == Budget(1e-10, "day")
    assert parse_budgets(["1e-300/day", "0/hour"], stored=True) == [Budget(1e-300, "day"),
                                                                     Budget(0.0, "hour")]
    with pytest.raises(ValueError, match="less than the least budget"):
        parse_budgets(["1e-300/day"])


def test_a_negative_duration_is_told_negative_and_expiry_takes_scientific_seconds() -> None:
    now = 1_797_000_000.0
    for text in ("-1h", "-90", "-0.5d"):
        with pytest.raises(InvalidInputError, match=r'^--grace: ".*" is negative; give 0 to '):
            duration_s(text, "--grace")
    with pytest.raises(InvalidInputError, match=r'^expires: "-1d" is a negative duration; '):
        parse_expiry("-1d", now)
    assert parse_expiry("1e10", now) == 1e10 and parse_expiry("1.8e9", now) == 1.8e9
    with pytest.raises(InvalidInputError, match=r'^expires: "-5" is negative: epoch seconds '):
        parse_expiry("-5", now)
    with pytest.raises(InvalidInputError, match="is not in the future"):
        parse_expiry("5", now)


def test_one_budget_per_period() -> None:
    assert parse_budgets("5/day") == [Budget(5.0, "day")]
    with pytest.raises(ValueError, match="two budgets per day"):
        parse_budgets(["5/day", "7/day"])


@pytest.mark.parametrize(("items", "needle"), [
    (["1/day"] * 50_000, "50000 budgets given; give at most 4, one per period"),
    (["x" * 100_000], "is not a budget"),
    (["1/" + "y" * 100_000], "is not a budget period"),
    ([{"amount": 5}], 'must be a string such as "50/month"'),
])
def test_a_long_budget_list_is_refused_in_a_short_message(items: list[object],
                                                          needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_budgets(items)  # type: ignore[arg-type]
    assert needle in str(info.value) and len(str(info.value)) < 300
    with pytest.raises(ConfigError) as config:
        load_settings(overrides={"tenants": {"acme": {"budgets": items}}}, environ={})
    assert needle in str(config.value) and len(str(config.value)) < 400


def test_calendar_periods_in_utc() -> None:
    t = ts("2026-03-18T13:45:10")  # a Wednesday
    assert period_start("hour", t) == ts("2026-03-18T13:00:00")
    assert period_end("hour", t) == ts("2026-03-18T14:00:00")
    assert period_start("day", t) == ts("2026-03-18T00:00:00")
    assert period_end("day", t) == ts("2026-03-19T00:00:00")
    assert period_start("week", t) == ts("2026-03-16T00:00:00")  # Monday
    assert period_end("week", t) == ts("2026-03-23T00:00:00")
    assert period_start("month", t) == ts("2026-03-01T00:00:00")
    assert period_end("month", t) == ts("2026-04-01T00:00:00")
    assert period_end("month", ts("2028-02-10T00:00:00")) == ts("2028-03-01T00:00:00")
    assert period_end("month", ts("2026-12-31T23:59:59")) == ts("2027-01-01T00:00:00")


def test_the_lambda_curve_is_piecewise_linear_and_flat_outside() -> None:
    curve = ((0.5, 0.0), (0.8, 1.0), (1.0, 5.0))
    assert curve_value(curve, 0.0) == 0.0
    assert curve_value(curve, 0.5) == 0.0
    assert curve_value(curve, 0.65) == pytest.approx(0.5)
    assert curve_value(curve, 0.8) == pytest.approx(1.0)
    assert curve_value(curve, 0.9) == pytest.approx(3.0)
    assert curve_value(curve, 3.0) == 5.0
    assert curve_value((), 0.9) == 0.0


def test_a_budget_curve_may_raise_lambda_to_the_most_a_request_routes_with() -> None:
    settings = load_settings(overrides={"tenants": {"acme": {"budget_curve": [[0, 1e4]]}}},
                             environ={})
    assert settings.tenants["acme"].curve == ((0.0, 1e4),)


@pytest.mark.parametrize(("overrides", "key", "needle"), [
    ({"tenants": {"acme": {"budgets": "50/fortnight"}}}, "tenants.acme.budgets",
     '"fortnight" is not a budget period'),
    ({"tenants": {"acme": {"budgets": ["-1/day"]}}}, "tenants.acme.budgets",
     "the amount is negative"),
    ({"tenants": {"acme": {"rpm": 0}}}, "tenants.acme.rpm", "must be >= 1"),
    ({"tenants": {"a b": {}}}, "tenants", 'tenant name "a b"'),
    ({"tenants": {"default": {"budgets": "1/day"}}}, "tenants",
     '"default" is taken by the requests that name no tenant'),
    ({"tenants": {"acme": {"budget_curve": [[0.8, 1], [0.5, 2]]}}},
     "tenants.acme.budget_curve", "must increase"),
    # (a λ past what a request may route with refused every request of the tenant as it filled)
    ({"tenants": {"acme": {"budget_curve": [[0.5, 1], [0.9, 20000]]}}},
     "tenants.acme.budget_curve",
     "point 1's cost_weight is 20000; the most a request may route with is 10,000"),
    ({"tenants": {"acme": {"sla": {"min_quality": 1}}}}, "tenants.acme.sla.min_quality",
     'known keys here: "max_latency_ms"'),
    ({"escalation": {"strategy": "sometimes"}}, "escalation.strategy", "must be one of"),
    ({"budgets": {"total": "5/eon"}}, "budgets.total", '"eon" is not a budget period'),
    ({"auth": "tokens"}, "auth", 'must be one of "none" or "keys", got "tokens"'),
    ({"tenants": {"acme": {"rpm": 10**30}}}, "tenants.acme.rpm", "must be <= 10,000,000"),
    ({"tenants": {"acme": {"tpm": 2**63}}}, "tenants.acme.tpm", "must be <= 10,000,000,000"),
    ({"models": [{"name": "a", "input_per_mtok": 1, "output_per_mtok": 1}],
      "tenants": {"acme": {"models": ["b"]}}}, "tenants.acme.models[0]",
     '"b" is not a model in the catalog'),
    ({"models": [{"name": "a", "input_per_mtok": 1, "output_per_mtok": 1}],
      "escalation": {"escalation_model": "zz"}}, "escalation.escalation_model",
     '"zz" is not a model'),
    ({"models": [{"name": "a", "input_per_mtok": 1, "output_per_mtok": 1}],
      "budgets": {"providers": {"acme-ai": "1/day"}}}, "budgets.providers.acme-ai",
     "no catalog model has the provider"),
])
def test_governance_config_errors_name_the_key(overrides: dict[str, object], key: str,
                                               needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides=overrides, environ={})
    assert info.value.key == key, info.value
    assert needle in str(info.value)


# Keys ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spec(**kw: object) -> KeySpec:
    return KeySpec(**{"tenant": "acme", **kw}).checked(["acme", "beta"], ["good", "cheap"])  # type: ignore[arg-type]


def test_a_key_is_shown_once_and_stored_as_its_hash(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        issued = store.create(spec(budgets=["5/day"], rpm=10, models=["cheap", "auto"]))
        key, record = issued.key, issued.record
        assert key.startswith(f"sp-{record.id}_") and len(key) == 3 + 10 + 1 + 43
        assert key_id_of(key) == record.id
        assert store.verify(key) == record
        assert record.models == ("cheap", "auto") and record.budgets == ("5/day",)
    # (its repr, which a log line or a traceback may show, names the key's id, not its secret)
    assert f"id='{record.id}'" in repr(issued) and key.split("_", 1)[1] not in repr(issued)
    raw = (tmp_path / "keys.db").read_bytes()
    assert key.encode() not in raw and key.split("_", 1)[1].encode() not in raw
    assert hash_key(key).encode() in raw
    assert (tmp_path / "keys.db").stat().st_mode & 0o077 == 0  # owner only


@pytest.mark.parametrize("bad", ["", "sk-abc", "sp-123", "sp-XXXXXXXXXX_" + "a" * 43,
                                 "sp-0123456789_" + "a" * 42, "Bearer sp-0123456789_" + "a" * 43,
                                 "sp-0123456789_" + "a" * 43 + "\n"])
def test_malformed_keys(tmp_path: Path, bad: str) -> None:
    with KeyStore(tmp_path / "keys.db") as store, pytest.raises(InvalidKeyError,
                                                                 match="malformed"):
        store.verify(bad)


def test_unknown_and_wrong_secret_keys(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        key = store.create(spec()).key
        with pytest.raises(InvalidKeyError, match="not a key of this gateway") as unknown:
            store.verify("sp-0123456789_" + "a" * 43)
        wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
        with pytest.raises(InvalidKeyError, match="not a key of this gateway") as mistaken:
            store.verify(wrong)
        # One answer for both: which it was would tell a caller guessing ids which exist.
        assert (str(unknown.value).replace("0123456789", key_id_of(key))
                == str(mistaken.value))


def test_revoked_and_expired_keys(tmp_path: Path) -> None:
    clock = Clock()
    store = KeyStore(tmp_path / "keys.db", clock=clock)
    with store:
        soon = store.create(KeySpec(tenant="acme", expires="1h"))
        assert soon.record.expires_at == pytest.approx(clock.now + 3600, abs=5)
        store.verify(soon.key)
        clock.now += 3601
        with pytest.raises(KeyExpiredError, match="expired at"):
            store.verify(soon.key)
        kept = store.create(KeySpec(tenant="acme"))
        store.revoke(kept.record.id)
        with pytest.raises(KeyRevokedError, match="was revoked"):
            store.verify(kept.key)
        assert store.revoke(kept.record.id).status(store.now()) == "revoked"  # idempotent


def test_rotation_keeps_the_id_and_honours_the_grace_period(tmp_path: Path) -> None:
    clock = Clock()
    with KeyStore(tmp_path / "keys.db", clock=clock) as store:
        old = store.create(spec(budgets=["5/day"]))
        new = store.rotate(old.record.id, grace_s=60)
        assert new.record.id == old.record.id and new.key != old.key
        assert new.record.budgets == ("5/day",)
        assert store.verify(new.key).id == old.record.id
        assert store.verify(old.key).id == old.record.id  # within the grace period
        clock.now += 61
        with pytest.raises(KeyRevokedError, match="grace period is over"):
            store.verify(old.key)
        newer = store.rotate(old.record.id)  # no grace: the old secret stops at once
        with pytest.raises(KeyRevokedError):
            store.verify(new.key)
        store.verify(newer.key)


def _paged(store: KeyStore, limit: int, cursor: str | None = None) -> tuple[list[str], str]:
    """Page from ``cursor`` to the last page: the ids listed, and the last cursor given."""
    ids: list[str] = []
    last = cursor or ""
    while True:
        records, cursor = store.page(limit=limit, cursor=cursor)
        ids += [r.id for r in records]
        if cursor is None:
            return ids, last
        last = cursor


def test_keys_made_while_the_clock_steps_back_are_each_listed_once_in_pages(
        tmp_path: Path) -> None:
    """The key list pages in the order keys were made, not by the clock when each was made:
    a key made after the clock was set back (an NTP step, a VM restored) was listed before
    the keys already paged past, so a listing under way skipped it."""
    clock = Clock()
    with KeyStore(tmp_path / "keys.db", clock=clock) as store:
        made = []
        for step in (0, -100, 50, -1000):
            clock.now += step
            made.append(store.create(spec()).record.id)
        first, cursor = store.page(limit=3)
        assert cursor is not None
        for _ in range(3):  # made while the listing is under way, the clock going back
            clock.now -= 10_000
            made.append(store.create(spec()).record.id)
        rest, _ = _paged(store, 2, cursor)
        listed = [r.id for r in first] + rest
        assert sorted(listed) == sorted(made)  # each once
        assert listed == made  # in the order made
        assert [r.id for r in store.list()] == made
        assert _paged(store, 1)[0] == made


def test_an_old_key_list_cursor_or_a_bad_one_is_refused_naming_what_to_do(
        tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        made = [store.create(spec()).record.id for _ in range(3)]
        for bad, needle in ((made[0], "the cursor of an older switchpoint's key list"),
                            ("seq-x", "is not a cursor of the key list (seq-<number>)"),
                            ("seq-" + "9" * 19, "is not a cursor"),
                            ("seq-1\n", "is not a cursor"),
                            ("sp-0123456789_" + "a" * 43, "is not a cursor")):
            with pytest.raises(InvalidInputError, match=re.escape(needle)) as caught:
                store.page(limit=1, cursor=bad)
            assert caught.value.field == "cursor" and "a" * 43 not in str(caught.value)
        assert store.page(limit=5, cursor="seq-1")[0] == store.list()[1:]


def test_a_key_store_of_the_first_schema_is_upgraded_in_the_order_its_keys_were_made(
        tmp_path: Path) -> None:
    """A keys.db written before the key list paged by the order keys were made: its keys,
    stored in an order their clocks contradict, are listed in the order they were stored,
    still verify, and keys made after the upgrade come after them."""
    from switchpoint.governance import keys as keys_module

    path = tmp_path / "keys.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN; {keys_module._MIGRATIONS[1]} PRAGMA user_version=1; COMMIT;")
    old = []
    for created in (300.0, 100.0, 200.0):
        key_id, key = keys_module.new_key()
        conn.execute("INSERT INTO keys (id, hash, tenant, created_at, budgets) "
                     "VALUES (?, ?, 'acme', ?, '[]')", (key_id, hash_key(key), created))
        old.append((key_id, key))
    conn.close()
    with KeyStore(path) as store:
        assert [r.id for r in store.list()] == [key_id for key_id, _ in old]
        assert all(store.verify(key).id == key_id for key_id, key in old)
        later = store.create(spec()).record.id
        assert _paged(store, 2)[0] == [*(key_id for key_id, _ in old), later]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == keys_module.SCHEMA_VERSION
    finally:
        conn.close()


def test_a_change_made_elsewhere_is_seen_at_the_next_lookup(tmp_path: Path) -> None:
    """The CLI revokes a key while the service has it cached."""
    service = KeyStore(tmp_path / "keys.db").open()
    cli = KeyStore(tmp_path / "keys.db").open()
    try:
        key = cli.create(spec()).key
        service.verify(key)  # cached now
        cli.revoke(key_id_of(key))
        with pytest.raises(KeyRevokedError):
            service.verify(key)
    finally:
        service.close()
        cli.close()


@pytest.mark.parametrize(("kw", "field", "needle"), [
    ({"tenant": "nobody"}, "tenant", 'unknown tenant "nobody"'),
    ({"budgets": ["50/fortnight"]}, "budget", '"fortnight" is not a budget period'),
    ({"budgets": ["-3/day"]}, "budget", "the amount is negative"),
    ({"rpm": 0}, "rpm", "whole number from 1 to 10,000,000, got 0"),
    ({"tpm": -5}, "tpm", "whole number from 1 to 10,000,000,000"),
    ({"rpm": 10**30}, "rpm", "whole number from 1 to 10,000,000, got 1000"),
    ({"tpm": 2**63}, "tpm", "whole number from 1 to 10,000,000,000, got 9223"),
    ({"expires": 10**400}, "expires", "too far off"),
    ({"expires": float("inf")}, "expires", "too far off"),
    ({"expires": float("nan")}, "expires", "is NaN, not a time"),  # (it was "too far off")
    ({"expires": float("-inf")}, "expires", "is negative: epoch seconds count from 1970-01-01"),
    ({"expires": -10**400}, "expires", "is negative: epoch seconds count from 1970-01-01"),
    ({"expires": -5}, "expires", "-5 is negative: epoch seconds count from 1970-01-01, so it is "
                                 "in the past; give epoch seconds past now"),
    ({"expires": "9" * 400 + "d"}, "expires", "too far off"),
    ({"expires": "10000-01-01"}, "expires", "is not a date"),
    ({"models": ["gpt-9"]}, "models", 'not in the catalog: "gpt-9"'),
    ({"models": []}, "models", "is empty"),
    ({"cost_weight": -1}, "cost_weight", ">= 0"),
    ({"expires": "2001-01-01"}, "expires", "not in the future"),
    ({"expires": "next tuesday"}, "expires", "is not a date"),
    ({"expires": "0.0001s"}, "expires", "a key must live at least 60 s"),
])
def test_bad_key_specs_create_nothing(tmp_path: Path, kw: dict[str, object], field: str,
                                      needle: str) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        with pytest.raises(InvalidInputError) as info:
            store.create(spec(**kw))
        assert info.value.field == field and needle in str(info.value)
        assert store.list() == []


def test_unknown_models_are_quoted_short() -> None:
    # Every unknown name was quoted whole: 256 names of any length made a 400 (or a CLI
    # error) of hundreds of kilobytes.
    names = ["x" * 256, *[(f"m{i}" * 500)[:256] for i in range(30)]]
    for tenant_models in (None, ["good"]):
        with pytest.raises(InvalidInputError) as info:
            KeySpec(tenant="acme", models=names).checked(
                ["acme"], ["good", "cheap"] if tenant_models is None else None,
                tenant_models=tenant_models)
        message = str(info.value)
        assert len(message) < 1500 and "and 11 more" in message, message[:300]
        assert 'xxx…"' in message  # (cut short inside its quotes)


def test_a_model_name_longer_than_any_is_refused_naming_its_place_quoted_short() -> None:
    with pytest.raises(InvalidInputError) as info:
        KeySpec(tenant="acme", models=["good", "x" * 100_000]).checked(["acme"], None)
    assert info.value.field == "models"
    assert str(info.value).startswith('models[1]: "xxx'), str(info.value)[:100]
    assert "must have at most 256 characters, got 100,000" in str(info.value)
    assert len(str(info.value)) < 300


def test_a_tenants_models_a_key_shares_none_of_are_listed_bounded() -> None:
    # A tenant of thousands of models (each name up to the catalog's bound) listed them all.
    tenant_models = [f"model-{i:04}-" + "y" * 200 for i in range(2000)]
    with pytest.raises(InvalidInputError) as info:
        KeySpec(tenant="acme", models=["other", "auto"]).checked(
            ["acme"], None, tenant_models=tenant_models)
    message = str(info.value)
    assert info.value.field == "models"
    assert len(message) < 2500, len(message)
    assert 'none of "other", "auto" is among the models tenant "acme" may use ("model-0000-' in (
        message)
    assert "model-0019-" in message and "model-0020-" not in message
    assert "and 1980 more); a key narrows its tenant's models" in message
    assert "y" * 100 not in message  # (each name cut short)


def test_a_keys_model_names_are_bounded_without_a_catalog_to_check_them() -> None:
    # Routing over the weights' own profiles (no catalog), a key's names were kept unchecked.
    checked = KeySpec(tenant="acme", models=["a", "b", "a"]).checked(["acme"], None)
    assert checked.models == ("a", "b")
    for models, needle in (([f"m{i}" for i in range(1002)], "lists 1,002 names; a key may "
                                                             "name at most 1,001"),
                           (["x" * 257], "must have at most 256 characters, got 257")):
        with pytest.raises(InvalidInputError) as info:
            KeySpec(tenant="acme", models=models).checked(["acme"], None)
        assert info.value.field == "models" and needle in str(info.value)
        assert len(str(info.value)) < 300


def test_a_negative_zero_is_kept_as_zero() -> None:
    # "-0/day" and a λ of -0.0 were kept, and listed, with their sign.
    made = spec(budgets=["-0/day"], cost_weight=-0.0)
    assert str(parse_budget("-0/day")) == "0/day"
    assert made.cost_weight == 0.0 and str(made.cost_weight) == "0.0"
    assert made.budgets == ("0/day",)


def test_expiry_forms() -> None:
    now = ts("2026-05-01T12:00:00")
    # A date is the last day the key works: it expires as that day ends (UTC).
    assert parse_expiry("2027-01-31", now) == ts("2027-02-01T00:00:00")
    assert parse_expiry("2027-12-31", now) == ts("2028-01-01T00:00:00")
    assert parse_expiry("2026-05-01", now) == ts("2026-05-02T00:00:00")  # through today
    assert parse_expiry("9999-12-31", now) == MAX_EXPIRY  # the last second a date can show
    # A date-time is exact, midnight included.
    assert parse_expiry("2027-01-31T00:00:00", now) == ts("2027-01-31T00:00:00")
    assert parse_expiry("2027-01-31T00:00:00+01:00", now) == ts("2027-01-30T23:00:00")
    assert parse_expiry("2027-01-31T06:30:00Z", now) == ts("2027-01-31T06:30:00")
    assert parse_expiry("30d", now) == now + 30 * 86400
    assert parse_expiry("90m", now) == now + 5400
    assert parse_expiry(None, now) is None


def test_digits_alone_are_epoch_seconds_not_a_basic_format_date() -> None:
    # Python reads "1797040523" as a date in 1797: epoch seconds whose digits happened to form
    # one were refused as "not in the future", depending on the clock.
    now = 1_797_000_000.0
    assert parse_expiry("1797040523", now) == 1_797_040_523.0
    assert parse_expiry(" 1797040523.5 ", now) == 1_797_040_523.5
    with pytest.raises(InvalidInputError, match="is not in the future"):
        parse_expiry("20270131", now)  # (1970-08-23 as epoch seconds; a date is 2027-01-31)


@pytest.mark.parametrize("expires", [
    "\u0663\u0660d",  # Arabic-Indic 30d
    "\uff13\uff10d",  # fullwidth 30d
    "".join(chr(0x0660 + int(d)) for d in "1797040523"),  # Arabic-Indic epoch seconds
])
def test_an_expiry_is_written_in_ascii_digits(expires: str) -> None:
    # float() reads Arabic-Indic and fullwidth digits, so '٣٠d' was 30 days.
    with pytest.raises(InvalidInputError, match="is not a date"):
        parse_expiry(expires, 1_797_000_000.0)


@pytest.mark.parametrize("grace", ["1_0", "\u0665", "\u0665m"])
def test_a_grace_is_written_in_ascii_digits(grace: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^--grace: .* is not a duration"):
        duration_s(grace, "--grace")
    assert duration_s("90", "--grace") == 90.0 and duration_s("1.5m", "--grace") == 90.0


@pytest.mark.parametrize("grace", ["nan", "inf", "-Infinity", "-infh", "NaNm"])
def test_a_grace_of_nan_or_an_infinity_is_told_it_is_not_finite(grace: str) -> None:
    # It was "not a duration", as a word no number is: float() reads it, as NaN or infinity.
    with pytest.raises(InvalidInputError, match=r'^--grace: ".*" is not a finite number \(it is '
                                                r"NaN or an infinity\); give 0 to 2,592,000 "
                                                r"seconds"):
        duration_s(grace, "--grace")


def test_a_grace_too_small_to_be_told_from_0_is_refused_saying_so() -> None:
    with pytest.raises(InvalidInputError, match=r'^--grace: "1e-400" is too small a number to '
                                                r"be told from 0"):
        duration_s("1e-400", "--grace")
    assert duration_s("0", "--grace") == 0.0 and duration_s("-0", "--grace") == 0.0


@pytest.mark.parametrize(("grace", "why"), [
    ("1e999", "longer than 30 days"),  # infinite
    ("9" * 400 + "d", "longer than 30 days"),  # more digits than a float holds: infinite
    ("2592001", "longer than 30 days"),
    ("31d", "longer than 30 days"),
    ("721h", "longer than 30 days"),
    ("5w", "longer than 30 days"),
    ("-5", "negative"),
    ("-1e999", "negative"),
])
def test_a_grace_that_is_infinite_negative_or_over_30_days_is_refused_naming_the_option(
        grace: str, why: str) -> None:
    # 1e999 was an infinite grace, refused later by the rotation naming its grace_s.
    with pytest.raises(InvalidInputError, match=rf'^--grace: ".* is {why}[^;]*; give 0 to '
                                                r"2,592,000 seconds, or e\.g\. 90m") as caught:
        duration_s(grace, "--grace")
    assert caught.value.field == "--grace" and len(str(caught.value)) < 200
    assert duration_s("30d", "--grace") == duration_s("2592000", "--grace") == MAX_GRACE_S


@pytest.mark.parametrize("expires", ["0.0001s", "59s", "0.5m", 1_800_000_030.0])
def test_a_key_must_live_at_least_a_minute(expires: str | float) -> None:
    # A key expiring in 0.0001 s was made, dead before anyone could use it.
    now = 1_800_000_000.0
    with pytest.raises(InvalidInputError, match=r"^expires: .* s from now; a key must live at "
                                                r"least 60 s \(give e\.g\. 1m, 1h or 30d"):
        parse_expiry(expires, now)
    assert parse_expiry("1m", now) == now + 60


def test_ids_are_checked_before_lookup(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        with pytest.raises(InvalidInputError, match="is not a key id"):
            store.revoke("x' OR 1=1 --")
        with pytest.raises(InvalidInputError, match="is not a key id"):
            store.revoke("0123456789\n")  # (the whole id, not one a newline trails)
        with pytest.raises(NotFoundError, match="no key has the id"):
            store.rotate("0123456789")
        with pytest.raises(InvalidInputError, match="is not a key id"):  # the whole of it
            store.revoke("0123456789\n")
    assert sqlite3.connect(tmp_path / "keys.db").execute("SELECT count(*) FROM keys"
                                                         ).fetchone()[0] == 0


def test_two_openers_of_an_old_key_store_at_once_both_open_it_upgraded(
        tmp_path: Path) -> None:
    """`switchpoint keys` and the service open a keys.db of the first schema at the same
    moment: one upgrades it, the other waits for that and finds it up to date; neither fails,
    and every key still verifies."""
    from switchpoint.governance import keys as keys_module

    for attempt in range(25):
        path = tmp_path / f"{attempt}" / "keys.db"
        path.parent.mkdir(mode=0o700)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executescript(f"BEGIN; {keys_module._MIGRATIONS[1]} PRAGMA user_version=1; "
                           "COMMIT;")
        key_id, key = keys_module.new_key()
        conn.execute("INSERT INTO keys (id, hash, tenant, created_at, budgets) "
                     "VALUES (?, ?, 'acme', 100.0, '[]')", (key_id, hash_key(key)))
        conn.close()
        path.chmod(0o600)
        seen = at_once(partial(_verified_and_listed, path, key))
        assert seen == [(key_id, [key_id])] * 2, (attempt, seen)
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == keys_module.SCHEMA_VERSION
        finally:
            conn.close()



def _verified_and_listed(path: Path, key: str) -> tuple[str, list[str]]:
    with KeyStore(path) as store:
        return store.verify(key).id, [r.id for r in store.list()]


def test_each_old_secret_keeps_its_own_grace_across_rotations(tmp_path: Path) -> None:
    # A second rotation cut the first old secret's grace short: it stopped working at once.
    clock = Clock()
    with KeyStore(tmp_path / "keys.db", clock=clock) as store:
        first = store.create(spec())
        start = clock.now
        second = store.rotate(first.record.id, grace_s=3600)
        clock.now += 600
        third = store.rotate(first.record.id, grace_s=3600)
        for key in (first.key, second.key, third.key):
            assert store.verify(key).id == first.record.id
        assert [(o["rotated_at"], o["valid_until"])
                for o in third.to_dict(store.now())["previous_secrets"]] == [
            (start + 600, start + 4200), (start, start + 3600)]
        clock.now = start + 3601  # the first secret's own grace is over, the second's is not
        with pytest.raises(KeyRevokedError, match="grace period is over"):
            store.verify(first.key)
        assert store.verify(second.key).id == first.record.id
        # A rotation without grace ends the secret it replaces, not the earlier ones'.
        fourth = store.rotate(first.record.id)
        with pytest.raises(KeyRevokedError):
            store.verify(third.key)
        assert store.verify(second.key).id == first.record.id
    with KeyStore(tmp_path / "keys.db", clock=clock) as reopened:  # kept on disk
        assert reopened.verify(second.key).id == first.record.id
        assert reopened.verify(fourth.key).id == first.record.id


def test_a_key_remembers_a_few_old_secrets_forgetting_the_expired_then_the_oldest(
        tmp_path: Path) -> None:
    from switchpoint.governance.keys import MAX_OLD_SECRETS

    clock = Clock()
    with KeyStore(tmp_path / "keys.db", clock=clock) as store:
        issued = [store.create(spec())]
        key_id = issued[0].record.id
        issued.append(store.rotate(key_id, grace_s=0))  # the first secret stops at once
        for _ in range(MAX_OLD_SECRETS + 1):
            clock.now += 1
            issued.append(store.rotate(key_id, grace_s=3600))
        old = store.find(key_id).old_secrets()
        assert len(old) == MAX_OLD_SECRETS
        # Remembered: the newest old secrets; the expired first one and then the oldest live
        # one were forgotten, and a forgotten secret is simply wrong.
        newest_old = issued[-2:-2 - MAX_OLD_SECRETS:-1]
        assert [h for h, _, _ in old] == [hash_key(i.key) for i in newest_old]
        for forgotten in issued[:2]:
            with pytest.raises(InvalidKeyError, match="not a key of this gateway"):
                store.verify(forgotten.key)
        for kept in issued[-1 - MAX_OLD_SECRETS:]:
            assert store.verify(kept.key).id == key_id


def test_a_key_file_deleted_under_the_running_store_is_neither_written_past_nor_made_empty(
        tmp_path: Path) -> None:
    """``keys.db`` deleted while the service runs: the store went on with the file it had
    open, so its old keys kept working until the restart and a key made meanwhile went into
    a file no start reads; then it made a new, empty one at the next use, so every key
    stopped working unsaid. Each use is now refused as a damaged file's is, naming the file
    (a report's look-up of which keys are held, a prune and a count too, which found no keys),
    and none is made; a file put at the path (a backup restored, or one a command beside the
    service made) is used from the next use. A file that held no key is made again."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as store:
        first = store.create(spec()).key
        for name in ("keys.db", "keys.db-wal", "keys.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        # (a report's "is this key's record still held", a prune's and a count's, too: they
        # found no file and answered none, every key pruned)
        for use in (partial(store.verify, first), partial(store.create, spec()),
                    partial(store.held, [key_id_of(first)]), partial(store.prune, None, 0),
                    store.live_count):
            with pytest.raises(StoreError) as refused:
                use()
            assert refused.value.damaged, refused.value
            assert (f"{str(path)!r}: cannot " in str(refused.value) and ": it was deleted "
                    "while the service ran, holding keys; restore it from a backup"
                    in str(refused.value)), refused.value
        assert not path.exists()  # (none made, empty)
        with KeyStore(path) as beside:  # `switchpoint keys create` beside the service
            made = beside.create(spec()).key
        assert store.verify(made).id == key_id_of(made)
        with pytest.raises(InvalidKeyError, match="not a key of this gateway"):
            store.verify(first)  # (the file at the path is the one used)
    with KeyStore(path) as reopened:  # what a restart sees
        assert reopened.verify(made).id == key_id_of(made)
    empty = tmp_path / "empty" / "keys.db"
    with KeyStore(empty) as store:
        assert store.list() == []
        empty.unlink()
        assert store.create(spec()).record.id in {k.id for k in store.list()}
    assert empty.is_file()


def _stored_clock(path: Path) -> float:
    """The latest time the key store at ``path`` has recorded seeing, read from the file."""
    conn = sqlite3.connect(path)
    try:
        return float(conn.execute("SELECT latest FROM clock").fetchone()[0])
    finally:
        conn.close()


def test_an_expired_key_stays_expired_when_the_clock_is_set_back(tmp_path: Path) -> None:
    """Expiry is judged against the latest time the store has seen, not the clock alone: a
    clock set back (an NTP step, an operator's mistake) brings no expired key back, nor an
    old secret whose grace is over, also after a restart."""
    clock = Clock()
    path = tmp_path / "keys.db"
    with KeyStore(path, clock=clock) as store:
        soon = store.create(spec(expires="1h"))
        rotated = store.create(spec())
        old_secret = rotated.key
        store.rotate(rotated.record.id, grace_s=600)
        clock.now += 3601
        with pytest.raises(KeyExpiredError, match="expired at"):
            store.verify(soon.key)
        with pytest.raises(KeyRevokedError, match="grace period is over"):
            store.verify(old_secret)
        clock.now -= 7200  # set back to before the key expired and before the grace ended
        with pytest.raises(KeyExpiredError, match="expired at"):
            store.verify(soon.key)
        with pytest.raises(KeyRevokedError, match="grace period is over"):
            store.verify(old_secret)
        assert store.find(soon.record.id).status(store.now()) == "expired"
        assert store.now() == pytest.approx(clock.now + 7200)
    with KeyStore(path, clock=clock) as restarted:  # the clock still behind
        with pytest.raises(KeyExpiredError, match="expired at"):
            restarted.verify(soon.key)
        with pytest.raises(KeyRevokedError, match="grace period is over"):
            restarted.verify(old_secret)


def test_a_key_judged_expired_stays_expired_after_a_crash(tmp_path: Path) -> None:
    """A key refused as expired never comes back, even when the process stops without closing
    the store (so without writing its latest time on the way out) and the clock is behind."""
    clock = Clock()
    path = tmp_path / "keys.db"
    crashed = KeyStore(path, clock=clock).open()
    soon = crashed.create(spec(expires="2m"))
    clock.now += 100
    crashed.verify(soon.key)  # the store's latest time is written now (100 s on)
    clock.now += 21  # expired, 21 s after the time written: under the step of a write
    with pytest.raises(KeyExpiredError):
        crashed.verify(soon.key)
    clock.now -= 3600
    restarted = KeyStore(path, clock=clock).open()  # (the first never closed)
    try:
        with pytest.raises(KeyExpiredError):
            restarted.verify(soon.key)
    finally:
        restarted.close()
        crashed.close()


def _stored_soon(path: Path, latest: float, within_s: float = 10.0) -> float:
    """The time the key store at ``path`` holds once it holds ``latest`` (the clock writer
    writes on its own thread), or what it holds after ``within_s``."""
    deadline = time.monotonic() + within_s
    while (held := _stored_clock(path)) < latest and time.monotonic() < deadline:
        time.sleep(0.02)
    return held


def test_the_key_stores_latest_time_is_written_by_the_minute_not_at_every_lookup(
        tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "keys.db"
    with KeyStore(path, clock=clock) as store:
        key = store.create(spec()).key
        first = _stored_soon(path, clock.now)
        assert first == pytest.approx(clock.now)
        for _ in range(50):  # 50 lookups over 50 s: not one write
            clock.now += 1.0
            store.verify(key)
        time.sleep(0.2)  # (time for a write had one been handed to the writer)
        assert _stored_clock(path) == first
        clock.now += 11.0
        store.verify(key)  # a minute on: written
        assert _stored_soon(path, clock.now) == clock.now
        clock.now += 5.0
        store.verify(key)
        time.sleep(0.2)
        assert _stored_clock(path) == clock.now - 5.0
    assert _stored_clock(path) == clock.now  # written on a clean close


def test_a_lookup_does_not_wait_for_the_disk_to_take_the_stores_latest_time(
        tmp_path: Path) -> None:
    """Moving the store's time on hands the write to the clock writer's thread: a lookup on
    an event loop goes on at once even while another process holds the file's write lock (a
    backup, the CLI), and the time is in the file once the lock is let go."""
    clock = Clock()
    path = tmp_path / "keys.db"
    with KeyStore(path, clock=clock) as store:
        key = store.create(spec()).key
        _stored_soon(path, clock.now)
        with held_lock(path):
            clock.now += 61.0
            started = time.monotonic()
            store.verify(key)  # a minute on: the time is due to be written
            store.now()
            took = time.monotonic() - started
        assert took < 1.0, f"a lookup waited {took:.1f} s for the file's write lock"
        assert _stored_soon(path, clock.now) == clock.now


def test_a_refusal_not_waited_for_is_held_off_the_caller_until_the_file_holds_it(
        tmp_path: Path) -> None:
    """An expired key refused on an event loop (``wait=False``) is refused at once; the
    caller answers after :meth:`hold_refusals`, which returns once the file holds a time past
    the expiry: the refusal outlasts a crash (the store never closed) with the clock set
    back."""
    clock = Clock()
    path = tmp_path / "keys.db"
    crashed = KeyStore(path, clock=clock).open()
    soon = crashed.create(spec(expires="2m"))
    _stored_soon(path, clock.now)
    clock.now += 121.0
    with held_lock(path) as holder:
        started = time.monotonic()
        with pytest.raises(KeyExpiredError):
            crashed.verify(soon.key, wait=False)
        assert time.monotonic() - started < 1.0
        assert soon.record.expires_at is not None
        assert _stored_clock(path) < soon.record.expires_at  # (not yet: the lock is held)
        held = threading.Thread(target=crashed.hold_refusals)
        held.start()
        held.join(0.5)
        assert held.is_alive(), "the refusal was answered before the file held its time"
        assert holder.stdin is not None
        holder.stdin.close()  # the lock let go
        held.join(10)
        assert not held.is_alive()
    assert _stored_clock(path) >= soon.record.expires_at
    clock.now -= 3600
    restarted = KeyStore(path, clock=clock).open()  # (the first never closed)
    try:
        with pytest.raises(KeyExpiredError):
            restarted.verify(soon.key)
    finally:
        restarted.close()
        crashed.close()


def test_only_a_refusal_whose_clock_write_is_under_way_has_the_caller_wait(
        tmp_path: Path) -> None:
    """``refusals_pending`` says whether a refused caller must wait (off the loop) for a clock
    write: not for a key that is unknown or malformed, nor for one expired at a time the file
    holds; yes while the write a refusal posted is under way, and no once it was tried."""
    clock = Clock()
    path = tmp_path / "keys.db"
    with KeyStore(path, clock=clock) as store:
        soon = store.create(spec(expires="2m"))
        _stored_soon(path, clock.now)
        for unknown in ("sp-0123456789_" + "a" * 43, "not a key"):
            with pytest.raises(InvalidKeyError):
                store.verify(unknown, wait=False)
            assert not store.refusals_pending()
        clock.now += 121.0
        with held_lock(path) as holder:
            with pytest.raises(KeyExpiredError):
                store.verify(soon.key, wait=False)
            assert store.refusals_pending()
            assert holder.stdin is not None
            holder.stdin.close()  # the lock let go
            deadline = time.monotonic() + 10
            while store.refusals_pending() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not store.refusals_pending()
        assert soon.record.expires_at is not None
        assert _stored_clock(path) >= soon.record.expires_at
        with pytest.raises(KeyExpiredError):  # (the file holds its time: nothing to wait for)
            store.verify(soon.key, wait=False)
        assert not store.refusals_pending()


def test_a_key_store_of_an_older_schema_starts_its_clock_at_the_latest_time_it_recorded(
        tmp_path: Path) -> None:
    from switchpoint.governance import keys as keys_module

    path = tmp_path / "keys.db"
    conn = sqlite3.connect(path, isolation_level=None)
    script = " ".join(keys_module._MIGRATIONS[v] for v in (1, 2, 3))
    conn.executescript(f"BEGIN; {script} PRAGMA user_version=3; COMMIT;")
    key_id, key = keys_module.new_key()
    conn.execute("INSERT INTO keys (id, hash, tenant, created_at, expires_at, revoked_at, "
                 "budgets, seq) VALUES (?, ?, 'acme', 1000, 5000, NULL, '[]', 1)",
                 (key_id, hash_key(key)))
    other_id, other = keys_module.new_key()
    conn.execute("INSERT INTO keys (id, hash, tenant, created_at, revoked_at, rotated_at, "
                 "budgets, seq) VALUES (?, ?, 'acme', 2000, NULL, 6000, '[]', 2)",
                 (other_id, hash_key(other)))
    conn.close()
    clock = Clock(4000.0)  # behind the rotation the file recorded at 6000
    with KeyStore(path, clock=clock) as store:
        with pytest.raises(KeyExpiredError):
            store.verify(key)
        assert store.now() == 6000.0
    assert _stored_clock(path) == 6000.0


def test_the_latest_time_another_process_recorded_is_seen_at_the_next_lookup(
        tmp_path: Path) -> None:
    """The CLI beside the service saw a later time (and wrote it on closing): the service,
    whose own clock is behind, judges its keys at that time from its next lookup on."""
    service_clock, cli_clock = Clock(), Clock()
    path = tmp_path / "keys.db"
    service = KeyStore(path, clock=service_clock).open()
    try:
        soon = service.create(spec(expires="10m"))
        service.verify(soon.key)
        cli_clock.now += 601
        with KeyStore(path, clock=cli_clock) as cli:
            assert cli.find(soon.record.id).status(cli.now()) == "expired"
        with pytest.raises(KeyExpiredError):
            service.verify(soon.key)
        assert service.now() == cli_clock.now
    finally:
        service.close()


@pytest.mark.parametrize("how", ["replaced", "deleted", "replaced_then_stopped"])
def test_a_key_file_gone_alone_under_the_store_gets_none_of_the_old_log(
        tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    """``keys.db`` replaced alone (a backup moved over it) or deleted alone while the service
    runs leaves the old file's ``-wal`` and ``-shm`` at the path: the store opened the file
    now there with them, so SQLite replayed the old file's last changes into it (a restored
    backup written over: a key made after it, or revoked after it, came back as it was). It
    now removes them before it opens the file at the path, or as it closes (a stop before
    any key is looked up again)."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as store:
        kept = store.create(spec()).key
        backup = tmp_path / "backup.db"
        src, dst = sqlite3.connect(path), sqlite3.connect(backup)
        src.backup(dst)
        src.close()
        dst.close()
        later = store.create(spec()).key  # in the -wal only: no checkpoint yet
        store.revoke(key_id_of(kept))
        assert (tmp_path / "keys.db-wal").stat().st_size > 0
        if how == "deleted":
            path.unlink()
        else:
            os.replace(backup, path)
        if how == "deleted":  # (none is made in its place: see the test above)
            with pytest.raises(StoreError, match="it was deleted while the service ran"):
                store.verify(later)
        elif how != "replaced_then_stopped":
            with pytest.raises(InvalidKeyError, match="not a key of this gateway"):
                store.verify(later)
            assert f"keys.db was {how}" in caplog.text
    if how == "deleted":  # (the old file's log left the path as the store closed)
        assert not (tmp_path / "keys.db-wal").exists() and not path.exists()
    else:
        with KeyStore(path) as restarted:  # the backup as it was, its key revoked again
            with pytest.raises(KeyRevokedError):
                restarted.verify(kept)
            with pytest.raises(InvalidKeyError, match="not a key of this gateway"):
                restarted.verify(later)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_key_revoked_after_a_backup_stays_revoked_when_the_backup_is_restored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A backup of keys.db taken, a key revoked after it, then the backup restored (the
    service stopped): the next opening revokes that key again, at the time it was revoked,
    and says which key and that what else changed since the backup is not in the file, where
    the key worked again; a key revoked before the backup, and one still live, are as they
    were. A damaged line of the file that keeps revocations is passed over, named."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as store:
        early, leaked, live = (store.create(spec()).key for _ in range(3))
        store.revoke(key_id_of(early))
        backup = tmp_path / "backup.db"
        with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)
        src.close()
        dst.close()
        revoked_at = store.revoke(key_id_of(leaked)).revoked_at
    with (tmp_path / "keys.revocations.jsonl").open("a") as fh:
        fh.write("{not a revocation\n")
    os.replace(backup, path)
    for side in ("keys.db-wal", "keys.db-shm"):
        (tmp_path / side).unlink(missing_ok=True)
    with caplog.at_level("WARNING", logger="switchpoint"), KeyStore(path) as restored:
        with pytest.raises(KeyRevokedError):
            restored.verify(leaked)
        with pytest.raises(KeyRevokedError):
            restored.verify(early)
        assert restored.verify(live).id == key_id_of(live)
        assert restored.find(key_id_of(leaked)).revoked_at == revoked_at
    assert (f"revoked again 1 key it held live ({key_id_of(leaked)}), made after this "
            "file was taken (a backup restored)") in caplog.text, caplog.text
    assert "keys made since are unknown: 401" in caplog.text, caplog.text
    assert "keys.revocations.jsonl: passed over line(s) 3: not a revocation" in caplog.text


def _restore(backup: Path, path: Path) -> None:
    """Put the copy ``backup`` of the key store ``path`` in its place (the service stopped)."""
    os.replace(backup, path)
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink(missing_ok=True)


def _backup(path: Path) -> Path:
    backup = path.with_name("backup.db")
    with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return backup


def test_a_key_rotated_after_a_backup_keeps_its_new_secret_when_the_backup_is_restored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A key rotated (twice) after a backup of keys.db, another rotated with a grace, then the
    backup restored: the next opening makes the rotations again, so the old (perhaps leaked)
    secrets are refused once their grace is over and the new ones work, where the restored
    file took the old secret and refused the new one; the file kept beside keys.db holds no
    secret."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as store:
        first, graced = store.create(spec()), store.create(spec())
        backup = _backup(path)
        middle = store.rotate(first.record.id).key
        newest = store.rotate(first.record.id).key
        fresh = store.rotate(graced.record.id, grace_s=3600).key
        rotated = store.find(first.record.id)
    _restore(backup, path)
    with caplog.at_level("WARNING", logger="switchpoint"), KeyStore(path) as restored:
        for old in (first.key, middle):
            with pytest.raises(KeyRevokedError, match="grace period is over"):
                restored.verify(old)
        assert restored.verify(newest).id == first.record.id
        assert restored.find(first.record.id) == rotated
        assert restored.verify(fresh).id == restored.verify(graced.key).id == graced.record.id
    assert (f"rotated again 2 keys it held live ({first.record.id}, {graced.record.id})"
            in caplog.text), caplog.text
    kept = (tmp_path / "keys.revocations.jsonl").read_text()
    assert all(secret.split("_", 1)[1] not in kept
               for secret in (first.key, middle, newest, fresh, graced.key))


def test_a_reader_of_a_restored_backup_too_big_to_copy_says_what_the_service_enforces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A key revoked after a backup, the backup restored: a reader (keys list) shows the key
    revoked; past the bound of what a reader copies into memory, it shows the file as it is
    and says the service revokes that key, where it said nothing."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as store:
        key_id = store.create(spec()).record.id
        backup = _backup(path)
        store.revoke(key_id)
    _restore(backup, path)
    with KeyStore(path, reads_only=True) as reader:
        assert reader.find(key_id).revoked_at is not None
    monkeypatch.setattr(keys_module, "MAX_UPGRADE_COPY_BYTES", 0)
    with caplog.at_level("WARNING", logger="switchpoint"), \
            KeyStore(path, reads_only=True) as reader:
        assert reader.find(key_id).revoked_at is None
    assert ("shown as the file holds them (too big to copy), not as the service enforces "
            f"them: the service revokes 1 key it held live ({key_id})") in caplog.text


def test_a_revocation_kept_after_a_line_a_crash_cut_short_stays_revoked_on_a_restore(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The file that keeps revocations ends in a line a crash cut short (no newline): the
    next revocation goes on a line of its own, so a restored backup revokes the key again,
    where it was joined to the cut line, read as one damaged line, and the key worked again."""
    path, kept = tmp_path / "keys.db", tmp_path / "keys.revocations.jsonl"
    with KeyStore(path) as store:
        early, leaked = (store.create(spec()) for _ in range(2))
        backup = _backup(path)
        store.revoke(early.record.id)
        kept.write_bytes(kept.read_bytes()[:-9])  # (a crash as the line was written)
        store.revoke(leaked.record.id)
    _restore(backup, path)
    with caplog.at_level("WARNING", logger="switchpoint"), KeyStore(path) as restored:
        with pytest.raises(KeyRevokedError):
            restored.verify(leaked.key)
        assert restored.verify(early.key).id == early.record.id  # (its line was cut)
    assert "keys.revocations.jsonl: passed over line(s) 1: not a revocation" in caplog.text


def test_a_revocation_the_system_writes_in_parts_stays_revoked_on_a_restore(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The system takes a revocation's line a few bytes a write (as a disk filling up may):
    the rest is written too, so a restored backup revokes the key again, where the line was
    left cut and the key worked again."""
    path = tmp_path / "keys.db"
    real = os.write
    with KeyStore(path) as store:
        issued = store.create(spec())
        backup = _backup(path)
        with monkeypatch.context() as parts:
            parts.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:7])))
            store.revoke(issued.record.id)
    _restore(backup, path)
    with KeyStore(path) as restored, pytest.raises(KeyRevokedError):
        restored.verify(issued.key)


def test_a_revocations_file_that_cannot_be_read_is_said_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """keys.revocations.jsonl cannot be read (here a symbolic link, which is not followed):
    the opening says so and that the revocations it keeps are not made again, where it took
    it for an empty file and said nothing."""
    path, kept = tmp_path / "keys.db", tmp_path / "keys.revocations.jsonl"
    with KeyStore(path) as store:
        issued = store.create(spec())
        backup = _backup(path)
        store.revoke(issued.record.id)
    kept.rename(tmp_path / "elsewhere.jsonl")
    kept.symlink_to(tmp_path / "elsewhere.jsonl")
    _restore(backup, path)
    with caplog.at_level("WARNING", logger="switchpoint"), KeyStore(path):
        pass
    assert ("keys.revocations.jsonl cannot be read" in caplog.text
            and "no revocation or rotation it keeps is made again" in caplog.text), caplog.text


def test_the_kept_revocations_survive_a_failure_while_their_file_is_cut_to_its_newer_half(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file that keeps revocations past its bound is cut to its newer half: a failure
    mid-way (the process dying) leaves it whole and the key unrevoked, where it left it
    emptied and a restored backup took every key revoked since back; done, it holds the newer
    half and the new revocation, private, with no temporary file left beside it."""
    monkeypatch.setattr(keys_module, "MAX_REVOCATIONS_BYTES", 120)  # (two lines, not three)
    path, kept = tmp_path / "keys.db", tmp_path / "keys.revocations.jsonl"
    with KeyStore(path) as store:
        ids = [store.create(spec()).record.id for _ in range(3)]
        backup = _backup(path)
        store.revoke(ids[0])
        store.revoke(ids[1])
        before = kept.read_bytes()

        def dying(fd: int, data: bytes) -> int:
            raise OSError(5, "Input/output error")

        with monkeypatch.context() as failing:
            failing.setattr(os, "write", dying)
            with pytest.raises(StoreError, match="cannot keep the revocation of key"):
                store.revoke(ids[2])
        assert kept.read_bytes() == before
        assert store.find(ids[2]).revoked_at is None
        store.revoke(ids[2])
    assert [json.loads(line)["id"] for line in kept.read_text().splitlines()] == ids[1:]
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if "revocations" in p.name) == [kept.name]
    _restore(backup, path)
    with KeyStore(path) as restored:
        assert [restored.find(i).revoked_at is None for i in ids] == [True, False, False]


def test_a_key_file_whose_wal_was_deleted_is_opened_again_and_seen_by_the_cli(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``keys.db-wal`` deleted while the service runs: its changes went on into a log no other
    connection sees (the CLI beside the service, or a start after a crash). The store now
    writes the log it has into the file and opens it again."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as store:
        first = store.create(spec()).key
        (tmp_path / "keys.db-wal").unlink()
        second = store.create(spec()).key
        with KeyStore(path) as cli:  # another connection, as the CLI's
            assert cli.verify(first).id == key_id_of(first)
            assert cli.verify(second).id == key_id_of(second)
        assert "keys.db had its -wal file deleted" in caplog.text


def _tamper_clock(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()


@pytest.mark.parametrize("sql", ["UPDATE clock SET latest = 'soon'",
                                 "UPDATE clock SET latest = x'00'",
                                 "DELETE FROM clock"])
def test_a_key_store_whose_recorded_time_is_no_number_or_gone_falls_back_to_its_keys_times(
        tmp_path: Path, sql: str, caplog: pytest.LogCaptureFixture) -> None:
    """keys.db edited by hand (its clock row made text, or deleted): the store still opens and
    judges keys at the latest time its keys recorded (as a file of an older schema does), says
    so in the log, and writes a time again (so a clock set back later revives nothing)."""
    clock = Clock()
    path = tmp_path / "keys.db"
    with KeyStore(path, clock=clock) as store:
        soon = store.create(spec(expires="2m"))
        kept = store.create(spec())
        clock.now += 600
        store.revoke(store.create(spec()).record.id)  # the keys' latest time: now
    revoked_at = clock.now
    _tamper_clock(path, sql)
    clock.now -= 3600  # set back: without the keys' times, the expired key would work again
    with KeyStore(path, clock=clock) as store:
        assert store.verify(kept.key).id == kept.record.id
        with pytest.raises(KeyExpiredError):
            store.verify(soon.key)
        assert store.now() == revoked_at
    assert "not a time" in caplog.text
    assert _stored_clock(path) == revoked_at


@pytest.mark.parametrize("stored", ["9e999", "1e300"])
def test_a_key_store_time_past_the_last_possible_expiry_is_read_as_that_expiry(
        tmp_path: Path, stored: str) -> None:
    """A time beyond any date (infinity, 1e300: a hand edit, a clock gone wild) is read as the
    latest expiry a key can have: every key with an expiry is still expired by it, and the
    time can be shown (and reset) like any other."""
    from switchpoint.governance.keys import MAX_EXPIRY, expiry_text

    clock = Clock()
    path = tmp_path / "keys.db"
    with KeyStore(path, clock=clock) as store:
        late = store.create(spec(expires="9999-12-31"))
        kept = store.create(spec())
    _tamper_clock(path, f"UPDATE clock SET latest = {stored}")
    with KeyStore(path, clock=clock) as store:
        assert store.now() == MAX_EXPIRY
        assert expiry_text(store.now())
        with pytest.raises(KeyExpiredError):
            store.verify(late.key)
        assert store.verify(kept.key).id == kept.record.id
        assert store.reset_clock() == MAX_EXPIRY
        assert store.now() == clock.now
        assert store.verify(late.key).id == late.record.id


def test_a_key_store_missing_a_table_its_schema_version_has_says_so_not_check_the_disk(
        tmp_path: Path) -> None:
    """keys.db edited by another program (its clock table dropped): the open is refused naming
    the table, and what to do is about the file, not about space or permissions."""
    path = tmp_path / "keys.db"
    KeyStore(path).open().close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE clock")
    with pytest.raises(StoreError, match="no such table: clock") as info:
        KeyStore(path).open()
    assert "does not hold what its schema version says" in str(info.value)
    assert "writable" not in str(info.value)


@pytest.mark.parametrize("how", ["replaced", "replaced_then_stopped", "wal_deleted"])
def test_a_symlinked_key_file_gone_under_the_store_is_followed_as_a_plain_one(
        tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    """``keys.db`` a symbolic link to the file elsewhere (SQLite keeps its ``-wal`` and
    ``-shm`` beside the file the link names, not beside the link): the file replaced there by
    a backup gets none of the old file's log, and its ``-wal`` deleted is followed."""
    real = tmp_path / "elsewhere"
    real.mkdir()
    target = real / "keys.db"
    target.touch(mode=0o600)  # (a link to a file that is not there yet is not followed)
    path = tmp_path / "keys.db"
    path.symlink_to(target)
    with KeyStore(path) as store:
        kept = store.create(spec()).key
        backup = real / "backup.db"
        src, dst = sqlite3.connect(path), sqlite3.connect(backup)
        src.backup(dst)
        src.close()
        dst.close()
        later = store.create(spec()).key  # in the -wal only: no checkpoint yet
        store.revoke(key_id_of(kept))
        assert (real / "keys.db-wal").stat().st_size > 0
        if how == "wal_deleted":
            (real / "keys.db-wal").unlink()
            third = store.create(spec()).key
            with KeyStore(path) as cli:  # another connection, as the CLI's
                assert cli.verify(third).id == key_id_of(third)
            return
        os.replace(backup, target)
        if how != "replaced_then_stopped":
            with pytest.raises(InvalidKeyError, match="not a key of this gateway"):
                store.verify(later)
            assert "keys.db was replaced" in caplog.text
    with KeyStore(path) as restarted:  # the backup as it was, its key revoked again
        with pytest.raises(KeyRevokedError):
            restarted.verify(kept)
        with pytest.raises(InvalidKeyError, match="not a key of this gateway"):
            restarted.verify(later)


def test_a_clock_write_after_the_key_files_wal_was_deleted_damages_nothing(
        tmp_path: Path) -> None:
    """``keys.db-wal`` deleted before the clock writer's first write: that write goes on the
    connection opened with the store's, which has the store's log open already (it read the
    file as it opened), not a log made anew at the path beside the old ``-shm``; the file
    stays whole and keeps every key."""
    clock = Clock()
    path = tmp_path / "keys.db"
    store = KeyStore(path, clock=clock).open()
    try:
        first = store.create(spec()).key
        second = store.create(spec()).key  # in the -wal only: no checkpoint yet
        (tmp_path / "keys.db-wal").unlink()
        clock.now += 3600
        assert store.now() == clock.now  # hands the time to the clock writer
        writer = store._writer
        assert writer is not None
        writer.wait_for(clock.now)
        assert writer.written == clock.now
        assert store.verify(first).id == key_id_of(first)  # opened again: the log written in
        assert store.verify(second).id == key_id_of(second)
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with KeyStore(path, clock=clock) as restarted:
        assert restarted.verify(second).id == key_id_of(second)
        assert restarted.now() == clock.now


def test_an_unknown_tenant_error_lists_some_of_many_tenants() -> None:
    # A config may hold thousands of tenants: the error names twenty and how many more, each
    # cut short, and the unknown name quoted cut short too.
    tenants = [f"team-{i:04d}" + "x" * 55 for i in range(3000)]  # (64: the longest name)
    with pytest.raises(InvalidInputError) as info:
        KeySpec(tenant="nope" * 16).checked(tenants, ["good"])
    message = str(info.value)
    assert "and 2980 more" in message and tenants[0][:40] in message
    assert tenants[25][:20] not in message
    assert len(message) < 2000


def test_listed_names_shows_the_first_and_how_many_more() -> None:
    assert listed_names(["a", "b"]) == "a, b"
    assert listed_names([]) == ""
    assert listed_names([str(i) for i in range(25)], most=3) == "0, 1, 2 and 22 more"
    assert listed_names(["n" * 100], width=10) == "nnnnnnn..."
    # Quoted: each shown as JSON writes it (an escape made printable, a cut one still closed).
    assert listed_names(["a", "b\x1b", "c"], most=2, quoted=True) == '"a", "b\\u001b" and 1 more'
    assert listed_names(["n" * 100], width=10, quoted=True) == '"nnnnnnn…"'


def test_the_budget_list_pages_through_the_config_then_the_keys_in_the_order_made(
        tmp_path: Path) -> None:
    """The config's budgets (the gateway's, the tenants', the models', the providers') come
    first, then the keys' in the order they were made; a page ends at its last budget's
    cursor, within the config or within a key's budgets, and the next goes on after it. A key
    made meanwhile comes last; one revoked meanwhile moves nothing else."""
    from switchpoint.governance.budget_list import budget_page

    settings = load_settings(overrides={
        "data_dir": str(tmp_path), "models": [{"name": "m", "input_per_mtok": 1,
                                                "output_per_mtok": 1}],
        "budgets": {"total": ["100/day"], "models": {"m": ["5/hour"]}},
        "tenants": {"acme": {"budgets": ["50/month", "10/day"]}}}, environ={})
    with KeyStore(tmp_path / "keys.db") as keys:
        ids = [keys.create(KeySpec(tenant="acme", budgets=budgets)).record.id
               for budgets in (["1/day", "2/week", "3/month"], [], ["4/day"])]
        whole, cursor = budget_page(settings, keys)
        assert cursor is None
        assert [(e.account, str(e.budget)) for e in whole] == [
            ("all", "100/day"), ("tenant:acme", "50/month"), ("tenant:acme", "10/day"),
            ("model:m", "5/hour"), (f"key:{ids[0]}", "1/day"), (f"key:{ids[0]}", "2/week"),
            (f"key:{ids[0]}", "3/month"), (f"key:{ids[2]}", "4/day")]
        first, cursor = budget_page(settings, keys, limit=3)
        assert first == whole[:3] and cursor == "cfg-3"
        second, cursor = budget_page(settings, keys, limit=3, cursor=cursor)
        assert second == whole[3:6] and cursor == "key-1-2"
        keys.revoke(ids[2])
        later = keys.create(KeySpec(tenant="acme", budgets=["9/day"])).record.id
        third, cursor = budget_page(settings, keys, limit=3, cursor=cursor)
        assert [(e.account, str(e.budget)) for e in third] == [
            (f"key:{ids[0]}", "3/month"), (f"key:{later}", "9/day")] and cursor is None
        for limit in (0, 501, True, 2.0):
            with pytest.raises(InvalidInputError) as caught:
                budget_page(settings, keys, limit=limit)  # type: ignore[arg-type]
            assert caught.value.field == "limit"
        with pytest.raises(InvalidInputError) as caught:
            budget_page(settings, keys, cursor="seq-4")
        assert caught.value.field == "cursor" and "cfg-N or key-N-I" in str(caught.value)


def test_keys_made_at_once_by_two_connections_never_pass_the_live_keys_bound(
        tmp_path: Path) -> None:
    """The CLI and the service making keys at once: each counts the live keys and stores its
    own in one transaction, so the file never holds more than the bound, and each refusal
    says how to make room."""
    path = tmp_path / "keys.db"
    with KeyStore(path) as cli, KeyStore(path) as service:
        turn = iter(range(8))

        def make() -> object:
            store = (cli, service)[next(turn) % 2]
            return store.create(KeySpec(tenant="acme"), max_live=3)

        outcomes = at_once(make, times=8)
        refused = [o for o in outcomes if isinstance(o, ConflictError)]
        assert len(refused) == 5 and len(outcomes) == 8, outcomes
        assert "revoke keys no longer used" in str(refused[0])
        assert len(cli.list()) == 3
        cli.revoke(cli.list()[0].id)  # a revoked key makes room; its record stays
        service.create(KeySpec(tenant="acme"), max_live=3)
        with pytest.raises(ConflictError):
            cli.create(KeySpec(tenant="acme"), max_live=3)
        assert len(service.list()) == 4


def test_a_rotation_and_a_revocation_from_two_connections_are_one_after_the_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``switchpoint keys rotate`` (one connection) while the service revokes the key
    (another): the revocation lands before the rotation reads the key, which is then refused
    saying the key is revoked, or after it commits; never between the rotation's read and its
    write, which printed a new secret for a key revoked before it (the rotation's time after
    the revocation's)."""
    import switchpoint.governance.keys as keys_module

    path = tmp_path / "keys.db"
    with KeyStore(path) as cli, KeyStore(path) as service:
        key_id = cli.create(KeySpec(tenant="acme")).record.id
        made = keys_module.new_key
        revoking: list[threading.Thread] = []

        def new_key_meanwhile() -> tuple[str, str]:
            # Between the rotation's read of the key and its write, the service revokes it.
            revoking.append(threading.Thread(target=service.revoke, args=(key_id,)))
            revoking[0].start()
            revoking[0].join(timeout=0.5)  # (it waits for the rotation to commit)
            return made()

        monkeypatch.setattr(keys_module, "new_key", new_key_meanwhile)
        rotated = cli.rotate(key_id)
        revoking[0].join(timeout=10)
        assert not revoking[0].is_alive()
        assert rotated.record.status(cli.now()) == "active"
        final = service.find(key_id)
        assert final.revoked_at is not None and rotated.record.rotated_at is not None
        assert final.rotated_at == rotated.record.rotated_at <= final.revoked_at
        assert final.hash == hash_key(rotated.key)
        monkeypatch.setattr(keys_module, "new_key", made)
        # Revoked by the service, the key is not rotated by the CLI: the error says why.
        with pytest.raises(InvalidInputError) as refused:
            cli.rotate(key_id)
        assert str(refused.value) == (f"id: key {key_id} is revoked, so it cannot be rotated; "
                                      "make a new key instead (switchpoint keys create)")
        assert cli.find(key_id) == final  # nothing changed


def test_a_prune_by_age_without_keys_db_reads_the_log_once_while_it_names_no_key(
        tmp_path: Path) -> None:
    """The hourly retention of a service without keys.db (nor auth: keys) reads whether the
    log names keys once, not each hour (a whole log read where it names none), and makes no
    file; a log naming keys is the refusal that says keys.db is missing, each time."""
    calls: list[dict[str, object]] = []
    named: list[str] = []

    def logged(**kwargs: object) -> list[str]:
        calls.append(kwargs)
        return named

    store = KeyStore.in_dir(tmp_path)
    store.logged = logged
    assert [store.prune(None, 1, logged=True) for _ in range(2)] == [0, 0]
    assert len(calls) == 1 and not store.path.exists()
    store = KeyStore.in_dir(tmp_path)
    store.logged = logged
    named.append("0123456789")
    for _ in range(2):
        with pytest.raises(StoreError, match=r"it is missing, yet the request log names keys "
                                             r"made in it \(0123456789\)"):
            store.prune(None, 1, logged=True)
    assert len(calls) == 3 and not store.path.exists()


def _rotation_kept(path: Path, key_id: str) -> bool:
    """Whether ``keys.revocations.jsonl`` beside ``path`` keeps a rotation of ``key_id``."""
    kept = path.with_name("keys.revocations.jsonl")
    lines = kept.read_text().splitlines() if kept.is_file() else []
    return any(json.loads(line)["id"] == key_id and "rotated_at" in line for line in lines)


def test_a_rotation_its_file_cannot_keep_hands_out_no_secret(tmp_path: Path) -> None:
    """keys.revocations.jsonl cannot be written (here a folder in its place): the rotation is
    refused before its new secret is handed out, where the secret was printed first and then
    the rotation rolled back, so it never worked; the key keeps its secret."""
    path = tmp_path / "keys.db"
    handed: list[str] = []
    with KeyStore(path) as store:
        issued = store.create(spec())
        kept = tmp_path / "keys.revocations.jsonl"
        kept.unlink(missing_ok=True)
        kept.mkdir()
        with pytest.raises(StoreError, match="cannot keep the rotation of key"):
            store.rotate(issued.record.id, deliver=lambda new, now: handed.append(new.key))
        assert handed == []
        assert store.verify(issued.key).id == issued.record.id
        kept.rmdir()
    with KeyStore(path) as reopened:
        assert reopened.verify(issued.key).id == issued.record.id


@pytest.mark.parametrize("failing", ["deliver", "commit"])
def test_a_rotation_not_made_leaves_the_key_and_its_file_as_they_were(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """The new secret cannot be handed out (its output fails), or keys.db refuses the change
    once it was: the key keeps its secret, and keys.revocations.jsonl, which kept the rotation
    before the secret went out, no longer holds it, so no opening makes it (nor one of a
    backup restored): the new secret never works."""
    path = tmp_path / "keys.db"
    handed: list[str] = []

    def deliver(new: IssuedKey, now: float) -> None:
        assert _rotation_kept(path, new.record.id)  # (kept before it goes out)
        handed.append(new.key)
        if failing == "deliver":
            raise OSError(32, "Broken pipe")

    with KeyStore(path) as store:
        issued, other = store.create(spec()), store.create(spec())
        backup = _backup(path)
        store.revoke(other.record.id)
        before = (tmp_path / "keys.revocations.jsonl").read_bytes()
        if failing == "commit":
            real = KeyStore._write

            def refusing(self: KeyStore, conn: sqlite3.Connection, what: str, sql: str,
                         args: tuple[object, ...]) -> None:
                if sql == "COMMIT" and what == "rotate the key":
                    raise StoreError("keys.db: database or disk is full")
                real(self, conn, what, sql, args)

            monkeypatch.setattr(KeyStore, "_write", refusing)
        with pytest.raises((OSError, StoreError)):
            store.rotate(issued.record.id, deliver=deliver)
        monkeypatch.undo()
        assert len(handed) == 1
        assert (tmp_path / "keys.revocations.jsonl").read_bytes() == before
        assert store.verify(issued.key).id == issued.record.id
    for opened in (path, backup):
        if opened == backup:
            _restore(backup, path)
        with KeyStore(path) as reopened:
            assert reopened.verify(issued.key).id == issued.record.id
            with pytest.raises(InvalidKeyError):
                reopened.verify(handed[0])
            assert reopened.find(other.record.id).revoked_at is not None


def test_a_rotation_kept_that_cannot_be_taken_back_is_said_to_stand(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new secret cannot be handed out, nor the kept rotation taken back out of
    keys.revocations.jsonl: the error says the rotation stands (the next opening gives the
    key the new secret) and to rotate the key again; the next opening does."""
    path = tmp_path / "keys.db"

    def deliver(new: IssuedKey, now: float) -> None:
        monkeypatch.setattr(line_journal, "write_atomically", failing_write)
        raise OSError(32, "Broken pipe")

    def failing_write(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with KeyStore(path) as store:
        issued = store.create(spec())
        with pytest.raises(StoreError, match="rotate the key again") as refused:
            store.rotate(issued.record.id, deliver=deliver)
        assert "could not be taken back" in str(refused.value)
        assert "the next opening of keys.db for writing" in str(refused.value)
        monkeypatch.undo()
        assert store.verify(issued.key).id == issued.record.id  # (not made in keys.db yet)
    with KeyStore(path) as reopened, pytest.raises(KeyRevokedError):
        reopened.verify(issued.key)


@pytest.mark.parametrize("stands", [False, True])
def test_keys_rotate_says_whether_the_secret_it_printed_works_when_the_store_fails(
        stands: bool) -> None:
    """The command printed the new secret and the store then failed: it adds that the secret
    does not work, unless the store says the rotation stands (it could not be taken back),
    where the two said opposite things."""
    from switchpoint.governance.cli import _HandOut
    from switchpoint.governance.keys import RotationKeptError

    failure = (RotationKeptError("the next opening of keys.db for writing makes it") if stands
               else StoreError("keys.db: database or disk is full"))

    def failing() -> None:
        raise failure

    out = _HandOut("rotated", json_output=False)
    out.shown = True
    with pytest.raises(StoreError) as refused:
        out.kept(failing)
    assert ("does not work" in str(refused.value)) is not stands, refused.value

def _rotate_and_die(path: str, key_id: str, out: str, shown: bool) -> None:
    """In a child process: rotate ``key_id`` of the key store at ``path`` and die (SIGKILL)
    as its new secret is handed out: once it is written to ``out`` (``shown``), or before."""
    store = KeyStore(Path(path)).open()

    def deliver(issued: IssuedKey, now: float) -> None:
        if shown:
            with open(out, "w", encoding="ascii") as fh:
                fh.write(issued.key)
                fh.flush()
                os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    store.rotate(key_id, deliver=deliver)


@pytest.mark.parametrize("shown", [True, False], ids=["shown", "not-shown"])
def test_a_rotation_killed_as_its_secret_goes_out_stands_at_the_next_opening(
        tmp_path: Path, shown: bool) -> None:
    """``kill -9`` while a rotation's new secret is handed out (its transaction not yet
    committed): the next opening makes the rotation, kept beside keys.db before the secret
    went out, so a secret shown works, where the secret was shown before anything kept the
    rotation and never worked. (Killed before it was shown, the rotation stands all the same:
    the key is rotated again to be used.)"""
    path, out = tmp_path / "keys.db", tmp_path / "secret.txt"
    with KeyStore(path) as store:
        issued = store.create(spec())
    child = forks.Process(target=_rotate_and_die,
                          args=(str(path), issued.record.id, str(out), shown))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    with KeyStore(path) as reopened:
        with pytest.raises(KeyRevokedError, match="grace period is over"):
            reopened.verify(issued.key)
        if shown:
            assert reopened.verify(out.read_text(encoding="ascii")).id == issued.record.id
        assert reopened.rotate(issued.record.id).record.id == issued.record.id
