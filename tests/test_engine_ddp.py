"""Data-parallel engine training (docs/engine.md, "Multi-GPU"): two CPU processes with gloo take the same loss
and end with the same parameters as one process on the same global batch; under ``torchrun``, process 0
alone writes the run folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from diffworld.data.actions import ActionSpec, bins, keys
from diffworld.data.batch import Batch
from diffworld.engine.config import EngineDenoiserConfig
from diffworld.engine.denoiser import EngineDenoiser
from diffworld.fitting import distributed
from diffworld.fitting.optim import make_optimizer, make_warmup_scheduler
from diffworld.fitting.update import train_updates
from diffworld.run.metrics_file import read_metrics

SPEC = ActionSpec.of(keys(["w", "a"]), bins("mouse", [-1.0, 0.0, 1.0]))
NUM_UPDATES = 3
WORLD_SIZE = 2


def model_cfg() -> EngineDenoiserConfig:
    cfg = EngineDenoiserConfig(
        num_cond_frames=2, cond_channels=16, channels=[8, 8], depths=[1, 1], attn_depths=[False, False]
    )
    cfg.training.num_autoregressive_steps = 2
    cfg.optimizer.warmup_steps = 1
    cfg.optimizer.lr = 1e-3
    return cfg


def global_batches() -> list[Batch]:
    """One global batch of 4 segments per update."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(NUM_UPDATES):
        pressed = torch.randint(0, 2, (4, 4, 2), generator=g)
        act = torch.cat([pressed, torch.randint(0, 3, (4, 4, 1), generator=g)], 2).float()
        obs = torch.rand(4, 4, 3, 8, 12, generator=g) * 2 - 1
        out.append(Batch(obs=obs, act=act, frame_mask=torch.ones(4, 4, dtype=torch.bool)))
    return out


def share(batch: Batch, part: int) -> Batch:
    """Process ``part``'s half of a global batch."""
    rows = slice(2 * part, 2 * part + 2)
    return Batch(obs=batch.obs[rows], act=batch.act[rows], frame_mask=batch.frame_mask[rows])


class Shares:
    """The shares of the global batches, in order; each batch's noise drawn from a seed of its own (its update
    and share), so that one process and two draw the same noise for the same samples."""

    def __init__(self, shares: list[tuple[int, int, Batch]]) -> None:
        self.shares = shares
        self.next = 0

    def sample(self) -> Batch:
        update, part, batch = self.shares[self.next]
        self.next += 1
        torch.manual_seed(1000 * update + part)
        return batch

    def batches_left(self) -> int:
        return len(self.shares) - self.next


def train(
    replica: torch.nn.Module, model: EngineDenoiser, batches: Shares, grad_acc_steps: int
) -> dict[str, float]:
    optimizer = make_optimizer(model, model.cfg.optimizer)
    scheduler = make_warmup_scheduler(optimizer, model.cfg.optimizer.warmup_steps)
    result = train_updates(
        replica,
        batches,
        optimizer,
        scheduler,
        steps=NUM_UPDATES,
        grad_acc_steps=grad_acc_steps,
        max_grad_norm=1.0,
        autocast=nullcontext,
    )
    assert result.num_updates == NUM_UPDATES
    return result.metrics


def _process(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    processes = distributed.launched_processes()
    device = distributed.process_device("cpu", processes)
    distributed.start(processes, device)
    try:
        torch.manual_seed(0)
        model = EngineDenoiser(model_cfg(), SPEC)
        replica = distributed.wrap(model, processes, device)
        shares = Shares([(u, rank, share(b, rank)) for u, b in enumerate(global_batches())])
        metrics = distributed.mean_over_processes(train(replica, model, shares, 1), processes)
        if processes.is_main:
            torch.save({"metrics": metrics, "params": model.state_dict()}, out)
    finally:
        distributed.stop(processes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_match_one_on_the_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_process, args=(free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    ddp: dict[str, Any] = torch.load(out, weights_only=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = EngineDenoiser(model_cfg(), SPEC)
        initial = {key: value.clone() for key, value in model.state_dict().items()}
        # One process: each update accumulates the two shares of its global batch.
        parts = [(u, part, share(b, part)) for u, b in enumerate(global_batches()) for part in (0, 1)]
        shares = Shares(parts)
        metrics = train(model, model, shares, grad_acc_steps=WORLD_SIZE)
    finally:
        torch.set_num_threads(threads)

    assert metrics.keys() == ddp["metrics"].keys()
    for key, value in metrics.items():
        assert ddp["metrics"][key] == pytest.approx(value, rel=1e-5), key
    changed = 0
    for key, value in model.state_dict().items():
        torch.testing.assert_close(ddp["params"][key], value, rtol=1e-5, atol=1e-6, msg=key)
        changed += not torch.equal(value, initial[key])
    assert changed > 0


def test_torchrun_trains_and_process_0_alone_writes_the_run(tmp_path: Path) -> None:
    from test_engine_training import write_dataset

    data = write_dataset(tmp_path / "data")
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        "-m",
        "diffworld",
        "engine",
        "train",
        f"data={data}",
        "preset=smoke",
        f"run_dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Run folder:") == 1
    records = read_metrics(run_dir)
    assert [r["updates"] for r in records if "denoiser/train/loss" in r] == [2, 4, 6]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["state.backup.pt", "state.pt"]
