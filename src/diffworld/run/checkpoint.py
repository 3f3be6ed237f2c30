"""Training-state checkpoints that survive a crash at any moment and load without running code.

A run folder holds ``state.pt``, the latest checkpoint, and ``state.backup.pt``, the one before it. Both
are written with ``torch.save`` and read with ``torch.load(weights_only=True)``, which accepts only
tensors and plain Python values and refuses (without executing anything) a pickle that names any other
class or function. :func:`save_checkpoint` passes the state through :func:`to_safe`, which turns what that
loader cannot read (numpy arrays and scalars) into what it can and rejects anything else, so that a bad
state fails when it is saved rather than when a resumed run loads it; :func:`load_checkpoint` undoes the
conversion with :func:`from_safe`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffworld.errors import UserError
from diffworld.utils.atomic import (
    TEMP_SUFFIX,
    DiskFullError,
    check_free_space,
    disk_full_error,
    fsync_directory,
    is_disk_full,
    temp_path_for,
)
from diffworld.utils.seeding import seed_everything

STATE_FILE = "state.pt"
BACKUP_FILE = "state.backup.pt"

logger = logging.getLogger(__name__)

_NDARRAY_KEY = "__diffworld_ndarray__"
"""Marks the dict that :func:`to_safe` makes of a numpy array: ``{_NDARRAY_KEY: dtype, "shape", "data"}``."""

# Exact types: a subclass (an IntEnum, a str Enum) is pickled by reference to its class, which
# weights-only loading refuses.
_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.Size)


_NOT_PLAIN = "which is neither a tensor nor a plain Python value"


class CheckpointError(UserError, RuntimeError):
    """Neither checkpoint file of a run folder can be loaded."""


class _UnusableCheckpoint(Exception):
    """One checkpoint file cannot be used; the message says why."""


def to_safe(obj: Any) -> Any:
    """``obj`` made loadable by ``torch.load(weights_only=True)``; :func:`from_safe` undoes it.

    Tensors, ``None``, ``bool``, ``int`` (any size), ``float``, ``complex``, ``str``, ``bytes`` and
    ``torch.Size`` are kept; ``list``, ``tuple``, ``dict`` and ``OrderedDict`` (with the ``_metadata`` of
    module state dicts) are converted item by item; numpy scalars become Python scalars and numpy arrays
    become a marked dict holding their bytes. Anything else raises ``TypeError`` naming where it is.
    """
    return _to_safe(obj, "state")


def _to_safe(obj: Any, where: str) -> Any:
    if isinstance(obj, Tensor) or type(obj) in _PLAIN_TYPES:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.fields is not None:
            raise TypeError(f"{where}: numpy arrays of dtype {obj.dtype} cannot be stored in a checkpoint.")
        data = torch.from_numpy(np.frombuffer(obj.tobytes(), dtype=np.uint8).copy())
        return {_NDARRAY_KEY: obj.dtype.str, "shape": list(obj.shape), "data": data}
    if type(obj) in (list, tuple):
        return type(obj)(_to_safe(item, f"{where}[{i}]") for i, item in enumerate(obj))
    if type(obj) in (dict, OrderedDict):
        converted = type(obj)(
            (_to_safe(key, f"{where} (key {key!r})"), _to_safe(value, f"{where}[{key!r}]"))
            for key, value in obj.items()
        )
        if type(obj) is OrderedDict:
            # Module state dicts carry per-module versions in the attribute ``_metadata``.
            vars(converted).update(_to_safe(vars(obj), f"{where} (attributes)"))
        return converted
    raise TypeError(
        f"{where}: cannot store a {type(obj).__module__}.{type(obj).__qualname__} in a checkpoint; only "
        "tensors, numpy arrays and scalars, None, bool, int, float, complex, str, bytes, and lists, tuples "
        "and dicts of these are allowed (store an object's state_dict(), or an enum's value)."
    )


def from_safe(obj: Any) -> Any:
    """Undo :func:`to_safe`: numpy arrays come back (as writable copies); everything else is unchanged."""
    if type(obj) in (list, tuple):
        return type(obj)(from_safe(item) for item in obj)
    if type(obj) in (dict, OrderedDict):
        if _NDARRAY_KEY in obj:
            data = obj["data"].numpy().tobytes()
            return np.frombuffer(data, dtype=np.dtype(obj[_NDARRAY_KEY])).reshape(obj["shape"]).copy()
        converted = type(obj)((key, from_safe(value)) for key, value in obj.items())
        if type(obj) is OrderedDict:
            vars(converted).update(vars(obj))
        return converted
    return obj


def _looks_complete(path: Path) -> bool:
    """Whether ``path`` ends with a zip directory, as a fully written ``torch.save`` file does.

    Cheap (it reads the end of the file); catches truncated, empty and overwritten files, not bit flips.
    """
    return path.is_file() and zipfile.is_zipfile(path)


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds a checkpoint to resume from (``state.pt`` or its backup)."""
    directory = Path(directory)
    return (directory / STATE_FILE).exists() or (directory / BACKUP_FILE).exists()


