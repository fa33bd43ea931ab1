"""Gateway overhead and throughput: switchpoint's ``POST /v1/chat/completions`` beside LiteLLM's
proxy and Portkey's gateway, all in front of the same fake provider, in one script.

Starts, on loopback: the fake provider (``tests/fakes/fake_provider.py --lean``: an asyncio
server that answers every request with a deterministic echo, plain or streamed, and keeps no
log), switchpoint (``switchpoint serve --config``, a catalog of two models whose ``base_url`` is
the fake, everything else default: the request log fsynced per commit, session pins, health)
and LiteLLM's proxy (``.venv-peers/bin/litellm --config``, one ``openai/<name>`` model whose
``api_base`` is the fake, a dummy key, no database, its defaults otherwise; the weak-master-key
guard is turned off because, like switchpoint here, it runs without authentication) and
Portkey's open-source gateway (``node .peers-node/node_modules/@portkey-ai/gateway/build/
start-server.js --port=N --headless``, no config: each request names the provider in headers,
``x-portkey-provider: openai`` and ``x-portkey-custom-host: <the fake>/v1``, to which it appends
``/chat/completions``, plus a dummy bearer key). Before a peer is timed, one plain and one
streamed request must come back through it with the fake's echo of their prompt; a mode that
does not is left out, with the reason printed. A peer not installed (``scripts/setup-peers``)
is skipped with a note.

Then, with the same thin load generator (asyncio, one keep-alive HTTP/1.1 connection per
client, shared with ``benchmarks/service.py``):

- **overhead**: requests one at a time, interleaved (direct to the fake, through switchpoint,
  through LiteLLM, through Portkey, round after round); the overhead at median and p99 is the
  gateway's latency minus the direct latency at that percentile. Streams are timed to their
  last byte.
- **throughput**: the most requests per second at concurrency 64 (each gateway alone).

switchpoint is measured passing a named model through (``model: "bench"``) and routing
(``model: "auto"``: the prompt is embedded with MiniLM, a few ms of CPU, before the call).
Every prompt is a distinct real prompt from ../shared/data, so neither the decision cache nor
session pins make ``auto`` cheaper than it is.

With ``--governance`` it measures instead what client keys, budgets and rate limits add: two
switchpoint servers with the same catalog, one plain and one with ``auth: keys``, a tenant with
budgets and limits and a key with its own (all far above what the run spends, so every request
is admitted and the whole path runs: the key lookup and hash, the tenant's policy, the RPM/TPM
windows, the reservation, its settlement and the ledger rows in the log's commit), requests
interleaved one at a time (direct, plain, governed), round after round; the figure is the
governed server's overhead minus the plain one's at the median (target: at most 0.3 ms), and
each server's throughput and CPU per request at concurrency 64.

``SWITCHPOINT_BENCH_PORTS=LO-HI`` keeps every server's port in that range.

Usage: python benchmarks/gateway.py [--n 300] [--rps-n 1500] [--concurrency 64] [--no-portkey]
       python benchmarks/gateway.py --governance [--n 1000] [--rps-n 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import ROOT
from service import (
    Connection,
    bench_ports,
    cpu_seconds,
    free_port,
    pick_prompts,
    start_serve,
    wait_up,
)

sys.path.insert(0, str(ROOT))
from tests.fakes.fake_provider import FakeProviderProcess

PEER_BIN = ROOT / ".venv-peers" / "bin" / "litellm"
PORTKEY_DIR = ROOT / ".peers-node"
PORTKEY_ENTRY = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / \
    "start-server.js"
RUN_TIME_LIMIT_S = 90.0
TARGET_OVERHEAD_RATIO = 0.5  # ours at most half of LiteLLM's
TARGET_RPS_RATIO = 2.0  # ours at least twice LiteLLM's
TARGET_GOVERNANCE_MS = 0.3  # keys, budgets and rate limits: at most this much at the median
GOVERNANCE = """auth: keys
tenants:
  bench:
    models: [bench, bench-mini, auto]
    budgets: [1000000/month, 100000/day]
    rpm: 1000000
    tpm: 1000000000
