"""``switchpoint keys`` and ``switchpoint report``, in-process: JSON and readable tables, bad input
named and nothing half-made, and changes seen by a running gateway."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from switchpoint.cli import main
from switchpoint.errors import KeyExpiredError, KeyRevokedError
from switchpoint.governance.keys import SCHEMA_VERSION as KEYS_SCHEMA
from switchpoint.governance.keys import KeySpec, KeyStore
from switchpoint.governance.ledger import LedgerRecord
from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore
from tests.command_line import run, run_refused_option
from tests.integration.servers import refused_start

CONFIG = """models:
  - {name: big, input_per_mtok: 10, output_per_mtok: 30}
  - {name: small, input_per_mtok: 0.2, output_per_mtok: 0.6}
data_dir: data
admin_token_env: SP_CLI_TEST_ADMIN_UNSET
tenants:
  acme: {budgets: [1/day], models: [big, small, auto]}
sla: {max_latency_ms: 1000, budget_per_hour_usd: 1}
"""


# Each report, with the options it needs.
EVERY_REPORT = [["cost"], ["sla"], ["suggest"], ["alert"],
                ["forecast", "--requests-per-hour", "10", "--avg-input-tokens", "100",
                 "--avg-output-tokens", "100"]]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def _created(config: Path, capsys: pytest.CaptureFixture[str], *options: str) -> Any:
    """``keys create --tenant acme`` with ``options`` and ``--json``, which must succeed: the
    key it made, as its JSON says."""
    code, out, err = run(["keys", "create", "--tenant", "acme", *options, "--config", config,
                          "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_keys_create_takes_a_budget_of_0_as_the_config_and_http_do(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0 blocks all spend (one rule for the config's budgets and keys'), so it is made."""
    config.write_text(CONFIG.replace("budgets: [1/day]", "budgets: [0/day]"), encoding="utf-8")
    issued = _created(config, capsys, "--budget", "0/day")
    assert issued["budgets"] == ["0/day"]
    code, out, _ = run(["keys", "show", issued["id"], "--config", config], capsys)
    assert code == 0 and "budget       0/day: spent $0.000000" in out, out
    assert "\nmodels       (tenant's)\n" in out, out  # it names none: its tenant's, as listed
    # A reset frees no spend for it, and a key's budgets are kept as it was made.
    assert "resets" not in out and ("held $0.000000, allows no spend in any period (for a "
                                    "key that may spend, create one with a larger budget "
                                    "and revoke this one)") in out, out


def test_report_alert_says_a_budget_of_0_never_allows_spend_where_others_say_when_they_reset(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Its "resets in" column gave a budget of 0 a time, as if its reset would allow spend.
    config.write_text(CONFIG.replace("budgets: [1/day]", "budgets: [0/day]"), encoding="utf-8")
    key_id = _created(config, capsys, "--budget", "5/day")["id"]
    code, out, err = run(["report", "alert", "--config", config], capsys)
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.startswith(("tenant:", "key:"))}
    assert rows["tenant:acme"].endswith("  never allows spend"), out
    assert "never allows spend" not in rows[f"key:{key_id}"], out
    assert re.search(r"  \d+ (h|min|s)( \d+ min)?$", rows[f"key:{key_id}"]), out
    # The JSON keeps its documented field for every budget: the period's end, in words.
    code, out, err = run(["report", "alert", "--config", config, "--json"], capsys)
    assert code == 0, err
    budgets = {b["account"]: b for b in json.loads(out)["budgets"]}
    assert budgets["tenant:acme"]["limit_usd"] == 0
    assert budgets["tenant:acme"]["resets_in"] == budgets[f"key:{key_id}"]["resets_in"]


