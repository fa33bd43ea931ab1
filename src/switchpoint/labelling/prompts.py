"""The prompts to label: a JSONL file of ``{"prompt", "id"?, "task"?, "split"?, "reference"?}``
objects, or plain text with one prompt per line.

Every line is checked before anything is called; the first bad line raises
:class:`~switchpoint.errors.LabellingError` naming the file and the line. A prompt without an
``id`` gets one from its text (``p-`` and 12 hex digits of its SHA-256), so a rerun finds the
same prompt under the same id even when lines were added or reordered; two lines with the same
id (or the same text and no id) are an error.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from switchpoint._files import path_problem, read_problem
from switchpoint._json import (
    LONE_SURROGATE,
    DuplicateKeyError,
    as_float,
    loads,
    lone_surrogate,
    unreadable,
)
from switchpoint._messages import STDIN, json_quoted
from switchpoint.errors import LabellingError
from switchpoint.labelling.reference import normalise, parse_number
from switchpoint.prompt_files import (
    ENCODING_ERRORS,
    PromptFileError,
    blank_file,
    bounded_lines,
    prompt_lines,
)

FIELDS = ("prompt", "id", "task", "split", "reference")


@dataclass(frozen=True)
class LabelPrompt:
    """One prompt to label. ``reference``: the expected answer (a string, or a number for
    numeric answers); with one, answers are scored by :func:`reference_score`, not by a judge.
    ``line`` is where it came from (0 when built in code)."""

    id: str
    prompt: str
    task: str | None = None
    split: str | None = None
    reference: str | float | None = None
    line: int = 0

    @property
    def digest(self) -> str:
        """A short hash of the prompt's text (a rerun checks that an id still means it)."""
        return prompt_digest(self.prompt)

    @property
    def reference_digest(self) -> str | None:
        """A short hash of the reference (None without one): a score made against it is reused
        only while it is unchanged."""
        if self.reference is None:
            return None
        return prompt_digest(json.dumps(self.reference, ensure_ascii=False))


def prompt_digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def default_id(prompt: str) -> str:
    return "p-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def parse_prompts(lines: Iterable[str], source: object = "prompts") -> list[LabelPrompt]:
    """Parse and check prompt lines (JSONL when the first non-blank line starts with ``{``,
    else one prompt per line). Blank lines are skipped."""
    out: list[LabelPrompt] = []
    seen: dict[str, int] = {}
    read = 0

    def counted(source_lines: Iterable[str]) -> Iterable[str]:
        nonlocal read
        for line in source_lines:
            read += 1
            yield line

    try:
        numbered = list(prompt_lines(counted(lines)))
    except PromptFileError as exc:
        raise LabellingError(str(exc), source=source, line=exc.line) from None
    for number, raw, jsonl in numbered:
        if jsonl:
            item, named = _from_json(raw, source, number)
        else:
            text = raw.rstrip("\r\n")
            item, named = LabelPrompt(id=default_id(text), prompt=text, line=number), False
        first = seen.get(item.id)
        if first is not None:
            what = (f"repeats id {json_quoted(item.id)} of line {first}; ids must be unique"
                    if named
                    else f"repeats the prompt of line {first}; remove it or give each line "
                         'an "id"')
            raise LabellingError(what, source=source, line=number)
        seen[item.id] = number
        out.append(item)
    if not out:
        raise LabellingError(f"no prompts found; {blank_file(read)}", source=source)
    return out




def read_prompts(path: str | Path | TextIO) -> list[LabelPrompt]:
    """Read and check a prompts file (see :func:`parse_prompts`), or the prompts an open text
    stream gives (standard input: read to its end, named ``stdin`` in errors, as
    ``route --input -`` names it: see :data:`~switchpoint._messages.STDIN`)."""
    if not isinstance(path, (str, Path)):
        try:
            return parse_prompts(bounded_lines(path), source=STDIN)
        except UnicodeDecodeError:
            raise LabellingError("is not UTF-8 text", source=STDIN) from None
        except OSError as exc:
            raise LabellingError(f"cannot be read: {exc.strerror or exc}", source=STDIN) from None
    p = Path(path)
    problem = path_problem(p)
    if problem is not None:  # (a name too long, a NUL: the system refuses to look)
        raise LabellingError(f"cannot be read: {problem}; give a JSONL file of prompts",
                             source=p)
    if not p.exists() or p.is_dir():  # (a pipe, such as /dev/stdin, reads as a file does)
        raise LabellingError(("is a directory" if p.is_dir() else "file not found")
                             + "; give a JSONL file of {\"prompt\": ...} lines or a text file "
                             "with one prompt per line", source=p)
    try:
        with p.open(encoding="utf-8", errors=ENCODING_ERRORS) as fh:
            return parse_prompts(bounded_lines(fh), source=p)
    except UnicodeDecodeError:
        raise LabellingError("is not UTF-8 text", source=p) from None
    except OSError as exc:
        raise LabellingError(f"cannot read it: {read_problem(p, exc)}", source=p) from None


