"""A Router pickles, for a ``multiprocessing`` worker: the copy routes as the original did, with
what it learned; its locks, its embedder's ONNX session and its decision cache are made anew.
A router tied to this process (a feedback log, a TenantRouter, a gateway) refuses, saying
what cannot travel and to build the router in each process. A child of ``os.fork()`` makes its
locks anew too, so one held by another thread as the process forked does not hang it."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from switchpoint import Router, load_router, load_weights
from switchpoint.embedding import MiniLMEmbedder
from switchpoint.gateway import Gateway
from switchpoint.learning import InMemoryFeedbackLog
from switchpoint.learning.tenant_router import TenantRouter
from tests.conftest import FakeEmbedder, RouterFactory
from tests.integration.gateway_env import FACTORY

PROMPTS = ["Prove that the square root of 2 is irrational.", "Write a haiku about rain.",
           "What is the capital of France?", "Implement quicksort in Rust with generics.",
           "Summarise the causes of the First World War in three bullet points.",
           "Translate 'good morning' into Japanese."]
BUILD_IN_EACH = ("build the router in each process instead (e.g. load_router(...) in a "
                 "multiprocessing Pool's initializer)")


def _route_all(router: Router, prompts: list[str]) -> list[str]:
    """What a pool worker does with the router it was sent (module level: spawn imports it)."""
    return [router.route(p).selected_model for p in prompts]


def test_a_copy_of_a_router_with_minilm_routes_the_same_prompts_to_the_same_models(
        real_weights_dir: Path) -> None:
    embedder = MiniLMEmbedder()
    router = Router(load_weights(real_weights_dir), embedder=embedder, cost_weight=0.3)
    chosen = _route_all(router, PROMPTS)
    assert embedder._session is not None  # loaded: it is left behind, not pickled
    copy = pickle.loads(pickle.dumps(router))
    inner = copy.embedder.inner
    assert isinstance(inner, MiniLMEmbedder) and inner is not embedder
    assert inner._session is None and len(copy.cache) == 0  # made anew, lazily
    assert copy.cost_weight == 0.3 and copy.stats.total_requests == len(PROMPTS)
    assert _route_all(copy, PROMPTS) == chosen  # (their vectors travelled in its cache)
    fresh = ["How do vaccines train the immune system?", "Write a limerick about a cat."]
    assert _route_all(copy, fresh) == _route_all(router, fresh)
    assert inner._session is not None and inner._session is not embedder._session
    assert copy.embedder.embed(fresh).tolist() == router.embedder.embed(fresh).tolist()


def test_a_copy_keeps_what_the_router_learned(make_router: RouterFactory) -> None:
    # (the embedder's class by its importable name: pytest registers each directory's
    # conftest.py as the module "conftest" in turn, so the fixture's class may not be found)
    router = make_router(embedder=FakeEmbedder())
    for i in range(12):
        decision = router.route(f"{PROMPTS[i % len(PROMPTS)]} ({i})", tenant="acme")
        router.report_outcome(decision.decision_id, 0.05 if i % 2 else 0.95, tenant="acme")
    pending = router.route(PROMPTS[0], tenant="acme")
    router.cache.clear()
    chosen = [router.route(p, tenant="acme").selected_model for p in PROMPTS]
    copy = pickle.loads(pickle.dumps(router))
    assert copy.learner.n_events("acme") == router.learner.n_events("acme") == 12
    assert [copy.route(p, tenant="acme").selected_model for p in PROMPTS] == chosen
    # Its locks are its own, and the decision remembered before it travelled takes feedback.
    assert copy.learner._lock is not router.learner._lock
    assert isinstance(copy.cache._lock, type(threading.Lock()))
    assert copy.report_outcome(pending.decision_id, 1.0, tenant="acme").replaced is False
    assert copy.learner.n_events("acme") == 13 and router.learner.n_events("acme") == 12


def test_a_router_tied_to_this_process_refuses_to_pickle_saying_why(
        make_router: RouterFactory, tmp_path: Path) -> None:
    logged = make_router(feedback_log=InMemoryFeedbackLog())
    with pytest.raises(TypeError) as info:
        pickle.dumps(logged)
    assert str(info.value) == (
        "cannot pickle a router that learns into a feedback log (InMemoryFeedbackLog): a copy "
        f"in another process would learn outcomes the log never holds; {BUILD_IN_EACH}, or "
        "pickle one built without feedback_log")
    followed = make_router()
    TenantRouter(followed)
    with pytest.raises(TypeError) as info:
        pickle.dumps(followed)
    assert str(info.value) == (
        "cannot pickle a router whose outcomes others follow (a TenantRouter or a gateway "
        f"subscribed to its learner): they stay in this process; {BUILD_IN_EACH}")
    assert followed.route(PROMPTS[0]).selected_model  # a refusal changes nothing
    config = {"models": [{"name": "good", "profile": "gpt-4-1106-preview",
                          "base_url": "http://127.0.0.1:19299/v1", "input_per_mtok": 10,
                          "output_per_mtok": 30}],
              "data_dir": str(tmp_path / "data")}
    with Gateway.from_config(config, loader=FACTORY) as gateway, \
            pytest.raises(TypeError) as info:
        pickle.dumps(gateway.router)
    assert str(info.value) == ("cannot pickle a router serving in a Gateway (its store, "
                               "providers and event loop stay in this process); "
                               f"{BUILD_IN_EACH}")


def test_a_spawned_pool_routes_with_a_pickled_router_or_hears_why_not(
        make_router: RouterFactory) -> None:
    router = load_router(warm=False, cost_weight=0.4)
    halves = [PROMPTS[:3], PROMPTS[3:]]
    expected = [_route_all(router, half) for half in halves]
    logged = make_router(feedback_log=InMemoryFeedbackLog())
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.starmap(_route_all, [(router, half) for half in halves]) == expected
        with pytest.raises(TypeError, match=r"^cannot pickle a router that learns into a "
                                            r"feedback log \(InMemoryFeedbackLog\)"):
            pool.apply(_route_all, (logged, PROMPTS[:1]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_a_forked_child_routes_and_learns_though_another_thread_held_every_lock(
        make_router: RouterFactory) -> None:
    log = InMemoryFeedbackLog()
    router = make_router(embedder=FakeEmbedder(), feedback_log=log)
    memory = TenantRouter(router).memory
    learner = router.learner
    locks: list[Any] = [router._stats_lock, router.cache._lock, router.embedder._lock,
                        learner._lock, learner._reporting, learner.memory._lock,
                        learner.explorer._lock, log._lock, memory._lock]
    held, done = threading.Event(), threading.Event()

    def hold() -> None:  # a route, a warm-up or a report under way as the process forks
        for lock in locks:
            lock.acquire()
        held.set()
        done.wait(10)
        for lock in locks:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    # (The child of a pytest process some thousands of tests in: its collections would walk,
    # and copy page by page, the whole heap it shares with its parent, which took seconds of a
    # loaded host; frozen, they walk what the child makes.)
    gc.freeze()
    pid = os.fork()
    if pid != 0:
        gc.unfreeze()
    if pid == 0:  # the child: it must neither hang nor fail
        signal.alarm(30)
        try:
            decision = router.route(PROMPTS[0], tenant="acme")
            router.report_outcome(decision.decision_id, 0.5, tenant="acme")
            code = 0 if learner.n_events("acme") == 1 and len(log) == 1 else 3
        except BaseException:
            code = 4
        sys.stdout.flush()
        os._exit(code)
    done.set()
    holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # (-14: it hung until the alarm)
    assert router.route(PROMPTS[1]).selected_model and len(log) == 0  # the parent's own
