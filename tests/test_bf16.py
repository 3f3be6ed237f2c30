"""bfloat16 autocast changes the numbers by bfloat16's rounding, not more.

``training.precision=bf16`` runs the forward passes under autocast to bfloat16 (``training.precision``):
the numbers change by bfloat16's rounding (8 bits of mantissa, a relative step of 2^-8 = 0.4 %), not more.
The three models' losses agree with float32 to 2 % (relative), their gradients point the same way
(cosine similarity above 0.99), and the convolutions really ran in bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from diffworld.config.schema import Precision
from diffworld.fitting.precision import autocast
from diffworld.models import blocks
from numerics_cases import actor_critic_case, denoiser_batch, loss_and_grads, reward_model_case, tiny_denoiser


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


def test_bf16_denoiser_loss_within_bf16_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "RECOMPUTE_MIN_NUMEL", 0)  # the tiny blocks recompute too
    model, batch = tiny_denoiser(), denoiser_batch()

    def loss() -> torch.Tensor:
        torch.manual_seed(3)  # the same training noise for both precisions
        return model(batch)[0]

    bf16_and_fp32(model, loss)  # recomputed blocks, two autoregressive steps: the backward pass must run


def test_bf16_reward_model_loss_within_bf16_rounding() -> None:
    bf16_and_fp32(*reward_model_case())


def test_bf16_actor_critic_within_bf16_rounding() -> None:
    bf16_and_fp32(*actor_critic_case())
