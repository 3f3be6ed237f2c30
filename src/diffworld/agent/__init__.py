"""The agent (Atari, Catch, continuous control), one of the two products over the shared core (the other is
``engine/``): its models and their portable folder format (``model.py``), its trainer, collection,
imagination, model-free baseline, evaluation, official import, play and video. It never imports the engine,
nor the engine it.

``diffworld.agent`` keeps the API of the module it was (``Agent``, ``load_agent``, ``export_agent``, ...).
They need torch, whose import takes over a second: they are imported on first access, so that the command
line recognizes an agent's folder and refuses a bad option (``folder_kind.py``) without loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODEL = "diffworld.agent.model"
_WEIGHTS = "diffworld.run.weights"
_EXPORTS = {
    "FORMAT": _MODEL,
    "FORMAT_VERSION": _MODEL,
    "INFO_FILE": _MODEL,
    "WEIGHTS_FILE": _MODEL,
    "Agent": _MODEL,
    "AgentFolderError": _MODEL,
    "config_digest": _MODEL,
    "config_from_dict": _MODEL,
    "export_agent": _MODEL,
    "load_agent": _MODEL,
    "load_agent_weights": _MODEL,
    "read_weights_metadata": _WEIGHTS,
    "weights_to_bytes": _WEIGHTS,
}

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


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
