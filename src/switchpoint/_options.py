"""The command line's number and path options, read by shared ``argparse`` types. A path
option (:func:`path_option`) takes any path but an empty one, which the system reads as the
current directory and a command could take for the option left out (``--out ""`` wrote the
weights in place). A number option has one reading (ASCII
digits, by :func:`~switchpoint._numbers.number_text`; a whole number by
:func:`~switchpoint._numbers.whole_number_text`, ``1e3`` as a number option reads it) and one
wording for every option that takes a number (:func:`not_read`, :func:`not_whole`), a value
refused quoted as JSON writes it (``"abc"``, as the ``keys`` commands and the HTTP errors
quote values)::

    switchpoint route: error: argument --cost-weight: "abc" is not a number in ASCII digits:
    give a number from 0 to 10,000 (0 = quality first), such as 0.5

An option whose range the library checks naming the option (a key's ``--rpm``, ``fit``'s
``--n-clusters``) is read here as a number of its kind and left to that check; one the command
line bounds itself says its range (``route``'s λ, ``prune``'s days, ``feedback``'s score and
cost, ``serve``'s port), from the library's own bounds."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from switchpoint._lists import comma_items
from switchpoint._messages import json_quoted, people_number
from switchpoint._numbers import (
    NOT_FINITE_TEXT,
    TOO_MANY_DIGITS,
    integer_text,
    negative_text,
    negative_with_unit,
    not_finite_text,
    number_text,
    number_with_unit,
    too_small,
    too_small_why,
    whole_number_text,
    whole_too_large,
)
from switchpoint.catalog import MAX_ANSWER_COST
from switchpoint.decision import MAX_COST_WEIGHT

#: The most ports a ``--port FIRST-LAST`` range covers (all of them).
MAX_PORT = 65_535


def refused(text: str, why: str) -> argparse.ArgumentTypeError:
    """The error an option's type raises for ``text``: the value as JSON quotes it, then
    ``why`` (``is not ...``); argparse puts ``argument --option:`` before it."""
    return argparse.ArgumentTypeError(f"{json_quoted(text)} {why}")


def number_option(what: str = "a number", example: str = "2.5 or 1e3",
                  low: float = -math.inf, high: float = math.inf, *,
                  above_low: bool = False) -> Callable[[str], float]:
    """An ``argparse`` type reading a number from ``low`` to ``high`` (past ``low`` when
    ``above_low``); ``what`` says which in words, ``example`` shows one."""

    # (where 0 is out of range, a number told from 0 only as 0 is not advised to be written 0)
    underflow = too_small_why(None if low < 0 or (low == 0 and not above_low) else what)

    def number(text: str) -> float:
        value = number_text(text)
        if value is None:
            raise refused(text, f"is negative; give {what}" if low >= 0 and negative_text(text)
                          else underflow if too_small(text)
                          else not_read(text, "a number", what, example, low))
        if not ((low < value) if above_low else (low <= value)) or not value <= high:
            raise refused(text, f"is {'negative' if value < 0 <= low else 'out of range'}; "
                                f"give {what}")
        return value

    return number


def not_read(text: str, kind: str, what: str, example: str, low: float) -> str:
    """Why ``text``, which a number option reading ``kind`` (``a number``, ``a whole
    number``) does not read, is refused, as a message goes on after the value it quotes:
    empty; NaN or an infinity; a number with a unit where a number alone is taken, negative
    where ``low`` is not (``-1d``, told so as ``-1`` is) or else to be given without its unit
    (``1d`` where days are counted); else no number in ASCII digits. ``what`` says what the
    option takes in words (its unit, where it has one: ``a number of days``), ``example``
    shows one."""
    if not text.strip():
        return f"is empty; give {what}, such as {example}"
    if not_finite_text(text):
        return f"{NOT_FINITE_TEXT}; give {what}"
    if number_with_unit(text) is not None:
        if low >= 0 and negative_with_unit(text):
            return f"is negative; give {what}"
        return (f"has a unit, which is not taken here; give the number alone, {what}, such "
                f"as {example}")
    return f"is not {kind} in ASCII digits; give {what}, such as {example}"


def path_option(what: str) -> Callable[[str], str]:
    """An ``argparse`` type taking a path, refusing an empty one; ``what`` says which path to
    give (``the directory to write the weights to``)."""

    def path(text: str) -> str:
        if not text:
            raise refused(text, f"is empty; give {what}")
        return text

    return path


WEIGHTS_DIR = path_option("a weights package's directory")
WEIGHTS_OUT = path_option("the directory to write the weights to")
RECORDS = path_option("a file of routing records (JSONL)")
#: ``--config``: left out, a command reads ``$SWITCHPOINT_CONFIG`` (or no config), so an empty
#: one, taken for it left out, would read another config than the one meant.
CONFIG = path_option("a YAML config file")


def integer_option(what: str = "a whole number", example: str = "8",
                   low: int = 0) -> Callable[[str], int]:
    """An ``argparse`` type reading a whole number, in digits or as a number option writes one
    (``1e3``, a thousand: :func:`~switchpoint._numbers.whole_number_text`); ``what`` says
    which in words (its range is the library's to check, naming the option, ``-5`` too). A
    number that is not whole is refused as negative when it is below ``low`` (``-2.5``, as
    ``-1d``), else as not whole (``2.5``)."""

    def whole_number(text: str) -> int:
        value = whole_number_text(text)
        if value is None:
            raise refused(text, not_whole(text, what, example, low))
        return value

    return whole_number


def not_whole(text: str, what: str, example: str, low: float) -> str:
    """Why ``text``, which :func:`~switchpoint._numbers.whole_number_text` does not read, is
    refused by a whole-number option, as a message goes on after the value it quotes: too
    large (more than 100 digits, ``1e309``); a number that is not whole, told negative below
    ``low`` (``-2.5``) and else not whole (``2.5``); else as :func:`not_read` says."""
    if whole_too_large(text):
        return f"{TOO_MANY_DIGITS}; give {what}, such as {example}"
    if number_text(text) is not None or too_small(text):  # (2.5, -0.5, 1e-400)
        if low >= 0 and negative_text(text):
            return f"is negative; give {what}"
        return f"is not a whole number; give {what}, such as {example}"
    return not_read(text, "a whole number", what, example, low)


def number_list_option(item: Callable[[str], float], example: str
                       ) -> Callable[[str], list[float]]:
    """An ``argparse`` type reading a comma-separated list of numbers
    (:func:`~switchpoint._lists.comma_items`), each read by ``item`` (and refused as it refuses
    one); ``example`` shows a list."""

    def numbers(text: str) -> list[float]:
        try:
            parts = comma_items(text, "number", example)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return [item(part) for part in parts]

    return numbers


#: What ``serve``'s ``--port`` takes, in words.
PORT = f"a port number (0-{MAX_PORT}) or a range FIRST-LAST"


def port_option(text: str) -> int | range:
    """An ``argparse`` type reading ``serve``'s ``--port``: a port number (0: any free one),
    read as every whole-number option reads one (``-1`` is negative, ``nan`` not finite,
    ``80.5`` not whole), or ``FIRST-LAST``, a range to take a free one of."""
    first, dash, last = text.strip().partition("-")
    if not dash or not first or number_text(text) is not None or too_small(text):
        # (one port: -1 a negative one and 1e-3 one not whole, neither a range)
        port = whole_number_text(text)
        if port is None and not whole_too_large(text):
            raise refused(text, not_whole(text, PORT, "8080 or 20400-20499", 0))
        if port is not None and port < 0:
            raise refused(text, f"is negative; give {PORT}")
        if port is None or port > MAX_PORT:
            raise refused(text, f"is not a port number (0-{MAX_PORT})")
        return port
    low, high = integer_text(first), integer_text(last)
    if low is None or high is None:
        raise refused(text, f"is not {PORT}")
    if not (0 <= low <= MAX_PORT and 0 <= high <= MAX_PORT):
        raise refused(text, f"is not a port number (0-{MAX_PORT})")
    if not 0 < low <= high:
        raise refused(text, "is not a range of ports: write FIRST-LAST with 1 <= FIRST <= "
                            "LAST, e.g. 20400-20499")
    return range(low, high + 1)


#: A λ: ``route --cost-weight``, ``keys create --cost-weight``.
COST_WEIGHT = number_option(f"a number from 0 to {people_number(MAX_COST_WEIGHT)} (0 = quality "
                            "first)",
                            "0.5", 0.0, MAX_COST_WEIGHT)
#: A sweep of λs: ``route --cost-weights``.
COST_WEIGHTS = number_list_option(COST_WEIGHT, "0,0.1,1,10")
#: A quality score: ``feedback --score``.
SCORE = number_option("a number from 0 to 1 (1 = best)", "0.8", 0.0, 1.0)
#: What an answer cost: ``feedback --cost`` (its unit, which the catalog decides, is said by
#: its help: see catalog.COST_UNITS_TEXT).
COST = number_option("what the answer cost, a number from 0 to "
                     f"{people_number(MAX_ANSWER_COST)}",
                     "0.002", 0.0, MAX_ANSWER_COST)
#: Any number (its range checked by the library, naming the option): the forecast's figures.
NUMBER = number_option()
#: A count (its range checked by the library, naming the option): ``--n-clusters``, ``--k``,
#: ``--concurrency``, ``--max-tokens``, ``--rpm``, ``--tpm``, ``--max-weights-bytes``.
COUNT = integer_option()


def days_option(text: str) -> float:
    """An ``argparse`` type reading a retention in days: ``prune --older-than`` (the bounds
    are the store's, read once the option is given)."""
    from switchpoint.store.retention import MAX_RETENTION_DAYS, RETENTION_DAYS

    return number_option(RETENTION_DAYS, "30", 0.0, MAX_RETENTION_DAYS, above_low=True)(text)


#: Where a command's parsed arguments keep which of its options fills which field.
_FILLED = "_option_fields"


def fills(parser: argparse.ArgumentParser, **fields: argparse.Action) -> None:
    """Say which option of ``parser``'s command fills which field of what it calls, each given
    by the action ``parser.add_argument`` returned for it (``available_models=models``, where
    ``models = parser.add_argument("--models", ...)``): an error about that field, when the
    option was given, names the option as the user typed it (:func:`as_typed`): by its long
    option string (``--models``), a positional argument by the name its usage shows
    (``MODEL``)."""
    known = dict(parser.get_default(_FILLED) or {})
    for field, action in fields.items():
        known[field] = (_typed_name(action), action.dest)
    parser.set_defaults(**{_FILLED: known})


def _typed_name(action: argparse.Action) -> str:
    """How the user types ``action``: its first long option string, else its first (as
    argparse names its ``dest`` after it), or a positional argument's metavar, else its
    ``dest`` (as its usage shows it)."""
    if action.option_strings:
        return next((o for o in action.option_strings if o.startswith("--")),
                    action.option_strings[0])
    return action.metavar if isinstance(action.metavar, str) else action.dest


def filled(args: argparse.Namespace, dest: str, fields: dict[str, str]) -> None:
    """Say, as a command runs, which fields the value of its option ``dest`` filled, once that
    value is read (``--param``'s names): an error about one of ``fields`` names the option as
    it was typed (``fields[field]``, ``--param cluster.n_clusters``), as :func:`fills` says
    it for an option that fills one field."""
    known = dict(getattr(args, _FILLED, None) or {})
    known.update({field: (option, dest) for field, option in fields.items()})
    setattr(args, _FILLED, known)


def as_typed(error: Exception, args: argparse.Namespace) -> str:
    """``error``'s message as the command line shows it: one about a field an option of the
    command filled (:func:`fills`) names that option (``--models: ...``, not
    ``available_models: ...``; a refusal of the service's, ``name: ...`` about its ``param``
    ``name``, as ``NAME: ...``), keeping the place in the option's value an error names
    (``models[2]: ...`` as ``--models (item 3): ...``); any other as it is."""
    from switchpoint.errors import ConfigError, GatewayError, InvalidInputError

    if isinstance(error, InvalidInputError):
        field, reason = error.field, error.reason
    elif isinstance(error, ConfigError):
        field, reason = error.key, error.reason
    elif isinstance(error, GatewayError) and error.param is not None \
            and error.message.startswith(f"{error.param}: "):
        field, reason = error.param, error.message[len(error.param) + 2:]
    else:
        return str(error)
    option, dest = getattr(args, _FILLED, {}).get(field, (None, None))
    if option is None or getattr(args, dest, None) is None:  # (not given: not the user's)
        return str(error)
    place = (_place(error.path.removeprefix(field)) if isinstance(error, InvalidInputError)
             and error.path.startswith(field) else "")
    return f"{option}{place}: {reason}"


# An item's place in a list, as a path into a request writes it (``[2]``, then the rest).
_ITEM = re.compile(r"\[(\d+)\](.*)", re.DOTALL)


def _place(rest: str) -> str:
    """Where in an option's value an error is, as :func:`as_typed` names it after the option:
    ``[2]`` (the third item of a list, counted from 0) as `` (item 3)``, as the command line's
    lists count their items (any path past it after a comma: `` (item 3, .name)``); no item,
    nothing."""
    item = _ITEM.fullmatch(rest)
    if item is None:
        return ""
    return f" (item {int(item[1]) + 1}{', ' + item[2] if item[2] else ''})"
