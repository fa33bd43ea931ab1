"""A chat request body, checked: strict JSON in, a plain dict out, or an error naming the field.

The body is read as strictly as a routing request: numbers must be finite (no ``NaN``,
``Infinity`` or ``1e999``), nesting is bounded, strings must be valid Unicode (no lone
surrogates), and ``model``, ``messages``, ``stream``, the output caps (``max_tokens``,
``max_completion_tokens``: whole numbers from 1, as OpenAI requires), ``n`` (1 to 128),
``stream_options`` (an object whose ``include_usage`` is a boolean: the gateway reads it; only
beside ``stream: true``, as OpenAI requires), the
sampling settings (``temperature``, ``top_p``, ``presence_penalty``, ``frequency_penalty``,
``min_p``, ``repetition_penalty``: numbers; ``seed``, ``top_k``, ``top_logprobs``: whole
numbers; never a boolean, which an adapter translating them would read as 1) and the gateway's
own ``models`` field are checked by :class:`ChatRequest`, and each message must
carry what its role needs (a user message its ``content``, a tool message its
``tool_call_id``, ...), an assistant's ``function_call`` and ``tool_calls`` written as
OpenAI's schema writes them (names, arguments and ids as strings, each tool call of type
function or custom), and only the content-part types its role takes (system, developer and
tool messages text parts; user messages text, image_url, input_audio and file parts; assistant
messages text and refusal parts), each part with its own field, as OpenAI requires (an
unknown part type included: which upstream the router picks would decide whether it works),
and each image's URL one OpenAI takes (:mod:`~switchpoint.gateway.image_urls`: http(s), or a
data URL whose base64 data is base64). Tool calls belong to assistant messages only. The
tools a request declares (``tools``, legacy ``functions``) are read for their names (1 to
:data:`MAX_TOOL_NAME` characters: which characters is each provider's rule), as are the names
of the tools its history calls or answers (a function tool call's, a function or tool
message's), and a ``tool_choice`` (legacy ``function_call``) is one of its modes (auto, none,
required; auto or none) or an object, and must name one of them, as must each tool an
``allowed_tools`` choice lists. A ``stop`` is a string or a list of strings.
Every field (temperature, tools, response_format, ...) goes upstream exactly as sent, so the
dict returned is the body as the client wrote it, minus the gateway's own fields.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from switchpoint._json import (
    LONE_SURROGATE,
    SURROGATE_ESCAPE,
    DuplicateKeyError,
    lone_surrogate,
    nests_deeper,
    too_long,
    unique_keys,
)
from switchpoint._lists import comma_items
from switchpoint._messages import (
    MAX_FIELD,
    PAST_FLOATS,
    cut,
    got,
    invalid_at,
    invalid_from_validation,
    json_quoted,
    key_path,
    listed_keys,
    listed_names,
    not_finite_reason,
    one_of,
)
from switchpoint._numbers import TOO_SMALL, numpy_scalar, too_small
from switchpoint.catalog import MAX_MODEL_NAME, MAX_TOKENS, check_name_lengths, named_once
from switchpoint.errors import InvalidInputError
from switchpoint.gateway.image_urls import image_url_problem

AUTO_MODEL = "auto"
#: The modes a ``tool_choice`` takes as a string, a legacy ``function_call`` takes, and an
#: ``allowed_tools`` choice's ``mode`` takes (OpenAI's).
TOOL_CHOICE_MODES = ("auto", "none", "required")
FUNCTION_CALL_MODES = ("auto", "none")
ALLOWED_TOOLS_MODES = ("auto", "required")
# How deep a body may nest. OpenAI bodies reach about 6 levels (messages → content → parts →
# image_url); tool schemas go deeper, rarely past 20.
MAX_DEPTH = 64
#: Why a body (or a value passed on besides it) nesting deeper than :data:`MAX_DEPTH` levels is
#: refused, after the field that holds it.
TOO_DEEP = f"nests deeper than {MAX_DEPTH} levels"
# How many models a request may name in ``models``.
MAX_MODELS = 64
#: A model's name in a request's list of models (a chat body's ``models``, a routing body's
#: ``available_models``): at most :data:`~switchpoint.catalog.MAX_MODEL_NAME` characters, as
#: the ``model`` a chat body names (and so every catalog name) is; one of 10,000 characters
#: was looked up and called an unknown model.
ModelName = Annotated[StrictStr, Field(max_length=MAX_MODEL_NAME)]
# The most answers one request may ask for (``n``), as OpenAI allows.
MAX_CHOICES = 128
# Fields of the body that are the gateway's, not the upstream's: removed before forwarding.
GATEWAY_FIELDS = ("models",)
# A \uD800-\uDFFF escape: the only way JSON text can carry a surrogate.


# A message's content as OpenAI's schema has it: text, null, or a list of content parts.
_CONTENT_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string"}, {"type": "null"},
    {"type": "array", "items": {"type": "object", "required": ["type"],
                                "properties": {"type": {"type": "string"}},
                                "additionalProperties": True}}]}


#: The roles a message takes (OpenAI's).
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES: tuple[str, ...] = get_args(Role)


class ChatMessage(BaseModel):
    """One message. ``role`` is checked (one of OpenAI's, so a typo is refused here, not
    after a paid call upstream) and so is the shape of ``content``; every other key, and the
    content itself, goes upstream untouched."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    role: Role = Field(
        description='"system", "developer", "user", "assistant", "tool" (or the older '
                    '"function").')
    content: Annotated[Any, WithJsonSchema(_CONTENT_SCHEMA)] = Field(
        None, description="The text, or a list of content parts, objects with a type and "
                          "that type's field: text parts for every role; image_url, "
                          "input_audio and file parts too in a user message, refusal parts "
                          "in an assistant message. Required for every role but an assistant turn "
                          "carrying tool_calls, function_call, refusal or audio (then it may "
                          "be null or left out).")

    @field_validator("content")
    @classmethod
    def _content_shape(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError(f"must be a string, null, or a list of content parts (objects "
                             f"with a type, such as {{\"type\": \"text\", \"text\": \"...\"}})"
                             f"{got(value)}")
        for i, part in enumerate(value):
            if not isinstance(part, dict):
                raise ValueError(f"part {i} must be an object with a type, such as "
                                 f"{{\"type\": \"text\", \"text\": \"...\"}}{got(part)}")
            if not isinstance(part.get("type"), str):
                raise ValueError(f"part {i} has no type string; each content part names its "
                                 'type ("text", "image_url", "input_audio", "file", ...)')
        return value


class StreamOptions(BaseModel):
    """A stream's options: ``include_usage`` is checked (the gateway decides by it whether the
    client gets the usage chunk); any other option goes upstream as sent."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    include_usage: StrictBool | None = Field(
        None, description="End the stream with a chunk carrying the usage (and its cost).")


# A sampling setting: a number (a whole one too), never a boolean, a string or infinite.
_Number = Annotated[float, Field(strict=True)] | None


class ChatRequest(BaseModel):
    """An OpenAI chat completion request. The gateway checks ``model``, ``messages``, ``stream``,
    the output caps and ``models``, that each sampling setting (``temperature``, ``top_p``,
    ``seed``, ...) is a number, the names of the tools declared and chosen, and that ``stop``
    is text; every field but ``models`` (temperature, tools, response_format, ...) is
    forwarded to the model that answers exactly as sent."""

    # (its validators, and its messages', build when a first chat body is checked: feedback,
    # learn and the commands that list the state a service keeps import this module too)
    model_config = ConfigDict(
        extra="allow", defer_build=True,
        json_schema_extra={"examples": [
            {"model": "auto", "messages": [{"role": "user", "content": "Prove that the square "
                                            "root of 2 is irrational."}]},
        ]},
    )

    model: StrictStr = Field(min_length=1, max_length=MAX_MODEL_NAME,
                             description="\"auto\" to let the router choose, or a catalog model "
                                         "name (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool | None = Field(None, description="Answer as server-sent events.")
    stream_options: StreamOptions | None = Field(
        None, description="Options of a stream (an object): include_usage (a boolean). Only "
                          "with stream: true (else a 400 naming stream_options).")
    models: list[ModelName] | None = Field(
        None, min_length=1, max_length=MAX_MODELS,
        description="With model \"auto\": the catalog models the router may choose among (the "
                    "header x-switchpoint-models does the same), each named once (a repeat is "
                    "a 400 naming models and the name). Beside a named model it must list that "
                    "model (else a 400 naming models), and the model's fallbacks it leaves out "
                    "are not tried. Not forwarded upstream.")
    max_tokens: StrictInt | None = Field(
        None, ge=1, le=MAX_TOKENS,
        description="The most tokens the answer may have (its cost is reserved against "
                    "budgets at this size).")
    max_completion_tokens: StrictInt | None = Field(
        None, ge=1, le=MAX_TOKENS, description="OpenAI's newer name for max_tokens.")
    n: StrictInt | None = Field(
        None, ge=1, le=MAX_CHOICES,
        description="How many answers to write (each is held against budgets at the output "
                    "cap, and billed).")
    # The sampling settings: a number each, never a boolean or a string (an adapter that
    # translates them would read true as 1), whichever model answers; their ranges are the
    # upstream's to hold.
    temperature: _Number = Field(None, description="Sampling temperature (a number).")
    top_p: _Number = Field(None, description="Nucleus sampling's probability mass (a number).")
    presence_penalty: _Number = Field(None, description="A number.")
    frequency_penalty: _Number = Field(None, description="A number.")
    min_p: _Number = Field(None, description="A number (OpenAI-compatible servers').")
    repetition_penalty: _Number = Field(None, description="A number (OpenAI-compatible "
                                                          "servers').")
    seed: StrictInt | None = Field(None, description="A whole number.")
    top_k: StrictInt | None = Field(None, description="A whole number (OpenAI-compatible "
                                                      "servers').")
    top_logprobs: StrictInt | None = Field(None, description="A whole number.")


_FIELDS = list(ChatRequest.model_fields)

OUTPUT_CAP_FIELDS = ("max_tokens", "max_completion_tokens")


def output_cap(body: Mapping[str, Any]) -> int | None:
    """The most tokens each answer of a checked request may have: the larger of its
    ``max_tokens`` and ``max_completion_tokens`` when it names both, since an upstream honours
    one or the other (OpenAI's API the newer name, many OpenAI-compatible servers only
    ``max_tokens``), so the smaller binds nothing; None when it names neither."""
    caps = [value for name in OUTPUT_CAP_FIELDS
            if isinstance(value := body.get(name), int) and not isinstance(value, bool)
            and value > 0]
    return max(caps, default=None)


def stop_sequences(body: Mapping[str, Any]) -> list[str]:
    """The stop sequences of a checked request's ``stop``: a list's items, one for a string
    (an empty string alone is no stop sequence), none for null or when it names none."""
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [sequence for sequence in stop if isinstance(sequence, str)]
    return []


def answers_asked(body: Mapping[str, Any]) -> int:
    """How many answers (choices) a checked request asks for: its ``n``, 1 when it names
    none."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def parse_chat_body(raw: bytes) -> dict[str, Any]:
    """The request body (a dict) from its bytes, once it checks out.

    Raises :class:`~switchpoint.errors.InvalidInputError` naming the field for anything else:
    an empty body, invalid JSON or UTF-8, a key written twice in one object (JSON readers
    disagree on which one counts), a number no float holds as written (:func:`unheld_reason`),
    nesting deeper than :data:`MAX_DEPTH`, a lone surrogate, a missing or mistyped ``model`` /
    ``messages``, a model named twice in ``models``.
    """
    if not raw.strip():
        raise InvalidInputError("body", 'is empty; send a JSON object such as {"model": "auto", '
                                        '"messages": [{"role": "user", "content": "..."}]}')
    try:
        # (decoded strictly: Python's json reader lets a surrogate written as UTF-8 bytes,
        # ED A0 80, through as a lone surrogate, which is no text and failed the request later)
        data = _CHAT_READER.decode(raw.decode(json.detect_encoding(raw)))
    except DuplicateKeyError as exc:
        raise InvalidInputError("body", exc.msg) from None
    except _UnheldError as exc:
        _name_the_field(raw)  # raises naming the field, when it can
        raise InvalidInputError("body", unheld_reason(exc.text)) from None
    except RecursionError:
        raise InvalidInputError("body", TOO_DEEP) from None
    except UnicodeDecodeError as exc:
        raise InvalidInputError("body", f"is not valid UTF-8 ({exc.reason} at byte "
                                        f"{exc.start})") from None
    except ValueError as exc:
        raise InvalidInputError("body", f"is not valid JSON ({exc})") from None
    check_depth(raw, data)
    # Only a body with a surrogate escape can hold a lone surrogate: most bodies skip the walk
    # (its numbers were read finite, and its depth is checked).
    surrogates = bool(SURROGATE_ESCAPE.search(raw))
    return check_chat_body(data, walk=surrogates, surrogates=surrogates)


def check_depth(raw: str | bytes, data: object) -> None:
    """The one rule of a JSON body's depth: :class:`InvalidInputError` naming the top-level
    field of ``data`` that holds arrays or objects nested deeper than :data:`MAX_DEPTH` levels
    (``body`` for the body's own), when the JSON text ``raw`` it was read from nests so. The
    text tells (:func:`~switchpoint._json.nests_deeper`, over its brackets outside strings),
    so a body is walked only to name the field of one that does: a long conversation's
    hundreds of objects and lists are not visited on every request."""
    if nests_deeper(raw, MAX_DEPTH):
        raise InvalidInputError(_deep_field(data), TOO_DEEP)


def _deep_field(data: object) -> str:
    """The top-level field of ``data`` holding an array or object deeper than
    :data:`MAX_DEPTH` levels (``body`` for one in a list at the top, or none found)."""
    stack: list[tuple[object, int, str]] = [(data, 1, "body")]
    while stack:
        node, depth, field = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            return field
        if isinstance(node, dict):
            stack.extend((value, depth + 1, key if node is data else field)
                         for key, value in node.items())
        else:
            stack.extend((item, depth + 1, field) for item in node)
    return "body"


def check_chat_body(data: object, *, walk: bool = True, surrogates: bool = True
                    ) -> dict[str, Any]:
    """Check a body given as Python values (the in-process door's way in); see
    :func:`parse_chat_body`. ``walk=False`` skips the walk over every value (depth, finite
    numbers, lone surrogates when ``surrogates``) for a caller that knows it cannot fail.
    The body checked is returned: a copy, each NumPy scalar in it (``np.int64(5)``, a
    pandas column's value) the Python number it holds, when it holds any; else ``data``."""
    if not isinstance(data, dict):
        raise InvalidInputError("body", f"must be a JSON object with the fields "
                                        f"{listed_keys(_FIELDS)}")
    if walk and _check_values(data, surrogates):
        plain = _plain(data)
        assert isinstance(plain, dict)
        data = plain
    try:
        ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(list(exc.errors()), _FIELDS) from None
    _check_stream_options(data)
    for i, message in enumerate(data["messages"]):
        if isinstance(message, Mapping):
            _check_role_fields(message, i)
            _check_parts(message, i)
    _check_tools(data)
    _check_stop(data.get("stop"))
    if data.get("models") is not None:
        named_once(data["models"], "models")
    return data


def _check_stream_options(data: Mapping[str, Any]) -> None:
    """A ``stream_options`` (not null) only beside ``stream: true``, as OpenAI refuses it
    otherwise with a 400: an answer that is not streamed has no options to apply them to, and
    a client asking for a stream's usage chunk would wait for one that never comes."""
    if data.get("stream_options") is not None and data.get("stream") is not True:
        raise InvalidInputError("stream_options", 'is only allowed when stream is true; send '
                                                  '"stream": true, or leave stream_options '
                                                  'out')


def _check_stop(stop: object) -> None:
    """The request's ``stop``: null, a string, or a list of strings, as OpenAI takes it (it
    refuses any other with a 400), and as the Anthropic adapter reads it into the Messages
    API's ``stop_sequences``."""
    if stop is None or isinstance(stop, str):
        return
    written = 'send a string, or a list of strings such as ["\\n\\n", "END"]'
    if not isinstance(stop, list):
        raise invalid_at("stop", "stop", f"must be a string or a list of strings{got(stop)}; "
                                         f"{written}")
    for i, sequence in enumerate(stop):
        if not isinstance(sequence, str):
            raise invalid_at("stop", f"stop[{i}]", f"must be a string{got(sequence)}; "
                                                   f"{written}")


# What each role's message must carry besides its role, as OpenAI's Chat Completions API
# refuses it otherwise: the field, and how to give it.
_TEXT = ('send its text as a string, or a list of content parts such as [{"type": "text", '
         '"text": "..."}]')
_ASSISTANT_WITHOUT_TEXT = ("tool_calls", "function_call", "refusal", "audio")


def _absent(message: Mapping[str, Any], key: str) -> str:
    """How ``message[key]`` falls short: missing, null, or not a string."""
    if key not in message:
        return "is missing"
    value = message[key]
    return "is null" if value is None else f"must be a string{got(value)}"


def _check_role_fields(message: Mapping[str, Any], i: int) -> None:
    """A message (its shape already checked by :class:`ChatMessage`) missing what its role
    requires: :class:`InvalidInputError` naming the field (``messages[2].content``).

    ``system``, ``developer`` and ``user`` messages need ``content`` (not null); an
    ``assistant`` message too, unless it carries ``tool_calls`` (an empty list carries
    none), ``function_call``, ``refusal`` or ``audio`` (what an answer without text is echoed
    back with); a ``tool``
    message needs ``content`` and the ``tool_call_id`` it answers; a ``function`` message (the
    older tool result) its function's ``name``. A ``name`` on a system, developer, user or
    assistant message (its author's) is held to OpenAI's rule within a tool name's bounds.
    An assistant's calls are checked by :func:`_check_calls`. An empty string or an empty
    list of parts is passed on, as OpenAI takes them."""
    role = message["role"]
    where = f"messages[{i}]"
    if role != "assistant":
        for key, what in (("tool_calls", "tool calls"), ("function_call", "function_call")):
            # (null or an empty list is no call: some clients write one on every message)
            if message.get(key) not in (None, []):
                raise invalid_at("messages", f"{where}.{key}",
                                 f"{_article(role)} {role} message carries no {what}: only "
                                 f"assistant messages do (the calls the model made, sent back "
                                 f"with the conversation); leave {key} out of it")
    if message.get("content") is None:
        missing = _absent(message, "content")
        if role in ("system", "developer", "user"):
            raise invalid_at("messages", f"{where}.content",
                             f"{missing}; a {role} message needs content: {_TEXT}")
        # (an empty tool_calls list carries no call: OpenAI refuses the message, and the
        # Messages API an assistant turn with nothing in it)
        if role == "assistant" and all(message.get(k) in (None, [])
                                       for k in _ASSISTANT_WITHOUT_TEXT):
            empty = (" (an empty tool_calls list carries none)"
                     if message.get("tool_calls") == [] else "")
            raise invalid_at("messages", f"{where}.content",
                             f"{missing}; an assistant message needs content unless it carries "
                             f"tool_calls (or function_call, refusal, audio){empty}: {_TEXT}, "
                             "or the tool_calls the assistant made")
        if role == "tool":
            raise invalid_at("messages", f"{where}.content",
                             f"{missing}; a tool message needs content: send the tool's result "
                             "as a string (or a list of text parts)")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid_at("messages", f"{where}.tool_call_id",
                         f"{_absent(message, 'tool_call_id')}; a tool message names the tool "
                         "call it answers: send the id of one of the previous assistant "
                         "message's tool_calls")
    if role == "function" and not isinstance(message.get("name"), str):
        raise invalid_at("messages", f"{where}.name",
                         f"{_absent(message, 'name')}; a function message names the function "
                         "whose result it carries: send that name")
    if role == "function":
        # (the name of the function whose result it carries, held to a declared tool's bounds;
        # a tool message's name is no field of OpenAI's and goes unread)
        _tool_name(message, where, "messages", "a function message's name is its function's")
    if role in _AUTHORED and message.get("name") is not None:
        # (the author's name OpenAI's API takes; the Messages API has none and is not sent it)
        _name(message, where, "messages", _AUTHOR_NAME_RULE, _NOT_IN_AUTHOR_NAME)
    if role == "assistant":
        _check_calls(message, where)


# How each kind of call an assistant message carries is written, as OpenAI's schema has it:
# (the object's members that must be strings, the nested object and its string members).
_FUNCTION_CALL = '{"name": "...", "arguments": "{...}"}'
_TOOL_CALLS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "function": ("function", ("name", "arguments"),
                 f'{{"id": "call_...", "type": "function", "function": {_FUNCTION_CALL}}}'),
    "custom": ("custom", ("name", "input"),
               '{"id": "call_...", "type": "custom", "custom": {"name": "...", '
               '"input": "..."}}'),
}


