"""Why a file or directory cannot be written, in words a person can act on; state files made
for the owner alone (they hold prompts' vectors, feedback comments and key hashes), and
given their folder's owner when root makes them in another user's data_dir; and a
file or a directory put in place of another in one step, so a crash leaves the old one or the
new one (and the next write clears what it left beside it)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import glob
import logging
import math
import os
import pwd
import re
import secrets
import shlex
import shutil
import stat
import sys
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from switchpoint._messages import quoted, quoted_path

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("switchpoint")


def unnameable(path: Path) -> str | None:
    """Why no file system could be asked about ``path`` (Python refuses before the system is
    called, with a bare ``ValueError`` or ``UnicodeEncodeError``): it holds a NUL, or a
    character the file system's encoding cannot write (a lone surrogate such as
    ``"\\ud800"``); else ``None``."""
    text = str(path)
    if "\0" in text:
        return "it holds a NUL character, which no path may"
    try:
        os.fsencode(text)
    except UnicodeEncodeError as exc:
        return (f"it holds {quoted(text[exc.start])}, a character the file system's encoding "
                f"({sys.getfilesystemencoding()}) cannot write, which no path may")
    return None


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be created, when a file stands where a directory of its path should
    be (the system says only "File exists" or "Not a directory"), when a part of it cannot be
    looked at, when a part yet to be made has a name longer than the file system allows, or
    when it holds a NUL or a character the file system's encoding cannot write (a lone
    surrogate such as ``"\\ud800"``); else ``None``."""
    problem = unnameable(path)
    if problem is not None:
        return problem
    found = Path(path.anchor or ".")
    for folder in [*reversed(path.parents), path]:
        try:
            folder.stat()
        except FileNotFoundError:
            if len(os.fsencode(folder.name)) > _name_max(found):
                return (f"the name {quoted(folder.name, 24)} ({len(folder.name)} characters) is "
                        f"longer than the file system allows ({_name_max(found)} bytes)")
            continue
        except OSError as exc:  # a name too long, a loop of links, no permission
            return (f"its path goes through {quoted_path(folder)}, which cannot be "
                    f"used ({exc.strerror})")
        if folder == path:
            break
        if not folder.is_dir():
            if folder == path.parent:
                return f"its parent {quoted_path(folder)} is not a directory"
            return (f"its path goes through {quoted_path(folder)}, which is not a "
                    "directory")
        found = folder
    return None



class LinkError(ValueError):
    """An output named by a symbolic link that leads to no file (the reason, without the
    path's name: the caller names it with its flag)."""


def output_target(path: Path) -> Path:
    """Where an output named ``path`` is written: ``path`` itself, or, when it is a symbolic
    link, the file the link leads to (so the link stays, leading to what was written). A link
    that leads to no file raises :class:`LinkError`: following it would make a file (and its
    folders) where the link points, which may be anywhere; so does a link another user made, or
    one leading to another user's file (:func:`foreign_link`'s rule: one planted in a shared
    folder would hand that user what is written)."""
    try:
        if not path.is_symlink():
            return path
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a link to nothing (or a loop of links)
        try:
            where = f" to {quoted_path(os.readlink(path))}"
        except OSError:
            where = ""
        raise LinkError(f"is a symbolic link{where}, which leads to no file; an output is "
                        "written through a link only to a file that exists: create that file, "
                        "or give the path of a file") from None
    who = _others_link(path)
    if who is not None:
        raise LinkError(f"is a symbolic link another user could have planted: {who}; an output "
                        "is written through a link only "
                        "when the link and the file it leads to are this user's (another user's "
                        "could send the prompts written there to a file they read): remove the "
                        "link, or give another path")
    return target

def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def write_problem(path: Path, exc: OSError) -> str:
    """Why writing ``path`` failed with ``exc``: :func:`path_problem`, else, when the system
    refused permission, the directory or file this process may not write, whose it is and what
    to run (:func:`output_problem`), else the system's reason."""
    problem = path_problem(path)  # (first: the others need every folder on the way looked at)
    if problem is None and isinstance(exc, PermissionError):
        problem = output_problem(path)
    return problem or exc.strerror or str(exc)


def read_problem(path: Path, exc: OSError, *, directory: bool = False) -> str:
    """Why reading the file ``path`` failed with ``exc``, as an error goes on after "cannot
    read it: ": when the system refused permission, that it did, and whose the file (or a
    folder on the way) is, its mode and what to run (:func:`access_problem`), else to check
    its owner and mode; else the system's reason. The one wording of a file a command is
    given that it may not read (routing records, prompts, a config). With ``directory``,
    ``path`` is a folder whose files are read (a weights package): a folder is listed and its
    files reached only with its ``x`` bit beside its ``r`` (``u+rx``), which ``u+r`` alone
    does not give."""
    if not isinstance(exc, PermissionError):
        return exc.strerror or str(exc)
    fix = "u+rx" if directory else "u+r"
    found = ((unreachable(path.parent, writes=False) or _unlisted(path)) if directory
             else access_problem(path, (), writes=False))
    return "permission denied; " + (
        found or f"check its owner and mode (`chmod {fix} {shlex.quote(str(path))}`)")


def _unlisted(folder: Path) -> str | None:
    """Why this process may not list the directory ``folder`` nor reach its files (its ``r``
    or ``x`` bit is not this process's), whose it is and what to run; ``None`` when it may,
    or when ``folder`` cannot be looked at or is no directory."""
    try:
        st = folder.stat()
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and not _may(folder, os.R_OK | os.X_OK):
        return _denied(folder, st, "read the files in", "u+rx")
    return None


