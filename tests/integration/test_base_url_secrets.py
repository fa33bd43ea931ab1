"""A model's ``base_url`` may carry a secret: a password (``https://user:password@host``) or a
credential parameter (``?key=``, ``?sig=``). Each is redacted wherever the URL, or a text quoting
it, leaves the process: the settings' and a card's repr, a config error, every answer and view
of the service, its failover reasons and request log, its log on stderr and the files of its
data_dir. A harmless parameter (``api-version``) is sent upstream after the endpoint's path and
shown as written."""

from __future__ import annotations

import base64
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint import ConfigError, Gateway
from switchpoint.catalog import Catalog, ModelCard
from switchpoint.config import load_settings
from switchpoint.errors import InvalidInputError
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, client
from tests.integration.servers import ProcessServer, thread_server

PASSWORD = "pw7Hq2Lm9Xc4"
GONE_PASSWORD = "gp3Jf6Ws8Ea1"
QUERY_KEY = "qk5Tz8Rw3Yn6"
SIGNATURE = "sg9Vb2Nm4Kd7"
REDIRECT_TOKEN = "rt4Pc1Qx6Uh2"
SECRETS = (PASSWORD, GONE_PASSWORD, QUERY_KEY, SIGNATURE, REDIRECT_TOKEN,
           # (what httpx sends for the URL's user and password: Basic authentication)
           base64.b64encode(f"bob:{PASSWORD}".encode()).decode(),
           base64.b64encode(f"carol:{GONE_PASSWORD}".encode()).decode())


def _dead_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(fake: FakeProviderProcess, data_dir: Path) -> str:
    return f"""models:
  - {{name: proxied, profile: gpt-4-1106-preview, input_per_mtok: 1, output_per_mtok: 2,
     base_url: "http://bob:{PASSWORD}@127.0.0.1:{fake.port}/v1?api-version=2024-06-01&key={QUERY_KEY}"}}
  - {{name: gone, profile: gpt-3.5-turbo-1106, input_per_mtok: 0.1, output_per_mtok: 0.2,
     base_url: "http://carol:{GONE_PASSWORD}@127.0.0.1:{_dead_port()}/v1?sig={SIGNATURE}",
     fallbacks: [proxied]}}
data_dir: {data_dir}
gateway:
  connect_timeout_s: 1
  read_timeout_s: 5
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  max_total_s: 10
"""


def _clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows {secret}: {text[:3000]}"


def test_the_settings_a_card_and_a_config_error_show_a_base_url_masked(tmp_path: Path) -> None:
    (tmp_path / "switchpoint.yaml").write_text(_config(FakeProviderProcess(port=9),
                                                       tmp_path / "data"), encoding="utf-8")
    settings = load_settings(tmp_path / "switchpoint.yaml", environ={})
    for shown in (repr(settings), str(settings)):
        _clean(shown, "the settings")
        assert "bob:[REDACTED]@127.0.0.1" in shown
        assert "?api-version=2024-06-01&key=[REDACTED]" in shown
    catalog = settings.catalog()
    assert catalog is not None
    _clean(repr(catalog), "the catalog")
    assert repr(catalog["gone"]).startswith("ModelCard(name='gone', profile='gpt-3.5-turbo-1106'")
    assert "?sig=[REDACTED]" in repr(catalog["gone"])
    # (what routing uses is the URL as written)
    assert catalog["gone"].base_url is not None and SIGNATURE in catalog["gone"].base_url
    with Gateway.from_config(tmp_path / "switchpoint.yaml", loader=FACTORY, env={}) as gateway:
        _clean(repr(gateway.settings), "Gateway.settings")
    with pytest.raises(ConfigError) as refused:
        load_settings(overrides={"models": [{"name": "m", "base_url":
                                             f"ftp://bob:{PASSWORD}@host/?token={QUERY_KEY}"}]},
                      environ={})
    _clean(str(refused.value), "a config error")
    assert 'got "ftp://bob:[REDACTED]@host/?token=[REDACTED]"' in str(refused.value)


