"""The two conventions of the EDM world model (``denoiser.convention``): the official code's initial noise and
per-call floor quantization (the default), and the textbook EDM sampler, each checked against an independent
NumPy computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from diffworld.config.schema import DenoiserConfig, DiffusionConvention, SamplerConfig
from diffworld.models.diffusion import EDMDenoiser, karras_sigmas
from diffworld.models.diffusion.edm import add_noise, edm_preconditioning, sample_sigma_training
from diffworld.models.diffusion.sampling import quantize, quantize_floor

SIZE = 8


def floor_levels_numpy(x: np.ndarray) -> np.ndarray:
    """The official quantization: clamp, map to [0, 255], cast to uint8 (truncation), map back, in float32."""
    x = np.clip(x.astype(np.float32), -1, 1)
    return ((x + 1) / np.float32(2) * np.float32(255)).astype(np.uint8).astype(np.float32) / 255 * 2 - 1


def test_quantize_floor_matches_uint8_cast() -> None:
    x = torch.linspace(-1.3, 1.3, 50_001)
    np.testing.assert_array_equal(quantize_floor(x).numpy(), floor_levels_numpy(x.numpy()))
    # 0.9 of a level above level k stays at k (rounding would go to k + 1).
    k = torch.arange(255, dtype=torch.float32)
    above = -1 + (k + 0.9) * 2 / 255
    torch.testing.assert_close(quantize_floor(above), -1 + k * 2 / 255, atol=1e-6, rtol=0)
    torch.testing.assert_close(quantize(above), -1 + (k + 1) * 2 / 255, atol=1e-6, rtol=0)


def tiny_denoiser(convention: DiffusionConvention) -> EDMDenoiser:
    cfg = DenoiserConfig(
        convention=convention, cond_channels=16, channels=[8, 8], depths=[1, 1], attn_depths=[False, False]
    )
    return EDMDenoiser(cfg, 3)


def fake_d(x: np.ndarray, sigma: float) -> np.ndarray:
    """A stand-in for D(x; sigma) with values spread over [-1, 1], so that quantization matters."""
    return (0.6 * np.tanh(x) + 0.05 * sigma).astype(np.float32)


def euler_reference(noise: np.ndarray, sigmas: list[float], official: bool) -> tuple[np.ndarray, list]:
    """EDM Algorithm 2 with Euler steps, written out in NumPy for either convention."""
    x = noise if official else sigmas[0] * noise
    inputs = []
    for sigma, sigma_next in itertools.pairwise(sigmas):
        inputs.append((x.copy(), sigma))
        denoised = fake_d(x, sigma)
        if official:
            denoised = floor_levels_numpy(denoised)
        x = (x + (sigma_next - sigma) * (x - denoised) / sigma).astype(np.float32)
    return x, inputs


@pytest.mark.parametrize("convention", list(DiffusionConvention))
def test_sampler_initial_noise_and_quantization(convention: DiffusionConvention) -> None:
    official = convention is DiffusionConvention.official
    denoiser = tiny_denoiser(convention)
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def predict_clean(x: torch.Tensor, sigma: torch.Tensor, **conditioning: torch.Tensor | None):
        calls.append((x.clone(), sigma.clone()))
        return torch.from_numpy(fake_d(x.numpy(), sigma[0].item()))

    denoiser.predict_clean = predict_clean  # type: ignore[method-assign]
    sampler = denoiser.sampler(SamplerConfig())
    sigmas = sampler.sigmas
    torch.testing.assert_close(sigmas, karras_sigmas(3, 0.002, 5.0, 7.0), rtol=0, atol=0)
    noise = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    prev_obs, prev_act = torch.zeros(2, 4, 3, SIZE, SIZE), torch.zeros(2, 4, dtype=torch.long)
    out = sampler.predict_next(prev_obs, prev_act, noise=noise)

    x_ref, inputs = euler_reference(noise.numpy(), sigmas.tolist(), official)
    assert len(calls) == len(inputs) == 3
    for (x, sigma), (x_expected, sigma_expected) in zip(calls, inputs, strict=True):
        np.testing.assert_allclose(x.numpy(), x_expected, atol=1e-5)
        assert sigma.tolist() == pytest.approx([sigma_expected] * 2)
    # The first call sees unit-variance noise (official) or sigma_max x noise (edm), both told sigma_max.
    first_scale = calls[0][0].std().item() / noise.std().item()
    assert first_scale == pytest.approx(1.0 if official else 5.0, rel=1e-5)
    # The result is on the 8-bit levels; under the official convention it is the last floored D exactly.
    expected = floor_levels_numpy(fake_d(inputs[-1][0], inputs[-1][1])) if official else x_ref
    np.testing.assert_allclose(out.numpy(), quantize(torch.from_numpy(expected)).numpy(), atol=1e-6)


@pytest.mark.parametrize("convention", list(DiffusionConvention))
def test_training_estimate_quantization(convention: DiffusionConvention) -> None:
    denoiser = tiny_denoiser(convention)
    with torch.no_grad():
        for p in denoiser.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    gen = torch.Generator().manual_seed(1)
    prev_obs = torch.rand(4, 4, 3, SIZE, SIZE, generator=gen) * 2 - 1
    prev_act = torch.randint(3, (4, 4), generator=gen)
    next_obs = torch.rand(4, 3, SIZE, SIZE, generator=gen) * 2 - 1

    torch.manual_seed(7)
    output, target, estimate = denoiser._training_prediction(prev_obs, prev_act, next_obs)
    # The same draws again, and D's one-shot value rebuilt from F's output and target:
    # target = (x - c_skip x_noisy) / c_out, so D = c_skip x_noisy + c_out F = x - c_out (target - F).
    torch.manual_seed(7)
    sigma = sample_sigma_training(4, denoiser.cfg.sigma_distribution)
    add_noise(next_obs, sigma, denoiser.cfg.sigma_offset_noise)
    _, _, c_out, _ = edm_preconditioning(sigma, denoiser.cfg.sigma_data, denoiser.cfg.sigma_offset_noise)
    denoised = (next_obs - c_out[:, None, None, None] * (target - output)).detach().numpy()
    if convention is DiffusionConvention.official:
        expected = floor_levels_numpy(denoised)
    else:
        expected = np.round((np.clip(denoised, -1, 1) + 1) * 127.5) / 127.5 - 1
    # Values within float error of a level boundary may land either side: allow a handful.
    mismatches = (np.abs(estimate.numpy() - expected) > 1e-5).mean()
    assert mismatches < 1e-3
