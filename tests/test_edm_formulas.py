"""EDM formulas: preconditioning, noise schedules, the sampler and quantization (docs/method.md §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffworld.config.schema import SamplerConfig, SigmaDistributionConfig
from diffworld.models.diffusion.edm import add_noise, edm_preconditioning, sample_sigma_training
from diffworld.models.diffusion.sampling import karras_sigmas, quantize, sample

SIGMA_DATA = 0.5
SIGMA_OFFSET_NOISE = 0.3


@pytest.mark.parametrize("sigma_offset_noise", [0.0, SIGMA_OFFSET_NOISE])
def test_preconditioning_matches_numpy(sigma_offset_noise: float) -> None:
    sigmas = np.array([0.002, 0.05, 0.4, 1.0, 5.0, 20.0])
    c_in, c_skip, c_out, c_noise = edm_preconditioning(
        torch.tensor(sigmas, dtype=torch.float64), SIGMA_DATA, sigma_offset_noise
    )
    s = np.hypot(sigmas, sigma_offset_noise)
    total = s**2 + SIGMA_DATA**2
    np.testing.assert_allclose(c_in.numpy(), 1 / np.sqrt(total), rtol=1e-12)
    np.testing.assert_allclose(c_skip.numpy(), SIGMA_DATA**2 / total, rtol=1e-12)
    np.testing.assert_allclose(c_out.numpy(), s * SIGMA_DATA / np.sqrt(total), rtol=1e-12)
    np.testing.assert_allclose(c_noise.numpy(), np.log(s) / 4, rtol=1e-12)


def test_preconditioning_hand_values() -> None:
    # sigma = 0.4 with offset 0.3 gives s = 0.5 = sigma_data: s^2 + sigma_data^2 = 0.5.
    c_in, c_skip, c_out, c_noise = edm_preconditioning(torch.tensor([0.4]), SIGMA_DATA, SIGMA_OFFSET_NOISE)
    assert c_in.item() == pytest.approx(math.sqrt(2), rel=1e-6)
    assert c_skip.item() == pytest.approx(0.5, rel=1e-6)
    assert c_out.item() == pytest.approx(0.25 * math.sqrt(2), rel=1e-6)
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4, rel=1e-6)
    # Without offset noise, sigma = 0.5 = sigma_data gives the same values.
    c = edm_preconditioning(torch.tensor([0.5]), SIGMA_DATA, 0.0)
    assert [x.item() for x in c] == pytest.approx([math.sqrt(2), 0.5, 0.25 * math.sqrt(2), math.log(0.5) / 4])


@pytest.mark.parametrize("num_steps", [1, 3, 10])
def test_karras_sigmas_endpoints_and_monotonicity(num_steps: int) -> None:
    sigmas = karras_sigmas(num_steps, 0.002, 5.0, 7.0, "cpu")
    assert sigmas.shape == (num_steps + 1,)
    assert sigmas.dtype == torch.float32
    assert sigmas[0].item() == pytest.approx(5.0)
    assert sigmas[-1].item() == 0.0
    if num_steps > 1:
        assert sigmas[-2].item() == pytest.approx(0.002)
    assert torch.all(sigmas[1:] < sigmas[:-1])


def test_karras_sigmas_interior_value() -> None:
    # EDM eq. 5: sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    sigma_min, sigma_max, rho, n = 0.002, 5.0, 7.0, 3
    expected = (
        sigma_max ** (1 / rho) + 1 / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    ) ** rho
    sigmas = karras_sigmas(n, sigma_min, sigma_max, rho, "cpu")
    assert sigmas[1].item() == pytest.approx(expected, rel=1e-6)
    assert sigmas[1].item() == pytest.approx(0.28308, rel=1e-4)


@pytest.mark.parametrize(("order", "s_churn"), [(1, 0.0), (2, 0.0), (1, 10.0), (2, 10.0)])
def test_perfect_denoiser_recovers_the_data(order: int, s_churn: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    sigmas = karras_sigmas(5, 0.002, 5.0, 7.0, "cpu")
    calls: list[torch.Tensor] = []

    def denoise_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(sigma)
        return x0

    x = sigmas[0] * torch.randn(x0.shape, generator=gen)
    out = sample(denoise_fn, x, sigmas, SamplerConfig(order=order, s_churn=s_churn), generator=gen)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    # One call per step, plus a Heun correction on every step but the last (to sigma 0).
    assert len(calls) == (5 if order == 1 else 2 * 5 - 1)
    assert all(sigma.shape == (4,) for sigma in calls)
    # The first call is at sigma_hat = sigma (1 + gamma), gamma = min(s_churn / N, sqrt(2) - 1).
    gamma = min(s_churn / 5, math.sqrt(2) - 1)
    torch.testing.assert_close(calls[0], torch.full((4,), 5.0 * (1 + gamma)))


def test_churn_respects_s_tmin_s_tmax() -> None:
    sigmas = karras_sigmas(4, 0.002, 5.0, 7.0, "cpu")
    calls: list[float] = []

    def denoise_fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(sigma[0].item())
        return torch.zeros_like(x)

    sample(denoise_fn, torch.randn(1, 1, 2, 2), sigmas, SamplerConfig(s_churn=1.0, s_tmin=0.1, s_tmax=1.0))
    gamma = min(1.0 / 4, math.sqrt(2) - 1)
    expected = [s * (1 + gamma) if 0.1 <= s <= 1.0 else s for s in sigmas[:-1].tolist()]
    assert calls == pytest.approx(expected)


def _target_variance(sigma: float, sigma_offset_noise: float, precond_offset: float) -> tuple[float, float]:
    """Variance of F's training target and of its input c_in x_noisy, on data of std sigma_data."""
    gen = torch.Generator().manual_seed(0)
    x = SIGMA_DATA * torch.randn(20_000, 3, 4, 4, generator=gen)
    sigma_t = torch.full((x.size(0),), sigma)
    x_noisy = add_noise(x, sigma_t, sigma_offset_noise, gen)
    c_in, c_skip, c_out, _ = (
        c[:, None, None, None] for c in edm_preconditioning(sigma_t, SIGMA_DATA, precond_offset)
    )
    target = (x - c_skip * x_noisy) / c_out
    return target.var().item(), (c_in * x_noisy).var().item()


