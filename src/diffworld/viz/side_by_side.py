"""A real episode and the world model's imagination from the same start, side by side, as video frames.

The world model is given the real episode's first L frames and actions as its context, then the real
actions, one at a time: its half of the video shows what it predicts the game would look like, the real half
what it did look like. Optionally a strip under them shows each denoising step of the imagined frame: the
noisy input of every denoiser call and the denoised estimate it returned.

Making the frames needs numpy, OpenCV and torch only: the trainer writes a short clip to TensorBoard at each
test (``agent.test_video``), and ``diffworld video`` writes one to a file (``viz.video_out``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from diffworld.config.schema import SamplerConfig
from diffworld.data import Episode
from diffworld.data.actions import format_action_vector
from diffworld.data.frames import frames_to_tensor, tensor_to_frames
from diffworld.models.diffusion import Denoiser, SamplingStep
from diffworld.models.diffusion.open_loop import predict_open_loop
from diffworld.viz.episodes import upscale

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_GREY = (160, 160, 160)


@dataclass(frozen=True)
class DenoisingStep:
    """One denoiser call while sampling a frame."""

    label: str
    """``sigma 5`` (EDM) or ``t 999`` (DDPM)."""
    noisy: np.ndarray
    """(H, W, 3) uint8: the denoiser's input, clamped to [-1, 1] for display."""
    estimate: np.ndarray
    """(H, W, 3) uint8: its denoised estimate of the frame."""


@dataclass(frozen=True)
class PredictedClip:
    """The world model's predictions along a real episode."""

    start: int
    """Index of the episode's first context frame."""
    frames: np.ndarray
    """(n, H, W, 3) uint8: predictions of the episode's frames ``start + L`` .. ``start + L + n - 1``."""
    denoising: list[list[DenoisingStep]] | None
    """Per prediction, its denoiser calls (with ``record_denoising``)."""


def max_predictions(episode: Episode, num_cond: int, start: int = 0) -> int:
    """How many frames the world model can predict along ``episode`` from ``start`` (real frames to compare
    with and real actions to feed it)."""
    return max(0, len(episode) - start - num_cond + 1)


@torch.no_grad()
def imagine_along(
    denoiser: Denoiser,
    sampler_cfg: SamplerConfig,
    episode: Episode,
    num_steps: int,
    *,
    start: int = 0,
    generator: torch.Generator | None = None,
    record_denoising: bool = False,
) -> PredictedClip:
    """Predict up to ``num_steps`` frames from the episode's frames ``start .. start + L - 1`` (the context)
    with the episode's own actions, each prediction conditioned on the previous ones (not the real frames).

    Raises:
        ValueError: the episode is too short for even one prediction from ``start``.
    """
    num_cond = denoiser.cfg.num_cond_frames
    n = min(num_steps, max_predictions(episode, num_cond, start))
    if n < 1:
        raise ValueError(
            f"an episode of {len(episode)} steps is too short for a prediction from step {start}: the world "
            f"model needs {num_cond} frames and actions of context"
        )
    device = next(denoiser.parameters()).device
    context = frames_to_tensor(episode.obs[start : start + num_cond], device)[None]  # (1, L, 3, H, W)
    # (T,) int64 indices, or (T, D) float32 vectors of continuous actions, as stored.
    actions = torch.tensor(episode.act[start:], device=device)
    steps: list[DenoisingStep] = []

    def record(step: SamplingStep) -> None:
        noisy, denoised = tensor_to_frames(step.noisy[0]), tensor_to_frames(step.denoised[0])
        steps.append(DenoisingStep(step.label, noisy, denoised))

    callback = record if record_denoising else None
    sampler = denoiser.sampler(sampler_cfg)
    frames, denoising = [], []
    for next_obs in predict_open_loop(sampler, context, [actions], [n], generator, callback):
        frames.append(tensor_to_frames(next_obs[0]))
        denoising.append(steps.copy())
        steps.clear()
    return PredictedClip(start, np.stack(frames), denoising if record_denoising else None)


def _text(image: np.ndarray, text: str, x: int, y: int, scale: float, color: tuple[int, int, int]) -> None:
    cv2.putText(image, text, (x, y), _FONT, scale, color, 1, cv2.LINE_AA)


def _header(width: int, height: int, left: str, right: str, split: int | None) -> np.ndarray:
    bar = np.zeros((height, width, 3), dtype=np.uint8)
    font_scale = height / 40
    baseline = int(height * 0.72)
    _text(bar, left, 4, baseline, font_scale, _WHITE)
    if split is not None:
        _text(bar, right, split + 4, baseline, font_scale, _WHITE)
    return bar


