"""Reloading the config and swapping the routing policy in process: ``Gateway.reload`` and
``Gateway.swap_policy`` answer as ``POST /v1/router/reload`` and ``POST
/v1/router/policy/{name}`` do (the same fields, the keys a reload leaves short named alike) and
refuse as they refuse (the same error, field and message), a refusal leaving the old router
serving; each is one request inside the gateway, refused once closing has begun and waited
for by closing when under way, and a swap asked while a reload loads waits for it and is checked
against the config it makes live. The in-process gateway and a real server on loopback run the
same config, each in a data_dir of its own; the models are served by the fake provider."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint import Gateway
from switchpoint.config import Settings, load_settings
from switchpoint.errors import (
    ConfigError,
    GatewayClosedError,
    InvalidInputError,
    WeightsError,
)
from switchpoint.governance.keys import KeySpec
from switchpoint.router import Router
from switchpoint.server import create_app
from switchpoint.weights import default_weights_path
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    FACTORY,
    KEYS,
    closing_in_background,
    config_text,
    user,
)
from tests.integration.servers import ThreadServer, thread_server

ACME = "tenants: {acme: {models: [cheap, good, fresh, auto]}}\n"
# The edit: `fresh` leaves the catalog for `newbie`, and acme no longer lists `cheap`.
EDITED = "tenants: {acme: {models: [good, newbie, auto]}}\n"


def _write(root: Path, fake: FakeProviderProcess, *, edited: bool = False) -> Path:
    config = root / "switchpoint.yaml"
    text = config_text(fake, data_dir=str(root / "data"))
    if edited:
        text = text.replace("name: fresh,", "name: newbie,")
    config.write_text(text + (EDITED if edited else ACME), encoding="utf-8")
    return config


@contextmanager
def _doors(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[tuple[Gateway, ThreadServer]]:
    """An in-process gateway and a server of the same config, each in its own data_dir."""
    local_root, served_root = tmp_path / "local", tmp_path / "served"
    local_root.mkdir()
    served_root.mkdir()
    # (the file taken as the library takes it, so that an error naming how it was passed reads
    # the same from both doors)
    settings = load_settings(_write(served_root, fake), environ={}, path_arg="config")
    with (Gateway.from_config(_write(local_root, fake), loader=FACTORY, env=KEYS) as local,
          thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server):
        yield local, server


def _key(gateway: Gateway, models: list[str]) -> str:
    """A live key of acme's, limited to ``models``: its id."""
    spec = KeySpec(tenant="acme", models=models).checked(["acme"], None)
    return gateway.governor.keys.create(spec).record.id


def _comparable(answer: dict[str, Any], key_id: str) -> dict[str, Any]:
    """``answer`` as JSON holds it, without what differs between two loads (``load_ms``) or
    two data_dirs (the key's id)."""
    shown = json.loads(json.dumps(answer).replace(key_id, "KEY"))
    del shown["load_ms"]
    return dict(shown)