def output_problem(path: Path) -> str | None:
    """Why this process may not write the output file ``path`` (a path :func:`path_problem`
    finds nothing wrong with), before any work is done for it: it may not make files in the
    nearest of its folders that exists (where the file, or the first folder still to make,
    goes), or a file is there already that it may not write (replacing it by a rename would
    overrule its mode, which a shell's redirection does not); whose it is, its mode and what to
    run (:func:`access_problem`), else the system's reason when a file cannot be made there
    even so: a permission test passes for root wherever a file cannot be made (``/proc``, a
    folder of ``/sys``), so a file is made in that folder and removed at once, as the write
    would make one, named by the one rule of temporary files (:func:`temporary_name` of the
    file, or of the first folder still to make), so what a kill at that moment leaves is a dead
    writer's leftover: the write clears the file's (:func:`clear_leftovers`), and this check
    clears the first folder's before it makes its own. ``None`` when it may."""
    first = path
    for folder in path.parents:
        if os.path.isdir(folder):  # (False, never an error, for one it may not look at)
            break
        first = folder
    problem = access_problem(first, ())
    if problem is not None or not os.path.isdir(first.parent):
        return problem  # (a folder it may not look at: the write says why)
    if first != path:
        clear_leftovers(first)  # (a probe a check killed at this point left)
    probe = temporary_name(first)
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG and first != path:
            return None  # (the folder's name fits, its probe's does not: the write says why)
        if exc.errno == errno.ENAMETOOLONG:
            return (f"the name {quoted(path.name, 24)} ({len(path.name)} characters) is too "
                    "long to write: the file is written under a temporary name beside it "
                    f"({len(os.fsencode(probe.name))} bytes), longer than the file system "
                    f"allows ({_name_max(first.parent)} bytes); give a shorter name")
        return (f"no file can be made in {quoted_path(first.parent)}: "
                f"{exc.strerror or exc}; give a path in a folder where files can be made")
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def private_dir(path: Path) -> Path:
    """``path`` as a directory, made (with its parents) readable by its owner alone (0700) when
    it does not exist yet; an existing one keeps its mode, with a warning (once a process)
    when users other than its owner may write in it (:func:`open_dir_warning`)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    open_dir_warning(path)
    return path


#: The directories :func:`open_dir_warning` has warned about in this process.
_warned_open: set[tuple[int, int]] = set()


def open_dir_warning(path: Path) -> None:
    """Warn, once a process for each directory, when the state directory ``path`` may be
    written by users other than its owner (its group's or everyone's ``w`` bit): any of them
    may delete or replace its files (a ``keys.db`` removed refuses every client key), or put a
    file or a symbolic link where one is yet to be made; the warning names its mode and the
    ``chmod`` that mends it. Nothing when it cannot be looked at (opening its files says
    why)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if not st.st_mode & 0o022 or (st.st_dev, st.st_ino) in _warned_open:
        return
    _warned_open.add((st.st_dev, st.st_ino))
    who = "every user" if st.st_mode & 0o002 else "the users of its group"
    log.warning("%s can be written by %s (mode %03o), who may then delete or replace the "
                "databases and files switchpoint keeps there, or plant files in their place; "
                "make it writable by its owner alone: chmod 700 %s", path, who,
                stat.S_IMODE(st.st_mode), shlex.quote(str(path)))


def give_folder_owner(fd: int, path: Path) -> None:
    """Give the file ``path``, just made by this process and open on ``fd``, the owner and
    group of its folder, when this process runs as root and the folder belongs to another user:
    a command run as root in a service's data_dir (without ``sudo -u``) then leaves no file
    there the service may not read or replace (SQLite's own -wal, -shm and -journal files take
    their database's owner by themselves). Nothing otherwise: a user that is not root cannot
    give a file away, and root's own folder keeps root's files. A file that cannot be given
    (a file system that refuses root, say) stays root's, with a warning naming the ``chown``
    that mends it."""
    if os.geteuid() != 0:
        return
    try:
        folder = os.stat(path.parent)
    except OSError:
        return
    if folder.st_uid == 0:
        return
    try:
        os.fchown(fd, folder.st_uid, folder.st_gid)
    except OSError as exc:
        log.warning("%s is root's: it could not be given to the owner of %s (%s); run `chown "
                    "%d:%d %s`, or the service running as that user may not use it", path,
                    path.parent, exc.strerror or exc, folder.st_uid, folder.st_gid,
                    shlex.quote(str(path)))


def open_made(path: Path, flags: int, mode: int) -> int:
    """``os.open(path, flags | os.O_CREAT, mode)``: the file at ``path``, made if need be, and
    then given its folder's owner (:func:`give_folder_owner`); one already there is opened as
    it is."""
    if os.geteuid() == 0:
        for _ in range(3):  # (removed by another process between the two: made again)
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                try:
                    return os.open(path, flags & ~os.O_CREAT, mode)
                except FileNotFoundError:
                    continue  # (or a symbolic link that leads to no file: opened below)
            give_folder_owner(fd, path)
            return fd
    return os.open(path, flags | os.O_CREAT, mode)


class ForeignLinkError(OSError):
    """A state file of data_dir that is a symbolic link another user made, or that leads to
    another user's file (:func:`foreign_link`): its message says so and what to do."""

    def __str__(self) -> str:
        return self.strerror or ""


def _trusted_owners(folder: Path) -> set[int]:
    """Whose symbolic links (and the files they lead to) a state file in ``folder`` is opened
    through: this process's user's and root's, and, for root, the folder's owner's (root
    running a command in a service's data_dir)."""
    owners = {os.geteuid(), 0}
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            owners.add(os.stat(folder).st_uid)
    return owners


