"""Recomputing the norm-SiLU in the backward pass gives the plain results and keeps less.

The residual blocks recompute their norm-SiLU in the backward pass (``blocks.norm_act_conv``): the same
operations run again on the same inputs, so outputs and gradients are equal bit for bit, while the tensors
kept for the backward pass shrink.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from diffworld.models import blocks


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``fn()``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_norm_act_conv_recomputes_exactly_and_keeps_less(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "RECOMPUTE_MIN_NUMEL", 0)
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


def test_norm_act_conv_recomputes_only_from_the_size_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    norm, conv = blocks.AdaGroupNorm(8, 4), blocks.conv3x3(8, 8)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    cond = torch.randn(2, 4)
    x_bytes = x.numel() * 4

    def kept() -> int:
        return saved_bytes(lambda: blocks.norm_act_conv(norm, conv, x, cond))

    monkeypatch.setattr(blocks, "RECOMPUTE_MIN_NUMEL", x.numel() + 1)
    assert kept() >= 4 * x_bytes  # below the threshold: the plain composition's tensors
    monkeypatch.setattr(blocks, "RECOMPUTE_MIN_NUMEL", x.numel())
    assert kept() <= 2.2 * x_bytes
