"""collection.test_max_frames_per_episode caps the periodic test's episodes, never the final evaluation's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffworld.agent.evaluate import evaluate_policy
from diffworld.agent.trainer import Trainer
from diffworld.config import ConfigError, build_config
from diffworld.run.folder import unlock_run_dir


def test_the_cap_applies_to_the_periodic_test_only(tmp_path: Path) -> None:
    cfg = build_config(["game=Catch", "preset=smoke", "collection.test_max_frames_per_episode=8"])
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        stats = trainer.test_collector.collect_episodes(3)
        # Catch counts frame_skip frames per step: 8 frames are 8 // frame_skip steps, then truncation.
        assert [(s.length, s.truncated) for s in stats] == [(8 // cfg.env.frame_skip, True)] * 3
        report = evaluate_policy(
            trainer.agent.actor_critic,
            cfg,
            num_episodes=3,
            epsilon=0.0,
            device=torch.device("cpu"),
            env_steps=0,
            train_seconds=None,
            checkpoint_epoch=None,
        )
        assert min(report["lengths"]) > 8 // cfg.env.frame_skip
    finally:
        trainer.logger.close()
        trainer.train_envs.close()
        trainer.test_envs.close()
        unlock_run_dir(tmp_path / "run")


@pytest.mark.parametrize("cap", ["0", "1000000"])
def test_a_cap_outside_frame_skip_to_the_env_cap_is_refused(cap: str) -> None:
    with pytest.raises(ConfigError, match="test_max_frames_per_episode"):
        build_config(["game=Catch", "preset=smoke", f"collection.test_max_frames_per_episode={cap}"])
