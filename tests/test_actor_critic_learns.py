"""The actor-critic half of the agent learns a visual contextual bandit through the real rollout and loss.

Until the whole pipeline's learning test exists, this guards what the policy gradient needs: a loss that
reaches the actor, advantages with the right sign, logits and actions aligned in time. One bright third of a
64x64 frame names the rewarded action (+1, the others -1). Under the uniform policy a rollout's mean reward
(160 steps) has mean -1/3 and standard deviation sqrt(8/9 / 160) = 0.075, so a mean above 0.3 over the
last 20 updates is more than 25 standard deviations away from chance: it cannot happen without learning.
``benchmarks/actor_critic_bandit.py`` prints the learning curve (and shows that the paper's value-loss weight
does not learn it in this few updates; ``benchmarks/results/README.md``).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmark_modules import load_benchmark


def load_bandit_benchmark():  # type: ignore[no-untyped-def]
    return load_benchmark("actor_critic_bandit")


@pytest.mark.usefixtures("one_torch_thread")
def test_actor_critic_learns_a_visual_bandit() -> None:
    bandit = load_bandit_benchmark()
    rewards = bandit.train_bandit(updates=120, lr=1e-3, gamma=0.985, value_weight=0.1, seed=0)
    assert np.mean(rewards[:5]) < 0.0  # starts at chance
    assert np.mean(rewards[-20:]) > 0.3, rewards[-20:]
