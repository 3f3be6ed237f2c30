"""The score report's PNG plots, drawn from the content of ``report.json`` alone.

Figures are made with matplotlib's object API on an Agg canvas, never through pyplot's global state, so
drawing a report neither needs a display nor changes the backend of a program (a notebook) that calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffworld.evaluation.report_metrics import METRIC_TITLES, METRICS, PAPER_LABEL

PROFILE_PNG = "performance_profile.png"
PER_GAME_PNG = "per_game_hns.png"
AGGREGATES_PNG = "aggregate_metrics.png"


def draw_plots(report: dict[str, Any], out: Path) -> dict[str, str]:
    """Write the plots into ``out``; returns ``{title: file name}``."""
    plots = {
        "Performance profile": (PROFILE_PNG, _performance_profile),
        "Aggregate metrics": (AGGREGATES_PNG, _aggregates),
        "Human-normalized score per game": (PER_GAME_PNG, _per_game),
    }
    for file, draw in plots.values():
        figure = draw(report)
        figure.savefig(out / file, dpi=120, bbox_inches="tight")
    return {title: file for title, (file, _) in plots.items()}


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols)


def _colors(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {name: palette(i) for i, name in enumerate(names)}


def _performance_profile(report: dict[str, Any]) -> Any:
    from rliable import plot_utils

    profile = dict(report["performance_profile"])
    tau = np.asarray(profile.pop("tau"))
    figure, ax = _figure(7, 4.5)
    plot_utils.plot_performance_profiles(
        {name: np.asarray(p["fraction"]) for name, p in profile.items()},
        tau,
        performance_profile_cis={
            name: (np.asarray(p["ci_low"]), np.asarray(p["ci_high"])) for name, p in profile.items()
        },
        colors=_colors(list(profile)),
        ax=ax,
        xlabel=r"Human-normalized score ($\tau$)",
        ylabel=r"Fraction of runs with score $> \tau$",
    )
    ax.legend(loc="upper right")
    ax.set_title(f"Performance profile ({report['num_games']} games x {report['runs_per_game']} runs)")
    return figure


def _aggregates(report: dict[str, Any]) -> Any:
    names = list(report["aggregates"])
    colors = _colors(names)
    figure, axes = _figure(3.2 * len(METRICS), 1.2 + 0.5 * len(names), ncols=len(METRICS))
    for ax, metric in zip(axes, METRICS, strict=True):
        for row, name in enumerate(names):
            a = report["aggregates"][name][metric]
            ax.barh(
                row, a["ci_high"] - a["ci_low"], left=a["ci_low"], height=0.6, color=colors[name], alpha=0.75
            )
            ax.vlines(a["value"], row - 0.3, row + 0.3, color="k")  # visible when the interval is a point
        ax.set_title(METRIC_TITLES[metric])
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.use_sticky_edges = False  # bars' edges would otherwise cancel the margin
        ax.margins(x=0.15)
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [])
        ax.grid(True, axis="x", alpha=0.25)
    figure.supxlabel(f"Human-normalized score ({report['confidence']:.0%} CI)")
    return figure


def _per_game(report: dict[str, Any]) -> Any:
    rows = sorted(report["per_game"], key=lambda r: r["mean_hns"])
    games = [r["game"] for r in rows]
    y = np.arange(len(rows))
    names = [report["label"], *([PAPER_LABEL] if PAPER_LABEL in report["aggregates"] else [])]
    colors = _colors(names)
    figure, ax = _figure(7, 1.2 + 0.32 * len(rows))
    height = 0.8 / len(names)
    ax.barh(y, [r["mean_hns"] for r in rows], height=height, color=colors[names[0]], label=names[0])
    for i, row in enumerate(rows):
        ax.plot(row["hns"], [i] * len(row["hns"]), "k.", markersize=3)
    if len(names) > 1:
        ax.barh(
            y + height,
            [r["paper_hns"] for r in rows],
            height=height,
            color=colors[PAPER_LABEL],
            label=PAPER_LABEL,
        )
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1, label="human")
    ax.set_yticks(y + height * (len(names) - 1) / 2, games)
    ax.set_xlabel("Human-normalized score (bars: mean over runs; dots: runs)")
    figure.legend(loc="outside upper center", ncols=3)
    ax.grid(True, axis="x", alpha=0.25)
    return figure
