"""Sweeps: the plan, skipping and resuming runs, retries (without Ray), and a real sweep on local Ray."""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffworld.cli import main
from diffworld.cluster.plan import (
    RunSpec,
    RunState,
    SweepError,
    check_existing_runs,
    config_of,
    plan_sweep,
    run_state,
)
from diffworld.cluster.sweep import LOCK_FILE, RunCrashed, SweepOptions, run_sweep, sweep_finished
from diffworld.cluster.task import worker_file
from diffworld.config import ConfigError, save_config
from diffworld.errors import UserError
from diffworld.run.metrics_file import read_metrics


def test_plan(tmp_path: Path) -> None:
    plan = plan_sweep(["games=pong,[Breakout]", "seeds=2", "preset=smoke", f"sweep_dir={tmp_path / 's'}"])
    assert [run.name for run in plan.runs] == ["Pong_s0", "Pong_s1", "Breakout_s0", "Breakout_s1"]
    run = plan.runs[1]
    assert run.run_dir == tmp_path / "s" / "Pong_s1" and run.run_dir.is_absolute()
    assert run.overrides == ("preset=smoke", "game=Pong", "seed=1", f"run_dir={run.run_dir}")
    assert config_of(run).seed == 1 and config_of(run).game == "Pong"
    assert plan.total_env_steps == 300 and plan.logs_dir == tmp_path / "s" / "logs"

    everything = plan_sweep(["games=atari100k", "seeds=[3, 7]", f"sweep_dir={tmp_path}"])
    assert len(everything.runs) == 52 and {run.seed for run in everything.runs} == {3, 7}


def test_default_sweep_folder_is_found_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = plan_sweep(["games=Pong", "seeds=1", "preset=quick", "denoiser.optimizer.lr=1e-3"])
    more = plan_sweep(["games=Pong,Boxing", "seeds=3", "denoiser.optimizer.lr=1e-3", "preset=quick"])
    other = plan_sweep(["games=Pong", "seeds=1", "preset=quick", "denoiser.optimizer.lr=2e-3"])
    assert first.sweep_dir == more.sweep_dir != other.sweep_dir
    implicit, explicit = (
        plan_sweep(["games=Pong", "seeds=1"]),
        plan_sweep(["games=Pong", "seeds=1", "preset=atari100k"]),
    )
    assert implicit.sweep_dir == explicit.sweep_dir != first.sweep_dir
    assert first.sweep_dir.parent == tmp_path / "sweeps" and first.sweep_dir.name.startswith("quick_")


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["games=Pong", "seeds=1", "denoiser.optimizr.lr=1"], ConfigError, "denoiser.optimizer.lr"),
        (["games=Pong", "seeds=1", "game=Pong"], SweepError, "set by the sweep"),
        (["games=Pongg", "seeds=1"], SweepError, "Did you mean: Pong"),
        (["games=Pong", "seeds=0"], SweepError, "at least 1"),
        (["games=Pong", "seeds=two"], SweepError, "not a count"),
        (["seeds=2"], SweepError, "No games="),
    ],
)
def test_bad_sweeps_fail_before_anything_runs(args: list[str], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        plan_sweep(args)


def test_cli_rejects_a_typo_before_ray(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "games=Pong", "seeds=1", "preset=smok"]) == 2
    assert "Unknown preset 'smok'" in capsys.readouterr().err


def _finish(run: RunSpec, score: float = 0.0) -> None:
    """What a finished training leaves that the sweep and the report look at."""
    _start(run)
    eval_json = {"game": run.game, "seed": run.seed, "preset": "smoke", "mean": score, "env_steps": 300}
    (run.run_dir / "eval.json").write_text(json.dumps(eval_json))
    (run.run_dir / "agent").mkdir()
    (run.run_dir / "agent" / "agent.json").write_text("{}")


def _start(run: RunSpec) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config_of(run), run.run_dir / "config.yaml")


def test_run_states_and_changed_settings(tmp_path: Path) -> None:
    args = ["games=Pong,Breakout,Boxing", "seeds=1", "preset=smoke", f"sweep_dir={tmp_path}"]
    new, unfinished, finished = plan_sweep(args).runs
    _start(unfinished)
    _finish(finished)
    assert [run_state(r) for r in (new, unfinished, finished)] == [
        RunState.NEW,
        RunState.UNFINISHED,
        RunState.FINISHED,
    ]
    check_existing_runs([new, unfinished, finished])
    changed = plan_sweep([*args, "actor_critic.optimizer.lr=0.5"]).runs
    with pytest.raises(SweepError, match=r"actor_critic.optimizer.lr: 0.0001 there, 0.5 here"):
        check_existing_runs(changed)


