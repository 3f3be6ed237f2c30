"""How fast can this machine run the paper's networks at all? FLOPs against the convolution throughput.

Counts the floating-point operations of one batched denoiser call, one denoiser training step and one
reward/termination training step at the paper's settings (``torch.utils.flop_counter``: convolutions and
matrix products, forward and backward), and measures the throughput oneDNN reaches on this machine on the
convolution that dominates them (64 to 64 channels, 3x3, 64x64, batch 32, channels-last). FLOPs divided by
that throughput is the time the arithmetic alone needs: no implementation of the same float32 networks
runs faster than that, whatever it removes around the convolutions.

    python benchmarks/arithmetic_floor.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from diffworld.config import build_config
from diffworld.config.loading import reward_model_seq_length
from diffworld.data.batch import Batch
from diffworld.models.diffusion.edm import EDMDenoiser
from diffworld.models.reward_termination import RewardTerminationModel
from diffworld.utils.malloc import configure_malloc

BATCH = 32
SIZE = 64
NUM_ACTIONS = 4


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def random_batch(steps: int) -> Batch:
    gen = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (BATCH, steps + 1, 3, SIZE, SIZE), generator=gen) / 127.5 - 1
    act = torch.randint(NUM_ACTIONS, (BATCH, steps), generator=gen)
    zeros = torch.zeros(BATCH, steps)
    return Batch.of_steps(
        obs, act, zeros, zeros.bool(), zeros.bool(), torch.ones(BATCH, steps, dtype=torch.bool)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    configure_malloc()
    torch.manual_seed(0)
    cfg = build_config(["preset=atari100k", "game=Breakout"])

    x = torch.randn(BATCH, 64, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(64, 64, 3, 3)
    conv_flops = 2 * 9 * 64 * 64 * SIZE * SIZE * BATCH
    with torch.no_grad():
        conv_seconds = median_seconds(lambda: F.conv2d(x, weight, padding=1), args.repeats)
    throughput = conv_flops / conv_seconds

    denoiser = EDMDenoiser(cfg.denoiser, NUM_ACTIONS)
    num_cond = cfg.denoiser.num_cond_frames
    segment = random_batch(num_cond + cfg.denoiser.training.num_autoregressive_steps - 1)
    prev_obs, prev_act = segment.obs[:, :num_cond], segment.act[:, :num_cond]
    noisy = torch.randn(BATCH, 3, SIZE, SIZE)
    sigma = torch.full((BATCH,), 1.0)

    def denoiser_call() -> None:
        with torch.no_grad():
            denoiser.denoise(noisy, sigma, prev_obs, prev_act)

    def denoiser_step() -> None:
        denoiser(segment)[0].backward()

    reward_model = RewardTerminationModel(cfg.reward_model, NUM_ACTIONS)
    reward_segment = random_batch(reward_model_seq_length(cfg))

    def reward_step() -> None:
        reward_model(reward_segment)[0].backward()

    parts = {"denoiser call": denoiser_call, "denoiser step": denoiser_step, "reward step": reward_step}
    measured: dict[str, dict[str, float]] = {}
    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "conv_64x64x3x3_b32_gflops_per_s": throughput / 1e9,
        "parts": measured,
    }
    print(f"oneDNN 3x3 convolution, 64 channels, 64x64, batch 32: {throughput / 1e9:.0f} GFLOP/s")
    for name, fn in parts.items():
        flops = count_flops(fn)
        seconds = median_seconds(fn, args.repeats)
        floor = flops / throughput
        measured[name] = {"gflop": flops / 1e9, "seconds": seconds, "floor_seconds": floor}
        print(f"{name:>14}: {flops / 1e9:6.0f} GFLOP, measured {seconds:5.2f} s, floor {floor:4.2f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