"""


@dataclass
class Server:
    name: str
    base: str
    proc: subprocess.Popen[bytes] | None
    model: str
    headers: str = ""  # extra request header lines (CRLF-terminated), e.g. the client key

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def body(self, prompt: str, stream: bool) -> bytes:
        payload: dict[str, object] = {"model": self.model,
                                      "messages": [{"role": "user", "content": prompt}]}
        if stream:
            payload["stream"] = True
        return json.dumps(payload).encode()


def start_switchpoint(tmp: Path, fake: FakeProviderProcess, *, governed: bool = False,
                      name: str = "switchpoint", synchronous: str = "full") -> Server:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "switchpoint.yaml"
    config.write_text(f"""store: {{synchronous: {synchronous}}}
models:
  - {{name: bench, profile: gpt-4-1106-preview, base_url: "{fake.openai_base_url}",
     input_per_mtok: 10, output_per_mtok: 30, context_window: 128000}}
  - {{name: bench-mini, profile: gpt-3.5-turbo-1106, base_url: "{fake.openai_base_url}",
     input_per_mtok: 0.5, output_per_mtok: 1.5, context_window: 16000}}
""" + (GOVERNANCE if governed else ""), encoding="utf-8")
    headers = ""
    if governed:
        from switchpoint.governance.keys import KeySpec, KeyStore

        with KeyStore.in_dir(tmp / "data") as store:
            key = store.create(KeySpec(tenant="bench", budgets=("1000000/day",), rpm=1_000_000,
                                       tpm=1_000_000_000)).key
        headers = f"Authorization: Bearer {key}\r\n"
    proc, base = start_serve(["--config", str(config), "--data-dir", str(tmp / "data"),
                              "--log-level", "warning"])
    wait_up(f"{base}/health", proc)
    return Server(name, base, proc, "bench", headers)


def start_litellm(tmp: Path, fake: FakeProviderProcess) -> Server | str:
    if not PEER_BIN.exists():
        return f"not measured: {PEER_BIN} missing (run scripts/setup-peers)"
    config = tmp / "litellm.yaml"
    config.write_text(f"""model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: {fake.openai_base_url}
      api_key: sk-dummy
litellm_settings:
  telemetry: false
""", encoding="utf-8")
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([str(PEER_BIN), "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/health/liveliness", proc)
    except RuntimeError as exc:
        proc.kill()
        return f"failed to start: {exc}"
    return Server("LiteLLM", base, proc, "bench")


def start_portkey(tmp: Path, fake: FakeProviderProcess) -> Server | str:
    node = shutil.which("node")
    if node is None:
        return "not measured: node not found"
    if not PORTKEY_ENTRY.exists():
        return f"not measured: {PORTKEY_ENTRY.relative_to(ROOT)} missing (run scripts/setup-peers)"
    port = free_port()
    log = (tmp / "portkey.log").open("wb")
    proc = subprocess.Popen([node, str(PORTKEY_ENTRY), f"--port={port}", "--headless"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/", proc, timeout=60)
    except RuntimeError as exc:
        proc.kill()
        proc.wait()
        return f"failed to start: {exc}"
    headers = (f"x-portkey-provider: openai\r\nx-portkey-custom-host: {fake.openai_base_url}\r\n"
               "Authorization: Bearer sk-dummy\r\n")
    return Server("Portkey", base, proc, "bench", headers)


def forwarding(target: Server) -> dict[bool, str]:
    """Send one plain and one streamed request through ``target``; for each mode, "" when the
    fake's echo of the prompt came back whole, else what came back instead."""

    async def probe() -> dict[bool, str]:
        out: dict[bool, str] = {}
        for stream in (False, True):
            prompt = f"forwarding check {'stream' if stream else 'plain'}"
            conn = Connection(*_host_port(target.base))
            try:
                status, data = await conn.post("/v1/chat/completions",
                                               target.body(prompt, stream), target.headers)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                out[stream] = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                await conn.close()
            echoed = (b"Echo from bench: " + prompt.encode() in data if not stream
                      else all(word.encode() in data for word in prompt.split()))
            ok = status == 200 and answered(data, stream) and echoed
            out[stream] = "" if ok else f"HTTP {status}: {data[:120]!r}"
        return out

    return asyncio.run(probe())


