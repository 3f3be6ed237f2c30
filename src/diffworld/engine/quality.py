"""How well an engine imagines the test split: PSNR and SSIM of its open-loop predictions at a few horizons,
at low resolution and upsampled, against three baselines (issue 19): copying the last real frame, that frame
blurred, and the mean frame of the training split.

Each trajectory starts from L real frames of a test episode (real frames at both resolutions: the low ones
made from the full ones as the engine's training made them, ``EngineSamplers.low_res_of``) and is imagined
open-loop with the episode's real actions, every prediction conditioned on the earlier ones
(``predict_open_loop``); the upsampler, where there is one, turns each low-resolution prediction into a
full-resolution frame, conditioned on its own earlier ones. Trajectories start every ``max(horizons)`` frames
of each test episode, so that they do not overlap, taken first from every episode's start, then from the
next starts, up to ``max_trajectories``. A horizon is reported over the trajectories that reach it (the
``trajectories`` counts). SSIM needs frames of at least 11 pixels a side: smaller frames get PSNR only.

The baselines predict the same frame at every horizon of a trajectory and are scored exactly as the engine:

- ``copy_last_frame``: the last real context frame.
- ``blur``: that frame blurred by a Gaussian of standard deviation ``blur_sigma`` (2) pixels of the
  dataset's frames, truncated at 4 sigma, edges replicated (``gaussian_blur``); at low resolution the
  low-resolution frame is blurred with the sigma scaled by the linear size ratio, ``sigma * sqrt(h w / (H
  W))``. A prediction that is only a blurred present scores this: blur does not pass for dynamics.
- ``mean_frame``: the per-pixel mean of up to ``mean_frames`` (2,000) frames of the dataset's training split,
  spread evenly over its frames in order (all of them when it has fewer); at low resolution the mean of
  their low-resolution versions. A dataset without training episodes has no such baseline.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffworld.data.folder_store import EngineDataset
from diffworld.data.frames import frames_to_tensor
from diffworld.engine.imagine import EngineSamplers
from diffworld.engine.open_engine import (
    SamplerSettings,
    engine_samplers,
    open_engine,
    open_start_dataset,
    sampler_configs,
)
from diffworld.engine.trained import TrainedEngine
from diffworld.errors import UserError
from diffworld.evaluation.image_metrics import SSIM_RADIUS, psnr, ssim
from diffworld.evaluation.wm_trajectories import CurveSums, Metric
from diffworld.models.diffusion.open_loop import predict_open_loop
from diffworld.utils.atomic import atomic_write_text

if TYPE_CHECKING:
    from diffworld.engine.convert.from_gym import PolicyLoader

HORIZONS = (1, 10, 100)
QUALITY_FILE = "quality.json"
ENGINE, BASELINE = "engine", "copy_last_frame"
BLUR, MEAN_FRAME = "blur", "mean_frame"
BASELINES = (BASELINE, BLUR, MEAN_FRAME)
"""The baselines' keys in a report, in the table's order."""
BLUR_SIGMA = 2.0
"""The ``blur`` baseline's Gaussian standard deviation, in pixels of the dataset's frames."""
BLUR_TRUNCATE = 4.0
"""The Gaussian kernel's radius in sigmas (``int(4 sigma + 0.5)`` pixels, as ``scipy.ndimage``'s)."""
MEAN_FRAMES = 2000
"""Training frames at most that the ``mean_frame`` baseline averages."""
TITLES = {
    ENGINE: "engine",
    BASELINE: "copy last frame",
    BLUR: "blurred last frame",
    MEAN_FRAME: "mean training frame",
}


def gaussian_blur(frames: Tensor, sigma: float, truncate: float = BLUR_TRUNCATE) -> Tensor:
    """(..., C, H, W) float frames blurred by a Gaussian of standard deviation ``sigma`` pixels (separable,
    radius ``int(truncate * sigma + 0.5)``, normalized weights, edges replicated: ``scipy.ndimage.
    gaussian_filter(..., mode="nearest")``); a copy for ``sigma`` 0."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    radius = int(truncate * sigma + 0.5)
    if radius == 0:
        return frames.clone()
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(x**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).to(frames)
    flat = frames.flatten(0, -4)
    c = flat.size(1)
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="replicate"),
        weights.view(1, 1, 1, -1).expand(c, 1, 1, -1),
        groups=c,
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="replicate"),
        weights.view(1, 1, -1, 1).expand(c, 1, -1, 1),
        groups=c,
    )
    return flat.unflatten(0, frames.shape[:-3])


def low_res_sigma(sigma: float, low_res: Sequence[int], full_res: Sequence[int]) -> float:
    """``sigma`` pixels of ``full_res`` frames in pixels of ``low_res`` ones: scaled by the linear size ratio
    ``sqrt(h w / (H W))``."""
    return sigma * math.sqrt(low_res[0] * low_res[1] / (full_res[0] * full_res[1]))


