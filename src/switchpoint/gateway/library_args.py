"""What the in-process door's chat methods (``Gateway.complete``, ``stream``, ``compare`` and
their async forms) check of their arguments before a request is made of them, where the HTTP
door reads a JSON body: the ``stream`` flag, the openai client's own options passed as fields,
and a ``messages`` read no further than a body of ``max_request_bytes`` could hold."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from switchpoint._args import expect
from switchpoint.errors import InvalidInputError


def stream_flag(params: dict[str, Any]) -> bool:
    """Whether ``params`` ask for a stream, their ``stream`` taken out of them (each door says
    how it answers): True or False, or None (left out); any other value is refused naming it,
    never read for its truth (``0``, ``[]`` or ``"no"`` are no answer to "stream?")."""
    value = params.pop("stream", None)
    if value is not None:
        expect("stream", value, bool, "True or False (or left out)")
    return value is True


# The openai client's options that are no fields of a request (it sends them elsewhere, or
# merges them), and what to do instead: passed to a gateway's call, each would go upstream as a
# field of the request's body, as given.
_CLIENT_OPTIONS = {
    "extra_body": "pass its fields as keyword arguments themselves (top_k=3), which go "
                  "upstream as fields of the request",
    "extra_headers": "the gateway sends its own headers upstream; pass session_id=, models= "
                     "or key= for what x-session-id, x-switchpoint-models or Authorization "
                     "would say over HTTP",
    "extra_query": "the gateway sends no query string upstream; leave it out",
    "timeout": "the gateway's own deadlines bound each call (gateway.max_total_s and the "
               "other timeouts of the config); for a shorter one, wrap the async form in "
               "asyncio.wait_for",
}


def no_client_options(params: Mapping[str, Any]) -> None:
    """Refuse an option of the openai client among ``params`` (the request's fields), naming
    it and what to do instead (see :data:`_CLIENT_OPTIONS`)."""
    for name, instead in _CLIENT_OPTIONS.items():
        if name in params:
            raise InvalidInputError(name, f"is an option of the openai client, not a field of "
                                          f"a chat request, which the gateway would send "
                                          f"upstream as it is; {instead}")


def as_list(messages: object, limit: int) -> list[Any]:
    """``messages`` as a list of the messages, each mapping a dict, read no further than a
    body of ``limit`` bytes could hold (a message takes at least 2 bytes of it, ``0,``, and
    a field at least 5, ``"":0,``): one more message or field than that is over the limit,
    which the measure of the body then says, where an endless sequence or mapping was read
    until the memory ran out."""
    if messages is None:
        raise InvalidInputError("messages", "is required: a list of {role, content} messages")
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidInputError("messages", "must be a list of {role, content} messages")
    return [dict(itertools.islice(m.items(), limit // 5 + 1)) if isinstance(m, Mapping) else m
            for m in itertools.islice(messages, limit // 2 + 1)]
