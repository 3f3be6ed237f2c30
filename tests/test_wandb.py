"""``logging.wandb=true``: the run's records and configuration go to Weights & Biases (offline here: no
network is assumed), a resumed run continues the same W&B run, and without the package the command says so
in one line."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diffworld.agent.trainer import Trainer
from diffworld.cli import main
from diffworld.config import build_config
from diffworld.fitting.wandb_logger import WANDB_ID_FILE
from diffworld.run.metrics_file import read_metrics
from run_helpers import new_run

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402 (only once wandb is known to be installed)

# W&B's run files are LevelDB logs: records in blocks of 32 KiB, each chunk with a 7-byte header.
BLOCK = 32768


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a W&B run file (``run-<id>.wandb``)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # too little room left for a header: the block is padded
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def items(update: Any) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}


def history_and_config(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    history: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(items(record.history.item))
        elif kind == "run":
            config |= items(record.run.config.update)
        elif kind == "config":
            config |= items(record.config.update)
    return history, config


def test_offline_run_holds_the_metrics_and_config_and_resumes_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    overrides = ["logging.wandb=true", "logging.wandb_project=test", "logging.tensorboard=false", "seed=3"]
    run_dir = new_run(tmp_path / "run", *overrides)  # stopped after its first checkpoint
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    cfg = build_config(["game=Catch", "preset=smoke", f"run_dir={run_dir}", *overrides])
    Trainer(cfg, run_dir, resume=True).run()
    wandb.teardown()  # W&B's service process writes the run files until it stops

    runs = sorted((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*"))
    # One W&B run, resumed. W&B adds "-1" to the second folder's name when both start in the same second.
    assert len(runs) == 2 and all(re.search(rf"-{run_id}(-\d+)?$", r.name) for r in runs), runs
    history, config = history_and_config(runs[-1] / f"run-{run_id}.wandb")
    records = read_metrics(run_dir)
    assert len(records) > 3
    for index, (record, logged) in enumerate(zip(records, history, strict=True)):
        assert {key: logged[key] for key in record} == record
        assert logged["_step"] == index
    assert "actor_critic/train/loss" in history[-2] and "evaluation/final/return_mean" in history[-1]
    assert config["game"] == "Catch" and config["seed"] == 3
    assert config["logging"]["wandb"] is True and config["collection"] == json.loads(
        json.dumps(vars(cfg.collection))
    )


def test_without_wandb_the_command_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "wandb" else find_spec(name, *args)
    )
    run_dir = tmp_path / "run"
    argv = ["train", "game=Catch", "preset=smoke", f"run_dir={run_dir}", "logging.wandb=true"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'diffworld[wandb]'" in err
    assert not run_dir.exists()
