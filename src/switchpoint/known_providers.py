"""The upstream providers a catalog model may name, each with its default URL, wire format, key
variable and whether it accepts ``stream_options.include_usage``.

One table, read by the config validation (``models[i].provider`` must be one of these names) and
by the gateway's :class:`~switchpoint.gateway.providers.ProviderRegistry` (which adapter speaks
to it) and adapters (where to send, which key to send)::

    provider           base URL                                   key variable       stream usage
    openai             https://api.openai.com/v1                  OPENAI_API_KEY     asked
    anthropic          https://api.anthropic.com  (Messages API)  ANTHROPIC_API_KEY  (always)
    mistral            https://api.mistral.ai/v1                  MISTRAL_API_KEY    sent unasked
    ...                (see KNOWN_PROVIDERS)
    ollama             http://localhost:11434/v1                  none (local)       asked
    openai-compatible  base_url required                          none               asked

Rules, for a model that leaves them out:

- ``base_url``: the provider's URL (``openai-compatible`` has none: ``base_url`` is required).
- ``api_key_env``: the provider's usual variable, **only while the model goes to the provider's
  own URL**; a model with a ``base_url`` of its own (a proxy, a local server, a test double) gets
  no key unless ``api_key_env`` names one, so a well-known key never travels to a host the config
  did not associate it with. Local servers (ollama, vllm, lmstudio) need none.
- ``stream_usage``: whether a stream asks the upstream for ``stream_options.include_usage``
  (the gateway's token and cost accounting needs the usage it brings): true, but for the
  providers known to reject the field (mistral) or to report usage unasked (openrouter,
  fireworks). A model that refuses the field with an error naming it is asked again at once
  without it and not asked with it again (see the OpenAI adapter); ``stream_usage: false``
  skips that first try.
- ``provider`` itself: ``openai`` when the model gives no ``base_url``; with one, the known
  provider whose URL it is, else ``openai-compatible``.
"""

from __future__ import annotations

import difflib
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from switchpoint._messages import header_value_problem, json_quoted, one_of
from switchpoint._redact import redact_url

if TYPE_CHECKING:
    from switchpoint.catalog import ModelCard

Wire = Literal["openai", "anthropic"]
OPENAI_COMPATIBLE = "openai-compatible"


@dataclass(frozen=True)
class ProviderSpec:
    """One known provider. ``base_url`` None: the model must give its own."""

    name: str
    base_url: str | None
    api_key_env: str | None
    wire: Wire = "openai"
    stream_usage: bool = True


