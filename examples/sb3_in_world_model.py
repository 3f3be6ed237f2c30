"""Train a stable-baselines3 agent inside the world model of a diffworld run (no real game step).

Usage: python examples/sb3_in_world_model.py runs/Breakout/<run> [--timesteps 10000] [--out ppo_dream.zip]

Needs the ``examples`` extra (pip install 'diffworld[examples]'). The agent acts on the same 64x64 RGB frames
as the real game's; imagined episodes end when the run's termination model says so or after the run's
imagination horizon.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stable_baselines3 import PPO

from diffworld.agent.imagination_from_run import imagination_env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a run folder (or an agent folder with --dataset)")
    parser.add_argument("--dataset", type=Path, help="stored episodes to start from (default: the run's)")
    parser.add_argument("--timesteps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("ppo_dream.zip"))
    args = parser.parse_args()

    env = imagination_env(args.run_dir, seed=args.seed, dataset=args.dataset)
    model = PPO("CnnPolicy", env, seed=args.seed, verbose=1)
    model.learn(total_timesteps=args.timesteps)
    model.save(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
