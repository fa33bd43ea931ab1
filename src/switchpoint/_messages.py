"""Plain-English reasons for pydantic validation errors, shared by the config and the HTTP API.

``key_path(("models", 0, "input_per_mtok"))`` is ``models[0].input_per_mtok``; ``reason(err)``
turns one pydantic error into ``must be >= 0, got -1`` (``got(-1)`` is its ``, got -1``, as
any check of a field says what it was sent); ``plural(3, "prompt")`` is ``3 prompts``;
``unprintable(name)`` finds a character a terminal would not show as itself, and
``printable(text)`` writes each such character as ``\\uXXXX``; ``one_of(("day", "week"))`` is
``"day" or "week"``, the fixed values a message offers to choose from; ``named_path`` and
``command`` write a way out a message names (a route's path, a command line) as it is sent.
"""

from __future__ import annotations

import ast
import difflib
import itertools
import json
import math
import numbers
import re
import shlex
import sys
import unicodedata
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from fractions import Fraction
from typing import Any
from urllib.parse import quote

from switchpoint._lazy import numpy_if_loaded
from switchpoint._redact import redact
from switchpoint.errors import InvalidInputError

_SIMPLE = {
    "float_type": "must be a number", "float_parsing": "must be a number",
    "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "is too large for an integer",
    "finite_number": "must be a finite number (not NaN or infinity)",
    "string_type": "must be a string", "bool_type": "must be true or false",
    "bool_parsing": "must be true or false", "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "string_too_short": "must not be empty", "too_short": "must not be empty",
}
# Reasons that say it all without the offending value.
_NO_VALUE = ("too_short", "string_too_short", "finite_number")
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def key_path(loc: Sequence[int | str], root: str = "config") -> str:
    """The path of ``loc`` as a message names it: ``models[0].name``; ``root`` where ``loc``
    is empty, and before an index that comes first (``body[0]`` of a body that is an array,
    as a body that is one number is ``body``, not ``[0]``)."""
    out = root if loc and isinstance(loc[0], int) else ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or root


#: The most of a field's name (or path) an error message quotes.
MAX_FIELD = 100
#: The most of a file's path an error message quotes (its repr, so an escape shows as \x1b).
MAX_PATH = 200


#: How far past a cut a quoted text is searched for secrets before it is cut (a key is far
#: shorter): a key that straddles the cut is redacted whole, where a cut first left its start
#: (``sk-A1b2C...``) too short for the patterns to know it, and a later redaction missed it.
SECRET_REACH = 1024


def cut(text: str, limit: int = 60) -> str:
    """``text`` as an error message quotes it: at most ``limit`` characters, ``...`` ending
    one cut short, a secret in it redacted before the cut
    (:func:`~switchpoint._redact.redact`, see :data:`SECRET_REACH`)."""
    if len(text) <= limit:
        return text
    window = text[:limit + SECRET_REACH]
    shown = redact(window)
    if len(window) == len(text) and len(shown) <= limit:  # (whole, once its secret is masked)
        return shown
    return shown[:limit - 3] + "..."


#: How many names a message lists before it says how many more there are.
MAX_LISTED = 20


def refuse_unknown(given: Iterable[str], taken: Sequence[str], kind: str, where: str, *,
                   none_advice: str) -> None:
    """Raise :class:`InvalidInputError` naming the first of ``given`` that is not in
    ``taken`` (the names of ``kind``, a query parameter or an argument, that ``where`` takes),
    listing the ones it takes (or saying it takes none: then ``none_advice`` says what to do);
    the others unknown follow, the first few of them."""
    unknown = list(dict.fromkeys(name for name in given if name not in taken))
    if not unknown:
        return
    first, others = printable(cut(unknown[0], MAX_FIELD)), unknown[1:]
    nor = ""
    if others:
        nor = (f" (nor {'is' if len(others) == 1 else 'are'} "
               f"{listed_names(others, _SHOWN_UNKNOWN - 1, MAX_FIELD, quoted=True)})")
    if taken:
        listed = f"it takes {listed_keys(taken)}"
        advice = UNKNOWN_NAME_ADVICE
    else:
        listed = "it takes none"
        advice = none_advice
    raise InvalidInputError(first or kind, f"is not {_article(kind)} {kind} of {where}{nor}; "
                                           f"{listed} ({advice})")


