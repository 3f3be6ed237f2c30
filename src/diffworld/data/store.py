"""What segments are drawn from and what draws them: one interface for both products' datasets.

``EpisodeStore`` is implemented by the run dataset (``data/storage.EpisodeDataset``: the agent's runs,
recordings and test datasets, in RAM, segments counted in steps) and by the engine dataset
(``data/folder_store.EngineDataset``: per-episode memory-mapped files, segments counted in frames).
``SegmentSource`` is what a training loop draws batches from (``data/segment_sampler.SegmentSampler`` and its
engine variant ``engine/segment_sampler.EngineSegmentSampler``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from diffworld.data.batch import Batch


class EpisodeStore(Protocol):
    """Episodes numbered 0 .. num_episodes - 1 that segments of n can be gathered from.

    What n counts is the store's: steps in a run dataset (a segment of n steps has n + 1 frames, the frame
    after the last step included), frames in an engine dataset (n frames and the action after each).
    ``lengths`` counts in the same unit.
    """

    @property
    def num_episodes(self) -> int: ...

    @property
    def lengths(self) -> np.ndarray:
        """(num_episodes,) int64 length of each episode, in the unit of the store's segments."""
        ...

    def gather(self, episode_ids: np.ndarray, starts: np.ndarray, n: int, device: torch.device) -> Batch:
        """The segments ``[start, start + n)`` of the given episodes as one ``Batch`` on ``device``, padded
        (frames 0.0, actions 0, masks False) where a segment runs outside its episode; each segment must
        hold a real step."""
        ...


class SegmentSource(Protocol):
    """Batches of segments, one per call (a segment sampler), drawn with ``rng`` only (which the engine's
    trainer checkpoints through ``fitting.update.SampledBatches``)."""

    rng: np.random.Generator

    def sample(self, batch_size: int | None = None) -> Batch: ...
