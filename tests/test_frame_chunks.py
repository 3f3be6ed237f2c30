"""FrameChunks: the frames back as appended, in few blocks, and not much more memory than they need."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffworld.data.frame_chunks import BLOCK_BYTES, FrameChunks


def random_frames(n: int, shape: tuple[int, ...] = (64, 64, 3)) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("n", [1, 2, 3, 100, 1000])
def test_frames_come_back_as_appended(n: int) -> None:
    frames = random_frames(n)
    chunks = FrameChunks(frames[0])
    for frame in frames[1:]:
        chunks.append(frame)
    assert len(chunks) == n
    np.testing.assert_array_equal(chunks.array(), frames)
    np.testing.assert_array_equal(chunks.first, frames[0])
    np.testing.assert_array_equal(chunks.last, frames[-1])
    np.testing.assert_array_equal(FrameChunks.from_array(frames).array(), frames)


def test_a_long_episode_takes_few_blocks_and_little_spare_memory() -> None:
    # 3,000 steps of 64x64 frames: one array per frame was what fragmented the heap (frame_chunks.py).
    frame_bytes = 64 * 64 * 3
    frames = random_frames(3001)
    chunks = FrameChunks(frames[0])
    for frame in frames[1:]:
        chunks.append(frame)
    doublings = math.ceil(math.log2(BLOCK_BYTES // frame_bytes)) + 1
    assert chunks.num_blocks <= doublings + math.ceil(len(frames) * frame_bytes / BLOCK_BYTES)
    assert chunks.nbytes <= len(frames) * frame_bytes + BLOCK_BYTES


def test_the_first_frames_take_small_blocks() -> None:
    # An idle env keeps one frame per step in a fresh FrameChunks: it must not cost a whole block.
    chunks = FrameChunks(random_frames(1)[0])
    assert chunks.nbytes == 64 * 64 * 3


def test_array_is_a_copy_and_views_are_read_only() -> None:
    frames = random_frames(5)
    chunks = FrameChunks.from_array(frames)
    out = chunks.array()
    out[:] = 0
    np.testing.assert_array_equal(chunks.array(), frames)
    with pytest.raises(ValueError, match="read-only"):
        chunks.last[0, 0, 0] = 1


def test_a_frame_of_another_shape_or_dtype_is_refused() -> None:
    chunks = FrameChunks(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        chunks.append(np.zeros((4, 4, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        chunks.append(np.zeros((4, 4, 3), dtype=np.float32))
