"""The embedder protocol and the checks every embedding passes before it reaches a policy."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from switchpoint._json import LONE_SURROGATE, lone_surrogate, plain_str
from switchpoint._messages import invalid_at, not_finite_reason, past_floats, plural
from switchpoint._progress import ProgressFn
from switchpoint.errors import InvalidInputError

Matrix = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of a fixed dimension."""

    @property
    def id(self) -> str:
        """Names the model and the preprocessing, e.g. ``all-MiniLM-L6-v2/tail-256``."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Return an ``(len(texts), dimension)`` float32 array of unit vectors."""
        ...


def check_embedding(value: object, dimension: int, field: str = "embedding") -> Matrix:
    """Validate one pre-computed vector and return it as a ``(1, dimension)`` unit row.

    Raises :class:`InvalidInputError` naming ``field`` when the value is not a list of
    ``dimension`` finite numbers or is all zeros.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise InvalidInputError(field, f"must be a list of {dimension} numbers")
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise InvalidInputError(
            field, f"is an array of shape {value.shape}; give one flat vector of {dimension} "
            "numbers (of an embedder's output, one row: embed([text])[0])")
    if len(value) != dimension:
        raise InvalidInputError(
            field, f"has {len(value)} values; this router's embedder produces {dimension}"
        )
    # NumPy would happily parse "0.5" or None (as NaN), or drop a complex number's imaginary
    # part (with a warning); only real numbers are accepted.
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "b":
            raise InvalidInputError(field, "must hold numbers, not booleans")
        if value.dtype.kind not in "iuf":
            raise InvalidInputError(field, f"must be a list of {dimension} numbers")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except OverflowError:  # (an integer, or a Fraction, no float holds: told as HTTP tells it)
        past = next(((i, why) for i, v in enumerate(value)
                     if (why := past_floats(v)) is not None), None)
        if past is None:
            raise InvalidInputError(field, f"must be a list of {dimension} numbers") from None
        raise invalid_at(field, f"{field}[{past[0]}]", past[1]) from None
    except (TypeError, ValueError):
        raise InvalidInputError(field, f"must be a list of {dimension} numbers") from None
    if arr.ndim != 1:
        raise InvalidInputError(field, f"must be a flat list of {dimension} numbers")
    if not isinstance(value, np.ndarray):
        if any(isinstance(v, (bool, np.bool_)) for v in value):
            raise InvalidInputError(field, "must hold numbers, not booleans")
        if not all(isinstance(v, numbers.Real) for v in value):
            raise InvalidInputError(field, f"must be a list of {dimension} numbers")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise invalid_at(field, f"{field}[{bad}]", not_finite_reason(float(arr[bad])))
    # Scaled by the largest magnitude first, so huge values (1e308) cannot overflow the norm
    # and tiny ones (1e-300) cannot underflow it: only a vector of zeros has no direction.
    scale = float(np.max(np.abs(arr)))
    if scale == 0.0:
        raise InvalidInputError(field, "is all zeros; it has no direction to route on")
    scaled = arr / scale
    return (scaled / np.linalg.norm(scaled)).astype(np.float32).reshape(1, dimension)


def check_prompt(value: object, field: str = "prompt") -> str:
    """Validate one prompt: a non-empty string with some non-whitespace text, all of it
    Unicode (no lone surrogate), as a ``str`` itself (:func:`~switchpoint._json.plain_str`:
    a subclass's own methods are not asked)."""
    if not isinstance(value, str):
        raise InvalidInputError(field, f"must be a string, got {type(value).__name__}")
    value = plain_str(value)
    if not value.strip():
        raise InvalidInputError(field, "is empty; give the text to route")
    if lone_surrogate(value):
        raise InvalidInputError(field, LONE_SURROGATE)
    return value


def l2_normalise(matrix: npt.NDArray[np.floating]) -> Matrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)


#: Prompts embedded between two progress reports: 0.2-1 s of work, so a bar moves smoothly.
EMBED_STEP = 64


def warm_up(embedder: object, progress: ProgressFn | None = None) -> None:
    """Load ``embedder`` now, if it has a ``warm_up``; one that accepts ``progress`` reports a
    one-time build (the int8 network) through it."""
    warm = getattr(embedder, "warm_up", None)
    if not callable(warm):
        return
    try:
        takes_progress = "progress" in inspect.signature(warm).parameters
    except (TypeError, ValueError):  # a builtin or C extension without a signature
        takes_progress = False
    if takes_progress and progress is not None:
        warm(progress=progress)
    else:
        warm()


def embed_in_steps(embedder: Embedder, texts: Sequence[str], progress: ProgressFn | None = None,
                   stage: str | None = None, step: int = EMBED_STEP) -> Matrix:
    """``embedder.embed(texts)``, ``step`` texts at a time, reporting each step to ``progress``
    as ``stage`` (default: ``embedding N prompts with <embedder id>``)."""
    if progress is None:
        return embedder.embed(texts)
    warm_up(embedder, progress)
    label = stage or f"embedding {plural(len(texts), 'prompt')} with {embedder.id}"
    total = len(texts)
    progress(label, 0, total)
    if total == 0:
        return embedder.embed(texts)
    parts = []
    for start in range(0, total, step):
        parts.append(np.asarray(embedder.embed(texts[start : start + step]), dtype=np.float32))
        progress(label, min(start + step, total), total)
    return np.concatenate(parts, axis=0)
