"""Lambda-returns of imagined trajectories, the actor-critic's targets (docs/method.md §5)."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def lambda_returns(
    rew: Tensor,
    end: Tensor,
    trunc: Tensor,
    next_val: Tensor,
    gamma: float,
    lambda_: float,
    clip_rewards: bool = True,
) -> Tensor:
    """Lambda-returns of ``H`` consecutive steps of ``B`` trajectories; every tensor is ``(B, H)``.

    The rewards are sign-clipped here (``sign`` is idempotent, so already clipped rewards are fine too), or
    with ``clip_rewards=False`` taken as they are (``reward_model.reward_kind=value``: the reward model's
    predicted values). ``next_val[:, t]`` is the critic's value of the state reached after step ``t``; where
    that step was truncated it must be the value of the true final observation. The recursion, from
    ``t = H - 1`` back (``sign(r_t)``: ``r_t`` without clipping)::

        G_t = sign(r_t) + gamma * (1 - end_t) * ((1 - lambda) * next_val_t + lambda * C_t)
        C_t = G_{t+1}     if step t neither ended nor was truncated and t + 1 < H
              next_val_t  otherwise

    so the return is zero after a termination and bootstrapped with the critic at a truncation and at the
    end of the horizon. ``end`` and ``trunc`` may be bool or float. No gradient flows through the result.
    """
    if not rew.shape == end.shape == trunc.shape == next_val.shape or rew.ndim != 2:
        raise ValueError(
            "rew, end, trunc and next_val must all be (B, H), got "
            f"{tuple(rew.shape)}, {tuple(end.shape)}, {tuple(trunc.shape)}, {tuple(next_val.shape)}"
        )
    end = end.bool()
    cont = ~(end | trunc.bool())
    discount = gamma * (~end).to(next_val.dtype)
    rew = (rew.sign() if clip_rewards else rew).to(next_val.dtype)
    returns = torch.empty_like(next_val)
    carry = next_val[:, -1]
    for t in reversed(range(rew.size(1))):
        carry = torch.where(cont[:, t], carry, next_val[:, t])
        returns[:, t] = rew[:, t] + discount[:, t] * ((1 - lambda_) * next_val[:, t] + lambda_ * carry)
        carry = returns[:, t]
    return returns
