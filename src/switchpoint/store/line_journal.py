"""A small append-only file of JSON lines kept beside a database, so that restoring an older
backup of the database does not undo a change made since: each entry is appended to it and
synced before the database takes the change (``keys.revocations.jsonl`` beside keys.db,
``switchpoint.removals.jsonl`` beside switchpoint.db). Each user keeps its own entries and
words; this module keeps the file.

Every change of the file is made under its advisory lock (``flock``, which also keeps out
another thread of this process) and is crash-safe: an entry is appended whole and synced (a
last line a crash cut short is ended first, so the new entry stays a line of its own), or the
whole file is written to a new file renamed in its place; a new file's folder is synced too.
The file is bounded: an entry that would take it past its bound has the file shortened first
(the user's way of folding entries a newer one covers, then, while more than half the bound is
left, the older half of the lines). A line that holds no entry is passed over, named by its
number; a file that cannot be read is said so. A symbolic link in the file's place is never
read through, nor written through (a change is refused), nor is a FIFO or a device.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from switchpoint._files import locked_file, read_small, sync_folder, write_atomically
from switchpoint._json import loads
from switchpoint._times import LATEST

log = logging.getLogger("switchpoint.store")

T = TypeVar("T")
# What a line that is no JSON value is read as (never an entry).
_UNREADABLE = object()


# Lines read as one JSON value at a time (their values alone held, not the whole file's).
_READ_AT_ONCE = 4096


def line_of(item: Mapping[str, object]) -> bytes:
    """The line that keeps ``item``: compact JSON (ASCII alone) and a newline."""
    return (json.dumps(item, separators=(",", ":")) + "\n").encode("ascii")


def kept_time(value: float) -> float | None:
    """``value``, a time an entry keeps (seconds since the epoch), when one this system
    writes could be: from 1970 to the end of 9999 (the last a date shows); else None (a
    damaged or hand-made line, which the entry's reader passes over)."""
    return value if 0.0 <= value <= LATEST else None


def not_kept_remedy(exc: OSError) -> str:
    """What to do about a journal ``exc`` kept a change out of: room on a full disk, write
    access, or, for what is not a regular file there (a FIFO, a link, a directory), to move
    it aside (a new one is made)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "make room on the disk"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "let this process write the file"
    if exc.errno in (errno.EINVAL, errno.ELOOP, errno.EISDIR, errno.EFBIG):
        return "move what is there aside (a new file is made)"
    return "make room on the disk (or let this process write the file)"


def _kept_all(lines: list[bytes]) -> list[bytes]:
    return lines


@dataclass(frozen=True)
class LineJournal:
    """The journal at ``path``, of at most ``max_bytes``. ``fold``: the lines its bound keeps
    of the file's, in order (those a newer entry covers dropped; by default all of them), the
    older half then let go while more than half of ``max_bytes`` is left. ``entry`` says
    what a line holds ("a revocation or a rotation"), ``unread`` what is lost when the file
    cannot be read ("no revocation it keeps is made again"): the words of the warnings."""

    path: Path
    max_bytes: int
    entry: str
    unread: str
    fold: Callable[[list[bytes]], list[bytes]] = _kept_all

    def append(self, line: bytes) -> None:
        """Add ``line`` (one entry, ending in a newline) at the end of the file, on disk
        before this returns; past :attr:`max_bytes`, the file shortened (see the class) and
        written with the line to a new file renamed in its place. ``OSError`` when it cannot
        be (the line is then not kept, unless the rename was made)."""
        self._not_a_link()
        with locked_file(self.path, append=True) as fd:
            assert fd is not None
            size = os.fstat(fd).st_size
            if size + len(line) + 1 > self.max_bytes:
                self._rewrite(b"".join(raw + b"\n" for raw in self._bounded()) + line)
                return
            if size and _read_at(self.path, size - 1, 1) != b"\n":
                line = b"\n" + line  # (the last line a crash cut short, ended)
            _write_all(fd, line)
            os.fsync(fd)
            if not size:
                sync_folder(self.path.parent)  # (the new file's name, on disk too)

    def take_back(self, line: bytes) -> None:
        """Take the last whole ``line`` the file holds back out of it (a change appended
        that was not made), the file written whole to a new file renamed in its place, so
        a crash leaves the line in it or out; nothing when it holds no such line. ``OSError``
        when it cannot be (the line is then still kept)."""
        self._not_a_link()
        with locked_file(self.path, append=True):
            data = read_small(self.path, self.max_bytes * 2)
            if data is None:
                raise OSError(errno.EFBIG, f"not a regular file of at most "
                              f"{self.max_bytes * 2} bytes", str(self.path))
            at = data.rfind(line)
            while at > 0 and data[at - 1:at] != b"\n":  # (only a line of its own)
                at = data.rfind(line, 0, at)
            if at >= 0:
                self._rewrite(data[:at] + data[at + len(line):])

    def read(self, parse: Callable[[object], T | None]) -> list[T]:
        """The entries the file keeps, in the order they were appended: ``parse`` gives the
        entry a line's JSON value holds, or None for one that holds none (such a line is
        passed over, and the warning names it by its number; an empty one is passed over
        silently). A file that cannot be read is taken for an empty one, saying so."""
        data = read_small(self.path, self.max_bytes * 2)
        if data is None and (self.path.exists() or self.path.is_symlink()):
            log.warning("%s cannot be read (not a regular file of at most %d bytes, or this "
                        "process may not read it): %s; let this process read it, or move "
                        "it aside", self.path, self.max_bytes * 2, self.unread)
        lines = (data or b"").splitlines()
        del data
        out: list[T] = []
        bad: list[int] = []  # (the first 11 numbers: the warning names 10)
        for start in range(0, len(lines), _READ_AT_ONCE):  # (each part's values let go)
            numbered = [(number, raw) for number, raw
                        in enumerate(lines[start:start + _READ_AT_ONCE], start + 1)
                        if raw.strip()]
            for (number, _), value in zip(numbered, _values([raw for _, raw in numbered]),
                                          strict=True):
                entry = None if value is _UNREADABLE else parse(value)
                if entry is not None:
                    out.append(entry)
                elif len(bad) <= 10:
                    bad.append(number)
        if bad:
            log.warning("%s: passed over line(s) %s: not %s (a damaged file)", self.path,
                        ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else ""),
                        self.entry)
        return out

    def _not_a_link(self) -> None:
        """``OSError`` when a symbolic link is in the file's place: :meth:`read` never reads
        through one, so an entry written through it (into the file it leads to, or one it
        would make) would be lost."""
        if self.path.is_symlink():
            raise OSError(errno.ELOOP, "a symbolic link, which it is never read through; put "
                          "the file itself in its place", str(self.path))

    def _bounded(self) -> list[bytes]:
        """The file's lines its bound keeps (see the class); read from its end when it is
        past twice its bound (its newest lines kept, never none)."""
        size = os.stat(self.path).st_size
        start = max(0, size - self.max_bytes * 2)
        lines = _read_at(self.path, start, size - start).splitlines()
        if start:
            lines = lines[1:]  # (the line cut where the reading began)
        kept = self.fold([raw for raw in lines if raw.strip()])
        while kept and sum(len(raw) + 1 for raw in kept) > self.max_bytes // 2:
            kept = kept[len(kept) // 2 or 1:]
        return kept

    def _rewrite(self, data: bytes) -> None:
        """Make ``data`` the whole file (its lock held): written to a new file renamed in
        its place, then its folder synced, so a crash leaves the old file or the new one."""
        write_atomically(self.path, lambda fh: _write_all(fh.fileno(), data), 0o600,
                         state=True)
        sync_folder(self.path.parent)


def _values(lines: Sequence[bytes]) -> list[object]:
    """Each line's JSON value (:data:`_UNREADABLE` for one that holds none, or one nested
    too deep or with a number too long to read)."""
    try:  # (read as one JSON list: a line at a time takes ten times as long)
        values: list[object] = loads(b"[" + b",".join(lines) + b"]")
        if len(values) == len(lines):  # (else a line held more than one value)
            return values
    except ValueError:
        pass
    out: list[object] = []
    for raw in lines:
        try:
            out.append(loads(raw))
        except ValueError:
            out.append(_UNREADABLE)
    return out


def _read_at(path: Path, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` in ``path`` (a descriptor for appending cannot
    read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        data = b""
        while len(data) < size:
            chunk = os.pread(fd, size - len(data), offset + len(data))
            if not chunk:
                break
            data += chunk
        return data
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a write may take part of it, a full disk then says
    so at the next)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


__all__ = ["LineJournal", "kept_time", "line_of", "not_kept_remedy"]
