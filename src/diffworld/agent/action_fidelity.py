"""Does the world model follow the action? Action fidelity of a continuous-control agent's world model
(issue 29, point 5), part of ``diffworld wm-eval``.

The measurement is the engine's (``evaluation/action_fidelity.py``, one implementation for both products):
the real game is played, and at a state every ``every`` steps each of K probe actions is stepped from that
same state (``get_state`` / ``set_state``: MuJoCo's state for DeepMind Control, the replayed seed and actions
for a ``gym:`` env, CatchContinuous's own), while the world model predicts the next frame for each of the K
actions from the same real context. A trial succeeds where the prediction is closer (mean squared error) to
the real outcome of its own action than to those of the other actions; states where the K real outcomes do
not differ are skipped. ``fidelity`` is the share of successes; chance is 1 / K where all K outcomes differ.

The K probe actions are fixed vectors spread in ``[-1, 1]^D`` (``probe_actions``: K points picked greedily
far from each other among uniform draws, seeded), so that they are told apart by what they do, not by
noise. The game is played with actions drawn uniformly among the K (seeded), from a fresh episode seeded
apart from the run's: its states are those of a random policy near the start of episodes. The world model is
the run's denoiser with the sampler settings being evaluated; its context is the last L real frames and the
probe actions taken after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from diffworld.config.schema import Config, SamplerConfig
from diffworld.data.actions import box_spec, format_action_vector
from diffworld.envs.make import make_env
from diffworld.errors import UserError
from diffworld.evaluation.action_fidelity import FIDELITY_EVERY, evaluate_action_fidelity
from diffworld.models.diffusion import Denoiser
from diffworld.models.diffusion.denoiser import FrameSampler

PROBE_ACTIONS = 5
"""K: the probe actions stepped from every state (chance 1 / K)."""
AGENT_FIDELITY_STATES = 16
"""States probed by default in an agent's ``wm-eval`` (``WmEvalSettings.fidelity_states``); an engine's
evaluation has its own default, ``evaluation.action_fidelity.FIDELITY_STATES``."""
_CANDIDATES = 1024


def probe_actions(dim: int, k: int, seed: int) -> np.ndarray:
    """(k, dim) float32 vectors in ``[-1, 1]^dim``, spread apart: the first drawn uniformly, each next one the
    uniform draw (among ``_CANDIDATES``) farthest from those already picked; ``seed`` fixes them."""
    if k < 2 or dim < 1:
        raise ValueError(f"need at least 2 probe actions of at least 1 component, got {k} of {dim}")
    rng = np.random.default_rng(seed)
    candidates = rng.uniform(-1.0, 1.0, (_CANDIDATES, dim))
    picked = [0]
    distance = np.linalg.norm(candidates - candidates[0], axis=1)
    for _ in range(k - 1):
        best = int(distance.argmax())
        picked.append(best)
        distance = np.minimum(distance, np.linalg.norm(candidates - candidates[best], axis=1))
    return candidates[picked].astype(np.float32)


class ContinuousProbeGame:
    """A continuous-control game (``envs.make.make_env``) with ``num_actions`` probe actions
    (``probe_actions``, seeded by ``seed``): the ``ProbeGame`` of ``evaluation.action_fidelity``, action
    ``i`` being the vector ``actions[i]``."""

    def __init__(self, cfg: Config, num_actions: int, seed: int) -> None:
        self.env = make_env(
            cfg.game,
            max_frames_per_episode=cfg.env.max_frames_per_episode,
            noop_max=cfg.env.noop_max,
            frame_skip=cfg.env.frame_skip,
            size=cfg.env.size,
            action_repeat=cfg.env.action_repeat,
        )
        self.name = cfg.game
        space = self.env.action_space
        if not isinstance(space, gym.spaces.Box):
            self.env.close()
            raise UserError(f"{cfg.game} has discrete actions: this action fidelity probes continuous ones")
        self.actions = probe_actions(int(space.shape[0]), num_actions, seed)
        self.spec = box_spec(self.actions.shape[1])
        self.action_names = [format_action_vector(a) for a in self.actions]
        self._get_state = self.env.get_wrapper_attr("get_state")
        self._set_state = self.env.get_wrapper_attr("set_state")

    @property
    def num_actions(self) -> int:
        return len(self.actions)

    def action_vector(self, action: int) -> np.ndarray:
        return self.actions[action]

    def reset(self, seed: int | None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        return np.array(obs, copy=True)

    def step(self, action: int) -> tuple[np.ndarray, bool]:
        obs, _, terminated, truncated, _ = self.env.step(self.actions[action])
        return np.array(obs, copy=True), bool(terminated or truncated)

    def outcomes(self) -> list[np.ndarray]:
        state = self._get_state()
        frames = []
        try:
            for action in range(self.num_actions):
                self._set_state(state)
                frames.append(self.step(action)[0])
        finally:
            self._set_state(state)
        return frames

    def close(self) -> None:
        self.env.close()


@dataclass(frozen=True)
class WorldModelSamplers:
    """An agent's world model as ``evaluation.action_fidelity.FidelityModel`` sees one: no upsampler, and
    frames taken as they are (the agent's denoiser works at the game's resolution)."""

    predictor: FrameSampler
    num_cond: int
    upsampler: None = None
    num_cond_full: int = 1

    @property
    def context_length(self) -> int:
        return self.num_cond

    def low_res_of(self, frames: Tensor) -> Tensor:
        return frames


def agent_action_fidelity(
    denoiser: Denoiser,
    sampler_cfg: SamplerConfig,
    cfg: Config,
    *,
    seed: int,
    states: int = AGENT_FIDELITY_STATES,
    every: int = FIDELITY_EVERY,
    num_actions: int = PROBE_ACTIONS,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The action fidelity of the continuous-control world model ``denoiser`` (with ``sampler_cfg``) on
    ``cfg.game`` (see the module docstring), as a JSON-ready dict: ``evaluate_action_fidelity``'s report
    (``fidelity`` is its ``low_res`` one: the world model's own resolution) with ``env``, ``probe_actions``
    and ``num_probe_actions``. ``seed`` fixes the probe actions, the play and the world model's noise."""
    game = ContinuousProbeGame(cfg, num_actions, seed)
    try:
        report = evaluate_action_fidelity(
            WorldModelSamplers(denoiser.sampler(sampler_cfg), denoiser.cfg.num_cond_frames),
            game,
            states=states,
            every=every,
            seed=seed,
            device=device,
            generator=torch.Generator(device).manual_seed(seed),
        )
    finally:
        game.close()
    return {
        "env": cfg.game,
        "num_probe_actions": num_actions,
        "probe_actions": game.actions.tolist(),
        **report,
    }


def format_action_fidelity(report: dict[str, Any]) -> str:
    """One line: the fidelity against chance, trials and states."""
    if not report["trials"]:
        return (
            f"action fidelity: no state where the {report['num_probe_actions']} probe actions' outcomes "
            f"differ in {report['steps']} steps"
        )
    line = (
        f"action fidelity {100 * report['fidelity']:.1f} % (chance {100 * report['chance']:.1f} %), "
        f"{report['trials']} trials in {report['states']} states"
    )
    if report["nondeterministic_steps"]:
        line += (
            f"; warning: {report['nondeterministic_steps']} played steps differed from their probed outcome"
        )
    return line
