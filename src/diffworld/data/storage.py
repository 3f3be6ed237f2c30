"""Episode storage: contiguous arrays in RAM for fast segment sampling, compressed files on disk.

Episodes are stored as they are collected, the running ones included, as in the official DIAMOND
collector: a running episode is *open*; ``extend`` appends the steps taken since, keeping its id, until it
ends and is *closed*. Samplers see an open episode's steps like any others.

RAM layout: all frames of all episodes live in ONE uint8 array (episode i owns frames
``frame_starts[i] : frame_starts[i] + lengths[i] + 1``), all steps in contiguous step arrays (episode i owns
``step_starts[i] : step_starts[i] + lengths[i]``). Arrays grow by doubling, so appending is amortized O(1)
and a sampler can gather any batch with a single fancy index. An open episode that is the last one in the
arrays, as the one running episode of a single collecting env always is, grows in place; any other (several
envs) first moves to the end, the episodes after it moving down to close the gap, so a collection costs a
copy of at most the open episodes and those stored since they last grew.

Disk layout, in ``directory``:

- ``episode_{id:06d}.npz``: a closed episode, whole.
- ``episode_{id:06d}.steps_{start:06d}-{stop:06d}.npz``: steps ``start .. stop-1`` of an open episode and
  frames ``start .. stop``, one file per ``add`` or ``extend``; read in order, they are the episode so far.
  When the episode ends, it is written whole as ``episode_{id:06d}.npz`` and these files are removed.

Appending only the new steps keeps the bytes written per collection proportional to the steps collected,
where rewriting the growing episode would cost its whole length each time (quadratic over an episode); each
step of an episode that spans collections is written twice in all, in its part and in the whole episode.
Every file is written atomically before ``add`` or ``extend`` returns, so a process killed at any moment
leaves every step that these calls stored readable.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffworld.data.episode import Episode
from diffworld.errors import UserError
from diffworld.utils.atomic import atomic_write, remove_temp_files

if TYPE_CHECKING:
    import torch

    from diffworld.data.batch import Batch

DEFAULT_FRAME_SHAPE = (64, 64, 3)

_EPISODE_FILE = re.compile(r"episode_(\d{6,})\.npz")
_PART_FILE = re.compile(r"episode_(\d{6,})\.steps_(\d{6,})-(\d{6,})\.npz")
_FIELDS = ("obs", "act", "rew", "terminated", "truncated")
# Frames reserved per step when a capacity hint is given: an episode of T steps has T+1 frames, and even
# Atari episodes cut at each life loss average far more than 8 steps. The reserve costs no RSS until written
# (np.empty pages are committed lazily by the OS).
_FRAME_RESERVE_PER_STEP = 1 + 1 / 8


class CorruptEpisodeError(UserError, RuntimeError):
    """An episode file exists but cannot be read back."""


def episode_path(directory: str | os.PathLike[str], episode_id: int) -> Path:
    """Where the closed episode ``episode_id`` is stored in ``directory``."""
    return Path(directory) / f"episode_{episode_id:06d}.npz"


def part_path(directory: str | os.PathLike[str], episode_id: int, start: int, stop: int) -> Path:
    """Where steps ``start .. stop-1`` of the open episode ``episode_id`` are stored in ``directory``."""
    return Path(directory) / f"episode_{episode_id:06d}.steps_{start:06d}-{stop:06d}.npz"


def has_enough_minority_rewards(counts: np.ndarray, min_count: int) -> bool:
    """The collection rule of docs/method.md §2: the dataset holds at least ``min_count`` rewards of the
    minority classes.

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

    @property
    def writable(self) -> np.ndarray:
        """Writable view of the filled part, for the dataset's own bookkeeping."""
        return self._buffer[: self._size]

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

    def move_to_end(self, start: int, length: int) -> None:
        """Move items ``start .. start+length-1`` to the end; those after them move down by ``length``."""
        end = self._size
        if start + length == end:
            return
        moved = self._buffer[start : start + length].copy()
        self._buffer[start : end - length] = self._buffer[start + length : end]  # numpy handles the overlap
        self._buffer[end - length : end] = moved


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
            f"the files of this episode and of every episode with a higher id."
        ) from error


