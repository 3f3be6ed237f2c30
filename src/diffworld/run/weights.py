"""Model weights as safetensors bytes, the format of exported agents and of the copies a run keeps (no pickle:
loading runs no code)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import safetensors.torch
from torch import Tensor


def weights_to_bytes(state: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """``state`` in safetensors format (tensors moved to the CPU and made contiguous, as it requires)."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    return safetensors.torch.save(tensors, metadata=dict(metadata) if metadata is not None else None)


def read_weights_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (empty if it has none or is not readable)."""
    if len(data) < 8:
        return {}
    size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(metadata) if isinstance(metadata, dict) else {}
