"""What makes labelling resumable: the output, appended one record at a time, and a side journal
of every answer scored so far.

* ``OUT`` (the routing records) gets one line per prompt, written as soon as every model's
  answer to it is scored; so it is always a valid records file, whatever stops the run.
* ``OUT.journal`` gets one line per scored answer (prompt × model) and per failure, after a
  header line that says which models, judge, rubric and ``max_tokens`` the run uses. A header
  that names no judge (every prompt had a reference) gains one when a rerun needs it (a
  reference removed since): a second header line, the first's with the judge and its rubric
  added, appended before the rerun's first line; a judge other than the one named is refused
  as any other setting that differs. A rerun without a judge where the header names one (every
  answer left to score has a reference now) goes on, the header's judge kept. A prompt
  whose answers are partly scored when the run stops keeps them: a rerun asks only the models
  still missing (failed answers are asked again). An answer for the judge gets a line of its
  own with its cost (:func:`answer_line`) the moment it arrives, before it is
  judged: a rerun that finds it unscored (the run stopped while it was being judged, or the
  judge failed to score it) only judges it, never paying for it twice (unless the line would
  be longer than :data:`MAX_LINE_BYTES`: then it is not journalled, and a rerun asks for the
  answer again). The rerun remembers where each such line is (:class:`Kept`) and reads the
  answer when it judges it, so it holds no more answers at once than it judges at once,
  however many the journal keeps. The journal is removed once every prompt is in ``OUT``.
* ``OUT.done`` is written when a run completes, just before the journal is removed: the size
  and SHA-256 of the ``OUT`` it finished, and the run's settings (the journal header's). It is
  this command's mark on its finished output: a later ``--restart`` discards ``OUT`` only while
  the journal is beside it (a run is part-way through it) or the mark matches it (the command's
  finished output, unchanged since), however the prompts file was edited since; a file without
  either is never discarded, even a records file of the same prompts. A rerun on a finished
  output (to label prompts added since, say) is refused, as a resumed journal is, when its
  judge, rubric or ``max_tokens`` are not the settings the mark names, so one records file
  never mixes answers scored under two settings (a mark written before it kept the settings
  names none, and is not checked so).

Every line goes out in one ``write`` followed by ``fsync``. A line left half-written by a crash
or a kill (no newline at the end of the file) is dropped on the next run, with a note, when the
file is demonstrably this command's: whole lines before it (which are then checked as its
lines), or, for ``OUT``, its journal beside it. Otherwise it is read as a line like any other,
so a file of someone else's is refused, never cut. A last line that is whole but lacks its
newline is kept. :func:`inspect` reads both files without
changing them (so bad input changes nothing); :meth:`Resume.apply` then makes the repairs.
Both are read a line at a time, each line at most :data:`MAX_LINE_BYTES` and split at its
newline alone (as written), so a file of someone else's, however large, is refused at the
first line that shows it without being held.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

from switchpoint._files import give_folder_owner, open_made, read_problem, write_problem
from switchpoint._json import LONE_SURROGATE, as_float, loads, lone_surrogate
from switchpoint._messages import json_quoted, listed_names, plural, quoted_path
from switchpoint.catalog import usd
from switchpoint.errors import LabellingError, RecordsError
from switchpoint.labelling.prompts import LabelPrompt
from switchpoint.records import MAX_RECORD_CHARS, parse_records

JOURNAL_SUFFIX = ".journal"
JOURNAL_FORMAT = 1
DONE_SUFFIX = ".done"
DONE_FORMAT = 1
_HASH_CHUNK = 1 << 20
# The longest line the output or the journal is read with: a record is at most
# MAX_RECORD_CHARS characters, each at most 4 bytes in UTF-8.
MAX_LINE_BYTES = 4 * MAX_RECORD_CHARS
# What to do about a file in the way: --restart is offered only for a file this command is
# part-way through writing (its journal is beside it), never for a file of someone else's.
RESTART_HINT = "write to another --out, or pass --restart to start over (discarding it)"
FOREIGN_HINT = ("write to another --out (no run of this command is part-way through this file, "
                "which may be someone else's: it is left as it is)")


def hint(ours: bool) -> str:
    """What to do about ``--out`` when it cannot be resumed: ``--restart`` only when ``ours``."""
    return RESTART_HINT if ours else FOREIGN_HINT


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + JOURNAL_SUFFIX)


def done_path(out: Path) -> Path:
    """Where a run that completed leaves its mark on ``out`` (see the module's notes)."""
    return out.with_name(out.name + DONE_SUFFIX)


def _fingerprint(path: Path) -> dict[str, Any]:
    """The mark's content for the file at ``path``: its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"labelling_output": DONE_FORMAT, "bytes": size, "sha256": digest.hexdigest()}


# The mode of a file the command makes (--out, its journal, mark and lock): the prompts and
# answers are the team's traffic, readable by their owner alone, as route --output's are; a
# file already there keeps its own.
FILE_MODE = 0o600


def _mark_part(out: Path) -> Path:
    """Where :func:`mark_done` writes the mark of ``out`` before renaming it into place."""
    mark = done_path(out)
    return mark.with_name(mark.name + ".part")


def refuse_link(path: Path, what: str, out: Path) -> None:
    """:class:`~switchpoint.errors.LabellingError` when ``path``, the run's ``what`` beside
    ``out`` (its journal, its mark, its lock file), is a symbolic link: a run never reads or
    writes its own files through one, which may lead to another user's file (one planted in a
    shared folder would take the prompts and answers the journal holds, or be overwritten by
    the mark), so it is refused by its name, nothing read or written."""
    if path.is_symlink():
        raise LabellingError(f"{quoted_path(path)} is a symbolic link, not a label run's "
                             f"{what}: a run never reads or writes its own files through a "
                             "link, which may lead to another user's file; remove it",
                             source=out)


def mark_done(out: Path, key: RunKey) -> None:
    """Leave the mark that this command finished ``out`` as it now is, under ``key``'s settings:
    written to a side file, fsynced, then renamed into place, so a crash leaves the old mark or
    the new one; made by root in another user's folder, it is given the folder's owner (see
    :func:`~switchpoint._files.give_folder_owner`)."""
    mark = done_path(out)
    part = _mark_part(out)
    try:
        data = (json.dumps({**_fingerprint(out), "settings": key.header()}) + "\n"
                ).encode("utf-8")
        refuse_link(part, "mark", out)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        try:
            give_folder_owner(fd, part)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, mark)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise LabellingError(f"cannot write it: {write_problem(mark, exc)}",
                             source=mark) from None


def written_here(out: Path) -> bool:
    """Whether this command demonstrably wrote ``out``: a run is part-way through it (its
    journal is beside it: :func:`began_here`), or a run finished it and it is unchanged since
    (its mark matches). Reads only."""
    return began_here(journal_path(out)) or _matching_mark(out) is not None


def _matching_mark(out: Path) -> dict[str, Any] | None:
    """The mark of the run that finished ``out``, if it matches ``out`` as it now is (else
    None). Reads only."""
    mark = done_path(out)
    try:
        if not mark.is_file() or mark.stat().st_size > _HASH_CHUNK or not out.is_file():
            return None
        saved = loads(mark.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            return None
        now = _fingerprint(out)
        return saved if {k: saved.get(k) for k in now} == now else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


# How every journal this command writes begins: its header's first key, then the next one.
_HEADER_START = (json.dumps({"labelling_journal": JOURNAL_FORMAT})[:-1] + ",").encode()


def began_here(journal: Path) -> bool:
    """Whether the file at a journal's name is one this command began: its first line this
    command's header, whole or cut short (a run killed while writing it), or nothing yet (killed
    before). Any other file there is not a run's journal, so it makes nothing this command's.
    Reads the file's first few bytes only."""
    try:
        with journal.open("rb") as fh:
            start = fh.read(len(_HEADER_START) + 1)
    except OSError:  # (none there, or one it may not read: not taken for its own)
        return False
    return start.startswith(_HEADER_START) or _HEADER_START.startswith(start)


