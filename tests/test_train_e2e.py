"""End to end on the smoke preset: the run folder, metrics, eval.json, export/eval, reproducibility."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from diffworld.agent.trainer import Trainer
from diffworld.cli import main
from diffworld.config import build_config, load_config_file
from diffworld.data import EpisodeDataset
from diffworld.run.folder import unlock_run_dir
from diffworld.run.metrics_file import read_metrics

SMOKE = ["game=Breakout", "preset=smoke", "seed=1"]


def _train(run_dir: Path, *extra: str) -> dict[str, Any] | None:
    cfg = build_config([*SMOKE, f"run_dir={run_dir}", *extra])
    return Trainer(cfg, run_dir).run()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("smoke") / "run"
    _train(path)
    return path


def test_run_folder_contents(run_dir: Path) -> None:
    cfg = load_config_file(run_dir / "config.yaml")
    assert cfg == build_config([*SMOKE, f"run_dir={run_dir}"])
    assert (run_dir / "checkpoints" / "state.pt").is_file()
    assert (run_dir / "checkpoints" / "state.backup.pt").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("agent_epoch_*.safetensors"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "agent" / "agent.safetensors").is_file() and (
        run_dir / "agent" / "agent.json"
    ).is_file()
    dataset = EpisodeDataset.load(run_dir / "dataset" / "train")
    assert dataset.num_episodes > 0
    # Every collected step is in the dataset, those of the episode still running at the end included: it
    # stays there, open, in parts (episode_*.steps_*-*.npz) beside the whole episodes.
    records = read_metrics(run_dir)
    assert dataset.num_steps == records[-1]["env_steps"] == cfg.collection.total_env_steps
    assert dataset.open_episode_ids == [dataset.num_episodes - 1]
    assert list((run_dir / "dataset" / "train").glob(f"episode_{dataset.num_episodes - 1:06d}.steps_*.npz"))


def test_metrics(run_dir: Path) -> None:
    cfg = load_config_file(run_dir / "config.yaml")
    records = read_metrics(run_dir)
    epochs = [r for r in records if r["epoch"] > 0 and "time/epoch_seconds" in r]
    # The initial collection's last chunk fixes how many epochs collect: as many as the remaining steps fill.
    initial_steps = [r for r in records if r["epoch"] == 0][-1]["env_steps"]
    num_epochs_collect = math.ceil(
        (cfg.collection.total_env_steps - initial_steps) / cfg.collection.steps_per_epoch
    )
    assert [r["epoch"] for r in epochs] == list(range(1, len(epochs) + 1))
    assert len(epochs) >= cfg.training.num_final_epochs + 1
    assert epochs[-1]["env_steps"] == cfg.collection.total_env_steps
    for key in ("denoiser/train/loss_denoising", "reward_model/train/loss", "actor_critic/train/policy_loss"):
        assert all(key in r for r in epochs), key
    # Where an epoch's time went: each component's share (and the diagnostics') is part of the epoch's whole.
    for r in epochs:
        parts = [
            r[f"time/{name}_seconds"] for name in ("denoiser", "reward_model", "actor_critic", "diagnostics")
        ]
        assert all(t > 0 for t in parts)
        assert sum(parts) + r.get("time/test_seconds", 0) <= r["time/epoch_seconds"]
    tested = [r for r in epochs if r["epoch"] % cfg.collection.test_every_epochs == 0]
    assert tested and all(
        "collection/test/return_mean" in r and "denoiser/test/loss_denoising" in r for r in tested
    )
    # The reward model read on real and on predicted next frames of the test episodes (rates in [0, 1]; the
    # false-positive rates always have zero-reward steps to count, the recalls only where rewards came).
    for key in ("denoiser/test/reward_false_positive_rate", "reward_model/test/reward_false_positive_rate"):
        assert all(0.0 <= r[key] <= 1.0 for r in tested), key
    # Breakout's rewards are positive: a test with a positive mean return had rewarded steps to count.
    for key in ("denoiser/test/reward_recall", "reward_model/test/reward_recall"):
        assert all((key in r) == (r["collection/test/return_mean"] > 0) for r in tested), key
        assert all(0.0 <= r[key] <= 1.0 for r in tested if key in r), key
    assert all(r["env_steps"] <= cfg.collection.total_env_steps for r in records)
    # The dataset's nonzero-reward rate, the reference for actor_critic/train/reward_rate, is that of the
    # stored steps at the end of each collecting epoch; the final epochs collect nothing.
    dataset = EpisodeDataset.load(run_dir / "dataset" / "train")
    collecting = [r for r in epochs if "collection/train/dataset_reward_rate" in r]
    assert collecting and all(0.0 <= r["actor_critic/train/reward_rate"] <= 1.0 for r in epochs)
    last_rate = float((dataset.rewards != 0).mean())
    assert last_rate > 0  # this seed collects rewards: a rate stuck at 0 cannot pass the comparison below
    assert collecting[-1]["epoch"] == epochs[-1]["epoch"] - cfg.training.num_final_epochs
    assert abs(collecting[-1]["collection/train/dataset_reward_rate"] - last_rate) < 1e-9
    assert [r["epoch"] for r in collecting] == list(range(1, num_epochs_collect + 1))
    assert "evaluation/final/return_mean" in records[-1]


def test_learning_diagnostics(run_dir: Path) -> None:
    """What decides whether the agent goes on learning (``training.diagnostics``, on by default): every epoch,
    final ones included, the world model on the latest collected steps against older ones, the policy
    imagined from the latest steps, the split gradient norms; the loss's scales at every update."""
    cfg = load_config_file(run_dir / "config.yaml")
    assert cfg.training.diagnostics
    epochs = [r for r in read_metrics(run_dir) if r["epoch"] > 0 and "time/epoch_seconds" in r]
    always = [
        f"{key}_{part}"
        for key in (
            "denoiser/diagnostic/loss_denoising",
            "reward_model/diagnostic/reward_false_positive_rate",
            "denoiser/diagnostic/reward_false_positive_rate",
        )
        for part in ("recent", "old")
    ]
    always += [
        "actor_critic/diagnostic/reward_rate_recent",
        "actor_critic/diagnostic/grad_norm_actor",
        "actor_critic/diagnostic/grad_norm_critic",
        "actor_critic/train/value_abs_mean",
        "actor_critic/train/return_std",
        "actor_critic/train/advantage_std",
        "time/diagnostics_seconds",
    ]
    for key in always:
        assert all(isinstance(r.get(key), float) and math.isfinite(r[key]) for r in epochs), key
    for r in epochs:
        assert r["actor_critic/train/value_abs_mean"] >= abs(r["actor_critic/train/value"])
        assert r["actor_critic/train/return_std"] >= 0 and r["actor_critic/train/advantage_std"] >= 0
        assert 0 <= r["actor_critic/diagnostic/reward_rate_recent"] <= 1
        assert r["actor_critic/diagnostic/grad_norm_critic"] > 0
    # The real reward rate of each collecting epoch's steps, the reference for the imagined rates: with the
    # dataset's rate before and after them, it accounts for the rewards the epoch added.
    collecting = [r for r in epochs if "collection/train/dataset_reward_rate" in r]
    assert all("collection/train/recent_reward_rate" in r for r in collecting)
    assert not any("collection/train/recent_reward_rate" in r for r in epochs if r not in collecting)
    assert len(collecting) >= 2
    for before, after in itertools.pairwise(collecting):
        added = after["env_steps"] - before["env_steps"]
        rewards_after = after["collection/train/dataset_reward_rate"] * after["env_steps"]
        rewards_before = before["collection/train/dataset_reward_rate"] * before["env_steps"]
        assert added == cfg.collection.steps_per_epoch
        assert after["collection/train/recent_reward_rate"] * added == pytest.approx(
            rewards_after - rewards_before, abs=1e-6
        )


