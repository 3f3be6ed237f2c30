"""Peak resident memory of the trainer's periodic test when the test episodes are long.

    python benchmarks/test_episode_memory.py [--game Krull] [--max-frames 16000] [--action LEFT]
        [--json out.json] [overrides ...]

A run of the ``quick`` preset (fresh weights, in a temporary folder) plays its test (``Trainer._test``: the
test episodes collected into a fresh dataset, the world model's test losses over all of them, reward
detection, the video) with a policy that repeats one action, so every episode lasts until the frame cap
(``--max-frames``, the game's frames; Krull repeating LEFT lasts to any cap below 108,000). The allocator is
set as the ``diffworld`` command sets it (``configure_malloc``). Printed after each phase: the process's
resident memory and its peak (VmRSS, VmHWM, in MiB), and the episodes' lengths; the peak per test step is
what to extrapolate to the 108,000-frame cap (27,000 steps per episode).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def memory_mib() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in MiB (Linux)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) // 1024
    return values


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--game", default="Krull")
    parser.add_argument("--max-frames", type=int, default=16_000)
    parser.add_argument("--action", default="LEFT", help="the action repeated, by its name in the game")
    parser.add_argument("--json", type=Path)
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args()

    from diffworld.utils.malloc import configure_malloc

    configure_malloc()
    import torch

    import diffworld.agent.trainer as trainer_module
    from diffworld.agent.trainer import Trainer
    from diffworld.config.loading import build_config

    cfg = build_config(
        [
            f"game={args.game}",
            "preset=quick",
            "device=cpu",
            f"env.max_frames_per_episode={args.max_frames}",
            *args.overrides,
        ]
    )
    phases: list[dict[str, Any]] = []
    clock = time.monotonic()

    def phase(name: str, **extra: Any) -> None:
        phases.append({"phase": name, "seconds": round(time.monotonic() - clock, 1), **memory_mib(), **extra})
        print(phases[-1], flush=True)

    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(cfg, Path(folder) / "run")
        action = trainer.test_envs.action_meanings.index(args.action)
        actor_critic = trainer.agent.actor_critic
        act = actor_critic.act

        def repeat_action(*a: Any, **k: Any) -> Any:
            actions, state = act(*a, **k)
            return torch.full_like(actions, action), state

        actor_critic.act = repeat_action  # type: ignore[method-assign]
        collect = trainer.test_collector.collect_episodes

        def collect_episodes(num_episodes: int) -> Any:
            stats = collect(num_episodes)
            phase("collected", lengths=[s.length for s in stats])
            return stats

        trainer.test_collector.collect_episodes = collect_episodes  # type: ignore[method-assign]
        detect = trainer_module.reward_detection

        def reward_detection(*a: Any, **k: Any) -> Any:
            phase("test losses")
            result = detect(*a, **k)
            phase("reward detection")
            return result

        trainer_module.reward_detection = reward_detection
        phase("start")
        metrics = trainer._test()
        phase("video")
        trainer.train_envs.close()
        trainer.test_envs.close()
    steps = sum(phases[1]["lengths"])
    summary = {
        "game": args.game,
        "max_frames": args.max_frames,
        "test_steps": steps,
        "peak_mib": phases[-1]["VmHWM"],
        "peak_growth_kib_per_step": round((phases[-1]["VmHWM"] - phases[0]["VmRSS"]) * 1024 / steps, 1),
        "phases": phases,
        "test_metrics": metrics,
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("phases", "test_metrics")}))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
