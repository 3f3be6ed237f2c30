"""The actor-critic: a small conv encoder, an LSTM cell, zero-initialized policy and value heads
(docs/method.md §5). Its policy is categorical over discrete actions, a tanh-squashed Gaussian over
continuous ones (``models/policy_distributions.py``); with ``actor_critic.return_normalization=percentile``
it also holds the running percentiles of the returns that scale the advantages (``PercentileReturnScale``,
docs/method.md §9)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffworld.config.schema import ActorCriticConfig, ReturnNormalization
from diffworld.data.actions import ActionSpec, action_spec_of, is_box_spec, is_index_spec
from diffworld.models.blocks import channels_last
from diffworld.models.policy_distributions import (
    CategoricalPolicy,
    PolicyDistribution,
    SquashedNormalPolicy,
    sample_actions,
)
from diffworld.models.returns import lambda_returns

__all__ = [
    "ActorCritic",
    "ActorCriticLossTerms",
    "LSTMState",
    "PercentileReturnScale",
    "actor_critic_loss",
    "actor_critic_loss_terms",
    "init_lstm",
    "make_policy",
    "sample_actions",
]

LSTMState = tuple[Tensor, Tensor]
"""``(h, c)`` of an LSTM: each (B, lstm_dim) for an ``nn.LSTMCell``, (1, B, lstm_dim) for an ``nn.LSTM``."""

_GROUP_SIZE = 32
RETURN_PERCENTILES = (0.05, 0.95)
"""The percentiles of the lambda-returns whose spread scales the advantages (``return_normalization``)."""
RETURN_SCALE_DECAY = 0.99
"""The decay of their moving averages (DreamerV3's)."""


def init_lstm(lstm: nn.LSTM | nn.LSTMCell) -> None:
    """Xavier input weights, orthogonal recurrent weights, zero biases but a forget-gate bias of 1."""
    for name, p in lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(p)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(p)
        else:
            nn.init.zeros_(p)
            if name.startswith("bias_ih"):
                n = p.size(0) // 4
                nn.init.ones_(p[n : 2 * n])


class SmallResBlock(nn.Module):
    """Unconditioned residual block: GroupNorm, SiLU, 3x3 conv, plus a (1x1-projected if needed) skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(max(1, in_channels // _GROUP_SIZE), in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.conv(F.silu(self.norm(x)))


class PercentileReturnScale(nn.Module):
    """DreamerV3's return normalisation (``actor_critic.return_normalization=percentile``): the advantages
    are divided by ``scale() = max(1, high - low)``, where ``low`` and ``high`` are exponential moving
    averages (decay ``RETURN_SCALE_DECAY``, starting from 0 with no bias correction, as DreamerV3's) of the
    5th and 95th percentiles (linear interpolation) of each update's lambda-returns. Both are buffers: they
    are saved and restored with the actor-critic's state. They draw no random number."""

    low: Tensor
    high: Tensor

    def __init__(self, decay: float = RETURN_SCALE_DECAY) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: Tensor, mask: Tensor | None = None) -> None:
        """Move ``low`` and ``high`` towards the percentiles of ``returns`` (over the steps where ``mask``
        is True, if given; none: no change)."""
        x = returns.detach().float()
        x = x[mask] if mask is not None else x.flatten()
        if x.numel() == 0:
            return
        q = torch.quantile(x, torch.tensor(RETURN_PERCENTILES, device=x.device))
        self.low.copy_(self.decay * self.low + (1 - self.decay) * q[0])
        self.high.copy_(self.decay * self.high + (1 - self.decay) * q[1])

    def scale(self) -> Tensor:
        """``max(1, high - low)``: what the advantages are divided by."""
        return (self.high - self.low).clamp(min=1.0)


def make_policy(actions: int | ActionSpec, cfg: ActorCriticConfig) -> PolicyDistribution:
    """The policy distribution of an action space: categorical over ``actions`` discrete actions (an int, or a
    spec of one discrete component), the tanh-squashed Gaussian over a spec of continuous components (the
    agent's ``[-1, 1]^D``, ``data.actions.box_spec``)."""
    spec = action_spec_of(actions)
    if is_index_spec(spec):
        return CategoricalPolicy(spec.components[0].n)  # type: ignore[union-attr]
    if is_box_spec(spec) and all(
        (c.low, c.high) == (-1.0, 1.0)  # type: ignore[union-attr]
        for c in spec.components
    ):
        return SquashedNormalPolicy(spec.width, cfg.continuous)
    raise ValueError(
        f"the actor-critic takes one discrete component or continuous ones within [-1, 1], not "
        f"{spec.describe()}"
    )


class ActorCritic(nn.Module):
    """Policy and value of an observation given the recurrent state; the heads start at zero (uniform policy
    over discrete actions; over continuous ones, every component at mean 0 and the std of
    ``actor_critic.continuous``).

    Encoder: 3x3 conv (3 to ``channels[0]``), then per entry of ``cfg.channels`` one ``SmallResBlock`` and a
    2x2 max-pooling (64x64 to 4x4 with four entries), flattened into an ``nn.LSTMCell`` of ``cfg.lstm_dim``.
    About 3.23 M parameters at the paper's settings.

    ``actions``: the number of discrete actions, or the action space (``make_policy``). ``num_actions`` is
    the number of discrete actions, or of continuous components; ``policy`` turns the actor head's output
    (``logits``, for continuous actions the Gaussian's parameters) into actions. ``return_scale``: the
    running percentiles of the returns with ``return_normalization=percentile`` (buffers, after every
    parameter), else None (no state added).
    """

    def __init__(self, cfg: ActorCriticConfig, actions: int | ActionSpec, img_size: int = 64) -> None:
        super().__init__()
        channels = list(cfg.channels)
        feat_size = img_size // 2 ** len(channels)
        if feat_size * 2 ** len(channels) != img_size:
            raise ValueError(f"img_size {img_size} is not divisible by 2^{len(channels)}")
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], kernel_size=3, padding=1)]
        for c_in, c_out in zip([channels[0], *channels[:-1]], channels, strict=True):
            layers += [SmallResBlock(c_in, c_out), nn.MaxPool2d(2)]
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.policy = make_policy(actions, cfg)
        self.num_actions = self.policy.num_params // 2 if self.policy.continuous else self.policy.num_params
        self.lstm_dim = cfg.lstm_dim
        self.lstm = nn.LSTMCell(channels[-1] * feat_size**2, cfg.lstm_dim)
        self.actor = nn.Linear(cfg.lstm_dim, self.policy.num_params)
        self.critic = nn.Linear(cfg.lstm_dim, 1)
        init_lstm(self.lstm)
        for head in (self.actor, self.critic):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        percentile = ReturnNormalization(cfg.return_normalization) is ReturnNormalization.percentile
        self.return_scale = PercentileReturnScale() if percentile else None

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> LSTMState:
        """Zero ``(hx, cx)`` for ``batch_size`` trajectories."""
        weight = self.lstm.weight_hh
        zeros = torch.zeros(batch_size, self.lstm_dim, device=device or weight.device, dtype=weight.dtype)
        return zeros, zeros.clone()

    def _heads(self, hx: Tensor) -> tuple[Tensor, Tensor]:
        # float32 whatever the autocast (training.precision): the losses and lambda-returns need it.
        return self.actor(hx).float(), self.critic(hx).squeeze(1).float()

    def step(self, obs: Tensor, hx_cx: LSTMState | None = None) -> tuple[Tensor, Tensor, LSTMState]:
        """One step: ``obs`` (B, 3, H, W) in [-1, 1] -> logits (B, A) (continuous actions: the policy's
        parameters (B, 2D), see ``policy``), value (B,), new ``(hx, cx)``.

        ``hx_cx=None`` starts from the zero state.
        """
        hx, cx = self.lstm(self.encoder(channels_last(obs)), hx_cx)
        logits, value = self._heads(hx)
        return logits, value, (hx.float(), cx.float())  # the carried state stays float32 under autocast

    def burn_in(self, obs_seq: Tensor, mask: Tensor, hx_cx: LSTMState | None = None) -> LSTMState:
        """Recurrent state after ``obs_seq`` (B, T, 3, H, W), skipping steps where ``mask`` (B, T) is False.

        A masked (padding) step leaves the state as it was, so left padding yields the state of the real
        frames alone. The frames are encoded in one batch; only the LSTM cell runs step by step.
        """
        b, t = obs_seq.shape[:2]
        feats = self.encoder(channels_last(obs_seq.flatten(0, 1))).unflatten(0, (b, t))
        hx, cx = self.initial_state(b, obs_seq.device) if hx_cx is None else hx_cx
        for i in range(t):
            new_hx, new_cx = self.lstm(feats[:, i], (hx, cx))
            new_hx, new_cx = new_hx.float(), new_cx.float()
            keep = mask[:, i, None]
            hx, cx = torch.where(keep, new_hx, hx), torch.where(keep, new_cx, cx)
        return hx, cx

    @torch.no_grad()
    def act(
        self,
        obs: Tensor,
        hx_cx: LSTMState | None,
        epsilon: float = 0.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, LSTMState]:
        """Actions for collection and test episodes, and the new recurrent state to pass to the next call.

        Each action is sampled from ``softmax(logits / temperature)``, or with probability ``epsilon``
        replaced by a uniformly random one; continuous actions (B, D) in [-1, 1] from the squashed Gaussian
        with its std times ``temperature``, or uniformly in [-1, 1]^D with probability ``epsilon``
        (``policy.act``). ``generator`` (on ``obs``'s device) makes the draws reproducible.
        """
        logits, _, hx_cx = self.step(obs, hx_cx)
        return self.policy.act(logits, epsilon, temperature, generator), hx_cx


