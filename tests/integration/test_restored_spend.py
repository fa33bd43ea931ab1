"""A ``switchpoint.db`` restored from a backup taken before some spend does not give that
spend back to the budgets: the service keeps each budget's spend in its period under way in
``switchpoint.spend-mark.jsonl``, and the next start books what the restored file lacks as
carried over. A real gateway (real SQLite files in ``tmp_path``) over the fake provider; the
backup is taken with SQLite's backup API, as the deployment guide takes it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from switchpoint.config import Settings
from switchpoint.errors import BudgetExceededError
from switchpoint.gateway import Gateway
from switchpoint.governance.spend_mark import SPEND_MARK_FILENAME
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.learning_env import settings_for
from tests.integration.test_restored_removals import back_up, restore, started

# Each request may cost $0.0020xx (its worst case: its prompt's bytes and 2,000 tokens out
# at $1 per million) and costs $0.002 (10 tokens in, 1,990 out).
CONFIG = "tenants:\n  acme: {budgets: [0.007/month]}\n"
PROMPT = "[[fake:usage:prompt=10,completion=1990]] hi"


def spend(gateway: Gateway) -> None:
    gateway.complete([{"role": "user", "content": PROMPT}], "cheap", tenant="acme",
                     max_tokens=2000)


def test_spend_since_a_restored_backup_still_counts_against_the_tenant_s_budget(
        fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings: Settings = settings_for(fake, tmp_path, CONFIG)
    db = Path(settings.db_path)
    backup = tmp_path / "backup.db"
    with started(settings) as gateway:
        spend(gateway)
        back_up(db, backup)
        spend(gateway)
        spend(gateway)
        with pytest.raises(BudgetExceededError):  # 0.006 spent: no room for 0.0020xx more
            spend(gateway)
    assert (Path(settings.data_dir) / SPEND_MARK_FILENAME).exists()
    restore(backup, db)
    with caplog.at_level(logging.WARNING, "switchpoint"), started(settings) as gateway:
        [tenant] = [b for b in gateway.budget_status() if b["account"] == "tenant:acme"]
        assert tenant["spent_usd"] == pytest.approx(0.006)
        with pytest.raises(BudgetExceededError):  # as before the restore
            spend(gateway)
    warned = [r.getMessage() for r in caplog.records if "carried over" in r.getMessage()]
    assert len(warned) == 1 and "tenant acme $0.004" in warned[0]
