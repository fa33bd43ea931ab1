"""Rule-based complexity tiers: prompt length, keywords, code and structure.

Every prompt is put in one of five tiers, ``trivial`` < ``simple`` < ``moderate`` < ``complex`` <
``expert``. The starting point is the prompt's length in characters (``<= 50`` trivial, up to 200
simple, up to 1,000 moderate, up to 3,000 complex, longer expert). Three kinds of signal can then
move it one tier up or down:

* keywords: distinct tier keywords (``"hello"``, ``"translate"``, ``"architecture"``,
  ``"theorem"``...). Moderate, complex and expert keywords above the length tier vote up;
  trivial and simple ones (greetings, look-ups) below it vote down, whichever are more;
* code: fenced or inline code, or at least two code-like patterns (``def f(``, ``=>``, ``;`` at
  line ends, ``#include``...), lifts a short prompt;
* structure: numbered steps, bullet lists, several questions, paragraphs, headings, enumerating
  words (``first``, ``finally``...) and stated requirements add up to a structural score; a score
  of 3 or more lifts the prompt.

Up and down votes are netted; the tier moves at most one step. :func:`classify_tier` returns the
tier, a confidence in ``[0, 1]`` (high when the length is far from a band edge and the signals do
not disagree), the raw signals and human-readable evidence.

:class:`TiersPolicy` classifies the training prompts with these rules and measures each model's
mean error and cost per tier in a :class:`ProfileTable`. Each tier's numbers are shrunk toward the
model's global mean with ``prior_strength``: ``(n·mean + s·global) / (n + s)``, so a tier without
examples reads exactly the global mean and reports support 0. The rules themselves are fixed, so
adding a model only needs its labelled prompts to be classified and aggregated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from switchpoint._messages import json_quoted, listed_names
from switchpoint.policies.base import (
    Array,
    Estimates,
    Inputs,
    PolicyState,
    ProfileTable,
    TablePolicy,
    check_number,
    check_training_arrays,
)

TIER_NAMES: tuple[str, ...] = ("trivial", "simple", "moderate", "complex", "expert")

#: Upper character bound (inclusive) of every tier but the last.
LENGTH_BOUNDS: tuple[int, ...] = (50, 200, 1000, 3000)

_KEYWORDS: dict[str, tuple[str, ...]] = {
    "trivial": (
        "hi", "hello", "hey", "thanks", "thank you", "thx", "bye", "good morning",
        "good night", "how are you", "what time", "lol",
    ),
    "simple": (
        "what is", "who is", "who was", "when did", "where is", "define", "definition",
        "meaning of", "translate", "spell", "synonym", "synonyms", "capital of", "convert",
        "summarize", "summarise", "rephrase", "rewrite", "fix typo", "example of",
        "how many", "tldr",
    ),
    "moderate": (
        "explain", "compare", "difference between", "how to", "how do i", "how does",
        "write a function", "implement", "script", "debug", "describe", "pros and cons",
        "step by step", "walk me through", "essay", "review", "outline", "calculate", "solve",
        "regex", "query", "unit test", "unit tests",
    ),
    "complex": (
        "architecture", "architect", "design", "distributed", "scalable", "scalability",
        "microservice", "microservices", "optimize", "optimise", "optimization", "algorithm",
        "concurrency", "concurrent", "refactor", "security", "rate limiter", "database schema",
        "trade-off", "trade-offs", "tradeoff", "tradeoffs", "pipeline", "performance",
        "asynchronous", "kubernetes", "analyze", "analyse", "analysis", "integrate",
        "migration", "infrastructure", "throughput", "latency", "multi-step", "strategy",
    ),
    "expert": (
        "prove", "proof", "theorem", "lemma", "formal verification", "research", "novel",
        "state of the art", "state-of-the-art", "derive", "derivation", "rigorous", "consensus",
        "byzantine", "compiler", "cryptographic", "cryptography", "quantum", "dissertation",
        "comprehensive", "end-to-end", "production-grade", "fault-tolerant", "lock-free",
        "formally", "asymptotic", "np-hard",
    ),
}

# Keywords are matched on ASCII word tokens (bytes, for speed): single words by set
# intersection, phrases only when their first word occurs.
_SINGLE_WORD: dict[bytes, int] = {}
_PHRASES_BY_FIRST: dict[bytes, list[tuple[bytes, int]]] = {}
for _t, (_tier, _words) in enumerate(_KEYWORDS.items()):
    assert _tier == TIER_NAMES[_t]
    for _w in _words:
        _b = _w.encode()
        if b" " in _b:
            _PHRASES_BY_FIRST.setdefault(_b.split()[0], []).append((b" " + _b + b" ", _t))
        else:
            _SINGLE_WORD[_b] = _t
_SINGLE_KEYS = frozenset(_SINGLE_WORD)
_PHRASE_FIRST = frozenset(_PHRASES_BY_FIRST)

_ENUMERATORS = frozenset(w.encode() for w in (
    "first", "firstly", "second", "secondly", "third", "then", "next", "finally",
    "additionally", "also", "furthermore", "moreover", "lastly",
))
_REQUIREMENTS = frozenset(w.encode() for w in (
    "must", "should", "ensure", "requirement", "requirements", "constraint", "constraints",
    "handle", "support",
))
# Word-triggered code patterns: each regex starts with its literal trigger (fast prefix search)
# and only runs when the trigger word occurs in the prompt.
_CODE_PATTERNS: dict[bytes, re.Pattern[str]] = {
    w.encode(): re.compile(pattern)
    for w, pattern in {
        "def": r"def[ \t]+\w+[ \t]*\(",
        "fn": r"fn[ \t]+\w+[ \t]*\(",
        "func": r"func[ \t]+\w+[ \t]*\(",
        "function": r"function[ \t]*\w*[ \t]*\(",
        "class": r"class[ \t]+\w+[ \t]*[:({]",
        "import": r"import[ \t]+[\w.]+[ \t]*(?:;|\n|\Z| as )",
        "from": r"from[ \t]+[\w.]+[ \t]+import\b",
        "using": r"using[ \t]+[\w.]+;",
        "package": r"package[ \t]+[\w.]+[ \t]*(?:;|\n)",
        "const": r"const[ \t]+\w+[ \t]*=",
        "let": r"let[ \t]+\w+[ \t]*=",
        "var": r"var[ \t]+\w+[ \t]*=",
        "select": r"SELECT[ \t][^\n]*\bFROM\b",
        "insert": r"INSERT[ \t]+INTO\b",
        "update": r"UPDATE[ \t]+\w+[ \t]+SET\b",
        "print": r"print[ \t]*\(",
        "printf": r"printf[ \t]*\(",
        "println": r"println[ \t]*\(",
        "console": r"console\.log[ \t]*\(",
        "include": r"#include[ \t]*[<\"]",
    }.items()
}
_CODE_WORDS = frozenset(_CODE_PATTERNS)

# Bytes -> lower-case ASCII letters, digits, '-' and '\''; everything else becomes a space.
_WORD_TABLE = bytes(
    (c + 32 if 65 <= c <= 90 else c)
    if (97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c in b"-'") else 32
    for c in range(256)
)
_INLINE_CODE_RE = re.compile(r"`[^`\n]{1,80}`")
_OPERATOR_RE = re.compile(r"=>|::|\+\+|&&|\|\||!=|==|:=|->")
_TERMINATOR_RE = re.compile(r";[ \t]*$", re.MULTILINE)
# Line-start patterns begin with a literal newline (matched against "\n" + text) rather than
# ``^`` with MULTILINE, which is several times slower in ``re``.
_CALL_BLOCK_RE = re.compile(r"\)[ \t]*\n?[ \t]*[{;]")
_CLOSING_BRACE_RE = re.compile(r"\n[ \t]*\}")
_TAG_RE = re.compile(r"</?[a-zA-Z][\w-]*(?:\s[^<>\n]*)?/?>")
_NUMBERED_RE = re.compile(r"\n[ \t]*(?:\d{1,2}[.)]|[Ss]tep[ \t]+\d)")
_BULLET_RE = re.compile(r"\n[ \t]*[-*•+][ \t]+\S")
_HEADING_RE = re.compile(r"\n[ \t]*#{1,6}[ \t]+\S")


@dataclass(frozen=True)
class TierClassification:
    """The tier of one prompt, how sure the rules are, and why.

    ``signals`` holds ``length``, ``keyword_matches`` (distinct matches per tier),
    ``has_code``, ``code_indicators``, ``structural_complexity`` and ``base_tier`` (the tier
    from length alone); ``evidence`` is a list of human-readable reasons.
    """

    tier: str
    index: int
    confidence: float
    signals: dict[str, Any]
    evidence: list[str]


def _length_tier(length: int) -> int:
    for i, bound in enumerate(LENGTH_BOUNDS):
        if length <= bound:
            return i
    return len(LENGTH_BOUNDS)


def _structure(text: str, words: set[bytes]) -> tuple[int, list[str]]:
    score = 0
    parts: list[str] = []
    multiline = "\n" in text
    lined = "\n" + text
    numbered = len(_NUMBERED_RE.findall(lined)) if multiline else 0
    if numbered >= 2:
        score += 1 if numbered < 4 else 2
        parts.append(f"{numbered} numbered steps")
    bullets = len(_BULLET_RE.findall(lined)) if multiline else 0
    if bullets >= 2:
        score += 1 if bullets < 5 else 2
        parts.append(f"{bullets} bullet points")
    questions = text.count("?")
    if questions >= 2:
        score += 1 if questions < 4 else 2
        parts.append(f"{questions} questions")
    paragraphs = text.count("\n\n") if multiline else 0
    if paragraphs >= 2:
        score += 1
        parts.append(f"{paragraphs + 1} paragraphs")
    if multiline and "#" in text:
        headings = len(_HEADING_RE.findall(lined))
        if headings >= 2:
            score += 1
            parts.append(f"{headings} headings")
    enumerators = len(words & _ENUMERATORS)
    if enumerators >= 2:
        score += 1
        parts.append(f"{enumerators} enumerating words")
    requirements = len(words & _REQUIREMENTS)
    if requirements >= 2:
        score += 1
        parts.append(f"{requirements} stated requirements")
    return score, parts


#: The keywords a line of evidence names (a decision's reasoning reaches a response header).
_KEYWORDS_SHOWN = 4


def _keywords(words: list[str]) -> str:
    return listed_names(words, _KEYWORDS_SHOWN, quoted=True)


def classify_tier(text: str) -> TierClassification:
    """Classify one prompt into a complexity tier (see the module docstring for the rules)."""
    length = len(text)
    base = _length_tier(length)
    tokens = text.encode("utf-8", "replace").translate(_WORD_TABLE).split()
    words = set(tokens)

    # Keywords: distinct matches per tier.
    matched: list[list[str]] = [[] for _ in TIER_NAMES]
    for w in sorted(words & _SINGLE_KEYS):
        matched[_SINGLE_WORD[w]].append(w.decode())
    firsts = words & _PHRASE_FIRST
    if firsts:
        joined = b" " + b" ".join(tokens) + b" "
        for first in sorted(firsts):
            for padded, t in _PHRASES_BY_FIRST[first]:
                if padded in joined:
                    matched[t].append(padded.decode().strip())
    keyword_matches = {name: len(matched[i]) for i, name in enumerate(TIER_NAMES)}

    # Code: cheap membership tests gate every regex.
    fences = text.count("```") + text.count("~~~")
    inline = len(_INLINE_CODE_RE.findall(text)) if "`" in text else 0
    code_indicators = fences // 2 + inline + len(_OPERATOR_RE.findall(text))
    if ";" in text:
        code_indicators += len(_TERMINATOR_RE.findall(text))
    if ")" in text:
        code_indicators += len(_CALL_BLOCK_RE.findall(text))
    if "}" in text:
        code_indicators += len(_CLOSING_BRACE_RE.findall("\n" + text))
    if "<" in text and ">" in text:
        code_indicators += len(_TAG_RE.findall(text))
    for w in words & _CODE_WORDS:
        code_indicators += len(_CODE_PATTERNS[w].findall(text))
    has_code = fences >= 1 or inline >= 1 or code_indicators >= 2

    structural, structure_parts = _structure(text, words)

    evidence = [f"Input length {length:,} chars → the range of tier "
                f"{json_quoted(TIER_NAMES[base])}"]
    up: list[str] = []
    down: list[str] = []
    # Trivial and simple keywords (greetings, lookups) can only lower a tier; moderate and
    # harder ones can only raise it.
    higher = [w for t in range(max(base + 1, 2), len(TIER_NAMES)) for w in matched[t]]
    lower_kw = [w for t in range(min(base, 2)) for w in matched[t]]
    same = matched[base]
    for t, found in enumerate(matched):
        if found:
            evidence.append(f"tier {json_quoted(TIER_NAMES[t])} keywords: {_keywords(found)}")
    if higher and len(higher) > len(lower_kw):
        up.append(f"keywords of higher tiers: {_keywords(higher)}")
    elif lower_kw and len(lower_kw) > len(higher):
        down.append(f"keywords of lower tiers: {_keywords(lower_kw)}")
    if has_code:
        what = f"code detected ({code_indicators} indicators)"
        if base < 3:
            up.append(what)
        else:
            evidence.append(what)
    if structural >= 3:
        up.append(f"structural complexity {structural} ({', '.join(structure_parts)})")
    elif structural > 0:
        evidence.append(f"structural complexity {structural} ({', '.join(structure_parts)})")

    net = len(up) - len(down)
    shift = 0
    if net > 0 and base < len(TIER_NAMES) - 1:
        shift = 1
    elif net < 0 and base > 0:
        shift = -1
    index = base + shift

    for reason in up:
        evidence.append(f"↑ {reason}")
    for reason in down:
        evidence.append(f"↓ {reason}")
    if shift:
        verb = "raised" if shift > 0 else "lowered"
        evidence.append(f"tier {verb} from {json_quoted(TIER_NAMES[base])} to "
                        f"{json_quoted(TIER_NAMES[index])}")

    # Confidence: far from a length boundary and no disagreement -> high.
    distance = min(abs(math.log(max(length, 1)) - math.log(b)) for b in LENGTH_BOUNDS)
    margin = min(1.0, distance / math.log(2.0))
    if shift == 0:
        confidence = 0.45 + 0.35 * margin
        # Signals that agree with the tier, or push past the end of the scale, support it.
        if (not up and not down and same) or net != 0:
            confidence += 0.1
    else:
        # A move is more credible when the length was close to the band edge anyway.
        confidence = 0.45 + 0.1 * min(abs(net), 3) + 0.1 * (1.0 - margin)
    confidence -= 0.1 * min(len(up), len(down))
    confidence = float(min(0.95, max(0.05, confidence)))

    signals: dict[str, Any] = {
        "length": length,
        "keyword_matches": keyword_matches,
        "has_code": has_code,
        "code_indicators": code_indicators,
        "structural_complexity": structural,
        "base_tier": TIER_NAMES[base],
    }
    return TierClassification(
        tier=TIER_NAMES[index], index=index, confidence=confidence, signals=signals,
        evidence=evidence,
    )


def _onehot(ids: list[int] | np.ndarray[Any, Any], n_units: int) -> Array:
    idx = np.asarray(ids, dtype=np.int64)
    out = np.zeros((len(idx), n_units))
    out[np.arange(len(idx)), idx] = 1.0
    return out


class TiersPolicy(TablePolicy):
    """Route by rule-based complexity tier; per-tier model profiles shrunk to global means."""

    name = "tiers"
    requires = "text"
    unit_kind = "tier"

    def __init__(self, prior_strength: float = 10.0) -> None:
        self.prior_strength = prior_strength

    def validate_params(self) -> None:
        check_number("prior_strength", self.prior_strength)

    @property
    def n_units(self) -> int:
        return len(TIER_NAMES)

    # Fitting ---------------------------------------------------------------------------------

    def _texts(self, inputs: Inputs) -> list[str]:
        inputs.require("text", self.name)
        assert inputs.texts is not None
        return inputs.texts

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        self.validate_params()
        texts = self._texts(inputs)
        scores, costs = check_training_arrays(scores, costs, models, len(texts))
        ids = [classify_tier(t).index for t in texts]
        weights = _onehot(ids, self.n_units)
        self.table_ = ProfileTable.from_assignments(
            weights, scores, costs, list(models),
        )
        self.models_ = list(models)
        self.kept_ = {}
        self._refresh()
        return self

    # Estimating ------------------------------------------------------------------------------

    def _estimate(self, inputs: Inputs) -> Estimates:
        self._check_fitted()
        texts = self._texts(inputs)
        results = [classify_tier(t) for t in texts]
        ids = np.array([r.index for r in results], dtype=np.int64)
        notes: list[str] = []
        if len(results) == 1:
            r = results[0]
            notes = [f"tier {json_quoted(r.tier)} (confidence {r.confidence:.2f})", *r.evidence]
        return Estimates(
            models=list(self.models_),
            error=self.error_[ids].reshape(len(ids), len(self.models_)),
            cost=self.cost_[ids].reshape(len(ids), len(self.models_)),
            support=self.table_.count[ids].reshape(len(ids), len(self.models_)),
            unit_ids=ids,
            unit_kind=self.unit_kind,
            unit_probabilities=None,
            notes=notes,
        )

    def describe_unit(self, unit_id: int) -> str:
        return f"tier {json_quoted(TIER_NAMES[unit_id])}"

    def _unit_weights(self, inputs: Inputs) -> Array:
        return _onehot([classify_tier(t).index for t in self._texts(inputs)], self.n_units)

    # Persistence -----------------------------------------------------------------------------

    def get_state(self) -> PolicyState:
        self._check_fitted()
        return PolicyState(
            name=self.name,
            params=self.get_params(),
            arrays={},
            profiles=self._profiles(),
            meta={"tiers": list(TIER_NAMES)},
        )

    @classmethod
    def from_state(cls, state: PolicyState) -> Self:
        policy = cls(**state.params)
        models = list(state.profiles)
        if not models:
            raise ValueError("the tiers policy state has no model profiles")
        table = ProfileTable.from_profiles(models, state.profiles)
        if table.n_units != len(TIER_NAMES):
            raise ValueError(f"profiles have {table.n_units} tiers; expected {len(TIER_NAMES)}")
        policy.table_ = table
        policy.models_ = models
        policy._read_kept(state.profiles)
        policy._refresh()
        return policy
