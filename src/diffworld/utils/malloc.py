"""Keep glibc's allocator from handing training's memory back to the kernel at every step.

Every training step allocates and frees the same large activation buffers again (tens to hundreds of MiB
at the paper's settings). With glibc's defaults, an allocation above ``M_MMAP_THRESHOLD`` (128 KiB,
raised dynamically up to 32 MiB) is a fresh ``mmap`` that ``free`` gives straight back with ``munmap``, and
free memory at the top of the heap above ``M_TRIM_THRESHOLD`` is returned with ``sbrk``/``madvise``. The
next step then faults the same pages in again and the kernel zeroes every one of them: on the 2-core
development machine that clearing was most of a step's time (``benchmarks/results``: the denoiser's step
went from 16.4 s to 7.7 s, the reward model's from 21.4 s to 8.0 s with
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736``).

:func:`configure_malloc` is the in-process equivalent of those tunables, through ``mallopt(3)``
(constants of glibc's ``malloc.h``):

- ``M_MMAP_MAX`` (-4) = 0: no allocation is served by its own ``mmap``; large blocks come from the heap
  and are reused from it;
- ``M_TRIM_THRESHOLD`` (-1) = -1: mallopt takes an ``int``, so the 64 GiB of the tunable cannot be
  written; ``-1`` is glibc's documented value for "never trim" (mallopt(3): "Setting M_TRIM_THRESHOLD to -1
  disables trimming completely"; glibc stores it as the size_t ``SIZE_MAX``). The largest positive int,
  2 GiB - 1, would not do: at the paper's settings more than 2 GiB can be free at the top of the heap
  between two steps, and the whole of it would then be trimmed and faulted in again.

The price: the process keeps its peak heap as resident memory instead of shrinking between steps (its
resident size stays near its peak, which is what it needs at every step anyway). Setting it also turns off
glibc's dynamic mmap threshold. It must run before the large allocations it is meant for (at the start of
the ``diffworld`` command and of a sweep's run); later calls are harmless. ``DIFFWORLD_KEEP_MALLOC=1`` in
the environment keeps glibc's defaults. Elsewhere than Linux with glibc (macOS, musl, Windows) it does
nothing: those allocators have no such switches.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1
"""``mallopt`` parameter: free memory at the top of the heap above this is returned to the kernel."""
M_MMAP_MAX = -4
"""``mallopt`` parameter: the most allocations served by ``mmap`` at once."""
NEVER_TRIM = -1
"""``M_TRIM_THRESHOLD`` value that disables trimming (stored by glibc as ``SIZE_MAX``)."""
KEEP_MALLOC_ENV = "DIFFWORLD_KEEP_MALLOC"
"""Set to ``1`` to keep glibc's default allocator settings."""

_configured = False


def uses_glibc() -> bool:
    """True on Linux when the C library is glibc."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def configure_malloc() -> bool:
    """Set ``M_MMAP_MAX`` = 0 and ``M_TRIM_THRESHOLD`` = never for this process (see the module docstring).

    Returns True when both settings are in force (now or from an earlier call), False where they do not
    apply (not glibc, ``DIFFWORLD_KEEP_MALLOC=1``) or where ``mallopt`` refused them.
    """
    global _configured
    if _configured:
        return True
    if os.environ.get(KEEP_MALLOC_ENV, "") not in ("", "0") or not uses_glibc():
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own C library, the one Python and torch allocate from
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    _configured = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    return _configured
