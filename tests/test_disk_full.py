"""Disk full: one line saying what was being written, the space it needs, that the previous checkpoint is
intact and how to resume; nothing replaced, no temporary file left. Simulated (ENOSPC from a write, torch's
``unexpected pos`` error, little free space) and, where the test can mount one, on a small file system."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import diffworld.run.checkpoint as checkpoint_module
import diffworld.utils.atomic as atomic_module
from diffworld.cli import main
from diffworld.run.checkpoint import BACKUP_FILE, STATE_FILE, load_checkpoint, save_checkpoint
from diffworld.run.folder import checkpoint_dir
from diffworld.utils.atomic import TEMP_SUFFIX, DiskFullError, atomic_write_bytes, is_disk_full
from run_helpers import new_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


def _state(i: int, size: int = 1000) -> dict[str, Any]:
    return {"i": i, "x": torch.full((size,), float(i))}


def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_short_write(obj: Any, file: Any) -> None:
    file.write(b"PK partial")  # some bytes went out before the device filled up
    try:
        _enospc()
    except OSError:
        raise RuntimeError(TORCH_SHORT_WRITE)  # noqa: B904 (torch's report, chained as the real one is)


def _torch_short_write_unchained(obj: Any, file: Any) -> None:
    raise RuntimeError(TORCH_SHORT_WRITE)  # as the C++ writer reports it when it writes to a path itself


def test_disk_full_errors_are_recognized() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(RuntimeError(TORCH_SHORT_WRITE))
    assert is_disk_full(
        RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed "
            "writing file data/0: file write failed"
        )
    )
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("CUDA out of memory"))


@pytest.mark.parametrize(
    "failure", [_torch_short_write, _torch_short_write_unchained], ids=["chained", "bare"]
)
def test_checkpoint_write_that_runs_out_of_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Any
) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    size = (tmp_path / STATE_FILE).stat().st_size
    monkeypatch.setattr(checkpoint_module.torch, "save", failure)
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(_state(3), tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert (
        "No space left" in message and "the checkpoint" in message and str(tmp_path / STATE_FILE) in message
    )
    assert f"needs about {atomic_module.format_bytes(size)}" in message
    assert f"the previous checkpoint, {tmp_path / STATE_FILE}, is intact" in message.lower()
    assert info.value.needed == size
    monkeypatch.undo()
    state, used = load_checkpoint(tmp_path)
    assert (state["i"], used.name) == (2, STATE_FILE)  # nothing replaced
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))
    assert (tmp_path / BACKUP_FILE).is_file()


def test_too_little_free_space_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(_state(1, size=100_000), tmp_path)
    size = (tmp_path / STATE_FILE).stat().st_size
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(atomic_module.shutil, "disk_usage", lambda _: usage._replace(free=size // 2))
    saved = []
    monkeypatch.setattr(checkpoint_module.torch, "save", lambda *a: saved.append(a))
    with pytest.raises(DiskFullError, match=f"needs about {atomic_module.format_bytes(size)}, .* free"):
        save_checkpoint(_state(2, size=100_000), tmp_path)
    assert not saved  # refused before anything was written
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_atomic_write_that_runs_out_of_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.safetensors"
    path.write_bytes(b"old")
    monkeypatch.setattr(atomic_module.os, "fsync", _enospc)
    with pytest.raises(DiskFullError) as info:
        atomic_write_bytes(path, b"new" * 1000, what="the agent's weights")
    message = str(info.value)
    assert "while writing the agent's weights" in message and "about 3 kB" in message
    assert f"{path} is unchanged" in message and "\n" not in message
    assert path.read_bytes() == b"old"
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))
    with pytest.raises(DiskFullError, match="Nothing was written at"):
        atomic_write_bytes(tmp_path / "new.bin", b"x")


def test_training_that_runs_out_of_space_ends_with_the_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = new_run(tmp_path / "run")
    first = (checkpoint_dir(run) / STATE_FILE).read_bytes()
    monkeypatch.setattr(checkpoint_module.torch, "save", _torch_short_write)
    # The resumed run collects its initial steps, then its first checkpoint fails.
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("diffworld train:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert "while writing the checkpoint" in line and "needs about" in line
    assert f"The last checkpoint, {checkpoint_dir(run) / STATE_FILE}, is intact" in line
    assert f"resume with 'diffworld train --resume {run}'" in line
    assert (checkpoint_dir(run) / STATE_FILE).read_bytes() == first
    monkeypatch.undo()
    assert load_checkpoint(checkpoint_dir(run), ("agent",))[0]["counters"]["phase"] == "initial"


SMALL_FS_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from diffworld.run.checkpoint import load_checkpoint, save_checkpoint
    from diffworld.utils.atomic import DiskFullError
    directory = sys.argv[1]
    save_checkpoint({"i": 1, "x": torch.zeros(1000)}, directory)
    try:
        save_checkpoint({"i": 2, "x": torch.zeros(1_000_000)}, directory)  # 4 MB on a 1 MB file system
    except DiskFullError as e:
        print("ERROR", e)
    state, used = load_checkpoint(directory)
    print("LOADED", state["i"], used.name)
    print("FILES", sorted(os.listdir(directory)))
    """
)


def test_checkpoint_on_a_real_full_file_system(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    script = tmp_path / "script.py"
    script.write_text(SMALL_FS_SCRIPT)
    # A 1 MB tmpfs in a user and mount namespace of its own: no privileges needed where the kernel allows.
    command = f"mount -t tmpfs -o size=1m tmpfs {mount} && {sys.executable} {script} {mount}"
    if shutil.which("unshare") is None:
        pytest.skip("no unshare command to mount a small file system")
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            f"mount -t tmpfs -o size=1m tmpfs {mount}",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({probe.stderr.strip()})")
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    error = next(line for line in result.stdout.splitlines() if line.startswith("ERROR"))
    assert "No space left" in error and "the previous checkpoint" in error.lower() and "is intact" in error
    assert "LOADED 1 state.pt" in result.stdout
    assert "FILES ['state.pt']" in result.stdout  # no temporary file left
    assert "Traceback" not in result.stderr


def test_other_writes_that_run_out_of_space_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import diffworld.viz.plots

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "curves.png"))

    monkeypatch.setattr(diffworld.viz.plots, "plot_runs", full)
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "curves.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"no space left on the device while writing {tmp_path / 'curves.png'}" in err
