"""Misconfigurations fail loudly and the gateway explains itself: no upstream configured, an
unset key variable, a refused connection and an open circuit, each named in the one error the
official ``openai`` client raises; stream usage asked only where a model takes it; and
conversations without ``x-session-id`` never shared between two clients."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.errors import FailoverError
from switchpoint.gateway import Gateway
from switchpoint.gateway.engine import misconfigurations
from switchpoint.server import create_app
from switchpoint.server.exposure import is_loopback
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, client, fresh_health, log_entry
from tests.integration.servers import ProcessServer, ThreadServer, free_port, thread_server

PROMPT = "Name three prime numbers above one hundred."


def user(text: str = PROMPT) -> list[Any]:
    return [{"role": "user", "content": f"{text} [{uuid.uuid4().hex[:8]}]"}]


def message_of(error: openai.APIStatusError) -> str:
    """The message the gateway sent (``error.message`` adds the status and the whole body)."""
    body = error.body
    assert isinstance(body, dict)
    return str(body["message"])


@contextmanager
def gateway_warnings() -> Iterator[list[str]]:
    """The warnings the gateway engine logs meanwhile (whatever its logger's propagation)."""
    got: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())

    logger = logging.getLogger("switchpoint.gateway")
    handler, level = Collect(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield got
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def counting_client(base: str, **kw: Any) -> tuple[openai.OpenAI, list[str]]:
    """The official client with its default retries, and the list of requests it sends."""
    sent: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda r: sent.append(str(r.url))]})
    return openai.OpenAI(base_url=f"{base}/v1", api_key="sk-anything", http_client=http,
                         timeout=15, **kw), sent


# No upstream configured ---------------------------------------------------------------------------


def test_serve_without_a_config_says_chat_is_off_and_answers_at_once(tmp_path: Path) -> None:
    server = ProcessServer(data_dir=tmp_path / "data",
                           env={"SWITCHPOINT_CONFIG": "", "OPENAI_API_KEY": ""}).start()
    try:
        server.wait_ready()
        oai, sent = counting_client(server.base)  # max_retries=2, the client's default
        t0 = time.perf_counter()
        with pytest.raises(openai.InternalServerError) as info:
            oai.chat.completions.create(model="auto", messages=user())
        assert time.perf_counter() - t0 < 5
        assert len(sent) == 1  # x-should-retry: false, so no retries, and no upstream call
        error = info.value
        assert error.status_code == 503 and error.code == "no_upstream_configured"
        assert error.response.headers["x-should-retry"] == "false"
        message = message_of(error)
        assert message.startswith("this gateway has no models configured")
        assert "`models:`" in message and "switchpoint serve --config" in message
        with pytest.raises(openai.InternalServerError) as streamed:
            oai.chat.completions.create(model="auto", messages=user(), stream=True)
        assert streamed.value.code == "no_upstream_configured" and len(sent) == 2
        # Routing still works.
        routed = httpx.post(f"{server.base}/v1/route", json={"prompt": PROMPT}, timeout=30)
        assert routed.status_code == 200
    finally:
        _, err = server.terminate()
    assert err.count("chat is off: no `models:` are configured") == 1
    assert "503 no_upstream_configured" in err


# Key variables: warned once at start, named in the error -----------------------------------------


def catalog_config(fake: FakeProviderProcess, closed_port: int, data: Path) -> str:
    return f"""models:
  - {{name: nokey, profile: gpt-4-1106-preview, base_url: "{fake.openai_base_url}",
     api_key_env: SP_TEST_UNSET_KEY, input_per_mtok: 10, output_per_mtok: 30,
     fallbacks: [refused, tripped]}}
  - {{name: refused, profile: gpt-3.5-turbo-1106, base_url: "http://127.0.0.1:{closed_port}/v1",
     input_per_mtok: 0.5, output_per_mtok: 1.5}}
  - {{name: tripped, profile: claude-v2, base_url: "{fake.openai_base_url}",
     input_per_mtok: 8, output_per_mtok: 24}}
  - {{name: ok, profile: mistralai/mistral-7b-chat, base_url: "{fake.openai_base_url}",
     input_per_mtok: 0.1, output_per_mtok: 0.1}}
  - {{name: nokey2, profile: gpt-4-1106-preview, base_url: "{fake.openai_base_url}",
     api_key_env: SP_TEST_UNSET_KEY_2, input_per_mtok: 10, output_per_mtok: 30}}
data_dir: {data}
gateway:
  connect_timeout_s: 1
  read_timeout_s: 1
  first_token_timeout_s: 1
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  failure_threshold: 1
  cooldown_s: 120
  max_cooldown_s: 120
"""


