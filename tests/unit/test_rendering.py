"""Writing an answer's JSON off the event loop: the same bytes, in pieces the loop gets the GIL
between (switchpoint.gateway.rendering)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from starlette.responses import JSONResponse

from switchpoint.gateway.providers._http import OFF_LOOP_BYTES
from switchpoint.gateway.rendering import is_large, json_length, json_pieces, render_off_loop
from switchpoint.server.streaming import chunk_json

_RENDER = JSONResponse(None).render

# The densest JSON there is (empty objects), as an upstream's answer of 3.9 MiB carries it.
DENSE: dict[str, Any] = {"id": "chatcmpl-dense", "choices": [{"message": {"content": "DENSE"}}],
                         "extra": [{} for _ in range(int(3.9 * 2**20 / 3))]}

VALUES: list[Any] = [
    DENSE,
    {"content": "é—ü\u2028\\\"\n" * 40_000, "n": [1.5, -2, True, None, False]},
    [[{"k": "v" * 100, "é": [1, 2, 3]}] * 50 for _ in range(200)],
    {"a": {"b": {"c": [{"d": "x" * 70_000}, {"e": [[]] * 40_000}]}}, "z": {}},
    [{"small": 1}] * 5 + ["y" * 200_000] + [{}] * 30_000,
    {"short": "answer"}, [], {}, "text", 3, None, {1: "a key not a string", "b": [2.5]},
]


@pytest.mark.parametrize("render", [_RENDER, chunk_json], ids=["answer", "chunk"])
@pytest.mark.parametrize("value", VALUES)
def test_the_pieces_are_the_json_written_in_one_go(value: Any, render: Any) -> None:
    pieces = list(json_pieces(value, render))
    assert b"".join(pieces) == render(value)
    assert json_length(value, 10**9) <= len(render(value))
    if is_large(value):  # (a long string is one piece: written fast, in a run of text)
        assert len(pieces) > 3
    if value is DENSE:
        assert max(map(len, pieces)) < 3 * OFF_LOOP_BYTES


def test_a_large_answer_is_counted_only_up_to_the_threshold() -> None:
    started = time.perf_counter()
    assert json_length(DENSE, OFF_LOOP_BYTES) > OFF_LOOP_BYTES
    # (some 15 µs; counting the whole of it takes 0.7 s: a bound a loaded host keeps)
    assert time.perf_counter() - started < 0.25
    assert not is_large({"choices": [{"message": {"content": "x" * 60_000}}]})


def test_a_large_answer_is_written_on_a_worker_the_loop_going_on_meanwhile() -> None:
    """The dense answer is written on a worker thread, a piece at a time, and the event loop
    runs between the pieces: written in one go (one call holding the GIL), its 50 ms held the
    loop wherever it ran. A short one is written at once, on the loop."""
    threads: list[str] = []

    def render(value: Any) -> bytes:
        threads.append(threading.current_thread().name)
        return _RENDER(value)

    async def run() -> tuple[bytes, float, str]:
        gaps = [0.0]

        async def tick() -> None:
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.005)
        body = await render_off_loop(DENSE, render)
        ticker.cancel()
        short = await render_off_loop({"short": "answer"}, render)
        assert short == b'{"short":"answer"}'
        return body, max(gaps), threading.current_thread().name

    body, worst_gap, loop_thread = asyncio.run(run())
    assert body == _RENDER(DENSE)
    assert set(threads[:-1]) and all(t.startswith("switchpoint-json") for t in threads[:-1])
    assert threads[-1] == loop_thread
    # Written in pieces (one encoder call each, the GIL let go between them): how long the
    # loop waited depends on the host's load, so what is asserted is the pieces; the gap is
    # shown where that fails.
    assert len(threads) - 1 > 10, (len(threads), f"loop held {worst_gap * 1000:.0f} ms")