def _read_episode(path: Path, episode_id: int, num_steps: int | None = None) -> Episode:
    with _reading(path, episode_id) as data:
        episode = Episode(**{name: data[name] for name in _FIELDS})
    if num_steps is not None and len(episode) != num_steps:
        raise CorruptEpisodeError(
            f"Episode file {path} holds {len(episode)} steps where its name says {num_steps}: it was "
            f"modified outside diffworld. Pass max_episodes={episode_id} to EpisodeDataset.load to go on "
            f"without it."
        )
    return episode


def _read_length(path: Path, episode_id: int) -> int:
    # npz members are decompressed on access, so this reads the small `act` array only.
    with _reading(path, episode_id) as data:
        return len(data["act"])


def _write_episode(path: Path, episode: Episode) -> None:
    with atomic_write(path, "wb") as file:
        np.savez_compressed(file, **{name: getattr(episode, name) for name in _FIELDS})


def _slice(episode: Episode, start: int, stop: int) -> Episode:
    """Steps ``start .. stop-1`` of ``episode`` with their frames ``start .. stop`` (views)."""
    steps = slice(start, stop)
    return Episode(
        obs=episode.obs[start : stop + 1],
        act=episode.act[steps],
        rew=episode.rew[steps],
        terminated=episode.terminated[steps],
        truncated=episode.truncated[steps],
    )


@dataclass
class _StoredFiles:
    """The files a folder holds for one episode id."""

    whole: Path | None = None
    parts: dict[tuple[int, int], Path] = field(default_factory=dict)
    """(start, stop) -> file of that part."""

    def all_paths(self) -> list[Path]:
        return ([] if self.whole is None else [self.whole]) + [self.parts[key] for key in sorted(self.parts)]

    def chain(self, limit: int | None = None) -> list[tuple[int, int]]:
        """The parts that make the episode from step 0 on, each the longest one starting where the previous
        stopped (stopping at ``limit`` at most); parts outside the chain are leftovers of a crash."""
        chain: list[tuple[int, int]] = []
        position = 0
        while True:
            stops = [b for a, b in self.parts if a == position and (limit is None or b <= limit)]
            if not stops:
                return chain
            chain.append((position, max(stops)))
            position = max(stops)


def _scan(directory: Path) -> dict[int, _StoredFiles]:
    """The episode files of ``directory``, by episode id."""
    stored: dict[int, _StoredFiles] = {}
    for path in directory.iterdir():
        if match := _EPISODE_FILE.fullmatch(path.name):
            stored.setdefault(int(match.group(1)), _StoredFiles()).whole = path
        elif match := _PART_FILE.fullmatch(path.name):
            episode_id, start, stop = (int(group) for group in match.groups())
            if start < stop:
                stored.setdefault(episode_id, _StoredFiles()).parts[start, stop] = path
    return stored


def _select_episodes(directory: Path, max_episodes: int | None) -> list[_StoredFiles]:
    """The files of episodes 0 .. n-1 (n = max_episodes, or all), checking that none is missing."""
    if max_episodes is not None and max_episodes < 0:
        raise ValueError(f"max_episodes must be >= 0, got {max_episodes}")
    # Ids with parts that do not start at step 0 hold nothing readable (crash leftovers), as if absent.
    stored = {i: files for i, files in _scan(directory).items() if files.whole is not None or files.chain()}
    count = len(stored) if max_episodes is None else max_episodes
    missing = [i for i in range(count) if i not in stored]
    if missing:
        raise FileNotFoundError(
            f"{directory} should hold episodes 0..{count - 1} but lacks ids {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(stored)} episodes found). If a checkpoint "
            f"expects these episodes, this is not the directory it was trained with."
        )
    return [stored[i] for i in range(count)]


