"""A pygame window that shows one upscaled frame under a few lines of text, and the paced loop of an app.

Headless runs (tests, benchmarks, a machine without a screen) use SDL's dummy video driver:
``SDL_VIDEODRIVER=dummy``. pygame is imported here only, on first use.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from diffworld.errors import UserError

_FONT_SIZE = 20
_LINE_HEIGHT = 20
_BACKGROUND = (0, 0, 0)
_TEXT = (235, 235, 235)


def import_pygame() -> ModuleType:
    """pygame, without its banner; a clear message where the ``viz`` extra is not installed."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError:
        raise UserError('This command needs pygame: pip install -e ".[viz]"') from None
    return pygame


class Window:
    """``header_lines`` lines of text above a frame shown ``scale`` times its size."""

    def __init__(self, title: str, frame_size: tuple[int, int], scale: int, header_lines: int) -> None:
        if scale < 1:
            raise UserError(f"--scale must be >= 1, got {scale}")
        self.title = title
        self.frame_size = (frame_size[0] * scale, frame_size[1] * scale)  # (height, width)
        self.header_height = header_lines * _LINE_HEIGHT + 6
        self.pg = import_pygame()
        self._screen: Any = None
        self._font: Any = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the window."""
        return self.frame_size[1], self.frame_size[0] + self.header_height

    def open(self) -> None:
        pg = self.pg
        pg.display.init()
        pg.font.init()
        pg.display.set_caption(self.title)
        self._screen = pg.display.set_mode(self.size)
        self._font = pg.font.Font(None, _FONT_SIZE)

    def draw(self, frame: np.ndarray, lines: Sequence[str]) -> None:
        """Show ``frame`` (H, W, 3) uint8 under ``lines`` of text."""
        pg = self.pg
        screen = self._screen
        screen.fill(_BACKGROUND)
        for i, line in enumerate(lines):
            screen.blit(self._font.render(line, True, _TEXT), (6, 4 + i * _LINE_HEIGHT))
        # surfarray wants (width, height, 3).
        surface = pg.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)))
        height, width = self.frame_size
        screen.blit(pg.transform.scale(surface, (width, height)), (0, self.header_height))
        pg.display.flip()

    def close(self) -> None:
        self.pg.display.quit()


class FrameRate:
    """The rate of the steps that a loop takes, a moving average; a pause restarts the measurement."""

    def __init__(self) -> None:
        self.per_second = 0.0
        self._last: float | None = None

    def step(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            rate = 1 / max(now - self._last, 1e-6)
            self.per_second = rate if self.per_second == 0 else 0.9 * self.per_second + 0.1 * rate
        self._last = now

    def pause(self) -> None:
        """No step this time: the next one is not measured against the last."""
        self._last = None


class WindowApp(ABC):
    """A pygame front end: each :meth:`frame` handles the pending events, steps and draws once, at most
    ``fps`` times a second (0: as fast as it can)."""

    def __init__(self, window: Window, fps: float) -> None:
        self.window = window
        self.pg = window.pg
        self.fps = fps
        self.num_frames = 0
        self._clock: Any = None

    def open(self) -> None:
        self.window.open()
        self._clock = self.pg.time.Clock()

    @abstractmethod
    def update(self) -> bool:
        """Handle the pending events, step, draw; False, having drawn nothing, once the app has stopped."""

    @abstractmethod
    def running(self) -> bool:
        """Whether the app goes on."""

    def frame(self) -> bool:
        """One :meth:`update`, then the wait that keeps the pace; returns whether the app still runs."""
        if not self.update():
            return False
        self.num_frames += 1
        if self.fps > 0:
            self._clock.tick(self.fps)
        return self.running()

    def close(self) -> None:
        self.window.close()

    def run(self, max_frames: int | None = None) -> None:
        """Open the window and run until stopped (or ``max_frames`` frames); then close everything."""
        self.open()
        try:
            while self.frame():
                if max_frames is not None and self.num_frames >= max_frames:
                    break
        finally:
            self.close()