def mean_frame_indices(lengths: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_frames`` frames spread evenly over episodes of ``lengths`` frames taken end to end (all of
    them when they hold fewer): (positions in ``lengths``, frame indices), in order, without repeats."""
    total = int(lengths.sum())
    if total == 0 or max_frames < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    picks = np.unique(np.round(np.linspace(0, total - 1, min(total, max_frames))).astype(np.int64))
    ends = np.cumsum(lengths)
    episodes = np.searchsorted(ends, picks, side="right")
    return episodes, picks - (ends[episodes] - lengths[episodes])


_MEAN_CACHE: weakref.WeakKeyDictionary[EngineDataset, dict[Any, tuple[Tensor, Tensor, int]]] = (
    weakref.WeakKeyDictionary()
)


@torch.no_grad()
def mean_training_frame(
    dataset: EngineDataset,
    engine: EngineSamplers,
    max_frames: int = MEAN_FRAMES,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor, int] | None:
    """The ``mean_frame`` baseline: the per-pixel means (3, H, W) and (3, h, w) in [-1, 1] of up to
    ``max_frames`` training frames of ``dataset`` (``mean_frame_indices``) and of their low-resolution
    versions (``engine.low_res_of``), and how many frames they average; None without training frames.
    Kept for the dataset object, so that a training run's repeated quality tests read the frames once."""
    key = (engine.low_res, engine.low_res_filter, max_frames)
    cached = _MEAN_CACHE.setdefault(dataset, {})
    if key not in cached:
        ids = np.asarray(dataset.train_ids)
        positions, frames = mean_frame_indices(dataset.lengths[ids], max_frames)
        if len(frames) == 0:
            return None
        sum_full = torch.zeros(3, *dataset.frame_size, dtype=torch.float64, device=device)
        sum_low = torch.zeros(3, *engine.low_res, dtype=torch.float64, device=device)
        for position in np.unique(positions).tolist():
            chosen = frames[positions == position]
            episode = dataset.frames(int(ids[position]))
            for first in range(0, len(chosen), 256):
                full = frames_to_tensor(np.asarray(episode[chosen[first : first + 256]]), device)
                sum_full += full.double().sum(0)
                sum_low += engine.low_res_of(full).double().sum(0)
        n = len(frames)
        cached[key] = ((sum_full / n).float().cpu(), (sum_low / n).float().cpu(), n)
    full_mean, low_mean, n = cached[key]
    return full_mean.to(device), low_mean.to(device), n


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
    blur_sigma: float = BLUR_SIGMA,
    mean_frames: int = MEAN_FRAMES,
) -> dict[str, Any]:
    """The quality report of ``engine`` on the episodes ``ids`` of ``dataset`` (its test split by default).

    Returns a JSON-ready dict: ``horizons``, ``trajectories`` (how many reached each horizon), ``baselines``
    (how they were made: the blur's sigmas, the mean frame's count), ``low_res`` and (with an upsampler)
    ``full_res``, each ``{"size": [h, w], "engine": {metric: {horizon: mean}}, "copy_last_frame": {...},
    "blur": {...}, "mean_frame": {...}}`` (no ``mean_frame`` without training frames, or with
    ``mean_frames`` 0); a mean is None where no trajectory reached the horizon. With ``per_step``,
    the metrics are computed at every step up to the last horizon (the curves of ``diffworld wm-eval``) and
    each resolution also gets ``per_step``: ``{"engine": {metric: [mean at step 1, 2, ...]}, ...}``, up to
    the longest trajectory, with ``per_step_trajectories`` the count at each step; the sampling, and so the
    figures at the horizons, are the same either way. ``blur_sigma`` and ``mean_frames``: see the module
    docstring.
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
    sigmas = {"low_res": low_res_sigma(blur_sigma, engine.low_res, full_size), "full_res": blur_sigma}
    means = mean_training_frame(dataset, engine, mean_frames, device) if mean_frames > 0 else None
    mean = None if means is None else {"full_res": means[0], "low_res": means[1]}
    who_all = (ENGINE, *(b for b in BASELINES if b != MEAN_FRAME or mean is not None))
    curves = {
        (res, who): CurveSums(max_h, _metrics(engine.low_res if res == "low_res" else full_size))
        for res in ("low_res", "full_res")
        for who in who_all
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
        low_ctx = engine.low_res_of(full_ctx)
        real_last = {"low_res": low_ctx[:, -1], "full_res": full_ctx[:, -1]}
        baselines = {
            (res, who): frame
            for res, last_frame in real_last.items()
            for who, frame in (
                (BASELINE, last_frame),
                (BLUR, gaussian_blur(last_frame, sigmas[res])),
                (MEAN_FRAME, None if mean is None else mean[res].expand_as(last_frame)),
            )
        }
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
            target = {"low_res": engine.low_res_of(target_full), "full_res": target_full}
            steps = np.full(m, h)
            for res, pred in (("low_res", low), ("full_res", full)):
                if pred is None:
                    continue
                curves[res, ENGINE].add(steps, pred, target[res])
                for who in who_all[1:]:
                    baseline = baselines[res, who]
                    assert baseline is not None
                    curves[res, who].add(steps, baseline[:m], target[res])

    counts = curves["low_res", ENGINE].counts
    report: dict[str, Any] = {
        "horizons": horizons,
        "trajectories": {str(h): int(counts[h - 1]) for h in horizons},
        "context_frames": context,
        "baselines": {
            BASELINE: "the last real context frame",
            BLUR: {
                "sigma_full_res": blur_sigma,
                "sigma_low_res": sigmas["low_res"],
                "truncate": BLUR_TRUNCATE,
            },
            MEAN_FRAME: None if means is None else {"training_frames": means[2]},
        },
    }
    for res, size in (("low_res", engine.low_res), ("full_res", full_size)):
        if (res, ENGINE) in curves:
            report[res] = {
                "size": list(size),
                **{who: _summary(curves[res, who], horizons) for who in who_all},
            }
            if per_step:
                report[res]["per_step"] = {who: _per_step(curves[res, who]) for who in who_all}
    if per_step:
        reached = int(np.count_nonzero(counts))  # trajectories are prefixes: steps 1 .. reached have some
        report["per_step_trajectories"] = counts[:reached].tolist()
    return report


def quality_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """``evaluate_quality``'s report as flat metrics for ``metrics.jsonl`` and TensorBoard:
    ``<prefix>/<metric>_<low|full>_h<horizon>`` for the engine, the same ending in ``_copy_last_frame``,
    ``_blur`` and ``_mean_frame`` for the baselines; horizons that no trajectory reached are left out."""
    metrics: dict[str, float] = {}
    for res, short in (("low_res", "low"), ("full_res", "full")):
        if res not in report:
            continue
        for who in (ENGINE, *BASELINES):
            if who not in report[res]:
                continue
            suffix = "" if who == ENGINE else f"_{who}"
            for metric, means in report[res][who].items():
                for h, mean in means.items():
                    if mean is not None:
                        metrics[f"{prefix}/{metric}_{short}_h{h}{suffix}"] = float(mean)
    return metrics


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: for each horizon, a row for the engine then one per baseline, a column
    per resolution and metric; a legend of the baselines follows."""
    columns: list[tuple[str, str, str]] = []
    for res, label in (("low_res", "low-res"), ("full_res", "upsampled")):
        if res in report:
            columns += [(res, metric, f"{label} {metric.upper()}") for metric in report[res][ENGINE]]
    present = [who for who in (ENGINE, *BASELINES) if who in report["low_res"]]
    header = ["horizon", "trajectories", "prediction"] + [title for *_, title in columns]
    rows = [header]
    for h in report["horizons"]:
        for k, who in enumerate(present):
            first = k == 0
            row = [str(h) if first else "", str(report["trajectories"][str(h)]) if first else "", TITLES[who]]
            for res, metric, _ in columns:
                value = report[res][who][metric][str(h)]
                digits = 2 if metric == "psnr" else 3
                row.append("-" if value is None else f"{value:.{digits}f}")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    aligned = [str.rjust, str.rjust, str.ljust] + [str.rjust] * len(columns)
    lines = [
        "  ".join(align(cell, w) for align, cell, w in zip(aligned, r, widths, strict=True)).rstrip()
        for r in rows
    ]
    return "\n".join(lines) + "\n" + _legend(report)


