"""needs_of and filter_candidates: images, tools, token estimates, the last user turn."""

from __future__ import annotations

import json
import math

import pytest

from switchpoint.catalog import (
    Catalog,
    ModelCard,
    estimate_tokens,
    json_bytes,
    text_bytes,
    text_tokens,
)
from switchpoint.gateway.capabilities import (
    IMAGE_TOKENS,
    TOKENS_PER_MESSAGE,
    Needs,
    anthropic_image_refusal,
    common_field,
    filter_candidates,
    function_results,
    needs_of,
    too_long,
)
from switchpoint.gateway.parsing import IMAGE_PART_TYPES, PART_TYPES

BIG_IMAGE = "data:image/png;base64," + "A" * 400_000


def test_plain_string_conversation() -> None:
    req = {"messages": [{"role": "system", "content": "x" * 40},
                        {"role": "user", "content": "y" * 80},
                        {"role": "assistant", "content": "z" * 4},
                        {"role": "user", "content": "What is 2+2?"}]}
    n = needs_of(req)
    assert n == Needs(vision=False, tools=False,
                      prompt_tokens=math.ceil((40 + 80 + 4 + 12) / 4) + 4 * TOKENS_PER_MESSAGE,
                      last_user_text="What is 2+2?",
                      parts=frozenset({("system", "text"), ("user", "text"),
                                       ("assistant", "text")}))


def test_text_in_other_scripts_counts_its_utf8_bytes() -> None:
    # Tokenizers split CJK text into about a token a character: counted at its 3 bytes a
    # character, 4 a token, a CJK prompt is not estimated at a quarter of its tokens.
    cjk = "请详细解释量子计算的基本原理" * 10  # (140 characters, 420 bytes)
    assert text_bytes(cjk) == 420 and estimate_tokens(cjk) == 105
    req = {"messages": [{"role": "user", "content": cjk},
                        {"role": "user", "content": [{"type": "text", "text": cjk}]}]}
    assert needs_of(req).prompt_tokens == 2 * 105 + 2 * TOKENS_PER_MESSAGE
    # ASCII text counts as it did, a byte a character; other scripts their bytes.
    assert text_bytes("What is 2+2?") == 12 and estimate_tokens("What is 2+2?") == 3
    assert [text_bytes(t) for t in ("Привет", "γειά", "مرحبا", "🙂")] == [12, 8, 10, 4]
    assert text_tokens(0) == 0 and estimate_tokens("") == 1


def test_a_lone_surrogate_is_counted_not_raised_on() -> None:
    # A lone surrogate (a JSON "\ud800" reads as one) is not UTF-8, but it counts its 3
    # bytes rather than raising, in a prompt and any text.
    assert text_bytes("a\ud800b") == 5 and estimate_tokens("\udfff") == 1
    req = {"messages": [{"role": "user", "content": "x\ud800" * 4}]}
    assert needs_of(req).prompt_tokens == text_tokens(16) + TOKENS_PER_MESSAGE


def test_json_in_a_prompt_counts_its_characters_utf8_bytes_not_their_escapes() -> None:
    # Tool definitions, tool calls and a legacy function_call count the UTF-8 bytes of their
    # JSON with each character as itself (你 its 3 bytes, not the 6 of a \u4f60 escape);
    # ASCII JSON counts as it did, a lone surrogate its 3 bytes without raising.
    tools = [{"type": "function", "function": {
        "name": "search", "description": "搜索网页" * 10,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    calls = [{"id": "c1", "type": "function",
              "function": {"name": "search", "arguments": '{"q": "量子计算"}'}}]
    legacy = {"name": "search", "arguments": "\ud800"}
    req = {"messages": [{"role": "user", "content": "hi"},
                        {"role": "assistant", "content": None, "tool_calls": calls},
                        {"role": "assistant", "content": None, "function_call": legacy}],
           "tools": tools}
    # (each CJK character 3 bytes where its escape took 6; the surrogate 3 where it took 6)
    sizes = [len(json.dumps(calls)) - 4 * 3, len(json.dumps(legacy)) - 3,
             len(json.dumps(tools)) - 40 * 3]
    assert [json_bytes(calls), json_bytes(legacy), json_bytes(tools)] == sizes
    assert needs_of(req).prompt_tokens == text_tokens(2 + sum(sizes)) + 3 * TOKENS_PER_MESSAGE
    ascii_tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert json_bytes(ascii_tools) == len(json.dumps(ascii_tools))
    assert json_bytes({"a": "\ud800"}) == len('{"a": "') + 3 + 2


def test_list_content_images_and_last_user_text() -> None:
    req = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "describe"},
                                     {"type": "image_url", "image_url": {"url": BIG_IMAGE}}]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": [{"type": "text", "text": "and"},
                                     {"type": "text", "text": "its colour?"}]},
    ]}
    n = needs_of(req)
    assert n.vision is True
    assert n.last_user_text == "and\nits colour?"
    # The image costs a fixed estimate, not its base64 length.
    assert n.prompt_tokens < IMAGE_TOKENS + 100
    assert n.prompt_tokens >= IMAGE_TOKENS