@dataclass(frozen=True)
class RunKey:
    """What a resumed run must share with the run it resumes: the models, the judge and its
    rubric, ``max_tokens`` (answers given under other settings are not comparable)."""

    models: tuple[str, ...]
    judge: str | None = None
    rubric: str | None = None
    max_tokens: int | None = None

    def header(self) -> dict[str, Any]:
        return {"labelling_journal": JOURNAL_FORMAT, "models": sorted(self.models),
                "judge": self.judge, "rubric": self.rubric, "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class Scored:
    """One model's scored answer to one prompt. ``by``: ``judge`` or ``reference``; a score by
    reference names the reference it was made against (``reference_digest``:
    :attr:`LabelPrompt.reference_digest`; None on a line an earlier version wrote). Its costs
    are US dollars at the catalog's prices, kept as every amount of dollars is
    (:func:`~switchpoint.catalog.usd`: float arithmetic's noise, 2.6999999999999996e-06 for
    2.7e-06, dropped), so the journal, the records and the run's report carry them so. A
    resumed run reads them back as written (the rule gives a kept amount back unchanged), so
    its records are those an uninterrupted run writes."""

    id: str
    model: str
    digest: str
    score: float
    cost_usd: float
    by: str
    judge_cost_usd: float = 0.0
    reference_digest: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost_usd", usd(self.cost_usd))
        object.__setattr__(self, "judge_cost_usd", usd(self.judge_cost_usd))

    def to_line(self) -> dict[str, Any]:
        line = {"id": self.id, "model": self.model, "digest": self.digest, "score": self.score,
                "cost_usd": self.cost_usd, "by": self.by, "judge_cost_usd": self.judge_cost_usd}
        if self.reference_digest is not None:
            line["reference_digest"] = self.reference_digest
        return line

    def holds_for(self, prompt: LabelPrompt) -> bool:
        """Whether this score still stands for ``prompt`` as it is now: one by the judge while
        the prompt has no reference (the judge and its rubric are the journal header's, checked
        whole), one by reference while the reference is the one it was made against. A score
        by reference from a line that does not name its reference (an earlier version wrote it,
        and kept no answer to score again) stands as it is."""
        if self.by == "reference" and self.reference_digest is None:
            return True
        now = prompt.reference_digest
        if now is None:
            return self.by == "judge"
        return self.by == "reference" and self.reference_digest == now


@dataclass(frozen=True)
class Kept:
    """Where the journal keeps a model's answer to a prompt, to be judged (its line's number,
    and its offset and length in bytes), and what the answer cost (as dollars are kept,
    :func:`~switchpoint.catalog.usd`): kept in the journal from the moment it arrives, so a
    rerun that finds it unscored judges it instead of paying for it twice. The answer itself
    is read when it is judged (:meth:`Resume.answer`)."""

    line: int
    at: int
    size: int
    cost_usd: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost_usd", usd(self.cost_usd))


def answer_line(prompt: LabelPrompt, model: str, answer: str,
                cost_usd: float) -> dict[str, Any] | None:
    """The journal's line for ``model``'s answer to ``prompt`` as it arrives, before it is
    judged; None when the line would be longer than :data:`MAX_LINE_BYTES` (as the journal is
    read back): such an answer is not journalled, and a rerun asks for it again."""
    line = {"id": prompt.id, "model": model, "digest": prompt.digest, "answer": answer,
            "cost_usd": usd(cost_usd)}
    return line if len(encoded(line).encode("utf-8")) <= MAX_LINE_BYTES else None


def scored_line(scored: Scored, answer: str | None = None) -> dict[str, Any]:
    """The journal's line for a scored answer; a score by reference keeps its ``answer`` there
    (when the line stays within :data:`MAX_LINE_BYTES`), so that a rerun after the reference
    changed scores that answer again instead of asking for it."""
    line = scored.to_line()
    if answer is None or lone_surrogate(answer):  # (not text a line can hold)
        return line
    with_answer = {**line, "answer": answer}
    return with_answer if len(encoded(with_answer).encode("utf-8")) <= MAX_LINE_BYTES else line


def failure_line(prompt: LabelPrompt, model: str, stage: str, message: str) -> dict[str, Any]:
    """The journal's line for a failed answer (an answer the judge failed to score is on its
    own line before it: :func:`answer_line`)."""
    return {"id": prompt.id, "model": model, "digest": prompt.digest, "failed": stage,
            "error": message}


def record_line(prompt: LabelPrompt, scored: Mapping[str, Scored],
                models: Sequence[str]) -> dict[str, Any]:
    """The routing record of a prompt whose every model is scored."""
    record: dict[str, Any] = {"id": prompt.id, "prompt": prompt.prompt}
    if prompt.task is not None:
        record["task"] = prompt.task
    if prompt.split is not None:
        record["split"] = prompt.split
    record["scores"] = {m: scored[m].score for m in models}
    record["costs"] = {m: scored[m].cost_usd for m in models}
    return record


# The widest a score or a cost is written: a float's shortest form is at most 23 characters.
_WIDEST_NUMBER = 2.2250738585072014e-308


def record_chars(models: Sequence[str]) -> Callable[[LabelPrompt], int]:
    """How many characters, at most, the record line of a prompt labelled by ``models`` takes as
    :class:`LineWriter` writes it (its newline included), whatever the scores and costs: what
    :data:`~switchpoint.records.MAX_RECORD_CHARS` bounds."""
    # (the models' scores and costs are the same width for every prompt: measured once)
    numbers = 2 * (len(encoded(dict.fromkeys(models, _WIDEST_NUMBER))) - 3)  # less {}\n

    def chars(prompt: LabelPrompt) -> int:
        return len(encoded(record_line(prompt, {}, []))) + numbers

    return chars


def encoded(obj: Mapping[str, Any]) -> str:
    """``obj`` as one line of the output or the journal, its newline included."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


@dataclass
class _Repair:
    path: Path
    size: int  # keep this many bytes
    newline: bool = False  # then add a newline


@dataclass
class Resume:
    """What an earlier run left: ``done``, the ids already in the output (``score_sums``:
    each model's scores summed over their records); ``scored``, the answers the journal holds
    for the other prompts; ``notes`` for the person running it."""

    out: Path
    key: RunKey
    done: set[str] = field(default_factory=set)
    scored: dict[tuple[str, str], Scored] = field(default_factory=dict)
    #: answers journalled but not scored, to be judged (never for a pair in ``scored``)
    kept: dict[tuple[str, str], Kept] = field(default_factory=dict)
    #: the pairs of ``kept`` whose score was made against a reference that changed since (or
    #: was added or removed): scored again from their kept answer
    rescored: set[tuple[str, str]] = field(default_factory=set)
    score_sums: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    journal_has_header: bool = False
    #: the judge the journal's header names (None: none, or no header yet)
    journal_judge: str | None = None
    _repairs: list[_Repair] = field(default_factory=list)

    @property
    def journal(self) -> Path:
        return journal_path(self.out)

    @property
    def header_needed(self) -> bool:
        """Whether the run appends its header to the journal before its first line: there is
        none yet, or it names no judge and this run has one (see :func:`inspect`)."""
        return not self.journal_has_header or (self.journal_judge is None
                                               and self.key.judge is not None)

    def answer(self, pair: tuple[str, str], kept: Kept) -> str:
        """The answer of ``pair`` (id, model) the journal keeps where ``kept`` says, read now and
        checked again as :func:`inspect` checked it (a line changed since is refused)."""
        try:
            with self.journal.open("rb") as fh:
                fh.seek(kept.at)
                raw = fh.read(kept.size)
        except OSError as exc:
            raise LabellingError(f"cannot read it: {read_problem(self.journal, exc)}",
                                 source=self.journal) from None
        try:
            obj = loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            obj = None
        if not isinstance(obj, dict) or (obj.get("id"), obj.get("model")) != pair \
                or "answer" not in obj:
            raise LabellingError(f"line {kept.line} changed since this run read it (another "
                                 "program wrote there); run the same command again to resume "
                                 "from the journal as it is now", source=self.journal)
        _kept(self.journal, kept.line, obj, self.key, kept.at, kept.size)
        return str(obj["answer"])

    def apply(self) -> None:
        """Make the repairs :func:`inspect` found (drop half-written lines)."""
        for repair in self._repairs:
            try:
                with repair.path.open("r+b") as fh:
                    fh.truncate(repair.size)
                    if repair.newline:
                        fh.seek(0, os.SEEK_END)
                        fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise LabellingError(f"cannot repair it: {exc.strerror or exc}",
                                     source=repair.path) from None
        self._repairs.clear()


def fresh(out: Path, key: RunKey) -> Resume:
    """A run that starts over: nothing is kept."""
    return Resume(out=out, key=key)


def check_discardable(out: Path) -> None:
    """Raise :class:`~switchpoint.errors.LabellingError` unless ``--restart`` may discard
    ``out``: it is missing or empty, or this command wrote it (:func:`written_here`: its journal
    is beside it, or the mark of the run that finished it matches it). Anything else may be
    someone else's and is left as it is, even records of the same prompts, and so is a file at
    the journal's name that is not a journal this command began (:func:`began_here`). Reads
    only (up to ``out``'s first line that is not blank)."""
    if written_here(out):
        return
    journal = journal_path(out)
    if os.path.lexists(journal):  # (not one this command began, or it would be ours)
        raise LabellingError(f"--restart discards only a journal this command began, and "
                             f"this is not one; {FOREIGN_HINT}", source=journal)
    with closing(_lines(out, Resume(out=out, key=RunKey(models=())), "")) as lines:
        if not any(line.text.strip() for line in lines):
            return
    raise LabellingError("--restart discards only a file this command wrote (its journal "
                         f"beside it, or the {DONE_SUFFIX} mark of the run that finished it "
                         f"and unchanged since), and this is not one; {FOREIGN_HINT}",
                         source=out)


def inspect(out: Path, prompts: Sequence[LabelPrompt], key: RunKey) -> Resume:
    """What to resume from ``out`` and its journal, for these prompts and settings; reads
    only, a line at a time (a file that is not this run's is refused at its first line that
    shows it). Raises :class:`~switchpoint.errors.LabellingError` when the files belong to
    another run (other models, ids or settings)."""
    resume = Resume(out=out, key=key)
    by_id = {p.id: p for p in prompts}
    journal = journal_path(out)
    refuse_link(journal, "journal", out)
    refuse_link(done_path(out), "mark", out)
    refuse_link(_mark_part(out), "mark", out)
    ours = written_here(out)
    if not began_here(journal) and (mark := _matching_mark(out)) is not None and isinstance(
            settings := mark.get("settings"), dict):
        # (a finished output: what a rerun adds to it is scored as its records were)
        _check_header(out, settings, key, "was finished by a run with other settings, and its "
                                          "records would be mixed with answers scored so",
                      "add to it")
    with closing(_lines(out, resume, "that prompt will be labelled again", ours=ours)) as lines:
        _read_output(out, (line.text for line in lines), by_id, key, resume, ours=ours)
    # (the journal's name is this command's own: a half-written first line is its header)
    with closing(_lines(journal, resume, "that answer will be asked for again",
                        ours=True)) as lines:
        _read_journal(journal, lines, by_id, key, resume)
    return resume


class _Read(NamedTuple):
    """A line as read: where it starts in the file and its length, in bytes, and its text."""

    at: int
    size: int
    text: str


def _lines(path: Path, resume: Resume, lost: str, *, ours: bool = False
           ) -> Generator[_Read, None, None]:
    """The file's lines, read one at a time, each at most :data:`MAX_LINE_BYTES` (a longer one
    is refused once that much of it is read). A half-written last line (no newline after it)
    is scheduled to be dropped when non-blank lines come before it or the file is known to be
    this command's (``ours``), else kept as a line (for the caller to refuse); a whole one only
    gets its newline."""
    if not path.exists():
        return
    if not path.is_file():
        raise LabellingError("exists and is not a file; give --out a file path", source=path)
    try:
        with path.open("rb") as fh:
            offset = number = 0
            before = False  # whether a line that is not blank came before
            while raw := fh.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise LabellingError(f"line {number} is over {MAX_LINE_BYTES:,} bytes, "
                                         "longer than any line this command writes; "
                                         f"{FOREIGN_HINT}", source=path)
                if not raw.endswith(b"\n"):  # the last line
                    if _whole_object(raw):  # only its newline is missing (an editor's doing)
                        resume._repairs.append(_Repair(path, offset + len(raw), newline=True))
                    elif ours or before:
                        resume._repairs.append(_Repair(path, offset))
                        resume.notes.append(f"{path}: dropped the half-written last line (line "
                                            f"{number}) left by an interrupted run; {lost}")
                        return
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise LabellingError("is not UTF-8 text, so it is not a file this command "
                                         f"wrote; {FOREIGN_HINT}", source=path) from None
                yield _Read(offset, len(raw), text)
                before = before or bool(raw.strip())
                offset += len(raw)
    except OSError as exc:
        raise LabellingError(f"cannot read it: {read_problem(path, exc)}", source=path) from None


def _whole_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _read_output(out: Path, lines: Iterator[str], by_id: Mapping[str, LabelPrompt],
                 key: RunKey, resume: Resume, *, ours: bool) -> None:
    blank = 0
    for first in lines:
        if first.strip():
            break
        blank += 1
    else:
        return  # empty, or blank lines only

    def records_at_most(count: int) -> Iterator[str]:
        """The lines, refused past ``count`` records: ids are unique, and each is a prompt's
        (so a long file of other records is refused without being held)."""
        yield from repeat("", blank)
        yield first
        seen = 1
        for number, line in enumerate(lines, start=blank + 2):
            if line.strip():
                seen += 1
                if seen > count:
                    raise LabellingError(f"line {number}: holds more records than the prompts "
                                         f"file has prompts ({count:,}); it is another run's "
                                         f"output: {hint(ours)}", source=out)
            yield line

    try:
        records = parse_records(records_at_most(len(by_id)), source=out)
    except RecordsError as exc:
        raise LabellingError(f"{exc}; it is not a records file this command can add to: "
                             f"{hint(ours)}") from None
    wanted = set(key.models)
    for i, rid in enumerate(records.ids):
        prompt = by_id.get(rid)
        if prompt is None:
            raise LabellingError(f"holds a record with id {json_quoted(rid)}, which is not in the "
                                 f"prompts file; it is another run's output: {hint(ours)}",
                                 source=out)
        if records.prompts[i] != prompt.prompt:
            raise LabellingError(f"the record {json_quoted(rid)} has another prompt than line "
                                 f"{prompt.line} of the prompts file; {hint(ours)}",
                                 source=out)
        labelled = {m for j, m in enumerate(records.models)
                    if not math.isnan(records.scores[i, j])}
        if labelled != wanted:
            raise LabellingError(
                "the record "
                f"{json_quoted(rid)} labels {listed_names(sorted(labelled), quoted=True)}, not the "
                "models asked for ("
                f"{listed_names(key.models, quoted=True)}); {hint(ours)} (add-model takes one "
                "model's labels from a file of their own)", source=out)
        resume.done.add(rid)
        for j, model in enumerate(records.models):
            resume.score_sums[model] = (resume.score_sums.get(model, 0.0)
                                        + float(records.scores[i, j]))


def _read_journal(journal: Path, lines: Iterator[_Read], by_id: Mapping[str, LabelPrompt],
                  key: RunKey, resume: Resume) -> None:
    header = False
    first: Mapping[str, Any] = {}  # (the header)
    stale: set[tuple[str, str]] = set()  # (a pair's answer and its score count once)
    scores: dict[tuple[str, str], Scored] = {}  # each pair's last score, and its last answer
    answers: dict[tuple[str, str], Kept] = {}
    for number, read in enumerate(lines, start=1):
        line = read.text
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            raise LabellingError(f"line {number} is not a JSON object, so this is not a "
                                 f"journal this command wrote; {FOREIGN_HINT}", source=journal)
        if not header:
            if obj.get("labelling_journal") != JOURNAL_FORMAT:
                raise LabellingError(f"line {number} is not a labelling journal's header; "
                                     f"{FOREIGN_HINT}", source=journal)
            _check_header(journal, obj, key)
            header = resume.journal_has_header = True
            first = obj
            resume.journal_judge = obj["judge"] if isinstance(obj.get("judge"), str) else None
            continue
        if "labelling_journal" in obj:  # (the header gaining a judge)
            _gained_judge(_Line(journal, number, obj), first, resume.journal_judge)
            _check_header(journal, obj, key)
            resume.journal_judge = obj["judge"]
            continue
        if "failed" in obj and "answer" not in obj:
            _failure(journal, number, obj, key)
            continue  # a failure: asked for again (unless its answer is on a line of its own)
        # (an answer is on its own line, or on its score's (by reference), or, as an earlier
        # version wrote it, on its failure's)
        item = _scored(journal, number, obj, key) if "score" in obj or "answer" not in obj \
            else None
        answer = _kept(journal, number, obj, key, read.at, read.size) if "answer" in obj \
            else None
        rid, digest = obj["id"], obj["digest"]
        pair = rid, obj["model"]
        prompt = by_id.get(rid)
        if prompt is None or prompt.digest != digest:
            stale.add(pair)  # a prompt removed or changed since: labelled again if still there
            continue
        if rid in resume.done:
            continue
        if item is not None:
            scores[pair] = item
        if answer is not None:
            answers[pair] = answer
    changed: set[tuple[str, str]] = set()  # scores made against a reference changed since
    for pair, item in scores.items():
        if item.holds_for(by_id[pair[0]]):
            resume.scored[pair] = item
            answers.pop(pair, None)  # (its answer, scored: not held)
        else:
            changed.add(pair)
    resume.kept = answers
    resume.rescored = changed & answers.keys()
    if resume.scored:
        resume.notes.append(f"{journal}: {plural(len(resume.scored), 'scored answer')} kept "
                            "from an interrupted run")
    unscored = [pair for pair in resume.kept if pair not in resume.rescored]
    if unscored:
        resume.notes.append(f"{journal}: {plural(len(unscored), 'answer')} an earlier run got "
                            f"but did not score {'is' if len(unscored) == 1 else 'are'} kept; "
                            f"{_scored_how([by_id[rid] for rid, _ in unscored])}, not asked "
                            "for again")
    if changed:
        again = len(resume.rescored)
        lost = len(changed) - again
        resume.notes.append(
            f"{journal}: {plural(len(changed), 'score')} {'was' if len(changed) == 1 else 'were'}"
            " made against a prompt's reference that changed since (or was added or removed): "
            + (f"{plural(again, 'kept answer')} scored again, not asked for again" if again
               else "")
            + ("; " if again and lost else "")
            + (f"{plural(lost, 'answer')} not kept, asked for again" if lost else ""))
    if stale:
        resume.notes.append(f"{journal}: {plural(len(stale), 'journalled answer')} "
                            f"{'is' if len(stale) == 1 else 'are'} for prompts no longer in the "
                            "prompts file (or changed since); ignored")


def _scored_how(prompts: Sequence[LabelPrompt]) -> str:
    """How the kept answers to ``prompts`` (one item per answer) are scored now: by the
    judge, or against their prompt's reference where it has one now (one it gained since is
    used)."""
    referenced = sum(p.reference is not None for p in prompts)
    judged = len(prompts) - referenced
    one = len(prompts) == 1
    if not referenced:
        return f"{'it is' if one else 'they are'} scored now by the judge"
    if not judged:
        return (f"{'it is' if one else 'they are'} scored now against "
                f"{'its' if one else 'their'} prompt's reference")
    return (f"they are scored now, {judged} by the judge and {referenced} against their "
            "prompt's reference")


def _check_header(journal: Path, header: Mapping[str, Any], key: RunKey,
                  written: str = "was written by a run with other settings",
                  goal: str = "resume it") -> None:
    """A header (the first, or one that gained a judge) whose settings are not ``key``'s is
    refused naming each that differs, but for a judge this run adds where it named none (its
    header gains it: see :meth:`Resume.header_needed`), and for none where it named one (this
    run scores by reference alone, which the run checks: the header keeps its judge)."""
    expected = key.header()
    flags = {"models": "--models", "judge": "--judge", "rubric": "--rubric",
             "max_tokens": "--max-tokens"}
    differ = []
    either = header.get("judge") is None or expected["judge"] is None
    for name, flag in flags.items():
        was, now = header.get(name), expected[name]
        if was == now or (name == "rubric" and (was is None or now is None)) or (
                name in ("judge", "rubric") and either):
            continue  # a judge added or dropped is said once, under --judge
        if name == "rubric":
            differ.append("--rubric (another rubric then)")
        else:
            differ.append(f"{flag} {_shown(was)} then, {_shown(now)} now")
    if differ:
        raise LabellingError(
            f"{written}: " + "; ".join(differ) + ". Rerun with "
            f"that run's settings to {goal}, or {RESTART_HINT}", source=journal)


def _gained_judge(line: _Line, first: Mapping[str, Any], judge: str | None) -> None:
    """A header line after the first is the first's with a judge (and its rubric) added,
    where the header named none: anything else is refused as not this command's."""
    obj = line.obj
    if judge is not None:
        raise line.bad("another header, though the header names a judge already")
    if obj.get("labelling_journal") != JOURNAL_FORMAT or obj.keys() != first.keys():
        raise line.bad("a header with other fields than the first's")
    if not isinstance(obj["judge"], str) or not isinstance(obj["rubric"], str):
        raise line.bad("a header after the first that names no judge and its rubric")
    if any(obj[name] != first[name] for name in ("models", "max_tokens")):
        raise line.bad("a header after the first with other models or max_tokens than it")


def _shown(value: object) -> str:
    if value is None:
        return "(none)"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


class _Line:
    """Checks of one journal line (numbered ``number``) that is not the header: a line that
    fails one is refused as not written by this command."""

    def __init__(self, journal: Path, number: int, obj: Mapping[str, Any]) -> None:
        self.journal, self.number, self.obj = journal, number, obj

    def bad(self, what: str) -> LabellingError:
        return LabellingError(f"line {self.number}: {what}; this is not a journal this command "
                              f"wrote: {FOREIGN_HINT}", source=self.journal)

    def strings(self, key: RunKey, *names: str) -> None:
        """``id``, ``model``, ``digest`` and ``names`` are strings; ``model`` one of the
        run's."""
        for name in ("id", "model", "digest", *names):
            if not isinstance(self.obj.get(name), str):
                raise self.bad(f"'{name}' is missing or not a string")
        if self.obj["model"] not in key.models:
            raise self.bad(f"model {json_quoted(self.obj['model'])} is not one of --models")

    def number_in(self, name: str, hi: float, default: float | None = None) -> float:
        """The line's number ``name``, from 0 to ``hi`` (finite)."""
        value = self.obj.get(name, default)
        x = (math.nan if isinstance(value, bool) or not isinstance(value, (int, float))
             else as_float(value))
        if not 0.0 <= x <= hi or math.isinf(x):
            raise self.bad(f"'{name}' is missing or out of range")
        return x


def _scored(journal: Path, number: int, obj: Mapping[str, Any], key: RunKey) -> Scored:
    line = _Line(journal, number, obj)
    line.strings(key, "by")
    if obj["by"] not in ("judge", "reference"):
        raise line.bad(f"'by' is {json_quoted(obj['by'], 40)}, neither \"judge\" nor "
                       "\"reference\"")
    reference = obj.get("reference_digest")
    if reference is not None and (obj["by"] != "reference" or not isinstance(reference, str)):
        raise line.bad("'reference_digest' is not a string on a score by reference")
    return Scored(id=obj["id"], model=obj["model"], digest=obj["digest"],
                  score=line.number_in("score", 1.0),
                  cost_usd=line.number_in("cost_usd", math.inf), by=obj["by"],
                  judge_cost_usd=line.number_in("judge_cost_usd", math.inf, 0.0),
                  reference_digest=reference)


def _failure(journal: Path, number: int, obj: Mapping[str, Any], key: RunKey) -> None:
    """Check a failure's line (:func:`failure_line`) as the journal's other lines are checked,
    though nothing of it is kept (the answer it failed is asked for, or judged, again)."""
    line = _Line(journal, number, obj)
    line.strings(key, "failed", "error")
    if obj["failed"] not in ("answer", "judge"):
        raise line.bad(f"'failed' is {json_quoted(obj['failed'], 40)}, neither \"answer\" nor "
                       "\"judge\"")


def _kept(journal: Path, number: int, obj: Mapping[str, Any], key: RunKey, at: int,
          size: int) -> Kept:
    """The answer a line keeps (:func:`answer_line`, a score by reference's
    (:func:`scored_line`), or a judging failure's line as an earlier version wrote it: no other
    failure keeps one), checked to be text that can be sent to the judge (UTF-8): where it is
    (the line is ``size`` bytes from ``at``), and its cost."""
    line = _Line(journal, number, obj)
    line.strings(key, "answer")
    if "failed" in obj and obj["failed"] != "judge":
        raise line.bad("an answer is kept only when the judge failed to score it, and this "
                       f"failure is {json_quoted(obj['failed'], 40)}")
    if lone_surrogate(obj["answer"]):
        raise line.bad(f"the kept answer {LONE_SURROGATE}")
    return Kept(line=number, at=at, size=size, cost_usd=line.number_in("cost_usd", math.inf))


def open_for_writing(path: Path, flags: int, *, source: Path | None = None,
                     own: bool = False) -> int:
    """``os.open`` of ``path``, created (with its parent directories) if need be; else
    :class:`~switchpoint.errors.LabellingError` naming ``source`` (default ``path``) and why.
    ``own``: one of this command's own files (its journal, its lock), which, made by root in
    another user's folder, is given the folder's owner (see
    :func:`~switchpoint._files.open_made`), so that the user's next run may use it; the
    output, like every command's, is the writer's."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if own:  # (never through a link: see refuse_link)
            return open_made(path, flags | os.O_NOFOLLOW, FILE_MODE)
        return os.open(path, flags | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise LabellingError(f"cannot open it for writing: {write_problem(path, exc)}",
                             source=source or path) from None


class LineWriter:
    """Appends JSON lines to a file: each in one ``write``, then ``fsync``, so a crash leaves
    at most one half-written last line (which the next run drops). ``own``: see
    :func:`open_for_writing`."""

    def __init__(self, path: Path, *, own: bool = False) -> None:
        self.path = path
        self._fd: int | None = open_for_writing(path, os.O_WRONLY | os.O_APPEND, own=own)

    def append(self, obj: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise LabellingError("is closed", source=self.path)
        data = encoded(obj).encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            raise LabellingError(f"cannot write it: {exc.strerror or exc}",
                                 source=self.path) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
