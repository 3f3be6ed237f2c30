"""The folder store: the engine dataset on disk, episodes of frames and action vectors read through memory
maps. One of the two backends of the episode store (``data/store.EpisodeStore``; the other is the run
dataset, ``data/storage.py``): the engine trains on it, its recordings and converters write it.

Layout (docs/engine.md, "Datasets", is the user's description)::

    <dataset>/
      dataset.json                          # written last: the dataset exists once it exists
      episodes/<name>/frames.npy            # uint8 (T, H, W, 3) RGB
      episodes/<name>/actions.npy           # float32 (T, D): the action taken after frame t
      episodes/<name>/episode.json          # written after both: the episode is complete

``dataset.json`` records the format and version, the frame size (every episode has the same), the action
space (``ActionSpec.to_json``), each episode's name, length, file sizes and SHA-256, the names of the test
episodes and a free-form ``source``. Frames are opened with ``np.load(mmap_mode="r")``, so a dataset far
larger than RAM is read a segment at a time. Each file is checked against dataset.json (size, dtype, shape)
when the dataset is opened; a file that does not match is refused with the file named, or skipped with a
warning (``skip_corrupt=True``): it is never read as something it is not. Contents are checked against the
recorded SHA-256 by ``EngineDataset.verify`` (``diffworld engine info --verify``).

While a writer works, ``writing.json`` holds its settings; a writer re-opened on the folder with
``resume=True`` keeps the complete episodes and goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from diffworld.data.actions import ActionSpec
from diffworld.errors import UserError
from diffworld.utils.atomic import atomic_write, atomic_write_text, format_bytes, remove_temp_files

if TYPE_CHECKING:
    import torch

    from diffworld.data.batch import Batch

FORMAT = "diffworld-engine-dataset"
VERSION = 1
DATASET_FILE = "dataset.json"
WRITING_FILE = "writing.json"
EPISODES_DIR = "episodes"
FRAMES_FILE = "frames.npy"
ACTIONS_FILE = "actions.npy"
EPISODE_FILE = "episode.json"
_ARRAY_FILES = (FRAMES_FILE, ACTIONS_FILE)
_EPISODE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")
_HASH_CHUNK = 1 << 22

logger = logging.getLogger(__name__)


class EngineDatasetError(UserError, ValueError):
    """A folder that is not a usable engine dataset, or episodes that do not fit it."""


class CorruptEpisodeFileError(EngineDatasetError):
    """An episode file whose size, header or content does not match dataset.json (``path`` names it)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"{path}: {problem}. The file is corrupted or truncated: restore it, or open the dataset with "
            "skip_corrupt (--skip-corrupt) to leave its episode out"
        )
        self.path = path


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode as dataset.json lists it."""

    name: str
    length: int
    bytes: Mapping[str, int]
    sha256: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "length": self.length, "bytes": dict(self.bytes)}
        if self.sha256 is not None:
            out["sha256"] = dict(self.sha256)
        return out


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineDatasetError(f"{path}: cannot read {what} ({e})") from None


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, data offset) of a .npy file, from its header alone; ValueError if it has none."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if fortran:
            raise ValueError("the array is stored in Fortran order")
        return tuple(shape), np.dtype(dtype), f.tell()


def _check_array_file(path: Path, size: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    """Raise ``CorruptEpisodeFileError`` unless ``path`` is a .npy file of ``size`` bytes holding ``dtype``
    ``shape``."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        raise CorruptEpisodeFileError(path, "the file is missing") from None
    if actual != size:
        raise CorruptEpisodeFileError(path, f"the file has {actual} bytes where dataset.json records {size}")
    try:
        file_shape, file_dtype, offset = _npy_header(path)
    except (OSError, ValueError, SyntaxError) as e:
        raise CorruptEpisodeFileError(path, f"its .npy header cannot be read ({e})") from None
    if file_dtype != dtype or file_shape != shape:
        raise CorruptEpisodeFileError(
            path, f"it holds {file_dtype} {file_shape} where dataset.json implies {dtype} {shape}"
        )
    if offset + math.prod(shape) * dtype.itemsize != size:
        raise CorruptEpisodeFileError(path, "its header does not match its size")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _parse_frame_size(value: object, source: str) -> tuple[int, int]:
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(_positive_int(v) for v in value)):
        raise EngineDatasetError(f"{source}: frame_size must be [height, width] in pixels, got {value!r}")
    return int(value[0]), int(value[1])