@pytest.fixture(scope="module")
def mis_fake() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess() as fake:
        yield fake


@pytest.fixture(scope="module")
def mis(mis_fake: FakeProviderProcess,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    root = tmp_path_factory.mktemp("misconfig")
    config = root / "switchpoint.yaml"
    config.write_text(catalog_config(mis_fake, free_port(), root / "data"), encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env={})) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "mis" in request.fixturenames:
        fresh_health(request.getfixturevalue("mis"))
        request.getfixturevalue("mis_fake").reset()


def trip(server: ThreadServer, fake: FakeProviderProcess) -> None:
    """Open ``tripped``'s circuit the honest way: it fails once (failure_threshold 1)."""
    fake.script("tripped", "500")
    with pytest.raises(openai.APIStatusError):
        client(server).chat.completions.create(model="tripped", messages=user())
    assert server.service.gateway.health.state("tripped") == "open"


def test_one_error_names_every_model_tried_and_why(mis: ThreadServer,
                                                   mis_fake: FakeProviderProcess) -> None:
    trip(mis, mis_fake)
    mis_fake.reset()
    oai, _ = counting_client(mis.base, max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="nokey", messages=user())
    error = info.value
    assert error.status_code == 502 and error.code == "upstream_failed"
    message = message_of(error)
    assert message.startswith("no model answered")
    assert "nokey: missing_api_key: the API key variable SP_TEST_UNSET_KEY is not set" in message
    assert "refused: connect_error" in message and "could not connect" in message
    assert "tripped: skipped as unhealthy, circuit open (retry in" in message
    assert mis_fake.requests() == []  # nothing reached an upstream
    headers = error.response.headers
    assert "x-should-retry" not in headers  # the circuit and the refusal may pass
    assert "tripped was skipped as unhealthy (circuit open)" in headers["x-switchpoint-reasoning"]
    entry = log_entry(mis, headers["x-switchpoint-request-id"])
    assert entry["status"] == "error" and entry["http_status"] == 502
    assert [(a["model"], a["outcome"]) for a in entry["attempts"]] == [
        ("nokey", "missing_api_key"), ("refused", "connect_error"),  # its circuit opens too
        ("tripped", "circuit_open")]
    assert "tripped was skipped as unhealthy (circuit open)." in entry["reasoning"]
    assert entry["error"] == message
    # A missing key is the configuration's fault, not the model's health.
    assert mis.service.gateway.health.state("nokey") == "closed"


def test_when_every_model_lacks_its_key_clients_are_told_not_to_retry(
        mis: ThreadServer) -> None:
    oai, sent = counting_client(mis.base)  # the default 2 retries
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="nokey2", messages=user())
    assert len(sent) == 1
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "SP_TEST_UNSET_KEY_2 is not set; export SP_TEST_UNSET_KEY_2=<key>" in \
        message_of(info.value)


def test_auto_says_when_the_routed_model_is_ranked_after_a_healthy_one(
        mis: ThreadServer, mis_fake: FakeProviderProcess) -> None:
    def headers() -> dict[str, str]:  # a new session each time: no pin skips the router
        return {"x-switchpoint-cost-weight": "0", "x-switchpoint-models": "ok,tripped",
                "x-session-id": uuid.uuid4().hex}

    messages = user("Prove that there are infinitely many primes")
    raw = client(mis).chat.completions.with_raw_response.create(
        model="auto", messages=messages, extra_headers=headers())
    routed = raw.headers["x-switchpoint-routed-model"]
    gateway = mis.service.gateway
    gateway.health.record_failure(routed, "server_error", detail="test")
    assert gateway.health.state(routed) == "open"
    raw = client(mis).chat.completions.with_raw_response.create(
        model="auto", messages=messages, extra_headers=headers())
    other = ({"ok", "tripped"} - {routed}).pop()
    assert raw.headers["x-switchpoint-model"] == other
    reasoning = raw.headers["x-switchpoint-reasoning"]
    assert f"{routed} is down (GET /v1/router/health): ranked after {other}." in reasoning
    entry = log_entry(mis, raw.headers["x-switchpoint-request-id"])
    assert f"{routed} is down (GET /v1/router/health): ranked after {other}." in \
        entry["reasoning"]


