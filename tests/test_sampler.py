from __future__ import annotations

import numpy as np
import pytest
import torch

from diffworld.data import Batch, Episode, EpisodeDataset, SegmentSampler, step_to_frame_mask

FRAME_SHAPE = (6, 5, 3)
SEQ_LENGTH = 6


def make_dataset(lengths: list[int], seed: int = 0) -> EpisodeDataset:
    rng = np.random.default_rng(seed)
    dataset = EpisodeDataset(frame_shape=FRAME_SHAPE)
    for i, length in enumerate(lengths):
        dataset.add(
            Episode.from_steps(
                list(rng.integers(0, 256, size=(length + 1, *FRAME_SHAPE), dtype=np.uint8)),
                list(rng.integers(1, 18, size=length)),  # no 0 action: padding is recognizable
                list(rng.choice([-1.0, 1.0, 2.5], size=length)),  # no 0 reward either
                terminated=i % 2 == 0,
                truncated=i % 2 == 1,
            )
        )
    return dataset


def make_sampler(dataset: EpisodeDataset, seed: int = 0, **kwargs: object) -> SegmentSampler:
    options: dict[str, object] = {"batch_size": 16, "seq_length": SEQ_LENGTH} | kwargs
    return SegmentSampler(dataset, rng=np.random.default_rng(seed), **options)  # type: ignore[arg-type]


def reference_batch(
    dataset: EpisodeDataset, episode_ids: np.ndarray, starts: np.ndarray, seq_length: int
) -> Batch:
    """Naive per-sample, per-step construction of the expected batch."""
    size = len(episode_ids)
    height, width, channels = FRAME_SHAPE
    obs = np.zeros((size, seq_length + 1, channels, height, width), dtype=np.float32)
    act = np.zeros((size, seq_length), dtype=np.int64)
    rew = np.zeros((size, seq_length), dtype=np.float32)
    end = np.zeros((size, seq_length), dtype=bool)
    trunc = np.zeros((size, seq_length), dtype=bool)
    mask = np.zeros((size, seq_length), dtype=bool)
    for b, (episode_id, start) in enumerate(zip(episode_ids, starts, strict=True)):
        episode = dataset.get_episode(int(episode_id))
        for j in range(seq_length + 1):
            t = start + j
            if 0 <= t <= len(episode):  # frame len(episode) is the true final frame
                obs[b, j] = episode.obs[t].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
            if j < seq_length and 0 <= t < len(episode):
                act[b, j], rew[b, j] = episode.act[t], episode.rew[t]
                end[b, j], trunc[b, j] = episode.terminated[t], episode.truncated[t]
                mask[b, j] = True
    arrays = (obs, act, rew, end, trunc, mask)
    return Batch.of_steps(*(torch.from_numpy(array) for array in arrays))


