"""The official CS:GO dataset's HDF5 files (the layout the official csgo branch's ``CSGOHdf5Dataset`` reads)
as an engine dataset.

Each ``*.hdf5`` file (``hdf5_dm_july2021_<n>.hdf5``, in any subfolder) is one episode of 1000 steps: for
step i, ``frame_{i}_x`` is the frame, uint8 (150, 280, 3) in BGR order, and ``frame_{i}_y`` the action, a
51-wide vector: 11 keys (w, a, s, d, space, ctrl, shift, 1, 2, 3, r), the left and right clicks, then one-hot
vectors over 23 mouse-x and 15 mouse-y bins. Here frames become RGB and the one-hot mouse vectors become bin
indices: 15 columns (``CSGO_ACTION_SPEC``). Files are taken in the order of their number, as the official
code does. A file that cannot be read, lacks a step's frame or action, or holds an action that is not of
this form is refused with the file and step named, or skipped with a warning if asked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.data.actions import ActionSpec, bins, keys
from diffworld.data.folder_store import EngineDatasetWriter
from diffworld.errors import UserError

logger = logging.getLogger(__name__)

CSGO_KEYS = ("w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r")
CSGO_CLICKS = ("left_click", "right_click")
CSGO_MOUSE_X = (
    -1000,
    -500,
    -300,
    -200,
    -100,
    -60,
    -30,
    -20,
    -10,
    -4,
    -2,
    0,
    2,
    4,
    10,
    20,
    30,
    60,
    100,
    200,
    300,
    500,
    1000,
)
CSGO_MOUSE_Y = (-200, -100, -50, -20, -10, -4, -2, 0, 2, 4, 10, 20, 50, 100, 200)
CSGO_FRAME_SIZE = (150, 280)
CSGO_ACTION_SPEC = ActionSpec.of(
    keys(CSGO_KEYS, "keys"),
    keys(CSGO_CLICKS, "clicks"),
    bins("mouse_x", CSGO_MOUSE_X),
    bins("mouse_y", CSGO_MOUSE_Y),
)
OFFICIAL_ACTION_WIDTH = len(CSGO_KEYS) + len(CSGO_CLICKS) + len(CSGO_MOUSE_X) + len(CSGO_MOUSE_Y)
"""51: the width of the official ``frame_{i}_y`` vectors."""

_FRAME_KEY = re.compile(r"frame_(\d+)_x")


class CSGOFileError(UserError, ValueError):
    """An official CS:GO file that cannot be read as the official layout (``path`` names it)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem} (use --skip-corrupt to leave the file out)")
        self.path = path


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise UserError("reading the CS:GO HDF5 files needs h5py: pip install 'diffworld[engine]'") from None
    return h5py