def test_the_engine_warns_once_about_each_unset_key_variable(
        tmp_path: Path, mis_fake: FakeProviderProcess) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(catalog_config(mis_fake, free_port(), tmp_path / "data"),
                      encoding="utf-8")
    with gateway_warnings() as warnings, \
            Gateway.from_config(config, loader=FACTORY, env={}, store=False) as gateway:
        assert warnings == [
            "model nokey: its API key variable SP_TEST_UNSET_KEY is not set; calls to it fail "
            "with missing_api_key until you export SP_TEST_UNSET_KEY",
            "model nokey2: its API key variable SP_TEST_UNSET_KEY_2 is not set; calls to it "
            "fail with missing_api_key until you export SP_TEST_UNSET_KEY_2"]
        for _ in range(2):
            with pytest.raises(FailoverError, match="SP_TEST_UNSET_KEY_2 is not set"):
                gateway.complete(user(), model="nokey2")
        assert gateway.complete(user(), model="ok").choices[0].message.content
        gateway.state.reload()  # a reload with the same catalog says nothing new
        # Not per request, not per reload; each failed call's try is a line of its own, which
        # says no request was sent (it said "upstream try 1 failed").
        tries = [w for w in warnings if ": no request sent upstream for try " in w]
        assert len(warnings) - len(tries) == 2
        assert not any("upstream try" in w for w in warnings), warnings
        assert [w.split(" for try ", 1)[1] for w in tries] == [
            "1, nokey2: missing_api_key: the API key variable SP_TEST_UNSET_KEY_2 is not set; "
            "export SP_TEST_UNSET_KEY_2=<key> or point the model's api_key_env at the variable "
            "that holds it; the request fails"] * 2


def test_a_providers_default_key_variable_and_models_without_prices_are_warned_about(
        tmp_path: Path) -> None:
    settings: dict[str, Any] = {"models": [{"name": "mini", "provider": "mistral",
                            "profile": "mistralai/mistral-7b-chat"},
                           {"name": "local", "provider": "ollama", "profile": "claude-v2"}],
                "data_dir": str(tmp_path / "data")}
    with gateway_warnings() as warnings, \
            Gateway.from_config(settings, loader=FACTORY, env={}, store=False):
        pass
    unpriced = ("has no prices (input_per_mtok, output_per_mtok): what its answers cost is "
                "unknown (usage.cost null, no x-switchpoint-cost, no cost in the request log, "
                "counted apart in reports) and a request a budget watches may not use it; give "
                "its prices in USD per million tokens (0 for a free model)")
    assert warnings == [
        "model mini: its API key variable MISTRAL_API_KEY (provider mistral's default; name "
        "another with api_key_env) is not set; calls to it fail with missing_api_key until you "
        "export MISTRAL_API_KEY",  # ollama is local: no key
        f"model mini {unpriced}", f"model local {unpriced}"]
    # Priced (a local model at 0 too), they are not warned about.
    for model in settings["models"]:
        model.update(input_per_mtok=0, output_per_mtok=0)
    with gateway_warnings() as warnings, \
            Gateway.from_config(settings, loader=FACTORY, env={}, store=False):
        pass
    assert len(warnings) == 1 and "MISTRAL_API_KEY" in warnings[0]