@pytest.mark.parametrize("extra", [
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    {"functions": [{"name": "f"}]},
])
def test_tool_definitions_need_tools_and_count_as_tokens(extra: dict[str, object]) -> None:
    base = {"messages": [{"role": "user", "content": "hi"}]}
    plain = needs_of(base)
    with_tools = needs_of({**base, **extra})
    assert not plain.tools and with_tools.tools
    assert with_tools.prompt_tokens > plain.prompt_tokens


def test_tool_turns_in_the_history_need_tools() -> None:
    req = {"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]}
    n = needs_of(req)
    assert n.tools
    assert n.last_user_text == "weather?"


def test_answer_budget_is_reported() -> None:
    assert needs_of({"messages": [], "max_tokens": 500}).output_tokens == 500
    assert needs_of({"messages": [], "max_completion_tokens": 70}).output_tokens == 70
    assert needs_of({"messages": []}).output_tokens == 0


def test_odd_requests_do_not_crash() -> None:
    for req in ({}, {"messages": "nope"}, {"messages": [None, 3, {"role": "user"}]}):
        n = needs_of(req)
        assert not n.vision and n.last_user_text == ""


@pytest.fixture
def catalog() -> Catalog:
    return Catalog([
        ModelCard("plain", context_window=4_000),
        ModelCard("tools", context_window=16_000, capabilities=("tools",)),
        ModelCard("vision", context_window=128_000, capabilities=("tools", "vision")),
        ModelCard("unknown-window", capabilities=("tools",)),
    ])


def test_filter_keeps_order_and_gives_reasons(catalog: Catalog) -> None:
    n = Needs(vision=True, tools=True, prompt_tokens=10_000, last_user_text="")
    allowed, excluded = filter_candidates(
        catalog, ["plain", "tools", "vision", "unknown-window", "ghost"], n)
    assert allowed == ["vision"]
    assert set(excluded) == {"plain", "tools", "unknown-window", "ghost"}
    assert any("vision" in r for r in excluded["plain"])
    assert any("tools" in r for r in excluded["plain"])
    assert any("context window of 4000" in r for r in excluded["plain"])
    assert excluded["ghost"] == ["not in the catalog"]
    assert len(excluded["tools"]) == 1 and "vision" in excluded["tools"][0]


def test_context_check_includes_the_answer_budget(catalog: Catalog) -> None:
    n = Needs(vision=False, tools=False, prompt_tokens=3_000, last_user_text="",
              output_tokens=2_000)
    allowed, excluded = filter_candidates(catalog, ["plain", "tools", "unknown-window"], n)
    assert allowed == ["tools", "unknown-window"]
    assert "2000 for the answer" in excluded["plain"][0]


def test_a_window_the_conversation_is_known_to_outgrow_leaves_out_no_larger_models(
        catalog: Catalog) -> None:
    n = Needs(vision=False, tools=False, prompt_tokens=100, last_user_text="",
              context_floor=16_000)
    names = ["plain", "tools", "vision", "unknown-window"]
    allowed, excluded = filter_candidates(catalog, names, n)
    assert allowed == ["vision", "unknown-window"]  # (a window not given is assumed to fit)
    assert excluded["tools"] == ["a model with a context window of 16000 refused the "
                                 "conversation as too long: it would exceed its context "
                                 "window of 16000 too"]
    assert too_long(excluded["plain"]) and too_long(excluded["tools"])


def test_several_answers_are_not_for_the_messages_api() -> None:
    catalog = Catalog([ModelCard("claude", provider="anthropic"),
                       ModelCard("gpt", provider="openai"), ModelCard("local", provider="vllm")])
    user = [{"role": "user", "content": "hi"}]
    for n in (None, 1, True, "3", 0):
        assert needs_of({"messages": user, "n": n}).answers == 1
    needs = needs_of({"messages": user, "n": 3})
    assert needs.answers == 3
    allowed, excluded = filter_candidates(catalog, catalog.names, needs)
    assert allowed == ["gpt", "local"]
    assert excluded == {"claude": ["the request asks for 3 answers (n) and the Anthropic "
                                   "Messages API gives one"]}


AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
PDF = {"type": "file", "file": {"file_id": "file-abc"}}
REFUSAL = {"type": "refusal", "refusal": "No."}
PICTURE = {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}


@pytest.mark.parametrize(("message", "says"), [
    ({"role": "user", "content": [{"type": "text", "text": "hear"}, AUDIO]},
     'the request has "input_audio" parts in user messages, which the Anthropic adapter '
     'cannot send (it sends "text" and "image_url" parts in user messages)'),
    ({"role": "user", "content": [PDF]},
     'the request has "file" parts in user messages, which the Anthropic adapter cannot '
     "send"),
])
def test_parts_an_adapter_cannot_send_leave_its_models_out(message: dict[str, object],
                                                           says: str) -> None:
    catalog = Catalog([ModelCard("claude", provider="anthropic", capabilities=("vision",)),
                       ModelCard("gpt", provider="openai", capabilities=("vision",)),
                       ModelCard("local", provider="vllm", capabilities=("vision",))])
    needs = needs_of({"messages": [{"role": "user", "content": "hi"}, message]})
    allowed, excluded = filter_candidates(catalog, catalog.names, needs)
    assert allowed == ["gpt", "local"]
    assert list(excluded) == ["claude"] and excluded["claude"][0].startswith(says), excluded


def test_parts_every_adapter_sends_leave_no_model_out() -> None:
    catalog = Catalog([ModelCard("claude", provider="anthropic", capabilities=("vision", "tools")),
                       ModelCard("gpt", provider="openai", capabilities=("vision", "tools"))])
    needs = needs_of({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": [{"type": "text", "text": "see"}, PICTURE]},
        {"role": "assistant", "content": [{"type": "text", "text": "a cat"}, REFUSAL]},
        {"role": "assistant", "content": None, "function_call": {"name": "f"}},
        {"role": "function", "name": "f", "content": "42"},
        {"role": "user", "content": "ok"}]})
    assert filter_candidates(catalog, catalog.names, needs) == (["claude", "gpt"], {})