def _parse_episode(item: object, source: str) -> EpisodeRecord:
    if not isinstance(item, dict):
        raise EngineDatasetError(f"{source}: each episode must be an object, got {item!r}")
    name, length, sizes, hashes = item.get("name"), item.get("length"), item.get("bytes"), item.get("sha256")
    if not isinstance(name, str) or not _EPISODE_NAME.fullmatch(name):
        raise EngineDatasetError(f"{source}: bad episode name {name!r}")
    if not _positive_int(length):
        raise EngineDatasetError(
            f"{source}: episode {name!r} has length {length!r}; expected an integer >= 1"
        )
    if not (isinstance(sizes, dict) and all(_positive_int(sizes.get(f)) for f in _ARRAY_FILES)):
        raise EngineDatasetError(
            f"{source}: episode {name!r} lacks the byte sizes of {', '.join(_ARRAY_FILES)}"
        )
    if hashes is not None and not (
        isinstance(hashes, dict) and all(isinstance(hashes.get(f), str) for f in _ARRAY_FILES)
    ):
        raise EngineDatasetError(f"{source}: episode {name!r} has a malformed sha256 entry")
    assert isinstance(length, int)
    return EpisodeRecord(name, length, {f: int(sizes[f]) for f in _ARRAY_FILES}, hashes)


