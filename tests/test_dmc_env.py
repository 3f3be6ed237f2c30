"""DeepMind Control Suite tasks from pixels: names, spaces, the action repeat against dm_control itself, the
episode length, seeds, exact state restore, and one-line errors for bad input. Skipped without dm_control."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("dm_control")

import mujoco  # after the skip: installed with dm_control
import torch
from gymnasium.utils.env_checker import check_env

from diffworld.envs.dmc import (
    DMC_VISION_TASKS,
    DMCEnv,
    InvalidActionError,
    UnknownDMCTaskError,
    _import_suite,
    available_dmc_tasks,
    make_dmc_env,
    resolve_dmc_task,
)
from diffworld.errors import UserError

INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION


def random_actions(env: DMCEnv, n: int, seed: int = 0) -> list[np.ndarray]:
    env.action_space.seed(seed)
    return [env.action_space.sample() for _ in range(n)]


def test_the_20_benchmark_tasks_resolve_to_themselves_and_are_listed() -> None:
    assert len(DMC_VISION_TASKS) == len(set(DMC_VISION_TASKS)) == 20
    available = available_dmc_tasks()
    for name in DMC_VISION_TASKS:
        assert resolve_dmc_task(name)[0] == name
        assert name in available
    assert resolve_dmc_task("dmc:cup-catch") == ("dmc:cup-catch", "ball_in_cup", "catch")
    for spelling in ("dmc:ball_in_cup-catch", "DMC:Cup_Catch", " dmc:cupcatch "):
        assert resolve_dmc_task(spelling)[0] == "dmc:cup-catch"
    assert resolve_dmc_task("dmc:Cartpole_Swingup_Sparse")[1:] == ("cartpole", "swingup_sparse")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dmc:cartpole-swingupp", "Did you mean: dmc:cartpole-swingup"),
        ("dmc:no-such-task", "available_dmc_tasks"),
        ("cartpole-swingup", "dmc:<domain>-<task>"),
    ],
)
def test_unknown_task_is_a_one_line_user_error(name: str, expected: str) -> None:
    with pytest.raises(UnknownDMCTaskError) as caught:
        make_dmc_env(name)
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert name in message and expected in message


def test_spaces_shapes_and_dtypes() -> None:
    env = make_dmc_env("dmc:walker-walk", seed=0)
    assert env.observation_space.shape == (64, 64, 3) and env.observation_space.dtype == np.uint8
    assert env.action_space.shape == (6,) and env.action_space.dtype == np.float32
    assert env.max_episode_steps == 500 and env.control_steps_per_episode == 1000
    obs, info = env.reset()
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs in env.observation_space
    assert obs.std() > 0  # a picture, not a blank frame
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs in env.observation_space and isinstance(reward, float)
    assert (terminated, truncated) == (False, False) and info["episode_frame_number"] == 2
    np.testing.assert_array_equal(env.render(), obs)
    # The action space is the task's action spec, bounds included (the quadruped's are not all [-1, 1]).
    quadruped = make_dmc_env("dmc:quadruped-run")
    spec = quadruped._env.action_spec()
    np.testing.assert_array_equal(quadruped.action_space.low, spec.minimum.astype(np.float32))
    np.testing.assert_array_equal(quadruped.action_space.high, spec.maximum.astype(np.float32))
    assert not (quadruped.action_space.high == 1).all() and quadruped.camera == 2 and env.camera == 0
    small = make_dmc_env("dmc:cartpole-swingup", size=32)
    assert small.reset(seed=0)[0].shape == (32, 32, 3)


@pytest.mark.filterwarnings("ignore:.*not having a spec")  # made directly, not through gymnasium.make
def test_gymnasium_checker_accepts_it() -> None:
    check_env(make_dmc_env("dmc:reacher-easy"), skip_render_check=False)


@pytest.mark.parametrize("repeat", [1, 2, 3])
def test_action_repeat_holds_the_action_and_sums_the_rewards_of_dm_control(repeat: int) -> None:
    """The wrapped env against a bare dm_control env put in the same physics state and stepped by hand."""
    env = make_dmc_env("dmc:cheetah-run", seed=3, action_repeat=repeat)
    env.reset()
    bare = _import_suite().load("cheetah", "run")
    bare.reset()
    bare.physics.set_state(env.physics.get_state(sig=INTEGRATION), sig=INTEGRATION)
    bare.physics.forward()
    for action in random_actions(env, 3):
        obs, reward, *_ = env.step(action)
        rewards = [bare.step(action.astype(np.float64)).reward for _ in range(repeat)]
        assert reward == pytest.approx(sum(rewards), rel=1e-12, abs=1e-12)
        np.testing.assert_array_equal(bare.physics.get_state(), env.physics.get_state())
        np.testing.assert_array_equal(obs, bare.physics.render(64, 64, camera_id=0))
    assert env.physics.data.time == pytest.approx(3 * repeat * bare.control_timestep())


@pytest.mark.parametrize(("repeat", "steps"), [(2, 500), (3, 334)])
def test_an_episode_is_1000_control_steps_truncated(
    monkeypatch: pytest.MonkeyPatch, repeat: int, steps: int
) -> None:
    env = make_dmc_env("dmc:cartpole-balance", seed=0, action_repeat=repeat)
    blank = np.zeros((64, 64, 3), np.uint8)
    monkeypatch.setattr(env, "_render", lambda: blank)  # the frames are not what is tested (17 ms each)
    env.reset()
    action = np.zeros(1, np.float32)
    for step in range(1, steps + 1):
        _, _, terminated, truncated, info = env.step(action)
        assert not terminated and truncated == (step == steps)
    assert env.max_episode_steps == steps and info["episode_frame_number"] == 1000
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(action)
    env.reset()
    assert env.step(action)[3] is False


def test_a_seed_decides_the_episode() -> None:
    def play(env: DMCEnv, seed: int | None) -> list[tuple[np.ndarray, float]]:
        obs, _ = env.reset(seed=seed)
        return [(obs, 0.0)] + [env.step(a)[:2] for a in random_actions(env, 3)]

    a, b = make_dmc_env("dmc:reacher-easy", seed=5), make_dmc_env("dmc:reacher-easy", seed=5)
    first = play(a, None)
    for (obs_a, rew_a), (obs_b, rew_b) in zip(first, play(b, None), strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert rew_a == rew_b
    # reset(seed=...) on a used env starts the same episode again; another seed, another start.
    again = play(a, 5)
    for (obs_a, rew_a), (obs_b, rew_b) in zip(first, again, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert rew_a == rew_b
    assert not np.array_equal(play(a, 6)[0][0], first[0][0])
    # Without a seed, the next reset goes on with the generator: a new start.
    assert not np.array_equal(play(a, None)[0][0], first[0][0])


def test_state_round_trip_gives_identical_next_frames_for_each_action() -> None:
    """The action-fidelity use: from one saved state, try several actions; the same action twice gives the
    same frame and reward, bit for bit, as going on without a restore."""
    env = make_dmc_env("dmc:walker-walk", seed=1)
    env.reset()
    for action in random_actions(env, 5):
        env.step(action)
    state = env.get_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # bytes, ints and tuples only
    action, other = random_actions(env, 2, seed=1)
    go_on = [env.step(action) for _ in range(2)]
    env.set_state(state)
    np.testing.assert_array_equal(env.render(), env.render())
    restored = [env.step(action) for _ in range(2)]
    for (obs_a, rew_a, *flags_a, _), (obs_b, rew_b, *flags_b, _) in zip(go_on, restored, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert rew_a == rew_b and flags_a == flags_b
    env.set_state(state)
    assert not np.array_equal(env.step(other)[0], go_on[0][0])  # another action, another frame
    # Into a fresh env of the same task, never reset: the same future.
    fresh = make_dmc_env("dmc:walker-walk")
    fresh.set_state(state)
    np.testing.assert_array_equal(fresh.step(action)[0], go_on[0][0])


def test_restoring_keeps_the_time_limit_and_the_task_generator() -> None:
    env = make_dmc_env("dmc:pendulum-swingup", seed=0)
    env.reset()
    for _ in range(3):
        env.step(np.zeros(1, np.float32))
    state = env.get_state()
    first_reset = env.reset()[0]
    env.set_state(state)
    assert env._env._step_count == 6
    # The task's generator is restored too: the next unseeded reset starts where it did before.
    np.testing.assert_array_equal(env.reset()[0], first_reset)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (np.array([1.5], np.float32), "outside the bounds: component 0 is 1.5, not in [-1.0, 1.0]"),
        (np.array([-1.0001], np.float64), "outside the bounds"),
        (np.array([np.nan], np.float32), "NaN or infinite"),
        (np.array([np.inf], np.float32), "NaN or infinite"),
        (np.zeros(2, np.float32), "action of shape (2,), expected (1,)"),
        ("left", "not an array of numbers"),
    ],
)
def test_bad_actions_are_one_line_user_errors(action: object, expected: str) -> None:
    env = make_dmc_env("dmc:cartpole-swingup", seed=0)
    env.reset()
    with pytest.raises(InvalidActionError) as caught:
        env.step(action)  # type: ignore[arg-type]
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert message.startswith("dmc:cartpole-swingup: ") and expected in message
    # The bounds themselves are valid actions.
    env.step(np.array([1.0], np.float32))
    env.step(np.array([-1.0], np.float32))


def test_step_before_reset_is_refused() -> None:
    with pytest.raises(RuntimeError, match="call reset"):
        make_dmc_env("dmc:cartpole-swingup").step(np.zeros(1, np.float32))
