"""Query strings over a real server: switchpoint's own routes refuse a parameter they do not
take (a 400 naming it and listing the ones they take), only once the caller has shown it may use
the route; the routes of OpenAI's API take any, as OpenAI's does; ``GET /v1/router/stats``
takes ``tenant`` and gives that tenant's figures."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import httpx
import openai
import pytest
from fastapi import APIRouter, Query, Request
from fastapi.routing import APIRoute

from switchpoint.config import load_settings
from switchpoint.server import create_app
from switchpoint.server.queries import NUMBER, WHOLE, QueryCheckedRoute
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text, log_entry, user
from tests.integration.servers import ThreadServer, thread_server

TOKEN = "query-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {TOKEN}"}
GUARDED = """auth: keys
admin_token_env: SP_QUERY_ADMIN
tenants:
  acme: {}
  zeta: {}
"""


@pytest.fixture(scope="module")
def guarded(gw_fake: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ThreadServer]:
    """A server with client keys and an admin token."""
    root = tmp_path_factory.mktemp("queries")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(gw_fake) + GUARDED, encoding="utf-8")
    settings = load_settings(config, environ={"SP_QUERY_ADMIN": TOKEN})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


def key_for(server: ThreadServer, tenant: str) -> str:
    r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": tenant}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def refused(r: httpx.Response, name: str) -> str:
    """The message of a 400 refusing the query parameter ``name``."""
    assert r.status_code == 400, (r.request.url, r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == name, error
    message: str = error["message"]
    assert message.startswith(f"{name}: is not a query parameter of "), message
    return message


def test_own_routes_refuse_a_parameter_they_do_not_take(gw: ThreadServer) -> None:
    base = gw.base
    message = refused(httpx.get(f"{base}/v1/router/stats", params={"windw": "1h"}), "windw")
    assert "GET /v1/router/stats" in message and "tenant" in message
    message = refused(httpx.get(f"{base}/v1/router/report/sla", params={"windw": "1h"}),
                      "windw")
    assert 'it takes "since_hours", "tenant"' in message
    message = refused(httpx.get(f"{base}/health", params={"verbose": "1"}), "verbose")
    assert "it takes none" in message
    message = refused(httpx.get(f"{base}/v1/router/requests",
                                params={"limit": 2, "page": 3}), "page")
    assert 'it takes "limit", "cursor"' in message
    refused(httpx.get(f"{base}/metrics", params={"format": "json"}), "format")
    refused(httpx.get(f"{base}/v1/router/keys/nosuchkey", params={"x": "1"}), "x")
    # POST routes: the query is checked before the body is read, and nothing is done.
    before = httpx.get(f"{base}/v1/router/stats").json()["total"]
    message = refused(httpx.post(f"{base}/v1/route", params={"cost_weight": "0.5"},
                                 json={"prompt": "hello"}), "cost_weight")
    assert "POST /v1/route" in message and "it takes none" in message
    assert httpx.get(f"{base}/v1/router/stats").json()["total"] == before  # not routed
    refused(httpx.post(f"{base}/v1/feedback", params={"model": "good"},
                       json={"decision_id": "x", "score": 1}), "model")
    refused(httpx.post(f"{base}/v1/router/policy/nosuch", params={"dry_run": "1"}), "dry_run")
    refused(httpx.post(f"{base}/v1/router/health/reset", params={"model": "good"}), "model")


def test_every_unknown_name_is_said_and_the_answer_stays_short(gw: ThreadServer) -> None:
    r = httpx.get(f"{gw.base}/v1/router/tenants",
                  params={"a": "1", "b": "2", **{f"n{i}": "x" for i in range(20)},
                          "sk-secret" + "y" * 500: "1"})
    message = refused(r, "a")
    assert '(nor are "b", "n0", "n1", "n2" and 18 more)' in message, message
    assert len(message) < 400
    assert "it takes none" in message
    # A key pasted as a parameter's name is not repeated.
    pasted = "sk-proj-" + "Q7x" * 20
    r = httpx.get(f"{gw.base}/health", params={pasted: ""})
    assert r.status_code == 400 and r.json()["error"]["param"] is not None
    assert "Q7xQ7x" not in r.text, r.text


def test_the_parameters_a_route_takes_still_work(gw: ThreadServer) -> None:
    base = gw.base
    r = httpx.get(f"{base}/v1/router/requests", params={"limit": 1})
    assert r.status_code == 200 and len(r.json()["data"]) <= 1
    r = httpx.get(f"{base}/v1/router/report/sla", params={"since_hours": 2})
    assert r.status_code == 200, r.text
    r = httpx.get(f"{base}/v1/router/report/cost", params={"period": "week",
                                                            "tenant": "default"})
    assert r.status_code == 200, r.text
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/health?").status_code == 200  # an empty query is no parameter
    # A bad value of a known parameter is still its own error.
    r = httpx.get(f"{base}/v1/router/requests", params={"limit": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_openai_routes_take_any_parameter(gw: ThreadServer) -> None:
    sdk = client(gw, default_query={"api-version": "2024-06-01", "trace": "on"})
    answer = sdk.chat.completions.create(model="auto", messages=user("hello"))
    assert answer.choices[0].message.content
    assert "auto" in [m.id for m in sdk.models.list().data]
    assert sdk.models.retrieve("good").id == "good"
    r = httpx.get(f"{gw.base}/v1/models", params={"api-version": "2024-06-01"})
    assert r.status_code == 200 and r.json()["object"] == "list"


def test_a_caller_who_may_not_use_a_route_learns_nothing_of_its_parameters(
        guarded: ThreadServer) -> None:
    base = guarded.base
    for method, path in [("GET", "/v1/router/stats"), ("GET", "/v1/router/report/sla"),
                         ("GET", "/metrics"), ("POST", "/v1/router/reload"),
                         ("GET", "/v1/router/status"), ("POST", "/v1/route"),
                         ("POST", "/v1/feedback"), ("POST", "/v1/router/preferences/score")]:
        r = httpx.request(method, f"{base}{path}", params={"windw": "1h"}, json={})
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert "windw" not in r.text and "takes" not in r.text, (path, r.text)
    # With the token, or a client key, the same request is told what the route takes.
    assert 'it takes "since_hours", "tenant"' in refused(
        httpx.get(f"{base}/v1/router/report/sla", params={"windw": "1h"}, headers=ADMIN),
        "windw")
    key = {"authorization": f"Bearer {key_for(guarded, 'acme')}"}
    refused(httpx.post(f"{base}/v1/route", params={"windw": "1h"}, json={"prompt": "hi"},
                       headers=key), "windw")
    refused(httpx.get(f"{base}/v1/router/status", params={"tenants": "acme"}, headers=key),
            "tenants")


def test_the_openai_routes_with_keys_still_take_any_parameter(guarded: ThreadServer) -> None:
    key = key_for(guarded, "acme")
    sdk = client(guarded, key, default_query={"api-version": "2024-06-01"})
    assert sdk.chat.completions.create(model="auto", messages=user("hi")).choices
    with pytest.raises(openai.AuthenticationError):  # the key is still checked
        client(guarded, "sp-wrong", default_query={"x": "1"}).models.list()


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """The app's API routes, those of the routers it includes too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None) or getattr(route, "routes", None)
        if inner is not None and not isinstance(route, APIRoute):
            yield from api_routes(getattr(inner, "routes", inner))


