"""Small models with random nonzero weights and batches for the numerics tests: each optimized path is
compared with its plain one on the same case."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from diffworld.config.schema import ActorCriticConfig, DenoiserConfig, RewardTerminationConfig
from diffworld.data.batch import Batch
from diffworld.models.actor_critic import ActorCritic
from diffworld.models.diffusion.edm import EDMDenoiser
from diffworld.models.reward_termination import RewardTerminationModel

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


M = TypeVar("M", bound=torch.nn.Module)


def nonzero_init(model: M, seed: int) -> M:
    """``model`` with its zero-initialized weights drawn at random, so that every layer matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def loss_and_grads(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]


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
    return Batch.of_steps(obs, act, zeros, zeros.bool(), zeros.bool(), mask)


def reward_model_case() -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """A small reward model and its loss on padded 19-step segments with random rewards."""
    model = small_model(6)
    obs, act, mask, _ = random_inputs(b=4, t=19, seed=6)
    gen = torch.Generator().manual_seed(7)
    rew = torch.randint(-1, 2, mask.shape, generator=gen).float() * mask
    batch = Batch.of_steps(obs, act, rew, torch.zeros_like(mask), torch.zeros_like(mask), mask)
    return model, lambda: model(batch)[0]


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