def answered(data: bytes, stream: bool) -> bool:
    if stream:
        return data.rstrip().endswith(b"data: [DONE]") and b"Echo" in data
    return b'"choices"' in data and b"Echo from" in data


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Latencies:
    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


async def sequential(targets: Sequence[Server], prompts: Mapping[str, Sequence[str]],
                     stream: bool, alternate: bool = False) -> Latencies:
    """One request at a time, interleaved across the targets, round after round (with
    ``alternate``, every other round takes the targets after the first in reverse order, so
    neither of two compared servers always goes first)."""
    out = Latencies({t.name: [] for t in targets}, {t.name: 0 for t in targets})
    conns = {t.name: Connection(*_host_port(t.base)) for t in targets}
    rounds = min(len(p) for p in prompts.values())
    try:
        for i in range(rounds):
            order = ([targets[0], *reversed(targets[1:])] if alternate and i % 2
                     else list(targets))
            for t in order:
                body = t.body(prompts[t.name][i], stream)
                t0 = time.perf_counter()
                status, data = await conns[t.name].post("/v1/chat/completions", body,
                                                        t.headers)
                out.values[t.name].append((time.perf_counter() - t0) * 1e3)
                if status != 200 or not answered(data, stream):
                    out.errors[t.name] += 1
    finally:
        for conn in conns.values():
            await conn.close()
    return out


@dataclass
class Throughput:
    rps: float
    median_ms: float
    p99_ms: float
    errors: int
    sent: int
    cpu_ms: float = 0.0


async def load(target: Server, prompts: Sequence[str], concurrency: int,
               stream: bool) -> Throughput:
    latencies: list[float] = []
    errors = 0
    queue = iter(prompts)
    host, port = _host_port(target.base)
    deadline = time.monotonic() + RUN_TIME_LIMIT_S

    async def client() -> None:
        nonlocal errors
        conn = Connection(host, port)
        try:
            for prompt in queue:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    status, data = await conn.post("/v1/chat/completions",
                                                   target.body(prompt, stream), target.headers)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    await conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200 or not answered(data, stream):
                    errors += 1
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return Throughput(len(latencies) / elapsed, statistics.median(latencies) * 1e3,
                      percentile(latencies, 0.99) * 1e3, errors, len(latencies))


def measured_load(target: Server, prompts: Sequence[str], concurrency: int,
                  stream: bool) -> Throughput:
    pid = target.proc.pid if target.proc is not None else None
    before = cpu_seconds(pid) if pid else 0.0
    run = asyncio.run(load(target, prompts, concurrency, stream))
    if pid:
        run.cpu_ms = (cpu_seconds(pid) - before) / max(1, run.sent) * 1e3
    return run


