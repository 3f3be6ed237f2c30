"""Learning curves from ``metrics.jsonl``: returns against env steps and the models' losses, several runs
on one figure (matplotlib, Agg: no screen needed); an engine's losses and open-loop quality against its
updates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffworld.errors import UserError
from diffworld.run.metrics_file import METRICS_FILE, read_metrics

DEFAULT_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "return",
        ("collection/test/return_mean", "collection/train/return_mean", "evaluation/final/return_mean"),
    ),
    ("denoiser loss", ("denoiser/train/loss_denoising", "denoiser/test/loss_denoising")),
    ("reward/termination loss", ("reward_model/train/loss", "reward_model/test/loss")),
    ("actor-critic loss", ("actor_critic/train/loss",)),
    ("policy entropy", ("actor_critic/train/entropy",)),
    ("imagined lambda-return", ("actor_critic/train/return",)),
)
"""(panel title, keys drawn in it): the first key of a panel is drawn solid, the others dashed/dotted."""


def _quality_panel(metric: str, horizon: int) -> tuple[str, tuple[str, ...]]:
    key = f"engine/test/{metric}_full_h{horizon}"
    baselines = ("copy_last_frame", "blur", "mean_frame")
    return f"{metric.upper()} at horizon {horizon}", (key, *(f"{key}_{b}" for b in baselines))


ENGINE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("denoiser loss", ("denoiser/train/loss", "denoiser/test/loss")),
    ("upsampler loss", ("upsampler/train/loss", "upsampler/test/loss")),
    _quality_panel("psnr", 1),
    _quality_panel("psnr", 10),
    _quality_panel("psnr", 100),
    _quality_panel("ssim", 100),
)
"""An engine run's panels (``diffworld engine train``'s metrics): the upsampled frames' quality on the test
split against the baselines (docs/engine.md, "Evaluation")."""

_STYLES = ("-", "--", ":", "-.")
_X_KEYS = {"env_steps": "env steps", "epoch": "epoch", "updates": "updates"}


def series(
    records: Sequence[dict[str, Any]], key: str, x: str = "env_steps"
) -> tuple[list[float], list[float]]:
    """(xs, ys) of the records that hold a finite ``key``."""
    xs, ys = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and x in record:
            xs.append(float(record[x]))
            ys.append(float(value))
    return xs, ys


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short distinct names: the folder names, with their parents where two runs share one."""
    names = [p.resolve().name for p in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in run_dirs]


def plot_runs(
    run_dirs: Sequence[Path],
    out: Path,
    *,
    keys: Sequence[str] | None = None,
    x: str | None = None,
    title: str | None = None,
) -> Path:
    """Write the learning curves of ``run_dirs`` to the PNG ``out``; one colour per run.

    ``keys`` replaces the default panels by one panel per metric key. Panels with no data say so. ``x``:
    None plots engine runs (records with ``updates``) against their updates, others against env steps.

    Raises:
        UserError: a folder has no ``metrics.jsonl`` (or an empty one), or ``x`` is unknown.
    """
    try:
        # A bare Figure draws with Agg and leaves pyplot's global backend alone.
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError('Plotting needs matplotlib: pip install -e ".[viz]"') from None

    if x is not None and x not in _X_KEYS:
        raise UserError(f"x must be one of {', '.join(_X_KEYS)}, got {x!r}")
    runs = []
    for run_dir in run_dirs:
        records = read_metrics(Path(run_dir))
        if not records:
            raise UserError(f"No metrics in {run_dir} (no {METRICS_FILE}, or an empty one).")
        runs.append(records)
    engines = ["updates" in records[0] for records in runs]
    if any(engines) and not all(engines):
        raise UserError("Give either engine runs or agent runs, not both: plot them in separate calls.")
    x = x or ("updates" if all(engines) else "env_steps")
    panels = (
        (ENGINE_PANELS if all(engines) else DEFAULT_PANELS) if not keys else tuple((k, (k,)) for k in keys)
    )
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(5.2 * columns, 3.8 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    labels = run_labels(run_dirs)
    for ax, (panel_title, panel_keys) in zip(axes, panels, strict=False):
        drawn = False
        for records, color, label in zip(runs, colors, labels, strict=True):
            for k, key in enumerate(panel_keys):
                xs, ys = series(records, key, x)
                if not xs:
                    continue
                name = label if len(panel_keys) == 1 else f"{label}: {key.split('/')[1]}"
                if len(xs) == 1:  # e.g. the final evaluation
                    ax.plot(xs, ys, marker="*", markersize=10, linestyle="none", color=color, label=name)
                else:
                    ax.plot(xs, ys, _STYLES[k % len(_STYLES)], color=color, label=name, linewidth=1.3)
                drawn = True
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(_X_KEYS[x])
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
