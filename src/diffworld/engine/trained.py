"""A trained engine loaded from its run folder, for play, evaluation and videos (docs/engine.md, "Models").

``load_trained_engine(run_dir, device)`` reads ``config.yaml``, ``action_space.json`` and the models of the
last checkpoint (weights-only, as every checkpoint); ``engine.frame_sampler()`` predicts next low-resolution
frames and ``engine.upsampling_sampler()`` makes their full-resolution versions, with the configured sampler
settings or others (more denoising steps, another s_cond). A model whose checkpoint holds an average of its
weights (``training.ema_decay``: the checkpoint's ``ema`` key) is loaded with those, else with its live
weights (``TrainedEngine.weights`` says which).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from diffworld.data.actions import ActionSpec
from diffworld.engine.config import EngineConfig, EngineSamplerConfig, load_engine_config
from diffworld.engine.denoiser import EngineDenoiser, Upsampler, UpsamplingSampler
from diffworld.engine.folder import load_action_space
from diffworld.fitting.ema import load_averaged_weights
from diffworld.models.diffusion.edm import EDMSampler
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.folder import CONFIG_FILE, checkpoint_dir

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("models", "updates")
"""What a checkpoint needs to be played (an imported model's checkpoint may hold no more)."""


@dataclass
class TrainedEngine:
    cfg: EngineConfig
    spec: ActionSpec
    denoiser: EngineDenoiser
    upsampler: Upsampler | None
    updates: int
    """Updates of each model at the checkpoint."""
    weights: str = "live"
    """``ema``: the models' averages of their weights (``training.ema_decay``); ``live``: their weights as
    the last update left them; one of each: ``denoiser: ema, upsampler: live``."""

    @property
    def num_cond_frames(self) -> int:
        """L: past frames and actions of each prediction."""
        return self.cfg.denoiser.num_cond_frames

    def frame_sampler(self, cfg: EngineSamplerConfig | None = None) -> EDMSampler:
        """``predict_next(prev_obs (B, L, 3, h, w), prev_act (B, L, D), generator)`` -> (B, 3, h, w)."""
        return self.denoiser.sampler(cfg or self.cfg.denoiser.sampler)

    def upsampling_sampler(self, cfg: EngineSamplerConfig | None = None) -> UpsamplingSampler | None:
        """``upsample(low_res_next (B, 3, h, w), prev_full (B, L_up, 3, H, W), generator)`` -> (B, 3, H, W);
        None for an engine without upsampler."""
        if self.upsampler is None or self.cfg.upsampler is None:
            return None
        return self.upsampler.sampler(cfg or self.cfg.upsampler.sampler)


def load_trained_engine(run_dir: Path, device: torch.device | str = "cpu") -> TrainedEngine:
    """The engine of ``run_dir`` at its last checkpoint, on ``device``, in evaluation mode. Raises
    ``ConfigError``, ``RunDirError`` or ``CheckpointError`` (one line each) for a folder that is not one."""
    run_dir = Path(run_dir)
    cfg = load_engine_config(run_dir / CONFIG_FILE)
    spec = load_action_space(run_dir)
    state, _ = load_checkpoint(checkpoint_dir(run_dir), REQUIRED_KEYS, map_location=device)
    averages = state.get("ema", {})
    denoiser = EngineDenoiser(cfg.denoiser, spec)
    _load_weights(denoiser, state["models"]["denoiser"], averages.get("denoiser"))
    averaged = {"denoiser": "denoiser" in averages}
    upsampler = None
    if cfg.upsampler is not None:
        upsampler = Upsampler(cfg.upsampler)
        _load_weights(upsampler, state["models"]["upsampler"], averages.get("upsampler"))
        averaged["upsampler"] = "upsampler" in averages
        upsampler.to(device).eval()
    weights = weights_name(averaged)
    logger.info("%s: the engine at %d updates, %s weights", run_dir, int(state["updates"]), weights)
    return TrainedEngine(cfg, spec, denoiser.to(device).eval(), upsampler, int(state["updates"]), weights)


def _load_weights(
    model: nn.Module, live: Mapping[str, torch.Tensor], average: dict[str, torch.Tensor] | None
) -> None:
    """The average of ``model``'s weights where the checkpoint has one, else its live weights."""
    if average is None:
        model.load_state_dict(live)
    else:
        load_averaged_weights(model, average)


def weights_name(averaged: Mapping[str, bool]) -> str:
    """What ``TrainedEngine.weights`` says of models that have (True) or lack an average of their weights."""
    if all(averaged.values()):
        return "ema"
    if not any(averaged.values()):
        return "live"
    return ", ".join(f"{name}: {'ema' if has else 'live'}" for name, has in averaged.items())