def test_a_card_built_in_python_masks_its_url_and_teaches_the_redaction_its_secrets() -> None:
    from switchpoint._redact import redact

    card = ModelCard(name="m", base_url=f"https://u:{PASSWORD}@h/v1?api_key={QUERY_KEY}")
    _clean(repr(card), "a card")
    Catalog([card])
    # An error text quoting the secret in any form a URL does not show is redacted too.
    _clean(redact(f"upstream said: password {PASSWORD} and {QUERY_KEY} are wrong"), "redact")


@pytest.mark.parametrize("url", [f"https://bob:{PASSWORD}@[::1/v1?key={QUERY_KEY}",
                                 f"http://bob:{PASSWORD}@[proxy]/v1?key={QUERY_KEY}"],
                         ids=["unclosed-bracket", "bracketed-name"])
def test_a_base_url_that_is_no_url_is_refused_naming_it_its_secrets_masked(url: str) -> None:
    # A host in brackets that is no IP address (or whose bracket is not closed) cannot be
    # read as a URL: the config and a catalog built in Python refuse it naming the field,
    # as the URL is shown, masked (the catalog raised Python's ValueError, "Invalid IPv6
    # URL", naming nothing, as it looked for the URL's secrets).
    with pytest.raises(ConfigError) as refused:
        load_settings(overrides={"models": [{"name": "m", "base_url": url}]}, environ={})
    message = str(refused.value)
    assert message.startswith("models[0].base_url: cannot be read as a URL"), message
    assert "bob:[REDACTED]@" in message and "key=[REDACTED]" in message
    _clean(message, "a config error")
    with pytest.raises(InvalidInputError) as invalid:
        Catalog([ModelCard(name="m", base_url=url)])
    assert invalid.value.field == "models.m.base_url"
    assert "cannot be read as a URL" in str(invalid.value)
    _clean(str(invalid.value), "a catalog's refusal")


def _texts(answer: httpx.Response) -> str:
    return f"{answer.status_code} {dict(answer.headers)} {answer.text}"


