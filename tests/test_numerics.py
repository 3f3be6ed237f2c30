"""Optimized paths give the plain paths' results.

- The reward/termination model's LSTM over padded segments runs once on the packed real steps
  (``RewardTerminationModel._packed_lstm``) instead of one step at a time (``_stepwise_lstm``, the reference).
  Both do the same float32 arithmetic per step, in another order of calls: outputs on real steps, final
  states, losses and gradients agree to 1e-5 (absolute and relative).
- The residual blocks recompute their norm-SiLU in the backward pass (``blocks.norm_act_conv``): the same
  operations run again on the same inputs, so outputs and gradients are equal bit for bit, while the tensors
  kept for the backward pass shrink.
- The three networks run in channels-last memory order (``blocks.channels_last``). oneDNN then sums the
  convolutions in another order: the denoiser's loss and samples, the reward model's loss, the actor-critic's
  outputs and every gradient agree with the plain (N, C, H, W) networks to 1e-4 (absolute and relative;
  typical differences are around 1e-6).
- ``training.precision=bf16`` runs the forward passes under autocast to bfloat16 (``training.precision``):
  the numbers change by bfloat16's rounding (8 bits of mantissa, a relative step of 2^-8 = 0.4 %), not more.
  The three models' losses agree with float32 to 2 % (relative), their gradients point the same way
  (cosine similarity above 0.99), and the convolutions really ran in bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from diffworld.config.schema import ActorCriticConfig, DenoiserConfig, Precision, RewardTerminationConfig
from diffworld.data.batch import Batch
from diffworld.models import actor_critic, blocks, reward_termination
from diffworld.models.actor_critic import ActorCritic
from diffworld.models.diffusion import unet
from diffworld.models.diffusion.edm import EDMDenoiser
from diffworld.models.reward_termination import RewardTerminationModel, contiguous_runs
from diffworld.training.precision import autocast

TOL = {"atol": 1e-5, "rtol": 1e-5}
NUM_ACTIONS = 4
SIZE = 16


def small_model(seed: int = 0) -> RewardTerminationModel:
    torch.manual_seed(seed)
    cfg = RewardTerminationConfig(
        channels=[8, 8], depths=[1, 1], attn_depths=[False, False], cond_channels=16, lstm_dim=24
    )
    model = RewardTerminationModel(cfg, NUM_ACTIONS, img_size=SIZE)
    with torch.no_grad():  # zero-initialized layers would hide differences in what reaches the LSTM
        for p in model.parameters():
            if torch.all(p == 0):
                p.normal_(0, 0.1)
    return model


def random_padded_mask(b: int, t: int, gen: torch.Generator) -> torch.Tensor:
    """Rows with left padding, right padding, both, none, and one with no real step at all."""
    starts = torch.randint(0, t, (b,), generator=gen)
    stops = starts + 1 + (torch.rand(b, generator=gen) * (t - starts)).long()
    starts[0], stops[0] = 0, t  # fully real
    starts[1], stops[1] = 3, t  # left padding only
    starts[2], stops[2] = 0, t - 4  # right padding only
    starts[3], stops[3] = 0, 0  # no real step: the state must stay as it was
    steps = torch.arange(t)
    return (steps >= starts[:, None]) & (steps < stops.clamp(max=t)[:, None])


def random_inputs(
    b: int, t: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.rand(b, t + 1, 3, SIZE, SIZE, generator=gen) * 2 - 1
    act = torch.randint(NUM_ACTIONS, (b, t), generator=gen)
    mask = random_padded_mask(b, t, gen)
    state = (torch.randn(1, b, 24, generator=gen), torch.randn(1, b, 24, generator=gen))
    return obs, act, mask, state


@contextmanager
def stepwise(model: RewardTerminationModel) -> Iterator[None]:
    """Inside, ``model`` takes the step-by-step path for every mask."""
    model._masked_lstm = model._stepwise_lstm  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model._masked_lstm


def test_contiguous_runs() -> None:
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    starts, lengths = contiguous_runs(mask)  # type: ignore[misc]
    assert starts.tolist() == [1, 0, 0, 3] and lengths.tolist() == [2, 4, 0, 1]
    assert contiguous_runs(torch.tensor([[1, 0, 1, 1]], dtype=torch.bool)) is None


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_lstm_equals_stepwise(seed: int, with_state: bool) -> None:
    """Random left/right-padded masks (19 steps, as the reward model's training segments): same logits on
    real steps and the same returned state, including rows without a real step (state unchanged)."""
    model = small_model(seed)
    obs, act, mask, state0 = random_inputs(b=9, t=19, seed=seed)
    state = state0 if with_state else None
    args = (obs[:, :-1], act, obs[:, 1:], state, mask)
    with torch.no_grad():
        rew, end, (h, c) = model.predict(*args)
        with stepwise(model):
            rew_ref, end_ref, (h_ref, c_ref) = model.predict(*args)
    torch.testing.assert_close(rew[mask], rew_ref[mask], **TOL)
    torch.testing.assert_close(end[mask], end_ref[mask], **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(c, c_ref, **TOL)
    initial = state0 if with_state else (torch.zeros_like(h), torch.zeros_like(c))
    torch.testing.assert_close(h[:, 3], initial[0][:, 3], rtol=0, atol=0)  # the row with no real step
    torch.testing.assert_close(c[:, 3], initial[1][:, 3], rtol=0, atol=0)


def test_non_contiguous_mask_falls_back_to_stepwise() -> None:
    model = small_model()
    obs, act, mask, state = random_inputs(b=4, t=7, seed=3)
    mask[0] = torch.tensor([1, 1, 0, 1, 1, 0, 1], dtype=torch.bool)  # holes: not one run
    args = (obs[:, :-1], act, obs[:, 1:], state, mask)
    with torch.no_grad():
        rew, _, (h, c) = model.predict(*args)
        with stepwise(model):
            rew_ref, _, (h_ref, c_ref) = model.predict(*args)
    torch.testing.assert_close(rew, rew_ref, rtol=0, atol=0)  # the very same computation
    torch.testing.assert_close((h, c), (h_ref, c_ref), rtol=0, atol=0)


def test_packed_loss_and_gradients_equal_stepwise() -> None:
    """The training loss and every parameter's gradient, packed vs step by step."""
    model = small_model(4)
    obs, act, mask, _ = random_inputs(b=8, t=19, seed=4)
    gen = torch.Generator().manual_seed(5)
    rew = torch.randint(-1, 2, mask.shape, generator=gen).float() * mask
    end = (torch.rand(mask.shape, generator=gen) < 0.2) & mask
    batch = Batch(obs, act, rew, end, torch.zeros_like(mask), mask)

    def loss_and_grads() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss, _ = model(batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss, grads = loss_and_grads()
    with stepwise(model):
        loss_ref, grads_ref = loss_and_grads()
    torch.testing.assert_close(loss, loss_ref, **TOL)
    assert grads.keys() == grads_ref.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], **TOL, msg=name)


