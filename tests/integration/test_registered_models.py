"""Models registered at run time: ``Gateway.register_model`` adds a model to the live catalog
at once (``auto`` may choose it, a request naming it is served by its upstream), keeps it in
``data_dir`` across a restart and a reload (a config that comes to list its name wins), and
``unregister_model`` takes it out again; the config's rules refuse a bad one, and a refusal
changes nothing. Over HTTP, ``POST /v1/router/models`` and ``DELETE /v1/router/models/{name}``
are guarded by the admin token as the reload is. A real gateway (SQLite in ``tmp_path``) over
the fake provider."""

from __future__ import annotations

import contextlib
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchpoint import registration
from switchpoint.catalog import Catalog, ModelCard
from switchpoint.config import Settings, load_settings
from switchpoint.errors import (
    ConfigError,
    ConflictError,
    FailoverError,
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    StorageUnavailableError,
)
from switchpoint.gateway import Gateway, kept
from switchpoint.gateway import live as live_module
from switchpoint.gateway.engine import misconfigurations
from switchpoint.governance.keys import KeySpec
from switchpoint.router import Router
from switchpoint.server import create_app
from switchpoint.weights import WeightsPackage, default_weights_path, load_weights
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import poem_prompt
from tests.integration.learning_env import (
    KEYS,
    chat,
    config_text,
    counting_loader,
    get,
    learning_server,
    loader,
    post,
    settings_for,
    started_gateway,
)
from tests.integration.published_schema import Published
from tests.integration.servers import ThreadServer, loopback_socket, thread_server
from tests.unit.test_catalog_rules import BAD, IDS, card_of

CONFIG = "tenants:\n  acme: {}\n"
ADMIN = "registered-models-admin-0123456789"
PATH = "/v1/router/models"


def card(fake: FakeProviderProcess, name: str = "free", **more: Any) -> dict[str, Any]:
    """A model at the fake provider, free, so ``auto`` chooses it over the priced three."""
    return {"name": name, "base_url": fake.openai_base_url, "api_key_env": "FAKE_KEY",
            "input_per_mtok": 0, "output_per_mtok": 0, "tier": "simple", **more}


@pytest.fixture
def settings(fake: FakeProviderProcess, tmp_path: Path) -> Settings:
    return settings_for(fake, tmp_path, CONFIG)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[Gateway]:
    with started_gateway(settings) as gw:
        yield gw


def stored(settings: Settings) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.db_path) as db:
        return db.execute("SELECT name, card FROM runtime_models ORDER BY seq").fetchall()


def catalog(gateway: Gateway) -> list[str]:
    return gateway.router.catalog.names


def test_a_registered_model_is_live_at_once_chosen_by_auto_and_served_by_its_upstream(
        gateway: Gateway, fake: FakeProviderProcess) -> None:
    assert gateway.route(poem_prompt(0)).selected_model != "free"
    with pytest.raises(ConflictError, match=r"register the model with Gateway\.register_model"):
        gateway.router.register_model(card(fake))  # (its router's catalog is made anew)
    answer = gateway.register_model(card(fake))
    assert (answer["id"], answer["object"], answer["owned_by"]) == ("free", "model",
                                                                    "openai-compatible")
    assert answer["registered_at"] > 0
    # The weights have no profile of it: routed by tier and price, and the answer says so.
    assert answer["unprofiled_models"] == ["free"] and answer["unprofiled_models_count"] == 1
    assert "routed by tier and price alone" in answer["note"]
    assert catalog(gateway) == ["strong", "runner", "cheap", "free"]
    assert [m["id"] for m in gateway.models()] == ["auto", "strong", "runner", "cheap", "free"]
    assert gateway.model("free")["id"] == "free"
    with pytest.raises(ConflictError, match=r"unregister the model with "
                                            r"Gateway\.unregister_model") as refused:
        gateway.router.unregister_model("free")  # (not "build a Router without it")
    assert refused.value.param == "name" and catalog(gateway)[-1] == "free"
    decision = gateway.route(poem_prompt(0))
    assert decision.selected_model == "free"
    fake.reset()
    completion = gateway.complete([{"role": "user", "content": poem_prompt(1)}])
    assert completion.model == "free"
    named = gateway.complete([{"role": "user", "content": "hello"}], model="free")
    assert named.model == "free"
    asked = fake.requests()
    assert [r["body"]["model"] for r in asked] == ["free", "free"]
    assert all(r["headers"]["authorization"] == "Bearer sk-fake" for r in asked)
    assert [name for name, _ in stored(gateway.settings)] == ["free"]


def test_a_registration_joins_a_copy_of_the_live_router_and_loads_no_weights(
        settings: Settings, fake: FakeProviderProcess) -> None:
    # The card joins the catalog by the router's own rules (Router.join_model, what
    # register_model does) in a copy of the live router: the weights are not read again, and
    # requests under way keep the router they began on. A registration loaded the weights
    # anew, as a reload does.
    loads, counted = counting_loader()

    with Gateway(settings, loader=counted, env=KEYS) as gateway:
        gateway.start()
        old = gateway.router
        started = len(loads)
        gateway.register_model(card(fake))
        assert len(loads) == started, loads
        assert gateway.router is not old and gateway.router.weights_id == old.weights_id
        assert catalog(gateway) == ["strong", "runner", "cheap", "free"]
        assert old.catalog.names == ["strong", "runner", "cheap"]
        assert gateway.route(poem_prompt(0)).selected_model == "free"


def test_a_removal_leaves_a_copy_of_the_live_router_and_loads_no_weights(
        settings: Settings, fake: FakeProviderProcess) -> None:
    # As a registration joins one: the card leaves the catalog by the router's own rules
    # (Router.unregister_model) in a copy of the live router, which holds the registered
    # models as such, one registered before the last reload (made in a router loaded with
    # it) too; requests under way keep the router they began on.
    loads, counted = counting_loader()

    with Gateway(settings, loader=counted, env=KEYS) as gateway:
        gateway.start()
        gateway.register_model(card(fake))
        gateway.register_model(card(fake, "backup"))
        gateway.reload()
        old, started = gateway.router, len(loads)
        assert gateway.unregister_model("free")["deleted"] is True
        assert len(loads) == started, loads
        assert gateway.router is not old and gateway.router.weights_id == old.weights_id
        assert catalog(gateway) == ["strong", "runner", "cheap", "backup"]
        assert old.catalog.names == ["strong", "runner", "cheap", "free", "backup"]
        assert gateway.route(poem_prompt(0)).selected_model == "backup"
        gateway.unregister_model("backup")
        assert len(loads) == started and catalog(gateway) == ["strong", "runner", "cheap"]
        assert stored(gateway.settings) == []


