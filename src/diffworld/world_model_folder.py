"""One interface to a folder that holds a world model, whichever product made it: what ``diffworld play``,
``diffworld video`` and ``diffworld wm-eval`` do with it.

Each product implements ``WorldModelFolder`` once: ``agent/folder_kind.py`` (run and agent folders) and
``engine/folder_kind.py`` (engine folders). The command line asks the kinds, in turn, whether they recognize
a folder and hands it to the first that does, with the options as given (None where left out): each kind
applies its own defaults and refuses, in one line, the options that are not for it. Both kinds play and
write videos through one core: ``viz/play_core.py`` (the commands, a session's rules, the pygame loop) and
``viz/video_out.py`` (the option checks, the frames written one at a time); what stays per product is what
a step imagines and where the frames come from. This module imports nothing heavy, so that the command
line's parser stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from diffworld.viz.video_out import VideoSummary

__all__ = ["PlayOptions", "VideoOptions", "VideoSummary", "WmEvalOptions", "WorldModelFolder"]


@dataclass(frozen=True)
class PlayOptions:
    """``diffworld play``'s options (``None``: not given; the defaults are the command line's)."""

    env: str = "world-model"
    human: bool = False
    horizon: int = 1000
    fps: float = 15.0
    scale: int | None = None
    record_dir: Path | None = None
    seed: int = 0
    device: str = "auto"
    max_frames: int | None = None
    keymap: Path | None = None
    data: str | None = None
    denoising_steps: int | None = None
    sampler_settings: str | None = None


@dataclass(frozen=True)
class VideoOptions:
    """``diffworld video``'s options (``None``: not given)."""

    steps: int
    start: int
    scale: int | None
    fps: float
    seed: int
    device: str
    show_denoising: bool
    denoising_steps: int | None
    sampler_settings: str | None
    episode: int | None
    data: str | None


@dataclass(frozen=True)
class WmEvalOptions:
    """``diffworld wm-eval``'s options (``None``: not given)."""

    horizons: list[int] | None
    denoising_steps: list[int] | None
    batch_size: int | None
    seed: int
    device: str
    kinds: list[str] | None
    episodes: int | None
    trajectories: int | None
    data: str | None
    sampler_settings: str | None


class WorldModelFolder(Protocol):
    """A kind of world-model folder: an Atari run or agent folder, or an engine folder."""

    kind: str
    """``"agent"`` or ``"engine"``."""

    def recognizes(self, path: Path) -> bool:
        """Whether ``path`` is a folder of this kind."""
        ...

    def play(self, path: Path, options: PlayOptions) -> None:
        """Play inside the world model of ``path`` (a pygame window, or headless)."""
        ...

    def video(self, path: Path, out: Path, options: VideoOptions) -> VideoSummary:
        """Write the video of real frames beside the world model's to ``out``."""
        ...

    def wm_eval(self, paths: Sequence[Path], out_dir: Path, options: WmEvalOptions) -> list[str]:
        """Evaluate the world models of ``paths`` into ``out_dir``; the summary lines to print."""
        ...


def default_wm_eval_dir(paths: Sequence[Path]) -> Path:
    """Where ``diffworld wm-eval`` writes by default: ``<folder>/wm_eval`` for one folder, ``wm_eval``
    otherwise."""
    return paths[0] / "wm_eval" if len(paths) == 1 else Path("wm_eval")
