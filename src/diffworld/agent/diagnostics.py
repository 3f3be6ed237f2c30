"""What decides whether the agent goes on learning, measured at every epoch (README, "A first check when an
agent does not learn").

Measured between the world model's training and the actor-critic's, with the world model the actor-critic is
about to learn in, the policy that collected the latest steps, and those steps (``recent``: the steps of the
last collecting epoch) against the ones before them (``old``):

- Does the world model still model where the policy goes? The denoiser's training loss on segments that end
  at recent steps and at old steps drawn uniformly (``denoiser/diagnostic/loss_denoising_recent`` and
  ``_old``), and the reward recall of one step of imagination (``diffworld.agent.reward_recall``) on
  reward steps drawn from either, up to ``MAX_REWARD_EVENTS`` with as many zero-reward steps
  (``reward_model/diagnostic/reward_recall_recent`` on the real next frames,
  ``denoiser/diagnostic/reward_recall_recent`` on the predicted ones, and the false-positive rates; for a
  reward model of ``reward_kind=value``, ``reward_abs_error_recent`` on both instead).
- Does imagination hold the rewards the real game gives this policy? The imagined reward rate of
  ``NUM_ROLLOUTS`` rollouts of the policy that start from recent steps
  (``actor_critic/diagnostic/reward_rate_recent``; with ``reward_kind=value`` also their mean imagined reward,
  ``reward_mean_recent``), against the real rate of those steps (``collection/train/recent_reward_rate``,
  logged by the trainer).
- Does the actor still get a gradient, or does the critic's drown it? On those rollouts, the norm of the
  gradient of the actor's terms (REINFORCE and entropy) and that of the critic's (value regression), apart:
  they share the encoder and the LSTM, and training clips their sum (``actor_critic/train/grad_norm``).

A few batches (at the ``quick`` preset about 4 % of an epoch's time: README): every draw comes from
generators of their own, seeded from the run seed and the epoch (the denoiser's training loss draws its
noise from torch's global generator, which is seeded here and put back after,
``run.checkpoint.isolated_global_rng``), and nothing is written to the models or their gradients, so a run
trains the same weights whether these are measured or not (tests/test_run_comparability.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import Tensor, nn

from diffworld.agent import Agent
from diffworld.agent.imagination import WorldModelEnv, imagine
from diffworld.agent.reward_recall import Steps, reward_detection_among
from diffworld.config.schema import Config, RewardKind
from diffworld.data import EpisodeDataset
from diffworld.data.segment_sampler import EndingAtSegmentSampler, episode_steps
from diffworld.models.actor_critic import actor_critic_loss_terms
from diffworld.run.checkpoint import isolated_global_rng
from diffworld.utils.seeding import derive_seed, make_rng

NUM_BATCHES = 1
"""Batches (of the denoiser's training batch size) of recent and of old segments for its loss."""
MAX_REWARD_EVENTS = 16
"""Reward steps (and as many zero-reward steps) of the reward recall, in the recent steps and in the old."""
NUM_ROLLOUTS = 8
"""Imagined rollouts of the actor-critic (at most its training batch size), of its imagination horizon."""
PARTS = ("recent", "old")


def recent_and_old(dataset: EpisodeDataset, lengths_before: np.ndarray) -> tuple[Steps, Steps]:
    """The steps stored since the dataset's episodes had ``lengths_before`` (episodes added since are recent
    whole; an open episode's new steps are recent, its earlier ones old), and the other steps."""
    episode_ids, timesteps = episode_steps(dataset)
    before = np.zeros(dataset.num_episodes, dtype=np.int64)
    n = min(len(lengths_before), dataset.num_episodes)
    before[:n] = lengths_before[:n]
    recent = timesteps >= before[episode_ids]
    return Steps(episode_ids[recent], timesteps[recent]), Steps(episode_ids[~recent], timesteps[~recent])


def reward_rate(dataset: EpisodeDataset, steps: Steps) -> float:
    """The share of ``steps`` with a nonzero reward (NaN without steps)."""
    return float((steps.rewards(dataset) != 0).mean()) if len(steps) else math.nan


def epoch_diagnostics(
    agent: Agent,
    dataset: EpisodeDataset,
    recent: Steps,
    old: Steps,
    cfg: Config,
    seed: int,
    autocast: Callable[[], AbstractContextManager[object]],
    *,
    denoiser_seq_length: int,
) -> dict[str, float]:
    """The module docstring's metrics, ``component/diagnostic/name``; ``seed`` fixes every draw.

    ``denoiser_seq_length``: the steps of the denoiser's training segments. Metrics of a
    part without steps are left out, and so are recalls without reward steps to count. Runs in torch's
    global generators seeded from ``seed`` and put back after (what the training draws next is unchanged).
    """
    with isolated_global_rng(seed):
        parts = {name: steps for name, steps in zip(PARTS, (recent, old), strict=True) if len(steps)}
        metrics = _denoiser_losses(agent, dataset, parts, cfg, seed, autocast, denoiser_seq_length)
        metrics |= _reward_recalls(agent, dataset, parts, cfg, seed)
        if "recent" in parts:
            metrics |= _actor_critic(agent, dataset, parts["recent"], cfg, seed, autocast)
        return metrics


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _denoiser_losses(
    agent: Agent,
    dataset: EpisodeDataset,
    parts: dict[str, Steps],
    cfg: Config,
    seed: int,
    autocast: Callable[[], AbstractContextManager[object]],
    seq_length: int,
) -> dict[str, float]:
    """The denoiser's training loss on ``NUM_BATCHES`` batches of segments ending at each part's steps; the
    parts draw the same noise levels and noise (the global generators reseeded alike), so that their
    difference is the data's."""
    metrics: dict[str, float] = {}
    denoiser = agent.denoiser
    for part, steps in parts.items():
        segments = EndingAtSegmentSampler(
            dataset,
            cfg.denoiser.training.batch_size,
            seq_length,
            steps.episode_ids,
            steps.timesteps,
            rng=make_rng(seed, f"denoiser/{part}"),
            device=_model_device(denoiser),
        )
        sums: dict[str, float] = {}
        with isolated_global_rng(derive_seed(seed, "denoiser")):
            for _ in range(NUM_BATCHES):
                with autocast():
                    _, batch_metrics = denoiser(segments.sample())
                for key, value in batch_metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
        metrics |= {f"denoiser/diagnostic/{key}_{part}": value / NUM_BATCHES for key, value in sums.items()}
    return metrics


def _reward_recalls(
    agent: Agent, dataset: EpisodeDataset, parts: dict[str, Steps], cfg: Config, seed: int
) -> dict[str, float]:
    """The reward recall of one step of imagination among each part's steps (``reward_detection_among``)."""
    metrics: dict[str, float] = {}
    for part, steps in parts.items():
        d = reward_detection_among(
            agent.denoiser,
            agent.reward_model,
            dataset,
            steps,
            cfg.denoiser.sampler,
            seed=derive_seed(seed, f"reward_detection/{part}"),
            max_events=MAX_REWARD_EVENTS,
        )
        found = {
            "denoiser/diagnostic/reward_recall": d.recall_predicted,
            "denoiser/diagnostic/reward_false_positive_rate": d.false_positive_rate_predicted,
            "reward_model/diagnostic/reward_recall": d.recall_real,
            "reward_model/diagnostic/reward_false_positive_rate": d.false_positive_rate_real,
            "denoiser/diagnostic/reward_abs_error": d.abs_error_predicted,
            "reward_model/diagnostic/reward_abs_error": d.abs_error_real,
        }
        metrics |= {f"{key}_{part}": value for key, value in found.items() if not math.isnan(value)}
    return metrics


def _actor_critic(
    agent: Agent,
    dataset: EpisodeDataset,
    recent: Steps,
    cfg: Config,
    seed: int,
    autocast: Callable[[], AbstractContextManager[object]],
) -> dict[str, float]:
    """Rollouts of the policy imagined from recent steps: their reward rate, and the gradient norms of the
    loss's actor terms and critic term apart (``torch.autograd.grad``: the parameters' ``.grad`` stay)."""
    ac_cfg = cfg.actor_critic
    device = _model_device(agent.actor_critic)
    segments = EndingAtSegmentSampler(
        dataset,
        min(NUM_ROLLOUTS, ac_cfg.training.batch_size),
        cfg.denoiser.num_cond_frames - 1,
        recent.episode_ids,
        recent.timesteps,
        rng=make_rng(seed, "actor_critic"),
        device=device,
    )
    generator = torch.Generator(device).manual_seed(derive_seed(seed, "actor_critic"))
    env = WorldModelEnv(
        agent.denoiser,
        agent.reward_model,
        segments,
        cfg.denoiser.sampler,
        ac_cfg.imagination_horizon,
        generator,
    )
    with autocast():
        r = imagine(agent.actor_critic, env, segments.sample(), ac_cfg.imagination_horizon)
        terms = actor_critic_loss_terms(
            r.logits,
            r.values,
            r.actions,
            r.rew,
            r.end,
            r.trunc,
            r.next_values,
            ac_cfg,
            policy=agent.actor_critic.policy,
            clip_rewards=agent.reward_model.reward_kind is RewardKind.sign,
            return_scale=agent.actor_critic.return_scale,
            update_return_scale=False,  # a measurement: the training's running percentiles stay as they are
        )
    params = [p for p in agent.actor_critic.parameters() if p.requires_grad]
    actor = terms.policy_loss - ac_cfg.entropy_weight * terms.entropy
    metrics = {
        "actor_critic/diagnostic/reward_rate_recent": float(terms.metrics["reward_rate"]),
        "actor_critic/diagnostic/grad_norm_actor": _grad_norm(actor, params, retain_graph=True),
        "actor_critic/diagnostic/grad_norm_critic": _grad_norm(terms.value_loss, params, retain_graph=False),
    }
    if "reward_mean" in terms.metrics:  # rewards taken as values: their mean says more than the rate
        metrics["actor_critic/diagnostic/reward_mean_recent"] = float(terms.metrics["reward_mean"])
    return metrics


def _grad_norm(loss: Tensor, params: list[nn.Parameter], retain_graph: bool) -> float:
    """The global L2 norm of the gradient of ``loss`` with respect to ``params`` (none: 0)."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    norms = [g.detach().float().norm() for g in grads if g is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0