def test_a_budget_s_amount_is_shown_as_written_by_every_command(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys create, list and show and report alert show a budget of more than six significant
    digits, a tiny one and the SLA's hourly one as written: they read 1.23457e+06/month."""
    config.write_text(CONFIG.replace("budget_per_hour_usd: 1", "budget_per_hour_usd: 1234567.89"),
                      encoding="utf-8")
    issued = _created(config, capsys, "--budget", "1234567.89/month",
                      "--budget", "0.0000001/day")
    assert issued["budgets"] == ["1234567.89/month", "0.0000001/day"]
    code, out, _ = run(["keys", "list", "--config", config], capsys)
    assert code == 0 and "1234567.89/month, 0.0000001/day" in out, out
    code, out, _ = run(["keys", "show", issued["id"], "--config", config], capsys)
    assert code == 0 and "budget       1234567.89/month: spent $0.000000" in out, out
    assert "0.0000001/day: spent $0.000000" in out, out
    code, out, err = run(["report", "alert", "--config", config], capsys)
    assert code == 0, err
    assert "against a budget of $1234567.89/hour" in out, out
    row = next(line for line in out.splitlines() if line.startswith(f"key:{issued['id']}"))
    assert "1234567.89/month" in row or "0.0000001/day" in row, out
    assert "e+06" not in out and "e-07" not in out, out


def test_keys_create_list_show_rotate_revoke(config: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    issued = _created(config, capsys, "--budget", "50/month", "--budget", "5/day", "--rpm", "60",
                      "--models", "small,auto", "--cost-weight", "0.3", "--expires", "30d",
                      "--name", "ci")
    assert {"key", "id", "tenant"} <= set(issued) and issued["tenant"] == "acme"
    assert issued["budgets"] == ["50/month", "5/day"] and issued["models"] == ["small", "auto"]
    store = KeyStore(config.parent / "data" / "keys.db").open()  # a running gateway's view
    assert store.verify(issued["key"]).id == issued["id"]
    code, out, _ = run(["keys", "list", "--config", config], capsys)
    assert code == 0 and issued["id"] in out and "50/month, 5/day" in out and "active" in out
    assert issued["key"] not in out
    code, out, _ = run(["keys", "show", issued["id"], "--config", config], capsys)
    assert code == 0 and "budget       50/month: spent $0.000000" in out
    assert "\nmodels       small, auto\n" in out, out  # as the list shows them (not ['small', ...])
    code, out, err = run(["keys", "rotate", issued["id"], "--grace", "1h", "--config", config],
                         capsys)
    assert code == 0 and out.strip().startswith(f"sp-{issued['id']}_")
    assert "the old one works until" in err and "earlier secret" not in err
    code, out, err = run(["keys", "rotate", issued["id"], "--grace", "1h", "--config", config],
                         capsys)
    assert code == 0 and "the old one works until" in err
    assert "; 1 earlier secret(s) still work, until " in err
    assert store.verify(issued["key"]).id == issued["id"]  # its own hour of grace goes on
    new_key = out.strip()
    code, out, _ = run(["keys", "revoke", issued["id"], "--config", config], capsys)
    assert code == 0 and f"revoked key {issued['id']}" in out
    with pytest.raises(KeyRevokedError):
        store.verify(new_key)
    # A revoked key is not rotated: no secret printed, and the error says what to do.
    store.revoke(issued["id"])  # (the service revoking it too changes nothing)
    code, out, err = run(["keys", "rotate", issued["id"], "--config", config], capsys)
    assert code == 2 and out == "", (out, err)
    assert (f"key {issued['id']} is revoked, so it cannot be rotated; make a new key instead "
            "(switchpoint keys create)") in err
    store.close()
    code, out, _ = run(["keys", "list", "--active", "--config", config, "--json"], capsys)
    assert json.loads(out) == []


def test_a_key_s_limits_take_a_whole_number_written_with_an_exponent(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1e3 is a thousand to --cost-weight and every number option: --rpm and --tpm took it for
    # "not a whole number in ASCII digits"; a negative one is still the range check's to tell.
    issued = _created(config, capsys, "--rpm", "1e3", "--tpm", "1.5e6")
    code, out, err = run(["keys", "show", issued["id"], "--config", config, "--json"], capsys)
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["rpm"], shown["tpm"]) == (1000, 1_500_000), shown
    code, _, err = run(["keys", "create", "--tenant", "acme", "--rpm", "-5", "--config", config],
                       capsys)
    assert code == 2 and "--rpm: must be a whole number from 1 to 10,000,000, got -5" in err


def test_a_grace_that_is_infinite_negative_or_over_30_days_is_refused_naming_grace(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    issued = _created(config, capsys)
    store = KeyStore(config.parent / "data" / "keys.db").open()  # a running gateway's view
    before = store.get(issued["id"])
    # 1e999 (and 400 nines of days) was an infinite grace, refused by the rotation naming its
    # grace_s; a negative one and 31 days so too.
    for grace in ("1e999", "9" * 400 + "d", "-1e999", "-5", "31d", "2592001", ""):
        code, out, err = run_refused_option(  # (argparse: --grace's type refuses it)
            ["keys", "rotate", issued["id"], f"--grace={grace}", "--config", config], capsys)
        assert code == 2 and out == "", (grace[:20], out, err)
        last = err.splitlines()[-1]
        assert last.startswith("switchpoint keys rotate: error: argument --grace: "
                               f"{json.dumps(grace)[:20]}"), err
        assert "grace_s" not in err and "Traceback" not in err and len(last) < 300, err
        assert ("negative" in err if grace.startswith("-") else "is empty" in err
                if not grace else "longer than 30 days" in err), err
    assert store.get(issued["id"]) == before  # no new secret
    code, out, err = run(["keys", "rotate", issued["id"], "--grace", "30d", "--config",
                          config, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["key"] != issued["key"]
    rotated = store.get(issued["id"])
    assert rotated is not None and rotated.previous_valid_until is not None
    assert rotated.previous_valid_until == pytest.approx(time.time() + 30 * 86400, abs=60)
    assert store.verify(issued["key"]).id == issued["id"]  # the old secret works on
    store.close()


def test_a_key_given_a_date_works_through_that_whole_day(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--expires 2027-01-31`` reads as "usable through 2027-01-31": the key works until
    that day ends (UTC) and says so, to the second, when it is made."""
    day = datetime.now(UTC).date() + timedelta(days=3)
    code, out, err = run(["keys", "create", "--tenant", "acme", "--expires", day.isoformat(),
                          "--config", config], capsys)
    assert code == 0, err
    key = out.strip()
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    assert f"expires {end:%Y-%m-%d %H:%M:%S} UTC (usable through {day})" in err, err
    # Listing and showing the key say the same, by the same rule, and show when it was made
    # in the same format (its JSON keeps its numbers).
    code, out, err = run(["keys", "list", "--config", config, "--json"], capsys)
    key_id, created = json.loads(out)[0]["id"], json.loads(out)[0]["created_at"]
    made = datetime.fromtimestamp(created, UTC)
    said = f"{end:%Y-%m-%d %H:%M:%S}{{}} (usable through {day})"
    for argv, row, zone in ((["keys", "list"], key_id, ""),
                            (["keys", "show", key_id], "expires ", " UTC")):
        code, out, err = run([*argv, "--config", config], capsys)
        assert code == 0, err
        assert said.format(zone) in next(line for line in out.splitlines() if row in line), (
            argv, out)
        assert f"{made:%Y-%m-%d %H:%M:%S}" in out and f"{end:%Y-%m-%dT}" not in out, out
    # A date-time stays exact, and is printed as given.
    assert _created(config, capsys, "--expires", f"{day}T06:30:00Z")["expires_at"] == (
        end - timedelta(hours=17, minutes=30)).timestamp()
    # Last (the store remembers the latest time it has seen, and days ahead a key expiring
    # earlier could no longer be made): the key works through its day, and not after.
    store = KeyStore(config.parent / "data" / "keys.db").open()
    try:
        for moment in (datetime(day.year, day.month, day.day, tzinfo=UTC),
                       datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
                       end - timedelta(milliseconds=1)):
            store.clock = moment.timestamp
            assert store.verify(key).expires_at == end.timestamp(), moment
        store.clock = end.timestamp
        with pytest.raises(KeyExpiredError, match=f"expired at {end:%Y-%m-%dT%H:%M:%SZ}"):
            store.verify(key)
    finally:
        store.close()


def test_expires_takes_epoch_seconds_as_the_keys_page_says(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `--expires 1830000000` was refused as "not a date", though docs/keys-budgets.md (and the HTTP
    # API, given a JSON number) take epoch seconds.
    at = int(time.time()) + 7 * 86400
    assert _created(config, capsys, "--expires", str(at))["expires_at"] == at
    code, _, err = run(["keys", "create", "--tenant", "acme", "--expires", "1000000000",
                       "--config", config], capsys)
    assert code == 2 and "is not in the future" in err, err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--tenant", "nobody"], '--tenant: unknown tenant "nobody"'),
    (["--tenant", "acme", "--budget", "50/fortnight"],
     '--budget: "50/fortnight": "fortnight" is not a budget period'),
    (["--tenant", "acme", "--budget=-50/month"],
     '--budget: "-50/month": the amount is negative; write 0/month for a budget that allows '
     "no spend, or an amount from 1e-10 to 1,000,000,000 US dollars"),
    (["--tenant", "acme", "--budget", "1e-300/day"],
     '--budget: "1e-300/day": the amount is less than the least budget, 1e-10 US dollars'),
    (["--tenant", "acme", "--budget", "1e-400/day"],  # (a float holds it as 0: not 0 either)
     '--budget: "1e-400/day": the amount is less than the least budget, 1e-10 US dollars'),
    (["--tenant", "acme", "--budget", "-1e-400/day"],  # (negative, though a float holds -0.0)
     '--budget: "-1e-400/day": the amount is negative; write 0/day for a budget that allows '
     "no spend"),
    (["--tenant", "acme", "--models", "gpt-9"], '--models: not in the catalog: "gpt-9"'),
    (["--tenant", "acme", "--rpm", "0"], "--rpm: must be a whole number from 1 to"),
    (["--tenant", "acme", "--tpm", "0"], "--tpm: must be a whole number from 1 to"),
    (["--tenant", "acme", "--tpm", "99999999999999"],
     "--tpm: must be a whole number from 1 to 10,000,000,000, got 99999999999999"),
    (["--tenant", "acme", "--models", "gpt-9,big,\x1b[2J"],
     '--models (item 3): "\\u001b[2J" holds U+001B (character 1): a model is named in the '
     "x-switchpoint-model header"),
    (["--tenant", "acme", "--models", "gpt-9,big"], '--models: not in the catalog: "gpt-9"; use'),
    # An empty item is named, not dropped (the spaces around a name are the list's own).
    (["--tenant", "acme", "--models", "big,,small"],
     '--models: "big,,small" has no model name at item 2 of 3: write one model name between '
     "commas, such as gpt-4o-mini,auto"),
    (["--tenant", "acme", "--models", "big, "], "has no model name at item 2 of 2"),
    (["--tenant", "acme", "--models", " , "],
     '--models: " , " holds no model name; give a comma-separated list such as '
     "gpt-4o-mini,auto, or leave --models out to allow the tenant's"),
    (["--tenant", "acme", "--models", "big,sm\tall"],
     '--models (item 2): "sm\\tall" holds U+0009'),
    # Every comma list of the command line by one rule: --budget's empty item is named too.
    (["--tenant", "acme", "--budget", "5/day,"],
     '--budget: "5/day," has no budget at item 2 of 2: write one budget between commas, such '
     "as 50/month,5/day"),
    (["--tenant", "acme", "--budget", "50/month", "--budget", ",5/day"],
     '--budget: ",5/day" has no budget at item 1 of 2'),
    (["--tenant", "acme", "--budget", " "],
     '--budget: " " holds no budget; give a comma-separated list such as 50/month,5/day'),
    (["--tenant", "acme", "--expires", "2001-01-01"],
     '--expires: "2001-01-01" is not in the future; give a later date (YYYY-MM-DD, UTC) or '
     'a duration from now (30d, 12h)'),
    (["--tenant", "acme", "--expires", "soon"], '--expires: "soon" is not a date'),
    # Epoch seconds a float holds only as 0 are 1970, and negative ones before it: each was
    # "not a date" or "not in the future", as if it were no number or a date.
    (["--tenant", "acme", "--expires", "1e-400"],
     '--expires: "1e-400" is too small a number to be told from 0: as epoch seconds it is '
     "1970-01-01T00:00:00Z, in the past; give epoch seconds past now, a later date "
     "(YYYY-MM-DD, UTC) or a duration from now (30d, 12h)"),
    (["--tenant", "acme", "--expires", "-5"],
     '--expires: "-5" is negative: epoch seconds count from 1970-01-01, so it is in the past; '
     "give epoch seconds past now, a later date (YYYY-MM-DD, UTC) or a duration from now "
     "(30d, 12h)"),
    (["--tenant", "acme", "--expires=-1e-400"], '--expires: "-1e-400" is negative: epoch '),
    (["--tenant", "acme", "--expires", "20270131"],
     '--expires: "20270131" is not in the future (a number is read as epoch seconds: this one '
     "is 1970-08-23T14:35:31Z)"),
    (["--tenant", "acme", "--name", "  "], '--name: is "  ", blank; a name tells a key apart'),
    (["--tenant", "acme", "--name", "ci\nacme  active"], "--name: holds U+000A (character 3)"),
    (["--tenant", "acme", "--name", "safe\u202etxt.exe"], "--name: holds U+202E"),
])
def test_bad_key_input_is_named_and_creates_nothing(config: Path, argv: list[str], needle: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["keys", "create", *argv, "--config", config], capsys)
    assert code == 2 and err.startswith("switchpoint: error:") and needle in err, err
    assert "Traceback" not in err
    keys = config.parent / "data" / "keys.db"
    assert not keys.exists() or KeyStore(keys).list() == []


def test_keys_create_drops_the_spaces_around_each_model_name(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _created(config, capsys, "--models", " big , small,auto ")["models"] == [
        "big", "small", "auto"]


def test_keys_create_past_the_live_keys_bound_says_how_to_make_room(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text(CONFIG + "governance: {max_keys: 2}\n", encoding="utf-8")
    create: list[str | Path] = ["keys", "create", "--tenant", "acme", "--config", config, "--json"]
    made = []
    for _ in range(2):
        code, out, err = run(create, capsys)
        assert code == 0, err
        made.append(json.loads(out)["id"])
    code, out, err = run(create, capsys)
    assert (code, out) == (2, ""), err
    assert err == ("switchpoint: error: governance.max_keys: 2 keys are live (neither revoked "
                   "nor expired), the most the config's governance.max_keys allows (2); revoke "
                   "keys no longer used (switchpoint keys revoke ID, or DELETE "
                   "/v1/router/keys/ID), or raise governance.max_keys in the config (at most "
                   "1,000,000)\n")
    keys = config.parent / "data" / "keys.db"
    assert [r.id for r in KeyStore(keys).list()] == made  # nothing made
    code, _, err = run(["keys", "revoke", made[0], "--config", config], capsys)
    assert code == 0, err
    code, out, err = run(create, capsys)
    assert code == 0, err
    assert [r.status(time.time()) for r in KeyStore(keys).list()] == ["revoked", "active",
                                                                      "active"]
    # Raised in the config, the bound lets more be made.
    config.write_text(CONFIG + "governance: {max_keys: 3}\n", encoding="utf-8")
    assert run(create, capsys)[0] == 0
    assert run(create, capsys)[0] == 2


@pytest.mark.parametrize(("argv", "needle"), [
    (["--cost-weight", "cheap"], '--cost-weight: "cheap" is not a number in ASCII digits; give '
                                 "a number from 0 to 10,000 (0 = quality first), such as 0.5"),
    (["--cost-weight", "1e-400"], '--cost-weight: "1e-400" is too small a number to be told '
                                  "from 0"),
    (["--cost-weight", "-1"], '--cost-weight: "-1" is negative; give a number from 0 to '
                              "10,000"),
    (["--rpm", "abc"], '--rpm: "abc" is not a whole number in ASCII digits'),
    (["--tpm", "1.5"], '--tpm: "1.5" is not a whole number; give a whole number, such as 8'),
])
def test_a_keys_number_option_is_refused_as_every_number_option_is(
        config: Path, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The same reading and wording as route's --cost-weight and every other number option:
    # the value as JSON quotes it ("cheap"; the key's --rpm read 'abc', Python's spelling).
    code, _, err = run_refused_option(["keys", "create", "--tenant", "acme", *argv, "--config",
                                       config], capsys)
    assert code == 2 and f"switchpoint keys create: error: argument {needle}" in err
    keys = config.parent / "data" / "keys.db"
    assert not keys.exists() or KeyStore(keys).list() == []


def run_any(argv: Sequence[str | Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``run``, for a value refused by an option's type (argparse exits) or by the command."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exited:
        code = int(str(exited.code))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [
    (["keys", "create", "--tenant", "acme", "--budget", "-5/day"],
     '--budget: "-5/day": the amount is negative; write 0/day for a budget that allows no '
     "spend, or an amount from 1e-10"),
    (["keys", "create", "--tenant", "acme", "--expires", "-1d"],
     '--expires: "-1d" is a negative duration; a duration counts from now; give one of at '
     "least 1m (30d, 12h), or a date"),
    (["keys", "create", "--tenant", "acme", "--cost-weight", "-1e-3"],
     '--cost-weight: "-1e-3" is negative; give a number from 0 to 10,000'),
    (["keys", "create", "--tenant", "acme", "--rpm", "-3"],
     "--rpm: must be a whole number from 1 to 10,000,000, got -3"),
    (["keys", "rotate", "0123456789", "--grace", "-1h"],
     '--grace: "-1h" is negative; give 0 to 2,592,000 seconds, or e.g. 90m, 1h, 2d or 30d'),
    (["prune", "--older-than", "-1.5"],
     '--older-than: "-1.5" is negative; give a number of days > 0 and at most 36,525'),
    (["report", "sla", "--since-hours", "-2"],
     '--since-hours: "-2" is negative; give a number of hours more than 0'),
    # A number with a unit where a number alone is taken was "not a number in ASCII digits",
    # as a malformed one is: negative, it is told so and what is taken.
    (["prune", "--older-than", "-1d"],
     '--older-than: "-1d" is negative; give a number of days > 0 and at most 36,525'),
    (["report", "sla", "--since-hours", "-2h"],
     '--since-hours: "-2h" is negative; give a number of hours more than 0'),
    # NaN and the infinities as float() spells them: argparse took "-inf" for an option.
    (["keys", "create", "--tenant", "acme", "--cost-weight", "-inf"],
     '--cost-weight: "-inf" is not a finite number (it is NaN or an infinity); give a number '
     "from 0 to 10,000"),
    (["keys", "create", "--tenant", "acme", "--cost-weight", "-Infinity"],
     '--cost-weight: "-Infinity" is not a finite number'),
    (["keys", "create", "--tenant", "acme", "--cost-weight", "-nan"],
     '--cost-weight: "-nan" is not a finite number'),
    (["keys", "create", "--tenant", "acme", "--budget", "-inf/day"],
     '--budget: "-inf/day": the amount is not a finite number (it is NaN or an infinity); '
     "write 0/day for a budget that allows no spend"),
    (["keys", "create", "--tenant", "acme", "--expires", "-inf"],
     '--expires: "-inf" is not a finite number (it is NaN or an infinity); give an ISO date'),
    (["keys", "rotate", "0123456789", "--grace", "-infh"],
     '--grace: "-infh" is not a finite number (it is NaN or an infinity); give 0 to 2,592,000 '
     "seconds"),
    (["prune", "--older-than", "-inf"], '--older-than: "-inf" is not a finite number'),
])
@pytest.mark.parametrize("joined", [False, True])
def test_a_value_that_begins_with_a_dash_and_a_digit_is_the_option_s_and_told_negative(
        config: Path, argv: list[str], needle: str, joined: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    # argparse took "-5/day" after --budget for an unknown option and said only that --budget
    # "expected one argument"; with "=" a negative duration was "not a duration": the option's
    # own check now tells it, in both forms, and nothing is made.
    *head, flag, value = argv
    given = [*head, f"{flag}={value}"] if joined else argv
    code, err = run_any([*given, "--config", config], capsys)
    assert code == 2 and needle in err, err
    assert "expected one argument" not in err and "Traceback" not in err
    assert not (config.parent / "data").exists()  # (no key store, no log: nothing made)


def test_a_value_that_begins_with_a_dash_and_a_letter_is_given_with_an_equals_sign(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A word of "-" and a letter may be an option (--name --json: a value left out), so it
    # stays one, and the refusal says how such a value is written; written so, it is the
    # option's, checked as any other.
    code, err = run_any(["keys", "create", "--tenant", "-x", "--config", config], capsys)
    assert code == 2 and ("argument --tenant: expected one argument; give its value after it "
                          "(--tenant VALUE), or --tenant=VALUE for one that begins with '-'"
                          ) in err, err
    code, err = run_any(["keys", "create", "--tenant=-x", "--config", config], capsys)
    assert code == 2 and '--tenant: "-x" must be 1-64 letters' in err, err  # (no name)
    code, err = run_any(["keys", "create", "--tenant", "acme", "--name", "--json", "--config",
                         config], capsys)
    assert code == 2 and "argument --name: expected one argument" in err, err
    # (-h is an option, and a word of "-" and letters that no number begins stays one)
    for word in ("-h", "-info", "-nancy"):
        code, err = run_any(["keys", "create", "--tenant", "acme", "--name", word, "--config",
                             config], capsys)
        assert code == 2 and "argument --name: expected one argument" in err, (word, err)
    assert not (config.parent / "data").exists()


def test_expires_takes_epoch_seconds_in_scientific_notation_as_its_help_says(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _created(config, capsys, "--expires", "1e10")["expires_at"] == 1e10
    with pytest.raises(SystemExit):
        main(["keys", "create", "--help"])
    assert "epoch seconds (1800000000 or 1.8e9)" in " ".join(capsys.readouterr().out.split())


def test_a_key_s_name_is_a_label_that_two_keys_may_share_and_its_help_says_so(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = []
    for _ in range(2):
        code, out, err = run(["keys", "create", "--tenant", "acme", "--name", "ci", "--config",
                              config, "--json"], capsys)
        assert code == 0, err
        made.append(json.loads(out)["id"])
    code, out, _ = run(["keys", "list", "--config", config, "--json"], capsys)
    assert [(k["id"], k["name"]) for k in json.loads(out)] == [(i, "ci") for i in made]
    code, out, err = run(["keys", "revoke", "ci", "--config", config], capsys)
    assert code == 2 and '"ci" is not a key id' in err, err  # (a name selects no key)
    with pytest.raises(SystemExit):
        main(["keys", "create", "--help"])
    assert ("a label only: two keys may share one, and every command and route addresses a "
            "key by its id") in " ".join(capsys.readouterr().out.split())


def test_a_budget_under_the_least_is_refused_in_the_config_but_a_stored_key_s_is_kept(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_id = _created(config, capsys, "--budget", "1/day")["id"]
    # A key an earlier version made with a budget under the least keeps it, and is shown.
    with sqlite3.connect(config.parent / "data" / "keys.db") as db:
        db.execute("UPDATE keys SET budgets = ? WHERE id = ?", ('["1e-300/day"]', key_id))
    db.close()
    code, out, err = run(["keys", "show", key_id, "--config", config], capsys)
    assert code == 0 and "budget       1e-300/day: spent $0.000000" in out, (out, err)
    code, out, err = run(["report", "alert", "--config", config], capsys)
    assert code == 0 and f"key:{key_id}" in out, err
    # The config's budgets follow the one rule of a budget: refused, saying the least.
    config.write_text(CONFIG.replace("budgets: [1/day]", "budgets: [1e-300/day]"),
                      encoding="utf-8")
    code, _, err = run(["keys", "list", "--config", config], capsys)
    assert code == 2 and "the amount is less than the least budget, 1e-10 US dollars" in err
    assert "write 0/day for a budget that allows no spend" in err, err


def test_a_name_stored_with_control_characters_is_listed_escaped(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["keys", "create", "--tenant", "acme", "--name", "plain", "--config",
                        config, "--json"], capsys)
    key_id = json.loads(out)["id"]
    with sqlite3.connect(config.parent / "data" / "keys.db") as db:  # as an older one wrote it
        db.execute("UPDATE keys SET name = ? WHERE id = ?", ("a\x1b[2Jb\u202ec", key_id))
    for argv in (["keys", "list"], ["keys", "show", key_id]):
        code, out, _ = run([*argv, "--config", config], capsys)
        assert code == 0 and "a\\u001b[2Jb\\u202ec" in out and "\x1b" not in out


def test_the_installed_command(config: Path) -> None:
    """A fresh interpreter (import order as a user gets it)."""
    done = subprocess.run([sys.executable, "-m", "switchpoint.cli", "keys", "create",
                           "--tenant", "acme", "--config", str(config), "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tenant"] == "acme"


def test_unknown_key_ids(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["keys", "revoke", "0123456789", "--config", config], capsys)
    assert code == 2 and 'no key has the id "0123456789"' in err
    code, _, err = run(["keys", "rotate", "nope", "--config", config], capsys)
    assert code == 2 and "is not a key id" in err


@pytest.mark.parametrize(("argv", "code", "needle"), [
    (["list"], 0, ""),
    (["show", "0123456789"], 2, 'no key has the id "0123456789": '),
    (["revoke", "0123456789"], 2, "holds no keys.db"),
    (["rotate", "0123456789", "--grace", "1h"], 2, "holds no keys.db"),
    (["revoke", "sp-0123456789_" + "ab" * 16], 2, "is not a key id"),
])
def test_keys_on_a_data_dir_without_keys_create_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int,
        needle: str) -> None:
    # A mistyped --data-dir: no keys there, and no keys.db (nor the folder) made for them.
    data_dir = tmp_path / "typo" / "data"
    got, out, err = run(["keys", *argv, "--data-dir", data_dir], capsys)
    assert got == code and needle in err and "Traceback" not in err, err
    assert "ab" * 16 not in err
    if argv == ["list"]:
        assert out.strip() == f"no keys: {data_dir} holds no key store"
    assert list(tmp_path.iterdir()) == []


def test_a_data_dir_holding_control_characters_is_refused_shown_escaped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A --data-dir holding an escape or a newline is refused, naming the flag, the path shown
    # escaped, so it cannot drive the terminal or pass for two lines, in `keys list` and
    # `keys clock` alike; nothing is made.
    data_dir = tmp_path / "x\x1b[2Jy\nz"
    for argv in (["list"], ["clock"]):
        got, out, err = run(["keys", *argv, "--data-dir", data_dir], capsys)
        assert got == 2 and out == "", out
        assert err.startswith("switchpoint: error: --data-dir: ") and "x\\x1b[2Jy\\nz" in err
        assert 'holds the control character "\\u001b"' in err and "\x1b" not in err, err
    assert list(tmp_path.iterdir()) == []


def seed(config: Path) -> str:
    """Three answered requests of a key of acme's, a minute ago; the key's id."""
    with KeyStore.in_dir(config.parent / "data") as keys:
        key_id = keys.create(KeySpec(tenant="acme")).record.id
    _log_routed(config.parent / "data", [
        (model, lam, 100.0 * (i + 1), (1000 * (10 if model == "big" else 0.2)
                                       + 1000 * (30 if model == "big" else 0.6)) / 1e6)
        for i, (model, lam) in enumerate([("big", 0.0), ("small", 5.0), ("big", 0.0)])],
        key_id, {"big": 0.011, "small": 0.00022})
    return key_id


def _log_routed(data: Path, answers: Sequence[tuple[str, float, float, float]], key_id: str,
                expected_costs: dict[str, float]) -> None:
    """Log in data_dir's switchpoint.db, a minute ago, a decision of auto's for acme and its
    answer, 1,000 tokens in and out, for each (model, cost weight, latency in ms, cost in US
    dollars) of ``answers``; the decisions' expected errors are big's 0.1 and small's 0.4."""
    now = time.time()
    errors = {"big": 0.1, "small": 0.4}
    with SQLiteStore(data / "switchpoint.db") as store:
        for i, (model, lam, latency_ms, cost_usd) in enumerate(answers):
            store.append(DecisionRecord(
                id=f"d{i}", ts=now - 60, selected_model=model, cluster_id=0, cost_weight=lam,
                candidates=list(errors), cache_hit=False, routing_ms=1, embedding_ms=1,
                policy="cluster", weights_id="w", expected_error=errors[model],
                cost_adjusted_score=0, tenant="acme", expected_errors=errors,
                expected_costs=expected_costs)).result()
            store.append(RequestRecord(
                id=f"r{i}", ts=now - 60, requested_model="auto", status="ok", http_status=200,
                pin_state="fresh", stream=False, latency_ms=latency_ms, model=model,
                prompt_tokens=1000, completion_tokens=1000, cost_usd=cost_usd,
                decision_id=f"d{i}", tenant="acme", key_id=key_id)).result()


def _keys_db_lost(config: Path) -> tuple[str, Path]:
    """:func:`seed`, then keys.db deleted, the log naming the key made in it: its id and the
    data_dir."""
    key_id = seed(config)
    data = config.parent / "data"
    (data / "keys.db").unlink()
    return key_id, data


def test_a_table_shows_an_amount_below_six_places_as_not_zero(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A request that cost $0.000000002 is shown so in the report's tables, not as $0.000000
    (six places), which read as nothing spent."""
    with SQLiteStore(config.parent / "data" / "switchpoint.db") as store:
        store.append(RequestRecord(
            id="r0", ts=time.time() - 60, requested_model="small", status="ok",
            http_status=200, pin_state="fresh", stream=False, latency_ms=10.0, model="small",
            prompt_tokens=1, completion_tokens=1, cost_usd=2e-9, tenant="acme")).result()
    code, out, err = run(["report", "cost", "--config", config], capsys)
    assert code == 0, err
    assert "1 answered, $0.000000002 " in out, out
    rows = [line.split() for line in out.splitlines() if line.startswith(("small", "acme"))]
    assert [row[:3] for row in rows] == [["small", "1", "$0.000000002"],
                                         ["acme", "1", "$0.000000002"]], out


def test_the_cost_report_shows_every_amount_to_the_same_places(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A total that needs 7 places ($0.0009325) beside table amounts that need 6 showed them
    as $0.000840, and the average to 10 places: every amount of the report now has the
    places the widest needs, the average rounded to them."""
    with SQLiteStore(config.parent / "data" / "switchpoint.db") as store:
        for i, (model, cost) in enumerate([("small", 0.00084), ("big", 0.0000925)]):
            store.append(RequestRecord(
                id=f"r{i}", ts=time.time() - 60, requested_model=model, status="ok",
                http_status=200, pin_state="fresh", stream=False, latency_ms=10.0, model=model,
                prompt_tokens=1, completion_tokens=1, cost_usd=cost, tenant="acme")).result()
    code, out, err = run(["report", "cost", "--config", config], capsys)
    assert code == 0, err
    header = out.splitlines()[0]
    assert "2 answered, $0.0009325 (avg $0.00046" in header, out
    rows = [line.split() for line in out.splitlines() if line.startswith(("small", "big"))]
    assert [row[:3] for row in rows] == [["small", "1", "$0.0008400"],
                                         ["big", "1", "$0.0000925"]], out
    amounts = re.findall(r"\$\d+\.(\d+)", out)
    assert amounts and {len(places) for places in amounts} == {7}, out
    code, out, err = run(["report", "cost", "--config", config, "--json"], capsys)
    assert json.loads(out)["avg_cost_per_request_usd"] == 0.00046625  # (its JSON unrounded)


@pytest.mark.parametrize("report", EVERY_REPORT)
def test_a_report_of_a_data_dir_that_does_not_exist_or_holds_no_log_says_so(
        config: Path, tmp_path: Path, report: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    typo = tmp_path / "dat"
    code, out, err = run(["report", *report, "--config", config, "--data-dir", typo], capsys)
    assert code == 2 and out == ""  # not a report of nothing
    assert err == (f"switchpoint: error: --data-dir: {str(typo)!r} does not exist, so it holds "
                   "no log to report on; point it at the data_dir of the service whose requests "
                   "to report\n")
    assert not typo.exists()
    # A folder no service has logged in: not a report of nothing either (it was one), but
    # where to point it, as prune, feedback, learn and experiments say.
    typo.mkdir()
    code, out, err = run(["report", *report, "--config", config, "--data-dir", typo], capsys)
    assert code == 2 and out == ""
    assert err == (f"switchpoint: error: --data-dir: {str(typo)!r} holds neither "
                   "switchpoint.db nor keys.db (no service has logged there, and no key was "
                   "made there), so it holds no log to report on; point it at the data_dir of "
                   "the service whose requests to report\n")
    assert list(typo.iterdir()) == []  # (nothing made there)
    code, _, err = run(["report", *report, "--config", config], capsys)  # the config's own
    assert code == 2 and f"data_dir: {str(tmp_path / 'data')!r} does not exist" in err
    seed(config)  # where the service logged, the same command reports
    code, out, _ = run(["report", *report, "--config", config], capsys)
    assert code == 0 and out


def test_reports(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(config)
    big, small = 0.04, 0.0008
    code, out, _ = run(["report", "cost", "--config", config, "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["total_cost_usd"] == pytest.approx(2 * big + small)
    assert report["by_model"]["big"]["requests"] == 2
    assert report["savings"]["comparison_model"] == "big"
    assert report["savings"]["savings_usd"] == pytest.approx(3 * big - (2 * big + small))
    code, out, _ = run(["report", "cost", "--config", config], capsys)
    assert code == 0 and "by model" in out and "$0.080000" in out and "routing saved" in out
    code, out, _ = run(["report", "sla", "--since-hours", "1", "--config", config], capsys)
    assert code == 0 and "3 requests, compliance 100.0%" in out
    code, out, _ = run(["report", "forecast", "--requests-per-hour", "100",
                        "--avg-input-tokens", "1000", "--avg-output-tokens", "1000",
                        "--config", config, "--json"], capsys)
    forecast = json.loads(out)
    assert forecast["hourly_cost_usd"] == pytest.approx(100 * (2 / 3 * big + 1 / 3 * small))
    # Uniform λ sends all three to big (below 0.306: +0.1 quality, +49% spend) or all to small
    # (-0.2 quality); neither pool change helps: nothing to suggest within 0.01 of quality.
    # It says which of the two it is: traffic that no change improves, not "either ... or".
    code, out, _ = run(["report", "suggest", "--config", config], capsys)
    assert code == 0 and out.startswith("no suggestion: over the 3 answered auto requests of "
                                        "the last week, no other λ or pool saves"), out
    code, out, _ = run(["report", "alert", "--config", config], capsys)
    assert code == 0 and out.startswith("status: ") and "tenant:acme" in out
    code, _, err = run(["report", "forecast", "--requests-per-hour", "-1",
                        "--avg-input-tokens", "1", "--avg-output-tokens", "1",
                        "--config", config], capsys)
    assert code == 2 and "--requests-per-hour: must be" in err


def test_a_report_of_keys_whose_keys_db_is_missing_says_so_not_that_they_were_pruned(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys.db gone while the log names keys made in it: the cost report and the budget
    alert are refused (exit 2) naming the file and saying to restore it from a backup, as the
    service refuses them; the cost report marked every key pruned, and the alert left the
    keys' budgets out. A pruned key loses its record, never the file."""
    key_id, data = _keys_db_lost(config)
    for report in (["cost"], ["cost", "--json"], ["alert"]):
        code, out, err = run(["report", *report, "--config", config], capsys)
        assert code == 2 and out == "", (report, out)
        assert (f"{str(data / 'keys.db')!r}: cannot read the keys" in err
                and f"it is missing, yet the request log names keys made in it ({key_id})"
                in err and err.rstrip().endswith("restore it from a backup")), (report, err)
    assert not (data / "keys.db").exists()  # (none made, empty)
    code, out, err = run(["report", "sla", "--config", config], capsys)  # (reads no key)
    assert code == 0, err


def test_a_budget_alert_beside_a_keys_db_missing_whose_keys_only_the_spend_ledger_names_is_refused(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys.db gone while only the spend ledger names a key made in it (its requests pruned,
    the month's spend kept for the budgets): the budget alert is refused as keys create is,
    for any tenant, where it left the key's budget out and said all was well."""
    config.write_text(CONFIG.replace("  acme:", "  other: {}\n  acme:"), encoding="utf-8")
    data = config.parent / "data"
    with KeyStore.in_dir(data) as keys:
        key_id = keys.create(KeySpec(tenant="acme", budgets=["0.5/day"])).record.id
    with SQLiteStore(data / "switchpoint.db") as store:
        store.append(LedgerRecord(ts=time.time() - 10, reservation_id="r1", kind="settle",
                                  amount_usd=0.1, tenant="acme", key_id=key_id,
                                  model="big")).result()
    (data / "keys.db").unlink()
    for tenant in ([], ["--tenant", "other"]):
        code, out, err = run(["report", "alert", "--config", config, *tenant], capsys)
        assert code == 2 and out == "", (tenant, out)
        assert (f"{str(data / 'keys.db')!r}: cannot read the keys' budgets: it is missing, "
                f"yet the request log names keys made in it ({key_id})") in err, (tenant, err)
    assert not (data / "keys.db").exists()


def test_keys_create_beside_a_log_naming_keys_of_a_missing_keys_db_makes_none_unless_told(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys.db gone while the log names keys made in it: keys create is refused (exit 2)
    naming the file and the keys, saying to restore it from a backup or how to start over,
    and makes no file, where it made an empty keys.db in which every old key was unknown;
    --new-keys-db makes one on purpose."""
    key_id, data = _keys_db_lost(config)
    code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 2 and out == "", out
    assert (f"{str(data / 'keys.db')!r}: cannot open the key store: it is missing, yet the "
            f"request log names keys made in it ({key_id}): a pruned key loses its record, "
            "never the "
            "file; restore it from a backup; or, to start over without them (every key made "
            "in it then stays unknown: 401), make a new keys.db with `switchpoint keys "
            "create --new-keys-db --tenant NAME`") in err, err
    assert not (data / "keys.db").exists()
    code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config,
                          "--new-keys-db", "--json"], capsys)
    assert code == 0, err
    with KeyStore.in_dir(data, reads_only=True) as keys:
        assert [r.id for r in keys.list()] == [json.loads(out)["id"]]


def test_a_start_with_keys_beside_a_log_naming_keys_of_a_missing_keys_db_is_refused(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys.db gone while the log names keys made in it: a start with auth: keys is refused
    (exit 2) before it serves, naming the file and the keys, saying to restore it from a
    backup or how to start over, and makes no file, where it made an empty keys.db and every
    key made before got 401 (and the reports called them pruned)."""
    key_id, data = _keys_db_lost(config)
    config.write_text(CONFIG.replace("admin_token_env: SP_CLI_TEST_ADMIN_UNSET\n",
                                     "auth: keys\n"), encoding="utf-8")
    code, err = refused_start("--config", config, data_dir=data, timeout=30)
    assert code == 2, err
    assert (f"{str(data / 'keys.db')!r}: cannot open the key store: it is missing, yet the "
            f"request log names keys made in it ({key_id}): a pruned key loses its record, "
            "never the file; restore it from a backup; or, to start over") in err, err
    assert "`switchpoint keys create --new-keys-db --tenant NAME`" in err, err
    assert not (data / "keys.db").exists() and not (data / "sessions.db").exists()


def _backup_taken(db: Path, backup: Path, seconds_ago: float) -> Path:
    """A copy of keys.db ``db`` at ``backup`` as if taken ``seconds_ago``: its latest time
    then."""
    with sqlite3.connect(db) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
        dst.execute("UPDATE clock SET latest = ?", (time.time() - seconds_ago,))
    src.close()
    dst.close()
    return backup


def _backup_and_a_key_made_since(config: Path) -> tuple[Path, Path, str, str]:
    """A key made in the config's keys.db, a backup of it as if taken two days ago, then a
    key made since, its requests logged a minute ago (:func:`seed`): keys.db, the backup (at
    backup.db beside the config), the older key's id and the newer's."""
    db = config.parent / "data" / "keys.db"
    with KeyStore.in_dir(db.parent) as keys:
        old = keys.create(KeySpec(tenant="acme")).record.id
    backup = _backup_taken(db, config.parent / "backup.db", 2 * 86400)
    return db, backup, old, seed(config)


def _restored_before_a_key_made_and_used(config: Path, taken_ago: float,
                                         used_ago: float) -> str:
    """A backup of the config's keys.db holding one key, as if taken ``taken_ago`` seconds
    ago, put back after a key was made and a request of it logged ``used_ago`` seconds ago;
    that key's id (which the restored file lacks)."""
    data = config.parent / "data"
    db = data / "keys.db"
    with KeyStore.in_dir(data) as keys:
        keys.create(KeySpec(tenant="acme"))
    backup = _backup_taken(db, config.parent / "backup.db", taken_ago)
    with KeyStore.in_dir(data) as keys:
        since = keys.create(KeySpec(tenant="acme")).record.id
    with SQLiteStore(data / "switchpoint.db") as store:
        store.append(RequestRecord(
            id="r0", ts=time.time() - used_ago, requested_model="auto", status="ok",
            http_status=200, pin_state="fresh", stream=False, latency_ms=1.0, tenant="acme",
            key_id=since)).result()
    os.replace(backup, db)
    return since


def test_a_keys_db_that_lacks_keys_the_log_names_since_it_was_in_use_is_refused(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty keys.db put in place, or an older backup restored, while the log names keys
    it does not hold in requests logged after the file was last in use: keys create, the cost
    report and a start with auth: keys are refused (exit 2) naming the file, how many keys and
    which, saying to restore the newest backup or how to go on with it, where each took it
    (every such key got 401, and the report called them pruned); keys create --new-keys-db
    goes on with it on purpose, and it is the one in use from then on."""
    db, backup, _, key_id = _backup_and_a_key_made_since(config)
    data = db.parent
    db.write_bytes(b"")  # (an empty file in its place)
    code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 2 and out == "", out
    assert (f"{str(db)!r}: cannot open the key store: the request log names 1 key it does not "
            f"hold ({key_id}), in requests logged while it was never in use (it is empty)"
            ) in err, err
    assert db.read_bytes() == b""  # (nothing written)
    os.replace(backup, db)
    told = (f"{str(db)!r}: cannot open the key store: the request log names 1 key it does not "
            f"hold ({key_id}), in requests logged after the latest time it was in use (")
    go_on = ("restore a backup that holds them (the newest); or, to go on with this one without "
             "them (each then stays unknown: 401), make a key in it with `switchpoint keys "
             "create --new-keys-db --tenant NAME`")
    code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 2 and out == "" and told in err and go_on in err, err
    code, out, err = run(["report", "cost", "--config", config, "--json"], capsys)
    assert code == 2 and out == "", out  # (not every such key called pruned)
    assert told.replace("open the key store", "read the keys") in err, err
    code, out, err = run(["report", "alert", "--config", config], capsys)
    assert code == 2 and out == "", out  # (nor their budgets left out)
    assert told.replace("open the key store", "read the keys' budgets") in err, err
    config.write_text(CONFIG.replace("admin_token_env: SP_CLI_TEST_ADMIN_UNSET\n",
                                     "auth: keys\n"), encoding="utf-8")
    code, err = refused_start("--config", config, data_dir=data, timeout=30)
    assert code == 2 and told in err and go_on in err, err
    code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config,
                          "--new-keys-db", "--json"], capsys)
    assert code == 0, err
    code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 0, err
    code, out, err = run(["report", "cost", "--config", config, "--json"], capsys)
    assert code == 0 and json.loads(out)["pruned_keys"] == [key_id], err


def test_keys_rotate_and_clock_reset_refuse_a_keys_db_not_in_use_and_revoke_never_does(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An older backup of keys.db put in place, the log naming a key made since: keys rotate
    (a new secret) and keys clock --reset (expired keys work again), which can let a key in,
    are refused (exit 2) as keys create is, writing nothing, where each went through and
    wrote the file's time, after which a start took it; keys revoke, which only shuts a key
    out, is never refused: it is how a revocation is made again on a restored backup."""
    db, backup, old, key_id = _backup_and_a_key_made_since(config)
    os.replace(backup, db)
    before = db.read_bytes()
    for change in (["rotate", old], ["clock", "--reset"]):
        code, out, err = run(["keys", *change, "--config", config], capsys)
        assert code == 2 and out == "", (change, out)
        assert (f"{str(db)!r}: cannot open the key store: the request log names 1 key it does "
                f"not hold ({key_id}), in requests logged after the latest time it was in use"
                ) in err, (change, err)
        assert db.read_bytes() == before, change  # (nothing written)
    code, out, err = run(["keys", "revoke", old, "--config", config], capsys)
    assert code == 0 and f"revoked key {old}" in out, err
    # It says so, where the file became the one in use unsaid.
    assert err == (f"note: {str(db)!r} lacks keys the request log names in requests logged "
                   "after it was last in use (an older backup, or an empty file, put in "
                   "place); it is now taken as the keys.db in use (those keys stay unknown: "
                   "401); to undo, restore the newest backup of keys.db (and revoke the key "
                   "there again)\n"), err
    code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config, "--json"],
                         capsys)
    assert code == 0, err  # (the revocation made it the file in use)
    code, out, err = run(["keys", "revoke", json.loads(out)["id"], "--config", config], capsys)
    assert code == 0 and err == "", err  # (the file in use: nothing to note)


def test_a_keys_db_whose_time_was_reset_is_not_refused_for_keys_pruned_while_it_ran_ahead(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A clock once set 30 days ahead: a key made, used, revoked and pruned meanwhile (its
    requests logged in that future), then keys clock --reset: keys create goes on, where it
    was refused, the file taken for another keys.db (its time, set back, before those
    requests); a key the log names in requests logged by then that the file never held is
    still refused."""
    data = config.parent / "data"
    ahead = time.time() + 30 * 86400
    with KeyStore(data / "keys.db", clock=lambda: ahead) as keys:
        gone = keys.create(KeySpec(tenant="acme")).record.id
        keys.create(KeySpec(tenant="acme"))
    with SQLiteStore(data / "switchpoint.db") as store:
        store.append(RequestRecord(
            id="r0", ts=ahead, requested_model="auto", status="ok", http_status=200,
            pin_state="fresh", stream=False, latency_ms=1.0, tenant="acme",
            key_id=gone)).result()
    with KeyStore(data / "keys.db", clock=lambda: ahead + 60) as keys:
        keys.revoke(gone)
        assert keys.prune(None, 0) == 1
    code, _, err = run(["keys", "clock", "--reset", "--config", config], capsys)
    assert code == 0, err
    code, _, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 0, err
    with SQLiteStore(data / "switchpoint.db") as store:  # (a key of another keys.db)
        store.append(RequestRecord(
            id="r1", ts=ahead + 7200, requested_model="auto", status="ok", http_status=200,
            pin_state="fresh", stream=False, latency_ms=1.0, tenant="acme",
            key_id="0123456789")).result()
    code, _, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 2 and "names 1 key it does not hold (0123456789)" in err, err


def test_a_backup_taken_minutes_before_a_key_was_made_and_used_is_refused(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A backup of keys.db taken 20 minutes ago put back, the log naming a key made and used
    10 minutes ago: keys create is refused, where a key made and used within an hour of the
    backup passed unseen (a margin of an hour past the file's latest time)."""
    since = _restored_before_a_key_made_and_used(config, taken_ago=1200, used_ago=600)
    code, _, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 2 and f"names 1 key it does not hold ({since})" in err, err


def test_a_backup_taken_minutes_before_a_key_was_made_and_used_is_taken_saying_what_it_lacks(
        config: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A backup of keys.db taken 4 minutes ago put back, the log naming a key made and used 2
    minutes ago, within the margin a refusal leaves (a key revoked and pruned as it was used
    looks the same): keys create goes on, warning that an older keys.db was put in place,
    naming that key and what the file cannot know (keys made, rotated or changed since),
    where it said nothing and the key got 401 unsaid."""
    since = _restored_before_a_key_made_and_used(config, taken_ago=240, used_ago=120)
    with caplog.at_level("WARNING", logger="switchpoint"):  # (stderr, the command's log)
        code, _, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 0, err
    said = caplog.text
    assert "an older keys.db (a backup) was put in place" in said, said
    assert "keys made since are unknown (401), and a key's settings are as" in said, said
    assert (f"names 1 key it does not hold ({since}) in requests logged within 5 minutes of "
            "that time: made after the backup was taken") in said, said


def test_keys_list_and_show_of_a_restored_backup_show_the_revocations_and_rotations_made_since(
        config: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A backup of keys.db restored, a key revoked and another rotated since it was taken:
    keys list and keys show (which open it read-only) show them revoked and rotated, as the
    service enforces them, saying the file lacks those changes, where they showed both keys
    active until something opened the file for writing; the file itself is left as it is."""
    data = config.parent / "data"
    db = data / "keys.db"
    with KeyStore.in_dir(data) as keys:
        revoked, rotated = (keys.create(KeySpec(tenant="acme")).record.id for _ in range(2))
        backup = _backup_taken(db, config.parent / "backup.db", 0)
        keys.revoke(revoked)
        keys.rotate(rotated)
    os.replace(backup, db)
    stamp = db.read_bytes()
    with caplog.at_level("WARNING", logger="switchpoint"):  # (stderr, the command's log)
        code, out, err = run(["keys", "list", "--config", config, "--json"], capsys)
        assert code == 0, err
        shown = {k["id"]: k for k in json.loads(out)}
        assert shown[revoked]["status"] == "revoked"
        assert shown[rotated]["status"] == "active" and shown[rotated]["rotated_at"]
        code, out, err = run(["keys", "show", revoked, "--config", config], capsys)
        assert code == 0, err
        assert "revoked" in out.split("status", 1)[1].splitlines()[0], out
    assert (f"keys.db lacks changes keys.revocations.jsonl keeps (a backup restored), which the "
            "next start (or `switchpoint keys` change) makes in it; the keys are shown with "
            f"them made: revoked again 1 key it held live ({revoked}); rotated again 1 key it "
            f"held live ({rotated})") in caplog.text, caplog.text
    assert db.read_bytes() == stamp


def test_a_key_pruned_from_keys_db_is_no_key_it_never_held(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key whose requests the log holds, revoked and then pruned (past governance.max_keys
    ended keys, as the next key made deletes it): keys create and the cost report go on (the
    report marks it pruned); the file was in use after its requests, so it is no key the file
    never held."""
    config.write_text(CONFIG + "governance: {max_keys: 1}\n", encoding="utf-8")
    key_id = seed(config)
    assert run(["keys", "revoke", key_id, "--config", config], capsys)[0] == 0
    for _ in range(2):  # (made, revoked: the second key made deletes the first's record)
        code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config,
                              "--json"], capsys)
        assert code == 0, err
        assert run(["keys", "revoke", json.loads(out)["id"], "--config", config], capsys)[0] == 0
    with KeyStore.in_dir(config.parent / "data", reads_only=True) as keys:
        assert key_id not in {r.id for r in keys.list()}
    code, out, err = run(["report", "cost", "--config", config, "--json"], capsys)
    assert code == 0 and json.loads(out)["pruned_keys"] == [key_id], err


def test_prune_beside_a_log_naming_keys_of_a_missing_keys_db_prunes_the_log_and_warns(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keys.db gone while the log names keys made in it: prune prunes the log (its retention
    goes on, from cron too) and warns, exit 0, naming the file and the keys and saying to
    restore it from a backup (keys_db_missing in --json), where it said no key was made
    there; it makes no keys.db."""
    key_id, data = _keys_db_lost(config)
    code, out, err = run(["prune", "--config", config, "--older-than", "30", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["files"] == ["switchpoint.db"] and report["keys_deleted"] == 0, report
    assert report["keys_db_missing"] is True, report
    assert (f"warning: {str(data / 'keys.db')!r}: cannot prune the ended keys: it is missing, "
            f"yet the request log names keys made in it ({key_id}): a pruned key loses its "
            "record, never the file; restore it from a backup\n") in err, err
    assert "no key to prune" not in err and "deleted 0 decisions" in err, err
    assert not (data / "keys.db").exists()


def test_prune_beside_a_keys_db_lacking_keys_the_log_names_prunes_the_log_not_the_keys(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty keys.db put in place, or an older backup restored, while the log names keys
    it does not hold in requests logged since it was in use: prune prunes the log (its
    retention goes on, from cron too) but not the keys, and warns, exit 0, naming the file and
    the keys (keys_db_lacks_logged_keys in --json); it leaves the file as it is, where it
    pruned it and wrote its latest time, after which keys create and a start took it."""
    db, backup, _, key_id = _backup_and_a_key_made_since(config)
    for wrong, when in [(b"", "while it was never in use (it is empty)"),
                        (backup.read_bytes(), "after the latest time it was in use (")]:
        db.write_bytes(wrong)
        for dry_run in ([], ["--dry-run"]):
            code, out, err = run(["prune", "--config", config, "--older-than", "30", "--json",
                                  *dry_run], capsys)
            assert code == 0, err
            report = json.loads(out)
            assert report["files"] == ["switchpoint.db"] and report["keys_deleted"] == 0, report
            assert report["keys_db_lacks_logged_keys"] is True, report
            assert report["keys_db_missing"] is False, report
            assert (f"warning: {str(db)!r}: cannot prune the ended keys: the request log names "
                    f"1 key it does not hold ({key_id}), in requests logged {when}") in err, err
            assert "no key was pruned from it\n" in err and "decisions" in err, err
            assert db.read_bytes() == wrong  # (nothing written)
        code, out, err = run(["keys", "create", "--tenant", "acme", "--config", config],
                             capsys)
        assert code == 2 and "cannot open the key store" in err, err  # (still refused)


@pytest.mark.parametrize(("argv", "name"), [
    (["forecast", "--requests-per-hour", "1e308", "--avg-input-tokens", "100",
      "--avg-output-tokens", "100"], "--requests-per-hour"),
    (["forecast", "--requests-per-hour", "1", "--avg-input-tokens", "1e300",
      "--avg-output-tokens", "1e300"], "--avg-input-tokens"),
    (["forecast", "--requests-per-hour", "1", "--avg-input-tokens", "100",
      "--avg-output-tokens", "1e9"], "--avg-output-tokens"),
])
def test_report_figures_past_their_bounds_are_refused_not_projected_to_infinity(
        config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], name: str) -> None:
    # The same bounds as the HTTP reports': past them a forecast printed $inf, nan% and JSON
    # Infinity (which strict JSON readers refuse).
    seed(config)
    code, out, err = run(["report", *argv, "--config", config, "--json"], capsys)
    assert code == 2 and out == "", out[:300]
    assert f"{name}: must be at most" in err, err


def test_reports_over_a_window_with_no_request_say_so_not_100_percent(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(config)  # a minute ago: before a window that ends now and is shorter than that
    code, out, _ = run(["report", "sla", "--since-hours", "0.001", "--config", config,
                        "--json"], capsys)
    report = json.loads(out)
    # The JSON keeps its number (callers format it); total_requests says it is over nothing.
    assert code == 0 and report["total_requests"] == 0 and report["compliance_rate"] == 1.0
    code, out, _ = run(["report", "sla", "--since-hours", "0.001", "--config", config], capsys)
    assert code == 0 and "%" not in out.splitlines()[0], out
    assert "no requests in the window, so no compliance to report" in out, out
    assert "average latency" not in out
    code, out, _ = run(["report", "sla", "--since-hours", "1", "--config", config], capsys)
    assert code == 0 and "3 requests, compliance 100.0%" in out  # over some, the rate
    code, out, _ = run(["report", "cost", "--tenant", "default", "--config", config], capsys)
    first = out.splitlines()[0]
    assert code == 0 and "0 requests" in first and "avg" not in first, out
    assert "no answered request of known cost" in first, out
    assert "routing saved" not in out and "%" not in out, out
    assert "no priced request to compare" in out, out
    code, out, _ = run(["report", "suggest", "--tenant", "default", "--config", config], capsys)
    assert code == 0 and out.startswith("no suggestion: no answered auto request was logged in "
                                        "the last week"), out
    assert "either" not in out and "λ" not in out, out


def test_a_suggestion_from_free_traffic_does_not_call_a_dearer_lambda_free(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Every logged answer came from a free model: a λ sending them to a priced one costs more
    # than nothing, which no share of nothing (+0.0%) says; it is no "at most 10% more".
    config = tmp_path / "switchpoint.yaml"
    config.write_text(CONFIG.replace("{name: small, input_per_mtok: 0.2, output_per_mtok: 0.6}",
                                     "{name: small, input_per_mtok: 0, output_per_mtok: 0}"),
                      encoding="utf-8")
    _log_routed(tmp_path / "data", [("small", 5.0, 100.0, 0.0)] * 3, "k1",
                {"big": 0.011, "small": 0.0})
    code, out, _ = run(["report", "suggest", "--config", config, "--json"], capsys)
    assert code == 0
    items = json.loads(out)
    assert not any(item["what_if"]["spend_usd"] > 0 and "+0.0% spend" in item["tradeoff"]
                   for item in items), items
    assert not any(item["kind"] == "cost_weight" and "Lower" in item["suggestion"]
                   for item in items), items


@pytest.mark.parametrize("report", EVERY_REPORT)
def test_a_report_for_a_tenant_nobody_knows_is_refused_not_reported_empty(
        config: Path, report: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    seed(config)
    code, out, err = run(["report", *report, "--tenant", "acem", "--config", config], capsys)
    assert (code, out) == (2, "")
    assert err == ('switchpoint: error: --tenant: "acem" is neither a tenant of the config nor '
                   'one the request or feedback log names; known: "acme", "default" (default: '
                   "requests without a tenant)\n")
    code, out, err = run(["report", *report, "--tenant", "acme", "--config", config], capsys)
    assert code == 0 and out, err
    # 'default', the requests without a tenant, is always known (here it logged nothing).
    code, out, err = run(["report", *report, "--tenant", "default", "--config", config], capsys)
    assert "--tenant" not in err and (code == 0 or "nothing was logged" in err), err


def test_a_key_made_without_a_config_file_says_to_give_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Forgetting --config is the usual reason a tenant is unknown: the key would also land in
    another data_dir than the service's. Say so, rather than to add the tenant to a config."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    code, _, err = run(["keys", "create", "--tenant", "acme"], capsys)
    assert code == 2 and '--tenant: unknown tenant "acme"' in err, err
    assert "no config file was given" in err and "--config FILE" in err, err
    assert not (tmp_path / "data").exists()


def test_a_secret_that_cannot_be_written_out_is_never_kept(
        config: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """keys rotate and keys create write the new secret out before keys.db keeps it: one
    whose stdout is a closed pipe (as a reader killed first leaves it, and as a kill between
    keeping and printing would lose it) changes nothing, exits 2 and says so; the rotation was
    kept with its secret lost, the old one refused at once, and the command exited 0."""
    issued = _created(config, capsys)
    reader, writer = os.pipe()
    os.close(reader)  # (every write to the pipe now fails: its reader is gone)
    try:
        rotated = subprocess.run(
            [sys.executable, "-m", "switchpoint", "keys", "rotate", issued["id"], "--config",
             str(config)], stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60,
            check=False)
    finally:
        os.close(writer)
    assert rotated.returncode == 2, rotated.stderr
    assert ("could not write the new secret to stdout (Broken pipe), so the key was not "
            "rotated: nothing changed, and its secrets work as before") in rotated.stderr
    with KeyStore.in_dir(config.parent / "data") as store:
        assert store.verify(issued["key"]).rotated_at is None

    class Closed:  # stdout whose reader left (in-process: keys create, too)
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    with monkeypatch.context() as patched:
        patched.setattr(sys, "stdout", Closed())
        code = main(["keys", "create", "--tenant", "acme", "--config", str(config)])
    _, err = capsys.readouterr()
    assert code == 2 and "so the key was not made: nothing changed" in err, err
    with monkeypatch.context() as patched:  # (started with its stdout closed: `>&-`)
        patched.setattr(sys, "stdout", None)
        code = main(["keys", "create", "--tenant", "acme", "--config", str(config)])
    _, err = capsys.readouterr()
    assert code == 2 and "to stdout (it is closed), so the key was not made" in err, err
    code, out, _ = run(["keys", "list", "--config", config, "--json"], capsys)
    assert [k["id"] for k in json.loads(out)] == [issued["id"]]


def test_a_rotation_without_a_config_file_says_to_give_one_and_hands_out_nothing(
        config: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without the config, no key's tenant can be checked (one a reload removed is given no
    secret): the rotation is refused as a creation is, and the key keeps its secret."""
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    issued = _created(config, capsys)
    code, out, err = run(["keys", "rotate", issued["id"], "--data-dir",
                          config.parent / "data"], capsys)
    assert code == 2 and out == "" and "no config file was given" in err, err
    assert "--config FILE" in err, err
    with KeyStore.in_dir(config.parent / "data") as store:
        assert store.verify(issued["key"]).rotated_at is None


def test_a_clock_once_set_ahead_is_shown_and_reset_with_no_service_running(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The key store judges expiry at the latest time it has seen; after a clock set ahead by
    mistake, ``keys clock`` says so and names the keys it holds expired, and ``--reset`` (only
    with no service on the data dir) brings the store back to the clock."""
    from switchpoint.gateway.owner import DataDirLock

    code, out, err = run(["keys", "create", "--tenant", "acme", "--expires", "2d", "--config",
                          config], capsys)
    assert code == 0, err
    key = out.strip()
    path = config.parent / "data" / "keys.db"
    with KeyStore(path) as store:
        key_id = store.verify(key).id
        code, out, _ = run(["keys", "clock", "--config", config], capsys)
        assert code == 0 and "judged at this machine's clock" in out, out
        store.clock = lambda: time.time() + 30 * 86400  # a clock set a month ahead ...
        with pytest.raises(KeyExpiredError):
            store.verify(key)
    # ... and back: the key stays refused, and the store says why.
    with KeyStore(path) as store, pytest.raises(KeyExpiredError):
        store.verify(key)
    code, out, _ = run(["keys", "clock", "--config", config], capsys)
    assert code == 0 and "720.0 h ahead" in out and key_id in out and "--reset" in out, out
    code, out, _ = run(["keys", "list", "--config", config, "--json"], capsys)
    assert json.loads(out)[0]["status"] == "expired"
    # Not beside a service: it would write its later time back.
    lock = DataDirLock(config.parent / "data").acquire()
    try:
        code, _, err = run(["keys", "clock", "--reset", "--config", config], capsys)
        assert code == 2 and "stop it, reset, then start it again" in err, err
        # (refused as experiments end and models unregister are, naming the service)
        assert f"a switchpoint service (pid {os.getpid()}) is serving from data_dir" in err, err
        with KeyStore(path) as store, pytest.raises(KeyExpiredError):
            store.verify(key)  # nothing changed
    finally:
        lock.release()
    code, out, err = run(["keys", "clock", "--reset", "--config", config, "--json"], capsys)
    assert code == 0, err
    reset = json.loads(out)
    assert reset["revived"] == [key_id] and reset["was"] - reset["latest"] > 29 * 86400
    with KeyStore(path) as store:
        assert store.verify(key).id == key_id
    code, out, _ = run(["keys", "list", "--config", config, "--json"], capsys)
    assert json.loads(out)[0]["status"] == "active"


def test_a_key_made_while_the_key_stores_time_is_ahead_of_the_clock_says_so(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Expiry is reckoned from the key store's time: with it two days ahead of the clock (a
    clock once set ahead), a date the clock has not reached is refused saying why (not merely
    "not in the future"), and a key made for 1h is told it lives that long past the store's
    time, not the clock's."""
    code, _, err = run(["keys", "create", "--tenant", "acme", "--config", config], capsys)
    assert code == 0, err
    with KeyStore(config.parent / "data" / "keys.db") as store:
        store.clock = lambda: time.time() + 2 * 86400
        store.now()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    code, _, err = run(["keys", "create", "--tenant", "acme", "--expires", str(tomorrow),
                        "--config", config], capsys)
    assert code == 2, err
    assert "ahead of this machine's clock" in err and "keys clock" in err, err
    code, _, err = run(["keys", "create", "--tenant", "acme", "--expires", "1h", "--config",
                        config], capsys)
    assert code == 0, err
    assert "ahead of this machine's clock" in err and "keys clock" in err, err


@pytest.mark.parametrize("reset", [False, True])
def test_keys_clock_with_json_on_a_data_dir_without_keys_prints_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], reset: bool) -> None:
    """``--json`` is JSON whatever the data dir holds (a script reads it): without a key store,
    the store's time is none, and nothing is made there."""
    data = tmp_path / "data"
    code, out, err = run(["keys", "clock", "--json", "--data-dir", data,
                          *(["--reset"] if reset else [])], capsys)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["latest"] is None
    assert (shown["revived"] == []) if reset else (shown["ahead_s"] == 0.0)
    assert not data.exists()


def _places(line: str) -> set[int]:
    """The decimal places of each amount of dollars ``line`` shows."""
    return {len(m) for m in re.findall(r"\$[\d,]+\.(\d+)", line)}


def test_keys_show_sla_and_alert_show_their_amounts_alike_as_the_cost_report_does(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Amounts to the places the widest needs, a projection rounded to them, shares and
    latencies one way each (a budget as written): the alert's line read "$0.0009325 spent,
    projected $0.0111925094", and a key's budgets $0.0009325 beside $0.000000."""
    data = config.parent / "data"
    with KeyStore.in_dir(data) as keys:
        key_id = keys.create(KeySpec(tenant="acme", budgets=["0.5/day", "30/month"])).record.id
    now = time.time()
    with SQLiteStore(data / "switchpoint.db") as store:
        for i, cost in enumerate([0.00084, 0.0000925]):
            store.append(RequestRecord(
                id=f"r{i}", ts=now - 1, requested_model="small", status="ok", http_status=200,
                pin_state="fresh", stream=False, latency_ms=1234.5, model="small",
                prompt_tokens=1, completion_tokens=1, cost_usd=cost, tenant="acme",
                key_id=key_id)).result()
            store.append(LedgerRecord(ts=now - 1, reservation_id=f"t{i}", kind="settle",
                                      amount_usd=cost, tenant="acme", key_id=key_id,
                                      model="small")).result()
    code, out, err = run(["keys", "show", key_id, "--config", config], capsys)
    assert code == 0, err
    budgets = [line for line in out.splitlines() if line.startswith("budget ")]
    assert len(budgets) == 2 and _places(" ".join(budgets)) == {7}, out
    assert "spent $0.0009325, held $0.0000000, 0.2% used" in budgets[0], out
    assert "spent $0.0009325, held $0.0000000, 0.003% used" in budgets[1], out
    code, out, err = run(["report", "alert", "--config", config], capsys)
    assert code == 0, err
    hour = next(line for line in out.splitlines() if line.startswith("this hour:"))
    assert _places(hour) == {7} and hour.endswith("against a budget of $1/hour"), out
    key_row = next(line for line in out.splitlines() if line.startswith(f"key:{key_id}"))
    assert _places(key_row) == {7} and " 0.2% " in key_row, out
    code, out, err = run(["report", "sla", "--since-hours", "1", "--config", config], capsys)
    assert code == 0, err
    assert "average latency 1,234.5 ms" in out and "compliance 0.0%" in out, out


def test_a_forecast_says_a_model_gone_from_the_catalog_is_gone_not_unpriced(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(config)  # two answers from big, one from small
    # small taken out of the catalog.
    config.write_text(CONFIG.replace("  - {name: small, input_per_mtok: 0.2, "
                                     "output_per_mtok: 0.6}\n", "").replace(
                                         "[big, small, auto]", "[big, auto]"), encoding="utf-8")
    argv: list[str | Path] = ["report", "forecast", "--requests-per-hour", "100",
                              "--avg-input-tokens", "1000", "--avg-output-tokens", "1000",
                              "--config", config]
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, err
    forecast = json.loads(out)
    assert (forecast["removed_models"], forecast["unpriced_models"]) == (["small"], [])
    assert forecast["removed_requests_pct"] == pytest.approx(1 / 3)
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "does not price" not in out, out
    assert ('not counted: 33.3% of the requests went to "small", which is no longer in the '
            "catalog (its share will go to the models there are)") in out, out


@pytest.mark.parametrize(("catalog", "says"), [
    pytest.param("  - {name: big}\n  - {name: small}\n",
                 'not counted: 100.0% of the requests go to "big", "small", which the catalog '
                 "does not price (cost unknown: give them input_per_mtok and output_per_mtok)",
                 id="unpriced"),
    pytest.param("  - {name: other, input_per_mtok: 1, output_per_mtok: 1}\n",
                 'not counted: 100.0% of the requests went to "big", "small", which are no '
                 "longer in the catalog (their share will go to the models there are)",
                 id="removed")])
def test_a_forecast_whose_catalog_prices_none_of_the_mix_says_why_once(
        config: Path, capsys: pytest.CaptureFixture[str], catalog: str, says: str) -> None:
    # Its not-counted line says why and the fix; the tip, which says the same over HTTP
    # (optimization_tip), is left out, as it is without a catalog.
    seed(config)
    config.write_text(f"models:\n{catalog}data_dir: data\ntenants:\n  acme: {{}}\n",
                      encoding="utf-8")
    code, out, err = run(["report", "forecast", "--requests-per-hour", "10",
                          "--avg-input-tokens", "100", "--avg-output-tokens", "100",
                          "--config", config], capsys)
    assert code == 0, err
    assert says in out and "tip:" not in out and "nothing to project" not in out, out
    assert "hourly, daily and monthly spend unknown" in out, out


def test_an_alert_over_a_log_younger_than_five_minutes_says_its_projection_is_weak(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(config)  # the log's first requests, a minute ago
    code, out, err = run(["report", "alert", "--config", config, "--json"], capsys)
    assert code == 0, err
    alert = json.loads(out)
    assert alert["projection_low_confidence"] is True
    assert alert["projection_window_seconds"] == 300
    # The log's $0.0808 taken as five minutes' spend, not the minute it holds: at most the
    # hour's spend plus that rate over the hour left. (The seed's spend, not the hour's: a
    # minute ago may lie in the hour before.)
    spent = 2 * (1000 * 10 + 1000 * 30) / 1e6 + (1000 * 0.2 + 1000 * 0.6) / 1e6
    assert alert["hourly_spend_usd"] in (0.0, pytest.approx(spent))
    # (the rate over a minute would allow up to five times as much)
    assert (alert["projected_hourly_usd"] - alert["hourly_spend_usd"]
            <= spent / 300 * 3600 * (1 + 1e-6))
    code, out, err = run(["report", "alert", "--config", config], capsys)
    assert code == 0, err
    assert ("(low confidence: the logs began less than 5 min ago; a projection takes what "
            "they hold as the spend of the last 5 min)") in out, out


def test_a_forecast_without_a_catalog_says_none_was_given(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Without --config no catalog is loaded at all: not "big and small have no prices in the
    # catalog", but that no catalog was given, and how to give one.
    seed(config)
    argv: list[str | Path] = ["report", "forecast", "--requests-per-hour", "10",
                              "--avg-input-tokens", "100", "--avg-output-tokens", "100",
                              "--data-dir", config.parent / "data"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "in the catalog" not in out and "which the catalog does not price" not in out
    assert "no catalog was given" in out and "--config" in out
    # The fix is said once, and the spend nobody could project is unknown, not $0.000000.
    assert out.count("no catalog was given") == 1 and "tip:" not in out, out
    assert "$" not in out and "hourly, daily and monthly spend unknown" in out, out
    code, out, err = run([*argv, "--json"], capsys)
    forecast = json.loads(out)
    assert [forecast[f"{span}_cost_usd"] for span in ("hourly", "daily", "monthly")] == [
        None, None, None]
    tip = forecast["optimization_tip"]
    assert "no catalog was given" in tip and "in the catalog" not in tip
    code, out, err = run([*argv, "--config", config], capsys)  # with one, it projects
    assert code == 0 and "no catalog" not in out


def test_a_data_dir_a_message_names_is_quoted_cut_short_and_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # A folder named with a terminal escape, deep enough to pass 200 characters: each command
    # that says it does not exist (or holds nothing) names it quoted, cut short and escaped.
    typo = tmp_path / ("\x1b[2J" + "d" * 200) / ("e" * 200)
    argvs: list[list[str | Path]] = [
        ["report", "cost", "--data-dir", typo],
        ["learn", "--export", tmp_path / "w", "--data-dir", typo],
        ["feedback", "d1", "--success", "--data-dir", typo],
        ["keys", "revoke", "0123456789", "--data-dir", typo],
        ["prune", "--older-than", "1", "--data-dir", typo],
    ]
    for argv in argvs:
        code, out, err = run(argv, capsys)
        assert code == 2 and out == "", (argv[:2], err)
        assert repr(str(typo))[:150] in err, (argv[:2], err)  # (the escape as \\x1b)
        assert "\x1b" not in err and "e" * 100 not in err, (argv[:2], err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_comparison_model_of_thousands_of_characters_is_named_cut_short(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(config)
    for name in ("\x1b[2J" + "x" * 100_000, "nope"):
        code, out, err = run(["report", "cost", "--config", config, "--comparison-model", name],
                             capsys)
        assert code == 2 and out == ""
        assert "--comparison-model:" in err and 'is not a catalog model ("big", "small")' in err
        assert len(err) < 300 and "\x1b" not in err, err[:300]
    assert '"nope" is not a catalog model' in err


def _key_store_of_schema(data_dir: Path, version: int) -> list[str]:
    """A keys.db written by a switchpoint whose key store's schema was ``version`` (in WAL
    mode, closed cleanly: no file beside it), holding two keys of tenant acme, one with a
    budget; their ids."""
    from switchpoint.governance import keys as keys_module

    data_dir.mkdir(mode=0o700, exist_ok=True)
    path = data_dir / "keys.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        script = " ".join(keys_module._MIGRATIONS[v] for v in range(1, version + 1))
        conn.executescript(f"BEGIN; {script} PRAGMA user_version={version}; COMMIT;")
        ids = []
        for created, budgets in ((time.time() - 60, '["5/day"]'), (time.time() - 30, "[]")):
            key_id, key = keys_module.new_key()
            conn.execute("INSERT INTO keys (id, hash, tenant, created_at, budgets) "
                         "VALUES (?, ?, 'acme', ?, ?)",
                         (key_id, keys_module.hash_key(key), created, budgets))
            if version >= 2:
                conn.execute("UPDATE keys SET seq = rowid WHERE id = ?", (key_id,))
            ids.append(key_id)
    finally:
        conn.close()
    path.chmod(0o600)
    return ids


def _folder(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())}


@pytest.mark.parametrize("version", [1, 3, 4, KEYS_SCHEMA])
def test_the_commands_that_only_read_the_keys_leave_the_file_as_it_was(
        config: Path, capsys: pytest.CaptureFixture[str], version: int) -> None:
    """keys list, show and clock and a report read a key store of this schema or an older
    one without upgrading it, writing its time or a note beside it: the folder holds the
    same bytes after them. The first command that writes the keys upgrades the file."""
    data_dir = config.parent / "data"
    ids = _key_store_of_schema(data_dir, version)
    before = _folder(data_dir)
    assert list(before) == ["keys.db"]
    code, out, err = run(["keys", "list", "--json", "--config", config], capsys)
    assert code == 0, err
    assert [k["id"] for k in json.loads(out)] == ids
    assert [k["status"] for k in json.loads(out)] == ["active", "active"]
    for argv, shown in ((["keys", "show", ids[0]], "5/day"), (["keys", "clock"], "judged at"),
                        (["report", "alert"], ids[0])):
        code, out, err = run([*argv, "--config", config], capsys)
        assert code == 0 and shown in out, (argv, out, err)
        assert "Traceback" not in err and "latest time" not in err, (argv, err)
    assert _folder(data_dir) == before
    code, out, err = run(["keys", "revoke", ids[1], "--config", config], capsys)
    assert code == 0, err
    conn = sqlite3.connect(data_dir / "keys.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == KEYS_SCHEMA
    finally:
        conn.close()


def _leave_in_log(data_dir: Path, sql: str, *args: object, name: str = "keys.db") -> None:
    """Run ``sql`` on data_dir's keys.db (or ``name``), its change left in the -wal, and leave
    the folder as a snapshot of its files taken while the writer had it open, but the -shm (as
    a copy of the file with its log, or a crash that took the -shm, leaves it)."""
    path = data_dir / name
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute(sql, args)
        files = {p.name: p.read_bytes() for p in data_dir.iterdir() if not p.name.endswith("-shm")}
    finally:
        writer.close()
    for p in data_dir.iterdir():
        p.unlink()
    for kept, data in files.items():
        (data_dir / kept).write_bytes(data)
    assert f"{name}-wal" in _folder(data_dir)


def _digests(data_dir: Path) -> dict[str, str]:
    """Each file of ``data_dir`` and a digest of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data_dir.iterdir())}


@pytest.mark.parametrize("version", [1, 3, 4, KEYS_SCHEMA])
def test_reading_a_key_store_beside_its_log_leaves_no_file_beside_it(
        config: Path, capsys: pytest.CaptureFixture[str], version: int) -> None:
    """A keys.db (of this schema or an older one) with its -wal beside it and no -shm (a
    copy of the two, a crash that took the -shm) is read with what its log holds by the
    commands that only read the keys, and the folder keeps the same files with the same
    bytes: SQLite, reading it even read-only, made a -shm beside it and left it there."""
    data_dir = config.parent / "data"
    ids = _key_store_of_schema(data_dir, version)
    _leave_in_log(data_dir, "UPDATE keys SET revoked_at = ? WHERE id = ?", time.time(), ids[1])
    before = _digests(data_dir)
    code, out, err = run(["keys", "list", "--json", "--config", config], capsys)
    assert code == 0, err
    assert [(k["id"], k["status"]) for k in json.loads(out)] == [
        (ids[0], "active"), (ids[1], "revoked")]  # (the revocation is in the log alone)
    assert _digests(data_dir) == before
    for argv, shown in ((["keys", "show", ids[0]], "5/day"),
                        (["keys", "clock"], "judged at"), (["report", "alert"], ids[0])):
        code, out, err = run([*argv, "--config", config], capsys)
        assert code == 0 and shown in out, (argv, out, err)
        assert "Traceback" not in err, (argv, err)
        assert _digests(data_dir) == before, argv
    code, out, err = run(["keys", "revoke", ids[0], "--config", config], capsys)
    assert code == 0, err  # (a writer takes the log in and upgrades the file)
    conn = sqlite3.connect(data_dir / "keys.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == KEYS_SCHEMA
        assert conn.execute("SELECT count(*) FROM keys WHERE revoked_at IS NULL"
                            ).fetchone()[0] == 0
    finally:
        conn.close()


def test_an_older_key_store_too_big_to_read_upgraded_says_to_let_a_writer_upgrade_it(
        config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from switchpoint.store import reading

    data_dir = config.parent / "data"
    _key_store_of_schema(data_dir, 2)
    before = _folder(data_dir)
    monkeypatch.setattr(reading, "MAX_UPGRADE_COPY_BYTES", 1024)
    code, out, err = run(["keys", "list", "--config", config], capsys)
    assert code == 2 and out == "", (out, err)
    assert "cannot open the key store (its schema version 2 is older than this " in err, err
    assert ("start the service once (or run a command that writes the file) to upgrade it, "
            "then run this command again)") in err, err
    assert "Traceback" not in err
    assert _folder(data_dir) == before


def test_an_older_key_store_whose_log_is_too_big_to_read_upgraded_is_refused_too(
        config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound on what is copied into memory counts the -wal the copy takes in with the
    file: a small file beside a large log is refused as a large file is, the folder left as
    it was."""
    from switchpoint.store import reading

    data_dir = config.parent / "data"
    _key_store_of_schema(data_dir, 2)
    _leave_in_log(data_dir, "UPDATE keys SET tenant = ?", "t" * 20_000)
    files = _folder(data_dir)
    main, wal = len(files["keys.db"]), len(files["keys.db-wal"])
    assert wal > 2 * main, (main, wal)
    before = _digests(data_dir)
    monkeypatch.setattr(reading, "MAX_UPGRADE_COPY_BYTES", main + 1024)
    code, out, err = run(["keys", "list", "--config", config], capsys)
    assert code == 2 and out == "", (out, err)
    assert (f"its schema version 2 is older than this switchpoint's {KEYS_SCHEMA}, and the "
            "file with its "
            "-wal (0 MiB) is too big to be read upgraded") in err, err
    assert "Traceback" not in err
    assert _digests(data_dir) == before  # (no -shm made beside it either)


_A_MODEL = "INSERT INTO runtime_models (name, created, card) VALUES ('m', 1, '{}')"


@pytest.mark.parametrize(("name", "sql", "argv"), [
    ("switchpoint.db", _A_MODEL, ["feedback", "0" * 32, "--success"]),
    ("switchpoint.db", _A_MODEL, ["prune", "--older-than", "1"]),
    ("keys.db", "UPDATE keys SET name = 'n'", ["keys", "revoke", "KEY"])],
    ids=["feedback", "prune", "keys-revoke"])
def test_a_write_refused_for_an_overwritten_header_leaves_the_file_and_its_log(
        config: Path, capsys: pytest.CaptureFixture[str], name: str, sql: str,
        argv: list[str]) -> None:
    """A store whose first 100 bytes were overwritten, with its -wal beside it (a crash left
    it): a command that writes it is refused as damaged, and the file and its log are left as
    they were; the refused opening copied the log into the damaged file and removed it."""
    key_id = seed(config)
    data = config.parent / "data"
    _leave_in_log(data, sql, name=name)
    path = data / name
    with path.open("r+b") as file:
        file.write(bytes(100))
    kept = {n: d for n, d in _digests(data).items() if n in (name, f"{name}-wal")}
    assert len(kept) == 2
    code, out, err = run([*[a.replace("KEY", key_id) for a in argv], "--config", config],
                         capsys)
    assert code == 2 and out == "", out
    assert f"{str(path)!r}: cannot open" in err and "file is not a database" in err, err
    assert "the file is damaged" in err, err
    assert {n: d for n, d in _digests(data).items() if n in kept} == kept


def test_a_header_overwritten_whose_page_the_log_holds_anew_is_whole_and_written(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The -wal a crash left holds a newer copy of the first page (the file grew): SQLite
    reads that copy, so the file is whole, and a write goes on; its checkpoint mends the
    header."""
    seed(config)
    data = config.parent / "data"
    _leave_in_log(data, "INSERT INTO runtime_models (name, created, card) VALUES ('m', 1, ?)",
                  "x" * 200_000, name="switchpoint.db")
    path = data / "switchpoint.db"
    with path.open("r+b") as file:
        file.write(bytes(100))
    code, _, err = run(["prune", "--older-than", "1", "--config", config], capsys)
    assert code == 0, err
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