def test_only_the_image_part_type_the_request_check_takes_counts_as_an_image() -> None:
    # Part types the request check refuses are not images (nor are they sent anywhere).
    assert {"image_url"} == IMAGE_PART_TYPES
    taken = {kind for kinds in PART_TYPES.values() for kind in kinds}
    assert taken >= IMAGE_PART_TYPES
    needs = needs_of({"messages": [{"role": "user", "content": [PICTURE]}]})
    assert needs.vision and needs.prompt_tokens == IMAGE_TOKENS + TOKENS_PER_MESSAGE


def test_each_function_result_answers_the_last_function_call_not_yet_answered() -> None:
    call = {"role": "assistant", "content": None, "function_call": {"name": "f"}}
    result = {"role": "function", "name": "f", "content": "42"}
    user = {"role": "user", "content": "q"}
    messages = [user, result, call, result, result, call, user, result]
    assert function_results(messages) == {1: None, 3: 2, 4: None, 7: 5}
    catalog = Catalog([ModelCard("claude", provider="anthropic", capabilities=("tools",)),
                       ModelCard("gpt", provider="openai", capabilities=("tools",))])
    needs = needs_of({"messages": messages})
    assert needs.unanswered_results == 2
    assert filter_candidates(catalog, catalog.names, needs) == (["gpt"], {"claude": [
        "the request has a function message answering no function_call before it, and the "
        "Anthropic Messages API takes a tool result only as the answer to its call"]})
    answered = needs_of({"messages": [user, call, result, user]})
    assert filter_candidates(catalog, catalog.names, answered) == (["claude", "gpt"], {})


