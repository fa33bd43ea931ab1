"""The request headers the service reads, named in one place: each reader takes its header's
name from here, and :mod:`switchpoint.server.underscores` refuses one of them written with
underscores for its dashes.
"""

from __future__ import annotations

# The headers the app reads (each in lowercase, as the server hands names to the app).
AUTHORIZATION = "authorization"  # an admin token or a client key (server.auth)
HOST = "host"  # the host a request is for (server.hosts, server.targets)
ORIGIN = "origin"  # the web page a request comes from (server.origins)
VIA = "via"  # the intermediaries a request passed (server.loops, the gateway's upstream calls)
FORWARDED_FOR = "x-forwarded-for"  # the client a trusted proxy names (server.proxies)
SESSION = "x-session-id"  # the conversation a chat request pins (routes.chat)
COST_WEIGHT = "x-switchpoint-cost-weight"  # λ for a chat request (routes.chat, routes.route)
MODELS = "x-switchpoint-models"  # the models a chat request may use (routes.chat, routes.route)
CONTENT_ENCODING = "content-encoding"  # a body sent compressed is refused (server.middleware)
EXPECT = "expect"  # a client waiting for 100 Continue (server.middleware)
# A body's framing (the server's, and server.middleware's to bound the body).
CONTENT_LENGTH = "content-length"
TRANSFER_ENCODING = "transfer-encoding"

#: Every request header the service reads: the app's (above), and those the server and the
#: web framework under it read for it (a body's framing, the connection's, a CORS preflight's).
READ = frozenset({AUTHORIZATION, HOST, ORIGIN, VIA, FORWARDED_FOR, SESSION, COST_WEIGHT, MODELS,
                  CONTENT_ENCODING, EXPECT, CONTENT_LENGTH, TRANSFER_ENCODING, "connection",
                  "upgrade", "access-control-request-method", "access-control-request-headers"})
