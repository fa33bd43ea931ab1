"""What the library takes as a number from Python callers: ``int`` and ``float``, NumPy's
scalars (``np.float32(0.5)``, ``np.int64(1)``) and ``Fraction``, never a boolean (``True`` is
not a score); its input checks (:func:`checked_number`) take a ``Decimal`` too, each read as
the float nearest it. An integer too large for a
float is infinite, so range checks refuse it instead of an ``OverflowError``;
:func:`checked_number` refuses it saying so (an integer of 401 digits, past the largest a
number holds), as the HTTP door does. Negative zero is zero: every number taken here (a score,
a cost, a λ, a rate) is a magnitude, and ``-0.0`` would be echoed, stored and shown as such.

The converse holds for a config's boolean: it is ``true`` or ``false``, never a number (``1``
is not a yes), and an environment variable's text is read as one by :func:`boolean_text`.

A number written as text (a command-line option) is read by :func:`number_text` and
:func:`integer_text` (a command line's whole number by :func:`whole_number_text`, which takes
``1e3`` as :func:`number_text` does): ASCII digits with an optional sign, decimal point and
exponent, as a person types one. ``float()`` and ``int()`` take more: ``1_0`` (ten), digits
of other scripts (Arabic-Indic ``٥`` is five), ``nan`` and ``inf``, none of which is a number a
user means. A
number that is not 0 but too small for a float to tell from 0 (``1e-400``) is not read either:
taken as 0 it would mean what the user did not write (a λ of 0 is quality first), so the
command line, a header and a query parameter refuse it alike (:data:`TOO_SMALL` says why;
the command line's options read numbers by :mod:`switchpoint._options`)."""

from __future__ import annotations

import math
import numbers
import re
from decimal import Decimal
from fractions import Fraction

from switchpoint._json import as_float
from switchpoint._lazy import numpy_if_loaded
from switchpoint._messages import cut, got, json_quoted, past_floats
from switchpoint.errors import InvalidInputError


def is_boolean(value: object) -> bool:
    """Whether ``value`` is a boolean, Python's or NumPy's (NumPy not imported for it: no
    value is one of its types before something has imported it)."""
    if isinstance(value, bool):
        return True
    np = numpy_if_loaded()
    return np is not None and isinstance(value, np.bool_)


def real_number(value: object) -> float | None:
    """``value`` as a float, or None when it is not a real number (or is a boolean)."""
    if is_boolean(value) or not isinstance(value, numbers.Real):
        return None
    try:
        return as_float(value) + 0.0  # -0.0 + 0.0 is 0.0
    except Exception:  # (a Real whose __float__ raises: no number to read)
        return None


def checked_number(field: str, value: object, accepted: str | None = None) -> float | None:
    """``value`` as :func:`real_number` reads it (None: no real number), where a number no
    float holds is refused, an :class:`InvalidInputError` naming ``field``: one past the
    largest (an integer of 401 digits, read as infinity, is told so as the HTTP door tells it:
    :func:`~switchpoint._messages.past_floats`), or a ``Decimal`` or ``Fraction`` that is not 0
    but a float holds only as 0 (:func:`too_small_why` of ``accepted``, what ``field`` takes
    in words where 0 is not taken, as the command line says of ``1e-400``).
    The one reading of every number check of the library door (a cost, a quality score, a
    λ, a report's figures), which takes a ``Decimal`` too, as the float nearest it (a
    signalling NaN is no number)."""
    if isinstance(value, Decimal):
        try:
            x: float | None = float(value) + 0.0  # -0.0 + 0.0 is 0.0
        except ValueError:
            x = None
    else:
        x = real_number(value)
    if x is None or (x != 0 and math.isfinite(x)):
        return x
    past = past_floats(value)
    if past is not None:
        raise InvalidInputError(field, past)
    if x == 0 and isinstance(value, Decimal | Fraction) and value != 0:
        raise InvalidInputError(field, f"{cut(str(value), 40)} {too_small_why(accepted)}")
    return x


def numpy_scalar(value: object) -> bool | int | float | None:
    """``value``, a NumPy boolean, integer or float, as the Python one it holds (a float
    past the largest a Python float holds is infinite); None for anything else."""
    np = numpy_if_loaded()
    if np is None:
        return None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return None


