"""Which adapter serves a model card: :class:`ProviderRegistry`, over one :class:`ClientPool`."""

from __future__ import annotations

from collections.abc import Mapping

from switchpoint.catalog import ModelCard
from switchpoint.gateway.providers._http import ClientPool
from switchpoint.gateway.providers.anthropic import AnthropicProvider
from switchpoint.gateway.providers.base import Provider
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
