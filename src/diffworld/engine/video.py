"""``diffworld video <engine>``: a test episode of the engine's dataset beside the engine's open-loop
imagination of it with the episode's real actions, written to an mp4 or a GIF (docs/engine.md, "Videos").

The engine starts from the episode's real frames ``start .. start + C - 1`` (C: the context both samplers
need), then gets the episode's actions one at a time, each prediction conditioned on its earlier ones (as in
``diffworld engine eval``). With an upsampler the imagined panel is the upsampled full-resolution frame and
the real one the dataset's frame; without, both are at the engine's low resolution (the real frame
downsampled as the engine saw it in training). Frames are made and written one at a time (``viz.video_out``,
as an agent's video), so the length of the video costs no memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from diffworld.data.frames import frames_to_tensor, tensor_to_frames
from diffworld.engine.imagine import EngineSamplers, OpenLoopRollout
from diffworld.engine.open_engine import SamplerSettings, engine_samplers, open_engine, open_start_dataset
from diffworld.errors import UserError
from diffworld.utils.seeding import derive_seed
from diffworld.viz.side_by_side import compose_frame
from diffworld.viz.video_out import VideoSummary, check_video_request, write_frames
from diffworld.world_model_folder import VideoOptions


def num_engine_predictions(length: int, context: int, start: int, steps: int) -> int:
    """Predictions an episode of ``length`` frames allows from ``start`` with ``context`` real frames
    (each compared with a real frame), at most ``steps``."""
    return max(0, min(steps, length - start - context))


@torch.no_grad()
def engine_video_frames(
    engine: EngineSamplers,
    frames: np.ndarray,
    actions: np.ndarray,
    *,
    start: int,
    steps: int,
    scale: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> Iterator[np.ndarray]:
    """The video's frames, one at a time: the C context frames (real in both panels), then up to ``steps``
    predictions beside the real frames they predict (see the module docstring). ``frames`` (T, H, W, 3)
    uint8 and ``actions`` (T, D) are one episode's."""
    context = engine.context_length
    n = num_engine_predictions(len(frames), context, start, steps)
    if n < 1:
        raise ValueError(f"an episode of {len(frames)} frames allows no prediction from frame {start}")
    full_res = engine.upsampler is not None

    def real_at(index: int) -> np.ndarray:
        real = np.asarray(frames[index])
        if full_res:
            return real
        return tensor_to_frames(engine.low_res_of(frames_to_tensor(real, device)))

    for t in range(context):
        real = real_at(start + t)
        yield compose_frame(real, real, f"real  step {start + t}", "context (real)", scale=scale)
    imagination = OpenLoopRollout.along_episode(engine, frames, actions, start, device, generator)
    for k in range(1, n + 1):
        index = start + context - 1 + k
        action = torch.tensor(np.asarray(actions[index - 1], dtype=np.float32), device=device)[None]
        low, full = imagination.step(action)
        imagined = tensor_to_frames((full if full is not None else low)[0])
        yield compose_frame(real_at(index), imagined, f"real  step {index}", f"imagined  +{k}", scale=scale)


SCALE = 2
"""Video pixels per frame pixel (``--scale``'s default for an engine)."""


def run_engine_video(folder: Path, out: Path, options: VideoOptions) -> VideoSummary:
    """``diffworld video <engine>``: test episode ``options.episode`` (default 0: the first of the test
    split) of the engine's dataset (or of ``options.data``) from its frame ``options.start``, and the
    engine's imagination of it."""
    steps, start, episode, scale = options.steps, options.start, options.episode or 0, options.scale or SCALE
    check_video_request(out, steps=steps, start=start, scale=scale, fps=options.fps, episode=episode)
    engine = open_engine(folder, options.device)
    dataset = open_start_dataset(engine, folder, options.data)
    tests = dataset.test_ids
    if len(tests) == 0:
        raise UserError(
            f"{dataset.folder} has no test episodes to show: give a dataset with a test split (--data)."
        )
    if episode >= len(tests):
        raise UserError(
            f"{dataset.folder} has {len(tests)} test episodes: give --episode from 0 to {len(tests) - 1}."
        )
    index = int(tests[episode])
    samplers = engine_samplers(
        engine, options.denoising_steps, SamplerSettings.named(options.sampler_settings)
    )
    context = samplers.context_length
    length = int(dataset.lengths[index])
    if num_engine_predictions(length, context, start, steps) < 1:
        raise UserError(
            f"Test episode {dataset.episode_names[index]} of {dataset.folder} has {length} frames and the "
            f"engine starts from {context}: give --start from 0 to {max(0, length - context - 1)}"
            + (" (or another --episode)." if length > context else ": pick another --episode.")
        )
    device_of = next(engine.denoiser.parameters()).device
    frames = engine_video_frames(
        samplers,
        dataset.frames(index),
        dataset.actions(index),
        start=start,
        steps=steps,
        scale=scale,
        device=device_of,
        generator=torch.Generator(device_of).manual_seed(derive_seed(options.seed, "video/engine")),
    )
    return write_frames(Path(out), frames, options.fps)
