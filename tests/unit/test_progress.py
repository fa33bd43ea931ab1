"""Progress reporting: the callback contract the library keeps, and the stderr renderer."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from switchpoint._progress import StderrProgress, format_seconds, step
from switchpoint.embedding import CachedEmbedder, embed_in_steps, warm_up
from tests.conftest import FakeEmbedder

Call = tuple[str, int, int]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def renderer(bars: bool | None = None, quiet: bool = False) -> tuple[StderrProgress, io.StringIO,
                                                                     Clock]:
    stream, clock = io.StringIO(), Clock()
    return StderrProgress(stream, bars=bars, quiet=quiet, clock=clock), stream, clock


def test_bars_draw_below_the_stage_and_end_full() -> None:
    progress, stream, clock = renderer(bars=True)
    progress("embedding 300 prompts", 0, 300)
    clock.now += 2.0
    progress("embedding 300 prompts", 100, 300)
    clock.now += 0.01  # too soon to redraw
    progress("embedding 300 prompts", 150, 300)
    clock.now += 2.0
    progress("embedding 300 prompts", 300, 300)
    text = stream.getvalue()
    assert text.startswith("embedding 300 prompts\n\r  [" + "." * 30 + "] 0/300   0%  0.0 s\r")
    assert "\r  [" + "#" * 10 + "." * 20 + "] 100/300  33%  2.0 s, about 4.0 s left" in text
    assert "150/300" not in text
    # The last drawing is shorter: spaces wipe what is left of the one before.
    last = "\r  [" + "#" * 30 + "] 300/300 100%  4.0 s"
    previous = text[: text.rindex("\r")].rsplit("\r", 1)[1]
    assert text.endswith(last + " " * (len(previous) - len(last) + 1) + "\n")


def test_an_uncounted_step_is_one_line_ended_by_done() -> None:
    progress, stream, clock = renderer(bars=True)
    with step(progress, "building the int8 embedder"):
        clock.now += 3.94
    assert stream.getvalue() == "building the int8 embedder... done (3.9 s)\n"


def test_off_a_terminal_every_stage_is_one_line() -> None:
    progress, stream, clock = renderer()  # a StringIO is not a terminal: no bars
    progress("embedding 3 prompts", 0, 3)
    progress("embedding 3 prompts", 2, 3)
    clock.now += 1.25
    progress("embedding 3 prompts", 3, 3)
    progress("fitting", 0, 1)
    progress.note("wrote weights to w")  # ends the open line first
    assert stream.getvalue() == ("embedding 3 prompts... done (1.2 s)\nfitting... \n"
                                 "wrote weights to w\n")


def test_a_stage_that_fails_leaves_no_open_line() -> None:
    progress, stream, _ = renderer(bars=True)
    with pytest.raises(RuntimeError), progress, step(progress, "fitting"):
        raise RuntimeError("boom")
    assert stream.getvalue() == "fitting... \n"


def test_quiet_shows_nothing() -> None:
    progress, stream, _ = renderer(bars=True, quiet=True)
    progress("embedding", 0, 10)
    progress("embedding", 10, 10)
    progress.note("wrote it")
    progress.close()
    assert stream.getvalue() == ""


def test_a_closed_stream_never_fails_the_work() -> None:
    progress, stream, _ = renderer(bars=True)
    stream.close()
    progress("embedding", 0, 10)
    progress.note("wrote it")


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0.04, 12.55, 65, 3600)] == [
        "0.0 s", "12.6 s", "1 min 05 s", "60 min 00 s"]


def test_embed_in_steps_reports_each_step_and_embeds_the_same() -> None:
    embedder = FakeEmbedder()
    texts = [f"prompt number {i}" for i in range(7)]
    calls: list[Call] = []
    vectors = embed_in_steps(embedder, texts, lambda *c: calls.append(c), "embedding", step=3)
    assert calls == [("embedding", 0, 7), ("embedding", 3, 7), ("embedding", 6, 7),
                     ("embedding", 7, 7)]
    assert [len(batch) for batch in embedder.calls] == [3, 3, 1]
    np.testing.assert_array_equal(vectors, FakeEmbedder().embed(texts))
    assert embed_in_steps(embedder, [], lambda *c: calls.append(c)).shape == (0, 384)
    assert calls[-1] == ("embedding 0 prompts with fake/hash-384", 0, 0)


class Warmable(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.warmed_with: list[object] = []

    def warm_up(self, progress: object = None) -> None:
        self.warmed_with.append(progress)


def test_warm_up_passes_progress_through_the_cache_to_an_embedder_that_takes_it() -> None:
    inner = Warmable()

    def progress(stage: str, done: int, total: int) -> None: ...

    warm_up(CachedEmbedder(inner), progress)
    warm_up(inner)
    assert inner.warmed_with == [progress, None]
    warm_up(FakeEmbedder(), progress)  # no warm_up at all: nothing to do


def test_the_int8_build_is_reported_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchpoint.embedding import minilm_graph

    source = tmp_path / "model.onnx"
    source.write_bytes(b"source network")
    monkeypatch.setattr(minilm_graph, "build_fused_model", lambda s, out: out.write_bytes(b"f"))
    monkeypatch.setattr(minilm_graph, "_quantize", lambda f, out: out.write_bytes(b"int8"))
    calls: list[Call] = []
    built = minilm_graph.int8_model(source, tmp_path / "cache", lambda *c: calls.append(c))
    assert built.read_bytes() == b"int8"
    assert calls == [(minilm_graph.BUILD_STAGE, 0, 1), (minilm_graph.BUILD_STAGE, 1, 1)]
    assert minilm_graph.BUILD_STAGE == "building the int8 embedder, once per machine (about 4 s)"
    assert minilm_graph.int8_model(source, tmp_path / "cache",
                                   lambda *c: calls.append(c)) == built  # cached
    assert len(calls) == 2
