"""The decision rule and the decision it produces.

``score(m) = expected_error(m) + λ · cost(m) / cost_scale``

``cost_scale`` is the global mean cost of the most expensive candidate, so normalised costs lie
in about ``[0, 1]`` whatever the pool: λ = 0 picks for quality alone, λ = 1 means "paying for the
priciest model is worth one whole unit of error", and the same λ means the same trade-off for any
set of models. Ties (scores within :data:`TIE_TOLERANCE`) go to the cheaper model, then to the
earlier one.

When estimates carry their standard errors, ``pessimism`` κ adds
``κ · (stderr(m) − least stderr among the candidates)`` to each score: a model whose estimate
rests on little evidence (an added model, a sparse cluster) has to look better by a margin to be
chosen, while models backed by equal evidence are compared exactly as before.

:func:`decide` is the rule, vectorised over rows; the router (:func:`choose`, one row) and the
evaluation harness both call it, so they choose identically.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from switchpoint._args import INTEGER, expect
from switchpoint._json import plain_str
from switchpoint._messages import (
    bounded_repr,
    cut,
    json_quoted,
    not_finite_reason,
    people_number,
    too_long,
)
from switchpoint._numbers import checked_number
from switchpoint.catalog import cost_figure, cost_text, cost_units_text
from switchpoint.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

# (NumPy is imported by the functions that compute with it, when first called: the commands
# that read a decision's constants, its fields or its ids hold no array and do not load it)
MAX_COST_WEIGHT = 1e4
#: The λ a router routes with when none is given (a config's ``cost_weight``, ``route``).
DEFAULT_COST_WEIGHT = 0.5
#: Scores closer than this are tied; a tie goes to the cheaper candidate.
TIE_TOLERANCE = 1e-9


#: Longest id an outcome or a score may name (an id is 32 characters; the rest is room).
MAX_DECISION_ID = 200
#: What an id is written in: a random UUID's lowercase hexadecimal digits
#: (``uuid.uuid4().hex``), as the router writes a decision's, the gateway a request's (the
#: id a request to a named model answers with, which feedback names as it names a decision's)
#: and a comparison's.
DECISION_ID_PATTERN = "^[0-9a-f]+$"
_ID_DIGITS = frozenset("0123456789abcdef")
#: What each field naming an id names, and where its id came from: the one check
#: (:func:`check_id`) says so of the field it is given.
_IDS = {"decision_id": ("decision id", "an answer carried (x-switchpoint-decision-id, or "
                                       "decision_id)"),
        "compare_id": ("comparison id", "a comparison answered with (its compare_id)"),
        "prompt_hash": ("prompt hash", "of the SHA-256 of the prompt a decision routed on "
                                       "(its prompt_hash)")}
#: How many hexadecimal digits a decision id has (a random UUID's), and a prompt hash (a
#: SHA-256's): the two shapes an outcome may name its decision by.
ID_DIGITS = 32
PROMPT_HASH_DIGITS = 64
PROMPT_HASH_PATTERN = f"^[0-9a-f]{{{PROMPT_HASH_DIGITS}}}$"


def hash_prompt(text: str) -> str:
    """The prompt hash of ``text``: the SHA-256 of its UTF-8 bytes, as 64 lowercase
    hexadecimal digits (what a decision routed on ``text`` carries as ``prompt_hash``)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def check_id(value: object, field: str = "decision_id", *, or_prompt_hash: bool = False) -> str:
    """``value`` when it could name what ``field`` names (``decision_id``: a decision or a
    request; ``compare_id``: a comparison; ``prompt_hash``: the prompt a decision routed on,
    64 digits): a string of at most :data:`MAX_DECISION_ID` characters, each a lowercase
    hexadecimal digit, as every id the router and the gateway make is; else an
    :class:`InvalidInputError` naming ``field``, its first character no id holds and what an
    id looks like, before anything is looked up (an id nothing could have is a mistake to
    tell, not a thing to look for). With ``or_prompt_hash`` the value names a decision by
    either shape, a decision id's :data:`ID_DIGITS` digits or a prompt hash's
    :data:`PROMPT_HASH_DIGITS` (:meth:`Router.report_outcome`), and a length of neither is
    refused too. The one check of an outcome's decision id or prompt hash and a score's
    comparison id, in process and over HTTP."""
    what, source = _IDS[field]
    digits = PROMPT_HASH_DIGITS if field == "prompt_hash" else ID_DIGITS
    is_ = f"a {what} is the {digits} lowercase hexadecimal digits (0-9, a-f) {source}"
    if or_prompt_hash:
        what = f"{what} or prompt hash"
        is_ += f", a prompt hash the {PROMPT_HASH_DIGITS} digits {_IDS['prompt_hash'][1]}"
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else type(value).__name__
        raise InvalidInputError(field, f"must be a {what}, got {got}; {is_}")
    value = plain_str(value)  # (its own characters checked and looked up, whatever it says)
    lengths = ((ID_DIGITS, PROMPT_HASH_DIGITS) if or_prompt_hash
               else (PROMPT_HASH_DIGITS,) if field == "prompt_hash" else None)
    if lengths is None and len(value) > MAX_DECISION_ID:
        raise InvalidInputError(field, too_long(MAX_DECISION_ID, len(value)))
    # (a value longer than any is refused unread; a shorter one first by a character no id
    # holds, as an id is)
    if len(value) <= MAX_DECISION_ID and not _ID_DIGITS.issuperset(value):
        at, char = next((i, c) for i, c in enumerate(value) if c not in _ID_DIGITS)
        shown = (json_quoted(char) if " " < char <= "~" else f"U+{ord(char):04X}")
        raise InvalidInputError(field, f"holds {shown} (character {at + 1}), which no {what} "
                                       f"holds: {is_}")
    if lengths is not None and len(value) not in lengths:
        neither = (f", neither a decision id ({ID_DIGITS}) nor a prompt hash "
                   f"({PROMPT_HASH_DIGITS})" if or_prompt_hash else "")
        raise InvalidInputError(field, f"is {len(value)} characters{neither}: {is_}")
    return value


