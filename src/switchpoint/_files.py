"""Why a file or directory cannot be written, in words a person can act on."""

from __future__ import annotations

from pathlib import Path


def write_problem(path: Path, exc: OSError) -> str:
    """Why writing ``path`` failed with ``exc``. A file where a directory of its path should
    be is named (the system says only "File exists" or "Not a directory"); otherwise the
    system's reason."""
    for folder in reversed(path.parents):
        if folder.exists() and not folder.is_dir():
            if folder == path.parent:
                return f"its parent {folder} is not a directory"
            return f"its path goes through {folder}, which is not a directory"
    return exc.strerror or str(exc)

