"""Random fixed-length segments of stored episodes, with the semantics of the official DIAMOND sampler (the
rule itself: ``data/segments.py``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from diffworld.data.batch import Batch
from diffworld.data.frames import frames_to_tensor
from diffworld.data.segments import draw_segments, every_segment
from diffworld.data.storage import EpisodeDataset

_CPU = torch.device("cpu")


class SegmentSampler:
    """Draws batches of ``seq_length``-step segments (``seq_length + 1`` frames) from an ``EpisodeDataset``.

    Episodes are drawn with replacement, open ones (still running, stored so far) like any other: an open
    episode's last stored step is not an end, and its steps so far are all a segment may hold. With
    ``sample_weights`` (w_0 .. w_{k-1}) and at least k episodes, the episodes, in id order (the order in
    which they were first stored, so one env's running episode is the newest), are split into k groups of
    ``num_episodes // k`` episodes (the last group also takes the remaining ``num_episodes % k``); group i
    gets total probability w_i, uniform inside the group, which favours recent episodes. Otherwise an
    episode's probability is proportional to its length.

    A timestep t is then drawn uniformly in the episode. With ``can_sample_beyond_end`` the segment starts
    ``randint(0, seq_length)`` steps before t and may be padded on both sides; otherwise it stops at most
    ``randint(0, seq_length)`` steps after t and never beyond the episode's end, so it is padded on the left
    only. Frame ``len(episode)``, the true final frame, is real.

    ``rng`` is the only source of randomness, so checkpointing ``rng.bit_generator.state`` makes the
    sequence of batches reproducible.
    """

    def __init__(
        self,
        dataset: EpisodeDataset,
        batch_size: int,
        seq_length: int,
        sample_weights: Sequence[float] | None = (0.1, 0.1, 0.1, 0.7),
        can_sample_beyond_end: bool = False,
        *,
        rng: np.random.Generator,
        device: torch.device | str = _CPU,
    ) -> None:
        if batch_size < 1 or seq_length < 1:
            raise ValueError(f"batch_size and seq_length must be >= 1, got {batch_size} and {seq_length}")
        if sample_weights is not None:
            weights = np.asarray(sample_weights, dtype=np.float64)
            if weights.ndim != 1 or (weights < 0).any() or not np.isclose(weights.sum(), 1):
                raise ValueError(f"sample_weights must be non-negative and sum to 1, got {sample_weights}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.sample_weights = None if sample_weights is None else tuple(float(w) for w in sample_weights)
        self.can_sample_beyond_end = can_sample_beyond_end
        self.rng = rng
        self.device = torch.device(device)

    def episode_probabilities(self) -> np.ndarray:
        """(num_episodes,) float64 probability of drawing each episode, summing to 1."""
        num_episodes = self.dataset.num_episodes
        if num_episodes == 0:
            raise ValueError("cannot sample from an empty dataset")
        if self.sample_weights is None or num_episodes < len(self.sample_weights):
            lengths = self.dataset.lengths
            return lengths / lengths.sum()
        num_groups = len(self.sample_weights)
        sizes = np.full(num_groups, num_episodes // num_groups)
        sizes[-1] += num_episodes % num_groups
        probabilities = np.repeat(np.asarray(self.sample_weights) / sizes, sizes)
        return probabilities / probabilities.sum()

    def sample_segments(self, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw B segments (``batch_size``, default ``self.batch_size``): (episode ids, starts), (B,) int64.

        A segment covers steps ``[start, start + seq_length)``; starts may be negative and stops may exceed
        the episode length: those steps are padding.
        """
        size = self.batch_size if batch_size is None else batch_size
        return draw_segments(
            self.rng,
            self.dataset.lengths,
            self.episode_probabilities(),
            self.seq_length,
            size,
            beyond_end=self.can_sample_beyond_end,
        )

    def make_batch(self, episode_ids: np.ndarray, starts: np.ndarray) -> Batch:
        """Gather the segments ``[start, start + seq_length)`` of the given episodes into a ``Batch``.

        Every segment must contain at least one real step.
        """
        dataset = self.dataset
        lengths = dataset.lengths[episode_ids][:, None]
        step_pos = starts[:, None] + np.arange(self.seq_length)
        frame_pos = starts[:, None] + np.arange(self.seq_length + 1)
        is_real = (step_pos >= 0) & (step_pos < lengths)
        if not is_real.any(axis=1).all():
            raise ValueError("every segment must overlap its episode")

        # Clipping keeps padding indices inside their own episode; their values are masked out below.
        step_idx = dataset.step_starts[episode_ids][:, None] + np.clip(step_pos, 0, lengths - 1)
        frame_idx = dataset.frame_starts[episode_ids][:, None] + np.clip(frame_pos, 0, lengths)
        frames = dataset.frames[frame_idx]  # (B, T+1, H, W, C) uint8, the only large copy

        # Frames outside [0, len] are padding (frame len, the true final frame, is real). Their flat indices
        # are found on the host so that zeroing them on the device touches only them and never syncs.
        padding_frames = np.flatnonzero((frame_pos < 0) | (frame_pos > lengths))
        # uint8 crosses to the device (4x less traffic than float32); conversion and zeroing happen there.
        obs = torch.from_numpy(frames).to(self.device, non_blocking=True)
        obs = frames_to_tensor(obs)
        obs.flatten(0, 1).index_fill_(0, torch.from_numpy(padding_frames).to(self.device), 0.0)
        return Batch.of_steps(
            obs=obs,
            act=self._steps_to_device(dataset.actions[step_idx], is_real),
            rew=self._steps_to_device(dataset.rewards[step_idx], is_real),
            end=self._steps_to_device(dataset.terminated[step_idx], is_real),
            trunc=self._steps_to_device(dataset.truncated[step_idx], is_real),
            step_mask=torch.from_numpy(is_real).to(self.device),
        )

    def sample(self, batch_size: int | None = None) -> Batch:
        """Draw a batch of segments (see the class docstring); ``batch_size`` overrides the default."""
        return self.make_batch(*self.sample_segments(batch_size))

    def _steps_to_device(self, values: np.ndarray, is_real: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.where(is_real, values, np.zeros((), dtype=values.dtype))).to(self.device)


def traverse(dataset: EpisodeDataset, sampler: SegmentSampler) -> Iterator[Batch]:
    """Every step of ``dataset`` once, in segments shaped like ``sampler``'s (padding where needed)."""
    seq = sampler.seq_length
    all_ids, all_starts = every_segment(dataset.lengths, seq, beyond_end=sampler.can_sample_beyond_end)
    # make_batch only: its generator is never drawn from, and is not ``sampler``'s (a training stream).
    view = SegmentSampler(
        dataset,
        sampler.batch_size,
        seq,
        None,
        sampler.can_sample_beyond_end,
        rng=np.random.default_rng(0),
        device=sampler.device,
    )
    for i in range(0, len(all_ids), sampler.batch_size):
        yield view.make_batch(all_ids[i : i + sampler.batch_size], all_starts[i : i + sampler.batch_size])


def episode_steps(dataset: EpisodeDataset) -> tuple[np.ndarray, np.ndarray]:
    """Every step of ``dataset``: (episode ids, timesteps), each (num_steps,) int64, in episode order."""
    lengths = dataset.lengths
    episode_ids = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    firsts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return episode_ids, np.arange(len(episode_ids), dtype=np.int64) - firsts


class EndingAtSampler(SegmentSampler):
    """Segments that end at steps drawn uniformly, with replacement, from the given ones (step
    ``timesteps[i]`` of episode ``episode_ids[i]``): a segment of ``seq_length`` steps ending at step t
    holds steps ``t - seq_length + 1 .. t`` and frame t + 1 last, padded on the left where it starts before
    its episode.

    What a ``SegmentSampler`` draws from a dataset, drawn from a part of it (the steps collected lately, the
    steps before them): imagination restarts from it like from any sampler.
    """

    def __init__(
        self,
        dataset: EpisodeDataset,
        batch_size: int,
        seq_length: int,
        episode_ids: np.ndarray,
        timesteps: np.ndarray,
        *,
        rng: np.random.Generator,
        device: torch.device | str = _CPU,
    ) -> None:
        super().__init__(dataset, batch_size, seq_length, None, False, rng=rng, device=device)
        if len(episode_ids) != len(timesteps) or len(episode_ids) == 0:
            raise ValueError(
                f"need as many episode ids as timesteps, at least one: got {len(episode_ids)} and "
                f"{len(timesteps)}"
            )
        if ((timesteps < 0) | (timesteps >= dataset.lengths[episode_ids])).any():
            raise ValueError("every timestep must be a step of its episode")
        self.episode_ids = np.asarray(episode_ids, dtype=np.int64)
        self.timesteps = np.asarray(timesteps, dtype=np.int64)

    def sample_segments(self, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        size = self.batch_size if batch_size is None else batch_size
        chosen = self.rng.integers(0, len(self.episode_ids), size=size)
        return self.episode_ids[chosen], self.timesteps[chosen] + 1 - self.seq_length
