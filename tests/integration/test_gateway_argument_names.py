"""An error about a chat request's candidate models or session id names what the caller
sent: the argument (``models``, ``session_id``) to ``Gateway.complete`` in process, the header
(``x-switchpoint-models``, ``x-session-id``) over HTTP; an option of the openai client
(``timeout``, ``extra_body``, ...) given to a call in process is refused naming it. Every case
is refused before any model is called, so the catalog points at an address nothing is asked
at."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest

from switchpoint import Gateway
from switchpoint.config import load_settings
from switchpoint.errors import InvalidInputError, PermissionDeniedError, UnknownModelError
from switchpoint.gateway.sessions import MAX_SESSION_ID
from switchpoint.server import create_app
from tests.integration.gateway_env import FACTORY, KEYS, client
from tests.integration.servers import ThreadServer, thread_server

NOWHERE = "http://127.0.0.1:19299/v1"  # never asked: each request here is refused first
LONG_ID = "s" * (MAX_SESSION_ID + 1)


def config(data_dir: Path) -> dict[str, Any]:
    return {
        "models": [
            {"name": "good", "profile": "gpt-4-1106-preview", "base_url": NOWHERE,
             "input_per_mtok": 10, "output_per_mtok": 30, "context_window": 128000},
            {"name": "cheap", "profile": "gpt-3.5-turbo-1106", "base_url": NOWHERE,
             "input_per_mtok": 0.5, "output_per_mtok": 1.5, "context_window": 16000},
            {"name": "gratis", "profile": "gpt-3.5-turbo-1106", "base_url": NOWHERE}],
        "tenants": {"acme": {"models": ["cheap", "auto"]}, "frugal": {"budgets": ["5/day"]}},
        "data_dir": str(data_dir)}


def messages() -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Which model? [{uuid.uuid4().hex[:8]}]"}]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("in-process")
    with Gateway.from_config(config(data_dir), loader=FACTORY, env=KEYS) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    settings = load_settings(overrides=config(tmp_path_factory.mktemp("served")), environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        yield server


def test_an_unknown_candidate_names_the_models_argument(local: Gateway) -> None:
    with pytest.raises(UnknownModelError) as caught:
        local.complete(messages(), models=["nope"])
    assert caught.value.field == "models" and str(caught.value).startswith("models: ")
    assert "x-switchpoint" not in str(caught.value)


def test_a_forbidden_candidate_names_the_models_argument(local: Gateway) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        local.complete(messages(), models=["good"], tenant="acme")
    assert caught.value.param == "models" and str(caught.value).startswith("models: ")
    assert "x-switchpoint" not in str(caught.value)


def test_candidates_not_in_a_list_are_read_by_the_rule_of_a_list_of_names(
        local: Gateway) -> None:
    """models is read as available_models is: a dict or a set is refused naming models and
    saying to pass a list; a generator is read once, as the list a tenant's limits check."""
    for listed, said in (({"cheap": 1}, "got dict (a mapping)"), ({"cheap"}, "got set")):
        with pytest.raises(InvalidInputError) as caught:
            local.complete(messages(), models=cast(Any, listed), tenant="acme")
        assert caught.value.field == "models" and said in str(caught.value)
        assert "pass a list" in str(caught.value)
    with pytest.raises(PermissionDeniedError) as denied:
        local.complete(messages(), models=cast(Any, (m for m in ["good"])), tenant="acme")
    assert denied.value.param == "models" and 'may not choose "good"' in str(denied.value)


def test_an_oversized_session_id_names_the_session_id_argument(local: Gateway) -> None:
    store = local.store
    assert store is not None
    before, _ = store.requests(1000, None)
    with pytest.raises(InvalidInputError) as caught:
        local.complete(messages(), session_id=LONG_ID)
    assert caught.value.field == "session_id" and "at most 256" in str(caught.value)
    assert "x-session-id" not in str(caught.value)
    after, _ = store.requests(1000, None)
    assert len(after) == len(before)  # refused before anything was routed, called or logged


@pytest.mark.parametrize("option", [{"timeout": 5}, {"extra_body": {"top_k": 3}},
                                    {"extra_headers": {"x-session-id": "s1"}},
                                    {"extra_query": {"a": 1}}])
@pytest.mark.parametrize("call", ["complete", "stream", "compare"])
def test_an_option_of_the_openai_client_is_refused_naming_it_not_sent_upstream(
        local: Gateway, option: dict[str, Any], call: str) -> None:
    """(Each went upstream as a field of the request's body, as given: a timeout bounded
    nothing, extra_body's fields were not the request's, and an upstream refuses such a
    field, or ignores it.)"""
    store = local.store
    assert store is not None
    before, _ = store.requests(1000, None)
    [name] = option
    with pytest.raises(InvalidInputError) as caught:
        if call == "compare":
            local.compare(messages(), ["good", "cheap"], **option)
        else:
            getattr(local, call)(messages(), **option)
    assert caught.value.field == name
    assert str(caught.value).startswith(f"{name}: is an option of the openai client, not a "
                                        "field of a chat request")
    after, _ = store.requests(1000, None)
    assert len(after) == len(before)  # refused before anything was routed, called or logged


