"""``diffworld train --branch``: a run started from another run's last checkpoint with settings changed.

A branch that only extends the real-step budget trains what one unbroken run with that budget trains (the
same weights, dataset and metrics), so that branches of one checkpoint differ by their overrides alone; a
branch with the world model's updates set to 0 keeps the world model as it was; bad branches fail in one
line and leave the source untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from diffworld.agent.branch import BRANCH_FILE
from diffworld.cli import main
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.metrics_file import read_metrics
from run_helpers import snapshot, start_holder

# Catch at the smoke preset: 100 initial steps, then 50 per epoch, no final epochs: SHORT ends after 2
# epochs, LONG after 4, and a test every 2.
ARGS = [
    "game=Catch",
    "preset=smoke",
    "seed=3",
    "collection.initial_max_steps=100",
    "training.num_final_epochs=0",
]
SHORT, LONG = 200, 300


def _train(*args: str) -> None:
    assert main(["train", *args]) == 0


def _agent(run_dir: Path) -> dict[str, torch.Tensor]:
    state, _ = load_checkpoint(run_dir / "checkpoints")
    return state["agent"]


def _comparable(run_dir: Path) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if not k.startswith(("time/", "evaluation/final"))}
        for r in read_metrics(run_dir)
        if not any(k.startswith("evaluation/final") for k in r)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("branch")
    source, unbroken = root / "source", root / "unbroken"
    _train(*ARGS, f"collection.total_env_steps={SHORT}", f"run_dir={source}")
    _train(*ARGS, f"collection.total_env_steps={LONG}", f"run_dir={unbroken}")
    return {"root": root, "source": source, "unbroken": unbroken}


def test_a_longer_branch_trains_what_an_unbroken_run_trains(runs: dict[str, Path]) -> None:
    before = snapshot(runs["source"])
    branch = runs["root"] / "longer"
    _train("--branch", str(runs["source"]), f"collection.total_env_steps={LONG}", f"run_dir={branch}")
    assert snapshot(runs["source"]) == before  # the source is only read

    ours, theirs = _agent(branch), _agent(runs["unbroken"])
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    # The source's records up to its checkpoint (its final evaluation left aside), then the branch's own.
    assert _comparable(branch) == _comparable(runs["unbroken"])
    assert read_metrics(branch)[-1]["env_steps"] == LONG

    record = json.loads((branch / BRANCH_FILE).read_text())
    assert record["source"] == str(runs["source"].resolve())
    assert record["env_steps"] == SHORT and record["overrides"][0] == f"collection.total_env_steps={LONG}"
    assert (branch / "eval.json").is_file()  # the branch ran its own final evaluation


def test_a_branch_with_the_world_model_frozen_keeps_it(runs: dict[str, Path]) -> None:
    branch = runs["root"] / "frozen"
    _train(
        "--branch",
        str(runs["source"]),
        f"collection.total_env_steps={LONG}",
        "denoiser.training.steps_per_epoch=0",
        "reward_model.training.steps_per_epoch=0",
        f"run_dir={branch}",
    )
    before, after = _agent(runs["source"]), _agent(branch)
    changed = {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"actor_critic"}
    counters = load_checkpoint(branch / "checkpoints")[0]["counters"]
    source_counters = load_checkpoint(runs["source"] / "checkpoints")[0]["counters"]
    assert counters["num_updates"]["denoiser"] == source_counters["num_updates"]["denoiser"]
    assert counters["num_updates"]["actor_critic"] > source_counters["num_updates"]["actor_critic"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["game=Pong"], "--branch cannot change 'game'"),
        (["preset=quick"], "--branch cannot change 'preset'"),
        (["collection.totl_env_steps=5"], "Unknown configuration key"),
    ],
)
def test_bad_branch_overrides_fail_in_one_line(
    runs: dict[str, Path], args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    branch = runs["root"] / "bad"
    assert main(["train", "--branch", str(runs["source"]), *args, f"run_dir={branch}"]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not branch.exists()


def test_a_branch_into_an_existing_folder_or_from_a_live_run_is_refused(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--branch", str(runs["source"]), f"run_dir={runs['unbroken']}"]) != 0
    assert "already exists" in capsys.readouterr().err
    holder = start_holder(runs["source"])
    try:
        assert main(["train", "--branch", str(runs["source"]), f"run_dir={runs['root'] / 'live'}"]) != 0
    finally:
        holder.kill()
        holder.wait()
    assert "is being trained by" in capsys.readouterr().err
    assert main(["train", "--branch", str(runs["source"]), "--resume", str(runs["source"])]) == 2


def test_a_branch_trains_with_its_own_learning_rate(runs: dict[str, Path]) -> None:
    branch = runs["root"] / "slower"
    _train(
        "--branch",
        str(runs["source"]),
        f"collection.total_env_steps={LONG}",
        "actor_critic.optimizer.lr=1e-5",
        "actor_critic.optimizer.weight_decay=0.5",
        f"run_dir={branch}",
    )
    state = load_checkpoint(branch / "checkpoints")[0]
    source = load_checkpoint(runs["source"] / "checkpoints")[0]
    decay, no_decay = state["optimizers"]["actor_critic"]["param_groups"]
    (source_group, _) = source["optimizers"]["actor_critic"]["param_groups"]
    # The new rate (its warm-up factor applied, the same for both groups), not the source's.
    assert decay["initial_lr"] == no_decay["initial_lr"] == 1e-5 != source_group["initial_lr"]
    assert decay["lr"] == no_decay["lr"] <= 1e-5
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.5, 0.0)
    assert state["schedulers"]["actor_critic"]["base_lrs"] == [1e-5, 1e-5]
    lr = source["optimizers"]["denoiser"]["param_groups"][0]["initial_lr"]
    assert state["optimizers"]["denoiser"]["param_groups"][0]["initial_lr"] == lr  # not overridden: kept
    ours, theirs = _agent(branch), _agent(runs["unbroken"])
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours if k.startswith("actor_critic."))
