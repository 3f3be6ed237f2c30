"""Throughput of the Atari 100k environments: agent steps per second with random actions.

    python benchmarks/env_throughput.py [--games Breakout Boxing] [--num-envs 1 8] [--json out.json]

Steps are agent steps summed over the parallel environments (one agent step = 4 emulated frames). Life-loss
terminal mode is on, as in training collection.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from diffworld.envs import AtariEnvs


def measure(game: str, num_envs: int, steps: int, warmup: int, seed: int) -> dict[str, float | int | str]:
    """Agent steps/s of ``num_envs`` envs over ``steps`` agent steps, after ``warmup`` agent steps."""
    rng = np.random.default_rng(seed)
    with AtariEnvs(game, num_envs, seed=seed, life_loss_terminal=True) as envs:
        envs.reset()

        def run(agent_steps: int) -> int:
            vector_steps = max(1, agent_steps // num_envs)
            for _ in range(vector_steps):
                envs.step(rng.integers(envs.num_actions, size=num_envs))
            return vector_steps * num_envs

        run(warmup)  # process start-up, first resets, caches
        start = time.perf_counter()
        done_steps = run(steps)
        elapsed = time.perf_counter() - start
    return {
        "game": game,
        "num_envs": num_envs,
        "agent_steps": done_steps,
        "seconds": elapsed,
        "steps_per_s": done_steps / elapsed,
        "frames_per_s": 4 * done_steps / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--games", nargs="+", default=["Breakout", "Boxing"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--steps", type=int, default=4000, help="timed agent steps per configuration")
    parser.add_argument("--warmup", type=int, default=400, help="untimed agent steps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results = []
    for game in args.games:
        for num_envs in args.num_envs:
            result = measure(game, num_envs, args.steps, args.warmup, args.seed)
            results.append(result)
            print(
                f"{game:>10}  envs={num_envs:<3} {result['steps_per_s']:8.0f} steps/s"
                f"  ({result['frames_per_s']:.0f} frames/s, {result['agent_steps']} steps)"
            )
    if args.json is not None:
        machine = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
