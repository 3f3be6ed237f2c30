"""A batch of fixed-length segments, as torch tensors ready for the models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


def frame_mask(mask_padding: torch.Tensor) -> torch.Tensor:
    """(B, T+1) bool from a (B, T) step mask: frame j is real iff step j (it precedes) or step j-1 is real."""
    no_step = torch.zeros_like(mask_padding[:, :1])
    return torch.cat([mask_padding, no_step], dim=1) | torch.cat([no_step, mask_padding], dim=1)


@dataclass(frozen=True)
class Batch:
    """B segments of T steps each; steps outside their episode are padding.

    Attributes:
        obs: (B, T+1, C, H, W) float32 in [-1, 1] (x / 127.5 - 1); frame j precedes step j, frame T follows
            the last step. Padding frames are exactly 0.0.
        act: (B, T) int64 actions; 0 on padding steps.
        rew: (B, T) float32 raw rewards; 0 on padding steps.
        end: (B, T) bool, True where the step terminated the episode; False on padding steps.
        trunc: (B, T) bool, True where the step truncated the episode; False on padding steps.
        mask_padding: (B, T) bool, True for real steps.
    """

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    end: torch.Tensor
    trunc: torch.Tensor
    mask_padding: torch.Tensor

    @property
    def frame_mask(self) -> torch.Tensor:
        """(B, T+1) bool: frame j is real iff step j (it precedes) or step j-1 (it follows) is real."""
        return frame_mask(self.mask_padding)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        moved = {field.name: getattr(self, field.name).to(device) for field in dataclasses.fields(self)}
        return Batch(**moved)