@pytest.mark.parametrize(("headers", "param"), [
    ({"x-switchpoint-models": "nope"}, "x-switchpoint-models"),
    ({"x-session-id": LONG_ID}, "x-session-id"),
])
def test_over_http_the_same_errors_name_the_headers(served: ThreadServer,
                                                    headers: dict[str, str],
                                                    param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).chat.completions.create(model="auto", messages=messages(),  # type: ignore[arg-type]
                                               extra_headers=headers)
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param, body
    assert str(body["message"]).startswith(f"{param}: ")


NAMES_NO_MODEL = ('names no model; name at least one for "auto" to choose among, or leave it '
                  'out to let "auto" choose among every model it may')


def test_an_empty_candidate_list_says_it_names_no_model(local: Gateway) -> None:
    store = local.store
    assert store is not None
    before, _ = store.requests(1000, None)
    with pytest.raises(InvalidInputError) as caught:
        local.complete(messages(), models=[])
    assert str(caught.value) == f"models: {NAMES_NO_MODEL}"
    assert len(store.requests(1000, None)[0]) == len(before)


@pytest.mark.parametrize("listed", ["", ",", ", ,"])
def test_a_models_header_naming_no_model_says_so_and_how_to_fix_it(served: ThreadServer,
                                                                   listed: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).chat.completions.create(model="auto", messages=messages(),  # type: ignore[arg-type]
                                               extra_headers={"x-switchpoint-models": listed})
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "x-switchpoint-models", body
    assert body["message"] == f"x-switchpoint-models: {NAMES_NO_MODEL}"


UNPRICED = '"gratis" has no prices in the catalog'


def test_a_candidate_list_a_budget_leaves_nothing_in_names_the_models_argument(
        local: Gateway) -> None:
    """A caller a budget watches routes among priced models only: a models argument naming
    only an unpriced one leaves auto nothing, an error about that argument (as the routing
    door names its available_models), not about the request's model."""
    store = local.store
    assert store is not None
    before, _ = store.requests(1000, None)
    with pytest.raises(PermissionDeniedError) as caught:
        local.complete(messages(), models=["gratis"], tenant="frugal")
    assert caught.value.param == "models"
    assert str(caught.value).startswith(f"models: {UNPRICED}"), caught.value
    with pytest.raises(PermissionDeniedError) as routed:
        local.route("Which model?", available_models=["gratis"], tenant="frugal")
    assert routed.value.param == "available_models"
    assert str(routed.value).startswith(f"available_models: {UNPRICED}"), routed.value
    # Nothing was routed, called or charged; a refused chat request is logged as refused.
    after, _ = store.requests(1000, None)
    assert all(e["status"] == "refused" for e in after[:len(after) - len(before)])
    assert len(after) == len(before) + 1



def test_a_candidate_named_twice_for_a_route_is_refused_naming_it(local: Gateway,
                                                                  served: ThreadServer) -> None:
    """A route's available_models names each model once, as a router's allowed_models does:
    in process and over HTTP alike, the repeat is named and nothing is routed."""
    with pytest.raises(InvalidInputError) as caught:
        local.route("Which model?", available_models=["cheap", "good", "cheap"])
    assert str(caught.value) == ('available_models: names "cheap" more than once; name each '
                                 'model once')
    answer = httpx.post(f"{served.base}/v1/route", timeout=15,
                        json={"prompt": "Which model?", "available_models": ["good", "good"]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "available_models"
    assert error["message"] == ('available_models: names "good" more than once; name each '
                                'model once')


def test_a_candidate_named_twice_for_a_chat_request_is_refused_naming_it(
        local: Gateway, served: ThreadServer) -> None:
    """A chat request's candidate lists name each model once, as a route's available_models
    does: the models argument in process, the body's models and the header over HTTP (beside
    auto and beside a named model alike), each refused naming the list and the repeat, before
    anything is routed, called or logged."""
    store = local.store
    assert store is not None
    before, _ = store.requests(1000, None)
    with pytest.raises(InvalidInputError) as caught:
        local.complete(messages(), models=["cheap", "good", "cheap"])
    assert caught.value.field == "models"
    assert str(caught.value) == 'models: names "cheap" more than once; name each model once'
    with pytest.raises(InvalidInputError) as named:
        local.complete(messages(), model="good", models=["good", "good"])
    assert str(named.value) == 'models: names "good" more than once; name each model once'
    assert len(store.requests(1000, None)[0]) == len(before)
    http = client(served).with_options(max_retries=0)
    for model, body, headers, param, repeated in [
            ("auto", {"models": ["good", "cheap", "good"]}, {}, "models", "good"),
            ("cheap", {"models": ["cheap", "cheap"]}, {}, "models", "cheap"),
            ("auto", {}, {"x-switchpoint-models": "cheap, good,cheap"},
             "x-switchpoint-models", "cheap")]:
        with pytest.raises(openai.BadRequestError) as refused:
            http.chat.completions.create(model=model, messages=messages(),  # type: ignore[arg-type]
                                         extra_body=body, extra_headers=headers)
        error = refused.value.body
        assert isinstance(error, dict) and error["param"] == param, error
        assert error["message"] == (f'{param}: names "{repeated}" more than once; name each '
                                    'model once'), error
