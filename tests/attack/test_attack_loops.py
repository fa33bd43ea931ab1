"""A model whose base_url points back at the service itself: each call to it came back in as a
new request for it, which called it again. Before: one chat request to such a model held
every connection the service takes (100 nested requests, each waiting on the next, the last
refused at the connection limit), every other caller was refused until the request's deadline
ran out, and the request log took an entry for each. Now the gateway names itself in the Via
header of what it sends upstream and the service refuses a request naming it (508): the call
fails at once, once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.attack.attack_env import MAX_TOTAL_S, Attacked, chat_body, serving
from tests.fakes.fake_provider import FakeProviderProcess


def test_a_model_whose_base_url_is_the_service_itself_fails_at_once_not_in_a_loop(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """(A server of its own: the model it registers would stay in the shared server's metrics.)"""
    with serving(fake, tmp_path) as server, httpx.Client(base_url=server.base,
                                                          timeout=30) as client:
        r = client.post("/v1/router/models", headers=server.admin,
                        json={"name": "loop", "base_url": f"{server.base}/v1",
                              "input_per_mtok": 1, "output_per_mtok": 2})
        assert r.status_code == 201, r.text
        started = time.monotonic()
        r = client.post("/v1/chat/completions", json=chat_body("hi", "loop"))
        took = time.monotonic() - started
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert "508" in error["message"], error
        assert "points back at this service" in error["message"], error
        assert took < MAX_TOTAL_S / 2, took  # (the loop ran until the deadline)
        logged = server.requests(limit=500)
        assert len(logged) == 1, [entry["requested_model"] for entry in logged]  # (it logged 100)
        assert fake.requests() == []


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/route"), ("GET", "/v1/models"),
    ("POST", "/v1/router/reload"), ("GET", "/health")])
def test_a_request_naming_the_gateway_in_via_is_refused_on_every_route(
        attacked: Attacked, fake: FakeProviderProcess, method: str, path: str) -> None:
    """What the service's own gateway sends (its Via, as the upstream saw it) is refused
    wherever it arrives, 508 naming the header, nothing called; a Via naming others, a proxy in
    front, is served."""
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi"), timeout=30)
    assert r.status_code == 200, r.text
    own = fake.requests()[-1]["headers"]["via"]
    fake.reset()
    r = httpx.request(method, f"{attacked.base}{path}", json=chat_body("hi"), timeout=30,
                      headers={"via": f"1.1 proxy-a, {own}", **attacked.admin})
    assert r.status_code == 508, r.text
    body = r.json()["error"]
    assert (body["code"], body["param"]) == ("loop_detected", "via"), body
    assert fake.requests() == []
    served = httpx.get(f"{attacked.base}/health", headers={"via": "1.1 proxy-a, 1.0 b"},
                       timeout=10)
    assert served.status_code == 200, served.text


def test_the_api_document_lists_the_refusal_on_every_operation(attacked: Attacked) -> None:
    document = httpx.get(f"{attacked.base}/openapi.json", timeout=10).json()
    operations = [op for item in document["paths"].values() for op in item.values()
                  if isinstance(op, dict)]
    assert operations and all("508" in op["responses"] for op in operations)
