"""Catch under the uniform random policy: the return distribution and the bound the learning test uses.

    python benchmarks/catch_random.py [--episodes 10000] [--env-episodes 200000] [--json out.json]

Three views of the same distribution, which must agree:

1. **Exact.** Under the uniform policy the paddle is a lazy random walk clipped at the walls (stay, right,
   left with probability 1/3 each); a ball is caught iff the paddle, 7 steps after the ball appears, is in
   the ball's column. The first ball's column and the paddle's start are uniform and independent; each
   next ball appears ``BALL_SHIFT`` columns from the landed one. A dynamic programme over (paddle column,
   ball column, return so far), ball after ball, gives the exact law of an episode's return (with one ball
   per episode, the default, a catch has probability ``sum_p P(walk from p ends at c) / 64``).
2. **The evaluation protocol itself.** ``evaluate_policy`` (the final evaluation's code: the collector, the
   test environments seeded as in a run, test epsilon) with the untrained agent of ``preset=catch``, whose
   zero-initialised policy head is the uniform policy, over ``--episodes`` episodes.
3. **The bare environment.** ``--env-episodes`` episodes of ``CatchEnv`` with uniform random actions.

The bound: the final evaluation's score is the mean of n = ``collection.num_final_episodes`` episode
returns, and episodes are independent and identically distributed (each episode's balls and actions are
fresh draws; the paddle's start column is redrawn at every reset). The law of that mean is the n-fold
convolution of the exact per-episode law, computed exactly (returns are integers). The bound is the
smallest value b on that law's support with P(mean > b) < 1 %: a random policy's final mean exceeds it
with probability below 1 %. The same quantile from a Monte Carlo of means resampled from the measured
protocol returns (view 2) and a CLT bound with the measured std are reported beside it as checks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.envs.catch import BALL_SHIFT, GRID, CatchEnv

FALL_STEPS = GRID - 1
"""Steps from a ball's appearance in the top row to its landing in the paddle's row."""


def exact_episode_distribution(num_balls: int) -> dict[int, Fraction]:
    """P(return = r) of one episode under the uniform policy, exactly (rational numbers)."""
    third = Fraction(1, 3)
    step = [[Fraction(0)] * GRID for _ in range(GRID)]  # one step of the clipped lazy random walk
    for p in range(GRID):
        for move in (0, 1, -1):
            step[p][min(GRID - 1, max(0, p + move))] += third
    fall = np.identity(GRID, dtype=object) * Fraction(1)
    for _ in range(FALL_STEPS):
        fall = fall.dot(np.array(step, dtype=object))
    # state: (paddle column when the ball appears, the ball's column, return so far) -> probability
    states: dict[tuple[int, int, int], Fraction] = {
        (p, c, 0): Fraction(1, GRID * GRID) for p in range(GRID) for c in range(GRID)
    }
    for _ in range(num_balls):
        nxt: dict[tuple[int, int, int], Fraction] = {}
        for (p, c, score), prob in states.items():
            for q in range(GRID):
                reach = prob * fall[p][q]
                if reach == 0:
                    continue
                key = (q, (c + BALL_SHIFT) % GRID, score + (1 if q == c else -1))
                nxt[key] = nxt.get(key, Fraction(0)) + reach
        states = nxt
    law: dict[int, Fraction] = {}
    for (_, _, score), prob in states.items():
        law[score] = law.get(score, Fraction(0)) + prob
    assert sum(law.values()) == 1
    return dict(sorted(law.items()))


def mean_distribution(law: dict[int, float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(support of the mean of n episodes, probabilities), by exact n-fold convolution in float64."""
    lo, hi = min(law), max(law)
    pmf = np.zeros(hi - lo + 1)
    for r, p in law.items():
        pmf[r - lo] = p
    total = np.array([1.0])
    for _ in range(n):
        total = np.convolve(total, pmf)
    sums = n * lo + np.arange(len(total))
    return sums / n, total


def upper_bound(support: np.ndarray, probs: np.ndarray, alpha: float) -> tuple[float, float]:
    """Smallest b of the support with P(X > b) < alpha, and that tail probability."""
    tail = np.concatenate([np.cumsum(probs[::-1])[::-1][1:], [0.0]])  # tail[i] = P(X > support[i])
    i = int(np.argmax(tail < alpha))
    return float(support[i]), float(tail[i])