def test_a_custom_tool_leaves_out_a_model_behind_the_anthropic_messages_api() -> None:
    """Custom tools (free-form input) are OpenAI's alone: declared or called in the history,
    they leave an Anthropic-backed model out with the reason, not refused after a hold."""
    catalog = Catalog([ModelCard("claude", provider="anthropic", capabilities=("tools",)),
                       ModelCard("gpt", provider="openai", capabilities=("tools",))])
    user = {"role": "user", "content": "q"}
    why = {"claude": ["the request declares or calls a custom tool (type custom), and the "
                      "Anthropic Messages API takes function tools only"]}
    declared = needs_of({"messages": [user], "tools": [
        {"type": "custom", "custom": {"name": "grep"}}]})
    called = needs_of({"messages": [user, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "grep", "input": "x"}}]}, user]})
    for needs in (declared, called):
        assert filter_candidates(catalog, catalog.names, needs) == (["gpt"], why)
    functions = needs_of({"messages": [user], "tools": [
        {"type": "function", "function": {"name": "f"}}]})
    assert filter_candidates(catalog, catalog.names, functions) == (["claude", "gpt"], {})


def _image(url: str) -> dict[str, object]:
    return {"role": "user", "content": [{"type": "text", "text": "see"},
                                        {"type": "image_url", "image_url": {"url": url}}]}


@pytest.mark.parametrize(("url", "says"), [
    ("data:image/svg+xml,<svg/>", "an image given as a data URL that is not base64 "
     '("image/svg+xml")'),
    ("data:image/png,%89PNG", 'an image given as a data URL that is not base64 ("image/png")'),
    ("data:image/bmp;base64,Qk0=", 'an image given as a data URL of type "image/bmp"'),
    ("data:image/svg+xml;name=a.svg;base64,PHN2Zy8+",
     'an image given as a data URL of type "image/svg+xml"'),
], ids=["svg-text", "percent-encoded", "bmp", "svg-base64-with-parameter"])
def test_a_data_url_image_the_messages_api_cannot_take_leaves_out_an_anthropic_model(
        url: str, says: str) -> None:
    """The Messages API takes base64 jpeg, png, gif and webp data only: any other data URL
    leaves an Anthropic-backed model out with the reason, not refused after a hold."""
    catalog = Catalog([ModelCard("claude", provider="anthropic", capabilities=("vision",)),
                       ModelCard("gpt", provider="openai", capabilities=("vision",))])
    needs = needs_of({"messages": [_image(url)]})
    allowed, excluded = filter_candidates(catalog, catalog.names, needs)
    assert allowed == ["gpt"]
    assert excluded == {"claude": [
        f"the request has {says}, and the Anthropic Messages API takes images as base64 data "
        'URLs of "image/jpeg", "image/png", "image/gif" or "image/webp" (or as http(s) URLs)']}


@pytest.mark.parametrize("url", [
    "data:image/png;name=cat.png;base64,iVBOR", "data:IMAGE/GIF;BASE64,R0lG",
    "data:image/webp;base64,UklGR", "data:image/jpeg;base64,/9j/", "https://x.test/a.bmp",
    # (by the type its bytes show, whatever its label says)
    "data:image/jpg;base64,/9j/4AAQ", "data:application/octet-stream;base64,iVBORw0KGgo=",
    "data:image/bmp;base64,R0lGODlh"])
def test_an_image_the_messages_api_takes_leaves_no_model_out(url: str) -> None:
    catalog = Catalog([ModelCard("claude", provider="anthropic", capabilities=("vision",)),
                       ModelCard("gpt", provider="openai", capabilities=("vision",))])
    needs = needs_of({"messages": [_image(url)]})
    assert filter_candidates(catalog, catalog.names, needs) == (["claude", "gpt"], {})


def _function(name: str) -> dict[str, object]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


TOOL_CATALOG = Catalog([ModelCard("claude", provider="anthropic", capabilities=("tools",)),
                        ModelCard("gpt", provider="openai", capabilities=("tools",)),
                        ModelCard("local", provider="vllm", capabilities=("tools",)),
                        ModelCard("compat", provider="openai-compatible",
                                  base_url="http://127.0.0.1:1/v1", capabilities=("tools",))])


