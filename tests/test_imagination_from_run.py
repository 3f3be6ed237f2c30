"""The world model of a run folder as a Gymnasium environment in one line, and a stable-baselines3 agent
training in it (``examples/sb3_in_world_model.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from diffworld.agent import export_agent
from diffworld.agent.imagination_from_run import imagination_env, imagination_vector_env
from diffworld.agent.trainer import Trainer
from diffworld.config import build_config
from diffworld.errors import UserError
from diffworld.run.folder import dataset_dir, unlock_run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run of Catch at its first checkpoint (untrained models) with 100 collected steps."""
    path = tmp_path_factory.mktemp("imagination") / "run"
    trainer = Trainer(build_config(["game=Catch", "preset=smoke", f"run_dir={path}"]), path)
    trainer.collector.collect_steps(100)
    export_agent(trainer.agent, trainer.cfg, trainer.num_actions, path.parent / "agent")
    trainer.logger.close()
    trainer.train_envs.close()
    trainer.test_envs.close()
    unlock_run_dir(path)
    return path


def test_one_line_gives_a_checked_gymnasium_env(run_dir: Path) -> None:
    env = imagination_env(run_dir, device="cpu", horizon=5)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert reward in (-1.0, 0.0, 1.0)
        steps, done = steps + 1, terminated or truncated
    assert steps <= 5


def test_vector_env_steps_trajectories_at_once(run_dir: Path) -> None:
    venv = imagination_vector_env(run_dir, 3, device="cpu")
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3)
    obs, reward, terminated, truncated, _ = venv.step(venv.action_space.sample())
    assert obs.shape == (3, 64, 64, 3) and reward.shape == terminated.shape == truncated.shape == (3,)


def test_agent_folder_needs_episodes_to_start_from(run_dir: Path) -> None:
    agent = run_dir.parent / "agent"
    with pytest.raises(UserError, match="dataset="):
        imagination_env(agent, device="cpu")
    env = imagination_env(agent, device="cpu", dataset=dataset_dir(run_dir))
    assert env.reset(seed=0)[0].shape == (64, 64, 3)


def test_stable_baselines3_ppo_trains_in_the_world_model(run_dir: Path) -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    env = imagination_env(run_dir, device="cpu", seed=0)
    model = sb3.PPO("CnnPolicy", env, n_steps=16, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=32)
    assert model.num_timesteps == 32
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(int(action))