def _legend(report: dict[str, Any]) -> str:
    """What the baselines of the table are, a line each."""
    made = report.get("baselines", {})
    parts = [f"{TITLES[BASELINE]}: the last real context frame"]
    blur = made.get(BLUR)
    if blur is not None:
        parts.append(
            f"{TITLES[BLUR]}: it blurred, Gaussian sigma {blur['sigma_full_res']:g} px of the dataset's "
            f"frames ({blur['sigma_low_res']:.2f} px at low res)"
        )
    mean = made.get(MEAN_FRAME)
    if mean is not None:
        parts.append(f"{TITLES[MEAN_FRAME]}: the per-pixel mean of {mean['training_frames']} training frames")
    return "\n".join(f"{'Baselines: ' if k == 0 else ' ' * 11}{part}" for k, part in enumerate(parts))


@dataclass(frozen=True)
class QualitySettings:
    """What an engine's quality report measures (``diffworld engine eval``, ``wm-eval``); its sampling is
    seeded by ``seed`` alone."""

    horizons: Sequence[int] = HORIZONS
    max_trajectories: int = 32
    denoising_steps: int | None = None
    """Of the next-frame sampler; None: the engine's own under ``sampler_settings``."""
    sampler_settings: SamplerSettings = SamplerSettings.fast
    batch_size: int = 8
    seed: int = 0