#: What :func:`refuse_unknown` advises for a name the code does not take, where it takes some.
UNKNOWN_NAME_ADVICE = "check its spelling, or leave it out"

# The most unknown names one refusal quotes.
_SHOWN_UNKNOWN = 5


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def listed_names(names: Iterable[str], most: int = MAX_LISTED, width: int = 64, *,
                 quoted: bool = False, total: int | None = None) -> str:
    """``names`` as a message lists them: the first ``most``, each cut short at ``width``
    characters (:func:`cut`), and how many more, so a list of thousands (tenants, tools) does
    not become the message. ``quoted``: each name shown as JSON writes it, at most ``width``
    characters (:func:`json_quoted`: ``"a", "b" and 3 more``, a caller's names that may hold
    anything), only those shown quoted however many there are. A smaller ``most`` is for a
    list that must stay short (a header's, a one-line note's). ``total``: how many there are
    in all, when ``names`` holds only the first of them (a bounded list kept of many)."""
    names = list(names)
    shown = ", ".join(json_quoted(name, width) if quoted else cut(name, width)
                      for name in names[:most])
    more = max(len(names), total or 0) - most
    return shown + (f" and {more} more" if more > 0 else "")


#: How many of the code's own names (a config section's keys, a request's fields, a route's
#: query parameters, a method's arguments) a message lists: more than any of them has (a
#: section of the gateway's 26 keys), so the list is whole, and bounded all the same.
MAX_KEYS = 40


# Names a caller may reach for that are another key's words: the cost weight is written λ
# ("lambda") in the papers and in other routers' APIs.
_SYNONYMS = {"lambda": "cost_weight", "λ": "cost_weight", "lambda_": "cost_weight",
             "cost_lambda": "cost_weight", "willingness_to_pay": "cost_weight",
             "models": "available_models", "candidates": "available_models"}


def meant_key(sent: str, known: Collection[str]) -> str | None:
    """The known key a caller most likely meant by an unknown key ``sent``: a known synonym
    (``lambda`` for ``cost_weight``), else the closest spelling, else None."""
    synonym = _SYNONYMS.get(sent.strip().lower())
    if synonym is not None and synonym in known:
        return synonym
    close = difflib.get_close_matches(sent, list(known), n=1)
    return close[0] if close else None


def listed_keys(names: Iterable[str]) -> str:
    """The names the code takes (a config section's keys, a request's fields, a route's query
    parameters, a method's arguments) as a message offers them to choose from: each quoted as
    JSON writes it (:func:`listed_names`), every one of them (up to :data:`MAX_KEYS`), as
    ``"size", "ttl_seconds"``."""
    return listed_names(names, MAX_KEYS, MAX_FIELD, quoted=True)