def _not_object(value: object, present: bool = True) -> str:
    """How a value that must be an object falls short."""
    if not present:
        return "is missing"
    return "is null" if value is None else f"must be an object{got(value)}"


def _check_strings(value: Mapping[str, Any], members: tuple[str, ...], where: str,
                   written: str) -> None:
    """``value`` (at ``where``) lacking one of ``members`` as a string (other members go
    upstream as sent): :class:`InvalidInputError` naming it, and how the object is
    ``written``."""
    for member in members:
        if not isinstance(value.get(member), str):
            raise invalid_at("messages", f"{where}.{member}",
                             f"{_absent(value, member)}; {written}")


def _check_calls(message: Mapping[str, Any], where: str) -> None:
    """An assistant message's ``function_call`` and ``tool_calls``: null or left out, or as
    OpenAI's schema writes them (a function call's ``name`` and ``arguments`` strings; each
    tool call an object with an ``id`` string and a ``type``, function with its
    ``function`` call, or custom with its ``custom`` ``name`` and ``input``; a function's name
    held to a declared tool's bounds, :func:`_tool_name`), checked here so a malformed one is
    refused before anything is held, whichever model would answer."""
    call = message.get("function_call")
    if call is not None:
        written = f"a function_call is written {_FUNCTION_CALL}"
        if not isinstance(call, dict):
            raise invalid_at("messages", f"{where}.function_call",
                             f"{_not_object(call)}; {written}")
        _check_strings(call, ("name", "arguments"), f"{where}.function_call", written)
        _tool_name(call, f"{where}.function_call", "messages", written)
    calls = message.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise invalid_at("messages", f"{where}.tool_calls",
                         f"must be a list of tool calls{got(calls)}; each is written "
                         f"{_TOOL_CALLS['function'][2]}")
    for j, tool_call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(tool_call, dict):
            raise invalid_at("messages", at, f"{_not_object(tool_call)}; a tool call is "
                                             f"written {_TOOL_CALLS['function'][2]}")
        kind = tool_call.get("type")
        if kind not in _TOOL_CALLS:
            shown = (f"is {json_quoted(kind, 40)}" if isinstance(kind, str)
                     else _absent(tool_call, "type"))
            raise invalid_at("messages", f"{at}.type",
                             f"{shown}; a tool call's type is function (or custom): "
                             f"{_TOOL_CALLS['function'][2]}")
        field, members, shape = _TOOL_CALLS[kind]
        written = f"a{' custom' if kind == 'custom' else ''} tool call is written {shape}"
        _check_strings(tool_call, ("id",), at, written)
        value = tool_call.get(field)
        if not isinstance(value, dict):
            raise invalid_at("messages", f"{at}.{field}",
                             f"{_not_object(value, field in tool_call)}; {written}")
        _check_strings(value, members, f"{at}.{field}", written)
        # (the name of a tool called, held to a declared one's bounds)
        _tool_name(value, f"{at}.{field}", "messages", written)