def test_eval_json(run_dir: Path) -> None:
    report = json.loads((run_dir / "eval.json").read_text())
    cfg = load_config_file(run_dir / "config.yaml")
    assert report["game"] == "Breakout" and report["seed"] == 1
    assert len(report["returns"]) == report["num_episodes"] == cfg.collection.num_final_episodes
    assert report["mean"] == pytest.approx(sum(report["returns"]) / len(report["returns"]))
    assert report["hns"] == pytest.approx((report["mean"] - 1.7) / (30.5 - 1.7))
    assert report["env_steps"] == cfg.collection.total_env_steps
    assert report["train_wall_clock_seconds"] > 0


def test_export_and_eval_round_trip(run_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    assert main(["export", str(run_dir), str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["agent.json", "agent.safetensors"]
    assert main(["export", str(run_dir), str(folder)]) == 2  # never overwritten silently
    assert main(["eval", str(folder), "--episodes", "2", "--device", "cpu"]) == 0
    from_folder = json.loads((folder / "eval.json").read_text())
    out = tmp_path / "from_run.json"
    assert main(["eval", str(run_dir), "--episodes", "2", "--device", "cpu", "--out", str(out)]) == 0
    from_run = json.loads(out.read_text())
    # Same weights, same evaluation seed: the same episodes.
    assert from_folder["returns"] == from_run["returns"] and len(from_run["returns"]) == 2


def test_existing_run_folder_is_never_overwritten(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *SMOKE, f"run_dir={run_dir}"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_same_seed_same_metrics(run_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    _train(again)

    def comparable(path: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(path)]

    assert comparable(again) == comparable(run_dir)


def test_run_without_final_episodes(tmp_path: Path) -> None:
    """``collection.num_final_episodes=0`` (figures from the periodic tests only): an empty final report."""
    _train(tmp_path / "run", "collection.num_final_episodes=0")
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["returns"] == [] and report["num_episodes"] == 0 and report["hns"] is None


def test_final_epochs_resumed_measure_the_last_collection(run_dir: Path, tmp_path: Path) -> None:
    """A run resumed after its last collecting epoch measures its final epochs' diagnostics on that epoch's
    steps, as the unbroken run does: the checkpoint holds where they start."""
    path = tmp_path / "resumed"
    cfg = build_config([*SMOKE, f"run_dir={path}"])
    trainer = Trainer(cfg, path)
    trainer._initial_collection()
    while trainer.counters.epoch < trainer.counters.num_epochs_collect:
        trainer._run_epoch()
    num_collect = trainer.counters.num_epochs_collect
    trainer.logger.close()
    trainer.train_envs.close()
    trainer.test_envs.close()
    unlock_run_dir(path)
    Trainer(cfg, path, resume=True).run()

    def comparable(folder: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(folder)]

    assert comparable(path) == comparable(run_dir)
    final = [r for r in read_metrics(path) if r["epoch"] > num_collect and "time/epoch_seconds" in r]
    assert final and all("actor_critic/diagnostic/reward_rate_recent" in r for r in final)
