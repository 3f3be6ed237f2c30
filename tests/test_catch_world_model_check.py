"""``benchmarks/catch_world_model.py`` reads Catch frames right: the ball's column and the paddle's column it
finds in real frames are the environment's own."""

from __future__ import annotations

import numpy as np
import torch

from benchmark_modules import load_benchmark
from diffworld.envs.catch import CatchEnv


def load_check():  # type: ignore[no-untyped-def]
    return load_benchmark("catch_world_model")


def test_frames_are_read_back_into_the_true_ball_and_paddle_columns() -> None:
    check = load_check()
    env = CatchEnv(num_balls=3, seed=4)
    rng = np.random.default_rng(0)
    frames, truth = [], []
    obs, _ = env.reset()
    for _ in range(21):
        state = env.get_state()
        landed = state["outcome"] != 0 and state["landed"] >= env.num_balls
        truth.append((-1 if landed else state["ball_col"], state["paddle"]))
        frames.append(obs)
        obs, *_ = env.step(int(rng.integers(3)))
    # As the world model's frames arrive: (B, 3, H, W) in [-1, 1].
    batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    ball, paddle = check.read_frames(batch)
    assert [(int(b), int(p)) for b, p in zip(ball, paddle, strict=True)] == truth