# The longest tool name (a function or custom tool's, a legacy function's) a request may
# declare or call. Which characters a name may hold is each provider's rule (OpenAI's and
# Anthropic's take letters, digits, underscores and hyphens; local and other OpenAI-compatible
# servers, dotted MCP-style names too): a name one refuses leaves its models out
# (:mod:`~switchpoint.gateway.capabilities`), and is refused here only when no model could
# take it.
MAX_TOOL_NAME = 256
_TOOL_NAME_RULE = (f"a tool's name is a string of 1 to {MAX_TOOL_NAME} characters (OpenAI's "
                   "API takes 1 to 64 letters, digits, underscores or hyphens)")
# The roles whose message may name its author (``name``), and what OpenAI's API refuses in
# it: whitespace and < | \ / > (a name of any other characters, of any script, it takes),
# within the bounds of a tool's name.
_AUTHORED = ("system", "developer", "user", "assistant")
_NOT_IN_AUTHOR_NAME = re.compile(r"[\s<|\\/>]")
_AUTHOR_NAME_RULE = (f"a message's name (its author's, such as ann or agent_2) is a string of "
                     f"1 to {MAX_TOOL_NAME} characters without whitespace or any of < | \\ / "
                     ">, as OpenAI's API takes it; leave name out to send none")
