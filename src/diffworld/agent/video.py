"""``diffworld video``: a real test episode of a trained agent's policy and its world model's imagination of
it, side by side (``viz.side_by_side``), written to an mp4 or a GIF by ``viz.video_out``, as an engine's.

An mp4 needs ``imageio`` and ``imageio-ffmpeg`` (the ``viz`` extra), a GIF only Pillow.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffworld.agent.collector import collect_real_episode
from diffworld.agent.trained import load_trained_agent
from diffworld.errors import UserError
from diffworld.utils.seeding import derive_seed
from diffworld.viz.side_by_side import max_predictions, real_vs_imagined
from diffworld.viz.video_out import VideoSummary, check_video_request, write_frames
from diffworld.world_model_folder import VideoOptions

SCALE = 4
"""Video pixels per frame pixel (``--scale``'s default for an agent)."""


def run_video(source: Path, out: Path, options: VideoOptions) -> VideoSummary:
    """``diffworld video``: play a real test episode with the agent's policy, imagine it from its step
    ``options.start`` with the world model, write the side-by-side video to ``out``."""
    steps, start, seed, scale = options.steps, options.start, options.seed, options.scale or SCALE
    check_video_request(out, steps=steps, start=start, scale=scale, fps=options.fps)
    trained = load_trained_agent(Path(source), options.device)
    cfg = trained.cfg
    num_cond = cfg.denoiser.num_cond_frames
    episode, meanings = collect_real_episode(
        trained.agent.actor_critic,
        cfg,
        start + num_cond - 1 + steps,
        derive_seed(seed, "video/env"),
        trained.device,
    )
    if max_predictions(episode, num_cond, start) < 1:
        raise UserError(
            f"The real episode ended after {len(episode)} steps, too soon to predict from step {start}."
        )
    frames = real_vs_imagined(
        trained.agent.denoiser,
        cfg.denoiser.sampler,
        episode,
        steps,
        start=start,
        scale=scale,
        generator=torch.Generator(trained.device).manual_seed(derive_seed(seed, "video/world_model")),
        show_denoising=options.show_denoising,
        action_meanings=meanings,
    )
    return write_frames(Path(out), frames, options.fps)
