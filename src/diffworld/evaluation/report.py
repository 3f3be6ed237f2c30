"""The Atari 100k score report: aggregate human-normalized scores with confidence intervals (rliable).

Conventions (rliable's, which the paper and docs/method.md §1 follow), on the matrix of human-normalized
scores with one row per run (seed) and one column per game:

- **mean**: mean over games of the per-game mean (with as many runs per game, the mean over all runs).
- **median**: median over games of the per-game mean, ``rliable.metrics.aggregate_median``. On the
  paper's scores this gives the published 0.373; the median over all 130 runs would give 0.338.
- **IQM**: the interquartile mean, the 25 %-trimmed mean over all runs x games together.
- **optimality gap**: ``1 - mean(min(HNS, 1))`` over all runs x games: how far below human level.

Each comes with a 95 % stratified-bootstrap confidence interval (runs resampled within each game,
percentile method). rliable draws its bootstrap indices from numpy's *global* generator and ignores its
``random_state`` argument, so :func:`compute_report` seeds the global generator for the computation and
puts its state back afterwards: the same inputs and seed give the same intervals.

Inputs are sweep folders (every run folder below them), run folders and ``eval.json`` files (a run's score
is the mean return of its final evaluation), and score JSON files in the paper-scores format
(``{game: [score of each run]}``). :func:`build_report` writes ``report.json``, ``report.md`` and the PNG
plots of :mod:`diffworld.evaluation.report_plots`.

Games without reference scores (DeepMind Control tasks, continuous-control games, Atari games outside the
benchmark) are reported by their returns instead (:mod:`diffworld.evaluation.report_returns`), when none of
the report's games is an Atari 100k game. A report that mixes the two kinds is refused in one line (report
them separately), so that a stray run in a sweep folder never turns an Atari report into one without its
human-normalized aggregates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.evaluation.report_metrics import (
    CONFIDENCE,
    METRIC_TITLES,
    METRICS,
    PAPER_LABEL,
    ReportError,
    global_numpy_seed,
    interval_estimates,
)
from diffworld.evaluation.report_plots import draw_plots
from diffworld.evaluation.report_returns import compute_returns_report, draw_returns_plots, returns_markdown
from diffworld.evaluation.scores import human_normalized_score, paper_scores, reference_scores
from diffworld.run.folder import CONFIG_FILE, EVAL_FILE, is_run_dir_locked, run_dir_holder
from diffworld.utils.atomic import atomic_write_text

DEFAULT_REPS = 50_000
"""rliable's default number of bootstrap replications for the aggregate metrics (about 10 s here)."""
MAX_PROFILE_REPS = 2_000
"""rliable's default for performance-profile bands: each replication evaluates every threshold."""
PROFILE_TAUS = np.linspace(0.0, 8.0, 81)
"""HNS thresholds of the performance profile, as in rliable's Atari 100k figures."""
REPORT_JSON, REPORT_MD = "report.json", "report.md"


@dataclass
class Scores:
    """Final scores (raw returns, one per run) per game, and where each run's score came from."""

    per_game: dict[str, list[float]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    """One entry per eval.json read: game, seed, preset, env_steps, score, path."""

    def add(self, game: str, score: float) -> None:
        if not math.isfinite(score):
            raise ReportError(f"A score of {game} is {score}: every run needs a finite final score.")
        self.per_game.setdefault(game, []).append(float(score))


def collect_scores(sources: Sequence[Path]) -> Scores:
    """Read the scores of sweep folders, run folders, ``eval.json`` files and score JSON files."""
    if not sources:
        raise ReportError("Nothing to report: give a sweep folder, run folders or a score JSON file.")
    scores = Scores()
    eval_files: dict[Path, None] = {}  # ordered set: a run reached twice (sweep and run folder) counts once
    for source in sources:
        if source.is_dir():
            found = (
                [source / EVAL_FILE] if (source / EVAL_FILE).is_file() else sorted(source.rglob(EVAL_FILE))
            )
            if not found and (source / CONFIG_FILE).is_file() and is_run_dir_locked(source):
                raise ReportError(
                    f"{source} is still training (by {run_dir_holder(source)}): its score is written to "
                    f"{source / EVAL_FILE} when the run ends; report it then."
                )
            if not found:
                raise ReportError(
                    f"{source} holds no finished run (no {EVAL_FILE} in it or below it): finish its runs "
                    f"('diffworld train --resume <run>' or re-run the sweep) or pass other folders."
                )
            eval_files.update(dict.fromkeys(path.resolve() for path in found))
        elif source.is_file():
            data = _read_json(source)
            if _is_eval_json(data):
                eval_files[source.resolve()] = None
            else:
                _add_score_file(scores, source, data)
        else:
            raise ReportError(f"{source} does not exist.")
    seen: dict[tuple[str, Any], Path] = {}
    for path in eval_files:
        data = _read_json(path)
        if not _is_eval_json(data):
            raise ReportError(f"{path} is not a diffworld eval.json (it lacks 'game' or 'mean').")
        key = (data["game"], data.get("seed"))
        if key in seen:
            raise ReportError(
                f"Two runs of {key[0]} with seed {key[1]}: {seen[key]} and {path}. Pass only one of them."
            )
        seen[key] = path
        scores.add(data["game"], data["mean"])
        scores.runs.append(
            {
                "game": data["game"],
                "seed": data.get("seed"),
                "preset": data.get("preset"),
                "env_steps": data.get("env_steps"),
                "score": data["mean"],
                "path": str(path),
            }
        )
    return scores


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"Cannot read {path} as JSON ({e}).") from None


