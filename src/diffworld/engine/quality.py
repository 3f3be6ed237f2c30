"""How well an engine imagines the test split: PSNR and SSIM of its open-loop predictions at a few horizons,
at low resolution and upsampled, against the baseline that copies the last real frame (issue 19).

Each trajectory starts from L real frames of a test episode (real frames at both resolutions: the low ones
by the sampler's area downsampling) and is imagined open-loop with the episode's real actions, every
prediction conditioned on the earlier ones (``predict_open_loop``); the upsampler, where there is one, turns
each low-resolution prediction into a full-resolution frame, conditioned on its own earlier ones.
Trajectories start every ``max(horizons)`` frames of each test episode, so that they do not overlap, taken
first from every episode's start, then from the next starts, up to ``max_trajectories``. A horizon is
reported over the trajectories that reach it (the ``trajectories`` counts). SSIM needs frames of at least
11 pixels a side: smaller frames get PSNR only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.data.frames import frames_to_tensor
from diffworld.engine.dataset import EngineDataset
from diffworld.engine.imagine import EngineSamplers
from diffworld.engine.open_engine import engine_samplers, open_engine, open_start_dataset
from diffworld.engine.sampler import downsample
from diffworld.engine.trained import TrainedEngine
from diffworld.errors import UserError
from diffworld.evaluation.image_metrics import SSIM_RADIUS, psnr, ssim
from diffworld.evaluation.wm_trajectories import CurveSums, Metric
from diffworld.models.diffusion.open_loop import predict_open_loop
from diffworld.utils.atomic import atomic_write_text

HORIZONS = (1, 10, 100)
QUALITY_FILE = "quality.json"
ENGINE, BASELINE = "engine", "copy_last_frame"


@dataclass(frozen=True)
class Trajectory:
    episode: int
    """Index into the dataset's episodes."""
    start: int
    """The first context frame."""
    length: int
    """Predictions: frames start + L .. start + L + length - 1."""


def plan_trajectories(
    lengths: np.ndarray, ids: Sequence[int], context: int, max_horizon: int, max_trajectories: int
) -> list[Trajectory]:
    """Open-loop trajectories of at most ``max_horizon`` predictions in the episodes ``ids`` (of ``lengths``
    frames), from ``context`` real frames, every ``max_horizon`` frames (see the module docstring)."""
    per_episode = [
        [
            Trajectory(int(i), start, min(max_horizon, int(lengths[i]) - start - context))
            for start in range(0, int(lengths[i]) - context, max_horizon)
        ]
        for i in ids
    ]
    rounds = max((len(t) for t in per_episode), default=0)
    ordered = [t[k] for k in range(rounds) for t in per_episode if k < len(t)]
    return ordered[:max_trajectories]


def _metrics(size: tuple[int, int]) -> dict[str, Metric]:
    if min(size) < 2 * SSIM_RADIUS + 1:
        return {"psnr": psnr}
    return {"psnr": psnr, "ssim": ssim}


def _summary(curves: CurveSums, horizons: Sequence[int]) -> dict[str, dict[str, float | None]]:
    means = curves.means()
    return {
        name: {str(h): (means[name][h - 1] if curves.counts[h - 1] > 0 else None) for h in horizons}
        for name in curves.metrics
    }


def _per_step(curves: CurveSums) -> dict[str, list[float]]:
    reached = int(np.count_nonzero(curves.counts))
    return {name: values[:reached] for name, values in curves.means().items()}


