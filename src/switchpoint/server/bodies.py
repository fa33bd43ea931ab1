"""JSON request bodies of the service's routes (all but the chat gateway's, which
:func:`switchpoint.gateway.parsing.parse_chat_body` reads), validated by their pydantic model.

Read by the handler, after the route's own checks of who calls (an admin route's token, a
client key), so a caller who may not use a route learns nothing of what its body must be. A
body that writes a key twice in one object is refused as the chat gateway refuses it: JSON
readers disagree on which of the two counts, so a filter in front could check one value while
the service acted on the other."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from switchpoint._json import repeated_key
from switchpoint._messages import invalid_from_validation
from switchpoint.errors import InvalidInputError

Body = TypeVar("Body", bound=BaseModel)


def parse_body(model: type[Body], raw: bytes) -> Body:
    """``raw`` as a ``model``; :class:`InvalidInputError` naming the field (``body`` for what
    is wrong with the JSON itself) otherwise."""
    problem = repeated_key(raw)
    if problem is not None:
        raise InvalidInputError("body", problem)
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise invalid_from_validation(list(exc.errors()), list(model.model_fields)) from None