def _is_eval_json(data: Any) -> bool:
    return isinstance(data, dict) and "game" in data and "mean" in data


def _add_score_file(scores: Scores, path: Path, data: Any) -> None:
    if not (
        isinstance(data, dict)
        and data
        and all(
            isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            for v in data.values()
        )
    ):
        raise ReportError(
            f"{path} is neither an eval.json nor a score file like the paper's "
            '({"Alien": [703.1, 683.6, ...], ...}: each game\'s final score per run).'
        )
    empty = [game for game, values in data.items() if not values]
    if empty:
        raise ReportError(
            f"{path}: no score for {', '.join(empty)}; each game needs the final score of at least one run."
        )
    for game, values in data.items():
        for value in values:
            scores.add(game, value)


def _check_dependencies() -> None:
    try:
        import matplotlib  # noqa: F401
        import rliable  # noqa: F401
    except ImportError as e:
        raise ReportError(f"The score report needs {e.name}: pip install 'diffworld[report]'.") from None


def hns_matrix(per_game: dict[str, list[float]]) -> tuple[list[str], np.ndarray]:
    """Games (sorted) and the ``(runs, games)`` matrix of human-normalized scores rliable works on."""
    games = sorted(per_game)
    if not games or not all(per_game[game] for game in games):
        raise ReportError("Nothing to report: every game needs the final score of at least one run.")
    counts = {game: len(per_game[game]) for game in games}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{game}: {n}" for game, n in counts.items())
        raise ReportError(
            f"Every game needs the same number of runs for the stratified bootstrap, got {detail}. Finish "
            "the missing runs, or pass only runs that make equal counts."
        )
    columns = [[human_normalized_score(game, s) for s in per_game[game]] for game in games]
    return games, np.array(columns, dtype=np.float64).T


def _aggregates(matrix: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_mean(matrix),
            metrics.aggregate_median(matrix),
            metrics.aggregate_iqm(matrix),
            metrics.aggregate_optimality_gap(matrix),
        ]
    )