def boolean(value: object) -> bool | None:
    """``value`` as a bool when it is one (Python's or NumPy's), else None."""
    return bool(value) if is_boolean(value) else None


def not_a_boolean(value: object) -> object:
    """``value`` unchanged, unless it is a boolean: a config's number is never ``true``
    (YAML's ``true``/``yes`` would otherwise be taken for 1)."""
    if is_boolean(value):
        raise ValueError("must be a number, not a boolean (true/false)")
    return value


#: What a number that is NaN or infinite is told where a finite one is needed.
NOT_FINITE = "must be a finite number (not NaN or infinity)"


def number_problem(value: object) -> str | None:
    """Why ``value`` is no number a model's card may give (a price, a context window), else
    None: a boolean, text (the string ``"1"``, which pydantic's lax mode would read as 1: a
    JSON body's price sent as text is more likely a mistake than a number), anything else that
    :func:`checked_number` does not read (a ``Decimal`` it reads, as every number of the
    library door; one a float holds only as 0, ``Decimal("1e-400")``, is told so), NaN or an
    infinity (an integer no float holds told so: :func:`~switchpoint._messages.past_floats`)."""
    if is_boolean(value):
        return "must be a number, not a boolean (true/false)"
    if isinstance(value, str | bytes | bytearray):
        hint = (" (text: write the number without quotes)"
                if isinstance(value, str) and number_text(value) is not None else "")
        return f"must be a number, got {json_quoted(value)}{hint}"
    try:
        real = checked_number("value", value)
    except InvalidInputError as exc:
        return exc.reason
    if real is None:
        return f"must be a number{got(value)}"
    if not math.isfinite(real):
        return past_floats(value) or NOT_FINITE
    return None


def boolean_problem(value: object) -> str | None:
    """Why ``value`` is no boolean (Python's or NumPy's), else None: a config's boolean, and a
    model card's (``auto``, ``stream_usage``), is ``true`` or ``false`` (``1``, ``0`` or a
    string would otherwise be taken for one, and ``allow_unauthenticated: 1`` would open the
    door)."""
    if boolean(value) is not None:
        return None
    shown = json_quoted(value)  # (a number as plain_number shows it, never its repr)
    kind = ("the string " if isinstance(value, str)
            else "" if not isinstance(value, numbers.Number) or shown.startswith(("a ", "an "))
            else "the number ")
    return f"must be true or false, not {kind}{shown}"


def only_a_boolean(value: object) -> object:
    """``value`` as a bool when it is one (Python's or NumPy's), else a ValueError saying
    :func:`boolean_problem`."""
    problem = boolean_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return boolean(value)


#: The spellings of a boolean an environment variable's text may take (case aside).
_TRUE_TEXT = ("true", "yes", "on", "1")
_FALSE_TEXT = ("false", "no", "off", "0")


def boolean_text(text: str) -> bool | None:
    """An environment variable's text as a boolean: ``true``/``yes``/``on``/``1`` or
    ``false``/``no``/``off``/``0`` in any case, else None."""
    word = text.strip().lower()
    return True if word in _TRUE_TEXT else False if word in _FALSE_TEXT else None


#: A number as text: ASCII digits, an optional sign, decimal point and exponent.
_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
#: A whole number as text: ASCII digits with an optional sign.
_INTEGER_TEXT = re.compile(r"[-+]?[0-9]+")
#: A number's digits before its exponent: one of them not 0 makes a number that is not 0.
_NONZERO = re.compile(r"^[^eE]*[1-9]")
#: Digits a whole number's text may have (a count or a port needs far fewer; ``int()`` of
#: thousands of digits is slow and, past Python's own limit, an error).
_MAX_INTEGER_DIGITS = 100


def number_text(text: str) -> float | None:
    """``text`` as a float when it is a decimal number (``0.5``, ``-2``, ``1e-3``; spaces
    around it aside), else None: never ``nan``, ``inf``, ``1_0`` nor a digit of another
    script, nor a number that is not 0 a float holds only as 0 (``1e-400``). A number too
    large for a float (``1e999``) is infinite, so range checks refuse it with their own
    message; ``-0`` is 0."""
    text = text.strip(" \t\r\n")
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    return None if too_small(text) else float(text) + 0.0  # -0.0 + 0.0 is 0.0


