"""Game names: resolve what users type to the canonical name (an ALE game, or one of diffworld's own).

Kept light on purpose: the CLI validates ``game=...`` before any heavy import (torch), so this module only
imports ale_py/gymnasium lazily (~0.3 s) and only when a name has to be checked against the registry.
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources

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

OWN_GAMES: dict[str, str] = {"Catch": "diffworld/Catch-v0"}
"""diffworld's own games (``diffworld.envs.catch``) and their Gymnasium ids; not ALE games."""


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
    """Canonical CamelCase name for ``name`` (``breakout``, ``ms_pacman``, ``MsPacmanNoFrameskip-v4``, ...).

    Raises:
        UnknownGameError: no such game; the message suggests the closest valid names.
    """
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
    """Whether ``game`` (a canonical name) is an ALE game rather than one of diffworld's own."""
    return game not in OWN_GAMES
