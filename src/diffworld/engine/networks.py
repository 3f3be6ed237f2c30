"""The network F of the engine's EDM models: the world model's U-Net (``models/diffusion/unet.py``) with the
engine's conditioning (docs/engine.md, "Models").

Conditioning vector: Fourier features of c_noise, plus Fourier features of c_noise_cond (the conditioning
frames' noise level, see ``denoiser.py``), plus the L actions' embeddings (``ActionEncoder``, cond_channels
/ L dims each, concatenated), through Linear-SiLU-Linear, as the official CS:GO model. Input: the
conditioning frames stacked with the scaled noisy frame, through a 3x3 convolution into the U-Net. Frames of
any size: the U-Net's input is zero-padded on the bottom and right to a multiple of 2^(levels - 1) and its
output cropped back (30x56 runs padded to 32x56 with four levels), as the official CS:GO U-Net does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffworld.engine.action_encoder import ActionEncoder
from diffworld.engine.actions import ActionSpec
from diffworld.engine.config import EngineDenoiserConfig
from diffworld.models.blocks import FourierFeatures, GroupNorm, channels_last, conv3x3, zero_init
from diffworld.models.diffusion.unet import IMG_CHANNELS, UNet


class EngineNetwork(nn.Module):
    """F(c_in x, c_noise, c_noise_cond, conditioning frames, actions) -> (B, 3, H, W).

    ``spec``: the action space (the denoiser), or None for a network without actions (the upsampler).
    ``num_cond_images``: frames stacked with the noisy one: the L past frames, plus the low-resolution frame
    for the upsampler.
    """

    def __init__(self, cfg: EngineDenoiserConfig, spec: ActionSpec | None, num_cond_images: int) -> None:
        super().__init__()
        self.noise_emb = FourierFeatures(cfg.cond_channels)
        self.noise_cond_emb = FourierFeatures(cfg.cond_channels)
        self.act_emb = None if spec is None else ActionEncoder(spec, cfg.cond_channels // cfg.num_cond_frames)
        self.cond_proj = nn.Sequential(
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
            nn.SiLU(),
            nn.Linear(cfg.cond_channels, cfg.cond_channels),
        )
        self.conv_in = conv3x3((num_cond_images + 1) * IMG_CHANNELS, cfg.channels[0])
        self.unet = UNet(cfg.cond_channels, cfg.depths, cfg.channels, cfg.attn_depths)
        self.norm_out = GroupNorm(cfg.channels[0])
        self.conv_out = zero_init(conv3x3(cfg.channels[0], IMG_CHANNELS))

    def forward(
        self,
        noisy: Tensor,
        c_noise: Tensor,
        c_noise_cond: Tensor,
        cond_images: Tensor,
        act: Tensor | None,
        act_valid: Tensor | None = None,
    ) -> Tensor:
        """``noisy``: (B, 3, H, W), already scaled by c_in; ``c_noise``, ``c_noise_cond``: (B,);
        ``cond_images``: (B, num_cond_images, 3, H, W), already rescaled; ``act``: (B, L, D) or None;
        ``act_valid``: (B, L) bool, False for padding steps (no action), None when all are real."""
        cond = self.noise_emb(c_noise) + self.noise_cond_emb(c_noise_cond)
        if self.act_emb is not None:
            if act is None:
                raise ValueError("this network is conditioned on actions: give them")
            cond = cond + self.act_emb(act, act_valid).flatten(1)
        cond = self.cond_proj(cond)
        x = self.conv_in(channels_last(torch.cat([cond_images.flatten(1, 2), noisy], dim=1)))
        h, w = x.shape[-2:]
        multiple = 2**self.unet.num_downsamplings
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple))
        x = self.unet(x, cond)[..., :h, :w]
        return self.conv_out(F.silu(self.norm_out(x))).contiguous()