def too_small(text: str) -> bool:
    """Whether ``text`` writes a number that is not 0 but a float holds only as 0
    (``1e-400``), which :func:`number_text` does not read."""
    text = text.strip(" \t\r\n")
    return (_NUMBER_TEXT.fullmatch(text) is not None and _NONZERO.search(text) is not None
            and float(text) == 0)


def negative_text(text: str) -> bool:
    """Whether ``text`` (spaces around it aside) writes a number below 0 in ASCII digits
    (``-5``, ``-2.5``, and ``-1e-400``, which a float holds only as ``-0.0`` but which is
    negative all the same: where 0 or more is taken it is refused as negative, as ``-5`` is,
    not as too small to be told from 0); ``-0`` is not."""
    text = text.strip(" \t\r\n")
    return (text.startswith("-") and _NUMBER_TEXT.fullmatch(text) is not None
            and _NONZERO.search(text) is not None)


#: NaN or an infinity as ``float()`` spells one (``-inf``, ``Infinity``, ``nan``; any case).
_NOT_FINITE_TEXT = re.compile(r"[-+]?(?:inf(?:inity)?|nan)", re.IGNORECASE)
#: A number in ASCII digits followed by a unit (``-1d``, ``12 h``): its number, then the unit.
_NUMBER_AND_UNIT = re.compile(rf"({_NUMBER_TEXT.pattern})\s*[A-Za-z]+")

#: Why :func:`not_finite_text` text is refused, as a message goes on after the value it quotes.
NOT_FINITE_TEXT = "is not a finite number (it is NaN or an infinity)"


def not_finite_text(text: str) -> bool:
    """Whether ``text`` (spaces around it aside) is NaN or an infinity as ``float()`` reads
    one (``-inf``, ``Infinity``, ``nan``), which :func:`number_text` does not read: a value
    refused as :data:`NOT_FINITE_TEXT` says, not as no number at all."""
    return _NOT_FINITE_TEXT.fullmatch(text.strip(" \t\r\n")) is not None


def number_with_unit(text: str) -> str | None:
    """The number of ``text`` when it is a number in ASCII digits followed by a unit (``1d``,
    ``-1.5h``, ``12 h``; ``-1`` of ``-1d``), which :func:`number_text` does not read, else
    None: where a number alone is taken, one below 0 is refused as negative, as ``-1`` is
    (:func:`negative_with_unit`), and any other is told to be given without its unit."""
    match = _NUMBER_AND_UNIT.fullmatch(text.strip(" \t\r\n"))
    return None if match is None else match.group(1)


def negative_with_unit(text: str) -> bool:
    """Whether ``text`` is a number in ASCII digits below 0 followed by a unit (``-1d``,
    ``-1.5h``; ``-0d`` is not): :func:`number_with_unit` of a negative number."""
    number = number_with_unit(text)
    return number is not None and number.startswith("-") and _NONZERO.search(number) is not None


#: Why :func:`too_small` text is refused where 0 is taken, as a message goes on after the
#: value it quotes (see :func:`too_small_why`).
TOO_SMALL = "is too small a number to be told from 0; write 0, or a number of at least 1e-300"


def too_small_why(accepted: str | None = None) -> str:
    """Why :func:`too_small` text (``1e-400``) is refused, as a message goes on after the
    value it quotes: :data:`TOO_SMALL` where 0 is taken (``accepted`` None); where it is not
    (a window of hours, an age in days), that it is too small, and ``accepted``, what is
    taken in words (``a number of hours more than 0 and at most 8,784``), since writing 0
    would be refused too. The one rule of the command line's options, the query's numbers
    and the library's."""
    if accepted is None:
        return TOO_SMALL
    return f"is too small a number to be told from 0; give {accepted}"