def test_every_route_of_the_app_checks_its_query(gw: ThreadServer) -> None:
    """No route of switchpoint's escapes the rule: each is a QueryCheckedRoute, and the only
    ones that take any parameter are OpenAI's."""
    routes = list(api_routes(gw.app.routes))
    assert routes and all(isinstance(r, QueryCheckedRoute) for r in routes), routes
    lenient = sorted(r.path for r in routes if isinstance(r, QueryCheckedRoute)
                     and r.taken is None)
    assert lenient == ["/v1/chat/completions", "/v1/models", "/v1/models/{model_id:path}"]


def test_no_route_runs_a_dependency_in_the_thread_pool(gw: ThreadServer) -> None:
    """FastAPI runs a dependency that is a plain function in its thread pool: a thread hop
    on every request (on the chat route it cost about a third of the gateway's requests/s).
    Every dependency of every route, the app's own included, is a coroutine."""
    def calls(dependant: Any) -> Iterator[Any]:
        for dependency in dependant.dependencies:
            yield dependency.call
            yield from calls(dependency)

    routes = list(api_routes(gw.app.routes))
    plain = sorted({f"{r.path}: {getattr(c, '__qualname__', c)}" for r in routes
                    for c in calls(r.dependant) if not inspect.iscoroutinefunction(c)})
    assert routes and not plain, plain



# Every number a query parameter takes: (path, parameter, the other parameters it needs).
_NUMBERS = [("/v1/router/requests", "limit", {}), ("/v1/router/requests", "cursor", {}),
            ("/v1/router/keys", "limit", {}), ("/v1/router/budgets", "limit", {}),
            ("/v1/router/budget/alert", "limit", {}), ("/v1/router/report/sla", "since_hours", {}),
            *[("/v1/router/report/forecast", name,
               {"requests_per_hour": "10", "avg_input_tokens": "100",
                "avg_output_tokens": "50"})
              for name in ("requests_per_hour", "avg_input_tokens", "avg_output_tokens")]]


