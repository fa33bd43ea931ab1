"""A reload never lowers the service's protection, nor empties it.

A config read again that would turn client keys off or drop the admin token (opening the
admin routes and ``/metrics``), or a file holding no settings (an editor's write caught
half-way), is refused at ``POST /v1/router/reload`` and ``SIGHUP`` alike, changing nothing:
keys and the token are still required. A restart with that config applies it, and a reload of
it then is accepted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text, new_key, user
from tests.integration.servers import ProcessServer, ThreadServer, thread_server

TOKEN_VAR = "SP_RELOAD_GUARD_ADMIN"
TOKEN = "reload-guard-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
GUARDED = f"auth: keys\nadmin_token_env: {TOKEN_VAR}\ntenants: {{acme: {{}}}}\n"
NO_KEYS = f"auth: none\nadmin_token_env: {TOKEN_VAR}\ntenants: {{acme: {{}}}}\n"
NO_TOKEN = "auth: keys\ntenants: {acme: {}}\n"
# What an editor's non-atomic write leaves for a moment, and a file of comments alone.
EMPTY = ["", "  \n\n", "# switchpoint config, being rewritten\n"]


def _write(config: Path, fake: FakeProviderProcess, data: Path, extra: str) -> None:
    config.write_text(config_text(fake, str(data)) + extra, encoding="utf-8")


def _client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=15)


def _guarded_still(base: str, key: str) -> None:
    """Keys and the admin token are required as before, and the catalog is the same."""
    assert httpx.get(f"{base}/v1/router/stats", timeout=10).status_code == 401
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{base}/v1/router/stats", headers=ADMIN, timeout=10).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        _client(base, "sk-not-a-key").chat.completions.create(model="cheap",
                                                              messages=user("hi"))
    ok = _client(base, key).chat.completions.create(model="cheap", messages=user("hello"))
    assert ok.choices[0].message.content
    listed = {m.id for m in _client(base, key).models.list()}
    assert {"good", "other", "cheap", "fresh"} <= listed, listed


@contextmanager
def _guarded_server(fake: FakeProviderProcess, config: Path,
                    data: Path) -> Iterator[tuple[ThreadServer, str]]:
    """A server of the guarded config (keys and the admin token on), and a key of acme."""
    _write(config, fake, data, GUARDED)
    with thread_server(create_app(load_settings(config, environ={TOKEN_VAR: TOKEN}),
                                  loader=FACTORY, provider_env=KEYS)) as server:
        yield server, new_key(server, ADMIN, "acme")


def _refused_reload(server: ThreadServer) -> dict[str, Any]:
    r = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=60)
    assert r.status_code == 400, r.text
    err: dict[str, Any] = r.json()["error"]
    return err


@pytest.mark.parametrize(("extra", "param", "needles"), [
    (NO_KEYS, "auth", ["turns client keys off (auth: keys to auth: none)"]),
    (NO_TOKEN, "admin_token_env", ["drops admin_token_env", "/metrics would be open"]),
    ("tenants: {acme: {}}\n", "auth", ["turns client keys off", "drops admin_token_env"]),
])
def test_a_reload_that_lowers_protection_is_refused_and_a_restart_applies_it(
        gw_fake: FakeProviderProcess, tmp_path: Path, extra: str, param: str,
        needles: list[str]) -> None:
    config, data = tmp_path / "switchpoint.yaml", tmp_path / "data"
    environ = {TOKEN_VAR: TOKEN}
    with _guarded_server(gw_fake, config, data) as (server, key):
        _write(config, gw_fake, data, extra)
        err = _refused_reload(server)
        assert (err["code"], err["param"]) == ("invalid_config", param), err
        for needle in [*needles, "lowers the service's protection",
                       "restart the service with this config"]:
            assert needle in err["message"], err["message"]
        _guarded_still(server.base, key)
    # Restarted with that config, it serves as written, and a reload of it is accepted.
    with thread_server(create_app(load_settings(config, environ=environ), loader=FACTORY,
                                  provider_env=KEYS)) as server:
        token_kept = "admin_token_env" in extra
        assert httpx.get(f"{server.base}/metrics",
                         timeout=10).status_code == (401 if token_kept else 200)
        headers = ADMIN if token_kept else {}
        r = httpx.post(f"{server.base}/v1/router/reload", headers=headers, timeout=60)
        assert r.status_code == 200, r.text


def test_the_admin_token_is_rotated_by_a_reload_naming_another_variable_of_the_environment(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A running service's environment cannot be changed from outside: the next token is
    exported beside the current one at the start, and a reload naming its variable switches
    the admin routes and /metrics to it at once (no grace: the old one is refused)."""
    config, data = tmp_path / "switchpoint.yaml", tmp_path / "data"
    following = {"authorization": "Bearer reload-guard-next-token-0123456789"}
    environ = {TOKEN_VAR: TOKEN, "SP_RELOAD_GUARD_NEXT": following["authorization"][7:]}
    _write(config, gw_fake, data, GUARDED)
    with thread_server(create_app(load_settings(config, environ=environ), loader=FACTORY,
                                  provider_env=KEYS)) as server:
        _write(config, gw_fake, data, GUARDED.replace(TOKEN_VAR, "SP_RELOAD_GUARD_NEXT"))
        r = httpx.post(f"{server.base}/v1/router/reload", headers=ADMIN, timeout=60)
        assert r.status_code == 200, r.text
        for path in ("/v1/router/stats", "/metrics"):
            assert httpx.get(server.base + path, headers=ADMIN, timeout=10).status_code == 401
            assert httpx.get(server.base + path, headers=following,
                             timeout=10).status_code == 200


