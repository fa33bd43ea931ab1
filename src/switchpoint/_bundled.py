"""The weights packages the wheel bundles: where they lie and which policies they are for.

Held apart from :mod:`switchpoint.weights`, which reads packages with NumPy: the command line's
parser names the bundled policies in its help, and every command (``--help`` too) builds it.
:mod:`switchpoint.weights` re-exports these names.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The folder of the switchpoint package that holds the bundled weights, one package a policy.
DEFAULT_PACKAGE = "_default_weights"
#: The policy whose bundled weights a router loads when none is named.
DEFAULT_POLICY = "cluster"


def default_weights_path(policy: str = DEFAULT_POLICY) -> Path:
    """The weights package for ``policy`` bundled inside the switchpoint wheel.

    The wheel carries one package per policy (``_default_weights/<policy>/``), all fitted on the
    same records by ``scripts/build_default_weights.py``, so any policy can be swapped in offline.
    """
    return Path(str(resources.files("switchpoint").joinpath(DEFAULT_PACKAGE))) / policy


def bundled_policies() -> list[str]:
    """Names of the policies whose default weights ship in the wheel."""
    root = default_weights_path().parent
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if (
        root.is_dir()) else []


def is_bundled(path: Path | None) -> bool:
    """Whether ``path`` is one of the weights packages the wheel bundles (not a copy of one, a
    package a user fitted, or one held in memory only: None)."""
    if path is None:
        return False
    try:
        return path.resolve().parent == default_weights_path().parent.resolve()
    except OSError:
        return False