def assert_batches_equal(actual: Batch, expected: Batch) -> None:
    torch.testing.assert_close(actual.obs, expected.obs, rtol=0, atol=1e-6)
    for name in ("act", "rew", "end", "trunc", "step_mask", "frame_mask"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name


def official_draws(
    rng: np.random.Generator, lengths: np.ndarray, probabilities: np.ndarray, size: int, beyond_end: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The draws of the official DIAMOND BatchSampler, ported to a numpy Generator."""
    episode_ids = rng.choice(len(lengths), size=size, p=probabilities)
    timesteps = rng.integers(0, lengths[episode_ids])
    offsets = rng.integers(0, SEQ_LENGTH, size)
    if beyond_end:
        return episode_ids, timesteps - offsets
    stops = np.minimum(lengths[episode_ids], timesteps + 1 + offsets)
    return episode_ids, stops - SEQ_LENGTH


LENGTHS = [1, 2, 5, 6, 7, 13, 40, 3, 9]


def test_shapes_and_dtypes() -> None:
    sampler = make_sampler(make_dataset(LENGTHS), batch_size=5)
    assert sampler.sample(batch_size=3).obs.shape[0] == 3
    batch = sampler.sample()
    height, width, channels = FRAME_SHAPE
    assert batch.obs.shape == (5, SEQ_LENGTH + 1, channels, height, width)
    assert batch.obs.dtype == torch.float32 and batch.obs.is_contiguous()
    assert batch.obs.min() >= -1 and batch.obs.max() <= 1
    for name, dtype in [("act", torch.int64), ("rew", torch.float32), ("end", torch.bool)]:
        assert getattr(batch, name).shape == (5, SEQ_LENGTH) and getattr(batch, name).dtype == dtype
    assert batch.trunc.dtype == torch.bool and batch.step_mask.dtype == torch.bool
    assert batch.frame_mask.shape == (5, SEQ_LENGTH + 1)


@pytest.mark.parametrize("beyond_end", [False, True])
def test_sampled_batches_match_naive_reference(beyond_end: bool) -> None:
    dataset = make_dataset(LENGTHS)
    sampler = make_sampler(dataset, batch_size=64, can_sample_beyond_end=beyond_end)
    for _ in range(5):
        episode_ids, starts = sampler.sample_segments()
        batch = sampler.make_batch(episode_ids, starts)
        assert_batches_equal(batch, reference_batch(dataset, episode_ids, starts, SEQ_LENGTH))
        # Padding is exactly zero everywhere, and real steps/frames are exactly where the mask says.
        assert torch.equal(batch.act != 0, batch.step_mask)
        assert (batch.obs[~batch.frame_mask] == 0).all()


def test_edge_segments_match_naive_reference() -> None:
    dataset = make_dataset(LENGTHS)
    sampler = make_sampler(dataset)
    # (episode, start): left padding, right padding, both, exact fit, single-step episode, last step only.
    segments = [(6, -5), (6, 37), (0, -3), (3, 0), (0, 0), (2, 4), (2, -5)]
    episode_ids, starts = (np.array(column) for column in zip(*segments, strict=True))
    batch = sampler.make_batch(episode_ids, starts)
    assert_batches_equal(batch, reference_batch(dataset, episode_ids, starts, SEQ_LENGTH))
    with pytest.raises(ValueError, match="overlap"):
        sampler.make_batch(np.array([2]), np.array([5]))


def test_draws_follow_official_rule() -> None:
    dataset = make_dataset(LENGTHS)
    for beyond_end in (False, True):
        sampler = make_sampler(dataset, seed=3, batch_size=256, can_sample_beyond_end=beyond_end)
        expected = official_draws(
            np.random.default_rng(3), dataset.lengths, sampler.episode_probabilities(), 256, beyond_end
        )
        for actual, wanted in zip(sampler.sample_segments(), expected, strict=True):
            np.testing.assert_array_equal(actual, wanted)


def test_right_padding_only_when_allowed() -> None:
    dataset = make_dataset(LENGTHS)
    for beyond_end in (False, True):
        sampler = make_sampler(dataset, batch_size=4096, can_sample_beyond_end=beyond_end)
        episode_ids, starts = sampler.sample_segments()
        stops = starts + SEQ_LENGTH
        lengths = dataset.lengths[episode_ids]
        assert (starts < lengths).all() and (stops > 0).all()
        assert (stops > lengths).any() == beyond_end
        assert (starts < 0).any()  # left padding happens either way


def test_final_frame_is_real() -> None:
    dataset = make_dataset(LENGTHS)
    sampler = make_sampler(dataset, batch_size=512)
    episode_ids, starts = sampler.sample_segments()
    batch = sampler.make_batch(episode_ids, starts)
    at_end = starts + SEQ_LENGTH == dataset.lengths[episode_ids]
    assert at_end.sum() > 50  # segments are pulled towards episode ends when they cannot pass them
    assert batch.frame_mask[at_end, -1].all() and batch.step_mask[at_end, -1].all()
    final_frames = np.stack([dataset.get_episode(int(i)).obs[-1] for i in episode_ids[at_end]])
    expected = torch.from_numpy(final_frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(batch.obs[at_end, -1], expected, rtol=0, atol=1e-6)


def group_frequencies(sampler: SegmentSampler, groups: list[list[int]]) -> np.ndarray:
    episode_ids, _ = sampler.sample_segments()
    counts = np.bincount(episode_ids, minlength=sampler.dataset.num_episodes)
    return np.array([counts[group].sum() for group in groups]) / len(episode_ids)


def assert_frequencies(frequencies: np.ndarray, probabilities: np.ndarray, draws: int) -> None:
    standard_errors = np.sqrt(probabilities * (1 - probabilities) / draws)
    assert (np.abs(frequencies - probabilities) < 4 * standard_errors).all(), (frequencies, probabilities)


def test_recency_weights() -> None:
    dataset = make_dataset([10] * 8)
    sampler = make_sampler(dataset, batch_size=20_000)
    np.testing.assert_allclose(sampler.episode_probabilities(), [0.05] * 6 + [0.35] * 2)
    groups = [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert_frequencies(group_frequencies(sampler, groups), np.array([0.1, 0.1, 0.1, 0.7]), 20_000)


def test_recency_weights_last_group_takes_remainder() -> None:
    dataset = make_dataset([10] * 10)
    sampler = make_sampler(dataset, batch_size=20_000)
    probabilities = np.array([0.05] * 6 + [0.175] * 4)
    np.testing.assert_allclose(sampler.episode_probabilities(), probabilities)
    assert_frequencies(group_frequencies(sampler, [[i] for i in range(10)]), probabilities, 20_000)


@pytest.mark.parametrize(("lengths", "weights"), [([10, 30, 60], (0.1, 0.1, 0.1, 0.7)), ([10, 30, 60], None)])
def test_length_proportional_without_weights_or_with_few_episodes(
    lengths: list[int], weights: tuple[float, ...] | None
) -> None:
    sampler = make_sampler(make_dataset(lengths), batch_size=20_000, sample_weights=weights)
    probabilities = np.array(lengths) / sum(lengths)
    np.testing.assert_allclose(sampler.episode_probabilities(), probabilities)
    assert_frequencies(group_frequencies(sampler, [[0], [1], [2]]), probabilities, 20_000)


def test_same_seed_same_batch_and_rng_state_replay() -> None:
    dataset = make_dataset(LENGTHS)
    first, second = make_sampler(dataset, seed=7), make_sampler(dataset, seed=7)
    assert_batches_equal(first.sample(), second.sample())
    state = first.rng.bit_generator.state
    expected = first.sample()
    first.rng.bit_generator.state = state
    assert_batches_equal(first.sample(), expected)
    assert not torch.equal(make_sampler(dataset, seed=8).sample().act, expected.act)


@pytest.mark.parametrize("weights", [(0.5, 0.6), (-0.1, 1.1), ()])
def test_rejects_invalid_weights(weights: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="sample_weights"):
        make_sampler(make_dataset([3]), sample_weights=weights)


def test_empty_dataset_cannot_be_sampled() -> None:
    with pytest.raises(ValueError, match="empty"):
        make_sampler(EpisodeDataset(frame_shape=FRAME_SHAPE)).sample()


def test_frame_mask_and_to() -> None:
    mask = torch.tensor([[False, False, True, True], [True, True, False, False], [False, True, False, False]])
    expected = [
        [False, False, True, True, True],
        [True, True, True, False, False],
        [False, True, True, False, False],
    ]
    assert step_to_frame_mask(mask).tolist() == expected
    batch = make_sampler(make_dataset(LENGTHS), batch_size=2).sample()
    moved = batch.to("cpu")
    assert_batches_equal(moved, batch)
    assert moved.obs.device == torch.device("cpu")
