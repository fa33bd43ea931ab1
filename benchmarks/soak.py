"""Soak: `switchpoint serve` under mixed, faulty and hostile traffic for minutes; memory, open
files and the server's own failures must stay flat.

Starts, on loopback: the fake provider (``tests/fakes/fake_provider.py --lean``, which keeps no
request log) and ``switchpoint serve --config`` over a catalog of three models on it (``a``
falls back to ``b``; ``c`` speaks the Anthropic dialect), everything default but short upstream
timeouts (read and first token 2 s, ``max_total_s`` 6 s) and circuits that open at a 75% error
rate and cool down for 5 s. Then, for ``--minutes``:

- ``--clients`` concurrent clients (default 8), each a keep-alive HTTP client sending chat
  requests back to back: plain or streamed (half each), ``auto`` or a named model, and in a
  quarter of them a fault the fake injects, on the first try only (15%: the retry or the
  fallback answers) or on every model asked (10%): 500, 429, connection resets, hangs and
  stalls (read timeouts), cut, malformed and unterminated streams, error events, a
  context-length refusal, an answer over ``max_response_bytes`` (40 MB), a 5 MB stream line, a
  byte-a-time answer that outlives the deadline, an error echoing the API key;
- hostile traffic beside it: silent sockets, slowloris heads, garbage bodies, oversized
  headers, clients that hang up mid-request;
- ``GET /health`` once a second (its worst latency is reported).

Every minute (and at the start and the end) it samples the server's RSS and open files from
/proc and the database size from /health. The answers are counted by status: 200 and the 4xx of
refused input are expected; 502/503/504 (and 429) are the gateway reporting upstream failures,
as documented; a 500 would be the server's own failure. Prints a Markdown table.

Usage: python benchmarks/soak.py [--minutes 10] [--clients 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _common import ROOT
from service import bench_ports, start_serve, wait_up

sys.path.insert(0, str(ROOT))
from tests.fakes.fake_provider import FakeProviderProcess

KEYS = {"SOAK_A_KEY": "sk-soak-a-0123456789abcdef", "SOAK_C_KEY": "soak-c-plain-secret-42"}
# (behaviour the fake injects, weight); "ok" is a clean answer; "once:" faults hit the first
# try only (a retry or the fallback then answers), the others every model asked.
FAULTS = [("ok", 120),
          ("once:500", 4), ("once:429", 3), ("once:reset", 3), ("once:hang:seconds=3", 2),
          ("once:stall:seconds=3", 2), ("once:cut", 2), ("once:malformed", 2),
          ("once:huge:mb=40", 2), ("once:huge_line:mb=5", 2), ("once:sse_error", 2),
          ("500", 2), ("429", 1), ("reset", 1), ("hang:seconds=3", 1), ("cut", 1),
          ("nodone", 1), ("context_length", 1), ("huge:mb=40", 1), ("trickle:every=0.1", 1),
          ("echo_auth:status=400", 2), ("echo_auth:status=401", 1)]
MODELS = ["auto", "auto", "a", "b", "c"]
UPSTREAM_FAILURES = (429, 502, 503, 504)


def config(fake: FakeProviderProcess, data_dir: Path) -> str:
    return f"""models:
  - {{name: a, profile: gpt-4-1106-preview, base_url: "{fake.openai_base_url}",
     api_key_env: SOAK_A_KEY, input_per_mtok: 10, output_per_mtok: 30, fallbacks: [b]}}
  - {{name: b, profile: gpt-3.5-turbo-1106, base_url: "{fake.openai_base_url}",
     input_per_mtok: 0.5, output_per_mtok: 1.5}}
  - {{name: c, provider: anthropic, profile: claude-v2, base_url: "{fake.url}",
     api_key_env: SOAK_C_KEY, input_per_mtok: 8, output_per_mtok: 24}}
data_dir: {data_dir}
server: {{header_timeout_s: 5, body_timeout_s: 10}}
gateway:
  read_timeout_s: 2
  first_token_timeout_s: 2
  max_total_s: 6
  backoff_base_s: 0.05
  max_retry_after_s: 1
  error_rate_threshold: 0.75
  cooldown_s: 5
  max_cooldown_s: 20
