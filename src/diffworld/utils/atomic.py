"""Atomic file writes: readers, and a process restarted after a crash, see the old file or the whole new one.

The data goes to a temporary file in the destination folder (same file system, so the final rename is
atomic), is flushed and fsynced, then renamed over the destination with ``os.replace``; the folder is
fsynced last so that the rename itself survives a power loss. A process killed mid-write leaves at most a
temporary file, named ``.<name>.<random>.atomic-tmp``, which readers ignore and ``remove_temp_files`` deletes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".atomic-tmp"

_MODES = ("wb", "w")


def temp_path_for(path: Path) -> Path:
    """A fresh temporary path next to ``path``; hidden, and marked by ``TEMP_SUFFIX`` for cleanup."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the entries of ``directory`` (creations, renames) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only once the ``with`` block completes.

    ``mode`` is ``"wb"`` (binary) or ``"w"`` (text, ``encoding`` defaults to UTF-8). If the block raises,
    ``path`` is left untouched and the temporary file is removed.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write supports modes {_MODES}, got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    path = Path(path)
    tmp = temp_path_for(path)
    # os.open with 0o666 lets the umask decide permissions, as a plain open() would (mkstemp forces 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace the content of ``path`` with ``data``."""
    with atomic_write(path, "wb") as file:
        file.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Atomically replace the content of ``path`` with ``text``."""
    with atomic_write(path, "w", encoding=encoding) as file:
        file.write(text)


def remove_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left in ``directory``; return them.

    Only call this from the single process that writes into ``directory``: a temporary file may belong to a
    write still in progress.
    """
    removed = []
    for tmp in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed
