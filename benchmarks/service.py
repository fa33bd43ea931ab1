"""HTTP routing throughput: switchpoint's service beside OpenTracy's Go engine, same prompts.

Starts both servers on loopback, then a load generator in this script (asyncio, one keep-alive
HTTP/1.1 connection per concurrent client) sends the same distinct prompts (real prompts from
../shared/data, 6-16 words, never repeated, so no decision cache hit) to ``POST /v1/route`` at
each concurrency, and prints requests/s and median/p99 latency side by side. switchpoint runs
twice: with its default ``store.synchronous: full`` (every decision fsynced before the answer)
and with ``normal`` (survives a crash of the process, not of the machine), which measures what
durability costs. Also measures the SQLite store alone (commit per decision vs group commit).

OpenTracy's engine is the Go binary inside its wheel (``opentracy/_bin``), launched as its own
``GoEngine`` launches it: ``--host --port --weights <bundled weights-mmlu-v1>`` with
``ONNXRUNTIME_LIB_PATH`` pointing at the bundled libonnxruntime. Create it with
``scripts/setup-peers``.

Usage: python benchmarks/service.py [--n 400] [--concurrency 1,16,64] [--peer-site DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import httpx
from _common import DATASETS, ROOT, dataset_records, percentile

PEER_SITE = ROOT / ".venv-peers" / "lib" / "python3.11" / "site-packages" / "opentracy"
RUN_TIME_LIMIT_S = 120.0
Item = TypeVar("Item")


def pick_prompts(count: int) -> list[str]:
    """Distinct real prompts: the first sentence of each record, 6-16 words."""
    seen: set[str] = set()
    out: list[str] = []
    for name in DATASETS:
        for prompt in dataset_records(name).prompts:
            first = " ".join(prompt.split()).split("?")[0].split(".")[0]
            if 6 <= len(first.split()) <= 16 and first not in seen:
                seen.add(first)
                out.append(first)
    if len(out) < count:
        raise SystemExit(f"only {len(out)} distinct prompts; lower --n")
    return out[:count]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port: any, or with ``SWITCHPOINT_BENCH_PORTS=LO-HI`` the first free one
    in that range not handed out before (for a machine whose users share out port ranges)."""
    ports = bench_ports()
    if ports is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    for candidate in ports:
        if candidate in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        _HANDED_OUT.add(candidate)
        return candidate
    raise SystemExit(f"SWITCHPOINT_BENCH_PORTS={ports.start}-{ports.stop - 1}: no free port "
                     "left")


def bench_ports() -> range | None:
    """The ports ``SWITCHPOINT_BENCH_PORTS=LO-HI`` reserves for benchmarks, if set."""
    span = os.environ.get("SWITCHPOINT_BENCH_PORTS")
    if not span:
        return None
    lo, _, hi = span.partition("-")
    return range(int(lo), int(hi or lo) + 1)


LISTENING = b"switchpoint: listening on "


def start_serve(args: Sequence[str], env: dict[str, str] | None = None,
                log: IO[bytes] | None = None, timeout: float = 180, *,
                new_session: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """``switchpoint serve ARGS`` on a port it binds itself (any free one, or a free one of
    ``SWITCHPOINT_BENCH_PORTS``), so none is lost to a race between its choice and the bind:
    the process and its base URL, once it says where it listens. Its stderr goes to ``log``
    (else is inherited); its stdout after that line too (else is discarded). With
    ``new_session`` it leads a process group of its own (stopped whole with ``os.killpg``)."""
    ports = bench_ports()
    port = "0" if ports is None else f"{ports.start}-{ports.stop - 1}"
    proc = subprocess.Popen([sys.executable, "-m", "switchpoint.cli", "serve", "--port", port,
                             *args], env=env, stdout=subprocess.PIPE, stderr=log,
                            start_new_session=new_session)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        line = proc.stdout.readline() if ready else b""
        if line.startswith(LISTENING):
            base = line[len(LISTENING):].decode().strip()
            threading.Thread(target=_drain, args=(proc.stdout, log), daemon=True).start()
            return proc, base
        if ready and not line:
            break  # it exited
    proc.kill()
    proc.wait()
    raise RuntimeError(f"switchpoint serve did not say where it listens (exit code "
                       f"{proc.returncode})")


def _drain(pipe: IO[bytes], log: IO[bytes] | None) -> None:
    for line in pipe:
        if log is not None:
            log.write(line)


@dataclass
class Service:
    name: str
    base: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_up(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 180) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}: not up after {timeout} s")


