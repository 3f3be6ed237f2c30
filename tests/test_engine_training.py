"""Training an engine: metrics, test losses, checkpoints, loading for play, and a run killed with SIGKILL that
resumes and ends as an unbroken run does (docs/engine.md, "Training")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffworld.data.actions import ActionSpec, discrete, keys
from diffworld.data.folder_store import EngineDataset, EngineDatasetWriter
from diffworld.engine.config import build_engine_config, load_engine_config
from diffworld.engine.folder import is_engine_run
from diffworld.engine.quality import QualitySettings, evaluate_engine, quality_metrics
from diffworld.engine.trained import load_trained_engine
from diffworld.engine.trainer import EngineTrainer, quality_seed
from diffworld.errors import UserError
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.metrics_file import read_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ActionSpec.of(discrete("action", 3), keys(["fire", "jump"]))


def write_dataset(folder: Path, frame_size: tuple[int, int] = (12, 20), episodes: int = 4) -> Path:
    """Episodes of a bar that moves by the action: something a model can start to learn."""
    rng = np.random.default_rng(0)
    writer = EngineDatasetWriter(folder, SPEC, frame_size, source="test")
    h, w = frame_size
    for _ in range(episodes):
        length = 25
        actions = np.zeros((length, 3), dtype=np.float32)
        actions[:, 0] = rng.integers(0, 3, length)
        actions[:, 1:] = rng.integers(0, 2, (length, 2))
        frames = np.zeros((length, h, w, 3), dtype=np.uint8)
        x = w // 2
        for t in range(length):
            frames[t, :, x] = 255
            x = int(np.clip(x + actions[t, 0] - 1, 0, w - 1))
        writer.add_episode(frames, actions)
    writer.finish(test_fraction=0.25)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("engine") / "bars")


def test_train_logs_tests_checkpoints_and_loads_for_play(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = build_engine_config([f"data={dataset}", "preset=smoke", f"run_dir={run_dir}"])
    last_test = EngineTrainer(cfg, run_dir).run()
    # The smoke preset's quality: 2 trajectories of the one 25-frame test episode, at horizons 1 and 10;
    # SSIM only at full resolution (12x20: 6x10 is smaller than its 11-pixel window).
    quality = {
        f"engine/test/{metric}_{res}_h{h}{who}"
        for metric, res in (("psnr", "low"), ("psnr", "full"), ("ssim", "full"))
        for h in (1, 10)
        for who in ("", "_copy_last_frame", "_blur", "_mean_frame")
    }
    assert set(last_test) == {"denoiser/test/loss", "upsampler/test/loss"} | quality
    records = read_metrics(run_dir)
    train = [r for r in records if "denoiser/train/loss" in r]
    assert [r["updates"] for r in train] == [2, 4, 6]
    assert all(np.isfinite(r["upsampler/train/loss"]) and r["denoiser/train/lr"] > 0 for r in train)
    assert [r["updates"] for r in records if "denoiser/test/loss" in r] == [3, 6]
    assert [r["updates"] for r in records if "engine/test/psnr_low_h10" in r] == [3, 6]
    assert is_engine_run(run_dir)
    assert load_engine_config(run_dir / "config.yaml").low_res == [6, 10]  # derived: 12x20 / factor 2

    engine = load_trained_engine(run_dir)
    assert engine.updates == 6 and engine.spec == SPEC and engine.num_cond_frames == 2
    obs = torch.zeros(1, 2, 3, 6, 10)
    act = torch.tensor([[[1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]])
    low = engine.frame_sampler().predict_next(obs, act, torch.Generator().manual_seed(0))
    assert low.shape == (1, 3, 6, 10)
    upsampling = engine.upsampling_sampler()
    assert upsampling is not None
    full = upsampling.upsample(low, torch.zeros(1, 1, 3, 12, 20), torch.Generator().manual_seed(0))
    assert full.shape == (1, 3, 12, 20) and full.abs().max() <= 1


def test_the_time_limit_stops_with_a_test_and_a_checkpoint_and_resume_does_not_go_on(
    dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # A limit that the first chunk of updates (to the first log, at update 2) always passes.
    cfg = build_engine_config(
        [f"data={dataset}", "preset=smoke", "training.max_minutes=1e-9", f"run_dir={run_dir}"]
    )
    EngineTrainer(cfg, run_dir).run()
    records = read_metrics(run_dir)
    assert [r["updates"] for r in records if "denoiser/train/loss" in r] == [2]
    assert [r["updates"] for r in records if "denoiser/test/loss" in r] == [2]
    state, _ = load_checkpoint(run_dir / "checkpoints")
    assert state["updates"] == 2

    EngineTrainer(cfg, run_dir, resume=True).run()
    assert read_metrics(run_dir) == records


def _train(dataset: Path, run_dir: Path, *overrides: str) -> list[dict[str, object]]:
    args = [f"data={dataset}", "preset=smoke", "training.num_updates=4", f"run_dir={run_dir}", *overrides]
    EngineTrainer(build_engine_config(args), run_dir).run()
    return _records(run_dir)


def _full_levels(dataset: Path, episode: int, frame: int) -> np.ndarray:
    return EngineDataset(dataset).frames(episode)[frame].astype(np.float64)


def test_quality_is_what_eval_measures_and_leaves_training_unchanged(dataset: Path, tmp_path: Path) -> None:
    on = _train(dataset, tmp_path / "on")
    off = _train(dataset, tmp_path / "off", "training.quality_trajectories=0")
    # Measuring the quality draws from no generator of the training: the same losses and weights.
    assert [{k: v for k, v in r.items() if not k.startswith("engine/")} for r in on] == off
    assert not any(k.startswith("engine/") for r in off for k in r)
    ours, theirs = _checkpoint(tmp_path / "on")["models"], _checkpoint(tmp_path / "off")["models"]
    for name in ("denoiser", "upsampler"):
        assert ours[name].keys() == theirs[name].keys()
        for key, value in theirs[name].items():
            assert torch.equal(ours[name][key], value), f"{name}.{key}"

    # The last test's quality is 'diffworld engine eval' of the final checkpoint with the run's seed.
    logged = {k: v for k, v in on[-1].items() if k.startswith("engine/")}
    report, _ = evaluate_engine(
        tmp_path / "on",
        tmp_path / "q.json",
        QualitySettings(horizons=[1, 10], max_trajectories=2, seed=quality_seed(0)),
    )
    assert logged and logged == quality_metrics(report, "engine/test")
    # The baseline, by hand: the trajectories start at frames 0 and 10 of the test episode after 2 real
    # frames; copying the last real one scores the PSNR of frames start + 1 against start + 1 + h.
    (test_episode,) = EngineDataset(dataset).test_ids
    for h in (1, 10):
        scores = []
        for start in (0, 10):
            last, target = (_full_levels(dataset, test_episode, start + 1 + k) for k in (0, h))
            mse = float(((last - target) ** 2).mean())
            scores.append(100.0 if mse == 0 else min(100.0, 10 * np.log10(255.0**2 / mse)))
        assert logged[f"engine/test/psnr_full_h{h}_copy_last_frame"] == pytest.approx(np.mean(scores))


def test_a_dataset_of_another_size_is_a_one_line_error(dataset: Path, tmp_path: Path) -> None:
    args = [f"data={dataset}", "preset=smoke", "upsampler.factor=3", f"run_dir={tmp_path}/r"]
    cfg = build_engine_config(args)
    with pytest.raises(UserError, match="12x20"):
        EngineTrainer(cfg, tmp_path / "r")


_KILLED_AT_SAVE = """
import os, signal, sys
from diffworld.cli import main
from diffworld.engine.quality import evaluate_engine, quality_metrics
from diffworld.engine.trainer import EngineTrainer, quality_seed
save, calls = EngineTrainer._save_checkpoint, []
def killed_at_save(self):
    calls.append(None)
    if len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    save(self)