def save_checkpoint(state: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``directory/state.pt``, keeping the previous one as ``state.backup.pt``.

    ``state`` goes through :func:`to_safe` first, so an object that could not be loaded back raises
    ``TypeError`` here, before any file changes. The steps, and what a crash (or power loss) right after
    each leaves on disk, with ``N`` the new state and ``N-1``, ``N-2`` the two previous saves:

    1. ``torch.save`` to a temporary file in ``directory``, then fsync it. Crash: ``state.pt`` = N-1,
       ``state.backup.pt`` = N-2, plus a temporary file that the next save deletes.
    2. ``os.replace(state.pt, state.backup.pt)``, skipped when there is no ``state.pt`` or it is
       incomplete (then the backup, the last good save, is kept). Crash: no ``state.pt``,
       ``state.backup.pt`` = N-1; :func:`load_checkpoint` warns and resumes from the backup.
    3. ``os.replace(temporary file, state.pt)``. Now ``state.pt`` = N, ``state.backup.pt`` = N-1.
    4. fsync ``directory``, making both renames durable. A power loss before it may persist either,
       both or none of the renames; as the new file was fsynced before them, every combination leaves
       complete files only, and at least one of N-1 and N.

    The new state is written before the old one is moved, so ``state.pt`` is missing only between two
    renames; at every moment one complete checkpoint exists. Only one process may save into
    ``directory`` (step 1 deletes temporary files that earlier, interrupted saves left).

    Disk full: the free space is checked first against the size of the previous checkpoint (the new one is
    about as large), and a write that runs out of space all the same raises :class:`DiskFullError` saying
    so, how much is needed and that the previous checkpoint is intact (it is: nothing was renamed).
    """
    safe = to_safe(state)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path, backup = directory / STATE_FILE, directory / BACKUP_FILE
    for stale in directory.glob(f".{STATE_FILE}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    previous = last_complete_checkpoint(directory)
    estimate = previous.stat().st_size if previous is not None else None
    if estimate is not None:
        check_free_space(path, estimate, "the checkpoint", intact=_intact_note(previous))
    tmp = temp_path_for(path)
    try:
        with open(tmp, "xb") as file:
            torch.save(safe, file)
            file.flush()
            os.fsync(file.fileno())
        if _looks_complete(path):
            os.replace(path, backup)
        elif path.exists():
            logger.warning("Checkpoint %s is incomplete; keeping %s as the backup.", path, backup)
        os.replace(tmp, path)
    except BaseException as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            needed = max(estimate or 0, written) or None
            raise disk_full_error(path, needed, "the checkpoint", intact=_intact_note(previous)) from e
        raise
    fsync_directory(directory)
    return path


def last_complete_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """``state.pt`` if it is complete, else ``state.backup.pt`` if it is, else None (a cheap check: see
    :func:`_looks_complete`)."""
    directory = Path(directory)
    for path in (directory / STATE_FILE, directory / BACKUP_FILE):
        if _looks_complete(path):
            return path
    return None


def _intact_note(previous: Path | None) -> str:
    if previous is None:
        return "no checkpoint was written yet"
    return f"the previous checkpoint, {previous}, is intact"


_REFUSALS = (
    # What weights-only loading says when it refuses a pickle, by torch version (2.3 to 2.13 at least); the
    # group is what it refused. Blocked modules (torch >= 2.6) are os, posix, nt, subprocess, sys, ...
    (
        r"unsupported GLOBAL (\S+) whose module \S+ is blocked",
        "it references {}, from a module that is never allowed",
    ),
    (
        r"Unsupported global: GLOBAL (\S+) was not an allowed global",
        "it references {}, " + _NOT_PLAIN,
    ),  # >= 2.4
    (r"Unsupported class (\S+)", "it references {}, " + _NOT_PLAIN),  # torch < 2.4
    (r"Trying to instantiate unsupported class ?(.*)", "it creates an object of {}"),
    (
        r"Can only create new object for nn.Parameter or classes allowlisted .* but got (.*)",
        "it creates an object of {}",
    ),
    (r"Trying to call reduce for unrecognized function (.*)", "it calls {}"),
    (r"Can only build Tensor, [Pp]arameter.* but got (.*)", "it builds an object of {}"),
    (r"Unsupported operand (\S+)", "it uses the pickle instruction {}, which is not allowed"),
    (r"(String is too long|unsupported persistent id)", "its pickle is malformed ({})"),
)


def _object_name(text: str) -> str:
    """``posix.system`` from ``<built-in function system>``, ``a.B`` from ``<class 'a.B'>``, ... ."""
    text = text.strip().rstrip(".")
    found = re.fullmatch(r"<class '([^']+)'>", text) or re.fullmatch(
        r"<(?:built-in )?function (\S+).*>", text
    )
    return found.group(1) if found else text or "an object"


def describe_refusal(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file (an ``UnpicklingError``), in one line ending with
    the assurance that nothing ran: weights-only loading stops at the first instruction it does not allow."""
    text = str(error)
    for pattern, template in _REFUSALS:
        found = re.search(pattern, text)
        if found:
            what = template.format(_object_name(found.group(1)))
            break
    else:
        detail = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = detail.group(1) if detail else (lines[-1] if lines else type(error).__name__)
        what = f"it holds something other than tensors and plain Python values ({reason})"
    return f"{what}; loading was refused for safety (weights-only loading) and none of its code was run"


def _load_state(path: Path, required_keys: Iterable[str], map_location: str | torch.device) -> dict[str, Any]:
    # One open file for the check and the load: a writer renaming another file over ``path`` meanwhile (a
    # live run saving) does not change what this reads, which is one complete checkpoint or the error.
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise _UnusableCheckpoint("the file is missing") from None
    except OSError as e:
        raise _UnusableCheckpoint(f"it cannot be opened ({e})") from None
    with file:
        if not zipfile.is_zipfile(file):
            raise _UnusableCheckpoint(
                f"the file ({os.fstat(file.fileno()).st_size} bytes) is not a complete torch.save archive "
                "(truncated, empty or overwritten)"
            )
        file.seek(0)
        try:
            state = torch.load(file, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise _UnusableCheckpoint(describe_refusal(e)) from None
        except Exception as e:  # torch reports corrupted archives with RuntimeError, OSError, EOFError, ...
            first_line = str(e).splitlines()[0] if str(e) else ""
            raise _UnusableCheckpoint(f"it cannot be read ({type(e).__name__}: {first_line})") from None
    if not isinstance(state, dict):
        raise _UnusableCheckpoint(f"it holds a {type(state).__name__}, not a dict")
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise _UnusableCheckpoint(f"it lacks the required entries {missing}")
    return state


def load_checkpoint(
    directory: str | os.PathLike[str],
    required_keys: Iterable[str] = (),
    map_location: str | torch.device = "cpu",
) -> tuple[dict[str, Any], Path]:
    """The training state saved in ``directory`` and the file it came from.

    Reads ``state.pt``; if it is missing, corrupted, refused by weights-only loading, or lacks one of
    ``required_keys``, logs a warning saying why and reads ``state.backup.pt`` (the previous save) instead.
    Tensors are loaded onto ``map_location``. Numpy arrays stored by :func:`to_safe` come back as arrays.

    Raises:
        CheckpointError: neither file can be used; the message gives both reasons.
    """
    directory = Path(directory)
    required_keys = list(required_keys)
    path, backup = directory / STATE_FILE, directory / BACKUP_FILE
    try:
        return from_safe(_load_state(path, required_keys, map_location)), path
    except _UnusableCheckpoint as e:
        reason = str(e)
    logger.warning("Cannot use %s: %s. Using the previous save, %s, instead.", path, reason, backup)
    try:
        return from_safe(_load_state(backup, required_keys, map_location)), backup
    except _UnusableCheckpoint as e:
        backup_reason = str(e)
    raise CheckpointError(
        f"No usable checkpoint in {directory}:\n"
        f"  {path}: {reason}\n"
        f"  {backup}: {backup_reason}\n"
        "This run cannot be resumed from this folder. Restore the folder from a copy if you have one, or "
        "start a new run (another run_dir). The copies of the agent weights kept every few epochs "
        "(agent_epoch_*.safetensors) are separate files and not affected."
    )


def rng_state() -> dict[str, Any]:
    """The states of python's, numpy's and torch's global generators (and CUDA's, when available).

    The result holds only checkpoint-safe values (see :func:`to_safe`); restore it with
    :func:`set_rng_state`.
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": to_safe(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global generators saved by :func:`rng_state`.

    CUDA generators are restored on the devices that both the saving and this process have; a warning
    says when the counts differ, as the random draws then cannot all be reproduced.
    """
    random.setstate(state["python"])
    np.random.set_state(from_safe(state["numpy"]))
    # Generator states must be CPU byte tensors, whatever map_location the checkpoint was loaded with.
    torch.set_rng_state(state["torch"].cpu())
    saved_cuda = state.get("cuda", [])
    num_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(saved_cuda) != num_devices:
        logger.warning(
            "The checkpoint has CUDA generator states for %d devices, this process sees %d: random draws "
            "on the GPU will differ from those of an uninterrupted run.",
            len(saved_cuda),
            num_devices,
        )
    for device, cuda_state in enumerate(saved_cuda[:num_devices]):
        torch.cuda.set_rng_state(cuda_state.cpu(), device)


@contextlib.contextmanager
def isolated_global_rng(seed: int) -> Iterator[None]:
    """The global generators (python's, numpy's, torch's on the CPU and every CUDA device) seeded from
    ``seed`` (:func:`~diffworld.utils.seeding.seed_everything`) for the block, then put back as they were.

    What the block draws from them is its own: the code after it draws what it would have drawn without
    the block, and the block draws the same whatever ran before it (a periodic test inside a run).
    """
    saved = rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """The state of a numpy generator, checkpoint-safe (its 128-bit integers survive weights-only loading)."""
    return to_safe(rng.bit_generator.state)


def set_generator_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Restore ``rng`` to a state from :func:`generator_state` (of a generator of the same kind)."""
    rng.bit_generator.state = from_safe(state)