def start_switchpoint(data_dir: Path, synchronous: str) -> Service:
    env = {**os.environ, "SWITCHPOINT_STORE__SYNCHRONOUS": synchronous}
    proc, base = start_serve(["--data-dir", str(data_dir), "--log-level", "warning"], env)
    wait_up(f"{base}/health", proc)
    return Service(f"switchpoint (sync={synchronous})", base, proc)


def start_opentracy(site: Path) -> Service | str:
    binary = site / "_bin" / "opentracy-engine-linux-amd64"
    weights = site / "_bundled_weights" / "weights-mmlu-v1"
    if not binary.exists():
        return f"not measured: {binary} missing (run scripts/setup-peers)"
    # The wheel ships the embedder's files beside the binary; its Python API copies them into
    # the weights folder on first start, which launching the binary directly must do too.
    onnx = weights / "onnx"
    for name in ("model.onnx", "vocab.txt"):
        if not (onnx / name).exists() and (site / "_onnx" / name).exists():
            onnx.mkdir(exist_ok=True)
            shutil.copy2(site / "_onnx" / name, onnx / name)
    libs = sorted((site / "_bin").glob("libonnxruntime.so*"))
    env = {**os.environ, **({"ONNXRUNTIME_LIB_PATH": str(libs[0])} if libs else {})}
    port = free_port()
    proc = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(port),
                             "--weights", str(weights)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/health", proc)
    except RuntimeError as exc:
        proc.kill()
        return f"failed: {exc}"
    return Service("OpenTracy Go", base, proc)


@dataclass
class Run:
    rps: float
    median_ms: float
    p99_ms: float
    errors: int
    sent: int
    cpu_ms: float = 0.0  # the server's CPU time (all threads) per request


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(service: Service, prompts: Sequence[str], concurrency: int) -> Run:
    before = cpu_seconds(service.proc.pid)
    run = asyncio.run(load(service.base, prompts, concurrency))
    run.cpu_ms = (cpu_seconds(service.proc.pid) - before) / max(1, run.sent) * 1e3
    return run


