"""The official DIAMOND checkpoint files (github.com/eloialonso/diamond), the Atari agent's and the CS:GO
engine's: one ``torch.save``'d state dict, read with ``torch.load(..., weights_only=True)`` (a pickle that
holds anything but tensors and plain containers is refused without running its code), and what its tensor
names tell of the architecture. Shared by both products' importers (``agent/official_import.py``,
``engine/official_import.py``)."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffworld.errors import UserError
from diffworld.run.checkpoint import describe_refusal

OFFICIAL_PREFIXES = ("denoiser.", "rew_end_model.", "actor_critic.")
"""The key prefixes of the official ``Agent.state_dict()``."""

MAX_LISTED = 3


class OfficialAgentError(UserError, ValueError):
    """An official agent file that cannot be imported: the message names the file and what differs."""


def listed(names: set[str]) -> str:
    """At most ``MAX_LISTED`` of ``names``, sorted, and how many more there are."""
    shown = sorted(names)[:MAX_LISTED]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return ", ".join(shown) + more


def mismatch(missing: set[str], unexpected: set[str]) -> str:
    """``N missing: a, b; M unexpected: c``: the tensor names one side lacks, of those there are."""
    parts = ((missing, "missing"), (unexpected, "unexpected"))
    return "; ".join(f"{len(names)} {what}: {listed(names)}" for names, what in parts if names)


def checked_tensors(
    pairs: Iterable[tuple[str, str]],
    tensors: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    path: Path,
    expects: Callable[[tuple[int, ...]], str],
    error: type[OfficialAgentError],
) -> dict[str, Tensor]:
    """Our state dict of the official ``tensors``, for each (official name, ours) of ``pairs`` in turn,
    checked against ``expected`` (our model's state dict).

    Raises:
        error: the first tensor whose shape differs (``expects(shape)`` says what we expect, after "but"),
            or that is not floating point where ours is.
    """
    state: dict[str, Tensor] = {}
    for official, ours in pairs:
        tensor = tensors[official]
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise error(
                f"{path}: tensor {official!r} has shape {tuple(tensor.shape)}, but "
                f"{expects(tuple(expected[ours].shape))}."
            )
        if expected[ours].is_floating_point() and not tensor.is_floating_point():
            raise error(f"{path}: tensor {official!r} is {tensor.dtype}, not floating point.")
        state[ours] = tensor
    return state


def _refused_global(error: BaseException) -> str:
    """`` (it would load posix.mkdir)`` for a ``weights_only`` refusal that names the global, else ``""``."""
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f" (it would load {match[1]})" if match else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_official_state_dict(
    path: str | os.PathLike[str], prefixes: tuple[str, ...] = OFFICIAL_PREFIXES
) -> dict[str, Tensor]:
    """The tensors of an official agent file, read without unpickling anything but tensors.

    Raises:
        OfficialAgentError: the file is missing, not a ``torch.save`` file, holds other objects than
            tensors, or is not an agent's state dict (some keys prefixed by one of ``prefixes``: the Atari
            agent's ``denoiser.``, ``rew_end_model.``, ``actor_critic.`` by default).
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialAgentError(f"No file at {path}.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # torch.save writes zip archives; this is garbage or a raw pickle
            raise OfficialAgentError(
                f"{path} is not a file saved by torch.save (not a zip archive){_refused_global(e)}."
            ) from None
        raise OfficialAgentError(
            f"{path} holds objects other than tensors: {describe_refusal(e)} (an official agent file holds "
            "only the agent's state dict)."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise OfficialAgentError(
            f"{path} is not a PyTorch file that torch.load can read (truncated or another format?): "
            f"{_first_line(e)}"
        ) from None
    if not isinstance(data, Mapping):
        raise OfficialAgentError(
            f"{path} holds a {type(data).__name__}, not a state dict (a mapping from names to tensors)."
        )
    not_tensors = {str(k) for k, v in data.items() if not isinstance(v, Tensor)}
    if not_tensors:
        hint = (
            " (a training checkpoint? use checkpoints/agent_versions/agent_epoch_*.pt or a published "
            "atari_100k/models/<Game>.pt)"
            if "agent" in not_tensors
            else ""
        )
        raise OfficialAgentError(
            f"{path} is not an agent's state dict: the values of {listed(not_tensors)} are not tensors{hint}."
        )
    if not any(str(k).startswith(prefixes) for k in data):
        raise OfficialAgentError(
            f"{path} is not an official DIAMOND agent: none of its {len(data)} tensor names starts with "
            f"{', '.join(prefixes)}."
        )
    return {str(k): v for k, v in data.items()}


def count_indexed(tensors: Mapping[str, Tensor], pattern: str) -> int:
    """How many consecutive i from 0 make ``pattern.format(i)`` a tensor name."""
    i = 0
    while pattern.format(i) in tensors:
        i += 1
    return i


def unet_levels(tensors: Mapping[str, Tensor], blocks: str, num: int) -> dict[str, list[Any]]:
    """channels, depths and attn_depths of ``num`` levels of residual blocks named ``blocks.{i}``."""
    first = blocks + ".{}.resblocks.0."
    return {
        "channels": [int(tensors[first.format(i) + "conv1.weight"].shape[0]) for i in range(num)],
        "depths": [count_indexed(tensors, f"{blocks}.{i}.resblocks.{{}}.conv1.weight") for i in range(num)],
        "attn_depths": [first.format(i) + "attn.qkv_proj.weight" in tensors for i in range(num)],
    }
