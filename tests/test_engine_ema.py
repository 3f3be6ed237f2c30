"""The engine's exponential moving average of weights (``training.ema_decay``, docs/engine.md, "Training"):
the average against an independent computation, training and checkpoints without it as before, the average of
the unwrapped models under torchrun, and trained engines opened with it (or without it, for checkpoints that
have none). A killed run with it resumes as an unbroken one: tests/test_engine_training.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from diffworld.config.loading import ConfigError
from diffworld.engine.config import build_engine_config, load_engine_config
from diffworld.engine.open_engine import open_engine
from diffworld.engine.quality import QualitySettings, evaluate_engine, quality_metrics
from diffworld.engine.trained import load_trained_engine
from diffworld.engine.trainer import ENGINE_STATE_KEYS, EngineTrainer, quality_seed
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.metrics_file import read_metrics
from test_engine_ddp import free_port
from test_engine_training import _records, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = ("denoiser", "upsampler")
EMA = ("denoiser.training.ema_decay=0.5", "upsampler.training.ema_decay=0.5")
"""A decay that makes the average differ from the live weights within a few updates."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("engine") / "bars")


def _checkpoint(run_dir: Path) -> dict[str, Any]:
    state, _ = load_checkpoint(run_dir / "checkpoints")
    return state


def _train(dataset: Path, run_dir: Path, *overrides: str) -> dict[str, Any]:
    """A smoke run of 6 updates (tests at 3 and 6, quality included); its last checkpoint."""
    cfg = build_engine_config([f"data={dataset}", "preset=smoke", f"run_dir={run_dir}", *overrides])
    EngineTrainer(cfg, run_dir).run()
    return _checkpoint(run_dir)


