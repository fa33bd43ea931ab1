"""The request bodies held in memory at once: all of them bounded, and each client's too.

``capacity`` (``server.max_body_buffer_bytes``, or one ``max_request_bytes`` if that is more)
bounds the bytes of every body being received or answered at once. Each client may hold at
most its share of it: a quarter of the capacity, or one ``max_request_bytes`` if that is more
(so a client can always send one body of the largest size allowed). Without the share one
client, with enough slow connections, held the whole buffer, and every other client got 503s
until its bodies timed out.

A client is who its request was authenticated as (a client key's tenant, whichever of its
keys it sends, so that no tenant holds more for being given more keys; the admin token), else
its address (:mod:`switchpoint.server.proxies`): behind a proxy listed in
``server.trusted_proxies``, the address the proxy names in ``X-Forwarded-For``; else the peer's,
so behind a proxy not listed, or one that does not pass the address on, every caller without a
credential is one client and shares one share. A deployment where one client must
hold more raises ``server.max_body_buffer_bytes``: the share grows with it.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

SHARE_DIVISOR = 4  # a client's share: this fraction of the buffer (at least one body)

Refusal = Literal["buffer_full", "client_share"]


class BodyBuffer:
    """The bytes held by the bodies of the requests in progress, in total and by client, and
    how many bodies were refused for lack of room (``refused``, by :data:`Refusal` or
    ``too_large``)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._by_client: dict[str, int] = {}  # (only clients holding bytes: bounded by them)
        self.refused: Counter[str] = Counter()

    def bounds(self, limit: int) -> tuple[int, int]:
        """The buffer's capacity and one client's share, for a body limit of ``limit``."""
        capacity = max(self.capacity, limit)
        return capacity, max(limit, capacity // SHARE_DIVISOR)

    def take(self, client: str, size: int, limit: int) -> Refusal | None:
        """Hold ``size`` more bytes for ``client``; or, when they do not fit, hold nothing and
        say why (the buffer is full, or the client would pass its share)."""
        capacity, share = self.bounds(limit)
        mine = self._by_client.get(client, 0)
        if self.held + size > capacity:
            return "buffer_full"
        if mine + size > share:
            return "client_share"
        self.held += size
        if size:
            self._by_client[client] = mine + size
        return None

    def give_back(self, client: str, size: int) -> None:
        """Release ``size`` bytes ``client`` held."""
        if not size:
            return
        self.held -= size
        left = self._by_client.get(client, 0) - size
        if left > 0:
            self._by_client[client] = left
        else:
            self._by_client.pop(client, None)

    def count_refusal(self, reason: str) -> None:
        self.refused[reason] += 1
