"""Provider adapters for the gateway: one upstream API dialect each, OpenAI wire format out.

    pool = ClientPool()                      # one per app; ``await pool.aclose()`` on shutdown
    providers = ProviderRegistry(pool)       # by the wire format of card.provider (see
    provider = providers.for_card(card)      # switchpoint.known_providers): Messages API or
                                             # OpenAI-compatible
    answer = await provider.complete(request, card, Timeouts())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchpoint._lazy import names_on_use
from switchpoint.errors import (
    AuthError,
    BadRequest,
    ConnectError,
    ContentFiltered,
    ContextLengthExceeded,
    FirstTokenTimeout,
    MalformedResponse,
    MissingApiKey,
    ProviderError,
    RateLimited,
    ReadTimeout,
    ServerError,
    StreamBroken,
    UnaskedCoding,
    UnreadableHead,
    UnsupportedRequest,
)
from switchpoint.gateway.providers.base import (
    Provider,
    ProviderResponse,
    Timeouts,
    TokenUsage,
    is_content_chunk,
    usage_of,
)

if TYPE_CHECKING:
    from switchpoint.gateway.providers._http import ClientPool
    from switchpoint.gateway.providers.anthropic import AnthropicProvider
    from switchpoint.gateway.providers.openai import OpenAIProvider
    from switchpoint.gateway.providers.registry import ProviderRegistry

# The adapters and their HTTP client load on use: the gateway's other modules read the shared
# types of .base (a usage, a response, the timeouts), and a gateway that calls no model (as
# switchpoint feedback and learn open one) never loads httpx.
_LAZY = {"ClientPool": "_http", "AnthropicProvider": "anthropic",
         "OpenAIProvider": "openai", "ProviderRegistry": "registry"}


__getattr__ = names_on_use(__name__, _LAZY)


__all__ = [
    "AnthropicProvider",
    "AuthError",
    "BadRequest",
    "ClientPool",
    "ConnectError",
    "ContentFiltered",
    "ContextLengthExceeded",
    "FirstTokenTimeout",
    "MalformedResponse",
    "MissingApiKey",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "ProviderRegistry",
    "ProviderResponse",
    "RateLimited",
    "ReadTimeout",
    "ServerError",
    "StreamBroken",
    "Timeouts",
    "TokenUsage",
    "UnaskedCoding",
    "UnreadableHead",
    "UnsupportedRequest",
    "is_content_chunk",
    "usage_of",
]
