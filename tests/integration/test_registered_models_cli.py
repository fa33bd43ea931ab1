"""The command line on a real data_dir whose models a real gateway registered at run time
(SQLite in ``tmp_path``, the fake provider): ``experiments list`` judges a run-time experiment
whose arm names a registered model against the config and the registered models together."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from switchpoint.cli import main
from switchpoint.config import Settings
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.learning_env import package, settings_for
from tests.integration.test_registered_models import CONFIG, _gateway, card

#: When the row that no longer reads as a model was registered (by an earlier switchpoint).
OLD_AT = 1.7e9


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _files(data: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data.iterdir())}


def _rows(settings: Settings) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(settings.db_path)) as db:
        return db.execute("SELECT seq, name, created, card FROM runtime_models "
                          "ORDER BY seq").fetchall()


@pytest.fixture
def made(fake: FakeProviderProcess, tmp_path: Path) -> Settings:
    """A data_dir where a gateway, now closed, registered ``free`` (no profile in the
    weights), ``spare`` (profiled as ``cheap``) and ``backup`` (falling back to ``free``),
    and made ``free-only``, running, whose arm names ``free``; beside them a row an earlier
    switchpoint kept, ``old``, whose tier this one does not know."""
    weights = package().save(tmp_path / "weights")
    settings = settings_for(fake, tmp_path, CONFIG + f"weights: {weights}\n")
    with _gateway(settings) as gateway:
        gateway.register_model(card(fake))
        gateway.register_model(card(fake, "spare", profile="cheap", input_per_mtok=2,
                                    output_per_mtok=3))
        gateway.register_model(card(fake, "backup", fallbacks=["free"]))
        gateway.create_ab_test("free-only", {"models": ["free"]}, "cost_optimized")
    with closing(sqlite3.connect(settings.db_path)) as db, db:
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("old", OLD_AT, json.dumps({"name": "old", "tier": "huge"})))
    return settings


def test_experiments_list_judges_an_arm_naming_a_registered_model_with_the_registered_ones(
        made: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "experiments", "list", "--config", str(made.source_path))
    assert code == 0 and out.splitlines()[2].startswith("free-only")
    assert err == ""  # (the arm names "free", registered: a service would start)
    with _gateway(made) as gateway:  # (and it does)
        assert gateway.route("hello").experiment == "free-only"
