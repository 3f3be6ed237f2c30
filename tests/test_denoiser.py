"""The diffusion world model: network F, EDM and DDPM denoisers, their training loss and sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffworld.config.schema import DenoiserConfig, DiffusionKind, SamplerConfig
from diffworld.data.batch import Batch
from diffworld.models.diffusion import (
    DDPMDenoiser,
    Denoiser,
    EDMDenoiser,
    SamplingStep,
    StepCallback,
    make_denoiser,
)
from diffworld.models.diffusion.ddpm import ddim_timesteps
from diffworld.models.diffusion.edm import autoregressive_loss

NUM_ACTIONS = 3
SIZE = 16
KINDS = [DiffusionKind.edm, DiffusionKind.ddpm]


def tiny_cfg(kind: DiffusionKind = DiffusionKind.edm) -> DenoiserConfig:
    return DenoiserConfig(
        kind=kind, cond_channels=32, channels=[16, 16], depths=[1, 1], attn_depths=[False, False]
    )


def make_batch(batch_size: int = 4, num_steps: int = 5, seed: int = 0) -> Batch:
    """Real segments of ``num_steps`` steps (num_steps + 1 frames) of SIZE x SIZE frames."""
    gen = torch.Generator().manual_seed(seed)
    obs = quantize_like_env(torch.rand(batch_size, num_steps + 1, 3, SIZE, SIZE, generator=gen) * 2 - 1)
    shape = (batch_size, num_steps)
    return Batch.of_steps(
        obs=obs,
        act=torch.randint(NUM_ACTIONS, shape, generator=gen),
        rew=torch.zeros(shape),
        end=torch.zeros(shape, dtype=torch.bool),
        trunc=torch.zeros(shape, dtype=torch.bool),
        step_mask=torch.ones(shape, dtype=torch.bool),
    )


def quantize_like_env(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) * 127.5).round() / 127.5 - 1


def perturb_parameters(model: nn.Module, std: float = 0.02) -> None:
    """Move every parameter off its initialization (zero-initialized layers block gradients at init)."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen))


def is_quantized(x: torch.Tensor) -> bool:
    levels = (x + 1) * 127.5
    return bool(torch.all((levels - levels.round()).abs() < 1e-3) and x.min() >= -1 and x.max() <= 1)


def test_make_denoiser_picks_the_kind() -> None:
    assert isinstance(make_denoiser(tiny_cfg(DiffusionKind.edm), NUM_ACTIONS), EDMDenoiser)
    assert isinstance(make_denoiser(tiny_cfg(DiffusionKind.ddpm), NUM_ACTIONS), DDPMDenoiser)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("num_actions", [4, 18])
def test_parameter_count_matches_the_paper(num_actions: int) -> None:
    # docs/method.md §7: the denoiser has 4.41 M parameters (64x64, 4 frames, channels [64] * 4, depths [2] *
    # 4).
    num_params = count_parameters(EDMDenoiser(DenoiserConfig(), num_actions))
    assert abs(num_params - 4.41e6) / 4.41e6 < 0.02
    assert count_parameters(DDPMDenoiser(DenoiserConfig(kind=DiffusionKind.ddpm), num_actions)) == num_params


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_dtypes(kind: DiffusionKind) -> None:
    cfg = tiny_cfg(kind)
    model = make_denoiser(cfg, NUM_ACTIONS)
    batch = make_batch()
    loss, metrics = model(batch)
    assert loss.shape == () and loss.dtype == torch.float32 and loss.requires_grad
    assert set(metrics) == {"loss_denoising"}
    assert not metrics["loss_denoising"].requires_grad
    next_obs = model.sampler(cfg.sampler).predict_next(batch.obs[:, :4], batch.act[:, :4])
    assert next_obs.shape == (4, 3, SIZE, SIZE) and next_obs.dtype == torch.float32


def test_segment_length_is_checked() -> None:
    model = make_denoiser(tiny_cfg(), NUM_ACTIONS)
    with pytest.raises(ValueError, match="6 frames"):
        model(make_batch(num_steps=6))