def test_an_experiment_arm_s_router_takes_a_registration_in_a_copy_and_no_policy_is_read_again(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An arm routed by another policy routes over the gateway's catalog, so it must know a
    # model registered or unregistered: its router is made in a copy of the arm's live one
    # (its weights not read again), and the packages of policies: are checked against the
    # new catalog as read at the last start or reload. Both were read anew at each change.
    settings = settings_for(fake, tmp_path, CONFIG + (
        f"policies: {{knn: '{default_weights_path('knn')}'}}\n"
        "experiments:\n  compare:\n    arms:\n      control: {}\n"
        "      neighbours: {policy: knn}\n"))
    loads, counted = counting_loader()

    read: list[object] = []

    def read_counted(*args: Any, **kwargs: Any) -> WeightsPackage:
        read.append(args)
        return load_weights(*args, **kwargs)

    monkeypatch.setattr(live_module, "load_weights", read_counted)
    with Gateway(settings, loader=counted, env=KEYS) as gateway:
        gateway.start()

        def arm() -> Router:
            learning = gateway.state.live().learning
            assert learning is not None
            return learning.arm_routers["knn"]

        before, started, reads = arm(), len(loads), len(read)
        gateway.register_model(card(fake))
        assert (len(loads), len(read)) == (started, reads), (loads, read)
        assert arm() is not before and arm().weights_id == before.weights_id
        assert arm().catalog.names == ["strong", "runner", "cheap", "free"]
        assert before.catalog.names == ["strong", "runner", "cheap"]
        gateway.unregister_model("free")
        assert (len(loads), len(read)) == (started, reads), (loads, read)
        assert arm().catalog.names == ["strong", "runner", "cheap"]
        gateway.reload()  # (a reload reads them all again)
        assert len(loads) > started and len(read) > reads


def test_reports_price_a_registered_model_from_the_live_catalog_without_building_another(
        gateway: Gateway, fake: FakeProviderProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reports know a model registered at run time (priced, a comparison to save
    against), and read the live router's catalog: no report builds the catalog again from
    the settings (which checks every card each time)."""
    gateway.register_model(card(fake, input_per_mtok=2, output_per_mtok=4))
    gateway.complete([{"role": "user", "content": "hello"}], model="free")
    built: list[Settings] = []
    build = Settings.catalog
    monkeypatch.setattr(Settings, "catalog",
                        lambda self: built.append(self) or build(self))  # type: ignore[func-returns-value]
    savings = gateway.savings_estimate(comparison_model="free")
    assert savings["comparison_model"] == "free"
    report = gateway.cost_report("day")
    assert report["by_model"]["free"]["requests"] == 1, report["by_model"]
    gateway.forecast_cost(10, 100, 100)
    assert built == []


@pytest.mark.parametrize(("field", "value", "words"), BAD, ids=IDS)
def test_a_registration_is_refused_as_a_catalog_built_any_other_way(
        gateway: Gateway, fake: FakeProviderProcess, field: str, value: Any,
        words: str) -> None:
    """Each value the config and a catalog built in Python refuse (see test_catalog_rules) is
    refused at registration for the same reason, naming the field; nothing changes."""
    gateway.register_model(card(fake, "b"))
    before, rows = catalog(gateway), stored(gateway.settings)
    given = {**card(fake, "a"), field: value}
    with pytest.raises(InvalidInputError) as in_python:
        Catalog([card_of(given)])
    with pytest.raises(InvalidInputError) as caught:
        gateway.register_model(given)
    assert caught.value.field == field
    assert caught.value.reason == in_python.value.reason
    assert words in caught.value.reason
    assert catalog(gateway) == before and stored(gateway.settings) == rows


@pytest.mark.parametrize(("given", "kind", "field"), [
    ({"name": "strong"}, ConflictError, "name"),  # the config's
    ({"name": "free"}, ConflictError, "name"),  # registered already
    ({"name": "auto"}, InvalidInputError, "name"),
    ({"name": "x", "tier": "huge"}, InvalidInputError, "tier"),
    ({"name": "x", "input_per_mtok": -1}, InvalidInputError, "input_per_mtok"),
    ({"name": "x", "colour": "red"}, InvalidInputError, "colour"),
    ({"name": "x", "fallbacks": ["nowhere"]}, InvalidInputError, "fallbacks[0]"),
    ({"name": "x", "fallbacks": ["cheap"] * 1000}, InvalidInputError, "fallbacks"),
    ({"name": "x", "base_url": "http:///v1"}, InvalidInputError, "base_url"),
    ({"name": "x", "upstream_model": "u" * 257}, InvalidInputError, "upstream_model"),
    ({"name": "x", "upstream_model": ""}, InvalidInputError, "upstream_model"),
    ({"name": "x", "capabilities": ["vision", "vision"]}, InvalidInputError, "capabilities"),
    ({"name": "x", "input_per_mtok": "1"}, InvalidInputError, "input_per_mtok"),
    ({"name": "x", "output_per_mtok": float("nan")}, InvalidInputError, "output_per_mtok"),
    ({"name": "x", "context_window": "8192"}, InvalidInputError, "context_window"),
    ({"name": "x", "provider": "openai-compatible"}, InvalidInputError, "base_url"),
    ({"name": "x", "api_key_env": "sk-abcdef0123456789abcdef"}, InvalidInputError,
     "api_key_env"),
    ({"name": "x", "base_url": "https://me:hunter2secret@llm.example/v1"},
     InvalidInputError, "base_url"),
    ({"name": "x", "base_url": "https://llm.example/v1?api_key=hunter2secret"},
     InvalidInputError, "base_url"),
    # A key-shaped token in the path (or fragment), which every view masks as a secret.
    ({"name": "x", "base_url": "https://llm.example/sk-proj-hunter2secret0123456789abc/v1"},
     InvalidInputError, "base_url"),
    ({"name": "x", "base_url": "https://llm.example/v1#sk-hunter2secret0123456789abcdef"},
     InvalidInputError, "base_url"),
    ({"tier": "simple"}, InvalidInputError, "name"),
    (["free"], InvalidInputError, "card"),
    # Bytes, which were decoded as text, are refused by type, their value not shown; a set
    # of fallbacks, whose order (the order they are tried) changes from run to run, too.
    ({"name": b"x"}, InvalidInputError, "name"),
    ({"name": "x", "api_key_env": b"sk-abcdef0123hunter2secret"}, InvalidInputError,
     "api_key_env"),
    ({"name": "x", "fallbacks": [bytearray(b"cheap")]}, InvalidInputError, "fallbacks"),
    ({"name": "x", "fallbacks": {"cheap", "strong"}}, InvalidInputError, "fallbacks"),
    # A base_url no request can be sent to (each request to it failed with a 500), or that
    # shows as another URL, or far too long.
    ({"name": "x", "base_url": "https://llm.example/v1\x00"}, InvalidInputError, "base_url"),
    ({"name": "x", "base_url": "https://llm.example/v1\r\nX-Evil: 1"}, InvalidInputError,
     "base_url"),
    ({"name": "x", "base_url": "https://llm.example/\u202e1v"}, InvalidInputError, "base_url"),
    ({"name": "x", "base_url": "https://llm.example/" + "v" * 5000}, InvalidInputError,
     "base_url"),
])
def test_a_refused_registration_names_the_field_and_changes_nothing(
        gateway: Gateway, fake: FakeProviderProcess, given: Any, kind: type[Exception],
        field: str) -> None:
    gateway.register_model(card(fake))
    before, rows, snapshot = catalog(gateway), stored(gateway.settings), gateway.state.peek()
    with pytest.raises(kind) as caught:
        gateway.register_model(given)
    error = caught.value
    assert getattr(error, "field", getattr(error, "param", None)) == field, error
    assert "hunter2secret" not in str(error)
    if field == "base_url" and "hunter2secret" in str(given):
        assert "api_key_env" in str(error)  # (where the key belongs)
    assert catalog(gateway) == before and stored(gateway.settings) == rows
    assert gateway.state.peek() is snapshot  # (no rebuild went live)


def test_a_gateway_s_refusals_of_a_card_speak_of_its_config_data_dir_and_request(
        gateway: Gateway, fake: FakeProviderProcess) -> None:
    """The rules a library router's registration keeps too, in the gateway's words (the
    library's: test_router_register_model)."""
    cases: list[tuple[Any, str]] = [
        ({**card(fake, "x"), "colour": "red"}, 'colour: is not a field of this request'),
        ({**card(fake, "x"), "fallbacks": ["nowhere"]},
         '"nowhere" is not a model in the catalog; define it under models: or remove it'),
        ({**card(fake, "x"), "base_url": "https://me:pw@llm.example/v1"},
         "a registered model is kept in data_dir as it is given, so its secret would be too"),
        (["x"], "card: must be a mapping of a model's keys, as the config's models: entries "
                "write them"),
    ]
    for given, words in cases:
        with pytest.raises(InvalidInputError) as caught:
            gateway.register_model(given)
        assert words in str(caught.value), str(caught.value)


def test_a_card_without_prices_beside_a_priced_catalog_is_refused_naming_it_and_its_prices(
        gateway: Gateway, fake: FakeProviderProcess) -> None:
    """Its missing prices would leave the priced model without a profile ("free") uncosted,
    but the refusal is the card's: it names the card and the prices to give it."""
    gateway.register_model(card(fake))
    before, rows = catalog(gateway), stored(gateway.settings)
    unpriced = {k: v for k, v in card(fake, "fresh").items() if not k.endswith("_per_mtok")}
    with pytest.raises(InvalidInputError) as caught:
        gateway.register_model(unpriced)
    assert caught.value.field == "input_per_mtok", caught.value
    assert str(caught.value).startswith('input_per_mtok: model "fresh" has no prices'), \
        caught.value
    assert "give it input_per_mtok and output_per_mtok" in str(caught.value)
    assert catalog(gateway) == before and stored(gateway.settings) == rows
    # (a Decimal price is the number it holds, as the library door reads every number)
    answer = gateway.register_model({**unpriced, "input_per_mtok": Decimal("0.25"),
                                     "output_per_mtok": Decimal(1)})
    assert answer["id"] == "fresh" and gateway.router.catalog["fresh"].input_per_mtok == 0.25


def test_registrations_are_bounded_and_the_one_past_the_bound_changes_nothing(
        gateway: Gateway, fake: FakeProviderProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registration, "MAX_REGISTERED_MODELS", 2)
    gateway.register_model(card(fake, "one"))
    gateway.register_model(card(fake, "two"))
    with pytest.raises(ConflictError, match="2 models are registered at run time already, "
                                            r"the most there may be \(2\); unregister one"):
        gateway.register_model(card(fake, "three"))
    assert catalog(gateway) == ["strong", "runner", "cheap", "one", "two"]
    assert [n for n, _ in stored(gateway.settings)] == ["one", "two"]


def test_a_registered_model_is_kept_across_a_restart_and_a_reload_and_a_config_of_its_name_wins(
        settings: Settings, fake: FakeProviderProcess, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with started_gateway(settings) as gateway:
        gateway.register_model(card(fake))
        gateway.register_model(card(fake, "spare", input_per_mtok=2, output_per_mtok=2))
    with started_gateway(settings) as gateway:  # a restart on the same data_dir
        assert catalog(gateway) == ["strong", "runner", "cheap", "free", "spare"]
        assert gateway.route(poem_prompt(0)).selected_model == "free"
        answer = gateway.reload()
        assert answer["models"][-2:] == ["free", "spare"] and "free" in answer["unprofiled_models"]
        assert catalog(gateway) == ["strong", "runner", "cheap", "free", "spare"]
        # The config comes to list "spare" (dearer): the config's is served, the registered
        # one dropped, from the store too, with one warning.
        config = settings.source_path
        assert config is not None
        config.write_text(config_text(fake, tmp_path / "data", CONFIG, more_models=(
            '  - {name: spare, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 20, '
            "output_per_mtok: 20}\n")), encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
            gateway.reload()
        assert catalog(gateway) == ["strong", "runner", "cheap", "spare", "free"]
        assert gateway.router.catalog["spare"].input_per_mtok == 20
        warned = [r.getMessage() for r in caplog.records if "registered one is dropped" in
                  r.getMessage()]
        assert len(warned) == 1 and '"spare"' in warned[0], warned
        with pytest.raises(ConflictError, match="is in the config, not registered"):
            gateway.unregister_model("spare")
    assert [n for n, _ in stored(settings)] == ["free"]  # (its row went as it closed)
    with started_gateway(settings.reloaded()) as gateway:  # (the config as it is now)
        assert catalog(gateway) == ["strong", "runner", "cheap", "spare", "free"]


def test_unregistering_takes_the_model_out_unless_something_still_names_it(
        gateway: Gateway, fake: FakeProviderProcess) -> None:
    gateway.register_model(card(fake))
    gateway.register_model(card(fake, "backup", fallbacks=["free"]))
    with pytest.raises(ConflictError, match="is in the config, not registered at run time"):
        gateway.unregister_model("strong")
    with pytest.raises(NotFoundError, match='no model "nope" was registered at run time; check '
                                            'the name: those registered are "free", '
                                            '"backup"'):
        gateway.unregister_model("nope")
    gateway.create_ab_test("free-only", {"models": ["free"]}, "cost_optimized")
    key = gateway.governor.keys.create(KeySpec(tenant="acme", models=["free", "cheap"]).checked(
        ["acme"], None)).record.id
    snapshot, rows = gateway.state.peek(), stored(gateway.settings)
    with pytest.raises(ConflictError, match=f"key {key}: it can no longer use \"free\""):
        gateway.unregister_model("free")  # a live key names it
    gateway.governor.keys.revoke(key)
    with pytest.raises(ConflictError, match=r"still named by models.backup.fallbacks\[0\]"):
        gateway.unregister_model("free")  # backup falls back to it
    assert gateway.state.peek() is snapshot and stored(gateway.settings) == rows
    deleted = gateway.unregister_model("backup")
    assert {k: deleted[k] for k in ("id", "object", "deleted")} == {
        "id": "backup", "object": "model", "deleted": True}
    assert deleted["unprofiled_models"] == ["free"]
    with pytest.raises(ConflictError, match=r"experiments.free-only.arms.a.models\[0\]"):
        gateway.unregister_model("free")  # a run-time experiment's arm names it
    gateway.end_ab_test("free-only")
    assert gateway.unregister_model("free")["unprofiled_models"] == []
    assert catalog(gateway) == ["strong", "runner", "cheap"] and stored(gateway.settings) == []
    with pytest.raises(ModelNotFoundError):
        gateway.complete([{"role": "user", "content": "hello"}], model="free")
    gateway.register_model(card(fake))  # (its name is free again)
    assert catalog(gateway)[-1] == "free"


def test_over_http_models_are_registered_and_unregistered_with_the_admin_token_alone(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server:
        document = get(server, "/openapi.json").json()
        # Each publishes the 503 it answers: the store refusing the write (or keys.db, read
        # before a removal, and never written), the writer's queue full, the service closing,
        # the router loading.
        for method, path, files in (
                ("post", PATH, "switchpoint.db (the request"),
                ("delete", f"{PATH}/{{name}}", "keys.db in data_dir could not be read, or "
                                               "switchpoint.db (the request and feedback log) "
                                               "could not be read or written")):
            about = document["paths"][path][method]["responses"]["503"]["description"]
            assert about.startswith(f"storage_unavailable: {files}"), about
            assert "read or written: it is damaged (x-should-retry: false" in about, about
            assert "disk is full" in about and "already wait for switchpoint.db's writer" \
                in about, about
            assert "service_closing: the service is shutting down" in about, about
            assert "router_not_ready: the router is still loading its weights" in about, about
        published = Published(document)
        assert published.schema_name("POST", PATH, 201) == "ModelRegistered"
        assert published.schema_name("DELETE", f"{PATH}/{{name}}") == "ModelDeleted"
        for key in (None, "wrong-token-0123456789abcdef"):
            r = post(server, PATH, card(fake), key)
            assert r.status_code == 401, r.text
            r = _delete(server, "free", key)
            assert r.status_code == 401, r.text
        assert _models(server) == ["auto", "strong", "runner", "cheap"]
        made = post(server, PATH, card(fake, "team/free"), ADMIN)
        body = published.valid("POST", PATH, made, status=201)
        assert made.headers["location"] == "/v1/models/team/free"
        assert body["id"] == "team/free" and body["unprofiled_models"] == ["team/free"]
        assert _models(server)[-1] == "team/free"
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything",
                               max_retries=0, timeout=15)
        answer = client.chat.completions.create(
            model="team/free", messages=[{"role": "user", "content": "hello"}])
        assert answer.model == "team/free"
        bad = post(server, PATH, card(fake, "x", tier="huge"), ADMIN)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "tier", bad.text
        taken = post(server, PATH, card(fake, "strong"), ADMIN)
        assert taken.status_code == 409 and taken.json()["error"]["param"] == "name", taken.text
        secret = post(server, PATH, card(fake, "y", base_url="https://u:hunter2secret@h/v1"),
                      ADMIN)
        assert secret.status_code == 400 and "hunter2secret" not in secret.text, secret.text
        unpriced = {k: v for k, v in card(fake, "z").items() if not k.endswith("_per_mtok")}
        bad = post(server, PATH, unpriced, ADMIN)  # (the card's fault, not team/free's)
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["code"] == "invalid_request", bad.text
        assert bad.json()["error"]["param"] == "input_per_mtok", bad.text
        said = bad.json()["error"]["message"]
        assert 'model "z" has no prices' in said and "team/free" not in said, said
        assert _models(server)[-1] == "team/free"
        missing = _delete(server, "nope", ADMIN)
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"
        config = _delete(server, "strong", ADMIN)
        assert config.status_code == 409, config.text
        gone = _delete(server, "team/free", ADMIN)
        deleted = published.valid("DELETE", f"{PATH}/{{name}}", gone)
        assert (deleted["id"], deleted["deleted"]) == ("team/free", True)
        assert _models(server) == ["auto", "strong", "runner", "cheap"]
        published.each_field_needed(["ModelRegistered", "ModelDeleted"], optional=[
            "ModelRegistered.note", "ModelDeleted.note", "ModelDeleted.unprofiled_models",
            "ModelDeleted.unprofiled_models_count"])


def test_a_models_created_stays_put_across_a_reload_and_a_registration(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``GET /v1/models`` gives each model the ``created`` it gave before a reload or a
    registration (a client caching the list sees no model as new); a registered model's is
    when it was registered."""
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server:
        client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything",
                               max_retries=0, timeout=15)

        def listed() -> dict[str, int]:
            return {m.id: m.created for m in client.models.list()}

        first = listed()
        assert list(first) == ["auto", "strong", "runner", "cheap"]
        while int(time.time()) <= max(first.values()):  # (a snapshot made now is later)
            time.sleep(0.05)
        reloaded = post(server, "/v1/router/reload", {}, ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        assert listed() == first
        made = post(server, PATH, card(fake, "team/free"), ADMIN)
        assert made.status_code == 201, made.text
        registered = int(made.json()["registered_at"])
        assert made.json()["created"] == registered
        assert listed() == {**first, "team/free": registered}
        assert client.models.retrieve("team/free").created == registered
        assert client.models.retrieve("strong").created == first["strong"]
        while int(time.time()) <= registered:
            time.sleep(0.05)
        assert post(server, "/v1/router/reload", {}, ADMIN).status_code == 200
        assert listed() == {**first, "team/free": registered}


def test_a_registration_named_as_the_profile_another_model_uses_must_say_it_shares_it(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # The config's "big" routes on the weights' profile "strong"; a model registered as
    # "strong" without profile: took that learned quality at its own price (0 here).
    config = tmp_path / "switchpoint.yaml"
    text = config_text(fake, tmp_path / "data", CONFIG + "admin_token_env: SP_ADMIN\n")
    config.write_text(text.replace("{name: strong,", "{name: big, profile: strong,"),
                      encoding="utf-8")
    settings = load_settings(config, environ={"SP_ADMIN": ADMIN})
    app = create_app(settings, loader=loader, provider_env=KEYS)
    with thread_server(app) as server:
        refused = post(server, PATH, card(fake, "strong"), ADMIN)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["param"] == "name"
        assert error["message"] == (
            'name: model "strong" has no profile:, so it routes on the weights\' learned '
            'profile of its name, "strong", which model "big" uses (its profile:): it takes '
            "that model's learned quality, whatever it is and costs; to share that profile on "
            'purpose, give profile: "strong" in the card, else give the profile it should '
            "route on, or another name")
        assert _models(server) == ["auto", "big", "runner", "cheap"]
        assert stored(settings) == []
        # Said in the card, it is taken: the model shares that profile on purpose.
        made = post(server, PATH, card(fake, "strong", profile="strong"), ADMIN)
        assert made.status_code == 201, made.text
        assert made.json()["unprofiled_models"] == []
        # Another name, or a profile of its own, is taken as ever.
        assert post(server, PATH, card(fake, "other"), ADMIN).status_code == 201
        assert post(server, PATH, card(fake, "cheap-twin", profile="cheap"),
                    ADMIN).status_code == 201
        assert _models(server)[-3:] == ["strong", "other", "cheap-twin"]


def _delete(server: ThreadServer, name: str, key: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.delete(f"{server.base}{PATH}/{name}", headers=headers, timeout=30)


def _models(server: ThreadServer) -> list[str]:
    return [m["id"] for m in get(server, "/v1/models").json()["data"]]


def test_without_models_in_the_config_there_is_no_catalog_to_register_in(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data")}, environ={})
    with started_gateway(settings) as gateway:
        with pytest.raises(ConflictError, match="the config lists no models:") as caught:
            gateway.register_model(card(fake))
        assert caught.value.param == "card"
        assert gateway.settings.models is None and stored(settings) == []


def test_a_config_without_models_warns_that_registered_ones_are_not_served_once_it_is_live(
        fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "switchpoint.yaml"
    with learning_server(fake, tmp_path, CONFIG + "admin_token_env: SP_ADMIN\n",
                         environ={"SP_ADMIN": ADMIN}) as server:
        assert post(server, PATH, card(fake), ADMIN).status_code == 201
        listed = config.read_text()
        bare = listed[listed.index("cost_weight:"):]

        def reload(text: str) -> tuple[httpx.Response, list[str]]:
            config.write_text(text)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
                answer = post(server, "/v1/router/reload", None, ADMIN)
            return answer, [r.getMessage() for r in caplog.records
                            if "the config lists no models" in r.getMessage()]

        # Refused after the settings were read (the admin token it names is not exported):
        # nothing changed, and "free" is served still, so nothing is said of it.
        refused, said = reload(bare.replace("SP_ADMIN", "SP_NOT_EXPORTED"))
        assert refused.status_code == 400 and "admin_token_env" in refused.text, refused.text
        assert said == [] and _models(server)[-1] == "free"
        accepted, said = reload(bare)
        assert accepted.status_code == 200, accepted.text
        assert len(said) == 1 and '("free") are not served' in said[0], said
        assert "free" not in _models(server)
        assert reload(bare)[1] == []  # (said once)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"), \
            started_gateway(load_settings(config, environ={"SP_ADMIN": ADMIN})):
        pass  # (a start on it says so too)
    assert [r.getMessage() for r in caplog.records
            if '("free") are not served' in r.getMessage()] != []


@pytest.mark.parametrize(("url", "words"), [
    ("http://127.0.0.1:9/v1\x00", "holds U+0000 (character 22), which does not show as "
                                   "itself: a control character (NUL, a line break) no "
                                   "request line can carry"),
    ("http://127.0.0.1:9/v1\r\nX-Evil: 1", "holds U+000D (character 22)"),
    ("http://127.0.0.1:9/\u202e1v", "holds U+202E (character 20)"),
    ("http://127.0.0.1:9/" + "v" * 3000, "is 3,019 characters, over the 2,048 a base_url may "
                                         "have"),
], ids=["nul", "crlf", "rtl", "long"])
def test_a_base_url_that_cannot_be_sent_is_refused_by_the_config_as_by_a_registration(
        url: str, words: str) -> None:
    # The config's rule, which a registration checks too: such a base_url was taken, and
    # every request to its model failed with a 500 and a traceback in the log.
    from switchpoint.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_settings(overrides={"models": [{"name": "m", "base_url": url}]}, environ={})
    assert str(refused.value).startswith(f"models[0].base_url: {words}"), refused.value
    with pytest.raises(InvalidInputError) as invalid:
        Catalog([ModelCard(name="m", base_url=url)])
    assert invalid.value.field == "models.m.base_url" and words in str(invalid.value)


def _reload_listing_free_after_the_checks(gateway: Gateway, fake: FakeProviderProcess,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The config comes to list a model ``free`` (priced 3), and the next registration or
    unregistration has a reload make it live after its checks, before its change lands (on the
    same thread, as another request's could on its own)."""
    config = gateway.settings.source_path
    assert config is not None
    config.write_text(config_text(fake, tmp_path / "data", CONFIG, more_models=(
        '  - {name: free, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 3, '
        "output_per_mtok: 3}\n")), encoding="utf-8")
    checked = gateway.learning.check_writable

    def reloaded_meanwhile(*args: Any) -> None:
        monkeypatch.setattr(gateway.learning, "check_writable", checked)
        gateway.reload()
        checked(*args)

    monkeypatch.setattr(gateway.learning, "check_writable", reloaded_meanwhile)


def test_a_registration_a_reload_overtakes_is_judged_against_the_config_that_went_live(
        gateway: Gateway, fake: FakeProviderProcess, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A reload lands after a registration's checks and before its snapshot is built (here
    # made to, on the same thread, as another request's could on its own): the config it
    # made live lists the name. The registration is refused as if it had come after the
    # reload, changing nothing; it was answered 201 with the config's model, its row written
    # and then dropped again with a warning.
    _reload_listing_free_after_the_checks(gateway, fake, tmp_path, monkeypatch)
    with pytest.raises(ConflictError, match='model "free" is in the config') as caught:
        gateway.register_model(card(fake))
    assert caught.value.param == "name"
    assert catalog(gateway) == ["strong", "runner", "cheap", "free"]
    assert gateway.router.catalog["free"].input_per_mtok == 3
    assert gateway.models_registered.registered == () and stored(gateway.settings) == []


def test_an_unregistration_a_reload_overtakes_is_judged_against_the_config_that_went_live(
        gateway: Gateway, fake: FakeProviderProcess, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # As above, for taking a registered model out: the reload made the config's model of its
    # name live, dropping the registered one. The removal is refused naming the config's, as
    # after the reload; it answered "deleted" for a model still served.
    gateway.register_model(card(fake))
    _reload_listing_free_after_the_checks(gateway, fake, tmp_path, monkeypatch)
    with pytest.raises(ConflictError, match='model "free" is in the config, not registered'):
        gateway.unregister_model("free")
    assert catalog(gateway) == ["strong", "runner", "cheap", "free"]
    assert gateway.router.catalog["free"].input_per_mtok == 3


def test_the_way_out_a_refusal_names_is_written_as_it_is_sent(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # A name holding a space, "?", "#" or "%": the path the 409 names unregisters it as it is
    # written (it was the name as it is, a path naming another model, or its query), and the
    # command it names quotes it for a shell.
    name = "team/a b?#50%"
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server:
        assert post(server, PATH, card(fake, name), ADMIN).status_code == 201
        again = post(server, PATH, card(fake, name), ADMIN)
        assert again.status_code == 409, again.text
        message = again.json()["error"]["message"]
        path = "/v1/router/models/team/a%20b%3F%2350%25"
        assert f"DELETE {path} while the service runs" in message, message
        assert "`switchpoint models unregister 'team/a b?#50%'`" in message, message
        gone = httpx.delete(f"{server.base}{path}", timeout=30,
                            headers={"authorization": f"Bearer {ADMIN}"})
        assert gone.status_code == 200 and gone.json()["id"] == name, gone.text
        assert name not in _models(server)


@pytest.mark.parametrize(("where", "var", "says"), [
    # the config's key, sent to another host (or port) than the config sends it to
    ("http://127.0.0.1:9/v1", "FAKE_KEY", 'the config sends FAKE_KEY only to "http://127.0.0.1:'),
    ("http://attacker.example/v1", "FAKE_KEY", "the config sends FAKE_KEY only to"),
    # a variable of the service's environment no config model reads (another secret, the
    # admin token's own), even to the config's host
    (None, "SP_TEST_ADMIN", "no model of the config reads SP_TEST_ADMIN"),
    ("http://attacker.example/v1", "AWS_SECRET_ACCESS_KEY",
     "no model of the config reads AWS_SECRET_ACCESS_KEY"),
], ids=["other-port", "other-host", "admin-variable", "cloud-secret"])
def test_a_registration_sends_a_key_only_where_the_config_sends_it(
        gateway: Gateway, fake: FakeProviderProcess, where: str | None, var: str,
        says: str) -> None:
    # Whoever may register a model could otherwise have any variable of the service's
    # environment sent, as a Bearer key, to a host of their choosing with one chat request.
    before, rows = catalog(gateway), stored(gateway.settings)
    with pytest.raises(InvalidInputError) as caught:
        gateway.register_model(card(fake, name="exfil", api_key_env=var,
                                    base_url=where or fake.openai_base_url))
    assert caught.value.field == "api_key_env", caught.value
    assert says in str(caught.value) and "list the model in the config" in str(caught.value)
    assert catalog(gateway) == before and stored(gateway.settings) == rows
    assert fake.requests() == []


def test_a_registration_may_send_the_config_s_key_to_the_config_s_host_on_another_path(
        gateway: Gateway, fake: FakeProviderProcess) -> None:
    # The same scheme, host and port as a config model reading the same variable: the key
    # goes nowhere it did not already go.
    base = fake.openai_base_url.rstrip("/")
    answer = gateway.register_model(card(fake, name="elsewhere", base_url=base + "/"))
    assert answer["id"] == "elsewhere" and "elsewhere" in catalog(gateway)
    # The host however spelt is the one the config names (a name is not looked up: localhost
    # is another host than 127.0.0.1, as it is to the connection pool).
    for name, host in (("dotted", "127.0.0.1."), ("hex", "0x7f.1"), ("mapped", "[::ffff:7f00:1]")):
        spelt = base.replace("127.0.0.1", host)
        assert gateway.register_model(card(fake, name=name, base_url=spelt))["id"] == name
    with pytest.raises(InvalidInputError, match="the config sends FAKE_KEY only to"):
        gateway.register_model(card(fake, name="named", base_url=base.replace("127.0.0.1",
                                                                             "localhost")))


@pytest.mark.parametrize(("url", "shown"), [
    ("http://169.254.169.254/latest/meta-data", "a cloud metadata service's address "
                                                "(169.254.169.254)"),
    ("http://[fd00:ec2::254]/v1", "a cloud metadata service's address (fd00:ec2::254)"),
    ("http://Metadata.Google.Internal./computeMetadata/v1", "a cloud metadata service's host "
                                                            "name (metadata.google.internal)"),
    ("https://metadata.azure.com/v1", "host name (metadata.azure.com)"),
    ("http://2852039166/v1", "address (169.254.169.254)"),  # (as a resolver reads it)
    ("http://[::ffff:169.254.169.254]/v1", "address (169.254.169.254)"),
    ("http://169.254.10.20:8000/v1", "a link-local address (169.254.10.20)"),
    ("http://[fe80::1]:8000/v1", "a link-local address (fe80::1)"),
])
def test_a_registration_may_not_send_requests_to_a_cloud_metadata_service(
        gateway: Gateway, fake: FakeProviderProcess, url: str, shown: str) -> None:
    # Whoever holds the admin token could otherwise have the service's requests sent to the
    # machine's metadata service, and read what it answers in the errors quoted back.
    before, rows = catalog(gateway), stored(gateway.settings)
    with pytest.raises(InvalidInputError) as caught:
        gateway.register_model(card(fake, "meta", base_url=url, api_key_env=None))
    said = str(caught.value)
    assert caught.value.field == "base_url" and shown in said, said
    assert "list it in the config" in said
    assert catalog(gateway) == before and stored(gateway.settings) == rows
    # The config may name it: its author owns the machine.
    entry = {"name": "m", "base_url": url, "input_per_mtok": 0, "output_per_mtok": 0}
    assert load_settings(overrides={"models": [entry]}, environ={}).models is not None


def _resolving(monkeypatch: pytest.MonkeyPatch,
               answers: Mapping[str, list[tuple[Any, ...]]]) -> list[str]:
    """Make the system's resolver (the one every look-up asks) answer each host of
    ``answers`` with its addresses as they stand at the look-up (an IPv6 one holds a colon),
    and any other host as it would; the hosts it is asked for, in order."""
    looked_up: list[str] = []
    system = socket.getaddrinfo

    def resolver(host: str, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        if host not in answers:
            return system(host, *args, **kwargs)
        return [(socket.AF_INET6 if ":" in where[0] else socket.AF_INET, socket.SOCK_STREAM, 6,
                 "", where) for where in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return looked_up


def test_a_registration_naming_a_host_name_that_resolves_to_a_metadata_service_is_refused(
        gateway: Gateway, fake: FakeProviderProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # A name of the admin token holder's own (169.254.169.254.nip.io resolves so on the
    # internet) is looked up once, within a bound, as it is registered; a private network's
    # address is no metadata service's (teams run model servers on 10.x). Only the resolver's
    # answers are made up here: the machine has no internet.
    looked_up = _resolving(monkeypatch, {"meta.example.test": [("169.254.169.254", 0)],
                                         "link.example.test": [("fe80::5", 0)],
                                         "vllm.example.test": [("10.1.2.3", 0)]})
    before, rows = catalog(gateway), stored(gateway.settings)
    for host, shown in [("meta.example.test", "a cloud metadata service's address "
                                              "(169.254.169.254)"),
                        ("link.example.test", "a link-local address (fe80::5)")]:
        with pytest.raises(InvalidInputError) as caught:
            gateway.register_model(card(fake, "meta", base_url=f"http://{host}:8000/v1",
                                        api_key_env=None))
        said = str(caught.value)
        assert caught.value.field == "base_url", said
        assert f"a host name ({host}) that resolves to {shown}" in said, said
        assert "set gateway.allow_registered_metadata_hosts: true" in said, said
    assert catalog(gateway) == before and stored(gateway.settings) == rows
    answer = gateway.register_model(card(fake, "vllm", base_url="http://vllm.example.test/v1",
                                         api_key_env=None))
    assert answer["id"] == "vllm" and catalog(gateway)[-1] == "vllm"
    assert looked_up == ["meta.example.test", "link.example.test", "vllm.example.test"]


def test_an_address_under_the_network_s_own_nat64_prefix_is_judged_at_registration_and_connect(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A prefix the config lists (gateway.nat64_prefixes) reaches the IPv4 address each
    # address under it carries, through the site's translator. A reload listing it stops
    # serving a model registered there before (data_dir keeps it); then a card naming such
    # an address is refused, and a name pointed at one since it was registered is connected
    # to nowhere.
    prefix, address = "2001:db8:122::/48", "2001:db8:122:a9fe:a9:fe00::"
    settings_for(fake, tmp_path, CONFIG)
    config = tmp_path / "switchpoint.yaml"
    answers: dict[str, list[tuple[Any, ...]]] = {"nat64.test": [("127.0.0.1", fake.port)]}
    _resolving(monkeypatch, answers)
    under = card(fake, "under", base_url=f"http://[{address}]:8000/v1", api_key_env=None)
    with started_gateway(load_settings(config, environ={})) as gateway:
        gateway.register_model(under)  # (unlisted, an address like any other)
        gateway.register_model(card(fake, "moved", base_url=f"http://nat64.test:{fake.port}/v1",
                                    api_key_env=None))
        config.write_text(config.read_text().replace(
            "gateway:\n", f"gateway:\n  nat64_prefixes: ['{prefix}']\n"))
        gateway.reload()
        assert catalog(gateway) == ["strong", "runner", "cheap", "moved"]
        assert [name for name, _ in stored(gateway.settings)] == ["under", "moved"]
        gateway.unregister_model("under")
        with pytest.raises(InvalidInputError) as caught:
            gateway.register_model(under)
        assert caught.value.field == "base_url", str(caught.value)
        assert f"(169.254.169.254, carried by {address})" in str(caught.value)
        answers["nat64.test"] = [(address, fake.port, 0, 0)]
        with pytest.raises(FailoverError) as refused:
            gateway.complete([{"role": "user", "content": "hello"}], model="moved")
        said = str(refused.value.last_error)
        assert "not sent: host now resolves to a metadata/link-local address" in said, said
        assert f"(169.254.169.254, carried by {address})" in said, said


def _refused_after_a_reload_closed_its_pooled_connection(
        gateway: Gateway, fake: FakeProviderProcess, change_config: Callable[[], object]) -> str:
    """Call the registered model ``named`` once (its connection pooled), change the config
    and reload: the pooled connection is closed, unused, and the next call is refused; what
    its last try's error says."""
    hello = [{"role": "user", "content": "hello"}]
    fake.reset()
    others = fake.connections()["open"]  # (other tests' idle ones, which only close)
    gateway.complete(hello, model="named")
    assert fake.connections()["open"] == others + 1  # (pooled)
    change_config()
    gateway.reload()
    deadline = time.monotonic() + 5
    while fake.connections()["open"] > others and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.connections()["open"] <= others  # (closed by the reload, unused)
    with pytest.raises(FailoverError) as refused:
        gateway.complete(hello, model="named")
    return str(refused.value.last_error)


def test_a_pooled_connection_a_reload_s_address_rules_refuse_is_not_reused(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered model's name resolves to a good address and to one that carries a
    link-local address under a NAT64 prefix the config does not list yet: its connection (to
    the good one) passes and is pooled. A reload listing the prefix has that connection closed
    before any request could use it again: the next call is refused, as a new connection would
    be (the name resolves to a refused address), and nothing more reaches the upstream."""
    prefix, address = "2001:db8:122::/48", "2001:db8:122:a9fe:a9:fe00::"
    settings_for(fake, tmp_path, CONFIG)
    config = tmp_path / "switchpoint.yaml"
    _resolving(monkeypatch, {"nat64.test": [("127.0.0.1", fake.port),
                                            (address, fake.port, 0, 0)]})
    with started_gateway(load_settings(config, environ={})) as gateway:
        gateway.register_model(card(fake, "named", base_url=f"http://nat64.test:{fake.port}/v1",
                                    api_key_env=None))
        said = _refused_after_a_reload_closed_its_pooled_connection(
            gateway, fake, lambda: config.write_text(config.read_text().replace(
                "gateway:\n", f"gateway:\n  nat64_prefixes: ['{prefix}']\n")))
        assert f"(169.254.169.254, carried by {address})" in said, said
        assert len(fake.requests()) == 1  # (the pooled connection carried the second)


def test_a_reload_turning_metadata_hosts_off_leaves_no_pooled_connection_of_a_registered_model(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered model's name resolves to a good address and to a metadata service's:
    allowed, its connection is made by name, unchecked, and pooled. A reload turning
    gateway.allow_registered_metadata_hosts off closes it, and the model's next call is
    refused, as a new checked connection is: nothing more reaches the upstream."""
    settings_for(fake, tmp_path, CONFIG)
    config = tmp_path / "switchpoint.yaml"
    plain = config.read_text()
    config.write_text(plain.replace("gateway:\n",
                                    "gateway:\n  allow_registered_metadata_hosts: true\n"))
    _resolving(monkeypatch, {"rebind.test": [("127.0.0.1", fake.port),
                                             ("169.254.169.254", fake.port)]})
    with started_gateway(load_settings(config, environ={})) as gateway:
        gateway.register_model(card(fake, "named", base_url=f"http://rebind.test:{fake.port}/v1",
                                    api_key_env=None))
        said = _refused_after_a_reload_closed_its_pooled_connection(
            gateway, fake, lambda: config.write_text(plain))
        assert "(169.254.169.254); gateway.allow_registered_metadata_hosts is false" in said, said
        assert len(fake.requests()) == 1


class MetadataStandIn:
    """A listener on loopback standing in for a cloud metadata service (the real one is out of
    a test's reach): it notes each connection it takes and answers any request with a chat
    completion holding the machine's credentials, :data:`SECRET`."""

    SECRET = "AKIA-METADATA-CREDENTIALS"

    def __init__(self) -> None:
        self.sock = loopback_socket()
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.connections: list[Any] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        body = (b'{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{'
                b'"index":0,"message":{"role":"assistant","content":"' + self.SECRET.encode()
                + b'"},"finish_reason":"stop"}]}')
        while True:
            try:
                conn, where = self.sock.accept()
            except OSError:
                return  # (closed)
            self.connections.append(where)
            with conn:
                conn.recv(65_536)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # (wakes the accept: a close alone does not)
        self.sock.close()
        self.thread.join(5)


def test_a_registered_model_s_host_name_pointed_at_a_metadata_service_later_is_not_connected(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # DNS rebinding: the name resolves to the fake provider as the model is registered and
    # first served; then its owner points it at the machine's metadata service. The gateway
    # looks the name up itself at each new connection, refuses when any address it gets is
    # link-local or a metadata service's, and so connects nowhere. The resolver's answers are
    # made up here (the one every look-up asks: the system's); the first rebound answer also
    # names the stand-in, where a connection made by name, unchecked, would go and read its
    # answer back.
    stand_in = MetadataStandIn()
    answers: dict[str, list[tuple[Any, ...]]] = {"rebind.test": [("127.0.0.1", fake.port)]}
    _resolving(monkeypatch, answers)
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    try:
        with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server, \
                caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
            made = post(server, PATH, {"name": "rebound", "tier": "simple",
                                       "base_url": f"http://rebind.test:{fake.port}/v1",
                                       "input_per_mtok": 0, "output_per_mtok": 0}, ADMIN)
            assert made.status_code == 201, made.text
            client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="sk-anything",
                                   max_retries=0, timeout=15)

            def ask(text: str, **more: Any) -> Any:
                return client.chat.completions.create(
                    model="rebound", messages=[{"role": "user", "content": text}], **more)

            # (the fake lets the connection go after answering: the next request connects anew)
            assert ask("[[fake:ok:close=1]] hello").model == "rebound"
            answers["rebind.test"] = [("127.0.0.1", stand_in.port),
                                      ("169.254.169.254", stand_in.port)]
            with pytest.raises(openai.APIStatusError) as mixed:
                ask("hello")
            answers["rebind.test"] = [("169.254.169.254", stand_in.port)]
            with pytest.raises(openai.APIStatusError) as streamed:
                ask("hello", stream=True)
            # The config's models are not checked, and are served as before.
            assert chat(server, "hello", model="cheap")[1].model == "cheap"
        logged = [r.getMessage() for r in caplog.records]
    finally:
        stand_in.close()
    assert stand_in.connections == []
    # What happened and what to do come whole within the cut the failover's summary (the
    # client's error) and the per-try log line make of each try's error.
    advice = ("rebound: connect_error: not sent: host now resolves to a metadata/link-local "
              "address; list it in the config, or set gateway.allow_registered_metadata_hosts: "
              "true there and reload (")
    for refused in (mixed.value, streamed.value):
        said = refused.response.text
        assert refused.status_code == 502 and advice in said, said
    told = [line for line in logged if "now resolves to" in line]
    assert told and all(advice in line for line in told), told
    assert not any(MetadataStandIn.SECRET in line for line in logged)


def test_the_config_may_let_a_registration_name_a_metadata_host_and_is_warned_of_its_own(
        settings: Settings, fake: FakeProviderProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # The one opt-out is the config's (its author owns the machine), kept across a restart;
    # a config model naming such a host is served and warned of, not refused. A name pointing
    # there is connected to as it resolves (the stand-in answers for the metadata service).
    allowed = settings.model_copy(update={"gateway": settings.gateway.model_copy(
        update={"allow_registered_metadata_hosts": True})})
    url = "http://169.254.10.20:8000/v1"
    stand_in = MetadataStandIn()
    _resolving(monkeypatch, {"rebind.test": [("127.0.0.1", stand_in.port),
                                             ("169.254.169.254", 80)]})
    with started_gateway(allowed) as gateway:
        assert gateway.register_model(card(fake, "linked", base_url=url,
                                           api_key_env=None))["id"] == "linked"
        gateway.register_model(card(fake, "named", base_url="http://rebind.test/v1",
                                    api_key_env=None))
        try:
            answer = gateway.complete([{"role": "user", "content": "hi"}], model="named")
        finally:
            stand_in.close()
        assert answer.choices[0].message.content == MetadataStandIn.SECRET
    with started_gateway(allowed) as gateway:
        assert catalog(gateway)[-2:] == ["linked", "named"]
    entry = {"name": "m", "base_url": url, "input_per_mtok": 0, "output_per_mtok": 0}
    config = load_settings(overrides={"models": [entry]}, environ={})
    assert [m for k, m in misconfigurations(config, {}) if k == "metadata\0m"] == [
        "model m: its base_url names a link-local address (169.254.10.20), where a cloud's "
        "metadata service answers; the config may name any host, but make sure it is meant: "
        "the service sends that model's requests there, and what it answers comes back in "
        "errors and the log"]


def test_a_reload_turning_metadata_hosts_off_stops_serving_those_registered_and_keeps_them(
        fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # As a start does: the reload leaves them out of the live catalog, warning of each, and
    # data_dir keeps them, so a reload turning the setting on again serves them again.
    settings_for(fake, tmp_path, CONFIG)
    config = tmp_path / "switchpoint.yaml"
    plain = config.read_text()
    allowing = plain.replace("gateway:\n", "gateway:\n  allow_registered_metadata_hosts: true\n")
    config.write_text(allowing)
    with started_gateway(load_settings(config, environ={})) as gateway:
        gateway.register_model(card(fake, "linked", base_url="http://169.254.10.20:8000/v1",
                                    api_key_env=None))
        gateway.register_model(card(fake))
        # A running run-time experiment's arm, or a registered model's fallbacks, naming it
        # would lose it midway unsaid: the reload is refused naming which, why and the ways
        # out (it said only that "linked" is not a model in the catalog, and to keep in the
        # config what the experiment names, which no config can list).
        gateway.create_ab_test("meta", {"models": ["linked", "cheap"]}, "cost_optimized")
        gateway.register_model(card(fake, "backup", fallbacks=["free", "linked"]))
        config.write_text(plain)
        host = ("a model registered at run time whose base_url names a link-local address "
                "(169.254.10.20), where a cloud's metadata service answers, is no longer served "
                "with gateway.allow_registered_metadata_hosts: false, and ")
        keep = ", then reload (or start), or keep gateway.allow_registered_metadata_hosts: true"
        refusals: list[tuple[str, Callable[[], object]]] = [
                ('models.backup.fallbacks[1]: "linked", ' + host + 'model "backup", registered '
                 'at run time, falls back to it; unregister "backup" first (Gateway.'
                 "unregister_model or DELETE /v1/router/models/backup while the service runs, "
                 "`switchpoint models unregister backup` while it is stopped) and register it "
                 "again without that fallback" + keep,
                 lambda: gateway.unregister_model("backup")),
                ('experiments.meta.arms.a.models[0]: "linked", ' + host + 'experiment "meta", '
                 "created at run time, would change its arms midway; end it first (Gateway."
                 "end_ab_test or DELETE /v1/router/experiments/meta while the service runs, "
                 "`switchpoint experiments end meta` while it is stopped)" + keep,
                 lambda: gateway.end_ab_test("meta"))]
        for says, way_out in refusals:
            served = catalog(gateway)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"), \
                    pytest.raises(ConfigError) as refused:
                gateway.reload()
            assert str(refused.value) == says
            assert catalog(gateway) == served and "linked" in served  # (nothing changed)
            # (and says nothing changed: the experiment's refusal, after the registered
            # models' step, logged that "linked" is not served)
            assert [r.getMessage() for r in caplog.records
                    if "is not served" in r.getMessage()] == []
            way_out()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
            gateway.reload()
        assert catalog(gateway) == ["strong", "runner", "cheap", "free"]
        said = [r.getMessage() for r in caplog.records if "is not served" in r.getMessage()]
        assert len(said) == 1 and '"linked"' in said[0], said
        assert "gateway.allow_registered_metadata_hosts: true" in said[0], said
        assert [name for name, _ in stored(gateway.settings)] == ["linked", "free"]
        with pytest.raises(ModelNotFoundError):
            gateway.complete([{"role": "user", "content": "hello"}], model="linked")
        config.write_text(allowing)
        gateway.reload()
        assert catalog(gateway) == ["strong", "runner", "cheap", "linked", "free"]
        config.write_text(plain)
        gateway.reload()  # (one not served is unregistered as any other, checked alike)
        named = gateway.governor.keys.create(KeySpec(tenant="acme", models=["linked"]).checked(
            ["acme"], None)).record.id
        with pytest.raises(ConflictError, match=f'key {named}: it can no longer use "linked"'):
            gateway.unregister_model("linked")
        gateway.governor.keys.revoke(named)
        assert gateway.unregister_model("linked")["deleted"] is True
        assert [name for name, _ in stored(gateway.settings)] == ["free"]


def test_a_kept_registration_naming_a_metadata_service_is_not_served(
        settings: Settings, fake: FakeProviderProcess, tmp_path: Path) -> None:
    # One kept before the rule (by an earlier switchpoint) is skipped at a start as a row that
    # no longer reads as a model is; over HTTP, a registration is a 400 naming base_url.
    import json

    with started_gateway(settings):
        pass  # (data_dir made, as a service leaves it)
    with sqlite3.connect(settings.db_path) as db:
        db.execute("INSERT INTO runtime_models (name, created, card) VALUES (?, ?, ?)",
                   ("meta", 1.7e9, json.dumps({"name": "meta", "tier": "simple",
                                               "base_url": "http://169.254.169.254/v1"})))
    db.close()
    with started_gateway(settings) as gateway:
        assert "meta" not in catalog(gateway)
        # (kept as registered, served once the config allows it)
        assert "meta" in [m.name for m in gateway.models_registered.registered]
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path / "served", extra,
                         environ={"SP_ADMIN": ADMIN}) as server:
        refused = post(server, PATH, card(fake, "meta2", api_key_env=None,
                                          base_url="http://metadata.google.internal/v1"), ADMIN)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "base_url", refused.text
        assert "meta2" not in _models(server)


def test_a_registration_waits_for_data_dir_to_keep_it_and_the_catalog_follows_the_store(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process holds the database's write lock for longer than a client would wait
    # (the writer waits out SQLite's busy timeout, made long here). The registration and the
    # removal wait for the write: meanwhile the catalog is what data_dir holds (a restart
    # would serve the same), and once the lock is let go the answer says what was kept. They
    # gave up after 30 s with a 500 while the write stayed queued, so it could land later
    # with the catalog saying otherwise.
    from tests.fakes.held_lock import sent_while_held, short_lock_waits

    short_lock_waits(monkeypatch, seconds=120.0)
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server:
        settings = server.service.gateway.settings
        sends: list[tuple[Callable[[], httpx.Response], list[str], list[str]]] = [
            (lambda: post(server, PATH, card(fake), ADMIN), [], ["free"]),
            (lambda: _delete(server, "free", ADMIN), ["free"], [])]
        for send, before, after in sends:

            def unchanged(before: list[str] = before) -> None:
                assert [n for n, _ in stored(settings)] == before
                assert [m for m in _models(server) if m == "free"] == before

            answer = sent_while_held(settings.db_path, send, unchanged)
            assert answer.status_code in (200, 201), answer.text
            assert answer.json()["id"] == "free"
            assert [n for n, _ in stored(settings)] == after
            assert [m for m in _models(server) if m == "free"] == after


def test_a_reload_or_a_policy_swap_behind_a_registration_data_dir_has_not_kept_is_refused(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The registration holds the router's swap lock while the store's writer waits (another
    # process holds the database's lock): it goes live as one step with its write. A reload
    # or a policy swap sent meanwhile waited with it, as long as the write took (unbounded
    # for a disk that does not finish its fsync); it is refused after a bounded wait, a 503
    # naming what it waited for, and the running router serves on.
    from switchpoint.gateway import live
    from tests.fakes.held_lock import sent_while_held, short_lock_waits

    short_lock_waits(monkeypatch, seconds=120.0)
    monkeypatch.setattr(live, "SWAP_WAIT_S", 0.3)
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server:
        settings = server.service.gateway.settings

        def refused() -> None:
            for path, what in [("/v1/router/reload", "the reload"),
                               ("/v1/router/policy/cluster", "the policy swap")]:
                answer = post(server, path, None, ADMIN)
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"].isdigit()
                error = answer.json()["error"]
                assert error["code"] == "storage_unavailable", error
                assert error["message"].startswith(
                    f'{what} was not made: it waited 0.3 s for the registration of model '
                    '"free", which waits for the store\'s writer to keep it'), error
            assert stored(settings) == [] and "free" not in _models(server)

        answer = sent_while_held(settings.db_path,
                                 lambda: post(server, PATH, card(fake), ADMIN), refused)
        assert answer.status_code == 201, answer.text
        reloaded = post(server, "/v1/router/reload", None, ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        assert "free" in reloaded.json()["models"]
        paths = get(server, "/openapi.json", ADMIN).json()["paths"]
        for path in ("/v1/router/reload", "/v1/router/policy/{name}"):  # (published)
            assert "storage_unavailable" in paths[path]["post"]["responses"]["503"][
                "description"]


def test_registrations_queued_behind_a_stuck_write_are_bounded_and_none_queued_is_lost(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The store's writer is stuck (another process holds the database's lock for longer than
    # it waits): one registration waits for its write, the next for the registrations' lock
    # it holds. They counted towards the bound on changes waiting only once in their write,
    # so callers queued on that lock without limit; past the bound, the next is refused.
    # One refused for its own fault hears that first, as it would any other time: a removal
    # of a model not registered its 404, a registration of a name taken its 409 (they heard
    # the 503 of one too many waiting, and were told to try again).
    from tests.fakes.held_lock import queued_while_held, refused_as_too_many, short_lock_waits

    short_lock_waits(monkeypatch, seconds=120.0)
    monkeypatch.setattr(kept, "MAX_WAITING", 2)  # (the bound's rule, not its size, is tested)
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server:
        settings = server.service.gateway.settings
        store = server.service.gateway.learning.store
        assert store is not None

        assert post(server, PATH, card(fake, "old"), ADMIN).status_code == 201

        def refused() -> None:
            refused_as_too_many(post(server, PATH, card(fake, "late"), ADMIN), "the model",
                                "nothing was registered", queued=2)
            refused_as_too_many(_delete(server, "old", ADMIN), "the model's removal",
                                "it is still registered", queued=2)
            unknown = _delete(server, "late", ADMIN)
            assert unknown.status_code == 404, unknown.text
            assert unknown.json()["error"]["message"].startswith(
                'name: no model "late" was registered at run time'), unknown.text
            taken = post(server, PATH, card(fake, "old"), ADMIN)
            assert taken.status_code == 409, taken.text
            assert "was registered at run time already" in taken.json()["error"]["message"]
            assert [n for n, _ in stored(settings)] == ["old"] and kept.waiting(store) == 2

        answers = queued_while_held(store.path, store, [
            lambda: post(server, PATH, card(fake, "one"), ADMIN),
            lambda: post(server, PATH, card(fake, "two"), ADMIN)], refused)
        assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
        assert sorted(n for n, _ in stored(settings)) == ["old", "one", "two"]
        assert sorted(m for m in _models(server) if m in ("old", "one", "two", "late")) == [
            "old", "one", "two"]
        assert kept.waiting(store) == 0


def test_a_registration_the_store_refuses_says_nothing_was_registered_and_changes_nothing(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer waits out the busy timeout (short here) and the write fails: a 503 with
    # Retry-After saying the model was not registered (or is still registered), and neither
    # the catalog nor data_dir changed; once the lock is let go, it is taken.
    from tests.fakes.held_lock import (
        held_lock,
        refused_unkept,
        short_lock_waits,
        until_writable,
    )

    short_lock_waits(monkeypatch, seconds=1.0)
    extra = CONFIG + "admin_token_env: SP_ADMIN\n"
    with learning_server(fake, tmp_path, extra, environ={"SP_ADMIN": ADMIN}) as server:
        gateway = server.service.gateway
        store = gateway.learning.store
        assert store is not None
        sends: list[tuple[Callable[[], httpx.Response], str, str, list[str]]] = [
            (lambda: post(server, PATH, card(fake), ADMIN), "the model",
             "nothing was registered", []),
            (lambda: _delete(server, "free", ADMIN), "the model's removal",
             "it is still registered", ["free"])]
        for send, what, words, before in sends:
            with held_lock(gateway.settings.db_path):
                refused = send()
            refused_unkept(refused, what, words)
            assert [n for n, _ in stored(gateway.settings)] == before
            assert [m for m in _models(server) if m == "free"] == before
            until_writable(store)  # (refused at once for a moment more)
            taken = send()
            assert taken.status_code in (200, 201), taken.text
        assert stored(gateway.settings) == [] and "free" not in _models(server)


def test_a_registration_after_switchpoint_db_was_deleted_says_to_restart_not_to_retry(
        gateway: Gateway, fake: FakeProviderProcess) -> None:
    # Waiting does not mend it (only a restart opens the file now there): the first refusal,
    # met writing, and the next, turned away before it writes, both say so, with no
    # Retry-After, and nothing is registered.
    from switchpoint.server.errors import answer_for

    Path(gateway.settings.db_path).unlink()
    for _ in range(2):
        with pytest.raises(StorageUnavailableError) as refused:
            gateway.register_model(card(fake))
        answer = answer_for(refused.value)
        assert answer.headers == {"x-should-retry": "false"}, answer
        assert "switchpoint.db in data_dir was deleted while the service ran; waiting does " \
               "not mend it: the operator must restart the service" in answer.message, answer
        assert str(gateway.settings.data_dir) not in answer.message, answer.message
        assert answer.message.endswith("(nothing was registered)"), answer.message
    assert "free" not in catalog(gateway)
