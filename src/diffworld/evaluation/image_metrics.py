"""Image metrics of predicted frames against real ones, on 8-bit levels: PSNR, SSIM and the squared error."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_MAX = 100.0
"""PSNR (dB) given to a prediction identical to the real frame (its MSE is 0). Any non-identical 64x64 RGB
frame scores below 89 dB (one level off in one pixel), so the cap only marks exact copies."""
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
"""Gaussian window of 11 x 11 (radius 5 = int(3.5 sigma + 0.5), scikit-image's truncation), sigma 1.5."""
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0


def _to_levels(x: Tensor) -> Tensor:
    """Frames as float64 8-bit levels: uint8 as they are, floats in [-1, 1] mapped to [0, 255]."""
    if x.dtype == torch.uint8:
        return x.double()
    return x.double().clamp(-1, 1).add(1).mul(127.5)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) PSNR in dB of each (N, C, H, W) prediction against its target, over all channels and pixels.

    Frames are uint8, or floats in [-1, 1] (taken as 8-bit levels); data range 255. Identical frames score
    ``PSNR_MAX``.
    """
    mse = (_to_levels(pred) - _to_levels(target)).pow(2).flatten(1).mean(1)
    value = 10 * torch.log10(DATA_RANGE**2 / mse.clamp(min=1e-300))
    return torch.where(mse > 0, value.clamp(max=PSNR_MAX), PSNR_MAX)


def mse_levels(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) mean squared error in 8-bit levels."""
    return (_to_levels(pred) - _to_levels(target)).pow(2).flatten(1).mean(1)


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> Tensor:
    """(2 radius + 1,) float64 normalized Gaussian weights."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) mean SSIM (Wang et al. 2004) of each (N, C, H, W) prediction against its target.

    The standard formula with a Gaussian window (11 x 11, sigma 1.5), K1 = 0.01, K2 = 0.03, data range 255,
    population (not sample) statistics, computed per channel over the windows that fit inside the image
    ('valid'), averaged over windows and channels: scikit-image's ``structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=...)``.
    """
    x, y = _to_levels(pred), _to_levels(target)
    c = x.size(1)
    if min(x.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs frames of at least {2 * SSIM_RADIUS + 1} pixels, got {tuple(x.shape)}")
    w = gaussian_window().to(x.device)
    kernel_h = w.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    kernel_v = w.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kernel_h, groups=c), kernel_v, groups=c)

    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"psnr": psnr, "ssim": ssim, "mse": mse_levels}
