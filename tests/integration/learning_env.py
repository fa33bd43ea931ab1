"""The learning tests' world: the two-kinds weights (fake embedder) behind a real gateway whose
catalog points at the fake provider, so feedback, memories, comparisons and experiments run
over HTTP in a few seconds.

Math prompts: ``strong`` is right 90% of the time, ``runner`` 75%, ``cheap`` 20%; poems: all
90% (see tests/fakes/two_kinds.py). Prices 10 / 5 / 1.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from switchpoint.config import Settings, load_settings
from switchpoint.gateway import Gateway
from switchpoint.gateway.live import learning_settings
from switchpoint.router import Router
from switchpoint.server import create_app
from switchpoint.weights import WeightsPackage
from tests.conftest import FakeEmbedder
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import two_kinds_package
from tests.integration.gateway_env import KEYS as GATEWAY_KEYS
from tests.integration.servers import ProcessServer, ThreadServer, thread_server

EMBEDDER = FakeEmbedder()
_PACKAGES: dict[str, WeightsPackage] = {}
KEYS = {"FAKE_KEY": "sk-fake"}


def package(policy: str = "cluster") -> WeightsPackage:
    """The two-kinds weights of ``policy`` (cluster or knn), fitted once per session."""
    if policy not in _PACKAGES:
        _PACKAGES[policy] = two_kinds_package(EMBEDDER, policy)
    return _PACKAGES[policy]


def loader(settings: Settings, policy: str | None) -> Router:
    """Builds routers as the service's factory does, over the two-kinds weights (of the
    config's ``policy`` when no swap names one)."""
    name = policy or settings.policy
    name = name if name in ("knn", "tiers") else "cluster"
    return Router(package(name), catalog=settings.catalog(), embedder=EMBEDDER,
                  cost_weight=settings.cost_weight, learning=learning_settings(settings))


def started_gateway(settings: Settings) -> Gateway:
    """A gateway of ``settings`` routing with :func:`loader` over the fake provider's keys,
    started; close it (``with`` does)."""
    gateway = Gateway(settings, loader=loader, env=KEYS)
    gateway.start()
    return gateway


def counting_loader() -> tuple[list[str | None], Callable[[Settings, str | None], Router]]:
    """The policies a gateway's router loads were asked for (None: its configured one), and
    the loader (:func:`loader`) that counts them."""
    loads: list[str | None] = []

    def counted(settings: Settings, policy: str | None) -> Router:
        loads.append(policy)
        return loader(settings, policy)

    return loads, counted


def config_text(fake: FakeProviderProcess, data_dir: Path, extra: str = "",
                more_models: str = "") -> str:
    """The config; ``more_models`` adds entries to its model list (``{base}`` is the fake
    provider's URL)."""
    base = fake.openai_base_url
    more = more_models.replace("{base}", base)
    return f"""models:
  - {{name: strong, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 10,
     output_per_mtok: 10, capabilities: [tools]}}
  - {{name: runner, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 5,
     output_per_mtok: 5, capabilities: [tools]}}
  - {{name: cheap, base_url: "{base}", api_key_env: FAKE_KEY, input_per_mtok: 1,
     output_per_mtok: 1, capabilities: [tools]}}
{more}cost_weight: 0.1
data_dir: {data_dir}
gateway:
  connect_timeout_s: 1
  read_timeout_s: 2
  backoff_base_s: 0.01
  backoff_cap_s: 0.02
  max_total_s: 10
  pin_hard_window_s: 0
  pin_soft_window_s: 0
{extra}"""


def settings_for(fake: FakeProviderProcess, root: Path, extra: str = "",
                 environ: dict[str, str] | None = None, more_models: str = "") -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake, root / "data", extra, more_models), encoding="utf-8")
    return load_settings(config, environ=environ or {})


@contextmanager
def learning_server(fake: FakeProviderProcess, root: Path, extra: str = "",
                    environ: dict[str, str] | None = None, more_models: str = ""
                    ) -> Iterator[ThreadServer]:
    settings = settings_for(fake, root, extra, environ, more_models)
    with thread_server(create_app(settings, loader=loader, provider_env=KEYS)) as server:
        yield server


def chat(server: ThreadServer, prompt: str, *, key: str = "sk-anything",
         model: str = "auto", session: str | None = None,
         **kwargs: Any) -> tuple[Mapping[str, str], Any]:
    """One chat request through the official client: (headers, completion)."""
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0,
                           timeout=15)
    extra = {"x-session-id": session} if session is not None else None
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], extra_headers=extra,
        **kwargs)
    return raw.headers, raw.parse()


def feedback(server: ThreadServer | ProcessServer, decision_id: str, key: str | None = None,
             **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.base}/v1/feedback", json={"decision_id": decision_id, **body},
                      headers=headers, timeout=15)


def scored(server: ThreadServer | ProcessServer, decision_id: str, score: float
           ) -> dict[str, Any]:
    """``POST /v1/feedback`` with a score, which must be taken: its answer."""
    r = feedback(server, decision_id, score=score)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def serve(config: Path, data: Path) -> ProcessServer:
    """``switchpoint serve --config`` in a subprocess on ``data``, ready (the gateway config's
    provider keys set)."""
    server = ProcessServer("--config", config, data_dir=data, env=GATEWAY_KEYS).start()
    server.wait_ready()
    return server


def get(server: ThreadServer, path: str, key: str | None = None,
        **params: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{server.base}{path}", params=params, headers=headers, timeout=15)


def post(server: ThreadServer, path: str, body: Any = None, key: str | None = None
         ) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.base}{path}", json=body, headers=headers, timeout=30)


def hold_readying(state: Any, monkeypatch: Any) -> tuple[threading.Event, threading.Event]:
    """Hold every new snapshot ``state`` readies (a reload's, an experiment's creation or end)
    once it is readied and before it goes live: the first event is set there, and the
    snapshot goes on once the second is set."""
    prepare = state.prepare
    assert prepare is not None
    readied, go_on = threading.Event(), threading.Event()

    def held(live: Any, old: Any) -> Any:
        made = prepare(live, old)
        readied.set()
        go_on.wait(30)
        return made

    monkeypatch.setattr(state, "prepare", held)
    return readied, go_on
