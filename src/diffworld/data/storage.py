"""Episode storage: contiguous arrays in RAM for fast segment sampling, a compressed file per episode on disk.

RAM layout: all frames of all episodes live in ONE uint8 array (episode i owns frames
``frame_starts[i] : frame_starts[i] + lengths[i] + 1``), all steps in contiguous step arrays (episode i owns
``step_starts[i] : step_starts[i] + lengths[i]``). Arrays grow by doubling, so appending is amortized O(1)
and a sampler can gather any batch with a single fancy index.

Disk layout: ``directory/episode_{id:06d}.npz``, written atomically before ``add`` returns, so a process
killed at any moment leaves every episode whose id ``add`` returned readable.
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from diffworld.data.episode import Episode
from diffworld.errors import UserError
from diffworld.utils.atomic import atomic_write, remove_temp_files

DEFAULT_FRAME_SHAPE = (64, 64, 3)

_EPISODE_FILE = re.compile(r"episode_(\d{6,})\.npz")
_FIELDS = ("obs", "act", "rew", "terminated", "truncated")
# Frames reserved per step when a capacity hint is given: an episode of T steps has T+1 frames, and even
# Atari episodes cut at each life loss average far more than 8 steps. The reserve costs no RSS until written
# (np.empty pages are committed lazily by the OS).
_FRAME_RESERVE_PER_STEP = 1 + 1 / 8


class CorruptEpisodeError(UserError, RuntimeError):
    """An episode file exists but cannot be read back."""


def episode_path(directory: str | os.PathLike[str], episode_id: int) -> Path:
    """Where episode ``episode_id`` is stored in ``directory``."""
    return Path(directory) / f"episode_{episode_id:06d}.npz"


def has_enough_minority_rewards(counts: np.ndarray, min_count: int) -> bool:
    """SPEC's collection rule: the dataset holds at least ``min_count`` rewards of the minority classes.

    Interpretation: with ``counts`` the number of steps per class of sign(r) (see
    ``EpisodeDataset.reward_sign_counts``), the total count over all classes except the most common one
    must be ``>= min_count``. E.g. counts (-1: 3, 0: 900, +1: 40) give 43 minority rewards.
    """
    counts = np.asarray(counts)
    return int(counts.sum() - counts.max()) >= min_count


def _reward_sign_counts(rew: np.ndarray) -> np.ndarray:
    return np.bincount(np.sign(rew).astype(np.int64) + 1, minlength=3)


class _GrowableArray:
    """Append-only array whose capacity at least doubles when full (amortized O(1) appends)."""

    def __init__(self, item_shape: tuple[int, ...], dtype: type[np.generic], capacity: int = 0) -> None:
        self._buffer = np.empty((capacity, *item_shape), dtype=dtype)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def view(self) -> np.ndarray:
        """Read-only view of the filled part (no copy)."""
        filled = self._buffer[: self._size]
        filled.flags.writeable = False
        return filled

    def reserve(self, capacity: int) -> None:
        if capacity <= len(self._buffer):
            return
        # np.empty: the OS commits pages only when written, so the unused tail costs no RSS. Views handed out
        # earlier keep the old buffer alive until they are dropped.
        buffer = np.empty((capacity, *self._buffer.shape[1:]), dtype=self._buffer.dtype)
        buffer[: self._size] = self._buffer[: self._size]
        self._buffer = buffer

    def extend(self, values: np.ndarray | list[int]) -> None:
        end = self._size + len(values)
        if end > len(self._buffer):
            self.reserve(max(end, 2 * len(self._buffer)))
        self._buffer[self._size : end] = values
        self._size = end


# What np.load raises on truncated, garbled or foreign files, plus Episode's validation errors.
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def _reading(path: Path, episode_id: int) -> Iterator[Mapping[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            yield data
    except _READ_ERRORS as error:
        raise CorruptEpisodeError(
            f"Episode file {path} is corrupted or unreadable ({type(error).__name__}: {error}). Files are "
            f"written atomically, so this points to disk damage or outside modification. To go on with the "
            f"intact episodes before it, pass max_episodes={episode_id} to EpisodeDataset.load, or delete "
            f"this file and every episode file with a higher id."
        ) from error


def _read_episode(path: Path, episode_id: int) -> Episode:
    with _reading(path, episode_id) as data:
        return Episode(**{field: data[field] for field in _FIELDS})


def _read_length(path: Path, episode_id: int) -> int:
    # npz members are decompressed on access, so this reads the small `act` array only.
    with _reading(path, episode_id) as data:
        return len(data["act"])


def _write_episode(path: Path, episode: Episode) -> None:
    with atomic_write(path, "wb") as file:
        np.savez_compressed(file, **{field: getattr(episode, field) for field in _FIELDS})


def _episode_files(directory: Path) -> dict[int, Path]:
    files = {}
    for path in directory.iterdir():
        match = _EPISODE_FILE.fullmatch(path.name)
        if match is not None:
            files[int(match.group(1))] = path
    return files


def _select_episode_files(directory: Path, max_episodes: int | None) -> list[Path]:
    """The files of episodes 0 .. n-1 (n = max_episodes, or all), checking that none is missing."""
    if max_episodes is not None and max_episodes < 0:
        raise ValueError(f"max_episodes must be >= 0, got {max_episodes}")
    files = _episode_files(directory)
    count = len(files) if max_episodes is None else max_episodes
    missing = [i for i in range(count) if i not in files]
    if missing:
        raise FileNotFoundError(
            f"{directory} should hold episodes 0..{count - 1} but lacks ids {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(files)} episode files found). If a checkpoint "
            f"expects these episodes, this is not the directory it was trained with."
        )
    return [files[i] for i in range(count)]


class EpisodeDataset:
    """Episodes appended as they complete, held in RAM for sampling and, optionally, saved to a folder.

    Args:
        directory: folder for the episode files, created if needed; it must not hold episodes yet (use
            ``EpisodeDataset.load`` to resume). None keeps the dataset in RAM only.
        frame_shape: (H, W, C) of every frame.
        capacity_steps: expected total number of steps, preallocated to avoid growth copies (which briefly
            hold the old and new arrays together). Exceeding it is fine: arrays then double.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        frame_shape: tuple[int, int, int] = DEFAULT_FRAME_SHAPE,
        capacity_steps: int = 0,
    ) -> None:
        self._directory = None if directory is None else Path(directory)
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
            if _episode_files(self._directory):
                raise FileExistsError(
                    f"{self._directory} already holds episodes; use EpisodeDataset.load to resume from them"
                )
        self._frame_shape = tuple(frame_shape)
        self._frames = _GrowableArray(self._frame_shape, np.uint8)
        self._act = _GrowableArray((), np.int64)
        self._rew = _GrowableArray((), np.float32)
        self._terminated = _GrowableArray((), np.bool_)
        self._truncated = _GrowableArray((), np.bool_)
        self._frame_starts = _GrowableArray((), np.int64)
        self._step_starts = _GrowableArray((), np.int64)
        self._lengths = _GrowableArray((), np.int64)
        self._sign_counts = np.zeros(3, dtype=np.int64)
        # Temp files may only be removed by the writer, so cleanup waits for the first write.
        self._temp_files_removed = False
        self._reserve(capacity_steps, int(capacity_steps * _FRAME_RESERVE_PER_STEP))

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        max_episodes: int | None = None,
        *,
        frame_shape: tuple[int, int, int] = DEFAULT_FRAME_SHAPE,
        capacity_steps: int = 0,
    ) -> EpisodeDataset:
        """Rebuild a dataset from ``directory``, episodes in id order; later ``add`` calls append there.

        ``max_episodes`` loads only episodes 0 .. max_episodes-1 (those a checkpoint knew about); files with
        higher ids are left on disk and overwritten as new episodes take their ids. Leftover temporary files
        of interrupted writes are ignored (and removed at the first ``add``).
        """
        paths = _select_episode_files(Path(directory), max_episodes)
        dataset = cls(None, frame_shape=frame_shape, capacity_steps=capacity_steps)
        # Sizing the arrays from the lengths first means loading never copies frames to grow.
        num_steps = sum(_read_length(path, i) for i, path in enumerate(paths))
        dataset._reserve(num_steps, num_steps + len(paths))
        for i, path in enumerate(paths):
            episode = _read_episode(path, i)
            dataset._check_frame_shape(episode, source=path)
            dataset._append_to_ram(episode)
        dataset._directory = Path(directory)
        return dataset

    @property
    def directory(self) -> Path | None:
        return self._directory

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self._frame_shape

    @property
    def num_episodes(self) -> int:
        return len(self._lengths)

    @property
    def num_steps(self) -> int:
        return len(self._act)

    @property
    def lengths(self) -> np.ndarray:
        """(num_episodes,) int64 number of steps of each episode (read-only view)."""
        return self._lengths.view

    @property
    def frame_starts(self) -> np.ndarray:
        """(num_episodes,) int64 index in ``frames`` of each episode's first frame (read-only view)."""
        return self._frame_starts.view

    @property
    def step_starts(self) -> np.ndarray:
        """(num_episodes,) int64 index in the step arrays of each episode's first step (read-only view)."""
        return self._step_starts.view

    @property
    def frames(self) -> np.ndarray:
        """(num_steps + num_episodes, H, W, C) uint8 frames of all episodes (read-only view)."""
        return self._frames.view

    @property
    def actions(self) -> np.ndarray:
        return self._act.view

    @property
    def rewards(self) -> np.ndarray:
        return self._rew.view

    @property
    def terminated(self) -> np.ndarray:
        return self._terminated.view

    @property
    def truncated(self) -> np.ndarray:
        return self._truncated.view

    def reward_sign_counts(self) -> np.ndarray:
        """(3,) int64 number of stored steps with sign(reward) = -1, 0, +1."""
        return self._sign_counts.copy()

    def add(self, episode: Episode) -> int:
        """Store ``episode`` (on disk first, if any); return its id: 0, 1, 2, ... in order of addition."""
        episode_id = self.num_episodes
        self._check_frame_shape(episode, source="the added episode")
        if self._directory is not None:
            if not self._temp_files_removed:
                remove_temp_files(self._directory)
                self._temp_files_removed = True
            _write_episode(episode_path(self._directory, episode_id), episode)
        self._append_to_ram(episode)
        return episode_id

    def get_episode(self, episode_id: int) -> Episode:
        """Episode ``episode_id`` as read-only views into the RAM arrays (no copy)."""
        if not 0 <= episode_id < self.num_episodes:
            raise IndexError(f"episode id {episode_id} out of range [0, {self.num_episodes})")
        frame_start = int(self._frame_starts.view[episode_id])
        step_start = int(self._step_starts.view[episode_id])
        length = int(self._lengths.view[episode_id])
        steps = slice(step_start, step_start + length)
        return Episode(
            obs=self.frames[frame_start : frame_start + length + 1],
            act=self.actions[steps],
            rew=self.rewards[steps],
            terminated=self.terminated[steps],
            truncated=self.truncated[steps],
        )

    def _reserve(self, num_steps: int, num_frames: int) -> None:
        self._frames.reserve(num_frames)
        for array in (self._act, self._rew, self._terminated, self._truncated):
            array.reserve(num_steps)

    def _check_frame_shape(self, episode: Episode, source: str | Path) -> None:
        if episode.obs.shape[1:] != self._frame_shape:
            raise ValueError(
                f"{source} has frames of shape {episode.obs.shape[1:]}; the dataset stores "
                f"{self._frame_shape}"
            )

    def _append_to_ram(self, episode: Episode) -> None:
        self._frame_starts.extend([len(self._frames)])
        self._step_starts.extend([len(self._act)])
        self._lengths.extend([len(episode)])
        self._frames.extend(episode.obs)
        self._act.extend(episode.act)
        self._rew.extend(episode.rew)
        self._terminated.extend(episode.terminated)
        self._truncated.extend(episode.truncated)
        self._sign_counts += _reward_sign_counts(episode.rew)