def _strip(
    steps: Sequence[DenoisingStep], max_steps: int, width: int, panel: int, label_h: int
) -> np.ndarray:
    """Thumbnails of the denoising steps, one column per denoiser call: noisy input over its estimate."""
    thumb = min(panel // 2, width // max(1, max_steps))
    strip = np.zeros((label_h + 2 * thumb, width, 3), dtype=np.uint8)
    for i, step in enumerate(steps[:max_steps]):
        x = i * thumb
        _text(strip, step.label, x + 3, int(label_h * 0.72), label_h / 40, _GREY)
        for row, image in enumerate((step.noisy, step.estimate)):
            y = label_h + row * thumb
            resized = cv2.resize(image, (thumb, thumb), interpolation=cv2.INTER_NEAREST)
            strip[y : y + thumb, x : x + thumb] = resized
    return strip


def compose_frame(
    real: np.ndarray,
    imagined: np.ndarray,
    left: str,
    right: str,
    *,
    scale: int = 4,
    strip: np.ndarray | None = None,
) -> np.ndarray:
    """One frame of a side-by-side video: a header labelling the two halves (``left``, ``right``) over the
    real frame and the imagined one (both (H, W, 3) uint8, each ``scale`` times larger), and ``strip`` under
    them if given (its width must be the frame's)."""
    panel = real.shape[1] * scale
    header_h = max(14, 5 * scale)
    parts = [
        _header(2 * panel, header_h, left, right, panel),
        np.concatenate([upscale(real, scale), upscale(imagined, scale)], axis=1),
    ]
    if strip is not None:
        parts.append(strip)
    return np.concatenate(parts, axis=0)


def compose_frames(
    episode: Episode,
    imagination: PredictedClip,
    num_cond: int,
    *,
    scale: int = 4,
    action_meanings: Sequence[str] | None = None,
) -> np.ndarray:
    """The video: (L + n, H', W', 3) uint8, context frames then predictions, real left and imagined right.

    Each frame has a header (step, action taken, which half is which); with ``imagination.denoising``, a
    strip under them shows the denoiser calls that made the imagined frame, left to right, each as its noisy
    input (top) and denoised estimate (bottom), labelled with its noise level (blank for context frames).
    """
    panel = episode.obs.shape[2] * scale
    header_h = max(14, 5 * scale)
    start, n = imagination.start, len(imagination.frames)
    max_calls = max((len(s) for s in imagination.denoising or []), default=0)
    video = []
    for t in range(num_cond + n):
        index = start + t
        real = episode.obs[index]
        context = t < num_cond
        imagined = real if context else imagination.frames[t - num_cond]
        action = ""
        if index < len(episode) and episode.act.ndim == 2:  # a continuous action vector
            action = " action " + format_action_vector(episode.act[index])
        elif index < len(episode):
            a = int(episode.act[index])
            named = action_meanings is not None and a < len(action_meanings)
            action = f" {action_meanings[a]}" if action_meanings is not None and named else f" action {a}"
        left = f"real  step {index}{action}"
        right = "context (real)" if context else f"world model  +{t - num_cond + 1}"
        strip = None
        if imagination.denoising is not None:
            steps = [] if context else imagination.denoising[t - num_cond]
            strip = _strip(steps, max_calls, 2 * panel, panel, header_h)
        video.append(compose_frame(real, imagined, left, right, scale=scale, strip=strip))
    return np.stack(video)


def real_vs_imagined(
    denoiser: Denoiser,
    sampler_cfg: SamplerConfig,
    episode: Episode,
    num_steps: int,
    *,
    start: int = 0,
    scale: int = 4,
    generator: torch.Generator | None = None,
    show_denoising: bool = False,
    action_meanings: Sequence[str] | None = None,
) -> np.ndarray:
    """The side-by-side video of ``episode`` (see the module docstring): (L + n, H', W', 3) uint8 frames,
    n = min(num_steps, the predictions the episode allows)."""
    imagination = imagine_along(
        denoiser,
        sampler_cfg,
        episode,
        num_steps,
        start=start,
        generator=generator,
        record_denoising=show_denoising,
    )
    return compose_frames(
        episode, imagination, denoiser.cfg.num_cond_frames, scale=scale, action_meanings=action_meanings
    )
