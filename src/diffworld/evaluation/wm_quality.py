"""``diffworld wm-eval``: how well a trained world model predicts real trajectories it has never seen.

Held-out data: fresh test episodes played by the run's own policy in the test environments (episodes run to
game over, the run's test epsilon), seeded apart from everything the run collected (``derive_seed(seed,
"wm_eval")`` plus ``--seed``). The run's training episodes are not used: the world model was trained on
them, and a run keeps no test episodes on disk (its periodic tests make fresh ones in memory).

Each episode gives one trajectory from its start: the world model gets the first L frames and actions, then
the real actions. At horizon h it predicts the episode's frame L - 1 + h, two ways:

- one-step: conditioned on the L real frames before it (teacher forcing): the error of a single prediction;
- autoregressive: conditioned on its own earlier predictions (the real context frames only at the start),
  as in imagination: the error that compounds over h predictions.

Each prediction is compared with the real frame by PSNR and SSIM (:func:`psnr`, :func:`ssim`, on 8-bit
levels), and so is the copy-the-last-frame baseline: the previous real frame for one-step, the last
context frame for autoregressive. A horizon beyond an episode's length is not reached by it; the figures at
horizon h average over the trajectories that reach it (their number is reported), and horizons that none
reaches are left out.

At each number of denoising steps, the report also says whether the world model imagines the rewards of
these episodes (``reward_detection``, :mod:`diffworld.evaluation.reward_recall`): the reward model's recall
of the rewarded steps and its false-positive rate on zero-reward steps when it reads the denoiser's one-step
prediction of the next frame, and when it reads the real one.

Each run is evaluated with its own kind of denoiser (``denoiser.kind``: EDM, or the DDPM ablation) at each
number of denoising steps asked for (Euler steps on the Karras schedule for EDM, DDIM steps for DDPM; the
rest of the run's sampler settings are kept). Comparing EDM with DDPM takes two runs of the same game,
one trained with ``denoiser.kind=ddpm``: pass both run folders.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffworld.data import Episode, EpisodeDataset
from diffworld.data.frames import frames_to_tensor
from diffworld.errors import UserError
from diffworld.evaluation.reward_recall import reward_detection

HORIZONS = (1, 5, 15, 50, 200, 1000)
DENOISING_STEPS = (1, 3, 10)
KINDS = ("edm", "ddpm")
PSNR_MAX = 100.0
"""PSNR (dB) given to a prediction identical to the real frame (its MSE is 0). Any non-identical 64x64 RGB
frame scores below 89 dB (one level off in one pixel), so the cap only marks exact copies."""
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
"""Gaussian window of 11 x 11 (radius 5 = int(3.5 sigma + 0.5), scikit-image's truncation), sigma 1.5."""
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0
JSON_FILE = "wm_quality.json"
PNG_FILE = "wm_quality.png"


# ----------------------------------------------------------------------------------------------- metrics


def _to_levels(x: Tensor) -> Tensor:
    """Frames as float64 8-bit levels: uint8 as they are, floats in [-1, 1] mapped to [0, 255]."""
    if x.dtype == torch.uint8:
        return x.double()
    return x.double().clamp(-1, 1).add(1).mul(127.5)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) PSNR in dB of each (N, C, H, W) prediction against its target, over all channels and pixels.

    Frames are uint8, or floats in [-1, 1] (taken as 8-bit levels); data range 255. Identical frames score
    ``PSNR_MAX``.
    """
    mse = (_to_levels(pred) - _to_levels(target)).pow(2).flatten(1).mean(1)
    value = 10 * torch.log10(DATA_RANGE**2 / mse.clamp(min=1e-300))
    return torch.where(mse > 0, value.clamp(max=PSNR_MAX), PSNR_MAX)


def mse_levels(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) mean squared error in 8-bit levels."""
    return (_to_levels(pred) - _to_levels(target)).pow(2).flatten(1).mean(1)


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> Tensor:
    """(2 radius + 1,) float64 normalized Gaussian weights."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """(N,) mean SSIM (Wang et al. 2004) of each (N, C, H, W) prediction against its target.

    The standard formula with a Gaussian window (11 x 11, sigma 1.5), K1 = 0.01, K2 = 0.03, data range 255,
    population (not sample) statistics, computed per channel over the windows that fit inside the image
    ('valid'), averaged over windows and channels: scikit-image's ``structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=...)``.
    """
    x, y = _to_levels(pred), _to_levels(target)
    c = x.size(1)
    if min(x.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs frames of at least {2 * SSIM_RADIUS + 1} pixels, got {tuple(x.shape)}")
    w = gaussian_window().to(x.device)
    kernel_h = w.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    kernel_v = w.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kernel_h, groups=c), kernel_v, groups=c)

    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"psnr": psnr, "ssim": ssim, "mse": mse_levels}


class CurveSums:
    """Running sums of each metric per horizon step (1-based), over trajectories."""

    def __init__(self, max_horizon: int) -> None:
        self.sums = {name: np.zeros(max_horizon) for name in METRICS}
        self.counts = np.zeros(max_horizon, dtype=np.int64)

    def add(self, steps: np.ndarray, pred: Tensor, target: Tensor) -> None:
        """Add the metrics of predictions ``pred`` of ``target`` (N, C, H, W) made at horizons ``steps``."""
        for name, fn in METRICS.items():
            np.add.at(self.sums[name], steps - 1, fn(pred, target).cpu().numpy())
        np.add.at(self.counts, steps - 1, 1)

    def means(self) -> dict[str, list[float]]:
        """Per horizon step, each metric's mean over the trajectories that reach it."""
        n = np.maximum(self.counts, 1)
        return {name: (s / n).tolist() for name, s in self.sums.items()}


