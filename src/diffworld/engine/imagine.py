"""An engine's two samplers bound together, as play, evaluation and videos use them: the next low-resolution
frame from the last L frames and actions, then (with an upsampler) its full-resolution version from the
previous full-resolution frames (docs/engine.md, "Models").

``EngineSamplers`` holds the samplers as small protocols, so that tests drive the rest with fake engines;
``OpenLoopRollout`` steps one batch of imagined trajectories open-loop, one action vector at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from diffworld.data.frames import frames_to_tensor
from diffworld.engine.config import LowResFilter
from diffworld.engine.segment_sampler import downsample
from diffworld.models.diffusion.denoiser import FrameSampler


class FrameUpsampler(Protocol):
    def upsample(
        self, low_res_next: Tensor, prev_full: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """(B, 3, H, W) full-resolution frames of ``low_res_next`` (B, 3, h, w), given the previous
        full-resolution frames ``prev_full`` (B, L_full, 3, H, W), all in [-1, 1]."""
        ...


@dataclass(frozen=True)
class EngineSamplers:
    """What imagining with an engine needs."""

    predictor: FrameSampler
    """The low-resolution next-frame sampler: ``predict_next(prev_obs (B, L, 3, h, w), prev_act (B, L,
    D))``."""
    num_cond: int
    """L: the frames (and actions) the predictor is conditioned on."""
    low_res: tuple[int, int]
    """(h, w) of the predictor's frames."""
    upsampler: FrameUpsampler | None = None
    num_cond_full: int = 1
    """The previous full-resolution frames the upsampler is conditioned on."""
    low_res_filter: LowResFilter = LowResFilter.bicubic
    """How the predictor's real context frames are made from full-resolution ones, as in its training."""

    def low_res_of(self, frames: Tensor) -> Tensor:
        """(..., 3, H, W) full-resolution frames in [-1, 1] as the predictor saw such frames in training."""
        return downsample(frames, self.low_res, self.low_res_filter)

    @property
    def context_length(self) -> int:
        """Real frames a trajectory starts from: enough for both samplers."""
        return max(self.num_cond, self.num_cond_full if self.upsampler is not None else 0)


class OpenLoopRollout:
    """B imagined trajectories stepped together: each ``step`` takes the action vectors taken after the
    current frames and returns the next ones (low resolution, and full resolution with an upsampler)."""

    def __init__(
        self,
        engine: EngineSamplers,
        context: Tensor,
        past_actions: Tensor,
        context_full: Tensor | None,
        generator: torch.Generator | None = None,
    ) -> None:
        """``context`` (B, L, 3, h, w) in [-1, 1]: the last L low-resolution frames; ``past_actions``
        (B, L - 1, D): the actions taken after all but the last of them; ``context_full``
        (B, L_full, 3, H, W):
        the last full-resolution frames (with an upsampler)."""
        if context.size(1) != engine.num_cond or past_actions.size(1) != engine.num_cond - 1:
            raise ValueError(
                f"the context holds {engine.num_cond} frames and {engine.num_cond - 1} actions, got "
                f"{context.size(1)} and {past_actions.size(1)}"
            )
        if engine.upsampler is not None and (
            context_full is None or context_full.size(1) != engine.num_cond_full
        ):
            raise ValueError(f"the upsampler needs the last {engine.num_cond_full} full-resolution frames")
        self.engine = engine
        self.obs = context
        self.past_actions = past_actions
        self.obs_full = context_full if engine.upsampler is not None else None
        self.generator = generator

    @classmethod
    def along_episode(
        cls,
        engine: EngineSamplers,
        frames: np.ndarray,
        actions: np.ndarray,
        start: int,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> OpenLoopRollout:
        """One trajectory from the real frames ``start .. start + context_length - 1`` of an episode (its
        full-resolution ``frames`` (T, H, W, 3) uint8 and ``actions`` (T, D)): the low-resolution context is
        made as in training (``EngineSamplers.low_res_of``). Its first ``step`` takes the action
        taken after frame ``start + context_length - 1``."""
        context = engine.context_length
        full = frames_to_tensor(np.asarray(frames[start : start + context]), device)[None]
        low = engine.low_res_of(full)
        first = start + context - engine.num_cond
        past = torch.tensor(np.asarray(actions[first : start + context - 1], dtype=np.float32), device=device)
        return cls(
            engine,
            low[:, context - engine.num_cond :],
            past[None],
            full[:, context - engine.num_cond_full :] if engine.upsampler is not None else None,
            generator,
        )

    @torch.no_grad()
    def step(self, action: Tensor) -> tuple[Tensor, Tensor | None]:
        """(next low-resolution frames (B, 3, h, w), next full-resolution ones or None) after ``action``
        (B, D)."""
        act = torch.cat([self.past_actions, action[:, None].to(self.past_actions)], dim=1)
        low = self.engine.predictor.predict_next(self.obs, act, generator=self.generator)
        self.obs = torch.cat([self.obs[:, 1:], low[:, None]], dim=1)
        self.past_actions = act[:, 1:]
        full = None
        if self.engine.upsampler is not None and self.obs_full is not None:
            full = self.engine.upsampler.upsample(low, self.obs_full, generator=self.generator)
            self.obs_full = torch.cat([self.obs_full[:, 1:], full[:, None]], dim=1)
        return low, full
