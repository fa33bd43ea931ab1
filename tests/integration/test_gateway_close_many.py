"""Closing the library Gateway with many chat requests in flight on several event loops and
threads: close returns within its bound, each request is answered and logged or refused
saying the gateway is closed (a synchronous call let in is waited for, even one not yet begun
on the gateway's own loop as closing began: none is told it was closed while under way),
nothing hangs and nothing raises another error."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from switchpoint import Gateway
from switchpoint.errors import StoreError
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text

SLOW = "[[fake:ok:delay=0.3]]"


def _message(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i} {SLOW}"}]


def _logged(data: Path) -> int:
    with sqlite3.connect(data / "switchpoint.db") as db:
        return int(db.execute("SELECT count(*) FROM requests").fetchone()[0])


def test_close_amid_requests_on_loops_and_threads_answers_or_refuses_each(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake), encoding="utf-8")
    gateway = Gateway.from_config(config, loader=FACTORY, env=KEYS)
    outcomes: list[object] = []
    lock = threading.Lock()

    def keep(result: object) -> None:
        with lock:
            outcomes.append(result)

    async def many(base: int) -> None:
        async def one(i: int) -> None:
            for j in range(3):  # (the later ones come as closing begins, or after)
                try:
                    keep(await gateway.acomplete(_message(base + i * 10 + j), model="auto"))
                except Exception as exc:  # (told below)
                    keep(exc)
        await asyncio.gather(*(one(i) for i in range(6)))

    def sync(base: int) -> None:
        for j in range(3):
            try:
                keep(gateway.complete(_message(base + j), model="auto"))
            except Exception as exc:  # (told below)
                keep(exc)

    threads = [threading.Thread(target=asyncio.run, args=(many(1000 * n),)) for n in range(3)]
    threads += [threading.Thread(target=sync, args=(5000 + 10 * n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.45)  # (each has one answered and one under way)
    began = time.monotonic()
    gateway.close()
    took = time.monotonic() - began
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert took < gateway.retry.max_total_s + 3, took
    assert len(outcomes) == 3 * 6 * 3 + 4 * 3
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert all(isinstance(o, StoreError) and "the gateway is closed" in str(o)
               for o in refused), refused[:3]
    answered = len(outcomes) - len(refused)
    assert answered and refused
    assert _logged(tmp_path / "data") == answered


def test_close_called_from_several_threads_at_once_closes_once_and_raises_in_none(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Several threads closing one gateway together (a shutdown hook and a worker, say):
    each waits for the closing under way and returns; none raises (they raced on the
    synchronous methods' loop, one stopping it as another still used it), and the gateway is
    closed: a call is refused saying so, and another gateway opens its data_dir."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake), encoding="utf-8")
    gateway = Gateway.from_config(config, loader=FACTORY, env=KEYS)
    gateway.complete(_message(1), model="cheap")  # (the synchronous methods' loop runs)
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def close() -> None:
        start.wait()
        try:
            gateway.close()
        except BaseException as exc:  # (told below)
            failures.append(exc)

    closers = [threading.Thread(target=close) for _ in range(4)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(timeout=60)
    assert not any(closer.is_alive() for closer in closers), "a close never returned"
    assert failures == []
    try:
        gateway.complete(_message(2), model="cheap")
    except StoreError as exc:
        assert "the gateway is closed" in str(exc)
    else:
        raise AssertionError("a closed gateway answered")
    Gateway.from_config(config, loader=FACTORY, env=KEYS).close()
    assert _logged(tmp_path / "data") == 1
