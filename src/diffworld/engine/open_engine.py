"""An engine folder opened for evaluation, play and videos: its trained models (``load_trained_engine``),
their samplers bound together with a chosen number of denoising steps (``EngineSamplers``), and the dataset
its trajectories start from."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path

from diffworld.data.folder_store import EngineDataset
from diffworld.engine.config import EngineConfig, EngineSamplerConfig, with_low_res
from diffworld.engine.folder import is_engine_run
from diffworld.engine.imagine import EngineSamplers
from diffworld.engine.trained import TrainedEngine, load_trained_engine
from diffworld.errors import UserError
from diffworld.run.checkpoint import STATE_FILE, CheckpointError, has_checkpoint
from diffworld.run.folder import RunDirError, checkpoint_dir
from diffworld.utils.device import resolve_device


def open_engine(folder: str | Path, device: str = "auto") -> TrainedEngine:
    """The engine of ``folder`` (``diffworld engine train``'s or ``import``'s); a one-line error where
    ``folder`` is not one or its weights do not fit its configuration."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunDirError(f"No engine folder at {folder}.")
    if not is_engine_run(folder):
        raise RunDirError(
            f"{folder} is not an engine folder (it lacks config.yaml or action_space.json): give a folder "
            "of 'diffworld engine train' or 'diffworld engine import'."
        )
    if not has_checkpoint(checkpoint_dir(folder)):
        raise UserError(
            f"The engine {folder} has no checkpoint yet ({checkpoint_dir(folder) / STATE_FILE}): train it "
            "until its first checkpoint ('diffworld engine train', training.checkpoint_every) or give "
            "another engine folder."
        )
    try:
        return load_trained_engine(folder, resolve_device(device))
    except CheckpointError as e:  # a CheckpointError is a RuntimeError too, but not of the weights
        why = "; ".join(line.strip().rstrip(":") for line in str(e).splitlines()[:3])
        raise UserError(f"{why}. Restore the engine folder from a copy, or train the engine again.") from None
    except RuntimeError as e:  # load_state_dict: weights of another architecture than config.yaml's
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"The weights in {folder} do not fit its config.yaml: {first}") from None


class SamplerSettings(str, Enum):
    """The samplers an opened engine imagines with (``--sampler-settings`` of play, video, engine eval and
    wm-eval), as the official CS:GO code's ``world_model_env`` configurations."""

    fast = "fast"
    """The engine's own samplers (``config.yaml``; for the CS:GO model, the official ``fast`` file: one Euler
    step of the denoiser, one Heun step with churn of the upsampler)."""
    higher_quality = "higher_quality"
    """The official ``higher_quality`` file's changes: 3 Euler steps of the denoiser, 10 Euler steps (with
    the same churn) of the upsampler."""

    @classmethod
    def named(cls, name: str | None) -> SamplerSettings:
        """The settings ``--sampler-settings`` names, ``fast`` where it is not given."""
        return cls(name or "fast")


def sampler_configs(
    cfg: EngineConfig, settings: SamplerSettings = SamplerSettings.fast
) -> tuple[EngineSamplerConfig, EngineSamplerConfig | None]:
    """(next-frame sampler, upsampler's sampler or None) of ``cfg`` under ``settings``."""
    denoiser = cfg.denoiser.sampler
    upsampler = None if cfg.upsampler is None else cfg.upsampler.sampler
    if settings is SamplerSettings.higher_quality:
        denoiser = dataclasses.replace(denoiser, num_steps=3, order=1)
        if upsampler is not None:
            upsampler = dataclasses.replace(upsampler, num_steps=10, order=1)
    return denoiser, upsampler


def engine_samplers(
    engine: TrainedEngine,
    denoising_steps: int | None = None,
    settings: SamplerSettings = SamplerSettings.fast,
) -> EngineSamplers:
    """The engine's samplers under ``settings``; ``denoising_steps`` replaces the next-frame sampler's number
    of steps."""
    cfg, upsampler_cfg = sampler_configs(engine.cfg, settings)
    if denoising_steps is not None:
        cfg = dataclasses.replace(cfg, num_steps=denoising_steps)
    upsampler = None if upsampler_cfg is None else engine.upsampling_sampler(upsampler_cfg)
    num_cond_full = engine.cfg.upsampler.num_cond_frames if engine.cfg.upsampler is not None else 1
    return EngineSamplers(
        engine.frame_sampler(cfg),
        engine.num_cond_frames,
        engine.cfg.low_res_size(),
        upsampler,
        num_cond_full,
        engine.cfg.low_res_filter,
    )


def open_start_dataset(engine: TrainedEngine, folder: Path, data: str | Path | None = None) -> EngineDataset:
    """The dataset ``data``, else the one the engine (of ``folder``) was trained on; refused where its
    action space or frame size is not the engine's. An engine whose ``low_res`` is left to the data (an
    imported one: ``diffworld engine import`` knows no dataset) takes it from this dataset's frames."""
    if data is None and not engine.cfg.data:
        raise UserError(f"The engine {folder} names no dataset: give one (--data <engine dataset folder>).")
    path = Path(data if data is not None else engine.cfg.data)
    if data is None and not path.is_dir():
        raise UserError(
            f"The dataset the engine {folder} was trained on ({path}) is gone: give one with --data <engine "
            "dataset folder> (with the engine's actions and frame size)."
        )
    dataset = EngineDataset(path)
    if dataset.spec != engine.spec:
        raise UserError(
            f"{path} has the actions {dataset.spec.describe()}, but the engine {folder} takes "
            f"{engine.spec.describe()}"
        )
    h, w = dataset.frame_size
    if engine.cfg.low_res is None:
        up = engine.cfg.upsampler
        if up is not None and (h % up.factor or w % up.factor):
            raise UserError(
                f"{path} has frames of {h}x{w}, but the engine {folder} makes frames of upsampler.factor="
                f"{up.factor} times its low resolution"
            )
        engine.cfg = with_low_res(engine.cfg, (h, w))
    full = engine.cfg.full_res()
    if full is not None and (h, w) != tuple(full):
        raise UserError(f"{path} has frames of {h}x{w}, but the engine {folder} makes {full[0]}x{full[1]}")
    return dataset
