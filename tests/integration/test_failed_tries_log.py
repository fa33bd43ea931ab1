"""Each upstream try that fails leaves one line in `switchpoint serve`'s log on stderr: the
request id, the model, the try, the error's kind and HTTP status, the reason redacted and cut,
and what followed (a retry, the next model, the request's failure). A retried 429 is INFO, any
other failed try a WARNING; an answer logs nothing. An outage of a thousand failed tries
prints a handful of lines for each model, as the log's repeat limit lets through, not a
thousand; one model's outage does not hide another's failures."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from switchpoint import Gateway
from switchpoint.errors import GatewayError
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.servers import ProcessServer

PASSWORD = "pw5Rt8Kz2Qn7"
KEY = "sk-second-Jq4Wm9Vx3Lp6"
SECRETS = (PASSWORD, KEY, base64.b64encode(f"bob:{PASSWORD}".encode()).decode(),
           KEY.removeprefix("sk-"))
# Each request makes 2 tries of first (whose fallback is second), then 2 of second.
TRIES_PER_REQUEST = 4
REQUESTS = 250


def _config(fake: FakeProviderProcess, data_dir: Path) -> str:
    return f"""models:
  - {{name: first, profile: gpt-4-1106-preview, input_per_mtok: 1, output_per_mtok: 2,
     base_url: "http://bob:{PASSWORD}@127.0.0.1:{fake.port}/v1", fallbacks: [second]}}
  - {{name: second, profile: gpt-3.5-turbo-1106, input_per_mtok: 0.1, output_per_mtok: 0.2,
     base_url: "http://127.0.0.1:{fake.port}/v1", api_key_env: SECOND_KEY}}
data_dir: {data_dir}
gateway:
  max_attempts_per_model: 2
  backoff_base_s: 0
  backoff_cap_s: 0
  failure_threshold: 1000
  error_rate_threshold: 1
"""


@pytest.fixture
def served(fake: FakeProviderProcess, tmp_path: Path) -> Iterator[ProcessServer]:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(_config(fake, tmp_path / "data"), encoding="utf-8")
    with ProcessServer("--config", config, "--log-level", "info", data_dir=tmp_path / "data",
                       env={"SECOND_KEY": KEY}).start() as server:
        server.wait_ready()
        yield server


def _tries_logged(server: ProcessServer, least: int = 0, timeout: float = 10.0) -> list[str]:
    """The server's lines of failed tries, once there are at least ``least`` of them (a line
    reaches its stderr, read by a thread, a moment after the answer it was written for)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.stderr.splitlines() if "upstream try" in line]
        if len(lines) >= least or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_each_failed_try_is_logged_redacted_and_bounded_an_outage_within_the_repeat_limit(
        fake: FakeProviderProcess, served: ProcessServer) -> None:
    chat = openai.OpenAI(base_url=f"{served.base}/v1", api_key="sk-anything",
                         max_retries=0, timeout=30).chat.completions
    # An answer logs nothing.
    answered = chat.create(model="first", messages=[{"role": "user", "content": "Hello?"}])
    assert answered.model == "first"
    assert _tries_logged(served) == []
    # Every upstream fails quoting the credentials it was sent, at length: first's try is
    # rate limited once, then each try is a 500 (first's) or a 503 (second's).
    fake.script("first", "429")
    fake.default("first", "echo_auth:status=500,pad=5000")
    fake.default("second", "echo_auth:status=503,pad=5000")
    with pytest.raises(openai.APIStatusError) as failed:
        chat.with_raw_response.create(model="first",
                                      messages=[{"role": "user", "content": "Anyone?"}])
    request_id = failed.value.response.headers["x-switchpoint-request-id"]
    lines = _tries_logged(served, least=4)
    assert [line.split(":", 1)[0] for line in lines] == ["INFO"] + ["WARNING"] * 3, lines
    for line, (number, tried, then) in zip(lines, [
            (1, "first: rate_limited (HTTP 429): ", "; retrying first after 0 s"),
            (2, "first: server_error (HTTP 500): ", "; failing over to second"),
            (1, "second: server_error (HTTP 503): ", "; retrying second after 0 s"),
            (2, "second: server_error (HTTP 503): ", "; the request fails")], strict=True):
        assert f"request {request_id}: upstream try {number} failed, {tried}" in line, line
        assert line.endswith(then), line
    assert "Invalid credentials in request: Authorization: Basic [REDACTED]" in lines[1]
    assert "Authorization: Bearer [REDACTED]" in lines[2]
    # A stream cut after its answer began fails the request: its try is a line too.
    fake.script("first", "cut:after=2")
    with pytest.raises(openai.APIError):
        for _ in chat.create(model="first", stream=True,
                             messages=[{"role": "user", "content": "Cut me off."}]):
            pass
    (cut,) = _tries_logged(served, least=len(lines) + 1)[len(lines):]
    assert cut.startswith("WARNING:     request "), cut
    assert ": upstream try 1 failed, first: stream_broken: " in cut, cut
    assert cut.endswith("; the request fails"), cut

    # An outage: a thousand failed tries more, a few lines.
    def ask(n: int) -> int:
        try:
            chat.create(model="first", messages=[{"role": "user", "content": f"Anyone {n}?"}])
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(ask, range(REQUESTS)))
    assert statuses == [502] * REQUESTS
    asked = [r for r in fake.requests() if r["path"] == "/v1/chat/completions"]
    assert len(asked) >= REQUESTS * TRIES_PER_REQUEST
    lines = _tries_logged(served)
    # Five a minute of each model's pass, its INFO and WARNING lines together (and, past a
    # minute, five more with the count of those not logged).
    for model in ("first", "second"):
        its = [line for line in lines if f" failed, {model}: " in line]
        assert 5 <= len(its) < 30, len(its)
        assert its[4].endswith("[repeated 5 times; more like this are not logged for up to "
                               "60 s]"), its[4]
    for line in lines:
        assert len(line) < 700, line
    stderr = served.stderr
    for secret in SECRETS:
        assert secret not in stderr, secret