def _profiles(
    matrices: dict[str, np.ndarray], reps: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score distributions: the fraction of all runs x games with HNS above each threshold, with bands."""
    from rliable import library

    with global_numpy_seed(seed):
        return library.create_performance_profile(
            matrices, PROFILE_TAUS, reps=reps, confidence_interval_size=CONFIDENCE
        )


def compute_report(
    per_game: dict[str, list[float]], *, label: str, reps: int = DEFAULT_REPS, seed: int = 0
) -> dict[str, Any]:
    """The report's content (what ``report.json`` holds), for scores per game and run.

    The paper's DIAMOND scores on the same games are computed alongside, unless the scores are the
    paper's own. Where no game is an Atari 100k game, the report of returns instead
    (``report_returns.compute_returns_report``; its ``scores`` is ``"returns"``); a mix of both kinds is
    refused.
    """
    if reps < 1:
        raise ReportError(f"--reps must be at least 1 (got {reps}).")
    _check_dependencies()
    others = [game for game in per_game if game not in reference_scores()]
    if others:
        atari = [game for game in per_game if game in reference_scores()]
        if atari:
            raise ReportError(
                f"{others[0]} is not an Atari 100k game, so it has no human-normalized score, unlike "
                f"{atari[0]}: report the 26 benchmark games ('diffworld games --atari100k') and the other "
                "games (by their returns) separately."
            )
        if not all(per_game.values()):
            raise ReportError("Nothing to report: every game needs the final score of at least one run.")
        return compute_returns_report(per_game, label=label, reps=reps, seed=seed)
    games, matrix = hns_matrix(per_game)
    paper = {game: paper_scores()[game] for game in games}
    matrices = {label: matrix}
    if paper != per_game:
        matrices[PAPER_LABEL] = hns_matrix(paper)[1]
    points, intervals = interval_estimates(matrices, _aggregates, reps, seed)
    profile_points, profile_intervals = _profiles(matrices, min(reps, MAX_PROFILE_REPS), seed)
    return {
        "label": label,
        "games": games,
        "num_games": len(games),
        "runs_per_game": int(matrix.shape[0]),
        "bootstrap": {"reps": reps, "profile_reps": min(reps, MAX_PROFILE_REPS), "seed": seed},
        "confidence": CONFIDENCE,
        "aggregates": {
            name: {
                metric: {
                    "value": float(points[name][i]),
                    "ci_low": float(intervals[name][0, i]),
                    "ci_high": float(intervals[name][1, i]),
                }
                for i, metric in enumerate(METRICS)
            }
            for name in matrices
        },
        "performance_profile": {
            "tau": PROFILE_TAUS.tolist(),
            **{
                name: {
                    "fraction": profile_points[name].tolist(),
                    "ci_low": profile_intervals[name][0].tolist(),
                    "ci_high": profile_intervals[name][1].tolist(),
                }
                for name in matrices
            },
        },
        "per_game": [_game_row(game, per_game[game], matrix[:, j]) for j, game in enumerate(games)],
    }


def _game_row(game: str, scores: list[float], hns: np.ndarray) -> dict[str, Any]:
    ref = reference_scores()[game]
    paper_mean = float(np.mean(paper_scores()[game]))
    return {
        "game": game,
        "scores": scores,
        "mean_score": float(np.mean(scores)),
        "hns": hns.tolist(),
        "mean_hns": float(hns.mean()),
        "random": ref["random"],
        "human": ref["human"],
        "paper_mean_score": paper_mean,
        "paper_hns": human_normalized_score(game, paper_mean),
    }


def build_report(
    sources: Sequence[Path], out: Path, *, reps: int = DEFAULT_REPS, seed: int = 0, label: str | None = None
) -> dict[str, Any]:
    """Collect the scores of ``sources``, compute the report, write it to ``out`` and return it."""
    scores = collect_scores(sources)
    if label is None:
        only_score_file = len(sources) == 1 and sources[0].is_file() and not scores.runs
        label = sources[0].stem if only_score_file else "diffworld"
    report = compute_report(scores.per_game, label=label, reps=reps, seed=seed)
    report["runs"] = scores.runs
    report["sources"] = [str(s) for s in sources]
    write_report(report, out)
    return report


def write_report(report: dict[str, Any], out: Path) -> None:
    """``report.json``, ``report.md`` and the plots, in ``out`` (created; earlier report files replaced)."""
    _check_dependencies()
    out.mkdir(parents=True, exist_ok=True)
    returns = report.get("scores") == "returns"
    report["plots"] = draw_returns_plots(report, out) if returns else draw_plots(report, out)
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / REPORT_MD, returns_markdown(report) if returns else to_markdown(report))


def to_markdown(report: dict[str, Any]) -> str:
    label, aggregates = report["label"], report["aggregates"]
    names = list(aggregates)
    bootstrap = report["bootstrap"]
    lines = [
        f"# Atari 100k score report: {label}",
        "",
        f"{report['num_games']} games x {report['runs_per_game']} run(s) per game. Human-normalized score "
        "(HNS) = (score - random) / (human - random). Mean and median: over games, of each game's mean over "
        "runs; IQM: 25 %-trimmed mean over all runs x games; optimality gap: 1 - mean(min(HNS, 1)) over all "
        f"runs x games (lower is better). Brackets: {report['confidence']:.0%} stratified-bootstrap "
        f"confidence intervals ({bootstrap['reps']} replications, seed {bootstrap['seed']}).",
    ]
    if report["num_games"] < len(reference_scores()):
        lines += [
            "",
            f"Only {report['num_games']} of the {len(reference_scores())} benchmark games: the "
            "aggregates are not comparable with the paper's full-benchmark figures.",
        ]
    if report["runs_per_game"] == 1:
        lines += ["", "One run per game: the bootstrap has nothing to resample, the intervals are points."]
    presets = sorted({str(run["preset"]) for run in report.get("runs", [])})
    steps = sorted({run["env_steps"] for run in report.get("runs", []) if run["env_steps"] is not None})
    if presets:
        lines += [
            "",
            f"Runs: preset {', '.join(presets)}; env steps {', '.join(map(str, steps)) or 'unknown'}.",
        ]
    lines += ["", "| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for metric in METRICS:
        cells = [
            f"{a['value']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
            for a in (aggregates[name][metric] for name in names)
        ]
        lines.append(f"| {METRIC_TITLES[metric]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per game",
        "",
        f"Score: mean over runs of each run's final score. {PAPER_LABEL}: mean over its 5 seeds.",
        "",
        f"| game | runs | score | HNS | {PAPER_LABEL} score | {PAPER_LABEL} HNS | random | human |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["per_game"]:
        lines.append(
            f"| {row['game']} | {len(row['scores'])} | {row['mean_score']:.1f} | {row['mean_hns']:.3f} | "
            f"{row['paper_mean_score']:.1f} | {row['paper_hns']:.3f} | {row['random']:g} | {row['human']:g} |"
        )
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({file})" for name, file in report["plots"].items()]
    return "\n".join(lines) + "\n"
