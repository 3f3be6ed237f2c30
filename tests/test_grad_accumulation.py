"""Gradient accumulation: k micro-batches of B / k segments give the optimizer the gradient of one batch of B.

This is what lets a memory-limited machine keep the paper's batch of 32 (``benchmarks/results``: the paper
settings in float32 within 4 GB with micro-batches of 16 and 8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from diffworld.agent.trainer import Trainer
from diffworld.config import build_config
from diffworld.config.loading import reward_model_seq_length
from diffworld.data.batch import Batch

BATCH = 4


def segments(seq_length: int, seed: int = 0) -> Batch:
    """BATCH real segments of ``seq_length`` steps (no padding), with rewards of every sign."""
    g = torch.Generator().manual_seed(seed)
    b, t = BATCH, seq_length
    return Batch.of_steps(
        obs=torch.rand(b, t + 1, 3, 64, 64, generator=g) * 2 - 1,
        act=torch.randint(0, 4, (b, t), generator=g),
        rew=torch.randint(-1, 2, (b, t), generator=g).float(),
        end=torch.zeros(b, t, dtype=torch.bool),
        trunc=torch.zeros(b, t, dtype=torch.bool),
        step_mask=torch.ones(b, t, dtype=torch.bool),
    )


def split(batch: Batch, parts: int) -> list[Batch]:
    size = BATCH // parts
    names = [f.name for f in dataclasses.fields(batch)]
    return [
        Batch(
            **{
                n: None if getattr(batch, n) is None else getattr(batch, n)[i * size : (i + 1) * size]
                for n in names
            }
        )
        for i in range(parts)
    ]


def gradient_of_one_update(tmp_path: Path, batch: Batch, grad_acc_steps: int) -> dict[str, torch.Tensor]:
    """The reward model's gradients handed to the optimizer by ``Trainer.train_model`` for one update."""
    cfg = build_config(
        [
            "preset=smoke",
            "game=Breakout",
            "seed=0",
            "logging.tensorboard=false",
            f"reward_model.training.batch_size={BATCH // grad_acc_steps}",
            f"reward_model.training.grad_acc_steps={grad_acc_steps}",
        ]
    )
    trainer = Trainer(cfg, tmp_path / f"acc{grad_acc_steps}")
    slot = trainer.slots["reward_model"]
    micro_batches = iter(split(batch, grad_acc_steps))
    slot.segments.sample = lambda batch_size=None: next(micro_batches)  # type: ignore[method-assign]
    captured: dict[str, torch.Tensor] = {}

    def capture_then_skip() -> None:
        for name, p in slot.model.named_parameters():
            if p.grad is not None:
                captured[name] = p.grad.clone()

    slot.optimizer.step = capture_then_skip  # type: ignore[method-assign,assignment]
    trainer.train_model("reward_model", 1)
    trainer.train_envs.close()
    trainer.test_envs.close()
    return captured


# The optimizer's step is replaced to read the gradients; the scheduler notices and warns.
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize("grad_acc_steps", [2, 4])
def test_micro_batches_give_the_gradient_of_the_whole_batch(tmp_path: Path, grad_acc_steps: int) -> None:
    cfg = build_config(["preset=smoke", "game=Breakout"])
    batch = segments(reward_model_seq_length(cfg))
    whole = gradient_of_one_update(tmp_path, batch, 1)
    accumulated = gradient_of_one_update(tmp_path, batch, grad_acc_steps)
    assert whole.keys() == accumulated.keys() and len(whole) > 10
    for name, g in whole.items():
        # Same initialization (same seed), same segments: only the order of float32 sums differs.
        torch.testing.assert_close(accumulated[name], g, rtol=1e-4, atol=1e-7, msg=name)
    assert any(g.abs().max() > 1e-4 for g in whole.values())  # a real gradient, not zeros on both sides
