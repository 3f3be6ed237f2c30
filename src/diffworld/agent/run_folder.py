"""What only the agent's run folder holds besides its checkpoint: the episode files of its dataset, set aside
to the checkpoint when a run resumes, and the copies of the agent's weights kept every few epochs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from diffworld.data import set_aside_later_files
from diffworld.run.weights import weights_to_bytes
from diffworld.utils.atomic import atomic_write_bytes


def set_aside_after_checkpoint(directory: Path, keep: int, lengths: np.ndarray | None = None) -> None:
    """Bring a resumed run's dataset ``directory`` back to its checkpoint.

    What was stored after it (lost to a crash) moves to an ``after_checkpoint_<time>`` folder beside it: the
    files of episodes with ids >= ``keep``, and the steps that open episodes gained since (``lengths``: each
    one's at the checkpoint).
    """
    if not directory.is_dir():
        return
    aside = directory.parent / f"after_checkpoint_{time.strftime('%Y%m%d-%H%M%S')}"
    moved = set_aside_later_files(directory, aside, keep, None if lengths is None else lengths.tolist())
    if moved:
        tqdm.write(f"Moved {len(moved)} episode file(s) written after the last checkpoint to {aside}")


def save_agent_copy(agent_state: dict[str, Tensor], directory: str | os.PathLike[str], epoch: int) -> Path:
    """Keep the agent's weights of ``epoch`` as ``directory/agent_epoch_{epoch:04d}.safetensors``.

    The file has the format of an exported agent's weights (``diffworld.agent.load_agent_weights``
    reads it) and records the epoch in its safetensors metadata.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"agent_epoch_{epoch:04d}.safetensors"
    atomic_write_bytes(path, weights_to_bytes(agent_state, metadata={"epoch": str(epoch)}))
    return path