def _others_link(path: Path) -> str | None:
    """Who made the symbolic link at ``path``, or owns the file it leads to, when that is
    another user than this process's (or root, or for root the folder's owner): the words
    :func:`foreign_link` and :func:`untrusted_file` say it in; ``None`` when ``path`` is no
    link, a link to nothing, or one of this user's to a file of this user's."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISLNK(st.st_mode):
        return None
    try:
        where = quoted_path(os.readlink(path))
    except OSError:
        where = "another file"
    owners = _trusted_owners(path.parent)
    if st.st_uid not in owners:
        who = f"the symbolic link to {where} in its place was made by {_whose(st.st_uid)}"
    else:
        try:
            target = os.stat(path)
        except OSError:
            return None
        if target.st_uid in owners:
            return None
        who = f"it is a symbolic link to {where}, a file owned by {_whose(target.st_uid)}"
    return f"{who}, not by this process's user ({_whose(os.geteuid())})"


def foreign_link(path: Path) -> str | None:
    """Why the state file ``path`` is not opened through the symbolic link at its place: the
    link was made by another user than this process's (or root, or for root the data_dir's
    owner), or it leads to a file of another user; written through, it would send the prompts'
    vectors, comments or key hashes written there to a file that user chose (and may read).
    ``None`` when ``path`` is no link, or a link of this user's to a file of this user's (a
    database kept on another disk), or a link to nothing (opening it says so)."""
    who = _others_link(path)
    if who is None:
        return None
    return (f"{who}: a state file is never opened through another user's link or in another "
            "user's file, where that user could read the prompts' vectors, comments or key "
            "hashes written to it, or choose what is read; remove the link "
            f"(`rm {shlex.quote(str(path))}`) and keep data_dir writable by its owner alone "
            "(`chmod 700`)")


def untrusted_file(path: Path) -> str | None:
    """Why the file at ``path``, which this process would load as it finds it (a model a
    cache holds, built by an earlier run), is not to be trusted: another user's link leads
    there or it leads to another user's file (:func:`foreign_link`'s rule), the file is owned
    by another user than this process's (or root, or for root the folder's owner), or users
    other than its owner may write it; any of them could have put another model there.
    ``None`` when none of those holds, or there is no file."""
    who = _others_link(path)
    if who is not None:
        return who
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid not in _trusted_owners(path.parent):
        return (f"it is owned by {_whose(st.st_uid)}, not by this process's user "
                f"({_whose(os.geteuid())})")
    if st.st_mode & 0o022:
        return (f"users other than its owner may write it (mode "
                f"{stat.S_IMODE(st.st_mode):03o})")
    return None


def private_file(path: Path) -> Path:
    """``path``, created empty and readable by its owner alone (0600) when it does not exist
    yet, so a database opened on it afterwards (and SQLite's -wal and -shm files, which take
    its mode) is private; a new file is given its folder's owner (see
    :func:`give_folder_owner`); an existing file keeps its mode, with a warning when others may
    read it (one made before switchpoint made its files private, or by hand). A symbolic link
    in its place that another user made, or that leads to another user's file, raises
    :class:`ForeignLinkError` (:func:`foreign_link`), nothing written."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            give_folder_owner(fd, path)
        finally:
            os.close(fd)
    except FileExistsError:
        problem = foreign_link(path)
        if problem is not None:
            raise ForeignLinkError(errno.EPERM, problem, str(path)) from None
        path.stat()  # (a link to nothing: FileNotFoundError, as before)
        readable_warning(path)
    return path