def protocol_returns(num_episodes: int, seed: int) -> tuple[list[float], dict[str, Any]]:
    """Returns of ``num_episodes`` final-evaluation episodes of the untrained ``preset=catch`` agent."""
    # Imported here: the exact law needs neither torch nor the package's models.
    from atari_random import protocol_returns as untrained_agent_returns  # this script's folder
    from diffworld.config import build_config

    returns = untrained_agent_returns("Catch", "catch", num_episodes, seed, num_envs=500)
    cfg = build_config(["game=Catch", "preset=catch", f"seed={seed}"])
    settings = {
        "num_final_episodes": cfg.collection.num_final_episodes,
        "test_epsilon": cfg.collection.test_epsilon,
        "env": {k: getattr(cfg.env, k) for k in ("size", "frame_skip", "max_frames_per_episode")},
    }
    return returns, settings


def env_returns(num_episodes: int, seed: int, num_balls: int = 1) -> list[float]:
    """Returns of ``num_episodes`` episodes of the bare env with uniform random actions."""
    rng = np.random.default_rng(seed)
    env = CatchEnv(num_balls=num_balls, seed=seed)
    returns = []
    for _ in range(num_episodes):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(3)))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return returns


def histogram(returns: list[float]) -> dict[int, float]:
    values, counts = np.unique(np.asarray(returns, dtype=int), return_counts=True)
    return {int(v): float(c) / len(returns) for v, c in zip(values, counts, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=10_000, help="episodes through evaluate_policy")
    parser.add_argument("--env-episodes", type=int, default=200_000, help="episodes of the bare env")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--monte-carlo", type=int, default=1_000_000, help="resampled means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    t0 = time.perf_counter()
    num_balls = CatchEnv().num_balls
    exact = exact_episode_distribution(num_balls)
    exact_f = {r: float(p) for r, p in exact.items()}
    exact_mean = float(sum(r * p for r, p in exact.items()))
    exact_std = float(sum((r - exact_mean) ** 2 * p for r, p in exact.items())) ** 0.5

    proto, settings = protocol_returns(args.episodes, args.seed)
    bare = env_returns(args.env_episodes, args.seed)
    n = settings["num_final_episodes"]

    support, probs = mean_distribution(exact_f, n)
    bound, tail = upper_bound(support, probs, args.alpha)
    # Checks: a Monte Carlo of n-episode means resampled from the measured protocol returns, and the CLT.
    rng = np.random.default_rng(args.seed)
    proto_arr = np.asarray(proto)
    means = np.empty(args.monte_carlo)
    for i in range(0, args.monte_carlo, 100_000):
        k = min(100_000, args.monte_carlo - i)
        means[i : i + k] = rng.choice(proto_arr, size=(k, n)).mean(axis=1)
    mc_bound = float(np.quantile(means, 1 - args.alpha, method="higher"))
    clt_bound = float(proto_arr.mean() + 2.3263 * proto_arr.std(ddof=1) / np.sqrt(n))

    def summary(returns: list[float]) -> dict[str, Any]:
        a = np.asarray(returns)
        hist = histogram(returns)
        return {
            "num_episodes": len(returns),
            "mean": float(a.mean()),
            "std": float(a.std(ddof=1)),
            "min": float(a.min()),
            "max": float(a.max()),
            "histogram": {str(k): v for k, v in hist.items()},
            "max_abs_diff_to_exact": max(abs(hist.get(r, 0.0) - p) for r, p in exact_f.items()),
        }

    result = {
        "what": "Catch, uniform random policy: per-episode return law and the 1 % bound on the final mean",
        "num_balls": num_balls,
        "protocol": settings,
        "exact": {
            "mean": exact_mean,
            "std": exact_std,
            "distribution": {str(r): float(p) for r, p in exact.items()},
            "p_catch_per_ball": (exact_mean / num_balls + 1) / 2,
        },
        "evaluate_policy_untrained_agent": summary(proto),
        "bare_env_uniform_actions": summary(bare),
        "bound": {
            "alpha": args.alpha,
            "n_episodes": n,
            "value": bound,
            "p_mean_exceeds": tail,
            "method": (
                f"exact law of the mean of {n} i.i.d. episodes (n-fold convolution of the exact per-episode "
                f"law); smallest b with P(mean > b) < {args.alpha}"
            ),
            "monte_carlo_check": {"num_means": args.monte_carlo, "quantile": mc_bound},
            "clt_check": clt_bound,
        },
        "bounds_for_other_n": {
            str(k): upper_bound(*mean_distribution(exact_f, k), args.alpha)[0] for k in (10, 20, 50, 100)
        },
        "seconds": time.perf_counter() - t0,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
