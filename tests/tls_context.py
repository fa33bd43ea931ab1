"""One TLS context for every HTTP client a test process makes with httpx's defaults.

httpx builds each client's transport a TLS context of its own, parsing certifi's bundle of
certificates (some 25 ms of CPU); ``httpx.get(...)``, ``httpx.post(...)`` and each
``openai.OpenAI(...)`` make a client, so the suite spent minutes of CPU on contexts that no
request used: every test talks plain HTTP to loopback. :func:`shared` makes the transports
built meanwhile with the default verification (``verify=True``, no client certificate) take one
context, made once for the ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` in force; any other
arguments are passed on to httpx as they were. Only the client side of the test process is
touched: the service's own upstream transport keeps its own context, as it does in production.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import httpx._transports.default as transports
import pytest


@contextmanager
def shared() -> Iterator[None]:
    """While it lasts, the transports httpx builds with default verification share a context."""
    made = httpx.create_ssl_context  # (the function the transports call)
    contexts: dict[tuple[str | None, str | None], ssl.SSLContext] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True
                           ) -> ssl.SSLContext:
        if verify is not True or cert is not None or not trust_env:
            return made(verify=verify, cert=cert, trust_env=trust_env)
        where = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if where not in contexts:
            contexts[where] = made(verify=verify, cert=cert, trust_env=trust_env)
        return contexts[where]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transports, "create_ssl_context", create_ssl_context)
        yield
