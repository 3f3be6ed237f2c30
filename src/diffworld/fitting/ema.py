"""An exponential moving average (EMA) of a model's weights, with PyTorch's ``AveragedModel``.

After each optimizer update, ``ema.update_parameters(model)``: the first call copies the weights, each later
one makes them ``decay * ema + (1 - decay) * weights``. Buffers are averaged with the parameters (a constant
buffer stays as it is). The average lives on the unwrapped module (never a DistributedDataParallel wrapper:
its parameters are the module's, the same on every process).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def exponential_average(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA of ``model``'s weights (a copy of them, still to be set by its first ``update_parameters``)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def load_averaged_weights(model: nn.Module, state: dict[str, Any]) -> None:
    """Give ``model`` the weights of an EMA (its ``state_dict()``) of a model of the same architecture."""
    average = AveragedModel(model, use_buffers=True)
    average.load_state_dict(state)
    model.load_state_dict(average.module.state_dict())