@pytest.mark.parametrize(("path", "name", "others"), _NUMBERS)
@pytest.mark.parametrize("bad", ["1_000", " 1", "1 ", "1\t", "\u0665", "0x10", "1e-400",
                                 "nan", "inf", "", "+"])
def test_a_number_parameter_is_read_as_a_person_writes_one(
        guarded: ThreadServer, path: str, name: str, others: dict[str, str], bad: str) -> None:
    """A query's number is ASCII digits and nothing around them (not pydantic's lax reading,
    which took 1_000, %201 and 1e-400 as 1000, 1 and 0), on every route that takes one, with
    a 400 naming the parameter; a whole number is no 1.0 either."""
    r = httpx.get(f"{guarded.base}{path}", params={**others, name: bad}, headers=ADMIN)
    assert r.status_code == 400, (path, name, bad, r.text)
    error = r.json()["error"]
    assert error["param"] == name and error["message"].startswith(f"{name}: "), error
    if bad not in ("", "+", "nan", "inf"):
        assert json.dumps(bad, ensure_ascii=False) in error["message"], error  # as JSON
    if bad == "1e-400" and name not in ("limit", "cursor"):  # (no whole number either)
        assert "too small a number to be told from 0" in error["message"], error


@pytest.mark.parametrize(("path", "name", "others", "advice"), [
    ("/v1/router/report/sla", "since_hours", {}, "; give a number of hours more than 0 and "
                                                 "at most 8,784 (366 days)"),
    *[(path, name, others, "; write 0, or a number of at least 1e-300")
      for path, name, others in _NUMBERS if name not in ("limit", "cursor", "since_hours")]])
def test_a_number_too_small_to_be_told_from_0_is_told_what_to_give_instead(
        guarded: ThreadServer, path: str, name: str, others: dict[str, str],
        advice: str) -> None:
    """1e-400 is told it is too small a number to be told from 0, with what the parameter
    takes: the window of hours takes no 0, so it is not advised to write 0 (it was, and 0
    was then refused as out of range); where 0 is taken, writing 0 is."""
    r = httpx.get(f"{guarded.base}{path}", params={**others, name: "1e-400"}, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == (
        f'{name}: "1e-400" is too small a number to be told from 0{advice}'), r.text


@pytest.mark.parametrize(("path", "name", "others"), _NUMBERS)
def test_a_number_out_of_range_is_quoted_as_written(
        guarded: ThreadServer, path: str, name: str, others: dict[str, str]) -> None:
    """A whole number is quoted as the whole number sent (-1), not the float it reads as."""
    r = httpx.get(f"{guarded.base}{path}", params={**others, name: "-1"}, headers=ADMIN)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"{name}: ") and message.endswith("got -1"), message


@pytest.mark.parametrize(("path", "name", "others"), _NUMBERS)
def test_a_number_too_large_for_any_parameter_is_told_so(
        guarded: ThreadServer, path: str, name: str, others: dict[str, str]) -> None:
    """A number of 400 digits (and 1e400, where any number is taken) is refused as too large,
    quoted as written: it was told as no whole number in ASCII digits, or as "not NaN or
    infinity", which it is not as written."""
    whole = name in ("limit", "cursor")
    shown = json.dumps("9" * 37 + "…", ensure_ascii=False)
    expected = {"9" * 400: (f"{name}: is a whole number of more than 100 digits, larger than "
                            f"any value taken here, got {shown}") if whole else
                           (f"{name}: must be a finite number, got {shown}, past the largest "
                            "a number holds (about 1.8e308)")}
    if not whole:
        expected["1e400"] = (f'{name}: must be a finite number, got "1e400", past the largest '
                             "a number holds (about 1.8e308)")
    for big, message in expected.items():
        r = httpx.get(f"{guarded.base}{path}", params={**others, name: big}, headers=ADMIN)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == name and error["message"] == message, error