class FakeExecutor:
    """Runs 'train' at once: each run's scripted outcomes, in order, then success (which finishes it)."""

    def __init__(self, outcomes: dict[str, list[RunCrashed]]) -> None:
        self.outcomes = outcomes
        self.submitted: list[tuple[str, str]] = []
        self.closed = False

    def submit(self, run: RunSpec, logs_dir: Path, token: str) -> object:
        self.submitted.append((run.name, token))
        logs_dir.mkdir(parents=True, exist_ok=True)
        worker_file(logs_dir, run).write_text(json.dumps({"pid": 1, "host": "h", "token": token}))
        return run

    def wait(self, handles: list[object], timeout: float) -> list[object]:
        return handles[:1]

    def result(self, handle: object) -> None:
        assert isinstance(handle, RunSpec)
        _start(handle)  # an attempt makes the run folder, finished or not
        script = self.outcomes.get(handle.name, [])
        if script:
            raise script.pop(0)
        _finish(handle, score=10.0)

    def close(self) -> None:
        self.closed = True


def test_retries_resume_and_user_errors_fail(tmp_path: Path) -> None:
    plan = plan_sweep(["games=Pong,Breakout,Boxing", "seeds=1", "preset=smoke", f"sweep_dir={tmp_path}"])
    _finish(plan.runs[0])
    executor = FakeExecutor(
        {
            "Breakout_s0": [RunCrashed("WorkerCrashedError: died", retryable=True)] * 2,
            "Boxing_s0": [RunCrashed("ConfigError: bad", retryable=False)],
        }
    )
    out = io.StringIO()
    statuses = run_sweep(plan, lambda: executor, SweepOptions(max_retries=3, refresh=0), out)
    assert [(s.run.name, s.state, s.attempt) for s in statuses] == [
        ("Pong_s0", "skipped", 0),
        ("Breakout_s0", "finished", 3),
        ("Boxing_s0", "failed", 1),
    ]
    assert [name for name, _ in executor.submitted] == [
        "Breakout_s0",
        "Boxing_s0",
        "Breakout_s0",
        "Breakout_s0",
    ]
    assert executor.closed and not sweep_finished(statuses)
    text = out.getvalue()
    assert "1 finished before, 0 to resume, 2 to start" in text
    assert "Boxing_s0: ConfigError: bad" in text and "run the same sweep command again" in text
    assert not (tmp_path / "report").exists()  # a report waits for every run

    # Retries exhausted: the run fails, the others go on.
    executor = FakeExecutor({"Boxing_s0": [RunCrashed("NodeDiedError: gone", retryable=True)] * 3})
    statuses = run_sweep(plan, lambda: executor, SweepOptions(max_retries=1, refresh=0), io.StringIO())
    assert [(s.state, s.attempt) for s in statuses][2] == ("failed", 2)

    # Then everything finishes, and the report is built.
    executor = FakeExecutor({})
    out = io.StringIO()
    statuses = run_sweep(plan, lambda: executor, SweepOptions(refresh=0, report_reps=20), out)
    assert sweep_finished(statuses) and [s.state for s in statuses] == ["skipped", "skipped", "finished"]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["num_games"] == 3 and len(report["runs"]) == 3
    assert "Human-normalized score: Mean" in out.getvalue()


def test_a_finished_sweep_starts_nothing(tmp_path: Path) -> None:
    plan = plan_sweep(["games=Pong", "seeds=2", "preset=smoke", f"sweep_dir={tmp_path}"])
    for run in plan.runs:
        _finish(run)

    def no_executor() -> FakeExecutor:
        raise AssertionError("a finished sweep must not start Ray")

    out = io.StringIO()
    statuses = run_sweep(plan, no_executor, SweepOptions(report_reps=None), out)
    assert [s.state for s in statuses] == ["skipped", "skipped"]
    assert "2 runs: 2 finished before" in out.getvalue() and "2 skipped" in out.getvalue()


