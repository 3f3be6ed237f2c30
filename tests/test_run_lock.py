"""One writer per run folder: the lock refuses a second process, names the holder, dies with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffworld.run.folder import (
    LOCK_FILE,
    RunDirError,
    create_run_dir,
    is_run_dir_locked,
    lock_run_dir,
    unlock_run_dir,
)

HOLD = """
import sys, time
from pathlib import Path
from diffworld.run.folder import lock_run_dir
lock_run_dir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def start_holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_with_the_holders_name(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = start_holder(run)
    try:
        assert is_run_dir_locked(run)
        with pytest.raises(RunDirError, match=f"being written by process {holder.pid} on "):
            lock_run_dir(run)
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = start_holder(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    deadline = time.monotonic() + 10
    while is_run_dir_locked(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    lock_run_dir(run)  # no manual cleanup needed
    assert is_run_dir_locked(run)
    unlock_run_dir(run)
    assert not is_run_dir_locked(run)


def test_lock_is_reentrant_within_a_process_and_the_lock_file_does_not_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    lock_run_dir(run)
    lock_run_dir(run)
    assert (run / LOCK_FILE).is_file()
    create_run_dir(run)  # a folder holding only its lock file is still new
    unlock_run_dir(run)


def test_run_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        create_run_dir(path)
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        lock_run_dir(path)


def test_train_cli_refuses_a_live_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = start_holder(run)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "diffworld.cli", "train", "game=Pong", "preset=smoke", f"run_dir={run}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert f"being written by process {holder.pid}" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


def test_resume_of_a_live_run_is_refused_before_touching_it(tmp_path: Path) -> None:
    from diffworld.config import build_config
    from diffworld.config.loading import save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(build_config(["game=Pong", "preset=smoke"]), run / "config.yaml")
    (run / "dataset").mkdir()
    holder = start_holder(run)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "diffworld.cli", "train", "--resume", str(run)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"being written by process {holder.pid}" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == sorted([LOCK_FILE, "config.yaml", "dataset"])