def test_a_config_model_named_as_the_profile_another_uses_is_warned_about_naming_both(
        tmp_path: Path) -> None:
    # Without profile:, "gpt-4-1106-preview" routes on the weights' profile of its name, which
    # "gpt-4o" names as its own: the two share one learned quality, whatever each costs.
    local = {"provider": "ollama", "input_per_mtok": 0, "output_per_mtok": 0}
    settings: dict[str, Any] = {"models": [
        {"name": "gpt-4o", "profile": "gpt-4-1106-preview", **local},
        {"name": "gpt-4-1106-preview", **local},
        {"name": "claude-v2", **local}],  # (its own profile, which no other model names)
        "data_dir": str(tmp_path / "data")}
    with gateway_warnings() as warnings, \
            Gateway.from_config(settings, loader=FACTORY, env={}, store=False) as gateway:
        assert gateway.router.catalog.profile_of("gpt-4-1106-preview") == "gpt-4-1106-preview"
    assert warnings == [
        'model "gpt-4-1106-preview" has no profile:, so it routes on the weights\' learned '
        'profile of its name, "gpt-4-1106-preview", which model "gpt-4o" uses (its profile:): '
        "it takes that model's learned quality, whatever it is and costs; give it the profile "
        "it should route on (profile:), or profile: gpt-4-1106-preview to share that one on "
        "purpose"]
    # Said in the config, the sharing is on purpose: nothing is warned about.
    settings["models"][1]["profile"] = "gpt-4-1106-preview"
    with gateway_warnings() as warnings, \
            Gateway.from_config(settings, loader=FACTORY, env={}, store=False):
        pass
    assert warnings == []


def test_serve_warns_about_every_model_of_a_large_catalog(tmp_path: Path) -> None:
    # Each warning was logged as one message ("%s"), so the log's limit of five alike a minute
    # let the first five through and dropped the rest: of seven models without a key, two
    # went unnamed, and their missing prices were never said.
    names = [f"m{i}" for i in range(7)]
    config = tmp_path / "switchpoint.yaml"
    config.write_text("models:\n" + "".join(
        f"  - {{name: {name}, provider: mistral, profile: claude-v1}}\n" for name in names),
        encoding="utf-8")
    server = ProcessServer("--config", config, data_dir=tmp_path / "data",
                           env={"MISTRAL_API_KEY": ""}).start()
    try:
        server.wait_ready()
    finally:
        _, err = server.terminate()
    for name in names:
        assert err.count(f"model {name}: its API key variable MISTRAL_API_KEY") == 1, err
        assert err.count(f"model {name} has no prices") == 1, err
    assert "more like this" not in err

# Stream usage only where the model takes it -------------------------------------------------------


def test_a_model_refusing_stream_options_still_streams_through_the_gateway(
        mis: ThreadServer, mis_fake: FakeProviderProcess) -> None:
    messages = user("Count to three [[fake:reject_stream_options]]")
    for _ in range(2):
        stream = client(mis).chat.completions.create(
            model="ok", messages=messages, stream=True, stream_options={"include_usage": True})
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text.startswith("Echo from ok: Count to three")
    bodies = [r["body"] for r in mis_fake.requests()]
    assert ["stream_options" in b for b in bodies] == [True, False, False]  # retried, then known
    assert mis.service.gateway.health.state("ok") == "closed"


# Implicit sessions are scoped to the client ------------------------------------------------------


def from_address(gw: ThreadServer, address: str) -> openai.OpenAI:
    http = httpx2.Client(transport=httpx2.HTTPTransport(local_address=address))
    return openai.OpenAI(base_url=f"{gw.base}/v1", api_key="k", max_retries=0, timeout=15,
                         http_client=http)


def test_the_same_first_message_from_two_clients_is_two_conversations(
        gw: ThreadServer) -> None:
    opening = {"role": "user", "content": f"Explain tides to a child {uuid.uuid4().hex}"}
    quality_first = {"x-switchpoint-cost-weight": "0"}

    def ask(oai: openai.OpenAI, messages: list[Any]) -> dict[str, Any]:
        raw = oai.chat.completions.with_raw_response.create(model="auto", messages=messages,
                                                            extra_headers=quality_first)
        return log_entry(gw, raw.headers["x-switchpoint-request-id"])

    alice, bob = from_address(gw, "127.0.0.1"), from_address(gw, "127.0.0.2")
    first = ask(alice, [opening])
    assert first["pin_state"] == "fresh"
    # Bob opens with the very same message: not Alice's conversation, so not pinned.
    stranger = ask(bob, [opening])
    assert stranger["pin_state"] == "fresh" and stranger["session_id"] != first["session_id"]
    # Alice's second turn is her conversation: hard-pinned to the model that answered her.
    again = ask(alice, [opening, {"role": "assistant", "content": "..."},
                        {"role": "user", "content": "Shorter."}])
    assert again["pin_state"] == "hard" and again["session_id"] == first["session_id"]
    assert again["model"] == first["model"]


