"""AdamW with decoupled weight decay on weight matrices and kernels only, and linear warm-up (docs/method.md
§6)."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

from diffworld.config.schema import OptimizerConfig


def make_optimizer(model: nn.Module, cfg: OptimizerConfig) -> AdamW:
    """AdamW where biases, normalization parameters and embeddings are not decayed.

    Decaying a norm's scale or an embedding pulls them toward zero for no regularization benefit, which
    is why the usual practice (minGPT, IRIS, DIAMOND) exempts them.
    """
    no_decay_modules = (nn.Embedding, nn.GroupNorm, nn.LayerNorm)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            exempt = isinstance(module, no_decay_modules) or param.ndim < 2 or name.startswith("bias")
            (no_decay if exempt else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return AdamW(groups, lr=cfg.lr, eps=cfg.eps)


def make_warmup_scheduler(optimizer: AdamW, warmup_steps: int) -> LambdaLR:
    """Learning rate ramps linearly to its value over ``warmup_steps`` optimizer steps, then stays."""
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


def with_hyperparameters(
    optimizer_state: dict[str, Any], scheduler_state: dict[str, Any], cfg: OptimizerConfig
) -> None:
    """Give the saved states of a ``make_optimizer`` optimizer and its ``make_warmup_scheduler`` the learning
    rate, weight decay and eps of ``cfg`` (in place), keeping the moments, the step counts and where the
    warm-up stands: loading the states as they are into optimizers built from ``cfg`` would restore the saved
    hyperparameters (``load_state_dict`` does)."""
    decay, no_decay = optimizer_state["param_groups"]
    for group, weight_decay in ((decay, cfg.weight_decay), (no_decay, 0.0)):
        warmup_factor = group["lr"] / group["initial_lr"] if group["initial_lr"] else 1.0
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * warmup_factor
        group["weight_decay"] = weight_decay
        group["eps"] = cfg.eps
    scheduler_state["base_lrs"] = [cfg.lr, cfg.lr]
    scheduler_state["_last_lr"] = [group["lr"] for group in (decay, no_decay)]
