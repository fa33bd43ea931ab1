"""Preference comparisons and their scores: a comparison kept for its scores with what they
will teach by (the prompt's vector and units, each answer's cost), in memory and in the store;
its scores checked whole, then each learned as one outcome per scored model, to the learned
router and the tenant's memory, logged as ``preference`` feedback; a blind comparison's
reveal. :class:`PreferenceScores` is the
:class:`~switchpoint.gateway.learning.GatewayLearning`'s, which answers ``new_compare``,
``score``, ``reveal`` and ``release`` with it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol

from switchpoint._messages import listed_names, quoted
from switchpoint.decision import check_id
from switchpoint.errors import ConflictError, InvalidInputError, PermissionDeniedError
from switchpoint.gateway.feedback_log import NOTHING_LEARNED, ServiceFeedbackLog
from switchpoint.gateway.feedback_rules import answer_cost
from switchpoint.gateway.kept import written
from switchpoint.gateway.learning_checkpoints import LearningCheckpoints
from switchpoint.gateway.live import Live, RouterState
from switchpoint.gateway.live_learning import LiveLearning
from switchpoint.gateway.open_decisions import PRUNE_EVERY
from switchpoint.gateway.preferences import REVEALED, Compare, Compares
from switchpoint.learning.events import FeedbackEvent, check_quality
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import ComparePrune, CompareReveal, LearningReader


class ScoresHost(Protocol):
    """What the preference scores read of their gateway's learning: the router state, the
    store and the feedback log, the check that the store takes writes, and the take-up of the
    log and the checkpoint due after what is learned."""

    state: RouterState
    store: SQLiteStore | None
    log: ServiceFeedbackLog
    checkpointer: LearningCheckpoints

    def check_writable(self, what: str, then: str = NOTHING_LEARNED) -> None: ...

    def _take_up(self, learning: LiveLearning, *, own: str | None = None,
                 most: int | None = None) -> None: ...


class PreferenceScores:
    """The comparisons of one gateway's learning (``host``'s), waiting for their scores
    (:attr:`compares`, bounded by ``max_compares`` and expiring after ``ttl_s``)."""

    def __init__(self, host: ScoresHost, max_compares: int, ttl_s: float) -> None:
        self._host = host
        self.state = host.state
        self.store = host.store
        self.log = host.log
        self.compares = Compares(max_compares, ttl_s, lookup=self._stored_compare)
        self._compare_writes = 0
        self._counter_lock = threading.Lock()

    @property
    def reader(self) -> LearningReader | None:
        return self.log.reader

    def new_compare(self, live: Live, tenant: str, labels: dict[str, str],
                    answers: Mapping[str, float | None], text: str, *, blind: bool = True,
                    details: Mapping[str, Mapping[str, Any]] | None = None
                    ) -> tuple[Compare, Future[None] | None]:
        """:meth:`GatewayLearning.new_compare
        <switchpoint.gateway.learning.GatewayLearning.new_compare>`."""
        learning = live.learning
        assert learning is not None
        vector, units = learning.outcome_inputs(text, tenant)
        router = live.router
        tokens = router.prompt_tokens(text)
        costs = {model: value for model, usd in answers.items()
                 if (value := answer_cost(router, model, usd, tokens)) is not None}
        now = time.time()
        compare = Compare(compare_id=uuid.uuid4().hex, tenant=tenant, labels=labels,
                          answered=frozenset(answers), embedding=vector, units=units,
                          weights_id=router.weights_id, created=now,
                          expires=now + self.compares.ttl_s, costs=costs, blind=blind,
                          details=dict(details or {}))
        self.compares.put(compare)
        if self.store is None:
            return compare, None
        with self._counter_lock:
            self._compare_writes += 1
            prune = self._compare_writes % PRUNE_EVERY == 0
        if prune:
            self.store.append_lazy(ComparePrune(self.compares.capacity, now))
        return compare, self.store.append(compare)

    def _stored_compare(self, compare_id: str) -> Compare | None:
        """A comparison made before a restart, from the store (if it is still among the
        newest ``max_compares``)."""
        if self.reader is None:
            return None
        found = self.reader.compare(compare_id, newest=self.compares.capacity)
        if found is not None:
            self.compares.put(found)
        return found

    def score(self, compare_id: object, scores: object, *, tenant: str,
              key_id: str | None = None, teachable: Callable[[str], None] | None = None
              ) -> tuple[Compare, list[dict[str, Any]], list[Future[None]]]:
        """:meth:`GatewayLearning.score
        <switchpoint.gateway.learning.GatewayLearning.score>`."""
        self._host.check_writable("the scores")
        compare = self.compares.get(check_id(compare_id, "compare_id"), tenant)
        if compare.blind and compare.revealed is not None:
            raise ConflictError(REVEALED, param="compare_id")
        if not isinstance(scores, Mapping) or not scores:
            raise InvalidInputError("scores", "give at least one score: {label or model: "
                                              "quality in [0, 1]}")
        # Every refusal below depends on what the caller sent, the comparison's labels and
        # models, and the key's models, never on which label is which model: an answer that
        # did would let a caller learn the blind labels by elimination.
        named: dict[str, str] = {}
        for key in scores:
            model = compare.model_of(key) if isinstance(key, str) else None
            if model is not None and key == model and teachable is not None:
                try:  # a model named that the caller may not use: as if unknown (blindness)
                    teachable(model)
                except PermissionDeniedError:
                    model = None
            if model is None:
                # (a key of another type is shown as quoted shows it: its own str may raise)
                shown = key[:50] if isinstance(key, str) else quoted(key, 50)
                raise InvalidInputError(f"scores.{shown}", f"is neither a label nor a "
                                        "model of this comparison "
                                        f"({listed_names(compare.labels, quoted=True)})")
            named[key] = model
        by_label = [key for key in named if key in compare.labels]
        if by_label and len(by_label) < len(named):
            raise InvalidInputError("scores", "key the scores by label or by model name, not "
                                              "both (labels: "
                                              f"{listed_names(compare.labels, quoted=True)})")
        chosen: dict[str, tuple[str, float]] = {}
        for key, value in scores.items():
            try:
                quality = check_quality(value, None)
            except InvalidInputError as exc:
                raise InvalidInputError(f"scores.{key}", exc.reason.replace(
                    "quality_score", "score")) from None
            chosen[named[key]] = (key, quality)
        if teachable is not None:
            self._check_teaches_all(compare, teachable)
        if compare.blind and not by_label:
            labels = listed_names(compare.labels, quoted=True)
            raise InvalidInputError("scores", "this comparison is blind: score its answers by "
                                              f"label ({labels}); a comparison made with blind: "
                                              "false takes model names")
        for model, (key, _) in chosen.items():
            if model not in compare.answered:
                raise InvalidInputError(f"scores.{key}", f"{key} did not answer (its call "
                                                         "failed), so it cannot be scored")
        if compare.blind:  # one score: held until the caller reveals (or releases) it
            self.compares.claim(compare)
        try:
            return self._learn_scores(compare, chosen, tenant, key_id)
        except BaseException:
            self.compares.release(compare)
            raise

    def _learn_scores(self, compare: Compare, chosen: Mapping[str, tuple[str, float]],
                      tenant: str, key_id: str | None
                      ) -> tuple[Compare, list[dict[str, Any]], list[Future[None]]]:
        """:meth:`score`'s learning, once every check passed."""
        label_of = {m: label for label, m in compare.labels.items()}
        out: list[dict[str, Any]] = []
        commits: list[Future[None]] = []
        with self.state.guard:
            learning: LiveLearning | None = self.state.live().learning
            assert learning is not None
            router = learning.router
            for model, (key, _) in chosen.items():
                self.log.check_repeats(f"{compare.compare_id}:{model}", tenant,
                                       f"the answer {key}", param=f"scores.{key}")
            for model, (_, quality) in chosen.items():
                profile = (router.outcome_profile(model) or model) if model in router.models \
                    else model
                event = FeedbackEvent(
                    decision_id=f"{compare.compare_id}:{model}", model=profile, quality=quality,
                    tenant=tenant,
                    embedding=tuple(compare.embedding.reshape(-1).tolist()),
                    units=compare.units, served=model if model != profile else None,
                    measured_cost=compare.costs.get(model))
                commit = self.log.append(event, "preference", weights_id=compare.weights_id,
                                         key_id=key_id)
                commits.append(commit)
                kept = [str(o["label"]) for o in out]
                self.log.keep(commit, f"the score of {label_of[model]}" + (
                    f" (after {', '.join(kept)}, kept and learned)" if kept else ""))
                self._host._take_up(learning, own=event.event_id)  # what the log holds before it
                applied = learning.learn(event, compare.weights_id)
                out.append({"label": label_of[model], "model": model, "quality": quality,
                            "replaced": applied.previous is not None,
                            "previous_quality": applied.previous,
                            "teaches_routing": applied.routers > 0,
                            "teaches_memory": applied.memory})
            self._host.checkpointer.when_due(learning)
        return compare, out, commits

    def reveal(self, compare: Compare) -> Compare:
        """:meth:`GatewayLearning.reveal
        <switchpoint.gateway.learning.GatewayLearning.reveal>`."""
        now = time.time()
        written(self.store, CompareReveal(compare.compare_id, now), "the comparison's reveal",
                "the scores were kept and learned, and the models are not revealed: send the "
                "scores again")
        return self.compares.reveal(compare, now)

    def release(self, compare: Compare) -> None:
        """:meth:`GatewayLearning.release
        <switchpoint.gateway.learning.GatewayLearning.release>`."""
        self.compares.release(compare)

    @staticmethod
    def _check_teaches_all(compare: Compare, teachable: Callable[[str], None]) -> None:
        """403 unless the caller may teach about every model of the comparison: scoring some
        of its answers (or being refused some) would tell a caller that may not use them all
        which label is which model."""
        try:
            for model in compare.labels.values():
                teachable(model)
        except PermissionDeniedError as exc:
            raise PermissionDeniedError(
                f"scores: {exc.message}; a key scores a comparison only when it may use every "
                "compared model (what it was refused would tell the blind labels apart): "
                "score with such a key", param="scores") from None
