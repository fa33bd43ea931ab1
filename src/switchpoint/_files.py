"""Why a file or directory cannot be written, in words a person can act on; and state files
made for the owner alone (they hold prompts' vectors, feedback comments and key hashes)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("switchpoint")


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be created, when a file stands where a directory of its path should
    be (the system says only "File exists" or "Not a directory"), when a part of it cannot be
    looked at, or when a part yet to be made has a name longer than the file system allows;
    else ``None``."""
    found = Path(path.anchor or ".")
    for folder in [*reversed(path.parents), path]:
        try:
            folder.stat()
        except FileNotFoundError:
            if len(os.fsencode(folder.name)) > _name_max(found):
                return (f"the name {folder.name[:20]}... ({len(folder.name)} characters) is "
                        f"longer than the file system allows ({_name_max(found)} bytes)")
            continue
        except OSError as exc:  # a name too long, a loop of links, no permission
            return f"its path goes through {folder}, which cannot be used ({exc.strerror})"
        if folder == path:
            break
        if not folder.is_dir():
            if folder == path.parent:
                return f"its parent {folder} is not a directory"
            return f"its path goes through {folder}, which is not a directory"
        found = folder
    return None


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) the file system of ``folder`` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def write_problem(path: Path, exc: OSError) -> str:
    """Why writing ``path`` failed with ``exc``: :func:`path_problem`, else the system's
    reason."""
    return path_problem(path) or exc.strerror or str(exc)


def private_dir(path: Path) -> Path:
    """``path`` as a directory, made (with its parents) readable by its owner alone (0700) when
    it does not exist yet; an existing one keeps its mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """``path``, created empty and readable by its owner alone (0600) when it does not exist
    yet, so a database opened on it afterwards (and SQLite's -wal and -shm files, which take
    its mode) is private; an existing file keeps its mode, with a warning when others may read
    it (one made before switchpoint made its files private, or by hand)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s can be read by other users (mode %o): it holds prompts' vectors, "
                        "feedback comments or key hashes; make it private with chmod 600",
                        path, mode)
    return path


def lock_holder(fd: int) -> str:
    """`` (pid N)`` of the process that holds the advisory lock on the file ``fd`` has open,
    when it has written its pid there (else ``""``)."""
    try:
        pid = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
