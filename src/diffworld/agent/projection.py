"""The wall-clock time of a whole training run, projected from the seconds of its parts and its schedule.

The schedule is the trainer's (``diffworld.agent.trainer``, docs/method.md §2), read from the
configuration:

- the initial collection gathers ``N0`` real steps in chunks of ``collection.steps_per_epoch``: the first
  multiple of the chunk at or above ``initial_min_steps`` when the minority reward classes already hold
  enough rewards, at most the first at or above ``initial_max_steps`` (``initial_steps_bounds``);
- then ``E_c = ceil((total_env_steps - N0) / steps_per_epoch)`` epochs that collect ``steps_per_epoch``
  steps each, and ``num_final_epochs`` more that do not: ``E = E_c + num_final_epochs`` epochs;
- each model makes ``steps_first_epoch`` optimizer steps in the first epoch and ``steps_per_epoch`` in each
  later one: ``steps_first_epoch + (E - 1) x steps_per_epoch`` in all;
- ``floor(E / test_every_epochs)`` tests of ``num_test_episodes`` episodes, and ``num_final_episodes`` at
  the end.

The seconds per optimizer step of each model and the real steps per second with the policy in the loop are
``diffworld bench``'s (``StepTimes.from_bench``). Test and final episodes are counted as real steps at the
collection's rate, ``test_episode_steps`` steps each (an assumption: episode lengths depend on the game and
the policy; a Boxing bout lasts about 1,800 steps). Not counted: the world model's test losses, reward
detection and video at each test, checkpoints, and the start of the process. Fewer initial steps leave
more epochs, so ``N0`` at its lower bound gives the longer run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from diffworld.config.schema import Config

MODELS = ("denoiser", "reward_model", "actor_critic")
DEFAULT_TEST_EPISODE_STEPS = 1_800
"""About a Boxing bout: 2 minutes of game time at 60 frames per second, frame skip 4."""


@dataclass(frozen=True)
class StepTimes:
    """Seconds per optimizer step of each model (gradient accumulation included), and real environment
    steps per second with the policy in the loop."""

    denoiser: float
    reward_model: float
    actor_critic: float
    collection_steps_per_second: float

    @classmethod
    def from_bench(cls, report: dict[str, Any]) -> StepTimes:
        """The figures of a ``diffworld bench`` report (all of its parts must have been timed)."""
        results = report["results"]
        missing = [part for part in (*MODELS, "collection") if part not in results]
        if missing:
            raise ValueError(f"the bench report lacks {', '.join(missing)}")
        return cls(
            denoiser=float(results["denoiser"]["seconds_per_step"]),
            reward_model=float(results["reward_model"]["seconds_per_step"]),
            actor_critic=float(results["actor_critic"]["seconds_per_step"]),
            collection_steps_per_second=float(results["collection"]["steps_per_second"]),
        )

    def seconds_per_step(self, model: str) -> float:
        return float(getattr(self, model))


@dataclass(frozen=True)
class Schedule:
    """How much of everything a run does, for a given initial collection."""

    initial_steps: int
    epochs_collect: int
    epochs: int
    env_steps: int
    """Real steps collected in all: the initial collection and ``steps_per_epoch`` per collecting epoch."""
    updates: dict[str, int]
    """Optimizer steps of each model."""
    tests: int
    test_episodes: int
    final_episodes: int


def initial_steps_bounds(cfg: Config) -> tuple[int, int]:
    """The fewest and the most real steps the initial collection gathers (see the module doc)."""
    c = cfg.collection
    chunk = c.steps_per_epoch
    low = math.ceil(c.initial_min_steps / chunk) * chunk
    return low, max(low, math.ceil(c.initial_max_steps / chunk) * chunk)


def schedule(cfg: Config, initial_steps: int) -> Schedule:
    """The run's schedule after an initial collection of ``initial_steps`` real steps."""
    if cfg.training.model_free:
        raise ValueError("the projection covers runs in imagination, not training.model_free")
    c = cfg.collection
    epochs_collect = max(0, math.ceil((c.total_env_steps - initial_steps) / c.steps_per_epoch))
    epochs = epochs_collect + cfg.training.num_final_epochs
    updates = {}
    for name in MODELS:
        t = getattr(cfg, name).training
        updates[name] = t.steps_first_epoch + (epochs - 1) * t.steps_per_epoch if epochs > 0 else 0
    tests = epochs // c.test_every_epochs
    return Schedule(
        initial_steps=initial_steps,
        epochs_collect=epochs_collect,
        epochs=epochs,
        env_steps=initial_steps + epochs_collect * c.steps_per_epoch,
        updates=updates,
        tests=tests,
        test_episodes=tests * c.num_test_episodes,
        final_episodes=c.num_final_episodes,
    )


def project_run(
    cfg: Config,
    times: StepTimes,
    initial_steps: int,
    test_episode_steps: int = DEFAULT_TEST_EPISODE_STEPS,
) -> dict[str, Any]:
    """Seconds of each part of a run and in all (``total_seconds``, ``hours``), the seconds of a later
    collecting epoch without a test (``epoch_seconds``), and the schedule they come from."""
    s = schedule(cfg, initial_steps)
    rate = times.collection_steps_per_second
    spe = cfg.collection.steps_per_epoch
    seconds = {
        "initial_collection": s.initial_steps / rate,
        "collection": s.epochs_collect * spe / rate,
        **{name: s.updates[name] * times.seconds_per_step(name) for name in MODELS},
        "tests": s.test_episodes * test_episode_steps / rate,
        "final_evaluation": s.final_episodes * test_episode_steps / rate,
    }
    total = sum(seconds.values())
    epoch = spe / rate + sum(
        getattr(cfg, name).training.steps_per_epoch * times.seconds_per_step(name) for name in MODELS
    )
    return {
        "schedule": asdict(s),
        "seconds": seconds,
        "total_seconds": total,
        "hours": total / 3600,
        "epoch_seconds": epoch,
        "test_episode_steps": test_episode_steps,
    }


def project_run_range(
    cfg: Config, times: StepTimes, test_episode_steps: int = DEFAULT_TEST_EPISODE_STEPS
) -> dict[str, Any]:
    """``project_run`` at both bounds of the initial collection: ``longest`` (fewest initial steps, most
    epochs) and ``shortest``."""
    low, high = initial_steps_bounds(cfg)
    return {
        "longest": project_run(cfg, times, low, test_episode_steps),
        "shortest": project_run(cfg, times, high, test_episode_steps),
    }


def fit_total_env_steps(
    cfg: Config,
    times: StepTimes,
    seconds: float,
    test_episode_steps: int = DEFAULT_TEST_EPISODE_STEPS,
) -> int:
    """The largest ``collection.total_env_steps``, at most ``cfg``'s, whose projected run lasts at most
    ``seconds``: the fewest initial steps (the longer run) plus whole collecting epochs. When not even a
    run without collecting epochs fits, that one (the initial collection's steps)."""
    initial, _ = initial_steps_bounds(cfg)
    spe = cfg.collection.steps_per_epoch
    most = max(0, math.ceil((cfg.collection.total_env_steps - initial) / spe))
    fitting = 0
    for epochs in range(1, most + 1):  # the projection grows with the epochs: stop at the first too long
        trial = _with_total_env_steps(cfg, initial + epochs * spe)
        if project_run(trial, times, initial, test_episode_steps)["total_seconds"] > seconds:
            break
        fitting = epochs
    return min(cfg.collection.total_env_steps, initial + fitting * spe)


def _with_total_env_steps(cfg: Config, total: int) -> Config:
    return replace(cfg, collection=replace(cfg.collection, total_env_steps=total))
