"""Routing records: prompts with every model's measured quality and cost.

One JSON object per line (see ``../shared/data/README.md``)::

    {"id": "...", "prompt": "...", "task": "mbpp", "split": "train",
     "scores": {"model-a": 1.0, ...}, "costs": {"model-a": 0.0011, ...}}

``scores`` are in [0, 1], ``costs`` are USD for that answer (from 0 to ``MAX_ANSWER_COST``).
A model may be missing from a record (unlabelled); it is held as NaN. The records of one file
name at most ``MAX_CATALOG_MODELS`` models in all, a file holds at most :data:`MAX_RECORDS`
records, of at most :data:`MAX_LABEL_PLACES` records times models in all, and a line holds at
most :data:`MAX_RECORD_CHARS` characters (its newline included). Every malformed line raises
:class:`RecordsError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from switchpoint._args import PATH, expect
from switchpoint._files import path_problem, read_problem
from switchpoint._json import (
    LONE_SURROGATE,
    as_float,
    json_kind,
    loads,
    lone_surrogate,
    unreadable,
)
from switchpoint._label_arrays import label_arrays
from switchpoint._messages import (
    MAX_LISTED,
    json_quoted,
    listed_names,
    plural,
    printed_name_problem,
)
from switchpoint.catalog import MAX_ANSWER_COST, MAX_CATALOG_MODELS, model_names, named_once
from switchpoint.errors import InvalidInputError, RecordsError, UnknownModelError
from switchpoint.prompt_files import BOM, ENCODING_ERRORS, MAX_PROMPT_LINES, blank_file, not_utf8

FloatMatrix = npt.NDArray[np.float64]
# A record is one line: a prompt and its labels, as JSON writes them (a quote, a backslash or a
# control character of the prompt takes 2 to 6 characters there). ``label`` writes no longer one.
MAX_RECORD_CHARS = 16 << 20
#: What a routing record holds, said when a line lacks a field of it (a file of prompts alone,
#: given where records are read, lacks "scores").
RECORD_SHAPE = ('a routing record is one JSON object a line: {"prompt": "...", "scores": '
                '{"<model>": quality from 0 to 1, ...}, "costs": {"<model>": cost, ...}}; a '
                "file of prompts alone is routed with switchpoint route --input")
#: The most records one file may hold: as many as the prompts of a prompt file, from which
#: ``label`` writes them.
MAX_RECORDS = MAX_PROMPT_LINES
#: The most places the records' table of labels may have, one per record and model (scores
#: and costs are each held as a float64 table of a row per record and a column per model, so
#: 16 bytes a place, about 40 with what a load and a fit make of them): a million records of
#: 50 models, or 50,000 of 1,000. Records each labelling a model of their own would otherwise
#: make a table of gigabytes from a file of megabytes.
MAX_LABEL_PLACES = 50_000_000


@dataclass
class RecordSet:
    """Routing records as aligned arrays: ``scores[i, j]`` is model ``models[j]`` on prompt
    ``i`` (what :func:`load_records` returns, and what :func:`~switchpoint.fit` and
    :func:`~switchpoint.add_model` take).

    ``ids``, ``prompts``, ``tasks`` and ``splits`` hold one entry per record (a split may be
    None); ``models`` names each column once; ``scores`` (quality in [0, 1]) and ``costs``
    (USD per answer, from 0) are float arrays of one row per record and one column per model,
    NaN where a record leaves a model unlabelled; ``embeddings``, if given, one row per record
    (a fit embeds the prompts itself when it is None). Built by hand, each is checked: a
    wrong type, a length or a shape that does not line up, or a score or cost out of range
    is an :class:`~switchpoint.errors.InvalidInputError` naming the field."""

    ids: list[str]
    prompts: list[str]
    tasks: list[str]
    splits: list[str | None]
    models: list[str]
    scores: FloatMatrix
    costs: FloatMatrix
    embeddings: npt.NDArray[np.float32] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("ids", "prompts", "tasks", "splits", "models"):
            expect(name, getattr(self, name), list, "a list")
        for name in ("scores", "costs"):
            expect(name, getattr(self, name), np.ndarray,
                   "a NumPy array of one row per record and one column per model")
        expect("embeddings", self.embeddings, np.ndarray,
               "a NumPy array of one row per record", optional=True)
        n = len(self.ids)
        for name in ("prompts", "tasks", "splits"):
            given = len(getattr(self, name))
            if given != n:
                raise InvalidInputError(name, f"has {given:,} entries; it must have one per "
                                              f"record, as ids has ({n:,})")
        models = named_once(model_names(self.models, "models") or [], "models",
                            "name each model's column once")
        shape = (n, len(models))
        label_arrays(self.scores, self.costs, shape)
        if self.embeddings is not None and (self.embeddings.ndim != 2
                                            or len(self.embeddings) != n):
            raise InvalidInputError("embeddings", f"has shape {self.embeddings.shape}; it must "
                                                  f"be ({n:,}, dimension): one row per record")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        """How many records, which models and splits, and whether they carry embeddings: never
        the prompts or the arrays (a file of 100,000 records is one line, not megabytes); the
        first 20 models and splits are named, and how many more there are."""
        splits = Counter("no split" if s is None else json_quoted(s) for s in self.splits)
        shown = (listed_names([f"{name}: {n:,}" for name, n in sorted(splits.items())],
                              width=80) if self.has_splits else "none")
        return (f"RecordSet({plural(len(self), 'record')}, "
                f"{plural(len(self.models), 'model')}: "
                f"{listed_names(self.models, MAX_LISTED, quoted=True)}; splits: {shown}; "
                f"embeddings: {'none' if self.embeddings is None else 'given'})")

    def subset(self, rows: Sequence[int] | npt.NDArray[np.intp]) -> RecordSet:
        """A new RecordSet of the records at ``rows`` (row numbers, in the order given; a
        negative one counts from the end, as a list's index does), with every model.

        Raises :class:`InvalidInputError` naming ``rows`` for anything but whole numbers
        (a boolean mask included: pass ``np.flatnonzero(mask)``) or a row past the records."""
        try:
            idx = np.asarray(rows)
        except (TypeError, ValueError):
            idx = np.asarray(None)
        if isinstance(rows, (str, bytes)) or idx.ndim != 1 or (
                idx.size and not np.issubdtype(idx.dtype, np.integer)):
            hint = (": pass the row numbers, np.flatnonzero(mask)" if idx.dtype == bool
                    else "")
            raise InvalidInputError("rows", f"must be a list of row numbers (whole numbers), "
                                            f"got {type(rows).__name__}"
                                            f"{' of ' + str(idx.dtype) if idx.ndim else ''}"
                                            f"{hint}")
        idx = idx.astype(np.intp)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            past = int(idx.max()) if idx.max() >= n else int(idx.min())
            raise InvalidInputError("rows", f"row {past} is past these {plural(n, 'record')}; "
                                            f"rows are numbered from 0 to {n - 1}")
        return RecordSet(
            ids=[self.ids[i] for i in idx],
            prompts=[self.prompts[i] for i in idx],
            tasks=[self.tasks[i] for i in idx],
            splits=[self.splits[i] for i in idx],
            models=list(self.models),
            scores=self.scores[idx],
            costs=self.costs[idx],
            embeddings=None if self.embeddings is None else self.embeddings[idx],
        )

    def split(self, name: str, *, source: object = "records", hint: str = "") -> RecordSet:
        """The records of split ``name``; a :class:`RecordsError` naming ``source`` (the file
        they came from) and the splits present when it has none, followed by ``hint`` (how
        to name another)."""
        rows = [i for i, s in enumerate(self.splits) if s == name]
        if not rows:
            present = sorted({s for s in self.splits if s is not None})
            shown = listed_names(present, quoted=True) or "none"
            raise RecordsError(source, None, f"no records in split {json_quoted(name)}; splits "
                                             f"present: {shown}{hint}")
        return self.subset(rows)

    def select_models(self, names: Sequence[str]) -> RecordSet:
        """A new RecordSet of the same records with only the models ``names``, in that order.

        Raises :class:`InvalidInputError` naming ``names`` when it is not a list of model
        names, is empty or names one twice, and :class:`UnknownModelError` for a model these
        records do not hold."""
        chosen = model_names(names, "names")
        if not chosen:
            raise InvalidInputError("names", "is empty; list at least one of the records' "
                                             "models")
        unknown = list(dict.fromkeys(m for m in chosen if m not in self.models))
        if unknown:
            raise UnknownModelError("names", unknown, self.models)
        names = named_once(chosen, "names")
        cols = [self.models.index(n) for n in names]
        out = self.subset(np.arange(len(self)))
        out.models = list(names)
        out.scores = self.scores[:, cols]
        out.costs = self.costs[:, cols]
        return out

    def check_labelled(self, source: object, split: str | None) -> RecordSet:
        """These records, when they label each of their models at least once (what a fit
        needs), else a :class:`RecordsError` naming ``source`` and the ``split`` they are."""
        unlabelled = [m for j, m in enumerate(self.models) if np.all(np.isnan(self.scores[:, j]))]
        if unlabelled:
            which = (f"split {json_quoted(split)} ({len(self):,} records)" if split
                     else "these records")
            one = len(unlabelled) == 1
            raise RecordsError(source, None, f"{listed_names(unlabelled, quoted=True)} "
                                             f"{'has' if one else 'have'} no label in {which}, "
                                             "which a fit needs; label "
                                             f"{'it' if one else 'them'} there, fit on another "
                                             f"split, or leave {'it' if one else 'them'} out of "
                                             "the records")
        return self

    @property
    def has_splits(self) -> bool:
        """Whether any record names a split (then :func:`~switchpoint.fit` fits on ``train``
        unless told another)."""
        return any(s is not None for s in self.splits)


def _number(value: Any, source: object, line: int, field: str, model: str, lo: float,
            hi: float) -> float:
    """``value``, the label ``field[model]`` of a line, as a float when it is a finite number
    in ``[lo, hi]``; else a :class:`RecordsError` naming it (the name is quoted only then: a
    line may hold a thousand labels, and quoting each name took nine tenths of a read)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordsError(source, line, f"{field}[{json_quoted(model)}] must be a number, got "
                                         f"{json_quoted(value)}")
    x = as_float(value)
    if not math.isfinite(x) or x < lo or x > hi:
        bounds = f"[{lo}, {hi}]" if math.isfinite(hi) else f">= {lo}"
        raise RecordsError(source, line, f"{field}[{json_quoted(model)}] is "
                                         f"{json_quoted(value)}; it must be finite and {bounds}")
    return x


def parse_records(lines: Iterable[str], source: object = "records", *,
                  model_rule: Callable[[str], str | None] | None = None) -> RecordSet:
    """Parse and validate JSONL lines. Blank lines are skipped. ``model_rule``: why a model's
    name cannot be taken (None: it can), beyond the rule of every records file: refused at the
    line that first names the model."""
    ids: list[str] = []
    prompts: list[str] = []
    tasks: list[str] = []
    splits: list[str | None] = []
    # Each label as its record's row, its model's column, its score and its cost, packed (8
    # bytes a number; a dict of floats a record took some 200 bytes a label).
    label_rows, label_cols = array("q"), array("q")
    label_scores, label_costs = array("d"), array("d")
    seen: set[str] = set()
    model_order: dict[str, int] = {}
    number = 0
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_RECORD_CHARS:
            raise RecordsError(source, number, f"is over {MAX_RECORD_CHARS:,} characters; a "
                                               "record is one line of JSON")
        if not raw.strip():
            continue
        try:
            obj = loads(raw)
        except json.JSONDecodeError as exc:
            raise RecordsError(source, number, unreadable(exc)) from None
        if not isinstance(obj, dict):
            raise RecordsError(source, number, "each line must be a JSON object")
        for key in ("prompt", "scores", "costs"):
            if key not in obj:
                raise RecordsError(source, number, f"missing field {json_quoted(key)}; "
                                                   f"{RECORD_SHAPE}")
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise RecordsError(source, number, 'field "prompt" must be a non-empty string')
        if lone_surrogate(prompt):
            raise RecordsError(source, number, f'field "prompt" {LONE_SURROGATE}; fix its text')
        rid = obj.get("id", f"line-{number}")
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
            raise RecordsError(source, number, 'field "id" must be a non-empty string or an '
                                               f"integer, got {json_kind(rid)}")
        rid = str(rid)
        if rid in seen:
            raise RecordsError(source, number, f"duplicate id {json_quoted(rid)}")
        seen.add(rid)
        scores, costs = obj["scores"], obj["costs"]
        if not isinstance(scores, dict) or not scores:
            raise RecordsError(source, number, 'field "scores" must be a non-empty object')
        if not isinstance(costs, dict):
            raise RecordsError(source, number, 'field "costs" must be an object')
        if set(scores) != set(costs):
            diff = listed_names(sorted(set(scores) ^ set(costs)), quoted=True)
            raise RecordsError(
                source, number, f'"scores" and "costs" must name the same models; differ on {diff}'
            )
        new = [m for m in scores if m not in model_order]  # (earlier ones were checked)
        n_models = len(model_order) + len(new)
        if n_models > MAX_CATALOG_MODELS:
            raise RecordsError(source, number, f"names {n_models:,} models "
                                               f"with the lines before it; records name at most "
                                               f"{MAX_CATALOG_MODELS:,} (the most a catalog "
                                               "holds), so split the file by model")
        if len(ids) + 1 > MAX_RECORDS:
            raise RecordsError(source, number, f"is past the {MAX_RECORDS:,} records a file may "
                                               "hold; split it into smaller files")
        if (len(ids) + 1) * n_models > MAX_LABEL_PLACES:
            raise RecordsError(source, number, f"makes {len(ids) + 1:,} records of "
                                               f"{n_models:,} models with the lines before it, "
                                               f"a table of {(len(ids) + 1) * n_models:,} "
                                               "labels' places (a record's row holds a place "
                                               "for each model any record names), more than "
                                               f"the {MAX_LABEL_PLACES:,} a file may make; split "
                                               "the file by model (a file of the records of "
                                               "fewer models) or into smaller files")
        for m in new:
            problem = printed_name_problem(m)
            if problem is None and model_rule is not None:
                problem = model_rule(m)
            if problem is not None:
                raise RecordsError(source, number, f"{problem}; rename the model in the records")
        clean_s = [_number(v, source, number, "scores", m, 0.0, 1.0)
                   for m, v in scores.items()]
        clean_c = [_number(costs[m], source, number, "costs", m, 0.0, MAX_ANSWER_COST)
                   for m in scores]
        split = obj.get("split")
        if split is not None and not isinstance(split, str):
            raise RecordsError(source, number, 'field "split" must be a string')
        task = obj.get("task") or ""
        if not isinstance(task, str):
            raise RecordsError(source, number, 'field "task" must be a string')
        for m in new:
            model_order[m] = len(model_order)
        label_rows.extend(repeat(len(ids), len(scores)))
        label_cols.extend(model_order[m] for m in scores)
        label_scores.extend(clean_s)
        label_costs.extend(clean_c)
        ids.append(rid)
        prompts.append(prompt)
        tasks.append(task)
        splits.append(split)
    if not ids:
        raise RecordsError(source, None, f"no records found; {blank_file(number)}")
    shape = (len(ids), len(model_order))
    scores_m = np.full(shape, np.nan)
    costs_m = np.full(shape, np.nan)
    where = (np.frombuffer(label_rows, dtype=np.int64), np.frombuffer(label_cols, dtype=np.int64))
    scores_m[where] = np.frombuffer(label_scores, dtype=np.float64)
    costs_m[where] = np.frombuffer(label_costs, dtype=np.float64)
    return RecordSet(ids=ids, prompts=prompts, tasks=tasks, splits=splits,
                     models=list(model_order), scores=scores_m, costs=costs_m)


def load_records(path: str | Path, *,
                 model_rule: Callable[[str], str | None] | None = None) -> RecordSet:
    """Read a routing-records JSONL file (``path``: a string or a ``pathlib.Path``) into a
    :class:`RecordSet`, its models in the order the file first names them.

    Each line is one JSON object: ``prompt`` (a non-empty string), ``scores`` (model name to
    quality in [0, 1]) and ``costs`` (the same models to USD for that answer, from 0), and
    optionally ``id`` (a string or an integer, unique; default ``line-N``), ``task`` and
    ``split`` (such as ``train`` or ``test``, which :func:`~switchpoint.fit` reads). A model a
    line leaves out is unlabelled there (NaN). Blank lines are skipped; a line holds at most
    16 MiB of characters, a file names at most 1,000 models in all and holds at most a
    million records, and records times models at most 50 million (the places of the table
    of labels: a million records of 50 models, or 50,000 of 1,000).

    Raises :class:`~switchpoint.errors.RecordsError` naming the file, and the line and field
    where one is at fault: a missing file, a directory, text that is not UTF-8, a malformed
    line or a file of no records, or a model's name ``model_rule`` refuses (see
    :func:`parse_records`); :class:`~switchpoint.errors.InvalidInputError` for a ``path``
    that is no path."""
    expect("path", path, PATH, "the path of a JSONL file of routing records")
    p = Path(path)
    problem = path_problem(p)
    if problem is not None:  # (a name too long, a NUL: the system refuses to look)
        raise RecordsError(p, None, f"cannot be read: {problem}")
    if not p.exists() or p.is_dir():  # (a pipe, such as /dev/stdin, reads as a file does)
        raise RecordsError(p, None, ("is a directory" if p.is_dir() else "file not found")
                           + "; pass a JSONL file of routing records")
    try:
        with p.open(encoding="utf-8", errors=ENCODING_ERRORS) as fh:
            return parse_records(_bounded_lines(fh, p), source=p, model_rule=model_rule)
    except UnicodeDecodeError:
        raise RecordsError(p, None, "is not UTF-8 text; save the records as UTF-8 JSON "
                                    "lines") from None
    except OSError as exc:
        raise RecordsError(p, None, f"cannot read it: {read_problem(p, exc)}") from None


def _bounded_lines(fh: TextIO, source: Path) -> Iterator[str]:
    """The lines of ``fh``, none held past :data:`MAX_RECORD_CHARS` characters: a longer one is
    cut there, which :func:`parse_records` refuses (a file with no line ends, or a line that
    never ends, is refused once that much of it is read). A byte order mark at the start of
    the file (as some editors save UTF-8) is not part of the first line, as in prompt files.
    A line that is not UTF-8 text (``fh`` read with
    :data:`~switchpoint.prompt_files.ENCODING_ERRORS`) is a :class:`RecordsError` naming it
    and ``source``."""
    number = 0
    while line := fh.readline(MAX_RECORD_CHARS + 1):
        number += 1
        bad = not_utf8(line)
        if bad is not None:
            raise RecordsError(source, number, bad)
        yield line.removeprefix(BOM) if number == 1 else line
