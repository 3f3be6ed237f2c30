"""Continuous-action environments: the one rescaling of the agent's [-1, 1] actions to an env's bounds and its
one-line errors, CatchContinuous, Gymnasium Box-action environments from pixels, DeepMind Control through
``make_env`` and the vector env."""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from diffworld.envs.catch import GRID, CatchContinuousEnv, CatchEnv
from diffworld.envs.continuous import GymPixelEnv, InvalidActionError, NormalizedActions, UnsupportedEnvError
from diffworld.envs.make import game_num_actions, make_env
from diffworld.envs.vector import AtariEnvs
from diffworld.errors import UserError

HAS_PYGAME = importlib.util.find_spec("pygame") is not None
HAS_DMC = importlib.util.find_spec("dm_control") is not None


class BoxRecorder(gym.Env[np.ndarray, np.ndarray]):
    """Records the actions it is given; observations are blank."""

    def __init__(self, low: Any, high: Any, dtype: Any = np.float32) -> None:
        self.action_space = gym.spaces.Box(np.asarray(low, dtype), np.asarray(high, dtype), dtype=dtype)
        self.observation_space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)
        self.received: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        return np.zeros((4, 4, 3), np.uint8), {}

    def step(self, action: np.ndarray) -> Any:
        self.received.append(np.array(action))
        return np.zeros((4, 4, 3), np.uint8), 0.0, False, False, {}


LOW, HIGH = [-2.0, 0.0, 5.0], [3.0, 1.0, 6.0]


def test_actions_are_rescaled_from_minus_one_one_to_the_env_bounds() -> None:
    inner = BoxRecorder(LOW, HIGH)
    env = NormalizedActions(inner, "box")
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    env.reset()
    for a in ([-1, -1, -1], [1, 1, 1], [0, 0.5, -0.25]):
        env.step(np.array(a, np.float32))
    low, high = np.array(LOW), np.array(HIGH)
    np.testing.assert_array_equal(inner.received[0], low.astype(np.float32))
    np.testing.assert_array_equal(inner.received[1], high.astype(np.float32))
    expected = low + (np.array([0, 0.5, -0.25]) + 1) / 2 * (high - low)  # the affine map, written apart
    np.testing.assert_allclose(inner.received[2], expected, rtol=1e-6)
    assert all(r.dtype == np.float32 for r in inner.received)
    assert env.action_meanings == ["a0", "a1", "a2"]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ([0.0, 1.0001, 0.0], "component 1 is 1.000"),
        ([np.nan, 0.0, 0.0], "NaN or infinite"),
        ([0.0, -np.inf, 0.0], "NaN or infinite"),
        ([0.0, 0.0], r"shape \(2,\), expected \(3,\)"),
        (["left", 0.0, 0.0], "not an array of numbers"),
    ],
)
def test_bad_actions_are_one_line_user_errors(action: Any, expected: str) -> None:
    env = NormalizedActions(BoxRecorder(LOW, HIGH), "box")
    env.reset()
    with pytest.raises(InvalidActionError, match=expected) as caught:
        env.step(action)
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("box: ")


def test_spaces_the_agent_cannot_take_are_refused() -> None:
    with pytest.raises(UnsupportedEnvError, match="bounded"):
        NormalizedActions(BoxRecorder([-np.inf], [1.0]), "box")
    discrete = BoxRecorder([0.0], [1.0])
    discrete.action_space = gym.spaces.Discrete(3)  # type: ignore[assignment]
    with pytest.raises(UnsupportedEnvError, match="1-D Box"):
        NormalizedActions(discrete, "discrete")
    with pytest.raises(UnsupportedEnvError, match="Box action space"):
        GymPixelEnv("CartPole-v1")


