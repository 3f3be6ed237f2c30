"""The number format of training's forward passes (``training.precision``)."""

from __future__ import annotations

import torch

from diffworld.config.schema import Precision


def autocast(device: torch.device, precision: Precision) -> torch.autocast:
    """``torch.autocast`` to bfloat16 for ``Precision.bf16``, a disabled one for ``Precision.fp32``.

    Autocast's cache of weight casts is off: the recomputation of ``blocks.norm_act_conv`` in the backward
    pass must dispatch the same operations as its forward pass did, and a cache hit in the forward pass (the
    denoiser runs twice per training segment with the same weights) would skip a cast that the recomputation
    then performs. Casting the weights again costs little next to the activations.
    """
    bf16 = precision == Precision.bf16
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)
