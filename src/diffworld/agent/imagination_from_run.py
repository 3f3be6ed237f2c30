"""A trained world model as an environment, in one line, from a run folder or an exported agent folder.

    env = imagination_env("runs/Breakout/<run>")          # gymnasium.Env: one imagined trajectory
    venv = imagination_vector_env("runs/Breakout/<run>", 8)  # Gymnasium vector env: 8 at once

The denoiser and the reward/termination model come from the folder (a run's last checkpoint, or the agent);
trajectories start from segments of real episodes (``diffworld.agent.imagination``): a run's own dataset, or
``dataset=``, a folder of stored episodes (an agent folder holds none). Episodes end when the termination
model says so, and are truncated after ``horizon`` steps (default: the run's ``imagination_horizon``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffworld.agent.imagination import ImaginationEnv, ImaginationVectorEnv, WorldModelEnv
from diffworld.agent.trained import load_trained_agent
from diffworld.data import EpisodeDataset, SegmentSampler
from diffworld.data.actions import ActionSpec
from diffworld.errors import UserError
from diffworld.run.folder import CONFIG_FILE, dataset_dir


def world_model_env(
    source: str | Path,
    num_envs: int = 1,
    *,
    horizon: int | None = None,
    seed: int = 0,
    dataset: str | Path | None = None,
    device: str = "auto",
) -> tuple[WorldModelEnv, int | ActionSpec]:
    """The batched torch environment of ``source``'s world model, and its game's number of actions (its
    action space for continuous actions).

    ``seed`` seeds the draws of starting segments and of the world model's noise.
    """
    source = Path(source)
    trained = load_trained_agent(source, device)
    if dataset is None:
        if not (source / CONFIG_FILE).is_file():
            raise UserError(
                f"{source} is an agent folder, which holds no episodes to start imagination from: "
                "pass dataset=<run folder>/dataset/train (or another folder of stored episodes)."
            )
        dataset = dataset_dir(source)
    size = trained.cfg.env.size
    agent = trained.agent
    episodes = EpisodeDataset.load(dataset, frame_shape=(size, size, 3), action_shape=agent.action_shape)
    if episodes.num_episodes == 0:
        raise UserError(f"{dataset} holds no episodes to start imagination from.")
    denoiser, reward_model = trained.agent.denoiser.eval(), trained.agent.reward_model.eval()
    sampler = SegmentSampler(
        episodes,
        num_envs,
        denoiser.cfg.num_cond_frames - 1,
        sample_weights=None,
        rng=np.random.default_rng(seed),
        device=trained.device,
    )
    env = WorldModelEnv(
        denoiser,
        reward_model,
        sampler,
        trained.cfg.denoiser.sampler,
        trained.cfg.actor_critic.imagination_horizon if horizon is None else horizon,
        torch.Generator(trained.device).manual_seed(seed),
    )
    return env, agent.action_spec if agent.continuous else trained.num_actions


def imagination_env(
    source: str | Path,
    *,
    horizon: int | None = None,
    seed: int = 0,
    dataset: str | Path | None = None,
    device: str = "auto",
) -> ImaginationEnv:
    """One imagined trajectory with the plain Gymnasium API (for stable-baselines3 and the like); the
    arguments are ``world_model_env``'s."""
    env, actions = world_model_env(source, 1, horizon=horizon, seed=seed, dataset=dataset, device=device)
    return ImaginationEnv(env, actions)


def imagination_vector_env(
    source: str | Path,
    num_envs: int,
    *,
    horizon: int | None = None,
    seed: int = 0,
    dataset: str | Path | None = None,
    device: str = "auto",
) -> ImaginationVectorEnv:
    """``num_envs`` imagined trajectories stepped at once, with Gymnasium's vector API; the arguments are
    ``world_model_env``'s."""
    env, actions = world_model_env(
        source, num_envs, horizon=horizon, seed=seed, dataset=dataset, device=device
    )
    return ImaginationVectorEnv(env, actions)
