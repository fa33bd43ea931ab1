"""Learned TF-IDF tiers: difficulty tiers learned from the labels, matched by words.

Training:

1. A small pure-numpy :class:`TfidfVectorizer` (lower-cased word and simple code tokens, a
   short stopword list, ``min_df``, at most ``max_features`` terms, sublinear tf, smoothed idf,
   l2-normalised rows) is fitted on the training prompts. Rows are kept sparse
   (:class:`SparseRows`), so fitting on thousands of prompts never builds a dense
   ``n × vocabulary`` matrix.
2. Each prompt's *difficulty* is its mean error across the models labelled on it. Prompts are
   split into ``n_tiers`` quantile bins of difficulty (ties stay together, so a bin can be
   empty) named ``trivial`` .. ``expert``. The tiers come from the data, not from heuristics.
3. Each tier's centroid is the normalised mean TF-IDF row of its prompts.

A prompt's tier distribution is ``softmax(cosine(prompt, centroids) / temperature)`` over the
non-empty tiers; ``unit_ids`` is its argmax and ``unit_probabilities`` the distribution. The
estimate is ``distribution @ profile``, where each tier's per-model error and cost are shrunk
toward the model's global mean with ``prior_strength``: ``(n·mean + s·global) / (n + s)``.

Why the profiles are built from the *soft* weights (not the one-hot argmax at fit time): the
estimate reads every tier in proportion to the prompt's distribution, so the profile of a tier
should be the average over training prompts weighted the same way. A training prompt then feeds
each tier exactly as much as a similar new prompt would read from it, which makes the estimate a
consistent similarity-weighted average rather than a mixture of hard-partition means the
classifier never actually produced. It also makes ``support`` an honest effective count: a tier
the classifier rarely commits to has little weight behind it and is shrunk harder toward the
global mean. The price is slightly flatter tier profiles when the distributions are broad;
``temperature`` controls how broad they are.

A new model is added by pushing its labelled prompts through the frozen vectorizer and
centroids and aggregating them with the same soft weights. The tiers themselves (difficulty
bins of the models present at fit time) are not recomputed when models are added or removed.
Difficulty tiers cannot separate topics on which models are *equally* hard but good at
different things; the tier only captures how hard a prompt is overall.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from switchpoint._messages import json_quoted, listed_names
from switchpoint.errors import InvalidInputError
from switchpoint.policies.base import (
    Array,
    Estimates,
    Inputs,
    PolicyState,
    ProfileTable,
    TablePolicy,
    check_int,
    check_number,
    check_training_arrays,
    nan_mean,
)

TIER_NAMES: tuple[str, ...] = ("trivial", "simple", "moderate", "complex", "expert")

STOPWORDS: frozenset[str] = frozenset((
    "a", "an", "the", "and", "or", "but", "if", "then", "of", "to", "in", "on", "at", "by", "for",
    "with", "from", "as", "is", "are", "was", "were", "be", "been", "being", "am", "it", "its",
    "this", "that", "these", "those", "i", "me", "my", "we", "our", "us", "you", "your", "he",
    "him", "his", "she", "her", "they", "them", "their", "what", "which", "who", "whom", "do",
    "does", "did", "doing", "have", "has", "had", "having", "not", "so", "than", "too", "very",
    "can", "will", "would", "could", "should", "just", "about", "into", "over", "also", "there",
    "here", "such", "any", "each", "all", "both", "some", "more", "most", "other", "only", "own",
    "same", "again", "once", "while", "where", "when", "why", "how",
))

_NUM = "<num>"
_TOKEN_RE = re.compile(
    r"[a-z_][a-z0-9_]*"                       # words and identifiers
    r"|\d+(?:\.\d+)?"                         # numbers (folded into one token)
    r"|==|!=|<=|>=|=>|->|::|&&|\|\||\+=|-="   # operators
    r"|</|/>|\(\)|\[\]|[{};=#$@<>]"          # brackets and sigils
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word and code tokens, stopwords dropped, numbers folded into ``<num>``."""
    out: list[str] = []
    for tok in _TOKEN_RE.findall(text.lower()):
        if tok[0].isdigit():
            out.append(_NUM)
        elif tok not in STOPWORDS:
            out.append(tok)
    return out


