"""The small edges a hostile caller found at the service's doors: a sampling setting that is
a boolean, text in a header that is not ASCII, a session id holding control characters, an
integer of thousands of digits, values quoted in Python's spelling, a long name cut short
without saying so, and a documentation page that needed the network."""

from __future__ import annotations

import httpx
import pytest

from tests.attack.attack_env import Attacked, chat_body
from tests.fakes.fake_provider import FakeProviderProcess

# The sampling settings, each a number; the whole ones too.
SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p",
            "repetition_penalty", "seed", "top_k", "top_logprobs", "n", "max_tokens",
            "max_completion_tokens")


@pytest.mark.parametrize("model", ["alpha", "gamma", "auto"])  # (gamma: the Messages API)
@pytest.mark.parametrize("field", SAMPLING)
@pytest.mark.parametrize("value", [True, False, "0.5"])
def test_a_sampling_setting_that_is_no_number_is_refused_before_routing(
        attacked: Attacked, fake: FakeProviderProcess, model: str, field: str,
        value: object) -> None:
    """The Anthropic adapter read temperature: true as 1.0 and sent it; every adapter now gets
    only numbers, and the request is refused before anything is routed, held or sent."""
    r = httpx.post(f"{attacked.base}/v1/chat/completions",
                   json=chat_body("hi", model, **{field: value}), timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: must be "), error
    assert "x-switchpoint-request-id" not in r.headers  # nothing was routed
    assert fake.requests() == []


def test_a_sampling_setting_that_is_a_number_is_sent_as_it_was(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    r = httpx.post(f"{attacked.base}/v1/chat/completions",
                   json=chat_body("hi", "alpha", temperature=0, top_p=1, seed=7, top_k=3,
                                  presence_penalty=-0.5), timeout=10)
    assert r.status_code == 200, r.text
    sent = fake.requests()[-1]["body"]
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["top_k"],
            sent["presence_penalty"]) == (0, 1, 7, 3, -0.5)