@pytest.fixture
def served(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[tuple[ProcessServer, Path]]:
    config = tmp_path / "switchpoint.yaml"
    data = tmp_path / "data"
    config.write_text(_config(fake, data), encoding="utf-8")
    with ProcessServer("--config", config, "--log-level", "debug", "--access-log",
                       data_dir=data).start() as server:
        server.wait_ready()
        yield server, data


def _chat(server: ProcessServer, model: str, content: str) -> httpx.Response:
    return httpx.post(f"{server.base}/v1/chat/completions", timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": content}]})


def test_no_answer_view_log_or_file_of_the_service_shows_a_secret_of_a_base_url(
        fake: FakeProviderProcess, served: tuple[ProcessServer, Path]) -> None:
    server, data = served
    seen: list[str] = []
    # The unreachable model fails over (its connection error a try of the request log).
    failed_over = _chat(server, "gone", "Which model answers?")
    assert failed_over.status_code == 200, failed_over.text
    assert failed_over.headers["x-switchpoint-model"] == "proxied"
    seen.append(_texts(failed_over))
    # The URL was used as written: the user and password as Basic authentication, the query
    # after the endpoint's path.
    asked = fake.requests()[-1]
    assert asked["path"] == "/v1/chat/completions"
    assert asked["target"].startswith("/v1/chat/completions?api-version=2024-06-01&key="), asked
    assert asked["headers"]["authorization"].startswith("Basic ")
    # An upstream quoting the URL it was asked (and the credentials) in its error.
    fake.script("proxied", "echo_url")
    echoed = _chat(server, "proxied", "Quote my URL.")
    assert echoed.status_code >= 400
    seen.append(_texts(echoed))
    assert "/v1/chat/completions?api-version=2024-06-01&key=[REDACTED]" in echoed.text
    # A redirect to a URL with credentials in its query.
    elsewhere = f"http://127.0.0.1:9/v1?sig={SIGNATURE}&token={REDIRECT_TOKEN}&x=1"
    fake.reset()
    fake.script("proxied", *["redirect:location=" + urllib.parse.quote(elsewhere, safe="")] * 5)
    redirected = _chat(server, "proxied", "Follow me.")
    assert redirected.status_code >= 400
    seen.append(_texts(redirected))
    assert "sig=[REDACTED]&token=[REDACTED]&x=1" in redirected.text
    # Only the unreachable model: every try failed, each named in the error answer.
    fake.reset()
    fake.script("proxied", *["500"] * 5)
    none = _chat(server, "gone", "Nobody answers.")
    assert none.status_code >= 500
    seen.append(_texts(none))
    for path in ("/v1/models", "/v1/models/gone", "/v1/router/stats", "/v1/router/health",
                 "/v1/router/status", "/v1/router/requests", "/health", "/metrics"):
        answer = httpx.get(f"{server.base}{path}", timeout=15)
        assert answer.status_code == 200, (path, answer.text)
        seen.append(_texts(answer))
    requests: Any = httpx.get(f"{server.base}/v1/router/requests", timeout=15).json()
    assert "could not connect" in str(requests)  # (the connection error is logged, masked)
    reload = httpx.post(f"{server.base}/v1/router/reload", timeout=60)
    assert reload.status_code == 200, reload.text
    seen.append(_texts(reload))
    code, stderr = server.terminate()
    assert code == 0, stderr
    seen.extend((server.stdout, stderr))
    for i, text in enumerate(seen):
        _clean(text, f"answer {i}")
    for file in sorted(p for p in data.rglob("*") if p.is_file()):
        content = file.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in content, f"{file.name} holds {secret}"



def test_a_user_in_the_base_url_of_a_model_sending_its_key_as_a_bearer_token_is_refused(
        ) -> None:
    """The HTTP client sends a base_url's user and password as Basic authentication in the
    Authorization header, where the OpenAI wire format sends the api_key_env's key as a
    Bearer token: the key would never be sent. Such a config is refused at load, naming the
    model's base_url and saying which of the two to keep; the password stays masked."""
    for url in (f"http://bob:{PASSWORD}@127.0.0.1:9/v1", "http://bob@127.0.0.1:9/v1"):
        for provider in ({}, {"provider": "openai"}, {"provider": "groq"}):
            with pytest.raises(ConfigError) as refused:
                load_settings(overrides={"models": [
                    {"name": "ok", "base_url": "http://127.0.0.1:9/v1"},
                    {"name": "proxied", "base_url": url, "api_key_env": "PROXIED_KEY",
                     **provider}]}, environ={})
            message = str(refused.value)
            _clean(message, "the refusal")
            assert refused.value.key == "models[1].base_url", message
            assert message.startswith('models[1].base_url: of model "proxied" carries a '
                                      f"user{' and password' if PASSWORD in url else ''} ("), \
                message
            assert "replacing the Bearer key from PROXIED_KEY (api_key_env)" in message
            assert message.endswith("keep one of the two, the key (take "
                                    f"a user{' and password' if PASSWORD in url else ''} out "
                                    "of base_url) or the password (leave api_key_env out)")
    # Without a key, the password is how the model authenticates: taken.
    load_settings(overrides={"models": [{"name": "proxied", "base_url":
                                         f"http://bob:{PASSWORD}@127.0.0.1:9/v1"}]}, environ={})


def test_a_user_in_the_base_url_of_a_messages_api_model_is_sent_beside_its_key(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The Messages API takes its key in x-api-key, so a proxy that asks for a password in
    front of it (the base_url's user and password) gets both: the config is taken, and each
    request carries the key and the Basic authentication."""
    fake.reset()
    settings = load_settings(overrides={"models": [{
        "name": "claude", "provider": "anthropic", "profile": "gpt-4-1106-preview",
        "api_key_env": "PROXIED_KEY", "input_per_mtok": 1, "output_per_mtok": 2,
        "base_url": f"http://bob:{PASSWORD}@127.0.0.1:{fake.port}"}],
        "data_dir": str(tmp_path / "data")}, environ={})
    app = create_app(settings, loader=FACTORY, provider_env={"PROXIED_KEY": "pk-proxied-key-1"})
    with thread_server(app) as server:
        answer = client(server).chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "hello"}])
    assert (answer.choices[0].message.content or "").startswith("Echo from")
    (asked,) = fake.requests()
    assert asked["path"] == "/v1/messages"
    assert asked["headers"]["x-api-key"] == "pk-proxied-key-1"
    assert asked["headers"]["authorization"] == "Basic " + base64.b64encode(
        f"bob:{PASSWORD}".encode()).decode()


TOKEN = "tk8Fd3Jw5Zp1"


def test_a_token_given_as_a_base_urls_user_alone_is_masked_as_a_password_is(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``https://TOKEN@host/v1``: a credential sent as the URL's user, with no password (some
    proxies and hosts take one so). It is masked as a password is in a config error, the
    settings' and a card's view and the service's log (the user of a user and password, no
    secret, is still shown)."""
    token_secrets = (TOKEN, base64.b64encode(f"{TOKEN}:".encode()).decode())

    def clean(text: str, where: str) -> None:
        for secret in token_secrets:
            assert secret not in text, f"{where} shows {secret}: {text[:3000]}"

    with pytest.raises(ConfigError) as refused:
        load_settings(overrides={"models": [{"name": "m", "base_url": f"ftp://{TOKEN}@host/v1"}]},
                      environ={})
    clean(str(refused.value), "a config error")
    assert 'got "ftp://[REDACTED]@host/v1"' in str(refused.value), str(refused.value)
    url = f"http://{TOKEN}@127.0.0.1:{fake.port}/v1"
    with pytest.raises(ConfigError) as refused:  # (with a key, which the user would displace)
        load_settings(overrides={"models": [{"name": "m", "base_url": url,
                                             "api_key_env": "M_KEY"}]}, environ={})
    clean(str(refused.value), "a config error")
    assert f'carries a user ("http://[REDACTED]@127.0.0.1:{fake.port}/v1")' in str(
        refused.value), str(refused.value)

    config = tmp_path / "switchpoint.yaml"
    data = tmp_path / "data"
    config.write_text(f"""models:
  - {{name: tokened, profile: gpt-4-1106-preview, input_per_mtok: 1, output_per_mtok: 2,
     base_url: "{url}"}}
data_dir: {data}
gateway: {{backoff_base_s: 0.01, backoff_cap_s: 0.02, read_timeout_s: 5}}
""", encoding="utf-8")
    settings = load_settings(config, environ={})
    catalog = settings.catalog()
    assert catalog is not None
    for where, shown in (("the settings", repr(settings)), ("a card", repr(catalog["tokened"]))):
        clean(shown, where)
        assert f"http://[REDACTED]@127.0.0.1:{fake.port}/v1" in shown, shown
    assert catalog["tokened"].base_url == url  # (what is sent is the URL as written)

    # An upstream quoting the URL and the token in its error: the failed try's log line.
    said = f"refused http://{TOKEN}@127.0.0.1:{fake.port}/v1, user {TOKEN}"
    fake.script("tokened", "500:message=" + urllib.parse.quote(said, safe=""))
    with ProcessServer("--config", config, "--log-level", "debug", "--access-log",
                       data_dir=data).start() as server:
        server.wait_ready()
        answer = _chat(server, "tokened", "Who am I?")
        assert answer.status_code == 200, answer.text
        clean(_texts(answer), "the answer")
        for path in ("/v1/models", "/v1/models/tokened", "/v1/router/requests"):
            view = httpx.get(f"{server.base}{path}", timeout=15)
            assert view.status_code == 200, (path, view.text)
            clean(_texts(view), path)
        code, stderr = server.terminate()
    assert code == 0, stderr
    # (the token reached the upstream, as the user of Basic authentication)
    assert fake.requests()[-1]["headers"]["authorization"] == "Basic " + token_secrets[1]
    assert f"refused http://[REDACTED]@127.0.0.1:{fake.port}/v1, user [REDACTED]" in stderr, \
        stderr
    clean(stderr + server.stdout, "the log")
    for file in sorted(p for p in data.rglob("*") if p.is_file()):
        for secret in token_secrets:
            assert secret.encode() not in file.read_bytes(), f"{file.name} holds {secret}"
