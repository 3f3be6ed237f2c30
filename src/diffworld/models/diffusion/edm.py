"""The conditioned EDM world model (Karras et al. 2022, as configured by DIAMOND; docs/method.md §3,
docs/engine.md "Models").

D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, [c_noise_cond], conditioning frames / sigma_data, actions),
with the preconditioning evaluated at s = sqrt(sigma^2 + sigma_offset_noise^2), the std of the training noise
once offset noise is added. ``ConditionedEDM`` is this model in any ``WorldModelLayout``: the Atari agent's
world model (``EDMDenoiser``, the facade of the agent's calls) and the engine's two models (the facades in
``engine/denoiser.py``). ``EDMSampler`` samples next frames from any of them. The training loss and its
autoregressive structure are shared with the DDPM ablation (``ddpm.py``).

Noise augmentation (the engine's ``noise_previous_obs``, the official CS:GO recipe): in training, each sample
draws a level sigma_cond (from the training sigmas' law, or from ``sigma_cond_distribution``) and its
conditioning frames are noised at it (offset noise included); the network is told c_noise_cond =
log(sigma_cond) / 4 (0 without augmentation). In sampling the
conditioning frames get noise of the sampler's ``s_cond`` (no offset) before every denoising step, added to
that of the steps before as the official sampler does, and c_noise_cond = log(s_cond) / 4.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from diffworld.config.schema import (
    DenoiserConfig,
    DiffusionConvention,
    SamplerConfig,
    SigmaDistributionConfig,
    WorldModelConfig,
)
from diffworld.data.actions import ActionSpec
from diffworld.data.batch import Batch
from diffworld.models.diffusion.denoiser import Denoiser, SamplingStep, StepCallback
from diffworld.models.diffusion.layout import WorldModelLayout
from diffworld.models.diffusion.sampling import karras_sigmas, quantize, quantize_floor, sample
from diffworld.models.diffusion.unet import ConditionedUNet

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


def noise_frames(
    frames: Tensor, sigma: Tensor, sigma_offset_noise: float, generator: torch.Generator | None = None
) -> Tensor:
    """``frames`` (B, K, 3, H, W) noised at ``sigma`` (B,), the offset noise per frame and channel."""
    return add_noise(frames.flatten(1, 2), sigma, sigma_offset_noise, generator).view_as(frames)


def c_noise_cond(sigma_cond: Tensor | None, batch_size: int, device: torch.device) -> Tensor:
    """The network's input for the conditioning frames' noise level: log(sigma_cond) / 4, or 0 without
    noise (the level is not offset-corrected, unlike c_noise)."""
    if sigma_cond is None:
        return torch.zeros(batch_size, device=device)
    return sigma_cond.log() / 4


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


def check_segment_length(num_frames: int, num_cond_frames: int, num_autoregressive_steps: int) -> None:
    """Raise unless segments of ``num_frames`` hold num_cond_frames + num_autoregressive_steps frames."""
    expected = num_cond_frames + num_autoregressive_steps
    if num_frames != expected:
        raise ValueError(f"segments must hold {expected} frames, got {num_frames}")


class ConditionedEDM(nn.Module):
    """D around a ``ConditionedUNet`` in ``layout``: D's calls, a training prediction and the autoregressive
    loss. The products' facades (``EDMDenoiser``, the engine's ``EngineDenoiser`` and ``Upsampler``) give it
    their call signatures, batches and samplers.

    ``cfg.convention``: ``official`` floors the training estimate and, in ``EDMSampler``, starts from unit
    noise and floors every denoiser output; ``edm`` rounds (see ``DiffusionConvention``).
    """

    cfg: WorldModelConfig
    net: ConditionedUNet

    def __init__(self, cfg: WorldModelConfig, layout: WorldModelLayout) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = layout
        self.net = ConditionedUNet(cfg, layout)
        self.official = DiffusionConvention(cfg.convention) is DiffusionConvention.official

    def check_segment_length(self, num_frames: int) -> None:
        """Raise unless training segments of ``num_frames`` fit the config, read at every call (a test sets
        ``training.num_autoregressive_steps`` after construction)."""
        check_segment_length(num_frames, self.cfg.num_cond_frames, self.cfg.training.num_autoregressive_steps)

    def predict_clean(
        self,
        noisy: Tensor,
        sigma: Tensor,
        *,
        frames: Tensor,
        act: Tensor | None = None,
        act_valid: Tensor | None = None,
        sigma_cond: Tensor | None = None,
    ) -> Tensor:
        """D(x; sigma), not clamped. ``noisy``: (B, 3, H, W); ``sigma``: (B,); ``frames``: the conditioning
        images (B, L + extra images, 3, H, W) in [-1, 1], noised at ``sigma_cond`` (B,) if it is given;
        ``act``, ``act_valid``: the L actions as ``ConditionedUNet`` takes them."""
        output, c_skip, c_out = self._model_output(noisy, sigma, frames, act, act_valid, sigma_cond)
        return c_skip * noisy + c_out * output

    def _model_output(
        self,
        noisy: Tensor,
        sigma: Tensor,
        frames: Tensor,
        act: Tensor | None,
        act_valid: Tensor | None,
        sigma_cond: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(F's output, c_skip, c_out), the latter two as (B, 1, 1, 1)."""
        c_in, c_skip, c_out, c_noise = edm_preconditioning(
            sigma, self.cfg.sigma_data, self.cfg.sigma_offset_noise
        )
        c_in, c_skip, c_out = (c[:, None, None, None] for c in (c_in, c_skip, c_out))
        noise_cond = None
        if self.layout.noise_level_input:
            noise_cond = c_noise_cond(sigma_cond, noisy.size(0), noisy.device)
        elif sigma_cond is not None:
            raise ValueError("this world model is not told the conditioning frames' noise level")
        output = self.net(c_in * noisy, c_noise, noise_cond, frames / self.cfg.sigma_data, act, act_valid)
        return output, c_skip, c_out

    def predict_training(
        self,
        prev_frames: Tensor,
        next_frame: Tensor,
        *,
        extra_images: Tensor | None = None,
        act: Tensor | None = None,
        act_valid: Tensor | None = None,
        noise_previous_frames: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(F's output, its target, the one-shot estimate of ``next_frame``, quantized, no grad) at a training
        noise level; with ``noise_previous_frames``, ``prev_frames`` (not the extra images) are noised at a
        level of their own first. Draws from the global generator, in the official order: [sigma_cond, the
        previous frames' offset noise and noise,] sigma, the offset noise, the noise."""
        b, device = next_frame.size(0), next_frame.device
        sigma_cond = None
        if noise_previous_frames:
            cond_law = self.cfg.sigma_cond_distribution or self.cfg.sigma_distribution
            sigma_cond = sample_sigma_training(b, cond_law, device)
            prev_frames = noise_frames(prev_frames, sigma_cond, self.cfg.sigma_offset_noise)
        frames = prev_frames if extra_images is None else torch.cat([prev_frames, extra_images], dim=1)
        sigma = sample_sigma_training(b, self.cfg.sigma_distribution, device)
        noisy = add_noise(next_frame, sigma, self.cfg.sigma_offset_noise)
        output, c_skip, c_out = self._model_output(noisy, sigma, frames, act, act_valid, sigma_cond)
        # F's effective training target (EDM eq. 8), which makes the loss that of D on next_frame.
        target = (next_frame - c_skip * noisy) / c_out
        with torch.no_grad():
            denoised = c_skip * noisy + c_out * output
            estimate = quantize_floor(denoised) if self.official else quantize(denoised)
        return output, target, estimate

    def _autoregressive_loss(
        self, frames: Tensor, per_step: Tensor, frame_mask: Tensor, predict: PredictFn
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics) of ``autoregressive_loss`` over ``frames`` (B, L + n, 3, H, W), ``predict`` turning
        each window of ``per_step`` into the conditioning of ``predict_training``."""
        loss = autoregressive_loss(
            frames,
            per_step,
            frame_mask,
            self.cfg.num_cond_frames,
            predict,
            estimate_padding=self.layout.estimate_padding_targets,
        )
        return loss, {self.layout.loss_key: loss.detach()}


class EDMDenoiser(ConditionedEDM, Denoiser):
    """The Atari world model (the paper's): ``ConditionedEDM`` in the Atari layout, with the agent's calls;
    for continuous actions, the same model conditioned on action vectors (``WorldModelLayout.agent``).

    ``actions``: the number of discrete actions, or the action space."""

    cfg: DenoiserConfig

    def __init__(self, cfg: DenoiserConfig, actions: int | ActionSpec) -> None:
        super().__init__(cfg, WorldModelLayout.agent(actions))

    def denoise(self, noisy_next_obs: Tensor, sigma: Tensor, prev_obs: Tensor, prev_act: Tensor) -> Tensor:
        """D(x; sigma) = c_skip x + c_out F(...), not clamped.

        ``noisy_next_obs``: (B, 3, H, W); ``sigma``: (B,); ``prev_obs``: (B, L, 3, H, W) in [-1, 1];
        ``prev_act``: (B, L) int64, or (B, L, D) float action vectors.
        """
        return self.predict_clean(noisy_next_obs, sigma, frames=prev_obs, act=prev_act)

    def _training_prediction(
        self, prev_obs: Tensor, prev_act: Tensor, next_obs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.predict_training(prev_obs, next_obs, act=prev_act)

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss, metrics) on segments of num_cond_frames + num_autoregressive_steps frames."""
        self.check_segment_length(batch.obs.size(1))
        return self._autoregressive_loss(batch.obs, batch.act, batch.frame_mask, self._training_prediction)

    def sampler(self, sampler_cfg: SamplerConfig) -> EDMSampler:
        return EDMSampler(self, sampler_cfg)


class EDMSampler:
    """EDM's sampler (Algorithm 2) of a ``ConditionedEDM``, from noise along the Karras schedule of
    ``sampler_cfg`` (see ``karras_sigmas``), computed once; ``sampler_cfg`` also gives the order and churn.

    ``sampler_cfg.s_cond`` > 0 (a layout with the noise-level input): the conditioning images get noise of
    that std before every step, on top of the noise of the steps before, and the network is told the level
    ``s_cond``, as the official CS:GO sampler (whose one step, its ``fast`` setting, noises them once).
    """

    def __init__(self, denoiser: ConditionedEDM, sampler_cfg: SamplerConfig) -> None:
        self.denoiser = denoiser
        self.cfg = sampler_cfg
        c = sampler_cfg
        device = next(denoiser.parameters()).device
        self.sigmas = karras_sigmas(c.num_steps, c.sigma_min, c.sigma_max, c.rho, device)

    @torch.no_grad()
    def predict_next(
        self,
        prev_obs: Tensor,
        prev_act: Tensor | None,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        noise: Tensor | None = None,
        *,
        extra_images: Tensor | None = None,
    ) -> Tensor:
        """Sample the next frames (B, 3, H, W), clamped and quantized, given ``prev_obs`` (B, L, 3, H, W) in
        [-1, 1], ``prev_act`` (the L actions, as the layout takes them; None without actions) and the layout's
        ``extra_images`` (B, K, 3, H, W), from noise at ``sigmas[0]`` along ``sigmas`` (ending with 0).

        ``noise``: the N(0, I) draw to start from (B, 3, H, W); None draws it from ``generator``. With the
        ``official`` convention the sampler starts from that draw itself (unit variance, while the first
        denoiser call is told sigmas[0]) and floors every denoiser output to the 8-bit levels; with ``edm``
        it starts from sigmas[0] x noise and only the result is rounded. ``callback`` sees every denoiser
        call (twice per step with Heun's correction), its output before that flooring. Draws in the official
        order: the initial noise, then at each step the churn's noise, then the conditioning images' offset
        noise (std 0) and noise.
        """
        denoiser, sigmas, official = self.denoiser, self.sigmas, self.denoiser.official
        b, device = prev_obs.size(0), prev_obs.device
        shape = prev_obs[:, -1].shape
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=device, dtype=prev_obs.dtype)
        # The official choice against autoregressive drift: less initial noise than sigma_max
        # (docs/method.md).
        x = noise if official else sigmas[0] * noise
        s_cond = self.cfg.s_cond
        sigma_cond = None if s_cond <= 0 else torch.full((b,), s_cond, device=device)
        frames = prev_obs if extra_images is None else torch.cat([prev_obs, extra_images], dim=1)

        def noise_conditioning_images() -> None:
            # All of them, the upsampler's low-resolution one included, as the official sampler.
            nonlocal frames
            assert sigma_cond is not None
            frames = noise_frames(frames, sigma_cond, 0.0, generator)

        def denoise_fn(x: Tensor, sigma: Tensor) -> Tensor:
            denoised = denoiser.predict_clean(x, sigma, frames=frames, act=prev_act, sigma_cond=sigma_cond)
            if callback is not None:
                callback(SamplingStep(x, denoised, f"sigma {float(sigma[0]):.3g}"))
            return quantize_floor(denoised) if official else denoised

        x = sample(
            denoise_fn,
            x,
            sigmas,
            self.cfg,
            generator=generator,
            churned_call_at_sigma=denoiser.layout.churn_call_at_sigma,
            before_denoising=None if sigma_cond is None else noise_conditioning_images,
        )
        # Snaps the last Euler step (x + (0 - sigma) (x - D) / sigma = D up to rounding errors) onto D's
        # 8-bit level under the official convention; rounds the continuous result under ``edm``.
        return quantize(x)
