"""Start the service: ``switchpoint serve`` calls :func:`serve`, which refuses what it must
refuse and then runs the app on uvicorn (:mod:`switchpoint.server.serving`).

The port opens at once; the router loads on a background thread (``/v1/route`` answers 503
``router_not_ready`` until then). What loading would refuse without any state (a missing or
corrupt weights package, a catalog model whose profile is missing and unpriced, an embedder the
weights name that does not exist), and a port that cannot be bound, are found first, before
anything of ``data_dir`` is made, so such a refused start leaves nothing behind. If loading
fails later all the same, the server stops and the error is raised here, so the command exits
with the reason. The refusals need no web framework: FastAPI, the service's schemas and uvicorn
(some 1 s of CPU) load only once they have passed, as does NumPy with the router's modules
when the weights are read.

The server runs uvicorn's h11 protocol under the connection guard of
:mod:`switchpoint.server.protocol` (the ``server:`` limits of the config), with repeated log
messages rate-limited (:mod:`switchpoint.server.logs`). Before it binds, it applies the
exposure rule of :mod:`switchpoint.server.exposure`. Who a client is (its address, or the one
a listed proxy names) is the app's to say (:mod:`switchpoint.server.proxies`): uvicorn's own
reading of ``X-Forwarded-For`` is off.
"""

from __future__ import annotations

import errno
import logging
import random
import resource
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchpoint import _hangup
from switchpoint._messages import MAX_PATH, cut, printable
from switchpoint.config import ServerSettings, Settings
from switchpoint.errors import ServeError, SwitchpointError
from switchpoint.governance.keys import holds_keys
from switchpoint.server import logs
from switchpoint.server.exposure import check_admin_token, exposure_problem

if TYPE_CHECKING:
    from switchpoint.gateway.live import RouterFactory, RouterState

log = logging.getLogger("switchpoint")
# File descriptors kept for everything but client and upstream connections: the SQLite files,
# the log, the listening socket, the event loop, the embedder.
RESERVED_FDS = 64


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


def host_shown(host: str) -> str:
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
        where = host_shown(host) + (f":{port}" if port else "")
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
                raise ServeError(f"cannot serve on {host_shown(host)}:{port} "
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
            raise ServeError(f"cannot serve on {host_shown(host)}:{candidate} "
                             f"({exc.strerror or exc}; choose another port with --port)"
                             ) from None
        return sock
    assert isinstance(ports, range)
    raise ServeError(f"cannot serve on {host_shown(host)}: every port of "
                     f"{ports.start}-{ports.stop - 1} is in use; choose another range with "
                     "--port")


def _check_loadable(settings: Settings) -> RouterFactory:
    """What loading the router would refuse without any state of data_dir (the weights, the
    catalog against them, the embedder they name, the packages ``policies:`` lists), raised
    now as the load would raise it; the service's router factory, holding the weights and
    the policies' packages read and checked, which its first load takes rather than read
    them again."""
    from switchpoint.embedding import embedder_from_id
    from switchpoint.gateway.live import RouterFactory, checked_package, checked_policies

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
          allow_unauthenticated: bool = False,
          loaded: Callable[[], None] | None = None) -> int:
    """Serve until interrupted. Raises :class:`ConfigError` if the admin token the settings
    name is not exported (see :func:`~switchpoint.server.exposure.check_admin_token`),
    :class:`ServeError` if the router cannot load, or if ``host`` would expose open admin
    routes (see :mod:`switchpoint.server.exposure`).

    ``port`` 0 serves on any free port, a range on a free one of it: the port is bound at once
    and, once open, printed on stdout (``switchpoint: listening on http://HOST:PORT``).
    ``loaded``, if given, is called once the service's modules are imported, before it serves
    (``switchpoint serve`` freezes what they made out of the garbage collector's scans)."""
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
        from switchpoint.server.serving import run  # FastAPI and uvicorn load only here

        if loaded is not None:
            loaded()
        try:
            run(settings, host, port, log_level=log_level, access_log=access_log,
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
