"""One environment of any game diffworld knows: an Atari 100k game, one of its own (Catch, CatchContinuous), a
DeepMind Control task (``dmc:<domain>-<task>``) or a Gymnasium ``Box``-action environment (``gym:<id>``)."""

from __future__ import annotations

from typing import Any, TypeAlias

import gymnasium as gym

from diffworld.envs.atari import Atari100kPreprocessing, make_atari_env
from diffworld.envs.catch import (
    GAME_NAME,
    GAME_NAME_CONTINUOUS,
    CatchEnv,
    make_catch_continuous_env,
    make_catch_env,
)
from diffworld.envs.continuous import GymPixelEnv, NormalizedActions
from diffworld.games import DEFAULT_ACTION_REPEAT, GYM_PREFIX, is_dmc, is_gym, resolve_game

GameEnv: TypeAlias = Atari100kPreprocessing | CatchEnv | NormalizedActions
"""What ``make_env`` returns: the same interface (``get_state`` / ``set_state``, ``info["life_loss"]``)
whatever the game; the discrete games have ``action_meanings``, the continuous ones (``NormalizedActions``
around the game's env) a ``Box`` of actions in ``[-1, 1]^D``."""


def make_env(
    game: str,
    seed: int | None = None,
    *,
    max_frames_per_episode: int = 108_000,
    noop_max: int = 30,
    frame_skip: int = 4,
    size: int = 64,
    action_repeat: int = DEFAULT_ACTION_REPEAT,
) -> GameEnv:
    """``make_atari_env`` for an ALE game, ``make_catch_env`` for Catch; a continuous game's env in
    ``NormalizedActions`` (actions in ``[-1, 1]^D``): ``CatchContinuousEnv`` (arguments as Catch's), a
    DeepMind Control task (``action_repeat`` control steps per agent step, episodes capped at
    ``max_frames_per_episode`` control steps besides dm_control's 1,000) or a ``gym:<id>`` environment
    (``action_repeat`` env steps per agent step, capped likewise). ``noop_max`` and ``frame_skip`` are the
    Atari protocol's (Catch counts frames with ``frame_skip``); ``action_repeat`` is continuous control's."""
    kwargs: dict[str, Any] = {
        "max_frames_per_episode": max_frames_per_episode,
        "noop_max": noop_max,
        "frame_skip": frame_skip,
        "size": size,
    }
    name = resolve_game(game)
    if name == GAME_NAME:
        return make_catch_env(seed, **kwargs)
    if name == GAME_NAME_CONTINUOUS:
        return NormalizedActions(make_catch_continuous_env(seed, **kwargs), name)
    max_steps = max(1, max_frames_per_episode // action_repeat)
    continuous: gym.Env[Any, Any]
    if is_dmc(name):
        from diffworld.envs.dmc import make_dmc_env  # dm_control only when a task is asked for

        continuous = make_dmc_env(
            name, seed, action_repeat=action_repeat, size=size, max_episode_steps=max_steps
        )
    elif is_gym(name):
        continuous = GymPixelEnv(
            name.removeprefix(GYM_PREFIX),
            seed,
            action_repeat=action_repeat,
            size=size,
            max_episode_steps=max_steps,
        )
    else:
        return make_atari_env(name, seed, **kwargs)
    return NormalizedActions(continuous, name)


def game_num_actions(game: str) -> int:
    """Actions of ``game``: an Atari game's minimal action set (as the official code and diffworld use);
    for a continuous game, the number of components of its actions."""
    env = make_env(game)
    try:
        if isinstance(env, NormalizedActions):
            return len(env.env_low)
        return len(env.action_meanings)
    finally:
        env.close()
