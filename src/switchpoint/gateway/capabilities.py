"""What a chat request needs from a model, and which catalog models can give it.

:func:`needs_of` reads an OpenAI chat request: does it carry images, does it use tools (tool
definitions, or tool calls and results already in the conversation), roughly how many tokens
will the prompt be, how many does it reserve for the answer, how many answers does it ask for
(``n``), and what did the user say last (the text routing looks at).

:func:`filter_candidates` keeps the models that can serve those needs and says why each of the
others cannot. Capabilities are opt-in: a card serves images only if it lists ``"vision"`` and
tool calls only if it lists ``"tools"``. A card without a ``context_window`` is assumed to fit.
A request for several answers is not for a model behind the Anthropic Messages API, which
gives one (its client would get fewer choices than it asked for, and no error), nor one asking
for log probabilities (``logprobs``), which it gives none of (its client would get
``logprobs`` null, and no error), nor one whose ``response_format`` asks for JSON
(``json_object``, ``json_schema``), which it has no field for (its client would get free
text where it parses JSON); nor is a
request carrying a content part its model's adapter cannot send (:data:`SENDS`: the Anthropic
adapter sends text parts, image_url parts in user messages and refusal parts in assistant
ones, but no audio or file part), nor one whose legacy ``function`` message answers no
``function_call`` (the Anthropic adapter sends it as the ``tool_result`` of that call), nor
one with an image given as a data URL the Messages API cannot take (it takes base64 jpeg,
png, gif and webp data only: :data:`ANTHROPIC_IMAGE_TYPES`), nor one with an assistant turn
that is an earlier audio answer's id (``audio``, which only OpenAI can look up), nor one
whose conversation opens with an assistant turn once system messages are lifted out (the
Messages API takes a conversation opening with the user's turn only) or has no turn with
something in it (system messages alone, or blank text the adapter leaves out: the API takes
no request without a turn) or ends with a blank user message after an assistant turn (left
out, the assistant turn would be last, which the API continues as the start of its answer),
nor one whose ``stop`` holds a sequence empty or whitespace only (``"\\n\\n"``: the Messages
API refuses it) or, for OpenAI's own API, more than four sequences, nor one declaring or
listing in an ``allowed_tools`` choice a tool neither function nor custom (a built-in
tool, an MCP server: :func:`other_tools`, which the Anthropic adapter has nothing to
translate to), nor one declaring or calling a tool whose name its provider's API refuses
(OpenAI's takes 1 to 64 letters, digits, underscores or hyphens, in a function message's
name too, the Messages API up to 128 and unique ones only; a dotted MCP-style name goes to
the local and OpenAI-compatible servers that take it), which would otherwise be held against
budgets and refused only once its call began (or, for that turn, sent without it). Each
reason names the request field it is about (:class:`Reason`), so an error that leaves out
every model can name it.

Token estimates use the catalog's convention (about four bytes of UTF-8 a token:
:func:`~switchpoint.catalog.text_bytes`) over every message's text, tool calls, and the tool
definitions; each image counts as
:data:`IMAGE_TOKENS`, since its base64 length says nothing about its token cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchpoint._messages import all_of, json_quoted, listed_names, one_of
from switchpoint.catalog import Catalog, ModelCard, json_bytes, text_bytes, text_tokens
from switchpoint.gateway.data_url import media_type_of, parse_data_url
from switchpoint.gateway.parsing import (
    IMAGE_PART_TYPES,
    PART_TYPES,
    answers_asked,
    output_cap,
    stop_sequences,
)
from switchpoint.known_providers import Wire, spec_of

# Tokens charged per image part (about one high-detail 1024² image on OpenAI's and Anthropic's
# pricing); only the estimate for context checks uses it.
IMAGE_TOKENS = 1_000
# Per-message overhead (role markers and separators), as in OpenAI's token-counting guide.
TOKENS_PER_MESSAGE = 4
# The content-part types each wire format's adapter sends, by the role of the message that
# carries them (text content counts as a text part; a role not listed the adapter cannot send
# at all). An OpenAI-compatible upstream gets the messages as sent: every part type the
# request check lets through. The Anthropic adapter translates text and (base64 data or
# remote) image_url parts into Messages API blocks, and an assistant's refusal parts into
# text (what it said to the user), and nothing else: the Messages API has no audio input
# block, and OpenAI's file parts (file ids, or data) have no equivalent there. (A tool or
# legacy function message's result becomes a tool_result block.)
SENDS: dict[Wire, Mapping[str, tuple[str, ...]]] = {
    "openai": PART_TYPES,
    "anthropic": {"system": ("text",), "developer": ("text",), "tool": ("text",),
                  "function": ("text",), "user": ("text", "image_url"),
                  "assistant": ("text", "refusal")},
}
ADAPTER_NAMES: dict[Wire, str] = {"openai": "OpenAI-compatible", "anthropic": "Anthropic"}
# The response_format types that ask for a structured (JSON) answer.
STRUCTURED_OUTPUTS = ("json_object", "json_schema")
# The media types of the images the Anthropic Messages API takes as base64 data (an image
# given by an http(s) URL it fetches itself).
ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class Reason(str):
    """Why a model is left out (its text), and the request field that leaves it out
    (``field``: messages, tools, n, ...; None when the reason is about several)."""

    field: str | None

    def __new__(cls, text: str, field: str | None = "messages") -> Reason:
        reason = super().__new__(cls, text)
        reason.field = field
        return reason


def common_field(excluded: Mapping[str, Sequence[str]]) -> str | None:
    """The request field that left out every model of ``excluded`` (each model's reasons,
    :func:`exclusion_reasons`) when their reasons all name the same one, else None (a reason
    given as plain text is about the messages)."""
    fields = {getattr(reason, "field", "messages") for reasons in excluded.values()
              for reason in reasons}
    return fields.pop() if len(fields) == 1 else None


@dataclass(frozen=True)
class Needs:
    """What a request needs. ``output_tokens`` is the answer budget it asked for (0 if none).
    ``context_floor`` is a context window the conversation is known to outgrow (a model with
    a window that size refused it as too long; 0: none known): a model no larger would refuse
    it too, whatever the estimate says."""

    vision: bool
    tools: bool
    prompt_tokens: int
    last_user_text: str
    output_tokens: int = 0
    answers: int = 1  # the request's n
    context_floor: int = 0
    # (role, part type) of every content part the conversation carries (text content counts
    # as a text part): what each candidate's adapter must be able to send.
    parts: frozenset[tuple[str, str]] = frozenset()
    # How many function messages (legacy tool results) answer no function_call
    # (:func:`function_results`).
    unanswered_results: int = 0
    # How many assistant messages stand for an earlier audio answer by its id (``audio``).
    audio_answers: int = 0
    # Whether the request declares, or its history calls, a custom tool (``type: custom``:
    # free-form input), which only OpenAI's own API takes.
    custom_tools: bool = False
    # (media type, whether base64) of each image given as a data URL (:mod:`data_url`: the
    # type its first bytes show, else the one its header names; "" when none was read).
    data_images: frozenset[tuple[str, bool]] = frozenset()
    # The names of the tools the request declares or its history calls that are not 1 to 64
    # letters, digits, underscores or hyphens (:data:`PLAIN_TOOL_NAME`): a dotted MCP-style
    # ``server.tool`` name, say, which some providers take and others refuse (the first
    # :data:`MAX_ODD_NAMES` of them, and of those :data:`ANTHROPIC_TOOL_NAME` refuses).
    tool_names: frozenset[str] = frozenset()
    # What the request's tool fields hold that OpenAI's own API refuses with a 400 and other
    # OpenAI-compatible servers take (:func:`empty_tool_fields`).
    empty_tool_fields: frozenset[str] = frozenset()
    # Names two of the request's declared function tools (tools and legacy functions together)
    # share.
    duplicate_tool_names: frozenset[str] = frozenset()
    # The names function messages (the results of calls) carry that are not
    # :data:`PLAIN_TOOL_NAME`: OpenAI's API checks a message's name as it checks a tool's; the
    # Messages API is not sent them (a result names the call it answers by its id).
    result_names: frozenset[str] = frozenset()
    # How many distinct names there are in all of those kept above (the first
    # :data:`MAX_ODD_NAMES`), so a reason says the true number: the names OpenAI's API refuses
    # (:data:`PLAIN_TOOL_NAME`: declared, called or answered), those the Anthropic Messages
    # API refuses (:data:`ANTHROPIC_TOOL_NAME`: declared or called), and the duplicates.
    plain_refused_count: int = 0
    anthropic_refused_count: int = 0
    duplicate_tool_names_count: int = 0
    # (name, the request field it is in) of each odd name (:attr:`tool_names`,
    # :attr:`result_names`): tools or functions when declared there, else messages.
    name_fields: frozenset[tuple[str, str]] = frozenset()
    # The request field that uses tools (tools, else functions, else messages: the history's
    # calls and results), and the one declaring or calling a custom tool.
    tools_field: str = "messages"
    custom_field: str = "messages"
    # The role of the first turn with something in it, once system and developer messages
    # are lifted out (:func:`opening_role`): None when no turn has anything in it.
    opening: str | None = "user"
    # Whether the conversation ends with user turns that say nothing after an assistant turn
    # (:func:`blank_close`): left out, they would leave that assistant turn last.
    blank_close: bool = False
    # (type, field) of each declared or allowed tool of another type than function or custom
    # (:func:`other_tools`).
    other_tools: frozenset[tuple[str, str]] = frozenset()
    # The request's stop sequences that are empty or whitespace only (:func:`blank_stops`).
    blank_stops: tuple[str, ...] = ()
    # How many stop sequences the request's ``stop`` holds (:func:`stop_count`).
    stops: int = 0
    # Whether the request asks for the answer's log probabilities (``logprobs: true``).
    logprobs: bool = False
    # The kind of structured answer the request's ``response_format`` asks for
    # (``json_object`` or ``json_schema``; None: plain text, or no response_format).
    structured: str | None = None

    @property
    def total_tokens(self) -> int:
        """Tokens the model's context window must hold: the prompt plus the answer budget."""
        return self.prompt_tokens + self.output_tokens


