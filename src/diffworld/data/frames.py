"""The frame codec: stored frames, (..., H, W, 3) uint8 levels, to and from what the models take,
(..., 3, H, W) float32 in [-1, 1] (level k is k / 127.5 - 1)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def frames_to_tensor(frames: np.ndarray | Tensor, device: torch.device | str | None = None) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1], contiguous, on ``device`` (None: where
    ``frames`` are; numpy frames are copied, since stored ones are read-only views)."""
    if isinstance(frames, np.ndarray):
        x = torch.tensor(frames, device=device)
    else:
        x = frames if device is None else frames.to(device)
    if x.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {x.dtype}")
    # float() of uint8 makes a new tensor, so the in-place arithmetic touches no caller's tensor.
    return x.movedim(-1, -3).contiguous().float().div_(127.5).sub_(1.0)


def tensor_to_frames(obs: Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8 on the host, each value rounded to its nearest level
    (values outside [-1, 1] are clamped)."""
    x = obs.detach().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
