"""Deprecated alias of ``diffworld.agent.official_import`` (the Atari agent's importer of official DIAMOND
files), kept because its import path is part of the tested API."""

from __future__ import annotations

from diffworld.agent.official_import import (
    convert_official_state_dict,
    import_official_agent,
    infer_settings,
    num_actions_of,
    official_names,
    settings_overrides,
)
from diffworld.models.official_names import official_name
from diffworld.run.official_file import (
    OFFICIAL_PREFIXES,
    OfficialAgentError,
    count_indexed,
    read_official_state_dict,
    unet_levels,
)

__all__ = [
    "OFFICIAL_PREFIXES",
    "OfficialAgentError",
    "convert_official_state_dict",
    "count_indexed",
    "import_official_agent",
    "infer_settings",
    "num_actions_of",
    "official_name",
    "official_names",
    "read_official_state_dict",
    "settings_overrides",
    "unet_levels",
]