def as_prompts(items: Sequence[LabelPrompt | Mapping[str, Any] | str]) -> list[LabelPrompt]:
    """Prompts given in code: :class:`LabelPrompt` values, mappings of the JSONL fields, or
    strings; checked as a file's lines are (``source`` is ``prompts``, lines count from 1)."""
    lines: list[str] = []
    for item in items:
        if isinstance(item, LabelPrompt):
            obj: dict[str, Any] = {"id": item.id, "prompt": item.prompt}
            for key in ("task", "split", "reference"):
                if getattr(item, key) is not None:
                    obj[key] = getattr(item, key)
            lines.append(json.dumps(obj))
        elif isinstance(item, Mapping):
            lines.append(json.dumps(dict(item)))
        elif isinstance(item, str):
            lines.append(json.dumps({"prompt": item}))
        else:
            raise LabellingError(f"item {len(lines) + 1} is a {type(item).__name__}; give "
                                 "strings, mappings or LabelPrompt values", source="prompts")
    return parse_prompts(lines, source="prompts")


def _from_json(raw: str, source: object, number: int) -> tuple[LabelPrompt, bool]:
    """The line's prompt, and whether it named its own id."""
    def bad(message: str) -> LabellingError:
        return LabellingError(message, source=source, line=number)

    try:
        obj = loads(raw)
    except DuplicateKeyError as exc:
        raise bad(unreadable(exc)) from None
    except json.JSONDecodeError as exc:
        raise bad(f"{unreadable(exc)}; a file whose first line is a JSON object is read as "
                  "JSONL, one object per line") from None
    if not isinstance(obj, dict):
        raise bad('each line must be a JSON object with a "prompt"')
    for key in obj:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.75)
            if close:  # other fields are ignored, but a misspelt one would silently not apply
                raise bad(f"unknown field {json_quoted(key)}; did you mean "
                          f"{json_quoted(close[0])}?")
    for key in FIELDS:
        if isinstance(obj.get(key), str) and lone_surrogate(obj[key]):
            raise bad(f"field \"{key}\" {LONE_SURROGATE}; fix the line's text")
    prompt = obj.get("prompt")
    if "prompt" not in obj:
        raise bad('missing field "prompt"')
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad('field "prompt" must be a non-empty string')
    rid: Any = obj.get("id")
    if rid is None:
        rid = default_id(prompt)
    elif isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
        raise bad('field "id" must be a non-empty string (or an integer)')
    texts: dict[str, str | None] = {}
    for key in ("task", "split"):
        value = obj.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise bad(f'field "{key}" must be a non-empty string')
        texts[key] = value
    item = LabelPrompt(id=str(rid), prompt=prompt, task=texts["task"], split=texts["split"],
                       reference=_reference(obj, bad), line=number)
    return item, obj.get("id") is not None


def _reference(obj: Mapping[str, Any], bad: Any) -> str | float | None:
    if "reference" not in obj or obj["reference"] is None:
        return None
    value = obj["reference"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad('field "reference" must be a string or a number (the expected answer)')
    if isinstance(value, str):
        if not value.strip():
            raise bad('field "reference" is empty; leave it out to have a judge score answers')
        if parse_number(value) is None and not normalise(value, articles=False):
            raise bad(f'field "reference" {json_quoted(value, 40)} is only punctuation or '
                      "symbols, which are ignored when answers are compared with it, so no answer "
                      "could match; give the expected answer, or leave it out to have a judge "
                      "score answers")
        return value
    number = as_float(value)
    if not math.isfinite(number):
        raise bad('field "reference" must be a finite number')
    return number
