"""The EDM diffusion world model (Karras et al. 2022, as configured by DIAMOND; docs/method.md §3).

D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, past frames / sigma_data, past actions), with the
preconditioning evaluated at s = sqrt(sigma^2 + sigma_offset_noise^2), the std of the training noise once
offset noise is added. The training loss and its autoregressive structure are shared with the DDPM
ablation (``ddpm.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffworld.config.schema import (
    DenoiserConfig,
    DiffusionConvention,
    SamplerConfig,
    SigmaDistributionConfig,
)
from diffworld.data.batch import Batch
from diffworld.models.diffusion.denoiser import Denoiser, FrameSampler, SamplingStep, StepCallback
from diffworld.models.diffusion.sampling import karras_sigmas, quantize, quantize_floor, sample
from diffworld.models.diffusion.unet import DenoiserNetwork

PredictFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
"""``predict(prev_obs, prev_act, next_obs) -> (model_output, target, estimate)``: one noisy training
prediction of ``next_obs``; ``estimate`` is the clamped, quantized one-shot denoised frame (no grad)."""


def edm_preconditioning(
    sigma: Tensor, sigma_data: float, sigma_offset_noise: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_in, c_skip, c_out, c_noise) of EDM Table 1, each shaped like ``sigma``, with
    s = sqrt(sigma^2 + sigma_offset_noise^2) in place of sigma (docs/method.md §3)."""
    s = (sigma**2 + sigma_offset_noise**2).sqrt()
    c_in = 1 / (s**2 + sigma_data**2).sqrt()
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
    c_noise = s.log() / 4
    return c_in, c_skip, c_out, c_noise


