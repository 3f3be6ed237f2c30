"""Random fixed-length segments of an engine dataset's episodes, as the official CS:GO sampler draws them.

An episode is drawn with probability proportional to its length, a step t uniformly in it, and the segment of
``seq_length`` frames ends ``randint(0, seq_length)`` steps after t but never beyond the episode's last frame;
it may therefore start before the episode: those frames are padding (``frame_mask`` False, frames 0.0,
actions 0). Only the frames a segment covers are read from the memory-mapped files. The rule and the sampler
are the agent's too (``data/segments.py``, ``data/segment_sampler.py``), counted in frames here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from diffworld.data.batch import Batch
from diffworld.data.folder_store import EngineDataset, EngineDatasetError
from diffworld.data.segment_sampler import SegmentSampler
from diffworld.engine.config import LowResFilter
from diffworld.models.diffusion.sampling import quantize_floor

_CPU = torch.device("cpu")


def downsample(
    frames: torch.Tensor, size: tuple[int, int], method: LowResFilter = LowResFilter.bicubic
) -> torch.Tensor:
    """(..., 3, H, W) frames in [-1, 1] -> (..., 3, h, w) low-resolution frames (``LowResFilter``).

    ``bicubic``: the official CS:GO low-resolution data, antialiased bicubic resizing (torchvision's
    ``resize`` of a float tensor is this ``interpolate`` call) then the 8-bit levels the official dataset
    stores them at. ``area``: the mean of the pixels each low-resolution pixel covers, in float. Frames
    already of ``size`` are returned as they are (an engine without upsampler at the dataset's size).
    """
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    flat = frames.flatten(0, -4)
    if method is LowResFilter.bicubic:
        resized = F.interpolate(flat, size=size, mode="bicubic", align_corners=False, antialias=True)
        small = quantize_floor(resized)
    else:
        small = F.interpolate(flat, size=size, mode="area")
    return small.unflatten(0, frames.shape[:-3])


class EngineSegmentSampler(SegmentSampler[EngineDataset]):
    """Draws batches of ``seq_length``-frame segments from the episodes ``ids`` of ``dataset`` (a
    ``SegmentSampler`` over an engine dataset, with no sample weights and padding on the left only), each
    with its frames at ``low_res``.

    Args:
        dataset: an opened ``EngineDataset``.
        ids: the episodes to draw from (``dataset.train_ids`` or ``dataset.test_ids``).
        batch_size: B, the default number of segments per batch.
        seq_length: T, frames per segment.
        low_res: (h, w) of ``Batch.obs``; None keeps the dataset's frame size.
        rng: the only source of randomness (checkpoint ``rng.bit_generator.state`` to resume the sequence).
        low_res_filter: how ``obs`` is made from the dataset's frames (``downsample``).
        device: where the batches' tensors go.
        full_res: whether batches carry ``obs_full`` when ``low_res`` differs from the frame size.
    """

    def __init__(
        self,
        dataset: EngineDataset,
        ids: Sequence[int] | np.ndarray,
        batch_size: int,
        seq_length: int,
        low_res: tuple[int, int] | None,
        rng: np.random.Generator,
        device: torch.device | str = _CPU,
        *,
        full_res: bool = True,
        low_res_filter: LowResFilter = LowResFilter.bicubic,
    ) -> None:
        if batch_size < 1 or seq_length < 1:
            raise ValueError(f"batch_size and seq_length must be >= 1, got {batch_size} and {seq_length}")
        if np.asarray(ids).size == 0:
            raise EngineDatasetError(f"{dataset.folder}: no episodes to sample from (an empty split)")
        super().__init__(dataset, batch_size, seq_length, None, False, rng=rng, device=device, ids=ids)
        if low_res is not None:
            h, w = (int(x) for x in low_res)
            if not (1 <= h <= dataset.frame_size[0] and 1 <= w <= dataset.frame_size[1]):
                raise EngineDatasetError(
                    f"low_res {h}x{w} must be positive and at most the dataset's frames, "
                    f"{dataset.frame_size[0]}x{dataset.frame_size[1]}"
                )
            low_res = (h, w)
        self.low_res = None if low_res == dataset.frame_size else low_res
        self.full_res = full_res
        self.low_res_filter = low_res_filter

    def view(self, batch: Batch) -> Batch:
        """``batch`` (at the dataset's resolution) with ``obs`` at ``low_res`` and, with ``full_res``, the
        dataset's frames as ``obs_full``."""
        if self.low_res is None:
            return batch
        return Batch(
            obs=downsample(batch.obs, self.low_res, self.low_res_filter),
            act=batch.act,
            frame_mask=batch.frame_mask,
            obs_full=batch.obs if self.full_res else None,
        )
