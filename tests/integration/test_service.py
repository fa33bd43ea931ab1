"""The HTTP service on a real uvicorn server (loopback, bundled default weights, real embedder):
seed 2's contract verbatim, every bad input the issue lists, the service routes, and the
decision cache under concurrency."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.gateway.live import RouterFactory
from switchpoint.server import create_app
from switchpoint.weights import load_weights
from tests.integration.servers import ThreadServer, thread_server

# One factory for every server in this module: the MiniLM session is loaded once.
FACTORY = RouterFactory()
SEED_KEYS = {"selected_model", "cluster_id", "expected_error", "cost_adjusted_score",
             "all_scores", "cache_hit", "usage"}
SEED_MODELS = ["gpt-4o-mini", "gpt-4o", "ministral-3b-latest"]
# Seed 2's request bodies, byte for byte as its curl examples send them.
SEED_PROVE = b"""{
  "prompt": "Prove the square root of 2 is irrational.",
  "cost_weight": 0.5,
  "available_models": ["gpt-4o-mini", "gpt-4o", "ministral-3b-latest"]
}"""
SEED_CLASSIFY = b"""{
    "prompt": "Classify this ticket: billing | technical | other",
    "cost_weight": 0.7
  }"""
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    data = tmp_path_factory.mktemp("data")
    settings = load_settings(None, overrides={"data_dir": str(data)}, environ={})
    with thread_server(create_app(settings, loader=FACTORY)) as s:
        yield s


@pytest.fixture(scope="module")
def seed_catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    """A catalog with exactly seed 2's three model names, mapped to default-weights profiles."""
    root = tmp_path_factory.mktemp("seedcat")
    config = root / "switchpoint.yaml"
    config.write_text("""
models:
  - {name: gpt-4o-mini, profile: gpt-3.5-turbo-1106, input_per_mtok: 0.15, output_per_mtok: 0.6}
  - {name: gpt-4o, profile: gpt-4-1106-preview, input_per_mtok: 2.5, output_per_mtok: 10}
  - {name: ministral-3b-latest, profile: mistralai/mistral-7b-chat, provider: mistral,
     input_per_mtok: 0.04, output_per_mtok: 0.04}
data_dir: data
""", encoding="utf-8")
    settings = load_settings(config, environ={})
    assert Path(settings.data_dir) == root / "data"
    with thread_server(create_app(settings, loader=FACTORY)) as s:
        yield s


def post(server: ThreadServer, body: bytes | Mapping[str, object],
         path: str = "/v1/route") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.base + path, content=content, headers=JSON, timeout=30)


def assert_invalid(r: httpx.Response, field: str, status: int = 400,
                   code: str = "invalid_request") -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["param"] == field
    assert err["message"].startswith(field), err["message"]
    return str(err["message"])