def engine_quality(
    folder: Path,
    engine: TrainedEngine,
    dataset: EngineDataset,
    settings: QualitySettings,
    *,
    per_step: bool = False,
    blur_sigma: float = BLUR_SIGMA,
    mean_frames: int = MEAN_FRAMES,
) -> dict[str, Any]:
    """The quality report of the engine of ``folder``, opened, on the test split of ``dataset``, with what
    it was made of (engine, updates, weights: ``ema`` or ``live``, dataset, sampler settings, denoising
    steps, seed)."""
    denoising_steps, sampler_settings = settings.denoising_steps, settings.sampler_settings
    if len(dataset.test_ids) == 0:
        raise UserError(f"{dataset.folder} has no test episodes to evaluate on")
    samplers = engine_samplers(engine, denoising_steps, sampler_settings)
    device_of = next(engine.denoiser.parameters()).device
    report = evaluate_quality(
        dataset,
        samplers,
        horizons=settings.horizons,
        max_trajectories=settings.max_trajectories,
        batch_size=settings.batch_size,
        device=device_of,
        generator=torch.Generator(device_of).manual_seed(settings.seed),
        per_step=per_step,
        blur_sigma=blur_sigma,
        mean_frames=mean_frames,
    )
    return {
        "engine": str(folder),
        "updates": engine.updates,
        "weights": engine.weights,
        "dataset": str(dataset.folder),
        "sampler_settings": sampler_settings.value,
        "denoising_steps": denoising_steps or sampler_configs(engine.cfg, sampler_settings)[0].num_steps,
        "seed": settings.seed,
        **report,
    }


def evaluate_engine(
    folder: Path,
    out: Path | None = None,
    settings: QualitySettings = QualitySettings(),
    *,
    data: str | None = None,
    device: str = "auto",
    fidelity_states: int | None = None,
    fidelity_every: int | None = None,
    fidelity_seed: int | None = None,
    policy_loader: PolicyLoader | None = None,
) -> tuple[dict[str, Any], Path]:
    """``diffworld engine eval``: the quality report of the engine in ``folder`` on the test split of its
    dataset (or of ``data``), with its action fidelity (``engine.action_fidelity``) under
    ``action_fidelity``, written as JSON to ``out`` (default ``<folder>/quality.json``).

    ``fidelity_states``: the states probed, 0 for no action fidelity; None (the default) probes
    ``FIDELITY_STATES`` where the dataset was recorded from a Gymnasium env (``diffworld engine record``) and
    none otherwise; there, a game that cannot be rebuilt leaves ``{"skipped": why}`` rather than failing.
    ``fidelity_every`` (default ``FIDELITY_EVERY``) and ``fidelity_seed`` (default: the recording's plus
    ``SEED_OFFSET``): see ``engine.action_fidelity``. ``policy_loader`` reads the game settings of a dataset
    recorded by a diffworld agent (``from_gym.PolicyLoader``: ``diffworld.agent.policy.load_agent_policy``,
    which the command line passes); such a dataset without it is a one-line ``NoPolicyLoaderError``, never a
    skipped action fidelity (give ``fidelity_states=0`` to evaluate without)."""
    from diffworld.engine import action_fidelity as af
    from diffworld.engine.convert.from_gym import NoPolicyLoaderError

    engine = open_engine(folder, device)
    dataset = open_start_dataset(engine, folder, data)
    explicit = fidelity_states is not None
    if fidelity_states is None:
        states = af.FIDELITY_STATES if af.has_game(dataset) else 0
    else:
        states = fidelity_states
    game: af.GymGame | None = None
    fidelity: dict[str, Any] | None = None
    if states > 0:
        play_seed = af.fidelity_seed(dataset, fidelity_seed)  # a bad seed fails before the long part
        try:
            game = af.open_game(dataset, engine.spec, policy_loader)
        except UserError as e:
            if explicit or isinstance(e, NoPolicyLoaderError):  # the caller's to fix, not the dataset's
                raise
            fidelity = {"skipped": str(e)}
    try:
        report = engine_quality(folder, engine, dataset, settings)
        if game is not None:
            fidelity = af.engine_action_fidelity(
                engine_samplers(engine, settings.denoising_steps, settings.sampler_settings),
                dataset,
                game,
                states=states,
                every=fidelity_every or af.FIDELITY_EVERY,
                seed=play_seed,
                device=next(engine.denoiser.parameters()).device,
            )
    finally:
        if game is not None:
            game.close()
    if fidelity is not None:
        report["action_fidelity"] = fidelity
    out = out or Path(folder) / QUALITY_FILE
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    return report, out
