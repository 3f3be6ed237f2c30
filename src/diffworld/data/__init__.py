"""Episodes, their storage and the segment sampler that feeds training: the one episode-store interface
(``store.py``) and its two backends, the run dataset (``storage.py``: RAM + disk, the agent's runs and
recordings) and the folder store (``folder_store.py``: the engine's memory-mapped datasets and recordings),
one segment-drawing rule (``segments.py``), one sampler (``segment_sampler.py``) and one ``Batch``.

``Batch``, ``step_to_frame_mask`` and ``SegmentSampler`` need torch, whose import takes over a second: they
are imported on first access, so processes that only store episodes (environment workers, dataset tools, the
crash test's child processes) stay numpy-only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from diffworld.data.episode import Episode
from diffworld.data.storage import (
    CorruptEpisodeError,
    EpisodeDataset,
    episode_path,
    has_enough_minority_rewards,
    part_path,
    read_stored_episode,
    set_aside_later_files,
    stored_episode_ids,
)

if TYPE_CHECKING:
    from diffworld.data.batch import Batch, step_to_frame_mask
    from diffworld.data.segment_sampler import SegmentSampler

_TORCH_EXPORTS = {
    "Batch": "diffworld.data.batch",
    "step_to_frame_mask": "diffworld.data.batch",
    "SegmentSampler": "diffworld.data.segment_sampler",
}

__all__ = [
    "Batch",
    "CorruptEpisodeError",
    "Episode",
    "EpisodeDataset",
    "SegmentSampler",
    "episode_path",
    "has_enough_minority_rewards",
    "part_path",
    "read_stored_episode",
    "set_aside_later_files",
    "step_to_frame_mask",
    "stored_episode_ids",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_EXPORTS:
        return getattr(importlib.import_module(_TORCH_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
