"""The running episodes' steps are in the training dataset after every collection, as in the official code.

After each collection, each env's running episode is stored (open) and sampled by the denoiser's, the
reward model's and the actor-critic's (burn-in) samplers like any episode, as the newest one for the sample
weights; the next collection extends it in place until it ends and is stored whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffworld.agent.trainer import MODEL_NAMES, Trainer
from diffworld.config import build_config
from diffworld.data import SegmentSampler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Catch: 7-step episodes over 3-step collections, so a running episode spans several collections.
ARGS = ["game=Catch", "preset=smoke", "seed=3"]


@pytest.fixture
def trainer(tmp_path: Path) -> Trainer:
    run_dir = tmp_path / "run"
    return Trainer(build_config([*ARGS, f"run_dir={run_dir}"]), run_dir)


def draws_of(sampler: SegmentSampler, episode_id: int, size: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """The starts of the segments that ``sampler`` draws from ``episode_id`` in ``size`` draws."""
    ids, starts = sampler.sample_segments(size)
    return ids, starts[ids == episode_id]


def test_running_episode_is_sampled_right_after_each_collection(trainer: Trainer) -> None:
    dataset, samplers = trainer.dataset, {name: trainer.slots[name].segments for name in MODEL_NAMES}
    # Enough episodes for the sample weights to apply (4 groups): the running one is the newest.
    while dataset.num_episodes < 5:
        trainer.collector.collect_steps(3)
    assert dataset.num_steps == trainer.collector.num_steps_total  # every step taken is stored
    running = dataset.open_episode_ids
    assert running == [dataset.num_episodes - 1]
    episode_id = running[0]
    length = int(dataset.lengths[episode_id])
    episode = dataset.get_episode(episode_id)
    assert not episode.terminated.any() and not episode.truncated.any()

    for name, sampler in samplers.items():
        # Its probability is the newest group's weight over that group's size, as in the official sampler.
        weights = sampler.sample_weights
        assert weights is not None
        newest_group = dataset.num_episodes - (len(weights) - 1) * (dataset.num_episodes // len(weights))
        probability = weights[-1] / newest_group
        assert sampler.episode_probabilities()[episode_id] == pytest.approx(probability)
        ids, starts = draws_of(sampler, episode_id)
        assert abs(len(starts) / len(ids) - probability) < 0.05, name
        # Segments are drawn only where its steps are: each holds at least one of them, and only the reward
        # model's may run past its last one (right padding).
        stops = starts + sampler.seq_length
        assert (stops > 0).all() and (starts < length).all(), name
        assert (stops <= length).all() == (not sampler.can_sample_beyond_end), name
        # Its end is no termination: no padding step and no last step carries an end flag.
        batch = sampler.make_batch(np.full(len(starts), episode_id), starts)
        assert not batch.end.any() and not batch.trunc.any(), name
        step = starts[:, None] + np.arange(sampler.seq_length)
        np.testing.assert_array_equal(batch.step_mask.numpy(), (step >= 0) & (step < length))

    # The next collection extends it in place (same id, longer) until it ends, then it is stored whole.
    extensions = 0
    while dataset.is_open(episode_id):
        extensions += 1
        frames = dataset.get_episode(episode_id).obs.copy()
        trainer.collector.collect_steps(3)
        assert int(dataset.lengths[episode_id]) > length
        np.testing.assert_array_equal(dataset.get_episode(episode_id).obs[: length + 1], frames)
        length = int(dataset.lengths[episode_id])
    assert extensions >= 2  # extended in place while still running, then once more as it ended
    finished = dataset.get_episode(episode_id)
    assert finished.terminated[-1] or finished.truncated[-1]
    assert (trainer.run_dir / "dataset" / "train" / f"episode_{episode_id:06d}.npz").is_file()
    assert not list((trainer.run_dir / "dataset" / "train").glob(f"episode_{episode_id:06d}.steps_*"))
    # The episode now running took the next id and is open in its turn.
    assert dataset.open_episode_ids == [dataset.num_episodes - 1] and dataset.num_episodes - 1 > episode_id
    trainer.train_envs.close()
    trainer.test_envs.close()
