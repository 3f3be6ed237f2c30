"""Does a Catch run's world model let an agent learn? Scripted policies played in its imagination.

    python benchmarks/catch_world_model.py RUN_DIR [--batch 32] [--steps 40] [--seed 0] [--json out.json]

Catch's rules are known, so the world model can be checked without the agent. Each imagined frame is read
back into the ball's cell and the paddle's column (the brightest red-and-green cell above the paddle's row,
the most blue cell of its row), and three scripted policies act on what they read:

- ``tracker`` moves the paddle toward the ball's column: in the real game it catches every ball it can
  reach, so in a faithful imagination its mean reward per step is well above the others';
- ``random`` picks uniformly (the real game: one catch in 8);
- ``still`` never moves.

Printed for each: the fraction of imagined steps with a reward of each sign (the reward model's reading),
the mean reward per step, and how often the paddle moved as the action said (the denoiser's obedience to
actions). The reward model is also scored on real segments of the run's dataset: its recall of each reward
sign and its termination accuracy. An imagination in which the tracker earns no more than ``random``, or the
paddle ignores the actions, leaves the actor-critic nothing to learn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.agent.imagination import WorldModelEnv
from diffworld.agent.trained import load_trained_agent
from diffworld.config.loading import reward_model_seq_length
from diffworld.data import EpisodeDataset, SegmentSampler
from diffworld.envs.catch import GRID
from diffworld.run.folder import dataset_dir

MOVES = np.array([0, 1, -1])
"""Column change of NOOP, RIGHT, LEFT."""


def read_frames(obs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, H, W) frames in [-1, 1] -> the lowest ball's column (-1 if none) and the paddle's column."""
    pixels = ((obs.float() + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    b, size = len(pixels), pixels.shape[1]
    cell = size // GRID
    cells = pixels.reshape(b, GRID, cell, GRID, cell, 3).mean(axis=(2, 4))  # (B, row, col, RGB)
    ball = (cells[..., 0] > 127) & (cells[..., 1] > 127)  # red and green high: the ball
    ball_col = np.full(b, -1)
    for i in range(b):
        rows, cols = np.nonzero(ball[i, : GRID - 1])
        if len(rows):
            ball_col[i] = cols[np.argmax(rows)]
    paddle_row = pixels[:, size - cell // 2 :].reshape(b, cell // 2, GRID, cell, 3).mean(axis=(1, 3))
    return ball_col, paddle_row[..., 2].argmax(axis=1)


def play(env: WorldModelEnv, policy: str, steps: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    s = env.reset()
    rewards, obeyed = [], []
    for _ in range(steps):
        ball, paddle = read_frames(s.obs)
        if policy == "tracker":
            act = np.where((ball < 0) | (ball == paddle), 0, np.where(ball > paddle, 1, 2))
        elif policy == "random":
            act = rng.integers(3, size=len(ball))
        else:
            act = np.zeros(len(ball), dtype=np.int64)
        s = env.step(torch.from_numpy(act))
        _, paddle_next = read_frames(s.final_obs)
        obeyed.append(paddle_next == np.clip(paddle + MOVES[act], 0, GRID - 1))
        rewards.append(s.rew.numpy())
    r = np.stack(rewards)
    return {
        "positive_rate": float((r > 0).mean()),
        "negative_rate": float((r < 0).mean()),
        "mean_reward_per_step": float(r.mean()),
        "paddle_obeys": float(np.mean(obeyed)),
    }


@torch.no_grad()
def reward_model_on_real(run: Any, dataset: EpisodeDataset, seed: int) -> dict[str, float]:
    """Recall of each reward sign and termination accuracy on 256 real segments of the run's dataset."""
    sampler = SegmentSampler(
        dataset, 256, reward_model_seq_length(run.cfg), None, True, rng=np.random.default_rng(seed)
    )
    batch = sampler.sample()
    logits_rew, logits_end, _ = run.agent.reward_model.predict(
        batch.obs[:, :-1], batch.act, batch.obs[:, 1:], mask=batch.step_mask
    )
    mask, target, predicted = batch.step_mask, batch.rew.sign().long() + 1, logits_rew.argmax(-1)
    result = {}
    for name, cls in (("recall_negative", 0), ("recall_positive", 2)):
        chosen = mask & (target == cls)
        result[name] = float((predicted[chosen] == cls).float().mean()) if chosen.any() else float("nan")
    end_ok = logits_end.argmax(-1)[mask] == batch.end.long()[mask]
    result["end_accuracy"] = float(end_ok.float().mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--batch", type=int, default=32, help="imagined trajectories side by side")
    parser.add_argument("--steps", type=int, default=40, help="imagined steps per trajectory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    run = load_trained_agent(args.run_dir, "cpu")
    run.agent.eval()
    size = run.cfg.env.size
    dataset = EpisodeDataset.load(dataset_dir(args.run_dir), frame_shape=(size, size, 3))
    num_cond = run.cfg.denoiser.num_cond_frames
    result: dict[str, Any] = {"run_dir": str(args.run_dir), "batch": args.batch, "steps": args.steps}
    for policy in ("tracker", "random", "still"):
        sampler = SegmentSampler(
            dataset, args.batch, num_cond - 1, None, False, rng=np.random.default_rng(args.seed)
        )
        generator = torch.Generator().manual_seed(args.seed)
        env = WorldModelEnv(
            run.agent.denoiser, run.agent.reward_model, sampler, run.cfg.denoiser.sampler, 10**6, generator
        )
        result[policy] = play(env, policy, args.steps, args.seed)
    result["reward_model_on_real_segments"] = reward_model_on_real(run, dataset, args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
