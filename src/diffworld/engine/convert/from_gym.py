"""Record an engine dataset by playing a Gymnasium environment: a random policy, or a diffworld agent.

Frames are recorded at the environment's full resolution: its observation when that is an image (an ALE
game made with ``obs_type="rgb"`` gives the 210x160 screen), else its ``render()`` in ``rgb_array`` mode. A
diffworld agent (an agent or run folder) plays its own game through diffworld's Atari 100k preprocessing,
seeing the 64x64 observations it was trained on, while the raw screen (``render()``) is recorded.

Episodes end at termination or truncation, and are cut every ``max_episode_steps`` frames so that no file
grows without bound (a cut episode goes on as the next one, from the frame that follows). An episode that
ends keeps its final frame, whose action, followed by no frame, repeats the last one. Actions are mapped from
the action space: ``Discrete`` -> one discrete component, ``MultiBinary`` -> keys, ``MultiDiscrete`` -> one
discrete component per entry, a bounded ``Box`` -> one continuous component per entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from diffworld.config.schema import EnvConfig
from diffworld.data.actions import ActionComponent, ActionSpec, continuous, discrete, keys
from diffworld.data.folder_store import EngineDatasetWriter
from diffworld.errors import UserError

ActionMap = Callable[[Any], np.ndarray]


class Policy(Protocol):
    def reset(self) -> None:
        """A new episode starts."""

    def act(self, obs: Any) -> Any:
        """The action to take after ``obs``."""


class LoadedPolicy(Policy, Protocol):
    """A trained diffworld agent as a policy (``agent.policy.AgentPolicy``): it plays ``game`` with the
    environment settings it was trained with."""

    game: str
    env: EnvConfig


PolicyLoader = Callable[[Path, str, int], LoadedPolicy]
"""(agent or run folder, device, seed) -> its policy. The command line passes the agent's
(``agent.policy.load_agent_policy``): the engine imports nothing of the agent."""


class NoPolicyLoaderError(UserError):
    """A diffworld agent's game was to be played or rebuilt, but no ``PolicyLoader`` was given (a call from
    Python: the command line always passes one)."""


def load_policy(loader: PolicyLoader | None, source: Path, device: str, seed: int) -> LoadedPolicy:
    """``loader(source, device, seed)``; a one-line ``NoPolicyLoaderError`` when no loader was given."""
    if loader is None:
        raise NoPolicyLoaderError(
            f"{source} is a diffworld agent: playing or rebuilding its game needs an agent policy loader "
            "(the diffworld command passes one; from Python, pass "
            "policy_loader=diffworld.agent.policy.load_agent_policy)"
        )
    return loader(source, device, seed)


def action_spec_for(space: gym.Space[Any]) -> tuple[ActionSpec, ActionMap]:
    """The ``ActionSpec`` of a Gymnasium action space, and the map from its actions to action vectors."""
    if isinstance(space, gym.spaces.Discrete):
        start = int(space.start)
        return ActionSpec.of(discrete("action", int(space.n))), lambda a: np.array([int(a) - start])
    if isinstance(space, gym.spaces.MultiBinary) and len(space.shape) == 1:
        spec = ActionSpec.of(keys([f"button{i}" for i in range(space.shape[0])]))
        return spec, lambda a: np.asarray(a).reshape(-1)
    if isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1:
        starts = np.asarray(space.start)
        components: list[ActionComponent] = [discrete(f"action{i}", int(n)) for i, n in enumerate(space.nvec)]
        return ActionSpec(tuple(components)), lambda a: np.asarray(a) - starts
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise UserError(f"the action space {space} is unbounded: an engine dataset needs finite bounds")
        names = ["action"] if low.size == 1 else [f"action{i}" for i in range(low.size)]
        components = [continuous(n, float(lo), float(hi)) for n, lo, hi in zip(names, low, high, strict=True)]
        return ActionSpec(tuple(components)), lambda a: np.asarray(a, dtype=np.float64).reshape(-1)
    raise UserError(
        f"the action space {space} has no engine action layout (Discrete, MultiBinary, MultiDiscrete or a "
        "bounded float Box)"
    )


def as_rgb(image: Any) -> np.ndarray | None:
    """``image`` as (H, W, 3) uint8 RGB if it is an RGB or grayscale uint8 image, else None."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        return None
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    return None


class RandomPolicy:
    """Uniformly random actions from the action space (seeded)."""

    def __init__(self, space: gym.Space[Any], seed: int) -> None:
        self.space = space
        space.seed(seed)

    def reset(self) -> None:
        pass

    def act(self, obs: Any) -> Any:
        return self.space.sample()


def _make_gym_env(env_id: str, env_kwargs: Mapping[str, Any]) -> gym.Env[Any, Any]:
    import ale_py

    import diffworld.envs.catch  # noqa: F401  (registers diffworld/Catch-v0)

    gym.register_envs(ale_py)
    try:
        return gym.make(env_id, render_mode="rgb_array", **env_kwargs)
    except gym.error.Error as e:
        raise UserError(f"cannot make the Gymnasium environment {env_id!r}: {e}") from None
    except TypeError as e:
        raise UserError(f"the Gymnasium environment {env_id!r} does not take these arguments: {e}") from None


