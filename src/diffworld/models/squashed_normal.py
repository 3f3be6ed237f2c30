"""The tanh-squashed diagonal Gaussian: a policy distribution over a bounded Box of continuous actions.

A pre-squash sample ``u ~ N(mean, std^2)`` (independent components) is squashed by ``tanh`` into ``(-1, 1)``
and rescaled into ``[low, high]``::

    a = low + (high - low) * (tanh(u) + 1) / 2   =  loc + scale * tanh(u),
    loc = (high + low) / 2,  scale = (high - low) / 2.

Its log-density, by the change of variables (Haarnoja et al., 2018, "Soft Actor-Critic", appendix C), summed
over the ``D`` action components::

    log p(a) = sum_i [ log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2) - log(scale_i) ]

with the log-Jacobian of ``tanh`` in the numerically stable form (no ``1 - tanh^2`` that rounds to 0)::

    log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)).

Use ``rsample_with_log_prob``, which keeps ``u``: ``log_prob(a)`` has to recover ``u = atanh(...)`` from the
action, which is exact inside the bounds but infinite on them, where ``tanh`` saturates in floating point
(|u| above about 9 in float32); it clamps the squashed value to ``1 - eps`` there (see ``log_prob``).

The squashed distribution has no closed-form entropy. ``entropy`` estimates it by Monte Carlo as the
Gaussian's closed-form entropy plus the expected log-Jacobian of the squashing::

    H[a] = H[u] + E_u[ sum_i log(scale_i) + log(1 - tanh(u_i)^2) ],
    H[u] = sum_i (1/2) log(2 pi e std_i^2),

the expectation averaged over ``num_samples`` reparameterized draws. It is unbiased (its mean is the true
entropy, whatever ``num_samples``), differentiable through ``rsample``, and its variance falls as
``1 / num_samples``. SAC's single-sample estimate ``-log p(a)``, ``a`` drawn from the policy with
``rsample_with_log_prob``, is unbiased too (``E[-log p(a)] = H[a]``); neither has the lower variance
everywhere: with the mean near saturation the Gaussian term ``-log N(u)`` and the log-Jacobian move in
opposite directions and partly cancel in ``-log p(a)`` (``tests/test_squashed_normal.py`` measures both).
Both need the log-densities from ``u``: ``-log_prob(a)`` of actions on the bounds takes a clamped ``u``.

``mode`` is the deterministic action for evaluation, ``loc + scale * tanh(mean)`` as in SAC: the image of the
Gaussian's mode, which is the squashed density's mode when ``std`` is small, but not when it is large (the
squashed density then piles up near the bounds).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def log_one_minus_tanh_sq(u: Tensor) -> Tensor:
    """``log(1 - tanh(u)^2)``, elementwise, as ``2 * (log 2 - u - softplus(-2u))``: finite for any finite
    ``u`` (about ``-2|u| + 2 log 2`` for large ``|u|``), where the direct form gives ``log 0 = -inf`` from
    |u| ~ 9 in float32."""
    return 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))


class SquashedNormal:
    """``a = loc + scale * tanh(u)``, ``u ~ N(mean, std^2)`` diagonal; the event is the last dimension.

    Args:
        mean: ``(..., D)`` means of the pre-squash Gaussian.
        std: ``(..., D)`` standard deviations, positive (broadcast against ``mean``).
        low: ``(D,)`` or broadcastable lower bounds of the actions (e.g. ``action_space.low``).
        high: upper bounds, each above its ``low``.
        validate_args: check that ``std > 0`` and ``high > low`` (a device synchronization on a GPU).

    Every method that draws takes an optional ``generator``, so that any draw can come from a stream of its
    own (the agent's come from the imagination's or the collector's). The agent's policy uses
    ``rsample_pre_tanh``, ``log_prob_pre_tanh`` and ``entropy_at``; ``rsample_with_log_prob`` and
    ``entropy`` (SAC's estimate and the many-sample one, which the tests compare with it) complete the
    distribution's interface and take ``generator`` too, for the same reason.
    """

    def __init__(
        self,
        mean: Tensor,
        std: Tensor,
        low: Tensor | float = -1.0,
        high: Tensor | float = 1.0,
        validate_args: bool = True,
    ) -> None:
        mean, std = torch.broadcast_tensors(mean, std)
        if mean.ndim < 1:
            raise ValueError("mean and std need an action dimension (the last one)")
        low_t = torch.as_tensor(low, dtype=mean.dtype, device=mean.device)
        high_t = torch.as_tensor(high, dtype=mean.dtype, device=mean.device)
        if validate_args:
            if not bool((high_t > low_t).all()):
                raise ValueError(
                    f"every high must be above its low, got {low_t.tolist()} and {high_t.tolist()}"
                )
            if not bool((std > 0).all()):
                raise ValueError("std must be positive")
        self.mean = mean
        self.std = std
        self.low = low_t.expand_as(mean)
        self.high = high_t.expand_as(mean)
        self.loc = (self.high + self.low) / 2
        self.scale = (self.high - self.low) / 2

    @property
    def batch_shape(self) -> torch.Size:
        return self.mean.shape[:-1]

    @property
    def action_dim(self) -> int:
        return self.mean.shape[-1]

    def squash(self, u: Tensor) -> Tensor:
        """``loc + scale * tanh(u)``, clamped to ``[low, high]`` against rounding."""
        # clamp, not minimum / maximum: its gradient is 1 on the bounds too (theirs is halved at ties).
        return torch.clamp(self.loc + self.scale * torch.tanh(u), self.low, self.high)

    def rsample_pre_tanh(
        self, sample_shape: torch.Size | tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """``u = mean + std * eps``, ``eps ~ N(0, I)`` drawn from ``generator`` (None: torch's global one,
        on ``mean``'s device): shape ``sample_shape + mean.shape``, differentiable in ``mean`` and ``std``."""
        shape = torch.Size(sample_shape) + self.mean.shape
        eps = torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device, generator=generator)
        return self.mean + self.std * eps

    def rsample(
        self, sample_shape: torch.Size | tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """Actions in ``[low, high]``, reparameterized (gradients flow to ``mean`` and ``std``)."""
        return self.squash(self.rsample_pre_tanh(sample_shape, generator))

    @torch.no_grad()
    def sample(
        self, sample_shape: torch.Size | tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """Actions in ``[low, high]``, without gradient."""
        return self.rsample(sample_shape, generator)

    def rsample_with_log_prob(
        self, sample_shape: torch.Size | tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized actions and their exact log-densities (from ``u``, so finite even where ``tanh``
        saturates): shapes ``sample_shape + mean.shape`` and ``sample_shape + batch_shape``."""
        u = self.rsample_pre_tanh(sample_shape, generator)
        return self.squash(u), self.log_prob_pre_tanh(u)

    def gaussian_log_prob(self, u: Tensor) -> Tensor:
        """``sum_i log N(u_i; mean_i, std_i)``."""
        z = (u - self.mean) / self.std
        return (-0.5 * z.square() - self.std.log() - _HALF_LOG_2PI).sum(-1)

    def log_abs_det_jacobian(self, u: Tensor) -> Tensor:
        """``log |det da/du| = sum_i log(scale_i) + log(1 - tanh(u_i)^2)``."""
        return (self.scale.log() + log_one_minus_tanh_sq(u)).sum(-1)

    def log_prob_pre_tanh(self, u: Tensor) -> Tensor:
        """``log p(a)`` of the action ``a = squash(u)``, computed from ``u``:
        ``log N(u; mean, std) - log |det da/du|`` summed over the action components."""
        return self.gaussian_log_prob(u) - self.log_abs_det_jacobian(u)

    def log_prob(self, action: Tensor, eps: float | None = None) -> Tensor:
        """``log p(action)`` for actions in ``[low, high]``, shape ``action.shape[:-1]``.

        ``u = atanh(y)``, ``y = (action - loc) / scale`` clamped to ``[-1 + eps, 1 - eps]`` (``eps`` defaults
        to the dtype's machine epsilon): exact inside; on the bounds finite but not the density of the
        sample, whose true ``u`` was lost to rounding. Prefer ``rsample_with_log_prob`` for the policy's own
        samples.
        """
        if eps is None:
            eps = torch.finfo(action.dtype).eps
        y = ((action - self.loc) / self.scale).clamp(-1.0 + eps, 1.0 - eps)
        return self.log_prob_pre_tanh(torch.atanh(y))

    def gaussian_entropy(self) -> Tensor:
        """Closed-form entropy of the pre-squash Gaussian, ``sum_i (1/2) log(2 pi e std_i^2)``."""
        return (0.5 + _HALF_LOG_2PI + self.std.log()).sum(-1)

    def entropy(self, num_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Unbiased Monte Carlo estimate of the squashed distribution's entropy (shape ``batch_shape``):
        ``gaussian_entropy() + mean over num_samples draws of log_abs_det_jacobian(u)``, differentiable
        through the reparameterized draws (see the module's docstring), drawn from ``generator``."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        u = self.rsample_pre_tanh((num_samples,), generator)
        return self.gaussian_entropy() + self.log_abs_det_jacobian(u).mean(0)

    def entropy_at(self, u: Tensor) -> Tensor:
        """The one-sample estimate of ``entropy`` at a draw ``u`` already made (shape ``batch_shape``), e.g.
        the pre-squash value of the action a policy took: ``gaussian_entropy() + log_abs_det_jacobian(u')``
        with ``u' = mean + std * eps``, ``eps = (u - mean) / std`` held fixed. ``u'`` equals ``u``; the
        gradient is the reparameterized one, as if ``u`` had been drawn by ``rsample_pre_tanh``. Unbiased when
        ``u`` is a draw of this distribution; it draws nothing."""
        eps = ((u - self.mean) / self.std).detach()
        return self.gaussian_entropy() + self.log_abs_det_jacobian(self.mean + self.std * eps)

    @property
    def mode(self) -> Tensor:
        """The deterministic action, ``loc + scale * tanh(mean)`` (see the module's docstring)."""
        return self.squash(self.mean)
