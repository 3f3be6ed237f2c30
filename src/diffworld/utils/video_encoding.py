"""Writing frames as a video: an animated GIF (Pillow, a dependency of TensorBoard) or an H.264 mp4
(``imageio`` and ``imageio-ffmpeg``, the ``viz`` extra)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.errors import UserError

VIDEO_SUFFIXES = (".gif", ".mp4")


def _pad_to_multiple(frames: np.ndarray, multiple: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return frames
    return np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)))


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """(T, H, W, 3) uint8 as an animated GIF that loops (Pillow)."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    out = io.BytesIO()
    duration = max(20, round(1000 / fps))
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return out.getvalue()


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write (T, H, W, 3) uint8 frames as ``.gif`` (Pillow) or ``.mp4`` (H.264 through imageio-ffmpeg;
    frames are padded with black to multiples of 16 pixels, as the codec needs)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise UserError(f"Cannot write {path}: the video must be a .mp4 or a .gif file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        path.write_bytes(encode_gif(frames, fps))
        return
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise UserError(
            'Writing an mp4 needs imageio and imageio-ffmpeg: pip install -e ".[viz]" (or write a .gif).'
        ) from None
    writer: Any = imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=1, quality=8
    )
    with writer:
        for frame in _pad_to_multiple(frames, 16):
            writer.append_data(frame)
