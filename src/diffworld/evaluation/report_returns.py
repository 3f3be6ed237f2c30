"""The score report of games without human reference scores: returns, not normalized.

``diffworld report`` normalizes Atari 100k scores by the human and random references (``report.py``). Any
other set of games (DeepMind Control tasks, CatchContinuous, ``gym:`` environments, Atari games outside the
benchmark) gets this report: per game, the final score of each run (the mean return of its final test
episodes) with its mean and standard deviation; over the DeepMind Control tasks among them, the mean, median
and IQM of their scores with 95 % stratified-bootstrap confidence intervals (rliable, as for Atari), which
is how DMC results are aggregated (all its tasks score on one 0-1,000 scale: 1,000 steps of rewards in
[0, 1]). No random or human reference, so no optimality gap; the report says how many of the 20 DMC-vision
tasks it covers. A set of games holding an Atari 100k game and another game is reported this way too, the
Atari game's returns raw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffworld.evaluation.report_metrics import CONFIDENCE, METRIC_TITLES, ReportError, interval_estimates
from diffworld.games import DMC_VISION_TASKS, is_dmc

RETURN_METRICS = ("mean", "median", "iqm")
"""The aggregates of DeepMind Control returns (no optimality gap: no reference score)."""
RETURNS_PNG = "per_game_returns.png"


def returns_matrix(per_game: dict[str, list[float]], games: list[str]) -> np.ndarray:
    """The ``(runs, games)`` matrix of raw scores of ``games``, which need as many runs each."""
    counts = {game: len(per_game[game]) for game in games}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{game}: {n}" for game, n in counts.items())
        raise ReportError(
            f"Every DeepMind Control task needs the same number of runs for the stratified bootstrap, got "
            f"{detail}. Finish the missing runs, or pass only runs that make equal counts."
        )
    return np.array([per_game[game] for game in games], dtype=np.float64).T


def _return_aggregates(matrix: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array(
        [metrics.aggregate_mean(matrix), metrics.aggregate_median(matrix), metrics.aggregate_iqm(matrix)]
    )


def compute_returns_report(
    per_game: dict[str, list[float]], *, label: str, reps: int, seed: int
) -> dict[str, Any]:
    """The report's content for games scored by their returns (see the module docstring)."""
    games = sorted(per_game)
    dmc = [game for game in games if is_dmc(game)]
    aggregates: dict[str, Any] = {}
    if dmc:
        points, intervals = interval_estimates(
            {label: returns_matrix(per_game, dmc)}, _return_aggregates, reps, seed
        )
        aggregates[label] = {
            metric: {
                "value": float(points[label][i]),
                "ci_low": float(intervals[label][0, i]),
                "ci_high": float(intervals[label][1, i]),
            }
            for i, metric in enumerate(RETURN_METRICS)
        }
    return {
        "label": label,
        "scores": "returns",
        "games": games,
        "num_games": len(games),
        "aggregate_games": dmc,
        "dmc_vision_tasks": [game for game in dmc if game in DMC_VISION_TASKS],
        "runs_per_game": {game: len(per_game[game]) for game in games},
        "bootstrap": {"reps": reps, "seed": seed},
        "confidence": CONFIDENCE,
        "aggregates": aggregates,
        "per_game": [
            {
                "game": game,
                "dmc": is_dmc(game),
                "scores": per_game[game],
                "mean_score": float(np.mean(per_game[game])),
                "std_score": float(np.std(per_game[game])),
            }
            for game in games
        ],
    }


def returns_markdown(report: dict[str, Any]) -> str:
    label, aggregates = report["label"], report["aggregates"]
    lines = [
        f"# Score report (returns): {label}",
        "",
        f"{report['num_games']} game(s). Scores are returns (a run's score: the mean return of its final "
        "test episodes), not normalized: these games have no human or random reference score.",
    ]
    if aggregates:
        bootstrap = report["bootstrap"]
        vision = len(report["dmc_vision_tasks"])
        lines += [
            "",
            f"Over the {len(report['aggregate_games'])} DeepMind Control task(s) ({vision} of the "
            f"{len(DMC_VISION_TASKS)} DMC-vision tasks; scores on a 0-1,000 scale): mean and median over "
            "tasks of each task's mean over runs, IQM over all runs x tasks. Brackets: "
            f"{report['confidence']:.0%} stratified-bootstrap confidence intervals ({bootstrap['reps']} "
            f"replications, seed {bootstrap['seed']}).",
            "",
            f"| metric | {label} |",
            "| --- | --- |",
        ]
        for metric, a in aggregates[label].items():
            figure = f"{a['value']:.1f} [{a['ci_low']:.1f}, {a['ci_high']:.1f}]"
            lines.append(f"| {METRIC_TITLES[metric]} | {figure} |")
    presets = sorted({str(run["preset"]) for run in report.get("runs", [])})
    steps = sorted({run["env_steps"] for run in report.get("runs", []) if run["env_steps"] is not None})
    if presets:
        lines += [
            "",
            f"Runs: preset {', '.join(presets)}; env steps {', '.join(map(str, steps)) or 'unknown'}.",
        ]
    lines += [
        "",
        "## Per game",
        "",
        "| game | runs | mean score | std | scores |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in report["per_game"]:
        scores = ", ".join(f"{s:.1f}" for s in row["scores"])
        lines.append(
            f"| {row['game']} | {len(row['scores'])} | {row['mean_score']:.1f} | {row['std_score']:.1f} | "
            f"{scores} |"
        )
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({file})" for name, file in report["plots"].items()]
    return "\n".join(lines) + "\n"


def draw_returns_plots(report: dict[str, Any], out: Path) -> dict[str, str]:
    """The mean score of each game (bars) and its runs' scores (dots), in ``out``; ``{title: file}``."""
    from diffworld.evaluation.report_plots import _figure

    rows = report["per_game"]
    figure, ax = _figure(7, 1.2 + 0.32 * len(rows))
    y = np.arange(len(rows))
    ax.barh(y, [r["mean_score"] for r in rows], height=0.6, color="tab:blue", label=report["label"])
    for i, row in enumerate(rows):
        ax.plot(row["scores"], [i] * len(row["scores"]), "k.", markersize=3)
    ax.set_yticks(y, [r["game"] for r in rows])
    ax.set_xlabel("Return (bars: mean over runs of each run's score; dots: runs)")
    ax.grid(True, axis="x", alpha=0.25)
    figure.savefig(out / RETURNS_PNG, dpi=120, bbox_inches="tight")
    return {"Return per game": RETURNS_PNG}