class EngineDataset:
    """A finished engine dataset, opened for reading (see the module docstring for the layout): a
    ``data.store.EpisodeStore`` whose segments count frames.

    Episodes are numbered 0 .. num_episodes-1 in dataset.json's order, corrupt ones left out when
    ``skip_corrupt`` (their names are in ``skipped``).

    Raises:
        EngineDatasetError: no such folder, no dataset.json (or an unfinished one), a malformed dataset.json,
            no episodes, or (unless ``skip_corrupt``) an episode file that does not match dataset.json.
    """

    def __init__(self, folder: str | os.PathLike[str], *, skip_corrupt: bool = False) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / DATASET_FILE
        if not self.folder.is_dir():
            raise EngineDatasetError(f"{self.folder}: no such dataset folder")
        if not meta_path.is_file():
            if (self.folder / WRITING_FILE).is_file():
                raise EngineDatasetError(
                    f"{self.folder} is an unfinished engine dataset (its writer stopped before writing "
                    f"{DATASET_FILE}): resume the recording or conversion to finish it"
                )
            raise EngineDatasetError(
                f"{self.folder} holds no {DATASET_FILE}, so it is not an engine dataset: make one with "
                "'diffworld engine convert' or 'diffworld engine record'"
            )
        meta = _read_json(meta_path, "the dataset description")
        source = str(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise EngineDatasetError(f"{source} is not a {FORMAT} description (its 'format' differs)")
        if meta.get("version") != VERSION:
            raise EngineDatasetError(
                f"{source} has format version {meta.get('version')!r}; this diffworld reads version {VERSION}"
            )
        self.frame_size = _parse_frame_size(meta.get("frame_size"), source)
        space = meta.get("action_space")
        if not isinstance(space, dict):
            raise EngineDatasetError(f"{source}: action_space must be an object")
        self.spec = ActionSpec.from_json(space, f"{source}: action_space")
        self.source: Any = meta.get("source")
        items = meta.get("episodes")
        if not isinstance(items, list) or not items:
            raise EngineDatasetError(f"{self.folder} holds no episodes ({source} lists none)")
        records = [_parse_episode(item, source) for item in items]
        names = [r.name for r in records]
        if len(set(names)) != len(names):
            raise EngineDatasetError(f"{source} lists an episode name twice")
        test_names = meta.get("test_episodes", [])
        if not (isinstance(test_names, list) and all(isinstance(n, str) for n in test_names)) or not set(
            test_names
        ) <= set(names):
            raise EngineDatasetError(f"{source}: test_episodes must list names of its episodes")

        self.skipped: list[str] = []
        kept: list[EpisodeRecord] = []
        for record in records:
            try:
                self._check_files(record)
            except CorruptEpisodeFileError as e:
                if not skip_corrupt:
                    raise
                logger.warning("Skipping episode %s of %s: %s", record.name, self.folder, e)
                self.skipped.append(record.name)
                continue
            kept.append(record)
        if not kept:
            raise EngineDatasetError(f"{self.folder}: every episode is corrupted; nothing left to read")
        self._records = kept
        self.episode_names = [r.name for r in kept]
        self.lengths = np.array([r.length for r in kept], dtype=np.int64)
        tests = set(test_names)
        is_test = np.array([r.name in tests for r in kept], dtype=bool)
        self.train_ids = np.flatnonzero(~is_test)
        self.test_ids = np.flatnonzero(is_test)
        self._actions_checked: set[int] = set()

    @property
    def num_episodes(self) -> int:
        return len(self._records)

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def episode_dir(self, i: int) -> Path:
        return self.folder / EPISODES_DIR / self._records[i].name

    def frames(self, i: int) -> np.ndarray:
        """Episode ``i``'s frames: a read-only ``np.memmap``, uint8 (T, H, W, 3)."""
        frames: np.ndarray = np.load(self.episode_dir(i) / FRAMES_FILE, mmap_mode="r")
        return frames

    def actions(self, i: int) -> np.ndarray:
        """Episode ``i``'s actions: a read-only ``np.memmap``, float32 (T, D), checked against the action
        space on first access (``ActionMismatchError`` names the file, step and column)."""
        path = self.episode_dir(i) / ACTIONS_FILE
        actions: np.ndarray = np.load(path, mmap_mode="r")
        if i not in self._actions_checked:
            self.spec.validate(actions, str(path))
            self._actions_checked.add(i)
        return actions

    def gather(self, episode_ids: np.ndarray, starts: np.ndarray, n: int, device: torch.device) -> Batch:
        """The segments of frames ``[start, start + n)`` of the given episodes, with the action after each,
        as a ``Batch`` on ``device`` at the dataset's resolution (``data.store.EpisodeStore``); each must hold
        a real frame and end within its episode. Only the frames a segment covers are read from the files.
        """
        import torch  # here, so that writing datasets stays numpy-only

        from diffworld.data.batch import Batch
        from diffworld.data.frames import frames_to_tensor

        h, w = self.frame_size
        b = len(episode_ids)
        frames = np.zeros((b, n, h, w, 3), dtype=np.uint8)
        actions = np.zeros((b, n, self.spec.width), dtype=np.float32)
        mask = np.zeros((b, n), dtype=bool)
        for row, (episode, start) in enumerate(zip(episode_ids.tolist(), starts.tolist(), strict=True)):
            length = int(self.lengths[episode])
            first, stop = max(0, start), start + n
            if stop <= 0 or stop > length:
                raise ValueError(
                    f"segment [{start}, {stop}) of episode {episode} (length {length}) is invalid"
                )
            frames[row, first - start :] = self.frames(episode)[first:stop]
            actions[row, first - start :] = self.actions(episode)[first:stop]
            mask[row, first - start :] = True
        # uint8 crosses to the device (4x less traffic than float32); conversion happens there.
        full = frames_to_tensor(torch.from_numpy(frames).to(device, non_blocking=True))
        mask_t = torch.from_numpy(mask).to(device)
        full = full * mask_t[:, :, None, None, None]  # padding frames are 0.0, as the official sampler pads
        return Batch(obs=full, act=torch.from_numpy(actions).to(device), frame_mask=mask_t)

    def verify(self) -> None:
        """Check every file's SHA-256 against dataset.json, and every episode's actions against the action
        space. Raises ``CorruptEpisodeFileError`` (the file named) or ``ActionMismatchError``; reads it all.
        """
        for i, record in enumerate(self._records):
            for file in _ARRAY_FILES:
                path = self.episode_dir(i) / file
                if record.sha256 is not None and _file_sha256(path) != record.sha256[file]:
                    raise CorruptEpisodeFileError(path, "its SHA-256 differs from the one in dataset.json")
            self.actions(i)

    def summary(self) -> dict[str, Any]:
        """Figures for ``diffworld engine info``."""
        h, w = self.frame_size
        frame_bytes = self.num_steps * h * w * 3
        return {
            "folder": str(self.folder),
            "frame_size": [h, w],
            "action_space": self.spec.describe(),
            "action_width": self.spec.width,
            "episodes": self.num_episodes,
            "steps": self.num_steps,
            "train_episodes": len(self.train_ids),
            "test_episodes": len(self.test_ids),
            "train_steps": int(self.lengths[self.train_ids].sum()),
            "test_steps": int(self.lengths[self.test_ids].sum()),
            "frame_bytes": frame_bytes,
            "skipped": list(self.skipped),
            "source": self.source,
        }

    def describe(self) -> str:
        """A few lines for people: frames, split, actions, skipped episodes."""
        info = self.summary()
        h, w = self.frame_size
        lines = [
            f"Engine dataset {self.folder}",
            f"  frames: {h}x{w} RGB, {info['steps']} in {info['episodes']} episodes "
            f"({format_bytes(info['frame_bytes'])})",
            f"  split: {info['train_episodes']} train episodes ({info['train_steps']} frames), "
            f"{info['test_episodes']} test episodes ({info['test_steps']} frames)",
            f"  actions: {info['action_width']} columns: {info['action_space']}",
        ]
        if self.skipped:
            lines.append(f"  skipped (corrupt): {', '.join(self.skipped)}")
        return "\n".join(lines)

    def _check_files(self, record: EpisodeRecord) -> None:
        folder = self.folder / EPISODES_DIR / record.name
        h, w = self.frame_size
        _check_array_file(
            folder / FRAMES_FILE, record.bytes[FRAMES_FILE], np.dtype(np.uint8), (record.length, h, w, 3)
        )
        _check_array_file(
            folder / ACTIONS_FILE,
            record.bytes[ACTIONS_FILE],
            np.dtype(np.float32),
            (record.length, self.spec.width),
        )


class _HashingWriter:
    """A file wrapper that hashes and counts what is written through it (np.save then writes in chunks)."""

    def __init__(self, file: IO[Any]) -> None:
        self._file = file
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._file.write(data)


def _save_array(path: Path, array: np.ndarray) -> tuple[int, str]:
    """Write ``array`` as a .npy file atomically; return its size and SHA-256."""
    with atomic_write(path, "wb", size_hint=array.nbytes, what=f"episode file {path.name}") as f:
        writer = _HashingWriter(f)
        np.save(writer, array, allow_pickle=False)
    return writer.size, writer.digest.hexdigest()


class EngineDatasetWriter:
    """Writes an engine dataset episode by episode; ``finish`` makes it readable (writes dataset.json).

    Each episode's files are written atomically, so a writer killed at any moment leaves complete episodes
    and at most one partial one, which a writer opened with ``resume=True`` removes before going on.

    Args:
        folder: created if needed. It must be empty, or (``resume=True``) hold the unfinished dataset of a
            writer with the same action space and frame size.
        spec: the action space every episode's actions must fit.
        frame_size: (H, W) of every frame.
        source: free-form provenance, stored in dataset.json (what was converted or recorded, how).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        spec: ActionSpec,
        frame_size: tuple[int, int],
        source: Any = None,
        *,
        resume: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.spec = spec
        self.frame_size = _parse_frame_size(list(frame_size), "the frame size")
        self.source = source
        self._records: list[EpisodeRecord] = []
        settings = {
            "format": FORMAT,
            "version": VERSION,
            "frame_size": list(self.frame_size),
            "action_space": spec.to_json(),
            "source": source,
        }
        if (self.folder / DATASET_FILE).exists():
            raise EngineDatasetError(
                f"{self.folder} already holds a finished engine dataset: choose another folder or delete it"
            )
        writing = self.folder / WRITING_FILE
        if writing.is_file():
            if not resume:
                raise EngineDatasetError(
                    f"{self.folder} holds an unfinished engine dataset: resume it (--resume) or choose "
                    "another folder"
                )
            self._resume(_read_json(writing, "the unfinished dataset's settings"))
        else:
            if self.folder.exists() and any(self.folder.iterdir()):
                raise EngineDatasetError(
                    f"{self.folder} is not empty and holds no engine dataset: choose a new or empty folder"
                )
            (self.folder / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
            atomic_write_text(writing, json.dumps(settings, indent=2) + "\n")

    @property
    def num_episodes(self) -> int:
        return len(self._records)

    @property
    def num_steps(self) -> int:
        return sum(r.length for r in self._records)

    @property
    def episode_names(self) -> list[str]:
        return [r.name for r in self._records]

    def add_episode(self, frames: np.ndarray, actions: np.ndarray, name: str | None = None) -> str:
        """Store an episode: ``frames`` uint8 (T, H, W, 3) RGB, ``actions`` (T, D) (step t's after frame t).

        ``name`` defaults to the episode's number (``000000``, ``000001``, ...). Returns the name.

        Raises:
            EngineDatasetError: frames of another size or type, a name taken or not a plain folder name.
            ActionMismatchError: actions that do not fit the action space (the step and column named).
        """
        name = f"{len(self._records):06d}" if name is None else name
        if not isinstance(name, str) or not _EPISODE_NAME.fullmatch(name):
            raise EngineDatasetError(
                f"episode name {name!r}: use letters, digits and _.+- (not starting with . or -)"
            )
        if name in self.episode_names:
            raise EngineDatasetError(f"the dataset already has an episode named {name!r}")
        frames = np.asarray(frames)
        h, w = self.frame_size
        if frames.dtype != np.uint8:
            raise EngineDatasetError(f"episode {name}: frames must be uint8 RGB, got {frames.dtype}")
        if frames.ndim != 4 or frames.shape[3] != 3 or len(frames) < 1:
            raise EngineDatasetError(
                f"episode {name}: frames must have shape (T, H, W, 3) with T >= 1, got {frames.shape}"
            )
        if frames.shape[1:3] != (h, w):
            raise EngineDatasetError(
                f"episode {name}: frames of {frames.shape[1]}x{frames.shape[2]} (HxW) in a dataset of "
                f"{h}x{w} frames: every frame of a dataset must have the same size"
            )
        actions = np.asarray(actions)
        if actions.ndim == 1 and self.spec.width == 1:
            actions = actions[:, None]
        self.spec.validate(actions, f"episode {name}'s actions")
        if len(actions) != len(frames):
            raise EngineDatasetError(
                f"episode {name}: {len(frames)} frames but {len(actions)} actions; give one action per frame"
            )
        folder = self.folder / EPISODES_DIR / name
        if folder.exists():  # what a killed writer left of an episode it had not finished
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        sizes, hashes = {}, {}
        arrays = {FRAMES_FILE: frames, ACTIONS_FILE: actions.astype(np.float32)}
        for file, array in arrays.items():
            sizes[file], hashes[file] = _save_array(folder / file, np.ascontiguousarray(array))
        record = EpisodeRecord(name, len(frames), sizes, hashes)
        marker = {"index": len(self._records), **record.to_json()}
        atomic_write_text(folder / EPISODE_FILE, json.dumps(marker) + "\n")
        self._records.append(record)
        return name

    def finish(self, test_fraction: float = 0.1, test_names: Sequence[str] | None = None) -> Path:
        """Write dataset.json (atomically): the dataset is complete and readable. Returns the folder.

        The test split is ``test_names`` if given, else ``round(test_fraction * N)`` episodes spread evenly
        over the dataset (at least one when the fraction is positive, never all of them).
        """
        if not self._records:
            raise EngineDatasetError(
                f"{self.folder}: no episodes were added, so there is no dataset to finish"
            )
        names = self.episode_names
        if test_names is not None:
            unknown = sorted(set(test_names) - set(names))
            if unknown:
                raise EngineDatasetError(f"test episodes {unknown} are not in the dataset")
            tests = [n for n in names if n in set(test_names)]
        else:
            tests = [names[i] for i in split_test_ids(len(names), test_fraction)]
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "frame_size": list(self.frame_size),
            "action_space": self.spec.to_json(),
            "episodes": [r.to_json() for r in self._records],
            "test_episodes": tests,
            "source": self.source,
        }
        atomic_write_text(self.folder / DATASET_FILE, json.dumps(meta, indent=1) + "\n")
        (self.folder / WRITING_FILE).unlink(missing_ok=True)
        return self.folder

    def _resume(self, settings: Any) -> None:
        source = str(self.folder / WRITING_FILE)
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise EngineDatasetError(f"{source} is not an engine dataset writer's file")
        space = ActionSpec.from_json(settings.get("action_space") or {}, f"{source}: action_space")
        size = _parse_frame_size(settings.get("frame_size"), source)
        if space != self.spec or size != self.frame_size:
            raise EngineDatasetError(
                f"{self.folder} holds an unfinished dataset of {size[0]}x{size[1]} frames with actions "
                f"{space.describe()}; this writer has {self.frame_size[0]}x{self.frame_size[1]} and "
                f"{self.spec.describe()}: choose another folder"
            )
        self.source = settings.get("source", self.source)
        remove_temp_files(self.folder)
        episodes_dir = self.folder / EPISODES_DIR
        episodes_dir.mkdir(exist_ok=True)
        found: list[tuple[int, EpisodeRecord]] = []
        for folder in sorted(episodes_dir.iterdir()):
            marker = folder / EPISODE_FILE
            if not folder.is_dir() or not marker.is_file():
                # A killed writer's unfinished episode: its files are incomplete or unrecorded.
                if folder.is_dir():
                    shutil.rmtree(folder)
                continue
            data = _read_json(marker, "an episode's record")
            record = _parse_episode(data, str(marker))
            found.append((int(data.get("index", 0)), record))
            remove_temp_files(folder)
        self._records = [record for _, record in sorted(found, key=lambda x: x[0])]
        logger.info("Resuming %s with its %d complete episodes", self.folder, len(self._records))


def split_test_ids(num_episodes: int, test_fraction: float) -> list[int]:
    """The indices of the test episodes among ``num_episodes``: ``round(test_fraction * N)`` of them (at
    least 1 if the fraction is positive and N >= 2, at most N - 1), evenly spread."""
    if not 0 <= test_fraction < 1:
        raise EngineDatasetError(f"the test fraction must be within [0, 1), got {test_fraction}")
    if test_fraction == 0 or num_episodes < 2:
        return []
    count = min(num_episodes - 1, max(1, round(test_fraction * num_episodes)))
    return sorted({int((k + 0.5) * num_episodes / count) for k in range(count)})