def test_one_driver_per_sweep_folder(tmp_path: Path) -> None:
    plan = plan_sweep(["games=Pong", "seeds=1", "preset=smoke", f"sweep_dir={tmp_path}"])
    with (tmp_path / LOCK_FILE).open("a+") as other_driver:
        other_driver.write("pid 4242 on elsewhere")
        other_driver.flush()
        fcntl.flock(other_driver, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SweepError, match=r"Another sweep driver \(pid 4242 on elsewhere\)"):
            run_sweep(plan, lambda: FakeExecutor({}), SweepOptions(report_reps=None), io.StringIO())
    statuses = run_sweep(plan, lambda: FakeExecutor({}), SweepOptions(report_reps=None), io.StringIO())
    assert sweep_finished(statuses)


def test_ray_errors_become_retries_or_failures() -> None:
    ray = pytest.importorskip("ray")
    from diffworld.cluster.ray_backend import RayExecutor

    executor = RayExecutor.__new__(RayExecutor)  # only result() is under test: no cluster needed

    class Refs:
        def __init__(self, error: BaseException) -> None:
            self.error = error

    def get(handle: Refs) -> None:
        raise handle.error

    ray_module = type("FakeRay", (), {"get": staticmethod(get), "exceptions": ray.exceptions})
    executor._ray = ray_module
    crashed = ray.exceptions.WorkerCrashedError()
    with pytest.raises(RunCrashed) as info:
        executor.result(Refs(crashed))
    assert info.value.retryable and "WorkerCrashedError" in str(info.value)
    user = ray.exceptions.RayTaskError("train_run", "traceback", UserError("bad run folder"))
    with pytest.raises(RunCrashed) as info:
        executor.result(Refs(user))
    assert not info.value.retryable and "bad run folder" in str(info.value)
    bug = ray.exceptions.RayTaskError("train_run", "traceback", RuntimeError("CUDA error"))
    with pytest.raises(RunCrashed) as info:
        executor.result(Refs(bug))
    assert info.value.retryable


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from diffworld.cli import main; sys.exit(main())", *args]


def test_sweep_on_local_ray_survives_a_killed_worker(tmp_path: Path) -> None:
    """2 games x 1 seed of the smoke preset; one run's Ray worker is SIGKILLed midway and resumes."""
    pytest.importorskip("ray")
    sweep = tmp_path / "sweep"
    args = ["games=Breakout,MsPacman", "seeds=1", "preset=smoke", f"sweep_dir={sweep}"]
    options = ["--num-cpus", "2", "--refresh", "1", "--reps", "100", "--max-retries", "2"]
    victim = plan_sweep(args).runs[0]
    log = tmp_path / "sweep_output.txt"
    with log.open("w") as output:
        proc = subprocess.Popen(_command("sweep", *args, *options), stdout=output, stderr=subprocess.STDOUT)
    try:
        # Midway: the run has trained at least one epoch and is not finished.
        deadline = time.monotonic() + 900
        while not any(r["epoch"] >= 1 for r in read_metrics(victim.run_dir)):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the run never reached its first epoch"
            time.sleep(0.5)
        assert run_state(victim) is not RunState.FINISHED, "the run finished before the kill: kill earlier"
        worker = json.loads(worker_file(plan_sweep(args).logs_dir, victim).read_text())
        os.kill(worker["pid"], signal.SIGKILL)
        assert proc.wait(timeout=1200) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()

    plan = plan_sweep(args)
    for run in plan.runs:
        report = json.loads((run.run_dir / "eval.json").read_text())
        last = read_metrics(run.run_dir)[-1]
        assert report["game"] == run.game and report["env_steps"] == last["env_steps"] >= 300
        assert "evaluation/final/return_mean" in last
    resumed = json.loads(worker_file(plan.logs_dir, victim).read_text())
    assert resumed["pid"] != worker["pid"] and resumed["token"].endswith("-2")
    assert (plan.logs_dir / f"{victim.name}.log").read_text().count("=== ") == 2
    report = json.loads((sweep / "report" / "report.json").read_text())
    assert report["games"] == ["Breakout", "MsPacman"] and (sweep / "report" / "per_game_hns.png").is_file()
    output_text = log.read_text()
    assert "WorkerCrashedError" in output_text and "Human-normalized score: Mean" in output_text

    # The same command again skips both runs, without starting Ray.
    def no_executor() -> FakeExecutor:
        raise AssertionError("a finished sweep must not start Ray")

    statuses = run_sweep(plan, no_executor, SweepOptions(report_reps=None), io.StringIO())
    assert [s.state for s in statuses] == ["skipped", "skipped"]
