"""What earlier versions wrote, read by this one: every checked-in ``config.yaml`` of ``benchmarks/results``
(agent runs with ``denoiser.num_autoregressive_steps``, engine runs without ``convention``), an old run
resumed, an old agent folder, the old key given as an override. The renamed key lands at its new address,
with one warning line per file that names the file and the new key. And the earlier Python API where its
meaning changed: a positional ``Batch`` is refused; ``EngineModelTrainingConfig()`` has the CS:GO batches."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from diffworld.config import build_config, load_config_file
from diffworld.config.loading import OVERRIDES, ConfigError
from diffworld.config.schema import DiffusionConvention, GradAccumulation
from diffworld.engine.config import EngineModelTrainingConfig, LowResFilter, load_engine_config

SAID = "(renamed in this version; read at the new address)"
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
CONFIGS = sorted(RESULTS.rglob("config.yaml"))
OLD = "denoiser.num_autoregressive_steps"
NEW = "denoiser.training.num_autoregressive_steps"
REFUSED_BEFORE_TOO = {"quick_boxing_s0": "training.compile"}
"""Result folders whose configuration the version that wrote the others refused already (a key removed
before them): still refused, with the key named."""


def _renamed_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "diffworld.config.loading"]


def test_the_checked_in_results_hold_both_products() -> None:
    kinds = {"game" in yaml.safe_load(path.read_text()) for path in CONFIGS}
    assert len(CONFIGS) >= 20 and kinds == {True, False}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: str(path.parent.relative_to(RESULTS)))
def test_result_configs_of_earlier_versions_load(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = yaml.safe_load(path.read_text())
    name = str(path.parent.relative_to(RESULTS))
    caplog.set_level(logging.WARNING)
    if name in REFUSED_BEFORE_TOO:
        with pytest.raises(ConfigError, match=f"{path}: unknown key '{REFUSED_BEFORE_TOO[name]}'"):
            load_config_file(path)
        return
    if "game" in raw:  # an agent's run
        old = raw["denoiser"]["num_autoregressive_steps"]  # the former key, as every such file has it
        cfg = load_config_file(path)
        assert cfg.denoiser.training.num_autoregressive_steps == old
        assert _renamed_warnings(caplog) == [f"{path}: {OLD} is now {NEW} {SAID}"]
        assert cfg.denoiser.convention is DiffusionConvention.official
    else:  # an engine's run
        assert "convention" not in raw["denoiser"]
        engine = load_engine_config(path)
        assert engine.denoiser.convention is DiffusionConvention.official
        assert engine.low_res_filter is LowResFilter(raw.get("low_res_filter", "area"))
        steps = raw["denoiser"]["training"]["num_autoregressive_steps"]
        assert engine.denoiser.training.num_autoregressive_steps == steps
        if raw.get("upsampler") is not None:
            assert engine.upsampler is not None
            assert engine.upsampler.convention is DiffusionConvention.official
        assert _renamed_warnings(caplog) == []


def test_an_old_run_resumes_with_the_key_at_its_new_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``diffworld train --resume`` of a run whose ``config.yaml`` an earlier version wrote: the trainer gets
    the configuration with the renamed key at its new address; the file is left as it is."""
    from diffworld.cli import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(RESULTS / "quick_krull_v3_s1" / "config.yaml", run / "config.yaml")
    text = (run / "config.yaml").read_text()
    old = yaml.safe_load(text)["denoiser"]["num_autoregressive_steps"]
    started: list[tuple[Any, Path, bool]] = []

    class Trainer:
        def __init__(self, cfg: Any, run_dir: Path, resume: bool) -> None:
            started.append((cfg, run_dir, resume))

        def run(self) -> None:
            pass

    monkeypatch.setattr("diffworld.agent.trainer.Trainer", Trainer)
    caplog.set_level(logging.WARNING)
    assert main(["train", "--resume", str(run)]) == 0
    ((cfg, run_dir, resume),) = started
    assert resume and run_dir == run and cfg.game == "Krull"
    assert cfg.denoiser.training.num_autoregressive_steps == old
    (line,) = _renamed_warnings(caplog)
    assert line.startswith(f"{run / 'config.yaml'}: {OLD} is now {NEW}")
    assert (run / "config.yaml").read_text() == text