@dataclass(frozen=True)
class SparseRows:
    """Row-compressed sparse matrix (CSR): row ``i`` is ``data[indptr[i]:indptr[i+1]]`` at
    columns ``indices[indptr[i]:indptr[i+1]]``."""

    indptr: npt.NDArray[np.int64]
    indices: npt.NDArray[np.int64]
    data: npt.NDArray[np.float32]
    n_cols: int

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.indptr) - 1, self.n_cols)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row_ids(self) -> npt.NDArray[np.int64]:
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    def toarray(self) -> npt.NDArray[np.float32]:
        out = np.zeros(self.shape, dtype=np.float32)
        out[self.row_ids(), self.indices] = self.data
        return out

    def matmul(self, dense: npt.NDArray[Any]) -> Array:
        """``self @ dense`` for a dense ``(n_cols, k)`` matrix, as float64 ``(n_rows, k)``."""
        k = dense.shape[1]
        out = np.zeros((len(self), k))
        if self.data.size == 0:
            return out
        contrib = self.data.astype(np.float64)[:, None] * dense[self.indices].astype(np.float64)
        starts = self.indptr[:-1]
        nonempty = np.diff(self.indptr) > 0
        out[nonempty] = np.add.reduceat(contrib, starts[nonempty], axis=0)
        return out

    def column_sums_by_group(self, groups: npt.NDArray[np.int64], n_groups: int) -> Array:
        """Dense ``(n_groups, n_cols)`` sums of the rows in each group (group < 0 is skipped)."""
        row_group = groups[self.row_ids()]
        keep = row_group >= 0
        flat = row_group[keep] * self.n_cols + self.indices[keep]
        sums = np.bincount(
            flat, weights=self.data[keep].astype(np.float64), minlength=n_groups * self.n_cols
        )
        return np.asarray(sums, dtype=np.float64).reshape(n_groups, self.n_cols)


