"""What every trainer of the project shares: the agent's (``agent/trainer.py``) and the engine's
(``engine/trainer.py``).

A run folder has one writer: the trainer takes the folder's lock before it reads or writes anything and
gives it back when it stops, however it stops. A resumed run goes on from its last complete checkpoint and
drops what was logged after it (the crash undid that work; the resumed run redoes it). The run's clock sums
its wall-clock seconds over resumes. A write that runs out of disk space ends the run with one line that
says which checkpoint is intact and the command that resumes from it.

What a checkpoint holds, and when it is written, is each product's: an epoch schedule with collection for
the agent, a count of updates shared by several processes for the engine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from diffworld.fitting.logger import MetricsLogger
from diffworld.fitting.wandb_logger import WandbLogger
from diffworld.run.checkpoint import has_checkpoint, last_complete_checkpoint, load_checkpoint
from diffworld.run.folder import checkpoint_dir, create_run_dir, lock_run_dir, unlock_run_dir
from diffworld.utils.atomic import DiskFullError, format_bytes, free_bytes, is_disk_full


class RunClock:
    """Wall-clock seconds of a run, summed over its resumes."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        """Seconds up to the last ``lap`` (what a checkpoint saves)."""
        self._since = time.monotonic()

    def elapsed(self) -> float:
        return self.seconds + time.monotonic() - self._since

    def lap(self) -> float:
        """The elapsed seconds, now made ``seconds`` (called when a checkpoint is saved)."""
        now = time.monotonic()
        self.seconds += now - self._since
        self._since = now
        return self.seconds


class CheckpointedTrainer:
    """The base of a trainer that owns ``run_dir`` (only where ``writes``: the other processes of a
    distributed run read its checkpoint but write nothing)."""

    checkpoint_keys: ClassVar[tuple[str, ...]]
    """What a checkpoint must hold to resume from it."""
    resume_command: ClassVar[str]
    """The command that resumes a run, followed by its folder (``diffworld train --resume``)."""

    def __init__(self, run_dir: Path, *, writes: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.writes = writes
        self.logger: MetricsLogger | None = None
        self.clock = RunClock()
        # Before anything reads or writes the folder: a second writer (a resume of a live run, the same
        # run_dir twice) is refused here, with the holder's name.
        if writes:
            lock_run_dir(self.run_dir)

    def open_checkpoint(
        self, resume: bool, map_location: str | torch.device = "cpu"
    ) -> dict[str, Any] | None:
        """The state of the run's last complete checkpoint when resuming, None when the run starts: then the
        folder is created, or (resumed before its first checkpoint) taken over to start over."""
        directory = checkpoint_dir(self.run_dir)
        if resume and has_checkpoint(directory):
            state, used = load_checkpoint(directory, self.checkpoint_keys, map_location=map_location)
            self.check_checkpoint(state, used)
            if self.writes:
                tqdm.write(f"Resuming from {used}")
            return state
        if self.writes:
            if resume:
                tqdm.write(f"{self.run_dir} was stopped before its first checkpoint: starting it over")
            else:
                create_run_dir(self.run_dir)
        return None

    def check_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        """Refuse (with a one-line error) a checkpoint that this run cannot resume from."""

    def open_logger(
        self,
        *,
        tensorboard: bool,
        resume: bool,
        resumed: bool,
        num_records: int,
        step: int,
        wandb: WandbLogger | None = None,
    ) -> MetricsLogger:
        """The run's metrics logger. Resuming, it keeps the ``num_records`` records that the checkpoint
        had seen (none when the run starts over) and TensorBoard drops its points after ``step``, where the
        checkpoint was saved: they were logged before it and are kept."""
        self.logger = MetricsLogger(
            self.run_dir,
            tensorboard=tensorboard,
            keep_records=num_records if resume else None,
            purge_step=(step + 1 if resumed else step) if resume else None,
            wandb=wandb,
        )
        return self.logger

    @contextlib.contextmanager
    def disk_full_is_resumable(self) -> Iterator[None]:
        """A write that runs out of space (a checkpoint, episodes, metrics, ...) ends the run with one line:
        what was being written, the space it needs, the last checkpoint (intact: checkpoints are replaced
        only once the new one is complete) and the command that resumes from it once space is freed."""
        try:
            yield
        except Exception as e:
            if not is_disk_full(e):
                raise
            if isinstance(e, DiskFullError):
                head, path = e.head, e.path
            else:
                path = Path(e.filename) if isinstance(e, OSError) and e.filename else self.run_dir
                free = free_bytes(self.run_dir)
                has = f" ({format_bytes(free)} free)" if free is not None else ""
                head = f"No space left on the device of {self.run_dir}{has} while writing {path}: {e}."
            last = last_complete_checkpoint(checkpoint_dir(self.run_dir))
            kept = f"The last checkpoint, {last}, is intact" if last else "No checkpoint was written yet"
            resume = f"{self.resume_command} {self.run_dir}"
            raise DiskFullError(
                f"{head} {kept}: free some space, then resume with '{resume}'.",
                path=path,
                needed=getattr(e, "needed", None),
                free=getattr(e, "free", None),
                head=head,
            ) from e

    def release(self) -> None:
        """Close the logger and give the folder's lock back (at the end of a run, or when it fails)."""
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        if self.writes:
            unlock_run_dir(self.run_dir)
