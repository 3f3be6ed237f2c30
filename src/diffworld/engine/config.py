"""The configuration of a neural game engine: a low-resolution next-frame denoiser, an optional upsampler, and
how they train (the paper's CS:GO setting, docs/method.md; docs/engine.md).

Typed dataclasses as ``config/schema.py``'s, so that OmegaConf validates keys and types of command-line
overrides; ``ENGINE_PRESETS`` are dotted overrides on top of the defaults, which are the official CS:GO
model's settings (``csgo``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from diffworld.config.loading import (
    ConfigChecks,
    ConfigError,
    apply_override,
    checked_object,
    parse_overrides,
    preset_config,
    read_yaml,
)
from diffworld.config.schema import (
    GradAccumulation,
    OptimizerConfig,
    Precision,
    SamplerConfig,
    SigmaDistributionConfig,
    WorldModelConfig,
    WorldModelTrainingConfig,
)

EngineSamplerConfig = SamplerConfig
"""A sampler of the engine: the world model's ``SamplerConfig`` (its ``s_cond`` is the official CS:GO
sampler's noise of the conditioning frames)."""


class LowResFilter(str, Enum):
    """How the denoiser's low-resolution frames are made from the dataset's frames."""

    bicubic = "bicubic"
    """The official CS:GO data (``process_csgo_tar_files.py``): bicubic resizing with antialiasing of the
    frames in [-1, 1], then stored as 8-bit levels (truncated). Where bicubic overshoots [-1, 1] the official
    cast to uint8 wraps around (a white edge turns black); here such values saturate at the nearest level."""
    area = "area"
    """Each low-resolution pixel the mean of the full-resolution pixels it covers, kept in float (engines
    trained before the bicubic filter; their ``config.yaml`` has no ``low_res_filter`` and reads as this)."""


@dataclass
class EngineModelTrainingConfig(WorldModelTrainingConfig):
    """The batches one engine model trains on: the world model's ``WorldModelTrainingConfig`` with the
    official CS:GO trainer's defaults, and an average of the weights."""

    batch_size: int = 16
    """Segments per batch: over all processes together (each of N ``torchrun`` processes takes
    batch_size / N), or per process with ``training.batch_size_per_process`` (the official semantics)."""
    grad_acc_steps: int = 8
    grad_accumulation: GradAccumulation = GradAccumulation.sum
    num_autoregressive_steps: int = 5
    """The official configuration counts the predictions after the first (CS:GO: 4 for the denoiser, 1 for
    the upsampler, so 5 and 2 here)."""
    ema_decay: float | None = None
    """An exponential moving average of the model's weights, updated after every optimizer update with this
    decay (``torch.optim.swa_utils``: the first update copies the weights, each later one makes the average
    ``decay * average + (1 - decay) * weights``; ~1 / (1 - decay) updates' window); the periodic tests and
    everything that opens the trained engine (play, eval, videos) use it, the training losses are the live
    weights'. None (the default, as the official CS:GO recipe, which has none): no average."""


@dataclass
class EngineDenoiserConfig(WorldModelConfig):
    """The engine's low-resolution next-frame denoiser: the world model (``WorldModelConfig``) conditioned on
    the L past frames and actions, in the official CS:GO layout.

    Defaults: the official CS:GO model (``csgo``).
    """

    cond_channels: int = 2048
    channels: list[int] = field(default_factory=lambda: [128, 256, 512, 1024])
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, True, True])
    sigma_offset_noise: float = 0.1
    noise_previous_obs: bool = True
    sigma_distribution: SigmaDistributionConfig = field(
        default_factory=lambda: SigmaDistributionConfig(loc=-1.2, scale=1.2, sigma_min=2e-3, sigma_max=20.0)
    )
    sampler: SamplerConfig = field(
        default_factory=lambda: SamplerConfig(num_steps=1, sigma_min=2e-3, sigma_max=5.0, s_cond=0.005)
    )
    """One Euler step, as the official CS:GO ``fast`` settings."""
    training: EngineModelTrainingConfig = field(default_factory=EngineModelTrainingConfig)
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=1e-4, weight_decay=1e-2, eps=1e-8, max_grad_norm=10.0)
    )


