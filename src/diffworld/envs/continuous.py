"""Continuous-action environments as the agent sees them: actions in ``[-1, 1]^D``, rescaled to each env's
bounds in one place, checked, and any Gymnasium ``Box``-action environment from pixels.

**One action unit for the agent.** Every continuous env is wrapped in ``NormalizedActions``: the agent (its
policy, the world model, the stored episodes) works in ``[-1, 1]^D`` whatever the env's ``Box`` says, and
``NormalizedActions.action`` is the one place where an action is rescaled to the env's ``[low, high]``::

    a_env = low + (a + 1) * (high - low) / 2        (then clipped to [low, high] against rounding)

which is the identity for the ``[-1, 1]`` bounds of every DeepMind Control task. An action that is not a
finite vector of the right shape within ``[-1, 1]`` is refused with a one-line ``InvalidActionError``.

**Gymnasium environments** (``game=gym:<id>``, ``GymPixelEnv``): any registered environment whose actions are
a ``Box``; its observations when they are RGB images (``CarRacing-v3``), its ``render()`` frames
(``rgb_array``) otherwise (``Pendulum-v1``, ``MountainCarContinuous-v0``: control from pixels), resized to
``size`` x ``size`` (INTER_AREA, as the Atari frames). Each agent step holds the action for ``action_repeat``
steps of the env, summing the rewards. Episode seeds are drawn from the env's own generator (seeded by the
first reset), and its ``get_state`` is the current episode's seed and actions: ``set_state`` replays them,
which restores any environment whose episodes are a function of their seed and actions (Gymnasium's classic
control and Box2D environments are), without pickling anything.
"""

from __future__ import annotations

from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from diffworld.errors import UserError

AGENT_LOW = -1.0
AGENT_HIGH = 1.0
"""The bounds of every component of the agent's continuous actions."""


class InvalidActionError(UserError, ValueError):
    """An action of the wrong shape, not finite, or outside the action space's bounds."""


class UnsupportedEnvError(UserError, ValueError):
    """A Gymnasium environment the agent cannot take (its actions are not a ``Box``, its frames not RGB)."""


def check_box_action(action: Any, low: np.ndarray, high: np.ndarray, what: str) -> np.ndarray:
    """``action`` as a float32 array of ``low``'s shape, every value finite and within ``[low, high]``
    (checked in float32; nothing is clipped).

    Raises:
        InvalidActionError: one line naming ``what`` (the env) and the first bad component.
    """
    try:
        values = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InvalidActionError(f"{what}: action {action!r} is not an array of numbers") from err
    if values.shape != low.shape:
        raise InvalidActionError(f"{what}: action of shape {values.shape}, expected {low.shape}")
    if not np.isfinite(values).all():
        raise InvalidActionError(f"{what}: action {values.tolist()} has NaN or infinite values")
    outside = (values < low) | (values > high)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InvalidActionError(
            f"{what}: action {values.tolist()} outside the bounds: component {i} is {values.flat[i]}, not in "
            f"[{low.flat[i]}, {high.flat[i]}]"
        )
    return values


def box_bounds(space: gym.spaces.Space[Any], what: str) -> tuple[np.ndarray, np.ndarray]:
    """The finite (low, high) of a 1-D ``Box`` action space, as float64.

    Raises:
        UnsupportedEnvError: not a 1-D ``Box``, or unbounded.
    """
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise UnsupportedEnvError(
            f"{what}: continuous control needs a 1-D Box action space, not {space} (Atari and Catch are the "
            "discrete games)"
        )
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()):
        raise UnsupportedEnvError(f"{what}: the Box action space must be bounded, got [{low}, {high}]")
    return low, high


class NormalizedActions(gym.ActionWrapper[Any, np.ndarray, Any]):
    """The agent's actions in ``[-1, 1]^D``, checked, then rescaled to the wrapped env's ``Box`` (see the
    module's docstring): the one place where continuous actions change units.

    ``env_low`` and ``env_high`` are the env's own bounds. Every other attribute (``get_state``,
    ``set_state``, ``state``) is the wrapped env's, through Gymnasium's ``get_wrapper_attr``.
    """

    def __init__(self, env: gym.Env[Any, Any], name: str) -> None:
        super().__init__(env)
        self.name = name
        self.env_low, self.env_high = box_bounds(env.action_space, name)
        self._env_dtype = env.action_space.dtype
        shape = self.env_low.shape
        self.action_space = gym.spaces.Box(AGENT_LOW, AGENT_HIGH, shape, np.float32)
        self._low = np.full(shape, AGENT_LOW, np.float32)
        self._high = np.full(shape, AGENT_HIGH, np.float32)

    @property
    def action_meanings(self) -> list[str]:
        """The names of the action's components: the wrapped env's ``action_meanings`` if it has them, else
        ``a0``, ``a1``, ..."""
        try:
            return list(self.env.get_wrapper_attr("action_meanings"))
        except AttributeError:
            return [f"a{i}" for i in range(len(self._low))]

    def action(self, action: np.ndarray) -> np.ndarray:
        """``[-1, 1]^D`` -> ``[env_low, env_high]``.

        Raises:
            InvalidActionError: the action is not a finite vector of the right shape within ``[-1, 1]``.
        """
        a = check_box_action(action, self._low, self._high, self.name).astype(np.float64)
        env_action = self.env_low + (a + 1.0) * (self.env_high - self.env_low) / 2.0
        return np.clip(env_action, self.env_low, self.env_high).astype(self._env_dtype)


