"""World-model quality metrics (PSNR, SSIM), the alignment of predictions with the real frames, and
``diffworld wm-eval`` on the smoke preset (valid JSON and a PNG), of an Atari run and of an engine."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor

from diffworld.agent.trainer import Trainer
from diffworld.cli import main
from diffworld.config import build_config
from diffworld.config.schema import SamplerConfig
from diffworld.data import Episode
from diffworld.evaluation.image_metrics import PSNR_MAX, gaussian_window, psnr, ssim
from diffworld.evaluation.wm_trajectories import copy_last_frame_curves, evaluate_trajectories
from strict_json import load_strict_json
from test_engine_cli import fails_in_one_line
from test_engine_quality import bar_dataset, engine_folder

ONE_LEVEL_PSNR = 10 * math.log10(255**2)  # MSE of 1 level everywhere: 48.13 dB


def random_frames(n: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)


def test_psnr_known_mse() -> None:
    x = random_frames(3, 0).clamp(10, 200)
    for delta in (1, 4, 25):
        torch.testing.assert_close(
            psnr(x + delta, x), torch.full((3,), 10 * math.log10(255**2 / delta**2), dtype=torch.float64)
        )
    assert psnr(x, x).tolist() == [PSNR_MAX] * 3
    # Floats in [-1, 1] are read as 8-bit levels: one level is 2 / 255.
    f = x.float() / 127.5 - 1
    torch.testing.assert_close(psnr(f + 2 / 255, f), torch.full((3,), ONE_LEVEL_PSNR, dtype=torch.float64))


def test_ssim_analytic_cases() -> None:
    x = random_frames(4, 1)
    torch.testing.assert_close(ssim(x, x), torch.ones(4, dtype=torch.float64))
    # Constant images: no variance, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    a, b = (
        torch.full((1, 3, 16, 16), 100, dtype=torch.uint8),
        torch.full((1, 3, 16, 16), 180, dtype=torch.uint8),
    )
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 180 + c1) / (100**2 + 180**2 + c1)
    torch.testing.assert_close(ssim(a, b), torch.tensor([expected], dtype=torch.float64))
    assert ssim(x, 255 - x).mean() < 0  # anti-correlated
    assert ssim(x, x).shape == (4,)
    w = gaussian_window()
    assert w.shape == (11,) and float(w.sum()) == pytest.approx(1.0) and int(w.argmax()) == 5


def test_ssim_matches_independent_implementation() -> None:
    """Against Wang et al.'s formula computed with scipy's Gaussian filter (scikit-image's algorithm:
    filter with reflection, then average the map away from a border of 5 pixels)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    x = random_frames(3, 2).double().numpy()
    noise = np.random.default_rng(3).integers(-50, 51, x.shape)
    y = np.clip(x + noise, 0, 255)
    y[1] = np.random.default_rng(4).integers(0, 256, y[1].shape)  # unrelated
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

    expected = []
    for xi, yi in zip(x, y, strict=True):
        per_channel = []
        for a, b in zip(xi, yi, strict=True):
            mx, my = blur(a), blur(b)
            vx, vy, cxy = blur(a * a) - mx**2, blur(b * b) - my**2, blur(a * b) - mx * my
            s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            per_channel.append(s[5:-5, 5:-5].mean())
        expected.append(np.mean(per_channel))
    ours = ssim(torch.from_numpy(x).to(torch.uint8), torch.from_numpy(y).to(torch.uint8))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-10)


class ShiftDenoiser:
    """Predicts the last conditioning frame plus ``levels`` 8-bit levels (a stand-in for a world model)."""

    def __init__(self, levels: int, num_cond: int = 4) -> None:
        self.levels = levels
        self.cfg = SimpleNamespace(num_cond_frames=num_cond)
        self.calls: list[int] = []

    def sampler(self, cfg: object) -> ShiftDenoiser:
        return self  # its own frame sampler: nothing to schedule

    def predict_next(self, obs: Tensor, act: Tensor, generator: object, callback: object = None) -> Tensor:
        assert obs.shape[:2] == act.shape and obs.shape[1] == self.cfg.num_cond_frames
        self.calls.append(obs.size(0))
        return obs[:, -1] + self.levels / 127.5


def ramp_episode(length: int, start_level: int = 10) -> Episode:
    """Frame t is uniformly ``start_level + t`` (8-bit levels)."""
    levels = (start_level + np.arange(length + 1)).astype(np.uint8)
    obs = np.broadcast_to(levels[:, None, None, None], (length + 1, 16, 16, 3)).copy()
    zeros = np.zeros(length)
    return Episode(obs, zeros.astype(np.int64), zeros.astype(np.float32), zeros > 1, zeros > 1)


