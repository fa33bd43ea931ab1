"""The first request after a start beside the ones after it, per route of `switchpoint serve`.

For each route, in each round, starts a fresh `switchpoint serve` on loopback (bundled default
weights, a fresh data directory, a config of two priced models at the fake provider
``tests/fakes/fake_provider.py``, an admin token, and the bundled knn policy's weights listed
under ``policies:``), waits for a ready ``/health``, then sends that route's request 21 times
one after the other on one keep-alive connection and keeps the first answer's time and the
median of the next 20. Each figure is then the median over rounds (``--rounds``); a round
starts every tree's service for a route before the next route (the shared machine's speed
drifts).

The routes: ``POST /v1/route``; ``POST /v1/chat/completions`` with ``model: "auto"``,
non-streamed and streamed (timed to the last byte), answered by the fake provider;
``POST /v1/feedback`` (on 21 decisions routed through ``/v1/route`` before the first one is
timed); ``POST /v1/router/experiments`` (created with the config's routing as one arm and the
knn policy as the other, whose weights are then first hashed; each ended, untimed, before
the next: a tenant takes part in one enabled experiment at a time) and the ``DELETE`` that
ends one (``experiment end``, the next created, untimed, after each); ``POST
/v1/router/models`` (a registration); ``GET /metrics``; ``GET /v1/router/status``; ``GET
/openapi.json`` (the API document).

``--baseline-src DIR`` also times switchpoint from another source tree (``DIR`` is its
``src`` folder, run with this environment's packages: e.g. a ``git worktree`` of an earlier
commit), started alternately with this one. Compile both trees first (``python -m
compileall -q src DIR``), as an install does, or each start compiles them.

Usage: python benchmarks/first_request.py [--rounds 3] [--baseline-src DIR] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from _common import ROOT, timed
from registration import ADMIN, knn_package
from service import start_serve, wait_up

sys.path.insert(0, str(ROOT))
from tests.fakes.fake_provider import FakeProviderProcess

NEXT = 20  # requests after the first, whose median is the warm figure
PROMPT = "Explain why the sky is blue in two sentences"
CONFIG = """models:
  - {{name: bench, profile: gpt-4-1106-preview, base_url: "{url}",
     input_per_mtok: 10, output_per_mtok: 30, context_window: 128000}}
  - {{name: bench-mini, profile: gpt-3.5-turbo-1106, base_url: "{url}",
     input_per_mtok: 0.5, output_per_mtok: 1.5, context_window: 16000}}
admin_token_env: SP_BENCH_ADMIN
policies:
  knn: {knn}
