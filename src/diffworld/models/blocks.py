"""Convolutional building blocks shared by the denoiser's U-Net and the reward/termination encoder.

The design follows DIAMOND's networks (docs/method.md §3 and 4): group norm with groups of 32 channels,
adaptive group norm (scale and shift from a conditioning vector) in every residual block, optional multi-head
self-attention after a block, stride-2 3x3 convolutions to downsample, nearest-neighbour upsampling followed
by a 3x3 convolution, and random Fourier features to embed the noise level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

GROUP_SIZE = 32
"""Channels per group of every group norm."""
GROUP_NORM_EPS = 1e-5


def channels_last(x: Tensor) -> Tensor:
    """``x`` (N, C, H, W) in channels-last memory order (same values, same shape).

    The networks convert their input once; convolutions, group norms, pooling and upsampling then keep the
    order. On the CPU, oneDNN's convolutions read and write it directly, where the default (N, C, H, W)
    order costs a reorder of the input and of the output around every convolution (about 20 ms of a 70 ms
    64-channel convolution at 64x64 and batch 32); on a GPU it is the layout tensor cores want.
    """
    return x.contiguous(memory_format=torch.channels_last)


def num_groups(channels: int) -> int:
    """Groups of a group norm over ``channels`` channels: one per 32 channels, at least one."""
    return max(1, channels // GROUP_SIZE)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution that keeps the resolution."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 convolution (channel projection)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)


def zero_init(module: nn.Conv2d) -> nn.Conv2d:
    """``module`` with its weight and bias set to zero (the block starts as the identity / outputs 0)."""
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class GroupNorm(nn.GroupNorm):
    """Group norm with groups of 32 channels and learned affine parameters."""

    def __init__(self, channels: int) -> None:
        super().__init__(num_groups(channels), channels, eps=GROUP_NORM_EPS)


class AdaGroupNorm(nn.Module):
    """Adaptive group norm: normalize without affine, then ``x * (1 + scale) + shift`` from ``cond``."""

    def __init__(self, in_channels: int, cond_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_groups = num_groups(in_channels)
        self.linear = nn.Linear(cond_channels, 2 * in_channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``x``: (B, C, H, W); ``cond``: (B, cond_channels)."""
        x = F.group_norm(x, self.num_groups, eps=GROUP_NORM_EPS)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return torch.addcmul(shift, x, 1 + scale)  # one pass over x instead of a product and a sum


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H * W positions: ``norm(x) + out_proj(attention(norm(x)))``.

    The residual is the group-normalised input, not the raw one, as in the official DIAMOND code (its
    published weights assume it; docs/method.md, "Departures"). The output projection is zero-initialized,
    so the block starts as its group norm.
    """

    def __init__(self, channels: int, head_dim: int = 8) -> None:
        super().__init__()
        self.num_heads = max(1, channels // head_dim)
        if channels % self.num_heads != 0:
            raise ValueError(f"{channels} channels do not split into {self.num_heads} heads")
        self.norm = GroupNorm(channels)
        self.qkv_proj = conv1x1(channels, 3 * channels)
        self.out_proj = zero_init(conv1x1(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.norm(x)
        qkv = self.qkv_proj(x)
        # (B, 3 * heads, C / heads, H * W) -> three (B, heads, H * W, C / heads)
        qkv = qkv.view(b, 3 * self.num_heads, c // self.num_heads, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(2, 3).reshape(b, c, h, w)
        return x + self.out_proj(y)


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar per sample: ``[cos(2 pi w x), sin(2 pi w x)]``, w ~ N(0, 1)."""

    weight: Tensor

    def __init__(self, cond_channels: int) -> None:
        super().__init__()
        if cond_channels % 2 != 0:
            raise ValueError(f"cond_channels must be even, got {cond_channels}")
        self.register_buffer("weight", torch.randn(1, cond_channels // 2))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B,) -> (B, cond_channels)."""
        f = 2 * math.pi * x[:, None] * self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution (orthogonal init)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        nn.init.orthogonal_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour interpolation, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _save_only_convolutions(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    if op is torch.ops.aten.convolution.default:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


RECOMPUTE_MIN_NUMEL = 1 << 20
"""``norm_act_conv`` recomputes only for inputs of at least this many elements (4 MiB in float32). The
checkpoint's bookkeeping costs about the same per call whatever the size; below this size it outweighs the
memory it saves: on the ``catch`` preset's networks, recomputing everywhere made a denoiser update 1.5-1.8
times slower (benchmarks/results/README.md, "Catch, session 12")."""


def norm_act_conv(norm: AdaGroupNorm, conv: nn.Conv2d, x: Tensor, cond: Tensor) -> Tensor:
    """``conv(silu(norm(x, cond)))``, keeping for the backward pass only ``x`` and the convolution's output.

    With gradients enabled and ``x`` of at least ``RECOMPUTE_MIN_NUMEL`` elements, the normalized, scaled
    and activated tensors (three of ``x``'s size) are not stored but recomputed in the backward pass
    (selective activation checkpointing: the convolution itself is never run again). The results and
    gradients are those of the plain composition, bit for bit; the memory of a training step is about
    halved, at the price of one more pass of these elementwise operations.
    """
    if not torch.is_grad_enabled() or x.numel() < RECOMPUTE_MIN_NUMEL:
        return _norm_act_conv(norm, conv, x, cond)
    return checkpoint(
        _norm_act_conv,
        norm,
        conv,
        x,
        cond,
        use_reentrant=False,
        context_fn=partial(create_selective_checkpoint_contexts, _save_only_convolutions),
    )


def _norm_act_conv(norm: AdaGroupNorm, conv: nn.Conv2d, x: Tensor, cond: Tensor) -> Tensor:
    # Without autograd, the activation can overwrite the normalized tensor: one allocation fewer.
    return conv(F.silu(norm(x, cond), inplace=not torch.is_grad_enabled()))


class ResBlock(nn.Module):
    """AdaGN-SiLU-Conv3x3-AdaGN-SiLU-Conv3x3 plus a skip (1x1 conv when channels differ), then optional
    self-attention. The second convolution is zero-initialized: the block starts as its skip."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, attn: bool) -> None:
        super().__init__()
        same = in_channels == out_channels
        self.skip: nn.Module = nn.Identity() if same else conv1x1(in_channels, out_channels)
        self.norm1 = AdaGroupNorm(in_channels, cond_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = AdaGroupNorm(out_channels, cond_channels)
        self.conv2 = zero_init(conv3x3(out_channels, out_channels))
        self.attn: nn.Module = SelfAttention2d(out_channels) if attn else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = norm_act_conv(self.norm1, self.conv1, x, cond)
        h = norm_act_conv(self.norm2, self.conv2, h, cond)
        return self.attn(self.skip(x) + h)


class ResBlocks(nn.Module):
    """A sequence of residual blocks; block i maps ``list_in_channels[i]`` to ``list_out_channels[i]``."""

    def __init__(
        self,
        list_in_channels: Sequence[int],
        list_out_channels: Sequence[int],
        cond_channels: int,
        attn: bool,
    ) -> None:
        super().__init__()
        if len(list_in_channels) != len(list_out_channels):
            raise ValueError("list_in_channels and list_out_channels must have the same length")
        self.resblocks = nn.ModuleList(
            ResBlock(c_in, c_out, cond_channels, attn)
            for c_in, c_out in zip(list_in_channels, list_out_channels, strict=True)
        )

    def forward(self, x: Tensor, cond: Tensor, skips: Sequence[Tensor] | None = None) -> list[Tensor]:
        """The output of every block (the last one is the sequence's output).

        With ``skips`` (one per block, as in a U-Net's decoder), block i takes its input concatenated
        along channels with ``skips[i]``.
        """
        outputs = []
        for i, block in enumerate(self.resblocks):
            if skips is not None:
                x = torch.cat([x, skips[i]], dim=1)
            x = block(x, cond)
            outputs.append(x)
        return outputs