@torch.no_grad()
def evaluate_quality(
    dataset: EngineDataset,
    engine: EngineSamplers,
    *,
    ids: Sequence[int] | None = None,
    horizons: Sequence[int] = HORIZONS,
    max_trajectories: int = 32,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    per_step: bool = False,
) -> dict[str, Any]:
    """The quality report of ``engine`` on the episodes ``ids`` of ``dataset`` (its test split by default).

    Returns a JSON-ready dict: ``horizons``, ``trajectories`` (how many reached each horizon), ``low_res`` and
    (with an upsampler) ``full_res``, each ``{"size": [h, w], "engine": {metric: {horizon: mean}},
    "copy_last_frame": {...}}``; a mean is None where no trajectory reached the horizon. With ``per_step``,
    the metrics are computed at every step up to the last horizon (the curves of ``diffworld wm-eval``) and
    each resolution also gets ``per_step``: ``{"engine": {metric: [mean at step 1, 2, ...]}, ...}``, up to
    the longest trajectory, with ``per_step_trajectories`` the count at each step; the sampling, and so the
    figures at the horizons, are the same either way.
    """
    device = torch.device(device)
    horizons = sorted(set(horizons))
    max_h = horizons[-1]
    ids = list(dataset.test_ids if ids is None else ids)
    context = engine.context_length
    plan = plan_trajectories(dataset.lengths, ids, context, max_h, max_trajectories)
    plan.sort(key=lambda t: -t.length)  # predict_open_loop's order: the trajectories still going are a prefix
    full_size = dataset.frame_size
    upsample = engine.upsampler is not None
    curves = {
        (res, who): CurveSums(max_h, _metrics(engine.low_res if res == "low_res" else full_size))
        for res in ("low_res", "full_res")
        for who in (ENGINE, BASELINE)
        if res == "low_res" or upsample
    }
    wanted = set(horizons)

    for first in range(0, len(plan), batch_size):
        rows = plan[first : first + batch_size]
        contexts, actions, episodes = [], [], []
        for t in rows:
            frames = dataset.frames(t.episode)
            contexts.append(frames_to_tensor(frames[t.start : t.start + context], device))
            last = t.start + context + t.length  # one past the last predicted frame
            actions.append(
                torch.tensor(
                    dataset.actions(t.episode)[t.start + context - engine.num_cond : last - 1], device=device
                )
            )
            episodes.append(frames)  # targets are read at each step: a long trajectory's frames add up
        full_ctx = torch.stack(contexts)
        low_ctx = downsample(full_ctx, engine.low_res)
        real_last = {"low_res": low_ctx[:, -1], "full_res": full_ctx[:, -1]}
        prev_full = full_ctx[:, context - engine.num_cond_full :]
        predictions = predict_open_loop(
            engine.predictor,
            low_ctx[:, context - engine.num_cond :],
            actions,
            [t.length for t in rows],
            generator,
        )
        for h, low in enumerate(predictions, start=1):
            m = low.size(0)
            full = None
            if engine.upsampler is not None:
                prev_full = prev_full[:m]
                full = engine.upsampler.upsample(low, prev_full, generator=generator)
                prev_full = torch.cat([prev_full[:, 1:], full[:, None]], dim=1)
            if h not in wanted and not per_step:
                continue
            target_full = torch.stack(
                [
                    frames_to_tensor(episodes[i][t.start + context - 1 + h], device)
                    for i, t in enumerate(rows[:m])
                ]
            )
            target = {"low_res": downsample(target_full, engine.low_res), "full_res": target_full}
            steps = np.full(m, h)
            for res, pred in (("low_res", low), ("full_res", full)):
                if pred is None:
                    continue
                curves[res, ENGINE].add(steps, pred, target[res])
                curves[res, BASELINE].add(steps, real_last[res][:m], target[res])

    counts = curves["low_res", ENGINE].counts
    report: dict[str, Any] = {
        "horizons": horizons,
        "trajectories": {str(h): int(counts[h - 1]) for h in horizons},
        "context_frames": context,
    }
    for res, size in (("low_res", engine.low_res), ("full_res", full_size)):
        if (res, ENGINE) in curves:
            report[res] = {
                "size": list(size),
                ENGINE: _summary(curves[res, ENGINE], horizons),
                BASELINE: _summary(curves[res, BASELINE], horizons),
            }
            if per_step:
                report[res]["per_step"] = {who: _per_step(curves[res, who]) for who in (ENGINE, BASELINE)}
    if per_step:
        reached = int(np.count_nonzero(counts))  # trajectories are prefixes: steps 1 .. reached have some
        report["per_step_trajectories"] = counts[:reached].tolist()
    return report