def _average_weights(saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's weights in an ``AveragedModel``'s state (its copy of the model is its ``module``)."""
    return {key.removeprefix("module."): value for key, value in saved.items() if key.startswith("module.")}


def _assert_equal(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], what: str) -> None:
    assert ours.keys() == theirs.keys(), what
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), f"{what}: {key}"


@pytest.fixture(scope="module")
def runs(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same smoke run without an average and with one."""
    root = tmp_path_factory.mktemp("runs")
    _train(dataset, root / "off")
    _train(dataset, root / "on", *EMA)
    return {"off": root / "off", "on": root / "on"}


def test_the_average_is_decay_times_the_average_plus_the_rest_of_the_new_weights(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint after every update: record there each model's live weights and average.
    live: list[dict[str, dict[str, torch.Tensor]]] = []
    averages: list[dict[str, dict[str, torch.Tensor]]] = []
    save = EngineTrainer._save_checkpoint

    def recording(self: EngineTrainer) -> None:
        for out, module in ((live, "model"), (averages, "ema")):
            out.append(
                {
                    n: {k: v.clone() for k, v in getattr(c, module).state_dict().items()}
                    for n, c in self.slots.items()
                }
            )
        save(self)

    monkeypatch.setattr(EngineTrainer, "_save_checkpoint", recording)
    decay = 0.7
    overrides = [f"{name}.training.ema_decay={decay}" for name in MODELS]
    every = ["training.num_updates=4", "training.checkpoint_every=1", "training.log_every=1"]
    state = _train(dataset, tmp_path / "run", *overrides, *every, "training.quality_trajectories=0")
    assert len(live) == 5  # updates 0 (the first checkpoint), 1, 2, 3, 4

    for name in MODELS:
        weights = [w[name] for w in live]
        recorded = [a[name] for a in averages]
        assert [int(a["n_averaged"]) for a in recorded] == [0, 1, 2, 3, 4]
        # AveragedModel: its first update copies the weights (exactly), each later one averages.
        expected = {key: value.clone() for key, value in weights[1].items()}
        _assert_equal(_average_weights(recorded[1]), expected, f"{name} after update 1")
        for k in (2, 3, 4):
            expected = {key: decay * expected[key] + (1 - decay) * weights[k][key] for key in expected}
            average = _average_weights(recorded[k])
            assert average.keys() == expected.keys()
            for key, value in expected.items():
                torch.testing.assert_close(
                    average[key], value, rtol=1e-6, atol=1e-7, msg=f"{name}.{key} @{k}"
                )
        # The checkpoint holds the last one; the average is not the last weights.
        _assert_equal(state["ema"][name], recorded[4], f"{name} saved average")
        _assert_equal(state["models"][name], weights[4], f"{name} live weights")
        assert any(not torch.equal(value, weights[4][key]) for key, value in expected.items())
        # The buffers (the Fourier features' frequencies, constant) are averaged too: they stay as they are.
        for key in ("net.noise_emb.weight", "net.noise_cond_emb.weight"):
            assert torch.equal(_average_weights(recorded[4])[key], weights[0][key])


def test_without_an_average_training_and_checkpoints_are_as_before(runs: dict[str, Path]) -> None:
    off, on = _checkpoint(runs["off"]), _checkpoint(runs["on"])
    # Without: no new key (so the same checkpoint as before the option), with: the averages under "ema".
    assert set(off) == {*ENGINE_STATE_KEYS, "world_size"}
    assert set(on) == {*ENGINE_STATE_KEYS, "world_size", "ema"} and set(on["ema"]) == set(MODELS)
    # The average draws nothing and changes no training state: the same live weights, optimizers, training
    # metrics and random streams; the tests measure the average, so their losses differ.
    for name in MODELS:
        _assert_equal(on["models"][name], off["models"][name], name)
    assert on["pending_metrics"] == off["pending_metrics"] and on["updates"] == off["updates"] == 6
    assert torch.equal(on["processes"][0]["rng"]["torch"], off["processes"][0]["rng"]["torch"])
    with_avg, without = _records(runs["on"]), _records(runs["off"])

    def training(records: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if "/test/" not in k} for r in records]

    assert training(with_avg) == training(without)
    tested = [
        (a["denoiser/test/loss"], b["denoiser/test/loss"])
        for a, b in zip(with_avg, without, strict=True)
        if "denoiser/test/loss" in a
    ]
    assert len(tested) == 2 and all(a != b for a, b in tested)
    # config.yaml: the key, null without an average.
    assert load_engine_config(runs["off"] / "config.yaml").denoiser.training.ema_decay is None
    assert load_engine_config(runs["on"] / "config.yaml").upsampler.training.ema_decay == 0.5  # type: ignore[union-attr]


def test_a_trained_engine_plays_with_the_average(runs: dict[str, Path], tmp_path: Path) -> None:
    state = _checkpoint(runs["on"])
    for engine in (load_trained_engine(runs["on"]), open_engine(runs["on"], "cpu")):
        assert engine.weights == "ema"
        assert engine.upsampler is not None
        for name, model in (("denoiser", engine.denoiser), ("upsampler", engine.upsampler)):
            ours = model.state_dict()
            _assert_equal(ours, _average_weights(state["ema"][name]), name)
            assert any(not torch.equal(ours[k], v) for k, v in state["models"][name].items())
    # The quality logged at the last test is 'engine eval' of the final checkpoint, which says its weights.
    report, _ = evaluate_engine(
        runs["on"],
        tmp_path / "q.json",
        QualitySettings(horizons=[1, 10], max_trajectories=2, seed=quality_seed(0)),
    )
    assert report["weights"] == "ema"
    logged = {k: v for k, v in read_metrics(runs["on"])[-1].items() if k.startswith("engine/")}
    assert logged and logged == quality_metrics(report, "engine/test")


def test_an_engine_without_an_average_opens_with_its_live_weights(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    # A run folder of before the option: no ema_decay in config.yaml, no "ema" in the checkpoint.
    config = runs["off"] / "config.yaml"
    text = config.read_text()
    assert text.count("ema_decay: null") == 2
    config.write_text("".join(line for line in text.splitlines(keepends=True) if "ema_decay" not in line))
    cfg = load_engine_config(config)
    assert cfg.denoiser.training.ema_decay is None and cfg.upsampler is not None
    assert cfg.upsampler.training.ema_decay is None
    state = _checkpoint(runs["off"])
    engine = open_engine(runs["off"], "cpu")
    assert engine.weights == "live" and engine.upsampler is not None
    _assert_equal(engine.denoiser.state_dict(), state["models"]["denoiser"], "denoiser")
    _assert_equal(engine.upsampler.state_dict(), state["models"]["upsampler"], "upsampler")


def test_presets_and_bad_decays(dataset: Path) -> None:
    def cfg(*args: str) -> Any:
        return build_engine_config([f"data={dataset}", *args])

    csgo, cpu = cfg(), cfg("preset=cpu")
    assert csgo.denoiser.training.ema_decay is None and csgo.upsampler.training.ema_decay is None
    assert cpu.denoiser.training.ema_decay == 0.999 and cpu.upsampler.training.ema_decay == 0.999
    assert cfg("preset=cpu", "denoiser.training.ema_decay=null").denoiser.training.ema_decay is None
    for bad in ("1.0", "0", "-0.5"):
        with pytest.raises(ConfigError, match="ema_decay must be in"):
            cfg(f"denoiser.training.ema_decay={bad}")


def test_torchrun_averages_the_unwrapped_models(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--master-port", str(free_port()), "-m", "diffworld", "engine", "train"]
    command += [f"data={dataset}", "preset=smoke", f"run_dir={run_dir}", *EMA]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = _checkpoint(run_dir)
    for name in MODELS:
        # The model's own keys (an average of the DDP wrapper would have them under "module.module.").
        assert _average_weights(state["ema"][name]).keys() == state["models"][name].keys()
        assert int(state["ema"][name]["n_averaged"]) == 6
    engine = open_engine(run_dir, "cpu")
    assert engine.weights == "ema"
    _assert_equal(engine.denoiser.state_dict(), _average_weights(state["ema"]["denoiser"]), "denoiser")