# ------------------------------------------------------------------------------------------- predictions


def num_predictions(episode: Episode, num_cond: int, max_horizon: int) -> int:
    """Predictions the episode allows from its start: frames L .. T, each needing the action before it."""
    return max(0, min(max_horizon, len(episode) - num_cond + 1))


@torch.no_grad()
def evaluate_trajectories(
    denoiser: Any,
    sampler_cfg: Any,
    episodes: Sequence[Episode],
    max_horizon: int,
    *,
    device: torch.device,
    generator: torch.Generator | None,
    batch_size: int = 64,
) -> dict[str, CurveSums]:
    """One-step and autoregressive errors of the world model along ``episodes`` up to ``max_horizon``.

    ``denoiser`` is an ``EDMDenoiser`` or a ``DDPMDenoiser`` (``predict_next``); ``sampler_cfg`` a
    ``SamplerConfig``. Returns ``CurveSums`` for ``one_step`` and ``autoregressive``.
    """
    from diffworld.models.diffusion import karras_sigmas

    num_cond = denoiser.cfg.num_cond_frames
    c = sampler_cfg
    sigmas = karras_sigmas(c.num_steps, c.sigma_min, c.sigma_max, c.rho, device)
    counts = [num_predictions(e, num_cond, max_horizon) for e in episodes]
    curves = {"one_step": CurveSums(max_horizon), "autoregressive": CurveSums(max_horizon)}

    def predict(obs: Tensor, act: Tensor) -> Tensor:
        return denoiser.predict_next(obs, act, sigmas, sampler_cfg, generator=generator)

    # One-step: every (episode, horizon) pair is independent; batch them.
    pairs = [(i, h) for i, n in enumerate(counts) for h in range(1, n + 1)]
    frames = [frames_to_tensor(e.obs, device) for e in episodes]
    actions = [torch.tensor(e.act, device=device) for e in episodes]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        # Horizon h predicts frame L - 1 + h from frames h - 1 .. h + L - 2 and the actions taken there.
        obs = torch.stack([frames[i][h - 1 : h - 1 + num_cond] for i, h in chunk])
        act = torch.stack([actions[i][h - 1 : h - 1 + num_cond] for i, h in chunk])
        target = torch.stack([frames[i][num_cond - 1 + h] for i, h in chunk])
        curves["one_step"].add(np.array([h for _, h in chunk]), predict(obs, act), target)

    # Autoregressive: all trajectories step together, the longest first so the active ones are a prefix.
    order = sorted((i for i in range(len(episodes)) if counts[i] > 0), key=lambda i: -counts[i])
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        obs = torch.stack([frames[i][:num_cond] for i in rows])
        for h in range(1, counts[rows[0]] + 1):
            m = sum(counts[i] >= h for i in rows)
            act = torch.stack([actions[i][h - 1 : h - 1 + num_cond] for i in rows[:m]])
            pred = predict(obs[:m], act)
            target = torch.stack([frames[i][num_cond - 1 + h] for i in rows[:m]])
            curves["autoregressive"].add(np.full(m, h), pred, target)
            obs = torch.cat([obs[:m, 1:], pred[:, None]], dim=1)
    return curves


