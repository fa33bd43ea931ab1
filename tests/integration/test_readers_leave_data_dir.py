"""A command that only reads a data_dir (the reports, ``experiments list``, ``models list``, a
prune's dry run) leaves it as it found it: with the service stopped, no file is added beside the
store (SQLite's ``-wal`` and ``-shm``, which a connection it opened read-only left behind) and
none changes;
beside a running service, it reads what the service logged and the service goes on writing.

A real service on loopback, the official ``openai`` client, the models served by the fake
provider; the commands run as a user runs them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from switchpoint.cli import main
from switchpoint.config import load_settings
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text, db_rows
from tests.integration.servers import ThreadServer, thread_server, until

READERS = [["report", "cost"], ["report", "sla"], ["report", "suggest"], ["report", "alert"],
           ["report", "forecast", "--requests-per-hour", "10", "--avg-input-tokens", "100",
            "--avg-output-tokens", "100"],
           ["experiments", "list"], ["models", "list"],
           ["prune", "--dry-run", "--older-than", "5"]]


def _files(data: Path) -> dict[str, str]:
    """Each file in ``data`` and a digest of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data.iterdir())}


def _config(fake: FakeProviderProcess, root: Path) -> Path:
    """A config of the fake provider's models, and a key made in its data_dir (a budget
    alert reads the key store for keys' budgets)."""
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake, str(root / "data")) + "tenants: {acme: {}}\n",
                      encoding="utf-8")
    assert main(["keys", "create", "--tenant", "acme", "--budget", "5/day",
                 "--config", str(config)]) == 0
    return config


def _ask(server: ThreadServer, data: Path, logged: int) -> None:
    """One answered request, waited for until the service logged it, the ``logged``-th."""
    answer = client(server).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": f"What is {logged} + 2?"}],
        extra_headers={"x-switchpoint-tenant": "acme"})
    assert answer.choices[0].message.content
    until(lambda: db_rows(data, "SELECT count(*) FROM requests") == [(logged,)],
          f"request {logged} is logged")


def _cost(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["report", "cost", "--json", "--config", str(config)]) == 0
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


def test_reading_a_stopped_services_data_dir_leaves_it_as_it_was(
        gw_fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    config = _config(gw_fake, tmp_path)
    data = tmp_path / "data"
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        _ask(server, data, 1)
    stopped = _files(data)
    assert "switchpoint.db" in stopped
    assert not {"switchpoint.db-wal", "switchpoint.db-shm"} & set(stopped)  # (a clean stop)
    assert _cost(config, capsys)["requests"] == 1  # (what they read is there)
    for argv in READERS:
        assert main([*argv, "--config", str(config)]) == 0, argv  # (it read: a refusal reads
        assert _files(data) == stopped, argv  # nothing, and would leave the files so too)


def test_reading_beside_a_running_service_reads_and_lets_it_go_on_writing(
        gw_fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    config = _config(gw_fake, tmp_path)
    data = tmp_path / "data"
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        _ask(server, data, 1)
        assert _cost(config, capsys)["requests"] == 1
        for argv in READERS:
            assert main([*argv, "--config", str(config)]) == 0, argv
        assert (data / "switchpoint.db-wal").exists()  # (the service's, still in use)
        _ask(server, data, 2)
        assert _cost(config, capsys)["requests"] == 2
    assert _cost(config, capsys)["requests"] == 2
    assert not (data / "switchpoint.db-wal").exists()  # (its clean stop removed its log)
