"""The reward/termination model's packed LSTM gives the step-by-step results.

The reward/termination model's LSTM over padded segments runs once on the packed real steps
(``RewardTerminationModel._packed_lstm``) instead of one step at a time (``_stepwise_lstm``, the reference).
Both do the same float32 arithmetic per step, in another order of calls: outputs on real steps, final
states, losses and gradients agree to 1e-5 (absolute and relative).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from diffworld.data.batch import Batch
from diffworld.models.reward_termination import RewardTerminationModel, contiguous_runs
from numerics_cases import random_inputs, small_model

TOL = {"atol": 1e-5, "rtol": 1e-5}


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
    batch = Batch.of_steps(obs, act, rew, end, torch.zeros_like(mask), mask)

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
