"""A trained engine loaded from its run folder, for play, evaluation and videos (docs/engine.md, "Models").

``load_trained_engine(run_dir, device)`` reads ``config.yaml``, ``action_space.json`` and the models of the
last checkpoint (weights-only, as every checkpoint); ``engine.frame_sampler()`` predicts next low-resolution
frames and ``engine.upsampling_sampler()`` makes their full-resolution versions, with the configured sampler
settings or others (more denoising steps, another s_cond).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffworld.data.actions import ActionSpec
from diffworld.engine.config import EngineConfig, EngineSamplerConfig, load_engine_config
from diffworld.engine.denoiser import EngineDenoiser, Upsampler, UpsamplingSampler
from diffworld.engine.folder import load_action_space
from diffworld.models.diffusion.edm import EDMSampler
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.folder import CONFIG_FILE, checkpoint_dir

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
    denoiser = EngineDenoiser(cfg.denoiser, spec)
    denoiser.load_state_dict(state["models"]["denoiser"])
    upsampler = None
    if cfg.upsampler is not None:
        upsampler = Upsampler(cfg.upsampler)
        upsampler.load_state_dict(state["models"]["upsampler"])
        upsampler.to(device).eval()
    return TrainedEngine(cfg, spec, denoiser.to(device).eval(), upsampler, int(state["updates"]))
