"""Test episodes of a trained policy and the ``eval.json`` report (training and ``diffworld eval``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld import __version__
from diffworld.agent.collector import Collector
from diffworld.config.schema import Config
from diffworld.envs.from_config import make_envs
from diffworld.evaluation.scores import human_normalized_score
from diffworld.models.actor_critic import ActorCritic
from diffworld.utils.atomic import atomic_write_text
from diffworld.utils.seeding import derive_seed


def evaluation_report(
    cfg: Config,
    returns: list[float],
    lengths: list[int],
    *,
    epsilon: float,
    env_steps: int,
    train_seconds: float | None,
    eval_seconds: float,
    checkpoint_epoch: int | None,
) -> dict[str, Any]:
    """The content of ``eval.json``: episode returns, their mean and std, and the human-normalized score."""
    r = np.asarray(returns, dtype=np.float64)
    mean = float(r.mean()) if len(r) else float("nan")
    return {
        "game": cfg.game,
        "seed": cfg.seed,
        "preset": cfg.preset,
        "num_episodes": len(returns),
        "returns": [float(x) for x in returns],
        "lengths": [int(x) for x in lengths],
        "mean": mean,
        "std": float(r.std()) if len(r) else float("nan"),
        "hns": human_normalized_score(cfg.game, mean) if len(r) else None,
        "epsilon": epsilon,
        "env_steps": env_steps,
        "epoch": checkpoint_epoch,
        "train_wall_clock_seconds": train_seconds,
        "eval_wall_clock_seconds": eval_seconds,
        "diffworld_version": __version__,
    }


def write_eval_json(report: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def evaluate_policy(
    actor_critic: ActorCritic,
    cfg: Config,
    *,
    num_episodes: int,
    epsilon: float,
    device: torch.device,
    env_steps: int,
    train_seconds: float | None,
    checkpoint_epoch: int | None,
    num_envs: int | None = None,
) -> dict[str, Any]:
    """Play ``num_episodes`` test episodes (to game over) with the policy; return the ``eval.json`` report.

    Raises:
        ValueError: ``num_episodes`` < 0 (0 gives a report without episodes, for a run configured with no
            final episodes), ``epsilon`` outside [0, 1], ``num_envs`` < 1, or a policy with another number
            of actions than ``cfg.game``'s environment.
    """
    if num_episodes < 0:
        raise ValueError(f"the number of test episodes must be at least 0, got {num_episodes}")
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be within [0, 1], got {epsilon}")
    if num_envs is not None and num_envs < 1:
        raise ValueError(f"the number of environments must be at least 1, got {num_envs}")
    t0 = time.monotonic()
    envs = make_envs(cfg, num_envs or cfg.env.num_test_envs, "eval_env", life_loss_terminal=False)
    with envs:
        if envs.continuous != actor_critic.policy.continuous:
            kind = {False: "discrete", True: "continuous"}
            raise ValueError(
                f"the policy's actions are {kind[actor_critic.policy.continuous]}, {cfg.game}'s "
                f"{kind[envs.continuous]}"
            )
        if envs.num_actions != actor_critic.num_actions:
            raise ValueError(
                f"the policy has {actor_critic.num_actions} actions but {cfg.game} has {envs.num_actions}"
            )
        collector = Collector(
            envs,
            actor_critic,
            epsilon=epsilon,
            temperature=cfg.policy_temperature(),
            device=device,
            generator=torch.Generator(device).manual_seed(derive_seed(cfg.seed, "eval_policy")),
            dataset=None,
        )
        stats = collector.collect_episodes(num_episodes) if num_episodes > 0 else []
    return evaluation_report(
        cfg,
        [s.episode_return for s in stats],
        [s.length for s in stats],
        epsilon=epsilon,
        env_steps=env_steps,
        train_seconds=train_seconds,
        eval_seconds=time.monotonic() - t0,
        checkpoint_epoch=checkpoint_epoch,
    )