@pytest.mark.parametrize(("request_fields", "refused_by"), [
    # A dotted (MCP-style) name: OpenAI's and Anthropic's APIs refuse it, wherever it is.
    ({"tools": [_function("lookup"), _function("github.search")]}, {"claude", "gpt"}),
    ({"functions": [{"name": "files/read"}]}, {"claude", "gpt"}),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {
                        "name": "fs.read", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c", "content": "ok"}]}, {"claude", "gpt"}),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                    "function_call": {"name": "fs.read", "arguments": "{}"}},
                   {"role": "function", "name": "fs.read", "content": "ok"}]}, {"claude", "gpt"}),
    # A function message's name: OpenAI's API refuses it as it refuses the function's; the
    # Messages API is not sent it (a result answers its call). A tool message's name is no
    # field of OpenAI's tool message: not judged.
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                    "function_call": {"name": "fs_read", "arguments": "{}"}},
                   {"role": "function", "name": "fs.read", "content": "ok"}]}, {"gpt"}),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {
                        "name": "fs_read", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c", "name": "fs.read", "content": "ok"}]},
     set()),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                    "function_call": {"name": "fs_read", "arguments": "{}"}},
                   {"role": "function", "name": "f" * 65, "content": "ok"}]}, {"gpt"}),
    # 65 to 128 characters: OpenAI's API refuses it, the Messages API takes it.
    ({"tools": [_function("x" * 65)]}, {"gpt"}),
    ({"tools": [_function("x" * 129)]}, {"claude", "gpt"}),
    # What every API takes leaves no model out.
    ({"tools": [_function("get-weather_2"), _function("x" * 64)]}, set()),
], ids=["dotted-tool", "slashed-function", "dotted-history-call", "dotted-function-call",
        "dotted-function-result", "dotted-tool-message-name", "long-function-result",
        "65-chars", "129-chars", "plain"])
def test_a_tool_name_leaves_out_only_the_models_whose_api_refuses_it(
        request_fields: dict[str, object], refused_by: set[str]) -> None:
    request = {"messages": [{"role": "user", "content": "x"}], **request_fields}
    allowed, excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs_of(request))
    assert set(excluded) == refused_by
    assert allowed == [n for n in TOOL_CATALOG.names if n not in refused_by]
    for name in refused_by:
        assert any("takes tool names of 1 to" in reason for reason in excluded[name])


def test_the_odd_tool_names_kept_are_bounded() -> None:
    request = {"messages": [{"role": "user", "content": "x"}],
               "tools": [_function(f"a.{i}") for i in range(1_000)]}
    needs = needs_of(request)
    assert 0 < len(needs.tool_names) <= 16
    reasons = filter_candidates(TOOL_CATALOG, ["gpt"], needs)[1]["gpt"]
    assert len(reasons) == 1 and " more, and OpenAI's API takes" in reasons[0]


def test_a_reason_counts_every_odd_or_duplicate_tool_name_not_only_those_kept() -> None:
    """Only the first 16 odd or duplicate names are kept, and "and N more" counted those:
    1,000 bad names read "and 13 more". It says how many there are in all."""
    names = [f"a.{i:03}" for i in range(1_000)]
    request = {"messages": [{"role": "user", "content": "x"},
                            {"role": "function", "name": "b.0", "content": "done"},
                            {"role": "function", "name": "a.000", "content": "done"}],
               "tools": [_function(name) for name in names]}
    excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs_of(request))[1]
    # (the first three of those kept, sorted; 1,001 distinct names: a.000 is answered too)
    (openai,) = excluded["gpt"]
    assert "named \"a.000\", \"a.001\", \"a.002\" and 998 more, and OpenAI's" in openai
    (claude,) = [reason for reason in excluded["claude"] if "tool named" in reason]
    assert '"a.002" and 997 more, and the Anthropic Messages API' in claude, claude
    twice = {"messages": [{"role": "user", "content": "x"}],
             "tools": [_function(f"d{i}") for i in range(40)] * 2}
    needs = needs_of(twice)
    assert len(needs.duplicate_tool_names) == 16 and needs.duplicate_tool_names_count == 40
    (reason,) = filter_candidates(TOOL_CATALOG, ["claude"], needs)[1]["claude"]
    assert 'two tools named "d0", "d1", "d10" and 37 more (tools and' in reason



