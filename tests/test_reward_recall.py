"""The reward model read on predicted next frames (``agent.reward_recall``), against direct counts.

Frames are uniform at one of three levels (-1, 0, +1 after scaling) and the reward of step t is the level of
x_{t+1}. A stub reward model reads the sign of the reward as the level of the next frame it is given, so on
real frames it is always right; a stub denoiser copies the last frame, so on its predictions the reward
model reads the level of x_t. The expected figures follow from the levels alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from diffworld.agent.reward_recall import choose_steps, reward_detection
from diffworld.config.schema import DenoiserConfig, RewardKind, SamplerConfig
from diffworld.data import Episode, EpisodeDataset
from diffworld.models.reward_termination import RewardTerminationModel, symlog

LEVELS = np.array([0, 128, 255], dtype=np.uint8)  # -1, ~0, +1 in [-1, 1]


class CopyLastFrame(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cfg = DenoiserConfig()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.calls: list[tuple[int, ...]] = []

    def sampler(self, cfg: SamplerConfig) -> CopyLastFrame:
        return self  # its own frame sampler: nothing to schedule

    def predict_next(
        self, prev_obs: Tensor, prev_act: Tensor, generator: object = None, callback: object = None
    ) -> Tensor:
        assert prev_obs.shape[1] == prev_act.shape[1] == self.cfg.num_cond_frames
        self.calls.append(tuple(prev_obs.shape))
        return prev_obs[:, -1]


class SignOfNextFrame(nn.Module):
    """Logits of the reward sign: the rounded mean of the next frame, whatever the rest."""

    reward_kind = RewardKind.sign
    reward_of = RewardTerminationModel.reward_of

    def predict(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, state: object = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, None]:
        sign = next_obs.mean(dim=(2, 3, 4)).round().long().clamp(-1, 1)
        logits_rew = 10.0 * nn.functional.one_hot(sign + 1, 3).float()
        return logits_rew, torch.zeros(*sign.shape, 2), None


class ValueOfNextFrame(SignOfNextFrame):
    """A ``value`` reward model: its output is symlog of the next frame's level, so it reads the level."""

    reward_kind = RewardKind.value

    def predict(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, state: object = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, None]:
        level = next_obs.mean(dim=(2, 3, 4)).round().clamp(-1, 1)
        return symlog(level)[..., None], torch.zeros(*level.shape, 2), None