def _host_port(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


class Prompts:
    """Real prompts, never repeated: ``auto`` takes each distinct prompt once (so no decision
    cache hit and no session pin); the other targets take numbered variants of them."""

    def __init__(self, distinct: list[str]) -> None:
        self.distinct = distinct
        self.used = 0
        self.counter = 0

    def take(self, name: str, count: int) -> list[str]:
        if name == "switchpoint auto":
            if self.used + count > len(self.distinct):
                raise SystemExit(f"only {len(self.distinct)} distinct prompts; lower --n or "
                                 "--rps-n")
            out = self.distinct[self.used:self.used + count]
            self.used += count
            return out
        out = []
        for _ in range(count):
            base = self.distinct[self.counter % len(self.distinct)]
            out.append(f"{base} (variant {self.counter})")
            self.counter += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="sequential requests per target")
    parser.add_argument("--rps-n", type=int, default=1500, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-portkey", action="store_true",
                        help="leave Portkey's gateway out (it is measured when installed)")
    parser.add_argument("--governance", action="store_true",
                        help="measure what keys, budgets and rate limits add instead")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full",
                        help="the servers' store.synchronous (--governance; default full)")
    args = parser.parse_args()
    if args.governance:
        governance_main(args)
        return
    warm = 40
    names = ["direct", "switchpoint", "switchpoint auto", "LiteLLM", "Portkey"]
    seq_names = {False: list(names), True: list(names)}  # per mode: plain, streamed
    load_runs = [(name, stream) for name in [*names[1:], "direct"] for stream in (False, True)]
    prompts = Prompts(pick_prompts(warm * 2 + args.n * 2 + args.rps_n * 2))
    notes: list[str] = []
    servers: list[Server] = []
    fake = FakeProviderProcess(lean=True, ports=bench_ports()).start()

    def leave_out(name: str, why: str, modes: Sequence[bool] = (False, True)) -> None:
        nonlocal load_runs
        notes.append(f"{name} ({'/'.join('stream' if m else 'plain' for m in modes)}): {why}")
        for stream in modes:
            seq_names[stream].remove(name)
        load_runs = [r for r in load_runs if not (r[0] == name and r[1] in modes)]
    try:
        with tempfile.TemporaryDirectory(prefix="switchpoint-gateway-bench-") as tmp:
            ours = start_switchpoint(Path(tmp), fake)
            servers.append(ours)
            targets: dict[str, Server] = {
                "direct": Server("direct", fake.url, None, "bench"),
                "switchpoint": ours,
                "switchpoint auto": Server("switchpoint auto", ours.base, ours.proc, "auto"),
            }
            peers = {"LiteLLM": start_litellm(Path(tmp), fake),
                     "Portkey": ("left out (--no-portkey)" if args.no_portkey
                                 else start_portkey(Path(tmp), fake))}
            for name, peer in peers.items():
                if isinstance(peer, str):
                    leave_out(name, peer)
                    continue
                servers.append(peer)
                targets[name] = peer
                failed = {s: why for s, why in forwarding(peer).items() if why}
                for stream, why in failed.items():
                    leave_out(name, f"does not forward to the fake, not measured ({why})",
                              [stream])
            for stream in (False, True):  # warm every path up (imports, pools, MiniLM)
                for name in seq_names[stream]:
                    asyncio.run(load(targets[name], prompts.take(name, warm), 4, stream))
            seq: dict[bool, Latencies] = {}
            for stream in (False, True):
                slices = {name: prompts.take(name, args.n) for name in seq_names[stream]}
                seq[stream] = asyncio.run(sequential([targets[n] for n in seq_names[stream]],
                                                     slices, stream))
            rps: dict[tuple[str, bool], Throughput] = {}
            for name, stream in load_runs:
                rps[(name, stream)] = measured_load(targets[name], prompts.take(name, args.rps_n),
                                                    args.concurrency, stream)
            for s in servers:  # (before their data dir goes: a service would log its loss)
                s.stop()
    finally:
        for s in servers:
            s.stop()
        fake.stop()
    report(seq, rps, [n for n in names if n in seq_names[False] or n in seq_names[True]], args,
           notes)


def _ratio(ours: float, peer: float | None) -> str:
    return "" if peer is None or peer == 0 else f"{ours / peer:.2f}x"


