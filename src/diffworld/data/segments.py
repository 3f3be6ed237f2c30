"""The one rule by which training segments are drawn from stored episodes, whatever the store: the agent's run
datasets (``data/segment_sampler.py``, segments of n steps and n + 1 frames) and the engine's datasets
(``engine/segment_sampler.py``, segments of n frames), as the official DIAMOND and CS:GO samplers draw them.

An episode is drawn with the given probabilities, a step t uniformly in it, and an offset o uniformly in
[0, n): the segment stops at min(length, t + 1 + o) and starts n before, so it never goes beyond the
episode's end and may start before its beginning (left padding); or, ``beyond_end``, it starts at t - o and
may be padded on both sides. ``rng`` draws, in this order: the episodes, the steps, the offsets.
"""

from __future__ import annotations

import numpy as np


def draw_segments(
    rng: np.random.Generator,
    lengths: np.ndarray,
    probabilities: np.ndarray,
    n: int,
    size: int,
    *,
    beyond_end: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``size`` segments of ``n`` from candidate episodes of ``lengths`` (one entry per candidate),
    drawn with ``probabilities``: (the candidates' indices, the segments' starts), (size,) int64 each."""
    chosen = rng.choice(len(probabilities), size=size, p=probabilities)
    chosen_lengths = lengths[chosen]
    timesteps = rng.integers(0, chosen_lengths)
    offsets = rng.integers(0, n, size=size)
    if beyond_end:
        return chosen.astype(np.int64), (timesteps - offsets).astype(np.int64)
    stops = np.minimum(chosen_lengths, timesteps + 1 + offsets)
    return chosen.astype(np.int64), (stops - n).astype(np.int64)


def every_segment(lengths: np.ndarray, n: int, *, beyond_end: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Segments of ``n`` that cover every step of episodes of ``lengths``, in order: (the episodes' indices,
    the segments' starts), int64 each; draws nothing.

    Each episode is cut into consecutive segments; without ``beyond_end`` the last one moves back to end
    with the episode (an episode shorter than a segment is padded on the left), so steps near an episode's
    end may be in two segments.
    """
    indices, starts = [], []
    for index, length in enumerate(np.asarray(lengths).tolist()):
        episode_starts = np.arange(0, length, n)
        if not beyond_end:
            episode_starts = np.unique(np.minimum(episode_starts, length - n))
        indices.append(np.full(len(episode_starts), index))
        starts.append(episode_starts)
    return np.concatenate(indices).astype(np.int64), np.concatenate(starts).astype(np.int64)