def health_cpu_ms(service: Service, n: int = 300) -> float:
    """Server CPU per GET /health: what the HTTP stack costs without any routing."""
    with httpx.Client(base_url=service.base) as client:
        client.get("/health")
        before = cpu_seconds(service.proc.pid)
        for _ in range(n):
            client.get("/health")
    return (cpu_seconds(service.proc.pid) - before) / n * 1e3


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol to POST JSON and
    read the answer. A load generator this thin keeps its own CPU use (which competes with the
    servers on 2 cores) small and equal for both; httpx's pool slows down past ~16 connections."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, extra: str = "") -> tuple[int, bytes]:
        """POST ``body``; ``extra`` holds more header lines, each ending in CRLF."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        else:  # chunked
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(p[:-2] for p in parts)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def closed_loop(base: str, items: Iterable[Item], concurrency: int,
                      send: Callable[[Connection, Item], Awaitable[tuple[int, bytes]]],
                      answered: Callable[[int, bytes], bool], time_limit: float) -> Run:
    """``concurrency`` clients, each on a keep-alive connection to ``base`` sending one request
    at a time (``send``: an item's request on a connection, timed from its call to the whole
    answer) until the items run out or ``time_limit`` seconds have passed: requests/s, median
    and p99 latency, and the errors: answers ``answered`` refuses (given status and body), and
    requests whose connection broke (not timed; the connection is opened anew)."""
    latencies: list[float] = []
    errors = 0
    queue = iter(items)
    host, port = base.removeprefix("http://").split(":")
    deadline = time.monotonic() + time_limit

    async def client() -> None:
        nonlocal errors
        conn = Connection(host, int(port))
        try:
            for item in queue:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    status, data = await send(conn, item)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    await conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                if not answered(status, data):
                    errors += 1
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return Run(len(latencies) / elapsed, statistics.median(latencies) * 1e3,
               percentile(latencies, 0.99) * 1e3, errors, len(latencies))


async def load(base: str, prompts: Sequence[str], concurrency: int) -> Run:
    """``concurrency`` clients, each sending one request at a time until the prompts run out
    (each body made before its request is timed)."""
    bodies = (json.dumps({"prompt": prompt}).encode() for prompt in prompts)
    return await closed_loop(base, bodies, concurrency,
                             lambda conn, body: conn.post("/v1/route", body),
                             lambda status, data: status == 200 and b"selected_model" in data,
                             RUN_TIME_LIMIT_S)


def store_cost(n: int = 300) -> dict[str, float]:
    """Milliseconds per decision written: one at a time (a commit each) and 64 at a time."""
    from switchpoint.store import DecisionRecord, SQLiteStore

    def record() -> DecisionRecord:
        return DecisionRecord(uuid.uuid4().hex, time.time(), "m", 1, 0.5, ["m", "n"], False,
                              0.2, 3.0, "cluster", "w", 0.1, 0.2)

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="switchpoint-bench-") as tmp:
        for sync in ("full", "normal"):
            with SQLiteStore(Path(tmp) / f"{sync}.db", synchronous=sync) as store:
                t0 = time.perf_counter()
                for _ in range(n):
                    store.append(record()).result()
                out[f"{sync}_sequential_ms"] = (time.perf_counter() - t0) / n * 1e3
                t0 = time.perf_counter()
                for _ in range(n // 64 + 1):
                    for f in [store.append(record()) for _ in range(64)]:
                        f.result()
                out[f"{sync}_grouped_ms"] = (time.perf_counter() - t0) / ((n // 64 + 1) * 64) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="requests per run")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--peer-site", default=str(PEER_SITE),
                        help="the installed opentracy package directory")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    warm = 30
    prompts = pick_prompts(warm + args.n * len(levels))
    batches = [prompts[warm + i * args.n: warm + (i + 1) * args.n] for i in range(len(levels))]
    services: list[Service] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="switchpoint-bench-") as tmp:
        try:
            for sync in ("full", "normal"):
                services.append(start_switchpoint(Path(tmp) / sync, sync))
            peer = start_opentracy(Path(args.peer_site))
            if isinstance(peer, str):
                notes.append(f"OpenTracy Go: {peer}")
            else:
                services.append(peer)
            for s in services:  # both sides load their embedder and page in before timing
                asyncio.run(load(s.base, [f"warm-up {p}" for p in prompts[:warm]], 4))
            results: dict[tuple[str, int], Run] = {}
            for level, batch in zip(levels, batches, strict=True):
                order = services if level % 2 else list(reversed(services))
                for s in order:
                    results[(s.name, level)] = measured(s, batch, level)
            health = {s.name: health_cpu_ms(s) for s in services}
        finally:
            for s in services:
                s.stop()
    print(f"POST /v1/route, {args.n} distinct prompts per run (6-16 words, ../shared/data), "
          "loopback, keep-alive, same load generator")
    header = f"{'concurrency':>11}" + "".join(f" | {s.name:>32}" for s in services)
    print(header)
    print(f"{'':>11}" + "".join(f" | {'req/s  median / p99 ms  CPU ms':>32}" for _ in services))
    for level in levels:
        row = f"{level:>11}"
        for s in services:
            r = results[(s.name, level)]
            err = f" ({r.errors} errors)" if r.errors else ""
            row += f" | {r.rps:5.0f} {r.median_ms:7.2f} / {r.p99_ms:7.2f} {r.cpu_ms:6.2f}{err}"
        print(row)
    print("CPU ms = the server's CPU time (all its threads) per request; GET /health: "
          + ", ".join(f"{name} {ms:.2f} ms" for name, ms in health.items()))
    for note in notes:
        print(note)
    cost = store_cost()
    print("SQLite decision log alone: "
          f"full {cost['full_sequential_ms']:.2f} ms per decision committed alone, "
          f"{cost['full_grouped_ms']:.3f} ms in groups of 64; "
          f"normal {cost['normal_sequential_ms']:.2f} / {cost['normal_grouped_ms']:.3f} ms")


if __name__ == "__main__":
    main()
