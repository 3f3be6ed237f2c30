"""``diffworld bench`` runs on the smoke preset and writes valid JSON."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffworld.benchmark import never_terminating
from diffworld.cli import main
from diffworld.config.schema import RewardTerminationConfig
from diffworld.models.reward_termination import RewardTerminationModel
from strict_json import load_strict_json


def test_bench_smoke_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "preset=smoke", "--repeats", "1", "--warmup", "0", "--collect", "100", "--device", "cpu"]
    assert main([*args, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "denoiser step" in table and "frames/s" in table and "steps/s" in table
    report = load_strict_json(out)
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
    args = ["bench", "preset=smoke", "training.precision=bf16", "--repeats", "1", "--warmup", "0"]
    args += ["--collect", "100", "--device", "cpu", "--parts", "denoiser", "actor_critic", "imagination"]
    assert main([*args, "--json", str(out)]) == 0
    report = load_strict_json(out)
    assert report["settings"]["precision"] == "bf16"
    assert set(report["results"]) == {"denoiser", "actor_critic", "imagination"}
    assert torch.bfloat16 in dtypes  # float32 too: the collection of the bench's dataset is not autocast


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


def test_bench_continuous_game(tmp_path: Path) -> None:
    """On a continuous game the imagination part steps the world model with float action vectors of the
    game's width (an index action used to crash it)."""
    out = tmp_path / "bench.json"
    args = ["bench", "preset=smoke", "game=CatchContinuous", "env.size=16", "--repeats", "1", "--warmup", "0"]
    args += ["--collect", "60", "--device", "cpu", "--parts", "imagination"]
    assert main([*args, "--json", str(out)]) == 0
    report = load_strict_json(out)
    assert report["settings"]["game"] == "CatchContinuous"
    assert report["results"]["imagination"]["frames_per_second"] > 0
    assert report["results"]["imagination"]["denoiser_call_seconds"] > 0
