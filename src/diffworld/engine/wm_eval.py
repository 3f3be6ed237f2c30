"""``diffworld wm-eval <engine>...``: the world-model quality curves of engines, as ``diffworld wm-eval``
draws an Atari run's (docs/engine.md, "Evaluation").

An engine's held-out data is the test split of its dataset (or of ``--data``), and its prediction is
open-loop imagination: the numbers are those of ``diffworld engine eval`` (``engine.quality``, the same
trajectories and, for one seed, the same draws), with the metrics computed at every step up to the last
horizon to draw the curves. Each engine is evaluated at each number of denoising steps asked for (default:
its own sampler's). The report goes to ``wm_quality.json`` and its figure to ``wm_quality.png``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from diffworld.engine.open_engine import SamplerSettings, open_engine, open_start_dataset, sampler_configs
from diffworld.engine.quality import ENGINE, HORIZONS, QualitySettings, engine_quality
from diffworld.errors import UserError
from diffworld.evaluation.image_metrics import PSNR_MAX
from diffworld.evaluation.wm_quality_plot import plot_engine_report, write_wm_quality
from diffworld.world_model_folder import WmEvalOptions


def evaluate_engine_world_models(
    folders: Sequence[Path], out_dir: Path, options: WmEvalOptions, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Evaluate each engine of ``folders`` at each of ``options.denoising_steps`` (None: its own); write
    ``wm_quality.json`` and ``wm_quality.png`` to ``out_dir``; return the report."""
    horizons, denoising_steps = options.horizons or list(HORIZONS), options.denoising_steps
    settings = QualitySettings(
        horizons=horizons,
        max_trajectories=options.trajectories or QualitySettings.max_trajectories,
        sampler_settings=SamplerSettings.named(options.sampler_settings),
        batch_size=options.batch_size or QualitySettings.batch_size,
        seed=options.seed,
    )
    if not folders:
        raise UserError("no engine folder given")
    if any(h < 1 for h in horizons) or any(s < 1 for s in denoising_steps or ()):
        raise UserError("horizons and denoising steps must be >= 1")
    entries = []
    for folder in folders:
        engine = open_engine(folder, options.device)
        dataset = open_start_dataset(engine, folder, options.data)
        choices: list[int | None] = list(denoising_steps) if denoising_steps else [None]  # None: its own
        for steps in choices:
            shown = steps or sampler_configs(engine.cfg, settings.sampler_settings)[0].num_steps
            log(f"{folder}: {shown} denoising step(s), horizons up to {max(horizons)} ...")
            at_steps = replace(settings, denoising_steps=steps)
            entries.append(engine_quality(folder, engine, dataset, at_steps, per_step=True))
    report: dict[str, Any] = {
        "kind": "engine",
        "horizons": sorted(set(horizons)),
        "seed": options.seed,
        "held_out_data": "the test split of each engine's dataset, imagined open-loop with its real actions",
        "metrics": {
            "psnr": f"dB on 8-bit levels, identical frames {PSNR_MAX}",
            "ssim": "Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, data range 255, valid windows "
            "(frames under 11 pixels a side: none)",
        },
        "engines": entries,
    }
    write_wm_quality(report, out_dir, plot_engine_report)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per engine and number of denoising steps: its PSNR at each horizon reached, upsampled where
    it has an upsampler."""
    lines = []
    for entry in report["engines"]:
        res = "full_res" if "full_res" in entry else "low_res"
        psnr = entry[res][ENGINE]["psnr"]
        figures = ", ".join(
            f"h{h} {psnr[str(h)]:.1f} dB" for h in entry["horizons"] if psnr[str(h)] is not None
        )
        where = "upsampled" if res == "full_res" else "low-res"
        lines.append(f"{entry['engine']} {entry['denoising_steps']} step(s), {where} PSNR: {figures}")
    return lines
