"""``switchpoint eval``: fit on one split, measure on another, print a table or JSON, plot.

These run the real CLI in-process on a small records file written to ``tmp_path``; policies that
need embeddings use the real default embedder (a few dozen short prompts). One test runs the full
RouterBench file end to end through the installed command (3,148 prompts embedded, 15-20 s of
CPU, from the session's start: see tests/head_start.py); it needs the full record sets (the
``shared_data`` fixture) and is skipped without them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from switchpoint import policies
from switchpoint.policies import Estimates, Inputs, Policy, register_policy
from tests.command_line import run
from tests.conftest import shared_data_dir
from tests.head_start import HeadStart

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COSTS = {"big": 0.01, "mid": 0.002, "small": 0.0001}


def _line(rid: str, prompt: str, task: str, split: str, scores: dict[str, float]) -> str:
    return json.dumps({"id": rid, "prompt": prompt, "task": task, "split": split,
                       "scores": scores, "costs": {m: COSTS[m] for m in scores}})


def write_records(path: Path, splits: tuple[str, ...] = ("train", "test")) -> Path:
    lines = []
    for split in splits:
        base = 0 if split == "train" else 100
        for i in range(6):
            lines.append(_line(f"{split}-e{i}", f"What is {base + i} plus {base + i + 3}?",
                               "arith", split, {"big": 1.0, "mid": 1.0, "small": 1.0}))
            lines.append(_line(f"{split}-h{i}", f"Prove that there are infinitely many primes "
                               f"of the form 4n+3, step {base + i}.", "proofs", split,
                               {"big": 1.0, "mid": float(i % 2), "small": 0.0}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    return write_records(tmp_path / "records.jsonl")


def test_eval_fits_prints_the_table_and_plots(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "plots" / "curve.png"
    code, out, err = run(["eval", records_file, "--fit-split", "train", "--policy", "cluster",
                          "knn", "--policy", "tiers", "--param", "cluster.n_clusters=2",
                          "--param", "knn.k=3", "--plot", plot], capsys)
    assert code == 0, err
    assert "embedding 24 prompts (12 train + 12 test)" in err
    assert f"wrote the cost-quality plot to {str(plot)!r}" in err
    lines = out.splitlines()
    assert lines[0].startswith('records.jsonl: fitted on "train" (12 prompts), tested on "test" '
                               "(12 prompts), 3 models, embedder all-MiniLM-L6-v2/tail-64")
    for name in ("cluster", "knn", "tiers", "zero router", "oracle"):
        assert any(line.startswith(name) for line in lines), name
    assert "arith" in out and "proofs" in out and "best on task: small" in out
    data = plot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000
    plot.chmod(0o640)  # (the user's own choice: a plot written again over it keeps it)
    code, _, err = run(["eval", records_file, "--fit-split", "train", "--policy", "tiers",
                        "--plot", plot], capsys)
    assert code == 0, err
    assert plot.read_bytes() != data and plot.stat().st_mode & 0o777 == 0o640


def test_eval_json_without_embeddings(records_file: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    code, out, err = run(["eval", records_file, "--fit-split", "train", "--policy", "tiers",
                          "fixed", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert [p["name"] for p in d["policies"]] == ["tiers", "fixed"]
    assert d["fit_split"] == "train" and d["n_fit"] == 12 and d["n_test"] == 12
    assert d["embedder"] is None  # text policies: nothing embedded
    assert "embedding" not in err
    assert d["best_single_model"]["name"] == "big"
    assert {t["task"] for t in d["tasks"]} == {"arith", "proofs"}
    fixed = d["policies"][1]["points"][0]
    assert fixed["cost_weight"] == 0.0 and fixed["quality"] == 1.0
    assert fixed["cost"] == pytest.approx(0.01)


def test_eval_shows_a_task_name_as_text_never_as_control_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A task name from the records went to the terminal as it was: an escape sequence
    # recoloured it, a line break split the per-task table.
    path = write_records(tmp_path / "records.jsonl")
    path.write_text(path.read_text(encoding="utf-8").replace(
        '"proofs"', '"pro\\u001b[31mofs\\nx\\u2028"'), encoding="utf-8")
    code, out, err = run(["eval", path, "--policy", "tiers", "fixed"], capsys)
    assert code == 0, err
    assert "\x1b" not in out and "\u2028" not in out, out
    shown = [line for line in out.splitlines() if line.startswith("pro")]
    assert len(shown) == 1 and shown[0].startswith(
        "pro\\u001b[31mofs\\u000ax\\u2028  6   best on task: big"), shown
    code, out, err = run(["eval", path, "--policy", "tiers", "fixed", "--json"], capsys)
    assert code == 0, err  # (JSON keeps the name as it is)
    assert {t["task"] for t in json.loads(out)["tasks"]} == {"arith", "pro\x1b[31mofs\nx\u2028"}


def test_eval_defaults_fit_cluster_and_knn_on_train(
    records_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["eval", records_file, "--param", "cluster.n_clusters=2",
                          "--param", "knn.k=3", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert [p["name"] for p in d["policies"]] == ["cluster", "knn"]
    assert d["fit_split"] == "train"
    assert d["policies"][0]["params"]["n_clusters"] == 2


def test_eval_progress_goes_to_stderr_and_the_json_stays_whole(
    records_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["eval", records_file, "--param", "cluster.n_clusters=2",
                          "--param", "knn.k=3", "--json", "--progress"], capsys)
    assert code == 0, err
    assert [p["name"] for p in json.loads(out)["policies"]] == ["cluster", "knn"]
    assert "embedding 24 prompts (12 train + 12 test) with all-MiniLM-L6-v2/tail-64\n" in err
    assert "\r  [##############################] 24/24 100%" in err
    assert 'fitting "cluster" on 12 train prompts... done (' in err
    assert 'fitting "knn" on 12 train prompts... done (' in err
    code, quiet_out, err = run(["eval", records_file, "--param", "cluster.n_clusters=2",
                                "--param", "knn.k=3", "--json", "--quiet"], capsys)
    assert code == 0 and err == ""
    assert [p["aiq"] for p in json.loads(quiet_out)["policies"]] == [
        p["aiq"] for p in json.loads(out)["policies"]]


def test_eval_weights(real_weights_dir: Path, small_lines: list[str], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "rb.jsonl"
    records.write_text("".join(small_lines[:30]), encoding="utf-8")  # all in split 'test'
    code, out, err = run(["eval", records, "--weights", real_weights_dir, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["fit_split"] is None and d["n_test"] == 30
    assert [p["name"] for p in d["policies"]] == ["cluster"]
    assert d["policies"][0]["source"].startswith("weights cluster-")
    assert len(d["models"]) == 11
    code, out, _ = run(["eval", records, "--weights", real_weights_dir], capsys)
    assert code == 0 and "given weights" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["{missing}"], "file not found", id="missing-file"),
        pytest.param(["{records}", "--policy", "telepathy"],
                     '--policy: unknown policy "telepathy"', id="unknown-policy"),
        pytest.param(["{records}", "--policy", "knn", "knn"],
                     '--policy: "knn" named more than once: name each policy once',
                     id="policy-twice"),
        pytest.param(["{train_only}"], "train_only.jsonl': no records in split \"test\", which "
                     'eval would measure on; splits present: "train"; name the split to '
                     "measure on with --test-split", id="no-test-split"),
        pytest.param(["{test_only}"], "test_only.jsonl': no records in split \"train\", which eval "
                     'would fit on; splits present: "test"; name the split to fit on with '
                     "--fit-split", id="no-fit-split"),
        pytest.param(["{unsplit}"], 'unsplit.jsonl\': no records in split "test", which eval '
                     'would measure on; no record has a "split" field; give each record one',
                     id="no-splits-at-all"),
        pytest.param(["{records}", "--test-split", "holdout"], 'no records in split "holdout"',
                     id="unknown-test-split"),
        pytest.param(["{records}", "--weights", "{tmp}", "--fit-split", "train"], "not both",
                     id="weights-and-fit"),
        pytest.param(["{records}", "--weights", "{tmp}", "--policy", "knn"],
                     "apply when fitting", id="weights-and-policy"),
        pytest.param(["{records}", "--param", "n_clusters=3"], "policy.name=value",
                     id="param-without-policy"),
        pytest.param(["{records}", "--param", "knn.k=3", "--policy", "tiers"],
                     '--param: parameters given for "knn", which is not among the policies '
                     "evaluated (\"tiers\"); give parameters of those, or evaluate that policy too",
                     id="param-for-other-policy"),
        pytest.param(["{records}", "--param", "cluster.n_clusters=0"],
                     "--param cluster.n_clusters: must be >= 1, got 0", id="bad-param-value"),
        pytest.param(["{records}", "--param", "cluster.n_clusters=1" + "0" * 9999],
                     '--param cluster.n_clusters: "10000000000000000000000000000000000000000000'
                     '0000000000000…" is a whole number of more than 100 digits, larger than any '
                     "value taken here", id="param-of-10000-digits"),
        pytest.param(["{records}", "--param", "cluster.n_clusters=1e3", "--param", "knn.k=0e0"],
                     "--param knn.k: must be >= 1, got 0", id="param-read-as-a-whole-number"),
        pytest.param(["{records}", "--param", "knn.colour=red"],
                     '--param knn.colour: the "knn" policy has no parameter(s) "colour"',
                     id="unknown-param"),
        pytest.param(["{records}", "--param", 'knn.weights={"a": 1, "a": 2}'],
                     '--param knn.weights: the key "a" is written twice', id="param-key-twice"),
        pytest.param(["{records}", "--fit-split", "test"],
                     '--fit-split: is the test split "test"; fitting on the prompts you test on '
                     "measures nothing: fit on another split, such as train", id="fit-on-test"),
        pytest.param(["{records}", "--plot", "{tmp}/curve.pdf"], ".png", id="plot-not-png"),
        pytest.param(["{records}", "--weights", "{tmp}/nowhere"], "nowhere", id="bad-weights"),
    ],
)
def test_eval_bad_input_exits_2_and_writes_nothing(
    argv: list[str], needle: str, records_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train_only = write_records(tmp_path / "train_only.jsonl", splits=("train",))
    test_only = write_records(tmp_path / "test_only.jsonl", splits=("test",))
    unsplit = tmp_path / "unsplit.jsonl"
    unsplit.write_text("".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "split"}) + "\n"
        for line in records_file.read_text(encoding="utf-8").splitlines()), encoding="utf-8")
    subs = {"{records}": str(records_file), "{missing}": str(tmp_path / "missing.jsonl"),
            "{train_only}": str(train_only), "{test_only}": str(test_only),
            "{unsplit}": str(unsplit), "{tmp}": str(tmp_path)}
    args = []
    for a in argv:
        for key, value in subs.items():
            a = a.replace(key, value)
        args.append(a)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = run(["eval", *args, "--plot", tmp_path / "out.png"]
                         if "--plot" not in args else ["eval", *args], capsys)
    assert code == 2, (out, err)
    assert err.startswith("switchpoint: error:"), err
    assert needle in err, err
    assert "Traceback" not in err and "embedding" not in err
    assert out == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_eval_plot_where_no_file_can_be_written_fails_before_any_work(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "curves.png"
    folder.mkdir()
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)  # (a device such as /dev/full is refused alike)
    for target, needle in ((folder, f"--plot: '{folder}' is a directory; give a file path, "
                                    f"e.g. '{folder / 'curves.png'}'"),
                           (pipe, f"--plot: '{pipe}' is not a regular file (a device, pipe "
                                  "or socket), which the file written would replace")):
        code, out, err = run(["eval", records_file, "--plot", target], capsys)
        assert code == 2 and out == "", err
        assert needle in err and "embedding" not in err and "fitting" not in err, err
    assert list(folder.iterdir()) == [] and pipe.is_fifo()


def test_eval_plot_without_matplotlib_fails_before_any_work(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run(["eval", records_file, "--plot", tmp_path / "c.png"], capsys)
    assert code == 2 and out == ""
    assert "pip install matplotlib" in err and "scripts/setup eval" in err
    assert "embedding" not in err
    assert not (tmp_path / "c.png").exists()


def real_routerbench_eval(workdir: Path) -> list[str] | None:
    """The real command on the real file, as a user runs it (None without the file)."""
    records = shared_data_dir() / "routerbench-3task.jsonl"
    if not records.is_file():
        return None
    return [str(Path(sys.executable).with_name("switchpoint")), "eval", str(records),
            "--fit-split", "train", "--policy", "cluster", "--plot", str(workdir / "x.png")]


@pytest.mark.head_start.with_args(real_routerbench_eval)
def test_eval_real_routerbench_end_to_end(shared_data: Path, head_start: HeadStart) -> None:
    """The real command on the real file, as a user runs it: it embeds 3,148 prompts with the
    default (fused int8) MiniLM, about 15-20 s of CPU on this 2-core machine, so it runs from
    the session's start in the time the other tests leave the CPU idle."""
    proc = head_start.result()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "(2205 prompts)" in lines[0] and "(943 prompts)" in lines[0]
    zero = next(line for line in lines if line.startswith("zero router"))
    assert zero.split()[6] == "0.823"  # the zero-router AIQ docs/figures.md quotes
    cluster = next(line for line in lines if line.startswith("cluster "))
    assert float(cluster.split()[1]) > 0.823  # the learned router beats the zero router
    assert (head_start.workdir / "x.png").read_bytes().startswith(PNG_SIGNATURE)