def _parts(content: object) -> list[object]:
    if content is None:
        return []
    if isinstance(content, list):
        return content
    return [content]


def _text_bytes_and_images(content: object) -> tuple[int, int, list[str]]:
    """(bytes of text as tokens are estimated from, :func:`~switchpoint.catalog.text_bytes`;
    number of images; the text pieces) in a message's content."""
    size, images, texts = 0, 0, []
    for part in _parts(content):
        if isinstance(part, str):
            size += text_bytes(part)
            texts.append(part)
        elif isinstance(part, Mapping):
            kind = part.get("type")
            if kind in IMAGE_PART_TYPES:
                images += 1
            elif kind == "text" or "text" in part:
                text = str(part.get("text") or "")
                size += text_bytes(text)
                texts.append(text)
            else:
                # Audio, files, ...: count what they carry, excluding binary payloads.
                size += json_bytes({k: v for k, v in part.items()
                                    if k not in ("input_audio", "file")})
    return size, images, texts


def _data_images(content: object) -> set[tuple[str, bool]]:
    """(media type, whether base64) of each image part of ``content`` given as a data URL."""
    found = set()
    for part in _parts(content):
        if isinstance(part, Mapping) and part.get("type") in IMAGE_PART_TYPES:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str):
                continue
            header = parse_data_url(url)
            if header is not None:
                found.add((media_type_of(url, header), header.base64))
    return found


