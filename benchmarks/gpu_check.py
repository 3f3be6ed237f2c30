"""The GPU check: what one lent GPU should measure, in one command of at most 9 minutes on an H100.

Run it through ``benchmarks/gpu_check.sh``, which makes the project importable on a machine where it is not
installed (see there). Stages, in this order, each with its own time limit; a stage that fails or runs out
of time is recorded (status, error, its output's tail) and the next one runs:

1. ``tests``: ``tests/test_device.py`` with ``DIFFWORLD_TEST_DEVICE=cuda`` (the three models against the
   CPU, their losses, sampling, bfloat16 autocast, imagination, and a whole smoke run and ``diffworld eval``
   on the GPU), then the default suite in the time left (its runs of the trainer pick the GPU themselves:
   their device is ``auto``), in parallel where pytest-xdist is installed;
2. ``bench_fp32``, ``bench_bf16``: ``diffworld bench`` at the paper's settings (Breakout, as the CPU figures
   in ``benchmarks/results``), in float32 and with ``training.precision=bf16``;
3. ``projection``: the hours of a whole Atari 100k run from each bench and the paper's schedule, computed
   from the configuration (``diffworld.agent.projection``);
4. ``train``: ``diffworld train preset=gpu game=Boxing``, its ``collection.total_env_steps`` fitted from the
   float32 bench to the stage's time (``agent.projection.fit_total_env_steps``), then its test returns
   and final evaluation, or ``diffworld eval`` of its last checkpoint when time ran out; the projected and
   the measured seconds of the run side by side (a check of the projection).

torch.compile is not timed: ``diffworld bench`` has no option for it, and compiling the U-Net's forward and
backward passes would take minutes of this budget.

Writes ``gpu_check.json`` (every figure; rewritten after each stage), ``gpu_check.log`` (every command's
output) and ``train_metrics.jsonl`` under ``--out``: ``$OUT`` where it is set (the device tool brings back
what is written there), else ``benchmarks/results/gpu_check/``. A summary is printed at the end.

``--dry-run``: the same stages and code paths on the CPU with tiny settings (the ``smoke`` preset, one torch
thread per process), in a few minutes, into a temporary folder unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STAGES = ("tests", "bench_fp32", "bench_bf16", "projection", "train")
TEST_DEVICE_ENV = "DIFFWORLD_TEST_DEVICE"
SETUP_ENV = "GPU_CHECK_SETUP"
"""What ``gpu_check.sh`` did to make the project importable (recorded in the JSON)."""


@dataclass
class Settings:
    device: str
    device_tests: list[str]
    suite: list[str]
    bench_overrides: list[str]
    bench_args: list[str]
    train_overrides: list[str]
    eval_episodes: int
    limits: dict[str, float]
    """Seconds each stage may take."""
    budget: float
    """Seconds the whole check may take: a stage gets at most what is left of it."""
    train_startup: float
    """Seconds a training process spends outside its schedule (imports, CUDA, environments)."""
    eval_reserve: float
    """Seconds of the train stage kept for ``diffworld eval`` when the run is cut short."""
    test_episode_steps: int = 1_800
    """Steps per test episode in the projections (a Boxing bout: about 1,800)."""
    env: dict[str, str] = field(default_factory=dict)


GPU = Settings(
    device="cuda",
    device_tests=["tests/test_device.py"],
    suite=["tests", "--ignore=tests/test_device.py", "--maxfail=25"],
    bench_overrides=["preset=atari100k", "game=Breakout"],
    bench_args=["--repeats", "5", "--warmup", "2", "--collect", "1000"],
    train_overrides=["preset=gpu", "game=Boxing", "seed=0"],
    eval_episodes=4,
    # The train stage takes what the others leave of the budget, up to 330 s: 280 s when they all run to
    # their limits (tests 75, benches 75 each, preflight about 10).
    limits={"tests": 75, "bench_fp32": 75, "bench_bf16": 75, "projection": 30, "train": 330},
    budget=515,
    train_startup=25,
    eval_reserve=35,
)
DRY_RUN = Settings(
    device="cpu",
    device_tests=["tests/test_device.py"],
    suite=["tests/test_projection.py", "tests/test_config.py"],
    bench_overrides=["preset=smoke", "game=Boxing"],
    bench_args=["--repeats", "1", "--warmup", "0", "--collect", "100"],
    # 200-step episodes, a test every 2 epochs: the dry run logs test returns too.
    train_overrides=[
        "preset=smoke",
        "game=Boxing",
        "seed=0",
        "env.max_frames_per_episode=800",
        "collection.total_env_steps=1000",
        "collection.test_every_epochs=2",
    ],
    eval_episodes=1,
    limits={"tests": 120, "bench_fp32": 90, "bench_bf16": 90, "projection": 30, "train": 150},
    budget=480,
    train_startup=10,
    eval_reserve=30,
    test_episode_steps=200,
    env={"OMP_NUM_THREADS": "1"},
)


class StageTimeout(Exception):
    pass


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise ``StageTimeout`` in this (main) thread after ``seconds``: the backstop of a stage's limit."""

    def ring(signum: int, frame: Any) -> None:
        raise StageTimeout(f"stage limit of {seconds:.0f} s reached")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class CommandResult:
    cmd: list[str]
    returncode: int | None
    seconds: float
    timed_out: bool
    output: str

    def record(self, tail_lines: int = 25) -> dict[str, Any]:
        lines = [line.rsplit("\r", 1)[-1] for line in self.output.splitlines()]
        return {
            "command": shlex.join(self.cmd),
            "returncode": self.returncode,
            "seconds": round(self.seconds, 2),
            "timed_out": self.timed_out,
            "output_tail": lines[-tail_lines:],
        }