def unique(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


# Seed 2, verbatim --------------------------------------------------------------------------------


def test_seed_classify_example(server: ThreadServer) -> None:
    r = post(server, SEED_CLASSIFY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {*SEED_KEYS, "decision_id", "prompt_hash"}  # (routed on a prompt)
    assert isinstance(body["selected_model"], str)
    assert isinstance(body["cluster_id"], int)
    for key in ("expected_error", "cost_adjusted_score"):
        assert isinstance(body[key], float)
    assert isinstance(body["cache_hit"], bool)
    assert set(body["usage"]) == {"routing_ms", "embedding_ms"}
    assert body["cost_adjusted_score"] == pytest.approx(min(body["all_scores"].values()))
    assert body["selected_model"] == min(body["all_scores"], key=body["all_scores"].get)
    assert set(body["all_scores"]) == set(load_weights(None).models)


def test_seed_classify_without_content_type_header(server: ThreadServer) -> None:
    """`curl -d` without -H sends form encoding; the JSON body is still read."""
    r = httpx.post(server.base + "/v1/route", content=SEED_CLASSIFY, timeout=30,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


def test_seed_prove_example_with_default_weights_names_the_unknown_models(
        server: ThreadServer) -> None:
    """The default weights know none of seed 2's model names: 400 naming each of them."""
    message = assert_invalid(post(server, SEED_PROVE), "available_models")
    for name in SEED_MODELS:
        assert json.dumps(name) in message
    assert "known models are" in message


def test_seed_prove_example_with_a_catalog_of_those_models(
        seed_catalog_server: ThreadServer) -> None:
    r = post(seed_catalog_server, SEED_PROVE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["all_scores"]) == set(SEED_MODELS)
    assert body["selected_model"] in SEED_MODELS
    models = httpx.get(seed_catalog_server.base + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["auto", *SEED_MODELS]
    assert models["data"][3]["owned_by"] == "mistral"


def test_seed_embedding_example(server: ThreadServer) -> None:
    vector = [((i * 37) % 101 - 50) / 100 for i in range(384)]
    r = post(server, {"embedding": vector, "cost_weight": 0.5})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["embedding_ms"] == 0


def test_cost_weight_overrides_lambda_and_available_models_restrict(server: ThreadServer) -> None:
    prompt = unique("Write a haiku about the sea")
    cheap = post(server, {"prompt": prompt, "cost_weight": 100}).json()
    best = post(server, {"prompt": prompt, "cost_weight": 0}).json()
    assert cheap["all_scores"] != best["all_scores"]
    pair = ["claude-v2", "mistralai/mistral-7b-chat"]
    only = post(server, {"prompt": prompt, "available_models": pair}).json()
    assert set(only["all_scores"]) == set(pair)


# Bad input: one test each, all 400 invalid_request naming the field ---------------------------


def test_malformed_json(server: ThreadServer) -> None:
    assert "not valid JSON" in assert_invalid(post(server, b'{"prompt": "hi",'), "body")


def test_empty_body(server: ThreadServer) -> None:
    assert "empty" in assert_invalid(post(server, b""), "body")


def test_body_not_an_object(server: ThreadServer) -> None:
    assert_invalid(post(server, b'["prompt", "hi"]'), "body")


def test_prompt_of_wrong_type(server: ThreadServer) -> None:
    assert "string" in assert_invalid(post(server, {"prompt": 42}), "prompt")


def test_available_models_of_wrong_type(server: ThreadServer) -> None:
    assert_invalid(post(server, {"prompt": "hi", "available_models": "gpt-4-1106-preview"}),
                   "available_models")


def test_embedding_of_wrong_type(server: ThreadServer) -> None:
    assert_invalid(post(server, {"embedding": ["0.1"] * 384}), "embedding")


def test_empty_prompt(server: ThreadServer) -> None:
    assert "empty" in assert_invalid(post(server, {"prompt": ""}), "prompt")


def test_whitespace_prompt(server: ThreadServer) -> None:
    assert "empty" in assert_invalid(post(server, {"prompt": " \n\t "}), "prompt")


def test_neither_prompt_nor_embedding(server: ThreadServer) -> None:
    assert_invalid(post(server, {"cost_weight": 0.5}), "prompt")


def test_both_prompt_and_embedding(server: ThreadServer) -> None:
    assert_invalid(post(server, {"prompt": "hi", "embedding": [0.1] * 384}), "embedding")


def test_ten_megabyte_prompt(server: ThreadServer) -> None:
    r = post(server, {"prompt": "word " * (2 * 1024 * 1024)})
    message = assert_invalid(r, "body", 413, "request_too_large")
    assert "limit" in message and "prompt" in message


def test_ten_megabyte_prompt_chunked(server: ThreadServer) -> None:
    """No Content-Length: the limit is enforced while reading."""
    chunk = b"x" * 65536

    def body() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(160):
            yield chunk
        yield b'"}'

    r = httpx.post(server.base + "/v1/route", content=body(), headers=JSON, timeout=30)
    assert_invalid(r, "body", 413, "request_too_large")


def test_embedding_of_wrong_length(server: ThreadServer) -> None:
    message = assert_invalid(post(server, {"embedding": [0.1] * 383}), "embedding")
    assert "383" in message and "384" in message


_INFINITY = "infinity, too large a number (what 1e400, or any number past about 1.8e308, reads as)"


@pytest.mark.parametrize(("sent", "says"), [
    ("NaN", "is NaN, not a finite number"), ("Infinity", f"is {_INFINITY}"),
    ("1e999", f"is {_INFINITY}"),
    ("-1e999", "is -infinity, too large a negative number (what -1e400, or any number below "
               "about -1.8e308, reads as)")])
def test_an_embedding_holding_a_number_not_finite_is_told_as_the_chat_route_tells_it(
        server: ThreadServer, sent: str, says: str) -> None:
    """Named by its index and said in the chat gateway's words, where this route said "must be
    a finite number (not NaN or infinity)" of what chat called "is NaN, not a finite number;
    send finite numbers only"."""
    content = ('{"embedding": [0.1, ' + sent + ", 0.1" * 382 + "]}").encode()
    message = assert_invalid(post(server, content), "embedding")
    assert message == f"embedding[1]: {says}; send finite numbers only"


def test_embedding_all_zeros(server: ThreadServer) -> None:
    assert "zeros" in assert_invalid(post(server, {"embedding": [0.0] * 384}), "embedding")


def test_unknown_model(server: ThreadServer) -> None:
    message = assert_invalid(post(server, {"prompt": "hi", "available_models": ["gpt-9"]}),
                             "available_models")
    assert '"gpt-9"' in message


def test_available_models_are_bounded_and_unknown_ones_named_once(server: ThreadServer) -> None:
    known = post(server, {"prompt": "hi"}).json()["selected_model"]
    message = assert_invalid(post(server, {"prompt": "hi", "available_models": [known] * 65}),
                             "available_models")
    assert "64" in message
    assert_invalid(post(server, {"prompt": "hi", "available_models": ["m" * 257]}),
                   "available_models")
    message = assert_invalid(post(server, {"prompt": "hi",
                                           "available_models": ["gpt-9"] * 40 + [known]}),
                             "available_models")
    assert message.count("gpt-9") == 1
    # Within the bound, a model named more than once is refused naming it, once.
    message = assert_invalid(post(server, {"prompt": "hi", "available_models": [known] * 64}),
                             "available_models")
    assert message == f'available_models: names "{known}" more than once; name each model once'
    assert post(server, {"prompt": "hi", "available_models": [known]}).status_code == 200


def test_the_chat_routes_overriding_headers_are_refused_naming_the_body_field(
        server: ThreadServer) -> None:
    # The λ or the models a header asked for were ignored: the decision was another than the
    # caller meant. The body fields are this route's one way to give them.
    known = post(server, {"prompt": "hi"}).json()["selected_model"]
    before = httpx.get(server.base + "/v1/router/stats", timeout=30).json()["total"]
    for header, field, value in (("x-switchpoint-cost-weight", "cost_weight", "0"),
                                 ("x-switchpoint-models", "available_models", known)):
        r = httpx.post(server.base + "/v1/route", headers={**JSON, header: value}, timeout=30,
                       content=json.dumps({"prompt": unique("a header's override")}).encode())
        message = assert_invalid(r, header)
        assert f'send "{field}" in the JSON body instead' in message, message
    assert httpx.get(server.base + "/v1/router/stats", timeout=30).json()["total"] == before
    r = post(server, {"prompt": unique("the body's override"), "cost_weight": 0,
                      "available_models": [known]})
    assert r.status_code == 200 and r.json()["selected_model"] == known


def test_empty_available_models(server: ThreadServer) -> None:
    assert_invalid(post(server, {"prompt": "hi", "available_models": []}), "available_models")


def test_negative_cost_weight(server: ThreadServer) -> None:
    assert ">= 0" in assert_invalid(post(server, {"prompt": "hi", "cost_weight": -0.1}),
                                    "cost_weight")


@pytest.mark.parametrize(("sent", "says"), [
    (b"-1", "is -1; it must be >= 0"), (b"-0.5", "is -0.5; it must be >= 0"),
    (b"20000", "is 20000; it must be at most 10,000"),
    (b"2.5e4", "is 25000.0; it must be at most 10,000"),
])
def test_a_cost_weight_out_of_range_is_quoted_as_sent(server: ThreadServer, sent: bytes,
                                                      says: str) -> None:
    """An integer is quoted as the integer sent (-1), not as the float it reads as (-1.0)."""
    body = b'{"prompt": "hi", "cost_weight": ' + sent + b"}"
    assert assert_invalid(post(server, body), "cost_weight").startswith(f"cost_weight: {says}")


@pytest.mark.parametrize(("value", "got"), [
    (5, "got 5"), (["x"], "got a list"), ({"name": "x"}, "got an object"), (True, "got true"),
])
def test_a_field_of_the_wrong_type_says_what_it_got(server: ThreadServer, value: object,
                                                    got: str) -> None:
    # A list or an object was refused without what was sent ("ab_test: must be a string").
    message = assert_invalid(post(server, {"prompt": "hi", "ab_test": value}), "ab_test")
    assert message == f"ab_test: must be a string, {got}"


def test_non_numeric_cost_weight(server: ThreadServer) -> None:
    assert "number" in assert_invalid(post(server, {"prompt": "hi", "cost_weight": "cheap"}),
                                      "cost_weight")


def test_numeric_string_cost_weight(server: ThreadServer) -> None:
    assert_invalid(post(server, {"prompt": "hi", "cost_weight": "0.5"}), "cost_weight")


def test_boolean_cost_weight(server: ThreadServer) -> None:
    assert_invalid(post(server, {"prompt": "hi", "cost_weight": True}), "cost_weight")


@pytest.mark.parametrize(("sent", "says"), [
    (b"NaN", "is NaN, not a finite number"), (b"1e999", f"is {_INFINITY}"),
    (b"-Infinity", "is -infinity, too large a negative number (what -1e400, or any number "
                   "below about -1.8e308, reads as)")])
def test_a_cost_weight_not_finite_is_refused_where_the_body_is_read_as_chat_says_it(
        server: ThreadServer, sent: bytes, says: str) -> None:
    """Refused as any number of a body that is not finite, where the body was read with it and
    the router refused 1e999 later in its own words ("...; it must be at most 10,000")."""
    body = b'{"prompt": "hi", "cost_weight": ' + sent + b"}"
    message = assert_invalid(post(server, body), "cost_weight")
    assert message == f"cost_weight: {says}; send finite numbers only"
    # The chat route's header is no way around it here: refused, naming the body field.
    r = httpx.post(server.base + "/v1/route", json={"prompt": "hi"}, timeout=30,
                   headers={"x-switchpoint-cost-weight": sent.decode()})
    assert '"cost_weight" in the JSON body' in assert_invalid(r, "x-switchpoint-cost-weight")


def test_huge_cost_weight(server: ThreadServer) -> None:
    assert_invalid(post(server, {"prompt": "hi", "cost_weight": 1e300}), "cost_weight")


def test_unknown_field(server: ThreadServer) -> None:
    message = assert_invalid(post(server, {"prompt": "hi", "cost_wieght": 1}), "cost_wieght")
    assert "cost_weight" in message  # lists the real fields


def test_bad_input_changes_no_state(server: ThreadServer) -> None:
    before = httpx.get(server.base + "/v1/router/stats").json()["total"]
    for body in ({"prompt": ""}, {"prompt": "hi", "available_models": ["gpt-9"]}):
        assert post(server, body).status_code == 400
    assert httpx.get(server.base + "/v1/router/stats").json()["total"] == before


# Service routes ----------------------------------------------------------------------------------


def test_health(server: ThreadServer) -> None:
    r = httpx.get(server.base + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] is True and body["status"] == "ready"
    assert body["weights_id"].startswith("cluster-")
    assert body["models"] == load_weights(None).models
    assert body["uptime_seconds"] > 0


def test_models_openai_list(seed_catalog_server: ThreadServer) -> None:
    body = httpx.get(seed_catalog_server.base + "/v1/models").json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["auto", *SEED_MODELS]
    for m in body["data"]:
        assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]


def test_without_models_configured_the_model_list_is_empty_as_chat_answers_no_name(
        server: ThreadServer) -> None:
    # No `models:`: a chat request to any name, `auto` too, is a 503 no_upstream_configured,
    # so the list names none and a lookup of one answers as chat does; /v1/route still routes
    # over the weights' own profiles.
    sdk = openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything", max_retries=0,
                        timeout=15)
    assert sdk.models.list().data == []
    for name in ("auto", load_weights(None).models[0]):
        with pytest.raises(openai.InternalServerError) as chat:
            sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.InternalServerError) as lookup:
            sdk.models.retrieve(name)
        for refused in (chat.value, lookup.value):
            assert refused.status_code == 503
            assert isinstance(refused.body, dict)
            assert refused.body["code"] == "no_upstream_configured", refused.body
        assert lookup.value.body == chat.value.body
    assert post(server, {"prompt": "still routes"}).json()["selected_model"] in (
        load_weights(None).models)


def test_unknown_route_and_method_keep_the_error_shape(server: ThreadServer) -> None:
    r = httpx.get(server.base + "/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(server.base + "/v1/route")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_openapi_and_no_pages_from_a_cdn(server: ThreadServer) -> None:
    spec = httpx.get(server.base + "/openapi.json").json()
    for path in ("/v1/route", "/health", "/v1/models", "/metrics", "/v1/router/stats",
                 "/v1/router/policy/{name}", "/v1/router/reload"):
        assert path in spec["paths"]
    route = spec["paths"]["/v1/route"]["post"]
    schema = route["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"prompt", "embedding", "available_models",
                                         "cost_weight", "prefer_healthy", "auto_scale",
                                         "estimate_tokens", "ab_test"}
    assert {"200", "400", "503"} <= set(route["responses"])
    # FastAPI's /docs and /redoc load their scripts from a CDN: offline, a blank page. Not
    # served; the document is /openapi.json, and a 404 says so.
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        r = httpx.get(server.base + page)
        assert r.status_code == 404, (page, r.text)
        assert "GET /openapi.json lists the routes" in r.json()["error"]["message"]
    r = httpx.get(server.base + "/openapi.json")
    assert "cdn." not in r.text and "<script" not in r.text


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics(server: ThreadServer) -> None:
    post(server, {"prompt": unique("metrics probe")})
    text = httpx.get(server.base + "/metrics").text
    assert "# TYPE switchpoint_http_requests_total counter" in text
    assert 'switchpoint_http_requests_total{route="/v1/route",method="POST",status="200"}' in text
    assert "# TYPE switchpoint_http_request_duration_seconds histogram" in text
    assert 'switchpoint_http_request_duration_seconds_bucket{route="/v1/route",le="+Inf"}' in text
    assert _metric(text, "switchpoint_route_decisions_total") >= 1
    assert "switchpoint_route_cache_hits_total" in text
    assert _metric(text, "switchpoint_router_ready") == 1


def test_stats_count_decisions_by_model_and_cluster(server: ThreadServer) -> None:
    before = httpx.get(server.base + "/v1/router/stats").json()
    decided = [post(server, {"prompt": unique(f"stats probe {i}")}).json() for i in range(3)]
    after = httpx.get(server.base + "/v1/router/stats").json()
    assert after["total"] == before["total"] + 3
    for d in decided:
        assert after["by_model"][d["selected_model"]] >= 1
        assert after["by_cluster"][str(d["cluster_id"])] >= 1
    assert sum(after["by_model"].values()) == after["total"]
    assert after["policy"] == "cluster"


def test_stats_a_damaged_file_holds_out_of_range_are_null_and_said(tmp_path: Path) -> None:
    """Totals out of range in the file (edited, damaged) failed the stats (a 500) or gave
    negative counts; each such figure is now null and the stats' warnings say which."""
    settings = load_settings(None, overrides={"data_dir": str(tmp_path)}, environ={})
    with thread_server(create_app(settings, loader=FACTORY)) as s:
        decided = post(s, {"prompt": unique("damaged stats probe")}).json()
        db = sqlite3.connect(tmp_path / "switchpoint.db")
        db.execute("UPDATE stat_counts SET n = 'damaged' WHERE dim = 'decision_model'")
        db.execute("INSERT OR REPLACE INTO stat_counts VALUES ('requests', '', '', -3, 0, 0, 0, 0, "
                   "0, 0, 0)")
        db.commit()
        db.close()
        r = httpx.get(s.base + "/v1/router/stats")
    assert r.status_code == 200, r.text
    stats = r.json()
    assert stats["total"] == 1 and stats["by_model"] == {decided["selected_model"]: None}
    assert stats["warnings"][0].startswith(f"by_model.{decided['selected_model']}: ")
    assert 'out of range ("damaged")' in stats["warnings"][0]
    assert stats["requests"]["total"] is None and stats["requests"]["errors"] is None
    assert stats["requests"]["warnings"][0].startswith("total: ")


# The decision cache under concurrency ------------------------------------------------------------


def test_concurrent_identical_requests_report_cache_hits_truthfully(server: ThreadServer) -> None:
    n = 32
    body = {"prompt": unique("Summarise the causes of the French Revolution"),
            "cost_weight": 0.25}
    before = httpx.get(server.base + "/v1/router/stats").json()

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
            return await asyncio.gather(*[client.post("/v1/route", json=body)
                                          for _ in range(n)])

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    decided = [r.json() for r in responses]
    hits = [d["cache_hit"] for d in decided]
    assert hits.count(False) >= 1  # someone computed it
    for d in decided:  # each call's flag is what happened to that call
        computed = d["usage"]["embedding_ms"] > 0
        assert d["cache_hit"] is not computed
    assert len({d["selected_model"] for d in decided}) == 1
    assert len({d["decision_id"] for d in decided}) == n
    after = httpx.get(server.base + "/v1/router/stats").json()
    assert after["total"] - before["total"] == n
    assert after["cache_hits"] - before["cache_hits"] == hits.count(True)
    again = post(server, body).json()
    assert again["cache_hit"] is True and again["usage"]["embedding_ms"] == 0
    assert math.isclose(again["cost_adjusted_score"], decided[0]["cost_adjusted_score"])


def test_a_warmed_app_has_built_its_routes_before_the_first_request(
        tmp_path: Path) -> None:
    # switchpoint serve's app builds, while its weights load, what FastAPI built at the first
    # request into each router (1 to 30 ms of that request); /health, which the server's
    # readiness is read from, is the only request it has had.
    settings = load_settings(None, overrides={"data_dir": str(tmp_path)}, environ={})
    app = create_app(settings, loader=FACTORY, warm=True)
    routers = [r for r in app.router.routes if hasattr(r, "effective_candidates")]
    if not routers:
        pytest.skip("this FastAPI builds a router's routes when it is included")
    with thread_server(app) as s:
        built = [r for r in routers
                 if getattr(r, "_effective_candidates_version", None) is not None]
        assert len(built) == len(routers)
        answer = httpx.post(f"{s.base}/v1/route", json={"prompt": "Name a prime number."})
        assert answer.status_code == 200 and answer.json()["selected_model"]
