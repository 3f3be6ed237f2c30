"""Catch: the rules, the frames, determinism, exact resume, and the pipeline taking it like an Atari game."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from diffworld.envs import AtariEnvs, CatchEnv, make_env
from diffworld.envs.catch import BALL, BALL_SHIFT, CAUGHT, GRID, LANE, MISSED, PADDLE
from diffworld.evaluation.scores import human_normalized_score
from diffworld.games import available_games, env_id, resolve_game


def play(env: CatchEnv, actions: list[int]) -> list[tuple[np.ndarray, float, bool, bool, dict]]:
    return [env.step(a) for a in actions]


def cell(frame: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 8x8 pixels of a cell of a 64x64 frame."""
    return frame[8 * row : 8 * (row + 1), 8 * col : 8 * (col + 1)]


def is_cell(frame: np.ndarray, row: int, col: int, red_green: tuple[int, int], blue: int) -> bool:
    """The cell is uniformly ``red_green`` in the red and green channels and ``blue`` in the blue one."""
    pixels = cell(frame, row, col)
    return bool((pixels[..., :2] == red_green).all() and (pixels[..., 2] == blue).all())


def positions(frame: np.ndarray) -> tuple[tuple[int, int] | None, int]:
    """(row, col) of the falling ball (rows 0-6, a whole cell) and the paddle's column, read off the frame."""
    ball = [
        (r, c) for r in range(GRID - 1) for c in range(GRID) if (cell(frame, r, c)[..., :2] == BALL).all()
    ]
    paddles = [c for c in range(GRID) if (cell(frame, GRID - 1, c)[4:, :, 2] == PADDLE).all()]
    assert len(ball) <= 1 and len(paddles) == 1
    return (ball[0] if ball else None), paddles[0]


def test_names_resolve_and_are_listed() -> None:
    for name in ("Catch", "catch", "CATCH"):
        assert resolve_game(name) == "Catch"
    assert "Catch" in available_games()
    assert env_id("catch") == "diffworld/Catch-v0"
    assert isinstance(gym.make("diffworld/Catch-v0").unwrapped, CatchEnv)
    assert human_normalized_score("Catch", 5.0) is None


def test_gymnasium_checker_accepts_it() -> None:
    check_env(CatchEnv(), skip_render_check=False)


def test_rules_ball_falls_paddle_moves_reward_on_landing() -> None:
    assert isinstance(make_env("Catch", seed=0), CatchEnv)
    env = CatchEnv(num_balls=2, seed=0)
    obs, info = env.reset()
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert info == {"lives": 0, "life_loss": False, "episode_frame_number": 0, "balls_landed": 0}
    assert env.action_meanings == ["NOOP", "RIGHT", "LEFT"]
    (row, col), paddle = positions(obs)
    assert row == 0
    assert all(is_cell(obs, r, paddle, (0, 0), LANE) for r in range(1, GRID - 1))  # the paddle's lane
    assert all(is_cell(obs, r, c, (0, 0), 0) for r in range(1, GRID - 1) for c in range(GRID) if c != paddle)
    # The ball keeps its colour over the lane: the channels add.
    assert is_cell(obs, 0, col, BALL, LANE if col == paddle else 0)
    # Walk the paddle under the ball, then wait: +1 after 7 steps, and a new ball in the top row.
    moves = [1 if col > paddle else 2] * abs(col - paddle) + [0] * (7 - abs(col - paddle))
    for t, (obs, reward, terminated, truncated, info) in enumerate(play(env, moves), start=1):
        assert not terminated and not truncated and not info["life_loss"]
        assert info["episode_frame_number"] == 4 * t
        if t < 7:
            assert reward == 0.0
            assert positions(obs)[0] == (t, col)
    assert reward == 1.0 and info["balls_landed"] == 1
    # The landing frame: the ball's column is green above it, the ball sits on the paddle, the next ball is
    # at the top.
    assert all(is_cell(obs, r, col, CAUGHT, LANE) for r in range(1, GRID - 1))
    assert all(is_cell(obs, r, c, (0, 0), 0) for r in range(1, GRID - 1) for c in range(GRID) if c != col)
    landed = cell(obs, GRID - 1, col)
    assert (landed[:4, :, :2] == BALL).all() and (landed[4:, :, 2] == PADDLE).all()
    (row, new_col), paddle = positions(obs)
    assert row == 0 and paddle == col and new_col == (col + BALL_SHIFT) % GRID
    # Move away from the next ball: -1 and its column red above it, the paddle's lane elsewhere.
    away = 2 if new_col >= 4 else 1
    *_, (obs, reward, terminated, _, info) = play(env, [away] * 7)
    assert reward == -1.0 and info["balls_landed"] == 2
    paddle = positions(obs)[1]
    assert paddle != new_col
    assert all(is_cell(obs, r, new_col, MISSED, 0) for r in range(1, GRID - 1))
    assert all(is_cell(obs, r, paddle, (0, 0), LANE) for r in range(1, GRID - 1))
    landed = cell(obs, GRID - 1, new_col)
    assert (landed[:4, :, :2] == BALL).all() and (landed[:4, :, 2] == 0).all() and (landed[4:] == 0).all()
    assert terminated and positions(obs)[0] is None  # the last ball: no new one


