"""Who may create, end, promote and read experiments over HTTP: with ``auth: keys`` and an
admin token, the admin token alone (a client key is a 401 and nothing changes); with no admin
token, anyone who reaches the loopback port, as docs/service.md says."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import new_key
from tests.integration.learning_env import get, learning_server, post
from tests.integration.servers import ThreadServer
from tests.integration.test_ab_tests import CONFIG

PATH = "/v1/router/experiments"
TOKEN = "an-admin-token-of-32-characters!"


def _doors(server: ThreadServer, key: str | None) -> list[int]:
    """The status of each experiment route called with ``key``."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return [post(server, PATH, {"name": "made", "tenants": ["globex"]}, key=key).status_code,
            get(server, PATH, key=key).status_code,
            get(server, f"{PATH}/thrift", key=key).status_code,
            post(server, f"{PATH}/thrift/promote", {"arm": "control"}, key=key).status_code,
            httpx.delete(f"{server.base}{PATH}/made", headers=headers,
                         timeout=30).status_code]


def test_a_client_key_is_refused_every_experiment_route_and_changes_nothing(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    extra = CONFIG + "auth: keys\nadmin_token_env: SP_AB_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_AB_ADMIN": TOKEN}) as server:
        key = new_key(server, {"authorization": f"Bearer {TOKEN}"}, "globex")
        assert _doors(server, key) == [401] * 5
        assert _doors(server, None) == [401] * 5
        listed = get(server, PATH, key=TOKEN).json()["data"]
        assert [(e["experiment"], e["promoted"]) for e in listed] == [("thrift", None)]
        assert _doors(server, TOKEN) == [201, 200, 200, 200, 200]


def test_without_an_admin_token_the_experiment_routes_are_open_on_loopback(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    with learning_server(fake, tmp_path, CONFIG + "auth: keys\n") as server:
        assert server.base.startswith("http://127.0.0.1:")
        assert _doors(server, None) == [201, 200, 200, 200, 200]
