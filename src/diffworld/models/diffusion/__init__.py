"""The diffusion world model: the U-Net F, its EDM wrapper (the paper; the engine's models too, in their
layouts) and the DDPM ablation (docs/method.md §3)."""

from __future__ import annotations

from diffworld.config.schema import DenoiserConfig, DiffusionKind
from diffworld.data.actions import ActionSpec
from diffworld.models.diffusion.ddpm import DDIMSampler, DDPMDenoiser
from diffworld.models.diffusion.denoiser import Denoiser, FrameSampler, SamplingStep, StepCallback
from diffworld.models.diffusion.edm import (
    ConditionedEDM,
    EDMDenoiser,
    EDMSampler,
    edm_preconditioning,
    sample_sigma_training,
)
from diffworld.models.diffusion.layout import WorldModelLayout
from diffworld.models.diffusion.sampling import karras_sigmas, quantize, sample
from diffworld.models.diffusion.unet import ConditionedUNet, UNet


def make_denoiser(cfg: DenoiserConfig, actions: int | ActionSpec) -> Denoiser:
    """The denoiser of kind ``cfg.kind`` for an environment with ``actions`` discrete actions, or with the
    action space ``actions`` (``WorldModelLayout.agent``)."""
    kind = DiffusionKind(cfg.kind)
    if kind is DiffusionKind.edm:
        return EDMDenoiser(cfg, actions)
    return DDPMDenoiser(cfg, actions)


__all__ = [
    "ConditionedEDM",
    "ConditionedUNet",
    "DDIMSampler",
    "DDPMDenoiser",
    "Denoiser",
    "EDMDenoiser",
    "EDMSampler",
    "FrameSampler",
    "SamplingStep",
    "StepCallback",
    "UNet",
    "WorldModelLayout",
    "edm_preconditioning",
    "karras_sigmas",
    "make_denoiser",
    "quantize",
    "sample",
    "sample_sigma_training",
]
