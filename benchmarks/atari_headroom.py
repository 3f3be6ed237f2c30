"""Which Atari 100k games leave room to beat random play with the simplest policy? A cheap first screen.

    python benchmarks/atari_headroom.py [--games Boxing Pong] [--episodes 3] [--max-steps 3000]
        [--json out.json]

For each game, on the training protocol's environment (frame skip 4, max-pooling, no-op reset, no sticky
actions, whole games: no life-loss ends), it plays ``--episodes`` episodes with uniform random actions and
one episode with each action repeated, each cut at ``--max-steps`` agent steps. It reports, per policy, the
mean return and the share of steps with a nonzero reward (what the reward model has to learn from).

A game suits a small-budget agent when (1) random play shows rewards often enough for the reward model to
learn them from a random-policy dataset and (2) some repeated action scores far above random play, so that a
policy that has learnt little more than an action preference already beats random by a wide margin. The
second screen (``benchmarks/atari_reward_screen.py``) then asks whether the world model shows those rewards.
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.envs.make import make_env
from diffworld.games import ATARI100K_GAMES


def play(game: str, action: int | None, seed: int, max_steps: int) -> dict[str, float | int]:
    """One episode cut at ``max_steps``: ``action`` repeated, or uniform random actions when it is None."""
    env = make_env(game, seed)
    rng = np.random.default_rng(seed)
    env.reset()
    num_actions = len(env.action_meanings)
    total, events, steps, ended = 0.0, 0, 0, False
    while steps < max_steps:
        a = int(rng.integers(num_actions)) if action is None else action
        _, reward, terminated, truncated, _ = env.step(a)
        total += reward
        events += reward != 0
        steps += 1
        if terminated or truncated:
            ended = True
            break
    env.close()
    return {"return": total, "steps": steps, "reward_steps": events, "ended": int(ended)}


def screen_game(args: tuple[str, int, int]) -> dict[str, Any]:
    game, episodes, max_steps = args
    start = time.perf_counter()
    env = make_env(game)
    meanings = env.action_meanings
    env.close()
    random = [play(game, None, seed, max_steps) for seed in range(episodes)]
    constant = {meanings[a]: play(game, a, 100 + a, max_steps) for a in range(len(meanings))}
    best = max(constant, key=lambda name: constant[name]["return"])
    random_return = float(np.mean([r["return"] for r in random]))
    return {
        "game": game,
        "num_actions": len(meanings),
        "random_mean_return": random_return,
        "random_returns": [r["return"] for r in random],
        "random_reward_step_rate": sum(r["reward_steps"] for r in random) / sum(r["steps"] for r in random),
        "random_mean_steps": float(np.mean([r["steps"] for r in random])),
        "best_constant_action": best,
        "best_constant_return": constant[best]["return"],
        "best_constant_gain": constant[best]["return"] - random_return,
        "constant": constant,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--games", nargs="+", default=list(ATARI100K_GAMES))
    parser.add_argument("--episodes", type=int, default=3, help="random-policy episodes per game")
    parser.add_argument("--max-steps", type=int, default=3000, help="agent steps at most per episode")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with Pool(args.processes) as pool:
        rows = pool.map(screen_game, [(g, args.episodes, args.max_steps) for g in args.games], chunksize=1)
    print(f"{'game':16s} {'random':>9s} {'rew/step':>8s} {'best repeated action':>22s} {'return':>9s}")
    for row in sorted(rows, key=lambda r: -r["random_reward_step_rate"]):
        print(
            f"{row['game']:16s} {row['random_mean_return']:9.1f} {row['random_reward_step_rate']:8.3f} "
            f"{row['best_constant_action']:>22s} {row['best_constant_return']:9.1f}"
        )
    if args.json:
        settings = {"episodes": args.episodes, "max_steps": args.max_steps}
        args.json.write_text(json.dumps({"settings": settings, "games": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