class _DottedThreshold(Policy):
    """The cheapest model whose mean score is at least ``threshold``: a registered policy
    whose name holds a dot, as a version in a name does."""

    name = "acme.cheapest.v2"
    requires = "none"

    def __init__(self, threshold: float = 0.7) -> None:
        self.threshold = threshold

    def _estimate(self, inputs: Inputs) -> Estimates:
        return self.estimates(inputs, np.where(1.0 - self.error_ >= self.threshold, 0.0, 1.0))


def test_eval_s_param_names_a_registered_policy_whose_name_holds_dots(
        records_file: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--param POLICY.NAME=VALUE`` splits at the last dot (a parameter's name holds none),
    so a registered policy named ``acme.cheapest.v2`` takes its parameter, where its name was
    cut at the first dot into an unknown policy ``acme``."""
    monkeypatch.setattr(policies, "_registered", {})  # (the process's registry left as it was)
    register_policy(_DottedThreshold)
    code, out, err = run(["eval", records_file, "--policy", "acme.cheapest.v2", "--param",
                          "acme.cheapest.v2.threshold=0.25", "--json"], capsys)
    assert code == 0, err
    (fitted,) = json.loads(out)["policies"]
    assert (fitted["name"], fitted["params"]["threshold"]) == ("acme.cheapest.v2", 0.25)
