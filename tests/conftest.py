"""Shared fixtures: real routing records, a fast fake embedder and fitted weights packages.

Records come from ``tests/data/routerbench-sample.jsonl``, a verbatim sample of the public
RouterBench records committed beside the tests (see ``tests/data/README.md``), so a bare clone
runs every test but the few that need the full record sets. Those ask for the ``shared_data``
fixture: it finds the full files in ``$SWITCHPOINT_DATA``, else in ``../shared/data`` beside the
repository, and skips the test with a one-line reason when they are absent.

Most tests use the deterministic :class:`FakeEmbedder` so they never load ONNX; a few end-to-end
tests use the real default embedder through the session-scoped ``real_router`` /
``real_weights_dir`` fixtures, which are fitted once per session.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchpoint.embedding import MiniLMEmbedder
from switchpoint.records import RecordSet, parse_records
from switchpoint.router import Router
from switchpoint.training import fit
from switchpoint.weights import WeightsPackage, load_weights
from tests.bytecode import compile_sources
from tests.head_start import MARKER, HeadStart, begin_all, last
from tests.scratch import use_memory_scratch
from tests.shards import (
    assign,
    file_of,
    files_to_deal,
    merge_durations,
    parse_shard,
    read_durations,
)
from tests.tls_context import shared as shared_tls_context

REPO_ROOT = Path(__file__).resolve().parents[1]
# A verbatim sample of routerbench-3task.jsonl; its first lines are that file's first lines.
SAMPLE = REPO_ROOT / "tests" / "data" / "routerbench-sample.jsonl"
N_SMALL_RECORDS = 120
# The sample's first 120 lines are all ARC-Challenge prompts of the test split.
SMALL_SPLIT = "test"
# The full record sets, which only the tests asking for ``shared_data`` read.
SHARED_FILES = ("routerbench-3task.jsonl", "llmrouter-14task.jsonl")

_WORD = re.compile(r"[a-z0-9]+")


class FakeEmbedder:
    """A deterministic bag-of-hashed-words embedder: texts sharing words get similar vectors.

    Each distinct lower-cased word maps to a fixed Gaussian vector seeded by its SHA-256; a text
    is the L2-normalised sum of its words' vectors. ``calls`` records every batch it was given.
    Routers call it from many threads at once: its word cache and ``calls`` change under a
    lock (a copy, pickled for another process, makes its own).
    """

    def __init__(self, dimension: int = 384, embedder_id: str = "fake/hash-384") -> None:
        self._dimension = dimension
        self._id = embedder_id
        self._words: dict[str, np.ndarray] = {}
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    @property
    def dimension(self) -> int:
        return self._dimension

    def _word(self, word: str) -> np.ndarray:
        with self._lock:  # (found or made and kept at once: each word's vector is made once)
            vec = self._words.get(word)
            if vec is None:
                seed = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8],
                                      "little")
                vec = np.random.default_rng(seed).standard_normal(self._dimension)
                self._words[word] = vec
        return vec

    def embed_one(self, text: str) -> np.ndarray:
        words = _WORD.findall(text.lower()) or [text]
        total = np.zeros(self._dimension)
        for w in words:
            total += self._word(w)
        return (total / np.linalg.norm(total)).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self.embed_one(t)
        return out


def feed_pipe(fifo: Path, text: str, wait_s: float = 5.0) -> threading.Thread:
    """Make ``fifo`` a named pipe and write ``text`` into it from a thread, once a reader opens
    it (as ``<(...)`` or ``/dev/stdin`` do); the thread gives up after ``wait_s`` without one,
    so code that never opens the pipe fails a test instead of hanging it. Join the thread."""
    os.mkfifo(fifo)

    def write() -> None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until a reader opens
                break
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def shared_data_dir() -> Path:
    """Where the full record sets live: ``$SWITCHPOINT_DATA``, else ``../shared/data``."""
    configured = os.environ.get("SWITCHPOINT_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding the full record sets; skips the test (saying why) without them."""
    directory = shared_data_dir()
    missing = [name for name in SHARED_FILES if not (directory / name).is_file()]
    if missing:
        pytest.skip(f"needs the full routing records ({', '.join(missing)}), not in {directory}; "
                    "set SWITCHPOINT_DATA to their folder")
    return directory


_PARTS = pytest.StashKey[tuple[int, dict[str, int]]]()


def pytest_configure(config: pytest.Config) -> None:
    # The interpreters the tests start read src's bytecode compiled once, here, rather than
    # compile it each (see tests/bytecode.py).
    compile_sources(REPO_ROOT / "src")
    # tmp_path and the tests' processes write in memory where the machine allows it: SQLite's
    # syncs to the disk were much of the suite's time (see tests/scratch.py).
    use_memory_scratch()
    config.addinivalue_line("markers", f"{MARKER}(command): run command(workdir) from the "
                            "session's start at a low priority; the test runs last and "
                            "takes it as the head_start fixture (see tests/head_start.py)")
    shard = config.getoption("--shard")
    if shard:
        try:
            index, count = parse_shard(shard)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        files = files_to_deal(config.args, config.invocation_params.dir, config.rootpath,
                           config.getini("python_files"))
        config.stash[_PARTS] = index, assign(files, read_durations(), count)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shard", metavar="I/N", help="run only part I of N of the test files, "
                     "dealt out by their recorded durations (see tests/shards.py)")
    parser.addoption("--record-durations", metavar="PATH", type=Path,
                     help="merge this run's seconds per test file into PATH (a JSON object)")


