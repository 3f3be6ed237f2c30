"""Random fixed-length segments of an engine dataset's episodes, as the official CS:GO sampler draws them.

An episode is drawn with probability proportional to its length, a step t uniformly in it, and the segment of
``seq_length`` frames ends ``randint(0, seq_length)`` steps after t but never beyond the episode's last frame;
it may therefore start before the episode: those frames are padding (``frame_mask`` False, frames 0.0,
actions 0).
Only the frames a segment covers are read from the memory-mapped files. The rule is the agent's too
(``data/segments.py``), counted in frames here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from diffworld.data.batch import Batch
from diffworld.data.frames import frames_to_tensor
from diffworld.data.segments import draw_segments, every_segment
from diffworld.engine.config import LowResFilter
from diffworld.engine.dataset import EngineDataset, EngineDatasetError
from diffworld.models.diffusion.sampling import quantize_floor

_CPU = torch.device("cpu")


def EngineBatch(
    obs: torch.Tensor, obs_full: torch.Tensor | None, act: torch.Tensor, mask: torch.Tensor
) -> Batch:
    """The ``Batch`` of B segments of T frames with the action taken after each, in the argument order of
    the engine's former batch class (which tests still construct): ``mask`` is ``frame_mask``."""
    return Batch(obs=obs, act=act, frame_mask=mask, obs_full=obs_full)


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


class EngineSegmentSampler:
    """Draws batches of ``seq_length``-frame segments from the episodes ``ids`` of ``dataset``.

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
        self.ids = np.asarray(ids, dtype=np.int64)
        if self.ids.size == 0:
            raise EngineDatasetError(f"{dataset.folder}: no episodes to sample from (an empty split)")
        if ((self.ids < 0) | (self.ids >= dataset.num_episodes)).any():
            raise ValueError(f"episode ids must be within [0, {dataset.num_episodes}), got {self.ids}")
        if low_res is not None:
            h, w = (int(x) for x in low_res)
            if not (1 <= h <= dataset.frame_size[0] and 1 <= w <= dataset.frame_size[1]):
                raise EngineDatasetError(
                    f"low_res {h}x{w} must be positive and at most the dataset's frames, "
                    f"{dataset.frame_size[0]}x{dataset.frame_size[1]}"
                )
            low_res = (h, w)
        self.dataset = dataset
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.low_res = None if low_res == dataset.frame_size else low_res
        self.full_res = full_res
        self.low_res_filter = low_res_filter
        self.rng = rng
        self.device = torch.device(device)

    def sample_segments(self, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw B segments: (episode indices into the dataset, start frames), (B,) int64 each.

        A segment covers frames ``[start, start + seq_length)``; a negative start means left padding.
        """
        size = self.batch_size if batch_size is None else batch_size
        lengths = self.dataset.lengths[self.ids]
        chosen, starts = draw_segments(self.rng, lengths, lengths / lengths.sum(), self.seq_length, size)
        return self.ids[chosen], starts

    def make_batch(self, episodes: np.ndarray, starts: np.ndarray) -> Batch:
        """Gather the segments ``[start, start + seq_length)`` of the given episodes; each must hold a real
        frame and end within its episode."""
        t = self.seq_length
        h, w = self.dataset.frame_size
        b = len(episodes)
        frames = np.zeros((b, t, h, w, 3), dtype=np.uint8)
        actions = np.zeros((b, t, self.dataset.spec.width), dtype=np.float32)
        mask = np.zeros((b, t), dtype=bool)
        for row, (episode, start) in enumerate(zip(episodes.tolist(), starts.tolist(), strict=True)):
            length = int(self.dataset.lengths[episode])
            first, stop = max(0, start), start + t
            if stop <= 0 or stop > length:
                raise ValueError(
                    f"segment [{start}, {stop}) of episode {episode} (length {length}) is invalid"
                )
            frames[row, first - start :] = self.dataset.frames(episode)[first:stop]
            actions[row, first - start :] = self.dataset.actions(episode)[first:stop]
            mask[row, first - start :] = True
        # uint8 crosses to the device (4x less traffic than float32); conversion happens there.
        full = frames_to_tensor(torch.from_numpy(frames).to(self.device, non_blocking=True))
        mask_t = torch.from_numpy(mask).to(self.device)
        full = full * mask_t[:, :, None, None, None]  # padding frames are 0.0, as the official sampler pads
        obs, obs_full = full, None
        if self.low_res is not None:
            obs = downsample(full, self.low_res, self.low_res_filter)
            obs_full = full if self.full_res else None
        return Batch(
            obs=obs, act=torch.from_numpy(actions).to(self.device), frame_mask=mask_t, obs_full=obs_full
        )

    def sample(self, batch_size: int | None = None) -> Batch:
        """Draw a batch of segments (see the module docstring); ``batch_size`` overrides the default."""
        return self.make_batch(*self.sample_segments(batch_size))

    def traverse(self) -> Iterator[Batch]:
        """Every frame of the sampler's episodes, in order, in batches of up to ``batch_size`` segments (for
        test losses); draws no random numbers.

        Each episode is cut into consecutive segments, the last one moved back to end with the episode (an
        episode shorter than a segment is padded on the left), so frames near an episode's end may be in
        two segments.
        """
        chosen, all_starts = every_segment(self.dataset.lengths[self.ids], self.seq_length)
        all_episodes = self.ids[chosen]
        for i in range(0, len(all_episodes), self.batch_size):
            yield self.make_batch(all_episodes[i : i + self.batch_size], all_starts[i : i + self.batch_size])
