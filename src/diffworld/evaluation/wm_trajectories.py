"""The world model's errors along real trajectories, per horizon: one-step (real context) and autoregressive
(its own predictions as context), and the copy-the-last-frame baseline (see ``wm_quality``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from diffworld.config.schema import SamplerConfig
from diffworld.data import Episode
from diffworld.data.frames import frames_to_tensor
from diffworld.evaluation.image_metrics import METRICS
from diffworld.models.diffusion import Denoiser
from diffworld.models.diffusion.open_loop import predict_open_loop

Metric = Callable[[Tensor, Tensor], Tensor]


class CurveSums:
    """Running sums of each metric per horizon step (1-based), over trajectories.

    ``metrics``: name -> metric of (N, C, H, W) predictions against targets; ``METRICS`` by default.
    """

    def __init__(self, max_horizon: int, metrics: Mapping[str, Metric] = METRICS) -> None:
        self.metrics = dict(metrics)
        self.sums = {name: np.zeros(max_horizon) for name in self.metrics}
        self.counts = np.zeros(max_horizon, dtype=np.int64)

    def add(self, steps: np.ndarray, pred: Tensor, target: Tensor) -> None:
        """Add the metrics of predictions ``pred`` of ``target`` (N, C, H, W) made at horizons ``steps``."""
        for name, fn in self.metrics.items():
            np.add.at(self.sums[name], steps - 1, fn(pred, target).cpu().numpy())
        np.add.at(self.counts, steps - 1, 1)

    def means(self) -> dict[str, list[float]]:
        """Per horizon step, each metric's mean over the trajectories that reach it."""
        n = np.maximum(self.counts, 1)
        return {name: (s / n).tolist() for name, s in self.sums.items()}


def num_predictions(episode: Episode, num_cond: int, max_horizon: int) -> int:
    """Predictions the episode allows from its start: frames L .. T, each needing the action before it."""
    return max(0, min(max_horizon, len(episode) - num_cond + 1))


@torch.no_grad()
def evaluate_trajectories(
    denoiser: Denoiser,
    sampler_cfg: SamplerConfig,
    episodes: Sequence[Episode],
    max_horizon: int,
    *,
    device: torch.device,
    generator: torch.Generator | None,
    batch_size: int = 64,
) -> dict[str, CurveSums]:
    """One-step and autoregressive errors of the world model along ``episodes`` up to ``max_horizon``.

    Returns ``CurveSums`` for ``one_step`` and ``autoregressive``.
    """
    num_cond = denoiser.cfg.num_cond_frames
    sampler = denoiser.sampler(sampler_cfg)
    counts = [num_predictions(e, num_cond, max_horizon) for e in episodes]
    curves = {"one_step": CurveSums(max_horizon), "autoregressive": CurveSums(max_horizon)}

    def predict(obs: Tensor, act: Tensor) -> Tensor:
        return sampler.predict_next(obs, act, generator=generator)

    # One-step: every (episode, horizon) pair is independent; batch them.
    pairs = [(i, h) for i, n in enumerate(counts) for h in range(1, n + 1)]
    frames = [frames_to_tensor(e.obs, device) for e in episodes]
    actions = [torch.tensor(e.act, device=device) for e in episodes]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        # Horizon h predicts frame L - 1 + h from frames h - 1 .. h + L - 2 and the actions taken there.
        obs = torch.stack([frames[i][h - 1 : h - 1 + num_cond] for i, h in chunk])
        act = torch.stack([actions[i][h - 1 : h - 1 + num_cond] for i, h in chunk])
        target = torch.stack([frames[i][num_cond - 1 + h] for i, h in chunk])
        curves["one_step"].add(np.array([h for _, h in chunk]), predict(obs, act), target)

    # Autoregressive: all trajectories step together, the longest first so the active ones are a prefix.
    order = sorted((i for i in range(len(episodes)) if counts[i] > 0), key=lambda i: -counts[i])
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        context = torch.stack([frames[i][:num_cond] for i in rows])
        predictions = predict_open_loop(
            sampler, context, [actions[i] for i in rows], [counts[i] for i in rows], generator
        )
        for h, pred in enumerate(predictions, start=1):
            m = pred.size(0)
            target = torch.stack([frames[i][num_cond - 1 + h] for i in rows[:m]])
            curves["autoregressive"].add(np.full(m, h), pred, target)
    return curves


def copy_last_frame_curves(
    episodes: Sequence[Episode], num_cond: int, max_horizon: int
) -> dict[str, CurveSums]:
    """The baseline that predicts no change: one-step copies the previous real frame, autoregressive the
    last context frame."""
    curves = {"one_step": CurveSums(max_horizon), "autoregressive": CurveSums(max_horizon)}
    for episode in episodes:
        n = num_predictions(episode, num_cond, max_horizon)
        if n == 0:
            continue
        obs = torch.tensor(episode.obs).permute(0, 3, 1, 2)  # uint8 (a copy: stored frames are read-only)
        steps = np.arange(1, n + 1)
        target = obs[num_cond : num_cond + n]
        curves["one_step"].add(steps, obs[num_cond - 1 : num_cond - 1 + n], target)
        curves["autoregressive"].add(steps, obs[num_cond - 1 : num_cond].expand_as(target), target)
    return curves
