"""The admin token guards HTTP routes, so only serving HTTP needs it.

A config naming ``admin_token_env`` works as is in process (``Gateway.from_config``) and for the
commands that serve nothing, whether the variable is exported or not; ``create_app`` and
``switchpoint serve`` (and a reload of a served config) refuse it while the variable holds no
usable token, so nothing ever serves the admin routes behind a token other than the one the
operator exported.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from switchpoint import Gateway
from switchpoint.cli import main
from switchpoint.config import Settings, load_settings
from switchpoint.errors import ConfigError
from switchpoint.governance.keys import KeySpec
from switchpoint.server import create_app
from switchpoint.store import SQLiteStore
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text
from tests.integration.servers import thread_server

UNSET = "SP_DOORS_ADMIN_UNSET"  # never exported by these tests
TOKEN_VAR = "SP_DOORS_ADMIN"
TOKEN = "doors-admin-token-0123456789"
UNSET_MESSAGE = f"admin_token_env: ${UNSET} is not set or empty"


@pytest.fixture(autouse=True)
def _no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.delenv(TOKEN_VAR, raising=False)


def _config(fake: FakeProviderProcess, tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(config_text(fake, data_dir=str(tmp_path / "data")) + extra,
                    encoding="utf-8")
    return path


def _refused_to_serve(settings: Settings, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_app(settings, loader=FACTORY)
    assert info.value.key == "admin_token_env" and needle in str(info.value), str(info.value)


@pytest.mark.parametrize("auth", ["none", "keys"])
def test_the_in_process_door_starts_chats_and_learns_without_the_admin_token(
        gw_fake: FakeProviderProcess, tmp_path: Path, auth: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(gw_fake, tmp_path, f"admin_token_env: {UNSET}\nauth: {auth}\n"
                                        "tenants: {acme: {}}\n")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        key = None
        if auth == "keys":
            key = gateway.governor.keys.create(KeySpec(tenant="acme").checked(["acme"],
                                                                              None)).key
        prompt = [{"role": "user", "content": f"What is 2 + 2? [{uuid.uuid4().hex[:8]}]"}]
        reply = gateway.complete(prompt, key=key, tenant=None if key else "acme")
        info = reply.switchpoint
        assert info.model in {"good", "other", "cheap", "fresh"} and info.tenant == "acme"
        assert reply.choices[0].message.content  # the fake provider's answer
        assert info.decision_id is not None
        result = gateway.report_outcome(info.decision_id, 0.8, key=key,
                                        tenant=None if key else "acme")
        assert (result.kind, result.outcome.tenant, result.outcome.quality) == (
            "decision", "acme", 0.8)
        assert gateway.router.learner.n_events("acme") == 1
        # No token was read, and none stands in for it: these settings cannot be served.
        assert gateway.settings.admin_token is None
        _refused_to_serve(gateway.settings, UNSET_MESSAGE)
    # The feedback command takes the same config, still without the token.
    capsys.readouterr()
    assert main(["feedback", info.decision_id, "--score", "0.3", "--tenant", "acme",
                 "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["tenant"], out["quality"], out["replaced"]) == ("acme", 0.3, True)


def test_settings_read_without_the_token_stay_unservable_once_it_is_exported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = str(tmp_path / "data")
    settings = load_settings(None, overrides={"admin_token_env": UNSET, "data_dir": data})
    monkeypatch.setenv(UNSET, TOKEN)  # too late: the settings were read without it
    assert settings.admin_token is None
    _refused_to_serve(settings, UNSET_MESSAGE)
    # read again, they take the token the operator exported
    assert settings.reloaded().admin_token == TOKEN
    create_app(settings.reloaded(), loader=FACTORY)
    # built by hand, the variable was never read: refused too, saying how to read it
    by_hand = Settings(admin_token_env=UNSET, data_dir=data)
    _refused_to_serve(by_hand, "load_settings")


def test_a_short_token_works_in_process_but_is_refused_to_serve(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VAR, "short-token")
    config = _config(gw_fake, tmp_path, f"admin_token_env: {TOKEN_VAR}\n")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        prompt = [{"role": "user", "content": f"hello [{uuid.uuid4().hex[:8]}]"}]
        assert gateway.complete(prompt, model="cheap").switchpoint.model == "cheap"
        assert gateway.settings.admin_token is None
        _refused_to_serve(gateway.settings, "holds a token of 11 characters")
        assert "short-token" not in str(gateway.settings.admin_token_problem)


def test_a_reload_naming_an_unset_token_variable_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"admin_token_env: {TOKEN_VAR}\ndata_dir: data\n", encoding="utf-8")
    environ = {TOKEN_VAR: TOKEN}
    admin = {"authorization": f"Bearer {TOKEN}"}
    with thread_server(create_app(load_settings(config, environ=environ),
                                  loader=FACTORY)) as server:
        config.write_text(f"admin_token_env: {UNSET}\ndata_dir: data\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", headers=admin, timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_config" and err["param"] == "admin_token_env"
        assert f"${UNSET} is not set or empty" in err["message"]
        # still behind the token it was started with
        assert httpx.get(f"{server.base}/v1/router/stats").status_code == 401
        assert httpx.get(f"{server.base}/v1/router/stats", headers=admin).status_code == 200
        config.write_text(f"admin_token_env: {TOKEN_VAR}\ndata_dir: data\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", headers=admin, timeout=60)
        assert r.status_code == 200, r.text


def test_prune_works_without_the_admin_token(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"admin_token_env: {UNSET}\ndata_dir: data\n", encoding="utf-8")
    store = SQLiteStore(tmp_path / "data" / "switchpoint.db")
    store.open()
    store.close()
    code = main(["prune", "--config", str(config), "--older-than", "30", "--dry-run",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["dry_run"] is True and UNSET not in err
