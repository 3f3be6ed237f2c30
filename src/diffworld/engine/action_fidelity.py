"""Action fidelity: whether an engine makes each action do what the real game does with it.

The dataset's real game is rebuilt from its ``source`` (``diffworld engine record`` stores the Gymnasium id,
its ``make`` arguments, the policy and the seed) and played anew with uniformly random actions, from a seed
that is not the recording's: held-out play. Every ``every`` steps of an episode, once it holds the engine's
``context_length`` frames, the game is probed: its state is cloned, each action of its discrete action space
is stepped from that state, and the state restored (``get_state`` / ``set_state`` where the env has them, as
diffworld's Catch and Atari 100k envs do, else the ALE's ``cloneState(include_rng=True)`` / ``restoreState``
with the env's ``np_random``: sticky actions draw from the emulator's RNG, so each action meets the same
draws). The next frames, compared exactly, sort the actions into distinct real outcomes; a state with a single
outcome (no action changes anything) is skipped.

At each kept state the engine predicts the next frame for every action in one batch, from the same context:
the last ``num_cond`` real frames made low-resolution as in its training (``EngineSamplers.low_res_of``), the
real actions taken after all but the last of them, and the action probed; its upsampler, where it has one,
gets the last real full-resolution frames. Each action is a trial, a success where the prediction is closer
(mean squared error) to the real outcome of that action than to every other distinct real outcome (a tie
fails): at full resolution through the upsampler, and at low resolution against the real outcomes made
low-resolution. ``fidelity`` is successes over trials (the upsampled one where there is an upsampler);
``chance``, the mean over trials of one over the state's number of distinct outcomes, is what a guess among
the outcomes scores. Play stops after ``states`` kept states (or ``50 * states * every + 1000`` steps).

The measurement itself (``evaluate_action_fidelity``) is ``evaluation/action_fidelity.py``'s, which the
agent's continuous-control action fidelity shares; what stays here is the engine's real game.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.data.actions import ActionSpec
from diffworld.data.folder_store import EngineDataset
from diffworld.engine.convert.from_gym import PolicyLoader, as_rgb, load_policy
from diffworld.engine.imagine import EngineSamplers
from diffworld.errors import UserError
from diffworld.evaluation.action_fidelity import (
    FIDELITY_EVERY,
    FIDELITY_STATES,
    SEED_OFFSET,
    ProbeGame,
    evaluate_action_fidelity,
)

__all__ = [
    "FIDELITY_EVERY",
    "FIDELITY_STATES",
    "SEED_OFFSET",
    "GymGame",
    "ProbeGame",
    "engine_action_fidelity",
    "evaluate_action_fidelity",
    "fidelity_seed",
    "format_fidelity",
    "has_game",
    "open_game",
]

_MAX_SEED = 2**32 - 1


class GymGame:
    """A Gymnasium env with a ``Discrete`` action space whose state can be cloned (see the module docstring);
    its frames are its observations when they are RGB images (unless ``use_render``), else ``render()``, as
    ``diffworld engine record`` records them."""

    def __init__(self, env: Any, name: str, use_render: bool = False) -> None:
        import gymnasium as gym

        from diffworld.engine.convert.from_gym import action_spec_for, env_action_meanings

        self.env = env
        self.name = name
        space = env.action_space
        if not isinstance(space, gym.spaces.Discrete):
            raise UserError(
                f"{name} has the action space {space}: action fidelity probes every action of a Discrete one"
            )
        self.spec, self._to_vector = action_spec_for(space)
        self._start = int(space.start)
        self._n = int(space.n)
        meanings = env_action_meanings(env)
        self.action_names = (
            meanings if meanings and len(meanings) == self._n else [str(a) for a in range(self._n)]
        )
        self._layer, self._save, self._restore = _state_handle(env, name)
        obs, _ = env.reset()
        self._from_obs = not use_render and as_rgb(obs) is not None
        self.frame_size: tuple[int, int] = self._frame(obs, env).shape[:2]

    @property
    def num_actions(self) -> int:
        return self._n

    def action_vector(self, action: int) -> np.ndarray:
        return np.asarray(self._to_vector(self._start + action), dtype=np.float32)

    def _frame(self, obs: Any, holder: Any) -> np.ndarray:
        frame = as_rgb(obs if self._from_obs else holder.render())
        if frame is None:
            raise UserError(f"{self.name} gave a frame that is not an RGB image")
        return np.array(frame, copy=True)

    def reset(self, seed: int | None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        return self._frame(obs, self.env)

    def step(self, action: int) -> tuple[np.ndarray, bool]:
        obs, _, terminated, truncated, _ = self.env.step(self._start + action)
        return self._frame(obs, self.env), bool(terminated or truncated)

    def outcomes(self) -> list[np.ndarray]:
        state = self._save()
        frames = []
        try:
            for action in range(self._n):
                self._restore(state)
                obs, *_ = self._layer.step(self._start + action)
                frames.append(self._frame(obs, self._layer))
        finally:
            self._restore(state)
        return frames

    def close(self) -> None:
        self.env.close()


def _state_handle(env: Any, name: str) -> tuple[Any, Callable[[], Any], Callable[[Any], None]]:
    """(the layer of ``env`` to step when probing, save its state, restore it): the outermost layer with
    ``get_state`` / ``set_state``, else the ALE env inside (its emulator with its RNG, and ``np_random``)."""
    import gymnasium as gym

    layer = env
    while True:
        get, put = getattr(layer, "get_state", None), getattr(layer, "set_state", None)
        if callable(get) and callable(put):
            return layer, get, put
        if not isinstance(layer, gym.Wrapper):
            break
        layer = layer.env
    inner = env.unwrapped
    ale = getattr(inner, "ale", None)
    if ale is None:
        raise UserError(
            f"{name}'s state cannot be cloned (it has no get_state/set_state and is no ALE game): action "
            "fidelity needs to step every action from the same state"
        )

    def save() -> Any:
        return ale.cloneState(include_rng=True), inner.np_random.bit_generator.state

    def restore(state: Any) -> None:
        ale.restoreState(state[0])
        inner.np_random.bit_generator.state = state[1]

    return inner, save, restore


def _recorded_from(dataset: EngineDataset) -> Mapping[str, Any] | None:
    """The dataset's ``source`` if ``diffworld engine record`` made it (it names a Gymnasium env)."""
    source = dataset.source
    if isinstance(source, dict) and source.get("converter") == "gym" and isinstance(source.get("env"), str):
        return source
    return None