def test_output_conv_is_zero_initialized() -> None:
    model = EDMDenoiser(tiny_cfg(), NUM_ACTIONS)
    assert torch.all(model.net.conv_out.weight == 0) and torch.all(model.net.conv_out.bias == 0)
    batch = make_batch()
    x = torch.randn(4, 3, SIZE, SIZE)
    sigma = torch.full((4,), 0.4)
    prev_obs, prev_act = batch.obs[:, :4], batch.act[:, :4]
    # F = 0, so D(x) = c_skip x with c_skip = 0.5 at s = sqrt(0.4^2 + 0.3^2) = sigma_data.
    torch.testing.assert_close(model.denoise(x, sigma, prev_obs, prev_act), 0.5 * x)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind: DiffusionKind) -> None:
    model = make_denoiser(tiny_cfg(kind), NUM_ACTIONS)
    perturb_parameters(model)
    batch = make_batch(batch_size=8)
    assert set(batch.act.unique().tolist()) == set(range(NUM_ACTIONS))
    loss, _ = model(batch)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_padded_targets_do_not_count(kind: DiffusionKind) -> None:
    model = make_denoiser(tiny_cfg(kind), NUM_ACTIONS)
    perturb_parameters(model)
    batch = make_batch()
    # Samples 1 and 3 end one step early: their last frame (the second prediction's target) is padding.
    step_mask = batch.step_mask.clone()
    step_mask[[1, 3], -1] = False
    obs = batch.obs.clone()
    obs[[1, 3], -1] = 0.0
    padded = Batch.of_steps(obs, batch.act, batch.rew, batch.end, batch.trunc, step_mask)
    assert padded.frame_mask[:, -1].tolist() == [True, False, True, False]

    def loss_of(b: Batch) -> torch.Tensor:
        torch.manual_seed(0)
        return model(b)[0]

    reference = loss_of(padded)
    changed = obs.clone()
    changed[[1, 3], -1] = torch.rand(2, 3, SIZE, SIZE) * 100
    torch.testing.assert_close(loss_of(Batch.of_steps(changed, *_rest(padded))), reference, rtol=0, atol=0)
    # The real target of the same prediction does count.
    changed[0, -1] = -changed[0, -1]
    assert loss_of(Batch.of_steps(changed, *_rest(padded))) != reference


def _rest(b: Batch) -> tuple[torch.Tensor, ...]:
    return b.act, b.rew, b.end, b.trunc, b.step_mask


