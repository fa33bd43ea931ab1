"""Learning checkpoints: a learner or tenant memory restored from a checkpoint file is the one
that applied the events (same posterior now, and after more events), and a checkpoint that does
not fit is refused whole, leaving the learner as it was."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from switchpoint.learning import FeedbackEvent, Learner, LearningSettings
from switchpoint.learning.checkpoint import (
    CHECKPOINT_FILENAME,
    ArrayOrBuild,
    Checkpoint,
    CheckpointError,
    State,
    checkpoint_position,
    read_checkpoint,
    write_checkpoint,
)
from switchpoint.learning.tenant_memory import TenantKnnMemory, TenantSettings
from switchpoint.policies import Inputs, Policy
from switchpoint.records import RecordSet
from switchpoint.store.retention import disk_usage
from switchpoint.training import fit
from tests.conftest import FakeEmbedder
from tests.fakes.two_kinds import math_prompt, two_kinds_package


def _prompts(i: int) -> str:
    kinds = [math_prompt(i), f"an entirely new topic number {i} about ships",
             f"poems about the moon and stars, verse {i}", f"sail the galleon voyage {i}"]
    return kinds[i % len(kinds)]


def _events(fake_embedder, policy: Policy, n: int, seed: int, start: int = 0,  # type: ignore[no-untyped-def]
            units: bool = False) -> list[FeedbackEvent]:
    """Outcomes over two tenants, with repeats (later ones replace earlier ones); two in three
    say what their answer cost."""
    rng = np.random.default_rng(seed)
    models = list(policy.models_)
    out = []
    for i in range(start, start + n):
        did = f"d{i if i % 7 else i - 3}"  # every seventh repeats an earlier decision
        text = _prompts(i)
        inputs = Inputs(texts=[text], embeddings=fake_embedder.embed([text]))
        unit_list = None
        if units:
            est = policy.estimate(inputs)
            probs = est.unit_probabilities
            unit_list = (((int(est.unit_ids[0]), 1.0),) if probs is None else
                         tuple((int(u), float(w)) for u, w in enumerate(probs[0]) if w > 1e-4))
        out.append(FeedbackEvent(
            decision_id=did, model=models[int(rng.integers(len(models)))],
            quality=float(rng.random()), tenant=["a", "b"][i % 2], units=unit_list,
            embedding=None if units else tuple(inputs.embeddings[0].tolist()),  # type: ignore[index]
            measured_cost=float(rng.random()) / 100 if i % 3 else None))
    return out


def _same_posteriors(one: Learner, other: Learner, probe: Inputs) -> None:
    assert one.tenants() == other.tenants()
    for tenant in one.tenants():
        a, ra = one.policy_for(tenant)
        b, rb = other.policy_for(tenant)
        assert ra == rb
        ea, eb = a.estimate(probe), b.estimate(probe)
        np.testing.assert_array_equal(ea.error, eb.error)
        np.testing.assert_array_equal(ea.cost, eb.cost)
        assert a.n_units == b.n_units


def _round_trip(learner: Learner, tmp_path: Path) -> State:
    path = tmp_path / "learning.checkpoint"
    write_checkpoint(path, Checkpoint("k", 41, "e41", learner.state()))
    loaded = read_checkpoint(path, "k")
    assert (loaded.seq, loaded.event_id) == (41, "e41")
    return loaded.state


@pytest.mark.parametrize("policy", ["cluster", "knn"])
def test_a_restored_learner_is_the_one_that_applied_the_events(
        policy: str, fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    package = two_kinds_package(fake_embedder, policy=policy)
    settings = LearningSettings(novelty_threshold=0.4, max_new_clusters=3)
    learned = Learner(package.policy, settings)
    learned.replay(_events(fake_embedder, package.policy, 80, seed=1))
    if policy == "cluster":
        overlay = learned.overlay("a")
        assert overlay is not None and overlay.n_new_clusters > 0  # type: ignore[attr-defined]
    restored = Learner(package.policy, settings)
    restored.restore(_round_trip(learned, tmp_path))
    probe = Inputs(embeddings=fake_embedder.embed([_prompts(i) for i in range(900, 908)]))
    _same_posteriors(learned, restored, probe)
    # ...and stays the same as both learn more, repeats of checkpointed decisions included.
    more = _events(fake_embedder, package.policy, 40, seed=2, start=70)
    assert [learned.apply(e) for e in more] == [restored.apply(e) for e in more]
    _same_posteriors(learned, restored, probe)


@pytest.mark.parametrize("policy", ["cluster", "knn"])
def test_a_state_holds_what_was_learned_when_it_was_taken(
        policy: str, fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    """A service takes a checkpoint's state while feedback waits and writes it after, while
    feedback goes on: what is learned in between, replaced decisions included, stays out."""
    package = two_kinds_package(fake_embedder, policy=policy)
    settings = LearningSettings(novelty_threshold=0.4, max_new_clusters=3)
    first = _events(fake_embedder, package.policy, 80, seed=1)
    learned = Learner(package.policy, settings)
    learned.replay(first)
    state = learned.state()
    learned.replay(_events(fake_embedder, package.policy, 40, seed=2, start=70))
    path = tmp_path / CHECKPOINT_FILENAME
    write_checkpoint(path, Checkpoint("k", 80, "e80", state))
    then = Learner(package.policy, settings)
    then.replay(first)
    restored = Learner(package.policy, settings)
    restored.restore(read_checkpoint(path, "k").state)
    probe = Inputs(embeddings=fake_embedder.embed([_prompts(i) for i in range(900, 908)]))
    _same_posteriors(then, restored, probe)


def test_a_text_policy_learner_round_trips_its_units(
        small_records: RecordSet, fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    package = fit(small_records, policy="tiers", split="test", embedder=fake_embedder)
    learned = Learner(package.policy)
    learned.replay(_events(fake_embedder, package.policy, 50, seed=3, units=True))
    restored = Learner(package.policy)
    restored.restore(_round_trip(learned, tmp_path))
    probe = Inputs(texts=[_prompts(i) for i in range(5)])
    _same_posteriors(learned, restored, probe)
    more = _events(fake_embedder, package.policy, 20, seed=4, start=45, units=True)
    assert [learned.apply(e) for e in more] == [restored.apply(e) for e in more]
    _same_posteriors(learned, restored, probe)


def test_a_restored_memory_keeps_its_records_and_their_order(fake_embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = TenantSettings(k=5, min_neighbours=1, min_similarity=-1.0, min_records=1,
                              max_records=12, switch_penalty=0.0, confidence_floor=0.0)
    memory = TenantKnnMemory(settings)
    package = two_kinds_package(fake_embedder)
    events = _events(fake_embedder, package.policy, 40, seed=5)  # past the cap: evictions
    for e in events:
        memory.apply(e)
    path = tmp_path / "memory.checkpoint"
    write_checkpoint(path, Checkpoint("k", 1, "e", memory.state()))
    restored = TenantKnnMemory(settings)
    restored.restore(read_checkpoint(path, "k").state, dimension=fake_embedder.dimension)
    for tenant in ("a", "b"):
        assert restored.size(tenant) == memory.size(tenant) == 12
        assert restored.coverage(tenant) == memory.coverage(tenant)
    state = memory.state()
    state.meta["capacity"] = ["12", *state.meta["capacity"][1:]]
    with pytest.raises(CheckpointError, match=r'^tenant "a" kept "12" records; its memory now '
                                              r'keeps 12$'):
        TenantKnnMemory(settings).restore(state, dimension=fake_embedder.dimension)
    more = _events(fake_embedder, package.policy, 30, seed=6, start=35)
    assert [memory.apply(e) for e in more] == [restored.apply(e) for e in more]
    models = list(package.policy.models_)
    costs = {m: 0.1 * i for i, m in enumerate(models)}
    for i in range(6):
        x = fake_embedder.embed([_prompts(i)])[0]
        assert (memory.suggest("a", x, models, costs, models[0], cost_weight=0.5)
                == restored.suggest("a", x, models, costs, models[0], cost_weight=0.5))


def test_a_checkpoint_that_does_not_fit_is_refused_whole(fake_embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    package = two_kinds_package(fake_embedder)
    learned = Learner(package.policy)
    learned.replay(_events(fake_embedder, package.policy, 30, seed=7))
    path = tmp_path / "learning.checkpoint"
    write_checkpoint(path, Checkpoint("weights-1", 30, "e30", learned.state()))
    with pytest.raises(CheckpointError, match="other weights or learning settings"):
        read_checkpoint(path, "weights-2")
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        read_checkpoint(tmp_path / "absent", "weights-1")
    (tmp_path / "garbage").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="unreadable"):
        read_checkpoint(tmp_path / "garbage", "weights-1")
    # A state of another policy's overlay (knn into cluster) changes nothing.
    target = Learner(package.policy)
    target.replay(_events(fake_embedder, package.policy, 5, seed=8))
    before = target.policy_for("a")[0].estimate(Inputs(embeddings=fake_embedder.embed(["x"])))
    knn = two_kinds_package(fake_embedder, policy="knn")
    other = Learner(knn.policy)
    other.replay(_events(fake_embedder, knn.policy, 10, seed=9))
    with pytest.raises(CheckpointError,
                       match=r"^a \"knn\" overlay's state cannot restore a 'cluster' overlay$"):
        target.restore(other.state())
    after = target.policy_for("a")[0].estimate(Inputs(embeddings=fake_embedder.embed(["x"])))
    np.testing.assert_array_equal(before.error, after.error)
    # A tampered array shape is named.
    state = learned.state()
    state.arrays["overlay0/count"] = state.array("overlay0/count")[:1]
    with pytest.raises(CheckpointError, match='array "count" has shape'):
        Learner(package.policy).restore(state)
    # The names a checkpoint holds are quoted as JSON writes them, listed as words.
    state = learned.state()
    state.meta["overlay0"]["cards"] = ["x\x1b", "y"]
    with pytest.raises(CheckpointError, match=r'^the state learned the models without a profile '
                                              r'"x\\u001b", "y"; this overlay\'s are none$'):
        Learner(package.policy).restore(state)


def _gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_writing_replaces_the_file_whole_and_clears_a_crashed_write(tmp_path: Path) -> None:
    path = tmp_path / "learning.checkpoint"
    # A write cut short by kill -9: its writer is gone.
    crashed = tmp_path / f".learning.checkpoint.{_gone_pid()}.tmp"
    crashed.write_bytes(b"half a checkpoint")
    write_checkpoint(path, Checkpoint("k", 1, "e1", State({"n": 1}, {"x": np.arange(3)})))
    write_checkpoint(path, Checkpoint("k", 2, "e2", State({"n": 2}, {"x": np.arange(5)})))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning.checkpoint"]
    loaded = read_checkpoint(path, "k")
    assert (loaded.seq, loaded.state.meta, list(loaded.state.array("x"))) == (
        2, {"n": 2}, [0, 1, 2, 3, 4])


def test_a_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    """Two processes may write the checkpoint at once: one must not remove the other's
    temporary file as stale (its rename would then fail); the last rename wins."""
    path = tmp_path / "learning.checkpoint"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        in_flight = tmp_path / f".learning.checkpoint.{other.pid}.tmp"
        write_checkpoint(in_flight, Checkpoint("k", 1, "e1", State({"n": 1}, {})))
        crashed = tmp_path / f".learning.checkpoint.{_gone_pid()}.abcd.tmp"
        crashed.write_bytes(b"half a checkpoint")
        write_checkpoint(path, Checkpoint("k", 2, "e2", State({"n": 2}, {})))
        assert in_flight.exists() and not crashed.exists()
        os.replace(in_flight, path)  # the other writer finishes
        assert read_checkpoint(path, "k").seq == 1
    finally:
        other.kill()
        other.wait(timeout=30)


def test_threads_writing_the_checkpoint_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "learning.checkpoint"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                write_checkpoint(path, Checkpoint("k", i, f"e{n}",
                                                  State({"n": n}, {"x": np.arange(1000)})))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert read_checkpoint(path, "k").seq == 19
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning.checkpoint"]


def test_the_disk_figure_counts_the_checkpoint_with_the_databases(tmp_path: Path) -> None:
    (tmp_path / "switchpoint.db").write_bytes(b"x" * 100)
    (tmp_path / "notes.txt").write_bytes(b"y" * 1000)  # not state
    size = write_checkpoint(tmp_path / CHECKPOINT_FILENAME,
                            Checkpoint("k", 1, "e1", State({}, {"x": np.zeros(50)})))
    assert disk_usage(tmp_path)["db_bytes"] == 100 + size


def test_the_checkpoint_is_readable_by_its_owner_alone(fake_embedder: FakeEmbedder,
                                                        tmp_path: Path) -> None:
    package = two_kinds_package(fake_embedder)
    learner = Learner(package.policy, LearningSettings())
    path = tmp_path / "learning.checkpoint"
    write_checkpoint(path, Checkpoint("k", 1, "e1", learner.state()))
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_knn_learner_keeps_whether_each_cost_was_measured_and_reads_a_state_without_it(
        fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    """The knn policy keeps a cost with every outcome, the decision's estimate when none was
    measured: the outcome a repeat replaces holds that cost only when it was measured, through
    a checkpoint file too. A state written before this was kept restores with it not known
    (each cost held, as before); one that says it with another value is refused."""
    package = two_kinds_package(fake_embedder, policy="knn")
    vector = tuple(fake_embedder.embed([math_prompt(1)])[0].tolist())
    model = package.policy.models_[0]
    learned = Learner(package.policy)
    learned.apply(FeedbackEvent(decision_id="measured", model=model, quality=0.5, tenant="a",
                                embedding=vector, measured_cost=0.02))
    learned.apply(FeedbackEvent(decision_id="estimated", model=model, quality=0.5,
                                tenant="a", embedding=vector, cost=0.03))
    learned.apply(FeedbackEvent(decision_id="estimated", model=model, quality=0.6,
                                tenant="a", embedding=vector))  # a repeat keeps the estimate

    def costs(learner: Learner) -> tuple[float | None, float | None]:
        held = [learner.outcome(d, "a") for d in ("measured", "estimated")]
        assert all(h is not None for h in held)
        return held[0].cost, held[1].cost  # type: ignore[union-attr]

    assert costs(learned) == (0.02, None)
    restored = Learner(package.policy)
    restored.restore(_round_trip(learned, tmp_path))
    assert costs(restored) == (0.02, None)
    older = learned.state()
    del older.arrays["overlay0/measured"]
    restored.restore(older)
    assert costs(restored) == (0.02, 0.03)
    broken = learned.state()
    broken.arrays["overlay0/measured"] = np.array([1, 2], dtype=np.int8)
    with pytest.raises(CheckpointError, match="measured"):
        restored.restore(broken)
    assert costs(restored) == (0.02, 0.03)  # nothing changed


def test_where_a_checkpoint_stands_is_read_whatever_its_arrays_hold(tmp_path: Path) -> None:
    # (plain numbers, booleans and text read without NumPy; a date's type by NumPy's reader)
    path = tmp_path / "learning.checkpoint"
    arrays: dict[str, ArrayOrBuild] = {
        "f": np.arange(6.0).reshape(2, 3), "i": np.arange(3), "b": np.array([True]),
        "t": np.array(["ab", "c"]), "h": np.ones(2, np.float16), "e": np.zeros((0, 4))}
    write_checkpoint(path, Checkpoint("k", 3, "e3", State({"n": 1}, arrays)))
    assert checkpoint_position(path, "k") == (3, "e3") == checkpoint_position(path)
    assert checkpoint_position(path, "other") is None
    write_checkpoint(path, Checkpoint("k", 4, "e4", State({}, {
        "d": np.array(["2026-01-01"], dtype="datetime64[ns]")})))
    assert checkpoint_position(path, "k") == (4, "e4")
    path.write_bytes(path.read_bytes()[:-30])  # (cut short: no archive's end)
    assert checkpoint_position(path, "k") is None


def test_a_checkpoint_whose_array_header_claims_terabytes_is_unreadable_not_allocated(
        tmp_path: Path) -> None:
    """A damaged checkpoint is not used (the log is replayed instead): one whose array header
    claims far more values than the file holds is refused before anything is allocated."""
    import io
    import zipfile

    path = tmp_path / "learning.checkpoint"
    write_checkpoint(path, Checkpoint("k", 3, "e3", State({"n": 1}, {"x": np.arange(4.0)})))
    assert checkpoint_position(path, "k") == (3, "e3")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                   "shape": (10**12,)})
    with zipfile.ZipFile(path) as old:
        members = {info.filename: old.read(info) for info in old.infolist()}
    members["a/x.npy"] = header.getvalue() + b"\0" * 32
    with zipfile.ZipFile(path, "w") as damaged:
        for name, data in members.items():
            damaged.writestr(name, data)
    with pytest.raises(CheckpointError, match="claims"):
        read_checkpoint(path, "k")
    assert checkpoint_position(path, "k") is None


def test_a_checkpoint_others_may_read_is_warned_about_as_it_is_read(
        fake_embedder: FakeEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint restored by ``cp`` (mode 644) held the traffic's lessons, a new cluster's
    prompt vector among them, for every local user to read, and nothing said so; the
    databases beside it were warned about."""
    learner = Learner(two_kinds_package(fake_embedder, policy="cluster").policy,
                      LearningSettings())
    path = tmp_path / "learning.checkpoint"
    write_checkpoint(path, Checkpoint("k", 1, "e1", learner.state()))
    for mode, warned in ((0o600, False), (0o644, True)):
        path.chmod(mode)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="switchpoint"):
            read_checkpoint(path, "k")
        said = [r.getMessage() for r in caplog.records]
        assert said == ([f"{path} can be read by other users (mode {mode:o}): it holds prompts' "
                         "vectors, feedback comments or key hashes; make it private with chmod "
                         "600"] if warned else []), said
