"""``diffworld bench``: the speed and memory of every part of a run, at a preset's settings.

Everything is built by the trainer itself (``Trainer``, in a temporary run folder): the three models,
their losses, segment samplers, optimizers and the world-model environment the actor-critic learns in. A
dataset is first filled with real frames by the untrained policy (uniform: its heads are zero-initialized).
Then each part is timed, ``warmup`` untimed repetitions first, and the median of ``repeats`` timed ones kept:

- ``denoiser``, ``reward_model``, ``actor_critic``: seconds per optimizer step of
  ``Trainer.train_model`` (sample a batch, loss, backward, clip, step): the denoiser on segments of L + 2
  frames (docs/method.md §3), the reward/termination model on segments of L + H steps, the actor-critic with
  its imagined rollout of H steps from L-frame segments;
- ``imagination``: rollouts of H steps of ``WorldModelEnv`` (reset with the reward model's burn-in, then H
  steps of denoising and reward/termination, restarts included) with uniformly random actions: imagined
  frames per second = B x H / median seconds per rollout; and the seconds of one batched denoiser call
  (one evaluation of D, or of the DDPM's noise prediction, on B frames);
- ``collection``: real environment steps per second with the policy in the loop (``Collector``), medians
  over chunks of ``collect_chunk`` steps;
- parameter counts of the three models;
- peak memory of each part and of the whole process: the resident-set high-water mark on the CPU
  (``VmHWM``, reset between parts through ``/proc/self/clear_refs`` where Linux allows it, else the
  process's ``ru_maxrss`` so far), ``torch.cuda.max_memory_allocated`` on a GPU; the process's peak is the
  highest of them, the collection of the dataset and the building of the models included.

The report (a table on stdout, and JSON) records the machine (CPU model, cores, torch threads, load
average before and after), the versions, the allocator settings (``diffworld.utils.malloc``) and the
settings measured (batch sizes, frame size, conditioning frames, denoising steps, horizon, segment lengths).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld import __version__
from diffworld.config import build_config
from diffworld.config.loading import reward_model_seq_length
from diffworld.config.schema import Config
from diffworld.models.reward_termination import RewardTerminationModel
from diffworld.utils.malloc import KEEP_MALLOC_ENV, configure_malloc

PARTS = ("denoiser", "reward_model", "actor_critic", "imagination", "collection")
"""What ``run_bench`` can time, in the order it times them."""
REPEATS = 5
"""Timed repetitions of each part by default (``diffworld bench --repeats``)."""
DEFAULT_OVERRIDES = ("preset=atari100k", "game=Breakout")
"""Breakout: a life loss ends a training episode, so the dataset holds complete episodes early on."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_calls(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; the seconds of each timed call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


class PeakMemory:
    """Peak memory of a part of the run: resident set on the CPU, allocated tensor memory on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.process_peak = 0
        """The highest peak seen: resetting VmHWM also resets ``ru_maxrss`` on Linux."""

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated"
        if _can_reset_rss_peak():
            return "resident set high-water mark (VmHWM, reset per part)"
        return "resident set high-water mark of the process so far (ru_maxrss)"

    def reset(self) -> None:
        self.read()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _can_reset_rss_peak():
            Path("/proc/self/clear_refs").write_text("5")  # resets the VmHWM high-water mark

    def read(self) -> int:
        """Bytes at the peak since the last ``reset``."""
        if self.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            hwm = _vm_hwm_bytes() if _can_reset_rss_peak() else None
            peak = hwm if hwm is not None else process_peak_rss_bytes()
        self.process_peak = max(self.process_peak, peak)
        return peak


def process_peak_rss_bytes() -> int:
    """The process's resident-set high-water mark since it started (``getrusage``'s ``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _vm_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_RSS_RESET: bool | None = None


