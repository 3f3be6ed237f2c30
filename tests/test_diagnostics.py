"""The epoch's learning diagnostics (``training.diagnostics``): which steps are recent, the segments that end
at them, the real reward rate, the split gradient norms, and that measuring draws nothing from the training's
random streams and writes nothing to the models."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from diffworld.agent import Agent, diagnostics
from diffworld.agent.diagnostics import epoch_diagnostics, recent_and_old, reward_rate
from diffworld.config import build_config
from diffworld.data import Episode, EpisodeDataset
from diffworld.data.frames import frames_to_tensor
from diffworld.data.segment_sampler import EndingAtSegmentSampler, episode_steps
from diffworld.run.checkpoint import rng_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 8


def NO_AUTOCAST() -> torch.autocast:
    return torch.autocast("cpu", enabled=False)


def steps_of(episode_id: int, first: int, num_steps: int, *, ends: bool = False) -> Episode:
    """Steps ``first .. first + num_steps - 1`` of an episode whose frames, actions and rewards say where
    they are: frame k of episode e is filled with 40 e + k, action t is 100 e + t, step t is rewarded when t
    is a multiple of 3."""
    t = np.arange(first, first + num_steps)
    frames = np.arange(first, first + num_steps + 1) + 40 * episode_id
    obs = np.broadcast_to(frames.astype(np.uint8)[:, None, None, None], (num_steps + 1, SIZE, SIZE, 3))
    end = np.zeros(num_steps, dtype=bool)
    end[-1] = ends
    return Episode(obs.copy(), 100 * episode_id + t, (t % 3 == 0).astype(np.float32), end, np.zeros_like(end))


def interleaved_dataset() -> tuple[EpisodeDataset, np.ndarray, dict[int, range]]:
    """Two envs' running episodes stored, then a collection that ends the second, extends the first (which
    moves to the end of the arrays: step starts no longer increase with the id) and starts another.
    Returns the dataset, the lengths before that collection and, per episode, the steps it collected."""
    dataset = EpisodeDataset(frame_shape=(SIZE, SIZE, 3))
    dataset.add(steps_of(0, 0, 5), partial=True)
    dataset.add(steps_of(1, 0, 4), partial=True)
    before = dataset.lengths.copy()
    dataset.extend(1, steps_of(1, 4, 2, ends=True))
    dataset.extend(0, steps_of(0, 5, 3), partial=True)
    dataset.add(steps_of(2, 0, 6), partial=True)
    assert not np.all(np.diff(dataset.step_starts) > 0)  # the layout the helpers must not rely on
    return dataset, before, {0: range(5, 8), 1: range(4, 6), 2: range(0, 6)}


def test_episode_steps_and_recent_ones_in_any_layout() -> None:
    dataset, before, collected = interleaved_dataset()
    ids, timesteps = episode_steps(dataset)
    expected = [(e, t) for e, n in enumerate(dataset.lengths.tolist()) for t in range(n)]
    assert list(zip(ids.tolist(), timesteps.tolist(), strict=True)) == expected

    recent, old = recent_and_old(dataset, before)
    pairs = set(zip(recent.episode_ids.tolist(), recent.timesteps.tolist(), strict=True))
    assert pairs == {(e, t) for e, steps in collected.items() for t in steps}
    assert len(recent) + len(old) == dataset.num_steps
    assert not pairs & set(zip(old.episode_ids.tolist(), old.timesteps.tolist(), strict=True))
    # Their rewards, read where each episode's steps lie, are the steps' own.
    assert recent.rewards(dataset).tolist() == [float(t % 3 == 0) for t in recent.timesteps.tolist()]
    nonzero = sum(t % 3 == 0 for steps in collected.values() for t in steps)
    assert reward_rate(dataset, recent) == pytest.approx(nonzero / sum(map(len, collected.values())))
    assert math.isnan(reward_rate(dataset, recent_and_old(dataset, dataset.lengths)[0]))


def test_segments_end_at_the_steps_drawn() -> None:
    dataset, before, _ = interleaved_dataset()
    recent, _ = recent_and_old(dataset, before)
    sampler = EndingAtSegmentSampler(
        dataset, 64, 4, recent.episode_ids, recent.timesteps, rng=np.random.default_rng(0)
    )
    ids, starts = sampler.sample_segments()
    ends = starts + 3
    drawn = set(zip(ids.tolist(), ends.tolist(), strict=True))
    assert drawn <= set(zip(recent.episode_ids.tolist(), recent.timesteps.tolist(), strict=True))
    assert len(drawn) > 5  # uniform with replacement over 11 steps: most of them in 64 draws
    batch = sampler.make_batch(ids, starts)
    assert batch.act[:, -1].tolist() == (100 * ids + ends).tolist()
    for i, (e, t) in enumerate(zip(ids.tolist(), ends.tolist(), strict=True)):
        frame = dataset.frames[dataset.frame_starts[e] + t + 1]
        assert torch.equal(batch.obs[i, -1], frames_to_tensor(torch.from_numpy(frame.copy())))
        # Steps before the episode's first are padding (segments start at most 3 steps before it).
        assert batch.step_mask[i].tolist() == [t - 3 + k >= 0 for k in range(4)]
    with pytest.raises(ValueError, match="step of its episode"):
        EndingAtSegmentSampler(dataset, 4, 4, np.array([1]), np.array([6]), rng=np.random.default_rng(0))


def test_split_gradient_norms_add_up_to_the_loss_gradient() -> None:
    """The actor's and the critic's gradient norms are those of the loss's two parts, whose gradients sum
    to the loss's: measured against ``backward`` on each part."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    params = list(model.parameters())
    out = model(torch.randn(5, 3))
    actor, critic = out[:, 0].square().mean(), (out[:, 1] - 1).abs().mean()
    norms = [diagnostics._grad_norm(part, params, retain_graph=True) for part in (actor, critic)]
    grads = []
    for part in (actor, critic, actor + critic):
        model.zero_grad()
        part.backward(retain_graph=True)
        assert all(p.grad is not None for p in params)
        grads.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
    assert norms == pytest.approx([float(grads[0].norm()), float(grads[1].norm())], rel=1e-6)
    torch.testing.assert_close(grads[0] + grads[1], grads[2])


