"""Atomic file writes: readers, and a process restarted after a crash, see the old file or the whole new one.

The data goes to a temporary file in the destination folder (same file system, so the final rename is
atomic), is flushed and fsynced, then renamed over the destination with ``os.replace``; the folder is
fsynced last so that the rename itself survives a power loss. A process killed mid-write leaves at most a
temporary file, named ``.<name>.<random>.atomic-tmp``, which readers ignore and ``remove_temp_files`` deletes.

A write that runs out of space (``ENOSPC``, a quota) raises :class:`DiskFullError`, whose one-line message
says what was being written, how much space it needs and that the file it would have replaced is untouched;
a write whose size is known (``atomic_write_bytes``, ``size_hint``) and large checks the free space first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from diffworld.errors import UserError

TEMP_SUFFIX = ".atomic-tmp"

_MODES = ("wb", "w")
CHECK_FREE_SPACE_FROM = 1 << 20
"""Writes of at least this many bytes (when known beforehand) check the free space before they start."""

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# How torch.save reports a short write (its zip writer checks positions, or fails writing a record).
_DISK_FULL_MESSAGES = (
    "unexpected pos",
    "file write failed",
    "No space left on device",
    "Disk quota exceeded",
)


class DiskFullError(UserError, OSError):
    """A write that found (or would find) no space left; the message is one line saying what, how much, and
    that nothing it would replace was touched. ``path`` is the file being written, ``needed`` and ``free``
    are byte counts (``needed`` an estimate, None when unknown)."""

    def __init__(
        self, message: str, *, path: Path, needed: int | None, free: int | None, head: str | None = None
    ) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC
        self.path = path
        self.needed = needed
        self.free = free
        self.head = head or message
        """The message's first sentence: what was being written, where, and the space needed and free."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from or while handling) says that space ran out.

    ``OSError`` with ``ENOSPC``, ``EDQUOT`` or ``EFBIG``, or torch's ``RuntimeError`` for a short write
    (``[enforce fail at inline_container.cc:...] unexpected pos ...``, ``... file write failed``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return True
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno in _DISK_FULL_ERRNOS:
                return True
        elif isinstance(current, RuntimeError) and any(m in str(current) for m in _DISK_FULL_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def format_bytes(num: int | float) -> str:
    """``1.2 GB``, ``340 MB``, ``12 kB``, ``512 bytes`` (powers of 1000, as ``df -H``)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num >= size:
            return f"{num / size:.3g} {unit}"
    return f"{int(num)} byte{'' if int(num) == 1 else 's'}"


def free_bytes(directory: str | os.PathLike[str]) -> int | None:
    """Bytes this process may still write in ``directory``'s file system (None if it cannot be asked)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def disk_full_error(
    path: str | os.PathLike[str], needed: int | None, what: str | None = None, intact: str | None = None
) -> DiskFullError:
    """The :class:`DiskFullError` for a write of about ``needed`` bytes to ``path`` (``what`` it is: ``the
    checkpoint``); ``intact`` replaces the default note on what was kept (the file at ``path``, unchanged)."""
    path = Path(path)
    free = free_bytes(path.parent)
    amount = f"about {format_bytes(needed)}" if needed else "more space"
    has = f", {format_bytes(free)} free" if free is not None else ""
    kept = intact or (f"{path} is unchanged" if path.exists() else f"nothing was written at {path}")
    head = (
        f"No space left on the device of {path.parent} while writing {what or path.name} ({path}): it needs "
        f"{amount}{has}."
    )
    message = f"{head} {kept[0].upper() + kept[1:]}; free some space and try again."
    return DiskFullError(message, path=path, needed=needed, free=free, head=head)


def check_free_space(
    path: str | os.PathLike[str], needed: int, what: str | None = None, intact: str | None = None
) -> None:
    """Raise :class:`DiskFullError` (see :func:`disk_full_error`) now, before writing, if the file system of
    ``path`` has less than ``needed`` bytes free. Costs one ``statvfs``."""
    free = free_bytes(Path(path).parent)
    if free is not None and free < needed:
        raise disk_full_error(path, needed, what, intact)


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
    path: str | os.PathLike[str],
    mode: str = "wb",
    encoding: str | None = None,
    *,
    size_hint: int | None = None,
    what: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only once the ``with`` block completes.

    ``mode`` is ``"wb"`` (binary) or ``"w"`` (text, ``encoding`` defaults to UTF-8). If the block raises,
    ``path`` is left untouched and the temporary file is removed.

    Raises:
        DiskFullError: the file system ran out of space (or, with ``size_hint`` bytes of at least
            ``CHECK_FREE_SPACE_FROM``, has less than that free before anything is written); ``what`` names
            the file in the message.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write supports modes {_MODES}, got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    path = Path(path)
    if size_hint is not None and size_hint >= CHECK_FREE_SPACE_FROM:
        check_free_space(path, size_hint, what)
    tmp = temp_path_for(path)
    # os.open with 0o666 lets the umask decide permissions, as a plain open() would (mkstemp forces 0o600).
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, size_hint, what) from e
        raise
    try:
        with os.fdopen(fd, mode, encoding=encoding) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        written = _size(tmp)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            needed = max(size_hint or 0, written or 0) or None
            raise disk_full_error(path, needed, what) from e
        raise
    fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], what: str | None = None) -> Iterator[Path]:
    """A temporary path next to ``path``, for a writer that opens the file by name itself (ffmpeg): the file
    is fsynced and renamed to ``path`` once the ``with`` block completes, and removed if the block raises."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            raise disk_full_error(path, None, what) from e
        raise
    fsync_directory(path.parent)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, what: str | None = None) -> None:
    """Atomically replace the content of ``path`` with ``data`` (``what`` it is, for a disk-full message)."""
    with atomic_write(path, "wb", size_hint=len(data), what=what) as file:
        file.write(data)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, encoding: str = "utf-8", what: str | None = None
) -> None:
    """Atomically replace the content of ``path`` with ``text`` (``what`` it is, for a disk-full message)."""
    with atomic_write(path, "w", encoding=encoding, size_hint=len(text), what=what) as file:
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
