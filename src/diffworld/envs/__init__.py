"""Atari 100k environments (and Catch): the single-env preprocessing, the parallel vector env. Game names are
in ``diffworld.games``, below the configuration. DeepMind Control Suite tasks from pixels (continuous actions;
the ``dmc`` extra) are in ``diffworld.envs.dmc``, not yet taken by ``make_env`` or the agent."""

from diffworld.envs.atari import Atari100kPreprocessing, make_atari_env
from diffworld.envs.catch import CatchEnv, make_catch_env
from diffworld.envs.dmc import DMCEnv, make_dmc_env
from diffworld.envs.make import make_env
from diffworld.envs.vector import AtariEnvs, StepResult

__all__ = [
    "Atari100kPreprocessing",
    "AtariEnvs",
    "CatchEnv",
    "DMCEnv",
    "StepResult",
    "make_atari_env",
    "make_catch_env",
    "make_dmc_env",
    "make_env",
]
