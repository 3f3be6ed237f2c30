"""The engine's two EDM models and their samplers (docs/engine.md, "Models"; docs/method.md §3).

``EngineDenoiser`` predicts the next low-resolution frame from the L past frames and actions;
``Upsampler`` turns a low-resolution frame into the full-resolution one, given the L previous full-resolution
frames. Both are D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, c_noise_cond, frames / sigma_data, actions)
with the world model's preconditioning (``edm_preconditioning``, offset noise included), its noise levels
(``sample_sigma_training``), noise (``add_noise``) and autoregressive loss (``autoregressive_loss``), and the
``official`` convention of ``DiffusionConvention``: sampling starts from unit-variance noise and every
denoiser output is floored to the 8-bit levels, as the official CS:GO code (whose published weights
assume it).

Noise augmentation (``noise_previous_obs``), as the official CS:GO recipe: in training, each sample draws a
level sigma_cond like the training sigmas and its conditioning frames are noised at it (offset noise
included); the network is told c_noise_cond = log(sigma_cond) / 4 (0 without augmentation). In sampling the
conditioning frames get noise of the sampler's ``s_cond`` (no offset) before every denoising step, added to
that of the steps before as the official sampler does, and c_noise_cond = log(s_cond) / 4.

Padding (the steps before an episode's first frame): no action (a zero embedding, the official all-zero
action vector), and in the autoregressive loss padding targets too are replaced by the one-shot estimates
that condition the later predictions, as the official loss does.

The upsampler's network sees the noisy full-resolution frame stacked with the L previous full-resolution
frames and the low-resolution frame upsampled by bicubic interpolation (not clamped), no actions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffworld.engine.actions import ActionSpec
from diffworld.engine.config import EngineDenoiserConfig, EngineSamplerConfig, UpsamplerConfig
from diffworld.engine.networks import EngineNetwork
from diffworld.engine.sampler import EngineBatch
from diffworld.models.diffusion.denoiser import SamplingStep, StepCallback
from diffworld.models.diffusion.edm import (
    add_noise,
    autoregressive_loss,
    edm_preconditioning,
    sample_sigma_training,
)
from diffworld.models.diffusion.sampling import karras_sigmas, quantize, quantize_floor, sample


def c_noise_cond(sigma_cond: Tensor | None, batch_size: int, device: torch.device) -> Tensor:
    """The network's input for the conditioning frames' noise level: log(sigma_cond) / 4, or 0 without
    noise (the level is not offset-corrected, unlike c_noise)."""
    if sigma_cond is None:
        return torch.zeros(batch_size, device=device)
    return sigma_cond.log() / 4


def noise_frames(
    frames: Tensor, sigma: Tensor, sigma_offset_noise: float, generator: torch.Generator | None = None
) -> Tensor:
    """``frames`` (B, L, 3, H, W) noised at ``sigma`` (B,), the offset noise per frame and channel."""
    return add_noise(frames.flatten(1, 2), sigma, sigma_offset_noise, generator).view_as(frames)


class _EngineEDM(nn.Module):
    """D around an ``EngineNetwork``: the preconditioning, a denoiser call and a training prediction."""

    cfg: EngineDenoiserConfig
    net: EngineNetwork

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
        output, c_skip, c_out = self._model_output(noisy, sigma, sigma_cond, cond_images, act, act_valid)
        return c_skip * noisy + c_out * output

    def _model_output(
        self,
        noisy: Tensor,
        sigma: Tensor,
        sigma_cond: Tensor | None,
        cond_images: Tensor,
        act: Tensor | None,
        act_valid: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(F's output, c_skip, c_out), the latter two as (B, 1, 1, 1)."""
        c_in, c_skip, c_out, c_noise = edm_preconditioning(
            sigma, self.cfg.sigma_data, self.cfg.sigma_offset_noise
        )
        c_in, c_skip, c_out = (c[:, None, None, None] for c in (c_in, c_skip, c_out))
        noise_cond = c_noise_cond(sigma_cond, noisy.size(0), noisy.device)
        output = self.net(
            c_in * noisy, c_noise, noise_cond, cond_images / self.cfg.sigma_data, act, act_valid
        )
        return output, c_skip, c_out

    def _training_prediction(
        self,
        prev_frames: Tensor,
        extra_images: Tensor | None,
        act: Tensor | None,
        act_valid: Tensor | None,
        next_frame: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(F's output, its target, the one-shot estimate of ``next_frame``, floored, no grad)."""
        b, device = next_frame.size(0), next_frame.device
        sigma_cond = None
        if self.cfg.noise_previous_obs:
            sigma_cond = sample_sigma_training(b, self.cfg.sigma_distribution, device)
            prev_frames = noise_frames(prev_frames, sigma_cond, self.cfg.sigma_offset_noise)
        cond_images = prev_frames if extra_images is None else torch.cat([prev_frames, extra_images], dim=1)
        sigma = sample_sigma_training(b, self.cfg.sigma_distribution, device)
        noisy = add_noise(next_frame, sigma, self.cfg.sigma_offset_noise)
        output, c_skip, c_out = self._model_output(noisy, sigma, sigma_cond, cond_images, act, act_valid)
        target = (next_frame - c_skip * noisy) / c_out  # EDM eq. 8: the loss of D on next_frame
        with torch.no_grad():
            estimate = quantize_floor(c_skip * noisy + c_out * output)
        return output, target, estimate

    def _check_length(self, num_frames: int) -> None:
        expected = self.cfg.num_cond_frames + self.cfg.training.num_autoregressive_steps
        if num_frames != expected:
            raise ValueError(f"segments must hold {expected} frames, got {num_frames}")


class EngineDenoiser(_EngineEDM):
    """The low-resolution next-frame model: ``forward(batch) -> (loss, metrics)`` and ``sampler``."""

    def __init__(self, cfg: EngineDenoiserConfig, spec: ActionSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = spec
        self.net = EngineNetwork(cfg, spec, cfg.num_cond_frames)

    def forward(self, batch: EngineBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics) on segments (``batch.obs``, low resolution) of num_cond_frames +
        num_autoregressive_steps frames."""
        self._check_length(batch.obs.size(1))
        # The mask travels as a last action column, so that each prediction's window of actions carries
        # which of its steps are padding (no action, as the official all-zero action vector).
        act_and_valid = torch.cat([batch.act, batch.mask[..., None].to(batch.act.dtype)], dim=-1)

        def predict(prev_obs: Tensor, prev_act: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return self._training_prediction(
                prev_obs, None, prev_act[..., :-1], prev_act[..., -1] > 0, next_obs
            )

        loss = autoregressive_loss(
            batch.obs, act_and_valid, batch.mask, self.cfg.num_cond_frames, predict, estimate_padding=True
        )
        return loss, {"loss": loss.detach()}

    def sampler(self, sampler_cfg: EngineSamplerConfig) -> EngineFrameSampler:
        return EngineFrameSampler(self, sampler_cfg)


class Upsampler(_EngineEDM):
    """The full-resolution model: ``forward(batch) -> (loss, metrics)`` on ``batch.obs_full``, and
    ``sampler``."""

    def __init__(self, cfg: UpsamplerConfig) -> None:
        super().__init__()
        self.cfg: UpsamplerConfig = cfg
        self.net = EngineNetwork(cfg, None, cfg.num_cond_frames + 1)

    def upsample_bicubic(self, low_res: Tensor) -> Tensor:
        """(N, 3, h, w) -> (N, 3, factor h, factor w), bicubic, not clamped."""
        return F.interpolate(low_res, scale_factor=self.cfg.factor, mode="bicubic")

    def forward(self, batch: EngineBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics): the full-resolution frames ``batch.obs_full`` predicted from the bicubic-upsampled
        ``batch.obs`` and the previous full-resolution frames."""
        if batch.obs_full is None:
            raise ValueError("the upsampler trains on batches with full-resolution frames (obs_full)")
        self._check_length(batch.obs.size(1))
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
            return self._training_prediction(prev_full, low_window[:, -1:], None, None, next_full)

        loss = autoregressive_loss(
            batch.obs_full,
            low_up[:, 1:],
            batch.mask,
            self.cfg.num_cond_frames,
            predict,
            estimate_padding=True,
        )
        return loss, {"loss": loss.detach()}

    def sampler(self, sampler_cfg: EngineSamplerConfig) -> UpsamplingSampler:
        return UpsamplingSampler(self, sampler_cfg)


def _sample_frame(
    model: _EngineEDM,
    sigmas: Tensor,
    cfg: EngineSamplerConfig,
    prev_frames: Tensor,
    extra_images: Tensor | None,
    act: Tensor | None,
    generator: torch.Generator | None,
    callback: StepCallback | None,
) -> Tensor:
    """One frame sampled from unit noise along ``sigmas``, conditioned on ``prev_frames`` and
    ``extra_images``; clamped and quantized.

    With ``cfg.s_cond`` > 0, the conditioning images get noise of that std before every step, on top of the
    noise of the steps before, and the network is told the level ``s_cond``: the official CS:GO sampler (one
    step, its ``fast`` setting, noises them once). Draws in the official order: the initial noise, then at
    each step the churn's noise, then the conditioning frames' offset noise (std 0) and noise.
    """
    b, device = prev_frames.size(0), prev_frames.device
    shape = (b, *prev_frames.shape[2:])
    x = torch.randn(shape, generator=generator, device=device, dtype=prev_frames.dtype)
    sigma_cond = None if cfg.s_cond <= 0 else torch.full((b,), cfg.s_cond, device=device)
    cond_images = prev_frames if extra_images is None else torch.cat([prev_frames, extra_images], dim=1)

    def noise_cond_frames() -> None:
        # All conditioning images, the upsampler's low-resolution one included, as the official sampler.
        nonlocal cond_images
        assert sigma_cond is not None
        cond_images = noise_frames(cond_images, sigma_cond, 0.0, generator)

    def denoise_fn(x: Tensor, sigma: Tensor) -> Tensor:
        denoised = model.denoise(x, sigma, sigma_cond, cond_images, act)
        if callback is not None:
            callback(SamplingStep(x, denoised, f"sigma {float(sigma[0]):.3g}"))
        return quantize_floor(denoised)

    x = sample(
        denoise_fn,
        x,
        sigmas,
        order=cfg.order,
        s_churn=cfg.s_churn,
        s_tmin=cfg.s_tmin,
        s_tmax=cfg.s_tmax,
        s_noise=cfg.s_noise,
        generator=generator,
        churned_call_at_sigma=True,
        before_denoising=None if sigma_cond is None else noise_cond_frames,
    )
    return quantize(x)


class EngineFrameSampler:
    """Next low-resolution frames from an ``EngineDenoiser`` with one sampler configuration."""

    def __init__(self, denoiser: EngineDenoiser, cfg: EngineSamplerConfig) -> None:
        self.denoiser = denoiser
        self.cfg = cfg
        device = next(denoiser.parameters()).device
        self.sigmas = karras_sigmas(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, device)

    @torch.no_grad()
    def predict_next(
        self,
        prev_obs: Tensor,
        prev_act: Tensor,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """The next frames (B, 3, h, w), clamped and quantized, given ``prev_obs`` (B, L, 3, h, w) in [-1, 1]
        and ``prev_act`` (B, L, D); every random draw comes from ``generator``."""
        return _sample_frame(
            self.denoiser, self.sigmas, self.cfg, prev_obs, None, prev_act, generator, callback
        )


class UpsamplingSampler:
    """Full-resolution frames from an ``Upsampler`` with one sampler configuration."""

    def __init__(self, upsampler: Upsampler, cfg: EngineSamplerConfig) -> None:
        self.upsampler = upsampler
        self.cfg = cfg
        device = next(upsampler.parameters()).device
        self.sigmas = karras_sigmas(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, device)

    @torch.no_grad()
    def upsample(
        self,
        low_res_next: Tensor,
        prev_full: Tensor,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """The full-resolution frames (B, 3, H, W), clamped and quantized, of ``low_res_next`` (B, 3, h, w),
        given the L previous full-resolution frames ``prev_full`` (B, L, 3, H, W), all in [-1, 1]."""
        low_up = self.upsampler.upsample_bicubic(low_res_next)[:, None]
        return _sample_frame(
            self.upsampler, self.sigmas, self.cfg, prev_full, low_up, None, generator, callback
        )