def test_autoregressive_conditioning_uses_the_estimate() -> None:
    batch = make_batch(batch_size=2)
    step_mask = batch.step_mask.clone()
    step_mask[1, :2] = False  # sample 1 starts with two padding steps: frames 0 and 1 are padding
    obs = batch.obs.clone()
    obs[1, :2] = 0.0
    batch = Batch.of_steps(obs, batch.act, batch.rew, batch.end, batch.trunc, step_mask)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def predict(
        prev_obs: torch.Tensor, prev_act: torch.Tensor, next_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seen.append((prev_obs.clone(), prev_act, next_obs))
        return torch.zeros_like(next_obs), torch.ones_like(next_obs), torch.full_like(next_obs, 0.25)

    loss = autoregressive_loss(batch.obs, batch.act, batch.frame_mask, 4, predict)
    assert loss.item() == 1.0
    assert len(seen) == 2
    torch.testing.assert_close(seen[0][0], obs[:, :4])
    torch.testing.assert_close(seen[1][0][:, :3], obs[:, 1:4])
    torch.testing.assert_close(seen[1][0][:, 3], torch.full_like(obs[:, 0], 0.25))
    torch.testing.assert_close(seen[1][1], batch.act[:, 1:5])
    torch.testing.assert_close(seen[1][2], obs[:, 5])
    torch.testing.assert_close(batch.obs, obs)  # the batch is left untouched


def _overfit(model: Denoiser, batch: Batch, num_iters: int) -> tuple[float, float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(num_iters):
        torch.manual_seed(0)  # the same noise levels and noise every iteration
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.mark.parametrize("kind", KINDS)
def test_overfits_one_batch(kind: DiffusionKind) -> None:
    torch.manual_seed(0)
    model = make_denoiser(tiny_cfg(kind), NUM_ACTIONS)
    batch = make_batch(batch_size=4)
    first, last = _overfit(model, batch, num_iters=40)
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("sampler_cfg", [SamplerConfig(), SamplerConfig(order=2, s_churn=1.0)])
def test_edm_predict_next_is_deterministic_and_quantized(sampler_cfg: SamplerConfig) -> None:
    model = EDMDenoiser(tiny_cfg(), NUM_ACTIONS)
    perturb_parameters(model)
    batch = make_batch()
    sampler = model.sampler(sampler_cfg)
    calls = []
    model.net.register_forward_hook(lambda _module, args, _output: calls.append(args[0].shape[0]))

    def predict(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sampler.predict_next(batch.obs[:, :4], batch.act[:, :4], generator)

    out = predict(0)
    # One batched network call per step (plus one per Heun correction).
    assert calls == [4] * (3 if sampler_cfg.order == 1 else 5)
    assert is_quantized(out)
    torch.testing.assert_close(predict(0), out, rtol=0, atol=0)
    assert not torch.equal(predict(1), out)


def test_ddim_timesteps() -> None:
    assert ddim_timesteps(1, 1000) == [999]
    assert ddim_timesteps(3, 1000) == [999, 500, 0]
    steps = ddim_timesteps(10, 1000)
    assert steps[0] == 999 and steps[-1] == 0 and len(set(steps)) == 10
    with pytest.raises(ValueError):
        ddim_timesteps(0, 1000)


@pytest.mark.parametrize("num_steps", [1, 3, 10])
def test_ddpm_sampler_any_number_of_steps(num_steps: int) -> None:
    model = DDPMDenoiser(tiny_cfg(DiffusionKind.ddpm), NUM_ACTIONS)
    perturb_parameters(model)
    batch = make_batch()
    sampler_cfg = SamplerConfig(num_steps=num_steps)
    calls = []
    model.net.register_forward_hook(lambda _module, args, _output: calls.append(args[0].shape[0]))

    def predict(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return model.sampler(sampler_cfg).predict_next(batch.obs[:, :4], batch.act[:, :4], generator)

    out = predict(0)
    assert calls == [4] * num_steps
    assert out.shape == (4, 3, SIZE, SIZE)
    assert is_quantized(out)
    torch.testing.assert_close(predict(0), out, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kind", "sampler_cfg", "labels"),
    [
        (DiffusionKind.edm, SamplerConfig(), ["sigma 5", "sigma 0.283", "sigma 0.002"]),
        # Heun's correction calls the denoiser again at the next level, but for the last step (to 0).
        (DiffusionKind.edm, SamplerConfig(order=2), ["sigma 5", *["sigma 0.283"] * 2, *["sigma 0.002"] * 2]),
        (DiffusionKind.ddpm, SamplerConfig(), ["t 999", "t 500", "t 0"]),
    ],
)
def test_sampler_callback_sees_every_denoiser_call_and_changes_nothing(
    kind: DiffusionKind, sampler_cfg: SamplerConfig, labels: list[str]
) -> None:
    model = make_denoiser(tiny_cfg(kind), NUM_ACTIONS)
    perturb_parameters(model)
    batch = make_batch()
    sampler = model.sampler(sampler_cfg)
    calls = []
    model.net.register_forward_hook(lambda _module, args, _output: calls.append(args[0].shape[0]))
    steps: list[SamplingStep] = []

    def predict(callback: StepCallback | None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return sampler.predict_next(batch.obs[:, :4], batch.act[:, :4], generator, callback)

    watched = predict(steps.append)
    assert [s.label for s in steps] == labels and len(calls) == len(labels)
    assert all(s.noisy.shape == s.denoised.shape == (4, 3, SIZE, SIZE) for s in steps)
    torch.testing.assert_close(predict(None), watched, rtol=0, atol=0)
