"""Catch: a tiny game on which the whole pipeline learns in minutes on a CPU.

The screen is an 8x8 grid of square cells (8x8 pixels at the default 64x64). A ball falls one row per
step from the top row, at a random column; a paddle in the bottom row moves one column per step
(``NOOP``, ``RIGHT``, ``LEFT``, ALE's names, clipped at the walls). When the ball reaches the bottom row it
lands: +1 if the paddle is under it, -1 if not. The episode ends when ``num_balls`` balls have landed
(``7 * num_balls`` steps), so returns range over ``[-num_balls, num_balls]``; until then a new ball
appears in the top row in the landing step, ``BALL_SHIFT`` columns to the right of the landed one (wrapping
around). Every ball can be caught (7 moves reach any of the 8 columns). The default is one ball per
episode, as in bsuite's Catch (Osband et al., 2020), the usual first check that an agent learns at all.

Made for a world model that learns fast on a CPU:

- Only the reset is random (the paddle's column and the first ball's); after it the game is a function of
  the screen and the action, so that a denoiser sampled in one step (which draws close to the conditional
  mean) predicts it exactly rather than a blur over the eight columns a random new ball could take.
- Few large objects on black, in separate colour channels added together: the ball in red and green, the
  paddle and its lane in blue. The paddle's whole column is lit (a dim blue lane above it), so that an
  action changes two columns of the next frame rather than a few pixels and its effect weighs in the
  denoiser's loss; the ball keeps its red and green over the lane, so its motion looks the same in and out
  of the lane.
- A landing frame shows its outcome in the landed ball's whole column (green when caught, red when
  missed), so that the reward is visible in the frame after the step that earns it. Drawn over the whole
  screen, the outcome was found sooner by the reward model but dominated the denoiser's loss: its imagined
  landings came out red whether caught or not (benchmarks/results/README.md, "Catch, session 8").

The env has the interface of ``Atari100kPreprocessing``: ``action_meanings``, ``info`` with ``lives``,
``life_loss`` (never: the game has no lives) and ``episode_frame_number``, a frame cap
(``max_frames_per_episode``, a step counting as ``frame_skip`` frames, as for Atari), a seed for the first
reset, and ``get_state`` / ``set_state`` for exact resume. Its randomness (the paddle's start column and
each ball's column) comes only from ``np_random``, so an episode is a function of the seed and the actions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from diffworld.envs.continuous import check_box_action

GAME_NAME = "Catch"
GYM_ID = "diffworld/Catch-v0"
GAME_NAME_CONTINUOUS = "CatchContinuous"
GYM_ID_CONTINUOUS = "diffworld/CatchContinuous-v0"
GRID = 8
"""Cells per side of the square screen."""
ACTION_MEANINGS = ("NOOP", "RIGHT", "LEFT")
_MOVES = (0, 1, -1)
_PADDLE_ROW = GRID - 1

BALL_SHIFT = 3
"""Columns between a landed ball and the next one; coprime with ``GRID``, so the balls visit every column."""

# Red and green channels: the ball and the landing outcome; blue: the paddle and its lane.
BALL = (255, 255)
CAUGHT = (0, 200)
MISSED = (230, 0)
PADDLE = 255
LANE = 120


class CatchEnv(gym.Env[np.ndarray, int]):
    """The Catch game, 64x64 RGB observations (``size``), 3 actions.

    Args:
        num_balls: balls per episode.
        size: side of the square RGB observation, a multiple of 8.
        max_frames_per_episode: frame cap; the episode is truncated after
            ``max_frames_per_episode // frame_skip`` steps (never, at the default, before the game ends).
        frame_skip: frames one step counts for (Catch has no frame skip; only the cap and
            ``episode_frame_number`` use it, as an Atari env would count).
        noop_max: accepted for the same signature as the Atari env, unused: the start is random already.
        seed: seed for the first ``reset`` called without one, so that a freshly made env is reproducible.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 15}  # noqa: RUF012 (as Gymnasium declares it)

    def __init__(
        self,
        num_balls: int = 1,
        size: int = 64,
        max_frames_per_episode: int = 108_000,
        frame_skip: int = 4,
        noop_max: int = 30,
        seed: int | None = None,
        render_mode: str | None = "rgb_array",
    ) -> None:
        if num_balls < 1:
            raise ValueError(f"num_balls must be >= 1, got {num_balls}")
        if size < GRID or size % GRID:
            raise ValueError(f"size must be a positive multiple of {GRID}, got {size}")
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        self.num_balls = num_balls
        self.frame_skip = frame_skip
        self._max_steps = max(1, max_frames_per_episode // frame_skip)
        self._cell = size // GRID
        self._size = size
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(ACTION_MEANINGS))  # type: ignore[assignment]
        self._pending_seed = seed
        self._paddle: Any = 0  # a column; a float position in CatchContinuousEnv
        self._ball_row = 0
        self._ball_col = 0
        self._landed = 0
        """Balls landed in this episode."""
        self._steps = 0
        self._outcome = 0
        """+1 / -1 in the frame where a ball was caught / missed (drawn at ``_landed_col``), else 0."""
        self._landed_col = 0
        self._over = True

    @property
    def action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new episode: the paddle at a random column, the first ball in the top row."""
        seed = self._pending_seed if seed is None else seed
        self._pending_seed = None
        super().reset(seed=seed)
        self._paddle = int(self.np_random.integers(GRID))
        self._landed = 0
        self._new_ball()
        self._steps = 0
        self._outcome = 0
        self._over = False
        return self._observe(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._over:
            raise RuntimeError("step() called after the episode ended: call reset()")
        self._move(action)
        self._ball_row += 1
        self._steps += 1
        reward = 0.0
        self._outcome = 0
        terminated = False
        if self._ball_row == _PADDLE_ROW:
            reward = 1.0 if self._caught() else -1.0
            self._outcome = int(reward)
            self._landed_col = self._ball_col
            self._landed += 1
            terminated = self._landed >= self.num_balls
            if not terminated:
                self._new_ball()
        truncated = not terminated and self._steps >= self._max_steps
        self._over = terminated or truncated
        return self._observe(), reward, terminated, truncated, self._info()

    def _move(self, action: Any) -> None:
        if not 0 <= int(action) < len(ACTION_MEANINGS):
            raise ValueError(f"action must be in [0, {len(ACTION_MEANINGS)}), got {action}")
        self._paddle = min(GRID - 1, max(0, self._paddle + _MOVES[int(action)]))

    def _caught(self) -> bool:
        return self._ball_col == self._paddle

    def _paddle_px(self) -> int:
        """The paddle's left edge in pixels."""
        return self._paddle * self._cell

    def render(self) -> np.ndarray:
        """The current observation (Gymnasium's ``rgb_array`` mode)."""
        return self._observe()

    def get_state(self) -> dict[str, Any]:
        """Everything that decides this env's future, to continue exactly with ``set_state``.

        Ints, None and the generator's state (a dict of ints and str), so that it survives ``torch.save`` /
        ``torch.load(weights_only=True)``. Settings (number of balls, size, cap) are not part of it: restore
        into an env made with the same ones.
        """
        return {
            "np_random": self.np_random.bit_generator.state,
            "pending_seed": self._pending_seed,
            "paddle": self._paddle,
            "ball_row": self._ball_row,
            "ball_col": self._ball_col,
            "landed": self._landed,
            "steps": self._steps,
            "outcome": self._outcome,
            "landed_col": self._landed_col,
            "over": self._over,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Put the env back where ``get_state`` found it (the env need not have been reset)."""
        self.np_random.bit_generator.state = state["np_random"]
        self._pending_seed = state["pending_seed"]
        for key in ("paddle", "ball_row", "ball_col", "landed", "steps", "outcome", "landed_col"):
            setattr(self, f"_{key}", int(state[key]))
        self._over = bool(state["over"])

    # An attribute as well, so that a vector env's ``set_attr`` can hand every env its own state.
    state = property(get_state, set_state)

    def _new_ball(self) -> None:
        self._ball_row = 0
        if self._landed == 0:
            self._ball_col = int(self.np_random.integers(GRID))
        else:
            self._ball_col = (self._landed_col + BALL_SHIFT) % GRID

    def _observe(self) -> np.ndarray:
        c, half = self._cell, self._cell // 2
        ball = np.zeros((self._size, self._size, 2), dtype=np.uint8)  # red, green
        blue = np.zeros((self._size, self._size), dtype=np.uint8)
        x = self._paddle_px()
        blue[: _PADDLE_ROW * c, x : x + c] = LANE
        blue[_PADDLE_ROW * c + half :, x : x + c] = PADDLE
        if self._outcome:
            # The landing frame: the landed ball's column shows the outcome above it, the ball sits in the
            # top half of its bottom cell (on the paddle when caught).
            col = self._landed_col
            ball[: _PADDLE_ROW * c, col * c : (col + 1) * c] = CAUGHT if self._outcome > 0 else MISSED
            ball[_PADDLE_ROW * c : _PADDLE_ROW * c + half, col * c : (col + 1) * c] = BALL
        if not (self._outcome and self._landed >= self.num_balls):  # no new ball after the last one
            row, col = self._ball_row, self._ball_col
            ball[row * c : (row + 1) * c, col * c : (col + 1) * c] = BALL
        return np.concatenate([ball, blue[..., None]], axis=-1)

    def _info(self) -> dict[str, Any]:
        return {
            "lives": 0,
            "life_loss": False,
            "episode_frame_number": self._steps * self.frame_skip,
            "balls_landed": self._landed,
        }


class CatchContinuousEnv(CatchEnv):
    """Catch with a continuous paddle velocity: the action is one float in ``[-1, 1]``, the paddle moves by
    that many columns per step (clipped at the walls) and sits anywhere in between, drawn at its position in
    whole pixels; a landing ball is caught when the paddle's centre is less than half a column from the
    ball's. Everything else is ``CatchEnv``'s (the same draws at reset, so the same seed starts the same
    episode), and every ball can still be caught (7 steps of up to one column reach any column).

    The continuous-control analogue of the learning test's game: a world model that ignores the action
    cannot predict the paddle, and a policy must learn how far to move, not only which way.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)  # type: ignore[assignment]

    @property
    def action_meanings(self) -> list[str]:
        return ["PADDLE_VELOCITY"]

    def _move(self, action: Any) -> None:
        space = self.action_space
        assert isinstance(space, gym.spaces.Box)
        values = check_box_action(action, space.low, space.high, GAME_NAME_CONTINUOUS)
        self._paddle = min(float(GRID - 1), max(0.0, float(self._paddle) + float(values[0])))

    def _caught(self) -> bool:
        return abs(self._ball_col - self._paddle) < 0.5

    def _paddle_px(self) -> int:
        return round(self._paddle * self._cell)

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._paddle = float(state["paddle"])

    state = property(CatchEnv.get_state, set_state)