"""


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # client-side failures by kind
    hostile: Counter[str] = field(default_factory=Counter)
    health_worst_s: float = 0.0

    def total(self) -> int:
        return sum(self.statuses.values())


@dataclass
class Sample:
    minute: float
    requests: int
    statuses: dict[int, int]
    client_errors: dict[str, int]
    health_worst_s: float
    rss_mb: float
    open_files: int
    db_mb: float


def proc_status(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def body(rng: random.Random, stream: bool) -> tuple[dict[str, object], str]:
    fault = rng.choices([f for f, _ in FAULTS], [w for _, w in FAULTS])[0]
    marker = "" if fault == "ok" else f"[[fake:{fault}]] "
    text = f"{marker}Question {rng.randrange(10**9)}: what is {rng.randrange(1000)} squared?"
    payload: dict[str, object] = {"model": rng.choice(MODELS),
                                  "messages": [{"role": "user", "content": text}]}
    if stream:
        payload["stream"] = True
    return payload, fault


async def client(base: str, rng: random.Random, tally: Tally, stop: float) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while time.monotonic() < stop:
            stream = rng.random() < 0.5
            payload, _ = body(rng, stream)
            headers = {"x-session-id": f"s{rng.randrange(200)}"} if rng.random() < 0.3 else {}
            try:
                if stream:
                    async with http.stream("POST", "/v1/chat/completions", json=payload,
                                           headers=headers) as r:
                        async for _ in r.aiter_raw():
                            pass
                else:
                    r = await http.post("/v1/chat/completions", json=payload, headers=headers)
                tally.statuses[r.status_code] += 1
            except httpx.HTTPError as exc:
                tally.errors[type(exc).__name__] += 1


async def hostile(host: str, port: int, rng: random.Random, tally: Tally, stop: float) -> None:
    """One hostile act every 50 ms, in turn."""
    held: list[asyncio.StreamWriter] = []
    while time.monotonic() < stop:
        act = rng.choice(["silent", "slowloris", "garbage", "big_header", "hang_up"])
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.hostile["connect_failed"] += 1
            await asyncio.sleep(0.05)
            continue
        tally.hostile[act] += 1
        if act == "silent":
            held.append(writer)
        elif act == "slowloris":
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
            held.append(writer)
        elif act == "garbage":
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Length: " + str(len(junk)).encode() + b"\r\n\r\n" + junk)
            await _drain_answer(reader, writer)
        elif act == "big_header":
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nx-session-id: "
                         + b"s" * 40_000 + b"\r\n\r\n")
            await _drain_answer(reader, writer)
        else:  # hang up while the upstream is answering
            raw = json.dumps({"model": "b", "messages": [
                {"role": "user", "content": "[[fake:hold:seconds=5]] wait"}]}).encode()
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"application/json\r\nContent-Length: " + str(len(raw)).encode()
                         + b"\r\n\r\n" + raw)
            await asyncio.sleep(0.2)
            writer.close()
        held = [w for w in held if not w.is_closing()][-200:]
        for w in held:
            if rng.random() < 0.1:
                w.write(b"Y")  # keep trickling: each byte is too late to extend a deadline
        await asyncio.sleep(0.05)
    for w in held:
        w.close()


async def _drain_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(TimeoutError, OSError):
        await asyncio.wait_for(reader.read(65_536), 5)
    writer.close()


async def prober(base: str, tally: Tally, stop: float) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                r = await http.get("/health")
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            took = time.monotonic() - started
            tally.health_worst_s = max(tally.health_worst_s, took if ok else 30.0)
            await asyncio.sleep(max(0.0, 1.0 - took))


def sample(minute: float, tally: Tally, pid: int, base: str) -> Sample:
    db = httpx.get(f"{base}/health", timeout=30).json()["disk"]["db_bytes"]
    return Sample(minute, tally.total(), dict(sorted(tally.statuses.items())),
                  dict(tally.errors), tally.health_worst_s, proc_status(pid, "VmRSS") / 1024,
                  len(os.listdir(f"/proc/{pid}/fd")), db / 2**20)


async def run(base: str, pid: int, minutes: float, clients: int,
              seed: int) -> tuple[list[Sample], Tally]:
    rng = random.Random(seed)
    tally = Tally()
    start = time.monotonic()
    stop = start + minutes * 60
    host, port = base.removeprefix("http://").split(":")
    tasks = [asyncio.create_task(client(base, random.Random(rng.random()), tally, stop))
             for _ in range(clients)]
    tasks.append(asyncio.create_task(hostile(host, int(port), random.Random(seed + 1), tally,
                                             stop)))
    tasks.append(asyncio.create_task(prober(base, tally, stop)))
    samples = [await asyncio.to_thread(sample, 0.0, tally, pid, base)]
    next_at = start + 60
    while time.monotonic() < stop:
        await asyncio.sleep(min(1.0, max(0.0, stop - time.monotonic())))
        if time.monotonic() >= next_at:
            samples.append(await asyncio.to_thread(sample, (time.monotonic() - start) / 60,
                                                   tally, pid, base))
            print(row(samples[-1]), flush=True)
            next_at += 60
    await asyncio.gather(*tasks)
    samples.append(await asyncio.to_thread(sample, (time.monotonic() - start) / 60, tally, pid,
                                           base))
    return samples, tally


def row(s: Sample) -> str:
    codes = s.statuses
    upstream = sum(n for code, n in codes.items() if code in UPSTREAM_FAILURES)
    own = sum(n for code, n in codes.items() if code >= 500 and code not in UPSTREAM_FAILURES)
    refused = sum(n for code, n in codes.items() if 400 <= code < 500 and code != 429)
    return (f"| {s.minute:4.1f} | {s.requests} | {codes.get(200, 0)} | {refused} | {upstream} | "
            f"{own} | {sum(s.client_errors.values())} | {s.rss_mb:.0f} | {s.open_files} | "
            f"{s.db_mb:.1f} | {s.health_worst_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with (tempfile.TemporaryDirectory() as tmp,
          FakeProviderProcess(lean=True, ports=bench_ports()) as fake):
        root = Path(tmp)
        (root / "switchpoint.yaml").write_text(config(fake, root / "data"), encoding="utf-8")
        log = (root / "serve.log").open("wb")
        proc, base = start_serve(["--config", str(root / "switchpoint.yaml")],
                                 {**os.environ, **KEYS}, log)
        try:
            wait_up(f"{base}/health", proc)
            print("| minute | requests | 200 | 4xx refused | upstream 429/502/503/504 | "
                  "server 5xx | client errors | RSS MB | open files | db MB | "
                  "worst /health s |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            samples, tally = asyncio.run(run(base, proc.pid, args.minutes, args.clients,
                                             args.seed))
            print(row(samples[0]))
            print(row(samples[-1]))
            print(f"\nstatuses: {dict(sorted(tally.statuses.items()))}")
            print(f"client-side errors: {dict(tally.errors)}")
            print(f"hostile acts: {dict(tally.hostile)}")
            text = (root / "serve.log").read_text(errors="replace")
            print(f"server log: {len(text)} bytes, {text.count('Traceback')} tracebacks, "
                  f"keys leaked: {sum(text.count(k) for k in KEYS.values())}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


if __name__ == "__main__":
    main()
