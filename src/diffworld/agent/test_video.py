"""The trainer's test clip: a real test episode and the world model's imagination of it, side by side, in
TensorBoard."""

from __future__ import annotations

import torch

from diffworld.config.schema import SamplerConfig
from diffworld.data import EpisodeDataset
from diffworld.fitting.logger import MetricsLogger
from diffworld.models.diffusion import Denoiser
from diffworld.viz.side_by_side import max_predictions, real_vs_imagined

VIDEO_TAG = "video/real_vs_imagined"


@torch.no_grad()
def log_test_video(
    logger: MetricsLogger,
    denoiser: Denoiser,
    sampler_cfg: SamplerConfig,
    dataset: EpisodeDataset,
    num_steps: int,
    *,
    env_steps: int,
    seed: int,
    fps: float = 15,
) -> bool:
    """Write the side-by-side video of the first episode of ``dataset`` (the test episodes) to TensorBoard,
    ``num_steps`` predictions at most, at scale 2. Uses its own generator seeded with ``seed``, so it draws
    nothing from the run's random streams. Returns whether a video was written."""
    num_cond = denoiser.cfg.num_cond_frames
    if num_steps < 1 or not logger.has_tensorboard or dataset.num_episodes == 0:
        return False
    episode = dataset.get_episode(0)
    if max_predictions(episode, num_cond) < 1:
        return False
    device = next(denoiser.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    frames = real_vs_imagined(denoiser, sampler_cfg, episode, num_steps, scale=2, generator=generator)
    logger.log_video(VIDEO_TAG, frames, env_steps=env_steps, fps=fps)
    return True