def has_game(dataset: EngineDataset) -> bool:
    """Whether the dataset names the Gymnasium env it was recorded from."""
    return _recorded_from(dataset) is not None


def open_game(dataset: EngineDataset, spec: ActionSpec, policy_loader: PolicyLoader | None = None) -> GymGame:
    """The real game of ``dataset``, rebuilt from its ``source``; one-line errors where there is none, it
    cannot be made, or its actions or frames are not the dataset's (``spec``: the engine's actions). A
    dataset recorded by a diffworld agent needs ``policy_loader`` (``from_gym.PolicyLoader``), which reads
    the agent's game settings."""
    source = _recorded_from(dataset)
    if source is None:
        raise UserError(
            f"{dataset.folder} was not recorded from a Gymnasium environment (its dataset.json 'source' "
            "names none): action fidelity needs the real game; evaluate with --fidelity-states 0"
        )
    env_id = str(source["env"])
    policy = source.get("policy", "random")
    kwargs = source.get("env_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise UserError(f"{dataset.folder}: the source's env_kwargs must be an object, got {kwargs!r}")
    if policy == "random":
        from diffworld.engine.convert.from_gym import _make_gym_env

        game = GymGame(_make_gym_env(env_id, kwargs), env_id)
    else:
        agent_env = _agent_game_env(Path(str(policy)), env_id, policy_loader)
        game = GymGame(agent_env, env_id, use_render=True)
    try:
        if game.spec != spec:
            raise UserError(
                f"{env_id} has the actions {game.spec.describe()}, but the engine takes {spec.describe()}"
            )
        if game.frame_size != dataset.frame_size:
            (h, w), (dh, dw) = game.frame_size, dataset.frame_size
            why = "" if "env_kwargs" in source else " (its source keeps no env_kwargs: record it again)"
            raise UserError(
                f"{env_id} made with {kwargs or 'no arguments'} gives frames of {h}x{w}, but "
                f"{dataset.folder} holds {dh}x{dw}{why}"
            )
    except UserError:
        game.close()
        raise
    return game


def _agent_game_env(agent: Path, game: str, policy_loader: PolicyLoader | None) -> Any:
    """The env a diffworld agent recorded its game in (``from_gym._make_agent_env``): the settings of the
    agent's configuration."""
    from diffworld.envs.make import make_env

    if not agent.exists():
        raise UserError(
            f"the dataset was recorded by the agent {agent}, which is gone: action fidelity needs its game's "
            "settings; evaluate with --fidelity-states 0"
        )
    env = load_policy(policy_loader, agent, "cpu", 0).env
    return make_env(
        game,
        max_frames_per_episode=env.max_frames_per_episode,
        noop_max=env.noop_max,
        frame_skip=env.frame_skip,
        size=env.size,
        action_repeat=env.action_repeat,
    )


def fidelity_seed(dataset: EngineDataset, seed: int | None) -> int:
    """The seed of the held-out play: ``seed``, which must not be the recording's, else the recording's plus
    ``SEED_OFFSET``."""
    source = _recorded_from(dataset) or {}
    recorded = source.get("seed")
    recorded = recorded if isinstance(recorded, int) else None
    if seed is None:
        return ((recorded or 0) + SEED_OFFSET) % (_MAX_SEED + 1)
    if seed == recorded:
        raise UserError(
            f"--fidelity-seed {seed} is the seed {dataset.folder} was recorded with: held-out play needs "
            "another"
        )
    return seed


def format_fidelity(report: Mapping[str, Any]) -> str:
    """``report["action_fidelity"]`` in a few lines."""
    if "skipped" in report:
        return f"Action fidelity: not measured ({report['skipped']})"
    if not report["trials"]:
        return (
            f"Action fidelity on {report['env']}: no state where the actions' outcomes differ in "
            f"{report['steps']} steps"
        )

    def pct(x: float) -> str:
        return f"{100 * x:.1f} %"

    figures = [
        f"{pct(report[res]['fidelity'])} {label}"
        for res, label in (("full_res", "upsampled"), ("low_res", "low-res"))
        if res in report
    ]
    lines = [
        f"Action fidelity on {report['env']} (held-out play, seed {report['seed']}): {', '.join(figures)}; "
        f"chance {pct(report['chance'])}; {report['trials']} trials in {report['states']} states "
        f"({report['skipped_states']} skipped: one outcome)",
    ]
    main = report["resolution"]
    per = ", ".join(
        f"{name} {counts[main]}/{counts['trials']}" for name, counts in report["per_action"].items()
    )
    lines.append(f"  per action ({'upsampled' if main == 'full_res' else 'low-res'}): {per}")
    if report["nondeterministic_steps"]:
        lines.append(
            f"  warning: {report['nondeterministic_steps']} played steps differed from the probed outcome of "
            "their action (the env's state is not fully restored)"
        )
    return "\n".join(lines)


def engine_action_fidelity(
    engine: EngineSamplers,
    dataset: EngineDataset,
    game: GymGame,
    *,
    states: int = FIDELITY_STATES,
    every: int = FIDELITY_EVERY,
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """``evaluate_action_fidelity`` on the real game of ``dataset`` (``open_game``), seeded by
    ``fidelity_seed``, with the env it was made of."""
    play_seed = fidelity_seed(dataset, seed)
    source = _recorded_from(dataset) or {}
    report = evaluate_action_fidelity(
        engine,
        game,
        states=states,
        every=every,
        seed=play_seed,
        device=device,
        generator=torch.Generator(device).manual_seed(play_seed),
    )
    return {
        "env": game.name,
        "env_kwargs": source.get("env_kwargs") or {},
        "recorded_by": source.get("policy", "random"),
        **report,
    }
