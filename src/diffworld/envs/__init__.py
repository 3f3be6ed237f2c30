"""The games' environments: Atari 100k (the single-env preprocessing), Catch and CatchContinuous, DeepMind
Control Suite tasks from pixels (``envs.dmc``, the ``dmc`` extra), Gymnasium ``Box``-action environments from
pixels and the one rescaling of continuous actions (``envs.continuous``); ``make_env`` makes any of them, the
parallel vector env steps several. Game names are in ``diffworld.games``, below the configuration."""

from diffworld.envs.atari import Atari100kPreprocessing, make_atari_env
from diffworld.envs.catch import CatchContinuousEnv, CatchEnv, make_catch_env
from diffworld.envs.continuous import GymPixelEnv, InvalidActionError, NormalizedActions
from diffworld.envs.dmc import DMCEnv, make_dmc_env
from diffworld.envs.make import make_env
from diffworld.envs.vector import AtariEnvs, StepResult

__all__ = [
    "Atari100kPreprocessing",
    "AtariEnvs",
    "CatchContinuousEnv",
    "CatchEnv",
    "DMCEnv",
    "GymPixelEnv",
    "InvalidActionError",
    "NormalizedActions",
    "StepResult",
    "make_atari_env",
    "make_catch_env",
    "make_dmc_env",
    "make_env",
]