def check_cost_weight(value: object, field: str = "cost_weight", *,
                      written: str | None = None) -> float:
    """``value`` as a λ (a float from 0 to :data:`MAX_COST_WEIGHT`), else an
    :class:`~switchpoint.errors.InvalidInputError` naming ``field`` that quotes the value as
    sent: ``written``, the number as its text gave it (a header's ``-1``, ``1e5``), when it
    was read from text. A NaN or an infinity (a header's ``1e999``, the library's
    ``float("inf")``) is told in the words of every request door
    (:func:`~switchpoint._messages.not_finite_reason`), as a body's ``cost_weight`` is."""
    x = checked_number(field, value)
    if x is None:
        raise InvalidInputError(field, f"must be a number >= 0, got {json_quoted(value)}")
    if not math.isfinite(x):
        raise InvalidInputError(field, not_finite_reason(x))
    shown = json_quoted(value) if written is None else cut(written.strip(), 60)
    if x < 0:
        raise InvalidInputError(field, f"is {shown}; it must be >= 0 (0 = quality first)")
    if x > MAX_COST_WEIGHT:
        raise InvalidInputError(field, f"is {shown}; it must be at most "
                                       f"{people_number(MAX_COST_WEIGHT)}")
    return x


@dataclass
class Usage:
    """What a decision took: milliseconds routing it, and of those, embedding its prompt."""

    routing_ms: float = 0.0
    embedding_ms: float = 0.0

    def __post_init__(self) -> None:
        self.routing_ms = in_range("routing_ms", self.routing_ms, *MILLISECONDS)
        self.embedding_ms = in_range("embedding_ms", self.embedding_ms, *MILLISECONDS)


# What a decision's numbers take: (lowest, highest, in words). Each is checked as a decision
# is built, by the public constructor as by the router: a NaN or an infinity would be written
# by to_dict() as JSON no strict reader takes (NaN, Infinity), a rate past 1 read in explain()
# as "150%", and a NaN score sorts anywhere among the gateway's candidates. (Every bound
# compares false against a NaN, so a NaN is refused by each.)
_FINITE = sys.float_info.max
MILLISECONDS = (0.0, _FINITE, "a finite number of milliseconds >= 0")
RATE = (0.0, 1.0, "a number from 0 to 1")
# (an expected error is a rate, but a baseline adds a large penalty to the models it does not
# pick: the fixed policy's others read 1e6 and more)
ERROR = (0.0, _FINITE, "a finite number >= 0")
SCORE = (-_FINITE, _FINITE, "a finite number")
COST = (0.0, _FINITE, "a finite number >= 0")
LAMBDA = (0.0, MAX_COST_WEIGHT, f"a number from 0 to {people_number(MAX_COST_WEIGHT)}")
# A unit's index (a cluster, a tier, a neighbouring example of the policy): from 0, as every
# policy numbers them, to the most an SQLite integer holds (the request log stores it).
MAX_UNIT = 2**63 - 1


