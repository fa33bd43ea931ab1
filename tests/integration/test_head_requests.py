"""A HEAD request is answered as its GET would be, without the body: uptime probes and link
checkers use HEAD. The same auth rules apply; a route with no GET still refuses HEAD."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from switchpoint.config import load_settings
from switchpoint.server import create_app
from tests.integration.gateway_env import FACTORY
from tests.integration.servers import thread_server

TOKEN_VAR = "SP_HEAD_ADMIN"
TOKEN = "head-admin-token-0123456789"


@pytest.mark.parametrize("path,admin", [("/health", False), ("/v1/models", False),
                                        ("/metrics", True), ("/v1/router/stats", True)])
def test_head_answers_like_get_without_a_body(tmp_path: Path, path: str, admin: bool) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"admin_token_env: {TOKEN_VAR}\ndata_dir: data\n", encoding="utf-8")
    auth = {"authorization": f"Bearer {TOKEN}"}
    app = create_app(load_settings(config, environ={TOKEN_VAR: TOKEN}), loader=FACTORY)
    with thread_server(app) as server, httpx.Client(base_url=server.base, timeout=30) as http:
        got = http.get(path, headers=auth)
        head = http.head(path, headers=auth)
        assert got.status_code == 200 and got.content, got.text
        assert head.status_code == 200, head.text
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        if admin:  # the same door as GET: no token, no answer
            refused = http.head(path)
            assert refused.status_code == http.get(path).status_code == 401
            assert refused.content == b""
        # A route with no GET is not opened by HEAD.
        post_only = http.head("/v1/route")
        assert post_only.status_code == 405
        assert post_only.headers["allow"] == "POST"


def test_a_head_is_counted_under_its_route_and_method(tmp_path: Path) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text("models:\n  - {name: m, profile: gpt-3.5-turbo-1106, input_per_mtok: 1, "
                      "output_per_mtok: 1}\ndata_dir: data\n", encoding="utf-8")
    app = create_app(load_settings(config, environ={}), loader=FACTORY)
    with thread_server(app) as server, httpx.Client(base_url=server.base, timeout=30) as http:
        model = http.get("/v1/models").json()["data"][0]["id"]
        head = http.head(f"/v1/models/{model}")
        assert head.status_code == 200 and head.content == b""
        metrics = http.get("/metrics").text
        assert ('switchpoint_http_requests_total{route="/v1/models/{model_id:path}",'
                'method="HEAD",status="200"} 1') in metrics, metrics[:2000]


def test_what_a_head_is_told_and_logged_names_head_not_get(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text("data_dir: data\n", encoding="utf-8")
    app = create_app(load_settings(config, environ={}), loader=FACTORY)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken, methods=["GET"])
    with thread_server(app) as server, httpx.Client(base_url=server.base, timeout=30) as http:
        got = http.get("/health?x=1")
        assert got.status_code == 400
        assert "is not a query parameter of GET /health" in got.json()["error"]["message"]
        head = http.head("/health?x=1")
        # The HEAD's answer (its length: the body is not sent) is the one naming HEAD /health.
        assert head.status_code == 400 and head.content == b""
        named = got.content.replace(b"of GET /health", b"of HEAD /health")
        assert int(head.headers["content-length"]) == len(named) == len(got.content) + 1
        with caplog.at_level("ERROR", logger="switchpoint"):
            assert http.head("/broken").status_code == 500
        logged = [r.getMessage() for r in caplog.records]
        assert "unexpected error on HEAD /broken" in logged, logged
