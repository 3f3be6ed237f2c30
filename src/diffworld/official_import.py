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
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffworld.agent import Agent, export_agent
from diffworld.config.schema import Config, DiffusionKind
from diffworld.errors import UserError
from diffworld.run.checkpoint import describe_refusal

OFFICIAL_PREFIXES = ("denoiser.", "rew_end_model.", "actor_critic.")
"""The key prefixes of the official ``Agent.state_dict()``."""

# Tensors whose first dimension is the number of actions (official names).
_ACTION_TENSORS = (
    "denoiser.inner_model.act_emb.0.weight",
    "rew_end_model.act_emb.weight",
    "actor_critic.actor_linear.weight",
)
_MAX_LISTED = 3


class OfficialAgentError(UserError, ValueError):
    """An official agent file that cannot be imported: the message names the file and what differs."""


def _resblock_names(name: str) -> str:
    """Residual-block parameter names, shared by the denoiser and the reward model's encoder."""
    name = re.sub(r"(\.resblocks\.\d+)\.skip\.", r"\1.proj.", name)
    return re.sub(r"\.attn\.norm\.(weight|bias)$", r".attn.norm.norm.\1", name)


def official_name(name: str, num_reward_levels: int) -> str:
    """The official name of diffworld's tensor ``name`` (a key of diffworld's ``Agent.state_dict()``).

    ``num_reward_levels``: ``len(reward_model.channels)``; the official reward encoder keeps its middle
    blocks as the block list's last entry and an identity as its first downsampling.
    """
    model, _, rest = name.partition(".")
    if model == "denoiser":
        rest = rest.removeprefix("net.")
        rest = {"act_emb.weight": "act_emb.0.weight"}.get(rest, rest)
        rest = re.sub(r"^norm_out\.(weight|bias)$", r"norm_out.norm.\1", rest)
        rest = rest.replace("unet.down_blocks.", "unet.d_blocks.").replace(
            "unet.up_blocks.", "unet.u_blocks."
        )
        return "denoiser.inner_model." + _resblock_names(rest)
    if model == "reward_model":
        rest = re.sub(r"^encoder\.levels\.(\d+)\.", r"encoder.blocks.\1.", rest)
        rest = re.sub(r"^encoder\.mid\.", f"encoder.blocks.{num_reward_levels}.", rest)
        rest = re.sub(
            r"^encoder\.downsamples\.(\d+)\.", lambda m: f"encoder.downsamples.{int(m[1]) + 1}.", rest
        )
        return "rew_end_model." + _resblock_names(rest)
    if model == "actor_critic":
        rest = re.sub(r"^encoder\.(\d+)\.norm\.", r"encoder.encoder.\1.f.0.norm.", rest)
        rest = re.sub(r"^encoder\.(\d+)\.conv\.", r"encoder.encoder.\1.f.2.", rest)
        rest = re.sub(r"^encoder\.(\d+)\.skip\.", r"encoder.encoder.\1.skip_projection.", rest)
        rest = re.sub(r"^encoder\.0\.", "encoder.encoder.0.", rest)
        rest = re.sub(r"^(actor|critic)\.", r"\1_linear.", rest)
        return "actor_critic." + rest
    raise ValueError(f"not a diffworld agent tensor: {name!r}")


def official_names(agent: Agent, num_reward_levels: int) -> dict[str, str]:
    """Official name -> diffworld name, for every tensor of ``agent``'s state dict."""
    names = {official_name(name, num_reward_levels): name for name in agent.state_dict()}
    if len(names) != len(agent.state_dict()):
        raise AssertionError("two diffworld tensors map to the same official name")
    return names


def _listed(names: set[str]) -> str:
    shown = sorted(names)[:_MAX_LISTED]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return ", ".join(shown) + more


def _refused_global(error: BaseException) -> str:
    """`` (it would load posix.mkdir)`` for a ``weights_only`` refusal that names the global, else ``""``."""
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f" (it would load {match[1]})" if match else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_official_state_dict(
    path: str | os.PathLike[str], prefixes: tuple[str, ...] = OFFICIAL_PREFIXES
) -> dict[str, Tensor]:
    """The tensors of an official agent file, read without unpickling anything but tensors.

    Raises:
        OfficialAgentError: the file is missing, not a ``torch.save`` file, holds other objects than
            tensors, or is not an agent's state dict (some keys prefixed by one of ``prefixes``: the Atari
            agent's ``denoiser.``, ``rew_end_model.``, ``actor_critic.`` by default).
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialAgentError(f"No file at {path}.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # torch.save writes zip archives; this is garbage or a raw pickle
            raise OfficialAgentError(
                f"{path} is not a file saved by torch.save (not a zip archive){_refused_global(e)}."
            ) from None
        raise OfficialAgentError(
            f"{path} holds objects other than tensors: {describe_refusal(e)} (an official agent file holds "
            "only the agent's state dict)."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise OfficialAgentError(
            f"{path} is not a PyTorch file that torch.load can read (truncated or another format?): "
            f"{_first_line(e)}"
        ) from None
    if not isinstance(data, Mapping):
        raise OfficialAgentError(
            f"{path} holds a {type(data).__name__}, not a state dict (a mapping from names to tensors)."
        )
    not_tensors = {str(k) for k, v in data.items() if not isinstance(v, Tensor)}
    if not_tensors:
        hint = (
            " (a training checkpoint? use checkpoints/agent_versions/agent_epoch_*.pt or a published "
            "atari_100k/models/<Game>.pt)"
            if "agent" in not_tensors
            else ""
        )
        raise OfficialAgentError(
            f"{path} is not an agent's state dict: the values of {_listed(not_tensors)} are not "
            f"tensors{hint}."
        )
    if not any(str(k).startswith(prefixes) for k in data):
        raise OfficialAgentError(
            f"{path} is not an official DIAMOND agent: none of its {len(data)} tensor names starts with "
            f"{', '.join(prefixes)}."
        )
    return {str(k): v for k, v in data.items()}


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


def count_indexed(tensors: Mapping[str, Tensor], pattern: str) -> int:
    """How many consecutive i from 0 make ``pattern.format(i)`` a tensor name."""
    i = 0
    while pattern.format(i) in tensors:
        i += 1
    return i


def unet_levels(tensors: Mapping[str, Tensor], blocks: str, num: int) -> dict[str, list[Any]]:
    """channels, depths and attn_depths of ``num`` levels of residual blocks named ``blocks.{i}``."""
    first = blocks + ".{}.resblocks.0."
    return {
        "channels": [int(tensors[first.format(i) + "conv1.weight"].shape[0]) for i in range(num)],
        "depths": [count_indexed(tensors, f"{blocks}.{i}.resblocks.{{}}.conv1.weight") for i in range(num)],
        "attn_depths": [first.format(i) + "attn.qkv_proj.weight" in tensors for i in range(num)],
    }


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
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing: {_listed(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
        raise OfficialAgentError(
            f"{path} does not match the agent of this configuration ({'; '.join(problems)})."
        )
    state = {}
    for name, tensor in tensors.items():
        ours = names[name]
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise OfficialAgentError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, but this configuration expects "
                f"{tuple(expected[ours].shape)}{_overrides_hint(tensors, cfg)}."
            )
        if expected[ours].is_floating_point() and not tensor.is_floating_point():
            raise OfficialAgentError(f"{path}: tensor {name!r} is {tensor.dtype}, not floating point.")
        state[ours] = tensor
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
    if DiffusionKind(cfg.denoiser.kind) is not DiffusionKind.edm:
        raise OfficialAgentError("Official DIAMOND agents are EDM world models: drop denoiser.kind=ddpm.")
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
