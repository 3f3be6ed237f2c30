"""Load a trained agent from a run folder (its last checkpoint) or from an exported agent folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffworld.agent import INFO_FILE, Agent, load_agent
from diffworld.agent.model import saved_actions
from diffworld.config.loading import load_config_file
from diffworld.config.schema import Config
from diffworld.envs.make import game_num_actions
from diffworld.errors import UserError
from diffworld.run.checkpoint import CheckpointError, load_checkpoint
from diffworld.run.folder import CONFIG_FILE, checkpoint_dir
from diffworld.utils.device import resolve_device


@dataclass
class TrainedAgent:
    agent: Agent
    cfg: Config
    num_actions: int
    device: torch.device
    epoch: int | None
    env_steps: int
    train_seconds: float | None


class GameMismatchError(UserError, ValueError):
    """An agent (or checkpoint) that was trained on another game than its folder says."""


def check_game_actions(source: Path, game: str, num_actions: int) -> None:
    """Refuse an agent whose number of actions is not ``game``'s (the environment's, asked now): it was
    trained on another game, which would pick actions the game does not have or mean other ones."""
    actual = game_num_actions(game)
    if actual != num_actions:
        raise GameMismatchError(
            f"{source}: the agent was trained with {num_actions} actions but {game} has {actual}: it was "
            f"trained on another game than {game}, the game its folder names (edited by hand?)."
        )


def load_trained_agent(source: Path, device: str = "auto") -> TrainedAgent:
    """The agent of a run folder (weights of its last checkpoint) or of an exported agent folder.

    A live run is read as of its last complete checkpoint (see ``load_checkpoint``); nothing is written.
    The agent's number of actions is checked against its game's environment.
    """
    dev = resolve_device(device)
    if (source / INFO_FILE).is_file():
        agent, cfg, metadata = load_agent(source, device=dev)
        check_game_actions(source, cfg.game, agent.actor_critic.num_actions)
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
    state, used = load_checkpoint(checkpoint_dir(source), ("agent", "num_actions", "counters", "collector"))
    num_actions = int(state["num_actions"])
    if state.get("game", cfg.game) != cfg.game:  # older checkpoints lack "game"
        raise GameMismatchError(
            f"{used} was saved by a run of {state['game']}, but {source / CONFIG_FILE} says {cfg.game} "
            f"(edited by hand?): put game: {state['game']} back."
        )
    check_game_actions(source, cfg.game, num_actions)
    # Continuous agents record their action space (its num_actions components within [-1, 1]).
    actions = saved_actions(num_actions, state.get("action_space"), str(used), CheckpointError, "")
    agent = Agent.build(cfg, actions)
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
