"""Memory and speed of EpisodeDataset at Atari 100k scale (100k steps of 64x64x3 frames, 1.2 GB).

Reports the RSS increase (VmRSS) and peak increase (VmHWM) while filling the dataset, the time to add
(and, with --disk, compress and write atomically) the episodes, the time to sample a 32x20 batch, and with
--disk the time and memory to load the dataset back.

    python benchmarks/storage_memory.py [--disk] [--no-capacity-hint] [--json figures.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.data import Episode, EpisodeDataset, SegmentSampler
from diffworld.utils.atomic import atomic_write_text

FRAME_SHAPE = (64, 64, 3)
MIB = 2**20


def read_status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (reported there in kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS, so that each phase reports its own peak (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def make_frames(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Atari-like frames: flat background, moving sprites, sparse noise (compresses roughly like games)."""
    height, width, _ = FRAME_SHAPE
    frames = np.empty((num_frames, *FRAME_SHAPE), dtype=np.uint8)
    frames[:] = rng.integers(0, 256, size=3, dtype=np.uint8)
    time_index = np.arange(num_frames)[:, None, None]
    for _ in range(8):
        size = int(rng.integers(3, 9))
        start, velocity = rng.integers(0, 64, size=2), rng.integers(-2, 3, size=2)
        rows = (start[0] + velocity[0] * time_index + np.arange(size)[None, :, None]) % height
        cols = (start[1] + velocity[1] * time_index + np.arange(size)[None, None, :]) % width
        frames[time_index, rows, cols] = rng.integers(0, 256, size=3, dtype=np.uint8)
    noise = rng.integers(0, 100, size=frames.shape[:3], dtype=np.uint8) == 0  # 1% of pixels
    frames[noise] = rng.integers(0, 256, size=(int(noise.sum()), 3), dtype=np.uint8)
    return frames


def make_episodes(rng: np.random.Generator, num_steps: int, episode_length: int) -> Iterator[Episode]:
    for first_step in range(0, num_steps, episode_length):
        length = min(episode_length, num_steps - first_step)
        yield Episode(
            obs=make_frames(rng, length + 1),
            act=rng.integers(0, 18, size=length),
            rew=rng.choice(np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32), size=length),
            terminated=np.arange(length) == length - 1,
            truncated=np.zeros(length, dtype=bool),
        )


def fill(dataset: EpisodeDataset, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    gc.collect()
    rss_before = read_status_bytes("VmRSS")
    reset_peak_rss()
    add_seconds = 0.0
    for episode in make_episodes(rng, args.steps, args.episode_length):
        start = time.perf_counter()
        dataset.add(episode)
        add_seconds += time.perf_counter() - start
        del episode  # keep at most one generated episode alive, as a collector would
    return {
        "episodes": dataset.num_episodes,
        "steps": dataset.num_steps,
        "frames_mib": dataset.frames.nbytes / MIB,
        "add_seconds": add_seconds,
        "rss_increase_mib": (read_status_bytes("VmRSS") - rss_before) / MIB,
        "peak_rss_increase_mib": (read_status_bytes("VmHWM") - rss_before) / MIB,
    }


def time_sampling(dataset: EpisodeDataset, repeats: int = 50) -> dict[str, float]:
    sampler = SegmentSampler(dataset, batch_size=32, seq_length=20, rng=np.random.default_rng(0))
    sampler.sample()  # warm-up (allocator, torch kernels)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        sampler.sample()
        seconds.append(time.perf_counter() - start)
    # Median and best: on shared machines the mean mostly measures the neighbours.
    return {"sample_32x20_median_ms": np.median(seconds) * 1000, "sample_32x20_best_ms": min(seconds) * 1000}


def time_loading(directory: Path, capacity_steps: int) -> dict[str, float]:
    gc.collect()
    rss_before = read_status_bytes("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    dataset = EpisodeDataset.load(directory, capacity_steps=capacity_steps)
    seconds = time.perf_counter() - start
    figures = {
        "load_seconds": seconds,
        "load_rss_increase_mib": (read_status_bytes("VmRSS") - rss_before) / MIB,
        "load_peak_rss_increase_mib": (read_status_bytes("VmHWM") - rss_before) / MIB,
    }
    del dataset
    return figures


def run(args: argparse.Namespace, directory: Path | None) -> dict[str, Any]:
    capacity_steps = 0 if args.no_capacity_hint else args.steps
    figures: dict[str, Any] = {
        "disk": directory is not None,
        "capacity_hint": not args.no_capacity_hint,
        "torch_threads": torch.get_num_threads(),
    }
    dataset = EpisodeDataset(directory, frame_shape=FRAME_SHAPE, capacity_steps=capacity_steps)
    figures |= fill(dataset, args)
    figures |= time_sampling(dataset)
    if directory is not None:
        figures["disk_mib"] = sum(path.stat().st_size for path in directory.iterdir()) / MIB
        del dataset  # free the RAM copy so that loading is measured alone
        figures |= time_loading(directory, capacity_steps)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--episode-length", type=int, default=1000)
    parser.add_argument("--disk", action="store_true", help="also write the episodes to a temporary folder")
    parser.add_argument("--no-capacity-hint", action="store_true", help="grow by doubling, no preallocation")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()

    if args.disk:
        with tempfile.TemporaryDirectory(prefix="diffworld-storage-bench-") as tmp:
            figures = run(args, Path(tmp))
    else:
        figures = run(args, None)
    for name, value in figures.items():
        print(f"{name:>28}: {value:.3f}" if isinstance(value, float) else f"{name:>28}: {value}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