# The URLs are the ones each provider's own API / OpenAI-compatibility documentation gives.
KNOWN_PROVIDERS: dict[str, ProviderSpec] = {spec.name: spec for spec in (
    ProviderSpec("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    # The Messages API reports usage in its own events; stream_options does not apply.
    ProviderSpec("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY",
                 wire="anthropic", stream_usage=False),
    # Rejects stream_options (422 extra_forbidden) and sends usage in its last chunk anyway.
    ProviderSpec("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", stream_usage=False),
    ProviderSpec("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    ProviderSpec("together", "https://api.together.ai/v1", "TOGETHER_API_KEY"),
    ProviderSpec("deepseek", "https://api.deepseek.com", "DEEPSEEK_API_KEY"),
    # Both report usage in the last chunk of every stream without being asked.
    ProviderSpec("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY",
                 stream_usage=False),
    ProviderSpec("fireworks", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY",
                 stream_usage=False),
    ProviderSpec("perplexity", "https://api.perplexity.ai", "PERPLEXITY_API_KEY"),
    ProviderSpec("xai", "https://api.x.ai/v1", "XAI_API_KEY"),
    ProviderSpec("ollama", "http://localhost:11434/v1", None),
    ProviderSpec("vllm", "http://localhost:8000/v1", None),
    ProviderSpec("lmstudio", "http://localhost:1234/v1", None),
    ProviderSpec(OPENAI_COMPATIBLE, None, None),
)}


def known_names() -> str:
    """The provider names, for messages."""
    return one_of(KNOWN_PROVIDERS)


def provider_spelling(value: object) -> object:
    """``value`` as the known provider name it spells in another case or with spaces around
    it (a config's ``OpenAI``), else unchanged (for :func:`provider_problem` to judge)."""
    if isinstance(value, str) and value.strip().lower() in KNOWN_PROVIDERS:
        return value.strip().lower()
    return value


def provider_problem(value: str) -> str | None:
    """Why ``value`` is no known provider's name (as :data:`KNOWN_PROVIDERS` spells it), naming
    them and the closest, else None."""
    if value in KNOWN_PROVIDERS:
        return None
    close = difflib.get_close_matches(value.strip().lower(), list(KNOWN_PROVIDERS), n=1)
    hint = f" (did you mean {json_quoted(close[0])}?)" if close else ""
    return (f"{json_quoted(value)} is not a known provider{hint}; use one of {known_names()} "
            f"({json_quoted(OPENAI_COMPATIBLE)} needs a base_url)")


def infer_provider(base_url: str | None) -> str:
    """The provider of a model that names none: ``openai`` without a ``base_url``; with one,
    the known provider whose URL it is, else ``openai-compatible``."""
    if base_url is None:
        return "openai"
    for spec in KNOWN_PROVIDERS.values():
        if spec.base_url is not None and _same_url(spec.base_url, base_url):
            return spec.name
    return OPENAI_COMPATIBLE


def spec_of(card: ModelCard) -> ProviderSpec:
    """The card's provider (an unknown name, which no catalog takes, is treated as
    ``openai-compatible``)."""
    return KNOWN_PROVIDERS.get(card.provider.lower(), KNOWN_PROVIDERS[OPENAI_COMPATIBLE])


def base_url_of(card: ModelCard) -> str | None:
    """Where the card's requests go: its ``base_url``, else its provider's (None: neither)."""
    return card.base_url or spec_of(card).base_url


def api_key_env_of(card: ModelCard) -> str | None:
    """The variable holding the card's key: ``api_key_env``, else the provider's usual one while
    the card goes to the provider's own URL; None: send no key."""
    if card.api_key_env:
        return card.api_key_env
    spec = spec_of(card)
    if spec.api_key_env is None:
        return None
    if card.base_url is not None and not (spec.base_url and _same_url(spec.base_url,
                                                                      card.base_url)):
        return None
    return spec.api_key_env


def api_key_problem(key: str) -> str | None:
    """Why ``key`` (without the whitespace around it) cannot be sent to a provider, or None:
    :func:`~switchpoint._messages.header_value_problem`, with what to do."""
    problem = header_value_problem(key)
    if problem is None:
        return None
    return f"{problem}: an API key is printable ASCII; export the key as its provider issued it"


def userinfo_displaces_key(card: ModelCard) -> str | None:
    """Why ``card`` cannot send the key it is configured with, or None: its ``base_url``
    carries a user (and password), which the HTTP client sends as Basic authentication in
    the ``Authorization`` header, and its provider speaks the OpenAI wire format, which sends
    its key in that same header as a Bearer token: the Basic header replaces it, so the key
    never reaches the upstream. (The Messages API takes its key in ``x-api-key``: both go,
    as a proxy that asks for a password in front of the provider needs.)"""
    if card.base_url is None or spec_of(card).wire != "openai":
        return None
    userinfo, at, _ = urllib.parse.urlsplit(card.base_url).netloc.rpartition("@")
    var = api_key_env_of(card)
    if not at or var is None:
        return None
    which = "a user and password" if ":" in userinfo else "a user"
    return (f"carries {which} ({json_quoted(redact_url(card.base_url))}), which "
            "the HTTP client sends as Basic authentication in the Authorization header, "
            f"replacing the Bearer key from {var} (api_key_env) that provider "
            f"{json_quoted(card.provider)} sends there, so the key would never reach the "
            f"upstream: keep one of the two, the key (take {which} out of base_url) or "
            "the password (leave api_key_env out)")


def stream_usage_of(card: ModelCard) -> bool:
    """Whether a stream asks the card's upstream for ``stream_options.include_usage``."""
    if card.stream_usage is not None:
        return card.stream_usage
    return spec_of(card).stream_usage


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


__all__ = ["KNOWN_PROVIDERS", "OPENAI_COMPATIBLE", "ProviderSpec", "api_key_env_of",
           "base_url_of", "infer_provider", "known_names", "provider_problem",
           "provider_spelling", "spec_of", "stream_usage_of", "userinfo_displaces_key"]
