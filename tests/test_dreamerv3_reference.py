"""``benchmarks/dreamerv3_reference.py``: the return read at a step count and its mean and standard error over
seeds, against numpy on hand-made runs."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark_modules import load_benchmark

reference = load_benchmark("dreamerv3_reference")


def test_the_first_return_logged_at_or_after_the_step_count() -> None:
    xs, ys = [8_002.0, 10_000.0, 19_998.0, 20_004.0], [1.0, 2.0, 3.0, 4.0]
    assert reference.return_at(xs, ys, 10_000) == 2.0  # logged exactly there
    assert reference.return_at(xs, ys, 20_000) == 4.0  # the next one after
    assert reference.return_at(xs, ys, 5_000) == 1.0
    assert reference.return_at(xs, ys, 50_000) is None  # the run stops before


def test_mean_and_standard_error_over_seeds() -> None:
    rng = np.random.default_rng(0)
    xs = list(range(8_002, 600_000, 2_000))
    runs = [
        {"task": "dmc_cartpole_swingup", "seed": s, "xs": xs, "ys": list(rng.uniform(0, 1000, len(xs)))}
        for s in range(5)
    ]
    runs.append({"task": "dmc_walker_walk", "seed": 0, "xs": xs[:10], "ys": [7.0] * 10})
    summary = reference.summarise(runs)
    assert set(summary) == {"cartpole_swingup", "walker_walk"}
    i = next(k for k, x in enumerate(xs) if x >= 100_000)
    values = np.array([r["ys"][i] for r in runs[:5]])
    got = summary["cartpole_swingup"]["100000"]
    assert got["seeds"] == 5
    assert got["mean"] == pytest.approx(values.mean(), abs=0.05)
    assert got["standard_error"] == pytest.approx(values.std(ddof=1) / np.sqrt(5), abs=0.05)
    # One seed, and only the step counts its run reaches (10 logs: up to 26,002).
    assert summary["walker_walk"] == {
        "10000": {"mean": 7.0, "standard_error": 0.0, "seeds": 1},
        "20000": {"mean": 7.0, "standard_error": 0.0, "seeds": 1},
    }