def readable_warning(path: Path) -> None:
    """Warn when users other than its owner may read the state file ``path`` (one made before
    switchpoint made its files private, by hand, or restored from a backup by ``cp``): it holds
    prompts' vectors, feedback comments or key hashes. Nothing when it cannot be looked at."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s can be read by other users (mode %o): it holds prompts' vectors, "
                    "feedback comments or key hashes; make it private with chmod 600",
                    path, mode)


#: What SQLite keeps beside a database in WAL mode: the suffixes of those files' names.
SQLITE_SIDE_FILES = ("-wal", "-shm")

FileId = tuple[int, int]


def file_identity(path: str | Path) -> FileId | None:
    """The device and inode of the file at ``path``, or None when there is none: another
    value than when a file was opened means it was deleted or replaced since."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def open_identity(fd: int) -> FileId:
    """The device and inode of the file open as ``fd`` (:func:`file_identity` of the file
    at its path is this value while it is still the one opened)."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def held_identity(path: str | Path) -> Iterator[FileId | None]:
    """:func:`file_identity` of the directory at ``path``, held open for the ``with`` block:
    while it is, the system gives no other file its inode number, so :func:`file_identity`
    of ``path`` still being this value at the block's end means this directory stayed there
    (one removed and a new one made in its place may otherwise be given the number, as ext4
    does at once). Where a directory cannot be opened (no read permission; Windows, whose
    file ids change when one is reused), the identity is looked up unheld."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield file_identity(path)
        return
    try:
        yield open_identity(fd)
    finally:
        os.close(fd)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one existing file, through links or other spellings
    (False when either is missing or cannot be looked at)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def within(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, each taken as the place it leads to
    (made absolute, its symbolic links followed; either may not exist yet, the part of it
    that does is followed)."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def _beside(path: str | Path) -> str:
    """Where SQLite keeps the side files of the database ``path``: beside the file a symbolic
    link names, not beside the link (a linked folder on the way leads to the same files)."""
    name = os.fspath(path)
    return os.path.realpath(name) if os.path.islink(name) else name


def side_file(path: str | Path, suffix: str) -> Path:
    """The side file ``suffix`` (one of :data:`SQLITE_SIDE_FILES`) of the SQLite database
    ``path`` (see :func:`_beside`)."""
    return Path(_beside(path) + suffix)


def database_identity(path: str | Path) -> tuple[FileId | None, ...]:
    """:func:`file_identity` of the SQLite database ``path`` and of each of its side files
    (:data:`SQLITE_SIDE_FILES`, see :func:`side_file`), in that order: while a connection in
    WAL mode is open on it, another value than when it was opened means one of them was
    deleted or replaced since. Four stats (a few microseconds)."""
    beside = _beside(path)
    return (file_identity(path), *(file_identity(beside + suffix)
                                   for suffix in SQLITE_SIDE_FILES))


def database_stamp(path: str | Path) -> tuple[tuple[int, int, int] | None, ...]:
    """The inode, size and time of change of the SQLite database ``path`` and of its ``-wal``
    (None for one not there): another value means one of them was written to, replaced or
    deleted since. Two stats."""
    stamps: list[tuple[int, int, int] | None] = []
    for name in (os.fspath(path), _beside(path) + "-wal"):
        try:
            st = os.stat(name)
        except FileNotFoundError:
            stamps.append(None)
            continue
        stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def check_database_writable(path: str | Path) -> None:
    """Open the SQLite database ``path`` and each side file beside it for writing, and close
    them: an :class:`OSError` naming the file this process may not write. SQLite opens such a
    file read-only and refuses only the first write, which a store already set up may not make
    until long after it opened; a missing file is left to SQLite to make."""
    beside = _beside(path)
    for name in (str(path), *(beside + suffix for suffix in SQLITE_SIDE_FILES)):
        try:
            os.close(os.open(name, os.O_RDWR))
        except FileNotFoundError:
            continue


def _may(path: Path, mode: int) -> bool:
    """Whether this process may use ``path`` so (``os.R_OK | os.W_OK``, ...), as its
    effective user and capabilities allow (root passes unless its capabilities were taken)."""
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def may_write(path: str | Path) -> bool:
    """Whether this process may write the file ``path`` (see :func:`_may`): not one of mode
    444, say, nor one on a file system mounted read-only, for a process without root's
    capabilities."""
    return _may(Path(path), os.W_OK)


def _whose(uid: int) -> str:
    """``uid 1000 (alice)``, or ``uid 1000`` when no user has that number here."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, OverflowError):
        return f"uid {uid}"


def _denied(path: Path, st: os.stat_result, verb: str, fix: str, why: str = "") -> str:
    """What to say of ``path``, which this process may not ``verb`` (``why``: what follows):
    whose it is, its mode, and the command that lets this process use it (``fix``: the mode it
    needs), or the user to run as instead."""
    me = os.geteuid()
    said = (f"this process's user, {_whose(me)}, may not {verb} {quoted_path(path)}{why} "
            f"(mode {stat.S_IMODE(st.st_mode):03o}, ")
    if st.st_uid == me:
        return said + f"its owner): `chmod {fix} {shlex.quote(str(path))}`"
    chown = "chown -R" if stat.S_ISDIR(st.st_mode) else "chown"
    return (said + f"owned by {_whose(st.st_uid)}): run switchpoint as that user, or give it "
            f"to this one (as root: `{chown} {me} {shlex.quote(str(path))}`, then `chmod "
            f"{fix}` it)")


def _read_only_mount(folder: Path) -> bool:
    """Whether ``folder`` is on a file system mounted read-only (no mode lets a file there be
    written, root's neither)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # (a system without statvfs)
        return False


def unreachable(folder: Path, *, writes: bool = True) -> str | None:
    """Why this process may not reach the files in the directory ``folder`` (it may not
    search it: another user's, say), whose it is and what to run (``u+rwx``; without
    ``writes``, for a process that only reads there, ``u+rx``); ``None`` when it may, or when
    ``folder`` cannot be looked at itself or is no directory."""
    try:
        st = folder.stat()
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and not _may(folder, os.X_OK):
        return _denied(folder, st, "search", "u+rwx" if writes else "u+rx",
                       ", so nothing in it can be reached")
    return None


def access_problem(path: Path, side_files: Collection[str] = SQLITE_SIDE_FILES, *,
                   writes: bool = True) -> str | None:
    """Why this process may not read and write the state file ``path`` (and the files beside
    it named by ``side_files``' suffixes, SQLite's -wal and -shm unless told), nor make files in
    its directory, which SQLite and the lock need: the first of them it may not use, whose it
    is, its mode and what to run; ``None`` when the permissions are not what stops it (a full
    disk, a lock, a damaged file), or when it cannot be looked at; a folder on a file system
    mounted read-only is said to be so (no ``chmod`` mends that). With ``writes=False`` (a
    process that only reads the file), why it may not read them alone."""
    folder = path.parent
    problem = unreachable(folder, writes=writes)
    if problem is not None:
        return problem
    try:
        st = folder.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None  # (not a matter of permissions)
    if writes and _read_only_mount(folder):
        return (f"{quoted_path(folder)} is on a file system mounted read-only, so nothing can "
                "be written there: mount it read-write, or choose a folder on one that is not")
    if writes and not _may(folder, os.W_OK):
        return _denied(folder, st, "write in", "u+rwx", ", so no file can be made there")
    for name in [path, *(Path(_beside(path) + suffix) for suffix in side_files)]:
        try:
            st = name.stat()
        except OSError:
            continue
        if not _may(name, os.R_OK):
            return _denied(name, st, "read", "u+rw" if writes else "u+r")
        if not writes:
            continue
        if not _may(name, os.W_OK):
            return _denied(name, st, "write", "u+rw")
    return None


@functools.cache
def _statx() -> Callable[..., int] | None:
    """The C library's ``statx`` (Linux), or ``None``; looked up on first use."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).statx
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                     ctypes.c_char_p]
    call.restype = ctypes.c_int
    return call


def file_stamp(path: str | Path) -> tuple[int, ...] | None:
    """:func:`file_identity` of ``path`` and, where the system says it (``statx``), the time
    the file was made (an inode number freed by a deletion may be given to the next file
    made): None when there is no file."""
    identity = file_identity(path)
    if identity is None:
        return None
    call = _statx()
    if call is None:
        return identity
    buf = ctypes.create_string_buffer(256)  # struct statx
    if call(_AT_FDCWD, os.fsencode(path), 0, _STATX_BTIME, buf) != 0:
        return identity
    if not int.from_bytes(buf.raw[0:4], sys.byteorder) & _STATX_BTIME:
        return identity
    return (*identity, int.from_bytes(buf.raw[80:88], sys.byteorder, signed=True),
            int.from_bytes(buf.raw[88:92], sys.byteorder))


_STATX_BTIME = 0x800


def read_small(path: str | Path, limit: int) -> bytes | None:
    """The bytes of the regular file ``path`` when it holds at most ``limit`` of them, else
    None (none there, too big, a link, or not a regular file, such as a FIFO, which is not
    waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                return data
            data += chunk
        return None
    except OSError:
        return None
    finally:
        os.close(fd)


def lock_holder(fd: int) -> str:
    """`` (pid N)`` of the process that holds the advisory lock on the file ``fd`` has open,
    when it has written its pid there (else ``""``)."""
    try:
        pid = os.pread(fd, 32, 0).decode("ascii").strip().partition(" ")[0]
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


#: The learning checkpoint's file in data_dir, beside the store's database (see
#: :mod:`switchpoint.learning.checkpoint`): named here, where the commands that only look for
#: it (``switchpoint prune``) find it without the checkpoint's reader and NumPy.
CHECKPOINT_FILENAME = "learning.checkpoint"
#: The file in data_dir whose advisory lock (``flock``) the process serving from it holds for
#: as long as it serves (see :mod:`switchpoint.gateway.owner`). With no service running, a
#: store holds it for a moment too, while it writes what the spill file beside the database
#: keeps, and so does ``switchpoint prune`` while it prunes the feedback log (see
#: :func:`brief_lock`).
SERVE_LOCK = "serve.lock"
#: What a brief holder writes after its pid in :data:`SERVE_LOCK` (then how far it has got,
#: see :func:`brief_lock`): a service starting then waits for it (see :data:`BRIEF_HOLD_S`)
#: rather than being refused.
BRIEF_MARK = "briefly"
#: Most seconds a service starting (or another brief holder) waits for a brief holder of
#: :data:`SERVE_LOCK` that shows no progress: one that does (a large spill file being taken
#: up) is waited for as long as it moves.
BRIEF_HOLD_S = 30.0
#: Most seconds a service starting (or another brief holder) waits for a brief holder of
#: :data:`SERVE_LOCK` in all, even one that shows progress: a take-up that never ends (a loop)
#: must not keep a start waiting for ever.
BRIEF_WAIT_MAX_S = 900.0
#: Seconds a holder of :data:`SERVE_LOCK` that wrote no mark yet is given to write one: a
#: brief holder that has just taken the lock still shows what the last holder wrote (the pid
#: of a service gone), and is not taken for a service serving.
MARK_WAIT_S = 0.25
#: Least seconds between two progress marks a brief holder writes.
BRIEF_TICK_S = 1.0
#: What a brief holder may hold :data:`SERVE_LOCK` for (the last word of its mark), as a
#: message about it says it.
BRIEF_PURPOSES = {"spill": "to write the records the spill file beside the database keeps",
                  "prune": "to prune the feedback log"}

#: What a brief holder calls as its work moves on (see :func:`brief_lock`).
Progress = Callable[[], None]


class NotALockFileError(OSError):
    """The lock file's path holds something else than a regular file."""


def open_lock(path: Path) -> int:
    """A descriptor of the lock file ``path``, made (0600) if need be (``OSError`` if it
    cannot be; :class:`NotALockFileError` when a directory, a FIFO, a symbolic link or another
    file that is not a regular one is there: it is not waited on, nor followed)."""
    try:
        fd = open_made(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.ELOOP, errno.ENXIO):
            raise
        fd = -1
    if fd >= 0:
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            os.close(fd)
            raise
        if regular:
            return fd
        os.close(fd)
    raise NotALockFileError(errno.EINVAL, "not a regular file (a directory, a FIFO or a symbolic "
                       "link is there); remove it: it is made anew, as a lock file")


def try_lock(fd: int) -> bool:
    """Take the exclusive advisory lock on ``fd``'s file without waiting: False while another
    opening holds it (``OSError`` when the file system takes no locks)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _brief_mark(fd: int) -> str | None:
    """What the holder of the lock on ``fd``'s file wrote there when it holds it for a moment
    only (its pid, :data:`BRIEF_MARK` and how far it has got: see :func:`brief_lock`), else
    None."""
    try:
        mark = os.pread(fd, 64, 0).decode("ascii", "replace")
    except OSError:
        return None
    return mark if mark.split()[1:2] == [BRIEF_MARK] else None


def brief_purpose(fd: int) -> str:
    """What the brief holder of the lock on ``fd``'s file holds it for, in words (see
    :data:`BRIEF_PURPOSES`; one whose mark names none, for a moment)."""
    mark = _brief_mark(fd)
    words = [] if mark is None else mark.split()
    return BRIEF_PURPOSES.get(words[3] if len(words) > 3 else "", "for a moment")


def held_briefly(fd: int) -> bool:
    """Whether the holder of the lock on ``fd``'s file holds it for a moment only (it wrote
    :data:`BRIEF_MARK`, see :func:`brief_lock`)."""
    return _brief_mark(fd) is not None


def take_lock(fd: int) -> bool:
    """Take the exclusive advisory lock on ``fd``'s :data:`SERVE_LOCK` file: at once, or once
    a brief holder (see :func:`held_briefly`) lets go, waiting for it as long as it shows
    progress (a new mark at least every :data:`BRIEF_HOLD_S`), up to :data:`BRIEF_WAIT_MAX_S`
    in all. False while a process serves from its data_dir, or a brief holder showed none for
    that long or was not done in all that time (``OSError`` when the file system takes no
    locks)."""
    taken = try_lock(fd)
    seen = None
    deadline = time.monotonic() + BRIEF_HOLD_S
    end = time.monotonic() + BRIEF_WAIT_MAX_S
    unmarked = time.monotonic() + MARK_WAIT_S
    while not taken and time.monotonic() < min(deadline, end):
        mark = _brief_mark(fd)
        if mark is None and time.monotonic() >= unmarked:
            break  # (held for as long as a process serves)
        if mark != seen:  # moving on (a spill file of many records being written): waited for
            seen, deadline = mark, time.monotonic() + BRIEF_HOLD_S
        time.sleep(0.05)
        taken = try_lock(fd)
    return taken


def serving(data_dir: Path) -> bool:
    """Whether a process serves from ``data_dir`` now: it holds :data:`SERVE_LOCK`, and not
    for a moment only (see :func:`held_briefly`). Makes no lock file (without one, none
    serves); where there is one, its lock is taken for an instant to find out, no mark
    written (a service starting meanwhile waits for it, see :data:`MARK_WAIT_S`). ``OSError``
    when the file cannot be opened or locked."""
    try:
        fd = os.open(data_dir / SERVE_LOCK, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    try:
        return not try_lock(fd) and not held_briefly(fd)  # (closing lets go of it)
    finally:
        os.close(fd)


def served(data_dir: Path) -> bool:
    """:func:`serving`, for a reader that only reads beside a service: False when it cannot
    be told (the lock file cannot be opened or locked), as when none serves."""
    try:
        return serving(data_dir)
    except OSError:
        return False


@contextlib.contextmanager
def brief_lock(data_dir: Path, purpose: str) -> Iterator[Progress | None]:
    """Hold ``data_dir``'s :data:`SERVE_LOCK` for the ``with`` block, for ``purpose`` (a key
    of :data:`BRIEF_PURPOSES`, which the mark names), taken once free (see
    :func:`take_lock`: another brief holder, such as a command beside this one writing the spill
    file or pruning the feedback log, is waited for): yields, when it is held, what to call as the
    work moves on (it marks the file, at most every :data:`BRIEF_TICK_S`, so that who waits goes on
    waiting), and None when it is not (a process serves from ``data_dir``). A service starting
    meanwhile waits for it (see :data:`BRIEF_MARK`). ``OSError`` when the lock file cannot be made
    or locked, or another brief holder did not let go in time (saying so)."""
    fd = open_lock(data_dir / SERVE_LOCK)
    try:
        if not take_lock(fd):
            if held_briefly(fd):  # (another command, not a service: not done in time)
                raise OSError(errno.EBUSY, f"another switchpoint command{lock_holder(fd)} "
                              f"holds it {brief_purpose(fd)}, and showed no progress "
                              f"for {BRIEF_HOLD_S:g} s or was not done in "
                              f"{BRIEF_WAIT_MAX_S:g} s")
            yield None
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {BRIEF_MARK} 0 {purpose}\n".encode())
        steps = [0, time.monotonic()]

        def progress() -> None:
            steps[0] += 1
            if time.monotonic() - steps[1] >= BRIEF_TICK_S:
                steps[1] = time.monotonic()
                # (The count only grows: each mark is at least as long as the last. One not
                # written leaves who waits waiting BRIEF_HOLD_S at most.)
                with contextlib.suppress(OSError):
                    os.pwrite(fd, f"{os.getpid()} {BRIEF_MARK} {steps[0]} {purpose}\n".encode(),
                              0)

        yield progress
    finally:
        os.close(fd)


#: Most seconds :func:`locked_file` waits for another holder of a file's lock.
FILE_LOCK_WAIT_S = 30.0


@contextlib.contextmanager
def locked_file(path: Path, *, append: bool = False,
                wait_s: float = FILE_LOCK_WAIT_S) -> Iterator[int | None]:
    """The file ``path`` held under its exclusive advisory lock (``flock``) for the ``with``
    block, for one that reads it whole and then removes it, or one that adds to it (``append``:
    opened for appending, made 0600 if need be), so that nothing is added between the reading
    and the removal. Yields a descriptor of the file at the path once locked (one removed or
    replaced while this waited is let go of, and the path opened again), or None when there
    is none (not ``append``). Waits up to ``wait_s`` for another holder, then ``OSError``
    (also when the file cannot be opened or locked, or is no regular file: a FIFO, which is
    not waited on, or a device)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = (open_made(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK, 0o600) if append
                  else os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        except FileNotFoundError:
            if append:
                raise
            yield None
            return
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # (a FIFO no process reads)
                raise
            raise _not_regular(path) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _not_regular(path)
            while not try_lock(fd):
                if time.monotonic() >= deadline:
                    raise OSError(errno.EWOULDBLOCK, "another process has held its lock for "
                                  f"more than {wait_s:g} s", str(path))
                time.sleep(0.01)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if file_identity(path) == (st.st_dev, st.st_ino):
            break
        os.close(fd)  # removed (taken up) while this waited: the path again
    try:
        yield fd
    finally:
        os.close(fd)


def _not_regular(path: Path) -> OSError:
    """The error of a state file ``path`` that is no regular file (a FIFO, a device)."""
    return OSError(errno.EINVAL, "not a regular file (a FIFO or a device); move it aside",
                   str(path))


#: The highest process id any system hands out (Linux's limit, 2**22; others stop lower).
PID_MAX = 4_194_304


def _as_pid(digits: str) -> int | None:
    """``digits`` as a process id, the way a writer puts its own in a name (``os.getpid()``: no
    leading zero, at most :data:`PID_MAX`); else ``None``: those digits name no process."""
    if not digits.isdigit() or digits.startswith("0") or int(digits) > PID_MAX:
        return None
    return int(digits)


def writer_gone(pid: str) -> bool:
    """Whether the process ``pid`` (the digits a temporary file's name carries) has ended: what
    it left is a crash's leftover. Digits no writer puts in a name (a leading zero, a number
    beyond :data:`PID_MAX`), or a process that runs (this one too, or one of another user):
    ``False``."""
    number = _as_pid(pid)
    if number is None:
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


#: How long a temporary file or folder named the older way, without its writer's pid, must
#: have been left untouched before it is taken as a dead writer's: a save writes its files in
#: seconds and renames them as soon as they are written, so one this quiet was left by a crash.
LEGACY_QUIET_S = 3600.0

#: The letters of the random part the standard library's ``tempfile`` gives a name (eight of
#: them), as earlier versions' saves named their temporary files and folders with it.
_TEMPFILE_LETTERS = "a-z0-9_"


def _owner_only(path: Path) -> bool:
    """Whether ``path`` is a file or folder (not a link) that others may neither read nor
    write: what ``tempfile`` makes, whatever the umask."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    return (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and not mode & 0o077


def _quiet_for(path: Path, seconds: float) -> bool:
    """Whether nothing in the folder (or file) ``path`` was modified for ``seconds``, judged by
    its own and its entries' modification times."""
    try:
        newest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            with os.scandir(path) as entries:
                for entry in entries:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    except OSError:
        return False
    return time.time() - newest >= seconds


def clear_leftovers(target: Path) -> None:
    """Remove what writers of ``target`` that have since died left beside it: the files and
    folders of :func:`temporary_name` and :func:`replace_dir`'s old directory, and those named
    as earlier versions named them (``.{name}.old-{pid}``; and, which say no pid, so are taken
    once untouched for :data:`LEGACY_QUIET_S`: ``.{name}.{12 hex digits}.tmp``, and
    ``tempfile``'s ``.{name}.{8 random letters}``, also ending ``.png``, when readable by
    their owner alone, as ``tempfile`` makes them). An old directory set aside by one killed
    between its two renames goes back in place when ``target`` is missing."""
    for path, dead, old in _leftovers(target):
        if not dead:
            continue
        if old and not target.exists():
            os.rename(path, target)
        else:
            _remove(path)


def set_aside(target: Path) -> Path | None:
    """The old directory a writer killed between :func:`replace_dir`'s two renames (or the two
    renames of an earlier version's save) left beside ``target`` (which is then missing), or
    ``None``."""
    return next((path for path, dead, old in _leftovers(target) if old and dead), None)


def _left_by_tempfile(path: Path) -> bool:
    """Whether ``path``, named as ``tempfile`` names what it makes (so its writer said no pid),
    is a dead writer's: readable by its owner alone, as ``tempfile`` makes it, and untouched for
    :data:`LEGACY_QUIET_S`."""
    return _owner_only(path) and _quiet_for(path, LEGACY_QUIET_S)


#: The name ``tempfile.mkdtemp(dir=...)`` gives a folder when told no prefix or suffix.
_MKDTEMP_NAME = re.compile(rf"tmp[{_TEMPFILE_LETTERS}]{{8}}")


def clear_tempfile_folders(parent: Path, holding: Collection[str]) -> None:
    """Remove from ``parent`` the work folders that earlier versions' writers, killed mid-way,
    made there with ``tempfile.mkdtemp(dir=parent)``: named ``tmp`` and eight random letters,
    taken by the rule of :func:`clear_leftovers` for names that say no pid (readable by their
    owner alone and untouched for :data:`LEGACY_QUIET_S`). ``parent`` may be shared (set to the
    system's temp dir, say), so a folder is taken only when it holds nothing but files named in
    ``holding``, what those writers put there: another program's is kept."""
    try:
        with os.scandir(parent) as entries:
            found = [Path(entry.path) for entry in entries if _MKDTEMP_NAME.fullmatch(entry.name)]
    except OSError:
        return
    for path in found:
        if _left_by_tempfile(path) and _holds_only(path, holding):
            _remove(path)


def _holds_only(folder: Path, names: Collection[str]) -> bool:
    """Whether ``folder`` is a folder whose entries are all files (not links) named in
    ``names`` (an empty one too)."""
    try:
        with os.scandir(folder) as entries:
            return all(entry.name in names and entry.is_file(follow_symlinks=False)
                       for entry in entries)
    except OSError:  # not a folder, or gone
        return False


def _leftovers(target: Path) -> list[tuple[Path, bool, bool]]:
    """The temporary files and folders beside ``target``: (path, whether its writer is gone,
    whether it is an old directory set aside)."""
    escaped = re.escape(target.name)
    name = re.compile(rf"\.{escaped}\.(\d+)(?:(?:\.[0-9a-z]+)?\.tmp|(\.old))")
    older_old = re.compile(rf"\.{escaped}\.old-(\d+)")
    older_tmp = re.compile(rf"\.{escaped}\.[0-9a-f]{{12}}\.tmp")
    older_tempfile = re.compile(rf"\.{escaped}\.[{_TEMPFILE_LETTERS}]{{8}}(?:\.png)?")
    try:
        found = sorted(target.parent.glob(f".{glob.escape(target.name)}.*"))
    except OSError:
        return []
    leftovers: list[tuple[Path, bool, bool]] = []
    for path in found:
        # Checked first: twelve hex digits may all be digits, and no pid is that long.
        if older_tmp.fullmatch(path.name):
            leftovers.append((path, _quiet_for(path, LEGACY_QUIET_S), False))
        elif older_tempfile.fullmatch(path.name):
            leftovers.append((path, _left_by_tempfile(path), False))
        elif match := older_old.fullmatch(path.name):
            leftovers.append((path, writer_gone(match[1]), True))
        elif (match := name.fullmatch(path.name)) and _as_pid(match[1]) is not None:
            leftovers.append((path, writer_gone(match[1]), match[2] is not None))
    return leftovers


def _remove(path: Path) -> None:
    """Remove the file, link or folder ``path``, as far as it can be."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def temporary_name(target: Path) -> Path:
    """A name beside ``target`` for a file or folder that will replace it, which says the
    process that makes it (for :func:`clear_leftovers`): ``.{name}.{pid}.{random}.tmp``."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def sync_folder(folder: Path, *, quiet: bool = False) -> None:
    """Put a file's creation, rename or removal in ``folder`` on disk; ``OSError`` when it
    cannot be (nothing where the system syncs no folder), or with ``quiet`` nothing: a
    best effort, for a file whose loss a crash would not make harmful."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        if quiet:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if not quiet and exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Callable[[BinaryIO], object], mode: int = 0o644, *,
                     state: bool = False, keep_mode: bool = False) -> None:
    """Write the file ``path`` whole or not at all: ``write`` fills a temporary file beside it
    (:func:`temporary_name`, made with ``mode``), which is fsynced and renamed over
    ``path``; what writers of ``path`` killed mid-way left beside it goes first. A ``state``
    file (one of data_dir's) is given its folder's owner (see :func:`give_folder_owner`).
    ``keep_mode`` (a user's output): a file already at ``path`` keeps its mode, as a shell's
    ``>`` keeps it; ``mode`` is a new file's."""
    clear_leftovers(path)
    kept = None
    if keep_mode:
        with contextlib.suppress(OSError):  # (none there: a new file, made with ``mode``)
            kept = stat.S_IMODE(os.stat(path).st_mode)
    # Its own name: another process, or another thread of this one, may be writing beside it.
    tmp = temporary_name(path)
    try:
        with os.fdopen(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode), "wb") as fh:
            if state:
                give_folder_owner(fh.fileno(), tmp)
            if kept is not None:
                os.fchmod(fh.fileno(), kept)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(new: Path, target: Path) -> None:
    """Put the directory ``new`` (beside ``target``) at ``target`` in one step: whatever moment
    a crash comes, ``target`` is the old directory or the new one, never missing. An old one is
    swapped out (one atomic exchange where the system offers it; else two renames, with the old
    one back in place when the second fails) and then removed."""
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        _remove(new)  # it holds the old directory now
        return
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise
    _remove(old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2`` (Linux), or ``None``; looked up on first use."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step; ``False`` when the system or the file
    system cannot (then nothing moved)."""
    call = _renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def file_kind(mode: int) -> str:
    """What a file of status ``mode`` (``st_mode``) is, as a message says it: ``a regular
    file``, ``a directory``, ``a FIFO (named pipe)``, ``a socket``, ``a device``."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


#: The ``descr`` of an ``.npy`` header :func:`plain_npy_header` reads without NumPy (a plain
#: number, boolean or text type of a size NumPy writes), with the sizes each kind may have.
_PLAIN_DESCR = re.compile(r"[<>|=]?([biufcUS])([0-9]{1,6})")
_PLAIN_SIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8, 16),
                "c": (8, 16, 32)}
#: The most characters of an ``.npy`` header NumPy reads (its ``max_header_size``).
_NPY_MAX_HEADER = 10_000


def plain_npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], str, int] | None:
    """What :func:`npy_header` reads of a well-formed ``.npy`` header of a plain type (shape,
    ``descr`` and bytes of data), read without NumPy; None for any other header (damaged, or
    of a type only NumPy sizes), which :func:`npy_header` judges: only what NumPy reads alike
    is read here."""
    import ast
    import struct

    magic = stream.read(8)
    if len(magic) != 8 or magic[:6] != b"\x93NUMPY":
        return None
    size = "<H" if magic[6:] == b"\x01\x00" else "<I"
    length = stream.read(struct.calcsize(size))
    if len(length) != struct.calcsize(size):
        return None
    (count,) = struct.unpack(size, length)
    if count > _NPY_MAX_HEADER:
        return None
    text = stream.read(count)
    if len(text) != count:
        return None
    try:
        header = ast.literal_eval(text.decode("latin1"))
    except Exception:  # (anything NumPy's own reader is left to judge)
        return None
    if not isinstance(header, dict) or header.keys() != {"descr", "fortran_order", "shape"}:
        return None
    shape, descr = header["shape"], header["descr"]
    if (not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape)
            or not isinstance(header["fortran_order"], bool) or not isinstance(descr, str)):
        return None
    plain = _PLAIN_DESCR.fullmatch(descr)
    if plain is None:
        return None
    kind, width = plain.group(1), int(plain.group(2))
    if kind in _PLAIN_SIZES and width not in _PLAIN_SIZES[kind]:
        return None
    itemsize = width * 4 if kind == "U" else width
    if kind in "US" and width == 0:
        return None
    return shape, descr, math.prod(shape) * itemsize


def npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """The shape and type an ``.npy`` array's header declares, with the bytes of data they
    make, read from ``stream`` up to the data and no further: what a header claims can be
    checked against what the file holds before anything is allocated for it. ``ValueError``
    when there is no valid header."""
    import numpy as np  # (here alone: the commands that read no array never import it)

    version = np.lib.format.read_magic(stream)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(stream)
    return shape, dtype, math.prod(shape) * dtype.itemsize
