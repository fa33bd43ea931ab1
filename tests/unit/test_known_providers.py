"""The provider table decides where a model's requests go, with which key and which adapter:
a model that names a provider and no ``base_url`` reaches that provider, never OpenAI."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from switchpoint.catalog import ModelCard
from switchpoint.errors import MissingApiKey, UnsupportedRequest
from switchpoint.gateway.providers import ClientPool, ProviderRegistry, Timeouts
from switchpoint.gateway.providers.anthropic import AnthropicProvider
from switchpoint.known_providers import (
    KNOWN_PROVIDERS,
    OPENAI_COMPATIBLE,
    infer_provider,
    provider_problem,
    provider_spelling,
)

pytestmark = pytest.mark.anyio

REQUEST = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
OPENAI_ANSWER = {"id": "c", "object": "chat.completion", "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
ANTHROPIC_ANSWER = {"id": "msg", "type": "message", "role": "assistant", "model": "m",
                    "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 1, "output_tokens": 1}}


def recording_registry(env: dict[str, str]) -> tuple[ProviderRegistry, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = ANTHROPIC_ANSWER if request.url.path.endswith("/messages") else OPENAI_ANSWER
        return httpx.Response(200, json=body)

    pool = ClientPool(transport=httpx.MockTransport(answer))
    return ProviderRegistry(pool, env=env), seen


@pytest.mark.parametrize("name", [n for n in KNOWN_PROVIDERS if n != OPENAI_COMPATIBLE])
async def test_a_model_naming_a_provider_goes_to_that_providers_url_with_its_key(
        name: str) -> None:
    spec = KNOWN_PROVIDERS[name]
    env = {spec.api_key_env: f"key-of-{name}"} if spec.api_key_env else {}
    registry, seen = recording_registry(env)
    card = ModelCard(f"{name}-model", provider=name)
    provider = registry.for_card(card)
    assert isinstance(provider, AnthropicProvider) == (spec.wire == "anthropic")
    answer = await provider.complete(REQUEST, card, Timeouts())
    assert answer.body["choices"][0]["message"]["content"] == "ok"
    (request,) = seen
    assert spec.base_url is not None
    endpoint = "/v1/messages" if spec.wire == "anthropic" else "/chat/completions"
    assert str(request.url) == spec.base_url.rstrip("/") + endpoint
    assert json.loads(request.content)["model"] == f"{name}-model"
    sent_key = request.headers.get("x-api-key") or request.headers.get("authorization")
    if spec.api_key_env is None:
        assert sent_key is None  # a local server: no key
    else:
        assert sent_key in (f"key-of-{name}", f"Bearer key-of-{name}")


async def test_a_providers_key_is_required_at_its_url_and_never_sent_elsewhere() -> None:
    registry, seen = recording_registry({"GROQ_API_KEY": "gsk"})
    with pytest.raises(MissingApiKey, match="MISTRAL_API_KEY"):
        await registry.for_card(ModelCard("m", provider="mistral")).complete(
            REQUEST, ModelCard("m", provider="mistral"), Timeouts())
    assert seen == []
    proxy = ModelCard("g", provider="groq", base_url="http://127.0.0.1:9/v1")
    await registry.for_card(proxy).complete(REQUEST, proxy, Timeouts())
    assert "authorization" not in seen[0].headers  # a URL of the model's own: no implied key


async def test_a_model_without_any_url_fails_loudly_instead_of_going_to_openai() -> None:
    registry, seen = recording_registry({})
    card = ModelCard("local", provider=OPENAI_COMPATIBLE)
    with pytest.raises(UnsupportedRequest) as refused:
        await registry.for_card(card).complete(REQUEST, card, Timeouts())
    assert (f'no base_url: provider "{OPENAI_COMPATIBLE}" has no default URL; set the model\'s '
            "base_url") in str(refused.value)
    assert seen == []


@pytest.mark.parametrize(("field", "value", "said"), [
    ("read_s", np.float64(0.0), "Timeouts.read_s must be a finite number > 0, got 0.0"),
    ("connect_s", "5", 'Timeouts.connect_s must be a finite number > 0, got "5"'),
    ("max_response_bytes", None, "Timeouts.max_response_bytes must be an integer > 0, got null"),
])
def test_a_timeout_out_of_range_is_shown_as_every_number_is(field: str, value: object,
                                                            said: str) -> None:
    """What a Timeouts field was given is shown by the one rule of a value in a message: it
    was its repr (np.float64(0.0), '5', None)."""
    with pytest.raises(ValueError) as refused:
        Timeouts(**{field: value})  # type: ignore[arg-type]
    assert str(refused.value) == said


def test_provider_names_and_inference() -> None:
    assert provider_spelling(" Groq ") == "groq" and provider_problem("groq") is None
    assert provider_spelling("open-router") == "open-router"
    assert 'did you mean "openrouter"' in str(provider_problem("open-router"))
    assert infer_provider(None) == "openai"
    assert infer_provider("https://openrouter.ai/api/v1/") == "openrouter"
    assert infer_provider("http://localhost:11434/v1") == "ollama"
    assert infer_provider("http://127.0.0.1:9100/v1") == OPENAI_COMPATIBLE
