"""Former home of the engine's segment sampler (now ``engine/segment_sampler.py``), kept for the names that
``tests/test_engine_official_equivalence.py`` imports: ``EngineBatch`` and ``downsample``."""

from __future__ import annotations

import torch

from diffworld.data.batch import Batch
from diffworld.engine.segment_sampler import downsample

__all__ = ["EngineBatch", "downsample"]


def EngineBatch(
    obs: torch.Tensor, obs_full: torch.Tensor | None, act: torch.Tensor, mask: torch.Tensor
) -> Batch:
    """The ``Batch`` of B segments of T frames with the action taken after each, in the argument order of
    the engine's former batch class (which tests still construct): ``mask`` is ``frame_mask``."""
    return Batch(obs=obs, act=act, frame_mask=mask, obs_full=obs_full)
