"""Spherical k-means (cosine) in NumPy: k-means++ seeding, Lloyd iterations, repeatable."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]


def _normalise(x: npt.NDArray[np.floating]) -> Matrix:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def spherical_kmeans(
    x: Matrix, k: int, *, seed: int = 0, n_init: int = 3, max_iter: int = 100, tol: float = 1e-6
) -> tuple[Matrix, npt.NDArray[np.int64]]:
    """Cluster unit vectors by cosine similarity. Returns ``(centroids, labels)``.

    ``k`` is capped at the number of distinct points; the best of ``n_init`` runs (highest total
    similarity) wins.
    """
    x = _normalise(np.asarray(x, dtype=np.float32))
    n = x.shape[0]
    k = max(1, _distinct_rows(x, k))
    rng = np.random.default_rng(seed)
    best: tuple[float, Matrix, npt.NDArray[np.int64]] | None = None
    for _ in range(n_init):
        centroids = _plus_plus(x, k, rng)
        labels = np.zeros(n, dtype=np.int64)
        previous = -np.inf
        for _ in range(max_iter):
            sims = x @ centroids.T
            labels = np.argmax(sims, axis=1).astype(np.int64)
            score = float(sims[np.arange(n), labels].sum())
            sums = np.zeros_like(centroids)
            np.add.at(sums, labels, x)
            empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
            if empty.size:  # re-seed an empty cluster on the worst-served point
                worst = np.argsort(sims[np.arange(n), labels])[: empty.size]
                sums[empty] = x[worst]
            centroids = _normalise(sums)
            if score - previous <= tol * max(1.0, abs(score)):
                break
            previous = score
        if best is None or score > best[0]:
            best = (score, centroids, labels)
    assert best is not None
    return best[1], best[2]


def _distinct_rows(x: Matrix, enough: int) -> int:
    """How many distinct rows ``x`` holds, counted up to ``enough`` (a larger ``k`` would only
    copy centroids, every copy but one left empty)."""
    seen: set[bytes] = set()
    for row in x:
        seen.add(row.tobytes())
        if len(seen) >= enough:
            break
    return len(seen)


def _plus_plus(x: Matrix, k: int, rng: np.random.Generator) -> Matrix:
    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    dist = 1.0 - x @ x[chosen[0]]
    for _ in range(1, k):
        d = np.clip(dist, 0.0, None) ** 2
        total = float(d.sum())
        nxt = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=d / total))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
    return x[chosen].copy()