"""

Send = Callable[[httpx.Client, int], httpx.Response]


def chat(stream: bool) -> Send:
    def send(client: httpx.Client, i: int) -> httpx.Response:
        body = {"model": "auto", "stream": stream,
                "messages": [{"role": "user", "content": f"{PROMPT} (turn {i})"}]}
        if not stream:
            return client.post("/v1/chat/completions", json=body)
        with client.stream("POST", "/v1/chat/completions", json=body) as answer:
            data = answer.read()
            if b"[DONE]" not in data:
                raise RuntimeError(f"stream not finished: {data[-200:]!r}")
            return answer
    return send


def route(client: httpx.Client, i: int) -> httpx.Response:
    return client.post("/v1/route", json={"prompt": f"{PROMPT} (route {i})"})


def experiment(client: httpx.Client, i: int) -> httpx.Response:
    return client.post("/v1/router/experiments", json={
        "name": f"round-{i}", "arms": {"control": {}, "knn": {"policy": "knn"}}})


def register(client: httpx.Client, i: int) -> httpx.Response:
    return client.post("/v1/router/models", json={
        "name": f"newbie-{i}", "tier": "simple", "input_per_mtok": 0.1,
        "output_per_mtok": 0.2, "base_url": "http://127.0.0.1:9/v1"})


def routed_before(count: int) -> Callable[[httpx.Client], list[str]]:
    """``count`` decisions routed before the feedback is timed: their ids."""
    def prepare(client: httpx.Client) -> list[str]:
        return [str(route(client, 1000 + i).json()["decision_id"]) for i in range(count)]
    return prepare


def first_experiment(client: httpx.Client) -> list[str]:
    """The experiment the first timed end ends, created untimed."""
    experiment(client, 0).raise_for_status()
    return []


def end(client: httpx.Client, i: int) -> httpx.Response:
    return client.delete(f"/v1/router/experiments/round-{i}")


Timed = Callable[[httpx.Client, int, list[str]], httpx.Response]
Untimed = Callable[[httpx.Client, int], object]


def no_more(client: httpx.Client, i: int) -> None:
    pass


# name: (what to do before the first timed request, the request i, what to do after it
# untimed: an experiment's tenants may be in one enabled experiment at a time)
ROUTES: dict[str, tuple[Callable[[httpx.Client], list[str]] | None, Timed, Untimed]] = {
    "POST /v1/route": (None, lambda c, i, _: route(c, i), no_more),
    "chat (non-streamed)": (None, lambda c, i, _: chat(False)(c, i), no_more),
    "chat (streamed)": (None, lambda c, i, _: chat(True)(c, i), no_more),
    "POST /v1/feedback": (routed_before(NEXT + 1), lambda c, i, ids: c.post(
        "/v1/feedback", json={"decision_id": ids[i], "score": 0.8}), no_more),
    "experiment create": (None, lambda c, i, _: experiment(c, i), end),
    "experiment end": (first_experiment, lambda c, i, _: end(c, i),
                       lambda c, i: experiment(c, i + 1)),
    "model register": (None, lambda c, i, _: register(c, i), no_more),
    "GET /metrics": (None, lambda c, i, _: c.get("/metrics"), no_more),
    "GET /v1/router/status": (None, lambda c, i, _: c.get("/v1/router/status"), no_more),
    "GET /openapi.json": (None, lambda c, i, _: c.get("/openapi.json"), no_more),
}


def first_and_next(src: str | None, tmp: Path, config: str, name: str
                   ) -> tuple[float, float]:
    """Seconds of route ``name``'s first request after a fresh start of source tree ``src``,
    and the median of the :data:`NEXT` after it."""
    env = {**os.environ, "SP_BENCH_ADMIN": ADMIN}
    if src is not None:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory(prefix="sp-first-", dir=tmp) as data, \
            open(os.devnull, "wb") as quiet:
        proc, base = start_serve(["--config", config, "--data-dir", data,
                                  "--log-level", "error"], env, log=quiet)
        try:
            wait_up(f"{base}/health", proc)
            with httpx.Client(base_url=base, timeout=60,
                              headers={"authorization": f"Bearer {ADMIN}"}) as client:
                client.get("/health").raise_for_status()  # (the connection, opened)
                prepare, send, after = ROUTES[name]
                given = prepare(client) if prepare is not None else []
                took: list[float] = []
                for i in range(NEXT + 1):
                    seconds, answer = timed(functools.partial(send, client, i, given))
                    took.append(seconds)
                    if answer.status_code >= 300:
                        raise RuntimeError(f"{name}: {answer.status_code} {answer.text[:300]}")
                    after(client, i)
        finally:
            proc.terminate()
            proc.wait(30)
    return took[0], statistics.median(took[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", default=None)
    parser.add_argument("--only", default=None,
                        help="comma-separated route names (as printed) to time, else all")
    args = parser.parse_args()
    names = list(ROUTES) if args.only is None else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in ROUTES]
    if unknown:
        raise SystemExit(f"--only: unknown {unknown}; give some of {list(ROUTES)}")
    trees: dict[str, str | None] = {"switchpoint": None}
    if args.baseline_src is not None:
        trees["baseline"] = args.baseline_src
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with FakeProviderProcess(lean=True) as fake, \
            tempfile.TemporaryDirectory(prefix="sp-first-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "switchpoint.yaml"
        config.write_text(CONFIG.format(url=fake.openai_base_url, knn=knn_package(tmp)))
        for _ in range(args.rounds):
            for name in names:
                for tree, src in trees.items():
                    figures.setdefault((name, tree), []).append(
                        first_and_next(src, tmp, str(config), name))
    print(f"First request after a start vs the median of the next {NEXT}, median over "
          f"{args.rounds} rounds of fresh starts, {os.cpu_count()} cores")
    print(f"{'route':<24} {'tree':<12} {'first ms':>9} {'next ms':>8} {'extra ms':>9}")
    for (name, tree), each in figures.items():
        first = statistics.median(f for f, _ in each) * 1e3
        after = statistics.median(n for _, n in each) * 1e3
        print(f"{name:<24} {tree:<12} {first:>9.1f} {after:>8.1f} {first - after:>9.1f}")


if __name__ == "__main__":
    main()
