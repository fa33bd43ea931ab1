"""Cost-quality curves of an :class:`~switchpoint.evaluation.harness.EvaluationReport` as a PNG.

matplotlib is an optional extra (``[eval]``: ``scripts/setup eval`` in a clone), imported only
here and only when a plot is drawn; it renders with the Agg backend through a private canvas, so
plotting never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchpoint._files import write_atomically
from switchpoint._messages import json_quoted
from switchpoint.evaluation.metrics import Point

if TYPE_CHECKING:
    from switchpoint.evaluation.harness import EvaluationReport

INSTALL_HINT = ("plotting needs matplotlib, which the [eval] extra installs: pip install "
                "matplotlib in switchpoint's environment (in a clone of switchpoint: "
                "scripts/setup eval)")


def require_matplotlib() -> None:
    """Raise :class:`ImportError` with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


def _short(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def _flat_to(hull: list[Point], hi: float, steps: int = 24) -> tuple[list[float], list[float]]:
    """The hull as a line, held flat past its last point up to ``hi`` (as AIQ counts it).

    A hull segment mixes two operating points, so quality is linear in *cost*; on the log axis
    that is a curve, drawn here from ``steps`` points per segment.
    """
    xs: list[float] = []
    ys: list[float] = []
    for a, b in itertools.pairwise(hull):
        for i in range(steps):
            t = i / steps
            xs.append(a.cost + t * (b.cost - a.cost))
            ys.append(a.quality + t * (b.quality - a.quality))
    if hull:
        xs.append(hull[-1].cost)
        ys.append(hull[-1].quality)
    if xs and xs[-1] < hi:
        xs.append(hi)
        ys.append(ys[-1])
    return xs, ys


def plot_curves(report: EvaluationReport, path: str | Path) -> Path:
    """Write the report's cost-quality curves to ``path`` as a PNG and return the path.

    Drawn: each policy's hull (solid line, flat past its last point as AIQ counts it) and its raw
    λ-sweep points, each single model (a labelled dot), the zero router's hull (dashed), and the
    oracle's curve and point. Cost is on a log axis. The file is written atomically.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    lo, hi = report.cost_range
    fig = Figure(figsize=(12, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax: Any = fig.add_subplot()
    ax.set_xscale("log")

    xs, ys = _flat_to(report.zero_hull, hi)
    ax.plot(xs, ys, linestyle="--", color="0.45", linewidth=1.6,
            label=f"zero router, single-model hull (AIQ {report.zero_aiq:.3f})")
    ax.scatter([m.cost for m in report.models], [m.quality for m in report.models],
               color="0.2", s=28, zorder=5, label="single models")
    for m in report.models:
        right_edge = m.cost >= hi * 0.999  # label the priciest models to their left
        ax.annotate(_short(m.name), (m.cost, m.quality), textcoords="offset points",
                    xytext=(-4, -10) if right_edge else (4, -10),
                    ha="right" if right_edge else "left", fontsize=7, color="0.2", zorder=7,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                          "alpha": 0.75})

    colors = [f"C{i}" for i in range(10)]
    for i, res in enumerate(report.policies):
        color = colors[i % len(colors)]
        hx, hy = _flat_to(res.hull, hi)
        ax.plot(hx, hy, color=color, linewidth=2.0,
                label=f"{res.name} (AIQ {res.aiq:.3f})", zorder=3)
        ax.scatter([p.cost for p in res.points], [p.quality for p in res.points],
                   color=color, s=10, alpha=0.45, zorder=2)

    ox, oy = _flat_to(report.oracle_curve, hi)
    ax.plot(ox, oy, linestyle=":", color="black", linewidth=1.4,
            label=f"oracle (AIQ {report.oracle_aiq:.3f})")
    ax.scatter([report.oracle.cost], [report.oracle.quality], marker="*", s=140,
               color="gold", edgecolors="black", zorder=6, label="oracle point")

    ax.axvline(lo, color="0.8", linewidth=0.8)
    ax.axvline(hi, color="0.8", linewidth=0.8)
    ax.set_xlabel("mean cost per prompt, USD (log scale)")
    ax.set_ylabel("mean quality")
    fitted = (f"fitted on {json_quoted(report.fit_split)}" if report.fit_split is not None
              else "given weights")
    ax.set_title(f"{report.records}: cost-quality on {json_quoted(report.test_split)} "
                 f"({report.n_test} prompts), {fitted}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)

    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, lambda fh: fig.savefig(fh, format="png"), keep_mode=True)
    return target