def test_a_key_sent_over_plain_http_beyond_this_machine_is_warned_about(tmp_path: Path) -> None:
    priced = {"input_per_mtok": 1, "output_per_mtok": 2, "api_key_env": "SP_TEST_PLAIN_KEY"}
    settings: dict[str, Any] = {"models": [
        {"name": "remote", "profile": "claude-v2", "base_url": "http://10.0.0.7:8000/v1",
         **priced},
        {"name": "named", "profile": "claude-v1", "base_url": "http://llm.internal/v1",
         **priced},
        {"name": "here", "profile": "gpt-4-1106-preview", "base_url": "http://127.0.0.1:9/v1",
         **priced},
        {"name": "local", "profile": "claude-instant-v1", "base_url": "http://localhost:9/v1",
         **priced},
        {"name": "sealed", "profile": "mistralai/mistral-7b-chat",
         "base_url": "https://10.0.0.8/v1", **priced}],
        "data_dir": str(tmp_path / "data")}
    with gateway_warnings() as warnings, Gateway.from_config(
            settings, loader=FACTORY, env={"SP_TEST_PLAIN_KEY": "sk-x"}, store=False):
        pass
    assert warnings == [
        f"model {name}: its base_url is plain http to {host}, so its API key "
        "(SP_TEST_PLAIN_KEY) crosses the network unencrypted; use https, or a loopback address "
        "for a proxy on this machine" for name, host in (("remote", "10.0.0.7"),
                                                          ("named", "llm.internal"))]
    # Without a key to send, plain http to a host of the network is not warned about.
    with gateway_warnings() as warnings, Gateway.from_config(
            settings, loader=FACTORY, env={}, store=False):
        pass
    assert not any("plain http" in w for w in warnings)


def test_a_loopback_host_however_spelt_is_this_machine_to_the_warning_and_to_serve() -> None:
    # One rule says which hosts reach only this machine: a key sent over plain http to any
    # spelling of loopback is not warned about, and serve binds to each as to loopback.
    spellings = ["LOCALHOST.", "localhost.", "localhost.localdomain", "127.1", "2130706433",
                 "0x7f.1", "[::ffff:127.0.0.1]", "[0:0::1]", "127.0.0.2"]
    beyond = ["0.0.0.0", "app.localhost", "10.0.0.7"]
    entries = [{"name": f"m{i}", "base_url": f"http://{host}:9/v1", "input_per_mtok": 1,
                "output_per_mtok": 2, "api_key_env": "SP_TEST_PLAIN_KEY"}
               for i, host in enumerate(spellings + beyond)]
    settings = load_settings(overrides={"models": entries}, environ={})
    warned = [message.split(",")[0] for key, message
              in misconfigurations(settings, {"SP_TEST_PLAIN_KEY": "sk-x"})
              if key.startswith("plain\0")]
    assert warned == [f"model m{len(spellings) + i}: its base_url is plain http to {host}"
                      for i, host in enumerate(beyond)]
    assert [host for host in spellings + beyond if is_loopback(host)] == spellings


def test_a_secret_in_a_base_url_sent_over_plain_http_is_warned_about(tmp_path: Path) -> None:
    """A password or a credential parameter in a base_url crosses the network as a key does;
    the warning names neither."""
    settings: dict[str, Any] = {"models": [
        {"name": "proxied", "profile": "claude-v2", "input_per_mtok": 1, "output_per_mtok": 2,
         "base_url": "http://bob:pw7Hq2Lm9Xc4@10.0.0.7:8000/v1"},
        {"name": "both", "profile": "claude-v1", "input_per_mtok": 1, "output_per_mtok": 2,
         "base_url": "http://llm.internal/v1?api-version=1&key=qk5Tz8Rw3Yn6",
         "api_key_env": "SP_TEST_PLAIN_KEY"},
        {"name": "harmless", "profile": "gpt-4-1106-preview", "input_per_mtok": 1,
         "output_per_mtok": 2, "base_url": "http://llm.internal/v1?api-version=1"},
        {"name": "here", "profile": "claude-instant-v1", "input_per_mtok": 1,
         "output_per_mtok": 2, "base_url": "http://bob:pw7Hq2Lm9Xc4@127.0.0.1:9/v1"}],
        "data_dir": str(tmp_path / "data")}
    with gateway_warnings() as warnings, Gateway.from_config(
            settings, loader=FACTORY, env={"SP_TEST_PLAIN_KEY": "sk-x"}, store=False):
        pass
    secret = "base_url's secret (its password or credential parameter)"
    assert [w for w in warnings if "plain http" in w] == [
        f"model proxied: its base_url is plain http to 10.0.0.7, so its {secret} crosses the "
        "network unencrypted; use https, or a loopback address for a proxy on this machine",
        "model both: its base_url is plain http to llm.internal, so its API key "
        f"(SP_TEST_PLAIN_KEY) and its {secret} cross the network unencrypted; use https, or a "
        "loopback address for a proxy on this machine"]
    assert not any("pw7Hq2Lm9Xc4" in w or "qk5Tz8Rw3Yn6" in w for w in warnings)


