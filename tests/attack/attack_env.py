"""The attack suite's world (the fixtures are in conftest.py): the fake upstream, and one
`switchpoint serve` process under attack, as a user runs it (the guarded protocol, the
rate-limited log), with an open-file limit of 1024 and low limits in its config so each attack
finishes in seconds. Each test starts with the fake's scripts and every model's health
forgotten, and ends checking that the server failed no request and logged no traceback.

The server's catalog: ``alpha`` (falls back to ``beta``), ``beta``, ``gamma`` (Anthropic
dialect, a key that does not look like a key, tools) and ``solo`` (no fallback). Every key is
"secret": the leak tests look for them everywhere.
"""

from __future__ import annotations

import functools
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.fork_server import Forked, popen
from tests.integration.servers import free_port, wait_ready

ADMIN_TOKEN = "attack-admin-token-0123456789"
KEYS = {"ALPHA_KEY": "sk-alpha-secret-0123456789abcdef",
        "BETA_KEY": "sk-beta-secret-0123456789abcdef",
        "GAMMA_KEY": "gamma-plain-secret-value-42",
        "SOLO_KEY": "solo-plain-secret-value-77",
        "SP_ATTACK_ADMIN": ADMIN_TOKEN}
SECRETS = tuple(KEYS.values())
NOFILE = 1024
LIMITS = {"max_connections": 100, "header_timeout_s": 1.0, "body_timeout_s": 1.0,
          "keep_alive_timeout_s": 1.5, "write_timeout_s": 2.0, "max_header_bytes": 8192,
          "max_body_buffer_bytes": 4 << 20}
MAX_TOTAL_S = 2.0
PIN_HARD_S = 1.0
PIN_SOFT_S = 1.2


def config_text(fake: FakeProviderProcess, data_dir: Path, extra: str = "",
                server_lines: str = "", limits: Mapping[str, float] | None = None,
                max_total_s: float = MAX_TOTAL_S) -> str:
    """The attack config, ``extra`` (top level YAML) added, and ``server_lines`` (lines of the
    ``server:`` block, indented two spaces) added to its limits, ``limits`` replacing some of
    :data:`LIMITS`, a request's deadline ``gateway.max_total_s``."""
    openai = fake.openai_base_url
    server = "\n".join(f"  {k}: {v}" for k, v in {**LIMITS, **(limits or {})}.items())
    server += server_lines
    return f"""models:
  - {{name: alpha, base_url: "{openai}", api_key_env: ALPHA_KEY, input_per_mtok: 1,
     output_per_mtok: 2, tier: simple, fallbacks: [beta]}}
  - {{name: beta, base_url: "{openai}", api_key_env: BETA_KEY, input_per_mtok: 1,
     output_per_mtok: 2, tier: simple}}
  - {{name: gamma, provider: anthropic, base_url: "{fake.url}", api_key_env: GAMMA_KEY,
     input_per_mtok: 3, output_per_mtok: 6, tier: moderate, capabilities: [tools]}}
  - {{name: solo, base_url: "{openai}", api_key_env: SOLO_KEY, input_per_mtok: 1,
     output_per_mtok: 2, tier: simple}}
data_dir: {data_dir}
admin_token_env: SP_ATTACK_ADMIN
server:
{server}
gateway:
  connect_timeout_s: 1
  read_timeout_s: 2
  first_token_timeout_s: 2
  max_total_s: {max_total_s}
  max_attempts_per_model: 1
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  max_retry_after_s: 1
  pin_hard_window_s: {PIN_HARD_S}
  pin_soft_window_s: {PIN_SOFT_S}
  pin_purge_interval_s: 0.3
  failure_threshold: 1000       # attacks fail upstreams on purpose: few circuits open for
  error_rate_threshold: 1.0     # that (5 calls, all failed, still do: each test starts with
  cooldown_s: 0.1               # every model's health forgotten, see conftest.py, and one
  max_cooldown_s: 0.1           # opened within a test closes at once)
{extra}"""


@dataclass
class Attacked:
    """The server under attack: its base URL, process, stderr file and data dir."""

    base: str
    port: int
    proc: subprocess.Popen[str] | Forked
    log_path: Path
    data_dir: Path

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def status(self, field: str) -> int:
        """A figure of /proc/<pid>/status in kB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def server_failures(self) -> int:
        """How many requests the server has answered 500 (or failed without answering)."""
        text = httpx.get(f"{self.base}/metrics", headers=self.admin, timeout=10).text
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith("switchpoint_http_requests_total{")
                   and 'status="500"' in line)

    def forget_health(self) -> None:
        """Close every model's circuit and end its upstream's Retry-After wait: what one test
        made an upstream do does not keep a model out of the next."""
        r = httpx.post(f"{self.base}/v1/router/health/reset", headers=self.admin, timeout=10)
        r.raise_for_status()

    def requests(self, limit: int = 50) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.base}/v1/router/requests", params={"limit": limit},
                      headers=self.admin, timeout=10)
        r.raise_for_status()
        data: list[dict[str, Any]] = r.json()["data"]
        return data

    def entry(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.requests():
                if entry["id"] == request_id:
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"request {request_id} is not in the log")
            time.sleep(0.05)

    def reload_with_model(self, entry: str) -> httpx.Response:
        """Ask the service to reload its config with the catalog entry ``entry`` (YAML flow)
        added first, and put the config back after: the reload's answer."""
        served = self.data_dir.parent / "switchpoint.yaml"
        before = served.read_text(encoding="utf-8")
        served.write_text(before.replace("models:\n", f"models:\n  - {entry}\n", 1),
                          encoding="utf-8")
        try:
            return httpx.post(f"{self.base}/v1/router/reload", headers=self.admin, timeout=30)
        finally:
            served.write_text(before, encoding="utf-8")


@contextmanager
def serving(fake: FakeProviderProcess, root: Path, extra: str = "", server_lines: str = "",
            flags: tuple[str, ...] = (), limits: Mapping[str, float] | None = None,
            max_total_s: float = MAX_TOTAL_S) -> Iterator[Attacked]:
    """`switchpoint serve` on a free loopback port with the attack config (plus ``extra``, top
    level YAML, ``server_lines``, lines of its ``server:`` block, ``limits`` replacing some
    of :data:`LIMITS`, and ``max_total_s``) and ``flags``, files under ``root``; stopped on
    exit."""
    config = root / "switchpoint.yaml"
    data_dir = root / "data"
    config.write_text(config_text(fake, data_dir, extra, server_lines, limits, max_total_s),
                      encoding="utf-8")
    port = free_port()
    log_path = root / "serve.log"
    env = {**os.environ, **KEYS}
    with log_path.open("wb") as log:  # (forked from the tests' fork server: fork_server.py)
        proc = popen(
            [sys.executable, "-m", "switchpoint.cli", "serve", "--port", str(port),
             "--config", str(config), "--log-level", "info", *flags],
            env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=limit_files)
    server = Attacked(f"http://127.0.0.1:{port}", port, proc, log_path, data_dir)
    try:
        wait_ready(server.base, timeout=90)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# (a partial of the builtin: a forked start takes it without importing this module)
limit_files = functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def chat_body(text: str = "hello", model: str = "alpha", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}
