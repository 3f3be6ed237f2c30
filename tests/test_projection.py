"""The projected hours of a whole run (``diffworld.agent.projection``) against hand computations."""

from __future__ import annotations

import pytest

from diffworld.agent.projection import (
    StepTimes,
    fit_total_env_steps,
    initial_steps_bounds,
    project_run,
    project_run_range,
    schedule,
)
from diffworld.config import build_config
from diffworld.config.schema import Config

PAPER = build_config(["game=Breakout"])
TIMES = StepTimes(denoiser=0.1, reward_model=0.05, actor_critic=0.5, collection_steps_per_second=500.0)


def test_paper_schedule() -> None:
    """docs/method.md §2: 5,000-10,000 initial steps, then epochs of 100 steps until 100k, 50 final epochs."""
    assert initial_steps_bounds(PAPER) == (5_000, 10_000)
    s = schedule(PAPER, 5_000)
    assert (s.epochs_collect, s.epochs, s.env_steps) == (950, 1_000, 100_000)
    # 10,000 (or 5,000) steps in the first epoch, 400 in each of the 999 others.
    assert s.updates == {"denoiser": 409_600, "reward_model": 409_600, "actor_critic": 404_600}
    assert (s.tests, s.test_episodes, s.final_episodes) == (100, 400, 100)
    s = schedule(PAPER, 10_000)
    assert (s.epochs_collect, s.epochs, s.env_steps) == (900, 950, 100_000)
    assert s.updates == {"denoiser": 389_600, "reward_model": 389_600, "actor_critic": 384_600}
    assert s.tests == 95


def test_paper_run_hours_by_hand() -> None:
    p = project_run(PAPER, TIMES, 5_000, test_episode_steps=2_000)
    expected = {
        "initial_collection": 5_000 / 500,  # 10 s
        "collection": 95_000 / 500,  # 190 s
        "denoiser": 409_600 * 0.1,  # 40,960 s
        "reward_model": 409_600 * 0.05,  # 20,480 s
        "actor_critic": 404_600 * 0.5,  # 202,300 s
        "tests": 400 * 2_000 / 500,  # 1,600 s
        "final_evaluation": 100 * 2_000 / 500,  # 400 s
    }
    assert p["seconds"] == pytest.approx(expected)
    assert p["total_seconds"] == pytest.approx(265_940)
    assert p["hours"] == pytest.approx(73.872, abs=1e-3)
    assert p["epoch_seconds"] == pytest.approx(100 / 500 + 400 * (0.1 + 0.05 + 0.5))  # 260.2 s
    shortest = project_run_range(PAPER, TIMES, test_episode_steps=2_000)["shortest"]
    # 900 + 50 epochs: 10,000 / 500 + 90,000 / 500 + 38,960 + 19,480 + 192,300 + 95 x 4 x 4 + 400.
    assert shortest["total_seconds"] == pytest.approx(20 + 180 + 38_960 + 19_480 + 192_300 + 1_520 + 400)


def small_cfg(*extra: str) -> Config:
    return build_config(
        [
            "game=Boxing",
            "collection.total_env_steps=3000",
            "collection.initial_min_steps=1000",
            "collection.initial_max_steps=1000",
            "collection.steps_per_epoch=200",
            "collection.test_every_epochs=5",
            "collection.num_test_episodes=2",
            "collection.num_final_episodes=4",
            "training.num_final_epochs=2",
            "denoiser.training.steps_first_epoch=100",
            "denoiser.training.steps_per_epoch=10",
            "reward_model.training.steps_first_epoch=100",
            "reward_model.training.steps_per_epoch=10",
            "actor_critic.training.steps_first_epoch=20",
            "actor_critic.training.steps_per_epoch=5",
            *extra,
        ]
    )


def test_fit_total_env_steps_by_hand() -> None:
    cfg = small_cfg()
    times = StepTimes(denoiser=1.0, reward_model=1.0, actor_critic=2.0, collection_steps_per_second=100.0)

    # With k collecting epochs after 1,000 initial steps: E = k + 2 epochs, updates 100 + 10 (E - 1) for
    # each world-model part and 20 + 5 (E - 1) for the actor-critic, floor(E / 5) x 2 test episodes
    # of 100 steps, 4 final ones: seconds = 10 + 2k + 2 (100 + 10 (k + 1)) + 2 (20 + 5 (k + 1))
    # + 2 floor((k + 2) / 5) + 4 = 284 + 32 k + 2 floor((k + 2) / 5).
    def by_hand(k: int) -> float:
        return 284 + 32 * k + 2 * ((k + 2) // 5)

    for k in (0, 1, 3, 10):
        trial = small_cfg(f"collection.total_env_steps={1000 + 200 * k}")
        assert project_run(trial, times, 1_000, test_episode_steps=100)["total_seconds"] == pytest.approx(
            by_hand(k)
        )
    assert by_hand(3) == 382 and by_hand(4) == 414
    assert fit_total_env_steps(cfg, times, 400, test_episode_steps=100) == 1_000 + 3 * 200
    assert fit_total_env_steps(cfg, times, 414, test_episode_steps=100) == 1_000 + 4 * 200
    # Never more than the configuration's own budget (10 epochs), never less than the initial collection.
    assert fit_total_env_steps(cfg, times, 1e9, test_episode_steps=100) == 3_000
    assert fit_total_env_steps(cfg, times, 1.0, test_episode_steps=100) == 1_000


def test_from_bench_report() -> None:
    report = {
        "results": {
            "denoiser": {"seconds_per_step": 0.2},
            "reward_model": {"seconds_per_step": 0.1},
            "actor_critic": {"seconds_per_step": 1.5},
            "imagination": {"frames_per_second": 100.0},
            "collection": {"steps_per_second": 300.0},
        }
    }
    assert StepTimes.from_bench(report) == StepTimes(0.2, 0.1, 1.5, 300.0)
    del report["results"]["collection"]
    with pytest.raises(ValueError, match="collection"):
        StepTimes.from_bench(report)


def test_model_free_runs_are_refused() -> None:
    with pytest.raises(ValueError, match="model_free"):
        schedule(build_config(["game=Breakout", "training.model_free=true"]), 0)
