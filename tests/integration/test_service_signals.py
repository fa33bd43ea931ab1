"""Signals to ``switchpoint serve`` as an operator sends them (``kill -HUP``): the service in a
subprocess, as a user runs it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import KEYS, config_text
from tests.integration.servers import ProcessServer

ADDED = ('  - {name: added, base_url: "http://127.0.0.1:9/v1", input_per_mtok: 1, '
         'output_per_mtok: 1, tier: simple}\n')

# A provider key pasted where a number goes: the error quotes the value.
LEAKED = "sk-proj-" + "Q" * 40


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_sighup_reloads_the_config_and_a_broken_one_leaves_the_running_one_serving(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``SIGHUP`` reloads the config as ``POST /v1/router/reload`` does (it ended the process
    at once, dropping what it had in flight unlogged); a config that cannot load is logged
    with its key (and redacted, as the HTTP reload's answer is), and the running one keeps
    serving."""
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    text = config_text(fake, str(data))
    config.write_text(text, encoding="utf-8")
    server = ProcessServer("--config", config, "--log-level", "info", data_dir=data,
                           env=KEYS).start()
    assert server.proc is not None
    try:
        server.wait_ready()

        def models() -> list[str]:
            listed = httpx.get(f"{server.base}/v1/models", timeout=10).json()["data"]
            return [m["id"] for m in listed]

        assert "added" not in models()
        config.write_text(text.replace("data_dir:", ADDED + "data_dir:"), encoding="utf-8")
        server.proc.send_signal(signal.SIGHUP)
        _until(lambda: "SIGHUP: config reloaded" in server.stderr, "reloaded on SIGHUP")
        assert server.proc.poll() is None
        assert "added" in models()

        config.write_text(text + f"cost_weight: {LEAKED}\n", encoding="utf-8")
        server.proc.send_signal(signal.SIGHUP)
        _until(lambda: "SIGHUP: the config was not reloaded" in server.stderr,
               "a broken config refused")
        assert "cost_weight" in server.stderr.split("SIGHUP: the config was not reloaded")[1]
        assert LEAKED not in server.stderr  # a secret pasted in the wrong place is redacted
        assert server.proc.poll() is None
        assert "added" in models()  # the running config still serves
        code, err = server.terminate()
        assert code in (0, -signal.SIGTERM), err  # uvicorn shuts down, then re-raises it
    finally:
        if server.proc.poll() is None:
            server.kill()