def test_a_key_no_header_can_carry_fails_over_and_is_named_without_its_value(
        tmp_path: Path, mis_fake: FakeProviderProcess) -> None:
    # A key pasted with a typographic character, or holding a line break, made every call to
    # its model a 500 internal_error (the request neither failed over nor was logged); one
    # line break inside it wrote a header of the key's second line upstream. A secret file's
    # last newline is only whitespace around the key.
    mis_fake.reset()
    base = mis_fake.openai_base_url
    priced = "input_per_mtok: 1, output_per_mtok: 2"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"""models:
  - {{name: pasted, profile: gpt-4-1106-preview, base_url: "{base}",
     api_key_env: SP_PASTED_KEY, {priced}, fallbacks: [split, newline]}}
  - {{name: split, profile: claude-v2, base_url: "{base}", api_key_env: SP_SPLIT_KEY,
     {priced}}}
  - {{name: newline, profile: gpt-3.5-turbo-1106, base_url: "{base}",
     api_key_env: SP_NEWLINE_KEY, {priced}}}
data_dir: {tmp_path / "data"}
""", encoding="utf-8")
    env = {"SP_PASTED_KEY": "sk-\u201cpasted-secret\u201d",
           "SP_SPLIT_KEY": "sk-split-secret\r\nX-Injected: second-secret",
           "SP_NEWLINE_KEY": "sk-newline-secret\n"}
    settings = load_settings(config, environ={})
    with gateway_warnings() as warnings, \
            thread_server(create_app(settings, loader=FACTORY, provider_env=env)) as server:
        raw = client(server).chat.completions.with_raw_response.create(
            model="pasted", messages=user())
        assert raw.parse().model == "newline"
        entry = log_entry(server, raw.headers["x-switchpoint-request-id"])
    assert [(a["model"], a["outcome"]) for a in entry["attempts"]] == [
        ("pasted", "missing_api_key"), ("split", "missing_api_key"), ("newline", "ok")]
    errors = [a["error"] for a in entry["attempts"][:2]]
    assert "SP_PASTED_KEY holds U+201C (character 4), which a request header cannot " \
           "carry" in errors[0]
    assert "SP_SPLIT_KEY holds U+000D (character 16)" in errors[1]
    assert [[*w.split(" for try 1, ", 1)[1].split(":", 2)[:2], w.rsplit("; ", 1)[1]]
            for w in warnings if ": no request sent upstream for try " in w] == [
        ["pasted", " missing_api_key", "failing over to split"],
        ["split", " missing_api_key", "failing over to newline"]]
    assert [w for w in warnings if w.startswith("model ") and "SP_SPLIT_KEY" in w] == [
        "model split: its API key variable SP_SPLIT_KEY holds U+000D (character 16), which a "
        "request header cannot carry: an API key is printable ASCII; export the key as its "
        "provider issued it; calls to it fail with missing_api_key until you export "
        "SP_SPLIT_KEY"]
    sent = mis_fake.requests()
    assert [r["headers"].get("authorization") for r in sent] == ["Bearer sk-newline-secret"]
    assert "x-injected" not in sent[0]["headers"]
    shown = str(entry) + " ".join(warnings)
    assert "secret" not in shown