def anthropic_image_refusal(media_type: str, base64: bool) -> str | None:
    """Why the Anthropic Messages API cannot take an image given as a data URL of
    ``media_type`` (base64 or not), as what the request has (None when it can)."""
    shown = json_quoted(media_type, 100) if media_type else None
    if not base64:
        return f"an image given as a data URL that is not base64 ({shown or 'no media type'})"
    if media_type not in ANTHROPIC_IMAGE_TYPES:
        return f"an image given as a data URL of type {shown or 'none'}"
    return None


ANTHROPIC_IMAGES = (f"the Anthropic Messages API takes images as base64 data URLs of "
                    f"{one_of(ANTHROPIC_IMAGE_TYPES)} (or as http(s) URLs)")


def function_results(messages: Sequence[object]) -> dict[int, int | None]:
    """Which legacy ``function_call`` each ``function`` message of ``messages`` answers: by the
    function message's index, the index of the assistant message carrying the call (the last
    one before it that no function message has answered yet), or None when there is none."""
    answered: dict[int, int | None] = {}
    pending: int | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        if message.get("role") == "assistant" and message.get("function_call"):
            pending = i
        elif message.get("role") == "function":
            answered[i], pending = pending, None
    return answered


# A tool name every provider takes: OpenAI's rule (1 to 64 letters, digits, underscores or
# hyphens), the strictest known. Other names go upstream as sent where the provider takes them
# (a local or OpenAI-compatible server, Gemini's dotted names) and leave out the models of
# providers that refuse them (:data:`WIRE_LIMITS`, :data:`PROVIDER_LIMITS`).
PLAIN_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# The Anthropic Messages API's rule for a tool's name (its tools and tool_use blocks).
ANTHROPIC_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
# How many odd tool names a request's needs keep (enough to say why a model is left out).
MAX_ODD_NAMES = 16


def _named(items: object, nested: str | None) -> list[str]:
    """The names in a list of tools, functions or tool calls (``item[nested]["name"]``, or
    ``item["name"]`` when ``nested`` is None), strings only."""
    if not isinstance(items, list):
        return []
    names = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        holder = item.get(nested) if nested is not None else item
        if isinstance(holder, Mapping) and isinstance(holder.get("name"), str):
            names.append(holder["name"])
    return names


