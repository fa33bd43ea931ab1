"""The cost-quality plot: a real PNG, written atomically, and a clear message without matplotlib."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from switchpoint.evaluation.harness import EvaluationReport, evaluate
from switchpoint.evaluation.plot import INSTALL_HINT, plot_curves, require_matplotlib
from switchpoint.records import parse_records

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COSTS = {"big": 0.01, "mid": 0.002, "small": 0.0001}


def _records_lines() -> list[str]:
    lines = []
    for split, base in (("train", 0), ("test", 100)):
        for i in range(8):
            easy = i % 2 == 0
            scores = {"big": 1.0, "mid": float(easy or i % 3 == 0), "small": float(easy)}
            prompt = (f"add the numbers {base + i} and {base + i + 1}" if easy
                      else f"prove the theorem about primes, case {base + i}")
            lines.append(json.dumps({"id": f"{split}-{i}", "prompt": prompt, "split": split,
                                     "task": "easy" if easy else "hard", "scores": scores,
                                     "costs": {m: COSTS[m] for m in scores}}))
    return lines


@pytest.fixture
def report(fake_embedder: Any) -> EvaluationReport:
    rs = parse_records(_records_lines())
    return evaluate(rs, policies=["cluster", "tiers", "fixed"], fit_split="train",
                    embedder=type(fake_embedder)(), params={"cluster": {"n_clusters": 2}},
                    name="tiny")


def test_plot_writes_a_png(report: EvaluationReport, tmp_path: Path) -> None:
    out = plot_curves(report, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000  # a drawn figure, not an empty canvas
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temporary left over
    assert out.stat().st_mode & 0o044 == 0o044  # an ordinary, readable file


def test_plot_replaces_an_existing_file(report: EvaluationReport, tmp_path: Path) -> None:
    target = tmp_path / "curves.png"
    target.write_bytes(b"old")
    plot_curves(report, target)
    assert target.read_bytes().startswith(PNG_SIGNATURE)


def test_without_matplotlib_the_error_says_what_to_install(
    report: EvaluationReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    # (not `pip install 'switchpoint[eval]'`: switchpoint installs from its clone, and that
    # name on a package index need not be it)
    with pytest.raises(ImportError, match=r"pip install matplotlib in switchpoint's "
                                          r"environment \(in a clone of switchpoint: "
                                          r"scripts/setup eval\)"):
        require_matplotlib()
    with pytest.raises(ImportError) as exc:
        plot_curves(report, tmp_path / "curves.png")
    assert str(exc.value) == INSTALL_HINT
    assert list(tmp_path.iterdir()) == []
