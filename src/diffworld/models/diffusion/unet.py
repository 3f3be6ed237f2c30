"""The network F of the diffusion world model: a conditional U-Net (docs/method.md §3).

F takes the scaled noisy next frame stacked with the L past frames, and a noise-level input ``c_noise``
and the L past actions that drive adaptive group norm in every residual block. Both the EDM and the DDPM
denoisers wrap the same network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffworld.config.schema import DenoiserConfig
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


class DenoiserNetwork(nn.Module):
    """F(c_in * x, c_noise, past frames, past actions) -> (B, 3, H, W).

    Conditioning vector: ``FourierFeatures(c_noise)`` plus the concatenated embeddings of the L actions
    (``cond_channels // L`` dims each), through Linear-SiLU-Linear. Input: the L past frames (3L channels)
    concatenated with the scaled noisy frame (3 channels), through a 3x3 convolution into the U-Net; output:
    GroupNorm-SiLU-Conv3x3, zero-initialized so that F starts at 0.
    """

    def __init__(self, cfg: DenoiserConfig, num_actions: int) -> None:
        super().__init__()
        if cfg.cond_channels % cfg.num_cond_frames != 0:
            raise ValueError(
                f"cond_channels ({cfg.cond_channels}) must be divisible by "
                f"num_cond_frames ({cfg.num_cond_frames})"
            )
        self.noise_emb = FourierFeatures(cfg.cond_channels)
        self.act_emb = nn.Embedding(num_actions, cfg.cond_channels // cfg.num_cond_frames)
        self.cond_proj = nn.Sequential(
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
            nn.SiLU(),
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
        )
        self.conv_in = conv3x3((cfg.num_cond_frames + 1) * IMG_CHANNELS, cfg.channels[0])
        self.unet = UNet(cfg.cond_channels, cfg.depths, cfg.channels, cfg.attn_depths)
        self.norm_out = GroupNorm(cfg.channels[0])
        self.conv_out = zero_init(conv3x3(cfg.channels[0], IMG_CHANNELS))

    def forward(self, noisy_next_obs: Tensor, c_noise: Tensor, prev_obs: Tensor, prev_act: Tensor) -> Tensor:
        """``noisy_next_obs``: (B, 3, H, W), already scaled by c_in; ``c_noise``: (B,); ``prev_obs``:
        (B, L, 3, H, W), already rescaled; ``prev_act``: (B, L) int64."""
        cond = self.cond_proj(self.noise_emb(c_noise) + self.act_emb(prev_act).flatten(1))
        x = self.conv_in(channels_last(torch.cat([prev_obs.flatten(1, 2), noisy_next_obs], dim=1)))
        x = self.unet(x, cond)
        return self.conv_out(F.silu(self.norm_out(x))).contiguous()
