"""The torch device a command runs on."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when there is a GPU, else the CPU; any other name as torch spells it (``cuda:1``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
