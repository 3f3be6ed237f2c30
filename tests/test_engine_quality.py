"""engine/quality.py: open-loop PSNR/SSIM at horizons against the baselines (copy the last frame, blur it, the
mean training frame), checked with fake engines whose scores are known exactly and against an independent
computation of the baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from diffworld.cli import main
from diffworld.config.loading import save_config
from diffworld.data.actions import ActionSpec, discrete
from diffworld.data.folder_store import EngineDataset, EngineDatasetWriter
from diffworld.engine.config import LowResFilter, build_engine_config
from diffworld.engine.denoiser import EngineDenoiser, Upsampler
from diffworld.engine.folder import save_action_space
from diffworld.engine.imagine import EngineSamplers, OpenLoopRollout
from diffworld.engine.quality import (
    BASELINE,
    BLUR,
    ENGINE,
    MEAN_FRAME,
    evaluate_quality,
    format_table,
    gaussian_blur,
    mean_frame_indices,
    plan_trajectories,
    quality_metrics,
)
from diffworld.evaluation.image_metrics import PSNR_MAX
from diffworld.run.checkpoint import save_checkpoint
from diffworld.run.folder import CONFIG_FILE, checkpoint_dir

SPEC = ActionSpec.of(discrete("action", 3))
FULL, LOW = (24, 32), (12, 16)


class CopyLast:
    """Predicts no change: the last conditioning frame."""

    def predict_next(self, prev_obs: Tensor, prev_act: Tensor, generator=None, callback=None) -> Tensor:
        return prev_obs[:, -1].clone()


class CopyLastFull:
    def upsample(self, low_res_next: Tensor, prev_full: Tensor, generator=None) -> Tensor:
        return prev_full[:, -1].clone()


def level(value: float | Tensor) -> float | Tensor:
    return value / 127.5 - 1


class ActionCoded:
    """Knows the game of ``action_coded_dataset``: the next frame is uniform at level 40 + 30 a."""

    def predict_next(self, prev_obs: Tensor, prev_act: Tensor, generator=None, callback=None) -> Tensor:
        value = torch.as_tensor(level(40 + 30 * prev_act[:, -1, 0]))
        return value[:, None, None, None].expand(-1, *prev_obs.shape[2:]).clone()


class NearestUp:
    def upsample(self, low_res_next: Tensor, prev_full: Tensor, generator=None) -> Tensor:
        return F.interpolate(low_res_next, size=prev_full.shape[-2:], mode="nearest")


class Drift:
    """Each prediction one 8-bit level brighter than the last frame."""

    def predict_next(self, prev_obs: Tensor, prev_act: Tensor, generator=None, callback=None) -> Tensor:
        return prev_obs[:, -1] + 1 / 127.5


def write_dataset(
    folder: Path, episodes: list[tuple[np.ndarray, np.ndarray]], test: list[str]
) -> EngineDataset:
    writer = EngineDatasetWriter(folder, SPEC, FULL, source="test")
    for frames, actions in episodes:
        writer.add_episode(frames, actions)
    writer.finish(test_names=test)
    return EngineDataset(folder)


def random_dataset(folder: Path, lengths: list[int], seed: int = 0) -> EngineDataset:
    rng = np.random.default_rng(seed)
    episodes = [
        (rng.integers(0, 256, (n, *FULL, 3), dtype=np.uint8), rng.integers(0, 3, (n, 1)).astype(np.float32))
        for n in lengths
    ]
    return write_dataset(folder, episodes, [f"{i:06d}" for i in range(len(lengths))])


def action_coded_dataset(folder: Path, lengths: list[int], seed: int = 0) -> EngineDataset:
    """Uniform frames: frame 0 at level 50, frame t + 1 at 40 + 30 a_t."""
    rng = np.random.default_rng(seed)
    episodes = []
    for n in lengths:
        actions = rng.integers(0, 3, (n, 1))
        levels = np.concatenate([[50], 40 + 30 * actions[:-1, 0]]).astype(np.uint8)
        frames = np.broadcast_to(levels[:, None, None, None], (n, *FULL, 3)).copy()
        episodes.append((frames, actions.astype(np.float32)))
    return write_dataset(folder, episodes, [f"{i:06d}" for i in range(len(lengths))])


def test_plan_trajectories_round_robin_without_overlap() -> None:
    plan = plan_trajectories(
        np.array([30, 250, 4]), [0, 1, 2], context=4, max_horizon=100, max_trajectories=10
    )
    assert [(t.episode, t.start, t.length) for t in plan] == [
        (0, 0, 26),
        (1, 0, 100),
        (1, 100, 100),
        (1, 200, 46),
    ]
    assert len(plan_trajectories(np.array([30, 250]), [0, 1], 4, 100, max_trajectories=2)) == 2


def test_copy_last_frame_engine_scores_exactly_the_baseline(tmp_path: Path) -> None:
    dataset = random_dataset(tmp_path / "d", [40, 15, 120])
    engine = EngineSamplers(CopyLast(), 2, LOW, CopyLastFull(), 1)
    report = evaluate_quality(dataset, engine, horizons=(1, 10, 100), batch_size=2)
    assert report["trajectories"] == {"1": 4, "10": 4, "100": 1}  # starts: 0 of each, 100 of the third
    for res, size in (("low_res", LOW), ("full_res", FULL)):
        assert report[res]["size"] == list(size)
        assert report[res][ENGINE] == report[res][BASELINE]
        assert BLUR in report[res] and MEAN_FRAME not in report[res]  # every episode is a test one
        assert set(report[res][ENGINE]) == {"psnr", "ssim"}
        assert all(
            v is not None and v < 20 for v in report[res][ENGINE]["psnr"].values()
        )  # random frames differ
    json.dumps(report)  # JSON-ready
    table = format_table(report)
    assert "copy last frame: the last real context frame" in table and "mean training frame" not in table


def test_actions_are_aligned_with_the_frames_they_follow(tmp_path: Path) -> None:
    """An engine that knows the game's rule predicts every frame exactly: only if each prediction gets the
    action taken after the frame before it."""
    dataset = action_coded_dataset(tmp_path / "d", [30, 50])
    engine = EngineSamplers(ActionCoded(), 3, LOW, NearestUp(), 2, LowResFilter.area)
    report = evaluate_quality(dataset, engine, horizons=(1, 10, 20))
    for res in ("low_res", "full_res"):
        assert report[res][ENGINE]["psnr"] == {"1": PSNR_MAX, "10": PSNR_MAX, "20": PSNR_MAX}
        assert report[res][ENGINE]["ssim"]["20"] == pytest.approx(1.0)
        assert report[res][BASELINE]["psnr"]["10"] < PSNR_MAX


def test_open_loop_errors_compound(tmp_path: Path) -> None:
    """Static frames, an engine one level brighter at each step: at horizon h every pixel is h levels off,
    PSNR = 20 log10(255 / h); without an upsampler there is no full-resolution report."""
    frames = np.full((120, *FULL, 3), 100, np.uint8)
    dataset = write_dataset(tmp_path / "d", [(frames, np.zeros((120, 1), np.float32))], ["000000"])
    report = evaluate_quality(dataset, EngineSamplers(Drift(), 4, LOW), horizons=(1, 10, 100))
    for h in (1, 10, 100):
        assert report["low_res"][ENGINE]["psnr"][str(h)] == pytest.approx(20 * math.log10(255 / h), abs=1e-3)
        assert report["low_res"][BASELINE]["psnr"][str(h)] == PSNR_MAX
    assert "full_res" not in report


def test_small_frames_get_psnr_only_and_unreached_horizons_none(tmp_path: Path) -> None:
    dataset = random_dataset(tmp_path / "d", [12])
    report = evaluate_quality(dataset, EngineSamplers(CopyLast(), 2, (6, 8)), horizons=(1, 10, 100))
    assert set(report["low_res"][ENGINE]) == {"psnr"}
    assert report["trajectories"] == {"1": 1, "10": 1, "100": 0}
    assert report["low_res"][ENGINE]["psnr"]["100"] is None
    rows = [line for line in format_table(report).splitlines() if line.startswith("    100")]
    assert rows and rows[0].split()[2:] == ["engine", "-"]


def test_gaussian_blur_is_scipys() -> None:
    from scipy.ndimage import gaussian_filter

    x = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    for sigma in (0.4, 1.0, 2.0, 3.5):  # at 3.5 the kernel (radius 14) is wider than the frame
        expected = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
        np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, atol=1e-12)
    assert torch.equal(gaussian_blur(x, 0.0), x)


def test_mean_frame_samples_are_spread_evenly() -> None:
    positions, frames = mean_frame_indices(np.array([5, 3, 10]), 4)  # frames 0, 6, 11, 17 of the 18
    assert positions.tolist() == [0, 1, 2, 2] and frames.tolist() == [0, 1, 3, 9]
    positions, frames = mean_frame_indices(np.array([2, 1]), 2000)
    assert positions.tolist() == [0, 0, 1] and frames.tolist() == [0, 1, 0]


def _psnr_levels(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR of float frames in [-1, 1], on 8-bit levels, computed apart from diffworld's metrics."""
    mse = np.mean(((np.clip(pred, -1, 1) + 1) * 127.5 - (np.clip(target, -1, 1) + 1) * 127.5) ** 2)
    return PSNR_MAX if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def test_baselines_match_an_independent_computation(tmp_path: Path) -> None:
    """Blur (sigma 2 px at 24x32, 1 px at 12x16) and mean-frame PSNRs as numpy and scipy compute them from
    the frames: the blurred last context frame, the mean of the training frames (all of them: fewer than
    2,000), at low resolution the mean of the low-resolution frames."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    episodes = [
        (rng.integers(0, 256, (n, *FULL, 3), dtype=np.uint8), rng.integers(0, 3, (n, 1)).astype(np.float32))
        for n in (9, 14, 12, 20)
    ]
    dataset = write_dataset(tmp_path / "d", episodes, ["000001", "000003"])
    engine = EngineSamplers(CopyLast(), 2, LOW, CopyLastFull(), 1, LowResFilter.area)
    report = evaluate_quality(dataset, engine, horizons=(1, 5), max_trajectories=10)
    assert report["baselines"]["blur"]["sigma_low_res"] == pytest.approx(1.0)
    assert report["baselines"]["mean_frame"] == {"training_frames": 9 + 12}

    def to_float(frames: np.ndarray) -> np.ndarray:  # (..., H, W, 3) uint8 -> (..., 3, H, W) in [-1, 1]
        return np.moveaxis(frames.astype(np.float64), -1, -3) / 127.5 - 1

    def low(frames: np.ndarray) -> np.ndarray:  # 2x2 means
        h, w = frames.shape[-2:]
        return frames.reshape(*frames.shape[:-2], h // 2, 2, w // 2, 2).mean(axis=(-3, -1))

    train = to_float(np.concatenate([episodes[0][0], episodes[2][0]]))
    means = {"full_res": train.mean(0), "low_res": low(train).mean(0)}
    sigmas = {"full_res": 2.0, "low_res": 1.0}
    for h in (1, 5):
        scores: dict[tuple[str, str], list[float]] = {}
        for e in (1, 3):  # test episodes of 14 and 20 frames: trajectories start at 0, 5, 10 (and 15)
            frames = to_float(episodes[e][0])
            for start in range(0, len(frames) - 2, 5):
                if start + 1 + h >= len(frames):
                    continue
                for res, view in (("full_res", frames), ("low_res", low(frames))):
                    last, target = view[start + 1], view[start + 1 + h]
                    blurred = gaussian_filter(
                        last, (0, sigmas[res], sigmas[res]), mode="nearest", truncate=4.0
                    )
                    scores.setdefault((res, BLUR), []).append(_psnr_levels(blurred, target))
                    scores.setdefault((res, MEAN_FRAME), []).append(_psnr_levels(means[res], target))
                    scores.setdefault((res, BASELINE), []).append(_psnr_levels(last, target))
        assert len(scores["full_res", BLUR]) == report["trajectories"][str(h)] == (7 if h == 1 else 5)
        for (res, who), values in scores.items():
            assert report[res][who]["psnr"][str(h)] == pytest.approx(np.mean(values), rel=1e-5), (res, who, h)
    metrics = quality_metrics(report, "engine/test")
    assert {"engine/test/psnr_full_h5_blur", "engine/test/ssim_low_h1_mean_frame"} <= set(metrics)
    table = format_table(report)
    assert "blurred last frame" in table and "mean of 21 training frames" in table
    assert report["low_res"][BLUR]["psnr"]["1"] > report["low_res"][BASELINE]["psnr"]["1"]  # noise: blur wins


def test_imagination_steps_with_the_actions_given() -> None:
    context = torch.full((1, 3, 3, *LOW), float(level(50)))
    past = torch.zeros(1, 2, 1)
    full_ctx = torch.zeros(1, 2, 3, *FULL)
    samplers = EngineSamplers(ActionCoded(), 3, LOW, NearestUp(), 2)
    imagination = OpenLoopRollout(samplers, context, past, full_ctx)
    low, full = imagination.step(torch.tensor([[2.0]]))
    assert torch.allclose(low, torch.full_like(low, float(level(100))))
    assert full is not None and full.shape == (1, 3, *FULL)
    assert imagination.past_actions.tolist() == [[[0.0], [2.0]]]
    assert torch.equal(imagination.obs_full[:, -1], full)  # type: ignore[index]


# ---------------------------------------------------------------------------------- diffworld engine eval

BAR_SPEC = ActionSpec.of(discrete("action", 3))


def engine_folder(folder: Path, data: Path, overrides: tuple[str, ...] = ()) -> Path:
    """An untrained smoke-preset engine (12x20 frames from 6x10) laid out as 'engine train' writes it."""
    cfg = build_engine_config([f"data={data}", "preset=smoke", *overrides])
    torch.manual_seed(0)
    models = {"denoiser": EngineDenoiser(cfg.denoiser, BAR_SPEC).state_dict()}
    if cfg.upsampler is not None:
        models["upsampler"] = Upsampler(cfg.upsampler).state_dict()
    folder.mkdir(parents=True)
    save_checkpoint({"updates": 0, "models": models}, checkpoint_dir(folder))
    save_action_space(folder, BAR_SPEC)
    save_config(cfg, folder / CONFIG_FILE)
    return folder


def bar_dataset(folder: Path, size: tuple[int, int] = (12, 20)) -> Path:
    rng = np.random.default_rng(0)
    writer = EngineDatasetWriter(
        folder, BAR_SPEC, size, source={"action_meanings": ["NOOP", "RIGHT", "LEFT"]}
    )
    for _ in range(3):
        writer.add_episode(
            rng.integers(0, 256, (16, *size, 3), dtype=np.uint8),
            rng.integers(0, 3, (16, 1)).astype(np.float32),
        )
    writer.finish(test_fraction=0.5)
    return folder


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_cli_eval_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = engine_folder(tmp_path / "engine", bar_dataset(tmp_path / "bars"))
    assert main(["engine", "eval", str(engine), "--horizons", "1", "10", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "upsampled PSNR" in out and "Wrote" in out
    report = json.loads((engine / "quality.json").read_text())
    assert report["horizons"] == [1, 10] and report["trajectories"] == {"1": 4, "10": 2}  # starts 0, 10
    assert set(report["low_res"][ENGINE]) == {"psnr"} and set(report["full_res"][ENGINE]) == {"psnr", "ssim"}
    assert report["low_res"]["size"] == [6, 10] and report["full_res"]["size"] == [12, 20]
    again = tmp_path / "again.json"
    assert main(["engine", "eval", str(engine), "--horizons", "1", "10", "--out", str(again)]) == 0
    assert json.loads(again.read_text()) == report  # seeded: the same draws
    assert report["sampler_settings"] == "fast" and report["denoising_steps"] == 1
    hq = tmp_path / "hq.json"
    argv = ["engine", "eval", str(engine), "--horizons", "1", "--sampler-settings", "higher_quality"]
    assert main([*argv, "--out", str(hq)]) == 0
    hq_report = json.loads(hq.read_text())
    assert hq_report["sampler_settings"] == "higher_quality" and hq_report["denoising_steps"] == 3


def test_cli_eval_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bar_dataset(tmp_path / "bars")
    assert "is not an engine folder" in one_line_error(capsys, ["engine", "eval", str(data)])
    assert "No engine folder" in one_line_error(capsys, ["engine", "eval", str(tmp_path / "nothing")])
    engine = engine_folder(tmp_path / "engine", data, ("upsampler.factor=3",))
    assert "has frames of 12x20" in one_line_error(capsys, ["engine", "eval", str(engine)])
    other = tmp_path / "other"
    writer = EngineDatasetWriter(other, ActionSpec.of(discrete("action", 4)), (12, 20))
    writer.add_episode(np.zeros((5, 12, 20, 3), np.uint8), np.zeros((5, 1), np.float32))
    writer.finish(test_fraction=0.5)
    small = engine_folder(tmp_path / "small", data)
    assert "has the actions" in one_line_error(capsys, ["engine", "eval", str(small), "--data", str(other)])
