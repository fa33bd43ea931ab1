"""Budgets and rate limits hold under concurrency: 64 simultaneous requests against a budget
that covers N of them; the spend ledger equals the settled costs in the log; a restart keeps
the period's spend; streams settle as they end, or at their reservation when the client leaves.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchpoint.catalog import text_tokens
from switchpoint.config import Settings, load_settings
from switchpoint.gateway.capabilities import needs_of
from switchpoint.governance.governor import prompt_bound, worst_cost
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text
from tests.integration.servers import ThreadServer, thread_server

N = 10
CONCURRENCY = 64
GOVERNANCE = """auth: keys
tenants:
  acme:
    models: [cheap, good, auto]
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("governance-concurrency")


# Budgets and limits are under test here, not upstream timeouts: 64 requests at once can take
# a loaded machine longer than the gateway suite's half-second read timeout to answer, and a
# request that timed out was neither admitted nor refused by what these tests count.
PATIENT = """gateway:
  read_timeout_s: 30
  first_token_timeout_s: 30
  max_total_s: 60
"""


def settings_of(fake: FakeProviderProcess, root: Path) -> Settings:
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake, gateway=PATIENT) + GOVERNANCE, encoding="utf-8")
    return load_settings(config, environ={})


@pytest.fixture(scope="module")
def server(gw_fake: FakeProviderProcess, root: Path) -> Iterator[ThreadServer]:
    with thread_server(create_app(settings_of(gw_fake, root), loader=FACTORY,
                                  provider_env=KEYS)) as s:
        yield s


def make_key(server: ThreadServer, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme", **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def body(i: int) -> dict[str, Any]:
    # Same length every time: the same reservation and the same settled cost.
    return {"model": "cheap", "max_tokens": 16,
            "messages": [{"role": "user", "content": f"budget probe {i:03d}"}]}


async def burst(server: ThreadServer, key: str, n: int = CONCURRENCY) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits,
                                 headers={"authorization": f"Bearer {key}"}) as c:
        gate = asyncio.Event()

        async def one(i: int) -> httpx.Response:
            await gate.wait()
            return await c.post("/v1/chat/completions", json=body(i))

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(0.05)
        gate.set()
        return list(await asyncio.gather(*tasks))


def refusals(responses: list[httpx.Response]) -> Counter[tuple[int, str]]:
    """How many requests got each status and error code, the answered ones aside."""
    return Counter((r.status_code, r.json()["error"]["code"]) for r in responses
                   if r.status_code != 200)


def key_rows(server: ThreadServer, key_id: str) -> list[dict[str, Any]]:
    store = server.service.gateway.store
    assert store is not None
    rows, cursor = store.requests(500)
    out = [r for r in rows if r["key_id"] == key_id]
    while cursor is not None:
        rows, cursor = store.requests(500, cursor)
        out += [r for r in rows if r["key_id"] == key_id]
    return out


def unit_cost(server: ThreadServer) -> float:
    """What one probe really costs (settled from the fake's usage), measured on a free key."""
    free = make_key(server)
    r = httpx.post(f"{server.base}/v1/chat/completions", json=body(999),
                   headers={"authorization": f"Bearer {free['key']}"})
    assert r.status_code == 200, r.text
    return float(r.headers["x-switchpoint-cost"])


def key_status(server: ThreadServer, key_id: str) -> dict[str, Any]:
    shown = httpx.get(f"{server.base}/v1/router/keys/{key_id}").json()
    status: dict[str, Any] = shown["budget_status"][0]
    return status