def test_training_target_has_unit_variance() -> None:
    # EDM: with data of std sigma_data, both F's input and its target have unit variance.
    target_var, input_var = _target_variance(SIGMA_DATA, 0.0, 0.0)
    assert target_var == pytest.approx(1.0, abs=0.02)
    assert input_var == pytest.approx(1.0, abs=0.02)
    # With offset noise the noise std is s = sqrt(sigma^2 + 0.3^2): preconditioning at s keeps unit
    # variance...
    target_var, input_var = _target_variance(SIGMA_DATA, SIGMA_OFFSET_NOISE, SIGMA_OFFSET_NOISE)
    assert target_var == pytest.approx(1.0, abs=0.03)
    assert input_var == pytest.approx(1.0, abs=0.03)
    # ... while preconditioning at sigma would not: ((1 - c_skip)^2 sd^2 + c_skip^2 s^2) / c_out^2 = 1.18.
    target_var, _ = _target_variance(SIGMA_DATA, SIGMA_OFFSET_NOISE, 0.0)
    assert target_var == pytest.approx(1.18, abs=0.03)


def test_offset_noise_is_constant_per_image_and_channel() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4000, 3, 8, 8)
    noise = add_noise(x, torch.full((4000,), 1e-8), SIGMA_OFFSET_NOISE, gen)
    spatial_std = noise.flatten(2).std(dim=2)
    assert spatial_std.max().item() < 1e-6
    assert noise[:, :, 0, 0].std().item() == pytest.approx(SIGMA_OFFSET_NOISE, rel=0.05)


def test_training_sigma_distribution() -> None:
    cfg = SigmaDistributionConfig()
    gen = torch.Generator().manual_seed(0)
    sigma = sample_sigma_training(200_000, cfg, "cpu", gen)
    assert sigma.min().item() >= cfg.sigma_min
    assert sigma.max().item() <= cfg.sigma_max
    log_sigma = sigma.log()
    # Clipping at 20 is 2.83 std above the mean (0.23 % of samples), at 0.002 is 4.8 std below.
    assert log_sigma.median().item() == pytest.approx(cfg.loc, abs=0.01)
    assert log_sigma.mean().item() == pytest.approx(cfg.loc, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(cfg.scale, abs=0.01)
    assert (sigma == cfg.sigma_max).float().mean().item() == pytest.approx(0.00233, abs=0.0005)


def test_training_sigma_clipping() -> None:
    cfg = SigmaDistributionConfig(loc=0.0, scale=10.0, sigma_min=0.1, sigma_max=2.0)
    sigma = sample_sigma_training(10_000, cfg, "cpu", torch.Generator().manual_seed(0))
    assert sigma.min().item() == pytest.approx(0.1)
    assert sigma.max().item() == pytest.approx(2.0)
    assert (sigma == sigma.min()).any() and (sigma == sigma.max()).any()


def test_quantization_levels() -> None:
    x = torch.linspace(-1.5, 1.5, 100_001)
    q = quantize(x)
    levels = (q + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert q.unique().numel() == 256
    assert q.min().item() == -1.0 and q.max().item() == 1.0
    torch.testing.assert_close(quantize(q), q)
    # Rounding to the nearest level: 0.4 of a level above level k goes to k, 0.6 to k + 1.
    step = 2 / 255
    k = torch.arange(255, dtype=torch.float32)
    torch.testing.assert_close(quantize(-1 + (k + 0.4) * step), -1 + k * step, atol=1e-6, rtol=0)
    torch.testing.assert_close(quantize(-1 + (k + 0.6) * step), -1 + (k + 1) * step, atol=1e-6, rtol=0)
