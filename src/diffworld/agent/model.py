"""The agent (world model, reward/termination model, actor-critic) and its portable folder format.

An exported agent is a folder of two files, neither of which is a pickle, so loading one runs no code:

- ``agent.safetensors``: the state dicts of the three models, keys prefixed by the model's name
  (``denoiser.``, ``reward_model.``, ``actor_critic.``), i.e. ``Agent.state_dict()``;
- ``agent.json``: the format version, the game, the number of actions, parameter counts, the SHA-256 of
  the weights file, free-form ``metadata`` (epoch, env steps, ...) and the resolved configuration; an agent
  of continuous actions also has ``action_space`` (``ActionSpec.to_json``: its ``num_actions`` components,
  each within [-1, 1]), whose absence means discrete actions.

The weights file records in its own (safetensors) metadata what the agent was trained on: the game, the
number of actions and the SHA-256 of its configuration (``config_digest``). Loading checks them against
``agent.json``, whose top-level ``game`` must also be its configuration's: an ``agent.json`` edited to
another game, or weights from another agent, are refused. Folders exported before this metadata existed
load with the other checks (and the commands check the action count against the game's environment).

JSON has no infinity or NaN: such floats are written as the strings ``"inf"``, ``"-inf"`` and ``"nan"``,
which the configuration schema reads back as floats (``denoiser.sampler.s_tmax`` is ``inf`` by default).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError
from torch import nn

from diffworld.config.loading import ConfigError, upgrade_legacy_keys, validate
from diffworld.config.schema import Config
from diffworld.data.actions import ActionSpec, ActionSpecError, box_spec, index_spec
from diffworld.errors import UserError
from diffworld.games import UnknownGameError, resolve_game
from diffworld.models.actor_critic import ActorCritic
from diffworld.models.diffusion import Denoiser, make_denoiser
from diffworld.models.reward_termination import RewardTerminationModel
from diffworld.run.weights import read_weights_metadata, weights_to_bytes
from diffworld.utils.atomic import atomic_write_bytes, atomic_write_text

WEIGHTS_FILE = "agent.safetensors"
INFO_FILE = "agent.json"
FORMAT = "diffworld-agent"
FORMAT_VERSION = 1
_MODEL_NAMES = ("denoiser", "reward_model", "actor_critic")
_PROVENANCE_KEYS = ("game", "num_actions", "config_sha256")
"""What the weights file's metadata records about the agent's training (all values are strings)."""
_MAX_LISTED = 5


class AgentFolderError(UserError, ValueError):
    """An agent folder that cannot be loaded: the message names the file and what is wrong with it."""


class Agent(nn.Module):
    """The three models of DIAMOND, trained together and saved together."""

    def __init__(
        self, denoiser: Denoiser, reward_model: RewardTerminationModel, actor_critic: ActorCritic
    ) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.reward_model = reward_model
        self.actor_critic = actor_critic

    @classmethod
    def build(cls, cfg: Config, actions: int | ActionSpec) -> Agent:
        """Freshly initialized models for an environment with ``actions`` discrete actions, or with the
        action space ``actions`` (continuous control: ``data.actions.box_spec``, actions in [-1, 1]^D)."""
        return cls(
            make_denoiser(cfg.denoiser, actions),
            RewardTerminationModel(cfg.reward_model, actions, img_size=cfg.env.size),
            ActorCritic(cfg.actor_critic, actions, img_size=cfg.env.size),
        )

    @property
    def continuous(self) -> bool:
        """Whether the agent's actions are continuous (vectors in [-1, 1]^D)."""
        return self.actor_critic.policy.continuous

    @property
    def action_shape(self) -> tuple[int, ...]:
        """The shape of one stored action (``EpisodeDataset``'s ``action_shape``): () for an index, (D,) for a
        continuous action's vector."""
        return (self.actor_critic.num_actions,) if self.continuous else ()

    @property
    def action_spec(self) -> ActionSpec:
        """The agent's action space: one discrete component, or ``num_actions`` continuous ones."""
        n = self.actor_critic.num_actions
        return box_spec(n) if self.continuous else index_spec(n)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of each model, and their ``total``."""
        counts = {name: sum(p.numel() for p in getattr(self, name).parameters()) for name in _MODEL_NAMES}
        counts["total"] = sum(counts.values())
        return counts


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of a configuration's JSON form (``agent.json``'s ``config``), independent of key order."""
    text = json.dumps(_json_safe(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def config_from_dict(data: Mapping[str, Any], source: str) -> Config:
    """A :class:`Config` from its plain-dict form, checked like a configuration file.

    Keys missing from ``data`` take the schema's defaults; unknown keys, badly typed values and invalid
    settings raise :class:`ConfigError` mentioning ``source`` (where the dict came from).
    """
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(Config), OmegaConf.create(upgrade_legacy_keys(data, source))
        )
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        at = f" at {e.full_key!r}" if getattr(e, "full_key", None) else ""
        raise ConfigError(f"{source}: configuration error{at}: {str(e).splitlines()[0]}") from None
    assert isinstance(config, Config)
    try:
        config.game = resolve_game(config.game)
    except UnknownGameError as e:
        raise ConfigError(f"{source}: {e}") from None
    try:
        validate(config)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return config


def _json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as strings, which strict JSON cannot represent."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(value) for value in obj]
    return obj


def export_agent(
    agent: Agent,
    cfg: Config,
    num_actions: int,
    folder: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``agent`` as a portable folder (see the module docstring) and return the folder.

    ``metadata`` must be JSON-serializable; it is checked before anything is written. Each file is written
    atomically, weights first: an export interrupted between the two files leaves a folder that
    :func:`load_agent` rejects (no ``agent.json``, or a checksum that does not match the weights).

    Raises:
        FileExistsError: ``folder`` exists and is not empty, and ``overwrite`` is False.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"Cannot export the agent to {folder}: it exists and is not a folder.")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(
            f"Agent folder {folder} already exists and is not empty; choose another folder, or pass "
            "overwrite=True to replace the agent in it."
        )
    config = _json_safe(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True))
    provenance = {"game": cfg.game, "num_actions": str(num_actions), "config_sha256": config_digest(config)}
    weights = weights_to_bytes(agent.state_dict(), metadata={"format": FORMAT, **provenance})
    info: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "game": cfg.game,
        "num_actions": num_actions,
        "parameters": agent.parameter_counts(),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "metadata": dict(metadata or {}),
        "config": config,
    }
    if agent.continuous:
        # Continuous actions: num_actions counts their components, and the space says they are continuous.
        info["action_space"] = agent.action_spec.to_json()
    try:
        text = json.dumps(_json_safe(info), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"Agent metadata must be JSON-serializable: {e}") from None
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_FILE, weights, what="the agent's weights")
    atomic_write_text(folder / INFO_FILE, text, what="the agent's description")
    return folder


