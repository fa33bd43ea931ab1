"""The Anthropic Messages API (``POST /v1/messages``) behind the OpenAI chat wire format.

Requests are translated OpenAI → Anthropic (system prompt, text parts and the user's image
parts as :data:`~switchpoint.gateway.capabilities.SENDS` lists them, tools, ``tool_choice``,
tool calls and tool results, ``max_tokens``), answers and stream events back to OpenAI
``chat.completion`` / ``chat.completion.chunk``. An assistant's refusal (a refusal part, or the
message's ``refusal`` when it has no content) is sent as its text: it is what the assistant
said. A text or refusal part with no text, or only whitespace, is left out, as the Messages API
refuses such a text block (so is such a tool result's content, and such a system message); a
turn with nothing to send (blank content and no calls) is too, as the API refuses an empty turn
(the turns around it merge); a conversation left with none (system messages alone) is not sent,
nor one opening with an assistant turn, as the API takes a conversation opening with the user's
turn only, nor one ending with a blank user message after an assistant turn, which left out
would make that turn the start of the answer to be continued (planning leaves the model out for
each:
:func:`~switchpoint.gateway.capabilities.adapter_limits`). A last assistant turn (the start of
the answer) is sent without its trailing whitespace, which the API refuses there. An image
given as a base64 data URL (``data:<type>[;<parameter>]*;base64,<data>``) is a base64 image
block of its media type (parameters dropped; the type its first bytes show when they show one,
as the API refuses an image labelled with another type and OpenAI reads the bytes whatever the
label; its data as strict base64, line breaks removed and padding added, as the API decodes no
other), an http(s) URL an image the API fetches (the request check refuses any other URL, and
base64 data that is not base64: :mod:`~switchpoint.gateway.image_urls`); a data URL of a type
the API does not take, or not base64, is not sent (planning leaves the model out:
:func:`~switchpoint.gateway.capabilities.adapter_limits`).

OpenAI's legacy function calling is translated as tool calling is: ``functions`` are tools,
the request's ``function_call`` its ``tool_choice``, an assistant's ``function_call`` a
``tool_use`` block (with an id made from its message's position, as it has none) and the
``function`` message after it the ``tool_result`` answering it. In a user turn, the
``tool_result`` blocks come first (a user message written between a call and its result
follows the results). A request whose history holds tool calls but which offers no tools
declares the tools the history called (taking any input) with ``tool_choice`` ``none``:
the Messages API refuses tool blocks in a request without tools, and the model may call
none the client did not offer. A request that declares
``functions`` and no ``tools`` is answered as OpenAI answers it: one call, as the message's
``function_call`` with the ``function_call`` finish reason, plain and streamed. An
``allowed_tools`` choice (the model may call the tools it lists only, in mode ``auto`` or
``required``) has no Messages API form: the model is given the listed tools only, with
``tool_choice`` ``auto`` or ``any``. A tool neither function nor custom, declared or listed
there (a built-in one, an MCP server), has no Messages API form either (planning leaves the
model out for it: :func:`~switchpoint.gateway.capabilities.other_tools`).

Tool-call ids stay valid across providers: an id is sent to Anthropic unchanged when it fits
Anthropic's ``^[a-zA-Z0-9_-]+$`` (OpenAI's ``call_...`` ids do), otherwise as a deterministic
sanitised form, the same for the ``tool_use`` and its ``tool_result``; Anthropic's own
``toolu_...`` ids come back to the client unchanged as OpenAI ``tool_calls[].id``. So a
conversation can move between an OpenAI-compatible model and Claude in either direction.

OpenAI-only request fields with no Messages equivalent (``response_format``,
``presence_penalty``, ``seed``, ...) are dropped; ``temperature`` is clamped to
Anthropic's [0, 1]. The Messages API gives one answer, no log probabilities and no JSON mode,
so a request for several (``n`` > 1), for ``logprobs`` or for a JSON answer
(``response_format`` ``json_object`` or ``json_schema``; a ``text`` one is dropped) is not
planned onto an Anthropic model (see :mod:`switchpoint.gateway.capabilities`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from switchpoint._messages import all_of, cut, json_quoted, one_of
from switchpoint.catalog import ModelCard, text_bytes
from switchpoint.errors import (
    InvalidInputError,
    MalformedResponse,
    StreamBroken,
    UnsupportedRequest,
)
from switchpoint.gateway.capabilities import (
    ANTHROPIC_IMAGES,
    SENDS,
    anthropic_image_refusal,
    blank,
    blank_close,
    blank_stops,
    function_results,
)
from switchpoint.gateway.data_url import compact_base64, media_type_of, parse_data_url
from switchpoint.gateway.image_urls import image_url_problem, is_web_url
from switchpoint.gateway.parsing import (
    ALLOWED_TOOLS_MODES,
    FUNCTION_CALL_MODES,
    MAX_DEPTH,
    ROLES,
    TOOL_CHOICE_MODES,
    check_embedded_json,
    read_embedded_json,
    stop_sequences,
)
from switchpoint.gateway.providers._http import ClientPool, post_json, stream_chunks
from switchpoint.gateway.providers.base import (
    CountedChunk,
    ProviderResponse,
    ReportedSoFar,
    Timeouts,
    answered_error,
    chunks_of,
    classify_stream_error,
    is_content_chunk,
    is_token_count,
    shown_data,
    stream_of_answer,
    upstream_json,
)
from switchpoint.gateway.providers.openai import api_key, endpoint_url, target_url
from switchpoint.gateway.providers.sse import SSEEvent

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
# max_tokens is required by the Messages API; used when the request sets none.
DEFAULT_MAX_TOKENS = 4096
# Characters kept of a streamed message's id, which every chunk relayed to the client repeats.
MAX_MESSAGE_ID = 256

_ID_OK = re.compile(r"[A-Za-z0-9_-]+")

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                "max_tokens": "length", "model_context_window_exceeded": "length",
                "tool_use": "tool_calls", "refusal": "content_filter"}


def anthropic_tool_id(openai_id: str) -> str:
    """The id Anthropic accepts for an OpenAI tool-call id (unchanged when already valid)."""
    if _ID_OK.fullmatch(openai_id):
        return openai_id
    digest = hashlib.sha1(openai_id.encode("utf-8")).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', openai_id)[:48]}_{digest}"


def _bad(message: str) -> UnsupportedRequest:
    return UnsupportedRequest(f"cannot translate the request for the Anthropic API: {message}")


def _text_of(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
            else:
                raise _bad(f"{where} may hold only text parts")
        return "\n".join(texts)
    raise _bad(f"{where} content must be a string or a list of parts")


def _image_block(part: Mapping[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str) or not url:
        raise _bad("an image_url part has no url")
    data = parse_data_url(url)
    if data is None:
        if not is_web_url(url):  # (the request check refuses it; this names it if not)
            raise _bad(f"an image_url part's url {image_url_problem(url)}")
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type = media_type_of(url, data)
    refused = anthropic_image_refusal(media_type, data.base64)
    if refused is not None:  # (planning leaves such a model out; this names it if not)
        raise _bad(f"the request has {refused}, and {ANTHROPIC_IMAGES}")
    # (the Messages API decodes strict base64 only: line breaks out, padding in)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                        "data": compact_base64(url[data.data_at:])}}


def _text_block(part: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "text", "text": str(part.get("text", ""))}


def _refusal_block(part: Mapping[str, Any]) -> dict[str, Any]:
    # What the assistant said to the user in place of an answer: the Messages API has no
    # refusal block, and the turn's text is what the conversation holds.
    return {"type": "text", "text": str(part.get("refusal", ""))}


# The Messages API block of each part type the adapter sends (in the messages whose role
# :data:`~switchpoint.gateway.capabilities.SENDS` lists it for).
_BLOCKS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "text": _text_block, "refusal": _refusal_block, "image_url": _image_block}


def _content_blocks(content: object, where: str, role: str) -> list[dict[str, Any]]:
    """The Messages API blocks of a ``role`` message's content: its parts of the types the
    adapter sends there (:data:`~switchpoint.gateway.capabilities.SENDS`, which planning
    reads too, so a request carrying any other is not planned onto a model behind it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [] if blank(content) else [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _bad(f"{where} content must be a string or a list of parts")
    sends = SENDS["anthropic"][role]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
            continue
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in sends or not isinstance(part, Mapping):
            raise _bad(f"{where} has a content part of type {json_quoted(kind)}, which the "
                       f"Anthropic adapter does not send in {role} messages ({' and '.join(sends)} "
                       "parts it does)")
        blocks.append(_BLOCKS[kind](part))
    # (a text or refusal part with no text, or whitespace only, is not sent: the Messages API
    # refuses such a text block, where OpenAI takes the part)
    return [block for block in blocks if block["type"] != "text" or not blank(block["text"])]


def _tool_use_block(call: object, where: str) -> dict[str, Any]:
    """The ``tool_use`` block of one of an assistant message's ``tool_calls``."""
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        raise _bad(f"{where} is not a function tool call")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where} has no id")
    return _tool_use(anthropic_tool_id(call_id), call["function"], f"{where}.function")


def _tool_use(block_id: str, fn: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``tool_use`` block of a function call ``fn`` (``name`` and JSON ``arguments``),
    found at ``where`` in the request."""
    raw_args = fn.get("arguments") or "{}"
    arguments = f"{where}.arguments"
    try:
        # Sent as structure (tool_use input), so the body's reader and bounds apply to it.
        args = raw_args
        if isinstance(raw_args, str):
            args = read_embedded_json(raw_args, arguments)
        else:
            check_embedded_json(args, arguments)
    except RecursionError:
        raise _bad(f"{arguments}: nests deeper than {MAX_DEPTH} levels") from None
    except InvalidInputError as exc:  # (its message starts with the path at fault)
        raise _bad(str(exc)) from None
    except ValueError as exc:
        raise _bad(f"{arguments} is not JSON: {json_quoted(str(raw_args), 100)}") from exc
    if not isinstance(args, Mapping):
        raise _bad(f"{arguments} must be a JSON object")
    return {"type": "tool_use", "id": block_id, "name": str(fn.get("name")),
            "input": dict(args)}


def _tool_result(block_id: str, content: object, where: str) -> dict[str, Any]:
    """The ``tool_result`` block answering the ``tool_use`` ``block_id`` (its content left
    out when empty or whitespace only: the Messages API takes a result without one)."""
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": block_id}
    text = _text_of(content, where)
    if not blank(text):
        result["content"] = text
    return result


def legacy_call_id(index: int) -> str:
    """The ``tool_use`` id of the legacy ``function_call`` of ``messages[index]`` (which has
    none of its own): the next ``function`` message's result answers it."""
    return f"function_call_{index}"


def _refusal_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An assistant message's ``refusal`` (what it said to the user instead of an answer) as
    text, as a refusal part is sent."""
    refusal = message.get("refusal")
    return [_refusal_block(message)] if isinstance(refusal, str) and not blank(refusal) else []


def _translate_messages(messages: Sequence[object]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    answers = function_results(messages)  # (each function message's function_call)

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _bad(f"{where} is not an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _text_of(content, where)
            if not blank(text):
                system.append(text)
        elif role == "user":
            add("user", _content_blocks(content, where, "user"))
        elif role == "assistant":
            if message.get("audio") is not None:
                raise _bad(f"{where}.audio stands for an earlier audio answer, which the "
                           "Messages API cannot refer to")
            blocks = _content_blocks(content, where, "assistant") or _refusal_blocks(message)
            for j, call in enumerate(message.get("tool_calls") or []):
                blocks.append(_tool_use_block(call, f"{where}.tool_calls[{j}]"))
            legacy = message.get("function_call")
            if legacy:
                if not isinstance(legacy, Mapping):
                    raise _bad(f"{where}.function_call is not an object with a name and "
                               "arguments")
                blocks.append(_tool_use(legacy_call_id(i), legacy, f"{where}.function_call"))
            add("assistant", blocks)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"{where} (role tool) has no tool_call_id")
            add("user", [_tool_result(anthropic_tool_id(call_id), content, where)])
        elif role == "function":
            call = answers.get(i)
            if call is None:
                raise _bad(f"{where} (role function) answers no function_call: a function "
                           "message follows the assistant message whose function_call it "
                           "answers")
            add("user", [_tool_result(legacy_call_id(call), content, where)])
        else:
            raise _bad(f"{where} has role {json_quoted(role)} ({all_of(ROLES)} are "
                       "supported)")
    for turn in out:
        if turn["role"] == "user":
            turn["content"] = _results_first(turn["content"])
    return system, out


def _results_first(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A user turn's blocks with its ``tool_result`` blocks first, in their order, then the
    rest in theirs: the Messages API wants the results answering the previous turn's calls
    before anything else (a user message written between a call and its result is merged
    into the turn carrying the result)."""
    results = [b for b in blocks if b["type"] == "tool_result"]
    return results + [b for b in blocks if b["type"] != "tool_result"]


def _history_tools(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tools the ``tool_use`` blocks of ``messages`` call, each once, in the order first
    called, with an input schema taking any object: what a request that declares no tools
    but whose history called some declares (the Messages API refuses ``tool_use`` and
    ``tool_result`` blocks in a request without tools)."""
    names = dict.fromkeys(b["name"] for m in messages for b in m["content"]
                          if b["type"] == "tool_use")
    return [{"name": name, "input_schema": {"type": "object"}} for name in names]


def legacy_functions(request: Mapping[str, Any]) -> bool:
    """Whether ``request`` calls functions the legacy way: it declares ``functions`` and no
    ``tools``, so its client reads a call in the answer as ``function_call`` (one call, with
    the ``function_call`` finish reason), not as ``tool_calls``."""
    return bool(request.get("functions")) and not request.get("tools")


def _allowed_tools(request: Mapping[str, Any]) -> tuple[str, set[str]] | None:
    """The mode (auto or required) and the function names of the request's ``tool_choice``
    when it is ``allowed_tools`` (the model may call those tools only); None otherwise."""
    choice = request.get("tool_choice")
    if not isinstance(choice, Mapping) or choice.get("type") != "allowed_tools":
        return None
    allowed = choice.get("allowed_tools")
    mode = allowed.get("mode") if isinstance(allowed, Mapping) else None
    tools = allowed.get("tools") if isinstance(allowed, Mapping) else None
    if mode not in ALLOWED_TOOLS_MODES or not isinstance(tools, list):
        raise _bad(f"tool_choice allowed_tools is not a mode ({one_of(ALLOWED_TOOLS_MODES)}) "
                   "and a list of tools")
    names = set()
    for tool in tools:
        named = tool.get("function") if isinstance(tool, Mapping) else None
        name = (named if isinstance(named, Mapping) else tool or {}).get("name")
        if not isinstance(name, str):
            raise _bad("tool_choice allowed_tools lists a tool that is not a function with a "
                       "name")
        names.add(name)
    return mode, names


def _translate_tools(request: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The Messages API tools of ``tools`` (function tools) and the legacy ``functions``: of
    ``tools`` only those an ``allowed_tools`` choice lists, when it is one (the Messages API
    has no such choice; the model may call only the tools it is given)."""
    declared = [(f"tools[{i}]", tool.get("function") if isinstance(tool, Mapping) else None)
                for i, tool in enumerate(request.get("tools") or [])]
    allowed = _allowed_tools(request)
    if allowed is not None:
        declared = [(where, fn) for where, fn in declared
                    if not isinstance(fn, Mapping) or fn.get("name") in allowed[1]]
        if not declared:
            raise _bad("tool_choice allowed_tools lists none of the tools the request declares")
    declared += [(f"functions[{i}]", fn) for i, fn in enumerate(request.get("functions") or [])]
    out = []
    for where, fn in declared:
        if not isinstance(fn, Mapping) or not fn.get("name"):
            raise _bad(f"{where} is not a function with a name")
        entry: dict[str, Any] = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            entry["description"] = fn["description"]
        out.append(entry)
    return out or None


def _translate_tool_choice(request: Mapping[str, Any]) -> dict[str, Any] | None:
    legacy = legacy_functions(request)
    field, choice = (("function_call", request.get("function_call")) if legacy
                     else ("tool_choice", request.get("tool_choice")))
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required" and not legacy:
        out = {"type": "any"}
    elif isinstance(choice, Mapping) and legacy and isinstance(choice.get("name"), str):
        out = {"type": "tool", "name": choice["name"]}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        out = {"type": "tool", "name": choice["function"].get("name")}
    elif (allowed := None if legacy else _allowed_tools(request)) is not None:
        out = {"type": "any" if allowed[0] == "required" else "auto"}
    else:
        modes = FUNCTION_CALL_MODES if legacy else TOOL_CHOICE_MODES
        others = "" if legacy else ", an allowed_tools choice"
        raise _bad(f"{field} {json_quoted(choice)} is not a mode ({one_of(modes)}){others} or "
                   "a function")
    # A legacy answer carries one call: the model makes no more.
    if legacy or (request.get("parallel_tool_calls") is False and request.get("tools")):
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def to_anthropic_request(request: Mapping[str, Any], card: ModelCard, *, stream: bool,
                         default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """The ``/v1/messages`` body for an OpenAI chat request.

    Raises :class:`~switchpoint.gateway.providers.base.UnsupportedRequest` for what the Messages API
    cannot express (audio and file parts, an assistant's earlier audio answer, a
    ``function`` message answering no ``function_call``, malformed tool calls, a conversation
    with no turn that has content).
    """
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list")
    system, translated = _translate_messages(messages)
    if not translated:  # (empty turns are not sent: the Messages API refuses them; planning
        # leaves such a model out)
        raise _bad("the request has no user or assistant message with content (only system "
                   "or developer messages, or empty ones), and the Messages API takes no "
                   "request without one")
    if translated[0]["role"] == "assistant":  # (planning leaves such a model out)
        raise _bad("the conversation opens with an assistant turn (system and developer "
                   "messages aside), and the Messages API takes a conversation opening with "
                   "a user turn only")
    if blank_close(messages):  # (planning leaves such a model out)
        raise _bad("the conversation ends with a user message saying nothing (blank text) "
                   "after an assistant turn, and the Messages API takes no blank text: "
                   "without it, the assistant turn would be continued as the start of the "
                   "answer")
    last = translated[-1]["content"][-1]
    if translated[-1]["role"] == "assistant" and last["type"] == "text":
        # (a last assistant turn is the start of the answer, which the Messages API refuses
        # when it ends in whitespace)
        last["text"] = last["text"].rstrip()
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    body: dict[str, Any] = {
        "model": card.upstream_model or card.name,
        "messages": translated,
        "max_tokens": int(max_tokens) if max_tokens else default_max_tokens,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if stream:
        body["stream"] = True
    temperature = request.get("temperature")
    if isinstance(temperature, (int, float)):
        body["temperature"] = min(max(float(temperature), 0.0), 1.0)
    if isinstance(request.get("top_p"), (int, float)):
        body["top_p"] = request["top_p"]
    if blank_stops(request):  # (planning leaves such a model out)
        raise _bad("stop holds a sequence empty or whitespace only, and the Messages API takes "
                   "stop sequences with something besides whitespace only")
    if stops := stop_sequences(request):
        body["stop_sequences"] = stops
    tools = _translate_tools(request)
    tool_choice = _translate_tool_choice(request)
    if tools:
        body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    elif history_tools := _history_tools(translated):
        # No tools offered this turn: the history's are declared, and none may be called.
        body["tools"] = history_tools
        body["tool_choice"] = {"type": "none"}
    if isinstance(request.get("user"), str):
        body["metadata"] = {"user_id": request["user"]}
    return body


def _usage(usage: object) -> dict[str, Any] | None:
    """The OpenAI usage of a Messages API ``usage``; None (not believed: the answer is
    charged an estimate of what it used) unless ``input_tokens`` and
    ``output_tokens`` are there and every count is a whole number from 0 to
    ``MAX_REPORTED_TOKENS`` (the cache counts may be left out)."""
    if not isinstance(usage, Mapping) or not is_token_count(usage.get("output_tokens")):
        return None
    prompt = _prompt_of(usage)
    if prompt is None:
        return None
    completion = usage["output_tokens"]
    return {"prompt_tokens": prompt[0], "completion_tokens": completion,
            "total_tokens": prompt[0] + completion,
            "prompt_tokens_details": {"cached_tokens": prompt[1]}}


def _prompt_of(usage: Mapping[str, Any]) -> tuple[int, int] | None:
    """(the prompt's tokens, of them those read from the cache) of a Messages API ``usage``:
    ``input_tokens`` and the cache counts (which may be left out), or None unless each is a
    whole number from 0 to ``MAX_REPORTED_TOKENS``."""
    counts: dict[str, int] = {}
    for key in ("input_tokens", *_CACHE_USAGE):
        value = usage.get(key)
        if value is None and key in _CACHE_USAGE:
            value = 0
        if not is_token_count(value):
            return None
        counts[key] = value
    cached = counts["cache_read_input_tokens"]
    return counts["input_tokens"] + counts["cache_creation_input_tokens"] + cached, cached


_CACHE_USAGE = ("cache_creation_input_tokens", "cache_read_input_tokens")


def from_anthropic_response(message: Mapping[str, Any], *,
                            legacy: bool = False) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for a Messages API answer; ``legacy``
    (:func:`legacy_functions`): its call as ``function_call``."""
    content = message.get("content")
    if not isinstance(content, list):
        raise MalformedResponse("the Anthropic answer has no content list", body=message)
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            # (characters written as themselves, as OpenAI writes a call's arguments, not as
            # \uXXXX escapes: what an answer without usage is estimated from is their size)
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            tool_calls.append({"id": block.get("id"), "type": "function",
                               "function": {"name": block.get("name"),
                                            "arguments": arguments}})
    reply: dict[str, Any] = {"role": "assistant",
                             "content": "".join(texts) if texts or not tool_calls else None}
    stop = message.get("stop_reason")
    finish = STOP_REASONS.get(str(stop), "stop")
    if tool_calls and legacy:
        reply["function_call"] = tool_calls[0]["function"]
        finish = "function_call" if finish == "tool_calls" else finish
    elif tool_calls:
        reply["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": message.get("id") or "msg",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
    }
    usage = _usage(message.get("usage"))
    if usage is not None:
        body["usage"] = usage
    return body


def openai_answer(data: dict[str, Any], status: int, *, legacy: bool,
                  model: str) -> tuple[dict[str, Any], ReportedSoFar]:
    """The OpenAI answer of the ``status`` Messages API answer ``data``
    (:func:`from_anthropic_response`) and what it reports beside it (:func:`reported_of`); the
    error saying what it is instead (an upstream's error in its place, a malformed answer)."""
    failure = answered_error(data, status, model=model)
    if failure is not None:
        raise failure
    try:
        answer = from_anthropic_response(data, legacy=legacy)
    except MalformedResponse as exc:
        exc.model, exc.status = model, status
        raise
    return answer, reported_of(data)


def reported_of(message: Mapping[str, Any]) -> ReportedSoFar:
    """What a Messages API answer reports of its use beside the usage its OpenAI body carries
    (what it is estimated from, should that usage not be believed): the prompt's tokens, when
    its counts of them are believable, the answer's (the least it is estimated at), when that
    count is, as a stream's ``message_start`` reports them, and the bytes of the thinking it
    generated (:func:`thought_of` each block), which the OpenAI body has no place for but the
    upstream bills."""
    content = message.get("content")
    thought = sum(text_bytes(thought_of(block)) for block in content
                  if isinstance(block, Mapping)) if isinstance(content, list) else 0
    return _reported_counts(message.get("usage"), thought)


def _reported_counts(usage: object, thought: int) -> ReportedSoFar:
    """What a Messages API ``usage`` reports, each count only when believable: the prompt's
    tokens (None otherwise) and the answer's (the least it is estimated at; 0 otherwise),
    beside ``thought``, the bytes of thinking seen."""
    if not isinstance(usage, Mapping):
        return ReportedSoFar(None, 0, thought)
    prompt = _prompt_of(usage)
    output = usage.get("output_tokens")
    return ReportedSoFar(None if prompt is None else prompt[0],
                         output if is_token_count(output) else 0, thought)


def thought_of(block: Mapping[str, Any]) -> str:
    """The thinking a Messages API content block holds, as it is sized ("" for another
    block): a ``thinking`` block's text, or a ``redacted_thinking`` block's ``data`` (the
    thinking it generated, encrypted: about its size)."""
    kind = block.get("type")
    text = (block.get("thinking") if kind == "thinking"
            else block.get("data") if kind == "redacted_thinking" else None)
    return text if isinstance(text, str) else ""


class AnthropicChunkDecoder:
    """Messages API stream events → OpenAI chunks; ``message_stop`` ends the stream.
    ``legacy`` (:func:`legacy_functions`): the call is streamed as ``function_call``."""

    def __init__(self, model: str, *, legacy: bool = False) -> None:
        self.model = model
        self.legacy = legacy
        self.done = False
        self._id = "msg"
        self._upstream_model: str | None = None
        self._created = int(time.time())
        self._tool_index: dict[int, int] = {}
        # The tool_use blocks (by their index) whose arguments have streamed nothing yet: a
        # call that takes none is streamed as "" (its input {}), which ends as "{}".
        self._no_arguments: set[int] = set()
        # The usage counts as reported so far: message_start's, then message_delta's over them.
        self._usage: dict[str, Any] = {}
        # Whether a message_delta brought the final counts: message_start's output_tokens is
        # a count before the answer was written, not what it was charged.
        self._final_usage = False
        # Whether the usage chunk was handed on (with the stop reason, which only
        # message_stop follows: the answer is whole without it).
        self._usage_sent = False
        self._content_seen = False
        # What the upstream reported of the stream's use so far, each chunk carrying it: the
        # prompt's tokens and the least output (message_start's, then message_delta's), and
        # the bytes of thinking, which is not relayed but billed (None: message_start not come
        # yet).
        self._reported: ReportedSoFar | None = None

    @property
    def reported(self) -> ReportedSoFar | None:
        """What the upstream reported of the stream's use so far: its prompt count and least
        output at message_start, and the thinking that came (None: nothing yet)."""
        return self._reported

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                 "model": self._upstream_model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return chunk if self._reported is None else CountedChunk(chunk, self._reported)

    def _thought(self, text: object) -> None:
        """``text`` of thinking came: not relayed, but generated and billed as answer."""
        if isinstance(text, str) and text:
            reported = self._reported or ReportedSoFar()
            self._reported = replace(
                reported, unrelayed_bytes=reported.unrelayed_bytes + text_bytes(text))

    def whole(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks of a whole answer ``body``, each carrying what it reports beside its
        usage (:func:`reported_of`: its prompt count and thinking), as a plain answer does."""
        try:
            answer = from_anthropic_response(body, legacy=self.legacy)
        except MalformedResponse:
            return []
        return stream_of_answer(answer, reported_of(body))

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        try:
            data = upstream_json(event.data)
        except (ValueError, RecursionError) as exc:
            raise StreamBroken(f"the upstream sent a malformed event ({cut(str(exc), 200)}): "
                               f"{shown_data(event.data)}",
                               model=self.model) from exc
        if not isinstance(data, dict):
            raise StreamBroken("the upstream sent an event that is not an object",
                               model=self.model)
        kind = data.get("type") or event.event
        if kind == "error" or event.event == "error":
            raise classify_stream_error(data, model=self.model,
                                        after_first_byte=self._content_seen)
        try:
            chunks = self._translate(kind, data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise StreamBroken(f"the upstream sent a {json_quoted(str(kind), 40)} event that does "
                               "not read as the Messages API's: "
                               f"{shown_data(event.data)}",
                               model=self.model) from exc
        self._content_seen = self._content_seen or any(is_content_chunk(c) for c in chunks)
        return chunks

    def _translate(self, kind: object, data: dict[str, Any]) -> list[dict[str, Any]]:
        if kind == "message_start":
            message = data.get("message") or {}
            # (cut: it is repeated in every chunk relayed, where the upstream sent it once)
            self._id = str(message.get("id") or self._id)[:MAX_MESSAGE_ID]
            self._upstream_model = message.get("model")
            usage = message.get("usage")
            self._usage = dict(usage) if isinstance(usage, Mapping) else {}
            self._reported = _reported_counts(
                self._usage, 0 if self._reported is None else self._reported.unrelayed_bytes)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = len(self._tool_index)
                self._tool_index[int(data.get("index", 0))] = index
                self._no_arguments.add(int(data.get("index", 0)))
                if self.legacy:  # (one call: a second is not for a legacy client)
                    return [self._chunk({"function_call": {"name": block.get("name"),
                                                           "arguments": ""}})] if not index else []
                return [self._chunk({"tool_calls": [{
                    "index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            self._thought(thought_of(block))  # (a redacted block comes whole here)
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                if delta.get("partial_json"):
                    self._no_arguments.discard(int(data.get("index", 0)))
                return self._arguments(int(data.get("index", 0)), delta.get("partial_json", ""))
            if delta.get("type") == "thinking_delta":
                self._thought(delta.get("thinking"))
            # (thinking and signature deltas are not part of the OpenAI format: not relayed)
            return []
        if kind == "content_block_stop" and int(data.get("index", 0)) in self._no_arguments:
            self._no_arguments.discard(int(data.get("index", 0)))
            return self._arguments(int(data.get("index", 0)), "{}")
        if kind == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, Mapping):
                self._usage.update(usage)
                self._final_usage = True
                output = usage.get("output_tokens")
                if is_token_count(output):  # (the least the answer is, should the rest not be
                    # believed: a prompt count past belief)
                    reported = self._reported or ReportedSoFar()
                    self._reported = replace(reported, completion_tokens=max(
                        reported.completion_tokens, output))
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                finish = STOP_REASONS.get(str(stop), "stop")
                if self.legacy and finish == "tool_calls":
                    finish = "function_call"
                if self._final_usage:  # (as an OpenAI stream's last chunk: only the end follows)
                    self._usage_sent = True
                    return [self._chunk({}, finish), self._usage_chunk()]
                return [self._chunk({}, finish)]
            return []
        if kind == "message_stop":
            self.done = True
            return [] if self._usage_sent else [self._usage_chunk()]
        return []  # ping, the other content_block_stop events and future event types

    def _usage_chunk(self) -> dict[str, Any]:
        """The chunk carrying the answer's usage (no choice), as an OpenAI stream ends."""
        chunk = self._chunk({})
        chunk["choices"] = []
        # (unknown without the final counts: the answer is charged an estimate, from the
        # counts of message_start and the chunks relayed, that each chunk carries)
        chunk["usage"] = _usage(self._usage) if self._final_usage else None
        return chunk

    def _arguments(self, block: int, text: object) -> list[dict[str, Any]]:
        """The chunk carrying ``text`` of the arguments of the tool_use block ``block``
        (a legacy client's one call only)."""
        index = self._tool_index.get(block, 0)
        if self.legacy:
            return [self._chunk({"function_call": {"arguments": text}})] if not index else []
        return [self._chunk({"tool_calls": [{"index": index,
                                             "function": {"arguments": text}}]})]


class AnthropicProvider:
    """The Messages API adapter. ``env`` defaults to ``os.environ`` (read at call time)."""

    def __init__(self, pool: ClientPool, *, env: Mapping[str, str] | None = None,
                 default_base_url: str = DEFAULT_BASE_URL,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS,
                 version: str = ANTHROPIC_VERSION) -> None:
        self.pool = pool
        self._env = env
        self.default_base_url = default_base_url
        self.default_max_tokens = default_max_tokens
        self.version = version

    def _body(self, request: Mapping[str, Any], card: ModelCard, *,
              stream: bool) -> dict[str, Any]:
        try:
            return to_anthropic_request(request, card, stream=stream,
                                        default_max_tokens=self.default_max_tokens)
        except UnsupportedRequest as exc:
            exc.model = card.name
            raise

    def _target(self, card: ModelCard, *, stream: bool) -> tuple[str, str, dict[str, str]]:
        base = target_url(card, self.default_base_url)
        path = urllib.parse.urlsplit(base).path.rstrip("/")
        url = endpoint_url(base, "/messages" if path.endswith("/v1") else "/v1/messages")
        headers = {"content-type": "application/json", "anthropic-version": self.version,
                   "accept": "text/event-stream" if stream else "application/json"}
        key = api_key(card, os.environ if self._env is None else self._env)
        if key is not None:
            headers["x-api-key"] = key
        return base, url, headers

    async def complete(self, request: Mapping[str, Any], card: ModelCard,
                       timeouts: Timeouts) -> ProviderResponse:
        body = self._body(request, card, stream=False)
        base, url, headers = self._target(card, stream=False)
        (answer, reported), response, latency_ms = await post_json(
            self.pool.get(base), url, body, headers, timeouts, model=card.name,
            answer=functools.partial(openai_answer, legacy=legacy_functions(request),
                                     model=card.name))
        return ProviderResponse(body=answer, model=card.name, status=response.status_code,
                                headers=dict(response.headers), latency_ms=latency_ms,
                                reported=reported)

    def stream(self, request: Mapping[str, Any], card: ModelCard,
               timeouts: Timeouts) -> AsyncIterator[dict[str, Any]]:
        return chunks_of(self.stream_batches(request, card, timeouts))

    async def stream_batches(self, request: Mapping[str, Any], card: ModelCard,
                             timeouts: Timeouts) -> AsyncGenerator[list[dict[str, Any]], None]:
        body = self._body(request, card, stream=True)
        base, url, headers = self._target(card, stream=True)
        chunks = stream_chunks(self.pool.get(base), url, body, headers, timeouts,
                               AnthropicChunkDecoder(card.name,
                                                     legacy=legacy_functions(request)),
                               model=card.name)
        async with aclosing(chunks):
            async for batch in chunks:
                yield batch
