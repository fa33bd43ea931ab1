"""Acceptance: outcomes move a router off a model that keeps failing, and the lesson survives a
rebuild from the replayed events (through JSON, as a store would keep them)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from switchpoint.learning import FeedbackEvent, InMemoryFeedbackLog
from switchpoint.policies import Inputs
from switchpoint.router import Router
from switchpoint.weights import WeightsPackage
from tests.fakes.two_kinds import math_prompt as _math
from tests.fakes.two_kinds import poem_prompt as _poem
from tests.fakes.two_kinds import two_kinds_package


@pytest.fixture
def package(fake_embedder) -> WeightsPackage:  # type: ignore[no-untyped-def]
    return two_kinds_package(fake_embedder)


def _router(package: WeightsPackage, fake_embedder, log=None) -> Router:  # type: ignore[no-untyped-def]
    return Router(package, embedder=fake_embedder, cost_weight=0.1, feedback_log=log)


def _fail_strong(router: Router, at_most: int, start: int = 1000) -> int:
    """Report quality 0 for every math decision while the router keeps choosing strong;
    returns how many it took to move it (or ``at_most`` if it never moved)."""
    for n in range(at_most):
        d = router.route(_math(start + n))
        if d.selected_model != "strong":
            return n
        result = router.report_outcome(d.decision_id, quality_score=0.0)
        assert result.model == "strong" and not result.replaced
    return at_most


def test_sixty_failures_move_the_router_to_the_runner_up(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    router = _router(package, fake_embedder)
    before = router.route(_math(5000))
    assert before.selected_model == "strong"
    assert before.fallback_models[0] == "runner"
    poem_before = router.route(_poem(5000)).selected_model

    taken = _fail_strong(router, 60)
    assert 10 < taken < 60  # the weights' 150 labels outweigh a few failures, not sixty
    after = router.route(_math(5002))
    assert after.selected_model == "runner"
    assert after.expected_errors["strong"] > before.expected_errors["strong"] + 0.08
    assert router.route(_poem(5002)).selected_model == poem_before  # other prompts unmoved
    # The weights themselves did not change; only the deployment's overlay did.
    assert router.policy.estimate(Inputs(embeddings=fake_embedder.embed([_math(5002)]))).error[
        0, 0] == pytest.approx(before.expected_errors["strong"], abs=1e-6)


def test_the_lesson_survives_a_rebuild_from_replayed_events(package, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    log = InMemoryFeedbackLog()
    router = _router(package, fake_embedder, log)
    taken = _fail_strong(router, 60)
    assert len(log) == taken
    probe = Inputs(embeddings=fake_embedder.embed([_math(7000), _poem(7000)]))
    learned = router.learner.policy_for("default")[0].estimate(probe)

    stored = [json.dumps(e.to_dict()) for e in log.replay()]  # what a store would keep
    rebuilt = _router(package, fake_embedder)
    assert rebuilt.route(_math(7000)).selected_model == "strong"  # fresh: nothing learned
    assert rebuilt.learner.replay(FeedbackEvent.from_dict(json.loads(s)) for s in stored) == taken
    again = rebuilt.learner.policy_for("default")[0].estimate(probe)
    np.testing.assert_array_equal(again.error, learned.error)
    np.testing.assert_array_equal(again.cost, learned.cost)
    assert rebuilt.route(_math(7001)).selected_model == "runner"
