"""The network F of the diffusion world model: a conditional U-Net (docs/method.md §3; docs/engine.md,
"Models").

F takes the scaled noisy next frame stacked with the conditioning frames (the L past frames, and the
upsampler's low-resolution frame), and a conditioning vector from the noise level ``c_noise``, the
conditioning frames' noise level (engine) and the L past actions, which drives adaptive group norm in every
residual block. The Atari world model (EDM and the DDPM ablation) and the engine's two models are this one
network in their ``WorldModelLayout``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffworld.config.schema import WorldModelConfig
from diffworld.models.action_encoder import make_action_encoder
from diffworld.models.blocks import (
    Downsample,
    FourierFeatures,
    GroupNorm,
    ResBlocks,
    Upsample,
    channels_last,
    conv3x3,
    zero_init,
)
from diffworld.models.diffusion.layout import WorldModelLayout

IMG_CHANNELS = 3


class UNet(nn.Module):
    """U-Net over ``len(channels)`` resolution levels.

    Level i has ``depths[i]`` residual blocks on the way down (after a downsampling, but for level 0) and
    ``depths[i] + 1`` on the way up, which take as skips the level's input and each down block's output
    in reverse order, then upsample (but for level 0). Two residual blocks with self-attention sit at the
    lowest resolution. The input and output have ``channels[0]`` channels.
    """

    def __init__(
        self, cond_channels: int, depths: Sequence[int], channels: Sequence[int], attn_depths: Sequence[bool]
    ) -> None:
        super().__init__()
        if not len(depths) == len(channels) == len(attn_depths):
            raise ValueError("depths, channels and attn_depths must have one entry per level")
        self.num_downsamplings = len(channels) - 1

        down_blocks, up_blocks = [], []
        for i, (depth, attn) in enumerate(zip(depths, attn_depths, strict=True)):
            c_prev, c = channels[max(0, i - 1)], channels[i]
            down_blocks.append(ResBlocks([c_prev] + [c] * (depth - 1), [c] * depth, cond_channels, attn))
            # The last up block of a level also takes the level's input as skip and returns to c_prev.
            up_blocks.append(
                ResBlocks([2 * c] * depth + [c_prev + c], [c] * depth + [c_prev], cond_channels, attn)
            )
        self.down_blocks = nn.ModuleList(down_blocks)
        self.up_blocks = nn.ModuleList(reversed(up_blocks))
        self.mid_blocks = ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True)
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in channels[:-1]])
        self.upsamples = nn.ModuleList([nn.Identity()] + [Upsample(c) for c in reversed(channels[:-1])])

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """``x``: (B, channels[0], H, W) with H and W divisible by 2^(levels - 1); ``cond``: (B, cond)."""
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsamples, strict=True):
            x = down(x)
            outputs = blocks(x, cond)
            skips.append([x, *outputs])
            x = outputs[-1]

        x = self.mid_blocks(x, cond)[-1]

        for blocks, up, level_skips in zip(self.up_blocks, self.upsamples, reversed(skips), strict=True):
            x = blocks(up(x), cond, level_skips[::-1])[-1]
        return x


class ConditionedUNet(nn.Module):
    """F(c_in x, c_noise, c_noise_cond, conditioning frames, actions) -> (B, 3, H, W), in ``layout``.

    Conditioning vector: ``FourierFeatures(c_noise)``, plus ``FourierFeatures(c_noise_cond)`` with the
    layout's noise-level input, plus the concatenated embeddings of the L actions (``cond_channels // L`` dims
    each) if it has actions, through Linear-SiLU-Linear. Input: the conditioning frames (L, plus the layout's
    extra images) concatenated with the scaled noisy frame, through a 3x3 convolution into the U-Net; output:
    GroupNorm-SiLU-Conv3x3, zero-initialized so that F starts at 0. The modules are registered in this order,
    which fixes the initial draws, the ``state_dict`` and the optimizer's parameter order.
    """

    def __init__(self, cfg: WorldModelConfig, layout: WorldModelLayout) -> None:
        super().__init__()
        if layout.actions is not None and cfg.cond_channels % cfg.num_cond_frames != 0:
            raise ValueError(
                f"cond_channels ({cfg.cond_channels}) must be divisible by "
                f"num_cond_frames ({cfg.num_cond_frames})"
            )
        self.pad_to_multiple = layout.pad_to_multiple
        self.noise_emb = FourierFeatures(cfg.cond_channels)
        self.noise_cond_emb = FourierFeatures(cfg.cond_channels) if layout.noise_level_input else None
        self.act_emb = (
            None
            if layout.actions is None
            else make_action_encoder(
                layout.actions, cfg.cond_channels // cfg.num_cond_frames, indices=layout.action_indices
            )
        )
        self.cond_proj = nn.Sequential(
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
            nn.SiLU(),
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
        )
        num_cond_images = cfg.num_cond_frames + layout.extra_images
        self.conv_in = conv3x3((num_cond_images + 1) * IMG_CHANNELS, cfg.channels[0])
        self.unet = UNet(cfg.cond_channels, cfg.depths, cfg.channels, cfg.attn_depths)
        self.norm_out = GroupNorm(cfg.channels[0])
        self.conv_out = zero_init(conv3x3(cfg.channels[0], IMG_CHANNELS))

    def forward(
        self,
        noisy: Tensor,
        c_noise: Tensor,
        c_noise_cond: Tensor | None,
        cond_images: Tensor,
        act: Tensor | None,
        act_valid: Tensor | None = None,
    ) -> Tensor:
        """``noisy``: (B, 3, H, W), already scaled by c_in; ``c_noise``: (B,); ``c_noise_cond``: (B,) with the
        layout's noise-level input, else None; ``cond_images``: (B, L + extra images, 3, H, W), already
        rescaled; ``act``: (B, L) int64 indices or (B, L, D) action vectors as the layout says, None without
        actions; ``act_valid``: (B, L) bool, False for padding steps (no action), None when all are real."""
        cond = self.noise_emb(c_noise)
        if self.noise_cond_emb is not None:
            if c_noise_cond is None:
                raise ValueError("this network is told the conditioning frames' noise level: give it")
            cond = cond + self.noise_cond_emb(c_noise_cond)
        if self.act_emb is not None:
            if act is None:
                raise ValueError("this network is conditioned on actions: give them")
            cond = cond + self.act_emb(act, act_valid).flatten(1)
        cond = self.cond_proj(cond)
        x = self.conv_in(channels_last(torch.cat([cond_images.flatten(1, 2), noisy], dim=1)))
        if self.pad_to_multiple:
            h, w = x.shape[-2:]
            multiple = 2**self.unet.num_downsamplings
            x = F.pad(x, (0, -w % multiple, 0, -h % multiple))
            x = self.unet(x, cond)[..., :h, :w]
        else:
            x = self.unet(x, cond)
        return self.conv_out(F.silu(self.norm_out(x))).contiguous()
