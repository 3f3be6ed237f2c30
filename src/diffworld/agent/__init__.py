"""The Atari agent, one of the two products over the shared core (the other is ``engine/``): its models and
their portable folder format (``model.py``), its trainer, collection, imagination, model-free baseline,
evaluation, official import, play and video. It never imports the engine, nor the engine it.

``diffworld.agent`` keeps the API of the module it was (``Agent``, ``load_agent``, ``export_agent``, ...).
"""

from __future__ import annotations

from diffworld.agent.model import (
    FORMAT,
    FORMAT_VERSION,
    INFO_FILE,
    WEIGHTS_FILE,
    Agent,
    AgentFolderError,
    config_digest,
    config_from_dict,
    export_agent,
    load_agent,
    load_agent_weights,
)
from diffworld.run.weights import read_weights_metadata, weights_to_bytes

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INFO_FILE",
    "WEIGHTS_FILE",
    "Agent",
    "AgentFolderError",
    "config_digest",
    "config_from_dict",
    "export_agent",
    "load_agent",
    "load_agent_weights",
    "read_weights_metadata",
    "weights_to_bytes",
]
