"""The frames of a running episode, appended one at a time into blocks of up to a few MiB.

One small array per frame (12 KiB at 64x64) is the obvious way to hold them, and it made the periodic test
of a Krull run take 21 GB when its episodes lasted 27,000 steps: each frame is a ``malloc`` of its own that
lives as long as the episode, made among the policy's short-lived buffers of every step, so the heap fills
with frames scattered between freed holes that the next steps' buffers do not fit in, and it grows faster
than the frames do (``benchmarks/results/README.md``, "Test episode memory"). Blocks are few and hold
nothing but frames.
"""

from __future__ import annotations

import numpy as np

BLOCK_BYTES = 4 << 20
"""Largest size of a block (one frame at least, whatever the frame's size)."""


class FrameChunks:
    """Append-only frames of one shape and dtype, starting with ``first`` (copied).

    Blocks double in length from one frame up to ``BLOCK_BYTES``, so a short episode (or the one frame an
    idle env keeps) takes little, and a long one a few large blocks.
    """

    def __init__(self, first: np.ndarray) -> None:
        self._frame_shape = first.shape
        self._dtype = first.dtype
        self._max_block_len = max(1, BLOCK_BYTES // max(1, first.nbytes))
        self._blocks: list[np.ndarray] = []
        self._filled = 0
        """Frames in the last block."""
        self._size = 0
        self.append(first)

    @classmethod
    def from_array(cls, frames: np.ndarray) -> FrameChunks:
        """The frames of ``frames`` (N >= 1, ...), copied."""
        chunks = cls(frames[0])
        for frame in frames[1:]:
            chunks.append(frame)
        return chunks

    def __len__(self) -> int:
        return self._size

    def append(self, frame: np.ndarray) -> None:
        """Copy ``frame`` in after the others; its shape and dtype must be those of the first frame."""
        if frame.shape != self._frame_shape or frame.dtype != self._dtype:
            raise ValueError(
                f"frame of shape {frame.shape} and dtype {frame.dtype} among frames of shape "
                f"{self._frame_shape} and dtype {self._dtype}"
            )
        if not self._blocks or self._filled == len(self._blocks[-1]):
            length = min(self._max_block_len, max(1, self._size))
            self._blocks.append(np.empty((length, *self._frame_shape), dtype=self._dtype))
            self._filled = 0
        self._blocks[-1][self._filled] = frame
        self._filled += 1
        self._size += 1

    @property
    def first(self) -> np.ndarray:
        """Read-only view of the first frame."""
        return self._read_only(self._blocks[0][0])

    @property
    def last(self) -> np.ndarray:
        """Read-only view of the last frame (valid for as long as this object is)."""
        return self._read_only(self._blocks[-1][self._filled - 1])

    def array(self) -> np.ndarray:
        """All the frames as one (N, ...) array (a copy)."""
        return np.concatenate([*self._blocks[:-1], self._blocks[-1][: self._filled]])

    @property
    def num_blocks(self) -> int:
        """Arrays allocated so far (one per block)."""
        return len(self._blocks)

    @property
    def nbytes(self) -> int:
        """Bytes of the blocks allocated, used or not."""
        return sum(block.nbytes for block in self._blocks)

    @staticmethod
    def _read_only(view: np.ndarray) -> np.ndarray:
        view.flags.writeable = False
        return view