def test_horizons_line_up_with_real_frames() -> None:
    """A model that adds one level per step is exact at every horizon, one-step and autoregressive; the
    copy baseline is h levels off at horizon h autoregressively, 1 level off one-step."""
    episodes = [ramp_episode(30), ramp_episode(12, start_level=50)]
    curves = evaluate_trajectories(
        ShiftDenoiser(1),
        SamplerConfig(),
        episodes,
        20,
        device=torch.device("cpu"),
        generator=None,
        batch_size=7,
    )
    for mode in ("one_step", "autoregressive"):
        means = curves[mode].means()
        assert means["psnr"] == pytest.approx([PSNR_MAX] * 20)
        assert means["ssim"] == pytest.approx([1.0] * 20)
    # Episode 1 (12 steps) allows 12 - 4 + 1 = 9 predictions, episode 0 all 20.
    assert curves["one_step"].counts.tolist() == [2] * 9 + [1] * 11
    assert curves["autoregressive"].counts.tolist() == curves["one_step"].counts.tolist()

    base = copy_last_frame_curves(episodes, 4, 20)
    assert base["one_step"].means()["psnr"] == pytest.approx([ONE_LEVEL_PSNR] * 20)
    expected = [ONE_LEVEL_PSNR - 20 * math.log10(h) for h in range(1, 21)]
    assert base["autoregressive"].means()["psnr"] == pytest.approx(expected)


def test_autoregressive_errors_compound() -> None:
    """Two levels per step: one-step predictions are 1 level off, autoregressive ones h levels at horizon
    h (each conditioned on the model's own previous prediction)."""
    model = ShiftDenoiser(2)
    curves = evaluate_trajectories(
        model,
        SamplerConfig(),
        [ramp_episode(40)],
        30,
        device=torch.device("cpu"),
        generator=None,
        batch_size=64,
    )
    assert curves["one_step"].means()["psnr"] == pytest.approx([ONE_LEVEL_PSNR] * 30)
    expected = [ONE_LEVEL_PSNR - 20 * math.log10(h) for h in range(1, 31)]
    assert curves["autoregressive"].means()["psnr"] == pytest.approx(expected)
    assert curves["autoregressive"].means()["mse"] == pytest.approx([h**2 for h in range(1, 31)])
    assert model.calls[0] == 30  # the 30 one-step predictions in one batch


SMOKE = ["game=Breakout", "preset=smoke", "seed=2", "device=cpu"]


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
    args = [
        "wm-eval",
        str(untrained_run),
        "--horizons",
        "1",
        "5",
        "15",
        "100000",
        "--denoising-steps",
        "1",
        "2",
    ]
    assert main([*args, "--episodes", "1", "--device", "cpu", "--out-dir", str(out)]) == 0
    report = load_strict_json(out / "wm_quality.json")
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
        assert "abs_error_predicted" not in detection and "abs_error_real" not in detection  # value models'
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


# ---------------------------------------------------------------------------------------------- engines


def test_wm_eval_engine_matches_engine_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An engine's curves: at the horizons, the numbers of 'diffworld engine eval' with the same seed, and at
    every step up to the longest trajectory, low resolution and upsampled, engine and baseline."""
    from diffworld.engine.quality import BASELINE, ENGINE

    engine = engine_folder(tmp_path / "engine", bar_dataset(tmp_path / "bars"))
    common = ["--horizons", "1", "5", "12", "--device", "cpu", "--seed", "3"]
    assert main(["engine", "eval", str(engine), *common, "--out", str(tmp_path / "q.json")]) == 0
    expected = load_strict_json(tmp_path / "q.json")
    assert main(["wm-eval", str(engine), *common, "--denoising-steps", "2", "1"]) == 0
    assert "upsampled PSNR: h1" in capsys.readouterr().out
    out = engine / "wm_eval"
    assert (out / "wm_quality.png").stat().st_size > 0
    report = load_strict_json(out / "wm_quality.json")
    assert report["kind"] == "engine" and report["horizons"] == [1, 5, 12]
    assert [e["denoising_steps"] for e in report["engines"]] == [2, 1]
    own = report["engines"][1]
    assert expected["denoising_steps"] == 1  # the smoke engine's own
    for key in ("horizons", "trajectories", "context_frames", "engine", "dataset", "seed"):
        assert own[key] == expected[key], key
    # 2 test episodes of 16 frames, context 2: trajectories of 12 steps from frame 0, then 2 from frame 12.
    assert own["trajectories"] == {"1": 4, "5": 2, "12": 2}
    assert own["per_step_trajectories"] == [4, 4] + [2] * 10
    for res in ("low_res", "full_res"):
        for who in (ENGINE, BASELINE):
            assert own[res][who] == expected[res][who], (res, who)
            for metric, values in own[res]["per_step"][who].items():
                assert len(values) == 12
                assert [values[h - 1] for h in (1, 5, 12)] == list(own[res][who][metric].values())
    two = report["engines"][0]
    assert two["trajectories"] == own["trajectories"] and two["low_res"][BASELINE] == own["low_res"][BASELINE]


def test_wm_eval_engine_defaults_to_the_horizons_of_engine_eval(tmp_path: Path) -> None:
    engine = engine_folder(tmp_path / "engine", bar_dataset(tmp_path / "bars"))
    assert main(["wm-eval", str(engine), "--device", "cpu", "--trajectories", "2"]) == 0
    assert load_strict_json(engine / "wm_eval" / "wm_quality.json")["horizons"] == [1, 10, 100]


def test_wm_eval_engine_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bar_dataset(tmp_path / "bars")
    engine = str(engine_folder(tmp_path / "engine", data))
    assert "separate calls" in fails_in_one_line(["wm-eval", engine, str(data)], capsys)
    assert "--episodes are for Atari runs" in fails_in_one_line(
        ["wm-eval", engine, "--episodes", "2"], capsys
    )
    assert "no dataset.json" in fails_in_one_line(["wm-eval", engine, "--data", engine], capsys)
    assert not (Path(engine) / "wm_eval").exists()
