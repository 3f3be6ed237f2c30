"""The one interface of the Atari world model's denoisers, EDM (the paper) and DDPM (the ablation): a
training loss, and a frame sampler with its noise schedule bound once (docs/method.md §3).

``denoiser.sampler(sampler_cfg)`` computes the schedule (Karras sigmas for EDM, DDIM timesteps for DDPM) and
returns a :class:`FrameSampler` (the engine's models return EDM's too); its ``predict_next`` samples the next
frames. As k-diffusion's samplers do, ``predict_next`` takes an optional ``callback``, called after each
denoiser call with a :class:`SamplingStep`, which lets a caller watch the denoising without changing it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from diffworld.config.schema import DenoiserConfig, SamplerConfig
from diffworld.data.batch import Batch
from diffworld.models.diffusion.unet import ConditionedUNet


@dataclass(frozen=True)
class SamplingStep:
    """One denoiser call while sampling next frames."""

    noisy: Tensor
    """(B, 3, H, W): the denoiser's input."""
    denoised: Tensor
    """(B, 3, H, W): its estimate of the clean frames."""
    label: str
    """The noise level of the call: ``sigma 5`` (EDM) or ``t 999`` (DDPM)."""


StepCallback = Callable[[SamplingStep], None]


class FrameSampler(Protocol):
    """Samples next frames with one denoiser and one sampler configuration, whose schedule it holds: what
    imagination and open-loop prediction need of a sampler (``EDMSampler``, ``DDIMSampler``)."""

    def predict_next(
        self,
        prev_obs: Tensor,
        prev_act: Tensor,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """The next frames (B, 3, H, W), clamped and quantized, given ``prev_obs`` (B, L, 3, H, W) in [-1, 1]
        and ``prev_act`` (B, L) indices or (B, L, D) action vectors; every random draw comes from
        ``generator``."""
        ...


class Denoiser(nn.Module, ABC):
    """A diffusion world model around the network F: ``forward(batch) -> (loss, metrics)`` and ``sampler``."""

    cfg: DenoiserConfig
    net: ConditionedUNet

    @abstractmethod
    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics) on segments of num_cond_frames + num_autoregressive_steps frames."""

    @abstractmethod
    def sampler(self, sampler_cfg: SamplerConfig) -> FrameSampler:
        """A sampler of next frames with ``sampler_cfg``'s schedule, computed now on the denoiser's device."""