def _other_part(config: pytest.Config, name: str, dealt_only: bool = False) -> bool:
    """Whether the test file ``name`` (as node ids spell it) is another part's. A file the
    parts were not dealt (none of a test should be) is the first part's, or nobody's with
    ``dealt_only``."""
    parts = config.stash.get(_PARTS, None)
    if parts is None:
        return False
    index, part = parts
    if dealt_only and name not in part:
        return False
    return part.get(name, 1) != index


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Another part's test file is not collected (nor its module imported)."""
    if collection_path.suffix != ".py" or not collection_path.is_relative_to(config.rootpath):
        return None
    name = collection_path.relative_to(config.rootpath).as_posix()
    return True if _other_part(config, name, dealt_only=True) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    dropped = [item for item in items if _other_part(config, file_of(item.nodeid))]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _other_part(config, file_of(item.nodeid))]
    last(items)


_file_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = file_of(report.nodeid)
    _file_seconds[name] = _file_seconds.get(name, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--record-durations")
    if path is not None and _file_seconds:
        merge_durations(path, _file_seconds)


@pytest.fixture(scope="session", autouse=True)
def _head_starts(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, HeadStart]]:
    """The selected tests' head starts, begun with the session's first test."""
    started = begin_all(request.session.items, lambda: tmp_path_factory.mktemp("head-start"))
    try:
        yield started
    finally:
        for head_start in started.values():
            head_start.stop()


@pytest.fixture(scope="session", autouse=True)
def _one_tls_context() -> Iterator[None]:
    """The HTTP clients the tests make share one TLS context (see tests/tls_context.py)."""
    with shared_tls_context():
        yield


@pytest.fixture
def head_start(request: pytest.FixtureRequest,
               _head_starts: dict[str, HeadStart]) -> HeadStart:
    """This test's command, under way since the session started (see tests/head_start.py)."""
    started = _head_starts.get(request.node.nodeid)
    if started is None:
        pytest.fail(f"{request.node.nodeid} takes head_start but has no runnable "
                    f"@pytest.mark.{MARKER}(command)")
    return started


@pytest.fixture(scope="session")
def small_lines() -> list[str]:
    """The raw first 120 lines of the committed RouterBench sample (all split 'test')."""
    with SAMPLE.open(encoding="utf-8") as fh:
        return list(islice(fh, N_SMALL_RECORDS))


@pytest.fixture(scope="session")
def small_records(small_lines: list[str]) -> RecordSet:
    return parse_records(small_lines, source=SAMPLE)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, the service's event loop."""
    return "asyncio"


@pytest.fixture(scope="session")
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture(scope="session")
def tiny_package(small_records: RecordSet, fake_embedder: FakeEmbedder) -> WeightsPackage:
    """A cluster package fitted with the fake embedder (not saved; do not mutate)."""
    return fit(small_records, policy="cluster", split=SMALL_SPLIT, embedder=fake_embedder,
               n_clusters=6)


@pytest.fixture(scope="session")
def tiny_weights_dir(
    tiny_package: WeightsPackage, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A saved cluster package (fake embedder, 6 clusters). Copy it before changing it."""
    return tiny_package.save(tmp_path_factory.mktemp("tiny") / "weights")


RouterFactory = Callable[..., Router]


@pytest.fixture
def make_router(tiny_weights_dir: Path, fake_embedder: FakeEmbedder) -> RouterFactory:
    """Builds routers over the tiny fitted package with the fake embedder: ``make_router()``,
    or with any :class:`Router` keyword (``cache_size=0``, ``allowed_models=[...]``, ...)."""

    def build(**kwargs: Any) -> Router:
        kwargs.setdefault("embedder", fake_embedder)
        return Router(load_weights(tiny_weights_dir), **kwargs)

    return build


@pytest.fixture
def router(make_router: RouterFactory) -> Router:
    """A router over the tiny fitted package (fake embedder, 6 clusters)."""
    return make_router()


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    """The real default embedder (all-MiniLM-L6-v2, tail-64), loaded once per session."""
    return MiniLMEmbedder()


@pytest.fixture(scope="session")
def real_weights_dir(
    small_records: RecordSet, minilm: MiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A cluster package fitted on ``small_records`` with the real embedder, saved to disk.

    Its manifest names the default embedder id, so the CLI can load it. Copy before changing.
    """
    package = fit(small_records, policy="cluster", split=SMALL_SPLIT, embedder=minilm,
                  n_clusters=6)
    return package.save(tmp_path_factory.mktemp("real") / "weights")


@pytest.fixture(scope="session")
def real_router(real_weights_dir: Path, minilm: MiniLMEmbedder) -> Router:
    return Router(load_weights(real_weights_dir), embedder=minilm)


@pytest.fixture
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """No secret remembered by an earlier test of this process (a session's admin token of
    one letter repeated, say) for the test's span: a test of how a value of repeated letters
    is quoted and cut reads it as written, whatever ran before it."""
    from switchpoint import _redact

    monkeypatch.setattr(_redact, "_SECRETS", _redact._Secrets())
