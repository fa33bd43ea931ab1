"""A catalog model with ``auto: false`` (a judge the labelling runs call by name) is served
only when a request names it: routing, exploration, escalation and an experiment's arm never
choose it, though it is the cheapest and the strongest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from switchpoint.config import load_settings
from switchpoint.server import create_app
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text
from tests.integration.servers import ThreadServer, thread_server


def _config(fake: FakeProviderProcess, root: Path) -> str:
    text = config_text(fake, data_dir=str(root / "data"))
    # Free and as strong as the strongest model: without `auto: false`, routing at any λ,
    # escalation to the least expected error and exploration would all send traffic to it.
    grader = (f'  - {{name: grader, profile: gpt-4-1106-preview, base_url: '
              f'"{fake.openai_base_url}", input_per_mtok: 0, output_per_mtok: 0, '
              "auto: false}\n")
    text = text.replace("data_dir:", grader + "data_dir:", 1)
    return text + """learning: {exploration: 1.0, seed: 3}
escalation: {low_confidence_threshold: 1.0, strategy: always}
experiments:
  judge-arm:
    arms:
      control: {}
      cost-blind: {cost_weight: 0}
"""


@pytest.fixture
def server(gw_fake: FakeProviderProcess, tmp_path: Path) -> Iterator[ThreadServer]:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(_config(gw_fake, tmp_path), encoding="utf-8")
    settings = load_settings(config, environ={})
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as running:
        yield running


PROMPTS = ["What is 2 + 2?", "Prove that there are infinitely many primes.",
           "Write a haiku about the sea.", "Translate 'good morning' into French.",
           "Explain how a hash map works.", "What is the capital of Peru?"]


def test_a_model_kept_out_of_auto_is_never_chosen_but_is_served_when_named(
        server: ThreadServer) -> None:
    chat = client(server).chat.completions
    answered = []
    for i, prompt in enumerate(PROMPTS * 2):
        raw = chat.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": prompt}],
            extra_headers={"x-switchpoint-cost-weight": ["0", "1000"][i % 2],
                           "x-session-id": f"s{i}"})
        answered.append(raw.parse().model)
        reasoning = raw.headers.get("x-switchpoint-reasoning", "")
        assert "grader" not in raw.headers.get("x-switchpoint-model", "")
        assert "escalated to grader" not in reasoning
    assert "grader" not in answered and len(answered) == 12

    # Named, it answers (and a session it answered in is not pinned to it for `auto`).
    named = chat.with_raw_response.create(
        model="grader", messages=[{"role": "user", "content": PROMPTS[0]}],
        extra_headers={"x-session-id": "judged"})
    assert named.parse().model == "grader"
    again = chat.create(model="auto", messages=[{"role": "user", "content": PROMPTS[0]}],
                        extra_headers={"x-session-id": "judged"})
    assert again.model != "grader"

    # A candidate list naming only it leaves `auto` nothing, and says why.
    with pytest.raises(openai.BadRequestError) as refused:
        chat.create(model="auto", messages=[{"role": "user", "content": PROMPTS[0]}],
                    extra_body={"models": ["grader"]})
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "models"
    assert body["message"] == ("models: \"grader\" is never chosen by routing (auto: false in "
                               "the catalog: served only when a request names it as its model); "
                               "list a model routing may choose")
    # Over HTTP, the body's list is told from the header's by the header's name.
    with pytest.raises(openai.BadRequestError) as disjoint:
        chat.create(model="auto", messages=[{"role": "user", "content": PROMPTS[0]}],
                    extra_body={"models": ["fresh"]},
                    extra_headers={"x-switchpoint-models": "cheap"})
    body = disjoint.value.body
    assert isinstance(body, dict) and body["param"] == "models"
    assert body["message"] == ('models: none of "fresh" is in the models auto may choose that '
                               'x-switchpoint-models lists ("cheap"); list one of those')
    # Listed beside others, it is passed over.
    mixed = chat.create(model="auto", messages=[{"role": "user", "content": PROMPTS[1]}],
                        extra_body={"models": ["grader", "cheap"]},
                        extra_headers={"x-switchpoint-cost-weight": "0"})
    assert mixed.model == "cheap"

    # The routing endpoint never offers it either.
    decision = httpx.post(f"{server.base}/v1/route", json={"prompt": PROMPTS[1],
                                                           "cost_weight": 0}, timeout=30)
    assert decision.status_code == 200, decision.text
    assert decision.json()["selected_model"] != "grader"
    assert "grader" not in decision.json()["all_scores"]
    listed = [m.id for m in client(server).models.list()]
    assert "grader" in listed  # still a model of the gateway, to name
