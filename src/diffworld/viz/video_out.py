"""What ``diffworld video`` is for both products (``agent/video.py``, ``engine/video.py``): the checks of
its options, and the one loop that writes the side-by-side frames (``viz.side_by_side.compose_frame``) of
either product to an mp4 or a GIF, one frame at a time (``utils.video_encoding.VideoWriter``).

Each product supplies the frames: the agent's, a real episode of its policy beside its world model's
imagination; the engine's, a test episode of its dataset beside its open-loop imagination.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffworld.errors import UserError

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class VideoSummary:
    """What ``diffworld video`` prints of the video it wrote."""

    num_frames: int
    height: int
    width: int


def check_video_request(
    out: Path, *, steps: int, start: int, scale: int, fps: float, episode: int | None = None
) -> None:
    """Refuse, in one line, a video file that is not ``.mp4`` or ``.gif`` and options out of range
    (``episode``: the engine's, None for the agent)."""
    from diffworld.utils.video_encoding import check_video_path

    check_video_path(out)
    if steps < 1 or start < 0 or (episode is not None and episode < 0) or scale < 1 or fps <= 0:
        needs = "--steps >= 1, --start >= 0, " + ("--episode >= 0, " if episode is not None else "")
        raise UserError(f"Need {needs}--scale >= 1 and --fps > 0.")


def write_frames(out: Path, frames: Iterable[np.ndarray], fps: float) -> VideoSummary:
    """Write ``frames`` ((H, W, 3) uint8, all of one size) to ``out`` as they come; nothing appears at
    ``out`` if making one fails."""
    from diffworld.utils.video_encoding import VideoWriter

    with VideoWriter(Path(out), fps) as video:
        for frame in frames:
            video.append(frame)
    assert video.size is not None
    return VideoSummary(video.num_frames, *video.size)