def stored_episode_ids(directory: str | os.PathLike[str]) -> list[int]:
    """The ids of the episodes stored in ``directory`` (closed or open), in increasing order."""
    return sorted(
        i for i, files in _scan(Path(directory)).items() if files.whole is not None or files.chain()
    )


def read_stored_episode(directory: str | os.PathLike[str], episode_id: int) -> Episode:
    """Episode ``episode_id`` of ``directory`` as stored there, whole or (an open one) its steps so far."""
    files = _scan(Path(directory)).get(episode_id, _StoredFiles())
    pieces = _read_pieces(files, episode_id)
    if not pieces:
        raise FileNotFoundError(f"{directory} holds no episode {episode_id}")
    if len(pieces) == 1:
        return pieces[0]
    return Episode(
        obs=np.concatenate([pieces[0].obs[:1], *(piece.obs[1:] for piece in pieces)]),
        **{name: np.concatenate([getattr(piece, name) for piece in pieces]) for name in _FIELDS[1:]},
    )


def _read_pieces(files: _StoredFiles, episode_id: int) -> list[Episode]:
    """The stored episode as one whole episode or as its parts in order, checked to follow each other."""
    if files.whole is not None:
        return [_read_episode(files.whole, episode_id)]
    pieces: list[Episode] = []
    for start, stop in files.chain():
        path = files.parts[start, stop]
        piece = _read_episode(path, episode_id, stop - start)
        if pieces and not np.array_equal(piece.obs[0], pieces[-1].obs[-1]):
            raise CorruptEpisodeError(
                f"Episode file {path} does not start on the frame where the part before it ends: the parts "
                f"of episode {episode_id} come from different runs. Pass max_episodes={episode_id} to "
                f"EpisodeDataset.load to go on without it."
            )
        if piece.terminated[-1] or piece.truncated[-1]:
            raise CorruptEpisodeError(
                f"Episode file {path} ends its episode, which a part of an open episode never does: it was "
                f"modified outside diffworld."
            )
        pieces.append(piece)
    return pieces


def _stored_length(files: _StoredFiles, episode_id: int) -> int:
    if files.whole is not None:
        return _read_length(files.whole, episode_id)
    chain = files.chain()
    return chain[-1][1] if chain else 0


def set_aside_later_files(
    directory: str | os.PathLike[str],
    aside: str | os.PathLike[str],
    num_episodes: int,
    lengths: Sequence[int] | None = None,
) -> list[Path]:
    """Bring ``directory`` back to what it held at an earlier moment; move what was stored since to ``aside``.

    The moment is given by the number of episodes then and the length of each (``lengths``; None keeps
    episodes ``0 .. num_episodes-1`` as they are, right for datasets without open episodes). The files of
    later episodes, and the steps that an open episode gained since (its later parts, or its whole file if it
    has ended since), are moved to ``aside`` (created when needed), never deleted. Where the steps to keep
    share a file with later ones, they are first written as a part of their own. Each change is an atomic
    write or a rename, so a crash at any point leaves every kept step readable and the call can be repeated.

    Returns the paths of the moved files, in ``aside``. Raises ``FileNotFoundError`` where the folder lacks
    steps that the moment had.
    """
    directory, aside = Path(directory), Path(aside)
    if lengths is not None and len(lengths) != num_episodes:
        raise ValueError(f"got {len(lengths)} lengths for {num_episodes} episodes")
    moved = []
    for episode_id, files in sorted(_scan(directory).items()):
        if episode_id >= num_episodes:
            keep: set[Path] = set()
        elif lengths is None:
            continue
        else:
            keep = _keep_first_steps(directory, episode_id, files, int(lengths[episode_id]))
        for path in files.all_paths():
            if path not in keep:
                aside.mkdir(parents=True, exist_ok=True)
                moved.append(Path(shutil.move(path, aside / path.name)))
    return moved


