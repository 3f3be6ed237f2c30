"""One environment of any game diffworld knows: an Atari 100k game or one of its own (Catch)."""

from __future__ import annotations

from typing import TypeAlias

from diffworld.envs.atari import Atari100kPreprocessing, make_atari_env
from diffworld.envs.catch import GAME_NAME, CatchEnv, make_catch_env
from diffworld.games import resolve_game

GameEnv: TypeAlias = Atari100kPreprocessing | CatchEnv
"""What ``make_env`` returns: the same interface (``action_meanings``, ``get_state`` / ``set_state``,
``info["life_loss"]``) whatever the game."""


def make_env(
    game: str,
    seed: int | None = None,
    *,
    max_frames_per_episode: int = 108_000,
    noop_max: int = 30,
    frame_skip: int = 4,
    size: int = 64,
) -> GameEnv:
    """``make_atari_env`` for an ALE game, ``make_catch_env`` for Catch; same arguments."""
    kwargs = {
        "max_frames_per_episode": max_frames_per_episode,
        "noop_max": noop_max,
        "frame_skip": frame_skip,
        "size": size,
    }
    if resolve_game(game) == GAME_NAME:
        return make_catch_env(seed, **kwargs)
    return make_atari_env(game, seed, **kwargs)


def game_num_actions(game: str) -> int:
    """Actions of ``game``: an Atari game's minimal action set (as the official code and diffworld use)."""
    env = make_env(game)
    try:
        return len(env.action_meanings)
    finally:
        env.close()
