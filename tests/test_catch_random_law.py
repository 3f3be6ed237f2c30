"""The exact return law of Catch under the uniform random policy, against the bare environment.

The learning test's bound is computed from this law (``benchmarks/catch_random.py``), so it must be the
environment's: the law's probabilities against the frequencies of episodes played with uniform random actions,
within 4 standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark_modules import load_benchmark


def load_random_law():  # type: ignore[no-untyped-def]
    return load_benchmark("catch_random")


def test_one_ball_is_caught_with_probability_one_eighth() -> None:
    law = load_random_law().exact_episode_distribution(1)
    assert {r: float(p) for r, p in law.items()} == {-1: 0.875, 1: 0.125}


@pytest.mark.parametrize("num_balls", [1, 3])
def test_exact_law_matches_random_play(num_balls: int) -> None:
    law = {r: float(p) for r, p in load_random_law().exact_episode_distribution(num_balls).items()}
    episodes = 4000 // num_balls
    returns = [int(r) for r in load_random_law().env_returns(episodes, seed=0, num_balls=num_balls)]
    assert set(returns) <= set(law)
    for r, p in law.items():
        frequency = returns.count(r) / episodes
        standard_error = max((p * (1 - p) / episodes) ** 0.5, 1 / episodes)
        assert abs(frequency - p) < 4 * standard_error, (r, frequency, p)


def test_bound_is_exceeded_rarely_by_the_exact_law_and_a_simulation() -> None:
    module = load_random_law()
    law = {r: float(p) for r, p in module.exact_episode_distribution(1).items()}
    bound, tail = module.upper_bound(*module.mean_distribution(law, 100), 0.01)
    assert tail < 0.01
    # The binomial law of 100 catches at p = 1/8, independently: P(mean > bound) from its own formula.
    from math import comb

    catches_needed = int(np.floor((bound * 100 + 100) / 2)) + 1  # mean = (2k - 100) / 100 > bound
    binomial_tail = sum(comb(100, k) * 0.125**k * 0.875 ** (100 - k) for k in range(catches_needed, 101))
    assert binomial_tail == pytest.approx(tail, rel=1e-9)
    # The next support point down would exceed 1 %: b is the smallest such value.
    looser = sum(comb(100, k) * 0.125**k * 0.875 ** (100 - k) for k in range(catches_needed - 1, 101))
    assert looser >= 0.01