@dataclass(frozen=True)
class ActorCriticLossTerms:
    """The parts of docs/method.md §5's loss, each a mean over the steps, with the graph to the network."""

    policy_loss: Tensor
    """``mean(-log pi(a) * advantage)``: the actor's REINFORCE term."""
    value_loss: Tensor
    """``value_loss_weight * mean((V - G)^2)``: the critic's term, weighted."""
    entropy: Tensor
    """``mean(entropy of pi)``, unweighted (the loss subtracts ``entropy_weight`` times it)."""
    loss: Tensor
    """``policy_loss + value_loss - entropy_weight * entropy``."""
    metrics: dict[str, Tensor]
    """Detached scalars (see ``actor_critic_loss``)."""


def actor_critic_loss_terms(
    logits: Tensor,
    values: Tensor,
    actions: Tensor,
    rew: Tensor,
    end: Tensor,
    trunc: Tensor,
    next_values: Tensor,
    cfg: ActorCriticConfig,
    mask: Tensor | None = None,
    policy: PolicyDistribution | None = None,
    clip_rewards: bool = True,
    return_scale: PercentileReturnScale | None = None,
    update_return_scale: bool = True,
) -> ActorCriticLossTerms:
    """``actor_critic_loss`` with its terms kept apart: their gradients can be measured one by one (the
    actor's and the critic's share the encoder and the LSTM)."""
    returns = lambda_returns(rew, end, trunc, next_values.detach(), cfg.gamma, cfg.lambda_, clip_rewards)
    if policy is None:
        policy = CategoricalPolicy(logits.size(-1))
    log_probs, entropy = policy.log_prob_and_entropy(logits, actions)
    advantages = (returns - values).detach()
    # The REINFORCE weights: the advantages as they are (the paper's), or divided by the returns' running
    # percentile spread (return_normalization=percentile, updated with these returns first, as DreamerV3).
    scale: Tensor | None = None
    if return_scale is not None:
        if update_return_scale:
            return_scale.update(returns, mask)
        scale = return_scale.scale()
    weights = advantages if scale is None else advantages / scale

    def mean(x: Tensor) -> Tensor:
        if mask is None:
            return x.mean()
        return torch.where(mask, x, 0).sum() / mask.sum().clamp(min=1)

    def std(x: Tensor) -> Tensor:
        # Over the same steps as ``mean``, with the population's normalisation (1 / n).
        return mean((x - mean(x)) ** 2).sqrt()

    policy_loss = mean(-log_probs * weights)
    value_loss = cfg.value_loss_weight * mean((values - returns) ** 2)
    entropy_mean = mean(entropy)
    loss = policy_loss + value_loss - cfg.entropy_weight * entropy_mean
    metrics = {
        "loss": loss.detach(),
        "policy_loss": policy_loss.detach(),
        "value_loss": value_loss.detach(),
        "entropy": entropy_mean.detach(),
        "return": mean(returns),
        "return_std": std(returns),
        "value": mean(values.detach()),
        "value_abs_mean": mean(values.detach().abs()),
        "advantage": mean(advantages),
        "advantage_std": std(advantages),
        # Compared with the dataset's rate (``collection/train/dataset_reward_rate``), this shows whether the
        # world model imagines the events that are rewarded: a rate far below it leaves the actor no signal.
        "reward_rate": mean((rew != 0).float()),
    }
    if not clip_rewards:
        # Rewards taken as they are (reward_model.reward_kind=value): nearly all nonzero on dense tasks, so
        # their mean says more than the rate.
        metrics["reward_mean"] = mean(rew.to(values.dtype))
    if scale is not None:
        metrics["return_scale"] = scale
    metrics |= policy.metrics(logits)
    return ActorCriticLossTerms(policy_loss, value_loss, entropy_mean, loss, metrics)


