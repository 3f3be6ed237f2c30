"""Does the world model imagine the rewards? The reward model read on predicted next frames, one step ahead.

The actor-critic learns only from rewards the reward/termination model assigns to the denoiser's frames
(docs/method.md §4: it reads the pair x_t, x_{t+1}). A reward model that finds the rewards of real frame pairs
is not enough: if the predicted x_{t+1} lacks the detail the reward shows in (a punch landing, a brick
breaking), imagination holds no rewards and the actor has nothing to learn from. This measures that on real
episodes.

For each step t chosen (every step with a nonzero reward, up to ``max_events``, and as many steps with a zero
reward, drawn at random), the world model gets what imagination gives it one step after a reset: the L real
frames up to x_t and the L actions up to a_t. The denoiser samples x_{t+1}; the reward model, burnt in on
the L - 1 real frame pairs before, classifies the sign of the reward of (x_t, a_t, x_{t+1}) by its most
likely class, once with the predicted and once with the real x_{t+1}:

- ``recall``: the share of the reward steps whose sign it gets right;
- ``false_positive_rate``: the share of the zero-reward steps it gives a nonzero reward.

With real frames these measure the reward model; with predicted frames, the world model as the actor-critic
sees it. A large gap between the two recalls means imagination misses the rewarded events.

A reward model of ``reward_model.reward_kind=value`` predicts the reward itself: recall and false-positive
rate are then left undefined (NaN: a regressed value is never exactly 0), and ``abs_error``, the mean
absolute error of the predicted reward ``symexp(output)``, takes their place. Its steps are drawn uniformly
among the steps measured (``2 * max_events`` of them, or all), not half rewarded and half not: the error is
that of the data's own mix of steps (on a sparse task mostly zero-reward steps, on a dense one nearly all
rewarded), the mix imagination starts from.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffworld.config.schema import RewardKind, SamplerConfig
from diffworld.data import EpisodeDataset, SegmentSampler
from diffworld.data.batch import Batch
from diffworld.data.segment_sampler import episode_steps
from diffworld.models.diffusion import Denoiser, FrameSampler
from diffworld.models.reward_termination import RewardTerminationModel


@dataclass(frozen=True)
class Steps:
    """Some steps of a dataset: step ``timesteps[i]`` of episode ``episode_ids[i]``."""

    episode_ids: np.ndarray
    timesteps: np.ndarray

    def __len__(self) -> int:
        return len(self.episode_ids)

    def rewards(self, dataset: EpisodeDataset) -> np.ndarray:
        return dataset.rewards[dataset.step_starts[self.episode_ids] + self.timesteps]


@dataclass(frozen=True)
class RewardDetection:
    """Recall and false-positive rate of the reward model's sign, on predicted and on real next frames; for
    a ``value`` reward model, the mean absolute error of its reward instead (NaN where not measured)."""

    num_reward_steps: int
    num_zero_steps: int
    recall_predicted: float
    recall_real: float
    false_positive_rate_predicted: float
    false_positive_rate_real: float
    abs_error_predicted: float = math.nan
    abs_error_real: float = math.nan
    reward_kind: RewardKind = RewardKind.sign

    def to_json(self) -> dict[str, int | float | None]:
        """The figures that the reward model's kind measures (a ``sign`` model's counts, recalls and
        false-positive rates; a ``value`` model's counts and absolute errors), NaN as None."""
        left_out = _VALUE_ONLY if self.reward_kind is RewardKind.sign else _SIGN_ONLY
        return {
            f.name: None if isinstance(v, float) and not math.isfinite(v) else v
            for f in dataclasses.fields(self)
            if f.name not in left_out and f.name != "reward_kind"
            for v in (getattr(self, f.name),)
        }


_SIGN_ONLY = frozenset(
    {"recall_predicted", "recall_real", "false_positive_rate_predicted", "false_positive_rate_real"}
)
_VALUE_ONLY = frozenset({"abs_error_predicted", "abs_error_real"})