def test_a_budget_that_covers_n_requests_admits_at_most_n(gw_fake: FakeProviderProcess,
                                                            tmp_path: Path) -> None:
    with thread_server(create_app(settings_of(gw_fake, tmp_path), loader=FACTORY,
                                  provider_env=KEYS)) as server:
        cost = unit_cost(server)
        card = server.service.gateway.settings.catalog()["cheap"]  # type: ignore[index]
        reserve = worst_cost(card, prompt_bound(body(0), 2000), 16)
        assert reserve > cost  # the worst case bounds the real cost
        budget = N * cost * (1 + 1e-9)
        issued = make_key(server, budget=f"{budget!r}/day")
        responses = asyncio.run(burst(server, issued["key"]))
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert 1 <= len(ok) <= N, len(ok)
        assert all(r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"
                   and int(r.headers["retry-after"]) >= 1 for r in refused)
        rows = key_rows(server, issued["id"])
        answered = [r for r in rows if r["status"] != "refused"]
        assert len(answered) == len(ok)
        # Refused requests reach no upstream: logged as refused, charged nothing.
        refusals = [r for r in rows if r["status"] == "refused"]
        assert len(refusals) == len(refused)
        assert all(r["error_kind"] == "budget_exceeded" and r["charged_usd"] is None
                   and r["models_tried"] == [] for r in refusals)
        settled = sum(r["charged_usd"] for r in answered)
        assert settled == pytest.approx(len(ok) * cost)
        status = key_status(server, issued["id"])
        assert status["spent_usd"] == pytest.approx(settled, abs=1e-12)
        assert status["spent_usd"] <= budget and status["held_usd"] == 0
    # Restart mid-period (the first one stopped: one process serves a data_dir at a time):
    # the spend is still counted; a request that does not fit is refused.
    spent_before = status["spent_usd"]
    with thread_server(create_app(settings_of(gw_fake, tmp_path), loader=FACTORY,
                                  provider_env=KEYS)) as again:
        assert key_status(again, issued["id"])["spent_usd"] == pytest.approx(spent_before,
                                                                             abs=1e-12)
        if budget - spent_before < reserve:
            r = httpx.post(f"{again.base}/v1/chat/completions", json=body(1),
                           headers={"authorization": f"Bearer {issued['key']}"})
            assert r.status_code == 429 and r.json()["error"]["code"] == "budget_exceeded"


def test_a_budget_that_covers_n_worst_cases_admits_n_at_once(server: ThreadServer) -> None:
    card = server.service.gateway.settings.catalog()["cheap"]  # type: ignore[index]
    reserve = worst_cost(card, prompt_bound(body(0), 2000), 16)
    budget = N * reserve * (1 + 1e-9)
    issued = make_key(server, budget=f"{budget!r}/day")
    responses = asyncio.run(burst(server, issued["key"]))
    ok = [r for r in responses if r.status_code == 200]
    # All N reservations fit at once; more may follow as settled requests free room (each
    # costs less than its worst case), never past the budget.
    assert len(ok) >= N, refusals(responses)
    status = key_status(server, issued["id"])
    settled = sum(r["charged_usd"] or 0.0 for r in key_rows(server, issued["id"]))
    assert status["spent_usd"] == pytest.approx(settled, abs=1e-12)
    assert status["spent_usd"] <= budget


def test_rpm_admits_exactly_the_limit_at_once(server: ThreadServer) -> None:
    issued = make_key(server, rpm=N)
    responses = asyncio.run(burst(server, issued["key"]))
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == N
    assert {r.json()["error"]["code"] for r in responses if r.status_code != 200} == {
        "rate_limit_exceeded"}


def test_tpm_never_admits_more_tokens_than_the_limit(server: ThreadServer) -> None:
    per_request = prompt_bound(body(0), 2000) + 16  # reserved; the real use is smaller
    limit = N * per_request
    issued = make_key(server, tpm=limit)
    responses = asyncio.run(burst(server, issued["key"]))
    ok = [r for r in responses if r.status_code == 200]
    assert N <= len(ok) < CONCURRENCY
    used = sum(r.json()["usage"]["total_tokens"] for r in ok)
    assert used <= limit
    assert {r.json()["error"]["code"] for r in responses if r.status_code != 200} == {
        "rate_limit_exceeded"}