def _keep_first_steps(directory: Path, episode_id: int, files: _StoredFiles, num_steps: int) -> set[Path]:
    """The files that hold exactly steps ``0 .. num_steps-1`` of the episode, writing a part if needed."""
    if files.whole is not None:
        length = _read_length(files.whole, episode_id)
        if length == num_steps:
            return {files.whole}
        if length < num_steps:
            raise FileNotFoundError(
                f"{files.whole} holds {length} steps where {num_steps} were expected: this is not the "
                f"folder the checkpoint was trained with."
            )
    chain = files.chain(limit=num_steps)
    reached = chain[-1][1] if chain else 0
    if reached < num_steps:
        sources = [(0, files.whole)] if files.whole is not None else []
        sources += [(a, path) for (a, b), path in files.parts.items() if a <= reached and b >= num_steps]
        if not sources:
            raise FileNotFoundError(
                f"{directory} lacks steps {reached}..{num_steps - 1} of episode {episode_id}: this is not "
                f"the folder the checkpoint was trained with."
            )
        start, path = sources[0]
        piece = _slice(_read_episode(path, episode_id), reached - start, num_steps - start)
        new_part = part_path(directory, episode_id, reached, num_steps)
        _write_episode(new_part, piece)
        files.parts[reached, num_steps] = new_part
        chain.append((reached, num_steps))
    return {files.parts[key] for key in chain}


def _check_goes_on(episode: Episode, source: str) -> None:
    if episode.terminated[-1] or episode.truncated[-1]:
        raise ValueError(f"{source} has ended, so it cannot stay open: pass partial=False")