def env_action_meanings(env: gym.Env[Any, Any]) -> list[str] | None:
    for holder in (env, env.unwrapped):
        meanings = getattr(holder, "action_meanings", None)
        if isinstance(meanings, list):
            return [str(m) for m in meanings]
        getter = getattr(holder, "get_action_meanings", None)
        if callable(getter):
            return [str(m) for m in getter()]
    return None


def record_gym(
    out: Path,
    steps: int,
    *,
    env_id: str | None = None,
    policy: str = "random",
    seed: int = 0,
    max_episode_steps: int = 1000,
    test_fraction: float = 0.1,
    env_kwargs: Mapping[str, Any] | None = None,
    device: str = "cpu",
    resume: bool = False,
    policy_loader: PolicyLoader | None = None,
) -> Path:
    """Play until the engine dataset ``out`` holds ``steps`` frames (or a few more); return ``out``.

    ``policy`` is ``"random"`` (needs ``env_id``) or the path of a diffworld agent or run folder (its game is
    played; ``env_id``, if given, must be that game), loaded by ``policy_loader``. ``resume`` goes on
    recording into an unfinished ``out`` (each episode's seed is ``seed`` plus its number, so a resumed
    recording does not repeat itself).
    """
    if steps < 1 or max_episode_steps < 1:
        raise UserError(f"steps and max_episode_steps must be >= 1, got {steps} and {max_episode_steps}")
    agent: LoadedPolicy | None = None
    if policy == "random":
        if env_id is None:
            raise UserError("give the environment to record (env=<Gymnasium id>) for the random policy")
        env = _make_gym_env(env_id, env_kwargs or {})
        frame_of = _frame_source(env, env_id)
    else:
        agent = load_policy(policy_loader, Path(policy), device, seed)
        env = _make_agent_env(agent, env_id, env_kwargs)
        frame_of = _frame_source(env, agent.game, use_render=True)
    try:
        spec, to_vector = action_spec_for(env.action_space)
        obs, _ = env.reset(seed=seed)
        source = {
            "converter": "gym",
            "env": env_id if agent is None else agent.game,
            "policy": policy if agent is None else str(Path(policy).resolve()),
            "seed": seed,
            "env_kwargs": dict(env_kwargs or {}) if agent is None else {},
            "action_meanings": env_action_meanings(env),
        }
        writer = EngineDatasetWriter(out, spec, frame_of(obs).shape[:2], source, resume=resume)
        if writer.num_episodes:
            obs, _ = env.reset(seed=seed + writer.num_episodes)
        chosen: Policy = (
            agent if agent is not None else RandomPolicy(env.action_space, seed + writer.num_episodes)
        )
        chosen.reset()
        frames: list[np.ndarray] = []
        actions: list[np.ndarray] = []
        while writer.num_steps + len(frames) < steps:
            action = chosen.act(obs)
            frames.append(frame_of(obs))
            actions.append(to_vector(action))
            obs, _, terminated, truncated, _ = env.step(action)
            ended = bool(terminated or truncated)
            stop = writer.num_steps + len(frames) >= steps
            if ended or stop or len(frames) >= max_episode_steps:
                if ended or stop:  # the frame after the last action is real: keep it
                    frames.append(frame_of(obs))
                    actions.append(actions[-1])
                writer.add_episode(np.stack(frames), np.stack(actions).astype(np.float32))
                frames, actions = [], []
                if ended:
                    obs, _ = env.reset()
                    chosen.reset()
        return writer.finish(test_fraction)
    finally:
        env.close()


def _make_agent_env(
    agent: LoadedPolicy, env_id: str | None, env_kwargs: Mapping[str, Any] | None
) -> gym.Env[Any, Any]:
    from diffworld.envs.make import make_env
    from diffworld.games import resolve_game

    game = agent.game
    if env_id is not None and _game_or_none(env_id) != resolve_game(game):
        raise UserError(f"the agent plays {game}, not {env_id}: leave env out or name its game")
    if env_kwargs:
        raise UserError(
            "an agent plays its game with the settings it was trained with: give no env arguments"
        )
    env = agent.env
    made: gym.Env[Any, Any] = make_env(
        game,
        max_frames_per_episode=env.max_frames_per_episode,
        noop_max=env.noop_max,
        frame_skip=env.frame_skip,
        size=env.size,
        action_repeat=env.action_repeat,
    )
    return made


def _game_or_none(name: str) -> str | None:
    from diffworld.games import resolve_game

    try:
        return resolve_game(name)
    except UserError:
        return None


def _frame_source(env: gym.Env[Any, Any], name: str, use_render: bool = False) -> Callable[[Any], np.ndarray]:
    """How to get the frame to record from an observation: the observation itself if it is an image (and
    ``use_render`` is False), else ``env.render()``."""
    obs, _ = env.reset()
    from_obs = not use_render and as_rgb(obs) is not None
    if not from_obs and as_rgb(env.render()) is None:
        raise UserError(
            f"{name} has no image observations and renders no rgb_array image: there are no frames to record"
        )

    def frame_of(o: Any) -> np.ndarray:
        frame = as_rgb(o if from_obs else env.render())
        if frame is None:
            raise UserError(f"{name} gave a frame that is not an image midway through an episode")
        return frame

    return frame_of
