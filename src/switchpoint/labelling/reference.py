"""Scoring an answer against a reference answer: 1.0 when it matches, else 0.0. No model is
called.

The answer's *final answer* is looked for where models put it, in this order: the last
``\\boxed{...}``, the rest of the line after the last ``####``, the rest of the line after the
last ``answer:`` / ``answer is`` (any case, e.g. ``Final answer: 42``), the last non-empty line,
and the whole answer.

* **Numeric references** (a JSON number, or a string such as ``42``, ``-3.5``, ``1,234``,
  ``$12``, ``50%`` or ``3/4``): the answer's number is the first number of the first marked
  place (``\\boxed``, ``####``, ``answer:``) that holds one, else the last number anywhere in
  the answer; it must equal the reference to a relative tolerance of 1e-6. Thousands
  separators, ``$`` and ``%`` are ignored (``50%`` matches ``50``, not ``0.5``); a comma is a
  thousands separator only between whole groups of three (``1,500`` is 1500), and digits joined
  by any other comma (``1,5``) are not read as a number, so the reference ``1,5`` is text,
  which ``1,5`` matches but ``1.5`` and ``15`` do not; the minus sign ``−`` (and its small and
  full-width forms) is a minus, as ``-`` is.
* **Number-list references** (two or more plain numbers joined by commas, such as ``2,3,5``,
  ``2, 3, 5`` or ``[2, 3, 5]``, that do not read as one number): the answer's list is the
  first list of the first marked place that holds one, else the last list anywhere in the
  answer (``The primes are 2,3,5``); it must hold as many numbers, in the same order, each
  equal to the reference's to the same tolerance. So ``1,5`` matches ``1,5`` and ``1, 5`` but
  not ``1.5``, ``15`` or ``1,5,7``; a list never matches a single-number reference.
* **Text references**: one of those places must equal the reference once both are normalised:
  Unicode NFKC, case folded, punctuation and markdown marks removed (but a comma or point
  between two digits), the articles *a*, *an*,
  *the* dropped, runs of whitespace made one space. ``Paris`` matches ``The answer is Paris.``
  and ``**paris**``, but not ``Paris, France`` (an extra word is a different answer); so ask the
  model, in the prompt, to end with its short answer (``Answer: B``). A reference that is
  nothing but articles (the choice ``A`` of a multiple-choice question) keeps them, on both
  sides: ``A`` matches ``Answer: (A)``, not ``Answer: B`` or ``The``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from fractions import Fraction

from switchpoint._json import as_float

# A number as written in answers: an optional sign, digits with optional thousands separators,
# an optional decimal part, an optional /denominator; not the tail of a word or version (x2, v1.5).
# A comma separates thousands only in whole groups of three (1,500); digits joined by any other
# comma (1,5 or 1,5000: a decimal comma, or a list) are no number at all, never 15 or 1.5.
_NUMBER = re.compile(r"(?<![\w.])(?<!\d,)[-+]?"
                     r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?!\d|,\d)(?:\.\d+)?|\.\d+)"
                     r"(?:\s*/\s*\d+(?!\.\d))?")
# Punctuation between two digits is part of the text (1,5 is not 1.5 nor 15): it is kept.
_BETWEEN_DIGITS = re.compile(r"(?<=\d)[,.](?=\d)")
# A run of two or more plain numbers joined by commas (2,3,5 or 2, 3, 5), not the tail of a word
# or of a longer list. Possessive, and found whole: a run is scanned once (no backtracking, no
# new start inside it), so a long answer costs linear time; whether it is a list (no word or
# decimal part glued to its end) is checked apart (_lists).
_PLAIN = r"[-+]?+(?:\d++(?:\.\d++)?+|\.\d++)"
_LIST = re.compile(rf"(?<![\w.,]){_PLAIN}(?:\s*+,\s*+{_PLAIN})++")
_GLUED = re.compile(r"\w|\.\d")
_BRACKETS = (("[", "]"), ("(", ")"), ("{", "}"))
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_HASHES = re.compile(r"####([^\n]*)")
_MARKER = re.compile(r"\banswer\s*(?::|is\b)([^\n]*)", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# Minus signs models write besides the ASCII hyphen-minus: MINUS SIGN, SMALL HYPHEN-MINUS,
# FULLWIDTH HYPHEN-MINUS.
_MINUS = str.maketrans(dict.fromkeys("\u2212\ufe63\uff0d", "-"))
RELATIVE_TOLERANCE = 1e-6


def reference_score(answer: str | None, reference: str | float) -> float:
    """1.0 when ``answer`` matches ``reference`` (see the module's rules), else 0.0."""
    text = answer or ""
    if not text.strip():
        return 0.0
    expected = parse_number(reference)
    expected_list = None if expected is not None else parse_list(reference)
    if expected_list is not None:
        got_list = answer_list(text)
        return 1.0 if got_list is not None and len(got_list) == len(expected_list) and all(
            _close(a, b) for a, b in zip(got_list, expected_list, strict=True)) else 0.0
    if expected is not None:
        got = answer_number(text)
        return 1.0 if got is not None and _close(got, expected) else 0.0
    articles = bool(normalise(str(reference)))  # else the reference is an article ("A")
    target = normalise(str(reference), articles=articles)
    return 1.0 if target and any(normalise(p, articles=articles) == target
                                 for p in final_answer_places(text)) else 0.0


def parse_number(value: str | float) -> float | None:
    """The reference as a number (``1,234``, ``$12``, ``50%``, ``3/4``), or ``None`` when it is
    not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = as_float(value)
        return number if math.isfinite(number) else None
    text = value.translate(_MINUS).strip().replace("$", "").removesuffix("%").strip()
    match = _NUMBER.fullmatch(text)
    return _to_float(match.group(0)) if match else None


def parse_list(value: str | float) -> list[float] | None:
    """The reference as a list of two or more numbers (``2,3,5``, ``[2, 3, 5]``), or ``None``
    when it is not one (a single number such as ``1,500`` is not a list)."""
    if not isinstance(value, str) or parse_number(value) is not None:
        return None
    text = value.translate(_MINUS).strip()
    for opening, closing in _BRACKETS:
        if text.startswith(opening) and text.endswith(closing):
            text = text[1:-1].strip()
            break
    return _list_values(text) if _LIST.fullmatch(text) else None


def answer_list(answer: str) -> list[float] | None:
    """The answer's final list of numbers: the first list in its most specific final-answer
    place, else its last list anywhere; ``None`` if none."""
    answer = answer.translate(_MINUS)
    for place in _marked_places(answer):
        found = _lists(place)
        if found:
            return _list_values(found[0])
    everywhere = _lists(answer)
    return _list_values(everywhere[-1]) if everywhere else None


def answer_number(answer: str) -> float | None:
    """The answer's final number: the first number in its most specific final-answer place
    (``\\boxed{}``, ``####``, ``answer:``), else its last number anywhere; ``None`` if none."""
    answer = answer.translate(_MINUS)
    for place in _marked_places(answer):
        found = _NUMBER.findall(place)
        if found:
            return _to_float(found[0])
    everywhere = _NUMBER.findall(answer)
    return _to_float(everywhere[-1]) if everywhere else None


def final_answer_places(answer: str) -> list[str]:
    """Where the answer's final answer may be, most specific first: the marked places, the last
    non-empty line, the whole answer."""
    lines = [line for line in answer.splitlines() if line.strip()]
    return [*_marked_places(answer), *lines[-1:], answer]


def normalise(text: str, *, articles: bool = True) -> str:
    """Text as compared with a text reference: NFKC, case folded, punctuation and symbols
    (markdown marks included) removed but for a comma or point between two digits, articles
    dropped (unless ``articles`` is false), single
    spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = {m.start() for m in _BETWEEN_DIGITS.finditer(text)}
    text = "".join(c for i, c in enumerate(text)
                   if i in kept or not unicodedata.category(c).startswith(("P", "S")))
    return " ".join((_ARTICLES.sub(" ", text) if articles else text).split())


def _marked_places(answer: str) -> list[str]:
    places = []
    for pattern in (_BOXED, _HASHES, _MARKER):
        found = pattern.findall(answer)
        if found:
            places.append(found[-1])
    return places


def _lists(text: str) -> list[str]:
    """The lists of numbers in ``text``, in order: the runs with nothing glued to their end."""
    return [m.group(0) for m in _LIST.finditer(text) if not _GLUED.match(text, m.end())]


def _list_values(text: str) -> list[float] | None:
    values = [_to_float(item) for item in text.split(",")]
    numbers = [v for v in values if v is not None]
    return numbers if len(numbers) == len(values) else None


def _to_float(token: str) -> float | None:
    """The token's value, or ``None`` when it has none a float can hold (``1/0``, or too large
    a number)."""
    token = token.replace(",", "").replace(" ", "")
    try:
        if "/" in token:
            num, den = token.split("/")
            value = float(Fraction(num) / Fraction(den))
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=RELATIVE_TOLERANCE)