@pytest.mark.parametrize("text", EMPTY)
def test_a_reload_of_a_file_holding_no_settings_is_refused_but_a_start_takes_the_defaults(
        gw_fake: FakeProviderProcess, tmp_path: Path, text: str) -> None:
    config, data = tmp_path / "switchpoint.yaml", tmp_path / "data"
    with _guarded_server(gw_fake, config, data) as (server, key):
        config.write_text(text, encoding="utf-8")
        err = _refused_reload(server)
        assert (err["code"], err["param"]) == ("invalid_config", "config"), err
        for needle in ["holds no settings", "a reload never empties the service",
                       "restart the service to run on the defaults"]:
            assert needle in err["message"], err["message"]
        _guarded_still(server.base, key)
    # A start with such a file runs on the defaults.
    settings = load_settings(config, overrides={"data_dir": str(tmp_path / "fresh")},
                             environ={})
    assert settings.source_empty and settings.auth == "none" and settings.models is None
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        assert httpx.get(f"{server.base}/metrics", timeout=10).status_code == 200


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_sighup_refuses_an_empty_file_and_one_lowering_protection(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    config, data = tmp_path / "switchpoint.yaml", tmp_path / "data"
    _write(config, fake, data, GUARDED)
    server = ProcessServer("--config", config, "--log-level", "info", data_dir=data,
                           env={**KEYS, TOKEN_VAR: TOKEN}).start()
    assert server.proc is not None
    try:
        server.wait_ready()
        r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                       headers=ADMIN, timeout=10)
        assert r.status_code == 201, r.text
        key = str(r.json()["key"])
        refused = "SIGHUP: the config was not reloaded"
        for n, (text, needle) in enumerate([("", "holds no settings"),
                                            (config_text(fake, str(data)) + NO_KEYS,
                                             "turns client keys off")], start=1):
            config.write_text(text, encoding="utf-8")
            server.proc.send_signal(signal.SIGHUP)
            _until(lambda n=n: server.stderr.count(refused) >= n,  # type: ignore[misc]
                   "the reload refused")
            assert needle in server.stderr.split(refused)[n], server.stderr[-3000:]
            assert server.proc.poll() is None
            _guarded_still(server.base, key)
        assert "SIGHUP: config reloaded" not in server.stderr
        code, err = server.terminate()
        assert code == 0, err
    finally:
        if server.proc.poll() is None:
            server.kill()