# How many declared names an error about a tool_choice lists.
MAX_NAMES_LISTED = 10
_FUNCTION_TOOL = ('{"type": "function", "function": {"name": "...", "parameters": {...}}}')
_CUSTOM_TOOL = '{"type": "custom", "custom": {"name": "...", "description": "..."}}'


def _tool_name(function: Mapping[str, Any], where: str, param: str, written: str) -> str:
    """The ``name`` of ``function`` (at ``where``) when it is a tool name some provider may
    take (1 to :data:`MAX_TOOL_NAME` characters); else :class:`InvalidInputError` for
    ``param`` naming it."""
    return _name(function, where, param, _TOOL_NAME_RULE, None, written)


def _name(holder: Mapping[str, Any], where: str, param: str, rule: str,
          refused: re.Pattern[str] | None, written: str | None = None) -> str:
    """The ``name`` of ``holder`` (at ``where``) when it is a string of 1 to
    :data:`MAX_TOOL_NAME` characters none of which ``refused`` matches; else
    :class:`InvalidInputError` for ``param`` naming it and saying the ``rule`` (and how the
    object is ``written``, when the name is missing or not a string)."""
    name = holder.get("name")
    if not isinstance(name, str):
        raise invalid_at(param, f"{where}.name", f"{_absent(holder, 'name')}; {written or rule}")
    if not 1 <= len(name) <= MAX_TOOL_NAME or (refused is not None and refused.search(name)):
        raise invalid_at(param, f"{where}.name", f"is {json_quoted(name, 80)}; {rule}")
    return name


