"""Atari 100k environments (and Catch): game names, the single-env preprocessing, the parallel vector env."""

from diffworld.envs.atari import Atari100kPreprocessing, make_atari_env
from diffworld.envs.catch import CatchEnv, make_catch_env
from diffworld.envs.games import ATARI100K_GAMES, UnknownGameError, available_games, env_id, resolve_game
from diffworld.envs.make import make_env
from diffworld.envs.vector import AtariEnvs, StepResult

__all__ = [
    "ATARI100K_GAMES",
    "Atari100kPreprocessing",
    "AtariEnvs",
    "CatchEnv",
    "StepResult",
    "UnknownGameError",
    "available_games",
    "env_id",
    "make_atari_env",
    "make_catch_env",
    "make_env",
    "resolve_game",
]
