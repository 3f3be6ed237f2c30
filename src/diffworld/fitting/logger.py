"""Metrics of a run: one JSON object per line in ``metrics.jsonl``, TensorBoard scalars and, with
``logging.wandb=true``, Weights & Biases (``diffworld.fitting.wandb_logger``).

Keys follow ``component/train|test|diagnostic/name`` (``denoiser/train/loss_denoising``); every record carries
the epoch and the number of real environment steps, against which TensorBoard plots everything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.fitting.wandb_logger import WandbLogger
from diffworld.run.metrics_file import METRICS_FILE, read_metrics
from diffworld.utils.atomic import atomic_write_text
from diffworld.utils.video_encoding import encode_gif


class MetricsLogger:
    """Appends records to ``metrics.jsonl`` (flushed and fsynced: a record written survives a crash).

    ``keep_records``, for a resumed run, is the number of records its checkpoint had seen: later ones were
    logged by work the crash undid and that the resumed run redoes, so they are dropped and the file never
    holds a record twice. TensorBoard is told the same with ``purge_step``; ``wandb`` gets every record with
    its index, so that it can leave out those it already holds.
    """

    def __init__(
        self,
        run_dir: Path,
        tensorboard: bool,
        keep_records: int | None = None,
        purge_step: int | None = None,
        wandb: WandbLogger | None = None,
    ) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        records = read_metrics(run_dir)
        if keep_records is not None:
            records = records[:keep_records]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        self.num_records = len(records)
        self._file = self.path.open("a")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)
        self._wandb = wandb

    def log(self, metrics: dict[str, float], *, epoch: int, env_steps: int, **extra: Any) -> None:
        record = {"epoch": epoch, "env_steps": env_steps, **extra, **metrics}
        self.log_record(record, metrics, step=env_steps)

    def log_record(self, record: dict[str, Any], metrics: dict[str, float], *, step: int) -> None:
        """Append ``record`` (``metrics`` and what they are counted against) and plot ``metrics`` against
        ``step``: a run whose steps are not the environment's (an engine's, counted in updates)."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._wandb is not None:
            self._wandb.log(record, index=self.num_records)
        self.num_records += 1
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, global_step=step)
            self._writer.flush()

    @property
    def has_tensorboard(self) -> bool:
        return self._writer is not None

    def log_video(self, tag: str, frames: np.ndarray, *, env_steps: int, fps: float = 15) -> None:
        """Write (T, H, W, 3) uint8 ``frames`` to TensorBoard as an animated GIF (its Images tab plays it).

        ``SummaryWriter.add_video`` would need moviepy's ``moviepy.editor``, which moviepy 2 removed; the GIF
        is encoded with Pillow (a dependency of TensorBoard) and written as the same image summary. Does
        nothing without TensorBoard.
        """
        if self._writer is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        _, height, width, channels = frames.shape
        image = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=encode_gif(frames, fps)
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        self._writer._get_file_writer().add_summary(summary, global_step=env_steps)
        self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.close()
