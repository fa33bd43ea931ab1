"""Compiled bytecode for the interpreters the tests start.

With ``PYTHONDONTWRITEBYTECODE`` set (the Dockerfile sets it, and so do many CI images and
shells) Python writes no bytecode, so every interpreter a test starts (``switchpoint serve``,
the command line, a child pytest) compiled each module of ``src`` it imports again: about 120
of them for ``serve``, a third of a second of each start. :func:`compile_sources` compiles
``src`` once as the session begins, into the ``__pycache__`` folders beside the sources (which
git ignores), as Python does itself without the variable; those interpreters read it and
still write nothing. A folder of its own (``PYTHONPYCACHEPREFIX``) would not do: Python then
looks for every module's bytecode there, its dependencies' too, and compiles them all instead.
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path


def compile_sources(src: Path) -> bool:
    """Compile the modules of ``src`` whose bytecode is missing or older than they are, when
    Python writes no bytecode of its own accord; whether it did."""
    if not sys.dont_write_bytecode or sys.pycache_prefix:
        return False
    return compileall.compile_dir(src, quiet=2)
