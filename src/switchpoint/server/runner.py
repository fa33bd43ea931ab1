"""Run the app on uvicorn: ``switchpoint serve`` calls :func:`serve`.

The port opens at once; the router loads on a background thread (``/v1/route`` answers 503
``router_not_ready`` until then). What loading would refuse without any state (a missing or
corrupt weights package, a catalog model whose profile is missing and unpriced, an embedder the
weights name that does not exist), and a port that cannot be bound, are found first, before
anything of ``data_dir`` is made, so such a refused start leaves nothing behind. If loading
fails later all the same, the server stops and the error is raised here, so the command exits
with the reason.

The server runs uvicorn's h11 protocol under the connection guard of
:mod:`switchpoint.server.protocol` (the ``server:`` limits of the config), with repeated log
messages rate-limited (:mod:`switchpoint.server.logs`). Before it binds, it applies the
exposure rule of :mod:`switchpoint.server.exposure`. Who a client is (its address, or the one
a listed proxy names) is the app's to say (:mod:`switchpoint.server.proxies`): uvicorn's own
reading of ``X-Forwarded-For`` is off.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

import uvicorn
from starlette.concurrency import run_in_threadpool

from switchpoint import _hangup
from switchpoint._messages import MAX_PATH, cut, listed_names, printable
from switchpoint._redact import redact
from switchpoint.config import ServerSettings, Settings
from switchpoint.embedding import embedder_from_id
from switchpoint.errors import GatewayClosedError, ServeError, SwitchpointError
from switchpoint.gateway.live import (
    RouterFactory,
    RouterState,
    checked_package,
    checked_policies,
)
from switchpoint.governance.keys import holds_keys
from switchpoint.server import logs
from switchpoint.server.app import create_app
from switchpoint.server.auth import check_admin_token
from switchpoint.server.context import Service
from switchpoint.server.exposure import exposure_problem, reload_problem
from switchpoint.server.protocol import ConnectionLimits, ConnectionStats, guarded_protocol
from switchpoint.server.proxies import proxy_warnings
from switchpoint.store import SQLiteStore
from switchpoint.store.sqlite import spill_reserve, spill_shortfall, store_error

log = logging.getLogger("switchpoint")
# File descriptors kept for everything but client and upstream connections: the SQLite files,
# the log, the listening socket, the event loop, the embedder.
RESERVED_FDS = 64
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


def _configure_logging(level: str) -> logging.Handler:
    """The handler the service's log goes to: the first switchpoint's logger has (a program's
    own, serving in process) but the package's :class:`logging.NullHandler`, else one writing
    to stderr, added."""
    logger = logging.getLogger("switchpoint")
    handler = next((h for h in logger.handlers if not isinstance(h, logging.NullHandler)),
                   None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logs.RedactingFormatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return handler


def connection_budget(server: ServerSettings) -> tuple[int, str | None]:
    """``server.max_connections``, lowered if the open-file limit cannot hold that many client
    connections (each may hold an upstream connection too, and a burst of ``backlog`` sockets
    is accepted before any can be closed). The soft limit is first raised to the hard one.
    Returns the number and, when it was lowered, a warning that says so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return server.max_connections, None
    fits = max(16, (soft - RESERVED_FDS - 2 * server.backlog) // 2)
    if server.max_connections <= fits:
        return server.max_connections, None
    return fits, (f"server.max_connections lowered from {server.max_connections} to {fits} to "
                  f"fit the open-file limit of {soft} (client and upstream connections share "
                  "it); raise the limit (ulimit -n) to allow more")


def _host_shown(host: str) -> str:
    """``host`` as a message names it: cut short and each character a terminal would not show
    as itself escaped (``--host`` is any text the operator typed)."""
    return printable(cut(host, MAX_PATH))


def _addresses(host: str, port: int) -> list[Any]:
    """The addresses the server would bind for ``host`` and ``port`` (``socket.getaddrinfo``),
    or :class:`ServeError` naming ``--host`` when it names no address of this machine: one
    the resolver does not know, or a name no resolver is asked about (a label of more than
    63 characters, or an empty one, which IDNA encoding refuses)."""
    try:
        return socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                  flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        where = _host_shown(host) + (f":{port}" if port else "")
        raise ServeError(f"cannot serve on {where} ({exc}); give --host an address of this "
                         "machine") from None


def _check_port(host: str, port: int) -> None:
    """:class:`ServeError` when ``host``:``port`` cannot be bound now (in use, or an address
    this machine does not have). The server binds it for real later: this only keeps such a
    start from making data_dir first."""
    if port == 0:
        return
    addresses = _addresses(host, port)
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # As the server binds (asyncio's create_server).
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and len(addresses) > 1:
                    continue  # a family this machine lacks: the server passes it over too
                raise ServeError(f"cannot serve on {_host_shown(host)}:{port} "
                                 f"({exc.strerror or exc}; is the port in use? choose another "
                                 "with --port)") from None


def _bind_chosen(host: str, ports: int | range) -> socket.socket:
    """A socket bound to ``host`` on a port chosen now: any free one (``ports`` 0) or a free
    one of the range ``ports``, tried in random order (processes sharing a range seldom reach
    for the same one). Bound here, by the server's own process, so no other can take the port
    between its choice and the start; :class:`ServeError` when none is free."""
    family, kind, proto, _, address = _addresses(host, 0)[0]
    candidates = [ports] if isinstance(ports, int) else random.sample(ports, len(ports))
    for candidate in candidates:
        sock = socket.socket(family, kind, proto)
        # As the server binds (asyncio's create_server).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((address[0], candidate, *address[2:]))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE and len(candidates) > 1:
                continue
            raise ServeError(f"cannot serve on {_host_shown(host)}:{candidate} "
                             f"({exc.strerror or exc}; choose another port with --port)"
                             ) from None
        return sock
    assert isinstance(ports, range)
    raise ServeError(f"cannot serve on {_host_shown(host)}: every port of "
                     f"{ports.start}-{ports.stop - 1} is in use; choose another range with "
                     "--port")


def _check_loadable(settings: Settings) -> RouterFactory:
    """What loading the router would refuse without any state of data_dir (the weights, the
    catalog against them, the embedder they name, the packages ``policies:`` lists), raised
    now as the load would raise it; the service's router factory, holding the weights and
    the policies' packages read and checked, which its first load takes rather than read
    them again."""
    try:
        package = checked_package(settings)
        embedder_from_id(package.embedder_id)
        return RouterFactory(checked=(settings, package),
                             policies_checked=checked_policies(settings))
    except SwitchpointError:
        raise
    except Exception as exc:  # a package that is no weights package, say
        raise ServeError(f"the router failed to load: {type(exc).__name__}: {exc}") from None


def _first_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist (what making ``path``
    makes), or None when ``path`` exists."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_made(made: Path | None, data_dir: Path) -> None:
    """Remove ``made``, the folder a failed start made for ``data_dir`` (with what it put
    there): a start that did not serve leaves no trace, as one refused before it opened
    data_dir leaves none, unless client keys were issued meanwhile (the admin routes answer
    while the router loads). A data_dir that was there before is never touched."""
    if made is None or not made.exists():
        return
    if holds_keys(data_dir):  # issued while the router loaded: a client may hold one already
        log.warning("the start failed; data_dir %s, made by it, is kept: it holds the client "
                    "keys issued while the router loaded", data_dir)
        return
    try:
        shutil.rmtree(made)
    except OSError as exc:
        log.warning("the start failed; data_dir %s, made by it, could not be removed (%s): "
                    "remove it by hand", data_dir, exc)


def serve(settings: Settings, host: str = "127.0.0.1", port: int | range = 8080, *,
          log_level: str = "info", access_log: bool = False,
          allow_unauthenticated: bool = False) -> int:
    """Serve until interrupted. Raises :class:`ConfigError` if the admin token the settings
    name is not exported (see :func:`~switchpoint.server.auth.check_admin_token`),
    :class:`ServeError` if the router cannot load, or if ``host`` would expose open admin
    routes (see :mod:`switchpoint.server.exposure`).

    ``port`` 0 serves on any free port, a range on a free one of it: the port is bound at once
    and, once open, printed on stdout (``switchpoint: listening on http://HOST:PORT``)."""
    _hangup.defer()  # until it serves (then SIGHUP reloads)
    check_admin_token(settings)
    problem = exposure_problem(settings, host, allow_unauthenticated=allow_unauthenticated)
    if problem is not None:
        raise ServeError(problem)
    handler = _configure_logging(log_level)
    log.debug("starting: a SIGHUP from now until the port opens is taken up once it serves")
    # What would refuse the start is found before anything of data_dir is made: a refused
    # start leaves no trace there.
    sock: socket.socket | None = None
    if isinstance(port, range) or port == 0:
        sock = _bind_chosen(host, port)
        port = int(sock.getsockname()[1])
    else:
        _check_port(host, port)
    try:
        factory = _check_loadable(settings)
        made = _first_missing(Path(settings.data_dir).absolute())
        states: list[RouterState] = []
        try:
            _serve(settings, host, port, log_level=log_level, access_log=access_log,
                   allow_unauthenticated=allow_unauthenticated, handler=handler,
                   states=states, sock=sock, factory=factory)
        except BaseException:
            if not any(state.ready for state in states):  # it never served: nothing to keep
                _remove_made(made, Path(settings.data_dir))
            raise
    finally:
        if sock is not None:
            sock.close()
    return 0


def _serve(settings: Settings, host: str, port: int, *, log_level: str, access_log: bool,
           allow_unauthenticated: bool, handler: logging.Handler,
           states: list[RouterState], sock: socket.socket | None,
           factory: RouterFactory) -> None:
    """:func:`serve` once what would refuse the start is ruled out: raises what stopped it.
    The service's router state is added to ``states`` (whether it ever went live). ``sock``:
    the socket bound to ``port`` when it was chosen at start (else uvicorn binds ``port``).
    ``factory``: the router factory holding what the start read and checked (the weights,
    the policies' packages), which its first load takes."""
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
        raise ServeError(f"cannot serve on {_host_shown(host)}:{port} (see the message "
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
