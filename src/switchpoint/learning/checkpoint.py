"""Checkpoints: learning state saved whole, so a start replays only the feedback after it.

Learning state is a deterministic fold over the feedback log; replaying a long log on every
start and reload costs time in proportion to everything ever learned. A checkpoint is that
fold's result at one point of the log: each component (overlays, learners, tenant memories)
turns its state into a :class:`State` (JSON-ready facts and named arrays) and back, and
:func:`write_checkpoint` / :func:`read_checkpoint` keep one in a file. A component may hand over
an array as a function that builds it from a snapshot it took (of records it never changes):
the snapshot is what must be taken while feedback waits, and the building happens when the
checkpoint is written, while feedback goes on.

A checkpoint names the log position it holds (``seq``, and the id of the event there, so a
log replaced under it is noticed) and a ``key``: whatever the fold depends on besides the events
(the weights, the learning settings). A checkpoint whose key or log position does not match is
not used, and the log is replayed from the start, exactly as without one.

The file is a NumPy ``.npz`` archive read without pickle (no code runs from it), written to a
temporary file of its writer's own (named by its pid), synced, then renamed over the old one:
a crash leaves the old checkpoint or the new one, never half of either. A temporary file is
removed as stale only when the process that named it is gone, so writers in two processes (or
two threads) never take each other's file away; the last rename wins.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from switchpoint._files import CHECKPOINT_FILENAME as CHECKPOINT_FILENAME  # (re-exported)
from switchpoint._files import npy_header, readable_warning, write_atomically
from switchpoint._messages import json_quoted

if TYPE_CHECKING:  # (NumPy loads where an array is read or written: see checkpoint_position)
    import numpy as np

#: Bumped whenever a component's state layout changes: an older checkpoint is then ignored.
FORMAT = 2
_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint that does not fit what restores it (the caller replays the log instead)."""


#: An array of a state, or a function that builds it (see the module docstring).
ArrayOrBuild: TypeAlias = "np.ndarray | Callable[[], np.ndarray]"


@dataclass
class State:
    """One component's learning state: JSON-ready ``meta`` and named ``arrays`` (copies,
    never views of live state, or functions building them from a snapshot). Components nest
    their parts' states under a name."""

    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, ArrayOrBuild] = field(default_factory=dict)

    def put(self, name: str, part: State) -> None:
        """Nest ``part`` under ``name``."""
        if "/" in name:
            raise ValueError(f"a part's name cannot hold '/': {json_quoted(name)}")
        self.meta[name] = part.meta
        for key, value in part.arrays.items():
            self.arrays[f"{name}/{key}"] = value

    def part(self, name: str) -> State:
        """The state nested under ``name``."""
        meta = self.meta.get(name)
        if not isinstance(meta, dict):
            raise CheckpointError(f"the checkpoint holds no part {json_quoted(name)}")
        prefix = f"{name}/"
        return State(meta, {k[len(prefix):]: v for k, v in self.arrays.items()
                            if k.startswith(prefix)})

    def array(self, name: str, *, dtype: Any = None, shape: tuple[int | None, ...] | None = None
              ) -> np.ndarray:
        """The array ``name``, checked against ``dtype`` (its kind) and ``shape`` (None: any
        length on that axis)."""
        if name not in self.arrays:
            raise CheckpointError(f"the checkpoint holds no array {json_quoted(name)}")
        value = self.arrays[name]
        if callable(value):
            value = self.arrays[name] = value()
        import numpy as np

        if dtype is not None and value.dtype.kind != np.dtype(dtype).kind:
            raise CheckpointError(f"array {json_quoted(name)} is {value.dtype}, expected "
                                  f"{np.dtype(dtype)}")
        if shape is not None and (value.ndim != len(shape) or any(
                want is not None and got != want for got, want in zip(value.shape, shape,
                                                                      strict=True))):
            raise CheckpointError(f"array {json_quoted(name)} has shape {value.shape}, expected "
                                  f"{tuple('any' if s is None else s for s in shape)}")
        return value

    def built(self) -> dict[str, np.ndarray]:
        """Every array, those handed over as functions built now."""
        return {name: self.array(name) for name in list(self.arrays)}


@dataclass(frozen=True)
class Checkpoint:
    """A saved state at log position ``seq`` (the event there: ``event_id``)."""

    key: str
    seq: int
    event_id: str
    state: State


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> int:
    """Write ``checkpoint`` to ``path`` atomically; returns the file's size in bytes."""
    import numpy as np

    path = Path(path)
    meta = {"format": FORMAT, "key": checkpoint.key, "seq": checkpoint.seq,
            "event_id": checkpoint.event_id, "state": checkpoint.state.meta}
    encoded = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), dtype=np.uint8)
    arrays = {_META: encoded, **{f"a/{k}": v for k, v in checkpoint.state.built().items()}}
    write_atomically(path, lambda f: np.savez(f, allow_pickle=False, **arrays), mode=0o600,
                     state=True)
    return path.stat().st_size