def level_dataset(lengths: list[int], seed: int) -> tuple[EpisodeDataset, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    dataset = EpisodeDataset(frame_shape=(8, 8, 3))
    all_levels = []
    for length in lengths:
        levels = rng.integers(0, 3, length + 1) - 1  # level of each frame, in {-1, 0, 1}
        levels[1] = 1  # a reward at the episode's first step: its segment is all left padding but x_0
        obs = np.broadcast_to(LEVELS[levels + 1][:, None, None, None], (length + 1, 8, 8, 3)).copy()
        false = np.zeros(length, dtype=bool)
        dataset.add(
            Episode(obs, np.zeros(length, np.int64), levels[1:].astype(np.float32), false, false.copy())
        )
        all_levels.append(levels)
    return dataset, all_levels


def test_choose_steps_caps_events_and_matches_zeros() -> None:
    rewards = np.array([0, 1, 0, -2, 0, 0, 3, 0, 0, 0], dtype=np.float32)
    events, zeros = choose_steps(rewards, max_events=2, rng=np.random.default_rng(0))
    assert len(events) == 2 and set(events) <= {1, 3, 6} and (rewards[events] != 0).all()
    assert len(zeros) == 2 and (rewards[zeros] == 0).all() and len(set(zeros)) == 2
    events, zeros = choose_steps(rewards, max_events=10, rng=np.random.default_rng(0))
    assert events.tolist() == [1, 3, 6] and len(zeros) == 3
    events, zeros = choose_steps(np.zeros(4, np.float32), 10, np.random.default_rng(0))
    assert len(events) == 0 and len(zeros) == 1  # no reward: one zero step still measures false positives


@pytest.mark.parametrize("seed", [0, 1])
def test_reward_detection_matches_direct_count(seed: int) -> None:
    dataset, levels = level_dataset([9, 5, 12], seed)
    denoiser = CopyLastFrame()
    detection = reward_detection(
        denoiser,  # type: ignore[arg-type]
        SignOfNextFrame(),  # type: ignore[arg-type]
        dataset,
        SamplerConfig(num_steps=1),
        seed=seed,
    )
    # Direct count over all steps: with every reward step chosen, the recall is exact.
    prev = np.concatenate([lv[:-1] for lv in levels])  # level of x_t
    nxt = np.concatenate([lv[1:] for lv in levels])  # level of x_{t+1} = sign of r_t
    is_event = nxt != 0
    assert detection.num_reward_steps == is_event.sum()
    assert detection.num_zero_steps == min((~is_event).sum(), is_event.sum())
    assert detection.recall_real == 1.0 and detection.false_positive_rate_real == 0.0
    assert detection.recall_predicted == pytest.approx(np.mean(prev[is_event] == nxt[is_event]))
    # The zero-reward steps are a random subset: their count of nonzero x_t bounds the rate.
    possible = np.sort(prev[~is_event] != 0)
    n = detection.num_zero_steps
    low, high = possible[:n].mean(), possible[-n:].mean()
    assert low <= detection.false_positive_rate_predicted <= high
    assert all(shape[1:] == (4, 3, 8, 8) for shape in denoiser.calls)
    assert sum(shape[0] for shape in denoiser.calls) == detection.num_reward_steps + n


def test_reward_detection_without_rewards_reports_no_recall() -> None:
    dataset = EpisodeDataset(frame_shape=(8, 8, 3))
    obs = np.full((6, 8, 8, 3), 255, np.uint8)
    false = np.zeros(5, dtype=bool)
    dataset.add(Episode(obs, np.zeros(5, np.int64), np.zeros(5, np.float32), false, false.copy()))
    detection = reward_detection(
        CopyLastFrame(),  # type: ignore[arg-type]
        SignOfNextFrame(),  # type: ignore[arg-type]
        dataset,
        SamplerConfig(num_steps=1),
        seed=0,
    )
    assert detection.num_reward_steps == 0 and np.isnan(detection.recall_predicted)
    assert detection.false_positive_rate_predicted == detection.false_positive_rate_real == 1.0


def test_value_reward_error_is_measured_on_the_data_s_own_mix() -> None:
    """A ``value`` model: the absolute error over steps drawn uniformly (here all of them), not half
    rewarded and half not; only the figures of its kind go to the JSON."""
    dataset, levels = level_dataset([9, 5, 12], 0)
    detection = reward_detection(
        CopyLastFrame(),  # type: ignore[arg-type]
        ValueOfNextFrame(),  # type: ignore[arg-type]
        dataset,
        SamplerConfig(num_steps=1),
        seed=0,
    )
    prev = np.concatenate([lv[:-1] for lv in levels])
    nxt = np.concatenate([lv[1:] for lv in levels])
    assert detection.num_reward_steps == (nxt != 0).sum() and detection.num_zero_steps == (nxt == 0).sum()
    assert detection.num_zero_steps != detection.num_reward_steps  # no 50/50 mix: every step counts
    assert detection.abs_error_real == pytest.approx(0.0, abs=1e-6)
    assert detection.abs_error_predicted == pytest.approx(np.abs(prev - nxt).mean(), rel=1e-6)
    assert np.isnan(detection.recall_predicted)
    assert set(detection.to_json()) == {
        "num_reward_steps",
        "num_zero_steps",
        "abs_error_predicted",
        "abs_error_real",
    }
    sign = reward_detection(
        CopyLastFrame(),  # type: ignore[arg-type]
        SignOfNextFrame(),  # type: ignore[arg-type]
        dataset,
        SamplerConfig(num_steps=1),
        seed=0,
    )
    assert list(sign.to_json()) == [  # as before the value models: no null absolute errors
        "num_reward_steps",
        "num_zero_steps",
        "recall_predicted",
        "recall_real",
        "false_positive_rate_predicted",
        "false_positive_rate_real",
    ]
