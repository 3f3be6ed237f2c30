"""A training process killed with SIGKILL at any moment resumes and ends as an unbroken run does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from diffworld.data import EpisodeDataset, read_stored_episode
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.metrics_file import read_metrics

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


def _assert_same_datasets(run_dir: Path, expected_run_dir: Path) -> None:
    ours, theirs = (EpisodeDataset.load(d / "dataset" / "train") for d in (run_dir, expected_run_dir))
    assert ours.num_episodes == theirs.num_episodes and ours.num_steps == theirs.num_steps
    assert (ours.lengths == theirs.lengths).all() and ours.open_episode_ids == theirs.open_episode_ids
    assert (ours.frames == theirs.frames).all() and (ours.actions == theirs.actions).all()
    assert (ours.rewards == theirs.rewards).all() and (ours.terminated == theirs.terminated).all()


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "unbroken"
    assert _run(["train", *ARGS, f"run_dir={run_dir}"], kill_after=None) == 0
    return run_dir


@pytest.mark.parametrize("kill_times", [(4.0, 2.5, 3.0, 5.0)])
def test_sigkill_at_several_points_then_resume(
    tmp_path: Path, unbroken: Path, kill_times: tuple[float, ...]
) -> None:
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
    _assert_same_datasets(broken, unbroken)
    assert _comparable(broken) == _comparable(unbroken)


_KILLED_AT_SAVE = """
import os, signal, sys
from diffworld.cli import main
from diffworld.agent.trainer import Trainer
save, calls = Trainer._save_checkpoint, []
def killed_at_save(self):
    calls.append(None)
    if len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    save(self)
Trainer._save_checkpoint = killed_at_save
sys.exit(main())
"""


def _run_killed_at_save(args: list[str], n: int) -> None:
    """Run ``diffworld`` with ``args``; it SIGKILLs itself when about to save its ``n``-th checkpoint."""
    command = [sys.executable, "-c", _KILLED_AT_SAVE.format(n=n), *args]
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def _open_episode_grew_since_checkpoint(run_dir: Path) -> bool:
    """Whether an episode open at the last checkpoint has more steps on disk (it grew, or ended, since)."""
    state, _ = load_checkpoint(run_dir / "checkpoints")
    episode_ids = [i for i in state["collector"]["episode_ids"] if i is not None]
    lengths = state["dataset_lengths"]
    directory = run_dir / "dataset" / "train"
    return any(len(read_stored_episode(directory, i)) > lengths[i] for i in episode_ids)


def test_sigkill_while_an_episode_is_open_then_resume(tmp_path: Path, unbroken: Path) -> None:
    """Killed after a collection extended (or ended) the open episode, before the checkpoint: the resumed
    run drops those steps, collects them again, and ends as the unbroken run does."""
    broken = tmp_path / "broken"
    # Each run kills itself when about to save its 3rd checkpoint: the first in the initial collection, the
    # second (resumed from the first's 2nd) a few collections later.
    _run_killed_at_save(["train", *ARGS, f"run_dir={broken}"], n=3)
    grew = [_open_episode_grew_since_checkpoint(broken)]
    _run_killed_at_save(["train", "--resume", str(broken)], n=3)
    grew.append(_open_episode_grew_since_checkpoint(broken))
    assert _run(["train", "--resume", str(broken)], kill_after=None) == 0
    assert all(grew), "no kill landed after an open episode grew: choose other kill points"

    report, expected = (json.loads((d / "eval.json").read_text()) for d in (broken, unbroken))
    assert report["returns"] == expected["returns"] and report["env_steps"] == expected["env_steps"]
    _assert_same_datasets(broken, unbroken)
    assert _comparable(broken) == _comparable(unbroken)
    # Nothing lost: what the killed runs stored after their checkpoints was moved aside, whole files of
    # the episodes open at the checkpoints included.
    aside = list((broken / "dataset").glob("after_checkpoint_*/episode_*.npz"))
    assert len({path.parent for path in aside}) == 2


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path, unbroken: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(unbroken, run_dir)
    before = (run_dir / "eval.json").read_text(), _comparable(run_dir)
    time.sleep(0.01)
    assert _run(["train", "--resume", str(run_dir)], kill_after=None) == 0
    assert ((run_dir / "eval.json").read_text(), _comparable(run_dir)) == before


def test_run_stopped_before_its_first_checkpoint_starts_over(tmp_path: Path, unbroken: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(unbroken, broken)
    # What a kill between writing config.yaml and the first checkpoint leaves: no checkpoint at all.
    for name in ("state.pt", "state.backup.pt"):
        (broken / "checkpoints" / name).unlink()
    (broken / "eval.json").unlink()
    assert _run(["train", "--resume", str(broken)], kill_after=None) == 0
    assert list((broken / "dataset").glob("after_checkpoint_*/episode_*.npz"))  # moved aside, not deleted
    report, expected = (json.loads((d / "eval.json").read_text()) for d in (broken, unbroken))
    assert report["returns"] == expected["returns"] and report["env_steps"] == expected["env_steps"]
    assert _comparable(broken) == _comparable(unbroken)
