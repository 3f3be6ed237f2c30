"""Import an agent saved by the official DIAMOND code (github.com/eloialonso/diamond) as an agent folder.

The official code saves its agent as one ``torch.save``'d state dict whose keys are prefixed by the model:
``denoiser.``, ``rew_end_model.`` and ``actor_critic.`` (``Agent.state_dict()``: the published
``atari_100k/models/<Game>.pt`` files and a run's ``checkpoints/agent_versions/agent_epoch_*.pt``). The
networks are the same as diffworld's, layer for layer; only the names differ (``official_name`` gives the
official name of each diffworld tensor). The file does not record the game, the number of actions nor the
architecture: the game is given, the number of actions is read from the weights and checked against the
game's, and the architecture is diffworld's configuration (the paper's by default, as the published agents),
against which every name and shape of the file is checked.

The file is read with ``torch.load(..., weights_only=True)``: a pickle that holds anything but tensors and
plain containers is refused without running its code.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from diffworld.agent import Agent, export_agent
from diffworld.config.schema import Config, DiffusionKind, ReturnNormalization, RewardKind
from diffworld.games import has_continuous_actions
from diffworld.models.official_names import official_name
from diffworld.run.official_file import (
    OfficialAgentError,
    checked_tensors,
    count_indexed,
    mismatch,
    read_official_state_dict,
    unet_levels,
)


def official_names(agent: Agent, num_reward_levels: int) -> dict[str, str]:
    """Official name -> diffworld name, for every tensor of ``agent``'s state dict."""
    names = {official_name(name, num_reward_levels): name for name in agent.state_dict()}
    if len(names) != len(agent.state_dict()):
        raise AssertionError("two diffworld tensors map to the same official name")
    return names


# Tensors whose first dimension is the number of actions (official names).
_ACTION_TENSORS = (
    "denoiser.inner_model.act_emb.0.weight",
    "rew_end_model.act_emb.weight",
    "actor_critic.actor_linear.weight",
)


def num_actions_of(tensors: Mapping[str, Tensor], path: Path) -> int:
    """The number of actions the official agent was built for (its action embeddings' and policy's rows)."""
    sizes = {
        name: tensors[name].shape[0] for name in _ACTION_TENSORS if name in tensors and tensors[name].ndim
    }
    if not sizes:
        raise OfficialAgentError(f"{path} lacks the action tensors ({', '.join(_ACTION_TENSORS)}).")
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"{name} has {n} rows" for name, n in sizes.items())
        raise OfficialAgentError(f"{path} is inconsistent: its action tensors disagree ({found}).")
    return int(next(iter(sizes.values())))


def infer_settings(tensors: Mapping[str, Tensor]) -> dict[str, Any]:
    """The configuration values (dotted keys) that the official tensors' names and shapes imply.

    Raises:
        KeyError, IndexError, ZeroDivisionError, ValueError: the tensors are not a complete agent.
    """
    den, rew, ac = "denoiser.inner_model.", "rew_end_model.", "actor_critic."
    settings: dict[str, Any] = {}
    cond = int(tensors[den + "cond_proj.0.weight"].shape[0])
    settings["denoiser.cond_channels"] = cond
    settings["denoiser.num_cond_frames"] = cond // int(tensors[den + "act_emb.0.weight"].shape[1])
    num_levels = count_indexed(tensors, den + "unet.d_blocks.{}.resblocks.0.conv1.weight")
    levels = unet_levels(tensors, den + "unet.d_blocks", num_levels)
    settings.update({f"denoiser.{key}": value for key, value in levels.items()})
    num_rew = count_indexed(tensors, rew + "encoder.blocks.{}.resblocks.0.conv1.weight") - 1
    levels = unet_levels(tensors, rew + "encoder.blocks", num_rew)
    settings.update({f"reward_model.{key}": value for key, value in levels.items()})
    settings["reward_model.cond_channels"] = int(tensors[rew + "act_emb.weight"].shape[1])
    settings["reward_model.lstm_dim"] = int(tensors[rew + "lstm.weight_hh_l0"].shape[1])
    convs = sorted(
        int(m[1])
        for name in tensors
        if (m := re.fullmatch(r"actor_critic\.encoder\.encoder\.(\d+)\.f\.2\.weight", name))
    )
    channels = [int(tensors[f"{ac}encoder.encoder.{j}.f.2.weight"].shape[0]) for j in convs]
    settings["actor_critic.channels"] = channels
    settings["actor_critic.lstm_dim"] = int(tensors[ac + "lstm.weight_hh"].shape[1])
    side = round((int(tensors[ac + "lstm.weight_ih"].shape[1]) / channels[-1]) ** 0.5)
    settings["env.size"] = side * 2 ** len(channels)
    return settings


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)


