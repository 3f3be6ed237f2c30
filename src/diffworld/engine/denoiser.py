"""The engine's two EDM models, facades of the world model ``ConditionedEDM`` in the engine's layouts
(docs/engine.md, "Models"; docs/method.md §3).

``EngineDenoiser`` predicts the next low-resolution frame from the L past frames and actions;
``Upsampler`` turns a low-resolution frame into the full-resolution one, given the L previous full-resolution
frames and that frame upsampled by bicubic interpolation (not clamped), no actions. Both have the official
CS:GO code's layouts (``WorldModelLayout.engine_denoiser`` and ``engine_upsampler``: the network told the
conditioning frames' noise level, frames of any size, padding steps with no action and padding targets
replaced by estimates in the loss); their config's ``convention`` defaults to ``official``, which the
published weights assume. Noise augmentation is ``noise_previous_obs`` in training, the sampler's ``s_cond``
in sampling (``models/diffusion/edm.py``). What the facades add: the official code's call of D, the engine's
batches and config, and the upsampler's ``upsample``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffworld.data.actions import ActionSpec
from diffworld.data.batch import Batch
from diffworld.engine.config import EngineDenoiserConfig, EngineSamplerConfig, UpsamplerConfig
from diffworld.models.diffusion.edm import ConditionedEDM, EDMSampler
from diffworld.models.diffusion.layout import WorldModelLayout


class _EngineModel(ConditionedEDM):
    """What the engine's two models share over ``ConditionedEDM``: the official CS:GO code's call of D."""

    cfg: EngineDenoiserConfig

    def denoise(
        self,
        noisy: Tensor,
        sigma: Tensor,
        sigma_cond: Tensor | None,
        cond_images: Tensor,
        act: Tensor | None,
        act_valid: Tensor | None = None,
    ) -> Tensor:
        """D(x; sigma), not clamped; ``cond_images`` (B, K, 3, H, W) in [-1, 1] (noised at ``sigma_cond``);
        ``act_valid`` (B, L): False for padding steps, which have no action (``ActionEncoder``)."""
        return self.predict_clean(
            noisy, sigma, frames=cond_images, act=act, act_valid=act_valid, sigma_cond=sigma_cond
        )


class EngineDenoiser(_EngineModel):
    """The low-resolution next-frame model: ``forward(batch) -> (loss, metrics)`` and ``sampler``."""

    def __init__(self, cfg: EngineDenoiserConfig, spec: ActionSpec) -> None:
        super().__init__(cfg, WorldModelLayout.engine_denoiser(spec))

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics) on segments (``batch.obs``, low resolution) of num_cond_frames +
        num_autoregressive_steps frames."""
        self.check_segment_length(batch.obs.size(1))
        # The mask travels as a last action column, so that each prediction's window of actions carries
        # which of its steps are padding (no action, as the official all-zero action vector).
        act_and_valid = torch.cat([batch.act, batch.frame_mask[..., None].to(batch.act.dtype)], dim=-1)

        def predict(prev_obs: Tensor, prev_act: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return self.predict_training(
                prev_obs,
                next_obs,
                act=prev_act[..., :-1],
                act_valid=prev_act[..., -1] > 0,
                noise_previous_frames=self.cfg.noise_previous_obs,
            )

        return self._autoregressive_loss(batch.obs, act_and_valid, batch.frame_mask, predict)

    def sampler(self, sampler_cfg: EngineSamplerConfig) -> EDMSampler:
        """Next low-resolution frames: ``predict_next(prev_obs (B, L, 3, h, w), prev_act (B, L, D),
        generator)``."""
        return EDMSampler(self, sampler_cfg)


class Upsampler(_EngineModel):
    """The full-resolution model: ``forward(batch) -> (loss, metrics)`` on ``batch.obs_full``, and
    ``sampler``."""

    cfg: UpsamplerConfig

    def __init__(self, cfg: UpsamplerConfig) -> None:
        super().__init__(cfg, WorldModelLayout.engine_upsampler())

    def upsample_bicubic(self, low_res: Tensor) -> Tensor:
        """(N, 3, h, w) -> (N, 3, factor h, factor w), bicubic, not clamped."""
        return F.interpolate(low_res, scale_factor=self.cfg.factor, mode="bicubic")

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics): the full-resolution frames ``batch.obs_full`` predicted from the bicubic-upsampled
        ``batch.obs`` and the previous full-resolution frames."""
        if batch.obs_full is None:
            raise ValueError("the upsampler trains on batches with full-resolution frames (obs_full)")
        self.check_segment_length(batch.obs.size(1))
        b, t = batch.obs.shape[:2]
        low_up = self.upsample_bicubic(batch.obs.flatten(0, 1)).unflatten(0, (b, t))
        if low_up.shape != batch.obs_full.shape:
            raise ValueError(
                f"{tuple(batch.obs.shape)} upsampled by {self.cfg.factor} is not "
                f"{tuple(batch.obs_full.shape)}"
            )

        # autoregressive_loss hands prediction i the window [i, i + L) of its per-step conditioning: shifted
        # by one, the window's last entry is the target's own low-resolution frame.
        def predict(
            prev_full: Tensor, low_window: Tensor, next_full: Tensor
        ) -> tuple[Tensor, Tensor, Tensor]:
            return self.predict_training(
                prev_full,
                next_full,
                extra_images=low_window[:, -1:],
                noise_previous_frames=self.cfg.noise_previous_obs,
            )

        return self._autoregressive_loss(batch.obs_full, low_up[:, 1:], batch.frame_mask, predict)

    def sampler(self, sampler_cfg: EngineSamplerConfig) -> UpsamplingSampler:
        return UpsamplingSampler(self, sampler_cfg)


class UpsamplingSampler(EDMSampler):
    """The sampler of an ``Upsampler``, called with its inputs: ``upsample(low_res_next, prev_full)``."""

    denoiser: Upsampler

    @torch.no_grad()
    def upsample(
        self, low_res_next: Tensor, prev_full: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The full-resolution frames (B, 3, H, W), clamped and quantized, of ``low_res_next`` (B, 3, h, w),
        given the L previous full-resolution frames ``prev_full`` (B, L, 3, H, W), all in [-1, 1]."""
        low_up = self.denoiser.upsample_bicubic(low_res_next)[:, None]
        return self.predict_next(prev_full, None, generator, extra_images=low_up)
