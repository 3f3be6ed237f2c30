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

Each prediction is compared with the real frame by PSNR and SSIM on 8-bit levels
(:mod:`diffworld.evaluation.image_metrics`), and so is the copy-the-last-frame baseline: the previous real
frame for one-step, the last context frame for autoregressive (:mod:`diffworld.evaluation.wm_trajectories`).
A horizon beyond an episode's length is not reached by it; the figures at horizon h average over the
trajectories that reach it (their number is reported), and horizons that none reaches are left out.

At each number of denoising steps, the report also says whether the world model imagines the rewards of
these episodes (``reward_detection``, :mod:`diffworld.agent.reward_recall`): the reward model's recall
of the rewarded steps and its false-positive rate on zero-reward steps when it reads the denoiser's one-step
prediction of the next frame, and when it reads the real one (a reward model of ``reward_kind=value``: the
absolute error of its reward instead).

For a continuous-control game, the report also says whether the world model follows the action
(``action_fidelity``, :mod:`diffworld.agent.action_fidelity`): from real states, its predicted frames for K
probe actions against the real game's frames for the same actions, at each number of denoising steps.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffworld.agent import INFO_FILE, AgentFolderError, config_from_dict
from diffworld.agent.action_fidelity import (
    AGENT_FIDELITY_STATES,
    agent_action_fidelity,
    format_action_fidelity,
)
from diffworld.agent.collector import Collector
from diffworld.agent.reward_recall import reward_detection
from diffworld.agent.trained import TrainedAgent, load_trained_agent
from diffworld.config.loading import ConfigError, load_config_file
from diffworld.config.schema import RewardKind
from diffworld.data import EpisodeDataset
from diffworld.envs.from_config import make_envs
from diffworld.errors import UserError
from diffworld.evaluation.image_metrics import METRICS, PSNR_MAX
from diffworld.evaluation.wm_quality_plot import plot_report, write_wm_quality
from diffworld.evaluation.wm_trajectories import (
    CurveSums,
    copy_last_frame_curves,
    evaluate_trajectories,
    num_predictions,
)
from diffworld.run.folder import CONFIG_FILE
from diffworld.utils.seeding import derive_seed
from diffworld.world_model_folder import WmEvalOptions

HORIZONS = (1, 5, 15, 50, 200, 1000)
DENOISING_STEPS = (1, 3, 10)
KINDS = ("edm", "ddpm")


def collect_test_episodes(trained: TrainedAgent, num_episodes: int, seed: int) -> EpisodeDataset:
    """Fresh test episodes of the run's policy (game over ends them; the run's test epsilon), in memory."""
    cfg = trained.cfg
    base = derive_seed(cfg.seed, f"wm_eval/{seed}")
    frame_shape = (cfg.env.size, cfg.env.size, 3)
    dataset = EpisodeDataset(frame_shape=frame_shape, action_shape=trained.agent.action_shape)
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


@dataclass(frozen=True)
class WmEvalSettings:
    """What ``diffworld wm-eval`` measures of each run: its options, with an agent's defaults."""

    horizons: Sequence[int] = HORIZONS
    denoising_steps: Sequence[int] = DENOISING_STEPS
    kinds: Sequence[str] = KINDS
    """The denoiser kinds evaluated; runs of other kinds are skipped."""
    num_episodes: int = 4
    device: str = "auto"
    seed: int = 0
    batch_size: int = 64
    fidelity_states: int = AGENT_FIDELITY_STATES
    """The real states the action fidelity of a continuous-control game probes (not an option of
    ``diffworld wm-eval``)."""

    @classmethod
    def of(cls, options: WmEvalOptions) -> WmEvalSettings:
        """The settings of the options as given, defaults where they are not."""
        return cls(
            horizons=options.horizons or list(HORIZONS),
            denoising_steps=options.denoising_steps or DENOISING_STEPS,
            kinds=options.kinds or KINDS,
            num_episodes=options.episodes or cls.num_episodes,
            device=options.device,
            seed=options.seed,
            batch_size=options.batch_size or cls.batch_size,
        )


def evaluate_run(
    run_dir: Path, settings: WmEvalSettings, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The world-model quality report of one run folder (see the module docstring)."""
    horizons, num_episodes, seed = settings.horizons, settings.num_episodes, settings.seed
    trained = load_trained_agent(run_dir, settings.device)
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
    fidelity: dict[str, Any] = {}
    continuous = trained.agent.actor_critic.policy.continuous
    for num_steps in settings.denoising_steps:
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
            batch_size=settings.batch_size,
        )
        models[str(num_steps)] = _summary(curves, evaluated)
        detection = reward_detection(
            denoiser, trained.agent.reward_model, test_dataset, sampler_cfg, seed=seed * 1000 + num_steps
        )
        if detection.reward_kind is RewardKind.sign:
            log(
                f"{run_dir}: reward steps {detection.num_reward_steps}, recall on predicted / real next "
                f"frames {detection.recall_predicted:.3f} / {detection.recall_real:.3f}"
            )
        else:
            log(
                f"{run_dir}: {detection.num_reward_steps + detection.num_zero_steps} steps, reward absolute "
                f"error on predicted / real next frames {detection.abs_error_predicted:.3f} / "
                f"{detection.abs_error_real:.3f}"
            )
        rewards[str(num_steps)] = detection.to_json()
        per_step[f"steps_{num_steps}"] = {mode: c.means() for mode, c in curves.items()}
        if continuous:
            fidelity[str(num_steps)] = agent_action_fidelity(
                denoiser,
                sampler_cfg,
                cfg,
                seed=derive_seed(cfg.seed, f"wm_eval/{seed}/action_fidelity"),
                states=settings.fidelity_states,
                device=dev,
            )
            summary = format_action_fidelity(fidelity[str(num_steps)])
            log(f"{run_dir}: {num_steps} denoising step(s), {summary}")
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
        **({"action_fidelity": fidelity} if continuous else {}),
        "per_step": per_step,
    }


def denoiser_kind(source: Path) -> str:
    """The denoiser kind (``edm`` or ``ddpm``) of a run folder or of an agent folder (exported or imported),
    read from its configuration without loading the weights."""
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
    run_dirs: Sequence[Path], out_dir: Path, settings: WmEvalSettings, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Evaluate each run whose denoiser is of one of ``settings.kinds``; write ``wm_quality.json`` and
    ``wm_quality.png`` to ``out_dir``; return the report."""
    horizons, denoising_steps, kinds = settings.horizons, settings.denoising_steps, settings.kinds
    if not run_dirs:
        raise UserError("no run folder given")
    if any(h < 1 for h in horizons) or any(s < 1 for s in denoising_steps) or settings.num_episodes < 1:
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
        runs.append(evaluate_run(run_dir, settings, log))
    if not runs:
        raise UserError(f"no run has a denoiser of kind {', '.join(kinds)}")
    found = {r["kind"] for r in runs}
    missing = [k for k in kinds if k not in found]
    report: dict[str, Any] = {
        "horizons": sorted(set(horizons)),
        "denoising_steps": list(denoising_steps),
        "kinds": list(kinds),
        "kinds_without_run": missing,
        "num_episodes": settings.num_episodes,
        "seed": settings.seed,
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
    write_wm_quality(report, out_dir, plot_report)
    return report