def test_streams_settle_at_their_usage_or_their_reservation(server: ThreadServer) -> None:
    issued = make_key(server, budget="1/day")
    auth = {"authorization": f"Bearer {issued['key']}"}
    text = f"stream budget {uuid.uuid4().hex[:8]}"
    whole = httpx.post(f"{server.base}/v1/chat/completions", headers=auth, json={
        "model": "cheap", "stream": True, "max_tokens": 32,
        "messages": [{"role": "user", "content": text}]})
    assert whole.status_code == 200 and whole.text.rstrip().endswith("data: [DONE]")
    rid = whole.headers["x-switchpoint-request-id"]
    entry = wait_entry(server, rid)
    assert entry["status"] == "ok" and entry["charged_usd"] == pytest.approx(entry["cost_usd"])
    # The client leaves after the first chunk, before the usage: charged an estimate of what
    # was relayed (the prompt as estimated, and the answer's bytes the log names), less
    # than the reservation.
    slow = {"model": "cheap", "stream": True, "max_tokens": 32,
            "messages": [{"role": "user", "content": f"{text} [[fake:ok:chunk_delay=0.3]]"}]}
    with httpx.stream("POST", f"{server.base}/v1/chat/completions", headers=auth,
                      json=slow) as r:
        rid = r.headers["x-switchpoint-request-id"]
        next(r.iter_lines())
    entry = wait_entry(server, rid)
    assert entry["status"] == "client_closed" and entry["cost_usd"] is None
    card = server.service.gateway.settings.catalog()["cheap"]  # type: ignore[index]
    note = next(n for n in entry["reasoning"] if n.startswith("Estimated charge: "))
    relayed = int(re.search(r"the (\d+) bytes", note)[1])  # type: ignore[index]
    assert 0 < relayed <= len(f"Echo from cheap: {text}")
    estimate = card.price(needs_of(slow).prompt_tokens, text_tokens(relayed))
    assert entry["charged_usd"] == pytest.approx(estimate)
    assert estimate < worst_cost(card, prompt_bound(slow, 2000), 32)
    status = key_status(server, issued["id"])
    total = sum(r["charged_usd"] for r in key_rows(server, issued["id"]))
    assert status["spent_usd"] == pytest.approx(total) and status["held_usd"] == 0


def wait_entry(server: ThreadServer, request_id: str) -> dict[str, Any]:
    store = server.service.gateway.store
    assert store is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for row in store.requests(50)[0]:
            if row["id"] == request_id:
                return row
        time.sleep(0.05)
    raise AssertionError(f"{request_id} not logged")


def test_a_plain_request_whose_client_leaves_is_charged_its_reservation(
        server: ThreadServer) -> None:
    issued = make_key(server, budget="1/day")
    slow = {"model": "cheap", "max_tokens": 32, "messages": [
        {"role": "user", "content": f"slow {uuid.uuid4().hex[:8]} [[fake:ok:delay=1.5]]"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base}/v1/chat/completions", json=slow, timeout=0.5,
                   headers={"authorization": f"Bearer {issued['key']}"})
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while not rows and time.monotonic() < deadline:
        rows = key_rows(server, issued["id"])
        time.sleep(0.05)
    assert len(rows) == 1 and rows[0]["status"] == "client_closed"
    card = server.service.gateway.settings.catalog()["cheap"]  # type: ignore[index]
    assert rows[0]["charged_usd"] == pytest.approx(worst_cost(card, prompt_bound(slow, 2000),
                                                              32))
    status = key_status(server, issued["id"])
    assert status["spent_usd"] == pytest.approx(rows[0]["charged_usd"])
    assert status["held_usd"] == 0


def test_an_openai_client_leaving_while_the_gateway_waits_to_retry_is_not_charged(
        server: ThreadServer) -> None:
    """The official client gives up while the gateway waits out an upstream's Retry-After
    between two tries: nothing sent then could be billed, so the log row and the budget charge
    nothing and no hold is left open (one leaving while a try is under way is charged: see
    test_a_plain_request_whose_client_leaves_is_charged_its_reservation)."""
    issued = make_key(server, budget="1/day")
    tag = uuid.uuid4().hex[:8]
    waiting = f"wait {tag} [[fake:once:503:retry_after=3]]"
    oa = openai.OpenAI(base_url=f"{server.base}/v1", api_key=issued["key"], max_retries=0,
                       timeout=0.8)
    with pytest.raises(openai.APITimeoutError):
        oa.chat.completions.create(model="cheap", max_tokens=32,
                                   messages=[{"role": "user", "content": waiting}])
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while not rows and time.monotonic() < deadline:
        rows = key_rows(server, issued["id"])
        time.sleep(0.05)
    assert len(rows) == 1 and rows[0]["status"] == "client_closed", rows
    assert not rows[0]["charged_usd"], rows[0]  # (none: nothing charged)
    # (the gateway was waiting to try again when the client left)
    assert [a["outcome"] for a in rows[0]["attempts"]] == ["rate_limited", "client_closed"]
    # it says how long it waited before the client left, not the 3 s it meant to
    assert 0.5 < rows[0]["attempts"][1]["waited_s"] < 2.5
    status = key_status(server, issued["id"])
    assert status["spent_usd"] == 0 and status["held_usd"] == 0
