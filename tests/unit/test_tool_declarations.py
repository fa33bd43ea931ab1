"""The tools a request declares, the one its ``tool_choice`` names, and the calls its messages
carry, as OpenAI's Chat Completions API takes them: a tool name no provider takes (empty, or
too long), a ``tool_choice`` naming a tool the request does not declare, or tool calls on a
message that is not the assistant's are refused naming the path, at both ways in (the bytes
of an HTTP body and a Python-built body), whichever model would answer. A name only some
providers take leaves out the models of the others (:mod:`switchpoint.gateway.capabilities`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchpoint.errors import InvalidInputError
from switchpoint.gateway.parsing import check_chat_body, parse_chat_body


def tool(name: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


USER = [{"role": "user", "content": "Look it up."}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
CUSTOM = {"type": "custom", "custom": {"name": "grep", "description": "free-form"}}

# Bodies OpenAI takes: they pass as sent.
ACCEPTED: list[dict[str, Any]] = [
    {"tools": [tool("lookup"), tool("get-weather_2"), tool("x" * 64)]},
    {"tools": [tool("lookup")], "tool_choice": "auto"},
    {"tools": [tool("lookup")], "tool_choice": "required"},
    {"tools": [tool("lookup")], "tool_choice": "none"},
    {"tools": [tool("lookup"), tool("search")],
     "tool_choice": {"type": "function", "function": {"name": "search"}}},
    {"tools": [tool("lookup"), CUSTOM],
     "tool_choice": {"type": "custom", "custom": {"name": "grep"}}},
    {"functions": [{"name": "lookup", "parameters": {"type": "object"}}],
     "function_call": {"name": "lookup"}},
    {"functions": [{"name": "lookup"}], "function_call": "auto"},
    # A tool type the gateway does not read goes upstream as sent.
    {"tools": [{"type": "web_search_preview"}, tool("lookup")]},
    {"tools": None, "tool_choice": None},
    {"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                  {"role": "user", "content": "And?", "tool_calls": None}]},
    # No call at all on a message that is not the assistant's (clients that write every
    # message with the same fields send null or an empty list), and an assistant's fields
    # that are null when it said something.
    {"messages": [{"role": "system", "content": "Be brief.", "tool_calls": [],
                   "function_call": None},
                  {"role": "user", "content": "Look it up.", "tool_calls": [],
                   "function_call": None, "name": "ann"},
                  {"role": "assistant", "content": None, "tool_calls": [CALL],
                   "function_call": None, "refusal": None, "audio": None, "name": "bot"},
                  {"role": "tool", "tool_call_id": "call_1", "content": "42",
                   "tool_calls": []},
                  {"role": "assistant", "content": "It is 42.", "tool_calls": None,
                   "function_call": None, "refusal": None, "audio": None},
                  {"role": "user", "content": "Thanks.", "tool_calls": []}]},
    # Names some providers take (an MCP-style dotted name, Gemini's; a local server's): each
    # provider's rule leaves out the models whose API refuses them, the request passes.
    {"tools": [tool("lookup"), tool("web.search"), tool("github/search_issues"),
               tool("x" * 256)],
     "tool_choice": {"type": "function", "function": {"name": "web.search"}}},
    {"tools": [tool("look up"), tool("héllo")]},
    {"functions": [{"name": "a/b"}], "function_call": {"name": "a/b"}},
    # tool_choice forms OpenAI takes whose names the gateway does not read.
    {"tools": [tool("lookup"), tool("search")], "parallel_tool_calls": False,
     "tool_choice": {"type": "allowed_tools", "allowed_tools": {
         "mode": "required", "tools": [{"type": "function", "function": {"name": "search"}}]}}},
    {"tools": [tool("lookup")], "tool_choice": "auto", "parallel_tool_calls": True},
    # A history's names some providers take (each provider's rule applies, as to a
    # declaration's), and a tool message's name.
    {"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "fs.read", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "name": "fs.read",
                   "content": "42"}]},
    # allowed_tools listing declared tools (the Responses API's flat form too, and a listed
    # tool of a type the gateway does not read).
    {"tools": [tool("lookup"), tool("search"), CUSTOM], "tool_choice": {
        "type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
            {"type": "function", "name": "lookup"}, {"type": "custom", "custom": {"name": "grep"}},
            {"type": "web_search_preview"}]}}},
]


def _allowed(*listed: Any, mode: Any = "auto") -> dict[str, Any]:
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": list(listed)}}


def _fn(name: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}

# (body fields, the param, the path the error names, what it says)
REFUSED: list[tuple[dict[str, Any], str, str, str]] = [
    ({"tools": [tool("lookup")], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice", "tool_choice.function.name",
     'is "x", which is not a function the request declares in tools ("lookup"); name one of '
     'them, or send "auto", "none" or "required"'),
    ({"tool_choice": {"type": "function", "function": {"name": "lookup"}}},
     "tool_choice", "tool_choice.function.name",
     'is "lookup", but the request declares no tools: declare it in tools, or leave '
     "tool_choice out"),
    # OpenAI takes a tool_choice only with tools (legacy functions are chosen by
    # function_call): "'tool_choice' is only allowed when 'tools' are specified".
    ({"functions": [{"name": "lookup"}],
      "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
     "tool_choice", "tool_choice.function.name", "but the request declares no tools"),
    ({"tools": [tool(f"t{i}") for i in range(30)],
      "tool_choice": {"type": "function", "function": {"name": "t30"}}},
     "tool_choice", "tool_choice.function.name",
     '("t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9" and 20 more)'),
    ({"tools": [tool("lookup")], "tool_choice": {"type": "function", "function": {}}},
     "tool_choice", "tool_choice.function.name",
     'is missing; a tool_choice naming a function is written {"type": "function", '
     '"function": {"name": "..."}}'),
    ({"tools": [tool("lookup")], "tool_choice": {"type": "function", "function": "lookup"}},
     "tool_choice", "tool_choice.function", 'must be an object, got "lookup"'),
    ({"tools": [tool("lookup"), CUSTOM],
      "tool_choice": {"type": "custom", "custom": {"name": "lookup"}}},
     "tool_choice", "tool_choice.custom.name",
     'is "lookup", which is not a custom tool the request declares in tools ("grep")'),
    ({"tools": [tool("lookup")], "tool_choice": {"type": "custom", "custom": {"name": "grep"}}},
     "tool_choice", "tool_choice.custom.name",
     'is "grep", which is not a custom tool the request declares in tools (it declares none)'),
    ({"functions": [{"name": "lookup"}], "function_call": {"name": "search"}},
     "function_call", "function_call.name",
     'is "search", which is not a function the request declares in functions ("lookup")'),
    # A choice that is neither a mode OpenAI takes nor an object (it was routed, logged and
    # sent: OpenAI refused it upstream, the Anthropic adapter as a request it cannot express).
    ({"tools": [tool("lookup")], "tool_choice": "sometimes"}, "tool_choice", "tool_choice",
     'is "sometimes"; send "auto", "none" or "required", or an object naming a tool the '
     "request declares"),
    ({"tools": [tool("lookup")], "tool_choice": 5}, "tool_choice", "tool_choice",
     'must be a string or an object, got 5; send "auto", "none" or "required"'),
    ({"tools": [tool("lookup")], "tool_choice": True}, "tool_choice", "tool_choice",
     "must be a string or an object, got true"),
    ({"tools": [tool("lookup")], "tool_choice": ["auto"]}, "tool_choice", "tool_choice",
     "must be a string or an object, got a list"),
    ({"functions": [{"name": "lookup"}], "function_call": "required"}, "function_call",
     "function_call", 'is "required"; send "auto" or "none", or an object naming a tool'),
    ({"functions": [{"name": "lookup"}], "function_call": 3}, "function_call",
     "function_call", 'must be a string or an object, got 3; send "auto" or "none"'),
    # An allowed_tools choice lists tools the request declares, as a choice of one does.
    ({"tools": [tool("lookup")], "tool_choice": _allowed(_fn("lookup"), _fn("nope"))},
     "tool_choice", "tool_choice.allowed_tools.tools[1].function.name",
     'is "nope", which is not a function the request declares in tools ("lookup"); name one of '
     'them, or send "auto", "none" or "required"'),
    ({"tools": [tool("lookup")], "tool_choice": _allowed({"type": "function", "name": "x"})},
     "tool_choice", "tool_choice.allowed_tools.tools[0].name",
     'is "x", which is not a function the request declares in tools ("lookup")'),
    ({"tools": [tool("lookup")], "tool_choice": _allowed(
        {"type": "custom", "custom": {"name": "grep"}})},
     "tool_choice", "tool_choice.allowed_tools.tools[0].custom.name",
     'is "grep", which is not a custom tool the request declares in tools (it declares none)'),
    ({"tool_choice": _allowed(_fn("lookup"))}, "tool_choice",
     "tool_choice.allowed_tools.tools[0].function.name",
     'is "lookup", but the request declares no tools'),
    ({"tools": [tool("lookup")], "tool_choice": _allowed()}, "tool_choice",
     "tool_choice.allowed_tools.tools", "is an empty list; list the declared tools"),
    ({"tools": [tool("lookup")], "tool_choice": _allowed(_fn("lookup"), mode="sometimes")},
     "tool_choice", "tool_choice.allowed_tools.mode",
     'is "sometimes"; the mode is "auto" (the model may call one of the listed tools) or '
     '"required" (it must)'),
    ({"tools": [tool("lookup")], "tool_choice": {"type": "allowed_tools"}}, "tool_choice",
     "tool_choice.allowed_tools", "is missing; an allowed_tools choice is written"),
    ({"tools": [tool("lookup")], "tool_choice": _allowed(_fn(None))}, "tool_choice",
     "tool_choice.allowed_tools.tools[0].function.name", "is null"),
    ({"tools": [tool("lookup")], "tool_choice": _allowed("lookup")}, "tool_choice",
     "tool_choice.allowed_tools.tools[0]", 'must be an object, got "lookup"'),
    # Names no provider takes: empty, or longer than any takes.
    ({"tools": [tool("lookup"), tool("")]}, "tools", "tools[1].function.name",
     'is ""; a tool\'s name is a string of 1 to 256 characters (OpenAI\'s API takes 1 to 64 '
     "letters, digits, underscores or hyphens)"),
    ({"tools": [tool("x" * 257)]}, "tools", "tools[0].function.name", "1 to 256 characters"),
    ({"tools": [tool(7)]}, "tools", "tools[0].function.name",
     "must be a string, got 7"),
    # A custom tool's name is held to the same bounds as a function tool's.
    ({"tools": [CUSTOM, {"type": "custom", "custom": {"name": "x" * 257}}]}, "tools",
     "tools[1].custom.name", "1 to 256 characters"),
    ({"tools": [{"type": "custom", "custom": {"name": ""}}]}, "tools", "tools[0].custom.name",
     'is ""; a tool\'s name is a string of 1 to 256 characters'),
    ({"tools": [{"type": "custom", "custom": {"description": "free-form"}}]}, "tools",
     "tools[0].custom.name", 'is missing; a custom tool is written {"type": "custom", '
     '"custom": {"name": "...", "description": "..."}}'),
    ({"tools": [{"type": "custom"}]}, "tools", "tools[0].custom", "is missing; a custom tool "
                                                                   "is written"),
    ({"tools": [{"type": "function"}]}, "tools", "tools[0].function",
     'is missing; a function tool is written {"type": "function", "function": {"name": '
     '"...", "parameters": {...}}}'),
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools",
     "tools[0].function.name", "is missing"),
    ({"tools": tool("lookup")}, "tools", "tools",
     "must be a list of tools, got an object"),
    ({"tools": ["lookup"]}, "tools", "tools[0]", 'must be an object, got "lookup"'),
    ({"functions": [{"name": ""}]}, "functions", "functions[0].name", 'is ""; a tool'),
    ({"functions": {"name": "lookup"}}, "functions", "functions",
     "must be a list of functions, got an object"),
    # The names of the tools the history calls or answers are held to a declared tool's
    # bounds (OpenAI refuses them with a 400 wherever they are).
    ({"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "42"}]},
     "messages", "messages[1].tool_calls[0].function.name",
     'is ""; a tool\'s name is a string of 1 to 256 characters'),
    ({"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "function": {"name": "x" * 257, "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "42"}]},
     "messages", "messages[1].tool_calls[0].function.name", "1 to 256 characters"),
    ({"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "custom", "custom": {"name": "x" * 257, "input": "a"}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "42"}]},
     "messages", "messages[1].tool_calls[0].custom.name", "1 to 256 characters"),
    ({"messages": [*USER, {"role": "assistant", "content": None,
                           "function_call": {"name": "", "arguments": "{}"}},
                   {"role": "function", "name": "lookup", "content": "42"}]},
     "messages", "messages[1].function_call.name", 'is ""; a tool\'s name'),
    ({"messages": [*USER, {"role": "assistant", "content": None,
                           "function_call": {"name": "lookup", "arguments": "{}"}},
                   {"role": "function", "name": "", "content": "42"}]},
     "messages", "messages[2].name", 'is ""; a tool\'s name is a string of 1 to 256'),
    ({"messages": [*USER, {"role": "assistant", "content": None,
                           "function_call": {"name": "lookup", "arguments": "{}"}},
                   {"role": "function", "name": "y" * 300, "content": "42"}]},
     "messages", "messages[2].name", "1 to 256 characters"),
    # Tool calls belong to assistant messages only.
    ({"messages": [{"role": "user", "content": "x", "tool_calls": "nonsense"}]},
     "messages", "messages[0].tool_calls",
     "a user message carries no tool calls: only assistant messages do"),
    ({"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "42",
                    "tool_calls": [CALL]}]},
     "messages", "messages[2].tool_calls", "a tool message carries no tool calls"),
    ({"messages": [{"role": "system", "content": "x", "function_call": {"name": "f"}}, *USER]},
     "messages", "messages[0].function_call",
     "a system message carries no function_call: only assistant messages do"),
]


def _body(fields: dict[str, Any]) -> dict[str, Any]:
    return {"model": "auto", "messages": USER, **fields}


def _refused(body: dict[str, Any]) -> list[InvalidInputError]:
    errors = []
    for door in ("bytes", "python"):
        with pytest.raises(InvalidInputError) as info:
            if door == "bytes":
                parse_chat_body(json.dumps(body).encode())
            else:
                check_chat_body(body)
        errors.append(info.value)
    return errors


@pytest.mark.parametrize("fields", ACCEPTED)
def test_tools_openai_takes_pass_as_sent(fields: dict[str, Any]) -> None:
    body = _body(fields)
    sent = json.loads(json.dumps(body))
    assert parse_chat_body(json.dumps(body).encode()) == sent
    assert check_chat_body(body) == sent


@pytest.mark.parametrize(("fields", "param", "path", "says"), REFUSED)
def test_a_tool_openai_refuses_is_refused_naming_the_path(
        fields: dict[str, Any], param: str, path: str, says: str) -> None:
    for error in _refused(_body(fields)):
        assert error.field == param
        assert str(error).startswith(f"{path}: ") and says in str(error), str(error)


def test_a_long_chosen_name_is_quoted_short() -> None:
    for error in _refused(_body({"tools": [tool("lookup")], "tool_choice": {
            "type": "function", "function": {"name": "x" * 10_000}}})):
        assert len(str(error)) < 300, str(error)


def test_the_declared_names_an_error_lists_are_bounded() -> None:
    custom = [{"type": "custom", "custom": {"name": f"{i}" + "y" * 250}} for i in range(40)]
    for error in _refused(_body({"tools": custom, "tool_choice": {
            "type": "custom", "custom": {"name": "x"}}})):
        assert str(error).endswith('and 30 more); name one of them, or send "auto", "none" or '
                                   '"required"'), str(error)[-200:]
        assert len(str(error)) < 1000
