"""A trained agent as the policy that records an engine dataset (``diffworld engine record policy=<folder>``)
and whose game settings action fidelity rebuilds: the engine's ``PolicyLoader``, which the command line hands
to the engine, since the engine imports nothing of the agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.agent.trained import load_trained_agent
from diffworld.data.frames import frames_to_tensor


class AgentPolicy:
    """A diffworld agent acting on its 64x64 observations, with its recurrent state and test-time settings
    (an ``engine.convert.from_gym.LoadedPolicy``)."""

    def __init__(self, source: Path, device: str, seed: int) -> None:
        trained = load_trained_agent(source, device)
        self.game = trained.cfg.game
        self.env = trained.cfg.env
        self.device = trained.device
        self.actor_critic = trained.agent.actor_critic
        self.epsilon = trained.cfg.collection.test_epsilon
        self.temperature = trained.cfg.policy_temperature()
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.state: Any = None

    def reset(self) -> None:
        self.state = None

    def act(self, obs: Any) -> Any:
        """The action for ``obs``: an index (int), or for a continuous-control game a float32 vector in
        ``[-1, 1]^D`` (the game's env, made by ``make_env``, rescales it)."""
        x = frames_to_tensor(np.asarray(obs)[None], self.device)
        action, self.state = self.actor_critic.act(
            x, self.state, self.epsilon, self.temperature, self.generator
        )
        if self.actor_critic.policy.continuous:
            return action[0].cpu().numpy().astype(np.float32)
        return int(action.item())


def load_agent_policy(source: Path, device: str, seed: int) -> AgentPolicy:
    """The agent of the agent or run folder ``source`` on ``device``, its actions drawn from ``seed`` (an
    ``engine.convert.from_gym.PolicyLoader``)."""
    return AgentPolicy(source, device, seed)
