"""The learning checkpoint: ``switchpoint serve`` as a user runs it (a subprocess, bundled
weights, the real MiniLM embedder). A graceful stop saves what was learned; the next start takes
it up and replays only the feedback after it, after ``kill -9`` too; a checkpoint made for other
settings, or a damaged one, is passed over with a warning and the whole log is replayed. Every
start serves the same lesson."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.config import Settings
from switchpoint.errors import StorageUnavailableError, StoreError
from switchpoint.gateway import Gateway, feedback_log, learning_checkpoints
from switchpoint.gateway import learning as gateway_learning
from switchpoint.gateway.learning import FeedbackResult
from switchpoint.gateway.live import learning_settings
from switchpoint.learning.checkpoint import (
    CHECKPOINT_FILENAME,
    checkpoint_position,
    read_checkpoint,
)
from switchpoint.learning.export import export_weights
from switchpoint.router import Router
from switchpoint.weights import load_weights
from tests.fakes.fake_provider import FakeProviderProcess
from tests.fakes.two_kinds import math_prompt, poem_prompt
from tests.integration.gateway_env import (
    closing_in_background,
    config_text,
    db_rows,
    in_background,
)
from tests.integration.learning_env import (
    EMBEDDER,
    KEYS,
    loader,
    scored,
    serve,
    settings_for,
)
from tests.integration.servers import ProcessServer

PROMPT = "Prove that the square root of 2 is irrational, step by step."
TOPICS = ["Prove that there are infinitely many primes.", "Write a haiku about autumn rain.",
          "Summarise the causes of the French revolution.", "Sort a list in Python.",
          "Explain how vaccines train the immune system.", "Translate 'good morning' to Spanish."]


def _config(tmp_path: Path, fake: FakeProviderProcess, data: Path, k: int) -> Path:
    config = tmp_path / "switchpoint.yaml"
    memory = f"learning: {{memory: {{k: {k}, min_neighbours: 1, min_records: 2}}}}\n"
    config.write_text(config_text(fake, str(data)) + memory, encoding="utf-8")
    return config



def _route(server: ProcessServer, prompt: str, cost_weight: float | None = None) -> Any:
    # Among the models with a learned profile (``fresh`` has none: its outcomes are quality
    # observations only, which no checkpoint holds).
    body: dict[str, Any] = {"prompt": prompt, "available_models": ["good", "cheap", "other"]}
    if cost_weight is not None:
        body["cost_weight"] = cost_weight
    r = httpx.post(f"{server.base}/v1/route", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()



def _status(server: ProcessServer) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.base}/v1/router/status", timeout=30).json()
    return body


def _lesson(server: ProcessServer) -> tuple[dict[str, float], dict[str, Any]]:
    """What routing has learned (every model's score for a probe) and the memory's status."""
    scores: dict[str, float] = _route(server, PROMPT, cost_weight=0)["all_scores"]
    return scores, _status(server)["tenants"]["default"]["memory"]


def test_a_start_takes_up_the_checkpoint_and_replays_only_what_follows(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = _config(tmp_path, gw_fake, data, k=5)
    checkpoint = data / "learning.checkpoint"
    with serve(config, data) as server:
        decisions = [_route(server, t)["decision_id"] for t in TOPICS]
        for i, decision in enumerate(decisions):
            scored(server, decision, [0.0, 1.0, 0.3][i % 3])
        learned = _lesson(server)
        assert learned[1]["examples"] == len(TOPICS)
        assert not checkpoint.exists()  # far fewer events than a checkpoint while live waits for
        code, err = server.terminate()
        assert code == 0, err  # it stopped as it was told to
    assert checkpoint.exists()  # the graceful stop saved what was learned

    with serve(config, data) as server:
        status = _status(server)
        assert (status["from_checkpoint"], status["replayed"]) == (len(TOPICS), len(TOPICS))
        assert _lesson(server) == learned
        again = scored(server, decisions[0], 0.9)  # a checkpointed decision, scored again
        assert (again["replaced"], again["previous_quality"]) == (True, 0.0)
        scored(server, _route(server, "Name three noble gases.")["decision_id"], 0.6)
        after = _lesson(server)
        server.kill()  # a crash: no checkpoint of the two events since the start

    with serve(config, data) as server:
        status = _status(server)
        assert (status["from_checkpoint"], status["replayed"]) == (len(TOPICS), len(TOPICS) + 2)
        assert _lesson(server) == after
        code, err = server.terminate()
        assert code == 0 and "checkpoint not used" not in err, err

    # Other memory settings: the checkpoint no longer fits, and the whole log is replayed.
    config = _config(tmp_path, gw_fake, data, k=6)
    with serve(config, data) as server:
        status = _status(server)
        assert (status["from_checkpoint"], status["replayed"]) == (0, len(TOPICS) + 2)
        scores, memory = _lesson(server)
        assert scores == after[0] and memory["examples"] == after[1]["examples"]
        code, err = server.terminate()
        assert "learning checkpoint not used" in err and "other weights or learning settings" in err

    # A damaged checkpoint: passed over with a warning, the whole log replayed.
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with serve(config, data) as server:
        status = _status(server)
        assert (status["from_checkpoint"], status["replayed"]) == (0, len(TOPICS) + 2)
        assert _lesson(server)[0] == after[0]
        _, err = server.terminate()
        assert "learning checkpoint not used" in err and "unreadable" in err


def test_a_live_gateway_checkpoints_as_it_learns_and_a_reload_takes_it_up(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (the library's door, fast weights): a checkpoint every few events while live,
    taken up by a reload and by the next start, which serve what the live gateway learned."""
    monkeypatch.setattr(learning_checkpoints, "CHECKPOINT_EVERY", 10)
    settings = settings_for(fake, tmp_path)
    path = Path(settings.data_dir) / CHECKPOINT_FILENAME

    def probe(gateway: Gateway) -> dict[str, float]:
        return gateway.route(math_prompt(999), cost_weight=0).expected_errors

    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        for i in range(25):
            decision = gateway.route(math_prompt(i) if i % 2 else poem_prompt(i))
            gateway.report_outcome(decision.decision_id, float(i % 3 == 0))
            running = gateway.learning.checkpointer._checkpointing
            if running is not None:
                running.join(timeout=30)  # each checkpoint done before the next is due
        assert path.exists()
        saved = gateway.learning_status()
        assert saved["from_checkpoint"] == 0  # nothing to take up at the start
        learned = probe(gateway)
        _, live, _ = gateway.state.reload()
        assert live.learning is not None
        assert live.learning.restored == 20 and live.learning.replayed == 25
        assert probe(gateway) == learned
    # The graceful stop checkpointed all 25; the next start replays nothing.
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        status = gateway.learning_status()
        assert (status["from_checkpoint"], status["replayed"]) == (25, 25)
        assert probe(gateway) == learned
    # Without a checkpoint, a start that replays a long log checkpoints at once.
    path.unlink()
    monkeypatch.setattr(gateway_learning, "CHECKPOINT_AFTER_REPLAY", 20)
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        status = gateway.learning_status()
        assert (status["from_checkpoint"], status["replayed"]) == (0, 25)
        running = gateway.learning.checkpointer._checkpointing
        assert running is not None
        running.join(timeout=30)
        assert path.exists()
        assert probe(gateway) == learned


def test_feedback_written_by_another_process_is_taken_up_before_a_checkpoint(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A service and an offline ``switchpoint feedback`` (another Gateway) on one data_dir:
    each takes up the rows the other wrote before it learns an outcome or writes a
    checkpoint, so a checkpoint holds every row of the log up to its position, and the next
    start learns everything either of them accepted, once."""
    settings = settings_for(fake, tmp_path)
    path = Path(settings.data_dir) / CHECKPOINT_FILENAME

    def probe(gateway: Gateway) -> dict[str, float]:
        return gateway.route(math_prompt(999), cost_weight=0).expected_errors

    def held() -> int:
        """The log position the checkpoint holds."""
        return read_checkpoint(path, service.learning.checkpoint_key()).seq

    service = Gateway(settings, loader=loader, env=KEYS)
    service.start()
    try:
        decisions = [service.route(math_prompt(i)).decision_id for i in range(4)]
        service.report_outcome(decisions[0], 0.0)
        with Gateway(settings, loader=loader, env=KEYS,  # its own checkpoint: it learned
                     serves_chat=False) as offline:  # the service's row, then its own
            offline.start()
            offline.report_outcome(decisions[1], 0.0)
        assert held() == 2
        with Gateway(settings, loader=loader, env=KEYS, serves_chat=False) as offline:
            offline.start()
            service.report_outcome(decisions[2], 0.0)  # the offline row first, then its own
            offline.report_outcome(decisions[3], 0.0)  # the service's row first, then its own
            assert offline.learning_status()["tenants"]["default"]["learned_router"][
                "events"] == 4
        assert held() == 4
        learned_here = service.learning_status()["tenants"]["default"]["learned_router"]
        assert learned_here["events"] == 4  # the status took the last offline row up first
    finally:
        service.close()
    assert held() == 4
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        status = restarted.learning_status()
        assert (status["from_checkpoint"], status["replayed"]) == (4, 4)
        learned = probe(restarted)
    path.unlink()
    with Gateway(settings, loader=loader, env=KEYS) as whole:
        whole.start()
        assert whole.learning_status()["replayed"] == 4
        assert probe(whole) == learned


def _replayed_alike(settings: Settings, live: tuple[dict[str, float], dict[str, Any]],
                    replayed: int) -> None:
    """A restart from the log alone (its checkpoint removed) replays ``replayed`` rows and
    learns what the live service had (``live``, from :func:`_learned`)."""
    (Path(settings.data_dir) / CHECKPOINT_FILENAME).unlink()
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        assert restarted.learning_status()["replayed"] == replayed
        assert _learned(restarted) == live


def _learned(gateway: Gateway) -> tuple[dict[str, float], dict[str, Any]]:
    """What the deployment's own learned router holds: every model's expected error for a
    probe, and its status (counts, and the quality the log holds for each model)."""
    tenant = gateway.learning_status()["tenants"]["default"]
    errors = gateway.route(math_prompt(999), cost_weight=0).expected_errors
    return errors, {"learned_router": tenant["learned_router"], "feedback": tenant["feedback"]}


def test_an_offline_outcome_logged_just_before_the_services_own_is_learned_first(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An offline ``switchpoint feedback`` (another Gateway) commits an outcome for a decision
    at the last moment before the service appends its own for the same decision: the log
    holds the offline one first, and the live service learns them in that order, as a replay
    after a restart does (its own, the later, replaces the offline one and says so), so the
    service serves the same lesson live as after a restart."""
    settings = settings_for(fake, tmp_path)
    service = Gateway(settings, loader=loader, env=KEYS)
    service.start()
    try:
        decisions = [service.route(math_prompt(i)).decision_id for i in range(2)]
        service.report_outcome(decisions[0], 0.5)
        store = service.learning.store
        assert store is not None
        real = store.append
        offline_rows: list[str] = []

        def offline_first(record: Any) -> Any:
            """The offline outcome commits between the service's read of the log and its
            own append."""
            event = getattr(record, "event", None)
            if event is not None and event.decision_id == decisions[1] and not offline_rows:
                with Gateway(settings, loader=loader, env=KEYS, serves_chat=False) as offline:
                    offline.start()
                    done = offline.report_outcome(decisions[1], 0.0)
                    offline_rows.append(done.outcome.event.event_id)
            return real(record)

        monkeypatch.setattr(store, "append", offline_first)
        answer = service.report_outcome(decisions[1], 1.0).outcome
        monkeypatch.setattr(store, "append", real)
        assert offline_rows  # (the offline outcome went in first)
        assert (answer.replaced, answer.previous_quality) == (True, 0.0)
        live = _learned(service)
        assert live[1]["learned_router"] == {"events": 3, "outcomes": 2}
    finally:
        service.close()
    _replayed_alike(settings, live, 3)


def test_an_offline_score_logged_just_before_the_services_own_is_learned_first(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for outcomes, so for a comparison's scores: another process scores a model of a
    comparison at the last moment before the service logs its own score of that model. The
    service learns the other's first and its own replaces it, and says so, as a replay after
    a restart does."""
    settings = settings_for(fake, tmp_path)
    service = Gateway(settings, loader=loader, env=KEYS)
    service.start()
    try:
        compare_id = service.compare(prompt=math_prompt(5), models=["strong", "cheap"],
                                     blind=False)["compare_id"]
        store = service.learning.store
        assert store is not None
        real = store.append
        offline_rows: list[str] = []

        def offline_first(record: Any) -> Any:
            """The offline score commits between the service's read of the log and its own
            append."""
            event = getattr(record, "event", None)
            if (event is not None and event.decision_id == f"{compare_id}:cheap"
                    and not offline_rows):
                with Gateway(settings, loader=loader, env=KEYS, serves_chat=False) as offline:
                    offline.start()
                    done = offline.score(compare_id, {"cheap": 0.0})
                    assert done["scores"][0]["replaced"] is False
                    offline_rows.append(compare_id)
            return real(record)

        monkeypatch.setattr(store, "append", offline_first)
        scored = service.score(compare_id, {"cheap": 1.0})["scores"]
        monkeypatch.setattr(store, "append", real)
        assert offline_rows  # (the offline score went in first)
        assert [(s["model"], s["replaced"], s["previous_quality"]) for s in scored] == [
            ("cheap", True, 0.0)]
        live = _learned(service)
        assert live[1]["learned_router"]["events"] == 2
    finally:
        service.close()
    _replayed_alike(settings, live, 2)


def test_the_status_takes_up_what_another_process_logged_a_bounded_share_at_a_time(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outcomes an offline ``switchpoint feedback`` (another Gateway) logged are in the
    service's status at once, with no feedback given to the service since; a backlog is taken
    up a bounded number of rows per status, the rest by the next."""
    monkeypatch.setattr(gateway_learning, "STATUS_TAKE_UP_ROWS", 2)
    from switchpoint.gateway import caller_views

    monkeypatch.setattr(caller_views, "STATUS_TAKE_UP_ROWS", 2)
    settings = settings_for(fake, tmp_path)

    def events(gateway: Gateway) -> int:
        return int(gateway.learning_status()["tenants"]["default"]["learned_router"][
            "events"])

    with Gateway(settings, loader=loader, env=KEYS) as service:
        service.start()
        decisions = [service.route(math_prompt(i)).decision_id for i in range(4)]
        service.report_outcome(decisions[0], 0.0)
        assert events(service) == 1
        with Gateway(settings, loader=loader, env=KEYS, serves_chat=False) as offline:
            offline.start()
            for decision in decisions[1:]:
                offline.report_outcome(decision, 1.0)
        assert events(service) == 3  # two of the three rows: the bound
        assert events(service) == 4  # the last one at the next status
        assert events(service) == 4
        live = _learned(service)
    (Path(settings.data_dir) / CHECKPOINT_FILENAME).unlink()
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        assert _learned(restarted) == live


def _beside_offline_outcomes(settings: Settings, decided: int) -> tuple[Gateway, list[str]]:
    """A service started that made ``decided`` decisions and learned an outcome for the first;
    an offline ``switchpoint feedback`` (another Gateway) then logged outcomes for the next
    two and, at its stop, a checkpoint holding all three rows. Close the service."""
    service = Gateway(settings, loader=loader, env=KEYS)
    service.start()
    try:
        decisions = [service.route(math_prompt(i)).decision_id for i in range(decided)]
        service.report_outcome(decisions[0], 0.0)
        with Gateway(settings, loader=loader, env=KEYS, serves_chat=False) as offline:
            offline.start()
            offline.report_outcome(decisions[1], 0.0)
            offline.report_outcome(decisions[2], 1.0)
    except BaseException:
        service.close()
        raise
    return service, decisions


def test_the_services_retention_prunes_no_offline_row_it_has_not_taken_up(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """An offline ``switchpoint feedback`` writes two rows and a checkpoint that holds them;
    the service's own retention then runs before any feedback reached the service: it takes
    those rows up before it prunes by that checkpoint, so the service, and a checkpoint it
    writes later, still hold every outcome."""
    settings = settings_for(fake, tmp_path)
    path = Path(settings.data_dir) / CHECKPOINT_FILENAME

    def events(gateway: Gateway) -> int:
        return int(gateway.learning_status()["tenants"]["default"]["learned_router"][
            "events"])

    service, decisions = _beside_offline_outcomes(settings, 4)
    try:
        assert read_checkpoint(path, service.learning.checkpoint_key()).seq == 3
        time.sleep(0.05)
        service._housekeeping.run(False, 1e-9)  # its hourly retention, every row older than it
        service.report_outcome(decisions[3], 0.0)
        assert events(service) == 4
    finally:
        service.close()
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        assert events(restarted) == 4


def test_the_services_retention_prunes_no_row_past_the_position_it_learned_through(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The service's retention passes the log position it has learned every row up to: a
    checkpoint another process wrote since (holding rows the service has not taken up yet)
    lets no row past that position go, however old."""
    from switchpoint.store.retention import prune

    settings = settings_for(fake, tmp_path)
    data = Path(settings.data_dir)
    service, _ = _beside_offline_outcomes(settings, 3)
    try:
        key = service.learning.checkpoint_key()
        assert read_checkpoint(data / CHECKPOINT_FILENAME, key).seq == 3
        store = service.learning.store
        assert store is not None
        time.sleep(0.05)

        def pruned(through: int) -> int:
            return prune(store.path, time.time(), upgrade=False, gone=store.gone,
                         checkpoint_key=key, learned_through=through).deleted["feedback"]

        assert pruned(1) == 0  # the service's own row stays: a checkpoint may end at it
        assert [s for s, _ in _feedback_rows(data)] == [1, 2, 3]
        assert pruned(2) == 1
        assert [s for s, _ in _feedback_rows(data)] == [2, 3]
        live = _learned(service)
        assert live[1]["learned_router"]["events"] == 3
    finally:
        service.close()
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        assert _learned(restarted) == live


def test_the_retention_takes_up_a_backlog_in_steps_and_at_most_its_bound(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows another process logged are taken up before the retention prunes, a step at a time
    (the state's guard let go between steps, so feedback and statuses are not held up behind
    a backlog) and at most its bound in one run: the position it returns, the one the prune
    goes by, is where it stopped, with the live snapshot's checkpoint key."""
    settings = settings_for(fake, tmp_path)
    with Gateway(settings, loader=loader, env=KEYS) as service:
        service.start()
        decisions = [service.route(math_prompt(i)).decision_id for i in range(6)]
        service.report_outcome(decisions[0], 0.0)  # log position 1
        with Gateway(settings, loader=loader, env=KEYS, serves_chat=False) as offline:
            offline.start()
            for decision in decisions[1:]:  # positions 2-6
                offline.report_outcome(decision, 1.0)
        learning = service.learning
        steps: list[int | None] = []
        take_up = learning._take_up

        def held_elsewhere() -> bool:
            """Whether a thread other than this one would have to wait for the guard."""
            got: list[bool] = []

            def try_it() -> None:
                got.append(learning.state.guard.acquire(blocking=False))
                if got[0]:
                    learning.state.guard.release()

            other = threading.Thread(target=try_it)
            other.start()
            other.join()
            return not got[0]

        def counted(live: gateway_learning.LiveLearning, *, own: str | None = None,
                    most: int | None = None) -> None:
            assert held_elsewhere()  # each step under the guard
            steps.append(most)
            take_up(live, own=own, most=most)

        monkeypatch.setattr(learning, "_take_up", counted)
        assert not held_elsewhere()
        key = learning.checkpoint_key()
        assert learning.caught_up(most=4, step=2) == (5, key)  # rows 2-3, 4-5: the bound
        assert steps == [2, 2]
        steps.clear()
        assert learning.caught_up(most=100, step=2) == (6, key)  # row 6, then nothing new
        assert steps == [2, 2]
        monkeypatch.undo()
        assert service.learning_status()["tenants"]["default"]["learned_router"][
            "events"] == 6


@pytest.mark.parametrize("extra", ["", "learning: {memory: {}}\n"], ids=["router", "memory"])
def test_weights_exported_from_a_log_do_not_learn_its_outcomes_twice(
        fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        extra: str) -> None:
    """Serve the exported weights on the data_dir they were learned on: the outcomes they
    hold are not replayed on top of them again; outcomes after the export still teach. (A
    tenant memory still takes them up, which does not make the weights hold them less.)"""
    settings = settings_for(fake, tmp_path, extra)
    exported = tmp_path / "learned"

    def probe(gateway: Gateway) -> dict[str, float]:
        return gateway.route(math_prompt(999), cost_weight=0).expected_errors

    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        for i in range(20):
            decision = gateway.route(math_prompt(i))
            gateway.report_outcome(decision.decision_id, 0.0)
            gateway.report_outcome(decision.decision_id, 0.0)  # a repeat: one outcome
        package = export_weights(gateway.router, exported,
                                 through=gateway.learning.log_position())
        taught = probe(gateway)
    (learned,) = package.provenance["learned"]
    assert (learned["outcomes"], learned["events"]) == (20, 40)

    def exported_loader(settings: Settings, policy: str | None) -> Router:
        return Router(load_weights(exported), catalog=settings.catalog(), embedder=EMBEDDER,
                      cost_weight=settings.cost_weight, learning=learning_settings(settings))

    caplog.set_level(logging.INFO, logger="switchpoint")
    with Gateway(settings, loader=exported_loader, env=KEYS) as gateway:
        gateway.start()
        assert probe(gateway) == pytest.approx(taught, abs=1e-9)  # not twice
        assert ("40 replayed after it; of all of them, 40 the weights held already"
                in caplog.text)
        assert gateway.router.learner.n_events() == 0
        assert gateway.learning_status()["replayed"] == 40  # taken up: in the weights
        decision = gateway.route(math_prompt(50))
        gateway.report_outcome(decision.decision_id, 0.0)
        after = probe(gateway)
        assert after != taught  # a new outcome still teaches
    caplog.clear()
    with Gateway(settings, loader=exported_loader, env=KEYS) as gateway:  # and survives
        gateway.start()
        assert probe(gateway) == pytest.approx(after, abs=1e-9)
    # From the checkpoint written at the stop: the 40 are still said to be the weights'.
    assert ("(41 from the learning checkpoint, 0 replayed after it; of all of them, 40 the "
            "weights held already" in caplog.text)
    # Another data_dir's log is not mistaken for this one: all of it teaches.
    other = settings_for(fake, tmp_path / "other")
    with Gateway(other, loader=loader, env=KEYS) as gateway:
        gateway.start()
        decision = gateway.route(math_prompt(7))
        gateway.report_outcome(decision.decision_id, 1.0)
    with Gateway(other, loader=exported_loader, env=KEYS) as gateway:
        gateway.start()
        assert gateway.router.learner.n_events() == 1


def _settled_late(settle: Callable[[Future[None]], None],
                  settling: list[threading.Thread]) -> Future[None]:
    """A store's answer given by ``settle`` half a second from now (after feedback stopped
    waiting for it), on a thread added to ``settling``: joined, the answer is given and what
    it calls back has run."""
    late = Future[None]()
    timer = threading.Timer(0.5, settle, args=(late,))
    settling.append(timer)
    timer.start()
    return late


DEFAULT_WAIT = feedback_log.KEEP_WAIT_S


def test_an_outcome_the_log_refused_is_not_learned_and_one_it_gave_up_on_is_taken_up_later(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def patience(seconds: float) -> None:
        """How long feedback waits to be kept: short where the store answers late on purpose,
        the default where it answers (a loaded machine's commit can take a while)."""
        monkeypatch.setattr(feedback_log, "KEEP_WAIT_S", seconds)

    settings = settings_for(fake, tmp_path)
    path = Path(settings.data_dir) / CHECKPOINT_FILENAME
    settling: list[threading.Thread] = []

    def settled() -> None:
        for thread in settling:
            thread.join(timeout=30)
            assert not thread.is_alive()

    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        ids = [gateway.route(math_prompt(i)).decision_id for i in range(4)]
        gateway.report_outcome(ids[0], 0.0)
        store = gateway.learning.store
        assert store is not None
        real = store.append

        def refuse(record: Any) -> Any:
            raise StoreError("the disk is full")

        monkeypatch.setattr(store, "append", refuse)
        with pytest.raises(StoreError):
            gateway.report_outcome(ids[1], 0.0)
        monkeypatch.setattr(store, "append", real)
        assert gateway.learning_status()["tenants"]["default"]["learned_router"]["events"] == 1
        assert gateway.learning.checkpoint() == path  # what it learned is the log's

        def failing_late(record: Any) -> Future[None]:
            """Refused, but only after the feedback stopped waiting."""
            return _settled_late(lambda late: late.set_exception(StoreError("disk full")),
                                 settling)

        monkeypatch.setattr(store, "append", failing_late)
        patience(0.2)
        with pytest.raises(StorageUnavailableError, match="may still be kept"):
            gateway.report_outcome(ids[1], 0.0)
        settled()  # refused after all: the log and what is learned still agree
        monkeypatch.setattr(store, "append", real)
        patience(DEFAULT_WAIT)
        gateway.report_outcome(ids[1], 0.0)
        assert gateway.learning.checkpoint() == path

        def slow(record: Any) -> Future[None]:
            """Committed, but confirmed only after the feedback stopped waiting."""
            written = real(record)
            return _settled_late(lambda late: late.set_result(written.result()),
                                 settling)

        monkeypatch.setattr(store, "append", slow)
        patience(0.2)
        with pytest.raises(StorageUnavailableError, match="did not answer within"):
            gateway.report_outcome(ids[2], 0.0)
        monkeypatch.setattr(store, "append", real)
        patience(DEFAULT_WAIT)
        settled()  # it is in the log after all: the status takes it up, as a replay would
        assert gateway.learning_status()["tenants"]["default"]["learned_router"]["events"] == 3
        gateway.report_outcome(ids[3], 0.0)
        assert gateway.learning_status()["tenants"]["default"]["learned_router"]["events"] == 4
        assert gateway.learning.checkpoint() == path
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        status = gateway.learning_status()
        assert (status["from_checkpoint"], status["replayed"]) == (4, 4)  # the log as it is


def test_a_start_from_a_checkpoint_waits_a_full_interval_before_the_next(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(learning_checkpoints, "CHECKPOINT_EVERY", 5)
    settings = settings_for(fake, tmp_path)
    path = Path(settings.data_dir) / CHECKPOINT_FILENAME
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        for i in range(6):
            decision = gateway.route(math_prompt(i))
            gateway.report_outcome(decision.decision_id, 0.5)
            running = gateway.learning.checkpointer._checkpointing
            if running is not None:
                running.join(timeout=30)
    written = path.stat().st_mtime_ns
    with Gateway(settings, loader=loader, env=KEYS) as gateway:
        gateway.start()
        assert gateway.learning_status()["from_checkpoint"] == 6
        decision = gateway.route(math_prompt(50))
        gateway.report_outcome(decision.decision_id, 0.5)
        running = gateway.learning.checkpointer._checkpointing
        if running is not None:
            running.join(timeout=30)
        assert path.stat().st_mtime_ns == written  # one event after the start: not due yet


def _feedback_rows(data: Path) -> list[tuple[int, int]]:
    """(log position, comment length) of every row of the feedback log."""
    import sqlite3

    conn = sqlite3.connect(data / "switchpoint.db")
    try:
        return [(int(s), int(n)) for s, n in conn.execute(
            "SELECT seq, length(coalesce(comment, '')) FROM feedback ORDER BY seq")]
    finally:
        conn.close()


RETENTION_DAYS = "0.00001"  # (0.86 s: the retention the prunes below are given)


def _logged_now(data: Path) -> None:
    """A request logged now, the store's newest entry: the service's retention then measures
    its window from the clock, as after traffic, not back from an entry older than the
    retention (as it does after a clock that jumped ahead: see ``held_cutoff``)."""
    from switchpoint.store import SQLiteStore
    from tests.unit.test_store import request

    with SQLiteStore(data / "switchpoint.db") as store:
        store.append(request()).result()


def _past_retention(data: Path) -> None:
    """Wait until every row of the store is older than a retention of ``RETENTION_DAYS``: as
    long as its newest row is younger (a row the service wrote just before is)."""
    import sqlite3

    conn = sqlite3.connect(data / "switchpoint.db")
    try:
        newest = max(conn.execute(f"SELECT coalesce(max(ts), 0) FROM {table}").fetchone()[0]
                     for table in ("decisions", "feedback", "requests"))
    finally:
        conn.close()
    time.sleep(max(0.0, newest + float(RETENTION_DAYS) * 86400 + 0.1 - time.time()))


def test_retention_prunes_the_feedback_the_checkpoint_holds_and_nothing_learned_is_lost(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The feedback log was never pruned: POST /v1/route is free and each decision takes
    MAX_OUTCOMES rows with comments of 2,000 characters, so a caller could fill the disk.
    Retention now prunes its rows older than the cutoff that the learning checkpoint holds
    (never the row the checkpoint ends at, nor any after it): a start after ``kill -9`` takes up
    the checkpoint and replays the rest, and serves the same lesson as before the prune."""
    import json

    from switchpoint.cli import main

    data = tmp_path / "data"
    config = _config(tmp_path, gw_fake, data, k=5)
    with serve(config, data) as server:
        decisions = [_route(server, t)["decision_id"] for t in TOPICS]
        for i, decision in enumerate(decisions):
            r = httpx.post(f"{server.base}/v1/feedback", timeout=30, json={
                "decision_id": decision, "score": [0.0, 1.0, 0.3][i % 3],
                "comment": "c" * 2000})
            assert r.status_code == 200, r.text
        code, err = server.terminate()  # a graceful stop: the checkpoint holds all six
        assert code == 0, err
    with serve(config, data) as server:
        for topic in ("Name three noble gases.", "Write a limerick about a cat."):
            scored(server, _route(server, topic)["decision_id"], 0.6)
        learned = _lesson(server)
        server.kill()  # a crash: the checkpoint does not hold these two
    before = _feedback_rows(data)
    assert [s for s, _ in before] == list(range(1, len(TOPICS) + 3))

    _past_retention(data)
    capsys.readouterr()
    code = main(["prune", "--config", str(config), "--older-than", RETENTION_DAYS, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "feedback rows (of those the learning checkpoint holds)" in err
    assert json.loads(out)["deleted"]["feedback"] == len(TOPICS) - 1
    # The row the checkpoint ends at stays (a start checks the event there), and those after.
    assert _feedback_rows(data) == before[len(TOPICS) - 1:]

    for crash in (True, False):  # and again after a kill -9 of a start from the pruned log
        with serve(config, data) as server:
            status = _status(server)
            assert (status["from_checkpoint"], status["replayed"]) == (len(TOPICS),
                                                                        len(TOPICS) + 2)
            assert _lesson(server) == learned
            if crash:
                server.kill()
                continue
            again = scored(server, decisions[0], 0.9)  # a pruned decision's outcome, replaced
            assert (again["replaced"], again["previous_quality"]) == (True, 0.0)
            code, err = server.terminate()
            assert code == 0 and "checkpoint not used" not in err, err
    # Without the checkpoint the outcomes pruned are not learned, and the start says so.
    (data / CHECKPOINT_FILENAME).unlink()
    with serve(config, data) as server:
        assert _status(server)["from_checkpoint"] == 0
        _, err = server.terminate()
        assert f"pruned by retention before log position {len(TOPICS)}" in err, err
        assert f"restore {CHECKPOINT_FILENAME} from the backup" in err


def test_switchpoint_prune_beside_a_running_service_leaves_its_feedback_log_alone(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A program beside ``switchpoint serve`` (a Gateway serving no chat, which takes up the
    log) logs two outcomes and, as it closes, writes a checkpoint holding them, which the
    service has not taken up yet; a
    ``switchpoint prune`` then (every row older than its cutoff) would delete them by that
    checkpoint, and the service's next checkpoint would write over it without them. With the
    service serving, the prune leaves the feedback log alone and says why (it prunes the rest):
    the service learns both outcomes, and so does its next start."""
    import json

    from switchpoint.cli import main

    data = tmp_path / "data"
    config = _config(tmp_path, gw_fake, data, k=5)
    with serve(config, data) as server:
        decisions = [_route(server, topic)["decision_id"] for topic in TOPICS[:3]]
        scored(server, decisions[0], 0.0)
        with Gateway.from_config(config, serves_chat=False) as beside:
            for decision, score in zip(decisions[1:], (1.0, 0.3), strict=True):
                beside.report_outcome(decision, score)
        held = checkpoint_position(data / CHECKPOINT_FILENAME, None)
        assert held is not None and held[0] == 3  # the program's: all three rows
        _past_retention(data)
        capsys.readouterr()
        code = main(["prune", "--config", str(config), "--older-than", RETENTION_DAYS, "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        report = json.loads(out)
        assert report["deleted"]["feedback"] == 0 and report["deleted"]["decisions"] == 3
        assert "a service is serving from this data_dir" in report["feedback_kept"]
        assert "no feedback row went: a service is serving" in err
        assert "stop the service first" in err
        assert [s for s, _ in _feedback_rows(data)] == [1, 2, 3]
        learned = _status(server)["tenants"]["default"]["learned_router"]
        assert learned == {"events": 3, "outcomes": 3}
        lesson = _lesson(server)
        code, err = server.terminate()
        assert code == 0, err
    (data / CHECKPOINT_FILENAME).unlink()  # the log alone, replayed
    with serve(config, data) as server:
        status = _status(server)
        assert (status["replayed"], status["tenants"]["default"]["learned_router"]) == (
            3, learned)
        assert _lesson(server) == lesson
        code, err = server.terminate()
        assert code == 0, err
    # With no service serving, the prune takes the feedback the checkpoint holds.
    _past_retention(data)
    assert main(["prune", "--config", str(config), "--older-than", RETENTION_DAYS, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["deleted"]["feedback"], report["feedback_kept"]) == (2, None)


def test_without_a_checkpoint_of_its_log_retention_prunes_no_feedback(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """No checkpoint (or one of another log, or a damaged one): every feedback row stays,
    whatever its age, since a start replays the whole log; the request logs are pruned."""
    from switchpoint.store.retention import prune

    data = tmp_path / "data"
    config = _config(tmp_path, gw_fake, data, k=5)
    with serve(config, data) as server:
        for topic in TOPICS[:3]:
            scored(server, _route(server, topic)["decision_id"], 0.5)
        server.kill()  # no checkpoint written
    checkpoint = data / CHECKPOINT_FILENAME
    assert not checkpoint.exists()
    time.sleep(0.1)
    report = prune(data / "switchpoint.db", time.time())
    assert report.deleted["feedback"] == 0 and report.deleted["decisions"] == 3
    assert len(_feedback_rows(data)) == 3
    checkpoint.write_bytes(b"not a checkpoint")
    assert prune(data / "switchpoint.db", time.time()).deleted["feedback"] == 0
    assert len(_feedback_rows(data)) == 3


def test_the_services_own_retention_prunes_checkpointed_feedback_and_a_crash_loses_nothing(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """``store.retention_days`` in the config: the service prunes on its first request (then
    hourly), feedback too once the checkpoint holds it; killed after, the next start serves
    the same lesson."""
    data = tmp_path / "data"
    config = _config(tmp_path, gw_fake, data, k=5)
    with serve(config, data) as server:
        for i, topic in enumerate(TOPICS):
            scored(server, _route(server, topic)["decision_id"], [0.0, 1.0, 0.3][i % 3])
        learned = _lesson(server)
        code, err = server.terminate()
        assert code == 0, err
    assert len(_feedback_rows(data)) == len(TOPICS)
    _past_retention(data)
    _logged_now(data)
    config.write_text(config.read_text(encoding="utf-8")
                      + f"store: {{retention_days: {RETENTION_DAYS}}}\n", encoding="utf-8")
    with serve(config, data) as server:
        assert _lesson(server) == learned  # (its request sets the prune off)
        deadline = time.monotonic() + 30
        while len(_feedback_rows(data)) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [s for s, _ in _feedback_rows(data)] == [len(TOPICS)]
        server.kill()
    with serve(config, data) as server:
        status = _status(server)
        assert (status["from_checkpoint"], status["replayed"]) == (len(TOPICS), len(TOPICS))
        assert _lesson(server) == learned
        code, err = server.terminate()
        assert code == 0 and "checkpoint not used" not in err, err


def _decisions_before(data: Path, when: float) -> int:
    import sqlite3

    conn = sqlite3.connect(data / "switchpoint.db")
    try:
        return int(conn.execute("SELECT count(*) FROM decisions WHERE ts < ?",
                                (when,)).fetchone()[0])
    finally:
        conn.close()


def test_the_services_retention_keeps_feedback_a_checkpoint_of_other_settings_holds(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The checkpoint beside the store was written under other learning settings (the
    tenants' memory's ``k``, changed since): the service replays the whole log, and its own
    retention prunes no feedback by that checkpoint, which its next start passes over again;
    killed after the prune, the next start learns every outcome as before."""
    data = tmp_path / "data"
    config = _config(tmp_path, gw_fake, data, k=5)
    with serve(config, data) as server:
        for i, topic in enumerate(TOPICS):
            scored(server, _route(server, topic)["decision_id"], [0.0, 1.0, 0.3][i % 3])
        code, err = server.terminate()  # its checkpoint holds all six, under k: 5
        assert code == 0, err
    assert (data / CHECKPOINT_FILENAME).exists()
    _past_retention(data)
    _logged_now(data)
    started = time.time()
    config = _config(tmp_path, gw_fake, data, k=4)
    config.write_text(config.read_text(encoding="utf-8")
                      + f"store: {{retention_days: {RETENTION_DAYS}}}\n", encoding="utf-8")
    with serve(config, data) as server:
        assert _status(server)["replayed"] == len(TOPICS)
        learned = _lesson(server)  # (its request sets the prune off)
        deadline = time.monotonic() + 30
        while _decisions_before(data, started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _decisions_before(data, started) == 0  # the prune ran
        assert len(_feedback_rows(data)) == len(TOPICS)
        server.kill()
    with serve(config, data) as server:
        assert _status(server)["replayed"] == len(TOPICS)
        assert _lesson(server) == learned
        server.kill()


def test_the_services_retention_keeps_every_tenants_learned_router_live_and_after_a_restart(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Three tenants learn; a checkpoint holds them; the service's own retention prunes every
    feedback row it holds. Each tenant's learned router stays what it was, live (the service
    holds every tenant's evidence: none is let go to be rebuilt from the pruned log) and after
    a start from the checkpoint."""
    tenants = ["acme", "globex", "initech"]
    settings = settings_for(fake, tmp_path, "tenants: {acme: {}, globex: {}, initech: {}}\n")

    def learned(gateway: Gateway) -> dict[str, tuple[dict[str, float], dict[str, Any]]]:
        status = gateway.learning_status()["tenants"]
        return {t: (gateway.route(math_prompt(999), cost_weight=0, tenant=t).expected_errors,
                    status[t]["learned_router"]) for t in tenants}

    service = Gateway(settings, loader=loader, env=KEYS)
    service.start()
    try:
        before = learned(service)
        for j, tenant in enumerate(tenants):
            for i in range(6):
                decision = service.route(math_prompt(10 * j + i), tenant=tenant)
                service.report_outcome(decision.decision_id, [0.0, 1.0, 0.2][j],
                                       tenant=tenant)
        taught = learned(service)
        assert all(taught[t] != before[t] for t in tenants)
        assert {t: taught[t][1]["outcomes"] for t in tenants} == dict.fromkeys(tenants, 6)
        assert service.router.learner.settings.max_tenants is None
        assert service.learning.checkpoint() is not None
        time.sleep(0.05)
        service._housekeeping.run(False, 1e-9)  # its hourly retention, every row older than it
        # Only the row the checkpoint ends at stays (a start checks the event there).
        assert [s for s, _ in _feedback_rows(Path(settings.data_dir))] == [3 * 6]
        service.router.cache.clear()
        assert learned(service) == taught
    finally:
        service.close()
    with Gateway(settings, loader=loader, env=KEYS) as restarted:
        restarted.start()
        assert learned(restarted) == taught


@pytest.mark.parametrize("attempt", range(3))
def test_feedback_learned_as_the_learning_closes_starts_no_checkpoint_after(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        attempt: int) -> None:
    """Feedback learns an event (a checkpoint is due) while the learning closes: closing had
    taken the checkpoint run to wait for (none), and the feedback then started one, on the
    feedback log closing shut, that nobody waited for. Closing now stops runs from starting
    until the learning opens again; its own checkpoint holds the event."""
    monkeypatch.setattr(learning_checkpoints, "CHECKPOINT_EVERY", 1)
    settings = settings_for(fake, tmp_path)
    gateway = Gateway(settings, loader=loader, env=KEYS)
    gateway.start()
    learning = gateway.learning
    due = learning.checkpointer.when_due
    inside, go = threading.Event(), threading.Event()

    def held(live: Any, due_after: int | None = None) -> None:  # (under the state's guard)
        inside.set()
        assert go.wait(10)
        due(live, due_after)

    runs: list[str] = []
    monkeypatch.setattr(learning.checkpointer, "when_due", held)
    monkeypatch.setattr(learning.checkpointer, "_quietly", lambda: runs.append("run"))
    decision = gateway.route(math_prompt(1))
    feedback = threading.Thread(
        target=lambda: gateway.report_outcome(decision.decision_id, 1.0))
    feedback.start()
    assert inside.wait(10)
    closing = threading.Thread(target=learning.close)
    closing.start()
    time.sleep(0.2)  # (closing has taken the run to wait for: none; it waits for the guard)
    go.set()
    feedback.join(10)
    closing.join(10)
    assert not feedback.is_alive() and not closing.is_alive()
    for thread in threading.enumerate():  # (a run started would record itself)
        if thread.name == "switchpoint-checkpoint":
            thread.join(10)
    assert runs == []
    path = Path(settings.data_dir) / CHECKPOINT_FILENAME
    assert checkpoint_position(path) is not None  # the closing's checkpoint holds the event
    monkeypatch.setattr(learning.checkpointer, "when_due", due)
    gateway.close()
    with Gateway(settings, loader=loader, env=KEYS) as again:
        again.start()
        assert again.learning_status()["from_checkpoint"] == 1


@pytest.mark.parametrize("attempt", range(3))
def test_closing_waits_for_feedback_under_way_which_is_kept_and_learned(
        fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        attempt: int) -> None:
    """Feedback on a thread of its own passes the store's open check, then the gateway
    closes: the feedback went on over a closed log (learned in memory, its row refused, the
    closing's checkpoint taken before it). Closing now waits for it: its row is in the
    feedback log and the closing's checkpoint holds it, so the next start learns it without
    replaying; feedback that comes once closing has begun is refused, and changes nothing."""
    settings = settings_for(fake, tmp_path)
    gateway = Gateway(settings, loader=loader, env=KEYS)
    gateway.start()
    learning = gateway.learning
    check = learning.intake._check_not_refused
    inside, go = threading.Event(), threading.Event()

    def held(answer_id: str, tenant: str | None) -> None:  # (after the store's open check)
        inside.set()
        assert go.wait(10)
        check(answer_id, tenant)

    monkeypatch.setattr(learning.intake, "_check_not_refused", held)
    first, second = gateway.route(math_prompt(1)), gateway.route(math_prompt(2))
    giver, outcome = in_background(lambda: gateway.areport_outcome(first.decision_id, 1.0))
    assert inside.wait(10)
    closer, closed = closing_in_background(gateway)
    with pytest.raises(StoreError, match="the gateway is closed"):
        asyncio.run(gateway.areport_outcome(second.decision_id, 0.0))
    time.sleep(0.2)
    assert not closed.is_set()  # closing waits for the feedback under way
    go.set()
    giver.join(10)
    closer.join(20)
    assert not giver.is_alive() and closed.is_set()
    assert len(outcome) == 1 and isinstance(outcome[0], FeedbackResult), outcome
    data = Path(settings.data_dir)
    assert db_rows(data, "SELECT decision_id, quality FROM feedback") == [
        (first.decision_id, 1.0)]
    with Gateway(settings, loader=loader, env=KEYS) as again:
        again.start()
        status = again.learning_status()
        assert (status["from_checkpoint"], status["replayed"]) == (1, 1)
