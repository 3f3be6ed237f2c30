"""The optimizer updates every model trains with (docs/method.md §6): accumulate, clip, step, schedule.

``train_updates`` is the one loop: both products' trainers call it through a ``TrainingSlot`` (one per
model), the benchmarks and the precision comparison directly. Batches come from a ``BatchSource``: a
dataset's segments (``SampledBatches``), or the model-free baseline's real rollouts
(``agent.model_free.RealRolloutBatches``), which its loss takes itself and whose number the real-step
budget bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from diffworld.config.schema import BatchesConfig, GradAccumulation, OptimizerConfig
from diffworld.data.batch import Batch
from diffworld.data.store import SegmentSource


class BatchSource(Protocol):
    """What a model's ``forward(batch) -> (loss, metrics)`` is called on, one batch per call."""

    def sample(self) -> object:
        """The next batch, what the model's forward takes (a ``Batch``); None where the model draws its own
        data (the model-free baseline's rollouts)."""
        ...

    def batches_left(self) -> int | None:
        """How many more batches there are; None when they never run out."""
        ...


class SampledBatches:
    """Segments drawn from a dataset by ``segments`` (either product's segment sampler), without end."""

    def __init__(self, segments: SegmentSource) -> None:
        self.segments = segments

    def sample(self) -> Batch:
        return self.segments.sample()

    def batches_left(self) -> None:
        return None


@dataclass(frozen=True)
class UpdateResult:
    metrics: dict[str, float]
    """Each of the model's metrics averaged over the batches, ``grad_norm`` (before clipping) and ``lr``
    (after the last update; absent when there was no batch)."""
    num_updates: int


def train_updates(
    model: nn.Module,
    batches: BatchSource,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    *,
    steps: int,
    grad_acc_steps: int,
    max_grad_norm: float,
    autocast: Callable[[], AbstractContextManager[object]],
    desc: str = "updates",
    sum_accumulated: bool = False,
    after_step: Callable[[], None] | None = None,
) -> UpdateResult:
    """``steps`` optimizer updates of ``model``, each on the mean gradient of ``grad_acc_steps`` batches (on
    their sum with ``sum_accumulated``, as the official CS:GO trainer: ``max_grad_norm`` then clips the sum).
    ``after_step`` is called right after each optimizer step (to update an average of the weights).

    Stops early when ``batches`` runs out; an update then combines the batches that were left. Every
    forward pass runs inside ``autocast()``. The model is in training mode during the updates and in
    evaluation mode after them.
    """
    model.train()
    sums: dict[str, Tensor] = {}
    num_batches_done = 0
    num_updates = 0
    for _ in tqdm(range(steps), desc=desc, leave=False, dynamic_ncols=True, disable=steps == 0):
        num_batches = grad_acc_steps
        left = batches.batches_left()
        if left is not None:
            num_batches = min(num_batches, left)
            if num_batches == 0:
                break
        for _ in range(num_batches):
            batch = batches.sample()
            with autocast():
                loss, step_metrics = model(batch)
            (loss if sum_accumulated else loss / num_batches).backward()
            for key, value in step_metrics.items():
                sums[key] = sums.get(key, 0) + value
        num_batches_done += num_batches
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        sums["grad_norm"] = sums.get("grad_norm", 0) + grad_norm.detach() * num_batches
        optimizer.step()
        if after_step is not None:
            after_step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        num_updates += 1
    model.eval()
    n = max(1, num_batches_done)
    metrics = {key: float(value) / n for key, value in sums.items()}
    if num_batches_done:
        metrics["lr"] = float(scheduler.get_last_lr()[0])
    return UpdateResult(metrics, num_updates)


@dataclass(kw_only=True)
class TrainingSlot:
    """One model with what trains it, in either product's trainer: its batches, optimizer and schedule, how
    an update combines its batches and clips their gradient, and the average of its weights where it keeps
    one (``fitting/ema.py``). ``train`` is the trainers' one call of ``train_updates``."""

    model: nn.Module
    """The model trained, ``model(batch) -> (loss, metrics)``: the weights saved and averaged."""
    batches: BatchSource
    optimizer: Optimizer
    scheduler: LRScheduler
    training: BatchesConfig
    """Its batches per update and how their gradients combine."""
    optim_cfg: OptimizerConfig
    """Its optimizer's settings, of which ``train`` reads ``max_grad_norm`` at each call (the configuration,
    not a copy of its value)."""
    replica: nn.Module | None = None
    """What the updates call where it is not ``model`` itself: ``model`` in DistributedDataParallel (an
    engine trained by several processes)."""
    ema: AveragedModel | None = None
    """The exponential moving average of ``model``'s weights, updated after each optimizer step; None
    without."""

    def train(
        self, steps: int, autocast: Callable[[], AbstractContextManager[object]], desc: str
    ) -> UpdateResult:
        """``steps`` optimizer updates (``train_updates``), each followed by the average's."""
        return train_updates(
            self.model if self.replica is None else self.replica,
            self.batches,
            self.optimizer,
            self.scheduler,
            steps=steps,
            grad_acc_steps=self.training.grad_acc_steps,
            max_grad_norm=self.optim_cfg.max_grad_norm,
            autocast=autocast,
            desc=desc,
            sum_accumulated=self.training.grad_accumulation is GradAccumulation.sum,
            # Of the unwrapped module, whose parameters a DistributedDataParallel replica shares.
            after_step=None if self.ema is None else partial(self.ema.update_parameters, self.model),
        )