def test_a_name_only_the_messages_api_refuses_counts_past_the_first_odd_names_kept() -> None:
    """The names kept were the first 16 OpenAI's API refuses: 20 long names the Messages API
    takes (65 to 128 characters) kept none it refuses, and a dotted name past them left no
    reason to leave its models out. The first of each API's are kept."""
    names = [f"{i:02}" + "a" * 98 for i in range(20)] + ["x.y"]
    request = {"messages": [{"role": "user", "content": "x"}],
               "tools": [_function(name) for name in names]}
    needs = needs_of(request)
    assert "x.y" in needs.tool_names and len(needs.tool_names) == 17
    excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs)[1]
    assert set(excluded) == {"claude", "gpt"}
    assert 'a tool named "x.y", and the Anthropic Messages API' in excluded["claude"][0]
    assert " and 18 more, and OpenAI's API" in excluded["gpt"][0]


@pytest.mark.parametrize(("request_fields", "says"), [
    ({"tools": []}, "an empty tools list"),
    ({"tool_choice": "none"}, "tool_choice without tools"),
    ({"tools": [], "tool_choice": "auto"}, "tool_choice without tools"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls without tools"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "content": "y", "tool_calls": []},
                   {"role": "user", "content": "z"}]},
     "an assistant message whose tool_calls is an empty list"),
], ids=["empty-tools", "choice-without-tools", "choice-with-empty-tools",
        "parallel-without-tools", "empty-assistant-tool-calls"])
def test_empty_tool_fields_leave_out_only_openais_api(request_fields: dict[str, object],
                                                       says: str) -> None:
    # OpenAI's API refuses them with a 400; local and other OpenAI-compatible servers (and
    # the Anthropic adapter, which sends no tool fields then) take them.
    request = {"messages": [{"role": "user", "content": "x"}], **request_fields}
    allowed, excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs_of(request))
    assert list(excluded) == ["gpt"] and allowed == ["claude", "local", "compat"]
    assert any(says in reason and "which OpenAI's API refuses" in reason
               for reason in excluded["gpt"]), excluded


@pytest.mark.parametrize("request_fields", [
    {"tools": [_function("f")], "tool_choice": "none", "parallel_tool_calls": False},
    {"tools": None, "tool_choice": None, "parallel_tool_calls": None},
    {"messages": [{"role": "user", "content": "x", "tool_calls": []},
                  {"role": "assistant", "content": "y", "tool_calls": None}]},
], ids=["with-tools", "nulls", "null-calls"])
def test_tool_fields_openai_takes_leave_no_model_out(request_fields: dict[str, object]) -> None:
    request = {"messages": [{"role": "user", "content": "x"}], **request_fields}
    allowed, excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs_of(request))
    assert excluded == {} and allowed == TOOL_CATALOG.names


@pytest.mark.parametrize("request_fields", [
    {"tools": [_function("lookup"), _function("lookup")]},
    {"tools": [_function("lookup")], "functions": [{"name": "lookup"}]},
], ids=["tools", "tools-and-functions"])
def test_two_tools_of_one_name_leave_out_the_messages_api(
        request_fields: dict[str, object]) -> None:
    # The Messages API refuses tool names that are not unique ("Tool names must be unique");
    # the Anthropic adapter sends tools and legacy functions as one list.
    request = {"messages": [{"role": "user", "content": "x"}], **request_fields}
    allowed, excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs_of(request))
    assert list(excluded) == ["claude"] and "claude" not in allowed
    assert 'two tools named "lookup"' in excluded["claude"][0]


def test_the_tool_names_a_reason_names_are_the_first_three_and_how_many_more() -> None:
    # (a refusal says every model's reasons: the names are few, each quoted and cut short)
    names = [f"d{i}" for i in range(5)]
    request = {"messages": [{"role": "user", "content": "x"}],
               "tools": [_function(name) for name in names + names]}
    excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs_of(request))[1]
    assert 'two tools named "d0", "d1", "d2" and 2 more (tools and' in excluded["claude"][0]
    request = {"messages": [{"role": "user", "content": "x"}],
               "tools": [_function("é" * 129)]}
    excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs_of(request))[1]
    # Written as JSON writes it, its quote closed once it is cut (it read "\u00e9\u00e9...).
    shown = '"' + "é" * 45 + '…"'
    assert f"a tool named {shown}, and the Anthropic" in excluded["claude"][0], excluded


_CALLED = [{"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                                              "tool_calls": [{"id": "c", "type": "function",
                                                              "function": {"name": "fs.read",
                                                                           "arguments": "{}"}}]},
           {"role": "tool", "tool_call_id": "c", "content": "ok"}]