def integer_text(text: str) -> int | None:
    """``text`` as an int when it is a whole number in ASCII digits (``8``, ``-1``; spaces
    around it aside), else None (``1_0``, ``٥``, ``8.0``, or more than 100 digits:
    :func:`too_many_digits`)."""
    text = text.strip(" \t\r\n")
    if not _INTEGER_TEXT.fullmatch(text) or too_many_digits(text):
        return None
    return int(text)


def whole_number_text(text: str) -> int | None:
    """``text`` as an int when it writes a whole number: ASCII digits as :func:`integer_text`
    reads them (``8``, ``-1``), or a decimal number as :func:`number_text` reads one whose
    value is whole (``1e3``, ``2.5e3``, ``8.0``: a command line's whole-number option takes
    ``1e3`` for a thousand, as its other number options do); else None (``2.5``, ``1_0``,
    ``nan``, or a whole number of more than 100 digits: :func:`whole_too_large`). Read
    exactly (``1e22`` is ten to the 22nd, not the float nearest it), and never slowly: the
    digits are counted before a number is made of them."""
    text = text.strip(" \t\r\n")
    if _INTEGER_TEXT.fullmatch(text):
        return None if too_many_digits(text) else int(text)
    exact = _whole_decimal(text)
    return None if exact is None or _past_digits(exact) else int(exact)


def whole_too_large(text: str) -> bool:
    """Whether ``text`` writes a whole number of more digits than :func:`whole_number_text`
    reads (100: ``9`` written 101 times, ``1e309``), which it does not read."""
    exact = _whole_decimal(text.strip(" \t\r\n"))
    return too_many_digits(text) or (exact is not None and _past_digits(exact))


def _past_digits(exact: Decimal) -> bool:
    """Whether ``exact`` has more than 100 digits before its point (``0e999`` is 0)."""
    return not exact.is_zero() and exact.adjusted() >= _MAX_INTEGER_DIGITS


def _whole_decimal(text: str) -> Decimal | None:
    """``text``, a decimal number with a decimal point or an exponent, as the ``Decimal`` it
    writes when its value is whole or has more than 100 digits before its point (too large
    for any whole number taken, whatever follows its point), else None (``Decimal`` reads
    ``1e999999`` without making its digits)."""
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    exact = Decimal(text)
    if _past_digits(exact):
        return exact
    return exact if exact == exact.to_integral_value() else None


def too_many_digits(text: str) -> bool:
    """Whether ``text`` writes a whole number in ASCII digits of more digits than
    :func:`integer_text` reads (100), which it does not read."""
    text = text.strip(" \t\r\n")
    return (_INTEGER_TEXT.fullmatch(text) is not None
            and len(text.lstrip("+-")) > _MAX_INTEGER_DIGITS)


#: Why :func:`too_many_digits` text is refused, as a message goes on after the value it quotes.
TOO_MANY_DIGITS = (f"is a whole number of more than {_MAX_INTEGER_DIGITS} digits, larger than "
                   "any value taken here")


def unsigned_zero(value: float) -> float:
    """``value``, ``-0.0`` as ``0.0`` (see the module's docstring)."""
    return value + 0.0  # -0.0 + 0.0 is 0.0



#: The most decimal places :func:`percent_text` shows a share to.
MAX_PERCENT_PLACES = 8


def percent_text(fraction: float) -> str:
    """A share (``0.218``) as a person reads it (``21.8%``): to one decimal place, and to as
    many more as it takes (up to :data:`MAX_PERCENT_PLACES`) for one that is not 0 nor 1 not
    to read as ``0.0%`` or ``100.0%`` (a compliance with one breach in 3,000 is ``99.97%``, a
    budget a cent of which is spent ``0.001%``); one that is not 0 even then in scientific
    notation (``1.0e-10%``), as an amount of dollars past its places is. The one rule of every
    percentage a report or a key's budget shows a person; JSON keeps the fraction."""
    shown = f"{fraction:.1%}"
    for places in range(1, MAX_PERCENT_PLACES + 1):
        shown = f"{fraction:.{places}%}"
        value = abs(float(shown[:-1]))
        if (value != 0 or fraction == 0) and (value != 100 or abs(fraction) == 1):
            return shown
    return f"{fraction * 100:.1e}%" if value == 0 else shown
