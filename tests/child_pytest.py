"""The command line of a pytest run a test starts in a subprocess (the suite's own options, a
part of the suite run without some capability): this interpreter's pytest without the
plugins no such run uses. The hypothesis and schemathesis plugins load with every session
(about a second of imports, several on a busy machine) though no test a child runs asks for
them; the cache plugin would write ``.pytest_cache`` into the clone."""

from __future__ import annotations

import sys

#: ``-p no:NAME`` for each plugin a child run leaves out.
LEFT_OUT = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:schemathesis")


def pytest_argv(*args: str) -> list[str]:
    """``python -m pytest`` with :data:`LEFT_OUT` and then ``args``."""
    return [sys.executable, "-m", "pytest", *LEFT_OUT, *args]