@pytest.mark.parametrize(("model", "request_fields", "field"), [
    ("claude", {"n": 2}, "n"),
    ("gpt", {"tools": []}, "tools"),
    ("gpt", {"tool_choice": "none"}, "tool_choice"),
    ("gpt", {"parallel_tool_calls": False}, "parallel_tool_calls"),
    ("gpt", {"tools": [_function("github.search")]}, "tools"),
    ("gpt", {"functions": [{"name": "files/read"}]}, "functions"),
    ("claude", {"messages": _CALLED}, "messages"),
    ("claude", {"tools": [{"type": "custom", "custom": {"name": "grep"}}]}, "tools"),
    ("claude", {"tools": [_function("f")], "functions": [{"name": "f"}]}, "tools"),
    # A declared dotted name and a too-long called one: two fields, named by neither alone.
    ("gpt", {"tools": [_function("a.b")], "messages": [*_CALLED[:1], {
        "role": "assistant", "content": None, "tool_calls": [{
            "id": "c", "type": "function", "function": {"name": "x" * 65,
                                                        "arguments": "{}"}}]}]}, None),
])
def test_each_reason_names_the_field_that_leaves_the_model_out(
        model: str, request_fields: dict[str, object], field: str | None) -> None:
    request = {"messages": [{"role": "user", "content": "x"}], **request_fields}
    excluded = filter_candidates(TOOL_CATALOG, [model], needs_of(request))[1]
    assert excluded and common_field(excluded) == field, excluded


@pytest.mark.parametrize(("messages", "left_out"), [
    ([{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hi."}], True),
    ([{"role": "developer", "content": "Be brief."}, {"role": "user", "content": " \n"},
      {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hi."}], True),
    ([{"role": "assistant", "content": None, "tool_calls": [{
        "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c", "content": "ok"}], True),
    # A blank assistant turn is not sent: the user's turn after it opens the conversation.
    ([{"role": "system", "content": "Be brief."},
      {"role": "assistant", "content": [{"type": "text", "text": "  "}], "refusal": ""},
      {"role": "user", "content": "Hi."}], False),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "https://x.test/a.png"}}]}, {"role": "assistant", "content": "A cat."}], False),
], ids=["assistant-first", "after-a-blank-user-turn", "tool-call-first", "blank-assistant",
        "image-first"])
def test_a_conversation_opening_with_the_assistant_leaves_out_anthropic_only(
        messages: list[dict[str, object]], left_out: bool) -> None:
    catalog = Catalog([ModelCard("claude", provider="anthropic", capabilities=("tools",
                                                                               "vision")),
                       ModelCard("gpt", provider="openai", capabilities=("tools", "vision"))])
    allowed, excluded = filter_candidates(catalog, catalog.names,
                                          needs_of({"messages": messages}))
    assert allowed == (["gpt"] if left_out else ["claude", "gpt"])
    if left_out:
        assert excluded["claude"] == [
            "the conversation opens with an assistant turn (system and developer messages "
            "aside), and the Anthropic Messages API takes a conversation opening with a user "
            "turn only"]


@pytest.mark.parametrize(("messages", "left_out"), [
    ([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
      {"role": "user", "content": " \n"}], True),
    ([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
      {"role": "user", "content": [{"type": "text", "text": ""}]},
      {"role": "system", "content": "Be brief."}, {"role": "user", "content": "\t"}], True),
    # The assistant's turn is the last one sent: a prefill the client asked for.
    ([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"}], False),
    # A blank user turn after a blank assistant turn: the user's turn before them is last.
    ([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": " "},
      {"role": "user", "content": ""}], False),
    # A tool result is sent whatever its content: the user's turn carries it.
    ([{"role": "user", "content": "Hi."}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c", "content": ""}], False),
], ids=["blank-last-user", "blank-parts-and-system-after", "assistant-last",
        "blank-assistant-between", "blank-tool-result"])
def test_a_conversation_ending_in_a_blank_user_turn_after_the_assistant_leaves_out_anthropic(
        messages: list[dict[str, object]], left_out: bool) -> None:
    # OpenAI answers the blank turn; the Anthropic adapter would leave it out (the Messages
    # API refuses blank text), and the API would continue the assistant's turn before it as
    # the start of its answer. Planning leaves the model out instead.
    catalog = Catalog([ModelCard("claude", provider="anthropic", capabilities=("tools",)),
                       ModelCard("gpt", provider="openai", capabilities=("tools",))])
    allowed, excluded = filter_candidates(catalog, catalog.names,
                                          needs_of({"messages": messages}))
    assert allowed == (["gpt"] if left_out else ["claude", "gpt"])
    if left_out:
        assert excluded["claude"] == [
            "the conversation ends with a user message saying nothing (blank text) after an "
            "assistant turn, and the Anthropic Messages API, which takes no blank text, would "
            "take that assistant turn as the start of its answer and continue it (give the "
            "last user message some text)"]


_ANTHROPIC_AND_OPENAI = Catalog([
    ModelCard("claude", provider="anthropic", capabilities=("tools", "vision")),
    ModelCard("gpt", provider="openai", capabilities=("tools", "vision"))])


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": " \n"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [
        {"type": "text", "text": "\t"}]}],
    [{"role": "developer", "content": "Be brief."}],
    [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "  "}],
], ids=["blank-user", "blank-part", "developer-alone", "blank-assistant"])
def test_a_conversation_with_nothing_said_leaves_out_anthropic_only(
        messages: list[dict[str, object]]) -> None:
    # OpenAI takes them; the Anthropic adapter leaves blank text out (the Messages API refuses
    # it) and is left with no turn to send, which the API refuses: planning leaves it out.
    allowed, excluded = filter_candidates(_ANTHROPIC_AND_OPENAI, _ANTHROPIC_AND_OPENAI.names,
                                          needs_of({"messages": messages}))
    assert allowed == ["gpt"]
    assert excluded["claude"] == [
        "the conversation has no user or assistant turn with something in it (system and "
        "developer messages aside, blank text left out), and the Anthropic Messages API takes "
        "no request without one"]
    assert common_field(excluded) == "messages"


