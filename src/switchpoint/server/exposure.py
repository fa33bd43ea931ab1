"""Who can reach the service: the rule ``switchpoint serve`` applies before it binds.

On a loopback address (``127.0.0.1``, ``::1``, ``localhost``) only this machine can connect, so
anything goes. On any other address (``0.0.0.0``, ``::``, a LAN IP, a host name) every route must
need a credential: the chat and routing routes a client key (``auth: keys``), the admin routes
(``/v1/router/*``: the request log, keys, policy swap, reload) a bearer token
(``admin_token_env``), unless the operator opts out explicitly (``allow_unauthenticated: true``
in the config, or ``--allow-unauthenticated``), e.g. behind a proxy that authenticates.
:func:`exposure_problem` is the whole rule; :func:`reload_problem` applies it to a config read
again while the service runs, whose opt-out may not turn on: exposure is set at start. Settings
that name an admin token not exported are never served (:func:`check_admin_token`). Nothing
here needs the web framework: ``switchpoint serve`` refuses such a start before it loads.
"""

from __future__ import annotations

from switchpoint._messages import json_quoted
from switchpoint.config import Settings
from switchpoint.errors import ConfigError
from switchpoint.registration import loopback_host


def is_loopback(host: str) -> bool:
    """``host`` (a listening address, or a Host header's name; in brackets too) reaches only
    this machine, however it is spelt: the gateway's rule for an upstream's host
    (:func:`~switchpoint.registration.loopback_host`: ``localhost``, an address in
    127.0.0.0/8 or ``::1``). The wildcard addresses (``0.0.0.0``, ``::``, ``""``) are not."""
    return loopback_host(host.strip().strip("[]"))


def exposure_problem(settings: Settings, host: str, *,
                     allow_unauthenticated: bool = False) -> str | None:
    """Why serving ``settings`` on ``host`` would leave routes open to the network (a message
    that says how to fix it), or None when it may."""
    if is_loopback(host) or allow_unauthenticated or settings.allow_unauthenticated:
        return None
    open_parts = []
    if settings.auth != "keys":
        open_parts.append("chat completions and routing would be open to anyone who can reach "
                          "it (set `auth: keys` and make client keys with `switchpoint keys "
                          "create`)")
    if settings.admin_token is None:
        open_parts.append("the admin routes (the request log, client keys, policy swap, "
                          "reload) would be open (set admin_token_env in the config and export "
                          "a token of 16+ characters in that variable)")
    if not open_parts:
        return None
    return (f"refusing to serve on {json_quoted(host)}: " + "; and ".join(open_parts)
            + ". Or serve on 127.0.0.1 behind a proxy, or accept the risk with "
            "--allow-unauthenticated (allow_unauthenticated: true in the config)")


def check_admin_token(settings: Settings) -> None:
    """Refuse to serve ``settings`` (at start, and on a reload) when they name an admin token
    variable that holds no usable token: the admin routes would be guarded by nothing the
    operator chose. Raises :class:`ConfigError` (``admin_token_env``) saying how to fix it."""
    problem = settings.admin_token_problem
    if problem is not None:
        raise ConfigError("admin_token_env", problem)


def reload_problem(running: Settings, read: Settings, host: str, *,
                   allow_unauthenticated: bool = False) -> ConfigError | None:
    """Why a reload of ``read`` over ``running`` (the settings serving on ``host``) must be
    refused, or None. Beyond loopback (unless the start opted out with
    ``--allow-unauthenticated``), a config that turns ``allow_unauthenticated`` on where the
    running one has it off is refused: the opt-out is part of the service's exposure, which
    only a start sets; and so is one that would leave routes open (:func:`exposure_problem`)."""
    if is_loopback(host) or allow_unauthenticated:
        return None
    if read.allow_unauthenticated and not running.allow_unauthenticated:
        return ConfigError("allow_unauthenticated", (
            f"refusing to reload a config that turns allow_unauthenticated on while the service "
            f"listens on {json_quoted(host)}: whether its routes may be open to the network is "
            "part of its exposure, which only a start opens; the running config keeps "
            "serving. Take allow_unauthenticated out of the config to reload it, or restart "
            "the service with this config to change its exposure"))
    problem = exposure_problem(read, host)
    if problem is None:
        return None
    return ConfigError("auth", problem.replace(
        "refusing to serve", "refusing to reload a config that would serve"))