@dataclass
class UpsamplerConfig(EngineDenoiserConfig):
    """The upsampler: a second EDM model whose network sees the noisy full-resolution frame stacked with the
    low-resolution frame (bicubic-upsampled by ``factor``) and the L previous full-resolution frames; no
    actions. Its defaults are set by ``EngineConfig`` (the official CS:GO upsampler)."""

    factor: int = 5
    """Full resolution = ``factor`` x ``low_res`` (CS:GO: 150x280 from 30x56)."""


def _csgo_upsampler() -> UpsamplerConfig:
    return UpsamplerConfig(
        num_cond_frames=1,
        channels=[64, 64, 128, 256],
        attn_depths=[False, False, False, True],
        noise_previous_obs=False,
        # Heun with churn, as the official CS:GO ``fast`` settings: one step from sigma 5 raised by churn.
        sampler=SamplerConfig(
            num_steps=1,
            sigma_min=1.0,
            sigma_max=5.0,
            order=2,
            s_churn=10.0,
            s_tmin=1.0,
            s_tmax=5.0,
            s_noise=0.9,
        ),
        training=EngineModelTrainingConfig(batch_size=4, num_autoregressive_steps=2),
    )


@dataclass
class EngineTrainingConfig:
    """The schedule of an engine run: both models take one update each in turn."""

    num_updates: int = 100_000
    """Optimizer updates of each model."""
    max_minutes: float = 0.0
    """Stop, with a last test and checkpoint, at the first log, test or checkpoint after this many minutes of
    training (summed over resumes), if that comes before ``num_updates``; 0: no limit. How far such a run gets
    depends on the machine's speed."""
    log_every: int = 50
    """A ``metrics.jsonl`` record of the training metrics every this many updates."""
    checkpoint_every: int = 500
    """A checkpoint every this many updates (and at the end): a crash loses at most this many."""
    test_every: int = 1000
    """Test losses on the dataset's test split every this many updates (and at the end)."""
    num_test_batches: int = 4
    """Batches of test segments per test loss, drawn from a generator seeded anew at every test."""
    quality_trajectories: int = 8
    """At every test, also PSNR and SSIM of this many open-loop trajectories imagined from the test split
    (``engine/quality.py``, as ``diffworld engine eval``), low-resolution and upsampled, against copying the
    last real frame; 0: none. Each costs ``max(quality_horizons)`` predictions of both models, drawn from a
    generator seeded anew at every test, outside the training's random streams."""
    quality_horizons: list[int] = field(default_factory=lambda: [1, 10, 100])
    """The horizons (predictions after the real context) at which the quality is measured."""
    precision: Precision = Precision.fp32
    """``bf16``: forward passes under ``torch.autocast`` to bfloat16 (``config.schema.TrainingConfig``)."""
    batch_size_per_process: bool = False
    """Under ``torchrun`` with N processes: False, each model's ``batch_size`` is the global batch, split
    over the processes (results do not depend on N); True, it is each process's batch, N x batch_size
    segments in all, as the official code's per-GPU batch sizes (the ``csgo`` preset)."""


@dataclass
class EngineLoggingConfig:
    tensorboard: bool = True


