"""The model catalog: what each routable model is called, costs, can do, and which learned
profile stands for it.

A catalog decouples the names callers use (``good``, ``cheap``) from the profiles learned from
routing records (``gpt-4-1106-preview``). A card without a learned profile is still routable: its
expected error comes from its tier (the mean of the profiled models of that tier; when none
shares it, the weakest profiled model's) until it has labels, and its decisions say so.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Literal, get_args

from switchpoint._args import expect
from switchpoint._env_names import env_var_name_problem
from switchpoint._json import plain_str
from switchpoint._messages import (
    got,
    invalid_at,
    json_quoted,
    listed_names,
    not_text_problem,
    one_of,
    people_number,
    quoted,
    too_long,
    unprintable,
)
from switchpoint._numbers import boolean_problem, checked_number, number_problem
from switchpoint._redact import redact_url, remember, url_secrets
from switchpoint.errors import InvalidInputError
from switchpoint.known_providers import provider_problem

#: A model's tier, and a capability it may have: the types the config's keys read, and, as
#: :data:`TIERS` and :data:`CAPABILITIES`, the names a card is checked against.
Tier = Literal["trivial", "simple", "moderate", "complex", "expert"]
Capability = Literal["tools", "vision", "code", "json", "streaming"]
TIERS: tuple[str, ...] = get_args(Tier)
CAPABILITIES: tuple[str, ...] = get_args(Capability)
# Tokens assumed for an answer when pricing a request before it is made (LLMRouter's convention).
DEFAULT_OUTPUT_TOKENS = 200
# The most tokens a context window or an output cap may be (100 million): far past any model's,
# so only a mistake (1e14, 2**63) is refused.
MAX_TOKENS = 100_000_000
# The most a price may be, in USD per million tokens (input or output): a hundred times the
# dearest real model's (well under $1,000), so only a mistake (1e300) is refused. Prices bound
# what a logged request costs (with MAX_TOKENS), and so keep the request log's cost totals,
# counted in whole nano-dollars, far from overflowing.
MAX_PRICE_PER_MTOK = 100_000.0
# The most one answer may be reported to have cost (USD, or the weights' units): far beyond
# any single call, so only a mistake is refused, and no sum of costs can overflow.
MAX_ANSWER_COST = 1000.0
#: The decimal places of US dollars every amount priced by a catalog is kept and shown to: an
#: answer's cost and charge, a ledger's spend, holds and what remains of a budget, a labelling
#: run's and an experiment arm's costs. A ten-billionth of a dollar is far below any request's
#: cost (a token of the cheapest model is about 1e-8), so only a float's noise is dropped.
USD_DIGITS = 10
# Bytes of UTF-8 per token when estimating tokens without the model's tokenizer (see
# text_bytes): English text runs about 4 characters a token, text in other scripts about a
# token per character of CJK (3 bytes) and two of Cyrillic, Greek or Arabic (2 bytes each).
BYTES_PER_TOKEN = 4
# The longest model name a request may give, and so a catalog model may have.
MAX_MODEL_NAME = 256
# The longest base_url a model may have: far past any provider API's URL (a host and a short
# path), so only a mistake (a pasted document) is refused; every request to the model carries it.
MAX_BASE_URL = 2048
# The most models a catalog may list: several times the models any provider offers, and each
# request weighs them all (an answer's estimates, an error's list of names). It bounds every
# list of model names in the config too (fallbacks, a tenant's or an arm's models, budgets by
# model): a longer one can only repeat names.
MAX_CATALOG_MODELS = 1000
# What a model's fallbacks naming one model twice is told: a failed fallback is not tried again.
FALLBACKS_ONCE = ("name each fallback once: they are tried in order, each at most once, so a "
                  "repeat is never tried")


def usd(amount: float) -> float:
    """``amount`` of US dollars to :data:`USD_DIGITS` decimal places, as every amount of
    dollars is kept and shown."""
    return round(float(amount), USD_DIGITS)


#: The significant digits a cost in the weights' own units is given to as a number (a
#: decision's ``expected_cost``, ``info``'s mean costs): those units may be anything a team's
#: records used (a cost of 4e-13 a prompt is one), so no fixed number of decimal places keeps
#: them, while ten significant digits drop only a float's noise.
COST_DIGITS = 10


def cost_figure(amount: float, unit: str) -> float:
    """A cost in ``unit`` (a key of :data:`COST_UNITS`) as a JSON answer gives it: US dollars
    by :func:`usd` (to :data:`USD_DIGITS` decimal places), a cost in the weights' own units to
    :data:`COST_DIGITS` significant digits (``4.0e-13`` stays ``4.0e-13``, where ten places
    made it 0). The one rule of every cost printed as a number that may be in either unit."""
    if unit == "usd":
        return usd(amount)
    return float(f"{float(amount):.{COST_DIGITS}g}") + 0.0  # -0.0 + 0.0 is 0.0


def usd_text(amount: float, places: int = 6) -> str:
    """``amount`` of US dollars as a table or a message shows it: to at least ``places`` (6)
    decimal places (``$1,234.500000``) and up to the :data:`USD_DIGITS` places it is kept to,
    zeros past those dropped (``$0.00000145``, ``$0.000000001``), so an amount is never rounded
    for showing and one that is not zero never reads as zero; one past even those places (a
    float not made by :func:`usd`) in scientific notation. A report showing several amounts
    gives them all the places the widest needs (:func:`usd_places`), so they read alike."""
    return f"${cost_text(amount, places)}"


def usd_places(amounts: Iterable[float | None]) -> int:
    """The decimal places :func:`usd_text` shows the widest of ``amounts`` to (None: an
    unknown amount, shown as no number), at least 6: what one report passes for every amount
    it shows, so ``$0.0009325`` and ``$0.0008400`` stand together, not ``$0.000840``."""
    widest = 6
    for amount in amounts:
        if amount is None or (amount != 0 and round(amount, USD_DIGITS) == 0):
            continue
        widest = max(widest, len(f"{amount:.{USD_DIGITS}f}".partition(".")[2].rstrip("0")))
    return widest


def usd_rounded(amount: float, places: int) -> float:
    """An amount made from the amounts beside it by a division (an average, a spend
    projected over the hour) rounded to the ``places`` they are shown to
    (:func:`usd_places` of them, not of it), so the division's further digits do not stand
    beside them (``$0.350255``, not ``$0.3502549578``); unrounded where that would make it
    read as zero."""
    return round(amount, places) or amount


def usd_figure(amount: float) -> str:
    """``amount`` of US dollars as a machine reads it (a header, a metric): a plain decimal
    number to the :data:`USD_DIGITS` places it is kept to, written without trailing zeros
    (``0.00042``, ``0``)."""
    return f"{amount:.{USD_DIGITS}f}".rstrip("0").rstrip(".") or "0"


def cost_text(amount: float, places: int = 6) -> str:
    """A cost as :func:`usd_text` shows one, without the dollar sign: for a cost in units not
    known to be dollars (a router's weights' own cost units), shown by the same places."""
    if amount != 0 and round(amount, USD_DIGITS) == 0:
        return f"{amount:.1e}"
    whole, _, digits = f"{amount:,.{USD_DIGITS}f}".partition(".")
    digits = digits.rstrip("0").ljust(places, "0")
    return f"{whole}.{digits}"


#: What a cost a router estimates or is told is in, by whether its catalog prices every model
#: (a feedback answer's ``cost_unit``): US dollars, read against those prices, or else the
#: units of the costs its weights were fitted on, which no price converts.
COST_UNITS = {"usd": "US dollars", "weights": "the weights' cost units"}
#: What the weights' cost units are, as far as switchpoint can know: a package does not say
#: (its costs are in whatever units the records it was fitted on gave), but the bundled
#: weights' are US dollars a request.
WEIGHTS_UNITS_TEXT = f"{COST_UNITS['weights']} (US dollars for the bundled weights)"
#: The same for a package other than the bundled ones (one a user fitted): its own units.
FITTED_UNITS_TEXT = (f"{COST_UNITS['weights']} (the units the records it was fitted on gave "
                     "its costs in)")


def weights_units_text(bundled: bool | None) -> str:
    """What the weights' cost units are, for a package that is one of the bundled ones
    (``bundled``: US dollars), one that is not (one a user fitted, whose costs are in its
    records' units, which no package records: no dollars claimed), or None: not known
    (:data:`WEIGHTS_UNITS_TEXT`)."""
    return FITTED_UNITS_TEXT if bundled is False else WEIGHTS_UNITS_TEXT
#: The same for a reader who cannot know which applies (a command's help, an API schema).
COST_UNITS_TEXT = (f"in {COST_UNITS['usd']} when the catalog prices every model, else in "
                   f"{WEIGHTS_UNITS_TEXT}")


def cost_units_text(unit: str | None, bundled: bool | None = None) -> str:
    """What a cost in ``unit`` (a key of :data:`COST_UNITS`, as :func:`cost_unit_of` names a
    router's) is in, as a sentence goes on after the figure: ``in US dollars``, or ``in the
    weights' cost units (...)``, said of the bundled weights or of others as ``bundled``
    tells (:func:`weights_units_text`); for None, a unit the reader cannot know,
    :data:`COST_UNITS_TEXT`, which names both."""
    if unit is None:
        return COST_UNITS_TEXT
    if unit not in COST_UNITS:
        raise InvalidInputError("cost_unit", f"must be one of {one_of(sorted(COST_UNITS))}, "
                                             f"got {json_quoted(unit, 40)}")
    return f"in {COST_UNITS['usd']}" if unit == "usd" else f"in {weights_units_text(bundled)}"


def cost_unit_of(catalog: Catalog) -> str:
    """``usd`` when ``catalog`` prices every model, else ``weights`` (see
    :data:`COST_UNITS`)."""
    return "usd" if catalog.all_priced else "weights"


def unit_cost_text(amount: float, unit: str) -> str:
    """A cost in ``unit`` (a key of :data:`COST_UNITS`) as a message shows it: ``$0.020000``
    (US dollars, by :func:`usd_text`), ``0.020000 in the weights' cost units``."""
    if unit == "usd":
        return usd_text(amount)
    return f"{cost_text(amount)} in {COST_UNITS['weights']}"


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a catalog model, or None. The model that answered is named in
    the ``x-switchpoint-model`` header of every answer, and HTTP headers carry only visible
    ASCII safely (a character beyond Latin-1 could not be sent at all, a newline would end the
    header), so a name is visible ASCII (letters, digits, punctuation: ``gpt-4o``,
    ``meta-llama/Llama-3.1-8B``, ``llama3:8b``), with spaces only between its characters (a
    header's value loses those at its ends), no longer than a request may give. What is wrong
    alone: the door that took the name says how to mend it there (a config's card, with
    :data:`CARD_RULES`, to give the provider's own name as upstream_model)."""
    if (problem := name_length_problem(name)) is not None:
        return problem
    for i, char in enumerate(name):
        inside = 0 < i < len(name) - 1
        if not ("!" <= char <= "~" or (char == " " and inside)):
            return (f"holds {'a space' if char == ' ' else f'U+{ord(char):04X}'} (character "
                    f"{i + 1}): a model is named in the x-switchpoint-model header of each "
                    "answer, so its name is visible ASCII (letters, digits, punctuation, spaces "
                    "between them)")
    return None


def name_length_problem(name: str) -> str | None:
    """Why ``name`` is longer than any model's (:data:`MAX_MODEL_NAME` characters: the most a
    request may name), else None: the one statement of that bound, in the words a request's
    body says it in (``must have at most 256 characters, got 300``), for a catalog's name and
    upstream_model, a caller's list of models and a key's."""
    return too_long(MAX_MODEL_NAME, len(name)) if len(name) > MAX_MODEL_NAME else None


def check_name_lengths(names: Sequence[str], field_name: str) -> None:
    """An :class:`InvalidInputError` naming ``field_name`` (and the place, ``models[1]``) for
    a name of ``names`` longer than any model's (:data:`MAX_MODEL_NAME`), as a request's body
    refuses one: no catalog holds it, and it is not looked up."""
    for i, name in enumerate(names):
        if (problem := name_length_problem(name)) is not None:
            raise invalid_at(field_name, f"{field_name}[{i}]", problem)


def unordered_names(names: object, field_name: str) -> str | None:
    """Why ``names`` is no list of model names when it is a set (Python orders one by hash,
    differently from run to run, so the same call, or card, would name its models in another
    order each time, as a JSON list never does), else None."""
    if not isinstance(names, Set):
        return None
    return (f"must be a list of model names, got {type(names).__name__}, whose order is not "
            f"kept (it changes from run to run); pass a list, in the order you prefer "
            f"(sorted({field_name}) for a fixed one)")


def model_names(names: object, field_name: str) -> list[str] | None:
    """A caller's list of model names (``available_models``, ``allowed_models``, a chat
    call's ``models``) as a list (None: none given), else an :class:`InvalidInputError` naming
    ``field_name``: a string, a set (Python orders one by hash, differently from run to run,
    so the same call would name its models in another order each time, as HTTP's JSON list
    never does), a mapping (a dict's keys are not a list the caller wrote), or anything else
    that is not a list of strings, or a name longer than a model's (:func:`check_name_lengths`).
    Any other iterable (a tuple, a generator) is read once, as
    the list that is checked and routed by, and no further than :data:`MAX_CATALOG_MODELS`
    names and one more: a longer list is refused (it can only repeat names or name models no
    catalog holds), so an endless generator cannot hang the caller. The one check of such a
    list, in the router, at the gateway's door and in a tenant's or a key's limits."""
    if names is None:
        return None
    unordered = unordered_names(names, field_name)
    if unordered is not None:
        raise InvalidInputError(field_name, unordered)
    if isinstance(names, Mapping):
        raise InvalidInputError(field_name, f"must be a list of model names, got "
                                            f"{type(names).__name__} (a mapping); pass a list "
                                            f"of the names (list({field_name}) for its keys)")
    if isinstance(names, (str, bytes, bytearray)) or not isinstance(names, Iterable):
        raise InvalidInputError(field_name, f"must be a list of model names, got "
                                            f"{type(names).__name__}")
    names = list(itertools.islice(names, MAX_CATALOG_MODELS + 1))
    if len(names) > MAX_CATALOG_MODELS:
        raise InvalidInputError(field_name, f"names more than {people_number(MAX_CATALOG_MODELS)} "
                                            f"models; it may name at most "
                                            f"{people_number(MAX_CATALOG_MODELS)} (the most a "
                                            "catalog may list): name each model once")
    bad_type = [n for n in names if not isinstance(n, str)]
    if bad_type:
        kinds = ", ".join(dict.fromkeys(type(n).__name__ for n in bad_type))
        raise InvalidInputError(field_name, f"must be a list of model names (strings), got "
                                            f"{kinds} among them")
    names = [plain_str(n) for n in names]  # (their own characters, whatever they say)
    check_name_lengths(names, field_name)
    return names


def named_once(names: list[str], field_name: str, advice: str = "name each model once"
               ) -> list[str]:
    """``names``, when each is in it once; else an :class:`InvalidInputError` naming
    ``field_name`` and the names given more than once, with ``advice``. A list of models a
    caller chooses (a router's ``allowed_models``, its ``available_models``, a record set's
    models), or of a model's capabilities, names each once: a repeat chooses nothing more, and
    is more likely a mistake (another name meant) than an intent."""
    if len(set(names)) == len(names):
        return names
    twice = [n for n, k in Counter(names).items() if k > 1]
    raise InvalidInputError(field_name, f"names {listed_names(twice, quoted=True)} more than "
                                        f"once; {advice}")


def base_url_problem(url: str) -> str | None:
    """Why ``url``, a model's ``base_url``, is no http:// or https:// URL, cannot be read as
    a URL (a host in brackets that is no IP address, or whose bracket is not closed; no host
    at all: ``http:///v1``), shown
    with its secrets masked, or cannot be sent (longer than :data:`MAX_BASE_URL`; a character
    that does not show as itself: a control character such as NUL or a line break, which no
    request line carries, or an invisible or direction-changing one, which would show it as
    another URL), said by its place alone; None when it can be: its requests, and the secrets
    it carries, are read from its parts."""
    if not url.startswith(("http://", "https://")):
        return f"must start with http:// or https://, got {json_quoted(redact_url(url))}"
    if len(url) > MAX_BASE_URL:
        return (f"is {len(url):,} characters, over the {MAX_BASE_URL:,} a base_url may have; "
                "give the URL of the provider's API, up to its version (https://host/v1)")
    hidden = unprintable(url)
    if hidden is not None:
        return (f"holds U+{ord(hidden[1]):04X} (character {hidden[0] + 1}), which does not "
                "show as itself: a control character (NUL, a line break) no request line can "
                "carry, or an invisible or direction-changing one that shows the URL as "
                "another; give the URL in visible characters")
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError as exc:
        return (f"cannot be read as a URL ({exc}), got {json_quoted(redact_url(url))}; write "
                "its host as a name or an IP address, an IPv6 one in brackets "
                "(https://[::1]:8000/v1)")
    if not host:
        return (f"has no host, got {json_quoted(redact_url(url))}: a request needs one to go "
                "to; write it after the scheme's //, as a name or an IP address "
                "(https://api.example.com/v1, http://127.0.0.1:8000/v1)")
    return None


def _text_problem(value: object, problem: Callable[[str], str | None]) -> str | None:
    """Why ``value`` is no text (bytes named by their type alone: they may hold a secret; a
    date YAML read shown as written, to be quoted), else what ``problem`` says of it."""
    if not isinstance(value, str):
        return not_text_problem(value) or f"must be a string{got(value)}"
    return problem(value)


def _not_empty(text: str) -> str | None:
    return "must not be empty" if not text else None


def _provider_problem(name: str) -> str | None:
    return _not_empty(name) or provider_problem(name)


def _api_key_env_problem(name: str) -> str | None:
    return env_var_name_problem(name, "OPENAI_API_KEY")


def _name_fault(name: str) -> tuple[str, str] | None:
    """What is wrong with ``name`` as a catalog model's name (the rule of every door that names
    one), and how a config's card mends it ("" where what is wrong says what it must be: an
    empty name, one too long); else None. Another door says its own one fix (a records file
    has no upstream_model to give the provider's name as)."""
    if name == "auto":
        return "\"auto\" is reserved for the router itself", "rename the model"
    if (problem := _not_empty(name) or name_length_problem(name)) is not None:
        return problem, ""
    if (problem := model_name_problem(name)) is not None:  # (not visible ASCII)
        return problem, "give the provider's own name as upstream_model"
    return None


def _card_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a card's (:func:`_name_fault`), with how a config mends it."""
    fault = _name_fault(name)
    if fault is None:
        return None
    problem, fix = fault
    return f"{problem}; {fix}" if fix else problem


def _name_wrong(name: str) -> str | None:
    """What is wrong with ``name`` as a catalog model's name (:func:`_name_fault`) alone."""
    fault = _name_fault(name)
    return None if fault is None else fault[0]


def _upstream_model_problem(name: str) -> str | None:
    return _not_empty(name) or name_length_problem(name)


def list_problem(value: object, what: str) -> str | None:
    """Why ``value``, a card's list of ``what``, is no list at all (text is none)."""
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, (list, tuple)):
        return f"must be a list of {what}{got(value)}"
    return None


def _names_problem(value: object, what: str, advice: str) -> str | None:
    """Why ``value`` is no list of ``what`` (strings, each of them keeping its field's
    :data:`ITEM_RULES`), each named once."""
    problem = list_problem(value, what)
    if problem is not None:
        return problem
    assert isinstance(value, (list, tuple))
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return f"must be a list of {what} (strings), got {type(item).__name__} at [{i}]"
    try:
        named_once(list(value), what, advice)
    except InvalidInputError as exc:
        return exc.reason
    return None


def _number_in_range(value: object, high: float, *, whole: bool = False) -> str | None:
    """Why ``value`` is no number from 0 (more than 0 when ``whole``: a count) to ``high``
    (a whole one when ``whole``), else None: a card's prices and its context window, read as
    every number of the library door is (:func:`~switchpoint._numbers.checked_number`)."""
    field_name = "context_window" if whole else "price"
    problem = number_problem(value)
    if problem is not None:
        return problem
    number = checked_number(field_name, value)  # (a Decimal too: number_problem read it)
    assert number is not None
    if whole and not number.is_integer():
        return f"must be a whole number{got(value)}"
    if number < 0 or (whole and number == 0):
        return f"must be {'>' if whole else '>='} 0{got(value)}"
    if number > high:
        return f"must be <= {people_number(high)}{got(value)}"
    return None


def _price_problem(value: object) -> str | None:
    return _number_in_range(value, MAX_PRICE_PER_MTOK)


def _context_window_problem(value: object) -> str | None:
    return _number_in_range(value, MAX_TOKENS, whole=True)


def _tier_problem(value: object) -> str | None:
    return None if value in TIERS else f"must be one of {one_of(TIERS)}{got(value)}"


def _capability_problem(value: object) -> str | None:
    known = isinstance(value, str) and value in CAPABILITIES
    return None if known else f"must be one of {one_of(CAPABILITIES)}{got(value)}"


#: The rules of each item of a card's list field, by field: why a value cannot be an item of
#: it, else None. Its items are judged once the field is a list, before the field's own rule
#: (:data:`CARD_RULES`) judges the list, and a refusal names the item by its place
#: (``capabilities[0]``), the config's and a catalog built in Python alike.
ITEM_RULES: Mapping[str, Callable[[object], str | None]] = {
    "capabilities": _capability_problem,
}


#: The rules of one model's card, by field, in the order of its fields: why a value cannot be
#: that field's, else None (None itself, which the fields of :data:`OPTIONAL_FIELDS` take, is
#: not judged by them). The one statement of them: a catalog built in Python (:class:`Catalog`)
#: checks each card by them, and the config's and a registered model's entry
#: (:class:`~switchpoint.config.ModelEntry`) each value it reads.
CARD_RULES: Mapping[str, Callable[[object], str | None]] = {
    "name": lambda value: _text_problem(value, _card_name_problem),
    "profile": lambda value: _text_problem(value, _not_empty),
    "provider": lambda value: _text_problem(value, _provider_problem),
    "base_url": lambda value: _text_problem(value, base_url_problem),
    "api_key_env": lambda value: _text_problem(value, _api_key_env_problem),
    "stream_usage": boolean_problem,
    "input_per_mtok": _price_problem,
    "output_per_mtok": _price_problem,
    "context_window": _context_window_problem,
    "capabilities": lambda value: _names_problem(value, "capabilities",
                                                 "name each capability once"),
    "tier": _tier_problem,
    # (a set's order, the order they are tried, changes from run to run)
    "fallbacks": lambda value: (unordered_names(value, "fallbacks")
                                or _names_problem(value, "fallbacks", FALLBACKS_ONCE)),
    "upstream_model": lambda value: _text_problem(value, _upstream_model_problem),
    "auto": boolean_problem,
}


def catalog_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a catalog's model (the rule of a card's name in
    :data:`CARD_RULES`), said of the name, quoted and cut short (``model "a b " holds a space
    ...``); None when it can. A door that names a model that becomes a catalog card or a
    weights model (a weights model is a card of the catalog routing builds without a config's:
    :meth:`Catalog.from_profiles`) refuses such a name by it before any work: ``add-model``'s
    name, ``fit``'s records, ``label``'s models. What is wrong alone: each of those says the
    one fix that fits it (a config's, such as upstream_model, fits none of them)."""
    problem = _text_problem(name, _name_wrong)
    if problem is None:
        return None
    return f"model {json_quoted(name, 80)}: {problem}"


#: The card's fields that may be None (unset: a default applies); the others may not.
OPTIONAL_FIELDS = frozenset({"profile", "base_url", "api_key_env", "stream_usage",
                             "input_per_mtok", "output_per_mtok", "context_window", "tier",
                             "upstream_model"})


def card_problem(card: ModelCard, place: int) -> CatalogFault | None:
    """What :data:`CARD_RULES` (and :data:`ITEM_RULES`) first refuse of ``card``, the
    catalog's model at ``place``, naming the field (and the item); None when nothing."""
    for field_name, rule in CARD_RULES.items():
        value = getattr(card, field_name)
        if value is None and field_name in OPTIONAL_FIELDS:
            continue
        item_rule = ITEM_RULES.get(field_name)
        if item_rule is not None and list_problem(value, field_name) is None:
            assert isinstance(value, (list, tuple))
            for i, item in enumerate(value):
                problem = item_rule(item)
                if problem is not None:
                    return CatalogFault(problem, place, field_name, i)
        problem = rule(value)
        if problem is not None:
            return CatalogFault(problem, place, field_name)
    return None


@dataclass(frozen=True)
class CatalogFault:
    """What is wrong with a catalog as a whole, and where: in its card ``model`` (its place
    in the list), its ``field`` and that field's item ``item`` (its place in the list); None
    where the catalog itself is at fault (``models``)."""

    reason: str
    model: int | None = None
    field: str | None = None
    item: int | None = None

    def by_place(self) -> str:
        """Where, each model by its place, as a config's keys are named:
        ``models[2].fallbacks[0]``."""
        if self.model is None:
            return "models"
        where = f"models[{self.model}].{self.field}"
        return where if self.item is None else f"{where}[{self.item}]"

    def by_name(self, cards: Sequence[ModelCard]) -> str:
        """Where, as a :class:`Catalog` of ``cards`` names it: a model by its name, but where
        the name itself is at fault (``models[2].name``), and a field's item by its place
        (``models.a.fallbacks[0]``)."""
        if self.model is None or self.field == "name":
            return self.by_place()
        where = f"models.{cards[self.model].name}.{self.field}"
        return where if self.item is None else f"{where}[{self.item}]"


def catalog_problem(cards: Sequence[ModelCard], *, add: str = "define it under models:"
                    ) -> CatalogFault | None:
    """What is wrong with ``cards`` (each keeping :data:`CARD_RULES`) as a catalog, else None:
    none at all, more than :data:`MAX_CATALOG_MODELS`, a name given twice, a fallback naming
    the model itself or a model not among them (``add`` says how a model joins the catalog:
    the config's words by default), or every model ``auto: false``. The one statement of
    these rules: a :class:`Catalog` built in Python keeps them, and the config's catalog
    (with the models registered at run time) and a library router's registrations are checked
    by them."""
    if not cards:
        return CatalogFault("is empty; list at least one model, or leave it out to route over "
                            "the weights' own profiles")
    if len(cards) > MAX_CATALOG_MODELS:
        return CatalogFault(f"{too_long(MAX_CATALOG_MODELS, len(cards), 'items')} (models "
                            "registered at run time count too); route over fewer")
    first: dict[str, int] = {}
    for i, card in enumerate(cards):
        if card.name in first:
            return CatalogFault(f"{json_quoted(card.name)} is defined twice (also "
                                f"models[{first[card.name]}]); names must be unique",
                                i, "name")
        first[card.name] = i
    for i, card in enumerate(cards):
        for j, fallback in enumerate(card.fallbacks):
            if fallback == card.name:
                return CatalogFault(f"{json_quoted(fallback)} cannot fall back to itself; "
                                    "remove it from its fallbacks (a model that failed is "
                                    "not tried again)", i, "fallbacks", j)
            if fallback not in first:
                return CatalogFault(f"{json_quoted(fallback)} is not a model in the catalog; "
                                    f"{add} or remove it (models: "
                                    f"{listed_names(list(first), quoted=True)})",
                                    i, "fallbacks", j)
    if not any(card.auto for card in cards):
        return CatalogFault("every model has auto: false, so \"auto\" could choose none; let "
                            "at least one be routed")
    return None


#: A card's number fields.
_CARD_NUMBERS = ("input_per_mtok", "output_per_mtok", "context_window")


@dataclass(frozen=True)
class ModelCard:
    name: str
    profile: str | None = None
    provider: str = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    context_window: int | None = None
    capabilities: tuple[str, ...] = ()
    tier: str | None = None
    fallbacks: tuple[str, ...] = ()
    upstream_model: str | None = None
    stream_usage: bool | None = None  # None: the provider's default (see known_providers)
    # False: served only when a request names it (a judge, a grader), never chosen for ``auto``
    # by routing, exploration, escalation, an experiment or a tenant's memory.
    auto: bool = True

    def __post_init__(self) -> None:
        # A Decimal number is read as the float nearest it (an integer for a whole context
        # window), as every number of the library door is (checked_number): kept as given, it
        # would break the price's float arithmetic. One the card's rules refuse is kept, for
        # the catalog to refuse naming its place.
        for name in _CARD_NUMBERS:
            value = getattr(self, name)
            if isinstance(value, Decimal) and number_problem(value) is None:
                number = checked_number(name, value)
                assert number is not None
                read: float = (int(number) if name == "context_window" and number.is_integer()
                               else number)
                object.__setattr__(self, name, read)

    def __repr__(self) -> str:
        # (a base_url's password and credential parameters are secrets: masked, as every
        # URL switchpoint shows is)
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.base_url is not None:
            shown["base_url"] = redact_url(self.base_url)
        return f"ModelCard({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @property
    def priced(self) -> bool:
        return self.input_per_mtok is not None and self.output_per_mtok is not None

    def price(self, input_tokens: float, output_tokens: float) -> float:
        """USD for a request of that size (0 if the card has no prices)."""
        if not self.priced:
            return 0.0
        assert self.input_per_mtok is not None and self.output_per_mtok is not None
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


@dataclass
class Catalog:
    cards: list[ModelCard]
    expected_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    _by_name: dict[str, ModelCard] = field(init=False, repr=False)
    _routed: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # (read once: a generator's cards would be gone by the catalog's own checks)
        expect("models", self.cards, (list, tuple), "a list of ModelCard objects")
        self.cards = list(self.cards)
        for i, card in enumerate(self.cards):
            if not isinstance(card, ModelCard):
                raise InvalidInputError(f"models[{i}]", f"must be a ModelCard, got "
                                                        f"{type(card).__name__}")
            problem = card_problem(card, i)
            if problem is not None:
                raise InvalidInputError(problem.by_name(self.cards), problem.reason)
        fault = catalog_problem(self.cards)
        if fault is not None:
            raise InvalidInputError(fault.by_name(self.cards), fault.reason)
        # A secret in a model's URL is redacted from every text from now on, as an API key
        # is once read (a connection error, an upstream's answer or a log line may quote it).
        remember(*(secret for card in self.cards for secret in url_secrets(card.base_url)))
        self._by_name = {c.name: c for c in self.cards}
        self._routed = tuple(c.name for c in self.cards if c.auto)

    @classmethod
    def from_profiles(cls, profiles: Iterable[str]) -> Catalog:
        """A catalog with one card per learned profile, named after it (the library default)."""
        return cls([ModelCard(name=p, profile=p) for p in profiles])

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cards]

    def __getitem__(self, name: str) -> ModelCard:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        # (a caller's value of any type: a list or a dict names no model, and is no error here)
        return isinstance(name, str) and name in self._by_name

    def get(self, name: str) -> ModelCard | None:
        return self._by_name.get(name) if isinstance(name, str) else None

    @property
    def routed(self) -> list[str]:
        """The names ``auto`` may choose among: every model but those with ``auto: false``
        (worked out once: every ``auto`` request asks)."""
        return list(self._routed)

    def not_routed(self, names: Iterable[str]) -> list[str]:
        """Those of ``names`` that ``auto`` never chooses (``auto: false``)."""
        return [n for n in names if n in self._by_name and not self._by_name[n].auto]

    def leaves_no_model(self, listed: Sequence[str], within: Sequence[str],
                        within_name: str) -> str:
        """Why a caller's candidate list ``listed`` (of catalog names) leaves routing no model,
        given the models it may narrow (``within``, which ``within_name`` names: ``this
        router's allowed models``): the names routing never chooses (``auto: false``), else
        that none of the others is among ``within``. The one wording of this refusal, in the
        router and at the gateway's door; names are listed as every message lists them."""
        unrouted = self.not_routed(listed)
        never = (f"{listed_names(unrouted, quoted=True)} "
                 f"{'is' if len(unrouted) == 1 else 'are'} never chosen by routing (auto: false "
                 "in the catalog: served only when a request names it as its model)")
        others = [n for n in listed if n not in unrouted]
        if unrouted and not others:
            return f"{never}; list a model routing may choose"
        return (f"none of {listed_names(others, quoted=True)} is in {within_name} "
                f"({listed_names(within, quoted=True)})" + (f", and {never}" if unrouted else "")
                + "; list one of those")

    @property
    def all_priced(self) -> bool:
        return all(c.priced for c in self.cards)

    def uncosted(self, profiles: Iterable[str]) -> list[str]:
        """The catalog's models nothing would cost, routed by weights with the learned
        ``profiles`` (see :func:`uncosted`)."""
        return uncosted(self.cards, profiles)

    def profile_of(self, name: str) -> str:
        card = self._by_name[name]
        return card.profile or card.name


def uncosted(cards: Sequence[ModelCard], profiles: Iterable[str]) -> list[str]:
    """The names of ``cards`` nothing would cost, routed by weights with the learned
    ``profiles``: none where every card has prices (a model without a profile is then costed,
    and routed, by its tier and price), else those whose profile (``profile``, or its name)
    is not among ``profiles`` (costs then come from the profiles' measurements). The one
    statement of the rule a catalog keeps with its weights: a router refuses a catalog that
    leaves such a model, a registration a card that would be one, a gateway a config."""
    if all(c.priced for c in cards):
        return []
    known = set(profiles)
    return [c.name for c in cards if (c.profile or c.name) not in known]


def text_bytes(text: str) -> int:
    """The size of ``text`` as tokens are estimated from (:func:`text_tokens`): its UTF-8
    bytes, so ASCII text counts a byte a character and other scripts more (CJK 3, emoji 4), as
    tokenizers split them into more tokens; a lone surrogate counts its 3 bytes, never
    raising."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def json_bytes(value: object) -> int:
    """The size of ``value`` written as JSON (what :func:`str` gives where JSON has no
    form), as tokens are estimated from: the :func:`text_bytes` of its text with each
    character written as itself, so a non-ASCII one counts its UTF-8 bytes, not the 6 of a
    ``\\uXXXX`` escape; ASCII JSON counts as its length."""
    return text_bytes(json.dumps(value, default=str, ensure_ascii=False))


def text_tokens(size: int) -> int:
    """The tokens of text of ``size`` bytes (:func:`text_bytes`, summed over its pieces), as
    estimated without the model's tokenizer (:data:`BYTES_PER_TOKEN` bytes a token): a
    prompt's, or an answer's whose upstream reported no usage to believe."""
    return math.ceil(size / BYTES_PER_TOKEN)


def estimate_tokens(text: str) -> int:
    """The tokens of ``text`` (at least 1), as estimated without the model's tokenizer."""
    return max(1, text_tokens(text_bytes(text)))


def check_token_counts(value: object, field: str = "estimate_tokens") -> tuple[int, int]:
    """``value`` as the (input, output) tokens a request is priced at: two whole numbers from 0
    to :data:`MAX_TOKENS`, as a tuple or a list. Anything else is an
    :class:`~switchpoint.errors.InvalidInputError` naming ``field``."""
    shape = (f"must be two whole numbers of tokens, input then output, each from 0 to "
             f"{MAX_TOKENS:,}")
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        got = ((f"{len(value)} number" if len(value) == 1 else f"{len(value)} numbers")
               if isinstance(value, (tuple, list)) else f"a {type(value).__name__}")
        raise InvalidInputError(field, f"{shape} (got {got})")
    counts: list[int] = []
    for which, count in zip(("input", "output"), value, strict=True):
        if isinstance(count, bool) or not isinstance(count, numbers.Integral):
            raise InvalidInputError(field, f"{shape}; its {which} tokens are a "
                                           f"{type(count).__name__}")
        if not 0 <= int(count) <= MAX_TOKENS:
            raise InvalidInputError(field, f"{shape}; its {which} tokens are {quoted(int(count))}")
        counts.append(int(count))
    return counts[0], counts[1]


def cards_with(catalog: Catalog, names: Sequence[str], capability: str) -> list[str]:
    return [n for n in names if catalog[n].has(capability)]
