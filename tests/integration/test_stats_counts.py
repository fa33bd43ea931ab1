"""``GET /v1/router/stats`` over HTTP: every count is a JSON integer, every cost a number.

A client that checks types (or a dashboard that prints ``3.0 requests``) must see counts as
integers, as they are stored."""

from __future__ import annotations

import uuid

import httpx

from tests.integration.gateway_env import client, log_entry
from tests.integration.servers import ThreadServer


def numbers(tree: object, path: str = "") -> list[tuple[str, object]]:
    """Every number in the stats answer, with its path (``requests.by_model.good.requests``)."""
    if isinstance(tree, dict):
        return [n for k, v in tree.items() for n in numbers(v, f"{path}.{k}".lstrip("."))]
    return [(path, tree)] if isinstance(tree, (int, float)) else []


def stats_after_a_chat(gw: ThreadServer) -> dict[str, object]:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": f"count me {uuid.uuid4().hex}"}])
    log_entry(gw, raw.headers["x-switchpoint-request-id"])  # logged before we read the totals
    answer: dict[str, object] = httpx.get(f"{gw.base}/v1/router/stats").json()
    return answer


def test_decision_and_request_totals_are_integers(gw: ThreadServer) -> None:
    stats = stats_after_a_chat(gw)
    requests = stats.pop("requests")
    assert isinstance(requests, dict)
    requests.pop("by_model")  # see the next test
    counts = [(p, v) for p, v in numbers(stats) + numbers(requests) if p != "cost_usd"]
    assert len(counts) >= 10
    assert all(type(v) is int for _, v in counts), counts
    assert type(requests["cost_usd"]) is float


def test_request_counts_by_model_are_integers(gw: ThreadServer) -> None:
    by_model = stats_after_a_chat(gw)["requests"]
    assert isinstance(by_model, dict)
    per_model = numbers(by_model["by_model"])
    assert per_model
    assert all(type(v) is int for p, v in per_model if p.endswith(".requests")), per_model