def tool_names(request: Mapping[str, Any]) -> list[str]:
    """The names of the function tools ``request`` declares (``tools``, legacy ``functions``)
    or its assistant messages call (``tool_calls``, ``function_call``)."""
    names = _declared_names(request)
    messages = request.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            names += _named(message.get("tool_calls"), "function")
            names += _named([message.get("function_call")], None)
    return names


def result_names(request: Mapping[str, Any]) -> list[str]:
    """The names the function messages of ``request`` carry (each its function's). A tool
    message's ``name`` is no field of OpenAI's tool message: it is not judged (nor sent to
    Anthropic)."""
    messages = request.get("messages")
    return (_named([m for m in messages if isinstance(m, Mapping)
                    and m.get("role") == "function"], None)
            if isinstance(messages, list) else [])


def refused_names(names: list[str], rule: re.Pattern[str] = PLAIN_TOOL_NAME
                  ) -> tuple[frozenset[str], int]:
    """The ``names`` ``rule`` refuses: the first :data:`MAX_ODD_NAMES` of them (distinct),
    and how many distinct ones there are in all."""
    refused = {name for name in names if not rule.fullmatch(name)}
    if len(refused) <= MAX_ODD_NAMES:
        return frozenset(refused), len(refused)
    kept: set[str] = set()
    for name in names:
        if name in refused:
            kept.add(name)
            if len(kept) >= MAX_ODD_NAMES:
                break
    return frozenset(kept), len(refused)


def _name_fields(request: Mapping[str, Any], odd: frozenset[str]) -> frozenset[tuple[str, str]]:
    """(name, field) of each of the ``odd`` names of ``request``: the field declaring it
    (``tools``, else ``functions``), or ``messages`` (called or answered there only)."""
    declared = (("tools", set(_named([t for t in request.get("tools") or []
                                      if isinstance(t, Mapping)], "function"))),
                ("functions", set(_named(request.get("functions"), None))))
    return frozenset((name, next((f for f, names in declared if name in names), "messages"))
                     for name in odd)


def _tools_field(request: Mapping[str, Any]) -> str:
    """The request field that uses tools: ``tools``, else ``functions``, else ``messages``
    (the calls and results of its history)."""
    return next((f for f in ("tools", "functions") if request.get(f)), "messages")


def _declared_names(request: Mapping[str, Any]) -> list[str]:
    """The names of the function tools ``request`` declares: its ``tools``, then its legacy
    ``functions``."""
    return [*_named([t for t in request.get("tools") or [] if isinstance(t, Mapping)
                     and t.get("type") == "function"], "function"),
            *_named(request.get("functions"), None)]


def duplicate_tool_names(request: Mapping[str, Any]) -> tuple[frozenset[str], int]:
    """The names two or more of the function tools ``request`` declares share: the first
    :data:`MAX_ODD_NAMES` of them, and how many there are in all."""
    seen: set[str] = set()
    twice: set[str] = set()
    kept: set[str] = set()
    for name in _declared_names(request):
        if name in seen:
            twice.add(name)
            if len(kept) < MAX_ODD_NAMES:
                kept.add(name)
        seen.add(name)
    return frozenset(kept), len(twice)


# The request field each of :func:`empty_tool_fields`'s findings is in.
_EMPTY_FIELD_OF = {"an empty tools list": "tools", "tool_choice without tools": "tool_choice",
                   "parallel_tool_calls without tools": "parallel_tool_calls"}


def empty_tool_fields(request: Mapping[str, Any]) -> frozenset[str]:
    """What ``request`` holds that OpenAI's API refuses though other OpenAI-compatible servers
    take it, each as the request has it: an empty ``tools`` list ("empty array"), a
    ``tool_choice`` or ``parallel_tool_calls`` with no tools ("only allowed when 'tools' are
    specified"), an assistant message whose ``tool_calls`` is an empty list ("empty
    array")."""
    found = set()
    tools = request.get("tools")
    if tools == []:
        found.add("an empty tools list")
    if not tools:
        found.update(f"{field} without tools" for field in ("tool_choice", "parallel_tool_calls")
                     if request.get(field) is not None)
    messages = request.get("messages")
    if isinstance(messages, list) and any(
            isinstance(m, Mapping) and m.get("role") == "assistant" and m.get("tool_calls") == []
            for m in messages):
        found.add("an assistant message whose tool_calls is an empty list")
    return frozenset(found)


def blank(text: str) -> bool:
    """Whether ``text`` says nothing: empty, or whitespace only (the Messages API refuses a
    text block of it, where OpenAI takes it)."""
    return not text.strip()


