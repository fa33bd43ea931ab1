"""What a served app would otherwise build at its first request, built while the weights load.

``switchpoint serve`` answers ``/health`` once its router has loaded, in the background; the
app's own first-use costs are paid meanwhile, on the event loop, instead of by the first
request of each kind (:func:`warm`):

- the thread pool the handlers run their blocking work on: anyio loads its event-loop
  backend (and its streams, sockets and TLS modules) and starts a worker thread the first
  time a handler hands work to it, some 10 to 20 ms;
- each included router's routes, as the app serves them: FastAPI builds them (their
  dependencies, parameters and response fields, with pydantic type adapters) the first time
  a request is matched into that router, 1 to 30 ms a router.

A test's app (``create_app`` without ``warm``) builds them on use, as before.
"""

from __future__ import annotations

import logging
import time

import anyio.to_thread
from fastapi import FastAPI

log = logging.getLogger("switchpoint.server")


async def warm(app: FastAPI) -> None:
    """Build what the first requests to ``app`` would: see the module."""
    t0 = time.perf_counter()
    await anyio.to_thread.run_sync(_routes_built, app)
    log.debug("warm: the thread pool and the routes, built in %.1f ms",
              (time.perf_counter() - t0) * 1e3)


def _routes_built(app: FastAPI) -> None:
    """Each router included in ``app`` with its routes built as FastAPI serves them (its
    ``effective_candidates``, which a FastAPI without that lazy step lacks: nothing to do)."""
    for route in app.router.routes:
        build = getattr(route, "effective_candidates", None)
        if callable(build):
            build()
