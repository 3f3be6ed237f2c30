"""One episode of agent-environment interaction, as numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _check_array(name: str, value: object, dtype: type[np.generic], shape: tuple[int, ...] | None) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"Episode.{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"Episode.{name} must have dtype {np.dtype(dtype)}, got {value.dtype}")
    if shape is not None and value.shape != shape:
        raise ValueError(f"Episode.{name} must have shape {shape}, got {value.shape}")


@dataclass(frozen=True)
class Episode:
    """An episode of ``T >= 1`` agent steps.

    Attributes:
        obs: (T+1, H, W, C) uint8. Frame t is what the agent saw before action t; frame T is the true final
            frame (where the life was lost, where the game ended, or simply the next frame when collection
            stopped).
        act: (T,) int64 action indices (a discrete action space: Atari, Catch), or (T, D) float32 action
            vectors (a continuous one: DeepMind Control, in the agent's [-1, 1] units; ``envs.continuous``).
        rew: (T,) float32 raw (unclipped) rewards.
        terminated: (T,) bool; only the last step may be True.
        truncated: (T,) bool; only the last step may be True. Both False at the last step means the episode
            was cut by the end of collection.
    """

    obs: np.ndarray
    act: np.ndarray
    rew: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __post_init__(self) -> None:
        _check_array("obs", self.obs, np.uint8, None)
        if self.obs.ndim != 4 or self.obs.shape[0] < 2:
            raise ValueError(
                f"Episode.obs must have shape (T+1, H, W, C) with T >= 1 steps, got {self.obs.shape}"
            )
        steps = (len(self),)
        if isinstance(self.act, np.ndarray) and self.act.ndim == 2:
            _check_array("act", self.act, np.float32, (len(self), self.act.shape[1]))
            if not np.isfinite(self.act).all():
                raise ValueError("Episode.act must be finite")
        else:
            _check_array("act", self.act, np.int64, steps)
        _check_array("rew", self.rew, np.float32, steps)
        _check_array("terminated", self.terminated, np.bool_, steps)
        _check_array("truncated", self.truncated, np.bool_, steps)
        if not np.isfinite(self.rew).all():
            raise ValueError("Episode.rew must be finite")
        for name in ("terminated", "truncated"):
            if getattr(self, name)[:-1].any():
                raise ValueError(f"Episode.{name} may only be True at the last step")

    def __len__(self) -> int:
        return self.obs.shape[0] - 1

    @classmethod
    def from_steps(
        cls,
        frames: Sequence[np.ndarray] | np.ndarray,
        actions: Sequence[int] | Sequence[np.ndarray] | np.ndarray,
        rewards: Sequence[float],
        *,
        terminated: bool,
        truncated: bool,
    ) -> Episode:
        """Build an episode from per-step lists: ``len(frames) == len(actions) + 1`` (final frame included).

        Frames must already be uint8; ``terminated`` / ``truncated`` describe how the last step ended. An
        array of frames (T+1, H, W, C) becomes ``obs`` as it is, without a copy. ``actions``: integers, or
        action vectors (each of D floats, or one (T, D) array), which become float32.
        """
        num_steps = len(actions)
        ends = np.zeros((2, num_steps), dtype=np.bool_)
        if num_steps > 0:
            ends[:, -1] = (terminated, truncated)
        return cls(
            obs=frames if isinstance(frames, np.ndarray) else np.stack(frames),
            act=_actions_array(actions),
            rew=np.asarray(rewards, dtype=np.float32),
            terminated=ends[0],
            truncated=ends[1],
        )


def _actions_array(actions: Sequence[int] | Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """(T,) int64 indices, or (T, D) float32 vectors where each action is a vector."""
    array = np.asarray(actions)
    if array.ndim == 2:
        return array.astype(np.float32, copy=False)
    return np.asarray(actions, dtype=np.int64)
