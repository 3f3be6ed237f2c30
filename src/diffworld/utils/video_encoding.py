"""Writing frames as a video: an animated GIF (Pillow, a dependency of TensorBoard) or an H.264 mp4
(``imageio`` and ``imageio-ffmpeg``, the ``viz`` extra).

``VideoWriter`` takes the frames one at a time, so that a long video at full resolution (an engine's 210x160
frames, thousands of steps) never sits in memory whole: an mp4's frames go straight to ffmpeg; a GIF's are
kept as palette images (a third of their RGB size) until the end, as Pillow writes a GIF in one go. Either
file appears under its name only once complete (``utils.atomic``).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from diffworld.errors import UserError
from diffworld.utils.atomic import atomic_path, atomic_write

VIDEO_SUFFIXES = (".gif", ".mp4")
_MACRO_BLOCK = 16
"""H.264 wants frame sizes in multiples of 16: frames are padded with black, never scaled."""


def check_video_path(path: Path) -> None:
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"Cannot write {path}: the video must be a .mp4 or a .gif file.")


def _pad_to_multiple(frame: np.ndarray, multiple: int) -> np.ndarray:
    h, w = frame.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return frame
    return np.pad(frame, ((0, ph), (0, pw), (0, 0)))


def _gif_frame(frame: np.ndarray) -> Any:
    from PIL import Image

    # The conversion Pillow's GIF writer applies to an RGB frame anyway (an adaptive palette per frame),
    # done as the frame arrives so that it is kept at one byte a pixel.
    return Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE)


def _save_gif(images: list[Any], fps: float, file: IO[bytes]) -> None:
    duration = max(20, round(1000 / fps))
    images[0].save(file, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """(T, H, W, 3) uint8 as an animated GIF that loops (Pillow)."""
    out = io.BytesIO()
    _save_gif([_gif_frame(frame) for frame in frames], fps, out)
    return out.getvalue()


class VideoWriter:
    """``with VideoWriter(path, fps) as video: video.append(frame)``: (H, W, 3) uint8 frames, all of one size,
    written as ``.gif`` or ``.mp4`` (see the module docstring); nothing appears at ``path`` if the block
    raises."""

    def __init__(self, path: Path, fps: float) -> None:
        check_video_path(path)
        self.path = Path(path)
        self.fps = fps
        self.gif = self.path.suffix.lower() == ".gif"
        self.num_frames = 0
        self.size: tuple[int, int] | None = None
        """(height, width) of the frames appended (before the mp4's padding)."""
        self._stack = contextlib.ExitStack()
        self._images: list[Any] = []
        self._file: IO[bytes] | None = None
        self._ffmpeg: Any = None
        self._tmp: Path | None = None

    def __enter__(self) -> VideoWriter:
        if not self.gif:
            try:
                import imageio_ffmpeg  # noqa: F401
            except ImportError:
                raise UserError(
                    "Writing an mp4 needs imageio and imageio-ffmpeg: "
                    'pip install -e ".[viz]" (or write a .gif).'
                ) from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._stack as stack:
            if self.gif:
                self._file = stack.enter_context(atomic_write(self.path, "wb", what="the video"))
            else:
                self._tmp = stack.enter_context(atomic_path(self.path, what="the video"))
                stack.callback(self._close_ffmpeg)
            self._stack = stack.pop_all()
        return self

    def _open_ffmpeg(self, height: int, width: int) -> None:
        import imageio_ffmpeg

        self._ffmpeg = imageio_ffmpeg.write_frames(
            str(self._tmp),
            (width, height),
            fps=self.fps,
            codec="libx264",
            quality=8,
            macro_block_size=1,
            output_params=["-f", "mp4"],  # ffmpeg would guess the container from the temporary name
        )
        self._ffmpeg.send(None)  # starts ffmpeg

    def _close_ffmpeg(self) -> None:
        if self._ffmpeg is not None:
            self._ffmpeg.close()  # waits for ffmpeg to finish the file
            self._ffmpeg = None

    def append(self, frame: np.ndarray) -> None:
        size = (int(frame.shape[0]), int(frame.shape[1]))
        if self.size is not None and size != self.size:
            raise ValueError(f"a video's frames have one size: {self.size}, then {size}")
        self.size = size
        if self.gif:
            self._images.append(_gif_frame(frame))
        else:
            padded = np.ascontiguousarray(_pad_to_multiple(frame, _MACRO_BLOCK))
            if self._ffmpeg is None:
                self._open_ffmpeg(*padded.shape[:2])
            self._ffmpeg.send(padded)
        self.num_frames += 1

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        # The writers' contexts see the error, if any, so that the temporary file is removed, not renamed.
        try:
            if error is None:
                if self.num_frames == 0:
                    raise ValueError(f"no frames to write to {self.path}")
                if self._file is not None:
                    _save_gif(self._images, self.fps, self._file)
        except BaseException as e:
            self._images = []
            self._stack.__exit__(type(e), e, e.__traceback__)
            raise
        self._images = []
        self._stack.__exit__(kind, error, trace)