class EpisodeDataset:
    """Episodes appended as they are collected, held in RAM for sampling and, optionally, saved to a folder:
    the run dataset, a ``data.store.EpisodeStore`` whose segments count steps.

    ``add`` stores a new episode under the next id; with ``partial=True`` the episode is still running and
    stays open, and ``extend`` appends the steps that followed until the episode ends (``partial=False``).
    Open and closed episodes are sampled alike; a sampler tells them apart by nothing but their steps' flags,
    and the end of an open episode is no termination.

    Args:
        directory: folder for the episode files, created if needed; it must not hold episodes yet (use
            ``EpisodeDataset.load`` to resume). None keeps the dataset in RAM only.
        frame_shape: (H, W, C) of every frame.
        capacity_steps: expected total number of steps, preallocated to avoid growth copies (which briefly
            hold the old and new arrays together). Exceeding it is fine: arrays then double.
        action_shape: ``()`` for int64 action indices (Atari, Catch), ``(D,)`` for float32 action vectors
            (continuous control); every episode's ``act`` must be of that kind.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        frame_shape: tuple[int, int, int] = DEFAULT_FRAME_SHAPE,
        capacity_steps: int = 0,
        action_shape: tuple[int, ...] = (),
    ) -> None:
        if len(action_shape) > 1 or any(d < 1 for d in action_shape):
            raise ValueError(f"action_shape must be () or (D,) with D >= 1, got {action_shape}")
        self._directory = None if directory is None else Path(directory)
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
            if _scan(self._directory):
                raise FileExistsError(
                    f"{self._directory} already holds episodes; use EpisodeDataset.load to resume from them"
                )
        self._frame_shape = tuple(frame_shape)
        self._frames = _GrowableArray(self._frame_shape, np.uint8)
        self._action_shape = tuple(action_shape)
        self._act = _GrowableArray(self._action_shape, np.float32 if self._action_shape else np.int64)
        self._rew = _GrowableArray((), np.float32)
        self._terminated = _GrowableArray((), np.bool_)
        self._truncated = _GrowableArray((), np.bool_)
        self._frame_starts = _GrowableArray((), np.int64)
        self._step_starts = _GrowableArray((), np.int64)
        self._lengths = _GrowableArray((), np.int64)
        self._sign_counts = np.zeros(3, dtype=np.int64)
        self._open: dict[int, list[int]] = {}
        """Open episode id -> the step where each of its parts starts, then its length."""
        # Files that the first write finds for ids this dataset has not reached yet (a discarded later
        # history, when loaded with max_episodes): removed when their id is stored again.
        self._stale: dict[int, list[Path]] = {}
        # Temp files may only be removed by the writer, so cleanup waits for the first write.
        self._cleaned_up = False
        self._reserve(capacity_steps, int(capacity_steps * _FRAME_RESERVE_PER_STEP))

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        max_episodes: int | None = None,
        *,
        frame_shape: tuple[int, int, int] = DEFAULT_FRAME_SHAPE,
        capacity_steps: int = 0,
        action_shape: tuple[int, ...] = (),
    ) -> EpisodeDataset:
        """Rebuild a dataset from ``directory``, episodes in id order; later ``add`` calls append there.

        Open episodes (stored in parts) come back open, with the steps their parts hold. ``max_episodes``
        loads only episodes 0 .. max_episodes-1 (those a checkpoint knew about); files with higher ids are
        left on disk and replaced as new episodes take their ids (``set_aside_later_files`` moves them
        away first). Leftover temporary files of interrupted writes are ignored (and removed at the first
        write).
        """
        directory = Path(directory)
        selected = _select_episodes(directory, max_episodes)
        dataset = cls(None, frame_shape=frame_shape, capacity_steps=capacity_steps, action_shape=action_shape)
        # Sizing the arrays from the lengths first means loading never copies frames to grow.
        num_steps = sum(_stored_length(files, i) for i, files in enumerate(selected))
        dataset._reserve(num_steps, num_steps + len(selected))
        for episode_id, files in enumerate(selected):
            pieces = _read_pieces(files, episode_id)
            for piece in pieces:
                dataset._check_shapes(piece, source=f"episode {episode_id} in {directory}")
            dataset._append_to_ram(pieces[0])
            for piece in pieces[1:]:
                dataset._extend_ram(episode_id, piece)
            if files.whole is None:
                dataset._open[episode_id] = [0] + [stop for _, stop in files.chain()]
        dataset._directory = directory
        return dataset

    @property
    def directory(self) -> Path | None:
        return self._directory

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self._frame_shape

    @property
    def action_shape(self) -> tuple[int, ...]:
        """``()``: int64 action indices; ``(D,)``: float32 action vectors."""
        return self._action_shape

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
        """(num_episodes,) int64 index in ``frames`` of each episode's first frame (read-only view).

        Increasing with the id unless an open episode other than the last one grew (several envs)."""
        return self._frame_starts.view

    @property
    def step_starts(self) -> np.ndarray:
        """(num_episodes,) int64 index in the step arrays of each episode's first step (read-only view).

        Increasing with the id unless an open episode other than the last one grew (several envs)."""
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

    @property
    def open_episode_ids(self) -> list[int]:
        """Ids of the open episodes (stored while running, extendable), in increasing order."""
        return sorted(self._open)

    def is_open(self, episode_id: int) -> bool:
        """Whether episode ``episode_id`` is open: stored while running, and extendable with ``extend``."""
        return episode_id in self._open

    def reward_sign_counts(self) -> np.ndarray:
        """(3,) int64 number of stored steps with sign(reward) = -1, 0, +1."""
        return self._sign_counts.copy()

    def gather(self, episode_ids: np.ndarray, starts: np.ndarray, n: int, device: torch.device) -> Batch:
        """The segments of steps ``[start, start + n)`` (and n + 1 frames) of the given episodes, as a
        ``Batch`` on ``device`` (``data.store.EpisodeStore``). Every segment must contain a real step.

        Steps outside ``[0, len)`` and frames outside ``[0, len]`` (frame len, the true final frame, is real)
        are padding.
        """
        import torch  # here, so that storing episodes stays numpy-only (see data/__init__.py)

        from diffworld.data.batch import Batch
        from diffworld.data.frames import frames_to_tensor

        lengths = self.lengths[episode_ids][:, None]
        step_pos = starts[:, None] + np.arange(n)
        frame_pos = starts[:, None] + np.arange(n + 1)
        is_real = (step_pos >= 0) & (step_pos < lengths)
        if not is_real.any(axis=1).all():
            raise ValueError("every segment must overlap its episode")

        # Clipping keeps padding indices inside their own episode; their values are masked out below.
        step_idx = self.step_starts[episode_ids][:, None] + np.clip(step_pos, 0, lengths - 1)
        frame_idx = self.frame_starts[episode_ids][:, None] + np.clip(frame_pos, 0, lengths)
        frames = self.frames[frame_idx]  # (B, T+1, H, W, C) uint8, the only large copy

        # Frames outside [0, len] are padding (frame len, the true final frame, is real). Their flat indices
        # are found on the host so that zeroing them on the device touches only them and never syncs.
        padding_frames = np.flatnonzero((frame_pos < 0) | (frame_pos > lengths))
        # uint8 crosses to the device (4x less traffic than float32); conversion and zeroing happen there.
        obs = torch.from_numpy(frames).to(device, non_blocking=True)
        obs = frames_to_tensor(obs)
        obs.flatten(0, 1).index_fill_(0, torch.from_numpy(padding_frames).to(device), 0.0)

        def steps_to_device(values: np.ndarray) -> torch.Tensor:
            real = is_real.reshape(is_real.shape + (1,) * (values.ndim - is_real.ndim))  # action vectors
            return torch.from_numpy(np.where(real, values, np.zeros((), dtype=values.dtype))).to(device)

        return Batch.of_steps(
            obs=obs,
            act=steps_to_device(self.actions[step_idx]),
            rew=steps_to_device(self.rewards[step_idx]),
            end=steps_to_device(self.terminated[step_idx]),
            trunc=steps_to_device(self.truncated[step_idx]),
            step_mask=torch.from_numpy(is_real).to(device),
        )

    def add(self, episode: Episode, *, partial: bool = False) -> int:
        """Store ``episode`` (on disk first, if any); return its id: 0, 1, 2, ... in order of addition.

        ``partial=True``: the episode is still running; it stays open for ``extend`` (its last step must not
        end it) and is stored on disk as its first part.
        """
        episode_id = self.num_episodes
        self._check_shapes(episode, source="the added episode")
        if partial:
            _check_goes_on(episode, "the added episode")
        if self._directory is not None:
            self._prepare_write()
            for path in self._stale.pop(episode_id, []):
                path.unlink(missing_ok=True)
            if partial:
                _write_episode(part_path(self._directory, episode_id, 0, len(episode)), episode)
            else:
                _write_episode(episode_path(self._directory, episode_id), episode)
        self._append_to_ram(episode)
        if partial:
            self._open[episode_id] = [0, len(episode)]
        return episode_id

    def extend(self, episode_id: int, steps: Episode, *, partial: bool = False) -> None:
        """Append ``steps`` to the open episode ``episode_id`` (on disk first, if any); it keeps its id.

        ``steps.obs[0]`` must be the episode's last frame: ``steps`` holds the steps that followed it, with
        the frames after each. ``partial=True``: the episode still runs and stays open, and only the new
        steps are written, as its next part; otherwise it has ended (or is cut) and closes: it is written
        whole as ``episode_{id}.npz`` and its parts are removed.
        """
        parts = self._open.get(episode_id)
        if parts is None:
            raise ValueError(f"episode {episode_id} is not open: only open episodes can be extended")
        self._check_shapes(steps, source="the added steps")
        if partial:
            _check_goes_on(steps, "the added steps")
        length = parts[-1]
        if not np.array_equal(steps.obs[0], self.frames[self._frame_starts.view[episode_id] + length]):
            raise ValueError(
                f"steps.obs[0] must be the last frame of episode {episode_id}, which they continue"
            )
        if self._directory is not None:
            self._prepare_write()
            if partial:
                _write_episode(part_path(self._directory, episode_id, length, length + len(steps)), steps)
            else:
                whole = self.get_episode(episode_id)
                _write_episode(
                    episode_path(self._directory, episode_id),
                    Episode(
                        obs=np.concatenate([whole.obs, steps.obs[1:]]),
                        **{
                            name: np.concatenate([getattr(whole, name), getattr(steps, name)])
                            for name in _FIELDS[1:]
                        },
                    ),
                )
                for start, stop in itertools.pairwise(parts):
                    part_path(self._directory, episode_id, start, stop).unlink(missing_ok=True)
        self._extend_ram(episode_id, steps)
        if partial:
            parts.append(length + len(steps))
        else:
            del self._open[episode_id]

    def get_episode(self, episode_id: int) -> Episode:
        """Episode ``episode_id`` (an open one: its steps so far) as read-only views into the RAM arrays.

        No copy; the views stay valid until the next ``extend`` of an open episode that is not the last one
        in the arrays, which moves the episodes after it (never the case with a single collecting env).
        """
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

    def _prepare_write(self) -> None:
        """Before the first write: remove what interrupted writes and discarded histories left."""
        if self._cleaned_up:
            return
        assert self._directory is not None
        remove_temp_files(self._directory)
        for episode_id, files in _scan(self._directory).items():
            if episode_id >= self.num_episodes:
                self._stale[episode_id] = files.all_paths()
                continue
            parts = self._open.get(episode_id, [])
            kept = {part_path(self._directory, episode_id, a, b) for a, b in itertools.pairwise(parts)}
            # Parts of an episode stored whole (a crash between writing it and removing them), or outside
            # the chain of parts that was loaded: copies of steps stored elsewhere.
            for path in files.parts.values():
                if path not in kept:
                    path.unlink(missing_ok=True)
        self._cleaned_up = True

    def _reserve(self, num_steps: int, num_frames: int) -> None:
        self._frames.reserve(num_frames)
        for array in (self._act, self._rew, self._terminated, self._truncated):
            array.reserve(num_steps)

    def _check_shapes(self, episode: Episode, source: str | Path) -> None:
        if episode.obs.shape[1:] != self._frame_shape:
            raise ValueError(
                f"{source} has frames of shape {episode.obs.shape[1:]}; the dataset stores "
                f"{self._frame_shape}"
            )
        if episode.act.shape[1:] != self._action_shape:
            raise ValueError(
                f"{source} has actions of shape {episode.act.shape[1:]} per step; the dataset stores "
                f"{self._action_shape} ({'action vectors' if self._action_shape else 'action indices'})"
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

    def _extend_ram(self, episode_id: int, steps: Episode) -> None:
        """Append ``steps`` (``steps.obs[0]`` being the episode's last frame) to the episode's RAM arrays."""
        length = int(self._lengths.view[episode_id])
        frame_start = int(self._frame_starts.view[episode_id])
        step_start = int(self._step_starts.view[episode_id])
        if frame_start + length + 1 != len(self._frames) or step_start + length != len(self._act):
            # Not the last episode in the arrays: move it to the end, the episodes after it moving down.
            self._frames.move_to_end(frame_start, length + 1)
            frame_starts = self._frame_starts.writable
            frame_starts[frame_starts > frame_start] -= length + 1
            frame_starts[episode_id] = len(self._frames) - length - 1
            for array in (self._act, self._rew, self._terminated, self._truncated):
                array.move_to_end(step_start, length)
            step_starts = self._step_starts.writable
            step_starts[step_starts > step_start] -= length
            step_starts[episode_id] = len(self._act) - length
        self._frames.extend(steps.obs[1:])
        self._act.extend(steps.act)
        self._rew.extend(steps.rew)
        self._terminated.extend(steps.terminated)
        self._truncated.extend(steps.truncated)
        self._lengths.writable[episode_id] += len(steps)
        self._sign_counts += _reward_sign_counts(steps.rew)
