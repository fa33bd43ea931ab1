"""The one check of a table of labels, wherever one is given (a :class:`RecordSet` built by
hand, a policy's ``fit`` or ``add_model``): one row per example and one column per model, of
numbers in range, NaN where the example leaves the model unlabelled."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from switchpoint.catalog import MAX_ANSWER_COST
from switchpoint.errors import InvalidInputError

FloatMatrix = npt.NDArray[np.float64]

#: Each table's name and the range its labelled values lie in: quality, and USD per answer.
RANGES: dict[str, tuple[float, float]] = {"scores": (0.0, 1.0), "costs": (0.0, MAX_ANSWER_COST)}


def label_array(name: str, values: object, shape: tuple[int, int], rows: str = "record"
                ) -> FloatMatrix:
    """``values`` (``"scores"`` or ``"costs"``: an array or nested lists) as a float array of
    ``shape``, if it holds numbers of that table's range or NaN; otherwise an
    :class:`InvalidInputError` naming ``name``, the shape it must have (one ``rows`` a row) or
    the first value out of range and where it is."""
    low, high = RANGES[name]
    try:
        given = np.asarray(values)
    except ValueError:  # (ragged nested lists)
        raise InvalidInputError(name, f"must be a {shape} array: one row per {rows} and one "
                                      "column per model") from None
    if given.dtype.kind not in "iuf":
        raise InvalidInputError(name, "must hold numbers (NaN where a model is unlabelled), "
                                      f"got an array of {given.dtype}")
    if given.shape != shape:
        raise InvalidInputError(name, f"has shape {given.shape}; it must be {shape}: one row "
                                      f"per {rows} and one column per model")
    numbers = given.astype(np.float64)
    outside = ~np.isnan(numbers) & ~((numbers >= low) & (numbers <= high))
    if outside.any():
        i, j = (int(x) for x in np.argwhere(outside)[0])
        raise InvalidInputError(name, f"holds {numbers[i, j]:g} (row {i}, column {j}), outside "
                                      f"[{low:g}, {high:g}]; each value must be finite and in "
                                      "that range, or NaN where the model is unlabelled")
    return numbers


def label_arrays(scores: object, costs: object, shape: tuple[int, int], rows: str = "record"
                 ) -> tuple[FloatMatrix, FloatMatrix]:
    """``scores`` and ``costs`` checked by :func:`label_array`, each score with its cost: a
    score whose cost is NaN is an :class:`InvalidInputError` naming the cell (it would be
    learned as free). A cost without a score (an answer never judged) is no label: it is
    checked, and comes back NaN, so that what is learned of a model's cost averages the very
    answers its error does."""
    checked = label_array("scores", scores, shape, rows), label_array("costs", costs, shape, rows)
    unscored = np.isnan(checked[0])
    costless = ~unscored & np.isnan(checked[1])
    if costless.any():
        i, j = (int(x) for x in np.argwhere(costless)[0])
        raise InvalidInputError("costs", f"is NaN at row {i}, column {j}, where scores labels "
                                         "the model; give each score its cost (USD for that "
                                         "answer), or leave both NaN")
    return checked[0], np.where(unscored, np.nan, checked[1])
