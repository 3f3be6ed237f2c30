"""A run branched from another run's last checkpoint, with some settings changed from then on.

The controlled experiment of a learning study: two branches of one checkpoint share the world model, the
agent, the dataset, the optimizers and every random stream up to it, and differ only in what their
overrides change (the world model frozen with ``denoiser.training.steps_per_epoch=0``, imagination starts
drawn uniformly with ``actor_critic.training.sample_weights=[0.25,0.25,0.25,0.25]``, a longer budget with
``collection.total_env_steps=30000``, ...). ``diffworld train --branch <run> <overrides>`` makes one.

The new folder gets the source's configuration with the overrides applied, its last complete checkpoint,
its dataset and its metrics up to that checkpoint, and ``branch.json`` saying where it came from; the
trainer then resumes it as it resumes any run. The schedule is planned again for the new configuration:
the epochs that collect are those the real-step budget still funds (a finished run branched with a larger
``collection.total_env_steps`` goes on collecting).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

from diffworld.config import Config, ConfigError, load_config_file, save_config, with_overrides
from diffworld.config.loading import parse_overrides
from diffworld.fitting.optim import with_hyperparameters
from diffworld.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from diffworld.run.folder import (
    CONFIG_FILE,
    RunDirError,
    check_resumable,
    checkpoint_dir,
    create_run_dir,
    dataset_dir,
    default_run_dir,
    is_run_dir_locked,
    run_dir_holder,
)
from diffworld.run.metrics_file import METRICS_FILE
from diffworld.utils.atomic import atomic_write_text

BRANCH_FILE = "branch.json"

_FIXED_KEYS = {
    "game": "a branch plays its source's game",
    "preset": "a preset would change every setting it names; give the settings themselves",
    "training.model_free": "a model-free run has no world model to branch from",
}


def branch_config(source_cfg: Config, overrides: list[str]) -> Config:
    """``source_cfg`` with the ``key=value`` ``overrides`` applied (validated as a new run's)."""
    parsed = parse_overrides(overrides)
    for key, why in _FIXED_KEYS.items():
        if key in parsed:
            raise ConfigError(f"--branch cannot change {key!r}: {why}.")
    # The source's folder is never the branch's: run_dir is the override's, or a new default one.
    return with_overrides(dataclasses.replace(source_cfg, run_dir=None), overrides)


def replanned_counters(counters: dict[str, Any], collected_steps: int, cfg: Config) -> dict[str, Any]:
    """The checkpoint's counters with the schedule planned again for ``cfg``.

    Epochs that collect: those done so far plus as many as the real-step budget still funds
    (``collection.steps_per_epoch`` each); then ``training.num_final_epochs``. The phase is ``epochs`` while
    epochs remain, else ``final`` (the final evaluation, again for a finished source).
    """
    if counters["phase"] == "initial":
        raise RunDirError(
            "the source run is still in its initial collection: there is nothing to branch from yet; start "
            "a new run with the settings you want instead."
        )
    c = cfg.collection
    epoch = counters["epoch"]
    remaining = max(0, c.total_env_steps - collected_steps)
    num_epochs_collect = epoch + math.ceil(remaining / c.steps_per_epoch)
    num_epochs = num_epochs_collect + cfg.training.num_final_epochs
    phase = "epochs" if epoch < num_epochs else "final"
    return counters | {"num_epochs_collect": num_epochs_collect, "phase": phase}


def branch_run(source: Path, overrides: list[str]) -> tuple[Config, Path]:
    """Make a branch of ``source`` (see the module's docstring); its configuration and folder.

    The folder is ``run_dir`` from the overrides, or a new default one; it must not exist. The source is
    only read, and must not be live (its checkpoint and dataset would change while they are copied).
    """
    source = check_resumable(source)
    if is_run_dir_locked(source):
        raise RunDirError(
            f"{source} is being trained by {run_dir_holder(source)}: branch it once that process has stopped "
            "(its last checkpoint is what a branch starts from)."
        )
    source_cfg = load_config_file(source / CONFIG_FILE)
    if source_cfg.training.model_free:
        raise ConfigError(f"{source} is a model-free run: --branch needs a run with a world model.")
    cfg = branch_config(source_cfg, overrides)
    try:
        state, used = load_checkpoint(checkpoint_dir(source))
    except CheckpointError as e:
        raise RunDirError(f"{source} has no checkpoint to branch from: {str(e).splitlines()[0]}") from None
    collected = int(state["collector"]["num_steps_total"])
    state["counters"] = replanned_counters(state["counters"], collected, cfg)
    for name in state["optimizers"]:
        # Loading an optimizer's state restores its saved learning rate: the branch's must win.
        optimizer_cfg = getattr(cfg, name).optimizer
        with_hyperparameters(state["optimizers"][name], state["schedulers"][name], optimizer_cfg)

    run_dir = create_run_dir(Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg))
    shutil.copytree(dataset_dir(source), dataset_dir(run_dir))
    metrics = source / METRICS_FILE
    if metrics.is_file():
        lines = metrics.read_text().splitlines(keepends=True)[: state["counters"]["num_records"]]
        atomic_write_text(run_dir / METRICS_FILE, "".join(lines))
    save_config(cfg, run_dir / CONFIG_FILE)
    save_checkpoint(state, checkpoint_dir(run_dir))
    counters = state["counters"]
    record = {
        "source": str(source.resolve()),
        "checkpoint": str(used.resolve()),
        "epoch": counters["epoch"],
        "env_steps": collected,
        "overrides": overrides,
    }
    atomic_write_text(run_dir / BRANCH_FILE, json.dumps(record, indent=2) + "\n")
    return cfg, run_dir