class Check:
    def __init__(self, settings: Settings, out_dir: Path, work_dir: Path, dry_run: bool) -> None:
        self.s = settings
        self.out_dir = out_dir
        self.work_dir = work_dir
        self.dry_run = dry_run
        self.start = time.monotonic()
        self.log: IO[bytes] = open(out_dir / "gpu_check.log", "ab")  # noqa: SIM115  (closed in finish)
        self.report: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "dry_run": dry_run,
            "device": settings.device,
            "budget_seconds": settings.budget,
            "stage_limits_seconds": settings.limits,
            "settings": asdict(settings),
            "setup": os.environ.get(SETUP_ENV, ""),
            "machine": {},
            "stages": {},
            "notes": {
                "compile": "not timed: diffworld bench has no torch.compile option, and compiling the "
                "U-Net's forward and backward passes would take minutes of this budget",
            },
        }

    # ------------------------------------------------------------------------------------------ plumbing

    def left(self) -> float:
        return self.s.budget - (time.monotonic() - self.start)

    def say(self, text: str) -> None:
        line = f"[gpu_check {time.monotonic() - self.start:6.1f} s] {text}"
        print(line, flush=True)
        self.write_log(line + "\n")

    def write_log(self, text: str) -> None:
        self.log.write(text.encode())
        self.log.flush()

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.s.env)
        env.update({"PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "5", "MPLBACKEND": "Agg"})
        env.update(extra)
        return env

    def run(self, cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> CommandResult:
        """``cmd`` in the repository root, its output appended to the log; past ``timeout`` seconds it
        gets SIGINT, then SIGKILL 15 s later (its whole process group)."""
        self.write_log(f"\n$ {shlex.join(cmd)}   # limit {timeout:.0f} s\n")
        position = self.log.tell()
        start = time.monotonic()
        timed_out = False
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env or self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            stop(proc)
        finally:
            if proc.poll() is None:  # interrupted (the stage's alarm): nothing of it may outlive the stage
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        seconds = time.monotonic() - start
        self.log.flush()
        with open(self.log.name, "rb") as f:
            f.seek(position)
            output = f.read().decode(errors="replace")
        self.write_log(
            f"# exit {proc.returncode} after {seconds:.1f} s{' (time limit)' if timed_out else ''}\n"
        )
        return CommandResult(cmd, proc.returncode, seconds, timed_out, output)

    def save(self) -> None:
        self.report["wall_seconds"] = round(time.monotonic() - self.start, 1)
        path = self.out_dir / "gpu_check.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        tmp.replace(path)

    def stage(self, name: str, fn: Callable[[float], dict[str, Any]]) -> None:
        limit = min(self.s.limits[name], self.left())
        record: dict[str, Any] = {"limit_seconds": round(limit, 1)}
        self.report["stages"][name] = record
        if limit < 5:
            record.update(status="skipped", error="no time left in the budget")
            self.say(f"{name}: skipped (no time left)")
            self.save()
            return
        self.say(f"{name}: start (limit {limit:.0f} s)")
        start = time.monotonic()
        try:
            with alarm(limit + 45):  # subprocesses stop at their own limits (and 25 s of stopping) first
                record.update(fn(limit))
            record.setdefault("status", "ok")
        except Exception as error:
            record.update(status="timeout" if isinstance(error, StageTimeout) else "error")
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = traceback.format_exc().splitlines()[-8:]
        record["seconds"] = round(time.monotonic() - start, 1)
        self.say(f"{name}: {record['status']} in {record['seconds']:.0f} s")
        self.save()

    # ---------------------------------------------------------------------------------------- the stages

    def preflight(self) -> None:
        """Versions and the GPU, in a child process (a broken torch must not stop the check)."""
        code = (
            "import json, os, platform, importlib.metadata as m\n"
            "info = {'python': platform.python_version(), 'cpu_count': os.cpu_count()}\n"
            "try:\n"
            "    import torch\n"
            "    info.update(torch=torch.__version__, cuda_available=torch.cuda.is_available(),\n"
            "                torch_cuda=torch.version.cuda)\n"
            "except Exception as error:\n"
            "    info['torch_error'] = repr(error)\n"
            "if info.get('cuda_available'):\n"
            "    p = torch.cuda.get_device_properties(0)\n"
            "    info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),\n"
            "                capability=f'{p.major}.{p.minor}', multiprocessors=p.multi_processor_count,\n"
            "                cudnn=torch.backends.cudnn.version(),\n"
            "                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,\n"
            "                matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)\n"
            "for name in ('numpy', 'gymnasium', 'ale-py', 'omegaconf', 'opencv-python-headless',\n"
            "             'safetensors', 'tensorboard', 'tqdm', 'pytest', 'pytest-xdist'):\n"
            "    try:\n"
            "        info[name] = m.version(name)\n"
            "    except m.PackageNotFoundError:\n"
            "        info[name] = None\n"
            "print('PREFLIGHT ' + json.dumps(info))\n"
        )
        machine: dict[str, Any] = {"platform": platform.platform(), "python_executable": PY}
        result = self.run([PY, "-c", code], timeout=90)
        for line in result.output.splitlines():
            if line.startswith("PREFLIGHT "):
                machine.update(json.loads(line.removeprefix("PREFLIGHT ")))
        if "python" not in machine:
            machine["preflight_error"] = result.record()["output_tail"]
        if shutil.which("nvidia-smi"):
            query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
            smi = self.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], timeout=20)
            machine["nvidia_smi"] = smi.output.strip().splitlines()[-1:] if smi.returncode == 0 else None
        self.report["machine"] = machine
        self.save()
        gpu = machine.get("gpu", "no GPU")
        self.say(f"python {machine.get('python')}, torch {machine.get('torch')}, {gpu}")
        if self.s.device.startswith("cuda") and not machine.get("cuda_available"):
            self.say("WARNING: torch sees no CUDA device; the stages will record their errors")

    def tests(self, limit: float) -> dict[str, Any]:
        deadline = time.monotonic() + limit
        env = self.env(**{TEST_DEVICE_ENV: self.s.device})
        pytest = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        record: dict[str, Any] = {"device": self.s.device}
        device = self.run([*pytest, *self.s.device_tests], timeout=deadline - time.monotonic() - 5, env=env)
        record["device_tests"] = pytest_record(device)
        suite_args = list(self.s.suite)
        if importlib.util.find_spec("xdist") is not None:
            workers = max(1, min(8, (os.cpu_count() or 2) // 2))
            suite_args += ["-n", str(workers), "--dist", "loadfile"]
        left = deadline - time.monotonic() - 2
        if left < 10:
            record["suite"] = {"status": "skipped", "error": "no time left in the stage"}
        else:
            record["suite"] = pytest_record(self.run([*pytest, *suite_args], timeout=left, env=env))
        parts = (record["device_tests"], record["suite"])
        if any(p.get("status") == "timeout" for p in parts):
            record["status"] = "timeout"
        elif any(p.get("status") not in ("ok", "skipped") for p in parts):
            record["status"] = "failed"
        return record

    def bench(self, precision: str, limit: float) -> dict[str, Any]:
        path = self.work_dir / f"bench_{precision}.json"
        overrides = [*self.s.bench_overrides, f"training.precision={precision}"]
        cmd = [PY, "-m", "diffworld.cli", "bench", "--device", self.s.device, *self.s.bench_args]
        result = self.run([*cmd, "--json", str(path), *overrides], timeout=limit - 5)
        record: dict[str, Any] = {"overrides": overrides, "command": result.record()}
        if result.timed_out:
            record["status"] = "timeout"
        elif result.returncode != 0 or not path.is_file():
            record["status"] = "failed"
        else:
            report = json.loads(path.read_text())
            record["figures"] = bench_figures(report)
            record["report"] = report
        return record

    def bench_report(self, precision: str) -> dict[str, Any] | None:
        stage = self.report["stages"].get(f"bench_{precision}", {})
        return stage.get("report") if stage.get("status") == "ok" else None

    def projection(self, limit: float) -> dict[str, Any]:
        from diffworld.agent.projection import StepTimes, project_run_range
        from diffworld.config import build_config

        record: dict[str, Any] = {
            "overrides": self.s.bench_overrides,
            "test_episode_steps": self.s.test_episode_steps,
            "formula": "initial N0 + E_c x steps_per_epoch real steps at the bench's collection rate; "
            "per model (steps_first_epoch + (E - 1) x steps_per_epoch) x seconds per step; "
            "E = E_c + num_final_epochs, E_c = ceil((total_env_steps - N0) / steps_per_epoch); "
            "floor(E / test_every_epochs) x num_test_episodes test episodes and num_final_episodes final "
            "ones of test_episode_steps steps at the collection rate (diffworld/agent/projection.py)",
        }
        for precision in ("fp32", "bf16"):
            report = self.bench_report(precision)
            if report is None:
                record[precision] = {"error": f"no bench_{precision} figures"}
                continue
            cfg = build_config([*self.s.bench_overrides, f"training.precision={precision}"])
            record[precision] = project_run_range(
                cfg, StepTimes.from_bench(report), self.s.test_episode_steps
            )
        if all("error" in record[p] for p in ("fp32", "bf16")):
            record["status"] = "failed"
        return record

    def train(self, limit: float) -> dict[str, Any]:
        from diffworld.agent.projection import (
            StepTimes,
            fit_total_env_steps,
            initial_steps_bounds,
            project_run,
        )
        from diffworld.config import build_config

        deadline = time.monotonic() + limit
        run_dir = self.work_dir / "train_run"
        overrides = [*self.s.train_overrides, f"device={self.s.device}"]
        train_seconds = limit - self.s.eval_reserve
        record: dict[str, Any] = {"run_limit_seconds": round(train_seconds, 1)}
        bench = self.bench_report("fp32")
        if bench is not None:
            cfg = build_config(overrides)
            times = StepTimes.from_bench(bench)
            target = 0.8 * (train_seconds - self.s.train_startup)
            total = fit_total_env_steps(cfg, times, target, self.s.test_episode_steps)
            fitted_keys = ("collection.total_env_steps=", "collection.initial_max_steps=")
            overrides = [o for o in overrides if not o.startswith(fitted_keys)]
            overrides.append(f"collection.total_env_steps={total}")
            # The configuration requires initial_max_steps <= total_env_steps.
            initial_max = min(cfg.collection.initial_max_steps, total)
            overrides.append(f"collection.initial_max_steps={initial_max}")
            fitted = build_config(overrides)
            projected = project_run(fitted, times, initial_steps_bounds(fitted)[0], self.s.test_episode_steps)
            record["fit"] = {
                "target_seconds": round(target, 1),
                "total_env_steps": total,
                "projected_seconds": round(projected["total_seconds"], 1),
                "projected_schedule": projected["schedule"],
            }
        else:
            record["fit"] = {"error": "no bench_fp32 figures: the preset's own schedule"}
        record["overrides"] = overrides
        cmd = [PY, "-m", "diffworld.cli", "train", *overrides, f"run_dir={run_dir}"]
        result = self.run(cmd, timeout=train_seconds)
        record["command"] = result.record(tail_lines=8)
        record["finished"] = result.returncode == 0 and not result.timed_out
        record["run_seconds"] = round(result.seconds, 1)
        records = read_jsonl(run_dir / "metrics.jsonl")
        if (run_dir / "metrics.jsonl").is_file():
            shutil.copyfile(run_dir / "metrics.jsonl", self.out_dir / "train_metrics.jsonl")
        epochs = [r for r in records if "time/epoch_seconds" in r]
        record["epochs"] = len(epochs)
        record["env_steps"] = max((r.get("env_steps", 0) for r in records), default=0)
        record["test_returns"] = [
            {
                "epoch": r["epoch"],
                "env_steps": r["env_steps"],
                "mean": r["collection/test/return_mean"],
                "std": r.get("collection/test/return_std"),
                "episodes": r.get("collection/test/num_episodes"),
            }
            for r in records
            if "collection/test/return_mean" in r
        ]
        train_returns = [
            r["collection/train/return_mean"] for r in records if "collection/train/return_mean" in r
        ]
        record["train_returns_last"] = train_returns[-5:]
        record["seconds_per_part"] = {
            key.removeprefix("time/").removesuffix("_seconds"): round(sum(r.get(key, 0.0) for r in epochs), 1)
            for key in ("time/denoiser_seconds", "time/reward_model_seconds", "time/actor_critic_seconds")
        } | {"tests": round(sum(r.get("time/test_seconds", 0.0) for r in epochs), 1)}
        eval_path = run_dir / "eval.json"
        if not eval_path.is_file() and (run_dir / "checkpoints").is_dir():
            eval_path = self.work_dir / "eval.json"
            cmd = [PY, "-m", "diffworld.cli", "eval", str(run_dir), "--episodes", str(self.s.eval_episodes)]
            cmd += [
                "--num-envs",
                str(self.s.eval_episodes),
                "--device",
                self.s.device,
                "--out",
                str(eval_path),
            ]
            left = deadline - time.monotonic() - 3
            if left > 10:
                record["eval_command"] = self.run(cmd, timeout=left).record(tail_lines=8)
        if eval_path.is_file():
            ev = json.loads(eval_path.read_text())
            record["evaluation"] = {
                key: ev.get(key)
                for key in (
                    "mean",
                    "std",
                    "num_episodes",
                    "returns",
                    "hns",
                    "epoch",
                    "env_steps",
                    "train_wall_clock_seconds",
                    "eval_wall_clock_seconds",
                )
            }
            record["evaluation"]["of"] = "final evaluation" if record["finished"] else "last checkpoint"
        train_wall = record.get("evaluation", {}).get("train_wall_clock_seconds")
        if train_wall and "projected_seconds" in record["fit"]:
            record["fit"]["measured_train_seconds"] = round(train_wall, 1)
            record["fit"]["measured_over_projected"] = round(
                train_wall / record["fit"]["projected_seconds"], 3
            )
        if result.timed_out:
            record["status"] = "timeout"
            record["error"] = f"the run was stopped at its limit of {train_seconds:.0f} s"
        elif not record["finished"]:
            record["status"] = "failed"
            record["error"] = f"diffworld train exited with {result.returncode}"
        return record

    # ------------------------------------------------------------------------------------------- summary

    def summary(self) -> list[str]:
        st = self.report["stages"]
        m = self.report["machine"]
        lines = [
            f"GPU check{' (dry run)' if self.dry_run else ''} on {m.get('gpu', self.s.device)}, "
            f"torch {m.get('torch')}, {self.report.get('wall_seconds', 0):.0f} s; "
            f"results in {self.out_dir}"
        ]
        for name in STAGES:
            r = st.get(name, {})
            head = f"{name:<11} {r.get('status', 'not run'):<8} {r.get('seconds', 0):5.0f} s  "
            detail = r.get("error", "")
            if name == "tests" and "device_tests" in r:
                detail = f"device tests: {r['device_tests'].get('counts')}; suite: {r['suite'].get('counts')}"
                failures = r["device_tests"].get("failures", []) + r["suite"].get("failures", [])
                if failures:
                    detail += f"; {'; '.join(failures[:4])}"
            elif name.startswith("bench") and "figures" in r:
                f = r["figures"]
                detail = (
                    f"denoiser {f['denoiser_s']:.3f} s, reward {f['reward_model_s']:.3f} s, "
                    f"actor-critic {f['actor_critic_s']:.3f} s per step; imagination "
                    f"{f['imagination_frames_per_s']:.0f} frames/s; collection "
                    f"{f['collection_steps_per_s']:.0f} steps/s; peak {f['peak_memory_gib']:.2f} GiB"
                )
            elif name == "projection" and r.get("status") == "ok":
                parts = []
                for precision in ("fp32", "bf16"):
                    p = r.get(precision, {})
                    if "longest" in p:
                        parts.append(
                            f"{precision} {p['shortest']['hours']:.3g}-{p['longest']['hours']:.3g} h "
                            f"({p['longest']['schedule']['epochs']} epochs, "
                            f"{p['longest']['epoch_seconds']:.0f} s per epoch)"
                        )
                preset = next((o for o in self.s.bench_overrides if o.startswith("preset=")), "preset=?")
                detail = f"whole {preset.removeprefix('preset=')} run: {', '.join(parts)}"
            elif name == "train" and "epochs" in r:
                tests = ", ".join(f"{t['mean']:.1f}@{t['env_steps']}" for t in r["test_returns"]) or "none"
                ev = r.get("evaluation")
                final = (
                    f"{ev['of']}: {ev['mean']:.2f} +- {ev['std']:.2f} over {ev['num_episodes']}"
                    if ev
                    else "no evaluation"
                )
                fit = r.get("fit", {})
                timing = (
                    f"; run {r['run_seconds']:.0f} s (projected {fit['projected_seconds']:.0f} s)"
                    if "projected_seconds" in fit
                    else ""
                )
                detail = (
                    f"{r['epochs']} epochs, {r['env_steps']} env steps; test returns (mean@env steps) "
                    f"{tests}; {final}{timing}"
                )
                if r.get("status") not in (None, "ok") and "error" in r:
                    detail += f"; {r['error']}"
            lines.append(head + detail)
        return lines

    def finish(self) -> None:
        self.report["wall_seconds"] = round(time.monotonic() - self.start, 1)
        self.report["summary"] = self.summary()
        self.save()
        text = "\n".join(self.report["summary"])
        self.write_log("\n" + text + "\n")
        self.log.close()
        print("\n" + text, flush=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to ``proc``'s process group (the trainer closes its environments), SIGKILL 15 s later."""
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)\b")


def pytest_record(result: CommandResult) -> dict[str, Any]:
    """Counts from pytest's last summary line, and its FAILED/ERROR lines."""
    lines = [line.rsplit("\r", 1)[-1] for line in result.output.splitlines()]
    counts: dict[str, int] = {}
    for line in reversed(lines):
        found = PYTEST_COUNT.findall(line)
        if found and (" in " in line or line.startswith("=")):
            counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in found}
            break
    record = result.record(tail_lines=15)
    record["counts"] = counts
    record["failures"] = [line for line in lines if line.startswith(("FAILED ", "ERROR "))][:40]
    if result.timed_out:
        record["status"] = "timeout"
    elif result.returncode == 0:
        record["status"] = "ok"
    else:
        record["status"] = "failed"
    return record


def bench_figures(report: dict[str, Any]) -> dict[str, Any]:
    r = report["results"]
    return {
        "denoiser_s": r["denoiser"]["seconds_per_step"],
        "reward_model_s": r["reward_model"]["seconds_per_step"],
        "actor_critic_s": r["actor_critic"]["seconds_per_step"],
        "imagination_frames_per_s": r["imagination"]["frames_per_second"],
        "denoiser_call_ms": r["imagination"]["denoiser_call_seconds"] * 1000,
        "collection_steps_per_s": r["collection"]["steps_per_second"],
        "peak_memory_gib": report["peak_memory_bytes"] / 2**30,
        "precision": report["settings"]["precision"],
        "device": report["machine"].get("gpu", report["machine"]["device"]),
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny settings on the CPU")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: $OUT, else benchmarks/results/gpu_check)"
    )
    parser.add_argument(
        "--budget", type=float, help="seconds for the whole check (default: 515; dry run 480)"
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run")
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="STAGE=SECONDS",
        help="a stage's time limit (repeatable), e.g. --limit train=200",
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the working folder (bench JSON, run)")
    args = parser.parse_args(argv)

    settings = DRY_RUN if args.dry_run else GPU
    if args.budget is not None:
        settings.budget = args.budget
    for item in args.limit:
        stage, _, seconds = item.partition("=")
        if stage not in STAGES or not seconds:
            parser.error(f"--limit {item}: expected STAGE=SECONDS with STAGE in {', '.join(STAGES)}")
        settings.limits[stage] = float(seconds)
    if args.out is not None:
        out_dir = args.out
    elif args.dry_run:
        out_dir = Path(tempfile.gettempdir()) / "diffworld_gpu_check_dry_run"
    elif os.environ.get("OUT"):
        out_dir = Path(os.environ["OUT"])
    else:
        out_dir = ROOT / "benchmarks" / "results" / "gpu_check"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("gpu_check.json", "gpu_check.log", "train_metrics.jsonl"):
        (out_dir / name).unlink(missing_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="diffworld_gpu_check_"))
    check = Check(settings, out_dir, work_dir, args.dry_run)
    try:
        check.say(f"output in {out_dir}, working folder {work_dir}, budget {settings.budget:.0f} s")
        check.preflight()
        stages: dict[str, Callable[[float], dict[str, Any]]] = {
            "tests": check.tests,
            "bench_fp32": lambda limit: check.bench("fp32", limit),
            "bench_bf16": lambda limit: check.bench("bf16", limit),
            "projection": check.projection,
            "train": check.train,
        }
        for name in STAGES:
            if name in args.stages:
                check.stage(name, stages[name])
    finally:
        check.finish()
        if not args.keep_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
