"""The actor's distribution over actions: categorical for discrete actions (the paper's), a tanh-squashed
Gaussian for continuous ones (docs/method.md §9, "Continuous actions").

The actor head's output (``params``) is turned into actions, log-probabilities and entropies here, so that
the actor-critic, its rollouts and its loss are written once for both kinds. What a rollout records of an
action (``taken``) is what the loss needs of it: the action index, or the pre-squash value ``u`` of a
continuous action (its environment action is ``tanh(u)``), from which the log-density is exact even where
``tanh`` saturates.

The continuous policy (``SquashedNormalPolicy``): ``u ~ N(mean, std^2)``, ``a = tanh(u)`` in ``[-1, 1]^D``;
``params`` holds ``mean`` and ``x``, ``std = min_std + (max_std - min_std) * sigmoid(x + std_offset)``.

- **log-probability** (REINFORCE): ``log pi(a) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2)``, the
  change of variables of the squashing (``SquashedNormal.log_prob_pre_tanh``). The correction depends on
  ``u`` alone, a constant of the parameters for the action taken, so it leaves the policy gradient
  ``-log pi(a) * advantage`` unchanged; it is there so that the value is the density of the action.
- **entropy**: the squashed distribution has none in closed form. The estimate is the Gaussian's closed-form
  entropy plus the log-Jacobian of the squashing at the action's own draw, ``H[N(mean, std)] + sum_i
  log(1 - tanh(u_i)^2)`` (``SquashedNormal.entropy_at``): unbiased (its expectation over the policy's draws
  is the entropy of the actions), differentiable by reparameterization (``u = mean + std * eps``, ``eps``
  held), and it draws nothing more from the generator. The Gaussian's entropy alone would reward a wide
  ``std`` even where ``tanh`` flattens every draw onto the bounds, a policy that is nearly deterministic in
  the actions it takes; the log-Jacobian term measures that loss of spread.
- **exploration** in the real environment: actions are sampled from the policy (``act``), the pre-squash
  ``std`` times the temperature; with probability ``epsilon`` an action is drawn uniformly in
  ``[-1, 1]^D`` instead (``collection.train_epsilon``, as epsilon-greedy for discrete actions). No other
  noise is added.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torch.distributions import Categorical

from diffworld.config.schema import ContinuousPolicyConfig
from diffworld.models.squashed_normal import SquashedNormal


class PolicyDivergedError(RuntimeError):
    """The actor produced parameters that are not finite: training diverged (a fault of the run, not of the
    user's input; the actions it would give are refused before they reach the environment)."""


class PolicyDistribution(Protocol):
    """How the actor head's output becomes actions, log-probabilities and entropies."""

    continuous: bool
    num_params: int
    """Outputs of the actor head."""

    def sample(self, params: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """On-policy draws for rollouts (no gradient): (the environment's actions, what the loss needs of
        them: ``taken``)."""
        ...

    def act(
        self, params: Tensor, epsilon: float, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        """Actions for the real environment: sampled at ``temperature``, or uniform with probability
        ``epsilon``."""
        ...

    def log_prob_and_entropy(self, params: Tensor, taken: Tensor) -> tuple[Tensor, Tensor]:
        """``log pi(taken)`` and the policy's entropy (an estimate for continuous actions), with gradients
        to ``params``; shapes ``params.shape[:-1]``."""
        ...

    def metrics(self, params: Tensor) -> dict[str, Tensor]:
        """Detached scalars that describe the policy, averaged over ``params``' steps."""
        ...


class CategoricalPolicy:
    """``softmax(logits)`` over ``num_actions`` discrete actions: the paper's policy."""

    continuous = False

    def __init__(self, num_actions: int) -> None:
        self.num_params = num_actions

    def sample(self, params: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        # A multinomial draw over the last dimension; (B, A) logits -> (B,) indices.
        action = torch.multinomial(params.detach().softmax(-1), 1, generator=generator).squeeze(1)
        return action, action

    def act(
        self, params: Tensor, epsilon: float, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        return sample_actions(params, epsilon, temperature, generator)

    def log_prob_and_entropy(self, params: Tensor, taken: Tensor) -> tuple[Tensor, Tensor]:
        dist = Categorical(logits=params)
        return dist.log_prob(taken), dist.entropy()

    def metrics(self, params: Tensor) -> dict[str, Tensor]:
        return {}


class SquashedNormalPolicy:
    """A tanh-squashed diagonal Gaussian over ``[-1, 1]^dim`` (see the module's docstring)."""

    continuous = True

    def __init__(self, dim: int, cfg: ContinuousPolicyConfig) -> None:
        if dim < 1:
            raise ValueError(f"a continuous policy needs at least one action component, got {dim}")
        self.dim = dim
        self.num_params = 2 * dim
        self.cfg = cfg

    def mean_std(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of the pre-squash Gaussian, each ``params.shape[:-1] + (dim,)``."""
        mean, x = params.split(self.dim, dim=-1)
        c = self.cfg
        std = c.min_std + (c.max_std - c.min_std) * torch.sigmoid(x + c.std_offset)
        return mean, std

    def distribution(self, params: Tensor, temperature: float = 1.0) -> SquashedNormal:
        """The policy's ``SquashedNormal`` on ``[-1, 1]^dim``, its std times ``temperature``."""
        mean, std = self.mean_std(params)
        return SquashedNormal(mean, std * temperature, validate_args=False)

    def sample(self, params: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        dist = self.distribution(params.detach())
        u = dist.rsample_pre_tanh((), generator)
        return dist.squash(u), u

    def act(
        self, params: Tensor, epsilon: float, temperature: float, generator: torch.Generator | None
    ) -> Tensor:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not bool(params.isfinite().all()):
            raise PolicyDivergedError(
                "the policy produced NaN or infinite parameters: its training diverged (look at the "
                "actor-critic's losses in the run's metrics); no action was taken from them"
            )
        dist = self.distribution(params.float().detach(), temperature)
        actions = dist.sample((), generator)
        b = params.size(0)
        # Every draw is made whatever epsilon is, so that the stream does not depend on it.
        explore = torch.rand(b, device=params.device, generator=generator) < epsilon
        uniform = torch.rand(b, self.dim, device=params.device, generator=generator) * 2 - 1
        return torch.where(explore[:, None], uniform, actions)

    def log_prob_and_entropy(self, params: Tensor, taken: Tensor) -> tuple[Tensor, Tensor]:
        dist = self.distribution(params)
        return dist.log_prob_pre_tanh(taken), dist.entropy_at(taken)

    def metrics(self, params: Tensor) -> dict[str, Tensor]:
        mean, std = self.mean_std(params.detach())
        return {"policy_std": std.mean(), "policy_mean_abs": mean.abs().mean()}


def sample_actions(
    logits: Tensor, epsilon: float, temperature: float, generator: torch.Generator | None = None
) -> Tensor:
    """Epsilon-greedy over sampling from ``softmax(logits / temperature)``: (B, A) logits -> (B,) int64."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    actions = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    b, num_actions = logits.shape
    explore = torch.rand(b, device=logits.device, generator=generator) < epsilon
    random_actions = torch.randint(num_actions, (b,), device=logits.device, generator=generator)
    return torch.where(explore, random_actions, actions)
