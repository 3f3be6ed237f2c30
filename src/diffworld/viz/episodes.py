"""Stored episodes read lazily, one file at a time, and frame conversions shared by the viewers."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from diffworld.data import (
    CorruptEpisodeError,
    Episode,
    EpisodeDataset,
    read_stored_episode,
    stored_episode_ids,
)
from diffworld.errors import UserError
from diffworld.run.folder import CONFIG_FILE, dataset_dir

_CACHED_EPISODES = 4
RECORDING_INFO = "recording.json"
"""Written beside recorded play episodes: the game and its action names, for the dataset browser."""


def find_episode_folder(source: Path) -> Path:
    """The folder of episode files for ``source``: a run folder (its training dataset), a folder of
    episode files (e.g. recorded play), or a folder with a ``train`` subfolder of them. An episode still
    running in a run (stored in parts, ``episode_*.steps_*-*.npz``) counts."""
    candidates = [source]
    if (source / CONFIG_FILE).is_file():
        candidates.insert(0, dataset_dir(source))
    candidates.append(source / "train")
    for folder in candidates:
        if folder.is_dir() and stored_episode_ids(folder):
            return folder
    raise UserError(f"No episode files (episode_*.npz) in {source}, nor in its dataset folder.")


class EpisodeFiles:
    """The episodes of a folder in id order, each read from its file(s) when first asked for (a few cached).

    An open episode (still running, or running when its run ended) is read as far as its parts go.

    Reading a whole run's dataset (100k steps, about 1.2 GB of frames) just to look at a few episodes
    would take minutes; this reads one compressed file per episode visited.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        ids = stored_episode_ids(self.folder)
        if not ids:
            raise UserError(f"No episode files (episode_*.npz) in {self.folder}.")
        self.ids = ids
        self._cache: OrderedDict[int, Episode] = OrderedDict()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Episode:
        if not 0 <= index < len(self.ids):
            raise IndexError(index)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        try:
            episode = read_stored_episode(self.folder, self.ids[index])
        except (CorruptEpisodeError, OSError) as e:
            raise UserError(f"Cannot read episode {self.ids[index]} of {self.folder}: {e}") from None
        self._cache[index] = episode
        if len(self._cache) > _CACHED_EPISODES:
            self._cache.popitem(last=False)
        return episode


def recent_episodes(
    folder: Path, max_episodes: int, frame_shape: tuple[int, int, int], action_shape: tuple[int, ...] = ()
) -> EpisodeDataset:
    """An in-RAM dataset of the last ``max_episodes`` episodes of ``folder`` (world-model starting points);
    ``action_shape``: ``(D,)`` for the action vectors of a continuous-control game."""
    files = EpisodeFiles(folder)
    dataset = EpisodeDataset(frame_shape=frame_shape, action_shape=action_shape)
    for index in range(max(0, len(files) - max_episodes), len(files)):
        dataset.add(files[index])
    return dataset


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, C) uint8 -> (H * scale, W * scale, C), nearest neighbour (pixels stay sharp)."""
    return frame.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else frame
