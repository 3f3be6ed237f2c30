"""Runs that can be compared: the periodic tests and the epochs' diagnostics leave the training unchanged.

Every consumer of randomness in a run has a stream of its own (README, "Training"): the training streams
(segment samplers, collection, imagination, the denoiser's noise on torch's global generator) are never
drawn from by a test or by the learning diagnostics (``training.diagnostics``), so runs of one seed that
test on other schedules, or measure the diagnostics or not, train the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffworld.agent.trainer import Trainer
from diffworld.config import build_config
from diffworld.data import EpisodeDataset
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.folder import checkpoint_dir
from diffworld.run.metrics_file import read_metrics

# Test episodes that last: the test collector and the world model's test losses have steps to draw for.
ARGS = ["game=Catch", "preset=smoke", "seed=3", "collection.num_test_episodes=2"]


def _train(run_dir: Path, test_every: int, diagnostics: bool = True) -> None:
    cfg = build_config(
        [
            *ARGS,
            f"run_dir={run_dir}",
            f"collection.test_every_epochs={test_every}",
            f"training.diagnostics={diagnostics}",
        ]
    )
    Trainer(cfg, run_dir).run()


def _training_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record without its timings, test figures (which only the tested epochs have) and
    diagnostics."""
    return [
        {
            k: v
            for k, v in r.items()
            if not k.startswith("time/") and "/test/" not in k and "/diagnostic/" not in k
        }
        for r in read_metrics(run_dir)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("comparability")
    runs = {
        "every_1": root / "test_every_1",
        "every_5": root / "test_every_5",
        "off": root / "no_diagnostics",
    }
    _train(runs["every_1"], 1)
    _train(runs["every_5"], 5)
    _train(runs["off"], 5, diagnostics=False)
    return runs


def test_tests_do_not_change_the_training(runs: dict[str, Path]) -> None:
    every_epoch, every_5 = runs["every_1"], runs["every_5"]
    tested = [r for r in read_metrics(every_epoch) if "denoiser/test/loss_denoising" in r]
    assert len(tested) >= 3, "the run tested too rarely to show anything: lengthen it"
    _assert_same_training(every_epoch, every_5)


def test_diagnostics_do_not_change_the_training(runs: dict[str, Path]) -> None:
    measured, not_measured = runs["every_5"], runs["off"]
    diagnosed = [r for r in read_metrics(measured) if "actor_critic/diagnostic/grad_norm_actor" in r]
    assert len(diagnosed) >= 3, "the run measured too rarely to show anything: lengthen it"
    assert not any(
        "/diagnostic/" in k or k == "time/diagnostics_seconds" for r in read_metrics(not_measured) for k in r
    )
    _assert_same_training(measured, not_measured)


def _assert_same_training(run: Path, other: Path) -> None:
    # Bit-identical weights of all three models, and the same training metrics at every epoch.
    ours, _ = load_checkpoint(checkpoint_dir(run))
    theirs, _ = load_checkpoint(checkpoint_dir(other))
    assert ours["counters"]["phase"] == theirs["counters"]["phase"] == "done"
    for model in ("denoiser", "reward_model", "actor_critic"):
        keys = [k for k in ours["agent"] if k.startswith(f"{model}.")]
        assert keys and keys == [k for k in theirs["agent"] if k.startswith(f"{model}.")]
        for key in keys:
            assert torch.equal(ours["agent"][key], theirs["agent"][key]), key
    assert _training_metrics(run) == _training_metrics(other)

    # The training streams end where they would have without any test, and collect the same dataset.
    assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])
    assert ours["samplers"] == theirs["samplers"]
    for name in ("collector", "imagination"):
        assert torch.equal(ours["generators"][name], theirs["generators"][name]), name
    datasets = [EpisodeDataset.load(path / "dataset" / "train") for path in (run, other)]
    assert np.array_equal(datasets[0].lengths, datasets[1].lengths)
    assert np.array_equal(datasets[0].actions, datasets[1].actions)
    assert np.array_equal(datasets[0].frames, datasets[1].frames)