@pytest.mark.parametrize(("path", "name", "others"), _NUMBERS)
def test_a_number_parameter_written_plainly_is_taken(
        guarded: ThreadServer, path: str, name: str, others: dict[str, str]) -> None:
    whole = name in ("limit", "cursor")
    if path.endswith("/forecast"):  # (a forecast needs a routing mix: one request gives it)
        raw = client(guarded, key_for(guarded, "acme")).chat.completions.with_raw_response.create(
            model="auto", messages=user("a mix"))
        log_entry(guarded, raw.headers["x-switchpoint-request-id"], headers=ADMIN)
    for good in (["5", "+5", "0005"] if whole else ["5", "2.5", "1e1", "0.0e-99999", "1e-300"]):
        if (good.startswith("0.0") or good == "1e-300") and name == "since_hours":
            continue  # (0 is no number of hours)
        r = httpx.get(f"{guarded.base}{path}", params={**others, name: good}, headers=ADMIN)
        assert r.status_code == 200, (path, name, good, r.text)
    if whole:
        r = httpx.get(f"{guarded.base}{path}", params={**others, name: "1.0"}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["param"] == name, r.text


def test_a_route_cannot_read_a_number_laxly() -> None:
    """A number query parameter without the strict reading is refused as its route is made,
    so every route that takes one reads it the same way."""
    router = APIRouter(route_class=QueryCheckedRoute)

    async def lax(request: Request, limit: int = Query(5, ge=1)) -> None:
        """A route reading its limit as pydantic would."""

    async def optional(request: Request, x: float | None = None) -> None:
        """A route reading a number it takes no Query for."""

    async def strict(request: Request,
                     limit: Annotated[int, Query(ge=1), WHOLE] = 5,
                     share: Annotated[float | None, Query(gt=0), NUMBER] = None) -> None:
        """A route reading its numbers as a person writes them."""

    for endpoint in (lax, optional):
        with pytest.raises(TypeError, match="reads its text strictly"):
            router.add_api_route("/x", endpoint)
    router.add_api_route("/x", strict)
    assert router.routes


# GET /v1/router/stats?tenant= -------------------------------------------------------------


def chat_as(server: ThreadServer, key: str, model: str = "auto") -> str:
    raw = client(server, key).chat.completions.with_raw_response.create(
        model=model, messages=user("count me"))
    request_id = str(raw.headers["x-switchpoint-request-id"])
    log_entry(server, request_id, headers=ADMIN)
    return request_id


def stats(server: ThreadServer, **query: Any) -> dict[str, Any]:
    r = httpx.get(f"{server.base}/v1/router/stats", params=query, headers=ADMIN)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_stats_of_one_tenant(guarded: ThreadServer) -> None:
    acme, zeta = key_for(guarded, "acme"), key_for(guarded, "zeta")
    before = {t: stats(guarded, tenant=t) for t in ("acme", "zeta")}
    whole_before = stats(guarded)
    for _ in range(3):
        chat_as(guarded, acme)
    chat_as(guarded, zeta, model="cheap")  # named: a request, no routing decision
    httpx.post(f"{guarded.base}/v1/route", json={"prompt": "route me"},
               headers={"authorization": f"Bearer {zeta}"}).raise_for_status()
    after = {t: stats(guarded, tenant=t) for t in ("acme", "zeta")}
    whole = stats(guarded)
    grew = {t: (after[t]["total"] - before[t]["total"],
                after[t]["requests"]["total"] - before[t]["requests"]["total"])
            for t in after}
    assert grew == {"acme": (3, 3), "zeta": (1, 1)}, grew
    def cheap(t: str, figures: dict[str, Any]) -> int:
        return int(figures[t]["requests"]["by_model"].get("cheap", {}).get("requests", 0))

    assert cheap("zeta", after) - cheap("zeta", before) == 1
    assert whole["total"] - whole_before["total"] == 4
    assert whole["requests"]["total"] - whole_before["requests"]["total"] == 4
    for t in ("acme", "zeta"):
        assert after[t]["requests"]["total"] <= whole["requests"]["total"]
        assert sum(after[t]["by_model"].values()) == after[t]["total"]
        assert after[t]["tenant"] == t
    assert whole["tenant"] is None


def test_stats_of_the_deployments_own_tenant_count_requests_without_one(
        gw: ThreadServer) -> None:
    before = httpx.get(f"{gw.base}/v1/router/stats", params={"tenant": "default"}).json()
    raw = client(gw).chat.completions.with_raw_response.create(model="auto",
                                                               messages=user("mine"))
    log_entry(gw, raw.headers["x-switchpoint-request-id"])
    whole = httpx.get(f"{gw.base}/v1/router/stats").json()
    own = httpx.get(f"{gw.base}/v1/router/stats", params={"tenant": "default"}).json()
    assert own["total"] == before["total"] + 1
    # Without keys every request is the deployment's own: its figures are the whole's.
    assert own["total"] == whole["total"] and own["by_model"] == whole["by_model"]
    assert own["requests"] == whole["requests"]


def test_stats_of_an_unknown_or_malformed_tenant_are_refused(guarded: ThreadServer) -> None:
    r = httpx.get(f"{guarded.base}/v1/router/stats", params={"tenant": "acmee"},
                  headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["param"] == "tenant"
    assert "acme" in r.json()["error"]["message"]  # the known ones are listed
    for bad in ("", "x" * 65):
        r = httpx.get(f"{guarded.base}/v1/router/stats", params={"tenant": bad},
                      headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["param"] == "tenant", r.text
    r = httpx.get(f"{guarded.base}/v1/router/stats", params={"tenant": "acme"})
    assert r.status_code == 401  # the admin's, as the whole's
