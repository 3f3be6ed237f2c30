"""``diffworld bench`` and ``diffworld wm-eval`` run on the smoke preset and write valid JSON (and a PNG)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from diffworld.benchmark import never_terminating
from diffworld.cli import main
from diffworld.config import build_config
from diffworld.config.schema import RewardTerminationConfig
from diffworld.models.reward_termination import RewardTerminationModel
from diffworld.training.trainer import Trainer

SMOKE = ["game=Breakout", "preset=smoke", "seed=2", "device=cpu"]


def _load_strict_json(path: Path) -> Any:
    def no_constant(name: str) -> None:
        raise ValueError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=no_constant)


def test_bench_smoke_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "preset=smoke", "--steps", "1", "--warmup", "0", "--collect", "100", "--device", "cpu"]
    assert main([*args, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "denoiser step" in table and "frames/s" in table and "steps/s" in table
    report = _load_strict_json(out)
    assert report["settings"]["preset"] == "smoke" and report["settings"]["game"] == "Breakout"
    assert report["settings"]["precision"] == "fp32"
    assert report["settings"]["segment_frames"]["denoiser"] == 6
    assert report["machine"]["torch"] and report["machine"]["cpu_count"] >= 1
    results = report["results"]
    for name in ("denoiser", "reward_model", "actor_critic"):
        assert results[name]["seconds_per_step"] > 0 and len(results[name]["times"]) == 1
        assert results[name]["peak_memory_bytes"] > 0
    assert results["imagination"]["frames_per_second"] > 0
    assert results["imagination"]["denoiser_call_seconds"] > 0
    assert results["collection"]["steps_per_second"] > 0
    parts_peak = max(part["peak_memory_bytes"] for part in results.values())
    assert report["peak_memory_bytes"] >= parts_peak > 0
    params = report["parameters"]
    assert params["total"] == params["denoiser"] + params["reward_model"] + params["actor_critic"] > 0


def test_bench_bf16_runs_training_in_bfloat16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``training.precision=bf16``: the trainer's steps and the imagination run their convolutions in
    bfloat16, and the report says so."""
    dtypes: set[torch.dtype] = set()
    conv2d = torch.nn.Conv2d.forward

    def recording_forward(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        out = conv2d(self, x)
        dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", recording_forward)
    out = tmp_path / "bench.json"
    args = ["bench", "preset=smoke", "training.precision=bf16", "--steps", "1", "--warmup", "0"]
    args += ["--collect", "100", "--device", "cpu", "--parts", "denoiser", "actor_critic", "imagination"]
    assert main([*args, "--json", str(out)]) == 0
    report = _load_strict_json(out)
    assert report["settings"]["precision"] == "bf16"
    assert set(report["results"]) == {"denoiser", "actor_critic", "imagination"}
    assert torch.bfloat16 in dtypes  # float32 too: the collection of the bench's dataset is not autocast


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as the trainer leaves it before its first epoch: config and a checkpoint (untrained
    models; the evaluation's mechanics do not depend on the weights)."""
    run_dir = tmp_path_factory.mktemp("wm_eval") / "run"
    trainer = Trainer(build_config([*SMOKE, f"run_dir={run_dir}", "logging.tensorboard=false"]), run_dir)
    trainer.train_envs.close()
    trainer.test_envs.close()
    trainer.logger.close()
    return run_dir


def test_wm_eval_smoke_writes_json_and_png(untrained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "wm"
    args = ["wm-eval", str(untrained_run), "--horizons", "1", "5", "15", "100000", "--steps", "1", "2"]
    assert main([*args, "--episodes", "1", "--device", "cpu", "--out-dir", str(out)]) == 0
    report = _load_strict_json(out / "wm_quality.json")
    assert (out / "wm_quality.png").stat().st_size > 0
    assert report["kinds_without_run"] == ["ddpm"]  # one EDM run: no DDPM to compare with
    (run,) = report["runs"]
    assert run["kind"] == "edm" and len(run["episode_lengths"]) == 1
    assert run["horizons_evaluated"] == [1, 5, 15] and run["horizons_not_reached"] == [100000]
    assert set(run["denoising_steps"]) == {"1", "2"}
    for summary in [run["copy_last_frame"], *run["denoising_steps"].values()]:
        for mode in ("one_step", "autoregressive"):
            for metric in ("psnr", "ssim", "mse"):
                values = summary[mode][metric]
                assert set(values) == {"1", "5", "15"}
                assert all(math.isfinite(v) for v in values.values())
            assert all(-1 <= v <= 1 for v in summary[mode]["ssim"].values())
    assert set(run["reward_detection"]) == {"1", "2"}
    for detection in run["reward_detection"].values():
        assert detection["num_zero_steps"] >= 1  # an episode of Breakout has zero-reward steps
        for key in (
            "recall_predicted",
            "recall_real",
            "false_positive_rate_predicted",
            "false_positive_rate_real",
        ):
            value = detection[key]  # null: no rewarded step in the episode to count
            assert (value is None and key.startswith("recall")) or 0.0 <= value <= 1.0
    # The copy baseline is the same frame at horizon 1 both ways (the last context frame).
    base = run["copy_last_frame"]
    assert base["one_step"]["psnr"]["1"] == base["autoregressive"]["psnr"]["1"]
    per_step = run["per_step"]
    assert len(per_step["num_trajectories"]) == 15
    assert len(per_step["steps_2"]["autoregressive"]["psnr"]) == 15


def test_wm_eval_kinds_filter(
    untrained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["wm-eval", str(untrained_run), "--kinds", "ddpm", "--out-dir", str(tmp_path / "none")]
    assert main([*args, "--device", "cpu"]) == 2
    assert "no run has a denoiser of kind ddpm" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_never_terminating_is_temporary() -> None:
    cfg = RewardTerminationConfig(channels=[8, 8], depths=[1, 1], attn_depths=[False, False], lstm_dim=8)
    model = RewardTerminationModel(cfg, 3, img_size=16)
    obs, act = torch.zeros(2, 1, 3, 16, 16), torch.zeros(2, 1, dtype=torch.long)
    rew, end, _ = model.predict(obs, act, obs)
    with never_terminating(model):
        rew_in, end_in, _ = model.predict(obs, act, obs)
    torch.testing.assert_close(rew_in, rew)
    assert (end_in.argmax(-1) == 0).all() and end_in.softmax(-1)[..., 1].max() < 1e-30
    assert "predict" not in vars(model)
    torch.testing.assert_close(model.predict(obs, act, obs)[1], end)