@dataclass
class EngineConfig:
    """A whole engine run. ``data`` is required."""

    data: str = MISSING
    """The engine dataset folder (docs/engine.md, "Datasets")."""
    preset: str = "csgo"
    """Preset the run started from (``csgo``, ``cpu`` or ``smoke``); recorded for reference."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; under ``torchrun`` each process
    takes ``cuda:<local rank>`` (``auto``, ``cuda``) or the CPU."""
    run_dir: str | None = None
    """Run folder; default ``runs/engine/<dataset name>/<date>_<time>_s<seed>``."""
    low_res: list[int] | None = None
    """[h, w]: the denoiser's resolution, to which the dataset's frames are downsampled (``low_res_filter``).
    None (the
    default): derived from the dataset when training starts (``with_low_res``), its frames' size divided by
    ``upsampler.factor`` (CS:GO: 150x280 / 5 = 30x56), or the frames' size itself without upsampler;
    ``config.yaml`` holds the value used. Given, it must be that value (at most the frames' size without
    upsampler)."""
    low_res_filter: LowResFilter = LowResFilter.bicubic
    """How frames become ``low_res`` frames: ``bicubic`` (the official CS:GO data) or ``area``."""
    denoiser: EngineDenoiserConfig = field(default_factory=EngineDenoiserConfig)
    upsampler: UpsamplerConfig | None = field(default_factory=_csgo_upsampler)
    """None (``upsampler=null``): no upsampler, the engine plays at ``low_res``."""
    training: EngineTrainingConfig = field(default_factory=EngineTrainingConfig)
    logging: EngineLoggingConfig = field(default_factory=EngineLoggingConfig)

    def low_res_size(self) -> tuple[int, int]:
        """``low_res`` as (h, w); an error if it is still to be derived from a dataset (``with_low_res``)."""
        if self.low_res is None:
            raise ConfigError("low_res is not set: derive it from the dataset's frames (with_low_res).")
        h, w = self.low_res
        return h, w

    def full_res(self) -> tuple[int, int] | None:
        """The upsampler's resolution (``factor`` x ``low_res``), None without upsampler."""
        if self.upsampler is None:
            return None
        h, w = self.low_res_size()
        return h * self.upsampler.factor, w * self.upsampler.factor