def test_episode_is_num_balls_landings_and_returns_span_the_range() -> None:
    env = CatchEnv(num_balls=3, seed=1)
    env.reset()
    steps = play(env, [0] * 21)
    assert [s[1] != 0 for s in steps] == [t % 7 == 6 for t in range(21)]
    assert steps[-1][2] and not any(s[2] for s in steps[:-1])
    ball, _ = positions(steps[-1][0])
    assert ball is None  # no new ball after the last one
    with pytest.raises(RuntimeError):
        env.step(0)
    # A perfect tracker catches every ball; returns are sums of +-1.
    env = CatchEnv(num_balls=5, seed=2)
    obs, _ = env.reset()
    total, done = 0.0, False
    while not done:
        ball, paddle = positions(obs)
        action = 0 if ball is None or ball[1] == paddle else (1 if ball[1] > paddle else 2)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += reward
        done = terminated or truncated
    assert total == 5.0


def test_frame_cap_truncates() -> None:
    env = CatchEnv(num_balls=2, max_frames_per_episode=40, frame_skip=4)
    env.reset(seed=0)
    steps = play(env, [0] * 10)
    assert steps[-1][3] and not steps[-1][2] and not any(s[3] for s in steps[:-1])


def test_deterministic_given_seed_and_first_reset_seed() -> None:
    def episode(env: CatchEnv, seed: int | None) -> list[np.ndarray]:
        obs, _ = env.reset(seed=seed)
        return [obs] + [s[0] for s in play(env, [0, 1, 2, 1, 0, 2, 2] * 10)]

    a = episode(CatchEnv(num_balls=10), 7)
    b = episode(CatchEnv(num_balls=10, seed=7), None)
    c = episode(CatchEnv(num_balls=10), 8)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert not all((x == y).all() for x, y in zip(a, c, strict=True))


def test_state_round_trips_through_torch_save_and_resumes_exactly() -> None:
    env = CatchEnv(num_balls=10, seed=3)
    env.reset()
    play(env, [1, 1, 0, 2, 0, 0, 0, 1, 1, 1])
    buffer = io.BytesIO()
    torch.save(env.get_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    actions = [0, 2, 1] * 25
    # 60 steps end the episode (70 steps), then a reset (its draws continue the generator) and more steps.
    expected = [*play(env, actions[:60]), (*env.reset(), None, None, None), *play(env, actions[60:])]
    other = CatchEnv(num_balls=10, seed=99)
    other.state = state  # the attribute a vector env's set_attr uses
    got = [*play(other, actions[:60]), (*other.reset(), None, None, None), *play(other, actions[60:])]
    for x, y in zip(expected, got, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]


def test_vector_envs_step_catch_in_process_and_resume() -> None:
    with AtariEnvs("catch", 3, seed=5, life_loss_terminal=True, asynchronous=False) as envs:
        assert envs.game == "Catch" and envs.num_actions == 3
        first = envs.reset()
        assert first.shape == (3, 64, 64, 3)
        assert len({f.tobytes() for f in first}) > 1  # env i is seeded with seed + i
        rng = np.random.default_rng(0)
        actions = rng.integers(3, size=(150, 3))
        for a in actions[:40]:
            envs.step(a)
        states = envs.get_states()
        expected = [envs.step(a) for a in actions[40:]]
        envs.set_states(states)
        got = [envs.step(a) for a in actions[40:]]
    assert any(r.done.any() for r in expected)  # episodes of 7 steps ended and auto-reset
    for x, y in zip(expected, got, strict=True):
        np.testing.assert_array_equal(x.obs, y.obs)
        np.testing.assert_array_equal(x.final_obs, y.final_obs)
        np.testing.assert_array_equal(x.reward, y.reward)
        np.testing.assert_array_equal(x.terminated, y.terminated)
        assert not x.life_loss.any()


def test_size_must_be_a_multiple_of_the_grid() -> None:
    assert CatchEnv(size=32).reset(seed=0)[0].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        CatchEnv(size=60)