def _declared(data: Mapping[str, Any]) -> tuple[dict[str, list[str]], list[str] | None]:
    """The tools ``data`` declares, checked: (the names of its ``tools`` by type, function
    and custom; the names of its legacy ``functions``, None when it has none). A tool of
    another type goes upstream as sent."""
    tools = data.get("tools")
    names: dict[str, list[str]] = {"function": [], "custom": []}
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_at("tools", "tools", f"must be a list of tools{got(tools)}; each is "
                                               f"written {_FUNCTION_TOOL}")
        for i, declared in enumerate(tools):
            where = f"tools[{i}]"
            if not isinstance(declared, dict):
                raise invalid_at("tools", where, f"{_not_object(declared)}; a function tool "
                                                 f"is written {_FUNCTION_TOOL}")
            kind = declared.get("type")
            if kind == "function":
                written = f"a function tool is written {_FUNCTION_TOOL}"
                function = declared.get("function")
                if not isinstance(function, dict):
                    raise invalid_at("tools", f"{where}.function",
                                     f"{_not_object(function, 'function' in declared)}; "
                                     f"{written}")
                names["function"].append(_tool_name(function, f"{where}.function", "tools",
                                                    written))
            elif kind == "custom":
                written = f"a custom tool is written {_CUSTOM_TOOL}"
                custom = declared.get("custom")
                if not isinstance(custom, dict):
                    raise invalid_at("tools", f"{where}.custom",
                                     f"{_not_object(custom, 'custom' in declared)}; {written}")
                names["custom"].append(_tool_name(custom, f"{where}.custom", "tools", written))
    functions = data.get("functions")
    if functions is None:
        return names, None
    if not isinstance(functions, list):
        raise invalid_at("functions", "functions",
                         f"must be a list of functions{got(functions)}; each is "
                         'written {"name": "...", "parameters": {...}}')
    legacy = []
    for i, function in enumerate(functions):
        written = 'a function is written {"name": "...", "parameters": {...}}'
        if not isinstance(function, dict):
            raise invalid_at("functions", f"functions[{i}]", f"{_not_object(function)}; "
                                                             f"{written}")
        legacy.append(_tool_name(function, f"functions[{i}]", "functions", written))
    return names, legacy or None


def _listed(names: list[str]) -> str:
    """Declared tool names as an error lists them: the first :data:`MAX_NAMES_LISTED`, each
    quoted as JSON writes it and cut short (a name may be up to :data:`MAX_TOOL_NAME`
    characters), and how many more."""
    return listed_names(names, MAX_NAMES_LISTED, quoted=True)


def _chosen(choice: Mapping[str, Any], where: str, param: str, written: str,
            declared: list[str] | None, kind: str, field: str, other: str) -> None:
    """The tool ``choice`` (at ``where``, in ``param``) names: :class:`InvalidInputError`
    unless its ``name`` is among ``declared`` (the names of that ``kind`` in the request's
    ``field``; None: the request has no ``field``), as the upstream would refuse it."""
    name = choice.get("name")
    if not isinstance(name, str):
        raise invalid_at(param, f"{where}.name", f"{_absent(choice, 'name')}; {written}")
    shown = json_quoted(name, 80)
    if declared is None:
        raise invalid_at(param, f"{where}.name",
                         f"is {shown}, but the request declares no {field}: declare it in "
                         f"{field}, or leave {param} out")
    if name not in declared:
        listed = _listed(declared) if declared else "it declares none"
        raise invalid_at(param, f"{where}.name",
                         f"is {shown}, which is not {kind} the request declares in {field} "
                         f"({listed}); name one of them, or send {other}")