class GymPixelEnv(gym.Env[np.ndarray, np.ndarray]):
    """A registered Gymnasium environment with ``Box`` actions, from pixels (see the module's docstring).

    Args:
        env_id: the Gymnasium id (``Pendulum-v1``, ``CarRacing-v3``).
        seed: seeds the env's generator at the first ``reset`` called without one; episode seeds are drawn
            from it.
        action_repeat: env steps per agent step, the action held and the rewards summed.
        size: side of the square RGB observation.
        max_episode_steps: agent steps after which an episode is truncated (the env's own time limit applies
            too); None: no cap of ours.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}  # noqa: RUF012 (as Gymnasium declares it)

    def __init__(
        self,
        env_id: str,
        seed: int | None = None,
        *,
        action_repeat: int = 1,
        size: int = 64,
        max_episode_steps: int | None = None,
    ) -> None:
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        name = f"gym:{env_id}"
        try:
            self._env = gym.make(env_id, render_mode="rgb_array")
        except gym.error.DependencyNotInstalled as err:
            first_line = (str(err).strip().splitlines() or [""])[0]
            raise UnsupportedEnvError(f"{name} needs a package that is not installed: {first_line}") from err
        low, _ = box_bounds(self._env.action_space, name)
        self.name = name
        self.action_space = self._env.action_space
        self._action_shape: tuple[int, ...] = low.shape
        obs_space = self._env.observation_space
        self._from_render = not (
            isinstance(obs_space, gym.spaces.Box)
            and obs_space.dtype == np.uint8
            and len(obs_space.shape) == 3
            and obs_space.shape[-1] == 3
        )
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_repeat = action_repeat
        self.max_episode_steps = max_episode_steps
        self.render_mode = "rgb_array"
        self._size = size
        self._pending_seed = seed
        self._episode_seed = 0
        self._actions: list[np.ndarray] = []
        self._steps = 0
        self._over = True
        self._frame = np.zeros(self.observation_space.shape, np.uint8)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new episode, its seed drawn from this env's generator (reseeded from ``seed`` if given, or from
        the constructor's at the first reset)."""
        seed = self._pending_seed if seed is None else seed
        self._pending_seed = None
        super().reset(seed=seed)
        self._episode_seed = int(self.np_random.integers(2**31))
        obs = self._start_episode()
        return obs, self._info()

    def _start_episode(self) -> np.ndarray:
        obs, _ = self._env.reset(seed=self._episode_seed)
        self._actions = []
        self._steps = 0
        self._over = False
        self._frame = self._observe(obs)
        return self._frame.copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Hold ``action`` (in the env's own units) for ``action_repeat`` env steps, summing the rewards."""
        if self._over:
            raise RuntimeError("step() called before reset() or after the episode ended: call reset()")
        action = np.asarray(action, dtype=self.action_space.dtype)
        obs, reward, terminated, truncated = self._repeat(action)
        self._actions.append(action.copy())
        self._steps += 1
        if self.max_episode_steps is not None and self._steps >= self.max_episode_steps and not terminated:
            truncated = True
        self._over = terminated or truncated
        self._frame = self._observe(obs)
        return self._frame.copy(), reward, terminated, truncated, self._info()

    def _repeat(self, action: np.ndarray) -> tuple[Any, float, bool, bool]:
        reward, terminated, truncated = 0.0, False, False
        obs = None
        for _ in range(self.action_repeat):
            obs, r, terminated, truncated, _ = self._env.step(action)
            reward += float(r)
            if terminated or truncated:
                break
        return obs, reward, bool(terminated), bool(truncated)

    def render(self) -> np.ndarray:
        return self._frame.copy()

    def close(self) -> None:
        self._env.close()

    def get_state(self) -> dict[str, Any]:
        """The generator's state and the running episode's seed and actions (an array, which the checkpoint
        stores as a tensor; empty bytes would not survive ``torch.load(weights_only=True)``)."""
        actions = np.stack(self._actions) if self._actions else np.zeros((0, *self._action_shape))
        return {
            "np_random": self.np_random.bit_generator.state,
            "pending_seed": self._pending_seed,
            "episode_seed": self._episode_seed,
            "actions": np.array(actions, self.action_space.dtype),
            "steps": self._steps,
            "over": self._over,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Replay the saved episode from its seed with its actions (see the module's docstring)."""
        self.np_random.bit_generator.state = state["np_random"]
        self._pending_seed = state["pending_seed"]
        self._episode_seed = int(state["episode_seed"])
        actions = np.asarray(state["actions"], self.action_space.dtype).reshape(-1, *self._action_shape)
        self._start_episode()
        for action in actions:
            obs, *_ = self._repeat(action)
            self._frame = self._observe(obs)
            self._actions.append(action.copy())
        self._steps = int(state["steps"])
        self._over = bool(state["over"])

    state = property(get_state, set_state)

    def _observe(self, obs: Any) -> np.ndarray:
        frame = self._env.render() if self._from_render else obs
        frame = np.asarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise UnsupportedEnvError(f"{self.name}: its frames are {frame.shape}, not RGB images (H, W, 3)")
        if frame.shape[:2] != (self._size, self._size):
            frame = cv2.resize(frame, (self._size, self._size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame)

    def _info(self) -> dict[str, Any]:
        return {"lives": 0, "life_loss": False, "episode_frame_number": self._steps * self.action_repeat}
