"""One rule for a tenant named in a query, through a real server: the reports, the budget
alert and ``GET /v1/router/status`` all take a tenant the config or the request (or feedback)
log knows, and answer any other with the same 404 listing the known ones.

Before: the status and the budget alert knew only the config's tenants, so a tenant removed
from the config (its history still in the log) had a cost report but a 404 status and alert,
and the three said different things about the same misspelt name.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text
from tests.integration.servers import thread_server

ADMIN_TOKEN = "admin-secret-token-tenants"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
URLS = ("/v1/router/status", "/v1/router/budget/alert", "/v1/router/report/cost",
        "/v1/router/report/sla", "/v1/router/keys")


def config(fake: FakeProviderProcess, root: Path, tenants: str) -> Path:
    path = root / "switchpoint.yaml"
    path.write_text(config_text(fake, data_dir=str(root / "data")) + f"""auth: keys
admin_token_env: SP_TEST_ADMIN
tenants:
{tenants}""", encoding="utf-8")
    return path


def test_every_tenant_query_takes_the_tenants_the_config_or_the_log_knows(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    env = {"SP_TEST_ADMIN": ADMIN_TOKEN}
    first = load_settings(config(gw_fake, tmp_path, "  acme: {}\n  beta: {}\n"), environ=env)
    with thread_server(create_app(first, loader=FACTORY, provider_env=KEYS)) as server:
        made = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "beta"},
                          headers=ADMIN, timeout=10)
        assert made.status_code == 201, made.text
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=made.json()["key"],
                               max_retries=0, timeout=15)
        answer = client.chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": f"hi {uuid.uuid4().hex}"}])
        assert answer.model == "cheap"
    # beta leaves the config; its request stays in the log.
    second = load_settings(config(gw_fake, tmp_path, "  acme: {}\n"), environ=env)
    with thread_server(create_app(second, loader=FACTORY, provider_env=KEYS)) as server:
        for url in URLS:
            for known in ("acme", "beta", "default"):
                r = httpx.get(f"{server.base}{url}", params={"tenant": known}, headers=ADMIN)
                assert r.status_code == 200, (url, known, r.text)
        status = httpx.get(f"{server.base}/v1/router/status", params={"tenant": "beta"},
                           headers=ADMIN).json()
        assert list(status["tenants"]) == ["beta"]
        cost = httpx.get(f"{server.base}/v1/router/report/cost", params={"tenant": "beta"},
                         headers=ADMIN).json()
        assert cost["by_model"]["cheap"]["requests"] == 1
        keys = httpx.get(f"{server.base}/v1/router/keys", params={"tenant": "beta"},
                         headers=ADMIN).json()
        assert [k["tenant"] for k in keys["data"]] == ["beta"]
        # A known tenant without keys has none; only an unknown one is a 404 (below).
        acme = httpx.get(f"{server.base}/v1/router/keys", params={"tenant": "acme"},
                         headers=ADMIN)
        assert acme.status_code == 200 and acme.json()["data"] == []
        messages = set()
        for url in URLS:
            r = httpx.get(f"{server.base}{url}", params={"tenant": "bet"}, headers=ADMIN)
            assert r.status_code == 404, (url, r.text)
            error = r.json()["error"]
            assert error["param"] == "tenant", error
            messages.add(error["message"])
        # The same words everywhere, naming what the gateway knows.
        assert len(messages) == 1, messages
        message = messages.pop()
        assert '"bet" is neither a tenant of the config nor one the request or feedback log ' \
               'names; known: "acme", "beta", "default"' in message, message
    # The CLI says the same ("no keys for tenant bet" read as: bet has no keys).
    from switchpoint.cli import main

    monkeypatch.setenv("SP_TEST_ADMIN", ADMIN_TOKEN)
    code = main(["keys", "list", "--tenant", "bet", "--config", str(tmp_path / "switchpoint.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and '"bet" is neither a tenant' in err and 'known: "acme", "beta"' in err, err


@pytest.mark.parametrize("tenant", ["gamma", "x" * 64])
def test_the_python_status_refuses_an_unknown_tenant_too(
        gw_fake: FakeProviderProcess, tmp_path: Path, tenant: str) -> None:
    from switchpoint.errors import NotFoundError

    settings = load_settings(config(gw_fake, tmp_path, "  acme: {}\n"),
                             environ={"SP_TEST_ADMIN": ADMIN_TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        gateway = server.service.gateway
        assert set(gateway.learning_status(["acme", "default"])["tenants"]) == {"acme",
                                                                                "default"}
        with pytest.raises(NotFoundError) as info:
            gateway.learning_status([tenant])
        assert info.value.param == "tenant" and 'known: "acme", "default"' in str(info.value)
