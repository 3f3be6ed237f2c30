"""Game names: resolve what users type to the canonical name.

Four kinds of games, told apart by their names:

- an ALE game (``Breakout``, ``ms_pacman``, ``BreakoutNoFrameskip-v4``): discrete actions, the Atari 100k
  protocol (``envs.atari``);
- one of diffworld's own (``OWN_GAMES``: ``Catch``, discrete; ``CatchContinuous``, a continuous paddle
  velocity);
- a DeepMind Control Suite task from pixels, ``dmc:<domain>-<task>`` (``dmc:cartpole-swingup``; the ``dmc``
  extra): continuous actions (``envs.dmc``);
- any Gymnasium environment with a ``Box`` action space, ``gym:<id>`` (``gym:CarRacing-v3``,
  ``gym:Pendulum-v1``): its image observations, or its ``rgb_array`` renders where it has none
  (``envs.continuous``).

Kept light on purpose: the CLI validates ``game=...`` before any heavy import (torch), so this module only
imports ale_py/gymnasium/dm_control lazily (~0.3 s) and only when a name has to be checked against a registry.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from importlib import resources
from typing import Any

from diffworld.errors import UserError

_ENV_SUFFIX = "NoFrameskip-v4"
# Normalised form of the suffix, so that "BreakoutNoFrameskip-v4" resolves like "Breakout".
_NORMALISED_SUFFIX = "noframeskipv4"


class UnknownGameError(UserError, ValueError):
    """Raised for a game name that has no ``<Game>NoFrameskip-v4`` registration in ale-py."""


def _load_atari100k_games() -> tuple[str, ...]:
    # Read through the top-level package: importing ``diffworld.evaluation`` could pull in heavy modules.
    path = resources.files("diffworld") / "evaluation" / "reference" / "atari100k_reference_scores.json"
    return tuple(json.loads(path.read_text(encoding="utf-8")))


ATARI100K_GAMES: tuple[str, ...] = _load_atari100k_games()
"""The 26 games of the Atari 100k benchmark, canonical CamelCase names."""

OWN_GAMES: dict[str, str] = {
    "Catch": "diffworld/Catch-v0",
    "CatchContinuous": "diffworld/CatchContinuous-v0",
}
"""diffworld's own games (``diffworld.envs.catch``) and their Gymnasium ids; not ALE games."""

CONTINUOUS_OWN_GAMES = frozenset({"CatchContinuous"})
"""Those of ``OWN_GAMES`` whose actions are continuous."""

DMC_PREFIX = "dmc:"
GYM_PREFIX = "gym:"

DEFAULT_ACTION_REPEAT = 2
"""Control steps per agent step of a continuous-control game (``env.action_repeat``): 2, the DeepMind Control
setting of DreamerV3 and DrQ-v2. Named here, below the configuration and the environments, which both
default to it."""