_ALLOWED = ('{"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": '
            '[{"type": "function", "function": {"name": "..."}}]}}')


def _check_allowed(choice: Mapping[str, Any], declared: dict[str, list[str]] | None) -> None:
    """An ``allowed_tools`` choice (the model may call the tools it lists only): its
    ``allowed_tools`` an object with a ``mode`` (auto or required) and a non-empty list of
    ``tools``, each function or custom tool one the request declares in ``tools`` (its names
    by type in ``declared``; None: it declares no tools), as :func:`_chosen` holds a choice of
    one tool. A listed tool of another type goes upstream as sent."""
    written = f"an allowed_tools choice is written {_ALLOWED}"
    allowed = choice.get("allowed_tools")
    if not isinstance(allowed, dict):
        raise invalid_at("tool_choice", "tool_choice.allowed_tools",
                         f"{_not_object(allowed, 'allowed_tools' in choice)}; {written}")
    mode = allowed.get("mode")
    if mode not in ALLOWED_TOOLS_MODES:
        shown = (f"is {json_quoted(mode, 40)}" if isinstance(mode, str)
                 else _absent(allowed, "mode"))
        raise invalid_at("tool_choice", "tool_choice.allowed_tools.mode",
                         f'{shown}; the mode is "auto" (the model may call one of the listed '
                         'tools) or "required" (it must)')
    tools = allowed.get("tools")
    if not isinstance(tools, list) or not tools:
        shown = ("is an empty list" if tools == [] else "is missing" if "tools" not in allowed
                 else f"must be a list of tools{got(tools)}")
        raise invalid_at("tool_choice", "tool_choice.allowed_tools.tools",
                         f"{shown}; list the declared tools the model may call: {written}")
    for i, listed in enumerate(tools):
        where = f"tool_choice.allowed_tools.tools[{i}]"
        if not isinstance(listed, dict):
            raise invalid_at("tool_choice", where, f"{_not_object(listed)}; {written}")
        kind = listed.get("type")
        if kind not in ("function", "custom"):
            continue
        # (the Chat Completions form nests the name, {"type": "function", "function":
        # {"name": ...}}; the Responses API's flat form names it beside its type)
        named, at = ((listed[kind], f"{where}.{kind}") if isinstance(listed.get(kind), dict)
                     else (listed, where))
        _chosen(named, at, "tool_choice", written,
                None if declared is None else declared[kind],
                "a function" if kind == "function" else "a custom tool", "tools",
                one_of(TOOL_CHOICE_MODES))


def _check_choice_mode(choice: object, field: str, modes: tuple[str, ...]) -> None:
    """A ``tool_choice`` (or legacy ``function_call``) that is neither null, one of its
    ``modes`` nor an object (whose forms :func:`_check_tools` checks): :class:`InvalidInputError`
    before anything is routed, as OpenAI refuses it with a 400 and no other provider's adapter
    has a meaning for it."""
    if choice is None or isinstance(choice, dict) or choice in modes:
        return
    shown = (f"is {json_quoted(choice, 40)}" if isinstance(choice, str)
             else f"must be a string or an object{got(choice)}")
    raise invalid_at(field, field, f"{shown}; send {one_of(modes)}, or an object naming a "
                                   "tool the request declares")


def _check_tools(data: Mapping[str, Any]) -> None:
    """The request's ``tools`` and legacy ``functions`` (each function's name 1 to
    :data:`MAX_TOOL_NAME` characters), and the tool its ``tool_choice`` (or legacy
    ``function_call``) names, which must be one it declares (OpenAI refuses a choice of any
    other with a 400: refused here, nothing is routed or held against budgets first), as must
    each function or custom tool an ``allowed_tools`` choice lists (:func:`_check_allowed`).
    A tool or a choice of another type (a built-in tool) goes upstream as sent."""
    names, legacy = _declared(data)
    choice = data.get("tool_choice")
    _check_choice_mode(choice, "tool_choice", TOOL_CHOICE_MODES)
    _check_choice_mode(data.get("function_call"), "function_call", FUNCTION_CALL_MODES)
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        kind = choice["type"]
        written = (f'a tool_choice naming a {"function" if kind == "function" else "custom tool"}'
                   f' is written {{"type": "{kind}", "{kind}": {{"name": "..."}}}}')
        named = choice.get(kind)
        if not isinstance(named, dict):
            raise invalid_at("tool_choice", f"tool_choice.{kind}",
                             f"{_not_object(named, kind in choice)}; {written}")
        _chosen(named, f"tool_choice.{kind}", "tool_choice", written,
                names[kind] if data.get("tools") else None,
                "a function" if kind == "function" else "a custom tool", "tools",
                one_of(TOOL_CHOICE_MODES))
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        _check_allowed(choice, names if data.get("tools") else None)
    call = data.get("function_call")
    if isinstance(call, dict):
        _chosen(call, "function_call", "function_call",
                'a function_call naming a function is written {"name": "..."}', legacy,
                "a function", "functions", one_of(FUNCTION_CALL_MODES))


# The content-part types each role's message may carry, as OpenAI's Chat Completions API takes
# them (its own schema refuses any other type, an unknown one included, with a 400). A
# ``function`` message (the older tool result) is held to what a ``tool`` message takes.
PART_TYPES: dict[str, tuple[str, ...]] = {
    "system": ("text",), "developer": ("text",), "tool": ("text",), "function": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}
# The part types of the table above that carry an image: a model takes them only if it lists
# vision, and each counts as a fixed number of tokens (whatever its length) in size estimates.
IMAGE_PART_TYPES = frozenset({"image_url"})
# Each part type, whose field is named as the type: what that field must be (a string, or an
# object), the members such an object must hold as strings, and how a part of it is written.
# Optional members (an image's ``detail``, a file's ``file_id`` / ``file_data`` /
# ``filename``) go upstream as sent.
_PART_FIELDS: dict[str, tuple[type, tuple[str, ...], str]] = {
    "text": (str, (), '{"type": "text", "text": "..."}'),
    "refusal": (str, (), '{"type": "refusal", "refusal": "..."}'),
    "image_url": (dict, ("url",), '{"type": "image_url", "image_url": {"url": "..."}}'),
    "input_audio": (dict, ("data", "format"), '{"type": "input_audio", "input_audio": '
                                              '{"data": "<base64>", "format": "wav"}}'),
    "file": (dict, (), '{"type": "file", "file": {"file_id": "..."}} (or file_data and '
                       'filename)'),
}


