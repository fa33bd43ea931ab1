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


def test_a_loop_through_a_second_service_fails_at_once_naming_the_loop(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A model on service A points at service B, whose model points back at A: each hop is a
    new request, so A's own Via alone did not reach A again. A forwarded request lists the Via
    it came with before the gateway's own, so the request B sends back names A: A refuses it
    (508), B's try fails, and A's fails over at once, the loop named; each service logs one
    request."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with serving(fake, tmp_path / "a") as a, serving(fake, tmp_path / "b") as b, \
            httpx.Client(timeout=30) as client:
        for here, there in ((a, b), (b, a)):
            r = client.post(f"{here.base}/v1/router/models", headers=here.admin,
                            json={"name": "onward", "base_url": f"{there.base}/v1",
                                  "input_per_mtok": 1, "output_per_mtok": 2})
            assert r.status_code == 201, r.text
        started = time.monotonic()
        r = client.post(f"{a.base}/v1/chat/completions", json=chat_body("hi", "onward"))
        took = time.monotonic() - started
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert "(508): via: a model's base_url" in error["message"], error  # (B's, from A)
        assert took < MAX_TOTAL_S / 2, took  # (the loop ran until the deadline)
        for server in (a, b):
            logged = server.requests(limit=500)
            assert len(logged) == 1, [entry["requested_model"] for entry in logged]
        assert fake.requests() == []


def test_a_request_through_a_proxy_is_served_and_its_via_passes_upstream(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    """A client behind a corporate proxy (a Via of its own) is served, and the upstream request
    lists the proxy's entries, then the gateway's (each intermediary appends); a byte no
    header sent upstream may carry is a "?". A Via past its bound (17 intermediaries, or over
    1,024 characters) is refused as a loop, naming the header; one at it (16) is served."""
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi"), timeout=30,
                   headers=[(b"via", "1.1 corp-proxy (Squid), 1.0 caf\xe9".encode("latin-1"))])
    assert r.status_code == 200, r.text
    own = attacked_via(fake)
    assert own.startswith("1.1 switchpoint-"), own
    sent = fake.requests()[-1]["headers"]["via"]
    assert sent == f"1.1 corp-proxy (Squid), 1.0 caf?, {own}", sent
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi", stream=True),
                   timeout=30, headers={"via": "1.1 corp-proxy"})
    assert r.status_code == 200 and "[DONE]" in r.text, r.text
    assert fake.requests()[-1]["headers"]["via"] == f"1.1 corp-proxy, {own}"
    chain = ", ".join(f"1.1 proxy-{i}" for i in range(16))
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi"), timeout=30,
                   headers={"via": chain})
    assert r.status_code == 200, r.text
    assert fake.requests()[-1]["headers"]["via"] == f"{chain}, {own}"
    fake.reset()
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi"), timeout=30,
                   headers={"via": f"{chain}, 1.1 proxy-16"})
    assert r.status_code == 508, r.text
    body = r.json()["error"]
    assert (body["code"], body["param"]) == ("loop_detected", "via"), body
    assert "17 intermediaries (at most 16)" in body["message"], body
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi"), timeout=30,
                   headers={"via": f"1.1 {'p' * 1100}"})
    assert r.status_code == 508, r.text
    assert "holds 1104 characters (at most 1024)" in r.json()["error"]["message"], r.text
    assert fake.requests() == []


def attacked_via(fake: FakeProviderProcess) -> str:
    """The gateway's own Via entry: the last one of the upstream request the fake last got."""
    return str(fake.requests()[-1]["headers"]["via"]).rsplit(", ", 1)[-1]


def test_a_comparison_through_a_proxy_passes_its_via_upstream(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    """A comparison's upstream calls list the Via it came with (a client proxy's entries)
    before the gateway's own, as a chat's do: each compared model is called forwarding it."""
    r = httpx.post(f"{attacked.base}/v1/router/preferences/compare", timeout=30,
                   json={"prompt": "hi", "models": ["alpha", "beta"]},
                   headers={"via": "1.1 corp-proxy"})
    assert r.status_code == 200, r.text
    sent = sorted(str(request["headers"]["via"]) for request in fake.requests())
    assert len(sent) == 2, sent
    own = sent[0].rsplit(", ", 1)[-1]
    assert own.startswith("1.1 switchpoint-"), sent
    assert sent == [f"1.1 corp-proxy, {own}"] * 2, sent
