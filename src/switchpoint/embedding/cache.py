"""An LRU cache in front of any embedder: a repeated prompt is embedded once, within the scope
(a tenant) that asked for it before."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from switchpoint._pickling import LOCK, RemadeOnLoad, remade
from switchpoint._progress import ProgressFn
from switchpoint.embedding.base import Embedder, Matrix, warm_up


class CachedEmbedder(RemadeOnLoad):
    """Wraps an :class:`Embedder`; keeps the last ``size`` vectors keyed by the text's SHA-256
    and the ``scope`` it was embedded for.

    A hit is measurably faster than embedding (microseconds against milliseconds, which a
    router's ``usage.embedding_ms`` and any caller's clock show), so a cache shared between
    tenants would tell one tenant which prompts another sent: a caller that passes its tenant
    as ``scope`` hits only the vectors embedded for that tenant."""

    _remade = remade(_lock=LOCK)

    def __init__(self, inner: Embedder, size: int = 4096) -> None:
        if size < 0:
            raise ValueError(f"cache size must be >= 0, got {size}")
        self.inner = inner
        self.size = size
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def warm_up(self, progress: ProgressFn | None = None) -> None:
        warm_up(self.inner, progress)

    def embed(self, texts: Sequence[str], *, scope: str | None = None) -> Matrix:
        """The vectors of ``texts``, those embedded before for the same ``scope`` (None: the
        unscoped callers', such as batch routing and training) from the cache."""
        keys = [_key(scope, t) for t in texts]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        with self._lock:
            for row, key in enumerate(keys):
                vec = self._entries.get(key)
                if vec is None:
                    missing.setdefault(key, []).append(row)
                else:
                    self._entries.move_to_end(key)
                    out[row] = vec
                    self.hits += 1
        if missing:
            rows = [r[0] for r in missing.values()]
            fresh = self.inner.embed([texts[r] for r in rows])
            with self._lock:
                for (key, positions), vec in zip(missing.items(), fresh, strict=True):
                    out[positions] = vec
                    self.misses += len(positions)
                    if self.size:
                        self._entries[key] = vec
                        self._entries.move_to_end(key)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return out

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


def _key(scope: str | None, text: str) -> bytes:
    digest = hashlib.sha256()
    if scope is None:
        digest.update(b"-:")
    else:  # (the scope's length first, so no scope and text spell another pair)
        encoded = scope.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(encoded) + encoded)
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.digest()