def make_catch_env(
    seed: int | None = None,
    *,
    max_frames_per_episode: int = 108_000,
    noop_max: int = 30,
    frame_skip: int = 4,
    size: int = 64,
    num_balls: int = 1,
) -> CatchEnv:
    """One Catch environment, with the signature of ``make_atari_env`` (less the game)."""
    return CatchEnv(
        num_balls=num_balls,
        size=size,
        max_frames_per_episode=max_frames_per_episode,
        frame_skip=frame_skip,
        noop_max=noop_max,
        seed=seed,
    )


def make_catch_continuous_env(
    seed: int | None = None,
    *,
    max_frames_per_episode: int = 108_000,
    noop_max: int = 30,
    frame_skip: int = 4,
    size: int = 64,
    num_balls: int = 1,
) -> CatchContinuousEnv:
    """One CatchContinuous environment, with the signature of ``make_catch_env``."""
    return CatchContinuousEnv(
        num_balls=num_balls,
        size=size,
        max_frames_per_episode=max_frames_per_episode,
        frame_skip=frame_skip,
        noop_max=noop_max,
        seed=seed,
    )


if GYM_ID not in gym.registry:
    gym.register(GYM_ID, entry_point="diffworld.envs.catch:CatchEnv")
if GYM_ID_CONTINUOUS not in gym.registry:
    gym.register(GYM_ID_CONTINUOUS, entry_point="diffworld.envs.catch:CatchContinuousEnv")
