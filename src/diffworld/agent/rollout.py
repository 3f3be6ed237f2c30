"""One rollout loop for the actor-critic, whatever it acts in: the world model or the real game.

``rollout`` steps a recurrent policy for H steps in a batched ``PolicyEnv`` and records what docs/method.md
§5's loss needs (logits and values with gradients, actions, rewards (their sign, or with
``reward_model.reward_kind=value`` the predicted or real value), terminations, truncations and the critic's
value of each state reached). Two environments implement ``PolicyEnv``: imagination
(``agent/imagination.py``: every rollout starts from dataset segments, the recurrent state is burnt in on
their frames and on those of every restarted trajectory) and the real Atari games (``agent/model_free.py``:
rollouts continue each other, the recurrent state starts from zero at every new episode). Both treat an
episode's end the same way: termination zeroes the bootstrap, truncation bootstraps with the critic's value of
the true final observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from diffworld.models.actor_critic import ActorCritic, LSTMState


@dataclass(frozen=True)
class EnvStep:
    """What one step of B environments returns to the policy (tensors on the policy's device)."""

    obs: Tensor
    """(B, 3, H, W) in [-1, 1]: the observation to act on next (a new episode's first where one ended)."""
    rew: Tensor
    """(B,) the step's reward: its sign in {-1, 0, 1}, or with ``reward_model.reward_kind=value`` the
    imagined (predicted) or real value. float32 in imagination; float64 on the model-free path (the real
    envs' rewards as numpy gives them; the returns are computed in the values' dtype either way)."""
    end: Tensor
    """(B,) bool: the episode terminated (no bootstrap)."""
    trunc: Tensor
    """(B,) bool: the episode was cut short (bootstrap with the value of ``final_obs``); never with end."""
    final_obs: Tensor
    """(B, 3, H, W): the observation this step reached (differs from ``obs`` where ``end | trunc``)."""


class PolicyEnv(Protocol):
    """B environments in which ``rollout`` steps a recurrent policy, all at once, in torch."""

    @property
    def generator(self) -> torch.Generator | None:
        """Draws the policy's actions (on the policy's device)."""
        ...

    def start(self, actor_critic: ActorCritic) -> tuple[Tensor, LSTMState]:
        """Begin a rollout: the (B, 3, H, W) observations to act on first, the recurrent state to act with."""
        ...

    def step(self, act: Tensor) -> EnvStep:
        """Advance every environment with actions ``act`` ((B,) indices, or (B, D) vectors in [-1, 1]);
        episodes that end restart on the spot."""
        ...

    def restart(self, actor_critic: ActorCritic, state: LSTMState, s: EnvStep, rows: Tensor) -> LSTMState:
        """``state`` with its ``rows`` (episodes that ended at ``s``) ready to act on their new ``s.obs``.

        ``rollout`` skips this at its last step, where no further action is taken: an environment whose
        rollouts continue each other fixes those rows in ``stop``.
        """
        ...

    def stop(self, state: LSTMState) -> None:
        """The rollout stops; ``state`` is the recurrent state after the last step (see ``restart``)."""
        ...


@dataclass(frozen=True)
class Rollout:
    """H steps of B trajectories, with what the actor-critic loss needs."""

    logits: Tensor  # (B, H, A), with gradients (continuous actions: the policy's parameters, (B, H, 2D))
    values: Tensor  # (B, H), with gradients
    actions: Tensor  # (B, H) indices; continuous actions: (B, H, D) pre-squash values u, the env got tanh(u)
    rew: Tensor  # (B, H): signs in {-1, 0, 1}, or values (reward_model.reward_kind=value)
    end: Tensor  # (B, H) bool
    trunc: Tensor  # (B, H) bool
    next_values: Tensor  # (B, H) critic's value of the state each step reached (no gradients)


def rollout(actor_critic: ActorCritic, env: PolicyEnv, horizon: int) -> Rollout:
    """Roll the policy out in ``env`` for ``horizon`` steps, sampling actions from ``softmax(logits)`` (from
    the squashed Gaussian for continuous actions: ``actor_critic.policy.sample``).

    Gradients flow through the logits and values back through the recurrent state over the whole rollout
    (not across an episode's start, whose state ``env.restart`` replaces). ``next_values[:, t]`` is the
    critic's value of the state step ``t`` reached: of ``final_obs`` (with the trajectory's state before
    its restart) where the episode ended there, of the next step's observation otherwise, and at the last
    step of the observation the rollout stops at.
    """
    obs, state = env.start(actor_critic)
    logits, values, actions, rews, ends, truncs, dones, final_values = [], [], [], [], [], [], [], []
    for t in range(horizon):
        step_logits, value, state = actor_critic.step(obs, state)
        # The env's action, and what the loss needs of it (the index; a continuous action's pre-squash u).
        env_action, action = actor_critic.policy.sample(step_logits, env.generator)
        s = env.step(env_action)
        done = s.end | s.trunc
        final_value = torch.zeros_like(value)
        if done.any():
            rows = done.nonzero().squeeze(1)
            with torch.no_grad():
                # Bootstrapping at truncation needs the value of the frame the trajectory reached.
                h, c = state
                _, final_value[rows], _ = actor_critic.step(s.final_obs[rows], (h[rows], c[rows]))
            if t < horizon - 1:
                state = env.restart(actor_critic, state, s, rows)
        logits.append(step_logits)
        values.append(value)
        actions.append(action)
        rews.append(s.rew)
        ends.append(s.end)
        truncs.append(s.trunc)
        dones.append(done)
        final_values.append(final_value)
        obs = s.obs
    with torch.no_grad():
        _, last_value, _ = actor_critic.step(obs, state)
    env.stop(state)
    values_t = torch.stack(values, dim=1)
    # Where a trajectory goes on, the state it reached is the next step's: reuse that value estimate.
    next_values = torch.cat([values_t[:, 1:].detach(), last_value[:, None]], dim=1)
    next_values = torch.where(torch.stack(dones, dim=1), torch.stack(final_values, dim=1), next_values)
    return Rollout(
        logits=torch.stack(logits, dim=1),
        values=values_t,
        actions=torch.stack(actions, dim=1),
        rew=torch.stack(rews, dim=1),
        end=torch.stack(ends, dim=1),
        trunc=torch.stack(truncs, dim=1),
        next_values=next_values,
    )
