"""The service on uvicorn, once :func:`switchpoint.server.runner.serve` has ruled out what
would refuse its start: the app, its server (the stop's bounded drain, SIGHUP's reload) and the
run. FastAPI and uvicorn load with this module, so a refused start never loads them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sqlite3
from typing import Any

import uvicorn
from starlette.concurrency import run_in_threadpool

from switchpoint import _hangup
from switchpoint._messages import listed_names
from switchpoint._redact import redact
from switchpoint.config import Settings
from switchpoint.errors import GatewayClosedError, ServeError, SwitchpointError
from switchpoint.gateway.live import RouterFactory, RouterState
from switchpoint.server import logs
from switchpoint.server.app import create_app
from switchpoint.server.context import Service
from switchpoint.server.exposure import reload_problem
from switchpoint.server.protocol import ConnectionLimits, ConnectionStats, guarded_protocol
from switchpoint.server.proxies import proxy_warnings
from switchpoint.server.runner import connection_budget, host_shown
from switchpoint.store import SQLiteStore
from switchpoint.store.errors import store_error
from switchpoint.store.spill import spill_reserve, spill_shortfall

log = logging.getLogger("switchpoint")
# Once the drain has run out and the requests still in flight were ended, how long they have to
# tell their clients so and be logged before their connections are closed regardless.
END_GRACE_S = 1.0
STOPPED = "the service stopped before this request finished ({why}); send it again"


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it serves only once the port is really open: in the log
    (``announce``, its ``{url}`` the one it listens on), and, when the port was chosen at start
    (``chosen``), on stdout too, for whoever started it to learn the port. Once it serves,
    ``SIGHUP`` reloads ``service``'s config (as ``POST /v1/router/reload`` does) instead of
    ending the process at once, with what it had in flight and unlogged; one that came while
    it started (:mod:`switchpoint._hangup`) is taken up then.

    ``SIGTERM`` or ``SIGINT`` stops it: it takes no new connection, lets the requests in flight
    finish for at most ``shutdown_timeout_s``, then ends those still running through the
    gateway (:meth:`~switchpoint.gateway.Gateway.stop_in_flight`: each logged, its budget hold
    settled, its upstream closed); a second signal ends the drain at once, the same way (never
    dropping what is in flight, as uvicorn's forced exit would). The process then exits 0: it
    stopped as it was told to."""

    def __init__(self, config: uvicorn.Config, announce: str, *, chosen: bool,
                 service: Service, shutdown_timeout_s: float) -> None:
        super().__init__(config)
        self.announce = announce
        self.chosen = chosen
        self.service = service
        self.shutdown_timeout_s = shutdown_timeout_s
        self._reloads: set[asyncio.Task[None]] = set()
        self._signals: list[int] = []

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Not uvicorn's: its second SIGINT skips the application's shutdown (the gateway's
        # close, the log's last commit), and it raises the signal again once stopped.
        self._signals.append(sig)
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, with the drain bounded (see the class)."""
        loop = asyncio.get_running_loop()
        names = ", ".join(signal.Signals(s).name for s in self._signals) or "a stop"
        log.info("%s: stopping; requests in flight may finish for %gs "
                 "(server.shutdown_timeout_s; a second signal ends them now)",
                 names, self.shutdown_timeout_s)
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        deadline = loop.time() + self.shutdown_timeout_s
        while ((state.connections or state.tasks) and len(self._signals) < 2
               and loop.time() < deadline):
            await asyncio.sleep(0.05)
        if state.tasks or state.connections:
            await self._end_in_flight(hurried=len(self._signals) >= 2)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()

    async def _end_in_flight(self, *, hurried: bool) -> None:
        """End the requests still in flight, then close the connections left."""
        loop = asyncio.get_running_loop()
        state = self.server_state
        why = STOPPED.format(why=(
            "a second stop signal cut short the wait of server.shutdown_timeout_s" if hurried
            else f"it still ran when server.shutdown_timeout_s ({self.shutdown_timeout_s:g}s) "
                 "ran out"))
        ended = self.service.gateway.stop_in_flight(why)
        if ended:
            log.warning("stopping: %d request(s) still in flight were ended (each logged as "
                        "service_stopped, its budget hold settled)", ended)
        end = loop.time() + END_GRACE_S
        while state.tasks and loop.time() < end:  # they tell their clients, and log
            await asyncio.sleep(0.02)
        await self.service.gateway.settled()
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()  # the client's socket: a request still reading or writing ends
        end = loop.time() + END_GRACE_S
        while state.tasks and loop.time() < end:
            await asyncio.sleep(0.02)
        for task in list(state.tasks):  # neither a model call nor a stream: nothing to log
            task.cancel()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        if hasattr(signal, "SIGHUP"):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hangup)
            if _hangup.take_pending():
                log.info("SIGHUP came while the service started: the config is reloaded once "
                         "the router has loaded")
                self._hangup()
        url = f"http://{_url_host(self.config.host)}:{self.config.port}"
        log.info("%s", self.announce.format(url=url))
        if self.chosen:
            print(f"switchpoint: listening on {url}", flush=True)

    def _hangup(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        state = self.service.state
        # The router still loading: the reload waits for it (the load may have read the file
        # before the change the signal announces).
        while not state.ready and state.failure is None and not self.should_exit:
            await asyncio.sleep(0.1)
        if not state.ready:
            return  # it failed to load, or stops: nothing to reload
        if self.should_exit:
            log.warning(_STOPPING)
            return
        try:
            answer = await run_in_threadpool(self.service.gateway.reload)
        except GatewayClosedError:  # (closing began meanwhile)
            log.warning(_STOPPING)
            return
        except Exception as exc:  # whatever it was, the service keeps serving
            # Redacted as the HTTP reload's answer is: an error may quote a value of the file.
            what = str(exc) if isinstance(exc, SwitchpointError) else (
                f"{type(exc).__name__}: {exc}")
            log.error("SIGHUP: the config was not reloaded; the running one keeps serving: %s",
                      redact(what))
            return
        restart = answer["restart_required"]
        log.info("SIGHUP: config reloaded: %s policy, weights %s, %d models%s",
                 answer["policy"], answer["weights_id"], len(answer["models"]),
                 f"; a restart is needed for {listed_names(restart, quoted=True)}"
                 if restart else "")


#: What a SIGHUP that comes while the service stops logs: no reload (what would it serve?).
_STOPPING = "SIGHUP came while the service stops: the config is not reloaded"


def _url_host(host: str) -> str:
    """``host`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host



def run(settings: Settings, host: str, port: int, *, log_level: str, access_log: bool,
        allow_unauthenticated: bool, handler: logging.Handler,
        states: list[RouterState], sock: socket.socket | None,
        factory: RouterFactory) -> None:
    """:func:`~switchpoint.server.runner.serve` once what would refuse the start is ruled out:
    raises what stopped it. The service's router state is added to ``states`` (whether it ever
    went live). ``sock``: the socket bound to ``port`` when it was chosen at start (else
    uvicorn binds ``port``). ``factory``: the router factory holding what the start read and
    checked (the weights, the policies' packages), which its first load takes."""
    limits = settings.server
    max_connections, warning = connection_budget(limits)
    # Each connection answers one request at a time: the most in flight when the spill file
    # fills, whose records its reserve must hold.
    limit = settings.store.spill_limit
    store = SQLiteStore(settings.db_path, synchronous=settings.store.synchronous,
                        spill_limit=limit, spill_reserve=spill_reserve(limit, max_connections))
    app = create_app(settings, store=store, listen_host=host,
                     loader=factory, warm=True)
    stats = ConnectionStats()
    app.state.service.metrics.connections = stats
    protocol = guarded_protocol(ConnectionLimits(
        max_connections=max_connections, header_timeout_s=limits.header_timeout_s,
        body_timeout_s=limits.body_timeout_s, keep_alive_timeout_s=limits.keep_alive_timeout_s,
        write_timeout_s=limits.write_timeout_s, max_header_bytes=limits.max_header_bytes),
        stats)
    announce = ("switchpoint: serving {url} (its API document at /openapi.json); the router "
                "loads in the background, GET /health says when it is ready; decisions are "
                "logged to "
                + str(settings.db_path).replace("{", "{{").replace("}", "}}"))
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=access_log,
        lifespan="on", server_header=False, http=protocol, backlog=limits.backlog,
        # The app reads X-Forwarded-For from server.trusted_proxies alone; uvicorn's own
        # reading believed any process on 127.0.0.1 (and $FORWARDED_ALLOW_IPS).
        proxy_headers=False,
        timeout_keep_alive=limits.keep_alive_timeout_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=limits.max_header_bytes)
    # uvicorn configures its loggers in Config(); the filter goes on after that.
    logs.install(logs.RateLimitFilter(), [handler])
    for problem in (warning, spill_shortfall(limit, max_connections),
                    *proxy_warnings(limits.proxy_networks, os.environ)):
        if problem is not None:
            log.warning("%s", problem)
    server = _Server(config, announce, chosen=sock is not None, service=app.state.service,
                     shutdown_timeout_s=limits.shutdown_timeout_s)
    state = app.state.service.state
    states.append(state)

    def stop(exc: BaseException) -> None:
        server.should_exit = True

    state.on_load_error = stop

    def vet(read: Settings) -> None:  # a reload must not open what serve refused to
        refused = reload_problem(state.settings, read, host,
                                 allow_unauthenticated=allow_unauthenticated)
        if refused is not None:
            raise refused

    state.vets.append(vet)
    try:
        # The state in data_dir opens here, before the port opens, so what stops it (a full
        # disk, a file in the way, another process serving from it: the gateway takes the
        # directory's lock first) is one clear error, not a traceback from the server's
        # startup. The gateway releases the lock when it closes, as the server stops.
        app.state.service.gateway.open()
        server.run(sockets=None if sock is None else [sock])
    except SystemExit as exc:  # uvicorn exits when it cannot bind the port
        raise ServeError(f"cannot serve on {host_shown(host)}:{port} (see the message "
                         "above; is the port in use? choose another with --port)") from exc
    finally:
        store.close()
    failure = state.failure
    if failure is not None:
        if isinstance(failure, SwitchpointError):
            raise failure
        if isinstance(failure, sqlite3.DatabaseError):  # the feedback log, read to learn it
            raise ServeError("the router failed to load: " + str(
                store_error(settings.db_path, "read it", failure)))
        raise ServeError(f"the router failed to load: {type(failure).__name__}: {failure}")
