"""Learning curves as a PNG from metrics.jsonl, several runs on one figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from diffworld.cli import main
from diffworld.errors import UserError

pytest.importorskip("matplotlib")

from diffworld.viz.plots import plot_runs, run_labels, series


def _fake_run(path: Path, slope: float) -> Path:
    path.mkdir(parents=True)
    records = [{"epoch": 0, "env_steps": 100, "collection/train/return_mean": 0.0}]
    for epoch in range(1, 21):
        record = {
            "epoch": epoch,
            "env_steps": 100 + 50 * min(epoch, 15),  # the last epochs train without collecting
            "denoiser/train/loss_denoising": 1 / epoch,
            "reward_model/train/loss": 0.5 / epoch,
            "actor_critic/train/loss": slope / epoch,
            "actor_critic/train/entropy": 1.3 - 0.01 * epoch,
            "collection/train/return_mean": slope * epoch,
        }
        if epoch % 5 == 0:
            record |= {
                "collection/test/return_mean": slope * epoch + 1,
                "denoiser/test/loss_denoising": 1.2 / epoch,
            }
        records.append(record)
    records.append({"epoch": 20, "env_steps": 850, "evaluation/final/return_mean": slope * 21})
    lines = [json.dumps(r) for r in records]
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"epoch": 21, "env_st')  # a crash mid-line
    return path


def test_two_runs_on_one_png(tmp_path: Path) -> None:
    a = _fake_run(tmp_path / "Boxing" / "run_a", 1.0)
    b = _fake_run(tmp_path / "Boxing" / "run_b", 2.0)
    out = plot_runs([a, b], tmp_path / "plots" / "curves.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 1000 and image.size[1] > 600
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # curves drawn, not a blank canvas

    xs, ys = series(
        json.loads("[" + ",".join((a / "metrics.jsonl").read_text().splitlines()[:-1]) + "]"),
        "collection/test/return_mean",
    )
    assert xs == [350.0, 600.0, 850.0, 850.0] and ys == [6.0, 11.0, 16.0, 21.0]
    assert run_labels([a, b]) == ["run_a", "run_b"]
    assert run_labels([a, tmp_path / "Pong" / "run_a"]) == ["Boxing/run_a", "Pong/run_a"]


def test_cli_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _fake_run(tmp_path / "a", 1.0)
    b = _fake_run(tmp_path / "b", -1.0)
    out = tmp_path / "curves.png"
    assert main(["plot", str(a), str(b), "--out", str(out), "--x", "epoch"]) == 0
    assert out.is_file() and "Wrote" in capsys.readouterr().out
    keys = ["actor_critic/train/entropy", "no/such/key"]
    assert main(["plot", str(a), "--out", str(tmp_path / "k.png"), "--keys", *keys]) == 0
    with Image.open(tmp_path / "k.png") as image:
        assert image.format == "PNG"
    assert main(["plot", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "No metrics" in capsys.readouterr().err


def _fake_engine_run(path: Path) -> Path:
    path.mkdir(parents=True)
    records = []
    for updates in range(25, 525, 25):
        record: dict[str, float] = {"updates": updates, "denoiser/train/loss": 1 / updates}
        if updates % 100 == 0:
            record |= {
                "denoiser/test/loss": 1.1 / updates,
                "engine/test/psnr_full_h10": 20 + updates / 100,
                "engine/test/psnr_full_h10_copy_last_frame": 22.0,
                "engine/test/psnr_full_h10_blur": 21.0,
                "engine/test/psnr_full_h10_mean_frame": 18.0,
            }
        records.append(record)
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_an_engine_run_against_its_updates(tmp_path: Path) -> None:
    engine = _fake_engine_run(tmp_path / "engine")
    out = plot_runs([engine], tmp_path / "engine.png")
    with Image.open(out) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50
    records = [json.loads(line) for line in (engine / "metrics.jsonl").read_text().splitlines()]
    assert series(records, "engine/test/psnr_full_h10", "updates") == (
        [100.0, 200.0, 300.0, 400.0, 500.0],
        [21.0, 22.0, 23.0, 24.0, 25.0],
    )
    with pytest.raises(UserError, match="either engine runs or agent runs"):
        plot_runs([engine, _fake_run(tmp_path / "agent", 1.0)], tmp_path / "both.png")