def settings_overrides(tensors: Mapping[str, Tensor], cfg: Config) -> list[str]:
    """``key=value`` overrides that would make ``cfg`` match the file's architecture (empty if unknown)."""
    try:
        settings = infer_settings(tensors)
    except (KeyError, IndexError, ZeroDivisionError, ValueError):
        return []
    overrides = []
    for key, value in settings.items():
        current: Any = cfg
        for part in key.split("."):
            current = getattr(current, part)
        if isinstance(value, list):
            current = list(current)
        if current != value:
            overrides.append(f"{key}={_format_value(value)}")
    return overrides


def _overrides_hint(tensors: Mapping[str, Tensor], cfg: Config) -> str:
    overrides = settings_overrides(tensors, cfg)
    return f" (the file's architecture needs the overrides {' '.join(overrides)})" if overrides else ""


def convert_official_state_dict(
    tensors: Mapping[str, Tensor], cfg: Config, num_actions: int, path: Path
) -> Agent:
    """A diffworld agent built from ``cfg`` with the official ``tensors`` loaded into it.

    Raises:
        OfficialAgentError: missing or unexpected tensors, a shape that differs from the model built from
            ``cfg``, or a tensor that is not floating point where the model has floats.
    """
    agent = Agent.build(cfg, num_actions)
    names = official_names(agent, len(cfg.reward_model.channels))
    expected = agent.state_dict()
    missing, unexpected = set(names) - set(tensors), set(tensors) - set(names)
    if missing or unexpected:
        overrides = settings_overrides(tensors, cfg)
        if overrides:
            raise OfficialAgentError(
                f"{path} holds an agent of another architecture than this configuration's ({len(missing)} "
                f"tensors missing, {len(unexpected)} unexpected): add the overrides {' '.join(overrides)}"
            )
        raise OfficialAgentError(
            f"{path} does not match the agent of this configuration ({mismatch(missing, unexpected)})."
        )
    state = checked_tensors(
        ((name, names[name]) for name in tensors),
        tensors,
        expected,
        path,
        lambda shape: f"this configuration expects {shape}{_overrides_hint(tensors, cfg)}",
        OfficialAgentError,
    )
    agent.load_state_dict(state)
    return agent.eval()


def import_official_agent(
    path: str | os.PathLike[str],
    cfg: Config,
    folder: str | os.PathLike[str],
    overwrite: bool = False,
    num_actions: int | None = None,
) -> Path:
    """Write the official agent file at ``path`` as a diffworld agent folder for ``cfg.game``.

    ``cfg`` gives the game and the architecture (the paper's settings for the published agents).
    ``num_actions``: the game's number of actions; None asks the game (ALE's minimal action set).

    Raises:
        OfficialAgentError: the file cannot be read, does not match ``cfg``, or was built for another
            number of actions than the game has.
        FileExistsError: ``folder`` exists and is not empty, and ``overwrite`` is False.
    """
    path = Path(path)
    if has_continuous_actions(cfg.game):
        raise OfficialAgentError(
            f"Official DIAMOND agents are Atari agents with discrete actions, and {cfg.game} takes "
            "continuous ones: give the Atari game the agent was trained on (game=<Game>)."
        )
    if DiffusionKind(cfg.denoiser.kind) is not DiffusionKind.edm:
        raise OfficialAgentError("Official DIAMOND agents are EDM world models: drop denoiser.kind=ddpm.")
    if RewardKind(cfg.reward_model.reward_kind) is not RewardKind.sign:
        raise OfficialAgentError(
            "Official DIAMOND agents predict the reward's sign: drop reward_model.reward_kind=value."
        )
    if ReturnNormalization(cfg.actor_critic.return_normalization) is not ReturnNormalization.none:
        raise OfficialAgentError(
            "Official DIAMOND agents keep no return statistics: drop actor_critic.return_normalization="
            f"{ReturnNormalization(cfg.actor_critic.return_normalization).value}."
        )
    tensors = read_official_state_dict(path)
    file_actions = num_actions_of(tensors, path)
    if num_actions is None:
        from diffworld.envs.make import game_num_actions

        num_actions = game_num_actions(cfg.game)
    game_actions = num_actions
    if file_actions != game_actions:
        raise OfficialAgentError(
            f"{path} was built for {file_actions} actions but {cfg.game} has {game_actions}: the agent of "
            "another game? Give the game it was trained on (game=<Game>)."
        )
    agent = convert_official_state_dict(tensors, cfg, file_actions, path)
    metadata: dict[str, Any] = {
        "source": "official DIAMOND agent (github.com/eloialonso/diamond), imported by 'diffworld import'",
        "imported_file": path.name,
        "imported_file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    return export_agent(agent, cfg, file_actions, folder, metadata=metadata, overwrite=overwrite)
