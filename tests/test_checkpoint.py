"""Training checkpoints: weights-only round trips, RNG restoration, backup fallback and crash safety."""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from diffworld.agent.run_folder import save_agent_copy
from diffworld.run import checkpoint
from diffworld.run.checkpoint import (
    BACKUP_FILE,
    STATE_FILE,
    CheckpointError,
    from_safe,
    generator_state,
    has_checkpoint,
    isolated_global_rng,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_generator_state,
    set_rng_state,
    to_safe,
)


def _training_objects() -> tuple[nn.Module, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 10))
    return model, opt, sched


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, x: torch.Tensor) -> None:
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()
    sched.step()


def _state(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "payload": torch.full((3,), float(epoch))}


def test_realistic_state_round_trip_with_weights_only(tmp_path: Path) -> None:
    model, opt, sched = _training_objects()
    x = torch.randn(5, 4)
    for _ in range(3):
        _train_step(model, opt, sched, x)
    rng = np.random.default_rng(123)
    arrays = {
        "u32": np.arange(7, dtype=np.uint32) * 600_000_000,
        "bool": np.array([[True, False], [False, True]]),
        "f16_strided": np.linspace(0, 1, 12, dtype=np.float16).reshape(3, 4)[:, ::2],
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3), dtype=np.int64),
        "big_endian": np.arange(3, dtype=">i4"),
    }
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": 7,
        "env_steps": 10_400,
        "huge": 2**100 + 1,
        "name": "Breakout",
        "blob": b"\x00\x01",
        "numpy_scalars": [np.int64(3), np.float32(0.5), np.bool_(True)],
        "arrays": arrays,
        "rng": rng_state(),
        "generator": generator_state(rng),
    }
    save_checkpoint(state, tmp_path)

    # The file itself needs nothing beyond weights-only loading.
    raw = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert raw["epoch"] == 7 and raw["huge"] == 2**100 + 1

    loaded, used = load_checkpoint(tmp_path, required_keys=["model", "optimizer", "scheduler"])
    assert used == tmp_path / STATE_FILE
    assert (loaded["epoch"], loaded["env_steps"], loaded["name"], loaded["blob"]) == (
        7,
        10_400,
        "Breakout",
        b"\0\1",
    )
    assert loaded["numpy_scalars"] == [3, 0.5, True]
    for key, array in arrays.items():
        assert loaded["arrays"][key].dtype == array.dtype, key
        np.testing.assert_array_equal(loaded["arrays"][key], array)
    assert loaded["arrays"]["u32"].flags.writeable
    assert loaded["model"]._metadata == state["model"]._metadata

    # Resuming from the checkpoint continues training exactly as the uninterrupted run does.
    model2, opt2, sched2 = _training_objects()
    model2.load_state_dict(loaded["model"])
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    for _ in range(2):
        _train_step(model, opt, sched, x)
        _train_step(model2, opt2, sched2, x)
    for p, p2 in zip(model.parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(p, p2, rtol=0, atol=0)
    assert sched.get_last_lr() == sched2.get_last_lr()


def test_rng_restore_reproduces_the_same_draws(tmp_path: Path) -> None:
    pcg = np.random.default_rng(2024)
    pcg.random(3)  # A used generator: its 128-bit state and increment exceed 64 bits.
    mt = np.random.Generator(np.random.MT19937(5))
    save_checkpoint({"rng": rng_state(), "pcg": generator_state(pcg), "mt": generator_state(mt)}, tmp_path)

    def draws() -> tuple[Any, ...]:
        return (
            [random.random() for _ in range(3)],
            np.random.rand(3).tolist(),
            torch.rand(3).tolist(),
            pcg.integers(0, 2**62, size=3).tolist(),
            mt.normal(size=3).tolist(),
        )

    expected = draws()
    state, _ = load_checkpoint(tmp_path)
    assert state["pcg"]["state"]["state"] > 2**64
    set_rng_state(state["rng"])
    set_generator_state(pcg, state["pcg"])
    set_generator_state(mt, state["mt"])
    assert draws() == expected


def test_isolated_global_rng_draws_its_own_and_leaves_the_global_streams_alone() -> None:
    def draws() -> tuple[Any, ...]:
        return random.random(), np.random.rand(2).tolist(), torch.rand(2).tolist()

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    before = rng_state()
    expected = draws()  # what follows when no block ran
    set_rng_state(before)
    inside = []
    for _ in range(2):
        with isolated_global_rng(7):
            inside.append(draws())
    assert inside[0] == inside[1] != expected  # the same draws whatever ran before: seeded from 7
    assert draws() == expected
    set_rng_state(before)
    with pytest.raises(RuntimeError), isolated_global_rng(7):
        draws()
        raise RuntimeError  # put back on the way out of an error as well
    assert draws() == expected


def test_falls_back_to_the_backup_when_state_is_truncated_or_garbage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    path = tmp_path / STATE_FILE
    good = path.read_bytes()
    for bad in (good[: len(good) // 2], good[:-10], b"not a checkpoint at all", b""):
        path.write_bytes(bad)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            state, used = load_checkpoint(tmp_path)
        assert (state["epoch"], used) == (1, tmp_path / BACKUP_FILE)
        assert str(path) in caplog.text and "truncated" in caplog.text and BACKUP_FILE in caplog.text


def test_falls_back_when_state_is_missing_or_lacks_required_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_checkpoint({"epoch": 1, "model": {}}, tmp_path)
    save_checkpoint({"epoch": 2}, tmp_path)
    with caplog.at_level(logging.WARNING):
        state, used = load_checkpoint(tmp_path, required_keys=["epoch", "model"])
    assert (state["epoch"], used.name) == (1, BACKUP_FILE)
    assert "lacks the required entries ['model']" in caplog.text

    (tmp_path / STATE_FILE).unlink()
    assert has_checkpoint(tmp_path)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        state, used = load_checkpoint(tmp_path)
    assert (state["epoch"], used.name) == (1, BACKUP_FILE)
    assert "missing" in caplog.text


def test_error_names_both_files_when_both_are_bad(tmp_path: Path) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"garbage")
    (tmp_path / BACKUP_FILE).unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert str(tmp_path / STATE_FILE) in message and str(tmp_path / BACKUP_FILE) in message
    assert "not a complete torch.save archive" in message and "missing" in message
    assert "start a new run" in message

    assert not has_checkpoint(tmp_path / "fresh")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "fresh")


class _Payload:
    """Unpickling this would run ``_mark_executed``: weights-only loading must refuse it."""

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        return (_mark_executed, ())


_EXECUTED: list[bool] = []


def _mark_executed() -> None:
    _EXECUTED.append(True)


class _Plain:
    pass


@pytest.mark.parametrize("payload", [_Payload(), _Plain()], ids=["reduce", "instance"])
def test_pickled_objects_are_refused_without_running_code(tmp_path: Path, payload: object) -> None:
    torch.save({"epoch": 1, "x": payload}, tmp_path / STATE_FILE)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    refused = "loading was refused for safety (weights-only loading) and none of its code was run"
    assert refused in str(info.value)
    assert __name__ in str(info.value)  # names the class or function it refused
    assert not _EXECUTED

    save_checkpoint(_state(3), tmp_path / "other")
    save_checkpoint(_state(4), tmp_path / "other")
    shutil.copy(tmp_path / STATE_FILE, tmp_path / "other" / STATE_FILE)
    state, used = load_checkpoint(tmp_path / "other")  # the good backup is used instead
    assert (state["epoch"], used.name) == (3, BACKUP_FILE)
    assert not _EXECUTED


class _Color(Enum):
    red = 1


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (_Plain(), "state['sub']['x']"),
        (_Color.red, "state['sub']['x']"),
        (np.array([object()]), "state['sub']['x']"),
        ({_Color.red: 1}, "state['sub']['x'] (key"),
    ],
)
def test_unloadable_objects_are_rejected_at_save_time(tmp_path: Path, bad: object, where: str) -> None:
    save_checkpoint(_state(1), tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(TypeError, match=r"cannot be stored|cannot store") as info:
        save_checkpoint({"epoch": 2, "sub": {"x": bad}}, tmp_path)
    assert where in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert load_checkpoint(tmp_path)[0]["epoch"] == 1


def _fail_at_call(real: Callable[..., Any], k: int) -> Callable[..., Any]:
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == k:
            raise OSError(f"simulated crash at call {k}")
        return real(*args, **kwargs)

    return wrapper


def _partial_torch_save(obj: Any, file: Any) -> None:
    file.write(b"PK\x03\x04 partial")
    raise OSError("simulated crash while writing")


@pytest.mark.parametrize(
    ("target", "patch"),
    [
        ("torch.save", lambda real: _partial_torch_save),
        ("os.fsync", lambda real: _fail_at_call(real, 1)),
        ("os.replace", lambda real: _fail_at_call(real, 1)),
        ("os.replace", lambda real: _fail_at_call(real, 2)),
        ("fsync_directory", lambda real: _fail_at_call(real, 1)),
    ],
    ids=["write", "fsync", "rotate", "rename", "fsync_dir"],
)
def test_a_crash_inside_save_always_leaves_a_loadable_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, patch: Callable[[Any], Any]
) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    module, name = {
        "torch.save": (torch, "save"),
        "os.fsync": (os, "fsync"),
        "os.replace": (os, "replace"),
        "fsync_directory": (checkpoint, "fsync_directory"),
    }[target]
    monkeypatch.setattr(module, name, patch(getattr(module, name)))
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(_state(3), tmp_path)
    monkeypatch.undo()
    state, _ = load_checkpoint(tmp_path)
    assert state["epoch"] in (2, 3)  # at most the interrupted save is lost
    save_checkpoint(_state(4), tmp_path)  # and saving works again afterwards
    assert load_checkpoint(tmp_path)[0]["epoch"] == 4
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_the_folder_is_loadable_at_every_step_of_a_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Freeze copies of the folder before every file operation of a save: what a kill -9 there would leave."""
    run = tmp_path / "run"
    save_checkpoint(_state(1), run)
    save_checkpoint(_state(2), run)
    snapshots: list[Path] = []

    def snapshot() -> None:
        copy = tmp_path / f"snap{len(snapshots)}"
        shutil.copytree(run, copy)
        snapshots.append(copy)

    def spying(real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            snapshot()
            return real(*args, **kwargs)

        return wrapper

    for module, name in ((torch, "save"), (os, "fsync"), (os, "replace"), (checkpoint, "fsync_directory")):
        monkeypatch.setattr(module, name, spying(getattr(module, name)))
    save_checkpoint(_state(3), run)
    monkeypatch.undo()
    snapshot()
    # Before: torch.save, fsync of the file, rotation, rename, fsync_directory and its os.fsync; after.
    epochs = [load_checkpoint(snap)[0]["epoch"] for snap in snapshots]
    assert epochs == [2, 2, 2, 2, 3, 3, 3]


def test_an_incomplete_state_is_not_rotated_over_a_good_backup(tmp_path: Path) -> None:
    save_checkpoint(_state(1), tmp_path)
    save_checkpoint(_state(2), tmp_path)
    (tmp_path / STATE_FILE).write_bytes(b"truncated")
    save_checkpoint(_state(3), tmp_path)
    assert torch.load(tmp_path / BACKUP_FILE, weights_only=True)["epoch"] == 1
    assert load_checkpoint(tmp_path)[0]["epoch"] == 3


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f".{STATE_FILE}.abc123.atomic-tmp"
    stale.write_bytes(b"left by a crash")
    save_checkpoint(_state(1), tmp_path)
    assert not stale.exists()


def test_to_safe_and_from_safe_keep_containers() -> None:
    obj = {"t": (1, [np.arange(3)], {"k": None}), 4: 1 + 2j, "size": torch.Size([2, 3])}
    back = from_safe(to_safe(obj))
    assert isinstance(back["t"], tuple) and isinstance(back["size"], torch.Size)
    np.testing.assert_array_equal(back["t"][1][0], np.arange(3))
    assert back[4] == 1 + 2j and back["t"][2] == {"k": None}


def test_save_agent_copy(tmp_path: Path) -> None:
    tensors = {"actor_critic.actor.weight": torch.randn(3, 4), "denoiser.x": torch.arange(6).reshape(2, 3).T}
    path = save_agent_copy(tensors, tmp_path / "agents", epoch=15)
    assert path == tmp_path / "agents" / "agent_epoch_0015.safetensors"
    loaded = safetensors.torch.load_file(path)
    assert loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value)
    with safetensors.safe_open(path, framework="pt") as f:
        assert f.metadata() == {"epoch": "15"}