def test_an_old_agent_folder_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An agent folder as an earlier version exported it: ``agent.json``'s ``config`` with the former key and
    the weights' ``config_sha256`` computed over that configuration."""
    from diffworld.agent import (
        FORMAT,
        INFO_FILE,
        WEIGHTS_FILE,
        Agent,
        config_digest,
        export_agent,
        load_agent,
    )
    from diffworld.run.weights import weights_to_bytes

    cfg = build_config(["game=Catch", "preset=smoke", f"{NEW}=3"])
    agent = Agent.build(cfg, 3)
    folder = export_agent(agent, cfg, 3, tmp_path / "agent")
    info = json.loads((folder / INFO_FILE).read_text())
    denoiser = info["config"]["denoiser"]
    denoiser["num_autoregressive_steps"] = denoiser["training"].pop("num_autoregressive_steps")
    provenance = {"game": "Catch", "num_actions": "3", "config_sha256": config_digest(info["config"])}
    weights = weights_to_bytes(agent.state_dict(), metadata={"format": FORMAT, **provenance})
    (folder / WEIGHTS_FILE).write_bytes(weights)
    info["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    (folder / INFO_FILE).write_text(json.dumps(info))

    caplog.set_level(logging.WARNING)
    loaded, loaded_cfg, _ = load_agent(folder)
    assert loaded_cfg.denoiser.training.num_autoregressive_steps == 3
    assert _renamed_warnings(caplog) == [f"{folder / INFO_FILE} (config): {OLD} is now {NEW} {SAID}"]
    for name, tensor in agent.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_the_old_key_as_an_override(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    cfg = build_config(["game=Catch", f"{OLD}=3"])
    assert cfg.denoiser.training.num_autoregressive_steps == 3
    assert _renamed_warnings(caplog) == [f"{OVERRIDES}: {OLD} is now {NEW} {SAID}"]
    caplog.clear()
    build_config(["game=Catch", f"{NEW}=3"])
    assert _renamed_warnings(caplog) == []


def test_a_positional_batch_is_refused() -> None:
    """The former ``Batch(obs, act, rew, end, trunc, mask_padding)`` would fill other fields silently."""
    from diffworld.data.batch import Batch

    obs, act, mask = torch.zeros(1, 2, 3, 4, 4), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1)
    with pytest.raises(TypeError):
        Batch(obs, act, mask)  # type: ignore[misc]
    assert Batch(obs=obs, act=act, frame_mask=mask.bool()).step_mask is None


def test_an_engine_model_training_config_built_by_hand_has_the_csgo_batches() -> None:
    training = EngineModelTrainingConfig(ema_decay=0.999)
    assert (training.batch_size, training.grad_acc_steps, training.num_autoregressive_steps) == (16, 8, 5)
    assert training.grad_accumulation is GradAccumulation.sum


def test_the_atari_denoiser_takes_a_numpy_action_count() -> None:
    """As before: a game's action count may come as a numpy integer (``nn.Embedding`` took one)."""
    import numpy as np

    from diffworld.data.actions import ActionSpecError, Discrete
    from diffworld.models.diffusion.edm import EDMDenoiser

    cfg = build_config(["game=Catch", "preset=smoke"])
    denoiser = EDMDenoiser(cfg.denoiser, np.int64(3))
    assert denoiser.net.act_emb.weight.shape[0] == 3
    assert type(Discrete("action", np.int64(3)).n) is int
    for bad in (True, 3.0, 0):
        with pytest.raises(ActionSpecError, match="n must be an integer >= 1"):
            Discrete("action", bad)  # type: ignore[arg-type]
