"""Seconds per training step of each model, and the projected seconds per epoch, for a preset.

Builds the three models and their losses exactly as a run does (``Trainer._build_slots``), fills a
dataset with real Atari frames from a uniform policy, times each model's optimizer steps (median over
``--steps`` after ``--warmup``), times collection of ``steps_per_epoch`` real steps, and projects:

    epoch = collection + sum over models of steps_per_epoch x seconds per step

Usage: python benchmarks/epoch_time.py preset=atari100k game=Boxing [--steps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from diffworld.agent.trainer import MODEL_NAMES, Trainer
from diffworld.config import build_config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", default=["preset=atari100k", "game=Boxing"])
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per model")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--collect", type=int, default=1000, help="real steps collected before timing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config([*args.overrides, f"run_dir={tmp}/run"])
        trainer = Trainer(cfg, Path(tmp) / "run")
        t0 = time.perf_counter()
        trainer.collector.collect_steps(args.collect)
        collect_seconds_per_step = (time.perf_counter() - t0) / args.collect

        seconds: dict[str, float] = {}
        for name in MODEL_NAMES:
            times = []
            for i in range(args.warmup + args.steps):
                t = time.perf_counter()
                trainer.train_model(name, 1)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t)
            seconds[name] = statistics.median(times)
        trainer.train_envs.close()
        trainer.test_envs.close()

    per_epoch = {name: getattr(cfg, name).training.steps_per_epoch * seconds[name] for name in MODEL_NAMES}
    collection = cfg.collection.steps_per_epoch * collect_seconds_per_step
    epoch_seconds = collection + sum(per_epoch.values())
    result = {
        "overrides": args.overrides,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds_per_step": seconds,
        "collection_seconds_per_env_step": collect_seconds_per_step,
        "epoch_seconds": epoch_seconds,
        "epoch_breakdown_seconds": {**per_epoch, "collection": collection},
    }
    for name in MODEL_NAMES:
        print(
            f"{name:>14}: {seconds[name]:8.3f} s/step  x {getattr(cfg, name).training.steps_per_epoch} steps"
        )
    print(f"{'collection':>14}: {collect_seconds_per_step * 1000:8.2f} ms/env step")
    print(f"projected epoch: {epoch_seconds:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
