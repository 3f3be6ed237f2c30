"""Random fixed-length segments of stored episodes (any ``data.store.EpisodeStore``), with the semantics of
the official DIAMOND and CS:GO samplers (the rule itself: ``data/segments.py``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

import numpy as np
import torch

from diffworld.data.batch import Batch
from diffworld.data.segments import draw_segments, every_segment
from diffworld.data.storage import EpisodeDataset
from diffworld.data.store import EpisodeStore

_CPU = torch.device("cpu")


StoreT = TypeVar("StoreT", bound=EpisodeStore)


class SegmentSampler(Generic[StoreT]):
    """Draws batches of ``seq_length``-long segments from an ``EpisodeStore``: segments of steps
    (``seq_length + 1`` frames) from a run dataset, of frames from an engine dataset
    (``engine/segment_sampler.py``).

    Episodes are drawn with replacement from ``ids`` (default: all of the store's, however many it holds at
    the time of the draw), open ones (still running, stored so far) like any other: an open episode's last
    stored step is not an end, and its steps so far are all a segment may hold. With ``sample_weights``
    (w_0 .. w_{k-1}) and at least k candidate episodes, the candidates, in id order (the order in which they
    were first stored, so one env's running episode is the newest), are split into k groups of
    ``num_candidates // k`` episodes (the last group also takes the remaining ``num_candidates % k``); group i
    gets total probability w_i, uniform inside the group, which favours recent episodes. Otherwise an
    episode's probability is proportional to its length.

    A timestep t is then drawn uniformly in the episode. With ``can_sample_beyond_end`` the segment starts
    ``randint(0, seq_length)`` steps before t and may be padded on both sides; otherwise it stops at most
    ``randint(0, seq_length)`` steps after t and never beyond the episode's end, so it is padded on the left
    only. Frame ``len(episode)``, the true final frame of a run dataset's episode, is real.

    ``rng`` is the only source of randomness, so checkpointing ``rng.bit_generator.state`` makes the
    sequence of batches reproducible.
    """

    def __init__(
        self,
        dataset: StoreT,
        batch_size: int,
        seq_length: int,
        sample_weights: Sequence[float] | None = (0.1, 0.1, 0.1, 0.7),
        can_sample_beyond_end: bool = False,
        *,
        rng: np.random.Generator,
        device: torch.device | str = _CPU,
        ids: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        if batch_size < 1 or seq_length < 1:
            raise ValueError(f"batch_size and seq_length must be >= 1, got {batch_size} and {seq_length}")
        if sample_weights is not None:
            weights = np.asarray(sample_weights, dtype=np.float64)
            if weights.ndim != 1 or (weights < 0).any() or not np.isclose(weights.sum(), 1):
                raise ValueError(f"sample_weights must be non-negative and sum to 1, got {sample_weights}")
        self.ids = None if ids is None else np.asarray(ids, dtype=np.int64)
        if self.ids is not None and ((self.ids < 0) | (self.ids >= dataset.num_episodes)).any():
            raise ValueError(f"episode ids must be within [0, {dataset.num_episodes}), got {self.ids}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.sample_weights = None if sample_weights is None else tuple(float(w) for w in sample_weights)
        self.can_sample_beyond_end = can_sample_beyond_end
        self.rng = rng
        self.device = torch.device(device)

    def candidate_lengths(self) -> np.ndarray:
        """The lengths of the episodes drawn from (``ids``, or all the store's), in their order."""
        return self.dataset.lengths if self.ids is None else self.dataset.lengths[self.ids]

    def episode_probabilities(self) -> np.ndarray:
        """(num_candidates,) float64 probability of drawing each candidate episode, summing to 1."""
        lengths = self.candidate_lengths()
        num_episodes = len(lengths)
        if num_episodes == 0:
            raise ValueError("cannot sample from an empty dataset")
        if self.sample_weights is None or num_episodes < len(self.sample_weights):
            return lengths / lengths.sum()
        num_groups = len(self.sample_weights)
        sizes = np.full(num_groups, num_episodes // num_groups)
        sizes[-1] += num_episodes % num_groups
        probabilities = np.repeat(np.asarray(self.sample_weights) / sizes, sizes)
        return probabilities / probabilities.sum()

    def sample_segments(self, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw B segments (``batch_size``, default ``self.batch_size``): (episode ids, starts), (B,) int64.

        A segment covers ``[start, start + seq_length)``; starts may be negative and stops may exceed the
        episode length: those steps are padding.
        """
        size = self.batch_size if batch_size is None else batch_size
        chosen, starts = draw_segments(
            self.rng,
            self.candidate_lengths(),
            self.episode_probabilities(),
            self.seq_length,
            size,
            beyond_end=self.can_sample_beyond_end,
        )
        return (chosen if self.ids is None else self.ids[chosen]), starts

    def view(self, batch: Batch) -> Batch:
        """What the sampler makes of a gathered batch: the batch itself (the engine's sampler adds its
        low-resolution frames)."""
        return batch

    def make_batch(self, episode_ids: np.ndarray, starts: np.ndarray) -> Batch:
        """Gather the segments ``[start, start + seq_length)`` of the given episodes into a ``Batch``.

        Every segment must contain at least one real step.
        """
        return self.view(self.dataset.gather(episode_ids, starts, self.seq_length, self.device))

    def sample(self, batch_size: int | None = None) -> Batch:
        """Draw a batch of segments (see the class docstring); ``batch_size`` overrides the default."""
        return self.make_batch(*self.sample_segments(batch_size))

    def traverse(self, dataset: EpisodeStore | None = None) -> Iterator[Batch]:
        """Every step of ``dataset`` (default: the sampler's ``ids`` of its own store) once, in order, in
        segments shaped like the sampler's, in batches of up to ``batch_size``; draws no random numbers.

        Without ``can_sample_beyond_end`` each episode is cut into consecutive segments, the last one moved
        back to end with the episode (an episode shorter than a segment is padded on the left), so steps
        near an episode's end may be in two segments.
        """
        store: EpisodeStore = self.dataset if dataset is None else dataset
        ids = self.ids if dataset is None else None
        seq, size = self.seq_length, self.batch_size
        lengths = store.lengths if ids is None else store.lengths[ids]
        chosen, all_starts = every_segment(lengths, seq, beyond_end=self.can_sample_beyond_end)
        all_ids = chosen if ids is None else ids[chosen]
        for i in range(0, len(all_ids), size):
            yield self.view(store.gather(all_ids[i : i + size], all_starts[i : i + size], seq, self.device))


def episode_steps(dataset: EpisodeDataset) -> tuple[np.ndarray, np.ndarray]:
    """Every step of ``dataset``: (episode ids, timesteps), each (num_steps,) int64, in episode order."""
    lengths = dataset.lengths
    episode_ids = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    firsts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return episode_ids, np.arange(len(episode_ids), dtype=np.int64) - firsts


class EndingAtSegmentSampler(SegmentSampler[EpisodeDataset]):
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
