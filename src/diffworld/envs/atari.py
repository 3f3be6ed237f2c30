"""One Atari environment with the Atari 100k preprocessing used by DIAMOND.

``<Game>NoFrameskip-v4`` (minimal action set, no sticky actions, ALE frameskip 1), then: frame skip 4 with a
pixel-wise max of the last two raw frames, 1 to 30 no-op actions at reset (none with ``noop_max=0``), RGB
resized to 64x64 (INTER_AREA), raw (unclipped) rewards, and ``info["life_loss"]`` on every step. Whether a
life loss ends an episode is the caller's choice (see ``diffworld.envs.vector``); the game itself only ends at
game over or the frame cap.
"""

from __future__ import annotations

from typing import Any

import ale_py
import cv2
import gymnasium as gym
import numpy as np
from ale_py.env import AtariEnv

from diffworld.games import env_id

gym.register_envs(ale_py)
# Process-wide: keeps ALE's version banner and info logs out of the console (workers import this module too).
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


class Atari100kPreprocessing(gym.Wrapper[np.ndarray, int, np.ndarray, int]):
    """Frame skip + max-pooling, no-op reset and 64x64 resize on top of an ale-py ``AtariEnv``.

    The skip loop drives the ALE directly (one ``act`` per raw frame) rather than the wrapped env's ``step``:
    it avoids the per-frame Gymnasium overhead and lets us stop on the exact frame where the game ends.

    Args:
        env: an ale-py env created with frameskip 1 and no sticky actions (``<Game>NoFrameskip-v4``).
        noop_max: at reset, play ``np_random.integers(1, noop_max + 1)`` no-op frames; 0 plays none (and
            draws nothing), as the official code does.
        frame_skip: raw frames per agent step, the action repeated on each.
        size: side of the square RGB observation.
        seed: seed for the first ``reset`` called without one, so that a freshly made env is reproducible.
    """

    def __init__(
        self,
        env: gym.Env[np.ndarray, int],
        noop_max: int = 30,
        frame_skip: int = 4,
        size: int = 64,
        seed: int | None = None,
    ) -> None:
        super().__init__(env)
        atari = env.unwrapped
        if not isinstance(atari, AtariEnv):
            raise TypeError(f"expected an ale-py AtariEnv, got {type(atari).__name__}")
        if noop_max < 0 or frame_skip < 1:
            raise ValueError(f"noop_max must be >= 0 and frame_skip >= 1, got {noop_max} and {frame_skip}")
        self._ale: ale_py.ALEInterface = atari.ale
        if self._ale.getFloat("repeat_action_probability") != 0.0:
            raise ValueError("sticky actions must be off: use a <Game>NoFrameskip-v4 environment")
        self._action_set = self._ale.getMinimalActionSet()
        self._action_meanings = atari.get_action_meanings()
        self._noop_max = noop_max
        self._frame_skip = frame_skip
        self._size = size
        self._pending_seed = seed
        height, width = self._ale.getScreenDims()
        # The last two raw frames of a step, written alternately so that an early stop still has both.
        self._frames = np.zeros((2, height, width, 3), dtype=np.uint8)
        self._lives = 0
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)

    @property
    def action_meanings(self) -> list[str]:
        """ALE names of the actions, in action-index order (e.g. ``["NOOP", "FIRE", "RIGHT", "LEFT"]``)."""
        return list(self._action_meanings)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the game, then play 1 to ``noop_max`` no-ops (none if it is 0); the observation is the
        current screen."""
        seed = self._pending_seed if seed is None else seed
        self._pending_seed = None
        self.env.reset(seed=seed, options=options)
        num_noops = int(self.np_random.integers(1, self._noop_max + 1)) if self._noop_max > 0 else 0
        for _ in range(num_noops):
            self._ale.act(self._action_set[0])
            if self._ale.game_over():
                self.env.reset()
        self._ale.getScreenRGB(self._frames[0])
        self._lives = self._ale.lives()
        return self._observe(pool=False), self._info(life_loss=False)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Repeat ``action`` for ``frame_skip`` frames, stopping early on the frame where the game ends.

        The observation is the max of the last two frames played (the single frame if the game ended on the
        first one), so the final frame of an episode is the true one, not a stale buffer.
        """
        ale_action = self._action_set[action]
        lives_before = self._lives
        reward = 0.0
        frames_played = 0
        while frames_played < self._frame_skip:
            reward += self._ale.act(ale_action)
            self._ale.getScreenRGB(self._frames[frames_played % 2])
            frames_played += 1
            if self._ale.game_over():  # game over or frame cap
                break
        terminated = self._ale.game_over(with_truncation=False)
        truncated = not terminated and self._ale.game_truncated()
        self._lives = self._ale.lives()
        info = self._info(life_loss=self._lives < lives_before)
        return self._observe(pool=frames_played > 1), reward, terminated, truncated, info

    def get_state(self) -> dict[str, Any]:
        """Everything that decides this env's future frames, to continue exactly with ``set_state``.

        The emulator (with its RNG), the generator of the reset no-op counts, the life count the next step
        compares against, and a first-reset seed not used yet. The raw-frame buffer is left out: every step
        and reset overwrites what it reads. Values are bytes, str, ints, None and dicts of them, so the state
        survives ``torch.save`` / ``torch.load(weights_only=True)``. Settings (game, frame cap, no-op max,
        ...) are not part of it: restore into an env made with the same ones.
        """
        return {
            "ale": self._ale.cloneState(include_rng=True).serialize(),
            "np_random": self.np_random.bit_generator.state,
            "lives": self._lives,
            "pending_seed": self._pending_seed,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Put the env back where ``get_state`` found it (the env need not have been reset)."""
        self._ale.restoreState(ale_py.ALEState(state["ale"]))
        self.np_random.bit_generator.state = state["np_random"]
        self._lives = int(state["lives"])
        self._pending_seed = state["pending_seed"]

    # An attribute as well, so that a vector env's ``set_attr`` can hand every env its own state.
    state = property(get_state, set_state)

    def _observe(self, pool: bool) -> np.ndarray:
        # Max-pooling two consecutive frames shows the sprites that Atari games draw every other frame.
        screen = np.maximum(self._frames[0], self._frames[1]) if pool else self._frames[0]
        return cv2.resize(screen, (self._size, self._size), interpolation=cv2.INTER_AREA)

    def _info(self, life_loss: bool) -> dict[str, Any]:
        return {
            "lives": self._lives,
            "life_loss": life_loss,
            "episode_frame_number": self._ale.getEpisodeFrameNumber(),
        }


def make_atari_env(
    game: str,
    seed: int | None = None,
    *,
    max_frames_per_episode: int = 108_000,
    noop_max: int = 30,
    frame_skip: int = 4,
    size: int = 64,
) -> Atari100kPreprocessing:
    """One preprocessed Atari 100k environment; ``render()`` returns the raw 210x160 RGB screen.

    Args:
        game: any accepted spelling (see ``resolve_game``).
        seed: seed of the first ``reset()`` (a seed passed to ``reset`` wins).
        max_frames_per_episode: raw-frame cap (108,000 = 27,000 agent steps); the episode is then truncated.
    """
    env = gym.make(env_id(game), max_num_frames_per_episode=max_frames_per_episode, render_mode="rgb_array")
    return Atari100kPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip, size=size, seed=seed)