def test_catch_continuous_moves_the_paddle_by_the_velocity_and_catches_within_half_a_column() -> None:
    env = CatchContinuousEnv(size=32, seed=4)
    reference = CatchEnv(size=32, seed=4)
    env.reset()
    reference.reset()
    assert (env._paddle, env._ball_col) == (reference._paddle, reference._ball_col)  # the same draws
    start, ball = float(env._paddle), env._ball_col
    # Steer towards the ball at full speed, then sit: every ball can be caught.
    total = 0.0
    for _ in range(7):
        gap = ball - float(env._paddle)
        _, reward, terminated, _, _ = env.step(np.array([np.clip(gap, -1, 1)], np.float32))
        total += reward
    assert terminated and total == 1.0
    # The paddle is drawn where it is, in whole pixels.
    env.reset(seed=4)
    env.step(np.array([0.5 if start < GRID - 1 else -0.5], np.float32))
    x = round(float(env._paddle) * 4)
    frame = env.render()
    assert frame[-1, x, 2] == 255 and frame[-1, x + 3, 2] == 255
    assert (x == 0 or frame[-1, x - 1, 2] == 0) and (x + 4 >= 32 or frame[-1, x + 4, 2] == 0)
    # Missing by half a column or more loses.
    env.reset(seed=4)
    far = 1.0 if ball < GRID / 2 else -1.0
    rewards = [env.step(np.array([far], np.float32))[1] for _ in range(7)]
    assert rewards[-1] == -1.0
    check_env(CatchContinuousEnv(size=32, seed=0), skip_render_check=True)


def test_catch_continuous_state_round_trip() -> None:
    env = make_env("CatchContinuous", seed=2, size=32)
    env.reset()
    env.step(np.array([0.37], np.float32))
    state = env.get_wrapper_attr("get_state")()
    after = [env.step(np.array([v], np.float32))[0] for v in (-0.2, 0.9)]
    env.get_wrapper_attr("set_state")(state)
    again = [env.step(np.array([v], np.float32))[0] for v in (-0.2, 0.9)]
    for a, b in zip(after, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert game_num_actions("CatchContinuous") == 1


def test_vector_env_of_a_continuous_game() -> None:
    with AtariEnvs("CatchContinuous", 2, 0, life_loss_terminal=True, size=32, asynchronous=False) as envs:
        assert envs.continuous and envs.num_actions == 1 and envs.action_meanings == ["PADDLE_VELOCITY"]
        obs = envs.reset()
        assert obs.shape == (2, 32, 32, 3)
        result = envs.step(np.array([[0.5], [-1.0]], np.float32))
        assert result.reward.shape == (2,)
        with pytest.raises(InvalidActionError):
            envs.step(np.array([[0.5], [1.5]], np.float32))


@pytest.mark.skipif(not HAS_PYGAME, reason="Gymnasium's classic-control renders need pygame")
def test_gym_pixel_env_renders_repeats_and_replays() -> None:
    env = GymPixelEnv("Pendulum-v1", seed=3, action_repeat=3, size=24, max_episode_steps=5)
    obs, _ = env.reset()
    assert obs.shape == (24, 24, 3) and obs.dtype == np.uint8 and obs.any()
    # The action repeat against the raw environment from the same episode seed.
    raw = gym.make("Pendulum-v1")
    raw.reset(seed=env._episode_seed)
    _, reward, *_ = env.step(np.array([1.5], np.float32))
    assert reward == pytest.approx(sum(float(raw.step(np.array([1.5], np.float32))[1]) for _ in range(3)))
    state = env.get_state()
    after = [env.step(np.array([v], np.float32)) for v in (-2.0, 0.5)]
    env.set_state(state)
    again = [env.step(np.array([v], np.float32)) for v in (-2.0, 0.5)]
    for a, b in zip(after, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
    # Our cap truncates at 5 agent steps.
    dones = [env.step(np.array([0.0], np.float32))[3] for _ in range(2)]
    assert dones == [False, True]
    wrapped = make_env("gym:Pendulum-v1", seed=0, size=16, action_repeat=2)
    assert isinstance(wrapped, NormalizedActions) and wrapped.env_high.tolist() == [2.0]
    env.close()
    wrapped.close()


@pytest.mark.skipif(not HAS_DMC, reason="dm_control (the dmc extra) is not installed")
def test_dmc_task_through_make_env_with_its_action_repeat_and_cap() -> None:
    env = make_env("dmc:cartpole-swingup", seed=0, size=16, action_repeat=4, max_frames_per_episode=12)
    assert isinstance(env, NormalizedActions)
    env.reset()
    dones = [env.step(np.zeros(1, np.float32))[3] for _ in range(3)]  # 12 control steps = 3 agent steps
    assert dones == [False, False, True]
    assert env.get_wrapper_attr("action_repeat") == 4
    assert env.action_meanings == ["slide"]  # the MuJoCo actuator's name, for play's help
    with pytest.raises(InvalidActionError, match="dmc:cartpole-swingup"):
        env.step(np.array([np.nan], np.float32))
    env.close()
