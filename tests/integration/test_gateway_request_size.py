"""The in-process door bounds a request's size as the HTTP door does: a call whose body (as the
JSON the HTTP door would receive) is over ``max_request_bytes`` is refused naming the argument
and the limit, before anything is routed, sent upstream, logged or charged; one just under it
is answered. The HTTP door's own refusal of the same request is in test_gateway_doors.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from switchpoint import Gateway, Router
from switchpoint.config import Settings
from switchpoint.errors import InvalidInputError
from switchpoint.governance.keys import KeySpec
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS

LIMIT = 4096  # max_request_bytes here (the least the config takes is 1024)


@pytest.fixture
def gateway(gw_fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Gateway]:
    settings = {
        "models": [{"name": "good", "profile": "gpt-4-1106-preview",
                    "base_url": gw_fake.openai_base_url, "input_per_mtok": 10,
                    "output_per_mtok": 30, "context_window": 128000},
                   {"name": "cheap", "profile": "gpt-3.5-turbo-1106",
                    "base_url": gw_fake.openai_base_url, "input_per_mtok": 0.5,
                    "output_per_mtok": 1.5, "context_window": 16000}],
        "data_dir": str(tmp_path / "data"), "max_request_bytes": LIMIT,
        "tenants": {"acme": {"budgets": ["1/day"]}}}
    with Gateway.from_config(settings, loader=FACTORY, env=KEYS) as made:
        yield made


def key_of(gateway: Gateway) -> str:
    return gateway.governor.keys.create(KeySpec(tenant="acme").checked(["acme"], None)).key


def spent(gateway: Gateway) -> float:
    return float(sum(b["spent_usd"] for b in gateway.budget_status()))


def body_bytes(body: dict[str, Any]) -> int:
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


BIG = [{"role": "user", "content": "é" * LIMIT}]  # (two bytes a character)
MANY = [{"role": "user", "content": "hi"}] * 5000


def run_stream(gateway: Gateway, messages: list[Any], **kw: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in gateway.stream(messages, **kw)
                   if c.choices)


def run_astream(gateway: Gateway, messages: list[Any], **kw: Any) -> str:
    async def read() -> str:
        stream = await gateway.astream(messages, **kw)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    return asyncio.run(read())


DOORS: dict[str, Callable[..., Any]] = {
    "complete": lambda gw, messages, **kw: gw.complete(messages, **kw),
    "stream": run_stream,
    "acomplete": lambda gw, messages, **kw: asyncio.run(gw.acomplete(messages, **kw)),
    "astream": run_astream,
}


def assert_untouched(gateway: Gateway, fake: FakeProviderProcess) -> None:
    """Nothing was sent upstream, logged, routed or charged."""
    assert gateway.store is not None
    assert fake.requests() == []
    assert gateway.store.requests(10)[0] == []
    assert gateway.store.decisions(10) == []
    assert spent(gateway) == 0
    assert gateway.router.stats.total_requests == 0


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("messages", [BIG, MANY], ids=["a big message", "many messages"])
def test_a_chat_request_over_the_limit_is_refused_before_anything_is_done(
        gateway: Gateway, gw_fake: FakeProviderProcess, door: str,
        messages: list[Any]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        DOORS[door](gateway, messages, key=key_of(gateway), max_tokens=20)
    error = caught.value
    assert error.field == "messages"
    size = body_bytes({"model": "auto", "messages": messages, "max_tokens": 20}
                      | ({"stream": True} if "stream" in door else {}))
    if messages is BIG:
        assert f"is {size} bytes" in error.reason
    else:  # (a long list is measured a part at a time, only until it passes the limit)
        measured = re.search(r"is at least (\d+) bytes", error.reason)
        assert measured is not None and LIMIT < int(measured[1]) < size
    assert f"over the limit of {LIMIT} bytes (max_request_bytes in the config)" in error.reason
    assert "raise max_request_bytes in the config" in error.reason
    assert_untouched(gateway, gw_fake)


def test_the_largest_field_is_named_and_a_long_list_is_measured_only_past_the_limit(
        gateway: Gateway, gw_fake: FakeProviderProcess) -> None:
    with pytest.raises(InvalidInputError) as caught:
        gateway.complete([{"role": "user", "content": "hi"}], user="u" * LIMIT)
    assert caught.value.field == "user"
    # 200,000 messages: measured a part at a time, so the error says how much was measured
    with pytest.raises(InvalidInputError, match=r"is at least \d+ bytes \(messages holds at "
                                                r"least \d+ of them\)") as caught:
        gateway.complete([{"role": "user", "content": "hi"}] * 200_000)
    assert caught.value.field == "messages"
    assert_untouched(gateway, gw_fake)


@pytest.mark.parametrize("door", ["complete", "astream"])
def test_a_chat_request_at_the_limit_is_answered_and_one_byte_more_is_not(
        gateway: Gateway, gw_fake: FakeProviderProcess, door: str) -> None:
    key = key_of(gateway)
    extra = {"stream": True} if door == "astream" else {}
    shell = body_bytes({"model": "auto", "messages": [{"role": "user", "content": ""}],
                        "max_tokens": 20, **extra})
    at_limit = [{"role": "user", "content": "x" * (LIMIT - shell)}]
    over = [{"role": "user", "content": "x" * (LIMIT - shell + 1)}]
    with pytest.raises(InvalidInputError, match=f"is {LIMIT + 1} bytes"):
        DOORS[door](gateway, over, key=key, max_tokens=20)
    assert_untouched(gateway, gw_fake)
    answer = DOORS[door](gateway, at_limit, key=key, max_tokens=20)
    assert answer
    assert len(gw_fake.requests()) == 1
    assert gateway.store is not None and len(gateway.store.requests(10)[0]) == 1
    assert spent(gateway) > 0


def test_a_routing_request_over_the_limit_is_refused_before_it_is_routed(
        gateway: Gateway, gw_fake: FakeProviderProcess) -> None:
    with pytest.raises(InvalidInputError) as caught:
        gateway.route("x" * LIMIT, key=key_of(gateway))
    assert caught.value.field == "prompt"
    assert f"is {body_bytes({'prompt': 'x' * LIMIT})} bytes" in caught.value.reason
    assert "the router reads only its last part" in caught.value.reason
    with pytest.raises(InvalidInputError, match="embedding"):
        gateway.route(embedding=[0.1] * LIMIT)
    # route_and_execute routes through the gateway: its prompt and messages are bounded too
    with pytest.raises(InvalidInputError) as caught:
        gateway.router.route_and_execute("x" * LIMIT)
    assert caught.value.field == "prompt"
    with pytest.raises(InvalidInputError) as caught:
        gateway.router.route_and_execute("hi", MANY)
    assert caught.value.field == "messages"
    assert_untouched(gateway, gw_fake)
    shell = body_bytes({"prompt": ""})
    decision = gateway.route("x" * (LIMIT - shell))
    assert decision.selected_model in ("good", "cheap")
    assert gateway.store is not None and len(gateway.store.decisions(10)) == 1


def test_a_comparison_over_the_limit_is_refused_before_any_model_is_asked(
        gateway: Gateway, gw_fake: FakeProviderProcess) -> None:
    with pytest.raises(InvalidInputError) as caught:
        gateway.compare(prompt="x" * LIMIT, models=["good", "cheap"])
    assert caught.value.field == "prompt"
    with pytest.raises(InvalidInputError) as caught:
        gateway.compare(MANY, models=["good", "cheap"])
    assert caught.value.field == "messages"
    # every field the body would hold is measured, not only the prompt, messages and models
    fields: list[tuple[str, Any]] = [("tenant", "t" * LIMIT), ("metadata", {"note": "m" * LIMIT}),
                                     ("user", "u" * LIMIT), ("stop", ["s" * 1000] * 5)]
    for field, value in fields:
        with pytest.raises(InvalidInputError) as caught:
            gateway.compare(prompt="hi", models=["good", "cheap"], **{field: value})
        assert caught.value.field == field
        assert f"over the limit of {LIMIT} bytes (max_request_bytes" in caught.value.reason
    assert_untouched(gateway, gw_fake)


def test_a_gateway_routes_every_prompt_its_body_limit_takes_whatever_its_loader_built(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A router takes prompts of a bounded length; the routers a gateway routes with take
    at least as many characters as its max_request_bytes takes bytes (here past the 64 the
    loader built them to take), so what its body limit takes is routed."""
    def short(settings: Settings, policy: str | None) -> Router:
        router = FACTORY(settings, policy)
        router.max_prompt_chars = 64
        return router

    settings = {"models": [{"name": name, "profile": profile, "base_url": gw_fake.openai_base_url,
                            "input_per_mtok": 1, "output_per_mtok": 2, "context_window": 16000}
                           for name, profile in (("good", "gpt-4-1106-preview"),
                                                 ("cheap", "gpt-3.5-turbo-1106"))],
                "data_dir": str(tmp_path / "data"), "max_request_bytes": LIMIT}
    with Gateway.from_config(settings, loader=short, env=KEYS) as gateway:
        assert gateway.router.max_prompt_chars == LIMIT
        prompt = "x" * (LIMIT - body_bytes({"prompt": ""}))
        assert gateway.route(prompt).selected_model in ("good", "cheap")
        shell = body_bytes({"model": "auto", "messages": [{"role": "user", "content": ""}]})
        answer = gateway.complete([{"role": "user", "content": "y" * (LIMIT - shell)}])
        assert answer.switchpoint.routed_model in ("good", "cheap")


