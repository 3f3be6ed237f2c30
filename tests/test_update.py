"""``train_updates``, the one update loop: accumulation over a batch source that may run out."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from diffworld.fitting.update import train_updates


class Squares(nn.Module):
    """``forward(batch) -> (loss, metrics)`` with a known loss: (w - batch)^2."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, batch: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = (self.w - batch) ** 2
        return loss, {"loss": loss.detach()}


class Countdown:
    """Batches 1, 2, 3, ... until ``num`` were given."""

    def __init__(self, num: int) -> None:
        self.num, self.given = num, 0

    def sample(self) -> float:
        self.given += 1
        return float(self.given)

    def batches_left(self) -> int:
        return self.num - self.given


def run(model: nn.Module, source: Countdown, steps: int, grad_acc_steps: int) -> tuple[dict[str, float], int]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    result = train_updates(
        model,
        source,  # type: ignore[arg-type]
        optimizer,
        scheduler,
        steps=steps,
        grad_acc_steps=grad_acc_steps,
        max_grad_norm=100.0,
        autocast=contextlib.nullcontext,
    )
    return result.metrics, result.num_updates


def test_updates_stop_when_the_batches_run_out_and_average_over_those_taken() -> None:
    model = Squares()
    metrics, num_updates = run(model, Countdown(3), steps=5, grad_acc_steps=2)
    assert num_updates == 2  # batches 1 and 2, then batch 3 alone
    # From w=0: gradient mean(2(0-1), 2(0-2)) = -3, w = 1.5; then on batch 3: 2(1.5-3) = -3, w = 3.
    assert model.w.item() == pytest.approx(3.0)
    assert metrics["loss"] == pytest.approx((1 + 4 + 2.25) / 3)
    assert metrics["grad_norm"] == pytest.approx(3.0)
    assert metrics["lr"] == 0.5
    assert not model.training


def test_no_update_no_learning_rate() -> None:
    metrics, num_updates = run(Squares(), Countdown(0), steps=3, grad_acc_steps=1)
    assert num_updates == 0 and metrics == {}