def quality_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """``evaluate_quality``'s report as flat metrics for ``metrics.jsonl`` and TensorBoard:
    ``<prefix>/<metric>_<low|full>_h<horizon>`` for the engine, the same ending in ``_copy_last_frame`` for
    the baseline; horizons that no trajectory reached are left out."""
    metrics: dict[str, float] = {}
    for res, short in (("low_res", "low"), ("full_res", "full")):
        if res not in report:
            continue
        for who, suffix in ((ENGINE, ""), (BASELINE, f"_{BASELINE}")):
            for metric, means in report[res][who].items():
                for h, mean in means.items():
                    if mean is not None:
                        metrics[f"{prefix}/{metric}_{short}_h{h}{suffix}"] = float(mean)
    return metrics


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: one row per horizon, engine / copy-the-last-frame per metric."""
    columns: list[tuple[str, str, str]] = []
    for res, label in (("low_res", "low-res"), ("full_res", "upsampled")):
        if res in report:
            columns += [(res, metric, f"{label} {metric.upper()}") for metric in report[res][ENGINE]]
    header = ["horizon", "trajectories"] + [title for *_, title in columns]
    rows = [header]
    for h in report["horizons"]:
        row = [str(h), str(report["trajectories"][str(h)])]
        for res, metric, _ in columns:
            ours, copy = (report[res][who][metric][str(h)] for who in (ENGINE, BASELINE))
            digits = 2 if metric == "psnr" else 3
            row.append("-" if ours is None else f"{ours:.{digits}f} / {copy:.{digits}f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines) + "\n(engine / copy the last real frame)"


def engine_quality(
    folder: Path,
    engine: TrainedEngine,
    dataset: EngineDataset,
    *,
    horizons: Sequence[int] = HORIZONS,
    max_trajectories: int = 32,
    denoising_steps: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    per_step: bool = False,
) -> dict[str, Any]:
    """The quality report of the engine of ``folder``, opened, on the test split of ``dataset``, with what
    it was made of (engine, updates, dataset, denoising steps, seed); the sampling is seeded by ``seed``
    alone."""
    if len(dataset.test_ids) == 0:
        raise UserError(f"{dataset.folder} has no test episodes to evaluate on")
    samplers = engine_samplers(engine, denoising_steps)
    device_of = next(engine.denoiser.parameters()).device
    report = evaluate_quality(
        dataset,
        samplers,
        horizons=horizons,
        max_trajectories=max_trajectories,
        batch_size=batch_size,
        device=device_of,
        generator=torch.Generator(device_of).manual_seed(seed),
        per_step=per_step,
    )
    return {
        "engine": str(folder),
        "updates": engine.updates,
        "dataset": str(dataset.folder),
        "denoising_steps": denoising_steps or engine.cfg.denoiser.sampler.num_steps,
        "seed": seed,
        **report,
    }


def evaluate_engine(
    folder: Path,
    out: Path | None = None,
    *,
    data: str | None = None,
    horizons: Sequence[int] = HORIZONS,
    max_trajectories: int = 32,
    denoising_steps: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    seed: int = 0,
) -> tuple[dict[str, Any], Path]:
    """``diffworld engine eval``: the quality report of the engine in ``folder`` on the test split of its
    dataset (or of ``data``), written as JSON to ``out`` (default ``<folder>/quality.json``)."""
    engine = open_engine(folder, device)
    dataset = open_start_dataset(engine, folder, data)
    report = engine_quality(
        folder,
        engine,
        dataset,
        horizons=horizons,
        max_trajectories=max_trajectories,
        denoising_steps=denoising_steps,
        batch_size=batch_size,
        seed=seed,
    )
    out = out or Path(folder) / QUALITY_FILE
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    return report, out