def _listed(names: set[str]) -> str:
    shown = sorted(names)[:_MAX_LISTED]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return ", ".join(shown) + more


def load_agent_weights(
    agent: Agent,
    path: str | os.PathLike[str],
    sha256: str | None = None,
    provenance: Mapping[str, str] | None = None,
) -> None:
    """Load the safetensors weights at ``path`` (an exported agent, or a copy kept during training).

    The tensor names and shapes must match ``agent`` exactly; with ``sha256``, so must the file's checksum;
    with ``provenance`` (``game``, ``num_actions``, ``config_sha256`` as ``agent.json`` describes the agent),
    so must what the file's metadata says it was trained on, where it says it.

    Raises:
        AgentFolderError: the file is missing, unreadable, corrupted, holds other tensors, or was trained
            on something else than ``provenance`` says.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AgentFolderError(f"Missing agent weights file {path}.") from None
    except OSError as e:
        raise AgentFolderError(f"Cannot read agent weights {path}: {e}") from None
    try:
        tensors = safetensors.torch.load(data)
    except SafetensorError as e:
        raise AgentFolderError(
            f"{path} is not a valid safetensors file (truncated or corrupted?): {e}"
        ) from None
    if provenance is not None:
        _check_provenance(path, read_weights_metadata(data), provenance)
    expected = agent.state_dict()
    missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing tensors: {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected tensors: {_listed(unexpected)}")
        raise AgentFolderError(
            f"{path} does not match the agent built from its configuration ({'; '.join(problems)})."
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise AgentFolderError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, but the agent built from the "
                f"configuration expects {tuple(expected[name].shape)}."
            )
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise AgentFolderError(
            f"{path} does not match the checksum recorded in {INFO_FILE}: the file is corrupted, or the two "
            "files come from different (or interrupted) exports. Export the agent again."
        )
    agent.load_state_dict(tensors)


_PROVENANCE_NAMES = {
    "game": "game",
    "num_actions": "number of actions",
    "config_sha256": "configuration (SHA-256 of agent.json's config)",
}


def _check_provenance(path: Path, recorded: Mapping[str, str], described: Mapping[str, str]) -> None:
    for key in _PROVENANCE_KEYS:
        if key in recorded and recorded[key] != described[key]:
            name = _PROVENANCE_NAMES[key]
            raise AgentFolderError(
                f"{path} was trained with {name} {recorded[key][:16]}, but {path.parent / INFO_FILE} says "
                f"{described[key][:16]}: the folder lies about its agent ({INFO_FILE} edited, or its two "
                "files come from different agents). Export the agent again."
            )


def _read_info(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AgentFolderError(f"Missing {path}: not an agent folder, or an interrupted export.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AgentFolderError(f"Cannot read {path}: {e}") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        raise AgentFolderError(f"{path} is not valid JSON (truncated or edited by hand?): {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise AgentFolderError(f'{path} does not describe a diffworld agent (no "format": "{FORMAT}").')
    version = info.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise AgentFolderError(
            f"{path}: unsupported format_version {version!r}; this diffworld reads versions 1 to "
            f"{FORMAT_VERSION} (was the agent exported by a newer diffworld?)."
        )
    keys = (
        ("game", str),
        ("config", dict),
        ("num_actions", int),
        ("weights_sha256", str),
        ("metadata", dict),
    )
    for key, kind in keys:
        # An exact type check: JSON's true/false load as bool, a subclass of int.
        if type(info.get(key)) is not kind:
            raise AgentFolderError(f"{path}: {key!r} is missing or is not a {kind.__name__}.")
    if info["num_actions"] < 1:
        raise AgentFolderError(f"{path}: num_actions must be >= 1, got {info['num_actions']}.")
    return info


def saved_actions(
    num_actions: int,
    space: Any,
    source: str,
    error: type[UserError] = AgentFolderError,
    fix: str = " Export the agent again.",
) -> int | ActionSpec:
    """What ``Agent.build`` takes for a saved agent (``agent.json``, a run's checkpoint): its number of
    discrete actions, or, where ``space`` (the saved ``action_space``, written for continuous agents only) is
    not None, its continuous action space, checked to be ``num_actions`` components within [-1, 1].

    Raises:
        error: ``space`` is not an action space, or not the one ``num_actions`` says (a one-line message
            that names ``source`` and ends with ``fix``).
    """
    if space is None:
        return int(num_actions)
    try:
        spec = ActionSpec.from_json(space, source=f"{source}: action_space")
    except ActionSpecError as e:
        raise error(str(e)) from None
    if num_actions < 1 or spec != box_spec(num_actions):
        raise error(
            f"{source}: action_space ({spec.describe()}) is not {num_actions} continuous components within "
            f"[-1, 1], as num_actions says: the file was edited.{fix}"
        )
    return spec


def load_agent(
    folder: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[Agent, Config, dict[str, Any]]:
    """The agent exported in ``folder`` (in eval mode, on ``device``), its configuration and metadata.

    Raises:
        AgentFolderError: a file is missing or corrupted, the configuration is invalid, or the weights do not
            match the configuration; the message says which file and what is wrong.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AgentFolderError(f"No agent folder at {folder}.")
    info_path = folder / INFO_FILE
    info = _read_info(info_path)
    try:
        cfg = config_from_dict(info["config"], source=f"{info_path} (config)")
    except ConfigError as e:
        raise AgentFolderError(str(e)) from None
    try:
        game = resolve_game(info["game"])
    except UnknownGameError as e:
        raise AgentFolderError(f"{info_path}: game: {e}") from None
    if game != cfg.game:
        raise AgentFolderError(
            f"{info_path} contradicts itself: its game is {game} but its configuration's is {cfg.game}. "
            "Export the agent again rather than editing the file."
        )
    provenance = {
        "game": cfg.game,
        "num_actions": str(info["num_actions"]),
        "config_sha256": config_digest(info["config"]),
    }
    agent = Agent.build(cfg, saved_actions(info["num_actions"], info.get("action_space"), str(info_path)))
    load_agent_weights(agent, folder / WEIGHTS_FILE, sha256=info["weights_sha256"], provenance=provenance)
    return agent.to(device).eval(), cfg, info["metadata"]
