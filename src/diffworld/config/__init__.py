"""Typed configuration: the schema (paper defaults), presets, and command-line overrides."""

from diffworld.config.loading import (
    ConfigError,
    all_keys,
    build_config,
    load_config_file,
    reward_model_seq_length,
    save_config,
    to_yaml,
    with_overrides,
)
from diffworld.config.presets import PRESETS
from diffworld.config.schema import Config, DiffusionKind

__all__ = [
    "PRESETS",
    "Config",
    "ConfigError",
    "DiffusionKind",
    "all_keys",
    "build_config",
    "load_config_file",
    "reward_model_seq_length",
    "save_config",
    "to_yaml",
    "with_overrides",
]
