"""Does the world model show a game's rewards after a fixed budget? The second screen for the CPU preset.

    python benchmarks/atari_reward_screen.py --games Asterix DemonAttack [--preset quick] [--out DIR]
        [--json out.json] [overrides ...]

The actor-critic learns only from the rewards the reward model reads on the denoiser's frames, so a game
suits a small budget when, after the preset's first epoch, predicted frames already show the rewarded
events. For each game this runs the real pipeline, ``diffworld train``, with the preset's initial
collection (uniform random policy) and the preset's first-epoch updates of the denoiser and the reward
model, no actor-critic update, then one test (``--test-episodes`` episodes of the untrained, uniform
policy) and stops. The figures come from that test (``diffworld.agent.reward_recall``):

- ``denoiser/test/reward_recall``: share of the test episodes' rewards whose sign the reward model gets right
  when it reads the denoiser's one-step prediction (what imagination gives the actor-critic);
- ``reward_model/test/reward_recall``: the same read on the real next frames;
- the false-positive rates on as many zero-reward steps, and the models' test losses.

Games run two at a time, one thread each (``OMP_NUM_THREADS=1``), so two finish in the time of one.
Every game sees the same settings; the random-policy datasets differ only by the game.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from diffworld.data import EpisodeDataset

KEYS = (
    "denoiser/test/reward_recall",
    "reward_model/test/reward_recall",
    "denoiser/test/reward_false_positive_rate",
    "reward_model/test/reward_false_positive_rate",
    "denoiser/test/loss_denoising",
    "reward_model/test/loss_rew",
    "reward_model/test/acc_rew",
    "collection/test/return_mean",
    "collection/test/length_mean",
    "time/denoiser_seconds",
    "time/reward_model_seconds",
    "time/epoch_seconds",
)


def screen_overrides(preset: str, initial_steps: int, test_episodes: int) -> list[str]:
    """One epoch after the initial collection: world-model updates only, then one test, no final episodes."""
    return [
        f"preset={preset}",
        f"collection.initial_min_steps={initial_steps}",
        f"collection.initial_max_steps={initial_steps}",
        f"collection.total_env_steps={initial_steps}",
        "collection.test_every_epochs=1",
        f"collection.num_test_episodes={test_episodes}",
        "collection.num_final_episodes=0",
        "training.num_final_epochs=1",
        "actor_critic.training.steps_first_epoch=0",
        "logging.video_steps=0",
    ]


def screen_game(game: str, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = args.out / game
    seconds = None
    if not args.read_only:
        overrides = screen_overrides(args.preset, args.initial_steps, args.test_episodes)
        command = [sys.executable, "-m", "diffworld", "train", f"game={game}", f"seed={args.seed}"]
        command += [*overrides, *args.overrides, f"run_dir={run_dir}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        with (args.out / f"{game}.log").open("w") as log:
            done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            return {"game": game, "error": f"exit code {done.returncode}, see {args.out / game}.log"}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tested = [r for r in records if "denoiser/test/reward_recall" in r]
    if not tested:
        return {"game": game, "error": "no test record in metrics.jsonl"}
    rewards = EpisodeDataset.load(run_dir / "dataset" / "train").rewards
    return {
        "game": game,
        "seconds": seconds,
        "dataset_steps": len(rewards),
        "dataset_reward_rate": float((rewards != 0).mean()),
        **{k: tested[-1].get(k) for k in KEYS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--games", nargs="+", required=True)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--initial-steps", type=int, default=5_000)
    parser.add_argument("--test-episodes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/reward_screen"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--read-only", action="store_true", help="only read the figures of runs in --out")
    parser.add_argument("overrides", nargs="*", help="more configuration, as for diffworld train")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda g: screen_game(g, args), args.games))
    for row in rows:
        print(json.dumps(row))
    if args.json:
        settings = {
            "preset": args.preset,
            "initial_steps": args.initial_steps,
            "test_episodes": args.test_episodes,
            "seed": args.seed,
            "overrides": args.overrides,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "games": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