def _says_nothing(message: Mapping[str, Any]) -> bool:
    """Whether ``message`` (a user or assistant one) has nothing the Anthropic adapter sends:
    no call, no refusal and no content part but blank text ones."""
    if message.get("tool_calls") or message.get("function_call"):
        return False
    refusal = message.get("refusal")
    if isinstance(refusal, str) and not blank(refusal):
        return False
    for part in _parts(message.get("content")):
        if isinstance(part, str):
            text: object = part
        elif isinstance(part, Mapping) and part.get("type") in ("text", "refusal"):
            text = part.get(str(part.get("type")))
        else:
            return False
        if not isinstance(text, str) or not blank(text):
            return False
    return True


def opening_role(messages: Sequence[object]) -> str | None:
    """The role of the first turn of ``messages`` with something in it, system and developer
    messages aside (the Messages API takes them as its system prompt): assistant, or user (a
    tool or function result is sent as the user's); None when none has (the Anthropic adapter
    leaves a turn saying nothing out, and the Messages API takes no request without a turn).
    The Messages API takes a conversation opening with the user's turn only."""
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role in ("user", "assistant") and _says_nothing(message):
            continue
        return "assistant" if role == "assistant" else "user"
    return None


def blank_close(messages: Sequence[object]) -> bool:
    """Whether ``messages`` end with one or more user turns saying nothing (blank text only)
    right after an assistant turn with something in it, system and developer messages aside.
    The Anthropic adapter leaves such turns out, and the Messages API takes a last assistant
    turn as the start of its answer, to be continued: the model would carry on the assistant's
    earlier message instead of answering the user's."""
    closing = False
    for message in reversed(messages):
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user" and _says_nothing(message):
            closing = True
            continue
        return closing and role == "assistant" and not _says_nothing(message)
    return False


# The tool types the Anthropic adapter translates (a function tool; a custom one it cannot,
# and says so apart: :attr:`Needs.custom_tools`).
_TRANSLATED_TOOLS = ("function", "custom")


