"""``train`` on continuous-control games, end to end in seconds at tiny sizes: CatchContinuous (always), a
DeepMind Control task (with dm_control) and a Gymnasium Box-action environment from pixels (with pygame);
the run folder, its float action vectors, the exported agent, a resume of the finished run, the model-free
switch. The learning test of continuous control (issue 29, point 3) will run CatchContinuous the same way at
the ``catch_continuous`` preset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffworld.agent.policy import load_agent_policy
from diffworld.agent.trained import load_trained_agent
from diffworld.agent.trainer import Trainer
from diffworld.config import build_config
from diffworld.data import EpisodeDataset
from diffworld.data.actions import box_spec
from diffworld.data.folder_store import EngineDataset
from diffworld.engine.convert.from_run import convert_run
from diffworld.run.checkpoint import STATE_FILE, CheckpointError
from diffworld.run.folder import checkpoint_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [
    "preset=smoke",
    "env.size=16",
    "collection.steps_per_epoch=10",
    "collection.initial_min_steps=20",
    "collection.initial_max_steps=20",
    "collection.total_env_steps=40",
    "collection.num_test_episodes=1",
    "collection.num_final_episodes=1",
    "collection.test_every_epochs=1",
    "training.num_final_epochs=1",
    "env.max_frames_per_episode=40",
    "logging.tensorboard=false",
    "denoiser.training.batch_size=2",
    "reward_model.training.batch_size=2",
    "actor_critic.training.batch_size=2",
]


def train(run_dir: Path, game: str, *extra: str) -> dict[str, Any] | None:
    cfg = build_config([f"game={game}", f"run_dir={run_dir}", *TINY, *extra])
    return Trainer(cfg, run_dir).run()


def check_run(run_dir: Path, game: str, dim: int, *extra: str) -> None:
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["game"] == game and report["num_episodes"] == 1 and np.isfinite(report["mean"])
    info = json.loads((run_dir / "agent" / "agent.json").read_text())
    assert info["num_actions"] == dim and len(info["action_space"]["components"]) == dim
    data = EpisodeDataset.load(run_dir / "dataset" / "train", frame_shape=(16, 16, 3), action_shape=(dim,))
    assert data.num_steps == 40 and data.actions.dtype == np.float32
    assert bool((np.abs(data.actions) <= 1).all()) and len(np.unique(data.actions)) > 10
    # Resuming the finished run loads its dataset, collector and envs, and has nothing left to do.
    cfg = build_config([f"game={game}", f"run_dir={run_dir}", *TINY, *extra])
    assert Trainer(cfg, run_dir, resume=True).run() is None


def test_train_catch_continuous(tmp_path: Path) -> None:
    assert train(tmp_path / "run", "CatchContinuous") is not None
    check_run(tmp_path / "run", "CatchContinuous", 1)
    # A checkpoint whose action space was edited is refused in one line, as an edited agent folder is.
    path = checkpoint_dir(tmp_path / "run") / STATE_FILE
    state = torch.load(path, weights_only=True)
    state["action_space"] = box_spec(2).to_json()
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"action_space \(.*\) is not 1 continuous components") as info:
        load_trained_agent(tmp_path / "run", "cpu")
    assert "\n" not in str(info.value)


def test_the_engine_takes_a_continuous_run(tmp_path: Path) -> None:
    """The bridge to the engine: a continuous run's dataset converts to one continuous component within
    [-1, 1] per action component, and its agent acts with vectors (an engine recording's policy)."""
    assert train(tmp_path / "run", "CatchContinuous") is not None
    data = EngineDataset(convert_run(tmp_path / "run", tmp_path / "engine_data", test_fraction=0))
    assert data.spec == box_spec(1)
    stored = EpisodeDataset.load(
        tmp_path / "run" / "dataset" / "train", frame_shape=(16, 16, 3), action_shape=(1,)
    )
    first = stored.get_episode(0).act
    np.testing.assert_array_equal(data.actions(0)[:-1], first)
    policy = load_agent_policy(tmp_path / "run", "cpu", seed=0)
    assert policy.env.action_repeat == 2
    action = policy.act(np.zeros((16, 16, 3), np.uint8))
    assert isinstance(action, np.ndarray) and action.shape == (1,) and action.dtype == np.float32
    assert bool((np.abs(action) <= 1).all())


def test_train_catch_continuous_model_free(tmp_path: Path) -> None:
    report = train(tmp_path / "run", "CatchContinuous", "training.model_free=true")
    assert report is not None and report["env_steps"] == 40


def test_train_catch_continuous_model_free_with_reward_values(tmp_path: Path) -> None:
    extra = (
        "training.model_free=true",
        "reward_model.reward_kind=value",
        "actor_critic.return_normalization=percentile",
    )
    report = train(tmp_path / "run", "CatchContinuous", *extra)
    assert report is not None and report["env_steps"] == 40
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "actor_critic/train/reward_mean" in metrics and "actor_critic/train/return_scale" in metrics


@pytest.mark.skipif(importlib.util.find_spec("dm_control") is None, reason="dm_control is not installed")
def test_train_dmc_cartpole_swingup(tmp_path: Path) -> None:
    # The dmc preset's dense rewards: the reward model regresses them (reward_kind=value), and the advantages
    # are scaled by the returns' running percentiles (kept in the checkpoint that the resume loads).
    value = ("reward_model.reward_kind=value", "actor_critic.return_normalization=percentile")
    assert train(tmp_path / "run", "dmc:cartpole-swingup", *value) is not None
    check_run(tmp_path / "run", "dmc:cartpole-swingup", 1, *value)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    for key in (
        "reward_model/train/rew_abs_error",
        "actor_critic/train/reward_mean",
        "actor_critic/train/return_scale",
        "actor_critic/diagnostic/reward_mean_recent",  # the diagnostics' returns take the values too
        "reward_model/test/reward_abs_error",
        "reward_model/diagnostic/reward_abs_error_recent",
    ):
        assert key in metrics, key
    assert "reward_model/train/acc_rew" not in metrics and "reward_model/test/reward_recall" not in metrics


@pytest.mark.skipif(importlib.util.find_spec("pygame") is None, reason="classic-control renders need pygame")
def test_train_gym_pendulum_from_pixels(tmp_path: Path) -> None:
    assert train(tmp_path / "run", "gym:Pendulum-v1") is not None
    check_run(tmp_path / "run", "gym:Pendulum-v1", 1)