def copy_last_frame_curves(
    episodes: Sequence[Episode], num_cond: int, max_horizon: int
) -> dict[str, CurveSums]:
    """The baseline that predicts no change: one-step copies the previous real frame, autoregressive the
    last context frame."""
    curves = {"one_step": CurveSums(max_horizon), "autoregressive": CurveSums(max_horizon)}
    for episode in episodes:
        n = num_predictions(episode, num_cond, max_horizon)
        if n == 0:
            continue
        obs = torch.tensor(episode.obs).permute(0, 3, 1, 2)  # uint8 (a copy: stored frames are read-only)
        steps = np.arange(1, n + 1)
        target = obs[num_cond : num_cond + n]
        curves["one_step"].add(steps, obs[num_cond - 1 : num_cond - 1 + n], target)
        curves["autoregressive"].add(steps, obs[num_cond - 1 : num_cond].expand_as(target), target)
    return curves


# ------------------------------------------------------------------------------------------------- runs


def collect_test_episodes(trained: Any, num_episodes: int, seed: int) -> EpisodeDataset:
    """Fresh test episodes of the run's policy (game over ends them; the run's test epsilon), in memory."""
    from diffworld.collector import Collector
    from diffworld.envs.from_config import make_envs
    from diffworld.utils.seeding import derive_seed

    cfg = trained.cfg
    base = derive_seed(cfg.seed, f"wm_eval/{seed}")
    dataset = EpisodeDataset(frame_shape=(cfg.env.size, cfg.env.size, 3))
    num_envs = min(num_episodes, cfg.env.num_test_envs)
    envs = make_envs(cfg, num_envs, f"wm_eval/{seed}", life_loss_terminal=False)
    with envs:
        collector = Collector(
            envs,
            trained.agent.actor_critic,
            epsilon=cfg.collection.test_epsilon,
            temperature=cfg.policy_temperature(),
            device=trained.device,
            generator=torch.Generator(trained.device).manual_seed(base),
            dataset=dataset,
        )
        collector.collect_episodes(num_episodes)
    return dataset


