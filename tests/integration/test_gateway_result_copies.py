"""What the in-process gateway returns can be pickled (a ``multiprocessing`` worker sends it
back so) and deep-copied, and the copy equals what it copies: a routing decision, the result
of an outcome reported, a run-time experiment. A real gateway on SQLite; nothing here calls a
model, so the catalog points at an address nothing is asked at."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from switchpoint import Gateway
from tests.integration.gateway_env import FACTORY, KEYS

NOWHERE = "http://127.0.0.1:19299/v1"  # never asked
COPIES: list[Callable[[Any], Any]] = [lambda v: pickle.loads(pickle.dumps(v)), copy.deepcopy]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir: Path = tmp_path_factory.mktemp("copies")
    config = {
        "models": [
            {"name": "good", "profile": "gpt-4-1106-preview", "base_url": NOWHERE,
             "input_per_mtok": 10, "output_per_mtok": 30, "context_window": 128000},
            {"name": "cheap", "profile": "gpt-3.5-turbo-1106", "base_url": NOWHERE,
             "input_per_mtok": 0.5, "output_per_mtok": 1.5, "context_window": 16000}],
        "data_dir": str(data_dir)}
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        yield gateway


@pytest.mark.parametrize("copied", COPIES, ids=["pickle", "deepcopy"])
def test_a_routing_decision_and_an_outcome_s_result_copy_and_equal_their_copies(
        local: Gateway, copied: Callable[[Any], Any]) -> None:
    """The result of an outcome held the store's writes it waited on (futures, holding a
    lock), and neither pickled nor deep-copied (TypeError: cannot pickle '_thread.RLock');
    a decision's copy did, but comparing the two raised NumPy's ValueError."""
    decision = local.route("Prove that the square root of 2 is irrational.")
    assert decision.cluster_probabilities is not None
    assert copied(decision) == decision
    result = local.report_outcome(decision.decision_id, 0.75)
    assert result.commits  # (kept in this process: the store wrote it)
    again = copied(result)
    assert again == result and again.commits == ()
    assert again.to_dict() == result.to_dict()
    assert (again.outcome.decision_id, again.outcome.quality) == (decision.decision_id, 0.75)


@pytest.mark.parametrize("copied", COPIES, ids=["pickle", "deepcopy"])
def test_a_run_time_experiment_copies_with_its_arms_read_only(
        local: Gateway, copied: Callable[[Any], Any]) -> None:
    """(Its arms, a read-only mapping, made it TypeError: cannot pickle 'mappingproxy'.)"""
    test = local.create_ab_test(f"copied-{len(local.experiment_reports())}", split=0.3)
    try:
        again = copied(test)
        assert again == test and dict(again.arms) == dict(test.arms)
        arms: Any = again.arms
        with pytest.raises(TypeError):
            arms["c"] = arms["a"]
        assert local.route("hi", ab_test=again).experiment == test.name
    finally:
        local.end_ab_test(test)


@pytest.mark.parametrize("copied", [*COPIES, copy.copy], ids=["pickle", "deepcopy", "copy"])
def test_the_gateway_itself_refuses_to_be_copied_saying_to_make_one_in_each_process(
        local: Gateway, copied: Callable[[Any], Any]) -> None:
    """(Pickling it raised "cannot pickle '_thread.lock' object", naming none of it; a
    shallow copy shared its loop, store and lock with the gateway it copied.)"""
    with pytest.raises(TypeError) as refused:
        copied(local)
    assert str(refused.value).startswith("cannot pickle or copy a Gateway")
    assert "make one in each process" in str(refused.value)
    assert local.route("Still serving?").selected_model