# (far past what a body of LIMIT bytes holds: read this far, an argument was read whole)
READ_WHOLE = 100 * LIMIT


class EndlessMessage(Mapping[str, str]):
    """A message whose fields never end (as a lazily made mapping may): read past
    READ_WHOLE, it fails the test rather than filling the memory."""

    def __getitem__(self, key: str) -> str:
        return "x"

    def __len__(self) -> int:
        return 2

    def __iter__(self) -> Iterator[str]:
        for i in range(READ_WHOLE):
            yield f"k{i}"
        raise AssertionError("the message was read whole")


class EndlessMessages(Sequence[Any]):
    """Messages that never end (a __getitem__ that never says IndexError), as above."""

    def __getitem__(self, i: Any) -> Any:
        if i >= READ_WHOLE:
            raise AssertionError("the messages were read whole")
        return {"role": "user", "content": "hi"}

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("messages", [[EndlessMessage()], EndlessMessages()],
                         ids=["a message", "the messages"])
def test_messages_that_never_end_are_read_only_past_the_limit(
        gateway: Gateway, gw_fake: FakeProviderProcess, messages: Any) -> None:
    """A message mapping whose keys never ended, or a sequence of messages that never
    ended, was copied whole before the body was measured: the call filled the memory until
    the process was killed. They are read only until they pass the limit, and refused."""
    calls: list[Callable[[], object]] = [
        lambda: gateway.complete(messages),
        lambda: gateway.compare(messages, models=["good", "cheap"])]
    for call in calls:
        with pytest.raises(InvalidInputError) as caught:
            call()
        assert caught.value.field.startswith("messages")
    assert_untouched(gateway, gw_fake)