class TfidfVectorizer:
    """Minimal TF-IDF: ``(1 + log tf) · idf`` with ``idf = ln((1 + n) / (1 + df)) + 1``, rows
    l2-normalised. The vocabulary keeps the ``max_features`` terms with the highest document
    frequency among those seen in at least ``min_df`` documents, ordered alphabetically."""

    def __init__(
        self, max_features: int = 20000, min_df: int = 2, sublinear_tf: bool = True
    ) -> None:
        check_int("max_features", max_features, low=1)
        check_int("min_df", min_df, low=1)
        self.max_features = max_features
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf

    @classmethod
    def from_vocabulary(
        cls, terms: Sequence[str], idf: Array, max_features: int = 20000, min_df: int = 2,
        sublinear_tf: bool = True,
    ) -> TfidfVectorizer:
        if len(terms) != len(idf):
            raise ValueError(f"{len(terms)} terms but {len(idf)} idf weights")
        vec = cls(max_features=max_features, min_df=min_df, sublinear_tf=sublinear_tf)
        vec._set(list(terms), np.asarray(idf, dtype=np.float64))
        return vec

    def _set(self, terms: list[str], idf: Array) -> None:
        self.terms_ = terms
        self.vocabulary_ = {t: i for i, t in enumerate(terms)}
        self.idf_ = idf

    def fit(self, docs: Sequence[str]) -> Self:
        self._fit_tokens([tokenize(d) for d in docs])
        return self

    def fit_transform(self, docs: Sequence[str]) -> SparseRows:
        tokens = [tokenize(d) for d in docs]
        self._fit_tokens(tokens)
        return self._transform_tokens(tokens)

    def _fit_tokens(self, tokens: list[list[str]]) -> None:
        df: Counter[str] = Counter()
        for toks in tokens:
            df.update(set(toks))
        eligible = [(c, t) for t, c in df.items() if c >= self.min_df]
        if not eligible:
            raise InvalidInputError(
                "min_df",
                f"no term occurs in at least min_df={self.min_df} of the {len(tokens)} training "
                "prompts; lower min_df or train on more prompts",
            )
        eligible.sort(key=lambda ct: (-ct[0], ct[1]))
        terms = sorted(t for _, t in eligible[: self.max_features])
        n = len(tokens)
        counts = np.array([df[t] for t in terms], dtype=np.float64)
        self._set(terms, np.log((1.0 + n) / (1.0 + counts)) + 1.0)

    def transform(self, docs: Sequence[str]) -> SparseRows:
        if not hasattr(self, "vocabulary_"):
            raise ValueError("TfidfVectorizer is not fitted")
        return self._transform_tokens([tokenize(d) for d in docs])

    def _transform_tokens(self, tokens: list[list[str]]) -> SparseRows:
        vocab = self.vocabulary_
        indptr = np.zeros(len(tokens) + 1, dtype=np.int64)
        cols: list[int] = []
        tfs: list[int] = []
        for i, toks in enumerate(tokens):
            counts = Counter(t for t in toks if t in vocab)
            row = sorted((vocab[t], c) for t, c in counts.items())
            cols.extend(j for j, _ in row)
            tfs.extend(c for _, c in row)
            indptr[i + 1] = len(cols)
        indices = np.array(cols, dtype=np.int64)
        tf = np.array(tfs, dtype=np.float64)
        if self.sublinear_tf:
            tf = 1.0 + np.log(np.maximum(tf, 1.0))
        values = tf * self.idf_[indices]
        rows = np.repeat(np.arange(len(tokens), dtype=np.int64), np.diff(indptr))
        norms = np.sqrt(np.bincount(rows, weights=values**2, minlength=len(tokens)))
        values = values / norms[rows]  # every stored row has a positive norm (idf > 0, tf >= 1)
        return SparseRows(indptr, indices, values.astype(np.float32), len(self.terms_))


def tier_names(n_tiers: int) -> list[str]:
    """``trivial`` .. ``expert`` spread over ``n_tiers`` (2-5); ``level k`` beyond five."""
    if n_tiers > len(TIER_NAMES):
        return [f"level {k}" for k in range(n_tiers)]
    picks = np.round(np.linspace(0, len(TIER_NAMES) - 1, n_tiers)).astype(int)
    return [TIER_NAMES[int(p)] for p in picks]


