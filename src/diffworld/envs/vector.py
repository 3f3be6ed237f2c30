"""Several environments of one game stepped in parallel, with the optional life-loss layer: Atari 100k games,
Catch, and the continuous-control games (their actions in ``[-1, 1]^D``, ``envs.continuous``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

import gymnasium as gym
import numpy as np

from diffworld.envs.make import make_env
from diffworld.games import DEFAULT_ACTION_REPEAT, resolve_game


@dataclass(frozen=True)
class StepResult:
    """One step of all environments; every array has a leading ``num_envs`` dimension."""

    obs: np.ndarray
    """(n, size, size, 3) uint8: observation to act on next (the reset one where an episode ended)."""
    reward: np.ndarray
    """(n,) float32, raw (unclipped) game reward summed over the frame skip."""
    terminated: np.ndarray
    """(n,) bool: game over, or a life loss when ``life_loss_terminal``."""
    truncated: np.ndarray
    """(n,) bool: the frame cap was reached (and the game was not over)."""
    final_obs: np.ndarray
    """(n, size, size, 3) uint8: true last frame where ``terminated | truncated``, else equal to ``obs``."""
    life_loss: np.ndarray
    """(n,) bool: a life was lost during this step (reported whether or not it is terminal)."""

    @property
    def done(self) -> np.ndarray:
        """(n,) bool: ``terminated | truncated``, the episodes that ended at this step."""
        return self.terminated | self.truncated


class AtariEnvs:
    """``num_envs`` preprocessed Atari games (or any game of ``make_env``) stepped together, auto-resetting in
    the same step.

    Env ``i`` is seeded with ``seed + i`` at its first reset; later resets (automatic at game over or frame
    cap, or explicit ``reset()`` calls) continue that env's own RNG, so a run is reproducible from ``seed``.

    With ``life_loss_terminal`` (training collection only), a life loss also ends the episode: ``terminated``
    is set and ``final_obs`` is the current observation, but the game is not reset, so the next episode starts
    from that very frame. Without it (test episodes), episodes run to game over.

    A continuous game's actions are (n, D) float arrays in ``[-1, 1]`` (``continuous``, ``action_space``);
    its ``num_actions`` is D and its ``action_meanings`` name the components.

    Args:
        action_repeat: control steps per agent step of a continuous-control game (see ``make_env``).
        asynchronous: one process per env (``AsyncVectorEnv``); default: only when ``num_envs > 1``.
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        seed: int,
        life_loss_terminal: bool,
        max_frames_per_episode: int = 108_000,
        noop_max: int = 30,
        frame_skip: int = 4,
        size: int = 64,
        asynchronous: bool | None = None,
        action_repeat: int = DEFAULT_ACTION_REPEAT,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.game = resolve_game(game)
        self.num_envs = num_envs
        self.life_loss_terminal = life_loss_terminal
        # Seeds go through the factories (not reset(seed=...)) so that only the first reset is seeded.
        env_fns = [
            partial(
                make_env,
                self.game,
                seed + i,
                max_frames_per_episode=max_frames_per_episode,
                noop_max=noop_max,
                frame_skip=frame_skip,
                size=size,
                action_repeat=action_repeat,
            )
            for i in range(num_envs)
        ]
        use_processes = num_envs > 1 if asynchronous is None else asynchronous
        vector_cls = gym.vector.AsyncVectorEnv if use_processes else gym.vector.SyncVectorEnv
        same_step = gym.vector.AutoresetMode.SAME_STEP
        self._envs: gym.vector.SyncVectorEnv | gym.vector.AsyncVectorEnv = vector_cls(
            env_fns, autoreset_mode=same_step
        )
        self.action_space = self._envs.single_action_space
        """One env's action space: ``Discrete(num_actions)``, or a ``Box`` in ``[-1, 1]^D``."""
        self.continuous = isinstance(self.action_space, gym.spaces.Box)
        self.action_meanings: list[str] = list(self._envs.get_attr("action_meanings")[0])
        """The names of the discrete actions, or of a continuous action's components."""

    @property
    def num_actions(self) -> int:
        """The number of discrete actions, or of the components D of a continuous action."""
        if self.continuous:
            return int(self.action_space.shape[0])  # type: ignore[index]
        return len(self.action_meanings)

    def reset(self) -> np.ndarray:
        """Reset every env; returns the (n, size, size, 3) uint8 observations."""
        obs, _ = self._envs.reset()
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every env with its action (shape (n,), integers in ``[0, num_actions)``; (n, D) floats in
        ``[-1, 1]`` for a continuous game)."""
        obs, reward, terminated, truncated, info = self._envs.step(np.asarray(actions))
        final_obs = obs.copy()
        life_loss = np.asarray(info["life_loss"], dtype=bool).copy()
        ended = np.flatnonzero(terminated | truncated)
        if ended.size:
            # SAME_STEP autoreset: obs/info of ended envs already come from the reset, the last step is in
            # "final_obs"/"final_info".
            final_obs[ended] = np.stack([info["final_obs"][i] for i in ended])
            life_loss[ended] = np.asarray(info["final_info"]["life_loss"], dtype=bool)[ended]
        if self.life_loss_terminal:
            # The game goes on after a life loss, so the current observation is the episode's final frame,
            # which final_obs already holds where the game itself did not end.
            terminated = terminated | life_loss
        return StepResult(
            obs=obs,
            reward=np.asarray(reward, dtype=np.float32),
            terminated=np.asarray(terminated, dtype=bool),
            truncated=np.asarray(truncated, dtype=bool),
            final_obs=final_obs,
            life_loss=life_loss,
        )

    def get_states(self) -> list[dict[str, Any]]:
        """The state of every env (see ``Atari100kPreprocessing.get_state``), for ``set_states``."""
        return list(self._envs.call("get_state"))

    def set_states(self, states: list[dict[str, Any]]) -> None:
        """Continue exactly where ``get_states`` was called, in envs made with the same settings.

        The vector env itself holds nothing between steps (same-step autoreset), so the envs' states suffice.
        """
        if len(states) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} env states, got {len(states)}")
        # set_attr with a list hands env i its own value (``call`` would pass the same arguments to all).
        self._envs.set_attr("state", list(states))

    def close(self) -> None:
        self._envs.close()

    def __enter__(self) -> AtariEnvs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