def official_to_engine_actions(y: np.ndarray, source: str = "the actions") -> np.ndarray:
    """(T, 51) official action vectors -> (T, 15) float32 in ``CSGO_ACTION_SPEC``'s layout.

    Raises ``ValueError`` naming the first step whose keys or clicks are not 0/1 or whose mouse parts are
    not one-hot.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != OFFICIAL_ACTION_WIDTH:
        raise ValueError(f"{source} have shape {y.shape}; the official CS:GO actions are (T, 51)")
    n_buttons = len(CSGO_KEYS) + len(CSGO_CLICKS)
    buttons = y[:, :n_buttons]
    mouse_x = y[:, n_buttons : n_buttons + len(CSGO_MOUSE_X)]
    mouse_y = y[:, n_buttons + len(CSGO_MOUSE_X) :]
    bad = ((buttons != 0) & (buttons != 1)).any(axis=1)
    for one_hot in (mouse_x, mouse_y):
        bad |= ((one_hot != 0) & (one_hot != 1)).any(axis=1) | (one_hot.sum(axis=1) != 1)
    if bad.any():
        step = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{source}: step {step}'s action is not 13 0/1 buttons followed by one-hot mouse x and y vectors"
        )
    out = np.concatenate([buttons, mouse_x.argmax(1)[:, None], mouse_y.argmax(1)[:, None]], axis=1)
    return out.astype(np.float32)


def csgo_files(folder: Path) -> list[Path]:
    """The ``*.hdf5`` files under ``folder``, ordered by the number ending their name (then by path)."""

    def number(path: Path) -> tuple[int, str]:
        tail = path.stem.split("_")[-1]
        return (int(tail) if tail.isdigit() else -1, str(path))

    return sorted(folder.rglob("*.hdf5"), key=number)


def read_csgo_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 (T, 150, 280, 3) RGB, actions float32 (T, 15)) of one official file."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            steps = sorted(int(m.group(1)) for k in f if (m := _FRAME_KEY.fullmatch(k)))
            if not steps:
                raise CSGOFileError(path, "no frame_<i>_x datasets: not a CS:GO file of the official layout")
            if steps != list(range(len(steps))):
                missing = sorted(set(range(steps[-1] + 1)) - set(steps))[0]
                raise CSGOFileError(path, f"frame_{missing}_x is missing")
            frames: list[np.ndarray] = []
            actions: list[np.ndarray] = []
            for i in steps:
                if f"frame_{i}_y" not in f:
                    raise CSGOFileError(path, f"frame_{i}_y (step {i}'s action) is missing")
                frame = np.asarray(f[f"frame_{i}_x"][()])
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise CSGOFileError(
                        path, f"frame_{i}_x is {frame.dtype} {frame.shape}, not a uint8 (H, W, 3) image"
                    )
                if frames and frame.shape != frames[0].shape:
                    raise CSGOFileError(
                        path, f"frame_{i}_x is {frame.shape[:2]} where frame_0_x is {frames[0].shape[:2]}"
                    )
                frames.append(frame[:, :, ::-1])  # BGR -> RGB
                actions.append(np.asarray(f[f"frame_{i}_y"][()]).reshape(-1))
    except OSError as e:  # h5py's way of saying the file is truncated or not HDF5
        raise CSGOFileError(path, f"cannot be read as HDF5 ({e})") from None
    try:
        engine_actions = official_to_engine_actions(np.stack(actions), str(path))
    except ValueError as e:
        raise CSGOFileError(path, str(e).removeprefix(f"{path}: ")) from None
    return np.stack(frames), engine_actions


def read_test_split(path: Path) -> set[str]:
    """File names listed one per line (the official ``test_split.txt``), as episode names (their stems)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the test split {path}: {e}") from None
    return {Path(line.strip()).stem for line in lines if line.strip()}


def convert_csgo_hdf5(
    source: Path,
    out: Path,
    *,
    test_split: Path | None = None,
    test_fraction: float = 0.1,
    skip_corrupt: bool = False,
    resume: bool = False,
    max_files: int | None = None,
) -> Path:
    """Write the official CS:GO files under ``source`` as the engine dataset ``out``; return ``out``.

    The test episodes are the files listed in ``test_split`` (the official ``test_split.txt``) if given,
    else ``test_fraction`` of them spread evenly. ``max_files`` converts only the first ones (a sample).
    """
    files = csgo_files(source) if source.is_dir() else []
    if not files:
        raise UserError(f"{source} holds no .hdf5 files of the official CS:GO dataset")
    files = files[:max_files] if max_files is not None else files
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise UserError(f"{source} holds several .hdf5 files of the same name: convert one copy of each")
    info: dict[str, Any] = {
        "converter": "csgo_hdf5",
        "path": str(source.resolve()),
        "layout": "official csgo",
    }
    writer = EngineDatasetWriter(out, CSGO_ACTION_SPEC, _frame_size(files), info, resume=resume)
    done = set(writer.episode_names)
    for path in files:
        if path.stem in done:
            continue
        try:
            frames, actions = read_csgo_file(path)
        except CSGOFileError as e:
            if not skip_corrupt:
                raise
            logger.warning("Skipping %s", e)
            continue
        writer.add_episode(frames, actions, name=path.stem)
    if not writer.num_episodes:
        raise UserError(f"no file of {source} could be read")
    tests = None
    if test_split is not None:
        tests = sorted(read_test_split(test_split) & set(writer.episode_names))
    return writer.finish(test_fraction, tests)


def _frame_size(files: Iterable[Path]) -> tuple[int, int]:
    """The frame size of the first readable file's first frame (the official files' is 150x280)."""
    h5py = _h5py()
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                shape = f["frame_0_x"].shape
        except (OSError, KeyError):
            continue
        if len(shape) == 3:
            return int(shape[0]), int(shape[1])
    return CSGO_FRAME_SIZE