def report(seq: dict[bool, Latencies], rps: dict[tuple[str, bool], Throughput],
           names: Sequence[str], args: argparse.Namespace, notes: list[str]) -> None:
    gateways = [n for n in names if n != "direct"]
    has_peer = "LiteLLM" in names
    others = [n for n in ("Portkey",) if n in names]  # peers shown as ratios, no target
    print(f"Gateway in front of the same fake provider (loopback, 2 cores, keep-alive, "
          f"one load generator); {args.n} sequential requests per target, "
          f"{args.rps_n} per throughput run at concurrency {args.concurrency}")
    print()
    print("Overhead = latency through the gateway - latency direct to the fake, "
          "same percentile (ms)")
    header = f"{'':<22}" + "".join(f"{n:>18}" for n in gateways)
    if has_peer:
        header += f"{'ours/LiteLLM':>14}{'target':>9}"
    header += "".join(f"{'ours/' + n:>14}" for n in others)
    print(header)
    rows: list[tuple[str, Callable[[list[float]], float], bool]] = [
        ("median", statistics.median, False), ("p99", lambda v: percentile(v, 0.99), False),
        ("median", statistics.median, True), ("p99", lambda v: percentile(v, 0.99), True)]
    for label, stat, stream in rows:
        lat = seq[stream]
        direct = stat(lat.values["direct"])
        over = {n: stat(lat.values[n]) - direct for n in gateways if n in lat.values}
        line = f"{('stream ' if stream else 'plain ') + label:<22}"
        line += "".join(f"{over[n]:>18.2f}" if n in over else f"{'n/a':>18}" for n in gateways)
        if has_peer:
            if "LiteLLM" in over:
                ratio = (over["switchpoint"] / over["LiteLLM"] if over["LiteLLM"]
                         else float("nan"))
                ok = "met" if ratio <= TARGET_OVERHEAD_RATIO else "NOT met"
                line += f"{ratio:>13.2f}x{ok:>9}"
            else:
                line += f"{'n/a':>14}{'':>9}"
        line += "".join(f"{_ratio(over['switchpoint'], over.get(n)) or 'n/a':>14}"
                        for n in others)
        print(line)
    print("direct to the fake: " + ", ".join(
        f"{'stream' if s else 'plain'} median {statistics.median(seq[s].values['direct']):.2f} "
        f"/ p99 {percentile(seq[s].values['direct'], 0.99):.2f} ms" for s in (False, True)))
    errors = {f"{n} {'stream' if s else 'plain'}": seq[s].errors[n]
              for s in (False, True) for n in names if seq[s].errors.get(n)}
    if errors:
        print(f"errors (sequential): {errors}")
    print()
    print(f"Throughput at concurrency {args.concurrency}: requests/s "
          "(median / p99 latency ms, server CPU ms per request)")
    header = f"{'':<22}" + "".join(f"{n:>30}" for n in [*gateways, "direct"])
    if has_peer:
        header += f"{'ours/LiteLLM':>14}{'target':>9}"
    header += "".join(f"{'ours/' + n:>14}" for n in others)
    print(header)
    for stream in (False, True):
        line = f"{'stream' if stream else 'plain':<22}"
        for n in [*gateways, "direct"]:
            r = rps.get((n, stream))
            cell = ("n/a" if r is None else
                    f"{r.rps:6.0f} ({r.median_ms:5.1f} / {r.p99_ms:6.1f}, {r.cpu_ms:4.2f})"
                    + (f" {r.errors} err" if r.errors else ""))
            line += f"{cell:>30}"
        ours = rps[("switchpoint", stream)].rps
        if has_peer:
            if ("LiteLLM", stream) in rps:
                ratio = ours / rps[("LiteLLM", stream)].rps
                ok = "met" if ratio >= TARGET_RPS_RATIO else "NOT met"
                line += f"{ratio:>13.2f}x{ok:>9}"
            else:
                line += f"{'n/a':>14}{'':>9}"
        for n in others:
            peer = rps.get((n, stream))
            line += f"{_ratio(ours, peer.rps if peer else None) or 'n/a':>14}"
        print(line)
    print()
    print("Targets: overhead at most 0.5x LiteLLM's (ratio of the named-model passthrough); "
          "requests/s at least 2x LiteLLM's (no target against Portkey: ours/Portkey is "
          "shown for reading). 'switchpoint auto' adds routing (MiniLM) to each request.")
    for note in notes:
        print(note)