def _can_reset_rss_peak() -> bool:
    global _RSS_RESET
    if _RSS_RESET is None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            _RSS_RESET = _vm_hwm_bytes() is not None
        except OSError:
            _RSS_RESET = False
    return _RSS_RESET


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model and cores, torch threads and versions (and the GPU where one is used)."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "diffworld": __version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def settings_info(cfg: Config, overrides: Sequence[str]) -> dict[str, Any]:
    """The settings that the figures depend on."""
    d, r, a = cfg.denoiser, cfg.reward_model, cfg.actor_critic
    return {
        "overrides": list(overrides),
        "preset": cfg.preset,
        "game": cfg.game,
        "frame_size": cfg.env.size,
        "num_cond_frames": d.num_cond_frames,
        "diffusion": str(getattr(d.kind, "value", d.kind)),
        "denoising_steps": d.sampler.num_steps,
        "sampler_order": d.sampler.order,
        "precision": str(getattr(cfg.training.precision, "value", cfg.training.precision)),
        "imagination_horizon": a.imagination_horizon,
        "batch_size": {
            "denoiser": d.training.batch_size,
            "reward_model": r.training.batch_size,
            "actor_critic": a.training.batch_size,
        },
        "segment_frames": {
            "denoiser": d.num_cond_frames + d.training.num_autoregressive_steps,
            "reward_model": reward_model_seq_length(cfg) + 1,
            "actor_critic": d.num_cond_frames,
        },
        "grad_acc_steps": {
            "denoiser": d.training.grad_acc_steps,
            "reward_model": r.training.grad_acc_steps,
            "actor_critic": a.training.grad_acc_steps,
        },
        "num_train_envs": cfg.env.num_train_envs,
    }


