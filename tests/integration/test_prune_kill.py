"""``switchpoint prune`` killed (SIGKILL) while it deletes rows, before SQL statements spread
through its deletions (a trigger's included) (:mod:`tests.integration.kill_points`): the
store opens cleanly after each kill, every row is either there as it was or gone with what it
counted towards the totals (no row half pruned), and the next prune finishes the job."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from switchpoint.store import DecisionRecord, RequestRecord, SQLiteStore
from tests.integration.kill_points import run_killed_at

OLD = time.time() - 30 * 86_400
STRIDE = 20


def _decision(ts: float) -> DecisionRecord:
    return DecisionRecord(
        id=uuid.uuid4().hex, ts=ts, selected_model="m", cluster_id=1, cost_weight=0.5,
        candidates=["m", "b"], cache_hit=False, routing_ms=0.2, embedding_ms=3.0,
        policy="cluster", weights_id="w1", expected_error=0.1, cost_adjusted_score=0.2)


def _request(ts: float, decision_id: str | None, cost: float) -> RequestRecord:
    return RequestRecord(
        id=uuid.uuid4().hex, ts=ts, requested_model="auto", status="ok", http_status=200,
        pin_state="fresh", stream=False, latency_ms=12.5, model="m", models_tried=["m"],
        attempts=[{"model": "m", "outcome": "ok"}], escalated=False, pin={"pin_state": "fresh"},
        prompt_tokens=10, completion_tokens=5, cost_usd=cost, reasoning=["because"],
        excluded={}, decision_id=decision_id)


def _state(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], tuple[int, ...]]:
    """The ids of the decisions and requests the log holds, and its request totals (count,
    prompt tokens) as the store keeps them, read after the store opens as a start opens it."""
    with SQLiteStore(path) as store:
        stats = store.request_stats()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        decisions = db.execute("SELECT id, ts FROM decisions ORDER BY id").fetchall()
        requests = db.execute("SELECT id, decision_id FROM requests ORDER BY id").fetchall()
        scanned = db.execute("SELECT count(*), coalesce(sum(prompt_tokens), 0) "
                             "FROM requests").fetchone()
    finally:
        db.close()
    # The totals the store keeps are those of the rows it holds: none counted twice or lost.
    assert (stats["total"], stats["prompt_tokens"]) == tuple(scanned)
    return decisions, requests, tuple(scanned)


def test_a_prune_killed_as_it_deletes_leaves_whole_rows_and_the_next_prune_finishes(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / "switchpoint.db"
    data.mkdir()
    with SQLiteStore(path) as store:
        for n in range(6):
            ts = OLD if n % 2 else time.time()
            decision = _decision(ts)
            store.append(decision).result()
            store.append(_request(ts, decision.id, 0.001 * (n + 1))).result()
            store.append(replace(_request(ts, None, 0.002), prompt_tokens=n)).result()
    decisions, requests, _ = _state(path)
    kept = {d for d, ts in decisions if ts > OLD + 1}
    argv = ["prune", "--data-dir", str(data), "--older-than", "7"]
    # Before every STRIDE-th statement from the prune's first transaction on (some 130 of them,
    # mostly the triggers each deleted row fires), so each table's batch, its triggers and its
    # commit are all cut somewhere, in a few seconds.
    step, finished, cut_between = 1, False, 0
    while not finished:
        assert step < 400, "the prune never finished"
        status = run_killed_at(step, argv, str(data), statements="BEGIN IMMEDIATE")
        finished = os.WIFEXITED(status)
        assert finished or os.WTERMSIG(status) == 9, status
        now_decisions, now_requests, _ = _state(path)
        # Each row is there as it was, or gone; the newer ones are all there.
        assert set(now_decisions) <= set(decisions) and set(now_requests) <= set(requests)
        assert kept <= {d for d, _ in now_decisions}, step
        cut_between += len(now_decisions) == len(kept) and len(now_requests) > 2 * len(kept)
        step += STRIDE
    assert os.WEXITSTATUS(status) == 0
    # The run that finished deleted every old row: the kills before it left the job to it.
    final_decisions, final_requests, (count, _) = _state(path)
    assert {d for d, _ in final_decisions} == kept
    assert count == len(final_requests) == 2 * len(kept)
    # (some kill fell between the decisions' commit and the requests': the requests of
    # decisions gone stayed, whole, and the next run deleted them)
    assert step > 4 * STRIDE and cut_between, (step, cut_between)