@pytest.mark.parametrize(("request_fields", "field"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "web_search"}]},
     "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
          {"type": "function", "function": {"name": "f"}}, {"type": "mcp",
                                                           "server_label": "docs"}]}}},
     "tool_choice"),
], ids=["declared", "allowed"])
def test_a_tool_of_another_type_leaves_out_anthropic_only(
        request_fields: dict[str, object], field: str) -> None:
    # A tool neither function nor custom goes to OpenAI-compatible upstreams as sent; the
    # Anthropic adapter has nothing to translate it to and refused it at send time.
    request = {"messages": [{"role": "user", "content": "x"}], **request_fields}
    allowed, excluded = filter_candidates(_ANTHROPIC_AND_OPENAI, _ANTHROPIC_AND_OPENAI.names,
                                          needs_of(request))
    kind = "web_search" if field == "tools" else "mcp"
    assert allowed == ["gpt"]
    assert excluded["claude"] == [
        f"the request declares or allows a tool of type \"{kind}\", and the Anthropic adapter "
        "sends function tools only"]
    assert common_field(excluded) == field


def test_the_media_type_a_refusal_shows_is_quoted_escaped_and_cut() -> None:
    # The caller's media type was shown as sent: a control character reached logs as itself.
    said = anthropic_image_refusal("image/\x1b[2J" + "x" * 500, True)
    assert said is not None and "\x1b" not in said and "\\u001b[2J" in said
    assert len(said) < 200
    assert anthropic_image_refusal("", False) == (
        "an image given as a data URL that is not base64 (no media type)")
    assert anthropic_image_refusal("image/png", True) is None


@pytest.mark.parametrize(("stop", "refused"), [
    (["a", "b", "c", "d", "e"], True), (["a", "b", "c", "d"], False), ("END", False),
    ("", False), (None, False), ([], False),
], ids=["five", "four", "string", "empty-string", "null", "empty-list"])
def test_more_than_four_stop_sequences_leave_out_only_openais_api(
        stop: object, refused: bool) -> None:
    # OpenAI's API takes at most 4; the Messages API and OpenAI-compatible servers take more.
    request = {"messages": [{"role": "user", "content": "x"}], "stop": stop}
    allowed, excluded = filter_candidates(TOOL_CATALOG, TOOL_CATALOG.names, needs_of(request))
    assert list(excluded) == (["gpt"] if refused else [])
    assert allowed == (["claude", "local", "compat"] if refused else TOOL_CATALOG.names)
    if refused:
        assert excluded["gpt"] == ["the request's stop holds 5 sequences, and OpenAI's API "
                                   "takes at most 4 (send 4 or fewer, or name a model of "
                                   "another provider)"]
        assert common_field(excluded) == "stop"
