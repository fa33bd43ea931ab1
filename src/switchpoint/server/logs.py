"""The service's log, kept readable and bounded under attack, and free of secrets.

A client (or the operating system) can make the same message happen thousands of times a
second: asyncio's ``socket.accept() out of system resource`` (with a traceback) when the
process runs out of file descriptors, uvicorn's ``Invalid HTTP request received.`` for every
malformed request. :class:`~switchpoint._log_limit.RateLimitFilter` lets the first few records
of each message through per interval, drops the rest, and says how many it dropped on the next
record it lets through.

The access log (``--access-log``) writes each request's path and query as the client sent
them, and a client may put a key there (a whole key where its id goes, ``?api_key=...``,
``?token=...``, ``?key=...``, percent-encoded or not): :class:`RedactFilter` redacts every
secret, key-shaped string and value of a query parameter named for a credential from those
records before they are written (see :func:`~switchpoint._redact.redact_url`).
switchpoint's own records are redacted where they are written as well: every call site redacts
what it logs, and :class:`RedactingFormatter` on switchpoint's handler applies the same rule
(:func:`~switchpoint._redact.redact`) to each formatted record, its traceback included,
so a secret a call site let through (an exception's message, a local in a traceback line) is
masked too.
:class:`ForwardedClientFilter` writes a client a listed proxy named (see
:mod:`~switchpoint.server.proxies`) as its address alone, not with a port it never had.
:func:`install` puts them where their messages are logged.
"""

from __future__ import annotations

import logging

from switchpoint._log_limit import RateLimitFilter as RateLimitFilter  # (the service's limit)
from switchpoint._redact import redact, redact_url
from switchpoint.server.proxies import FORWARDED_PORT

# Loggers whose messages a client or the OS can repeat at will.
NOISY_LOGGERS = ("asyncio", "uvicorn.error")
# Loggers that quote what a client sent (the request line) in their records.
QUOTING_LOGGERS = ("uvicorn.access",)

class RedactFilter(logging.Filter):
    """Redacts secrets, percent-encoded ones too (see
    :func:`switchpoint._redact.redact_url`), from a record's message and from each of
    its string arguments, keeping the arguments' shape (uvicorn's access formatter unpacks
    them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(a) if isinstance(a, str) else a
                                for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact_url(v) if isinstance(v, str) else v
                           for k, v in record.args.items()}
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter whose output, the message with its exception and stack text, has every
    known secret and anything shaped like a credential masked (see
    :func:`switchpoint._redact.redact`).

    It redacts the whole formatted text once, after the traceback is added, so nothing a
    record carries is written unredacted; the record itself is left as it was (its cached
    ``exc_text`` included, which the next format redacts again)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class ForwardedClientFilter(logging.Filter):
    """Writes the client of an access record (uvicorn's ``host:port``, its first argument) as
    the address alone when a listed proxy named it: such a client carries
    :data:`~switchpoint.server.proxies.FORWARDED_PORT`, a port no connection comes from, and
    ``203.0.113.9:0`` would read as a port it was seen at."""

    _SUFFIX = f":{FORWARDED_PORT}"

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], str) \
                and args[0].endswith(self._SUFFIX):
            record.args = (args[0][:-len(self._SUFFIX)], *args[1:])
        return True


def install(filter_: RateLimitFilter, handlers: list[logging.Handler] | None = None) -> None:
    """Rate-limit the noisy loggers (and ``handlers``, e.g. switchpoint's own), redact
    secrets from the loggers that quote what a client sent, and write a client a listed proxy
    named without a port."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if filter_ not in logger.filters:
            logger.addFilter(filter_)
    for name in QUOTING_LOGGERS:
        logger = logging.getLogger(name)
        for kind in (RedactFilter, ForwardedClientFilter):
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())
    for handler in handlers or []:
        if filter_ not in handler.filters:
            handler.addFilter(filter_)
