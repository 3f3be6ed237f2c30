"""Runs that can be compared: the periodic tests leave the training that follows them unchanged.

Every consumer of randomness in a run has a stream of its own (README, "Training"): the training streams
(segment samplers, collection, imagination, the denoiser's noise on torch's global generator) are never
drawn from by a test, so runs of one seed that test on other schedules train the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffworld.config import build_config
from diffworld.data import EpisodeDataset
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.folder import checkpoint_dir
from diffworld.run.metrics_file import read_metrics
from diffworld.training.trainer import Trainer

# Test episodes that last: the test collector and the world model's test losses have steps to draw for.
ARGS = ["game=Catch", "preset=smoke", "seed=3", "collection.num_test_episodes=2"]


def _train(run_dir: Path, test_every: int) -> None:
    cfg = build_config([*ARGS, f"run_dir={run_dir}", f"collection.test_every_epochs={test_every}"])
    Trainer(cfg, run_dir).run()


def _training_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record without its timings and test figures (which only the tested epochs have)."""
    return [
        {k: v for k, v in r.items() if not k.startswith("time/") and "/test/" not in k}
        for r in read_metrics(run_dir)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("comparability")
    runs = {every: root / f"test_every_{every}" for every in (1, 5)}
    for every, run_dir in runs.items():
        _train(run_dir, every)
    return runs


def test_tests_do_not_change_the_training(runs: dict[int, Path]) -> None:
    every_epoch, every_5 = runs[1], runs[5]
    tested = [r for r in read_metrics(every_epoch) if "denoiser/test/loss_denoising" in r]
    assert len(tested) >= 3, "the run tested too rarely to show anything: lengthen it"

    # Bit-identical weights of all three models, and the same training metrics at every epoch.
    ours, _ = load_checkpoint(checkpoint_dir(every_epoch))
    theirs, _ = load_checkpoint(checkpoint_dir(every_5))
    assert ours["counters"]["phase"] == theirs["counters"]["phase"] == "done"
    for model in ("denoiser", "reward_model", "actor_critic"):
        keys = [k for k in ours["agent"] if k.startswith(f"{model}.")]
        assert keys and keys == [k for k in theirs["agent"] if k.startswith(f"{model}.")]
        for key in keys:
            assert torch.equal(ours["agent"][key], theirs["agent"][key]), key
    assert _training_metrics(every_epoch) == _training_metrics(every_5)

    # The training streams end where they would have without any test, and collect the same dataset.
    assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])
    assert ours["samplers"] == theirs["samplers"]
    for name in ("collector", "imagination"):
        assert torch.equal(ours["generators"][name], theirs["generators"][name]), name
    datasets = [EpisodeDataset.load(run / "dataset" / "train") for run in (every_epoch, every_5)]
    assert np.array_equal(datasets[0].lengths, datasets[1].lengths)
    assert np.array_equal(datasets[0].actions, datasets[1].actions)
    assert np.array_equal(datasets[0].frames, datasets[1].frames)