def people_number(value: float) -> str:
    """A limit or a count as a message writes it for people: its thousands separated
    (``10,000,000``, as every message writes them), a whole number held as a float written as
    the integer it is (``1e9`` is ``1,000,000,000``, not ``1e+09``), a fraction as Python
    writes it shortest (``0.5``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        value = int(value)
    return f"{value:,}"


def quoted(value: object, limit: int = 60) -> str:
    """``value``'s repr, cut short (see :func:`cut`): what an error message shows of a value it
    refuses, whatever the caller passed. A string (of a subclass too) shows the text it holds,
    never its class's own ``repr``; a value whose ``repr`` fails (it raises, recurses too deep,
    or is an integer of more digits than Python prints) is named by its type."""
    if isinstance(value, str):
        return cut(str.__repr__(str.__getitem__(value, slice(0, limit + SECRET_REACH))), limit)
    try:
        text = repr(value)
    except Exception:  # (anything a caller's __repr__ raises)
        if isinstance(value, int):
            return f"a number of more than {sys.get_int_max_str_digits()} digits"
        return f"a value of type {type(value).__name__}"
    return cut(text, limit)


#: How many entries of each dict, list or array :func:`bounded_repr` shows before it says how
#: many more there are.
MAX_SHOWN = 12
#: How many characters of a text :func:`bounded_repr` shows.
MAX_SHOWN_CHARS = 200


def bounded_repr(value: object) -> str:
    """``value``'s ``repr`` as a public object's own ``repr`` shows a field (a decision's
    scores, a package's provenance): at most :data:`MAX_SHOWN` entries of each dict, list,
    tuple or NumPy array, and how many more there are (``... 988 more``), each entry shown so
    in turn, and at most :data:`MAX_SHOWN_CHARS` characters of each text, so an object that
    holds a thousand models or a megabyte of text is a few lines in a notebook."""
    if isinstance(value, str):
        return quoted(value, MAX_SHOWN_CHARS)
    np = numpy_if_loaded()
    if np is not None and isinstance(value, np.ndarray):
        entries = [bounded_repr(x.item()) for x in value.ravel()[:MAX_SHOWN]]
        opening, closing = "array([", "])"
    elif isinstance(value, dict):
        entries = [f"{bounded_repr(k)}: {bounded_repr(v)}"
                   for k, v in itertools.islice(value.items(), MAX_SHOWN)]
        opening, closing = "{", "}"
    elif isinstance(value, (list, tuple)):
        entries = [bounded_repr(item) for item in value[:MAX_SHOWN]]
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
    else:
        return quoted(value, MAX_SHOWN_CHARS)
    more = (len(value) if isinstance(value, dict | list | tuple) else value.size) - MAX_SHOWN
    return opening + ", ".join(entries + ([f"... {more:,} more"] if more > 0 else [])) + closing


class _Stream(str):
    """The name of a stream read where a file may be given (standard input)."""


#: Standard input, where a file of lines may be given (``route --input -``, ``label -``), as
#: messages name it: ``stdin, line 3``, as a file is named ``'prompts.jsonl', line 3`` (see
#: :func:`quoted_path`).
STDIN: str = _Stream("stdin")


def quoted_path(path: object) -> str:
    """A file's path (or the name of what was read) as a message names it: its text quoted,
    cut short at :data:`MAX_PATH` characters and escaped (:func:`quoted`), so a path of
    thousands of characters or holding a terminal escape does not reach the message, or the
    terminal printing it, as it is. :data:`STDIN` is named as it is, unquoted, so it is not
    taken for a file named ``stdin``."""
    if isinstance(path, _Stream):
        return str.__str__(path)
    return quoted(str(path), MAX_PATH)


def _shown(value: object) -> str:
    # As the JSON body or YAML config wrote it: true / false / null and "text", not Python's
    # spelling (True, 'text').
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, str):
        return json_quoted(value)
    number = plain_number(value)
    return quoted(value) if number is None else number


#: What ends the text of a string :func:`json_quoted` cut short, inside its closing quote.
CUT_MARK = "…"


def json_quoted(value: object, limit: int = 60) -> str:
    """``value`` as JSON writes it (``true``, ``"text"``, ``{"a": 1}``; not Python's ``True``,
    ``'text'``), at most ``limit`` characters, any character a terminal would not show as
    itself written as ``\\uXXXX`` (:func:`printable`): how an error quotes a value a request
    sent. A string too long still reads as one: its text is cut, marked so (``"aaa…"``), and
    the quotes close it, never an escape cut in two; a number is shown as
    :func:`plain_number` shows it (``1.5``, not ``np.float64(1.5)`` nor ``"1.5"``; an
    infinity as too large, not ``Infinity``); another value is cut as :func:`cut` cuts it. A
    value JSON cannot write (its ``str`` raises, it holds itself) is shown as :func:`quoted`
    shows it."""
    if isinstance(value, str):
        return _quoted_text(str.__getitem__(value, slice(0, limit + SECRET_REACH)), limit)
    number = plain_number(value, limit)
    if number is not None:
        return number
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except Exception:  # (anything a caller's __str__ raises, a cycle, too many digits)
        return quoted(value, limit)
    # (only what is shown is made printable: a list of a million items is written at once;
    # a secret straddling the cut is redacted before it, see SECRET_REACH)
    return cut(printable(redact(text[:limit + SECRET_REACH])[:limit + 1]), limit)


def _quoted_text(text: str, limit: int) -> str:
    """The string ``text`` as :func:`json_quoted` writes it, a secret in what is cut short
    redacted before the cut (see :data:`SECRET_REACH`)."""
    whole = printable(json.dumps(text, ensure_ascii=False))
    if len(whole) <= limit:
        return whole
    text = redact(text)
    whole = printable(json.dumps(text, ensure_ascii=False))
    if len(whole) <= limit:
        return whole
    room = max(limit - 2 - len(CUT_MARK), 0)  # (the quotes and the mark)
    return '"' + _cut_written(text, room, _json_char) + CUT_MARK + '"'


def _json_char(char: str) -> str:
    return printable(json.dumps(char, ensure_ascii=False)[1:-1])


def _cut_written(text: str, room: int, write: Callable[[str], str]) -> str:
    """The first characters of ``text``, each as ``write`` writes it, that fit in ``room``
    characters: the cut rule of every text too long to show whole (a character's escape is
    never cut in two), which the caller marks with :data:`CUT_MARK`."""
    kept: list[str] = []
    for char in text:
        written = write(char)
        if len(written) > room:
            break
        kept.append(written)
        room -= len(written)
    return "".join(kept)


#: The most of a config key's path (``tenants.acme.cost_weight``) a message names.
MAX_KEY_PATH = 4 * MAX_FIELD


def shown_key(key: str) -> str:
    """A key's path as a message names it: each part between dots written :func:`printable`,
    and one of more than :data:`MAX_FIELD` characters (a mapping's key the file wrote) cut as
    :func:`json_quoted` cuts a string, its first whole characters and :data:`CUT_MARK`, so the
    path keeps the key at fault after it (``tenants.tttt….cost_weight``); a path longer than
    :data:`MAX_KEY_PATH` even so ends with ``.…`` where it is cut."""
    shown = ""
    for i, part in enumerate(key.split(".")):
        whole = printable(part[:MAX_FIELD + 1])
        if len(whole) > MAX_FIELD:
            whole = _cut_written(part, MAX_FIELD - len(CUT_MARK), printable) + CUT_MARK
        piece = f".{whole}" if i else whole
        if len(shown) + len(piece) > MAX_KEY_PATH - 2:  # (room for the cut's ".…")
            return f"{shown}.{CUT_MARK}"
        shown += piece
    return shown


# One value in pydantic's list of a field's choices: a string's repr, or a word (3, True, or).
_CHOICE = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,]+""")


def _joined(items: Sequence[str], last: str = "or") -> str:
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def one_of(values: Iterable[object]) -> str:
    """The fixed values a field, an argument or an option takes, as a message offers them to
    choose from: each as JSON writes it, the last after ``or`` (``"hour", "day", "week" or
    "month"``), as pydantic's own "must be one of" is shown (:func:`reason`), so every list of
    choices reads alike. (The names a caller chose, of any number, are
    :func:`listed_names`'s.)"""
    return _joined([_shown(value) for value in values])


def all_of(values: Iterable[object]) -> str:
    """The fixed values a message names together, as :func:`one_of` writes them, the last
    after ``and`` (``"text" and "image_url"``)."""
    return _joined([_shown(value) for value in values], "and")


def _choices(expected: str) -> str:
    """pydantic's list of the values a field takes, written as Python writes them (``'a', 'b'
    or None``), as JSON writes them (``"a", "b" or null``), as the value refused is shown; as
    given when it does not read back so."""
    try:
        values = [ast.literal_eval(token) for token in _CHOICE.findall(expected)
                  if token != "or"]
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return expected
    if not values or _joined([repr(value) for value in values]) != expected:
        return expected
    return one_of(values)


def not_text_problem(value: object) -> str | None:
    """Why ``value`` is refused where text is taken when it is bytes (a config's or a model
    card's text field; pydantic's lax mode would decode them as UTF-8), naming their type
    alone: they may hold a secret (a ``base_url``'s password, a key given where its variable's
    name belongs); or when it is a date or a time (YAML reads an unquoted ``2021-02-28`` as a
    date), shown as written with the quotes that make it text. None for anything else."""
    if isinstance(value, bytes | bytearray | memoryview):
        return (f"must be a string, got {type(value).__name__} (not shown); decode them to "
                "text first (value.decode())")
    written = _date_written(value)
    if written is not None:
        return f"must be a string{got(value)}; quote it: {json_quoted(written)}"
    return None


def _date_written(value: object) -> str | None:
    """A date, a time or both as YAML writes them (``2021-02-28``, ``2021-02-28 10:11:12``),
    else None."""
    if isinstance(value, datetime):
        return value.isoformat(" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return None


def got(value: object) -> str:
    """What a reason adds of the value refused: ``, got 5``, ``, got "x"``; a list or an object
    by its JSON type alone (``, got a list``), as its items may be many and long; a date or a
    time as written, saying YAML read it so (``, got the date 2021-02-28 (...)``), not as
    Python writes it. The one rule for every reason of a body or config field that says what
    was sent instead."""
    if isinstance(value, (dict, list)):
        return ", got an object" if isinstance(value, dict) else ", got a list"
    written = _date_written(value)
    if written is not None:
        kind = ("date and time" if isinstance(value, datetime)
                else "date" if isinstance(value, date) else "time")
        return f", got the {kind} {written} (YAML reads an unquoted {kind} as a {kind})"
    return f", got {_shown(value)}"


#: What a number no float holds is told, after what it was (``got an integer of 401 digits``).
PAST_FLOATS = "past the largest a number holds (about 1.8e308)"


def past_floats(value: object) -> str | None:
    """Why ``value`` is refused when it is a finite number no float holds (an integer of 401
    digits, the JSON number 1 followed by 400 zeros, or a ``Decimal`` or ``Fraction`` as large),
    else None: the one reason of every number check, the HTTP body's and the library's (a
    float would hold it as infinity, and "is inf" is not what was sent)."""
    if not _past_floats(value):
        return None
    return f"must be a finite number, got {plain_number(value)}"


def _past_floats(value: object) -> bool:
    """Whether ``value`` is a finite number (an integer, a Fraction or a Decimal) no float
    holds: one a float would hold as infinity."""
    if isinstance(value, bool) or not isinstance(value, int | Fraction | Decimal):
        return False
    if isinstance(value, Decimal) and not value.is_finite():
        return False
    try:
        return not math.isfinite(float(value))
    except OverflowError:
        return True


#: How an infinity is shown, by its sign: what it was given as cannot be known (Python reads
#: ``1e400`` as ``inf``), so it is named, with the numbers that read as it.
INFINITY = {1: "infinity, too large a number (what 1e400, or any number past about 1.8e308, "
               "reads as)",
            -1: "-infinity, too large a negative number (what -1e400, or any number below "
                "about -1.8e308, reads as)"}


def plain_number(value: object, limit: int = 40) -> str | None:
    """A number an error message shows, in plain terms (None: ``value`` is no number, and a
    boolean is none): an ``int`` or a ``float`` as Python writes it (``-1``, ``0.5``,
    ``20000.0``), a NumPy scalar, a ``Decimal`` or a ``Fraction`` by its value
    (``1.5``, ``1E+400``, ``1/3``), never its repr (``np.float64(1.5)``,
    ``Decimal('1.5')``); a NaN as ``NaN``; an infinity as :data:`INFINITY` says; a finite
    number no float holds by its size, past the largest a number holds (``an integer of 401
    digits``). Digits are cut at ``limit`` characters (:func:`cut`). The one rule for a number
    in a message: :func:`json_quoted`, :func:`got` and :func:`past_floats` show one by it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return None
    if _past_floats(value):
        try:
            shown = (f"an integer of {len(str(abs(value)))} digits" if isinstance(value, int)
                     else cut(str(value), limit))
        except ValueError:  # (more digits than Python writes)
            shown = f"a number of more than {sys.get_int_max_str_digits()} digits"
        return f"{shown}, {PAST_FLOATS}"
    if isinstance(value, Decimal) and value.is_nan():
        return "NaN"  # (a signalling one too: no float reads it)
    try:
        x = float(value)
    except Exception:  # (a Real whose __float__ raises: no number to show)
        return None
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return INFINITY[1 if x > 0 else -1]
    kind: type = type(value)
    plain = kind is int or kind is float  # (a subclass's repr may name it: np.float64(1.5))
    return cut(repr(value) if plain else str(value), limit)


def not_finite_reason(value: float) -> str:
    """Why a NaN or an infinity a request or a call holds is refused, after the field that
    holds it (``body`` for a body that is one): the value shown as every message shows a
    number (:func:`plain_number`), so an infinity (``1e999``, as a float reads it) is
    ``is infinity, too large a number (what 1e400, ...)``, not ``is inf``. The one wording of
    every request door (the chat gateway's reader, and the other routes' bodies, whose model
    refuses one: :func:`invalid_from_validation`) and of an embedding given in-process; a
    config or a model's card, which is written, not sent, says it must be a finite number."""
    shown = f"is {plain_number(value)}"
    if not math.isinf(value):
        shown += ", not a finite number"
    return f"{shown}; send finite numbers only"


def too_long(most: int, had: int | None, what: str = "characters") -> str:
    """Why a value of ``had`` ``what`` (characters, items; None: not known) is over the
    ``most`` it may have: the one wording of a length bound (a request's field, a model's
    name, a comment), ``must have at most 256 characters, got 300``."""
    return f"must have at most {people_number(most)} {what}" + (
        "" if had is None else f", got {people_number(had)}")


def reason(err: Any, known: Sequence[str] = ()) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as a short reason."""
    kind = str(err["type"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    sent = got(value)
    if kind == "missing":
        return "is required"
    least = ctx.get("min_length")
    if kind in ("too_short", "string_too_short") and isinstance(least, int) and least > 1:
        what = "characters" if kind == "string_too_short" or isinstance(value, str) else "items"
        had = ctx.get("actual_length")
        return f"must have at least {people_number(least)} {what}" + (
            f", got {people_number(had)}" if isinstance(had, int) else "")
    most = ctx.get("max_length")
    if kind in ("too_long", "string_too_long") and isinstance(most, int):
        what = ("characters" if kind == "string_too_long" or isinstance(value, str)
                else "entries" if isinstance(value, dict) else "items")
        had = ctx.get("actual_length")
        if had is None and isinstance(value, (str, dict, list)):
            had = len(value)
        return too_long(most, had if isinstance(had, int) else None, what)
    if kind == "extra_forbidden":
        listed = f"; known keys here: {listed_keys(known)}" if known else ""
        loc = err.get("loc") or ("",)
        close = meant_key(str(loc[-1]), known)
        meant = f": did you mean {json_quoted(close)}?" if close else ""
        return f"is not a known key (check its spelling{meant}){listed}"
    if kind in _BOUNDS:
        op, name = _BOUNDS[kind]
        bound = ctx.get(name)
        shown = (people_number(bound) if isinstance(bound, (int, float))
                 and not isinstance(bound, bool) and math.isfinite(bound) else bound)
        return f"must be {op} {shown}{sent}"
    past = (past_floats(value) if kind in ("float_type", "float_parsing", "finite_number")
            else None)
    if past is not None:  # (a number, and not NaN: "must be a number, got 1000..." said none)
        return past
    if kind in _SIMPLE:
        return _SIMPLE[kind] + ("" if kind in _NO_VALUE else sent)
    if kind == "literal_error":
        return f"must be one of {_choices(str(ctx.get('expected')))}{sent}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    msg = str(err.get("msg", "is not valid"))
    return msg[:1].lower() + msg[1:] + sent


def entry_param(field: str, path: str, keyed: Collection[str] = ()) -> str:
    """The ``param`` of an error at ``path`` inside the request's top-level ``field``: the
    field, or, where it is a mapping keyed by names the caller chose (``keyed``: a
    comparison's scores by label, an experiment's arms by name), the whole ``path`` to the
    entry at fault (``scores.A``, ``arms.y.weight``), as an entry that is not there is named:
    the client is told which of its entries to fix."""
    return path if field in keyed and path != field else field


def invalid_from_validation(errors: Sequence[Any], fields: Sequence[str],
                            root: str = "body", keyed: Collection[str] = (),
                            field_of: tuple[str, str] = ("field", "this request")
                            ) -> InvalidInputError:
    """The first pydantic error of a request body as an :class:`InvalidInputError` naming the
    field (``param`` is the top-level field at fault, or ``root``; inside a field of
    ``keyed``, the entry's path: :func:`entry_param`). ``field_of`` is what an unknown one
    is said not to be, and of what: a request's field by default, a card's key as a Python
    caller gives one (``("key", "a model's card")``)."""
    err = errors[0]
    listed = f" with the fields {listed_keys(fields)}" if fields else ""
    raw_loc = tuple(err["loc"])
    loc = raw_loc[1:] if raw_loc[:1] == ("body",) else raw_loc
    kind = err["type"]
    if kind == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "")
        if "EOF while parsing a value at line 1 column 0" in detail:
            return InvalidInputError(root, f"is empty; send a JSON object{listed}")
        return InvalidInputError(root, f"is not valid JSON ({detail})")
    whole = not loc or all(isinstance(p, int) for p in loc)
    if whole and kind in ("model_type", "model_attributes_type", "dict_type", "missing"):
        return InvalidInputError(root, f"must be a JSON object{listed}")
    takes = _union_kinds(errors, loc)
    if takes is not None:
        loc = loc[:-1]
    elif len(loc) > 1 and _is_tag(loc[-1]):
        # One member of the field's types failed inside (a list's item): that error, at the
        # item's path; else the first, at the field's.
        err, loc = _inner_member(errors, loc)
        kind = err["type"]
    # A key of the body is any string the client sent: quoted short, like a value.
    param = cut(str(loc[0]), MAX_FIELD) if loc else root
    path = cut(key_path(loc, root), 2 * MAX_FIELD)
    param = entry_param(param, path, keyed)
    if kind == "extra_forbidden":
        close = meant_key(str(loc[-1]), fields) if loc else None
        meant = f"; did you mean {json_quoted(close)}?" if close else ""
        item, holder = field_of
        # (after a question, a new sentence: "did you mean "expires"?; the fields" read as a slip)
        known = (f"{' The' if close else '; the'} {item}s are {listed_keys(fields)}"
                 if fields else "")
        return invalid_at(param, path, f"is not a {item} of {holder}{meant}{known}")
    if takes is not None:
        value = err.get("input")
        return invalid_at(param, path, f"must be {' or '.join(takes)}{got(value)}")
    value = err.get("input")
    if kind == "finite_number" and isinstance(value, float):  # (a NaN or an infinity, sent)
        return invalid_at(param, path, not_finite_reason(value))
    return invalid_at(param, path, reason(err))


# What a value of each type error's kind is, as a field that takes several is described.
_KINDS = {"string_type": "a string", "float_type": "a number", "int_type": "a number",
          "bool_type": "true or false", "list_type": "a list", "dict_type": "an object",
          "model_type": "an object"}
_UNION_TAG = re.compile(r"(?:str|int|float|bool|(?:list|dict)\[.*\])", re.ASCII)


def _is_tag(part: object) -> bool:
    return isinstance(part, str) and _UNION_TAG.fullmatch(part) is not None


def _inner_member(errors: Sequence[Any], loc: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """The error of a several-typed field's member that failed inside its value, with the
    member's tag left out of its path; else the first error, at the field's path."""
    depth = len(loc) - 1
    for err in errors[1:]:
        at = tuple(err["loc"])
        at = at[1:] if at[:1] == ("body",) else at
        if at[:depth] == loc[:depth] and len(at) > depth + 1 and _is_tag(at[depth]):
            return err, at[:depth] + at[depth + 1:]
    return errors[0], loc[:-1]


def _union_kinds(errors: Sequence[Any], loc: tuple[Any, ...]) -> list[str] | None:
    """What a field of several types takes, when the errors are one value's type errors
    against each of them (pydantic tags each with its member: ``('expires', 'str')``, which
    is no part of the field's path), else None."""
    if len(errors) < 2 or len(loc) < 2:
        return None
    kinds: list[str] = []
    for err in errors:
        at = tuple(err["loc"])
        at = at[1:] if at[:1] == ("body",) else at
        if at[:-1] != loc[:-1] or not _is_tag(at[-1]) or err["type"] not in _KINDS:
            return None
        if _KINDS[err["type"]] not in kinds:
            kinds.append(_KINDS[err["type"]])
    return kinds


def invalid_at(param: str, path: str, message: str) -> InvalidInputError:
    """An error for ``param`` whose message starts with the full ``path`` (``a[0].b: ...``),
    written printable as the field is (a key in it is any string the caller sent)."""
    error = InvalidInputError(param, message)
    if path != param:
        error.path = printable(path)
        error.args = (f"{error.path}: {message}",)
    return error


def named_path(route: str, name: str) -> str:
    """The path of ``route``'s item ``name`` (``/v1/router/models/NAME``), the name %-escaped as a
    URL writes it (a space, ``?``, ``#`` or ``%`` would otherwise end the path or read as an
    escape); its ``/`` stay, as a route taking a path reads them."""
    return f"{route}/{quote(name, safe='/')}"


def command(*words: str) -> str:
    """The command line ``words`` (``switchpoint models unregister NAME``) in backquotes, each
    word quoted for a shell where it needs it, so that it names what it names when pasted."""
    return f"`{shlex.join(words)}`"


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (``1 prompt``, ``3 prompts``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def unprintable(text: str) -> tuple[int, str] | None:
    """The first character of ``text`` a terminal would not show as itself (a control
    character, a line or paragraph separator, a format character such as a bidirectional
    override or a zero-width space, a private-use or unassigned code point, or one of the
    other characters Unicode lets a display ignore, such as the Hangul fillers and variation
    selectors), with its index; None when there is none."""
    for i, char in enumerate(text):
        if unicodedata.category(char) in _UNSHOWN or _ignorable(ord(char)):
            return i, char
    return None


def header_value_problem(text: str) -> str | None:
    """Why ``text`` (without the whitespace around it) cannot be sent as a request header's
    value, or None. A header carries printable ASCII: a character beyond it cannot be sent at
    all (HTTP clients refuse it, or send bytes a server reads otherwise), and a line break
    would end the header and start another. Says which character and where, never what the
    text holds, so a credential can be checked without being shown."""
    for i, char in enumerate(text):
        if not " " <= char <= "~":
            return (f"holds U+{ord(char):04X} (character {i + 1}), which a request header "
                    "cannot carry")
    return None


def printed_name_problem(model: str) -> str | None:
    """Why ``model`` cannot name a model in routing records or a weights package, or None
    when it can: its name shows as itself (see :func:`unprintable`), since the router answers
    with it and ``switchpoint info``, logs and reports print it. (Unlike a catalog name, which
    rides in a header, it may be long and need not be ASCII.) A name that is empty, or only
    spaces, names nothing a caller could ask for or read (``add-model`` refuses one too)."""
    if not model.strip():
        return (f"a model is named {json_quoted(model, 80)}, which shows as nothing: a model's "
                "name is how the router answers with it and how a config names it, so each "
                "model needs a name of its own")
    hidden = unprintable(model)
    if hidden is None:
        return None
    at, char = hidden
    return (f"model {json_quoted(model, 80)} holds U+{ord(char):04X} (character {at + 1}): a "
            "model's name is printed in answers, logs and `switchpoint info`, so control "
            "characters (newline, escape, ...) and invisible or direction-changing ones are "
            "refused")


def printable(text: str) -> str:
    """``text`` with each character a terminal would not show as itself (see
    :func:`unprintable`) written as ``\\uXXXX`` (``\\UXXXXXXXX`` beyond the first plane), so
    text read from a file or a store can be printed without reaching the terminal as control
    sequences."""
    if unprintable(text) is None:
        return text
    return "".join((f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
                   if unprintable(c) else c for c in text)


_UNSHOWN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Default_Ignorable_Code_Point characters outside those (Unicode DerivedCoreProperties).
_IGNORABLE = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
              (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0100, 0xE01EF))


def _ignorable(code: int) -> bool:
    return any(low <= code <= high for low, high in _IGNORABLE)
