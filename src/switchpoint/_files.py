"""Why a file or directory cannot be written, in words a person can act on."""

from __future__ import annotations

from pathlib import Path


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be created, when a file stands where a directory of its path should
    be (the system says only "File exists" or "Not a directory"); else ``None``."""
    for folder in reversed(path.parents):
        if folder.exists() and not folder.is_dir():
            if folder == path.parent:
                return f"its parent {folder} is not a directory"
            return f"its path goes through {folder}, which is not a directory"
    return None


def write_problem(path: Path, exc: OSError) -> str:
    """Why writing ``path`` failed with ``exc``: :func:`path_problem`, else the system's
    reason."""
    return path_problem(path) or exc.strerror or str(exc)