def _agent_and_dataset() -> tuple[Agent, EpisodeDataset, np.ndarray]:
    cfg = build_config(["game=Breakout", "preset=smoke"])
    torch.manual_seed(1)
    agent = Agent.build(cfg, 4).eval()  # as the trainer keeps it between updates
    rng = np.random.default_rng(0)
    dataset = EpisodeDataset(frame_shape=(64, 64, 3))
    for episode_id, length in enumerate((30, 25, 12)):
        obs = rng.integers(0, 256, (length + 1, 64, 64, 3), dtype=np.uint8)
        rew = (rng.random(length) < 0.3).astype(np.float32)
        end = np.zeros(length, dtype=bool)
        end[-1] = episode_id < 2
        episode = Episode(obs, rng.integers(0, 4, length), rew, end, np.zeros_like(end))
        dataset.add(episode, partial=episode_id == 2)
    before = dataset.lengths.copy()
    before[-1] = 5  # the open episode's last 7 steps and nothing else are recent
    return agent, dataset, before


def test_diagnostics_draw_nothing_from_training_and_write_nothing() -> None:
    cfg = build_config(["game=Breakout", "preset=smoke"])
    agent, dataset, before = _agent_and_dataset()
    recent, old = recent_and_old(dataset, before)
    assert len(recent) == 7 and len(old) == 60
    weights = {k: v.clone() for k, v in agent.state_dict().items()}

    def measure(seed: int) -> dict[str, float]:
        return epoch_diagnostics(agent, dataset, recent, old, cfg, seed, NO_AUTOCAST, denoiser_seq_length=5)

    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    saved = rng_state()
    first = measure(7)
    after = rng_state()
    assert torch.equal(after["torch"], saved["torch"])
    assert after["python"] == saved["python"]
    assert str(after["numpy"]) == str(saved["numpy"])
    assert all(p.grad is None for p in agent.parameters())
    assert all(torch.equal(v, weights[k]) for k, v in agent.state_dict().items())
    assert not agent.training

    # The same seed measures the same whatever ran before; another seed draws other batches.
    torch.manual_seed(5)
    assert measure(7) == first
    assert measure(8) != first

    expected = {
        "denoiser/diagnostic/loss_denoising",
        "denoiser/diagnostic/reward_recall",
        "denoiser/diagnostic/reward_false_positive_rate",
        "reward_model/diagnostic/reward_recall",
        "reward_model/diagnostic/reward_false_positive_rate",
    }
    assert set(first) == {f"{key}_{part}" for key in expected for part in ("recent", "old")} | {
        "actor_critic/diagnostic/reward_rate_recent",
        "actor_critic/diagnostic/grad_norm_actor",
        "actor_critic/diagnostic/grad_norm_critic",
    }
    assert all(isinstance(v, float) and math.isfinite(v) for v in first.values())
    assert 0 <= first["actor_critic/diagnostic/reward_rate_recent"] <= 1
    # The untrained critic's head is zero: only the value regression moves it, the actor's terms do not.
    assert first["actor_critic/diagnostic/grad_norm_critic"] > 0

    # Without recent steps (no collection yet), only the old ones are measured, and no rollout is.
    only_old = epoch_diagnostics(
        agent,
        dataset,
        recent_and_old(dataset, dataset.lengths)[0],
        old,
        cfg,
        7,
        NO_AUTOCAST,
        denoiser_seq_length=5,
    )
    assert set(only_old) == {f"{key}_old" for key in expected}