class _Kept(logging.Handler):
    """The failed-try lines a program's own handler on the gateway's logger is given."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "upstream try" in record.getMessage():
            self.lines.append(f"{record.levelname}: {record.getMessage()}")


def test_a_gateway_in_process_holds_an_outage_to_the_same_repeat_limit(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """In process no handler of the service's limits the log: a notebook's loop through an
    outage printed every failed try's WARNING on stderr (Python's last resort handler), one
    line each. The gateway holds them to the same five a minute itself."""
    config = {"models": [{"name": "first", "profile": "gpt-4-1106-preview",
                          "base_url": f"http://127.0.0.1:{fake.port}/v1"}],
              "data_dir": str(tmp_path / "data"),
              "gateway": {"max_attempts_per_model": 2, "backoff_base_s": 0,
                          "backoff_cap_s": 0, "failure_threshold": 1000,
                          "error_rate_threshold": 1}}
    fake.default("first", "500")
    kept = _Kept()
    logger = logging.getLogger("switchpoint.gateway")
    logger.addHandler(kept)
    try:
        with Gateway.from_config(config, env={}) as gateway:
            for n in range(20):
                with pytest.raises(GatewayError):
                    gateway.complete([{"role": "user", "content": f"Anyone {n}?"}],
                                     model="first")
    finally:
        logger.removeHandler(kept)
    asked = [r for r in fake.requests() if r["path"] == "/v1/chat/completions"]
    assert len(asked) == 40
    assert len(kept.lines) == 5, kept.lines
    assert kept.lines[0].startswith("WARNING: request "), kept.lines[0]
    assert kept.lines[0].endswith("; retrying first after 0 s"), kept.lines[0]
    assert kept.lines[4].endswith("[repeated 5 times; more like this are not logged for up "
                                  "to 60 s]"), kept.lines[4]


def test_one_models_outage_does_not_hide_anothers_failed_tries(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Every failed try's line was one message: a model's outage used the minute's five lines,
    and another model's failures meanwhile were not logged, only counted."""
    gateway_config = {"max_attempts_per_model": 2, "backoff_base_s": 0, "backoff_cap_s": 0,
                      "failure_threshold": 1000, "error_rate_threshold": 1}
    config = {"models": [{"name": name, "profile": "gpt-4-1106-preview",
                          "base_url": f"http://127.0.0.1:{fake.port}/v1"}
                         for name in ("first", "second")],
              "data_dir": str(tmp_path / "data"), "gateway": gateway_config}
    fake.default("first", "500")
    fake.default("second", "503")
    kept = _Kept()
    logger = logging.getLogger("switchpoint.gateway")
    logger.addHandler(kept)
    try:
        with Gateway.from_config(config, env={}) as gateway:
            for model, requests in (("first", 20), ("second", 2)):
                for n in range(requests):
                    with pytest.raises(GatewayError):
                        gateway.complete([{"role": "user", "content": f"Anyone {n}?"}],
                                         model=model)
    finally:
        logger.removeHandler(kept)
    asked = [r["body"]["model"] for r in fake.requests() if r["path"] == "/v1/chat/completions"]
    assert asked == ["first"] * 40 + ["second"] * 4
    first = [line for line in kept.lines if " failed, first: server_error (HTTP 500)" in line]
    second = [line for line in kept.lines if " failed, second: server_error (HTTP 503)" in line]
    assert len(first) == 5 and len(second) == 4 and len(kept.lines) == 9, kept.lines
    assert first[4].endswith("[repeated 5 times; more like this are not logged for up to "
                             "60 s]"), first[4]
    assert [line.rsplit("; ", 1)[1] for line in second] == [
        "retrying second after 0 s", "the request fails"] * 2, second
