"""Gateway overhead and throughput: switchpoint's ``POST /v1/chat/completions`` beside LiteLLM's
proxy and Portkey's gateway, each in front of the same fake provider, in one script.

The targets are measured one after another, each alone: a target's phase starts the fake
provider (``tests/fakes/fake_provider.py --lean``: an asyncio server that answers every request
with a deterministic echo, plain or streamed, and keeps no log), starts the gateway in a process
group of its own, checks it forwards, warms it up, times it, then stops its whole process group
and the fake and checks its port is closed before the next target starts. The fake is restarted
per phase rather than shared, so every gateway meets the same fresh fake, and each overhead is
taken against the direct latency measured in its own phase. Before every timed run the script
refuses to go on if a process of another target it started is still alive, and warns about
gateway processes on the machine it did not start (another user's run: the figures would be
low).

The targets: ``direct`` (the fake alone, for its throughput), switchpoint (``switchpoint serve
--config``, a catalog of two models whose ``base_url`` is the fake, everything else default:
the request log fsynced per commit, session pins, health), LiteLLM's proxy
(``.venv-peers/bin/litellm --config``, one ``openai/<name>`` model whose ``api_base`` is the
fake, a dummy key, no database, its defaults otherwise; the weak-master-key guard is turned off
because, like switchpoint here, it runs without authentication) and Portkey's open-source gateway
(``node .peers-node/node_modules/@portkey-ai/gateway/build/start-server.js --port=N
--headless``, no config: each request names the provider in headers, ``x-portkey-provider:
openai`` and ``x-portkey-custom-host: <the fake>/v1``, to which it appends
``/chat/completions``, plus a dummy bearer key). Before a peer is timed, one plain and one
streamed request must come back through it with the fake's echo of their prompt; a mode that
does not is left out, with the reason printed. A peer not installed (``scripts/setup-peers``)
is skipped with a note.

In each gateway's phase, with the same thin load generator (asyncio, one keep-alive HTTP/1.1
connection per client, shared with ``benchmarks/service.py``):

- **overhead**: requests one at a time, interleaved (direct to the fake, then through the
  gateway, round after round); the overhead at median and p99 is the gateway's latency minus
  the direct latency at that percentile. Streams are timed to their last byte.
- **throughput**: the most requests per second at concurrency 64, with the server's CPU per
  request (every process of its group).

switchpoint is measured passing a named model through (``model: "bench"``) and routing
(``model: "auto"``: the prompt is embedded with MiniLM, a few ms of CPU, before the call), both
in its phase. Every prompt is a real prompt from ../shared/data and ``auto`` sees each at most
once per phase (a fresh server and data dir per phase), so neither the decision cache nor
session pins make ``auto`` cheaper than it is.

``--rounds R`` repeats the whole sequence R times, the order rotated by one target each round
(``--order`` sets the first round's), and prints each round's figures and then their medians, so
the noise and any effect of the order are visible.

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
                                    [--rounds 1] [--order direct,switchpoint,LiteLLM,Portkey]
       python benchmarks/gateway.py --governance [--n 1000] [--rps-n 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import ROOT, percentile
from service import (
    Connection,
    bench_ports,
    closed_loop,
    cpu_seconds,
    free_port,
    pick_prompts,
    start_serve,
    wait_up,
)
from service import Run as Throughput

sys.path.insert(0, str(ROOT))
from tests.fakes.fake_provider import FakeProviderProcess

PEER_BIN = ROOT / ".venv-peers" / "bin" / "litellm"
PORTKEY_DIR = ROOT / ".peers-node"
PORTKEY_ENTRY = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / \
    "start-server.js"
RUN_TIME_LIMIT_S = 90.0
WARM = 40  # requests per path and mode before a phase's timed runs
TARGET_OVERHEAD_RATIO = 0.5  # ours at most half of LiteLLM's
TARGET_RPS_RATIO = 2.0  # ours at least twice LiteLLM's
TARGET_GOVERNANCE_MS = 0.3  # keys, budgets and rate limits: at most this much at the median
TARGETS = ("direct", "switchpoint", "LiteLLM", "Portkey")  # the default order
PEERS = ("LiteLLM", "Portkey")
NAMES = ("direct", "switchpoint", "switchpoint auto", "LiteLLM", "Portkey")  # table columns
# What a gateway process's command line holds (LiteLLM's proxy, Portkey's gateway, ours).
GATEWAY_MARKS = ("bin/litellm", "@portkey-ai/gateway", "switchpoint.cli serve",
                 "bin/switchpoint serve")
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
    proc: subprocess.Popen[bytes] | None  # the leader of the server's own process group
    model: str
    headers: str = ""  # extra request header lines (CRLF-terminated), e.g. the client key

    def stop(self) -> None:
        stop_group(self.proc)

    def body(self, prompt: str, stream: bool) -> bytes:
        payload: dict[str, object] = {"model": self.model,
                                      "messages": [{"role": "user", "content": prompt}]}
        if stream:
            payload["stream"] = True
        return json.dumps(payload).encode()


def _proc_stat(pid: str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_pids(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(entry)) is not None \
                and fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process of group ``pgid`` (all their threads)."""
    total = 0.0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, IndexError):  # (it exited meanwhile)
            total += cpu_seconds(pid)
    return total


