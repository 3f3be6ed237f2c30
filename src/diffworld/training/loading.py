"""Load a trained agent from a run folder (its last checkpoint) or from an exported agent folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffworld.agent import INFO_FILE, Agent, load_agent
from diffworld.config.loading import load_config_file
from diffworld.config.schema import Config
from diffworld.errors import UserError
from diffworld.training.checkpoint import load_checkpoint
from diffworld.training.run_dir import CONFIG_FILE, checkpoint_dir
from diffworld.training.trainer import resolve_device


@dataclass
class TrainedAgent:
    agent: Agent
    cfg: Config
    num_actions: int
    device: torch.device
    epoch: int | None
    env_steps: int
    train_seconds: float | None


def load_trained_agent(source: Path, device: str = "auto") -> TrainedAgent:
    """The agent of a run folder (weights of its last checkpoint) or of an exported agent folder."""
    dev = resolve_device(device)
    if (source / INFO_FILE).is_file():
        agent, cfg, metadata = load_agent(source, device=dev)
        return TrainedAgent(
            agent=agent,
            cfg=cfg,
            num_actions=agent.actor_critic.num_actions,
            device=dev,
            epoch=metadata.get("epoch"),
            env_steps=int(metadata.get("env_steps", 0)),
            train_seconds=None,
        )
    if not (source / CONFIG_FILE).is_file():
        raise UserError(
            f"{source} is neither a run folder (no {CONFIG_FILE}) nor an agent folder (no {INFO_FILE})."
        )
    cfg = load_config_file(source / CONFIG_FILE)
    state, _ = load_checkpoint(checkpoint_dir(source), ("agent", "num_actions", "counters", "collector"))
    num_actions = int(state["num_actions"])
    agent = Agent.build(cfg, num_actions)
    agent.load_state_dict(state["agent"])
    agent.to(dev).eval()
    return TrainedAgent(
        agent=agent,
        cfg=cfg,
        num_actions=num_actions,
        device=dev,
        epoch=int(state["counters"]["epoch"]),
        # A model-free run's real steps were taken by its actor-critic's rollouts (``training.model_free``).
        env_steps=int(state["collector"]["num_steps_total"])
        + int(state.get("model_free", {}).get("num_steps_total", 0)),
        train_seconds=float(state["counters"]["train_seconds"]),
    )