def other_tools(request: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """(type, request field) of each tool ``request`` declares in ``tools`` or lists in an
    ``allowed_tools`` ``tool_choice`` that is neither a function nor a custom tool (a built-in
    one such as web_search, an MCP server): it goes upstream as sent, and the Anthropic
    adapter has nothing to translate it to (at most :data:`MAX_ODD_NAMES` of them)."""
    choice = request.get("tool_choice")
    allowed = choice.get("allowed_tools") if isinstance(choice, Mapping) and choice.get(
        "type") == "allowed_tools" else None
    listed = allowed.get("tools") if isinstance(allowed, Mapping) else None
    found: set[tuple[str, str]] = set()
    for field, tools in (("tools", request.get("tools")), ("tool_choice", listed)):
        for tool in tools if isinstance(tools, list) else []:
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            if (isinstance(kind, str) and kind not in _TRANSLATED_TOOLS
                    and len(found) < MAX_ODD_NAMES):
                found.add((json_quoted(kind, 48), field))
    return frozenset(found)


def blank_stops(request: Mapping[str, Any]) -> tuple[str, ...]:
    """The stop sequences of ``request`` (:func:`~switchpoint.gateway.parsing.stop_sequences`)
    that are empty or whitespace only (``"\\n\\n"``, a usual one), each once (the first
    :data:`MAX_ODD_NAMES`): the Anthropic Messages API refuses each."""
    blank = (s for s in stop_sequences(request) if not s.strip())
    return tuple(dict.fromkeys(blank))[:MAX_ODD_NAMES]


def stop_count(request: Mapping[str, Any]) -> int:
    """How many stop sequences ``request``'s ``stop`` holds
    (:func:`~switchpoint.gateway.parsing.stop_sequences`)."""
    return len(stop_sequences(request))


def _message_text(content: object) -> str:
    return "\n".join(_text_bytes_and_images(content)[2])


def needs_of(request: Mapping[str, Any]) -> Needs:
    """The needs of an OpenAI chat request (``messages`` may hold string or list content)."""
    messages = request.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        messages = []
    vision = False
    tools = bool(request.get("tools") or request.get("functions"))
    size = 0  # (bytes of text and of JSON: catalog.text_bytes, catalog.json_bytes)
    images = 0
    last_user = ""
    parts: set[tuple[str, str]] = set()
    audio_answers = 0
    custom = _any_custom(request.get("tools"))
    data_images: set[tuple[str, bool]] = set()
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        parts.update(_part_kinds(message))
        data_images.update(_data_images(message.get("content")))
        n_bytes, n_images, texts = _text_bytes_and_images(message.get("content"))
        size += n_bytes
        images += n_images
        vision = vision or n_images > 0
        if message.get("role") == "user":
            last_user = "\n".join(texts)
        if message.get("role") == "assistant" and message.get("audio") is not None:
            audio_answers += 1
        calls = message.get("tool_calls")
        if calls or message.get("function_call") or message.get("role") in ("tool", "function"):
            tools = True
        custom = custom or _any_custom(calls)
        if calls:
            size += json_bytes(calls)
        if message.get("function_call"):
            size += json_bytes(message["function_call"])
    for key in ("tools", "functions"):
        if request.get(key):
            size += json_bytes(request[key])
    prompt_tokens = (text_tokens(size) + images * IMAGE_TOKENS
                     + TOKENS_PER_MESSAGE * len(messages))
    output_tokens = output_cap(request) or 0
    answers = answers_asked(request)
    unanswered = sum(1 for call in function_results(messages).values() if call is None)
    called, answered = tool_names(request), result_names(request)
    # (the first names each API refuses: the Anthropic Messages API's may come past the
    # first of OpenAI's, which takes no name the Messages API refuses either)
    odd = refused_names(called)[0] | refused_names(called, ANTHROPIC_TOOL_NAME)[0]
    results = refused_names(answered)[0]
    duplicates, duplicates_count = duplicate_tool_names(request)
    return Needs(vision=vision, tools=tools, prompt_tokens=prompt_tokens,
                 last_user_text=last_user, output_tokens=output_tokens, answers=answers,
                 parts=frozenset(parts), unanswered_results=unanswered,
                 audio_answers=audio_answers, custom_tools=custom,
                 data_images=frozenset(data_images), tool_names=odd,
                 empty_tool_fields=empty_tool_fields(request),
                 duplicate_tool_names=duplicates,
                 duplicate_tool_names_count=duplicates_count,
                 plain_refused_count=refused_names(called + answered)[1],
                 anthropic_refused_count=refused_names(called, ANTHROPIC_TOOL_NAME)[1],
                 result_names=results, name_fields=_name_fields(request, odd | results),
                 tools_field=_tools_field(request),
                 custom_field="tools" if _any_custom(request.get("tools")) else "messages",
                 opening=opening_role(messages), blank_close=blank_close(messages),
                 other_tools=other_tools(request), blank_stops=blank_stops(request),
                 stops=stop_count(request),
                 logprobs=request.get("logprobs") is True,
                 structured=structured_output(request))


def structured_output(request: Mapping[str, Any]) -> str | None:
    """The kind of structured answer ``request``'s ``response_format`` asks for: its ``type``
    when that is ``json_object`` or ``json_schema``, else None (``text``, or none given)."""
    kind = request.get("response_format")
    kind = kind.get("type") if isinstance(kind, Mapping) else None
    return kind if kind in STRUCTURED_OUTPUTS else None


def _any_custom(tools: object) -> bool:
    """Whether a list of tools (or of tool calls) holds a custom one (``type: custom``)."""
    return isinstance(tools, list) and any(
        isinstance(t, Mapping) and t.get("type") == "custom" for t in tools)


def _part_kinds(message: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(role, part type) of each part of ``message``'s content (text content: a text part)."""
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str):
        return set()
    if isinstance(content, str):
        return {(role, "text")}
    if not isinstance(content, list):
        return set()
    return {(role, str(part.get("type"))) for part in content if isinstance(part, Mapping)}


def unsendable(wire: Wire, needs: Needs) -> list[str]:
    """Why the adapter of ``wire`` cannot send the conversation of ``needs``: one reason per
    role whose parts it cannot send (empty when it can send them all)."""
    sends = SENDS[wire]
    by_role: dict[str, list[str]] = {}
    for role, kind in sorted(needs.parts):
        if kind not in sends.get(role, ()):
            by_role.setdefault(role, []).append(kind)
    reasons = []
    for role, kinds in by_role.items():
        taken = sends.get(role, ())
        what = (f"no {role} messages" if not taken
                else f"{all_of(taken)} parts{' only' if len(taken) == 1 else ''} in {role} "
                     "messages")
        reasons.append(f"the request has {all_of(kinds)} parts in {role} messages, "
                       f"which the {ADAPTER_NAMES[wire]} adapter cannot send (it sends {what})")
    return reasons


def _anthropic_limits(needs: Needs) -> list[str]:
    """What the Anthropic Messages API cannot take beyond the parts :data:`SENDS` lists."""
    reasons: list[str] = []
    if needs.answers > 1:
        reasons.append(Reason(f"the request asks for {needs.answers} answers (n) and the "
                              "Anthropic Messages API gives one", "n"))
    if needs.logprobs:
        reasons.append(Reason("the request asks for the answer's log probabilities (logprobs) "
                              "and the Anthropic Messages API gives none", "logprobs"))
    if needs.structured:
        reasons.append(Reason(f"the request asks for a {needs.structured} answer "
                              "(response_format) and the Anthropic Messages API takes no "
                              "response_format: it would answer in free text",
                              "response_format"))
    if needs.unanswered_results:
        reasons.append("the request has a function message answering no function_call before "
                       "it, and the Anthropic Messages API takes a tool result only as the "
                       "answer to its call")
    if needs.opening == "assistant":
        reasons.append("the conversation opens with an assistant turn (system and developer "
                       "messages aside), and the Anthropic Messages API takes a conversation "
                       "opening with a user turn only")
    elif needs.opening is None:
        reasons.append("the conversation has no user or assistant turn with something in it "
                       "(system and developer messages aside, blank text left out), and the "
                       "Anthropic Messages API takes no request without one")
    if needs.blank_close:
        reasons.append("the conversation ends with a user message saying nothing (blank "
                       "text) after an assistant turn, and the Anthropic Messages API, which "
                       "takes no blank text, would take that assistant turn as the start of "
                       "its answer and continue it (give the last user message some text)")
    if needs.blank_stops:
        reasons.append(Reason(f"the request's stop holds a sequence empty or whitespace "
                              f"only ({_stops(needs.blank_stops)}), and the Anthropic Messages "
                              "API takes stop sequences with something besides whitespace "
                              "only (leave it out, or name a model of another API)", "stop"))
    if needs.audio_answers:
        reasons.append("the request has an assistant message standing for an earlier audio "
                       "answer (audio), which the Anthropic Messages API cannot refer to")
    if needs.custom_tools:
        reasons.append(Reason("the request declares or calls a custom tool (type custom), and "
                              "the Anthropic Messages API takes function tools only",
                              needs.custom_field))
    reasons.extend(Reason(f"the request declares or allows a tool of type {kind}, and the "
                          "Anthropic adapter sends function tools only", field)
                   for kind, field in sorted(needs.other_tools))
    refused = sorted({why for image in needs.data_images
                      if (why := anthropic_image_refusal(*image)) is not None})
    reasons.extend(f"the request has {why}, and {ANTHROPIC_IMAGES}" for why in refused)
    reasons.extend(_tool_name_limits(needs, needs.tool_names, ANTHROPIC_TOOL_NAME,
                                     "the Anthropic Messages API", 128,
                                     needs.anthropic_refused_count))
    if needs.duplicate_tool_names:
        shown = _tool_names(sorted(needs.duplicate_tool_names),
                            needs.duplicate_tool_names_count)
        reasons.append(Reason(f"the request declares two tools named {shown} (tools and "
                              "functions together), and the Anthropic Messages API takes "
                              "unique tool names only (declare each tool once)",
                              needs.tools_field))
    return reasons


def _stops(sequences: Sequence[str]) -> str:
    """Stop sequences as a reason names them: quoted as JSON writes them, the first three."""
    return listed_names(sequences, _TOOL_NAMES_SHOWN, 16, quoted=True)


#: The tool names a reason names: a refusal says each model's reasons, so they stay short.
_TOOL_NAMES_SHOWN = 3


def _tool_names(names: Sequence[str], total: int) -> str:
    """The request's tool ``names`` as a reason names them (:func:`listed_names`): the first
    of ``total`` in all (a request's needs keep :data:`MAX_ODD_NAMES` of them)."""
    return listed_names(names, _TOOL_NAMES_SHOWN, 48, quoted=True, total=total)


def _tool_name_limits(needs: Needs, names: frozenset[str], rule: re.Pattern[str], api: str,
                      most: int, total: int) -> list[str]:
    """Why ``api``, which takes tool names of 1 to ``most`` letters, digits, underscores or
    hyphens (``rule``), cannot take the request's tool ``names`` (empty when it can; the
    first of ``total`` it refuses in all), about the field holding them
    (:attr:`Needs.name_fields`)."""
    refused = sorted(name for name in names if not rule.fullmatch(name))
    if not refused:
        return []
    fields = {f for name, f in needs.name_fields if name in refused}
    return [Reason(f"the request declares, calls or answers a tool named "
                   f"{_tool_names(refused, total)}, and "
                   f"{api} takes tool names of 1 to {most} letters, digits, underscores or "
                   "hyphens only (rename the tool, or name a model whose API takes the name)",
                   fields.pop() if len(fields) == 1 else None)]


#: The most stop sequences OpenAI's own API takes in a request's ``stop``.
OPENAI_MAX_STOPS = 4


def _openai_api_limits(needs: Needs) -> list[str]:
    """What OpenAI's own API refuses beyond what every OpenAI-compatible upstream is sent: a
    tool name outside its rule (declared, called, or carried by a function message),
    tool fields empty or without tools (:func:`empty_tool_fields`), and more stop sequences
    than :data:`OPENAI_MAX_STOPS`."""
    reasons = [*_tool_name_limits(needs, needs.tool_names | needs.result_names,
                                  PLAIN_TOOL_NAME, "OpenAI's API", 64,
                                  needs.plain_refused_count),
               *(Reason(f"the request has {what}, which OpenAI's API refuses (leave the field "
                        "out)", _EMPTY_FIELD_OF.get(what, "messages"))
                 for what in sorted(needs.empty_tool_fields))]
    if needs.stops > OPENAI_MAX_STOPS:
        reasons.append(Reason(f"the request's stop holds {needs.stops} sequences, and OpenAI's "
                              f"API takes at most {OPENAI_MAX_STOPS} (send {OPENAI_MAX_STOPS} "
                              "or fewer, or name a model of another provider)", "stop"))
    return reasons


#: Per wire format, what its adapter cannot take beyond the parts it sends (:data:`SENDS`).
WIRE_LIMITS: dict[str, Callable[[Needs], list[str]]] = {"anthropic": _anthropic_limits}
#: Per provider (:data:`~switchpoint.known_providers.KNOWN_PROVIDERS`), what its API refuses
#: that the other providers of its wire take: OpenAI's own API (and Azure OpenAI's, which
#: checks the same) refuses a tool name outside 1 to 64 letters, digits, underscores or
#: hyphens, an empty tools or tool_calls list, a tool_choice or parallel_tool_calls without
#: tools, and more than four stop sequences, which local and other OpenAI-compatible servers
#: take.
PROVIDER_LIMITS: dict[str, Callable[[Needs], list[str]]] = {"openai": _openai_api_limits}


def adapter_limits(card: ModelCard, needs: Needs) -> list[str]:
    """Why the adapter ``card`` is called through cannot serve ``needs``, whatever the card
    lists: the conversation's parts it cannot send (:func:`unsendable`), then its wire's own
    limits (:data:`WIRE_LIMITS`: for Anthropic's, several answers, a legacy function result
    that answers no call, an earlier audio answer's id, a custom tool, an image given as a
    data URL it cannot take, a tool name it refuses), then its provider's
    (:data:`PROVIDER_LIMITS`: OpenAI's refuses a tool name outside its rule, more than four
    stop sequences). Empty when it can serve them."""
    spec = spec_of(card)
    limits = WIRE_LIMITS.get(spec.wire)
    provider = PROVIDER_LIMITS.get(spec.name)
    return [*unsendable(spec.wire, needs), *(limits(needs) if limits is not None else []),
            *(provider(needs) if provider is not None else [])]


#: What the reason a model is left out for a conversation too long for it says.
TOO_LONG = "exceed its context window"


def too_long(reasons: Sequence[str]) -> bool:
    """Whether ``reasons`` (:func:`exclusion_reasons`) leave a model out as too small for the
    conversation."""
    return any(TOO_LONG in reason for reason in reasons)


def exclusion_reasons(catalog: Catalog, name: str, needs: Needs) -> list[str]:
    """Why ``name`` cannot serve ``needs`` (empty when it can)."""
    card = catalog.get(name)
    if card is None:
        return ["not in the catalog"]
    reasons: list[str] = []
    if needs.vision and not card.has("vision"):
        reasons.append('the request has images and the model does not list "vision"')
    if needs.tools and not card.has("tools"):
        reasons.append(Reason('the request uses tools and the model does not list "tools"',
                              needs.tools_field))
    reasons.extend(adapter_limits(card, needs))
    if card.context_window is not None and needs.total_tokens > card.context_window:
        what = (f"~{needs.prompt_tokens} prompt tokens + {needs.output_tokens} for the answer"
                if needs.output_tokens else f"~{needs.prompt_tokens} prompt tokens")
        reasons.append(f"{what} {TOO_LONG} of {card.context_window}")
    elif card.context_window is not None and card.context_window <= needs.context_floor:
        reasons.append(f"a model with a context window of {needs.context_floor} refused the "
                       f"conversation as too long: it would {TOO_LONG} of "
                       f"{card.context_window} too")
    return reasons


def filter_candidates(catalog: Catalog, names: Sequence[str],
                      needs: Needs) -> tuple[list[str], dict[str, list[str]]]:
    """(the names that can serve ``needs``, in order; the others with their reasons)."""
    allowed: list[str] = []
    excluded: dict[str, list[str]] = {}
    for name in names:
        reasons = exclusion_reasons(catalog, name, needs)
        if reasons:
            excluded[name] = reasons
        else:
            allowed.append(name)
    return allowed, excluded
