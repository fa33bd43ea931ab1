"""Provider adapters for the gateway: one upstream API dialect each, OpenAI wire format out.

    pool = ClientPool()                      # one per app; ``await pool.aclose()`` on shutdown
    providers = ProviderRegistry(pool)       # by the wire format of card.provider (see
    provider = providers.for_card(card)      # switchpoint.known_providers): Messages API or
                                             # OpenAI-compatible
    answer = await provider.complete(request, card, Timeouts())
"""

from __future__ import annotations

from collections.abc import Mapping

from switchpoint.catalog import ModelCard
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
from switchpoint.gateway.providers._http import ClientPool
from switchpoint.gateway.providers.anthropic import AnthropicProvider
from switchpoint.gateway.providers.base import (
    Provider,
    ProviderResponse,
    Timeouts,
    TokenUsage,
    is_content_chunk,
    usage_of,
)
from switchpoint.gateway.providers.openai import OpenAIProvider
from switchpoint.known_providers import spec_of


class ProviderRegistry:
    """Which adapter serves a card: the one for its provider's wire format in
    :data:`~switchpoint.known_providers.KNOWN_PROVIDERS` (a name not there, possible for cards
    built in code, is OpenAI-compatible).

    ``overrides`` maps provider names (or catalog model names, checked first) to adapters,
    which is how tests and custom upstreams plug in.
    """

    def __init__(self, pool: ClientPool, *, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Provider] | None = None) -> None:
        self.pool = pool
        self.openai: Provider = OpenAIProvider(pool, env=env)
        self.anthropic: Provider = AnthropicProvider(pool, env=env)
        self.overrides = dict(overrides or {})

    def for_card(self, card: ModelCard) -> Provider:
        if card.name in self.overrides:
            return self.overrides[card.name]
        if card.provider in self.overrides:
            return self.overrides[card.provider]
        if spec_of(card).wire == "anthropic":
            return self.anthropic
        return self.openai

    __call__ = for_card


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
