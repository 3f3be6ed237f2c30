"""Time against peak memory of a float32 training step under glibc's allocator settings.

    python benchmarks/allocator_memory.py [--model reward_model denoiser] [--steps 4] [--json out.json]
        [--preset atari100k]

Each setting runs in a fresh process: a model of the paper's settings (batch 32; 19-step segments for the
reward/termination model, 6-frame segments for the denoiser) takes ``--steps`` training steps (loss,
backward, AdamW step) on a synthetic batch of the real shapes. Printed per setting: the seconds of every
step and the process's peak resident memory (``ru_maxrss``, which includes the Python runtime and torch).

The settings:

- ``diffworld``: what ``diffworld`` does by default (``diffworld.utils.malloc.configure_malloc``: no
  ``mmap``, never trim): freed memory stays in the heap and is reused;
- ``glibc-defaults``: large blocks are ``mmap``-ed and given back at every ``free``; the kernel clears the
  pages again when they are next touched;
- ``glibc-hugetlb``: the same with transparent huge pages for the heap (``glibc.malloc.hugetlb=1``), so
  there are fewer and cheaper page faults;
- ``mmap-above-32MiB+hugetlb``: blocks above 32 MiB (glibc's largest mmap threshold) are ``mmap``-ed, the
  rest stays in a never-trimmed heap.

The question it answers: the live tensors of the reward model's step peak near 4 GiB, yet with freed memory
kept (fast) the resident size grows past it, because glibc's heap fragments; given back (compact), every
step pays the kernel's clearing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SETTINGS: dict[str, dict[str, str]] = {
    "diffworld": {},
    "glibc-defaults": {"DIFFWORLD_KEEP_MALLOC": "1"},
    "glibc-hugetlb": {"DIFFWORLD_KEEP_MALLOC": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "mmap-above-32MiB+hugetlb": {
        "DIFFWORLD_KEEP_MALLOC": "1",
        "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736"
        ":glibc.malloc.hugetlb=1",
    },
}
"""Environment variables of each setting's process."""
SETTING_VARIABLES = ("GLIBC_TUNABLES", "DIFFWORLD_KEEP_MALLOC")
"""Not inherited from the caller's environment: each setting is exactly its own."""


def child(model_name: str, steps: int, preset: str) -> None:
    """Run in the setting's process: time ``steps`` training steps, print one JSON line."""
    from diffworld.utils.malloc import configure_malloc

    malloc_configured = configure_malloc()  # False where DIFFWORLD_KEEP_MALLOC=1
    import torch

    from diffworld.config import build_config
    from diffworld.config.loading import reward_model_seq_length
    from diffworld.data.batch import Batch
    from diffworld.fitting.optim import make_optimizer
    from diffworld.models.diffusion import make_denoiser
    from diffworld.models.reward_termination import RewardTerminationModel

    torch.manual_seed(0)
    cfg = build_config([f"preset={preset}", "game=Breakout"])
    num_actions = 4
    model: torch.nn.Module
    if model_name == "reward_model":
        model = RewardTerminationModel(cfg.reward_model, num_actions)
        num_steps, batch_size = reward_model_seq_length(cfg), cfg.reward_model.training.batch_size
        optim_cfg = cfg.reward_model.optimizer
    else:
        d = cfg.denoiser
        model = make_denoiser(d, num_actions)
        num_steps = d.num_cond_frames + d.training.num_autoregressive_steps - 1
        batch_size = d.training.batch_size
        optim_cfg = d.optimizer
    optimizer = make_optimizer(model, optim_cfg)
    b, t = batch_size, num_steps
    batch = Batch.of_steps(
        obs=torch.rand(b, t + 1, 3, cfg.env.size, cfg.env.size) * 2 - 1,
        act=torch.randint(0, num_actions, (b, t)),
        rew=torch.randint(-1, 2, (b, t)).float(),
        end=torch.zeros(b, t, dtype=torch.bool),
        trunc=torch.zeros(b, t, dtype=torch.bool),
        step_mask=torch.ones(b, t, dtype=torch.bool),
    )
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss, _ = model(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    report = {"seconds_per_step": times, "peak_rss_bytes": peak, "malloc_configured": malloc_configured}
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", nargs="+", default=["reward_model", "denoiser"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=4, help="training steps per setting (the first is slow)")
    parser.add_argument("--preset", default="atari100k", help="the settings of the models and batches")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.preset)
        return

    results = []
    for model_name in args.model:
        for name in args.settings:
            inherited = {k: v for k, v in os.environ.items() if k not in SETTING_VARIABLES}
            env = inherited | SETTINGS[name]
            cmd = [sys.executable, __file__, "--child", model_name, "--steps", str(args.steps)]
            cmd += ["--preset", args.preset]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results.append({"model": model_name, "setting": name, "env": SETTINGS[name], **result})
            times = " ".join(f"{s:.2f}" for s in result["seconds_per_step"])
            print(
                f"{model_name:>12}  {name:<26} peak {result['peak_rss_bytes'] / 2**30:5.2f} GiB"
                f"  seconds per step {times}",
                flush=True,
            )
    if args.json is not None:
        machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "libc": platform.libc_ver()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine, "preset": args.preset, "results": results}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