EngineTrainer._save_checkpoint = killed_at_save
sys.exit(main())
"""


def _diffworld(args: list[str], kill_at_save: int | None = None) -> int:
    """Run ``diffworld`` with ``args`` in a subprocess; it SIGKILLs itself when about to save its
    ``kill_at_save``-th checkpoint. Its exit status."""
    code = _KILLED_AT_SAVE.format(n=kill_at_save or 0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, check=False)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr.decode())
    return proc.returncode


def _checkpoint(run_dir: Path) -> dict[str, Any]:
    state, _ = load_checkpoint(run_dir / "checkpoints")
    return state


def _records(run_dir: Path) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in read_metrics(run_dir)]


@pytest.mark.parametrize(
    "averaged",
    [False, True],
    ids=["live weights", "with the weights' average"],
)
def test_sigkill_then_resume_ends_as_an_unbroken_run(dataset: Path, tmp_path: Path, averaged: bool) -> None:
    # With training.ema_decay the checkpoint also holds each model's average, which must resume exactly too.
    ema = ["denoiser.training.ema_decay=0.5", "upsampler.training.ema_decay=0.5"] if averaged else []
    args = ["engine", "train", f"data={dataset}", "preset=smoke", "training.num_updates=8", *ema]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    assert _diffworld([*args, f"run_dir={unbroken}"]) == 0
    # Checkpoints at updates 0, 2, 4, ...: killed about to save the one of update 4 (after logging its
    # records), then, resumed from update 2, about to save the one of update 8 (its third).
    assert _diffworld([*args, f"run_dir={broken}"], kill_at_save=3) == -signal.SIGKILL
    assert _diffworld(["engine", "train", "--resume", str(broken)], kill_at_save=3) == -signal.SIGKILL
    assert _diffworld(["engine", "train", "--resume", str(broken)]) == 0

    assert _records(broken) == _records(unbroken)
    ours, theirs = _checkpoint(broken), _checkpoint(unbroken)
    assert ("ema" in ours) == averaged and ("ema" in theirs) == averaged
    for name in ("denoiser", "upsampler"):
        parts = [("models", name)] + ([("ema", f"{name} average")] if averaged else [])
        for key, what in parts:
            assert ours[key][name].keys() == theirs[key][name].keys(), what
            for tensor_name, value in theirs[key][name].items():
                assert torch.equal(ours[key][name][tensor_name], value), f"{what}.{tensor_name}"
        if averaged:
            assert int(ours["ema"][name]["n_averaged"]) == 8


def test_resume_refuses_overrides(dataset: Path, tmp_path: Path) -> None:
    from diffworld.cli import main

    assert main(["engine", "train", "--resume", str(tmp_path), "seed=1"]) == 2
