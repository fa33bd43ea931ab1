"""Run the app on uvicorn: ``switchpoint serve`` calls :func:`serve`.

The port opens at once; the router loads on a background thread (``/v1/route`` answers 503
``router_not_ready`` until then). If loading fails (a corrupt weights package, a catalog model
whose profile is missing and unpriced) the server stops and the error is raised here, so the
command exits with the reason.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import uvicorn

from switchpoint.config import Settings
from switchpoint.errors import ServeError, SwitchpointError
from switchpoint.server.app import create_app
from switchpoint.store import SQLiteStore

log = logging.getLogger("switchpoint")


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it serves only once the port is really open."""

    def __init__(self, config: uvicorn.Config, announce: str) -> None:
        super().__init__(config)
        self.announce = announce

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info("%s", self.announce)


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("switchpoint")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080, *,
          log_level: str = "info", access_log: bool = False) -> int:
    """Serve until interrupted. Raises :class:`ServeError` if the router cannot load."""
    _configure_logging(log_level)
    # A bad data_dir fails here, before the port opens.
    store = SQLiteStore(settings.db_path, synchronous=settings.store.synchronous).open()
    app = create_app(settings, store=store)
    announce = (f"switchpoint: serving http://{host}:{port} (docs at /docs); the router loads in "
                "the background, GET /health says when it is ready; decisions are logged to "
                f"{settings.db_path}")
    server = _Server(uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=access_log,
        lifespan="on", server_header=False), announce)
    state = app.state.service.state

    def stop(exc: BaseException) -> None:
        server.should_exit = True

    state.on_load_error = stop
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind the port
        raise ServeError(f"cannot serve on {host}:{port} (see the message above; is the port "
                         "in use? choose another with --port)") from exc
    finally:
        store.close()
    failure = state.failure
    if failure is not None:
        if isinstance(failure, SwitchpointError):
            raise failure
        raise ServeError(f"the router failed to load: {type(failure).__name__}: {failure}")
    return 0
