"""One TLS context for every HTTP client a test process makes with httpx's defaults.

httpx builds each client's transport a TLS context of its own, parsing certifi's bundle of
certificates (some 25 ms of CPU); ``httpx.get(...)``, ``httpx.post(...)`` and each
``openai.OpenAI(...)`` make a client, so the suite spent minutes of CPU on contexts that no
request used: every test talks plain HTTP to loopback. :func:`shared` makes the transports
built meanwhile with the default verification (``verify=True``, no client certificate) take one
context, made once for the ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` in force; any other
arguments are passed on to httpx as they were. Only the client side of the test process is
touched: the service's own upstream transport keeps its own context, as it does in production.

The official ``openai`` client builds its transports with ``httpx2`` (httpx's fork, which its
recent releases use), not httpx: those share a context of their own the same way where httpx2
is installed. Each ``openai.OpenAI(...)`` parsed the bundle again until they did: a seventh of
the samples of a profile of the ten slowest gateway test files.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx._transports.default as transports
import pytest

ContextMaker = Callable[..., ssl.SSLContext]


def _sharing(made: ContextMaker) -> ContextMaker:
    """``made`` (a library's ``create_ssl_context``), making one context per certificate
    location in force for the default verification, handed to every transport that asks."""
    contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True
                           ) -> ssl.SSLContext:
        if verify is not True or cert is not None or not trust_env:
            return made(verify=verify, cert=cert, trust_env=trust_env)
        where = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if where not in contexts:
            contexts[where] = made(verify=verify, cert=cert, trust_env=trust_env)
        return contexts[where]

    return create_ssl_context


@contextmanager
def shared() -> Iterator[None]:
    """While it lasts, the transports httpx (and httpx2, where installed) builds with default
    verification share a context (one per library)."""
    with pytest.MonkeyPatch.context() as patch:
        # (the function each library's transports call)
        patch.setattr(transports, "create_ssl_context", _sharing(httpx.create_ssl_context))
        try:
            import httpx2
            import httpx2._transports.default as transports2
        except ImportError:  # (an openai before 3 uses httpx itself)
            pass
        else:
            patch.setattr(transports2, "create_ssl_context",
                          _sharing(httpx2.create_ssl_context))
        yield