def _summary(curves: dict[str, CurveSums], horizons: Sequence[int]) -> dict[str, dict[str, dict[str, float]]]:
    """At each horizon: each metric's mean, for both modes."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mode, sums in curves.items():
        means = sums.means()
        out[mode] = {name: {str(h): means[name][h - 1] for h in horizons} for name in METRICS}
    return out


def evaluate_run(
    run_dir: Path,
    *,
    horizons: Sequence[int] = HORIZONS,
    denoising_steps: Sequence[int] = DENOISING_STEPS,
    num_episodes: int = 4,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 64,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The world-model quality report of one run folder (see the module docstring)."""
    from diffworld.run.trained_agent import load_trained_agent

    trained = load_trained_agent(run_dir, device)
    cfg = trained.cfg
    dev = trained.device
    denoiser = trained.agent.denoiser.eval()
    num_cond = cfg.denoiser.num_cond_frames
    kind = str(getattr(cfg.denoiser.kind, "value", cfg.denoiser.kind))
    log(f"{run_dir}: collecting {num_episodes} test episodes with the run's policy ...")
    test_dataset = collect_test_episodes(trained, num_episodes, seed)
    episodes = [test_dataset.get_episode(i) for i in range(test_dataset.num_episodes)]
    max_requested = max(horizons)
    counts = [num_predictions(e, num_cond, max_requested) for e in episodes]
    reach = {h: sum(n >= h for n in counts) for h in sorted(set(horizons))}
    evaluated = [h for h, n in reach.items() if n > 0]
    if not evaluated:
        raise UserError(f"{run_dir}: the test episodes are too short for even one prediction")
    max_horizon = max(evaluated)
    per_step: dict[str, Any] = {
        "num_trajectories": [sum(n >= h for n in counts) for h in range(1, max_horizon + 1)]
    }
    baseline = copy_last_frame_curves(episodes, num_cond, max_horizon)
    per_step["copy_last_frame"] = {mode: c.means() for mode, c in baseline.items()}
    models: dict[str, Any] = {}
    rewards: dict[str, Any] = {}
    for num_steps in denoising_steps:
        log(f"{run_dir}: {kind.upper()}, {num_steps} denoising step(s), horizons up to {max_horizon} ...")
        sampler_cfg = dataclasses.replace(cfg.denoiser.sampler, num_steps=num_steps)
        generator = torch.Generator(dev).manual_seed(seed * 1000 + num_steps)
        curves = evaluate_trajectories(
            denoiser,
            sampler_cfg,
            episodes,
            max_horizon,
            device=dev,
            generator=generator,
            batch_size=batch_size,
        )
        models[str(num_steps)] = _summary(curves, evaluated)
        detection = reward_detection(
            denoiser, trained.agent.reward_model, test_dataset, sampler_cfg, seed=seed * 1000 + num_steps
        )
        log(
            f"{run_dir}: reward steps {detection.num_reward_steps}, recall on predicted / real next frames "
            f"{detection.recall_predicted:.3f} / {detection.recall_real:.3f}"
        )
        rewards[str(num_steps)] = {
            k: v if not isinstance(v, float) or math.isfinite(v) else None
            for k, v in dataclasses.asdict(detection).items()
        }
        per_step[f"steps_{num_steps}"] = {mode: c.means() for mode, c in curves.items()}
    return {
        "run_dir": str(run_dir),
        "game": cfg.game,
        "kind": kind,
        "epoch": trained.epoch,
        "env_steps": trained.env_steps,
        "sampler": {
            k: v if not isinstance(v, float) or math.isfinite(v) else str(v)
            for k, v in dataclasses.asdict(cfg.denoiser.sampler).items()
            if k != "num_steps"
        },
        "episode_lengths": [len(e) for e in episodes],
        "horizons_evaluated": evaluated,
        "horizons_not_reached": [h for h, n in reach.items() if n == 0],
        "num_trajectories": {str(h): reach[h] for h in evaluated},
        "copy_last_frame": _summary(baseline, evaluated),
        "denoising_steps": models,
        "reward_detection": rewards,
        "per_step": per_step,
    }


def denoiser_kind(source: Path) -> str:
    """The denoiser kind (``edm`` or ``ddpm``) of a run folder or of an agent folder (exported or imported),
    read from its configuration without loading the weights."""
    from diffworld.agent import INFO_FILE, AgentFolderError, config_from_dict
    from diffworld.config.loading import ConfigError, load_config_file
    from diffworld.run.folder import CONFIG_FILE

    if (source / CONFIG_FILE).is_file():
        cfg = load_config_file(source / CONFIG_FILE)
    elif (source / INFO_FILE).is_file():
        try:
            info = json.loads((source / INFO_FILE).read_text(encoding="utf-8"))
            cfg = config_from_dict(info["config"], source=f"{source / INFO_FILE} (config)")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ConfigError) as e:
            raise AgentFolderError(f"Cannot read the configuration of {source / INFO_FILE}: {e}") from None
    else:
        raise UserError(
            f"{source} is neither a run folder (no {CONFIG_FILE}) nor an agent folder (no {INFO_FILE})"
        )
    return str(getattr(cfg.denoiser.kind, "value", cfg.denoiser.kind))