def difficulty_tiers(difficulty: Array, n_tiers: int) -> npt.NDArray[np.int64]:
    """Quantile bins of ``difficulty`` (0 = easiest). Equal values share the bin of their mid-rank,
    so ties are never split (and some bins may stay empty)."""
    n = len(difficulty)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(difficulty, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mid = first + (counts - 1) / 2.0
    q = (mid[inverse.reshape(-1)] + 0.5) / n
    return np.minimum((q * n_tiers).astype(np.int64), n_tiers - 1)


def _softmax_masked(logits: Array, active: npt.NDArray[np.bool_]) -> Array:
    z = np.where(active[None, :], logits, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


class TfidfPolicy(TablePolicy):
    """Route by learned difficulty tier, recognised from TF-IDF similarity to tier centroids."""

    name = "tfidf"
    requires = "text"
    unit_kind = "tier"

    def __init__(
        self,
        n_tiers: int = 5,
        temperature: float = 0.05,
        prior_strength: float = 10.0,
        max_features: int = 20000,
        min_df: int = 2,
    ) -> None:
        self.n_tiers = n_tiers
        self.temperature = temperature
        self.prior_strength = prior_strength
        self.max_features = max_features
        self.min_df = min_df

    def validate_params(self) -> None:
        check_int("n_tiers", self.n_tiers, low=2, high=50)
        check_number("temperature", self.temperature, low=0.0, inclusive=False)
        check_number("prior_strength", self.prior_strength, low=0.0)
        check_int("max_features", self.max_features, low=1)
        check_int("min_df", self.min_df, low=1)

    @property
    def n_units(self) -> int:
        return self.n_tiers

    def _texts(self, inputs: Inputs) -> list[str]:
        inputs.require("text", self.name)
        assert inputs.texts is not None
        return inputs.texts

    # Fitting ---------------------------------------------------------------------------------

    def _fit(self, inputs: Inputs, scores: npt.ArrayLike, costs: npt.ArrayLike,
             models: list[str]) -> Self:
        self.validate_params()
        texts = self._texts(inputs)
        scores, costs = check_training_arrays(scores, costs, models, len(texts))
        vectorizer = TfidfVectorizer(self.max_features, self.min_df)
        x = vectorizer.fit_transform(texts)
        difficulty = nan_mean(1.0 - scores, axis=1)
        labelled = ~np.isnan(difficulty)
        tiers = np.full(len(texts), -1, dtype=np.int64)
        tiers[labelled] = difficulty_tiers(difficulty[labelled], self.n_tiers)
        sums = x.column_sums_by_group(tiers, self.n_tiers)
        norms = np.linalg.norm(sums, axis=1)
        self.tier_sizes_ = np.bincount(tiers[labelled], minlength=self.n_tiers).astype(np.int64)
        active = (self.tier_sizes_ > 0) & (norms > 0)
        if not active.any():
            raise InvalidInputError(
                "texts", "no labelled training prompt contains a vocabulary term; add data"
            )
        safe = np.where(norms > 0, norms, 1.0)
        self.centroids_ = (sums / safe[:, None]).astype(np.float32)
        # (an empty tier, of tier_sizes 0, has no mean difficulty: 0, as a weights package
        # holds finite numbers alone; NaN there made a package its own load refused)
        self.tier_difficulty_ = np.array([
            float(difficulty[tiers == t].mean()) if self.tier_sizes_[t] else 0.0
            for t in range(self.n_tiers)
        ])
        self.vectorizer_ = vectorizer
        self.active_ = active
        weights = self._distribution(x)
        self.table_ = ProfileTable.from_assignments(weights, scores, costs, list(models))
        self.models_ = list(models)
        self.kept_ = {}
        self._refresh()
        return self

    # Estimating ------------------------------------------------------------------------------

    def _distribution(self, x: SparseRows) -> Array:
        sims = x.matmul(self.centroids_.T)
        return _softmax_masked(sims / self.temperature, self.active_)

    def tier_distribution(self, texts: Sequence[str]) -> Array:
        """``(len(texts), n_tiers)`` probability of each learned tier."""
        self._check_fitted()
        return self._distribution(self.vectorizer_.transform(texts))

    def _estimate(self, inputs: Inputs) -> Estimates:
        self._check_fitted()
        texts = self._texts(inputs)
        x = self.vectorizer_.transform(texts)
        probs = self._distribution(x)
        ids = np.argmax(probs, axis=1).astype(np.int64)
        notes = self._notes(x, probs[0], int(ids[0])) if len(texts) == 1 else []
        return Estimates(
            models=list(self.models_),
            error=probs @ self.error_,
            cost=probs @ self.cost_,
            support=probs @ self.table_.count,
            unit_ids=ids,
            unit_kind=self.unit_kind,
            unit_probabilities=probs,
            notes=notes,
        )

    def _notes(self, x: SparseRows, probs: Array, tier: int) -> list[str]:
        names = tier_names(self.n_tiers)
        notes = [f"tier {json_quoted(names[tier])} with probability {probs[tier]:.2f}"]
        if x.data.size == 0:
            notes.append("no known terms in the prompt; the tier distribution is uniform")
            return notes
        contrib = x.data.astype(np.float64) * self.centroids_[tier, x.indices]
        order = np.argsort(-contrib, kind="stable")[:5]
        top = [self.vectorizer_.terms_[int(x.indices[i])] for i in order if contrib[i] > 0]
        if top:
            notes.append(f"terms closest to tier {json_quoted(names[tier])}: "
                         f"{listed_names(top, quoted=True)}")
        runner = sorted(range(self.n_tiers), key=lambda t: -probs[t])[1:3]
        others = [f"{json_quoted(names[t])} {probs[t]:.2f}" for t in runner if probs[t] > 0.01]
        if others:
            notes.append(f"other tiers: {', '.join(others)}")
        return notes

    def describe_unit(self, unit_id: int) -> str:
        return f"tier {json_quoted(tier_names(self.n_tiers)[unit_id])}"

    def _unit_weights(self, inputs: Inputs) -> Array:
        return self._distribution(self.vectorizer_.transform(self._texts(inputs)))

    # Persistence -----------------------------------------------------------------------------

    def get_state(self) -> PolicyState:
        self._check_fitted()
        return PolicyState(
            name=self.name,
            params=self.get_params(),
            arrays={
                "idf": self.vectorizer_.idf_,
                "centroids": self.centroids_,
                "tier_sizes": self.tier_sizes_,
                "tier_difficulty": self.tier_difficulty_,
            },
            profiles=self._profiles(),
            meta={"vocabulary": list(self.vectorizer_.terms_), "tiers": tier_names(self.n_tiers)},
        )

    @classmethod
    def from_state(cls, state: PolicyState) -> Self:
        policy = cls(**state.params)
        if "vocabulary" not in state.meta:
            raise ValueError("the tfidf policy state has no vocabulary in its meta")
        terms = state.meta["vocabulary"]
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise ValueError("its vocabulary must be a list of terms (strings)")
        idf = np.asarray(state.arrays["idf"], dtype=np.float64)
        policy.vectorizer_ = TfidfVectorizer.from_vocabulary(
            terms, idf, max_features=policy.max_features, min_df=policy.min_df
        )
        policy.centroids_ = np.asarray(state.arrays["centroids"], dtype=np.float32)
        policy.tier_sizes_ = np.asarray(state.arrays["tier_sizes"], dtype=np.int64)
        policy.tier_difficulty_ = np.asarray(state.arrays["tier_difficulty"], dtype=np.float64)
        if policy.centroids_.shape != (policy.n_tiers, len(terms)):
            raise ValueError(
                f"centroids have shape {policy.centroids_.shape}; expected "
                f"({policy.n_tiers}, {len(terms)})"
            )
        for name in ("tier_sizes", "tier_difficulty"):
            held = getattr(policy, f"{name}_").shape
            if held != (policy.n_tiers,):
                raise ValueError(f"{name} has shape {held}; expected ({policy.n_tiers},), one "
                                 "value per tier")
        if len(set(terms)) != len(terms):
            raise ValueError("the vocabulary names a term more than once")
        policy.active_ = (policy.tier_sizes_ > 0) & (np.linalg.norm(policy.centroids_, axis=1) > 0)
        if not policy.active_.any():
            raise ValueError("no tier holds prompts (no count of tier_sizes is above 0, or "
                             "each centroid is all zeros), so no prompt could be placed in one")
        models = list(state.profiles)
        if not models:
            raise ValueError("the tfidf policy state has no model profiles")
        table = ProfileTable.from_profiles(models, state.profiles)
        if table.n_units != policy.n_tiers:
            raise ValueError(f"profiles have {table.n_units} tiers; expected {policy.n_tiers}")
        policy.table_ = table
        policy.models_ = models
        policy._read_kept(state.profiles)
        policy._refresh()
        return policy
