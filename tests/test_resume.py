"""A training process killed with SIGKILL at any moment resumes and ends as an unbroken run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from diffworld.data import EpisodeDataset
from diffworld.training.logger import read_metrics

ARGS = ["game=Breakout", "preset=smoke", "seed=2"]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from diffworld.cli import main; sys.exit(main())", *args]


def _run(args: list[str], kill_after: float | None) -> int | None:
    """Run ``diffworld`` with ``args``; SIGKILL it after ``kill_after`` seconds. None if it was killed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_command(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None
    if proc.returncode != 0:
        raise AssertionError(proc.stderr.read().decode() if proc.stderr else f"exit {proc.returncode}")
    return proc.returncode


def _comparable(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(run_dir)]


@pytest.mark.parametrize("kill_times", [(4.0, 2.5, 3.0, 5.0)])
def test_sigkill_at_several_points_then_resume(tmp_path: Path, kill_times: tuple[float, ...]) -> None:
    unbroken = tmp_path / "unbroken"
    assert _run(["train", *ARGS, f"run_dir={unbroken}"], kill_after=None) == 0

    broken = tmp_path / "broken"
    kills = 0
    result = _run(["train", *ARGS, f"run_dir={broken}"], kill_after=kill_times[0])
    kills += result is None
    for kill_after in (*kill_times[1:], None):
        if result is not None:
            break
        if not (broken / "config.yaml").exists():  # killed before the run folder was set up: start again
            result = _run(["train", *ARGS, f"run_dir={broken}"], kill_after=kill_after)
        else:
            result = _run(["train", "--resume", str(broken)], kill_after=kill_after)
        kills += result is None
    assert result == 0
    assert kills >= 2, "the kill times are too late to interrupt the smoke run: shorten them"

    # Same counters, same episodes, same metrics: the interruptions changed nothing.
    report, expected = (json.loads((d / "eval.json").read_text()) for d in (broken, unbroken))
    assert report["env_steps"] == expected["env_steps"]
    assert report["returns"] == expected["returns"]
    ours, theirs = (
        EpisodeDataset.load(broken / "dataset" / "train"),
        EpisodeDataset.load(unbroken / "dataset" / "train"),
    )
    assert ours.num_episodes == theirs.num_episodes and ours.num_steps == theirs.num_steps
    assert (ours.frames == theirs.frames).all() and (ours.actions == theirs.actions).all()
    assert _comparable(broken) == _comparable(unbroken)


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert _run(["train", *ARGS, f"run_dir={run_dir}"], kill_after=None) == 0
    before = (run_dir / "eval.json").read_text(), _comparable(run_dir)
    time.sleep(0.01)
    assert _run(["train", "--resume", str(run_dir)], kill_after=None) == 0
    assert ((run_dir / "eval.json").read_text(), _comparable(run_dir)) == before


def test_run_stopped_before_its_first_checkpoint_starts_over(tmp_path: Path) -> None:
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    for run_dir in (unbroken, broken):
        assert _run(["train", *ARGS, f"run_dir={run_dir}"], kill_after=None) == 0
    # What a kill between writing config.yaml and the first checkpoint leaves: no checkpoint at all.
    for name in ("state.pt", "state.backup.pt"):
        (broken / "checkpoints" / name).unlink()
    (broken / "eval.json").unlink()
    assert _run(["train", "--resume", str(broken)], kill_after=None) == 0
    assert list((broken / "dataset").glob("after_checkpoint_*/episode_*.npz"))  # moved aside, not deleted
    report, expected = (json.loads((d / "eval.json").read_text()) for d in (broken, unbroken))
    assert report["returns"] == expected["returns"] and report["env_steps"] == expected["env_steps"]
    assert _comparable(broken) == _comparable(unbroken)