def evaluate_world_models(
    run_dirs: Sequence[Path],
    out_dir: Path,
    *,
    horizons: Sequence[int] = HORIZONS,
    denoising_steps: Sequence[int] = DENOISING_STEPS,
    kinds: Sequence[str] = KINDS,
    num_episodes: int = 4,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 64,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate each run whose denoiser is of one of ``kinds``; write ``wm_quality.json`` and
    ``wm_quality.png`` to ``out_dir``; return the report."""
    if not run_dirs:
        raise UserError("no run folder given")
    if any(h < 1 for h in horizons) or any(s < 1 for s in denoising_steps) or num_episodes < 1:
        raise UserError("horizons, denoising steps and the number of episodes must be >= 1")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise UserError(f"unknown kinds {sorted(unknown)}: choose among {', '.join(KINDS)}")
    runs = []
    for run_dir in run_dirs:
        kind = denoiser_kind(run_dir)
        if kind not in kinds:
            log(f"{run_dir}: its denoiser is {kind}, not among {', '.join(kinds)}: skipped")
            continue
        runs.append(
            evaluate_run(
                run_dir,
                horizons=horizons,
                denoising_steps=denoising_steps,
                num_episodes=num_episodes,
                device=device,
                seed=seed,
                batch_size=batch_size,
                log=log,
            )
        )
    if not runs:
        raise UserError(f"no run has a denoiser of kind {', '.join(kinds)}")
    found = {r["kind"] for r in runs}
    missing = [k for k in kinds if k not in found]
    report: dict[str, Any] = {
        "horizons": sorted(set(horizons)),
        "denoising_steps": list(denoising_steps),
        "kinds": list(kinds),
        "kinds_without_run": missing,
        "num_episodes": num_episodes,
        "seed": seed,
        "held_out_data": "fresh test episodes of each run's policy (test environments, game over ends them)",
        "metrics": {
            "psnr": f"dB on 8-bit levels, identical frames {PSNR_MAX}",
            "ssim": "Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, data range 255, valid windows",
            "mse": "8-bit levels squared",
        },
        "runs": runs,
    }
    if missing:
        log(
            f"no run of kind {', '.join(missing)}: comparing EDM with DDPM takes a "
            "second run trained with denoiser.kind=ddpm (or edm); pass both run folders"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    from diffworld.utils.atomic import atomic_write_text

    atomic_write_text(out_dir / JSON_FILE, json.dumps(report, indent=2, allow_nan=False) + "\n")
    plot_report(report, out_dir / PNG_FILE)
    return report


def plot_report(report: dict[str, Any], path: Path) -> None:
    """PSNR and SSIM against the horizon (log scale, every step, dots at the requested horizons),
    one-step and autoregressive, per run and number of denoising steps, with the copy-last-frame baseline
    dashed (once for runs whose test episodes are the same)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    multiple = len(report["runs"]) > 1
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    greys = ["grey", "black", "silver", "dimgrey"]
    baselines_drawn: list[Any] = []
    k = 0
    for run in report["runs"]:
        per_step = run["per_step"]
        x = np.arange(1, len(per_step["num_trajectories"]) + 1)
        marks = [h - 1 for h in run["horizons_evaluated"]]  # the requested horizons, as dots
        suffix = f" ({Path(run['run_dir']).name})" if multiple else ""
        curves: list[tuple[str, Any, str, str]] = []
        if per_step["copy_last_frame"] not in baselines_drawn:  # runs of one game and seed share episodes
            grey = greys[len(baselines_drawn) % len(greys)]
            baselines_drawn.append(per_step["copy_last_frame"])
            curves.append((f"copy last frame{suffix}", per_step["copy_last_frame"], "--", grey))
        for steps in run["denoising_steps"]:
            label = f"{run['kind'].upper()} {steps} step(s){suffix}"
            curves.append((label, per_step[f"steps_{steps}"], "-", colors[k % len(colors)]))
            k += 1
        for label, curve, style, color in curves:
            for row, metric in enumerate(("psnr", "ssim")):
                for col, mode in enumerate(("one_step", "autoregressive")):
                    axes[row, col].plot(
                        x,
                        curve[mode][metric],
                        style,
                        color=color,
                        label=label,
                        lw=1.2,
                        marker="o",
                        markersize=3,
                        markevery=marks,
                    )
    for row, metric in enumerate(("PSNR (dB)", "SSIM")):
        for col, mode in enumerate(("one-step (real context)", "autoregressive (own predictions)")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_ylabel(metric)
            ax.set_title(mode)
            ax.grid(True, alpha=0.3)
            if row == 1:
                ax.set_xlabel("horizon (predicted steps)")
    axes[0, 1].legend(fontsize=8)
    game = ", ".join(sorted({r["game"] for r in report["runs"]}))
    fig.suptitle(f"World-model prediction error on held-out test episodes: {game}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def default_out_dir(run_dirs: Sequence[Path]) -> Path:
    """``<run>/wm_eval`` for one run, ``wm_eval`` otherwise."""
    return run_dirs[0] / "wm_eval" if len(run_dirs) == 1 else Path("wm_eval")