def sample_sigma_training(
    num: int,
    cfg: SigmaDistributionConfig,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(num,) training noise levels: sigma = exp(N(loc, scale^2)), clipped to [sigma_min, sigma_max]."""
    log_sigma = torch.randn(num, generator=generator, device=device) * cfg.scale + cfg.loc
    return log_sigma.exp().clamp(cfg.sigma_min, cfg.sigma_max)


def offset_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """(B, C, 1, 1) per-image, per-channel constants ~ N(0, std^2), to add to noise shaped like ``x``."""
    return std * torch.randn(*x.shape[:2], 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def add_noise(
    x: Tensor, sigma: Tensor, sigma_offset_noise: float, generator: torch.Generator | None = None
) -> Tensor:
    """x + offset noise + sigma * eps; ``x``: (B, C, H, W), ``sigma``: (B,). The offset noise is drawn first
    (even at std 0), as the official code draws them, so that the same seed gives the same noise."""
    offset = offset_noise(x, sigma_offset_noise, generator)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + offset + sigma[:, None, None, None] * eps


def masked_mse(output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the samples where ``mask`` (B,) is True (0 when there are none)."""
    per_sample = (output - target).pow(2).flatten(1).mean(dim=1)
    return torch.where(mask, per_sample, 0).sum() / mask.sum().clamp(min=1)


def autoregressive_loss(
    obs: Tensor,
    act: Tensor,
    frame_mask: Tensor,
    num_cond_frames: int,
    predict: PredictFn,
    *,
    estimate_padding: bool = False,
) -> Tensor:
    """The denoising loss of segments of L + n frames, averaged over their n consecutive predictions.

    ``obs``: (B, L + n, ...) frames; ``act``: (B, >= L + n - 1, ...) per-step conditioning (the actions);
    ``frame_mask``: (B, L + n) bool, True for real frames. Prediction i is conditioned on frames i..i+L-1 and
    ``act[:, i : i + L]`` and targets frame i+L; the loss counts real targets only. Each real target is then
    replaced, in the conditioning of the later predictions, by the one-shot estimate of ``predict`` (no
    gradient); with ``estimate_padding``, padding targets too, as the official CS:GO loss does (padding
    frames otherwise stay as they are).
    """
    num_predictions = obs.size(1) - num_cond_frames
    targets = obs
    obs = obs.clone()
    losses = []
    for i in range(num_predictions):
        j = i + num_cond_frames
        model_output, target, estimate = predict(obs[:, i:j], act[:, i:j], targets[:, j])
        losses.append(masked_mse(model_output, target, frame_mask[:, j]))
        replace = frame_mask[:, j, None, None, None] | estimate_padding
        obs[:, j] = torch.where(replace, estimate, obs[:, j])
    return torch.stack(losses).mean()


def check_segment_length(batch: Batch, cfg: DenoiserConfig) -> None:
    """Raise unless the segments hold num_cond_frames + num_autoregressive_steps frames."""
    expected = cfg.num_cond_frames + cfg.num_autoregressive_steps
    if batch.obs.size(1) != expected:
        raise ValueError(f"segments must hold {expected} frames, got {batch.obs.size(1)}")


class EDMDenoiser(Denoiser):
    """The EDM world model: denoiser D around the U-Net F, its training loss and its sampler."""

    def __init__(self, cfg: DenoiserConfig, num_actions: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = DenoiserNetwork(cfg, num_actions)
        self.official = DiffusionConvention(cfg.convention) is DiffusionConvention.official

    def _model_output(
        self, noisy_next_obs: Tensor, sigma: Tensor, prev_obs: Tensor, prev_act: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(F's output, c_skip, c_out), the latter two as (B, 1, 1, 1)."""
        c_in, c_skip, c_out, c_noise = edm_preconditioning(
            sigma, self.cfg.sigma_data, self.cfg.sigma_offset_noise
        )
        c_in, c_skip, c_out = (c[:, None, None, None] for c in (c_in, c_skip, c_out))
        output = self.net(c_in * noisy_next_obs, c_noise, prev_obs / self.cfg.sigma_data, prev_act)
        return output, c_skip, c_out

    def denoise(self, noisy_next_obs: Tensor, sigma: Tensor, prev_obs: Tensor, prev_act: Tensor) -> Tensor:
        """D(x; sigma) = c_skip x + c_out F(...), not clamped.

        ``noisy_next_obs``: (B, 3, H, W); ``sigma``: (B,); ``prev_obs``: (B, L, 3, H, W) in [-1, 1];
        ``prev_act``: (B, L) int64.
        """
        output, c_skip, c_out = self._model_output(noisy_next_obs, sigma, prev_obs, prev_act)
        return c_skip * noisy_next_obs + c_out * output

    def _training_prediction(
        self, prev_obs: Tensor, prev_act: Tensor, next_obs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        sigma = sample_sigma_training(next_obs.size(0), self.cfg.sigma_distribution, next_obs.device)
        noisy_next_obs = add_noise(next_obs, sigma, self.cfg.sigma_offset_noise)
        output, c_skip, c_out = self._model_output(noisy_next_obs, sigma, prev_obs, prev_act)
        # F's effective training target (EDM eq. 8), which makes the loss that of D on next_obs.
        target = (next_obs - c_skip * noisy_next_obs) / c_out
        with torch.no_grad():
            denoised = c_skip * noisy_next_obs + c_out * output
            estimate = quantize_floor(denoised) if self.official else quantize(denoised)
        return output, target, estimate

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics) on segments of num_cond_frames + num_autoregressive_steps frames."""
        check_segment_length(batch, self.cfg)
        loss = autoregressive_loss(
            batch.obs, batch.act, batch.frame_mask, self.cfg.num_cond_frames, self._training_prediction
        )
        return loss, {"loss_denoising": loss.detach()}

    def sampler(self, sampler_cfg: SamplerConfig) -> EDMSampler:
        return EDMSampler(self, sampler_cfg)


class EDMSampler(FrameSampler):
    """EDM's sampler (Algorithm 2) from noise along the Karras schedule of ``sampler_cfg`` (see
    ``karras_sigmas``), computed once; ``sampler_cfg`` also gives the order and churn."""

    def __init__(self, denoiser: EDMDenoiser, sampler_cfg: SamplerConfig) -> None:
        self.denoiser = denoiser
        self.cfg = sampler_cfg
        c = sampler_cfg
        device = next(denoiser.parameters()).device
        self.sigmas = karras_sigmas(c.num_steps, c.sigma_min, c.sigma_max, c.rho, device)

    @torch.no_grad()
    def predict_next(
        self,
        prev_obs: Tensor,
        prev_act: Tensor,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Sample the next frames (B, 3, H, W), clamped and quantized, given ``prev_obs`` (B, L, 3, H, W)
        and ``prev_act`` (B, L), from noise at ``sigmas[0]`` along ``sigmas`` (ending with 0).

        ``noise``: the N(0, I) draw to start from (B, 3, H, W); None draws it from ``generator``. With the
        ``official`` convention the sampler starts from that draw itself (unit variance, while the first
        denoiser call is told sigmas[0]) and floors every denoiser output to the 8-bit levels; with ``edm``
        it starts from sigmas[0] x noise and only the result is rounded. ``callback`` sees every denoiser
        call (twice per step with Heun's correction), its output before that flooring.
        """
        denoiser, sigmas, official = self.denoiser, self.sigmas, self.denoiser.official
        shape = prev_obs[:, -1].shape
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=prev_obs.device, dtype=prev_obs.dtype)
        # The official choice against autoregressive drift: less initial noise than sigma_max
        # (docs/method.md).
        x = noise if official else sigmas[0] * noise

        def denoise_fn(x: Tensor, sigma: Tensor) -> Tensor:
            denoised = denoiser.denoise(x, sigma, prev_obs, prev_act)
            if callback is not None:
                callback(SamplingStep(x, denoised, f"sigma {float(sigma[0]):.3g}"))
            return quantize_floor(denoised) if official else denoised

        c = self.cfg
        x = sample(
            denoise_fn,
            x,
            sigmas,
            order=c.order,
            s_churn=c.s_churn,
            s_tmin=c.s_tmin,
            s_tmax=c.s_tmax,
            s_noise=c.s_noise,
            generator=generator,
        )
        # Snaps the last Euler step (x + (0 - sigma) (x - D) / sigma = D up to rounding errors) onto D's
        # 8-bit level under the official convention; rounds the continuous result under ``edm``.
        return quantize(x)
