"""The ``Via`` header (RFC 9110, section 7.6.3) the gateway sends upstream, naming itself, so
that a service a model's ``base_url`` points back at can tell a request it sent itself
(:mod:`switchpoint.server.loops`)."""

from __future__ import annotations

from collections.abc import Sequence


def via(name: str) -> str:
    """The ``Via`` header value of a request the gateway called ``name`` sends upstream:
    ``1.1 NAME``."""
    return f"1.1 {name}"


def via_names(values: Sequence[str]) -> list[str]:
    """The names of the intermediaries the ``Via`` header values ``values`` list, in order
    (each entry's ``received-by``: ``1.1 a, 1.0 b`` lists ``a`` and ``b``)."""
    names = []
    for value in values:
        for entry in value.split(","):
            parts = entry.split()
            if len(parts) >= 2:
                names.append(parts[1])
    return names
