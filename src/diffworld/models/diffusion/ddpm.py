"""The DDPM ablation of the world model (Ho et al. 2020; docs/method.md §3): the same network F, epsilon
prediction.

Training draws t uniformly among ``ddpm_num_train_timesteps`` steps of a linear beta schedule and noises
x_0 into x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, where eps is Gaussian noise plus the same offset
noise as EDM; F predicts eps. F sees x_t unscaled (it already has unit variance), the noise-level input
t / num_train_timesteps, and the past frames divided by sigma_data exactly as in EDM.

Sampling is deterministic DDIM (Song et al. 2021, eta = 0) over ``num_steps`` timesteps evenly spaced
from the last training timestep down to 0, so any number of steps from 1 to num_train_timesteps works.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffworld.config.schema import DenoiserConfig, SamplerConfig
from diffworld.data.actions import ActionSpec
from diffworld.data.batch import Batch
from diffworld.models.diffusion.denoiser import Denoiser, SamplingStep, StepCallback
from diffworld.models.diffusion.edm import autoregressive_loss, check_segment_length, offset_noise
from diffworld.models.diffusion.layout import WorldModelLayout
from diffworld.models.diffusion.sampling import quantize
from diffworld.models.diffusion.unet import ConditionedUNet


def linear_alphas_cumprod(beta_start: float, beta_end: float, num_train_timesteps: int) -> Tensor:
    """abar_t = prod_{s <= t} (1 - beta_s) for betas linear from ``beta_start`` to ``beta_end``."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0).float()


def ddim_timesteps(num_steps: int, num_train_timesteps: int) -> list[int]:
    """``num_steps`` timesteps evenly spaced from num_train_timesteps - 1 down to 0 (just the first for 1)."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    return torch.linspace(num_train_timesteps - 1, 0, num_steps).round().long().tolist()


class DDPMDenoiser(Denoiser):
    """The DDPM world model: epsilon prediction with F, its training loss and a DDIM sampler."""

    alphas_cumprod: Tensor

    def __init__(self, cfg: DenoiserConfig, actions: int | ActionSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = ConditionedUNet(cfg, WorldModelLayout.agent(actions))
        alphas_cumprod = linear_alphas_cumprod(
            cfg.ddpm_beta_start, cfg.ddpm_beta_end, cfg.ddpm_num_train_timesteps
        )
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)

    def predict_epsilon(self, x_t: Tensor, t: Tensor, prev_obs: Tensor, prev_act: Tensor) -> Tensor:
        """F's estimate of the noise in ``x_t`` (B, 3, H, W) at integer timesteps ``t`` (B,)."""
        c_noise = t.float() / self.cfg.ddpm_num_train_timesteps
        return self.net(x_t, c_noise, None, prev_obs / self.cfg.sigma_data, prev_act)

    def _training_prediction(
        self, prev_obs: Tensor, prev_act: Tensor, next_obs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        t = torch.randint(self.cfg.ddpm_num_train_timesteps, (next_obs.size(0),), device=next_obs.device)
        alpha_bar = self.alphas_cumprod[t][:, None, None, None]
        eps = torch.randn_like(next_obs) + offset_noise(next_obs, self.cfg.sigma_offset_noise)
        x_t = alpha_bar.sqrt() * next_obs + (1 - alpha_bar).sqrt() * eps
        eps_hat = self.predict_epsilon(x_t, t, prev_obs, prev_act)
        with torch.no_grad():
            # One-shot estimate of x_0 from x_t and the predicted noise.
            estimate = quantize((x_t - (1 - alpha_bar).sqrt() * eps_hat) / alpha_bar.sqrt())
        return eps_hat, eps, estimate

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics) on segments of num_cond_frames + num_autoregressive_steps frames."""
        check_segment_length(
            batch.obs.size(1), self.cfg.num_cond_frames, self.cfg.training.num_autoregressive_steps
        )
        loss = autoregressive_loss(
            batch.obs, batch.act, batch.frame_mask, self.cfg.num_cond_frames, self._training_prediction
        )
        return loss, {"loss_denoising": loss.detach()}

    def sampler(self, sampler_cfg: SamplerConfig) -> DDIMSampler:
        return DDIMSampler(self, sampler_cfg)


class DDIMSampler:
    """Deterministic DDIM over ``sampler_cfg.num_steps`` timesteps (see ``ddim_timesteps``), chosen once; the
    rest of ``sampler_cfg`` (the EDM sigmas, order and churn) does not apply."""

    def __init__(self, denoiser: DDPMDenoiser, sampler_cfg: SamplerConfig) -> None:
        self.denoiser = denoiser
        self.timesteps = ddim_timesteps(sampler_cfg.num_steps, denoiser.cfg.ddpm_num_train_timesteps)
        self.alphas_cumprod: list[float] = denoiser.alphas_cumprod.tolist()

    @torch.no_grad()
    def predict_next(
        self,
        prev_obs: Tensor,
        prev_act: Tensor,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """Sample the next frames (B, 3, H, W), clamped and quantized, with deterministic DDIM steps; the
        initial noise is drawn like the training noise, offset included. ``callback`` sees every denoiser
        call with its estimate of x_0, clamped."""
        denoiser, timesteps, alphas_cumprod = self.denoiser, self.timesteps, self.alphas_cumprod
        shape = prev_obs[:, -1].shape
        eps = torch.randn(shape, generator=generator, device=prev_obs.device, dtype=prev_obs.dtype)
        eps = eps + offset_noise(eps, denoiser.cfg.sigma_offset_noise, generator)
        x = (1 - alphas_cumprod[timesteps[0]]) ** 0.5 * eps
        t_in = torch.ones(shape[0], dtype=torch.long, device=prev_obs.device)
        for k, t in enumerate(timesteps):
            alpha_bar = alphas_cumprod[t]
            eps_hat = denoiser.predict_epsilon(x, t * t_in, prev_obs, prev_act)
            x_0 = ((x - (1 - alpha_bar) ** 0.5 * eps_hat) / alpha_bar**0.5).clamp(-1, 1)
            if callback is not None:
                callback(SamplingStep(x, x_0, f"t {t}"))
            if k + 1 == len(timesteps):
                x = x_0
            else:
                # DDIM update (eta = 0): x_{t'} = sqrt(abar_t') x_0 + sqrt(1 - abar_t') eps_hat.
                alpha_bar_next = alphas_cumprod[timesteps[k + 1]]
                x = alpha_bar_next**0.5 * x_0 + (1 - alpha_bar_next) ** 0.5 * eps_hat
        return quantize(x)
