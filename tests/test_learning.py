"""The whole pipeline learns: ``diffworld train game=Catch preset=catch`` ends far above random play.

Marked ``learning`` and left out of the default run; CI runs it after the default suite with
``pytest -m learning``. Each seed is the README's command in its own process (the two run side by side, one
thread each): real collection, the denoiser, the reward/termination model, the actor-critic in imagination,
the schedule and the final evaluation, nothing stubbed. A change that breaks learning anywhere (a loss that
no longer reaches the actor, rewards the reward model cannot learn, actions the world model does not see)
leaves the final mean near the random policy's and fails it.

The bound is computed here, not typed in: the exact law of one episode's return under the uniform random
policy (``benchmarks/catch_random.py``, a dynamic programme over the paddle's lazy random walk), its n-fold
convolution for the mean of the final evaluation's n episodes, and the smallest value of that law's support
that the random policy's mean exceeds with probability below 1 %. The exact law is checked against the bare
environment in ``tests/test_catch_random_law.py`` and against 10,000 episodes through the final evaluation's
own code in ``benchmarks/results/catch_random.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark

pytestmark = pytest.mark.learning

SEEDS = (0, 1)
ALPHA = 0.01
"""Probability that the random policy's final mean exceeds the bound, at most."""


def random_policy_bound(num_balls: int, num_episodes: int) -> tuple[float, float]:
    """(b, P(random mean > b)) for the mean of ``num_episodes`` episodes of ``num_balls`` balls."""
    law = load_benchmark("catch_random")
    exact = {r: float(p) for r, p in law.exact_episode_distribution(num_balls).items()}
    bound, tail = law.upper_bound(*law.mean_distribution(exact, num_episodes), ALPHA)
    return float(bound), float(tail)


def test_catch_learns_far_above_random(tmp_path: Path) -> None:
    runs = {}
    for seed in SEEDS:
        run_dir = tmp_path / f"catch_s{seed}"
        command = [sys.executable, "-m", "diffworld", "train", "game=Catch", "preset=catch"]
        command += [f"seed={seed}", f"run_dir={run_dir}"]
        # One thread each: two runs side by side use 2 cores better than one after the other with two.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = (tmp_path / f"train_s{seed}.log").open("w")
        runs[seed] = (run_dir, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    failures = []
    # Both seeds within an hour: 14 min on the 2-core AMD EPYC (AVX2) machine of session 12
    # (benchmarks/results/README.md, "Catch, session 12"), so a machine 3 times slower still fits; CI's own
    # limit is 90 min in all.
    deadline = time.monotonic() + 3600
    for seed, (run_dir, process, log) in runs.items():
        try:
            returncode = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        log.close()
        if returncode != 0:
            tail = (tmp_path / f"train_s{seed}.log").read_text()[-3000:]
            failures.append(f"seed {seed}: train exited with {returncode}\n{tail}")
            continue
        report = json.loads((run_dir / "eval.json").read_text())
        bound, tail_probability = random_policy_bound(1, report["num_episodes"])
        summary = (
            f"seed {seed}: final mean {report['mean']:+.2f} over {report['num_episodes']} episodes after "
            f"{report['train_wall_clock_seconds']:.0f} s; the random policy exceeds {bound:+.2f} with "
            f"probability {tail_probability:.4f}"
        )
        print(summary)
        if not report["mean"] > bound:
            failures.append(summary)
    assert not failures, "\n".join(failures)
