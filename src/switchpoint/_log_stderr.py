"""What a command prints of switchpoint's log when nothing else is set to: the package's
logger carries a :class:`logging.NullHandler` (so a program using switchpoint in process sees
its log only once it configures logging, as the standard library advises for a library), and
a command stands in for Python's last resort, which that handler displaces: its warnings and
errors, each message alone on a line, to stderr as it is when the record comes."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

#: The package's top logger, which every module's logger is a child of.
PACKAGE_LOGGER = "switchpoint"


class _LastResort(logging.Handler):
    """Python's last resort (:data:`logging.lastResort`) as a handler of its own: WARNING and
    above, the message alone, written to ``sys.stderr`` as it is at each record."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # (as every handler does: a failed write is not the caller's)
            self.handleError(record)


def _handled(logger: logging.Logger) -> bool:
    """Whether a record of ``logger`` meets a handler other than a :class:`logging.NullHandler`
    on its way up (what Python's last resort is used without)."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


@contextlib.contextmanager
def printed_to_stderr() -> Iterator[None]:
    """While it is entered, switchpoint's warnings and errors are printed to stderr as Python
    printed them with no handler set (see :class:`_LastResort`), unless a handler already
    takes them (a program's own logging); the handler goes when it is left."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if _handled(logger):
        yield
        return
    handler = _LastResort()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
