"""Open-loop prediction: the world model imagines a trajectory from real context frames and given actions,
each frame conditioned on its own earlier predictions rather than on real frames, as in imagination
(docs/method.md §3)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from diffworld.models.diffusion.denoiser import FrameSampler, StepCallback


@torch.no_grad()
def predict_open_loop(
    sampler: FrameSampler,
    context: Tensor,
    actions: Sequence[Tensor],
    horizons: Sequence[int],
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Iterator[Tensor]:
    """Yield, for h = 1, 2, ..., the predictions at horizon h of the trajectories still going.

    Trajectory i starts from ``context[i]`` (L frames, (B, L, 3, H, W) in [-1, 1]) and makes ``horizons[i]``
    predictions; prediction h is conditioned on the last L frames (real, then predicted) and on
    ``actions[i][h - 1 : h - 1 + L]``, so ``actions[i]`` holds at least ``horizons[i] + L - 1`` actions
    (indices (T,) of an Atari world model, or (T, D) action vectors of an engine).
    ``horizons`` must not increase, so that the trajectories still going at h are the first m_h: each yield
    is (m_h, 3, H, W), one batched sampling per horizon, whose denoiser calls go to ``callback``.
    """
    if any(a < b for a, b in itertools.pairwise(horizons)):
        raise ValueError(f"horizons must not increase (longest trajectory first), got {list(horizons)}")
    num_cond = context.size(1)
    obs = context
    for h in range(1, (horizons[0] if horizons else 0) + 1):
        m = sum(n >= h for n in horizons)
        act = torch.stack([actions[i][h - 1 : h - 1 + num_cond] for i in range(m)])
        pred = sampler.predict_next(obs[:m], act, generator=generator, callback=callback)
        yield pred
        obs = torch.cat([obs[:m, 1:], pred[:, None]], dim=1)
