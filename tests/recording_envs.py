"""Test helper shared by the collector and model-free tests: Atari envs that keep their whole stream."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffworld.envs import AtariEnvs, StepResult


class RecordingEnvs(AtariEnvs):
    """``AtariEnvs`` that keep everything they were given and returned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resets: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.results: list[StepResult] = []

    def reset(self) -> np.ndarray:
        obs = super().reset()
        self.resets.append(obs)
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        self.actions.append(np.array(actions))
        result = super().step(actions)
        self.results.append(result)
        return result
