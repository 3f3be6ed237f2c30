"""Noise schedule and samplers of EDM (Karras et al. 2022), as small pure functions.

Samplers take a ``denoise_fn(x, sigma) -> D(x)`` with ``sigma`` of shape (B,) and a decreasing ``sigmas``
tensor that ends with 0, in the style of k-diffusion's ``sampling.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from diffworld.config.schema import SamplerConfig

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
"""``denoise_fn(x, sigma)``: the denoised estimate D(x; sigma) of ``x`` (B, ...) at noise levels (B,)."""


def karras_sigmas(
    num_steps: int, sigma_min: float, sigma_max: float, rho: float, device: torch.device | str | None = None
) -> Tensor:
    """EDM eq. 5: ``num_steps`` noise levels from sigma_max to sigma_min, evenly spaced in sigma^(1/rho),
    then a final 0 (length num_steps + 1). One step gives [sigma_max, 0]."""
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=torch.float32)


def quantize(x: Tensor) -> Tensor:
    """Clamp to [-1, 1] and round to the nearest of the 256 levels of an 8-bit image mapped to [-1, 1]."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)


def quantize_floor(x: Tensor) -> Tensor:
    """Clamp to [-1, 1] and floor to the 8-bit level below: ``floor((x + 1) / 2 * 255) / 255 * 2 - 1``.

    The official DIAMOND code's quantization of every denoiser output (a cast to uint8, which truncates),
    written with its operations in its order so that the levels agree bit for bit.
    """
    return x.clamp(-1, 1).add(1).div(2).mul(255).floor().div(255).mul(2).sub(1)


@torch.no_grad()
def sample(
    denoise_fn: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    cfg: SamplerConfig,
    generator: torch.Generator | None = None,
    churned_call_at_sigma: bool = False,
    before_denoising: Callable[[], None] | None = None,
) -> Tensor:
    """EDM Algorithm 2 from ``x`` (noise at level ``sigmas[0]``) down to ``sigmas[-1]`` (0), with the
    order and the churn of ``cfg`` (its schedule is ``sigmas``).

    ``cfg.order`` 1 takes Euler steps; 2 adds Heun's correction on every step whose next sigma is not 0.
    With ``cfg.s_churn > 0``, noise is first added to raise sigma to sigma_hat (steps 4-6) where sigma is
    within [``s_tmin``, ``s_tmax``], its scale ``s_noise``. Each step calls ``denoise_fn`` once on the
    whole batch (twice with a Heun correction).

    ``churned_call_at_sigma``: a step's first denoiser call is told the level before churn, sigma, while the
    step itself goes from sigma_hat, as the official CS:GO sampler does (its upsampler is used that way);
    the same as Algorithm 2 where there is no churn.

    ``before_denoising``: called at every step after the churn, before the step's first denoiser call (the
    official CS:GO sampler noises its conditioning frames there).
    """
    order, s_churn, s_tmin, s_tmax, s_noise = cfg.order, cfg.s_churn, cfg.s_tmin, cfg.s_tmax, cfg.s_noise
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (Euler) or 2 (Heun), got {order}")
    levels = sigmas.tolist()  # a single sync: the control flow below uses Python floats
    num_steps = len(levels) - 1
    gamma_churn = min(s_churn / num_steps, math.sqrt(2) - 1)
    sigma_in = x.new_ones(x.shape[0])
    for sigma, sigma_next in itertools.pairwise(levels):
        # Steps 4-6: gamma_i, then raise the noise level to sigma_hat = sigma (1 + gamma_i).
        gamma = gamma_churn if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + eps * s_noise * math.sqrt(sigma_hat**2 - sigma**2)
        if before_denoising is not None:
            before_denoising()
        # Steps 7-8: Euler step from sigma_hat to sigma_next, dx/dsigma = (x - D(x; sigma)) / sigma.
        told = sigma if churned_call_at_sigma else sigma_hat
        d = (x - denoise_fn(x, told * sigma_in)) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        # Steps 9-11: Heun's second-order correction, unless the next level is 0.
        if order == 2 and sigma_next != 0:
            d_next = (x_next - denoise_fn(x_next, sigma_next * sigma_in)) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
    return x
