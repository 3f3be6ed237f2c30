"""Weights & Biases beside TensorBoard (``logging.wandb=true``, the ``wandb`` extra).

The same records as ``metrics.jsonl``, under the same names, with the run's configuration. W&B's step is
the record's index in ``metrics.jsonl``; charts plot against ``env_steps`` as TensorBoard does. The W&B run's
id is kept in the run folder (``wandb_run_id``), so a resumed run continues the same W&B run; the records it
logs again after the checkpoint have the indices they had before the crash, and the ones W&B already holds
are not sent twice. Without a network, ``WANDB_MODE=offline`` writes the run under ``WANDB_DIR`` (default:
the run folder) for ``wandb sync`` to upload later.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path
from typing import Any

from diffworld.errors import UserError
from diffworld.utils.atomic import atomic_write_text

WANDB_ID_FILE = "wandb_run_id"


class WandbMissingError(UserError, ImportError):
    pass


def require_wandb() -> None:
    """Raise the one-line ``WandbMissingError`` where the ``wandb`` package is not installed."""
    if importlib.util.find_spec("wandb") is None:
        raise WandbMissingError(
            "logging.wandb=true needs the wandb package: pip install 'diffworld[wandb]', "
            "or set logging.wandb=false."
        )


class WandbLogger:
    """One W&B run per run folder: started on the first call, continued by every resume.

    Args:
        run_dir: the run folder; holds ``wandb_run_id`` and, unless ``WANDB_DIR`` says otherwise, W&B's files.
        project: the W&B project.
        config: the run's configuration, as plain values.
    """

    def __init__(self, run_dir: Path, project: str, config: dict[str, Any]) -> None:
        require_wandb()
        import wandb

        id_file = run_dir / WANDB_ID_FILE
        if id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(8)
            atomic_write_text(id_file, run_id + "\n")
        self._run = wandb.init(
            project=project,
            id=run_id,
            resume="allow",
            name=run_dir.name,
            dir=os.environ.get("WANDB_DIR", str(run_dir)),
            config=config,
        )
        self._run.define_metric("*", step_metric="env_steps")
        # A resumed W&B run starts at the step after the last one it holds.
        self._first_new_step = self._run.step

    def log(self, record: dict[str, Any], index: int) -> None:
        """Log ``record`` (a line of ``metrics.jsonl``), the ``index``-th of the run."""
        if index >= self._first_new_step:
            self._run.log(record, step=index)

    def close(self) -> None:
        self._run.finish()
