"""The figure of the world-model quality report (``wm_quality.png``), drawn from the report alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_report(report: dict[str, Any], path: Path) -> None:
    """PSNR and SSIM against the horizon (log scale, every step, dots at the requested horizons),
    one-step and autoregressive, per run and number of denoising steps, with the copy-last-frame baseline
    dashed (once for runs whose test episodes are the same)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
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
                    axes[row, col].plot(
                        x,
                        curve[mode][metric],
                        style,
                        color=color,
                        label=label,
                        lw=1.2,
                        marker="o",
                        markersize=3,
                        markevery=marks,
                    )
    for row, metric in enumerate(("PSNR (dB)", "SSIM")):
        for col, mode in enumerate(("one-step (real context)", "autoregressive (own predictions)")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_ylabel(metric)
            ax.set_title(mode)
            ax.grid(True, alpha=0.3)
            if row == 1:
                ax.set_xlabel("horizon (predicted steps)")
    axes[0, 1].legend(fontsize=8)
    game = ", ".join(sorted({r["game"] for r in report["runs"]}))
    fig.suptitle(f"World-model prediction error on held-out test episodes: {game}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