def in_range(field: str, value: object, low: float, high: float, what: str) -> float:
    """``value`` as a Python float when it is a number (not a boolean) from ``low`` to
    ``high``, read as every number check of the library door reads one
    (:func:`~switchpoint._numbers.checked_number`: a Decimal as the float nearest it, one no
    float holds refused saying so), else an :class:`InvalidInputError` for ``field`` (``what``
    says so in words). A decision keeps the float it returns: a NumPy scalar, a Fraction or a
    Decimal kept as given is a number ``json.dumps`` cannot write, and ``to_dict()`` promises
    JSON."""
    if type(value) is float and low <= value <= high:  # (the quick path: what routing builds)
        return value
    x = checked_number(field, value)
    if x is None:
        raise InvalidInputError(field, f"must be {what}, got {type(value).__name__}")
    if not low <= x <= high:
        raise InvalidInputError(field, f"must be {what}, got {json_quoted(value)}")
    return x


def _numbers_by_model(field: str, value: object, low: float, high: float, what: str
                      ) -> dict[str, float]:
    """``value`` as a dict of model names to numbers from ``low`` to ``high`` (:func:`in_range`
    names the entry refused: ``all_scores['gpt-4']``): ``value`` itself when each is a float
    already, else a copy holding each as the float :func:`in_range` reads."""
    if type(value) is not dict:
        expect(field, value, dict, f"a dict of model names to numbers ({what})")
    assert isinstance(value, dict)
    taken: dict[str, float] = value
    for name, x in value.items():
        if type(name) is not str:
            raise InvalidInputError(field, f"must map model names (strings) to numbers, got "
                                           f"a key of type {type(name).__name__}")
        if not (type(x) is float and low <= x <= high):
            number = in_range(f"{field}[{json_quoted(name)}]", x, low, high, what)
            if taken is value:
                taken = dict(value)
            taken[name] = number
    return taken


def _strings(field: str, value: object, what: str) -> None:
    """``value`` as a list of strings (``what``: what they are, in words)."""
    if type(value) is list and all(type(item) is str for item in value):
        return  # (the quick path)
    expect(field, value, list, f"a list of {what}")
    assert isinstance(value, list)
    for i, item in enumerate(value):
        expect(f"{field}[{i}]", item, str, "a string")


# The fields of a routing answer: the body of ``POST /v1/route`` and each line of
# ``switchpoint route --input``.
ROUTE_FIELDS = ("selected_model", "cluster_id", "expected_error", "cost_adjusted_score",
                "all_scores", "cache_hit", "usage", "decision_id")
# Added to a routing answer when keys, tenants, budgets, an SLA or escalation are configured.
GOVERNANCE_FIELDS = ("cost_weight", "confidence", "escalated", "original_confidence",
                     "escalation_reason", "sla_compliant", "sla_breaches", "sla_adjustments",
                     "budget_pressure")
# Added when a tenant memory, an experiment or exploration is configured: who chose the model
# (``router``, ``memory`` or ``exploration``), why a tenant memory left it to the router, and the
# experiment and arm the request was assigned to.
LEARNING_FIELDS = ("source", "memory_fallback", "experiment", "arm")