def stop_group(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """Stop ``proc`` and every process of its group (SIGTERM, then SIGKILL after ``timeout``),
    and wait until none is left."""
    if proc is None:
        return
    pgid = proc.pid  # each server is started with start_new_session: it leads its group

    def signal_group(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    def alive() -> bool:
        return proc.poll() is None or bool(group_pids(pgid))

    if not alive():
        return
    signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive():
        signal_group(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while group_pids(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if group_pids(pgid):
        raise RuntimeError(f"process group {pgid} outlived SIGKILL: {group_pids(pgid)}")


def listening(base: str) -> bool:
    """Whether something accepts connections at ``base``."""
    try:
        with socket.create_connection(_host_port(base), timeout=2):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return True  # (a timeout: something holds the port)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


class Guard:
    """The gateways this run started, to time each target with no other one alive."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []  # (target, process group)

    def add(self, server: Server) -> None:
        assert server.proc is not None
        self.started.append((server.name, server.proc.pid))

    def check(self, timing: str, active: Server | None) -> None:
        """Refuse to time ``timing`` while a process of another target this run started is
        alive, or while ``active`` (the gateway being timed, if any) is not."""
        mine = active.proc.pid if active is not None and active.proc is not None else None
        for name, pgid in self.started:
            if pgid != mine and (pids := group_pids(pgid)):
                raise SystemExit(f"refusing to time {timing}: {name} (process group {pgid}, "
                                 f"pids {pids}) is still running")
        if active is not None and active.proc is not None and active.proc.poll() is not None:
            raise SystemExit(f"refusing to time {timing}: its server exited with "
                             f"{active.proc.returncode}")

    def foreign(self) -> list[str]:
        """Gateway processes on this machine that this run did not start (pid and command)."""
        mine = {pgid for _, pgid in self.started}
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            fields = _proc_stat(entry)
            if fields is None or fields[0] == "Z" or int(fields[2]) in mine:
                continue
            command = _cmdline(entry)
            if any(mark in command for mark in GATEWAY_MARKS):
                out.append(f"pid {entry}: {command[:100]}")
        return out


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
                              "--log-level", "warning"], new_session=True)
    try:
        wait_up(f"{base}/health", proc)
    except RuntimeError:
        stop_group(proc)
        raise
    return Server(name, base, proc, "bench", headers)


def start_litellm(tmp: Path, fake: FakeProviderProcess) -> Server | str:
    if not PEER_BIN.exists():
        return f"not measured: {PEER_BIN} missing (run scripts/setup-peers)"
    tmp.mkdir(parents=True, exist_ok=True)
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
                            stderr=subprocess.DEVNULL, cwd=tmp, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/health/liveliness", proc)
    except RuntimeError as exc:
        stop_group(proc)
        return f"failed to start: {exc}"
    return Server("LiteLLM", base, proc, "bench")


def start_portkey(tmp: Path, fake: FakeProviderProcess) -> Server | str:
    node = shutil.which("node")
    if node is None:
        return "not measured: node not found"
    if not PORTKEY_ENTRY.exists():
        return f"not measured: {PORTKEY_ENTRY.relative_to(ROOT)} missing (run scripts/setup-peers)"
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (tmp / "portkey.log").open("wb")
    proc = subprocess.Popen([node, str(PORTKEY_ENTRY), f"--port={port}", "--headless"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                            start_new_session=True)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/", proc, timeout=60)
    except RuntimeError as exc:
        stop_group(proc)
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


STATS: dict[str, Callable[[Sequence[float]], float]] = {
    "median": statistics.median, "p99": lambda v: percentile(v, 0.99)}


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


async def load(target: Server, prompts: Sequence[str], concurrency: int,
               stream: bool) -> Throughput:
    """``concurrency`` clients sending chat requests through ``target`` until the prompts run
    out (each body is made within its request's timed span)."""
    return await closed_loop(
        target.base, prompts, concurrency,
        lambda conn, prompt: conn.post("/v1/chat/completions", target.body(prompt, stream),
                                       target.headers),
        lambda status, data: status == 200 and answered(data, stream), RUN_TIME_LIMIT_S)


def measured_load(target: Server, prompts: Sequence[str], concurrency: int,
                  stream: bool) -> Throughput:
    pgid = target.proc.pid if target.proc is not None else None
    before = group_cpu_seconds(pgid) if pgid else 0.0
    run = asyncio.run(load(target, prompts, concurrency, stream))
    if pgid:
        run.cpu_ms = (group_cpu_seconds(pgid) - before) / max(1, run.sent) * 1e3
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


@dataclass
class Figures:
    """What one round measured (or the medians over rounds)."""
    # (target, stream, "median" | "p99") -> the gateway's latency minus the direct one, ms
    overhead: dict[tuple[str, bool, str], float] = field(default_factory=dict)
    # (stream, "median" | "p99") -> the direct latency of each phase, ms
    direct: dict[tuple[bool, str], list[float]] = field(default_factory=dict)
    rps: dict[tuple[str, bool], Throughput] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # "target mode" -> sequential errors

    def names(self) -> list[str]:
        measured = {k[0] for k in self.overhead} | {k[0] for k in self.rps}
        return [n for n in NAMES if n in measured]


STARTERS: dict[str, Callable[[Path, FakeProviderProcess], Server | str]] = {
    "switchpoint": start_switchpoint, "LiteLLM": start_litellm, "Portkey": start_portkey}


@dataclass
class Run:
    """What every phase of a run shares."""
    args: argparse.Namespace
    distinct: list[str]
    guard: Guard
    notes: dict[str, None]  # ordered, without repeats
    tmp: Path


def measure_target(name: str, run: Run, figures: Figures, label: str) -> None:
    """One phase: start the fake and ``name``'s server, check, warm, time, stop both."""
    t0 = time.monotonic()
    fake = FakeProviderProcess(lean=True, ports=bench_ports()).start()
    server: Server | None = None
    try:
        direct = Server("direct", fake.url, None, "bench")
        gateways: list[Server] = []
        if name != "direct":
            started = STARTERS[name](run.tmp / label.replace(" ", "-"), fake)
            if isinstance(started, str):
                run.notes[f"{name} (plain/stream): {started}"] = None
                return
            server = started
            run.guard.add(server)
            gateways = [server]
            if name == "switchpoint":
                gateways.append(Server("switchpoint auto", server.base, server.proc, "auto"))
        modes = [False, True]
        if name in PEERS:
            assert server is not None
            for stream, why in forwarding(server).items():
                if why:
                    modes.remove(stream)
                    run.notes[f"{name} ({'stream' if stream else 'plain'}): does not forward "
                              f"to the fake, not measured ({why})"] = None
        started_s = time.monotonic() - t0
        foreign = run.guard.foreign()
        load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{label}: {name} up in {started_s:.1f} s, load average {load_avg}",
              file=sys.stderr, flush=True)
        if foreign:
            print(f"warning: {len(foreign)} gateway process(es) this run did not start are "
                  f"running; the figures may be low: " + "; ".join(foreign[:3]),
                  file=sys.stderr, flush=True)
        prompts = Prompts(run.distinct)
        paths = [direct, *gateways]
        for stream in modes:  # warm every path up (imports, pools, MiniLM)
            for t in paths:
                asyncio.run(load(t, prompts.take(t.name, WARM), 4, stream))
        args = run.args
        for stream in modes if gateways else []:
            run.guard.check(f"{name} (sequential)", server)
            slices = {t.name: prompts.take(t.name, args.n) for t in paths}
            lat = asyncio.run(sequential(paths, slices, stream, alternate=True))
            for stat, fn in STATS.items():
                base = fn(lat.values["direct"])
                figures.direct.setdefault((stream, stat), []).append(base)
                for t in gateways:
                    figures.overhead[(t.name, stream, stat)] = fn(lat.values[t.name]) - base
            for t in paths:
                if lat.errors[t.name]:
                    key = f"{t.name} {'stream' if stream else 'plain'}"
                    figures.errors[key] = figures.errors.get(key, 0) + lat.errors[t.name]
        for t in gateways or [direct]:
            for stream in modes:
                run.guard.check(f"{t.name} (throughput)", server)
                figures.rps[(t.name, stream)] = measured_load(
                    t, prompts.take(t.name, args.rps_n), args.concurrency, stream)
    finally:
        if server is not None:  # (before its data dir goes: a service would log its loss)
            server.stop()
        fake.stop()
    if server is not None and listening(server.base):
        raise SystemExit(f"{name}'s port is still open after its process group stopped "
                         f"({server.base})")
    print(f"{label}: {name} measured and stopped, {time.monotonic() - t0:.1f} s in all",
          file=sys.stderr, flush=True)


def median_figures(rounds: Sequence[Figures]) -> Figures:
    """Each figure's median over the rounds that have it (errors: their sum)."""
    out = Figures()
    for key in {k for f in rounds for k in f.overhead}:
        out.overhead[key] = statistics.median(f.overhead[key] for f in rounds
                                              if key in f.overhead)
    for dkey in {k for f in rounds for k in f.direct}:
        out.direct[dkey] = [v for f in rounds for v in f.direct.get(dkey, [])]
    for rkey in {k for f in rounds for k in f.rps}:
        runs = [f.rps[rkey] for f in rounds if rkey in f.rps]
        out.rps[rkey] = Throughput(
            statistics.median(r.rps for r in runs), statistics.median(r.median_ms for r in runs),
            statistics.median(r.p99_ms for r in runs), sum(r.errors for r in runs),
            sum(r.sent for r in runs), statistics.median(r.cpu_ms for r in runs))
    for f in rounds:
        for ekey, count in f.errors.items():
            out.errors[ekey] = out.errors.get(ekey, 0) + count
    return out


def parse_order(text: str, no_portkey: bool) -> list[str]:
    """The targets named in ``--order`` (comma-separated, any case), checked."""
    by_lower = {t.lower(): t for t in TARGETS}
    order: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        target = by_lower.get(part.lower())
        if target is None:
            raise SystemExit(f"--order: unknown target {part!r}; name each of "
                             f"{', '.join(TARGETS)} once, e.g. --order {','.join(TARGETS)}")
        if target in order:
            raise SystemExit(f"--order: {target} named twice")
        order.append(target)
    missing = [t for t in ("direct", "switchpoint") if t not in order]
    if missing:
        raise SystemExit(f"--order: {' and '.join(missing)} missing (every run measures direct "
                         "and switchpoint; LiteLLM and Portkey may be left out)")
    return [t for t in order if not (no_portkey and t == "Portkey")]


def rotated(order: Sequence[str], rounds: int) -> list[list[str]]:
    """Each round's order: the first as given, each next one rotated by one target."""
    return [[*order[r % len(order):], *order[:r % len(order)]] for r in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="sequential requests per target")
    parser.add_argument("--rps-n", type=int, default=1500, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-portkey", action="store_true",
                        help="leave Portkey's gateway out (it is measured when installed)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every target's phase this many times, the order rotated "
                             "by one target each round (default 1)")
    parser.add_argument("--order", default=",".join(TARGETS),
                        help="the first round's order of the targets, comma-separated "
                             f"(default {','.join(TARGETS)})")
    parser.add_argument("--governance", action="store_true",
                        help="measure what keys, budgets and rate limits add instead")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full",
                        help="the servers' store.synchronous (--governance; default full)")
    args = parser.parse_args()
    for flag, value in (("--n", args.n), ("--rps-n", args.rps_n),
                        ("--concurrency", args.concurrency), ("--rounds", args.rounds)):
        if not 1 <= value <= 100_000:
            raise SystemExit(f"{flag} {value}: give a whole number from 1 to 100000")
    if args.governance:
        governance_main(args)
        return
    order = parse_order(args.order, args.no_portkey)
    if args.no_portkey:
        order_note = {"Portkey (plain/stream): left out (--no-portkey)": None}
    else:
        order_note = {f"{p} (plain/stream): left out (not in --order)": None
                      for p in PEERS if p not in order}
    rounds: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="switchpoint-gateway-bench-") as tmp:
        run = Run(args, pick_prompts(WARM * 2 + args.n * 2 + args.rps_n * 2), Guard(),
                  dict(order_note), Path(tmp))
        orders = rotated(order, args.rounds)
        for r, round_order in enumerate(orders, 1):
            figures = Figures()
            for name in round_order:
                measure_target(name, run, figures, f"round {r} {name}")
            rounds.append(figures)
            if args.rounds > 1:
                report(figures, f"Round {r} of {args.rounds} (order: {', '.join(round_order)})",
                       args, None)
                print()
    if args.rounds > 1:
        report(median_figures(rounds), f"Medians over {args.rounds} rounds (orders: "
               + "; ".join(", ".join(o) for o in orders) + ")", args, list(run.notes))
    else:
        report(rounds[0], f"Order: {', '.join(order)}", args, list(run.notes))


def _ratio(ours: float, peer: float | None) -> str:
    return "" if peer is None or peer == 0 else f"{ours / peer:.2f}x"


def report(figures: Figures, title: str, args: argparse.Namespace,
           notes: list[str] | None) -> None:
    """The figures as tables; with ``notes`` (the last table), the targets and the notes."""
    names = figures.names()
    gateways = [n for n in names if n != "direct"]
    has_peer = "LiteLLM" in names
    others = [n for n in ("Portkey",) if n in names]  # peers shown as ratios, no target
    print(f"Gateway in front of the same fake provider (loopback, 2 cores, keep-alive, "
          f"one load generator, each gateway alone, the fake restarted for each); {args.n} "
          f"sequential requests per target, {args.rps_n} per throughput run at concurrency "
          f"{args.concurrency}")
    print(title)
    print()
    print("Overhead = latency through the gateway - latency direct to the fake, "
          "same percentile (ms)")
    header = f"{'':<22}" + "".join(f"{n:>18}" for n in gateways)
    if has_peer:
        header += f"{'ours/LiteLLM':>14}{'target':>9}"
    header += "".join(f"{'ours/' + n:>14}" for n in others)
    print(header)
    for stream in (False, True):
        for stat in STATS:
            over = {n: figures.overhead[(n, stream, stat)] for n in gateways
                    if (n, stream, stat) in figures.overhead}
            line = f"{('stream ' if stream else 'plain ') + stat:<22}"
            line += "".join(f"{over[n]:>18.2f}" if n in over else f"{'n/a':>18}"
                            for n in gateways)
            ours = over.get("switchpoint")
            if has_peer:
                if "LiteLLM" in over and ours is not None:
                    ratio = ours / over["LiteLLM"] if over["LiteLLM"] else float("nan")
                    ok = "met" if ratio <= TARGET_OVERHEAD_RATIO else "NOT met"
                    line += f"{ratio:>13.2f}x{ok:>9}"
                else:
                    line += f"{'n/a':>14}{'':>9}"
            for n in others:
                shown = _ratio(ours, over.get(n)) if ours is not None else ""
                line += f"{shown or 'n/a':>14}"
            print(line)
    direct = [f"{'stream' if s else 'plain'} median "
              f"{statistics.median(figures.direct[(s, 'median')]):.2f} / p99 "
              f"{statistics.median(figures.direct[(s, 'p99')]):.2f} ms"
              for s in (False, True) if (s, "median") in figures.direct]
    if direct:
        print("direct to the fake (median over the phases): " + ", ".join(direct))
    if figures.errors:
        print(f"errors (sequential): {figures.errors}")
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
            r = figures.rps.get((n, stream))
            cell = ("n/a" if r is None else
                    f"{r.rps:6.0f} ({r.median_ms:5.1f} / {r.p99_ms:6.1f}, {r.cpu_ms:4.2f})"
                    + (f" {r.errors} err" if r.errors else ""))
            line += f"{cell:>30}"
        mine = figures.rps.get(("switchpoint", stream))
        if has_peer:
            peer = figures.rps.get(("LiteLLM", stream))
            if peer is not None and mine is not None and peer.rps:
                ratio = mine.rps / peer.rps
                ok = "met" if ratio >= TARGET_RPS_RATIO else "NOT met"
                line += f"{ratio:>13.2f}x{ok:>9}"
            else:
                line += f"{'n/a':>14}{'':>9}"
        for n in others:
            other = figures.rps.get((n, stream))
            shown = _ratio(mine.rps, other.rps if other else None) if mine else ""
            line += f"{shown or 'n/a':>14}"
        print(line)
    if notes is not None:
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
