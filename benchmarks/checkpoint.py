"""How long a start takes to take up what the service has learned: the whole feedback log
replayed, against the learning checkpoint plus the events after it.

A data_dir is filled with ``--events`` outcomes in the service's own store (the prompts of the
llmrouter records, their vectors as the bundled MiniLM makes them, drawn with replacement; a
tenth are second scores for earlier decisions), made under the bundled weights. Then
``Gateway.start`` (the in-process door, the bundled default weights: what ``switchpoint serve``
runs) is timed:

1. with no checkpoint: the whole log is replayed (what every start did before checkpoints);
2. the graceful stop after it writes the checkpoint (timed too);
3. with the checkpoint and ``--tail`` events logged after it: the checkpoint is read and only
   the tail replayed.

It also prints how long feedback waited for each checkpoint's snapshot (what the service logs):
the arrays are built and written after it, while feedback goes on.

Each start is run ``--repeats`` times (median reported). Both starts must end in the same
learned state: the script checks that the posterior's estimates for a probe set are identical.

Usage: python benchmarks/checkpoint.py [--events 100000] [--tail 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATASETS, embedded_records, timed

from switchpoint.gateway import Gateway
from switchpoint.learning import FeedbackEvent
from switchpoint.learning.checkpoint import CHECKPOINT_FILENAME
from switchpoint.policies import Inputs
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import feedback_record


def vectors(n: int, seed: int) -> np.ndarray:
    """``n`` prompt vectors: llmrouter's (cached MiniLM embeddings) when the records are there,
    else random unit vectors (every one unfamiliar: a harder case for the grown clusters)."""
    rng = np.random.default_rng(seed)
    if DATASETS["llmrouter-14task"].exists():
        pool = embedded_records("llmrouter-14task").embeddings
        assert pool is not None
        return np.asarray(pool[rng.integers(0, len(pool), n)], dtype=np.float32)
    x = rng.standard_normal((n, 384)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(data: Path, n: int, start: int, weights_id: str, models: list[str]) -> None:
    """Append ``n`` outcomes to the feedback log in ``data`` (decision ids from ``start``)."""
    rng = np.random.default_rng(start)
    x = vectors(n, seed=start)
    store = SQLiteStore(data / "switchpoint.db", synchronous="NORMAL").open()
    try:
        last = None
        for i in range(n):
            k = start + i
            repeat = k > 10 and rng.random() < 0.1  # a second score for an earlier decision
            did = f"d{int(rng.integers(0, k))}" if repeat else f"d{k}"
            event = FeedbackEvent(decision_id=did, model=models[int(rng.integers(len(models)))],
                                  quality=float(rng.random() < 0.6),
                                  embedding=tuple(x[i].tolist()))
            last = store.append(feedback_record(event, "decision", weights_id=weights_id))
        assert last is not None
        last.result()
    finally:
        store.close()


class SnapshotWaits(logging.Handler):
    """How long feedback waited for each checkpoint's snapshot (the service logs it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.ms: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if record.getMessage().startswith("learning checkpoint:") and isinstance(args, tuple):
            waited = args[-1]  # the last: milliseconds waited
            assert isinstance(waited, float)
            self.ms.append(waited)


def timed_start(data: Path, probe: Inputs) -> tuple[float, dict[str, int], np.ndarray, float]:
    """Seconds to start, the learning status's counts, the probe's estimates, and the
    seconds the graceful stop took (it writes the checkpoint)."""
    seconds, gateway = timed(lambda: Gateway.from_config({"data_dir": str(data)}))
    status = gateway.learning_status(tenants=[])
    estimates = gateway.router.learner.policy_for("default")[0].estimate(probe).error
    stop_seconds, _ = timed(gateway.close)
    counts = {k: int(status[k]) for k in ("replayed", "from_checkpoint")}
    return seconds, counts, estimates, stop_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tail", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("switchpoint").setLevel(logging.ERROR)  # "chat is off": no models here
    waits = SnapshotWaits()
    gateway_log = logging.getLogger("switchpoint.gateway")
    gateway_log.setLevel(logging.INFO)
    gateway_log.propagate = False  # its records reach only the handler counting the waits
    gateway_log.addHandler(waits)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        gateway = Gateway.from_config({"data_dir": str(data)})
        weights_id, models = gateway.router.weights_id, list(gateway.router.policy.models_)
        gateway.close()
        t0 = time.perf_counter()
        fill(data, args.events, 0, weights_id, models)
        source = ("llmrouter prompts" if DATASETS["llmrouter-14task"].exists()
                  else "random vectors: the records are not here")
        print(f"filled the feedback log with {args.events} outcomes in "
              f"{time.perf_counter() - t0:.0f} s ({source})")
        probe = Inputs(embeddings=vectors(200, seed=99))
        checkpoint = data / CHECKPOINT_FILENAME

        full: list[float] = []
        stops: list[float] = []
        for _ in range(args.repeats):
            checkpoint.unlink(missing_ok=True)
            seconds, counts, _, stop = timed_start(data, probe)
            assert counts == {"replayed": args.events, "from_checkpoint": 0}, counts
            full.append(seconds)
            stops.append(stop)
        size = checkpoint.stat().st_size
        fill(data, args.tail, args.events, weights_id, models)
        total = args.events + args.tail
        taken: list[float] = []
        for _ in range(args.repeats):
            # Each start from the same checkpoint: the one the full replay's stop wrote.
            saved = checkpoint.read_bytes()
            seconds, counts, restored_estimates, _ = timed_start(data, probe)
            checkpoint.write_bytes(saved)
            assert counts == {"replayed": total, "from_checkpoint": args.events}, counts
            taken.append(seconds)
        checkpoint.unlink()
        _, counts, truth, _ = timed_start(data, probe)  # the whole log, for the state check
        assert counts["from_checkpoint"] == 0
        assert np.array_equal(restored_estimates, truth), "the checkpoint changed what was learned"
        db = (data / "switchpoint.db").stat().st_size
        print(f"feedback log: {db / 1e6:.0f} MB on disk; checkpoint: {size / 1e6:.1f} MB, "
              f"written at the graceful stop in {statistics.median(stops):.2f} s (median)")
        print(f"feedback waits for a checkpoint's snapshot only, not for the writing: "
              f"{statistics.median(waits.ms):.0f} ms (median of {len(waits.ms)} checkpoints)")
        print(f"{'start (median of ' + str(args.repeats) + ')':<44} {'seconds':>8}")
        print(f"{'whole log replayed (' + str(args.events) + ' events)':<44} "
              f"{statistics.median(full):8.2f}")
        print(f"{'checkpoint + ' + str(args.tail) + ' events after it':<44} "
              f"{statistics.median(taken):8.2f}")
        print(f"ratio: {statistics.median(full) / statistics.median(taken):.1f}x faster; the "
              f"learned state is identical (probe estimates equal to a whole-log replay's)")


if __name__ == "__main__":
    main()