@dataclass
class RoutingDecision:
    """One routing decision. ``all_scores`` holds every candidate's ``error + λ·cost``.

    What was chosen: ``selected_model``, its ``expected_error`` (the chance its answer is
    wrong, from 0), its ``cost_adjusted_score`` (expected error + λ × its cost normalised by
    the candidates' cost scale: the lowest wins) and its ``expected_cost`` (in the weights'
    cost units: USD per request for the bundled weights); ``cost_weight`` is the λ it was
    decided at, and ``confidence`` (0 to 1) the chance it really scores below the runner-up,
    given the evidence behind both. Every candidate: ``all_scores``, ``expected_errors`` and
    ``expected_costs`` by model, the router's choice first; ``fallback_models`` the other
    candidates, best first (the order a gateway fails over in). Why: ``policy`` (its name),
    ``cluster_id`` (the index, from 0, of the cluster, tier or example of the policy the
    prompt fell in) and ``basis`` (the same in words), ``reasoning`` and ``evidence``
    (sentences: how many labelled examples stand behind the estimate). ``decision_id``
    names it to :meth:`Router.report_outcome <switchpoint.Router.report_outcome>` (32
    lowercase hexadecimal digits, new for each decision); ``cache_hit`` says it came from
    the router's decision cache, ``usage`` how long routing and embedding took.

    The first seven fields can be given positionally in the order other UniRoute-style routers
    use (model, error, score, scores, cluster, cluster distribution, reasoning); everything
    else has a default. Each field is checked as the decision is built: a wrong type, or a
    number out of its range (a NaN, a negative cost, a confidence past 1), is an
    :class:`~switchpoint.errors.InvalidInputError` naming it.

    ``cluster_probabilities`` is the distribution over the policy's clusters (one-hot under
    hard assignment; ``None`` for policies with no small set of units); ``reasoning`` is a
    list of sentences (a single string is taken as one).

    The last fields say what governance did (all default to "nothing"): ``escalated`` when a
    low confidence changed the model (``always``) or asks to (``ask``), with the confidence
    before it and why; ``sla_compliant`` / ``sla_breaches`` / ``sla_adjustments`` for the
    service levels in force (breaches are what the first choice broke, adjustments what was
    done about it, compliance is the final choice's); ``budget_pressure`` when a budget nearing
    its limit raised λ (the fraction used, the budget, λ before and after); ``original_model``
    the model chosen before an SLA adjustment or an escalation replaced it ('' if none did).

    What learning did: ``source`` says who chose ``selected_model``: ``router`` (the scores,
    with what the tenant's outcomes taught), ``memory`` (the tenant's nearest-neighbour memory
    of its own outcomes) or ``exploration`` (a share of decisions sent to another candidate so
    outcomes teach about it); ``memory_fallback`` why a tenant memory left the choice to the
    router (``cold_start``, ``sparse_neighbourhood``, ``low_confidence``, ``tool_request``; ''
    when it chose, or when the tenant has none); ``experiment`` and ``arm`` the experiment the
    request was assigned to ('' when none).

    ``prompt_hash`` is the SHA-256 of the text the router routed on (for chat messages, the
    text it embedded), as 64 lowercase hexadecimal digits (:func:`hash_prompt`): the same
    prompt gives the same hash, and an outcome may name the decision by it
    (``Router.report_outcome``); '' for a decision routed from an embedding alone. The library
    keeps it (``to_dict()`` with no field list gives it), and the service's routing answer
    carries it when it is not ''.
    """

    selected_model: str
    expected_error: float
    cost_adjusted_score: float
    all_scores: dict[str, float]
    cluster_id: int
    cluster_probabilities: npt.NDArray[np.float64] | None = None
    reasoning: list[str] = field(default_factory=list)
    cache_hit: bool = False
    usage: Usage = field(default_factory=Usage)
    expected_cost: float = 0.0
    cost_weight: float = 0.0
    confidence: float = 0.0
    fallback_models: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    policy: str = ""
    basis: str = ""
    expected_errors: dict[str, float] = field(default_factory=dict)
    expected_costs: dict[str, float] = field(default_factory=dict)
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    escalated: bool = False
    original_confidence: float = 0.0
    escalation_reason: str = ""
    sla_compliant: bool = True
    sla_breaches: list[str] = field(default_factory=list)
    sla_adjustments: list[str] = field(default_factory=list)
    budget_pressure: dict[str, Any] | None = None
    original_model: str = ""
    source: str = "router"
    memory_fallback: str = ""
    experiment: str = ""
    arm: str = ""
    prompt_hash: str = ""

    @property
    def ab_variant(self) -> str:
        """The arm of the experiment this decision was routed in (``"a"`` or ``"b"`` for an
        A/B test made by ``create_ab_test``, an arm's name for one of the config's), ``""``
        when it was routed in none: :attr:`arm`, read by the name tiered routers give it."""
        return self.arm

    @property
    def overrides_scores(self) -> bool:
        """The selected model is not the one the scores rank first: an escalation, exploration
        or a tenant's memory chose it deliberately (the gateway tries it first). Scores that
        tie rank in the order ``all_scores`` lists them (the router's choice first), so a
        model chosen over another of the same score overrides it too."""
        if not self.all_scores:
            return False
        position = {m: i for i, m in enumerate(self.all_scores)}
        first = min(self.all_scores, key=lambda m: (self.all_scores[m], position[m]))
        return self.selected_model != first

    def reselected(self, model: str, fallbacks: Sequence[str], note: str) -> RoutingDecision:
        """This decision with ``model``, one of its candidates, chosen instead: its expected
        error, score and cost are that model's, ``fallbacks`` follow it, ``note`` (why) ends
        the reasoning."""
        return replace(self, selected_model=model,
                       expected_error=self.expected_errors.get(model, self.expected_error),
                       cost_adjusted_score=self.all_scores[model],
                       expected_cost=self.expected_costs.get(model, self.expected_cost),
                       fallback_models=list(fallbacks), reasoning=[*self.reasoning, note])

    @property
    def escalation_changed_model(self) -> bool:
        """An escalation replaced the model the scores would pick (strategy ``always``)."""
        return self.escalated and self.overrides_scores

    @property
    def governed(self) -> dict[str, Any] | None:
        """What governance did to this decision (None: nothing), as logged."""
        if not (self.escalated or self.escalation_reason or self.sla_breaches
                or self.sla_adjustments or not self.sla_compliant or self.budget_pressure
                or self.original_model):
            return None
        return {"escalated": self.escalated, "original_confidence": self.original_confidence,
                "escalation_reason": self.escalation_reason,
                "sla_compliant": self.sla_compliant, "sla_breaches": list(self.sla_breaches),
                "sla_adjustments": list(self.sla_adjustments),
                "budget_pressure": self.budget_pressure,
                "original_model": self.original_model or None}

    def __post_init__(self) -> None:
        # Types and ranges alike: anything to_dict(), explain(), the JSON a decision is written
        # as or the gateway's order of candidates could not take is refused here, naming it.
        expect("selected_model", self.selected_model, str, "a model's name")
        self.expected_error = in_range("expected_error", self.expected_error, *ERROR)
        self.cost_adjusted_score = in_range("cost_adjusted_score", self.cost_adjusted_score,
                                            *SCORE)
        self.all_scores = _numbers_by_model("all_scores", self.all_scores, *SCORE)
        if type(self.cluster_id) is not int:
            expect("cluster_id", self.cluster_id, INTEGER, "an integer")
            self.cluster_id = int(self.cluster_id)  # (np.int64: no number json writes)
        if not 0 <= self.cluster_id <= MAX_UNIT:
            raise InvalidInputError("cluster_id", "must be the index of the policy's unit the "
                                                  "prompt fell in (its cluster, tier or "
                                                  "example), a whole number from 0 to "
                                                  f"{MAX_UNIT}, got "
                                                  f"{json_quoted(self.cluster_id)}")
        expect("reasoning", self.reasoning, (list, str), "a list of sentences (or one)")
        if isinstance(self.reasoning, str):
            self.reasoning = [self.reasoning]
        _strings("reasoning", self.reasoning, "sentences (or one)")
        expect("usage", self.usage, Usage, "a Usage")
        if self.cluster_probabilities is not None:
            self.cluster_probabilities = _distribution(self.cluster_probabilities)
        self.expected_cost = in_range("expected_cost", self.expected_cost, *COST)
        self.cost_weight = in_range("cost_weight", self.cost_weight, *LAMBDA)
        self.confidence = in_range("confidence", self.confidence, *RATE)
        self.original_confidence = in_range("original_confidence", self.original_confidence,
                                            *RATE)
        _strings("fallback_models", self.fallback_models, "model names")
        for name in self.fallback_models:
            if name not in self.all_scores:
                raise InvalidInputError("fallback_models", f"names {json_quoted(name)}, which "
                                        "all_scores does not score; a fallback is one of the "
                                        "candidates all_scores holds")
        _strings("evidence", self.evidence, "sentences")
        self.expected_errors = _numbers_by_model("expected_errors", self.expected_errors,
                                                 *ERROR)
        self.expected_costs = _numbers_by_model("expected_costs", self.expected_costs, *COST)
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if type(value) is not str:
                expect(name, value, str, "a string")
        for name in _FLAGS:
            value = getattr(self, name)
            if type(value) is not bool:
                expect(name, value, bool, "True or False")
        _strings("sla_breaches", self.sla_breaches, "sentences")
        _strings("sla_adjustments", self.sla_adjustments, "sentences")
        if self.budget_pressure is not None:
            self.budget_pressure = _check_pressure(self.budget_pressure)
        if self.prompt_hash and not (len(self.prompt_hash) == PROMPT_HASH_DIGITS
                                     and _ID_DIGITS.issuperset(self.prompt_hash)):
            check_id(self.prompt_hash, "prompt_hash")

    def __repr__(self) -> str:
        """Every field, as a dataclass shows them, each bounded (:func:`bounded_repr`): a
        dict, a list or the cluster distribution shows its first 12 entries and how many more
        there are, a text its first 200 characters, so a decision among 1,000 models (or one
        built with a megabyte of reasoning) is a few lines in a notebook, not hundreds of KB."""
        shown = ", ".join(f"{f.name}={bounded_repr(getattr(self, f.name))}"
                          for f in fields(self))
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        """Field by field, as a dataclass compares; the cluster distribution by its values (an
        array's ``==`` is elementwise, which no ``bool`` reads: a decision compared with its
        copy, pickled or deep-copied, raised NumPy's ValueError)."""
        import numpy as np

        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, RoutingDecision)
        mine, theirs = self.cluster_probabilities, other.cluster_probabilities
        if (mine is None) != (theirs is None) or (
                mine is not None and theirs is not None and not np.array_equal(mine, theirs)):
            return False
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self)
                   if f.name != "cluster_probabilities")

    def to_dict(self, fields: Sequence[str] | None = None, *,
                cost_unit: str = "usd") -> dict[str, Any]:
        """The decision as JSON-ready values: every field, or just ``fields`` (e.g.
        :data:`ROUTE_FIELDS`, the routing answer). The one serialiser of a decision: its
        costs are given as :func:`~switchpoint.catalog.cost_figure` gives a cost in
        ``cost_unit`` (``usd``: to the places every amount of dollars is kept to; ``weights``,
        a router whose catalog does not price every model: to ten significant digits, so a
        tiny cost in the weights' own units is not 0), while the decision itself keeps them
        exact. The router's unit is :func:`~switchpoint.catalog.cost_unit_of` its catalog."""
        out: dict[str, Any] = {}
        for name in fields or _FIELD_NAMES:
            value = getattr(self, name)
            if name == "expected_cost":
                value = cost_figure(value, cost_unit)
            elif name == "expected_costs":
                value = {model: cost_figure(cost, cost_unit) for model, cost in value.items()}
            elif name == "usage":
                value = {"routing_ms": value.routing_ms, "embedding_ms": value.embedding_ms}
            elif name == "cluster_probabilities":
                value = None if value is None else [round(float(p), 6) for p in value]
            elif isinstance(value, dict):
                value = dict(value)
            elif isinstance(value, list):
                value = list(value)
            out[name] = value
        return out

    def explain(self, *, cost_unit: str | None = None,
                bundled_weights: bool | None = None) -> str:
        """A plain-English account: model, basis, reasoning, cost, evidence, alternatives. The
        estimated cost is said to be in ``cost_unit`` (``usd`` or ``weights``: the router's
        unit, :func:`~switchpoint.catalog.cost_unit_of` its catalog, as ``switchpoint route
        --explain`` gives it); without it, which the decision alone cannot tell, the account
        names both and when each applies. ``bundled_weights`` says whether the router's
        weights are the bundled ones (whose units are US dollars) or not (one fitted on
        records of their own units), when known (see
        :func:`~switchpoint.catalog.weights_units_text`)."""
        units = cost_units_text(cost_unit, bundled_weights)
        lines = [f"Model selected: {self.selected_model} (confidence: {self.confidence:.0%})"]
        if self.escalated:
            lines.append(f"[Escalated from original confidence {self.original_confidence:.0%}: "
                         f"{self.escalation_reason}]")
        elif self.escalation_reason:
            lines.append(f"[Low confidence, logged only: {self.escalation_reason}]")
        lines.append(f"Basis: {self.basis or self.policy}")
        lines.append("Reasoning: " + " ".join(self.reasoning))
        # (US dollars only when the catalog prices every model: else the weights' own units,
        # which the decision does not name, so no dollar sign)
        lines.append(
            f"Estimated cost: {cost_text(self.expected_cost)} per request, {units} "
            f"(λ = {self.cost_weight:g}; score = expected error + "
            f"λ·normalised cost = {self.cost_adjusted_score:.4f})"
        )
        if self.evidence:
            lines.append("Evidence: " + "; ".join(self.evidence))
        alternatives = []
        base_cost = self.expected_cost or 1e-12
        for name in self.fallback_models[:4]:
            err = self.expected_errors.get(name, math.nan)
            ratio = self.expected_costs.get(name, math.nan) / base_cost
            delta = err - self.expected_error
            quality = "more accurate" if delta < 0 else "less accurate"
            # (a difference of error rates: 20% against 10% is 10 percentage points, not 10%)
            alternatives.append(
                f"{name} (score {self.all_scores[name]:.4f}, {quality} by "
                f"{abs(delta) * 100:.1f} percentage points, {ratio:.2g}x cost)"
            )
        lines.append("Alternatives considered: " + (", ".join(alternatives) or "none"))
        if self.budget_pressure:
            b = self.budget_pressure
            used = b.get("fraction_used")
            # (None: a budget shared with other callers, whose spend is not shown)
            state = "is filling" if used is None else f"is {used:.0%} used"
            lines.append(f"Budget: {b.get('budget')} {state}; λ "
                         f"raised from {b.get('base_cost_weight', 0):g} to "
                         f"{b.get('cost_weight', 0):g}")
        if self.sla_breaches or self.sla_adjustments or not self.sla_compliant:
            lines.append("SLA: " + ("compliant" if self.sla_compliant else "not compliant")
                         + (f"; breaches: {', '.join(self.sla_breaches)}"
                            if self.sla_breaches else "")
                         + (f"; adjustments: {', '.join(self.sla_adjustments)}"
                            if self.sla_adjustments else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class Choice:
    index: int
    scores: Array
    order: npt.NDArray[np.intp]
    confidence: float


def decision_scores(
    error: Array,
    cost: Array,
    candidates: npt.NDArray[np.bool_],
    cost_weight: float,
    cost_scale: float,
    *,
    stderr: Array | None = None,
    pessimism: float = 0.0,
) -> Array:
    """Every model's ``error + λ·cost/cost_scale`` (plus the pessimism term); same shape as
    ``error``. ``candidates`` (one row, or one per row) bounds the least stderr."""
    import numpy as np

    scale = cost_scale if cost_scale > 0 else 1.0
    scores = error + cost_weight * cost / scale
    if stderr is not None and pessimism > 0:
        mask = np.broadcast_to(candidates, np.shape(error))
        least = np.min(np.where(mask, stderr, np.inf), axis=-1, keepdims=True)
        least = np.where(np.isfinite(least), least, 0.0)
        scores = scores + pessimism * np.maximum(stderr - least, 0.0)
    return np.asarray(scores, dtype=np.float64)


def decide(
    error: Array,
    cost: Array,
    candidates: npt.NDArray[np.bool_],
    cost_weight: float,
    cost_scale: float,
    *,
    stderr: Array | None = None,
    pessimism: float = 0.0,
) -> npt.NDArray[np.int64]:
    """The decision rule over rows: for each row of ``(n, m)`` estimates, the candidate with the
    lowest score; scores within :data:`TIE_TOLERANCE` of the lowest are tied and go to the
    cheaper model, then to the lower index. ``candidates`` is ``(m,)`` or ``(n, m)``."""
    import numpy as np

    error = np.atleast_2d(error)
    cost = np.atleast_2d(cost)
    mask = np.broadcast_to(np.atleast_2d(candidates), error.shape)
    if not mask.any(axis=1).all():
        raise InvalidInputError("available_models", "no candidate model is left to choose from")
    scores = decision_scores(error, cost, mask, cost_weight, cost_scale,
                             stderr=None if stderr is None else np.atleast_2d(stderr),
                             pessimism=pessimism)
    return _lowest(scores, cost, mask)


def _lowest(scores: Array, cost: Array, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Per row, the candidate with the lowest score; ties go to the cheaper, then the lower
    index (``(n, m)`` arrays)."""
    import numpy as np

    masked = np.where(mask, scores, np.inf)
    best = masked.min(axis=1, keepdims=True)
    tied = mask & (masked <= best + TIE_TOLERANCE)
    return np.argmin(np.where(tied, cost, np.inf), axis=1).astype(np.int64)


def choose(
    error: Array,
    cost: Array,
    candidates: npt.NDArray[np.bool_],
    cost_weight: float,
    cost_scale: float,
    support: Array | None = None,
    *,
    stderr: Array | None = None,
    pessimism: float = 0.0,
) -> Choice:
    """One row of :func:`decide`, with every candidate's score and the candidates in order (the
    chosen one first, then by score, ties to the cheaper)."""
    import numpy as np

    if not candidates.any():
        raise InvalidInputError("available_models", "no candidate model is left to choose from")
    scores = decision_scores(error, cost, candidates, cost_weight, cost_scale, stderr=stderr,
                             pessimism=pessimism)
    best = int(_lowest(np.atleast_2d(scores), np.atleast_2d(cost),
                       np.atleast_2d(candidates))[0])
    masked = np.where(candidates, scores, np.inf)
    order = np.lexsort((np.arange(len(cost)), cost, masked))
    order = order[candidates[order]]
    order = np.concatenate([[best], order[order != best]]).astype(np.intp)
    return Choice(best, scores, order, _confidence(scores, error, support, order))


def _confidence(
    scores: Array, error: Array, support: Array | None, order: npt.NDArray[np.intp]
) -> float:
    """Chance the chosen model really scores below the runner-up, given how much evidence stands
    behind the two error estimates (a normal approximation to their sampling error)."""
    if len(order) < 2:
        return 1.0
    a, b = int(order[0]), int(order[1])
    margin = float(scores[b] - scores[a])
    if support is None:
        return 0.5 + 0.5 * math.tanh(margin * 10)
    var = 0.0
    for j in (a, b):
        p = min(max(float(error[j]), 0.02), 0.98)
        var += p * (1 - p) / (float(support[j]) + 1.0)
    z = margin / math.sqrt(var)
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def scores_dict(
    models: Sequence[str], scores: Array, order: npt.NDArray[np.intp]
) -> dict[str, float]:
    return {models[j]: round(float(scores[j]), 6) for j in order}


_FIELD_NAMES = tuple(f.name for f in fields(RoutingDecision))
# A decision's fields that hold one string, and those that hold a flag.
_TEXT_FIELDS = ("decision_id", "policy", "basis", "escalation_reason", "original_model",
                "source", "memory_fallback", "experiment", "arm", "prompt_hash")
_FLAGS = ("cache_hit", "escalated", "sla_compliant")


def _distribution(value: object) -> npt.NDArray[np.float64]:
    """``value`` (a decision's ``cluster_probabilities``) as a flat array of probabilities,
    each from 0 to 1, or an :class:`InvalidInputError` naming it."""
    import numpy as np

    field_name = "cluster_probabilities"
    what = "a list of numbers (a distribution over the clusters) or None"
    if type(value) is np.ndarray:
        probabilities: npt.NDArray[Any] | None = value
    else:
        expect(field_name, value, (np.ndarray, list, tuple), what)
        try:
            probabilities = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            probabilities = None
    if probabilities is None or probabilities.ndim != 1 or probabilities.dtype.kind not in "fiu":
        raise InvalidInputError(field_name, f"must be {what}, got a {type(value).__name__} "
                                            "that is not a flat list of numbers")
    values = probabilities.tolist()
    # (min and max pass a NaN by; the sum of values holding one is NaN, and not finite)
    if values and not (min(values) >= 0.0 and max(values) <= 1.0
                       and math.isfinite(sum(values))):
        for i, p in enumerate(values):
            in_range(f"{field_name}[{i}]", p, *RATE)
    return probabilities


def renewed(decision: RoutingDecision, **changes: Any) -> RoutingDecision:
    """A shallow copy of ``decision`` with ``changes``, not checked again: for a decision
    served once more as a new one (a cache hit's id, ``cache_hit`` and ``usage``, which the
    caller makes), so a hit does not pay for a second pass over what was checked as the
    decision was built (:func:`dataclasses.replace` checks every field anew)."""
    fresh = object.__new__(RoutingDecision)
    fresh.__dict__.update(decision.__dict__, **changes)
    return fresh


def _check_pressure(pressure: object) -> dict[str, Any]:
    """A decision's ``budget_pressure``: a dict whose ``fraction_used`` (None: a budget shared
    with other callers), ``base_cost_weight`` and ``cost_weight`` are what explain() shows;
    ``pressure`` itself when those are floats already, else a copy holding them as floats."""
    expect("budget_pressure", pressure, dict, "a dict (what a budget did to λ)")
    assert isinstance(pressure, dict)
    taken: dict[str, Any] = pressure
    used = pressure.get("fraction_used")
    numbers = [] if used is None else [("fraction_used", COST)]
    numbers += [(name, LAMBDA) for name in ("base_cost_weight", "cost_weight")
                if name in pressure]
    for name, bounds in numbers:
        number = in_range(f"budget_pressure[{json_quoted(name)}]", pressure[name], *bounds)
        if type(pressure[name]) is not float:
            if taken is pressure:
                taken = dict(pressure)
            taken[name] = number
    return taken


# How a decision's reasoning names the profiled model whose estimate a model without a profile
# (and without a profiled peer of its tier) borrows; a caller limited to some models is not
# told the name of one outside them (see :func:`without_prior_names`).
WEAKEST_PRIOR = "that of the weakest profiled model, {name} (none shares its tier)"
_WEAKEST_NAMED = re.compile(r"that of the weakest profiled model, (.+?) \(none shares its tier\)")
_WEAKEST_UNNAMED = "that of the weakest profiled model (none shares its tier)"


def without_prior_names(decision: RoutingDecision, shown: Callable[[str], bool]
                        ) -> RoutingDecision:
    """``decision`` with its reasoning naming no model ``shown`` rejects as the one a model
    without a profile borrows its estimate from (it says "the weakest profiled model" instead):
    for a caller limited to some models, who is told of no others."""
    def unnamed(match: re.Match[str]) -> str:
        return match.group(0) if shown(match.group(1)) else _WEAKEST_UNNAMED

    reasoning = [_WEAKEST_NAMED.sub(unnamed, line) for line in decision.reasoning]
    if reasoning == decision.reasoning:
        return decision
    return replace(decision, reasoning=reasoning)