def actor_critic_loss(
    logits: Tensor,
    values: Tensor,
    actions: Tensor,
    rew: Tensor,
    end: Tensor,
    trunc: Tensor,
    next_values: Tensor,
    cfg: ActorCriticConfig,
    mask: Tensor | None = None,
    policy: PolicyDistribution | None = None,
    clip_rewards: bool = True,
    return_scale: PercentileReturnScale | None = None,
    update_return_scale: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE with a value baseline, value regression and an entropy bonus on imagined steps
    (docs/method.md §5).

    ``logits`` (B, H, A) and ``values`` (B, H) carry gradients; ``actions``, ``rew``, ``end``, ``trunc``,
    ``next_values`` are (B, H) (``next_values[:, t]``: critic's value after step ``t``, of the true final
    observation where truncated). ``policy`` (the actor-critic's ``policy``; None: categorical over the
    logits) reads ``logits`` and ``actions``: for continuous actions the Gaussian's parameters (B, H, 2D)
    and the pre-squash values of the actions taken (B, H, D), the log-density with its squashing correction
    and the entropy estimate of ``models/policy_distributions.py``. Targets are ``lambda_returns``
    (no gradient) of sign-clipped rewards, or with ``clip_rewards=False`` of the rewards as they are
    (``reward_model.reward_kind=value``; the metrics then add ``reward_mean``)::

        loss = mean(-log pi(a) * (G - V).detach()) + value_loss_weight * mean((V - G)^2)
               - entropy_weight * mean(entropy)

    The advantages ``G - V`` weigh the REINFORCE term as they are (the paper's), or, given ``return_scale``
    (the actor-critic's, ``actor_critic.return_normalization=percentile``), divided by its ``scale()``
    after it is updated with these returns (unless ``update_return_scale`` is False: the diagnostics read it
    without moving it); the value loss takes the raw returns either way, and the metrics add
    ``return_scale``.

    Means run over the (B, H) steps, or over those where ``mask`` (B, H) is True. Metrics are detached: the
    three terms and the loss, the policy's mean ``entropy``, the means of the lambda-returns ``return``, of
    the values ``value``, of their absolute values ``value_abs_mean``, of the advantages ``advantage``, the
    standard deviations (over the same steps, population normalisation) ``return_std`` and
    ``advantage_std``, and ``reward_rate``, the share of steps with a nonzero reward; for continuous actions
    also ``policy_std`` and ``policy_mean_abs``, the means of the pre-squash Gaussian's std and of the size
    of its mean.
    """
    terms = actor_critic_loss_terms(
        logits,
        values,
        actions,
        rew,
        end,
        trunc,
        next_values,
        cfg,
        mask,
        policy,
        clip_rewards,
        return_scale,
        update_return_scale,
    )
    return terms.loss, terms.metrics