def _article(word: str) -> str:
    """``a`` or ``an`` before a role or a part type."""
    return "an" if word in ("assistant", "image_url", "input_audio") else "a"


def _takes(role: str) -> str:
    """What a ``role`` message takes, as an error says it."""
    kinds = PART_TYPES[role]
    return f"{one_of(kinds)} parts" + (" only" if len(kinds) == 1 else "")


def _check_parts(message: Mapping[str, Any], i: int) -> None:
    """A message whose content parts its role does not take, a part without its field, or an
    image whose URL no model is sent
    (:func:`~switchpoint.gateway.image_urls.image_url_problem`):
    :class:`InvalidInputError` naming the path (``messages[1].content[0].type``) and what the
    role takes (or how to give the image). (:class:`ChatMessage` has already checked each
    part is an object naming its type.)"""
    content = message.get("content")
    if not isinstance(content, list):
        return
    role = message["role"]
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        kind = part["type"]
        if kind not in PART_TYPES[role]:
            raise invalid_at("messages", f"{where}.type",
                             f"is {json_quoted(kind, 40)}, which {_article(role)} {role} "
                             f"message does not take: {_article(role)} {role} message takes "
                             f"{_takes(role)}")
        kind_of, members, written = _PART_FIELDS[kind]
        carries = f"{_article(kind)} {kind} part carries " + (
            f"its text: {written}" if kind_of is str else written)
        value = part.get(kind)
        if not isinstance(value, kind_of):
            wrong = (_absent(part, kind) if kind_of is str or value is None or kind not in part
                     else f"must be an object{got(value)}")
            raise invalid_at("messages", f"{where}.{kind}", f"{wrong}; {carries}")
        if not isinstance(value, dict):
            continue
        for member in members:
            if not isinstance(value.get(member), str):
                raise invalid_at("messages", f"{where}.{kind}.{member}",
                                 f"{_absent(value, member)}; {carries}")
        if kind in IMAGE_PART_TYPES and (problem := image_url_problem(value["url"])):
            raise invalid_at("messages", f"{where}.{kind}.url", problem)


def listed_models(text: str, field: str) -> list[str]:
    """The candidates ``text`` lists, comma-separated (the ``x-switchpoint-models`` header,
    ``field``), read as every list given as text is (:func:`~switchpoint._lists.comma_items`:
    the spaces around each name dropped, an empty item, ``a,,b``, refused naming its place),
    then held to :func:`check_model_count` (one naming no model says so, as an empty list)."""
    try:
        models = comma_items(text, "model name", "gpt-4o-mini,gpt-4o", none_ok=True)
    except ValueError as exc:
        raise InvalidInputError(field, str(exc)) from None
    return check_model_count(models, field)


def check_model_count(models: list[str], field: str) -> list[str]:
    """``models``, a list of candidates for ``auto`` given apart from the body (a header, an
    argument), held to the body's ``models`` rules: :class:`InvalidInputError` naming
    ``field`` for none (left out, ``auto`` chooses among all; an empty list is no choice),
    more than :data:`MAX_MODELS` names (dropping the rest would route among fewer models than
    the caller listed), a name longer than a model's (:data:`ModelName`) or a name given twice
    (see :func:`~switchpoint.catalog.named_once`)."""
    if not models:
        raise InvalidInputError(field, "names no model; name at least one for \"auto\" to choose "
                                       "among, or leave it out to let \"auto\" choose among "
                                       "every model it may")
    if len(models) > MAX_MODELS:
        raise InvalidInputError(field, f"names {len(models)} models; it takes at most "
                                       f"{MAX_MODELS}")
    check_name_lengths(models, field)
    return named_once(models, field)


