"""Run folders for tests that need one but no training: a smoke run of Catch up to its first checkpoint, and
a process that holds a run folder's writer lock (a live run, as far as readers can tell)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from diffworld.config import build_config
from diffworld.run.folder import unlock_run_dir

HOLD = """
import sys, time
from pathlib import Path
from diffworld.run.folder import lock_run_dir
lock_run_dir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def new_run(path: Path, *overrides: str) -> Path:
    """A run folder as a Trainer leaves it once set up: config.yaml, an empty dataset, the first
    checkpoint (of an untrained agent). About a second on the smoke preset; the lock is given back."""
    from diffworld.agent.trainer import Trainer

    cfg = build_config(["game=Catch", "preset=smoke", f"run_dir={path}", *overrides])
    trainer = Trainer(cfg, path)
    trainer.logger.close()
    trainer.train_envs.close()
    trainer.test_envs.close()
    unlock_run_dir(path)
    return path


def start_holder(path: Path) -> subprocess.Popen[str]:
    """Another process holding the writer lock of ``path`` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and modification time: equal snapshots, nothing written."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