def with_low_res(cfg: EngineConfig, frame_size: tuple[int, int]) -> EngineConfig:
    """``cfg`` for a dataset of ``frame_size`` frames, with ``low_res`` derived where it is None (a copy) and
    checked where it is given; a one-line ``ConfigError`` naming the fix where they cannot fit.

    The upsampler makes frames ``factor`` times ``low_res`` exactly (bicubic upsampling by the factor, then
    its network), and it learns from the dataset's frames as they are: so a factor must divide both sides of
    the frames. Frames of another size would have to be resized or cropped, which changes the game (a
    1-pixel line blurred or cut): the error names the factors that fit, or ``upsampler=null``, with which the
    denoiser alone works at any ``low_res`` up to the frames' size (area downsampling,
    ``engine/segment_sampler.py``).
    """
    h, w = frame_size
    if cfg.upsampler is None:
        if cfg.low_res is None:
            return dataclasses.replace(cfg, low_res=[h, w])
        if cfg.low_res[0] > h or cfg.low_res[1] > w:
            raise ConfigError(
                f"low_res={cfg.low_res} is larger than the dataset's {h}x{w} frames: give one at most "
                f"[{h}, {w}], or leave low_res out (without upsampler: the frames' size)."
            )
        return cfg
    factor = cfg.upsampler.factor
    if h % factor or w % factor:
        fits = [k for k in range(2, min(h, w) + 1) if h % k == 0 and w % k == 0]
        names = ", ".join(map(str, fits[:8])) + (", ..." if len(fits) > 8 else "")
        choice = f"set upsampler.factor to one of {names}" if fits else "no factor divides both sides"
        raise ConfigError(
            f"upsampler.factor={factor} does not divide the dataset's {h}x{w} frames (the upsampler makes "
            f"factor x low_res exactly): {choice}, or upsampler=null with low_res=[h, w] for a denoiser "
            "alone."
        )
    derived = [h // factor, w // factor]
    if cfg.low_res is None:
        return dataclasses.replace(cfg, low_res=derived)
    if list(cfg.low_res) != derived:
        lh, lw = cfg.low_res
        raise ConfigError(
            f"low_res={cfg.low_res} times upsampler.factor={factor} makes {lh * factor}x{lw * factor}, but "
            f"the dataset's frames are {h}x{w}: set low_res={derived} or leave it out (derived)."
        )
    return cfg


ENGINE_PRESETS: dict[str, dict[str, Any]] = {
    # The official CS:GO model (defaults): denoiser at 30x56, upsampler to 150x280, batch sizes per process
    # as the official trainer's per-GPU ones.
    "csgo": {"training.batch_size_per_process": True},  # low_res: 150x280 frames / 5 = 30x56
    "cpu": {
        # Full-resolution Atari frames (210x160) on 2 CPU cores in at most 3 hours. Factor 5 (the default,
        # low_res derived: 42x32) is the only one that divides both 210 and 160 and keeps the low-res frames
        # readable: 4 does not divide 210, 10 leaves 21x16, where a 2-pixel Atari ball disappears. 42x32 has
        # about a third of the pixels of the paper's 64x64, so the denoiser's updates are cheap (0.4 s on 2
        # threads with 3 predictions per segment; benchmarks/results/README.md, "An engine that plays
        # Breakout"). The upsampler works at full resolution, where most of the time goes: its first level
        # has 8 channels, so that a frame (one denoiser and one upsampler call) takes about 55 ms on 2
        # threads, the game's 15 frames per second. The samplers are the official CS:GO ones (one step each,
        # from sigma 5), and the upsampler keeps the official autoregressive step. Departure: the official
        # training noise law, log sigma ~ N(-1.2, 1.2^2), puts 3 % of the updates at sigma 3 or more, the
        # levels these one-step samplers use; the CPU's few thousand updates are spent there instead: log
        # sigma ~ N(1.2, 0.5^2) (median 3.3; 35 % above 4). At 500 updates on Breakout (same seed and data)
        # this raised full-resolution PSNR at horizons 1 / 10 / 100 from 23.9 / 20.7 / 19.2 to 29.2 / 28.9 /
        # 24.1 dB (benchmarks/results/README.md, "An engine that plays Breakout"; that run also left the
        # context frames clean). The context frames' noise keeps the official law, log sigma_cond ~
        # N(-1.2, 1.2^2), and the official s_cond: the 3-hour Breakout run with clean context frames lost the
        # ball within 10 open-loop steps and then wrote score digits at random, losing to the mean frame at
        # horizon 100 ("The 3-hour run with an average of the weights"); noising the context is the official
        # recipe's guard against a model's drift on its own outputs.
        "denoiser.sigma_distribution.loc": 1.2,
        "denoiser.sigma_distribution.scale": 0.5,
        "denoiser.sigma_cond_distribution": SigmaDistributionConfig(
            loc=-1.2, scale=1.2, sigma_min=2e-3, sigma_max=20.0
        ),
        "upsampler.sigma_distribution.loc": 1.2,
        "upsampler.sigma_distribution.scale": 0.5,
        "denoiser.cond_channels": 256,
        "denoiser.channels": [32, 64, 64],
        "denoiser.depths": [1, 1, 1],
        "denoiser.attn_depths": [False, False, False],
        "denoiser.training.batch_size": 16,
        "denoiser.training.grad_acc_steps": 1,
        "denoiser.training.num_autoregressive_steps": 3,
        "denoiser.optimizer.lr": 1e-3,
        "denoiser.optimizer.max_grad_norm": 1.0,
        "upsampler.cond_channels": 128,
        "upsampler.channels": [8, 16, 32],
        "upsampler.depths": [1, 1, 1],
        "upsampler.attn_depths": [False, False, False],
        "upsampler.training.batch_size": 4,
        "upsampler.training.grad_acc_steps": 1,
        "upsampler.optimizer.lr": 1e-3,
        "upsampler.optimizer.max_grad_norm": 1.0,
        # Departure: an EMA of the weights (the official recipe has none), which everything that uses the
        # trained engine takes. At this constant learning rate of 1e-3 the last weights are whatever the last
        # updates made them: the 3-hour Breakout run ended in a denoiser loss spike (training loss 0.00045 ->
        # 0.028 over its last 100 of 7,000 updates), action fidelity 41.5 % against 90.8 % 250 updates
        # earlier (benchmarks/results/README.md, "The 3-hour run, finished: a loss spike at the end").
        # Decay 0.999 averages over about the last 1,000 updates, a seventh of such a run: long enough to
        # smooth over a spike of a few hundred updates, short enough to follow the training.
        "denoiser.training.ema_decay": 0.999,
        "upsampler.training.ema_decay": 0.999,
        # Three hours of training whatever the CPU (summed over resumes), or 20,000 updates.
        "training.num_updates": 20000,
        "training.max_minutes": 180.0,
        "training.log_every": 25,
        "training.checkpoint_every": 250,
        "training.test_every": 500,
        # A few percent of the run: 4 open-loop trajectories of 100 predictions at each test.
        "training.quality_trajectories": 4,
    },
    "smoke": {
        # Seconds, for tests: tiny networks on tiny frames (12x20 in the tests: low_res 6x10).
        "denoiser.num_cond_frames": 2,
        "denoiser.cond_channels": 16,
        "denoiser.channels": [8, 8],
        "denoiser.depths": [1, 1],
        "denoiser.attn_depths": [False, False],
        "denoiser.training.batch_size": 4,
        "denoiser.training.grad_acc_steps": 1,
        "denoiser.training.num_autoregressive_steps": 2,
        "denoiser.optimizer.warmup_steps": 2,
        "upsampler.factor": 2,
        "upsampler.cond_channels": 16,
        "upsampler.channels": [8, 8],
        "upsampler.depths": [1, 1],
        "upsampler.attn_depths": [False, False],
        "upsampler.training.batch_size": 2,
        "upsampler.training.grad_acc_steps": 1,
        "upsampler.optimizer.warmup_steps": 2,
        "training.num_updates": 6,
        "training.log_every": 2,
        "training.checkpoint_every": 2,
        "training.test_every": 3,
        "training.num_test_batches": 1,
        "training.quality_trajectories": 2,
        "training.quality_horizons": [1, 10],
        "logging.tensorboard": False,
    },
}


def build_engine_config(args: Iterable[str] = ()) -> EngineConfig:
    """The engine configuration for command-line arguments like ``data=<folder> preset=cpu seed=3``.

    Values are parsed as YAML scalars and lists and checked against the dataclasses, never evaluated.
    """
    overrides = parse_overrides(args)
    cfg = preset_config(EngineConfig, ENGINE_PRESETS, overrides.pop("preset", "csgo"), "engine preset")
    for key, value in overrides.items():
        if key.startswith("upsampler.") and cfg.upsampler is None:
            raise ConfigError(f"Cannot set {key!r}: upsampler=null turned the upsampler off.")
        apply_override(cfg, key, value, parsed_from_text=True, schema=EngineConfig)
    return _finalize(cfg)


def _finalize(cfg: DictConfig) -> EngineConfig:
    if OmegaConf.is_missing(cfg, "data"):
        raise ConfigError("No dataset given: add data=<engine dataset folder>.")
    return checked_object(cfg, EngineConfig, validate_engine_config)


def validate_engine_config(cfg: EngineConfig) -> None:
    """Checks that types alone cannot express; each failure names the key and the fix."""
    check = ConfigChecks("Invalid engine configuration")

    check(
        cfg.low_res is None or (len(cfg.low_res) == 2 and min(cfg.low_res) >= 1),
        f"low_res must be [h, w] >= 1 (or left out: derived from the data), got {cfg.low_res}.",
    )
    models: list[tuple[str, EngineDenoiserConfig]] = [("denoiser", cfg.denoiser)]
    if cfg.upsampler is not None:
        models.append(("upsampler", cfg.upsampler))
        check(cfg.upsampler.factor >= 2, "upsampler.factor must be >= 2 (or upsampler=null: no upsampler).")
    for name, m in models:
        n = len(m.channels)
        check(
            n > 0 and len(m.depths) == n and len(m.attn_depths) == n,
            f"{name}.channels, {name}.depths and {name}.attn_depths must have one entry per level "
            f"(got {len(m.channels)}, {len(m.depths)}, {len(m.attn_depths)}).",
        )
        check(all(c > 0 for c in m.channels) and all(d > 0 for d in m.depths), f"{name}: sizes must be > 0.")
        check(m.num_cond_frames >= 1, f"{name}.num_cond_frames must be >= 1.")
        check(
            m.cond_channels % 2 == 0 and m.cond_channels % m.num_cond_frames == 0,
            f"{name}.cond_channels must be even and divisible by {name}.num_cond_frames.",
        )
        check(m.sigma_data > 0, f"{name}.sigma_data must be > 0.")
        sd = m.sigma_distribution
        check(
            0 < sd.sigma_min < sd.sigma_max and sd.scale > 0,
            f"{name}.sigma_distribution: need 0 < sigma_min < sigma_max and scale > 0.",
        )
        sc = m.sigma_cond_distribution
        if sc is not None:
            check(
                m.noise_previous_obs,
                f"{name}.sigma_cond_distribution is set but {name}.noise_previous_obs is false: set "
                f"{name}.noise_previous_obs=true or {name}.sigma_cond_distribution=null.",
            )
            check(
                0 < sc.sigma_min < sc.sigma_max and sc.scale > 0,
                f"{name}.sigma_cond_distribution: need 0 < sigma_min < sigma_max and scale > 0.",
            )
        s = m.sampler
        check(s.num_steps >= 1 and s.order in (1, 2), f"{name}.sampler: num_steps >= 1, order 1 or 2.")
        check(
            0 < s.sigma_min <= s.sigma_max and s.rho > 0, f"{name}.sampler: need 0 < sigma_min <= sigma_max."
        )
        check(s.s_churn >= 0 and s.s_cond >= 0, f"{name}.sampler: s_churn and s_cond must be >= 0.")
        mt = m.training
        check(mt.batch_size >= 1 and mt.grad_acc_steps >= 1, f"{name}.training: batch sizes must be >= 1.")
        check(mt.num_autoregressive_steps >= 1, f"{name}.training.num_autoregressive_steps must be >= 1.")
        check(
            mt.ema_decay is None or 0 < mt.ema_decay < 1,
            f"{name}.training.ema_decay must be in (0, 1), e.g. 0.999 (or null: no weight average).",
        )
        o = m.optimizer
        check(o.lr > 0 and o.weight_decay >= 0 and o.max_grad_norm > 0, f"{name}.optimizer: bad values.")
        check(o.warmup_steps >= 0, f"{name}.optimizer.warmup_steps must be >= 0.")
    t = cfg.training
    check(t.num_updates >= 0, "training.num_updates must be >= 0.")
    check(t.max_minutes >= 0, "training.max_minutes must be >= 0 (0: no time limit).")
    for key in ("log_every", "checkpoint_every", "test_every", "num_test_batches"):
        check(getattr(t, key) >= 1, f"training.{key} must be >= 1.")
    check(t.quality_trajectories >= 0, "training.quality_trajectories must be >= 0 (0: no quality).")
    check(
        len(t.quality_horizons) > 0 and min(t.quality_horizons) >= 1,
        f"training.quality_horizons must be horizons >= 1, e.g. [1, 10, 100]; got {t.quality_horizons}.",
    )
    check(
        cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda"),
        f"device={cfg.device!r}: use auto, cpu, cuda or cuda:N.",
    )
    check.raise_failures()


def load_engine_config(path: Path) -> EngineConfig:
    """Read a saved engine configuration back, checked against the current schema (``config.loading``'s
    ``save_config`` writes one)."""
    loaded = read_yaml(path, "engine configuration")
    if isinstance(loaded, DictConfig) and "low_res_filter" not in loaded:
        # Written before the bicubic filter existed: those engines trained on area-downsampled frames.
        loaded.low_res_filter = LowResFilter.area.value
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(EngineConfig), loaded)
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise ConfigError(f"{path}: unknown key {str(e.full_key)!r} (written by another version?).") from None
    except (ValidationError, OmegaConfBaseException) as e:
        raise ConfigError(f"{path}: bad value: {str(e).splitlines()[0]}") from None
    assert isinstance(cfg, DictConfig)
    return _finalize(cfg)
