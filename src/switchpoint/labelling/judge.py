"""The judge: a catalog model that scores an answer in [0, 1] following a rubric.

The protocol, fixed whatever the rubric says:

* the judge gets the rubric (the grading criteria) and then :data:`CONTRACT` as its system
  message, and the prompt and the answer as the user message;
* its whole reply must be the score, in one of two forms: a JSON object with a numeric
  ``score`` (``{"score": 0.8}``; other keys such as ``"reason"`` are allowed; the object may be
  wrapped in one ```json fence), or a bare decimal number of ASCII digits (``0.8``), which
  takes no exponent (``1e-1`` is refused saying so and how to write it). The score must be
  finite and in [0, 1] (``-0`` is 0);
* anything else (text around the score, ``8/10``, ``80%``, ``"0.8"`` as a string, two scores,
  a number outside [0, 1]) is refused by :func:`parse_judge_reply`, never guessed at (its
  reason cuts a long number short, since it goes into the reminder and the failure). The judge
  is then asked once more, its own reply and a reminder of the format added to the
  conversation; a second unreadable reply makes the answer a labelling failure.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from switchpoint._json import as_float, loads
from switchpoint._messages import cut, json_quoted, listed_names, people_number
from switchpoint._numbers import number_text, too_small
from switchpoint.errors import InvalidInputError, JudgeReplyError

DEFAULT_RUBRIC = """\
You grade an AI assistant's answer to a user's request.
Judge correctness first: a wrong or unsupported answer is worth little however well written.
Then completeness (does it do everything the request asks?) and clarity.
1 means fully correct and complete; 0 means wrong, harmful, a refusal of a harmless request,
or no answer; use values in between for partly correct or incomplete answers."""

CONTRACT = """\
Reply with only a JSON object of the form {"score": S}, where S is a number from 0 (worst) to
1 (best), for example {"score": 0.7}. Write nothing before or after it."""

REMINDER = """\
Your reply could not be read as a score ({reason}). Reply again with only a JSON object of the
form {{"score": S}}, S a number from 0 to 1, and nothing else."""

# The whole reply is one fenced block (```json ... ``` or ``` ... ```).
_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n(.*)\n[ \t]*```", re.DOTALL)
# A bare decimal number of ASCII digits: no exponent, no percent, no fraction, no words (and
# no other script's digits, which Python's float() would read: ０.５ is not 0.5 here).
_BARE = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# How much of a bare number a reason shows (a reply of thousands of digits is cut short).
SHOWN_NUMBER_CHARS = 40
# How much of an unreadable reply a failure message quotes.
QUOTE_CHARS = 120
# A rubric is sent with every judge call: a few pages of criteria, not a document.
MAX_RUBRIC_CHARS = 100_000
# How much of an unreadable reply the reminder gives back to the judge: enough to show it what
# it wrote, while a reply of megabytes does not make the reminder too large to send.
JUDGE_REPLY_ECHOED_CHARS = 4_000


def parse_judge_reply(reply: str | None) -> float:
    """The score of a judge's reply, or :class:`~switchpoint.errors.JudgeReplyError` saying why
    the reply is not one (see the module for the accepted forms)."""
    if reply is None:
        raise JudgeReplyError("the reply has no text", "")
    text = reply.strip()
    if not text:
        raise JudgeReplyError("the reply is empty", reply)
    fenced = _FENCE.fullmatch(text)
    if fenced:
        text = fenced.group(1).strip()
    if text.startswith("{"):
        return _from_object(text, reply)
    if _BARE.fullmatch(text):
        return _in_range(float(text), cut(text, SHOWN_NUMBER_CHARS), reply)
    if number_text(text) is not None or too_small(text):  # (a bare number but for its exponent)
        raise JudgeReplyError(f"{_quote(text)} is a bare number with an exponent, which a bare "
                              "score does not take: write it in plain digits (0.1, not 1e-1), "
                              'or as a JSON object ({"score": 1e-1})', reply)
    if "\n" in text:
        raise JudgeReplyError("the reply has text besides the score; it must be the score "
                              "alone", reply)
    raise JudgeReplyError(f'{_quote(text)} is neither a JSON object with a "score" nor a bare '
                          "number", reply)


def _from_object(text: str, reply: str) -> float:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise JudgeReplyError(f"the object repeats {listed_names(repeated, quoted=True)}",
                                  reply)
        return dict(pairs)

    try:
        obj = loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        what = ("has text after the JSON object" if exc.msg == "Extra data"
                else f"is not valid JSON ({exc.msg})")
        raise JudgeReplyError(f"the reply {what}", reply) from None
    if "score" not in obj:
        keys = listed_names(obj, quoted=True) or "no keys"
        raise JudgeReplyError(f'the object has no "score" key (it has {keys})', reply)
    value = obj["score"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JudgeReplyError(f'"score" is {json_quoted(value, 40)}, not a number', reply)
    number = as_float(value)
    if isinstance(value, int) and not math.isfinite(number):
        raise JudgeReplyError(f"the score ({json_quoted(value)}) is outside [0, 1]", reply)
    return _in_range(number, json.dumps(value), reply)


def _in_range(value: float, shown: str, reply: str) -> float:
    if not math.isfinite(value):
        raise JudgeReplyError(f"the score {shown} is not a finite number", reply)
    if not 0.0 <= value <= 1.0:
        raise JudgeReplyError(f"the score {shown} is outside [0, 1]", reply)
    return value + 0.0  # -0.0 is 0.0


def _quote(text: str) -> str:
    """A reply as a reason quotes it: on one line, as JSON writes it, cut short."""
    return json_quoted(" ".join(text.split()), QUOTE_CHARS)


@dataclass(frozen=True)
class Judge:
    """A catalog model that scores answers. ``rubric``: the grading criteria (default
    :data:`DEFAULT_RUBRIC`); the reply format (:data:`CONTRACT`) is always appended, so a rubric
    of your own cannot change it. ``params``: other OpenAI fields for the judge's calls
    (``{"temperature": 0}``, say)."""

    model: str
    rubric: str = DEFAULT_RUBRIC
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidInputError("judge", "must be a catalog model's name")
        if not isinstance(self.rubric, str) or not self.rubric.strip():
            raise InvalidInputError("rubric", "is empty; give the grading criteria, or leave "
                                              "it out for the default rubric")
        if len(self.rubric) > MAX_RUBRIC_CHARS:
            raise InvalidInputError("rubric", "is longer than "
                                              f"{people_number(MAX_RUBRIC_CHARS)} characters; "
                                              "shorten it (it is sent with every call to the "
                                              "judge)")

    @property
    def rubric_id(self) -> str:
        """A short hash of the rubric (a resumed run checks it is still the same)."""
        return hashlib.sha256(self.rubric.encode("utf-8")).hexdigest()[:12]

    def messages(self, prompt: str, answer: str) -> list[dict[str, str]]:
        """The first request's messages: the rubric and the contract, then the prompt and the
        answer."""
        return [{"role": "system", "content": f"{self.rubric.strip()}\n\n{CONTRACT}"},
                {"role": "user", "content": f"[Request]\n{prompt}\n\n[Answer to grade]\n"
                                            f"{answer}"}]

    def retry_messages(self, prompt: str, answer: str,
                       error: JudgeReplyError) -> list[dict[str, str]]:
        """The second request's: the first, the judge's unreadable reply (cut short past
        :data:`JUDGE_REPLY_ECHOED_CHARS`), and the reminder."""
        echoed = cut(error.reply.strip(), JUDGE_REPLY_ECHOED_CHARS)
        return [*self.messages(prompt, answer),
                {"role": "assistant", "content": echoed or "(no reply)"},
                {"role": "user", "content": REMINDER.format(reason=error.reason)}]

    parse = staticmethod(parse_judge_reply)


def unreadable_message(errors: list[JudgeReplyError]) -> str:
    """What a labelling failure says when the judge answered unreadably twice."""
    parts = []
    for e in errors:
        quoted = _quote(e.reply.strip())
        parts.append(e.reason if e.reason.startswith(quoted) else f"{quoted} ({e.reason})")
    replies = "replies" if len(errors) > 1 else "reply"
    return f"the judge's {replies} could not be read as a score: " + "; then ".join(parts)
