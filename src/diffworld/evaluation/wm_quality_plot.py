"""The files of the world-model quality report (``diffworld wm-eval``, either product's): the report
(``wm_quality.json``) and its figure (``wm_quality.png``), drawn from the report alone: an Atari run's
(``plot_report``) or an engine's (``plot_engine_report``), on the same grid of PSNR and SSIM against the
horizon."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.utils.atomic import atomic_write_text

JSON_FILE = "wm_quality.json"
"""The world-model evaluation's report (``diffworld wm-eval``, either product's)."""
PNG_FILE = "wm_quality.png"
"""Its figure."""


def write_wm_quality(
    report: dict[str, Any], out_dir: Path, plot: Callable[[dict[str, Any], Path], None]
) -> None:
    """``report`` as ``out_dir/wm_quality.json`` (strict JSON: no NaN) and its figure, drawn by ``plot``
    (``plot_report`` or ``plot_engine_report``), as ``out_dir/wm_quality.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / JSON_FILE, json.dumps(report, indent=2, allow_nan=False) + "\n")
    plot(report, out_dir / PNG_FILE)


def _figure() -> tuple[Any, Any, Any]:
    """(pyplot, figure, 2x2 axes: PSNR over SSIM)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    return plt, fig, axes


def _curve(ax: Any, x: np.ndarray, y: Any, style: str, color: str, label: str, marks: list[int]) -> None:
    ax.plot(x, y, style, color=color, label=label, lw=1.2, marker="o", markersize=3, markevery=marks)


def _finish(plt: Any, fig: Any, axes: Any, columns: tuple[str, str], title: str, path: Path) -> None:
    """Log-scale horizons, titles and grid, the legend, then the PNG."""
    for row, metric in enumerate(("PSNR (dB)", "SSIM")):
        for col, column in enumerate(columns):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_ylabel(metric)
            ax.set_title(column)
            ax.grid(True, alpha=0.3)
            if row == 1:
                ax.set_xlabel("horizon (predicted steps)")
    for ax in (axes[0, 1], *axes.flat):  # top right, unless it is empty (an engine without upsampler)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
            break
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_report(report: dict[str, Any], path: Path) -> None:
    """PSNR and SSIM against the horizon (log scale, every step, dots at the requested horizons),
    one-step and autoregressive, per run and number of denoising steps, with the copy-last-frame baseline
    dashed (once for runs whose test episodes are the same)."""
    plt, fig, axes = _figure()
    multiple = len(report["runs"]) > 1
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    greys = ["grey", "black", "silver", "dimgrey"]
    baselines_drawn: list[Any] = []
    k = 0
    for run in report["runs"]:
        per_step = run["per_step"]
        x = np.arange(1, len(per_step["num_trajectories"]) + 1)
        marks = [h - 1 for h in run["horizons_evaluated"]]  # the requested horizons, as dots
        suffix = f" ({Path(run['run_dir']).name})" if multiple else ""
        curves: list[tuple[str, Any, str, str]] = []
        if per_step["copy_last_frame"] not in baselines_drawn:  # runs of one game and seed share episodes
            grey = greys[len(baselines_drawn) % len(greys)]
            baselines_drawn.append(per_step["copy_last_frame"])
            curves.append((f"copy last frame{suffix}", per_step["copy_last_frame"], "--", grey))
        for steps in run["denoising_steps"]:
            label = f"{run['kind'].upper()} {steps} step(s){suffix}"
            curves.append((label, per_step[f"steps_{steps}"], "-", colors[k % len(colors)]))
            k += 1
        for label, curve, style, color in curves:
            for row, metric in enumerate(("psnr", "ssim")):
                for col, mode in enumerate(("one_step", "autoregressive")):
                    _curve(axes[row, col], x, curve[mode][metric], style, color, label, marks)
    game = ", ".join(sorted({r["game"] for r in report["runs"]}))
    columns = ("one-step (real context)", "autoregressive (own predictions)")
    _finish(plt, fig, axes, columns, f"World-model prediction error on held-out test episodes: {game}", path)


def plot_engine_report(report: dict[str, Any], path: Path) -> None:
    """An engine report's figure (``engine.wm_eval``): PSNR and SSIM of open-loop imagination against the
    horizon, at low resolution (left) and upsampled (right), per engine and number of denoising steps, with
    the copy-last-frame baseline dashed (once per engine and dataset). A panel without data (no upsampler,
    frames too small for SSIM) says so."""
    plt, fig, axes = _figure()
    multiple = len({e["engine"] for e in report["engines"]}) > 1
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    greys = ["grey", "black", "silver", "dimgrey"]
    baselines_drawn: list[tuple[str, str]] = []
    drawn = np.zeros((2, 2), dtype=bool)
    for k, entry in enumerate(report["engines"]):
        x = np.arange(1, len(entry["per_step_trajectories"]) + 1)
        marks = [h - 1 for h in entry["horizons"] if entry["trajectories"][str(h)] > 0]
        suffix = f" ({Path(entry['engine']).name})" if multiple else ""
        curves = [
            (f"{entry['denoising_steps']} denoising step(s){suffix}", "engine", "-", colors[k % len(colors)])
        ]
        source = (entry["engine"], entry["dataset"])
        if source not in baselines_drawn:
            grey = greys[len(baselines_drawn) % len(greys)]
            baselines_drawn.append(source)
            curves.append((f"copy last frame{suffix}", "copy_last_frame", "--", grey))
        for label, who, style, color in curves:
            for col, res in enumerate(("low_res", "full_res")):
                for row, metric in enumerate(("psnr", "ssim")):
                    values = entry.get(res, {}).get("per_step", {}).get(who, {}).get(metric)
                    if values is not None:
                        _curve(axes[row, col], x, values, style, color, label, marks)
                        drawn[row, col] = True
    for row, col in zip(*np.nonzero(~drawn), strict=True):
        axes[row, col].text(0.5, 0.5, "not measured", ha="center", transform=axes[row, col].transAxes)
    sizes = {
        res: entry[res]["size"]
        for entry in report["engines"]
        for res in ("low_res", "full_res")
        if res in entry
    }
    columns = tuple(
        f"{title} ({sizes[res][0]}x{sizes[res][1]})" if res in sizes else title
        for res, title in (("low_res", "low resolution"), ("full_res", "upsampled"))
    )
    title = "Engine open-loop imagination on the test split of its dataset"
    _finish(plt, fig, axes, (columns[0], columns[1]), title, path)