def nonzero_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``model`` with its zero-initialized weights drawn at random, so that every layer matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``fn()``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_norm_act_conv_recomputes_exactly_and_keeps_less() -> None:
    torch.manual_seed(0)
    norm, conv = blocks.AdaGroupNorm(32, 16), blocks.conv3x3(32, 32)
    x = torch.randn(4, 32, 16, 16, requires_grad=True)
    cond = torch.randn(4, 16, requires_grad=True)
    params = [x, cond, *norm.parameters(), *conv.parameters()]

    def plain() -> torch.Tensor:
        return conv(F.silu(norm(x, cond)))

    def recomputed() -> torch.Tensor:
        return blocks.norm_act_conv(norm, conv, x, cond)

    out, out_ref = recomputed(), plain()
    grads = torch.autograd.grad(out.square().sum(), params)
    grads_ref = torch.autograd.grad(out_ref.square().sum(), params)
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=0)
    # Plain: the group norm's input, the normalized, the scaled and the activated tensors (the convolution's
    # input); recomputed: the block input and the convolution's output. One x-sized tensor is 32 KiB here.
    x_bytes = x.numel() * 4
    assert saved_bytes(plain) >= 4 * x_bytes
    assert saved_bytes(recomputed) <= 2.2 * x_bytes


@pytest.fixture
def plain_networks(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Calling the fixture's value switches the networks to their plain paths: (N, C, H, W) memory order and
    no recomputation."""

    def switch() -> None:
        for module in (unet, reward_termination, actor_critic):
            monkeypatch.setattr(module, "channels_last", lambda x: x)
        monkeypatch.setattr(blocks, "norm_act_conv", blocks._norm_act_conv)

    return switch


CL_TOL = {"atol": 1e-4, "rtol": 1e-4}


def loss_and_grads(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]


def assert_all_close(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
    assert len(xs) == len(ys) > 1
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x, y, **CL_TOL)


def tiny_denoiser() -> EDMDenoiser:
    torch.manual_seed(0)
    cfg = DenoiserConfig(channels=[32, 32], depths=[1, 1], attn_depths=[False, False], cond_channels=32)
    return nonzero_init(EDMDenoiser(cfg, NUM_ACTIONS), 1)  # type: ignore[return-value]


def denoiser_batch(size: int = 16) -> Batch:
    gen = torch.Generator().manual_seed(2)
    b, t = 3, 6
    obs = torch.rand(b, t, 3, size, size, generator=gen) * 2 - 1
    act = torch.randint(NUM_ACTIONS, (b, t - 1), generator=gen)
    mask = torch.ones(b, t - 1, dtype=torch.bool)
    mask[0, :2] = False  # left padding
    zeros = torch.zeros(b, t - 1)
    return Batch(obs, act, zeros, zeros.bool(), zeros.bool(), mask)


def test_denoiser_loss_and_sampler_match_plain_networks(plain_networks: Callable[[], None]) -> None:
    model, batch = tiny_denoiser(), denoiser_batch()
    prev_obs, prev_act = batch.obs[:, :4], batch.act[:, :4]
    sampler = model.sampler(model.cfg.sampler)

    def run() -> tuple[list[torch.Tensor], torch.Tensor]:
        torch.manual_seed(3)  # the same training noise for both paths
        grads = loss_and_grads(model, lambda: model(batch)[0])
        sample = sampler.predict_next(prev_obs, prev_act, torch.Generator().manual_seed(4))
        return grads, sample

    layouts: list[bool] = []
    model.net.conv_in.register_forward_hook(
        lambda module, args, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    grads, sample = run()
    plain_networks()
    grads_ref, sample_ref = run()
    assert layouts[0] and not layouts[-1]  # the two paths really differ in memory order
    assert_all_close(grads, grads_ref)
    # Samples are quantized to 8-bit levels: a 1e-6 difference may cross a rounding boundary (one level).
    assert (sample - sample_ref).abs().max() <= 2 / 255 + 1e-6
    assert (sample != sample_ref).float().mean() < 0.01


def reward_model_case() -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """A small reward model and its loss on padded 19-step segments with random rewards."""
    model = small_model(6)
    obs, act, mask, _ = random_inputs(b=4, t=19, seed=6)
    gen = torch.Generator().manual_seed(7)
    rew = torch.randint(-1, 2, mask.shape, generator=gen).float() * mask
    batch = Batch(obs, act, rew, torch.zeros_like(mask), torch.zeros_like(mask), mask)
    return model, lambda: model(batch)[0]


def test_reward_model_loss_matches_plain_networks(plain_networks: Callable[[], None]) -> None:
    model, loss = reward_model_case()
    grads = loss_and_grads(model, loss)
    plain_networks()
    assert_all_close(grads, loss_and_grads(model, loss))


def actor_critic_case() -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """A small actor-critic with nonzero heads, and a scalar of its outputs after a burn-in and a step."""
    torch.manual_seed(8)
    cfg = ActorCriticConfig(channels=[8, 8], lstm_dim=16)
    model = nonzero_init(ActorCritic(cfg, NUM_ACTIONS, img_size=SIZE), 9)
    obs = torch.rand(5, 3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(10)) * 2 - 1

    def outputs() -> torch.Tensor:
        state = model.burn_in(obs[:, :2], torch.ones(5, 2, dtype=torch.bool))  # type: ignore[operator]
        logits, value, (hx, cx) = model.step(obs[:, 2], state)  # type: ignore[operator]
        assert hx.dtype == cx.dtype == torch.float32  # the carried state stays float32, autocast or not
        return logits.square().sum() + value.square().sum()

    return model, outputs


def test_actor_critic_matches_plain_networks(plain_networks: Callable[[], None]) -> None:
    model, outputs = actor_critic_case()
    grads = loss_and_grads(model, outputs)
    plain_networks()
    assert_all_close(grads, loss_and_grads(model, outputs))


def bf16_and_fp32(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> None:
    """The loss and gradients of ``loss_fn`` under ``autocast(bf16)`` against float32 (see the module
    docstring); the model's convolutions must have produced bfloat16 outputs under autocast only."""
    conv_dtypes: list[torch.dtype] = []
    hooks = [
        m.register_forward_hook(lambda module, args, out: conv_dtypes.append(out.dtype))
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    cpu = torch.device("cpu")
    with autocast(cpu, Precision.bf16):
        grads = loss_and_grads(model, loss_fn)
    assert conv_dtypes and set(conv_dtypes) == {torch.bfloat16}
    conv_dtypes.clear()
    with autocast(cpu, Precision.fp32):
        grads_ref = loss_and_grads(model, loss_fn)
    assert set(conv_dtypes) == {torch.float32}
    for hook in hooks:
        hook.remove()
    loss, loss_ref = grads[0], grads_ref[0]
    assert loss.dtype == loss_ref.dtype == torch.float32  # losses are computed in float32 under autocast
    torch.testing.assert_close(loss, loss_ref, rtol=0.02, atol=0)
    flat, flat_ref = (torch.cat([g.flatten() for g in gs[1:]]) for gs in (grads, grads_ref))
    assert all(g.dtype == torch.float32 for g in grads[1:])
    assert F.cosine_similarity(flat, flat_ref, dim=0) > 0.99


def test_bf16_denoiser_loss_within_bf16_rounding() -> None:
    model, batch = tiny_denoiser(), denoiser_batch()

    def loss() -> torch.Tensor:
        torch.manual_seed(3)  # the same training noise for both precisions
        return model(batch)[0]

    bf16_and_fp32(model, loss)  # recomputed blocks, two autoregressive steps: the backward pass must run


def test_bf16_reward_model_loss_within_bf16_rounding() -> None:
    bf16_and_fp32(*reward_model_case())


def test_bf16_actor_critic_within_bf16_rounding() -> None:
    bf16_and_fp32(*actor_critic_case())