def governance_main(args: argparse.Namespace) -> None:
    """Plain against governed switchpoint, same catalog, interleaved one request at a time."""
    warm = 60
    names = ["direct", "switchpoint", "switchpoint governed"]
    prompts = Prompts(pick_prompts(10))
    servers: list[Server] = []
    fake = FakeProviderProcess(lean=True, ports=bench_ports()).start()
    try:
        with tempfile.TemporaryDirectory(prefix="switchpoint-governance-bench-") as tmp:
            plain = start_switchpoint(Path(tmp) / "plain", fake, synchronous=args.synchronous)
            servers.append(plain)
            governed = start_switchpoint(Path(tmp) / "governed", fake, governed=True,
                                         name="switchpoint governed",
                                         synchronous=args.synchronous)
            servers.append(governed)
            targets = {"direct": Server("direct", fake.url, None, "bench"),
                       "switchpoint": plain, "switchpoint governed": governed}
            for stream in (False, True):
                for name in names:
                    asyncio.run(load(targets[name], prompts.take(name, warm), 4, stream))
            seq: dict[bool, Latencies] = {}
            for stream in (False, True):
                slices = {name: prompts.take(name, args.n) for name in names}
                seq[stream] = asyncio.run(sequential([targets[n] for n in names], slices,
                                                     stream, alternate=True))
            rps = {(name, stream): measured_load(targets[name], prompts.take(name, args.rps_n),
                                                 args.concurrency, stream)
                   for name in names[1:] for stream in (False, True)}
            for s in servers:  # (before their data dirs go)
                s.stop()
    finally:
        for s in servers:
            s.stop()
        fake.stop()
    print(f"Keys, budgets and rate limits on vs off: {args.n} sequential requests per target "
          f"(interleaved: direct, then plain and governed in alternating order), model 'bench' "
          f"passed through, store.synchronous {args.synchronous}; {args.rps_n} per throughput "
          f"run at concurrency {args.concurrency}")
    print()
    print(f"{'':<16}{'plain overhead':>16}{'governed overhead':>19}{'added':>9}"
          f"{'paired median':>15}{'target':>9}")
    for stream in (False, True):
        lat = seq[stream]
        for label, stat in (("median", statistics.median),
                            ("p99", lambda v: percentile(v, 0.99))):
            direct = stat(lat.values["direct"])
            off = stat(lat.values["switchpoint"]) - direct
            on = stat(lat.values["switchpoint governed"]) - direct
            paired = statistics.median(
                g - p for g, p in zip(lat.values["switchpoint governed"],
                                      lat.values["switchpoint"], strict=True))
            verdict = ("met" if paired <= TARGET_GOVERNANCE_MS else "NOT met") \
                if label == "median" else ""
            shown = f"{paired:.3f}" if label == "median" else ""
            print(f"{('stream ' if stream else 'plain ') + label:<16}{off:>16.3f}{on:>19.3f}"
                  f"{on - off:>9.3f}{shown:>15}{verdict:>9}")
    errors = {f"{n} {'stream' if s else 'plain'}": seq[s].errors[n]
              for s in (False, True) for n in names if seq[s].errors[n]}
    if errors:
        print(f"errors (sequential): {errors}")
    print()
    print(f"Throughput at concurrency {args.concurrency}: requests/s (median / p99 ms, server "
          "CPU ms per request)")
    for stream in (False, True):
        cells = []
        for name in names[1:]:
            r = rps[(name, stream)]
            cells.append(f"{name}: {r.rps:.0f} ({r.median_ms:.1f} / {r.p99_ms:.1f}, "
                         f"{r.cpu_ms:.2f})" + (f" {r.errors} err" if r.errors else ""))
        print(f"{'stream' if stream else 'plain':<8}" + "   ".join(cells))
    print()
    print(f"Target: keys + budgets + rate limits add at most {TARGET_GOVERNANCE_MS} ms at the "
          "median ('paired median': the median over rounds of governed minus plain latency, "
          "which cancels the drift of a shared machine).")


if __name__ == "__main__":
    main()
