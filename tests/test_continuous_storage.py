"""Episodes and the run dataset with continuous actions: (T, D) float32 vectors checked, stored on disk and
in RAM, reloaded, gathered into batches (padding zero); the collector's state with them resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffworld.agent.collector import Collector
from diffworld.config.schema import ActorCriticConfig
from diffworld.data import Episode, EpisodeDataset
from diffworld.data.actions import ActionSpecError, box_spec
from diffworld.envs.vector import AtariEnvs
from diffworld.models.actor_critic import ActorCritic

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 2
SHAPE = (8, 8, 3)


def episode(length: int, seed: int, *, ended: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode.from_steps(
        rng.integers(0, 256, (length + 1, *SHAPE), dtype=np.uint8),
        [rng.uniform(-1, 1, D).astype(np.float32) for _ in range(length)],
        rng.normal(size=length).astype(np.float32).tolist(),
        terminated=ended,
        truncated=False,
    )


def test_episodes_hold_float32_vectors_and_refuse_bad_ones() -> None:
    e = episode(4, 0)
    assert e.act.dtype == np.float32 and e.act.shape == (4, D)
    base = {"obs": e.obs, "rew": e.rew, "terminated": e.terminated, "truncated": e.truncated}
    with pytest.raises(TypeError, match="float32"):
        Episode(act=e.act.astype(np.float64), **base)
    with pytest.raises(ValueError, match="finite"):
        Episode(act=np.where(np.eye(4, D, dtype=bool), np.nan, e.act).astype(np.float32), **base)
    with pytest.raises(ValueError, match="shape"):
        Episode(act=e.act[:3], **base)
    assert (
        Episode.from_steps(e.obs, [1, 0, 2, 1], e.rew, terminated=True, truncated=False).act.dtype == np.int64
    )


def test_dataset_stores_reloads_and_gathers_action_vectors(tmp_path: Path) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=SHAPE, action_shape=(D,))
    first = episode(5, 1)
    dataset.add(first)
    running = episode(3, 2, ended=False)
    i = dataset.add(running, partial=True)
    more = episode(2, 3)
    more = Episode(
        obs=np.concatenate([running.obs[-1:], more.obs[1:]]),
        act=more.act,
        rew=more.rew,
        terminated=more.terminated,
        truncated=more.truncated,
    )
    dataset.extend(i, more)
    assert dataset.actions.shape == (10, D) and dataset.action_shape == (D,)
    loaded = EpisodeDataset.load(tmp_path, frame_shape=SHAPE, action_shape=(D,))
    np.testing.assert_array_equal(loaded.actions, dataset.actions)
    np.testing.assert_array_equal(loaded.get_episode(1).act, np.concatenate([running.act, more.act]))
    # Segments starting before the first step: padding actions are the zero vector.
    b = loaded.gather(np.array([0, 1]), np.array([-2, 3]), 4, torch.device("cpu"))
    assert b.act.shape == (2, 4, D) and b.act.dtype == torch.float32
    assert torch.equal(b.act[0, :2], torch.zeros(2, D))
    torch.testing.assert_close(b.act[0, 2:], torch.from_numpy(first.act[:2]))
    torch.testing.assert_close(b.act[1, :2], torch.from_numpy(more.act))
    assert torch.equal(b.act[1, 2:], torch.zeros(2, D))
    with pytest.raises(ValueError, match="action indices"):
        EpisodeDataset(frame_shape=SHAPE).add(first)  # an index dataset refuses vectors
    with pytest.raises(ValueError, match=r"\(3,\)"):
        EpisodeDataset(frame_shape=SHAPE, action_shape=(3,)).add(first)
    with pytest.raises(ValueError, match="action_shape"):
        EpisodeDataset(action_shape=(2, 2))


def _collector(seed: int, dataset: EpisodeDataset | None) -> Collector:
    torch.manual_seed(0)
    actor_critic = ActorCritic(
        ActorCriticConfig(channels=[8, 8, 8, 8], lstm_dim=16), box_spec(1), img_size=16
    )
    return Collector(
        AtariEnvs("CatchContinuous", 2, seed, life_loss_terminal=True, size=16, asynchronous=False),
        actor_critic,
        epsilon=0.1,
        temperature=1.0,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(seed),
        dataset=dataset,
    )


def test_collector_resumes_exactly_with_action_vectors() -> None:
    whole = EpisodeDataset(frame_shape=(16, 16, 3), action_shape=(1,))
    a = _collector(3, whole)
    a.collect_steps(12)
    state = a.state_dict()
    assert state["actions"][0].dtype == torch.float32
    half = EpisodeDataset(frame_shape=(16, 16, 3), action_shape=(1,))
    for k in range(whole.num_episodes):
        episode_k = whole.get_episode(k)
        if whole.is_open(k):
            half.add(episode_k, partial=True)
        else:
            half.add(episode_k)
    b = _collector(3, half)
    b.load_state_dict(state)
    a.collect_steps(18)
    b.collect_steps(18)
    np.testing.assert_array_equal(whole.actions, half.actions)
    np.testing.assert_array_equal(whole.frames, half.frames)
    assert whole.actions.dtype == np.float32 and bool((np.abs(whole.actions) <= 1).all())
    a.envs.close()
    b.envs.close()


def test_box_spec_takes_an_integer_of_any_type() -> None:
    assert box_spec(np.int64(2)) == box_spec(2) and [c.name for c in box_spec(2).components] == ["a0", "a1"]
    for bad, message in ((0, "at least one component"), (True, "integer"), (2.0, "integer")):
        with pytest.raises(ActionSpecError, match=message):
            box_spec(bad)  # type: ignore[arg-type]