def upstream_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` without the gateway's own fields: what goes to the model."""
    if not any(k in body for k in GATEWAY_FIELDS):
        return dict(body)
    return {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}


class _UnheldError(ValueError):
    """A number of the body no float holds as written (:func:`unheld_number`)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _no_constant(text: str) -> Any:
    raise _UnheldError(text)


def _finite_float(text: str) -> float:
    value = float(text)
    # (a number that is not 0 yet reads as 0, 1e-400, reads so only here: no cost to others)
    if not math.isfinite(value) or (value == 0 and too_small(text)):
        raise _UnheldError(text)
    return value


def _finite_int(text: str) -> int:
    if too_long(text):  # (more digits than int() reads)
        raise _UnheldError(text)
    return int(text)


# The chat body's reader: finite numbers, no constant, a key written once in each object. (A
# reader, given the text: json.loads would decode bytes letting surrogates through.)
_CHAT_READER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float,
                                parse_int=_finite_int, object_pairs_hook=unique_keys)


class _Unheld:
    """Where a body holds a number no float holds as written, in the body read anew by
    :func:`unheld_number`: the number's text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _held_float(text: str) -> float | _Unheld:
    try:
        return _finite_float(text)
    except _UnheldError:
        return _Unheld(text)


def _held_int(text: str) -> int | _Unheld:
    return _Unheld(text) if too_long(text) else int(text)


def unheld_number(raw: bytes | str) -> tuple[tuple[str | int, ...], str] | None:
    """Where the JSON body ``raw`` holds a number no float holds as written (``NaN``,
    ``Infinity``, ``1e999``, an integer of more digits than Python reads, a number that is not
    0 yet reads as 0 such as ``1e-400``), as the keys and indexes leading to the first one, and
    its text; None when it holds none or is not JSON. Read only once a body's reader has found
    one, to name the field that holds it (:func:`unheld_reason` says why it is refused)."""
    try:
        data = json.loads(raw, parse_constant=_Unheld, parse_float=_held_float,
                          parse_int=_held_int)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[object, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, _Unheld):
            return loc, node.text
        if isinstance(node, dict):
            stack.extend((value, (*loc, key)) for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((value, (*loc, i)) for i, value in reversed(list(enumerate(node))))
    return None


def unheld_reason(text: str, whole: bool = False) -> str:
    """Why a body's number written ``text``, which no float holds as written
    (:func:`unheld_number`), is refused, as a message goes on after the field that holds it
    (``body`` when none can be named: the body is the number, or no JSON follows it). In a
    field that takes ``whole`` numbers alone (:func:`whole_number_fields`), a number that is
    not 0 yet reads as 0 (``1e-400``) is told it is no integer, as ``1.0`` is there, not to
    write 0, which such a field may refuse too (``max_tokens``)."""
    if too_long(text):
        return (f"must be a finite number, got an integer of {len(text.lstrip('-'))} digits, "
                f"{PAST_FLOATS}")
    value = float(text)
    if value == 0:
        return (f"must be an integer, got {cut(text, 40)}" if whole
                else f"{cut(text, 40)} {TOO_SMALL}")
    return not_finite_reason(value)


@functools.cache
def whole_number_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that take whole numbers alone (an int, or null), where a number
    that is not 0 yet reads as 0 is told it is no integer (:func:`unheld_reason`)."""
    def integer(kind: object) -> bool:
        return kind is int or (get_origin(kind) is Annotated and get_args(kind)[0] is int)

    fields = set()
    for name, field in model.model_fields.items():
        kinds = (get_args(field.annotation) if get_origin(field.annotation) is Union
                 else (field.annotation,))
        taken = [kind for kind in kinds if kind is not type(None)]
        if taken and all(integer(kind) for kind in taken):
            fields.add(name)
    return frozenset(fields)


def _name_the_field(raw: bytes) -> None:
    """For a body holding a number no float holds: raise the error naming the field that holds
    one (:func:`unheld_number`)."""
    found = unheld_number(raw)
    if found is not None and found[0]:
        path = key_path(found[0], "body")
        whole = len(found[0]) == 1 and found[0][0] in whole_number_fields(ChatRequest)
        raise _invalid_at(path, unheld_reason(found[1], whole))


def read_embedded_json(text: str, where: str) -> Any:
    """JSON ``text`` the body carries as a string (a tool call's ``arguments``) read as an
    adapter that sends it as structure reads it, by the body's own reader: a key written twice
    in one object (which JSON readers take differently: the structure sent would hold one of
    the two) or a number no float holds as written is an :class:`InvalidInputError` naming
    ``where``; text that is not JSON a ``ValueError``; then :func:`check_embedded_json`."""
    try:
        value = _CHAT_READER.decode(text)
    except DuplicateKeyError as exc:
        raise invalid_at(_top(where), where, exc.msg) from None
    except _UnheldError as exc:
        raise invalid_at(_top(where), where, unheld_reason(exc.text)) from None
    check_embedded_json(value, where)
    return value


def check_embedded_json(value: object, where: str) -> None:
    """A JSON value the gateway passes on besides the body (a tool call's ``arguments``, which
    the body carries as text and an adapter sends as structure; an upstream's answer), held to
    the body's own rules: nesting within :data:`MAX_DEPTH` levels and finite numbers only
    (:class:`InvalidInputError` whose message starts with ``where`` or the path in it
    otherwise)."""
    try:
        _check_values(value, surrogates=False, root=where)
    except InvalidInputError as exc:
        if str(exc).startswith(where):
            raise
        raise invalid_at(exc.field, where, exc.reason) from None


def _check_values(data: object, surrogates: bool, root: str = "body") -> bool:
    """Depth, finite floats and values JSON holds (for Python-built bodies: a tuple is a
    list, a NumPy boolean, integer or float is the Python one it holds, and bytes, a set, an
    array or any other object are refused naming the field) and, if asked, lone surrogates.
    Whether ``data`` holds a NumPy scalar (:func:`_plain` makes the body without)."""
    numpy = False
    stack: list[tuple[object, int, str]] = [(data, 1, root)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise InvalidInputError(_top(path), TOO_DEEP)
            for key, value in node.items():
                if surrogates and isinstance(key, str):
                    _check_text(key, path)
                stack.append((value, depth + 1, f"{path}.{key}" if path != "body" else key))
        elif isinstance(node, list | tuple):
            if depth > MAX_DEPTH:
                raise InvalidInputError(_top(path), TOO_DEEP)
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, str):
            if surrogates:
                _check_text(node, path)
        elif isinstance(node, float):
            numpy = numpy or type(node) is not float  # (np.float64 is a float)
            if not math.isfinite(node):
                raise _invalid_at(path, not_finite_reason(node))
        elif node is None or isinstance(node, int):  # (bool is an int)
            pass
        elif (scalar := numpy_scalar(node)) is not None:  # (checked as the number it holds)
            numpy = True
            stack.append((scalar, depth, path))
        else:
            raise _invalid_at(path, f"is of type {type(node).__name__}, which a JSON body "
                                    "cannot hold; send strings, numbers, true or false, null, "
                                    "lists and objects")
    return numpy


def _plain(node: object) -> object:
    """``node`` (checked by :func:`_check_values`) rebuilt with each NumPy scalar in it as
    the Python number it holds, so the body is JSON any writer writes: the caller's own
    values are left as they were."""
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(value) for value in node]
    scalar = numpy_scalar(node)
    return node if scalar is None else scalar


def _check_text(text: str, path: str) -> None:
    if lone_surrogate(text):
        raise _invalid_at(path, LONE_SURROGATE)


def _invalid_at(path: str, message: str) -> InvalidInputError:
    """The error of the value at ``path`` (``messages[0].content``), naming its top-level
    field, its message starting with the path once (both cut short: a key is any string)."""
    return invalid_at(cut(_top(path), MAX_FIELD), cut(path, 2 * MAX_FIELD), message)


def _top(path: str) -> str:
    """The top-level field of a path such as ``messages[0].content``."""
    return re.split(r"[.\[]", path, maxsplit=1)[0] or "body"
