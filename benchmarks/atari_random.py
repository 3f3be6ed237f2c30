"""An Atari game under the uniform random policy, through the final evaluation's protocol, and the 1 % bound.

    python benchmarks/atari_random.py GAME [--episodes 200] [--preset quick] [--json out.json]

The returns are those of ``evaluate_policy`` (the final evaluation's code: whole games to game over, the test
environments seeded as in a run, the test epsilon) with the untrained agent of ``--preset``: its policy head
is zero-initialised, so it plays the uniform random policy. That is the protocol a trained run's
``eval.json`` comes from, so the two are comparable.

The bound: a run's final score is the mean of n = ``collection.num_final_episodes`` episode returns. The law
of that mean under random play is estimated by resampling n returns with replacement from the measured ones
(``--monte-carlo`` means); the bound is the (1 - alpha) quantile of those means, so random play's final mean
exceeds it with probability about alpha. A normal-approximation bound (mean + z * std / sqrt(n)) is given
beside it; the reported bound is the larger of the two. Both take the measured returns as the true law: with
a few hundred episodes, the error of that is small next to the margin a learning agent shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.agent import Agent
from diffworld.agent.evaluate import evaluate_policy
from diffworld.config import build_config
from diffworld.envs.make import game_num_actions
from diffworld.evaluation.scores import human_normalized_score

Z_99 = 2.3263
"""Standard normal 99 % quantile."""


def protocol_returns(game: str, preset: str, num_episodes: int, seed: int, num_envs: int) -> list[float]:
    """Returns of ``num_episodes`` final-evaluation episodes of the untrained agent of ``preset`` (also the
    protocol view of ``catch_random.py``)."""
    cfg = build_config([f"game={game}", f"preset={preset}", f"seed={seed}"])
    torch.manual_seed(seed)
    agent = Agent.build(cfg, game_num_actions(game))
    head = agent.actor_critic.actor
    if float(head.weight.detach().abs().sum() + head.bias.detach().abs().sum()) != 0.0:
        raise RuntimeError("the untrained policy head must be zero (the uniform policy)")
    report = evaluate_policy(
        agent.actor_critic,
        cfg,
        num_episodes=num_episodes,
        epsilon=cfg.collection.test_epsilon,
        device=torch.device("cpu"),
        env_steps=0,
        train_seconds=None,
        checkpoint_epoch=None,
        num_envs=num_envs,
    )
    return [float(r) for r in report["returns"]]


def random_bound(returns: np.ndarray, n: int, alpha: float, num_means: int, seed: int) -> dict[str, float]:
    """The (1 - alpha) quantile of n-episode means resampled from ``returns``, and the normal bound."""
    rng = np.random.default_rng(seed)
    means = rng.choice(returns, size=(num_means, n)).mean(axis=1)
    resampled = float(np.quantile(means, 1 - alpha, method="higher"))
    normal = float(returns.mean() + Z_99 * returns.std(ddof=1) / np.sqrt(n))
    return {"resampled": resampled, "normal": normal, "value": max(resampled, normal)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("game")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--monte-carlo", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.alpha != 0.01:
        parser.error("the normal bound uses the 99 % quantile: --alpha must be 0.01")

    t0 = time.perf_counter()
    returns = protocol_returns(args.game, args.preset, args.episodes, args.seed, args.num_envs)
    a = np.asarray(returns)
    n = build_config([f"game={args.game}", f"preset={args.preset}"]).collection.num_final_episodes
    bound = random_bound(a, n, args.alpha, args.monte_carlo, args.seed)
    result: dict[str, Any] = {
        "what": (
            f"{args.game}, uniform random policy through evaluate_policy "
            f"(untrained preset={args.preset} agent)"
        ),
        "num_episodes": len(returns),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)),
        "min": float(a.min()),
        "max": float(a.max()),
        "hns_of_mean": human_normalized_score(args.game, float(a.mean())),
        "returns": returns,
        "bound": {"alpha": args.alpha, "n_episodes": n, **bound},
        "seconds": time.perf_counter() - t0,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    text = json.dumps(result, indent=1)
    print({k: v for k, v in result.items() if k != "returns"})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
