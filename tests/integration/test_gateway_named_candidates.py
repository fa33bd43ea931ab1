"""A chat request that names its model and also gives a candidate list (``models=`` in process,
the ``x-switchpoint-models`` header or the body's ``models`` over HTTP): the list is checked as
it is for ``auto`` (the same error, naming the same field), it must hold the model named (else a
400 naming the list, what it lists and the model), and the model's fallbacks it leaves out are
not tried. In process through a gateway of its own, over HTTP through the session's server with
the official ``openai`` client; both in front of the fake provider (``good`` falls back to
``other``, ``cheap`` to ``good`` and on to ``other``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import openai
import pytest

from switchpoint import Gateway
from switchpoint.errors import (
    FailoverError,
    InvalidInputError,
    NoCandidatesError,
    PermissionDeniedError,
    SwitchpointError,
    UnknownModelError,
)
from switchpoint.gateway.parsing import MAX_MODELS
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text, user
from tests.integration.servers import ThreadServer

TENANTS = """tenants:
  acme: {models: [auto, cheap, good]}
"""
HEADER = "x-switchpoint-models"


def outside(field: str, listed: str, model: str = "good") -> str:
    """The refusal of a request naming ``model`` beside a list ``field`` that leaves it out."""
    return (f'{field}: lists {listed} but not "{model}", the model the request names: add '
            f'"{model}" to it, ask for model "auto" to route among the models it lists, or '
            f'leave {field} out to call "{model}" and its fallbacks')


@pytest.fixture(scope="module")
def local(gw_fake: FakeProviderProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("named-candidates")
    config = root / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(root / "data")) + TENANTS, encoding="utf-8")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        yield gateway


def logged(gateway: Gateway) -> int:
    store = gateway.store
    assert store is not None
    return len(store.requests(1000, None)[0])


def refusal(gateway: Gateway, model: str, models: object, **kw: Any) -> SwitchpointError:
    with pytest.raises(SwitchpointError) as caught:
        gateway.complete(user("Which model?"), model, models=cast(Any, models), **kw)
    return caught.value


@pytest.mark.parametrize("models", [
    ["nope"], ["good", "nope"], [], {"good"}, {"good": 1}, "good", [1],
    [f"m{i}" for i in range(MAX_MODELS + 1)]],
    ids=["unknown", "unknown-beside", "empty", "set", "dict", "str", "not-a-name", "too-many"])
def test_a_bad_list_beside_a_named_model_is_refused_as_beside_auto(
        local: Gateway, gw_fake: FakeProviderProcess, models: object) -> None:
    before = logged(local)
    named = refusal(local, "good", models)
    routed = refusal(local, "auto", models)
    assert isinstance(named, InvalidInputError)
    assert type(named) is type(routed) and named.field == routed.field == "models"
    assert str(named) == str(routed) and str(named).startswith("models: ")
    if models == ["nope"]:
        assert isinstance(named, UnknownModelError)
        assert str(named).startswith('models: unknown model(s) "nope"; known models are: ')
    assert logged(local) == before and gw_fake.requests() == []  # nothing called or logged


def test_a_named_model_the_list_leaves_out_is_a_400_naming_the_list_and_the_model(
        local: Gateway, gw_fake: FakeProviderProcess) -> None:
    before = logged(local)
    for call in (lambda: local.complete(user("Hi"), "good", models=["cheap", "fresh"]),
                 lambda: local.stream(user("Hi"), "good", models=["cheap", "fresh"]),
                 lambda: local.complete(user("Hi"), "good", models=["cheap", "fresh"],
                                        exact=True)):
        with pytest.raises(NoCandidatesError) as caught:
            call()
        assert caught.value.field == "models"
        assert str(caught.value) == outside("models", '"cheap", "fresh"')
    assert logged(local) == before and gw_fake.requests() == []


def test_a_limited_callers_list_beside_a_named_model_is_a_403_as_beside_auto(
        local: Gateway, gw_fake: FakeProviderProcess) -> None:
    """A name the tenant's routing may not choose is a 403 whether the catalog holds it or
    not (it is not told which names exist), beside a named model as beside auto."""
    for models in (["good", "other"], ["good", "nope"]):
        named = refusal(local, "good", models, tenant="acme")
        routed = refusal(local, "auto", models, tenant="acme")
        assert isinstance(named, PermissionDeniedError) and named.param == "models"
        assert str(named) == str(routed)
        assert str(named).startswith(f'models: the routing of tenant "acme" may not choose '
                                     f'"{models[1]}"; it may choose among '), named
    assert gw_fake.requests() == []


def test_the_named_models_fallbacks_the_list_leaves_out_are_not_tried(
        local: Gateway, gw_fake: FakeProviderProcess) -> None:
    answer = local.complete(user("Hi"), "cheap", models=["cheap"])
    assert answer.switchpoint.model == "cheap"
    assert ('Fallbacks the request\'s candidate list leaves out are left out ("good", '
            '"other").') in answer.switchpoint.reasoning
    gw_fake.reset()
    gw_fake.default("good", "500")
    try:
        with pytest.raises(FailoverError) as failed:
            local.complete(user("Hi"), "good", models=["good", "cheap"])
        assert failed.value.models_tried == ["good"]
        assert {r["body"]["model"] for r in gw_fake.requests()} == {"good"}  # other not tried
        answered = local.complete(user("Hi"), "good", models=["other", "good"])
        assert answered.switchpoint.model == "other"  # a fallback it lists is tried
    finally:
        local.reset_health()


# Over HTTP -----------------------------------------------------------------------------------


def bad_request(server: ThreadServer, model: str, *, headers: dict[str, str] | None = None,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(
            model=model, messages=user("Which model?"), extra_headers=headers,
            extra_body=body)
    error = caught.value.body
    assert isinstance(error, dict), error
    return error


@pytest.mark.parametrize(("headers", "body", "param"), [
    ({HEADER: "nope"}, None, HEADER),
    ({HEADER: ","}, None, HEADER),
    (None, {"models": ["good", "nope"]}, "models"),
    (None, {"models": []}, "models"),
    (None, {"models": "good"}, "models"),
], ids=["header-unknown", "header-empty", "body-unknown", "body-empty", "body-str"])
def test_over_http_a_bad_list_beside_a_named_model_is_refused_as_beside_auto(
        gw: ThreadServer, gw_fake: FakeProviderProcess, headers: dict[str, str] | None,
        body: dict[str, Any] | None, param: str) -> None:
    named = bad_request(gw, "good", headers=headers, body=body)
    routed = bad_request(gw, "auto", headers=headers, body=body)
    assert named == routed and named["param"] == param, named
    assert str(named["message"]).startswith(f"{param}: ")
    assert gw_fake.requests() == []


@pytest.mark.parametrize(("listed", "place"), [
    ("cheap,,good", "item 2 of 3"), ("cheap, good,", "item 3 of 3"), (",good", "item 1 of 2")])
def test_over_http_a_header_list_with_an_empty_item_is_refused_naming_its_place(
        gw: ThreadServer, gw_fake: FakeProviderProcess, listed: str, place: str) -> None:
    """The header's list is read as every comma-separated list is (the command line's, a
    key's models): an empty item is a 400 naming the header and the item's place, beside
    auto and a named model alike, where it was dropped unsaid and the request went on."""
    for model in ("auto", "good"):
        error = bad_request(gw, model, headers={HEADER: listed})
        assert error["param"] == HEADER and error["code"] == "invalid_request", error
        assert error["message"] == (f"{HEADER}: {json.dumps(listed)} has no model name at "
                                    f"{place}: write one model name between commas, such as "
                                    "gpt-4o-mini,gpt-4o"), error
    assert gw_fake.requests() == []  # nothing was called
    # The same names, each between commas, are taken as ever.
    names = ",".join(name.strip() for name in listed.split(",") if name.strip())
    answer = client(gw).chat.completions.with_raw_response.create(
        model="good", messages=user("Hi"), extra_headers={HEADER: names})
    assert answer.headers["x-switchpoint-model"] == "good"


def test_over_http_a_named_model_the_list_leaves_out_is_a_400_naming_it(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    header = bad_request(gw, "good", headers={HEADER: "cheap, fresh"})
    assert header["param"] == HEADER and header["code"] == "invalid_request", header
    assert header["message"] == outside(HEADER, '"cheap", "fresh"')
    body = bad_request(gw, "good", body={"models": ["other"]})
    assert body["param"] == "models" and body["message"] == outside("models", '"other"')
    # Both given, both must hold it: the body's list is named when it alone leaves it out.
    both = bad_request(gw, "good", headers={HEADER: "good"}, body={"models": ["cheap"]})
    assert both["message"] == outside("models", '"cheap"')
    assert gw_fake.requests() == []


def test_over_http_the_named_models_fallbacks_the_list_leaves_out_are_not_tried(
        gw: ThreadServer, gw_fake: FakeProviderProcess) -> None:
    gw_fake.default("good", "500")
    with pytest.raises(openai.APIStatusError) as failed:
        client(gw).chat.completions.create(model="good", messages=user("Hi"),
                                           extra_headers={HEADER: "good,cheap"})
    assert failed.value.status_code == 502
    assert {r["body"]["model"] for r in gw_fake.requests()} == {"good"}  # other not tried
    answer = client(gw).chat.completions.with_raw_response.create(
        model="good", messages=user("Hi"), extra_body={"models": ["good", "other"]})
    assert answer.headers["x-switchpoint-model"] == "other"


def test_a_list_that_holds_the_named_model_changes_nothing_else(gw: ThreadServer) -> None:
    answer = client(gw).chat.completions.with_raw_response.create(
        model="good", messages=user("Hi"),
        extra_headers={HEADER: "cheap,good"}, extra_body={"models": ["good"]})
    assert answer.headers["x-switchpoint-model"] == "good"
    assert answer.parse().choices[0].message.content