def run_bench(
    overrides: Sequence[str] = DEFAULT_OVERRIDES,
    *,
    device: str = "auto",
    repeats: int = REPEATS,
    warmup: int = 2,
    collect: int = 1000,
    collect_chunk: int = 200,
    parts: Sequence[str] = PARTS,
    keep_terminations: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time the parts of a run at the settings of ``overrides`` (``key=value``, as for ``diffworld train``;
    ``preset=atari100k`` and ``game=Breakout`` unless given) and return the report (see the module doc).

    The untrained termination model ends about half of the imagined steps, and each ending restarts the
    trajectory from a new dataset segment (reward-model and actor-critic burn-in on it); a trained one, as
    in a run after its first epoch, ends them rarely. So, while the actor-critic and the imagination are
    timed, imagined trajectories are never ended by it (only by the horizon) unless ``keep_terminations``.
    """
    from diffworld.agent.trainer import Trainer

    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose among {', '.join(PARTS)}")
    if repeats < 1 or warmup < 0 or collect < 1 or collect_chunk < 1:
        raise ValueError("repeats, collect and collect_chunk must be >= 1, warmup >= 0")
    allocator = configure_malloc()
    given = {o.split("=", 1)[0] for o in overrides}
    args = [o for o in DEFAULT_OVERRIDES if o.split("=", 1)[0] not in given]
    args += [*overrides, "logging.tensorboard=false", "logging.video_steps=0", f"device={device}"]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    with tempfile.TemporaryDirectory(prefix="diffworld_bench_") as tmp:
        cfg = build_config([*args, f"run_dir={tmp}/run"])
        trainer = Trainer(cfg, Path(tmp) / "run")
        dev = trainer.device
        memory = PeakMemory(dev)
        torch.manual_seed(cfg.seed)
        n_envs = trainer.train_envs.num_envs
        chunk = max(n_envs, collect_chunk // n_envs * n_envs)
        report: dict[str, Any] = {
            "machine": machine_info(dev),
            "settings": settings_info(cfg, overrides),
            "allocator": {
                "mallopt_configured": allocator,
                KEEP_MALLOC_ENV: os.environ.get(KEEP_MALLOC_ENV),
                "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
            },
            # "steps": the repeats, under the key the reports have always had.
            "timing": {"steps": repeats, "warmup": warmup, "statistic": "median"},
            "imagined_terminations": "untrained model" if keep_terminations else "none (horizon only)",
            "parameters": trainer.agent.parameter_counts(),
            "memory_kind": memory.kind,
            "results": {},
        }
        results: dict[str, dict[str, Any]] = report["results"]

        def imagined_ends() -> contextlib.AbstractContextManager[None]:
            if keep_terminations:
                return contextlib.nullcontext()
            return never_terminating(trainer.agent.reward_model)

        try:
            # A dataset of real frames (the running episodes' steps are stored too).
            t0 = time.perf_counter()
            trainer.collector.collect_steps(max(n_envs, collect // n_envs * n_envs))
            while trainer.dataset.num_episodes < 2:
                trainer.collector.collect_steps(chunk)
            log(
                f"dataset: {trainer.dataset.num_steps} steps in {trainer.dataset.num_episodes} episodes "
                f"({time.perf_counter() - t0:.1f} s)"
            )
            for name in ("denoiser", "reward_model", "actor_critic"):
                if name in parts:
                    log(f"timing {name} ...")
                    memory.reset()
                    with (
                        contextlib.redirect_stderr(io.StringIO()),  # the trainer's progress bars
                        imagined_ends() if name == "actor_critic" else contextlib.nullcontext(),
                    ):
                        times = timed_calls(partial(trainer.train_model, name, 1), repeats, warmup, dev)
                    results[name] = {
                        "seconds_per_step": statistics.median(times),
                        "times": times,
                        "peak_memory_bytes": memory.read(),
                    }
            if "imagination" in parts:
                log("timing imagination ...")
                memory.reset()
                with imagined_ends():
                    results["imagination"] = _bench_imagination(trainer, cfg, repeats, warmup)
                results["imagination"]["peak_memory_bytes"] = memory.read()
            if "collection" in parts:
                log("timing collection ...")
                memory.reset()
                times = timed_calls(lambda: trainer.collector.collect_steps(chunk), repeats, warmup, dev)
                results["collection"] = {
                    "steps_per_second": chunk / statistics.median(times),
                    "chunk_steps": chunk,
                    "times": times,
                    "peak_memory_bytes": memory.read(),
                }
        finally:
            trainer.train_envs.close()
            trainer.test_envs.close()
            trainer.logger.close()
    memory.read()
    report["peak_memory_bytes"] = memory.process_peak
    if dev.type == "cuda":
        report["process_peak_rss_bytes"] = process_peak_rss_bytes()
    report["load_average_1min"] = {
        "before": load_before,
        "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    return report


@contextlib.contextmanager
def never_terminating(reward_model: RewardTerminationModel) -> Iterator[None]:
    """Inside, ``reward_model.predict`` says that no step terminates (its termination logits become
    (0, -1e4)); its reward logits and LSTM state are its own."""
    predict = reward_model.predict

    def never_end(*args: Any, **kwargs: Any) -> Any:
        logits_rew, logits_end, state = predict(*args, **kwargs)
        never = torch.zeros_like(logits_end)
        never[..., 1] = -1e4
        return logits_rew, never, state

    reward_model.predict = never_end  # type: ignore[method-assign]  # in front of the class's method
    try:
        yield
    finally:
        del reward_model.predict


@torch.no_grad()
def _bench_imagination(trainer: Any, cfg: Config, repeats: int, warmup: int) -> dict[str, Any]:
    """Rollouts of H steps in the world model with random actions (uniform indices, or vectors uniform in
    [-1, 1]^D for continuous actions), and one batched denoiser call."""
    from diffworld.models.diffusion import EDMDenoiser

    trainer.agent.eval()
    ac_loss = trainer.slots["actor_critic"].model
    env = ac_loss.env  # the trainer's WorldModelEnv
    dev = trainer.device
    horizon = cfg.actor_critic.imagination_horizon
    b = env.num_envs
    gen = torch.Generator(dev).manual_seed(cfg.seed)
    continuous = trainer.agent.continuous

    def random_actions() -> torch.Tensor:
        if continuous:
            return torch.rand(b, trainer.num_actions, generator=gen, device=dev) * 2 - 1
        return torch.randint(trainer.num_actions, (b,), generator=gen, device=dev)

    def rollout() -> None:
        env.reset()
        for _ in range(horizon):
            env.step(random_actions())

    with trainer.autocast():
        rollout_times = timed_calls(rollout, repeats, warmup, dev)
    batch = env.segments.sample()
    # (B, L) indices or (B, L, D) vectors, the last slot the action to come (as WorldModelEnv.reset does).
    obs = batch.obs
    act = torch.zeros(b, env.num_cond, *batch.act.shape[2:], dtype=batch.act.dtype, device=dev)
    act[:, :-1] = batch.act
    denoiser = trainer.agent.denoiser
    x = torch.randn(obs[:, -1].shape, generator=gen, device=dev)
    if isinstance(denoiser, EDMDenoiser):
        sigma = denoiser.sampler(env.sampler_cfg).sigmas[:1].expand(b)

        def call() -> torch.Tensor:
            return denoiser.denoise(x, sigma, obs, act)
    else:
        t = torch.full((b,), cfg.denoiser.ddpm_num_train_timesteps - 1, dtype=torch.long, device=dev)

        def call() -> torch.Tensor:
            return denoiser.predict_epsilon(x, t, obs, act)

    with trainer.autocast():
        call_times = timed_calls(call, max(repeats, 3), max(warmup, 1), dev)
    rollout_s = statistics.median(rollout_times)
    return {
        "frames_per_second": b * horizon / rollout_s,
        "seconds_per_rollout": rollout_s,
        "batch_size": b,
        "horizon": horizon,
        "times": rollout_times,
        "denoiser_call_seconds": statistics.median(call_times),
        "denoiser_call_times": call_times,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    r = report["results"]
    rows = []

    def mem(part: dict[str, Any]) -> str:
        return f"{part['peak_memory_bytes'] / 2**30:.2f} GiB"

    for name, label in (
        ("denoiser", "denoiser step"),
        ("reward_model", "reward/termination step"),
        ("actor_critic", "actor-critic step (imagination incl.)"),
    ):
        if name in r:
            rows.append((label, f"{r[name]['seconds_per_step']:.3f} s", mem(r[name])))
    if "imagination" in r:
        im = r["imagination"]
        rows.append(
            (
                f"imagination (B={im['batch_size']}, H={im['horizon']})",
                f"{im['frames_per_second']:.1f} frames/s",
                mem(im),
            )
        )
        rows.append(("one batched denoiser call", f"{im['denoiser_call_seconds'] * 1000:.1f} ms", ""))
    if "collection" in r:
        rows.append(
            (
                "collection (policy in the loop)",
                f"{r['collection']['steps_per_second']:.0f} steps/s",
                mem(r["collection"]),
            )
        )
    for name, count in report["parameters"].items():
        rows.append((f"parameters, {name.replace('_', ' ')}", f"{count / 1e6:.2f} M", ""))
    rows.append(("peak memory (process)", f"{report['peak_memory_bytes'] / 2**30:.2f} GiB", ""))
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    m, s = report["machine"], report["settings"]
    header = (
        f"{s['preset']} / {s['game']} ({s['precision']}) on {m['device']} ({m['cpu_model']}, "
        f"{m['cpus_available']} CPUs, {m['torch_threads']} torch threads, torch {m['torch']}); "
        f"median of {report['timing']['steps']} "
        f"after {report['timing']['warmup']} warm-up; peak memory: {report['memory_kind']}"
    )
    lines = [header]
    lines += [f"  {a:<{width[0]}}  {b:>{width[1]}}  {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines)


def write_bench_json(report: dict[str, Any], path: Path) -> None:
    """The bench's report as the JSON file ``path`` (``diffworld bench --json``; strict JSON)."""
    from diffworld.utils.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")
