"""The run folder: where a run's configuration, dataset, checkpoints, metrics and evaluation live."""

from __future__ import annotations

import datetime
from pathlib import Path

from diffworld.config.schema import Config
from diffworld.errors import UserError

CONFIG_FILE = "config.yaml"
EVAL_FILE = "eval.json"


class RunDirError(UserError, ValueError):
    """A run folder that cannot be used as asked (it exists without --resume, or is not a run)."""


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
    if path.exists() and any(path.iterdir()):
        raise RunDirError(
            f"Run folder {path} already exists. Resume it with 'diffworld train --resume {path}', "
            f"or choose another folder with run_dir=<path>."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_resumable(path: Path) -> Path:
    if not (path / CONFIG_FILE).is_file():
        raise RunDirError(f"{path} is not a diffworld run folder (no {CONFIG_FILE}); nothing to resume.")
    return path