def _normalise(name: str) -> str:
    """Case-, underscore- and dash-insensitive key, without the ``NoFrameskip-v4`` suffix."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return key.removesuffix(_NORMALISED_SUFFIX)


@functools.cache
def _games_by_key() -> dict[str, str]:
    """Normalised key -> canonical name, for every ``<Game>NoFrameskip-v4`` registered by ale-py and for
    diffworld's own games.

    ``ale_py.roms.get_all_rom_ids()`` is not enough: some ale-py ROMs (e.g. Tetris) only get ``ALE/...-v5``
    ids, and the spec requires the v4 NoFrameskip variant.
    """
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    names = (
        env_name.removesuffix(_ENV_SUFFIX)
        for env_name, spec in gym.registry.items()
        if spec.namespace is None and env_name.endswith(_ENV_SUFFIX)
    )
    return {_normalise(name): name for name in sorted([*names, *OWN_GAMES])}


def available_games() -> tuple[str, ...]:
    """Every valid game (canonical names, sorted), not only the Atari 100k ones."""
    return tuple(_games_by_key().values())


def resolve_game(name: str) -> str:
    """Canonical name for ``name``: CamelCase for an ALE game or one of diffworld's own (``breakout``,
    ``ms_pacman``, ``MsPacmanNoFrameskip-v4``, ...), ``dmc:<domain>-<task>`` for a DeepMind Control task
    (``resolve_dmc_task``), ``gym:<id>`` for a Gymnasium environment (``resolve_gym_id``).

    Raises:
        UnknownGameError: no such game; the message suggests the closest valid names.
    """
    if name.strip().lower().startswith(DMC_PREFIX):
        return resolve_dmc_task(name)[0]
    if name.strip().lower().startswith(GYM_PREFIX):
        return GYM_PREFIX + resolve_gym_id(name)
    games = _games_by_key()
    key = _normalise(name)
    if key in games:
        return games[key]
    close = [games[match] for match in difflib.get_close_matches(key, games, n=3, cutoff=0.6)]
    hint = f". Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownGameError(f"Unknown game {name!r}{hint} (run 'diffworld games' for the full list)")


def env_id(game: str) -> str:
    """Gymnasium id of ``game`` (any accepted spelling), e.g. ``MsPacmanNoFrameskip-v4``,
    ``diffworld/Catch-v0`` (registered when ``diffworld.envs.catch`` is imported)."""
    game = resolve_game(game)
    return OWN_GAMES.get(game, f"{game}{_ENV_SUFFIX}")


def is_atari(game: str) -> bool:
    """Whether ``game`` (a canonical name) is an ALE game rather than one of diffworld's own, a DeepMind
    Control task or a Gymnasium environment."""
    return game not in OWN_GAMES and not is_dmc(game) and not is_gym(game)


def is_dmc(game: str) -> bool:
    """Whether ``game`` (a canonical name) is a DeepMind Control Suite task (``dmc:<domain>-<task>``)."""
    return game.startswith(DMC_PREFIX)


def is_gym(game: str) -> bool:
    """Whether ``game`` (a canonical name) is a Gymnasium environment named by its id (``gym:<id>``)."""
    return game.startswith(GYM_PREFIX)


def has_continuous_actions(game: str) -> bool:
    """Whether ``game`` (a canonical name) takes continuous actions: a DeepMind Control task, a
    ``gym:`` environment (``make_env`` refuses one whose actions are not a ``Box``) or ``CatchContinuous``."""
    return is_dmc(game) or is_gym(game) or game in CONTINUOUS_OWN_GAMES


# --------------------------------------------------------------------------------- Gymnasium environments


def resolve_gym_id(name: str) -> str:
    """The Gymnasium id of ``gym:<id>`` (exact, as registered: ``gym:Pendulum-v1`` -> ``Pendulum-v1``).

    Raises:
        UnknownGameError: no such registered id; the message suggests the closest ones.
    """
    import gymnasium as gym

    env_name = name.strip()[len(GYM_PREFIX) :]
    if env_name in gym.registry:
        return env_name
    close = difflib.get_close_matches(env_name, list(gym.registry), n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(GYM_PREFIX + c for c in close)}?" if close else ""
    raise UnknownGameError(
        f"Unknown Gymnasium environment {name!r}.{hint} gym:<id> takes a registered id "
        "(python -c 'import gymnasium; gymnasium.pprint_registry()')"
    )


# --------------------------------------------------------------------------- DeepMind Control Suite tasks

DMC_VISION_TASKS: tuple[str, ...] = (
    "dmc:acrobot-swingup",
    "dmc:cartpole-balance",
    "dmc:cartpole-balance_sparse",
    "dmc:cartpole-swingup",
    "dmc:cartpole-swingup_sparse",
    "dmc:cheetah-run",
    "dmc:cup-catch",
    "dmc:finger-spin",
    "dmc:finger-turn_easy",
    "dmc:finger-turn_hard",
    "dmc:hopper-hop",
    "dmc:hopper-stand",
    "dmc:pendulum-swingup",
    "dmc:quadruped-run",
    "dmc:quadruped-walk",
    "dmc:reacher-easy",
    "dmc:reacher-hard",
    "dmc:walker-run",
    "dmc:walker-stand",
    "dmc:walker-walk",
)
"""The 20 tasks of the DMC-vision benchmark (DreamerV3's "DMC Visual Control"), canonical names."""

_DOMAIN_ALIASES = {"ball_in_cup": "cup"}
"""dm_control domain -> the short name in diffworld's canonical task names."""


class UnknownDMCTaskError(UnknownGameError):
    """A task name that is not one of dm_control's suite tasks."""


class DMCNotInstalledError(UserError, ImportError):
    """dm_control (the ``dmc`` extra) is missing."""


def import_dmc_suite() -> Any:
    """``dm_control.suite``, with ``MUJOCO_GL=egl`` unless the user chose another backend."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from dm_control import suite
    except ImportError as err:
        raise DMCNotInstalledError(
            f"DeepMind Control Suite tasks need dm_control ({err}): pip install -e '.[dmc]'"
        ) from err
    return suite


def _normalise_dmc(name: str) -> str:
    """Case-, dash-, underscore-insensitive key, without the ``dmc:`` prefix."""
    name = name.strip().lower()
    name = name.removeprefix(DMC_PREFIX)
    return "".join(ch for ch in name if ch.isalnum())


def _canonical_dmc(domain: str, task: str) -> str:
    return f"{DMC_PREFIX}{_DOMAIN_ALIASES.get(domain, domain)}-{task}"


@functools.cache
def _dmc_tasks_by_key() -> dict[str, tuple[str, str, str]]:
    """Normalised key -> (canonical name, dm_control domain, dm_control task), for every suite task; the
    aliased domains under both names."""
    suite = import_dmc_suite()
    by_key = {}
    for domain, task in suite.ALL_TASKS:
        entry = (_canonical_dmc(domain, task), domain, task)
        by_key[_normalise_dmc(f"{domain}-{task}")] = entry
        by_key[_normalise_dmc(entry[0])] = entry
    return by_key


def available_dmc_tasks() -> tuple[str, ...]:
    """Every DeepMind Control task that can be made (canonical names, sorted): all of dm_control's suite."""
    return tuple(sorted({entry[0] for entry in _dmc_tasks_by_key().values()}))


def resolve_dmc_task(name: str) -> tuple[str, str, str]:
    """(canonical name, dm_control domain, dm_control task) for ``name`` (``dmc:cartpole-swingup``,
    ``dmc:cup-catch``, ``dmc:ball_in_cup-catch``, ...). A dash separates the domain from the task because
    both can hold underscores; spelling is checked like the Atari games' (case, dashes and underscores
    ignored).

    Raises:
        UnknownDMCTaskError: no such task; the message suggests the closest names and says how to list them.
        DMCNotInstalledError: dm_control is missing.
    """
    if not name.strip().lower().startswith(DMC_PREFIX):
        raise UnknownDMCTaskError(
            f"Unknown DMC task {name!r}: DeepMind Control tasks are named dmc:<domain>-<task>, "
            f"e.g. dmc:cartpole-swingup"
        )
    tasks = _dmc_tasks_by_key()
    key = _normalise_dmc(name)
    if key in tasks:
        return tasks[key]
    # Best match first; an aliased domain's task is under two keys.
    close = list(dict.fromkeys(tasks[k][0] for k in difflib.get_close_matches(key, tasks, n=4, cutoff=0.6)))
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownDMCTaskError(
        f"Unknown DMC task {name!r}.{hint} The 20 of the benchmark are in "
        f"diffworld.games.DMC_VISION_TASKS; all {len(set(tasks.values()))}: "
        "python -c 'from diffworld.games import available_dmc_tasks as t; print(*t())'"
    )
