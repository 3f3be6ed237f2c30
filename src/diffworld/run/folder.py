"""The run folder: where a run's configuration, dataset, checkpoints, metrics and evaluation live."""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import time
from pathlib import Path

from diffworld.config.schema import Config
from diffworld.errors import UserError

CONFIG_FILE = "config.yaml"
EVAL_FILE = "eval.json"
LOCK_FILE = ".writer.lock"
"""Holds the run folder's writer lock; its text names the process that holds it."""

_PROBE_GRACE_SECONDS = 0.3

_held_locks: dict[str, int] = {}
"""Run folders (resolved paths) whose writer lock this process holds, with the lock file's descriptor."""


class RunDirError(UserError, ValueError):
    """A run folder that cannot be used as asked (it exists without --resume, or is not a run)."""


class LiveRunError(RunDirError):
    """A command would write into a run folder that another process is training."""


def default_run_dir(cfg: Config, now: datetime.datetime | None = None) -> Path:
    """``runs/<game>/<date>_<time>_s<seed>``."""
    now = now or datetime.datetime.now()
    return Path("runs") / cfg.game / f"{now:%Y-%m-%d_%H-%M-%S}_s{cfg.seed}"


def dataset_dir(run_dir: Path) -> Path:
    return run_dir / "dataset" / "train"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def create_run_dir(path: Path) -> Path:
    """Create a new run folder; never reuse one (that is what ``--resume`` is for)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run_dir {path} is a file, not a folder: choose another path with run_dir=<path>.")
    if path.exists() and any(p.name != LOCK_FILE for p in path.iterdir()):
        raise RunDirError(
            f"Run folder {path} already exists. Resume it with 'diffworld train --resume {path}', "
            f"or choose another folder with run_dir=<path>."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_resumable(path: Path) -> Path:
    if not path.is_dir():
        raise RunDirError(f"{path} is not a folder: name a run folder to resume.")
    if not (path / CONFIG_FILE).is_file():
        raise RunDirError(f"{path} is not a diffworld run folder (no {CONFIG_FILE}); nothing to resume.")
    return path


def lock_run_dir(path: Path) -> None:
    """Become the one writer of the run folder ``path`` (created if needed) for the rest of this process.

    The lock is ``flock`` on ``LOCK_FILE``: the kernel releases it when the process ends however it ends (a
    SIGKILLed run resumes without cleanup), and Linux maps it onto POSIX locks on NFS, the shared file system
    of a cluster. Taking it again in the process that holds it is a no-op, so a run resumed in the same
    process (tests, a sweep worker) goes on. Raises ``RunDirError`` naming the holder if another process
    has it.
    """
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run_dir {path} is a file, not a folder: choose another path with run_dir=<path>.")
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _held_locks:
        return
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    # A reader asking whether the run is live (is_run_dir_locked) holds a shared lock for microseconds: try
    # for a moment before concluding that another writer holds it.
    deadline = time.monotonic() + _PROBE_GRACE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.01)
                continue
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirError(
            f"Run folder {path} is being written by {holder}: one process writes a run folder. Wait for it "
            f"to end (or stop it), then resume with 'diffworld train --resume {path}'."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held_locks[key] = fd


def unlock_run_dir(path: Path) -> None:
    """Give up this process's writer lock on ``path`` (if held): another process may then write it."""
    fd = _held_locks.pop(str(path.resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor of the open file releases the flock


def run_dir_holder(path: Path) -> str:
    """Who holds (or last held) the writer lock of ``path``: ``process 123 on host``, from its lock file."""
    try:
        text = (path / LOCK_FILE).read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def live_run_containing(path: Path) -> Path | None:
    """The run folder that ``path`` is in (or is) if another process is writing it now, else None.

    Commands that only read a run (eval, play, video, wm-eval, report) call this before they write anything,
    so that nothing but its trainer writes into a live run folder.
    """
    path = Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        if (folder / LOCK_FILE).is_file() and str(folder.resolve()) not in _held_locks:
            return folder if is_run_dir_locked(folder) else None
    return None


def refuse_writing_into_live_run(path: Path, what: str, instead: str) -> None:
    """Raise :class:`LiveRunError` if ``path`` is in a run folder another process is writing.

    ``what``: what would be written (``the evaluation report``); ``instead``: how to write it elsewhere
    (``pass --out <file> outside it``).
    """
    run = live_run_containing(path)
    if run is not None:
        raise LiveRunError(
            f"{run} is a live run (being trained by {run_dir_holder(run)}): nothing but its trainer writes "
            f"into it, so {what} cannot go to {path}; {instead}."
        )


def is_run_dir_locked(path: Path) -> bool:
    """Whether some process (this one included) holds the writer lock of ``path`` now."""
    if str(path.resolve()) in _held_locks:
        return True
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