def test_reload_picks_up_an_edited_config_and_answers_as_the_route_does(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with _doors(gw_fake, tmp_path) as (local, server):
        before = local.router.weights_id
        assert [m["id"] for m in local.models()] == ["auto", "good", "other", "cheap", "fresh"]
        local_key = _key(local, ["cheap", "auto"])
        served_key = _key(server.service.gateway, ["cheap", "auto"])
        _write(tmp_path / "local", gw_fake, edited=True)
        _write(tmp_path / "served", gw_fake, edited=True)

        with caplog.at_level(logging.WARNING, logger="switchpoint"):
            answer = local.reload()
        served = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert served.status_code == 200, served.text

        assert [m["id"] for m in local.models()] == ["auto", "good", "other", "cheap", "newbie"]
        assert answer["models"] == ["good", "other", "cheap", "newbie"]
        assert (answer["policy"], answer["previous_policy"]) == ("cluster", "cluster")
        assert answer["weights_id"] == answer["previous_weights_id"] == before
        assert answer["restart_required"] == [] and answer["load_ms"] >= 0
        assert answer["unprofiled_models"] == ["newbie"]
        assert answer["keys_affected"] == [
            {"key_id": local_key, "name": None, "tenant": "acme", "tenant_removed": False,
             "models_removed": ["cheap"], "models_removed_count": 1}]
        assert answer["keys_affected_count"] == 1
        note = answer["keys_note"]
        assert note.startswith("the new config leaves 1 key(s) short of what they used: "
                               f'key {local_key}: it can no longer use "cheap"'), note
        assert [r.levelno for r in caplog.records
                if r.getMessage() == f"config reloaded: {note}"] == [logging.WARNING]
        assert _comparable(answer, local_key) == _comparable(served.json(), served_key)


def test_a_key_is_named_by_the_reload_that_narrows_its_tenant_and_not_by_the_next_of_that_file(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A key listing a model still in the catalog that its tenant no longer allows was named
    by every reload after the one that narrowed the tenant, of an unchanged file too: a reload
    names the keys it leaves short of what they had before it."""
    with _doors(gw_fake, tmp_path) as (local, server):
        made = {"local": _key(local, ["cheap", "good", "auto"]),
                "served": _key(server.service.gateway, ["cheap", "good", "auto"])}

        def reload_both() -> dict[str, dict[str, Any]]:
            served = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
            assert served.status_code == 200, served.text
            return {"local": local.reload(), "served": served.json()}

        for root in made:
            _write(tmp_path / root, gw_fake, edited=True)  # acme no longer lists cheap
        for root, answer in reload_both().items():
            assert answer["keys_affected"] == [
                {"key_id": made[root], "name": None, "tenant": "acme", "tenant_removed": False,
                 "models_removed": ["cheap"], "models_removed_count": 1}], root
            assert answer["keys_affected_count"] == 1
            assert f'key {made[root]}: it can no longer use "cheap"' in answer["keys_note"]
        assert "cheap" in local.router.models  # (still in the catalog)
        # The same file again, and the first one back (which gives cheap back): no key loses.
        for edited in (True, False):
            for root in made:
                _write(tmp_path / root, gw_fake, edited=edited)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="switchpoint"):
                answers = reload_both()
            for root, answer in answers.items():
                assert answer["keys_affected"] == [], (root, edited, answer["keys_note"])
                assert answer["keys_affected_count"] == 0 and answer["keys_note"] is None
            assert not [r for r in caplog.records
                        if r.getMessage().startswith("config reloaded")], caplog.text



def _http_error(exc: Exception) -> tuple[str, str, str]:
    """The code, param and message the HTTP door answers ``exc`` with."""
    if isinstance(exc, WeightsError):
        return "invalid_config", "weights", f"weights: {exc}"
    assert isinstance(exc, ConfigError), repr(exc)
    return "invalid_config", exc.key, str(exc)


@pytest.mark.parametrize("bad", [
    pytest.param("", id="emptied"),
    pytest.param("cost_weight: -3\n", id="bad value"),
    pytest.param("models:\n  - {name: odd, profile: no-such-profile, base_url: "
                 "\"http://127.0.0.1:9/v1\"}\n", id="unknown profile"),
    pytest.param("weights: ROOT/no-such-weights\n", id="missing weights")])
def test_a_bad_config_raises_as_the_route_refuses_and_leaves_the_old_router_serving(
        gw_fake: FakeProviderProcess, tmp_path: Path, bad: str) -> None:
    with _doors(gw_fake, tmp_path) as (local, server):
        before = local.router.weights_id
        for root in ("local", "served"):
            (tmp_path / root / "switchpoint.yaml").write_text(
                bad.replace("ROOT", str(tmp_path / root)), encoding="utf-8")
        with pytest.raises((ConfigError, WeightsError)) as refused:
            local.reload()
        served = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert served.status_code == 400, served.text
        error = served.json()["error"]
        code, param, message = _http_error(refused.value)
        assert (error["code"], error["param"], error["message"]) == (
            code, param, message.replace(str(tmp_path / "local"), str(tmp_path / "served")))

        assert local.router.weights_id == before
        assert [m["id"] for m in local.models()] == ["auto", "good", "other", "cheap", "fresh"]
        reply = local.complete(user("Still there?"), model="fresh", tenant="acme")
        assert reply.switchpoint.model == "fresh"


def test_input_a_reload_cannot_load_is_a_config_error_naming_it(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """What the loader refuses as input (an InvalidInputError, e.g. a catalog the weights
    cannot serve) is the config's fault: a ConfigError of the same key and reason."""
    refusing: list[str] = []

    def loader(settings: Settings, policy: str | None) -> Router:
        if refusing:
            raise InvalidInputError("models", refusing[0])
        return FACTORY(settings, policy)

    root = tmp_path / "local"
    root.mkdir()
    with Gateway.from_config(_write(root, gw_fake), loader=loader, env=KEYS) as gateway:
        before = gateway.router.weights_id
        refusing.append("these weights cannot serve the catalog")
        _write(root, gw_fake, edited=True)
        for swap in (gateway.reload, lambda: gateway.swap_policy("tiers")):
            with pytest.raises(ConfigError) as refused:
                swap()
            assert (refused.value.key, refused.value.reason) == (
                "models", "these weights cannot serve the catalog")
            assert gateway.router.weights_id == before
            assert [m["id"] for m in gateway.models()] == [
                "auto", "good", "other", "cheap", "fresh"]


def test_swap_policy_swaps_and_an_unknown_policy_is_refused_naming_name_as_the_route_does(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    with _doors(gw_fake, tmp_path) as (local, server):
        before = local.router.weights_id
        with pytest.raises(InvalidInputError) as refused:
            local.swap_policy("telepathy")
        served = httpx.post(f"{server.base}/v1/router/policy/telepathy", timeout=60)
        assert served.status_code == 400, served.text
        error = served.json()["error"]
        assert refused.value.field == "name"
        assert (error["code"], error["param"], error["message"]) == (
            "invalid_request", "name", str(refused.value))
        assert str(refused.value).startswith('name: unknown policy "telepathy"; choose one of ')
        assert local.router.weights_id == before

        answer = local.swap_policy("tiers")
        served = httpx.post(f"{server.base}/v1/router/policy/tiers", timeout=60)
        assert served.status_code == 200, served.text
        assert (answer["policy"], answer["previous_policy"]) == ("tiers", "cluster")
        assert answer["previous_weights_id"] == before
        assert answer["weights_id"].startswith("tiers-")
        assert local.router.policy.name == "tiers"
        # (a swap reads the same config: no key loses, and both doors say so)
        assert (answer["keys_affected"], answer["keys_affected_count"], answer["keys_note"]) == (
            [], 0, None)
        assert set(answer) == set(served.json())
        shown = {k: v for k, v in answer.items() if k != "load_ms"}
        assert shown == {k: v for k, v in served.json().items() if k in shown}


def _on_a_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    got: list[object] = []

    def run() -> None:
        try:
            got.append(call())
        except Exception as exc:  # (the test tells)
            got.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, got


def test_reload_and_swap_policy_are_refused_once_closing_has_begun_and_waited_for_before(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload under way (held as it lists the keys) when closing begins is waited for and
    answers; a reload or a swap asked once closing has begun, or after it, is refused with the
    closed error and changes nothing."""
    root = tmp_path / "local"
    root.mkdir()
    gateway = Gateway.from_config(_write(root, gw_fake), loader=FACTORY, env=KEYS)
    keys = gateway.governor.keys
    real, inside, go = keys.list, threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        assert go.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(keys, "list", held)
    _write(root, gw_fake, edited=True)
    reloading, got = _on_a_thread(gateway.reload)
    assert inside.wait(30)
    closer, closed = closing_in_background(gateway)
    for refused in (gateway.reload, lambda: gateway.swap_policy("tiers")):
        with pytest.raises(GatewayClosedError, match="the gateway is closed"):
            refused()
    time.sleep(0.2)
    assert not closed.is_set()  # closing waits for the reload under way
    go.set()
    reloading.join(30)
    closer.join(30)
    assert not reloading.is_alive() and closed.is_set()
    [answer] = got
    assert isinstance(answer, dict), repr(answer)
    assert answer["models"] == ["good", "other", "cheap", "newbie"]

    _write(root, gw_fake)
    for refused in (gateway.reload, lambda: gateway.swap_policy("tiers")):
        with pytest.raises(GatewayClosedError, match="the gateway is closed"):
            refused()
    assert gateway.settings.models is not None
    assert [m.name for m in gateway.settings.models] == ["good", "other", "cheap", "newbie"]


class _Asked:
    """``lock`` that sets ``asked`` when the thread named ``who`` asks for it (entering it,
    or by ``acquire``)."""

    def __init__(self, lock: Any, who: str) -> None:
        self.lock, self.who, self.asked = lock, who, threading.Event()

    def __enter__(self) -> Any:
        if threading.current_thread().name == self.who:
            self.asked.set()
        return self.lock.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self.lock.__exit__(*exc)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if threading.current_thread().name == self.who:
            self.asked.set()
        return bool(self.lock.acquire(blocking, timeout))

    def release(self) -> None:
        self.lock.release()


def test_a_swap_to_a_policy_a_reload_under_way_drops_is_refused_naming_name(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A swap asked while a reload that drops its policy loads waits for the reload, then is
    refused as an unknown policy naming ``name``: the name was checked against the config the
    reload replaced, and the load of a policy no longer listed failed for want of its weights."""
    root = tmp_path / "local"
    root.mkdir()
    config = _write(root, gw_fake)
    listed = config.read_text(encoding="utf-8")
    config.write_text(listed + f"policies: {{mine: '{default_weights_path('cluster')}'}}\n",
                      encoding="utf-8")
    loading, go = threading.Event(), threading.Event()

    def loader(settings: Settings, policy: str | None) -> Router:
        if threading.current_thread().name == "reloading":
            loading.set()
            assert go.wait(30)
        return FACTORY(settings, policy)

    with Gateway.from_config(config, loader=loader, env=KEYS) as gateway:
        before = gateway.router.weights_id
        swap_lock = _Asked(gateway.state._swap, "swapping")
        monkeypatch.setattr(gateway.state, "_swap", swap_lock)
        config.write_text(listed, encoding="utf-8")  # (mine is no longer listed)
        outcome: dict[str, object] = {}

        def run(name: str, call: Callable[[], object]) -> threading.Thread:
            def work() -> None:
                try:
                    outcome[name] = call()
                except Exception as exc:  # (the test tells)
                    outcome[name] = exc

            thread = threading.Thread(target=work, name=name)
            thread.start()
            return thread

        reloading = run("reloading", gateway.reload)
        assert loading.wait(30)  # the reload holds the swap's lock, loading
        swapping = run("swapping", lambda: gateway.swap_policy("mine"))
        assert swap_lock.asked.wait(30)  # the swap waits for it
        go.set()
        reloading.join(30)
        swapping.join(30)
        assert not reloading.is_alive() and not swapping.is_alive()
        assert isinstance(outcome["reloading"], dict), outcome
        refused = outcome["swapping"]
        assert isinstance(refused, InvalidInputError) and refused.field == "name", refused
        assert str(refused).startswith('name: unknown policy "mine"; choose one of ')
        assert "policies: in the config" in str(refused)
        assert gateway.router.weights_id == before
        assert gateway.router.policy.name == "cluster"