def _check_sizes(archive: Any) -> None:
    """Refuse (``ValueError``) an archive member whose header claims more values than the
    member holds: read as it stands, a damaged header claiming terabytes would be allocated
    before the read found the bytes missing."""
    for name in archive.files:
        info = archive.zip.getinfo(f"{name}.npy")
        with archive.zip.open(info) as member:
            shape, dtype, claimed = npy_header(member)
            if claimed > info.file_size:
                raise ValueError(f"its array {json_quoted(name)} claims {shape} values of "
                                 f"{dtype}, more than the {info.file_size:,} bytes it holds")


def read_checkpoint(path: str | Path, key: str) -> Checkpoint:
    """The checkpoint in ``path`` if it was written for ``key`` in this format; otherwise
    :class:`CheckpointError` saying why (a missing file included)."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path.name}: no checkpoint yet")
    try:
        with np.load(path, allow_pickle=False) as archive:
            _check_sizes(archive)
            raw = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path.name}: unreadable ({exc})") from None
    if _META not in raw:
        raise CheckpointError(f"{path.name}: not a switchpoint checkpoint")
    try:
        meta = json.loads(raw[_META].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name}: its description is corrupt ({exc})") from None
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: written in another format")
    if meta.get("key") != key:
        raise CheckpointError(f"{path.name}: made with other weights or learning settings")
    seq, event_id, state = meta.get("seq"), meta.get("event_id"), meta.get("state")
    if not isinstance(seq, int) or not isinstance(event_id, str) or not isinstance(state, dict):
        raise CheckpointError(f"{path.name}: its description is incomplete")
    arrays = {k[2:]: v for k, v in raw.items() if k.startswith("a/")}
    readable_warning(path)  # (one restored by cp: what it learned is the traffic's)
    return Checkpoint(key, seq, event_id, State(state, arrays))


def checkpoint_position(path: str | Path, key: str | None = None) -> tuple[int, str] | None:
    """The log position a checkpoint in ``path`` holds, with the id of the event there (only
    its description is read), when it was written for ``key`` (None: whatever it was written
    for); None when there is no readable checkpoint of this format (and key). Its arrays'
    headers are checked as :func:`read_checkpoint` checks them (see :func:`_check_sizes`):
    without NumPy when each is a plain one, as a checkpoint's are (``switchpoint prune`` reads
    it so), else by NumPy's own reader."""
    try:
        plain = _plain_description(Path(path))
        if plain is _NUMPY:
            import numpy as np

            with np.load(Path(path), allow_pickle=False) as archive:
                if _META not in archive.files:
                    return None
                _check_sizes(archive)
                plain = archive[_META].tobytes()
        if plain is None:
            return None
        assert isinstance(plain, bytes)
        meta = json.loads(plain.decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError):
        return None
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT:
        return None
    if key is not None and meta.get("key") != key:
        return None
    seq, event_id = meta.get("seq"), meta.get("event_id")
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(event_id, str):
        return None
    return seq, event_id


#: What :func:`_plain_description` answers for an archive it leaves to NumPy's reader.
_NUMPY = object()
#: How a zip archive (a checkpoint) begins: with a member, or empty.
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")


def _plain_description(path: Path) -> bytes | object | None:
    """The description's bytes of the checkpoint archive at ``path``, read as NumPy's reader
    reads them (each member's header checked, see :func:`_check_sizes`) without NumPy; None
    when there is none (no description, a header claiming more than its member holds);
    :data:`_NUMPY` when something there is not plain (a member that is no ``.npy``, a header
    only NumPy sizes or parses), which NumPy's reader then judges as before."""
    from switchpoint._files import plain_npy_header

    with path.open("rb") as file:
        if not file.read(6).startswith(_ZIP_STARTS):
            return _NUMPY
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            raw = archive.namelist()
            if not all(name.endswith(".npy") for name in raw):
                return _NUMPY
            files = [name[:-4] for name in raw]
            if _META not in files:
                return None
            for name in files:
                info = archive.getinfo(f"{name}.npy")
                with archive.open(info) as member:
                    header = plain_npy_header(member)
                if header is None:
                    return _NUMPY
                if header[2] > info.file_size:
                    return None
            with archive.open(f"{_META}.npy") as member:
                header = plain_npy_header(member)
                if header is None or header[1] != "|u1" or len(header[0]) != 1:
                    return _NUMPY
                data = member.read(header[2])
            if len(data) != header[2]:
                return None  # (NumPy's reader: "EOF: reading array data")
            return data


__all__ = ["CHECKPOINT_FILENAME", "FORMAT", "ArrayOrBuild", "Checkpoint", "CheckpointError",
           "State", "checkpoint_position", "read_checkpoint", "write_checkpoint"]
