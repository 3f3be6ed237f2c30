"""The allocator settings: applied on Linux with glibc, opt-out by environment, and freed memory is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffworld.utils.malloc import KEEP_MALLOC_ENV, configure_malloc, uses_glibc

glibc_only = pytest.mark.skipif(not uses_glibc(), reason="mallopt settings exist on Linux with glibc only")

# Allocates and frees 256 MiB with malloc, then prints whether the resident set kept it.
PROBE = textwrap.dedent(
    """
    import ctypes
    from diffworld.utils.malloc import configure_malloc

    def rss_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    configured = configure_malloc()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    before = rss_kib()
    size = 256 * 2**20
    p = libc.malloc(size)
    libc.memset(p, 1, size)
    libc.free(p)
    kept = rss_kib() - before > 200 * 1024
    print(configured, kept)
    """
)


def _probe(**env: str) -> tuple[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in (KEEP_MALLOC_ENV, "GLIBC_TUNABLES")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=environment | env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], out[1]


@glibc_only
def test_configure_malloc_applies() -> None:
    assert configure_malloc() is True
    assert configure_malloc() is True  # idempotent


@glibc_only
def test_freed_memory_is_kept_unless_opted_out() -> None:
    assert _probe() == ("True", "True")
    assert _probe(**{KEEP_MALLOC_ENV: "1"}) == ("False", "False")  # glibc's defaults: given back


@glibc_only
def test_allocator_benchmark_runs_each_setting_in_its_own_process(tmp_path: Path) -> None:
    out = tmp_path / "allocator.json"
    script = Path(__file__).parents[1] / "benchmarks" / "allocator_memory.py"
    cmd = [sys.executable, str(script), "--preset", "smoke", "--steps", "2", "--json", str(out)]
    cmd += ["--model", "reward_model", "--settings", "diffworld", "glibc-defaults"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    report = json.loads(out.read_text())
    assert report["preset"] == "smoke"
    by_setting = {r["setting"]: r for r in report["results"]}
    assert by_setting["diffworld"]["malloc_configured"] is True
    assert by_setting["glibc-defaults"]["malloc_configured"] is False
    for result in by_setting.values():
        assert len(result["seconds_per_step"]) == 2 and all(s > 0 for s in result["seconds_per_step"])
        assert result["peak_rss_bytes"] > 50 * 2**20  # at least the Python runtime and torch
