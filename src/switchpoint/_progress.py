"""Progress reporting: the callback slow library functions accept, and the CLI's stderr renderer.

Library functions that can take a while (``fit``, ``evaluate``, the one-time embedder build)
accept ``progress``, a function called as ``progress(stage, done, total)``, and never print:

* ``stage`` says what is happening, e.g. ``"embedding 4800 prompts with all-MiniLM-L6-v2/tail-64"``;
* ``total`` is how many units the stage has (``1`` for a step that cannot be counted);
* ``done`` is how many are finished. A stage is reported first with ``done=0`` and, when it
  completes, with ``done == total``; a stage that fails is simply never completed.

:class:`StderrProgress` draws those calls for a person: a bar per counted stage when stderr is a
terminal (or when forced), and otherwise one ``stage... done (1.2 s)`` line per stage, so logs
stay readable. It writes only to its own stream, never to stdout.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from switchpoint._messages import printable

#: ``progress(stage, done, total)``; see the module docstring.
ProgressFn = Callable[[str, int, int], None]

_BAR_WIDTH = 30
# Redraw a bar at most this often: a terminal cannot show faster, and each write costs a syscall.
_REDRAW_SECONDS = 0.1


@contextmanager
def step(progress: ProgressFn | None, stage: str) -> Iterator[None]:
    """Report one uncounted step around the ``with`` body: ``(stage, 0, 1)``, then ``(stage, 1, 1)``
    if the body finishes without raising."""
    if progress is not None:
        progress(stage, 0, 1)
    yield
    if progress is not None:
        progress(stage, 1, 1)


def format_seconds(seconds: float) -> str:
    """``0.4 s``, ``12.5 s``, ``2 min 05 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def stream_is_terminal(stream: TextIO | None) -> bool:
    """Whether ``stream`` is an interactive terminal (``False`` for a closed or missing one)."""
    if stream is None:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class StderrProgress:
    """Renders ``progress(stage, done, total)`` calls, and the CLI's own notes, on stderr.

    ``bars``: draw redrawn bars (``None``: only when the stream is a terminal). ``quiet``: show
    nothing at all. Call :meth:`close` (or use it as a context manager) to end an open line.
    """

    def __init__(self, stream: TextIO | None = None, *, bars: bool | None = None,
                 quiet: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.bars = stream_is_terminal(self.stream) if bars is None else bars
        self.quiet = quiet
        self._clock = clock
        self._stage: str | None = None
        self._finished = True
        self._line_open = False  # the cursor is after text on an unfinished line
        self._started = 0.0
        self._drawn_at = 0.0
        self._drawn_width = 0

    def __enter__(self) -> StderrProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        now = self._clock()
        if stage != self._stage or (self._finished and done < total):
            self._end_line()
            self._stage, self._finished = stage, False
            self._started, self._drawn_at, self._drawn_width = now, now, 0
            self._begin(stage, min(done, total), total)
        if self._finished:
            return
        if done >= total:
            self._finished = True
            self._finish(total, now - self._started)
        elif self.bars and total > 1 and now - self._drawn_at >= _REDRAW_SECONDS:
            self._drawn_at = now
            self._draw_bar(done, total, now - self._started)

    def note(self, text: str) -> None:
        """A line of feedback that is not progress (e.g. ``wrote 12 decisions to out.jsonl``),
        each of its lines with the characters a terminal would not show as itself written as
        ``\\uXXXX`` (:func:`~switchpoint._messages.printable`): a note names paths and names
        the user gave, which may hold an escape."""
        if self.quiet:
            return
        self._end_line()
        self._write("\n".join(printable(line) for line in text.split("\n")) + "\n")

    def close(self) -> None:
        """End a line left open by a stage that never completed (e.g. it raised)."""
        self._end_line()

    # Drawing -----------------------------------------------------------------------------------

    def _begin(self, stage: str, done: int, total: int) -> None:
        if self.bars and total > 1:
            self._write(stage + "\n")  # the bar goes below, so a long stage never wraps it
            self._draw_bar(done, total, 0.0)
        else:
            self._write(stage + "... ")
            self._line_open = True

    def _finish(self, total: int, elapsed: float) -> None:
        if self.bars and total > 1:
            self._draw_bar(total, total, elapsed)
            self._write("\n")
            self._line_open = False
        else:
            self._write(f"done ({format_seconds(elapsed)})\n")
            self._line_open = False

    def _draw_bar(self, done: int, total: int, elapsed: float) -> None:
        filled = min(_BAR_WIDTH, _BAR_WIDTH * done // total)
        text = (f"  [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{total} "
                f"{100 * done // total:3d}%  {format_seconds(elapsed)}")
        if 0 < done < total and elapsed > 1.0:
            text += f", about {format_seconds(elapsed * (total - done) / done)} left"
        text = text[: max(20, shutil.get_terminal_size((80, 24)).columns - 1)]
        pad = " " * max(0, self._drawn_width - len(text))  # wipe a longer previous drawing
        self._write("\r" + text + pad)
        self._drawn_width = len(text)
        self._line_open = True

    def _end_line(self) -> None:
        if self._line_open:
            self._write("\n")
            self._line_open = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not fail the command
            self.quiet = True
