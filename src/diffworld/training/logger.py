"""Metrics of a run: one JSON object per line in ``metrics.jsonl`` and TensorBoard scalars.

Keys follow ``component/train|test/name`` (``denoiser/train/loss_denoising``); every record carries the
epoch and the number of real environment steps, against which TensorBoard plots everything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from diffworld.utils.atomic import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run, in order."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash is the last one: everything before it is intact
    return records


class MetricsLogger:
    """Appends records to ``metrics.jsonl`` (flushed and fsynced: a record written survives a crash).

    ``resume_epoch`` drops the records of epochs after the checkpoint a resumed run restarts from, so the
    file never holds an epoch twice; TensorBoard is told the same with ``purge_step``.
    """

    def __init__(self, run_dir: Path, tensorboard: bool, resume_epoch: int | None, purge_step: int | None):
        self.path = Path(run_dir) / METRICS_FILE
        if resume_epoch is not None:
            kept = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= resume_epoch]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)

    def log(self, metrics: dict[str, float], *, epoch: int, env_steps: int, **extra: Any) -> None:
        record = {"epoch": epoch, "env_steps": env_steps, **extra, **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, global_step=env_steps)
            self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