def choose_steps(
    rewards: np.ndarray, max_events: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the reward steps (all, or ``max_events`` drawn without replacement) and of as many
    zero-reward steps drawn at random (fewer where the data holds fewer), both sorted."""
    events = np.flatnonzero(rewards != 0)
    if len(events) > max_events:
        events = rng.choice(events, max_events, replace=False)
    zeros = np.flatnonzero(rewards == 0)
    zeros = rng.choice(zeros, min(len(zeros), max(len(events), 1)), replace=False)
    return np.sort(events), np.sort(zeros)


def segments_ending_at(
    dataset: EpisodeDataset, steps: Steps, num_cond: int, device: torch.device, batch_size: int = 64
) -> Iterator[Batch]:
    """Segments of ``num_cond`` (L) steps ending at each of ``steps`` in turn, ``batch_size`` at a time:
    frames x_{t-L+1} .. x_{t+1}, left-padded at an episode's start."""
    # (make_batch only: its random generator is never drawn from)
    segments = SegmentSampler(
        dataset, batch_size, num_cond, None, False, rng=np.random.default_rng(0), device=device
    )
    starts = steps.timesteps - (num_cond - 1)
    for i in range(0, len(steps), batch_size):
        yield segments.make_batch(steps.episode_ids[i : i + batch_size], starts[i : i + batch_size])


@torch.no_grad()
def one_step_rewards(
    sampler: FrameSampler,
    reward_model: RewardTerminationModel,
    batches: Iterable[Batch],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """For the last step t of each segment of ``batches``: (true reward, reward read on the frame ``sampler``
    predicts after it, reward read on the real next frame), each (N,) on ``generator``'s device: signs,
    int64 (``reward_kind`` ``sign``), or rewards, float32 (``value``), as ``RewardTerminationModel.reward_of``
    reads them."""
    signs = reward_model.reward_kind is RewardKind.sign
    true: list[Tensor] = []
    predicted: list[Tensor] = []
    real: list[Tensor] = []
    for batch in batches:
        prev_obs, next_obs = batch.obs[:, :-1], batch.obs[:, -1]
        prediction = sampler.predict_next(prev_obs, batch.act, generator=generator)
        for frame, read in ((prediction, predicted), (next_obs, real)):
            following = torch.cat([prev_obs[:, 1:], frame[:, None]], dim=1)
            logits_rew, _, _ = reward_model.predict(prev_obs, batch.act, following, mask=batch.step_mask)
            read.append(reward_model.reward_of(logits_rew[:, -1]))
        rew = batch.step_targets().rew[:, -1]
        true.append(torch.sign(rew).long() if signs else rew.float())
    if not true:
        empty = torch.zeros(0, dtype=torch.long if signs else torch.float32, device=generator.device)
        return empty, empty.clone(), empty.clone()
    return torch.cat(true), torch.cat(predicted), torch.cat(real)


def reward_detection(
    denoiser: Denoiser,
    reward_model: RewardTerminationModel,
    dataset: EpisodeDataset,
    sampler_cfg: SamplerConfig,
    seed: int,
    max_events: int = 256,
) -> RewardDetection:
    """The measurement of the module docstring on ``dataset``'s episodes; ``seed`` fixes the steps chosen
    and the denoiser's noise."""
    steps = Steps(*episode_steps(dataset))
    return reward_detection_among(denoiser, reward_model, dataset, steps, sampler_cfg, seed, max_events)


def reward_detection_among(
    denoiser: Denoiser,
    reward_model: RewardTerminationModel,
    dataset: EpisodeDataset,
    steps: Steps,
    sampler_cfg: SamplerConfig,
    seed: int,
    max_events: int = 256,
) -> RewardDetection:
    """``reward_detection`` with the steps chosen among ``steps`` only (the steps a policy collected
    lately, say)."""
    rng = np.random.default_rng(seed)
    values = reward_model.reward_kind is RewardKind.value
    rewards = steps.rewards(dataset)
    if values:
        # The data's own mix of steps (see the module's docstring), not half rewarded and half not.
        drawn = np.sort(rng.choice(len(rewards), min(len(rewards), 2 * max_events), replace=False))
        events, zeros = drawn[rewards[drawn] != 0], drawn[rewards[drawn] == 0]
    else:
        events, zeros = choose_steps(rewards, max_events, rng)
    device = next(denoiser.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    was_training = denoiser.training, reward_model.training
    denoiser.eval()
    reward_model.eval()
    try:
        chosen = np.concatenate([events, zeros])
        chosen_steps = Steps(steps.episode_ids[chosen], steps.timesteps[chosen])
        batches = segments_ending_at(dataset, chosen_steps, denoiser.cfg.num_cond_frames, device)
        true, predicted, real = one_step_rewards(
            denoiser.sampler(sampler_cfg), reward_model, batches, generator
        )
    finally:
        denoiser.train(was_training[0])
        reward_model.train(was_training[1])
    is_event = true != 0

    def share(x: Tensor) -> float:
        return float(x.double().mean()) if x.numel() else float("nan")

    if values:
        nan = math.nan
        return RewardDetection(
            num_reward_steps=len(events),
            num_zero_steps=len(zeros),
            recall_predicted=nan,
            recall_real=nan,
            false_positive_rate_predicted=nan,
            false_positive_rate_real=nan,
            abs_error_predicted=share((predicted - true).abs()),
            abs_error_real=share((real - true).abs()),
            reward_kind=RewardKind.value,
        )
    return RewardDetection(
        num_reward_steps=len(events),
        num_zero_steps=len(zeros),
        recall_predicted=share(predicted[is_event] == true[is_event]),
        recall_real=share(real[is_event] == true[is_event]),
        false_positive_rate_predicted=share(predicted[~is_event] != 0),
        false_positive_rate_real=share(real[~is_event] != 0),
    )
