"""The training run: docs/method.md §2's schedule of collection, world-model training and imagination.

1. Initial collection with the untrained (uniform) policy: ``initial_min_steps``, then chunks of
   ``steps_per_epoch`` until the minority reward classes hold enough rewards (or ``initial_max_steps``).
2. Epochs until the real-step budget is spent, then ``num_final_epochs`` more without collection. Each
   epoch: collect, train the denoiser, the reward/termination model, then the actor-critic in imagination
   (``training.diagnostics``: the learning diagnostics are measured just before it, ``diagnostics.py``);
   every ``test_every_epochs``: test episodes and world-model test losses.
3. The final evaluation (``num_final_episodes`` test episodes) writes ``eval.json``.

With ``training.model_free`` (the baseline), the actor-critic learns from real rollouts instead
(``diffworld.agent.model_free``) and every one of their steps is spent from ``collection.total_env_steps``:
no initial collection, no collector steps, no world-model training (the denoiser and the reward/termination
model stay as initialized, their test losses are not logged); epochs of actor-critic steps go on until the
budget is spent, and ``num_final_epochs`` does not apply (without real steps there is nothing to learn from).

The whole state is checkpointed after every initial-collection chunk and every epoch; a resumed run
continues from the last checkpoint with the same random streams, environments and running episodes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from diffworld.agent import Agent, export_agent
from diffworld.agent.collector import Collector, EpisodeStats
from diffworld.agent.diagnostics import epoch_diagnostics, recent_and_old, reward_rate
from diffworld.agent.evaluate import evaluate_policy, write_eval_json
from diffworld.agent.imagination import ImaginationActorCriticLoss, WorldModelEnv
from diffworld.agent.model_free import ModelFreeActorCriticLoss, RealEnvRollouts, RealRolloutBatches
from diffworld.agent.reward_recall import RewardDetection, reward_detection
from diffworld.agent.run_folder import save_agent_copy, set_aside_after_checkpoint
from diffworld.agent.test_video import log_test_video
from diffworld.config.loading import reward_model_seq_length, save_config, to_dict
from diffworld.config.schema import Config, EpochTrainingConfig, RewardKind
from diffworld.data import EpisodeDataset, SegmentSampler, has_enough_minority_rewards
from diffworld.data.actions import box_spec
from diffworld.envs.from_config import make_envs
from diffworld.envs.vector import AtariEnvs
from diffworld.fitting.logger import MetricsLogger
from diffworld.fitting.optim import make_optimizer, make_warmup_scheduler
from diffworld.fitting.precision import autocast
from diffworld.fitting.trainer import CheckpointedTrainer, RunClock
from diffworld.fitting.update import BatchSource, SampledBatches, TrainingSlot
from diffworld.fitting.wandb_logger import WandbLogger, require_wandb
from diffworld.run.checkpoint import (
    generator_state,
    isolated_global_rng,
    rng_state,
    save_checkpoint,
    set_generator_state,
    set_rng_state,
)
from diffworld.run.folder import (
    CONFIG_FILE,
    EVAL_FILE,
    RunDirError,
    checkpoint_dir,
    dataset_dir,
)
from diffworld.utils.device import resolve_device
from diffworld.utils.seeding import derive_seed, make_rng, seed_everything

MODEL_NAMES = ("denoiser", "reward_model", "actor_critic")
AGENT_STATE_KEYS = (
    "counters",
    "agent",
    "optimizers",
    "schedulers",
    "rng",
    "samplers",
    "generators",
    "collector",
)


@dataclass
class Counters:
    """Where the run stands; saved in every checkpoint."""

    phase: str = "initial"
    """``initial`` (collecting the initial dataset), ``epochs``, ``final`` (evaluation) or ``done``."""
    epoch: int = 0
    num_epochs_collect: int = 0
    """Epochs that collect; known once the initial collection is over."""
    num_updates: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODEL_NAMES, 0))
    train_seconds: float = 0.0
    """Wall-clock seconds spent in this run up to the last checkpoint, summed over resumes."""
    num_records: int = 0
    """Records in ``metrics.jsonl`` when the checkpoint was saved."""


class ActorCriticBatches(BatchSource, Protocol):
    """Where the actor-critic learns: imagination from dataset segments (``ImaginationBatches``) or, for the
    model-free baseline (``training.model_free``), real rollouts (``model_free.RealRolloutBatches``), which
    spend the real-step budget themselves and leave the world model out of the run."""

    uses_world_model: bool
    """Whether the run collects a dataset and trains and tests the world model for it."""

    @property
    def num_env_steps(self) -> int:
        """Real agent steps taken for these batches."""
        ...

    def pop_episodes(self) -> list[EpisodeStats]:
        """The real episodes these batches completed since the last call."""
        ...

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint must hold beyond the samplers' random streams (None: nothing)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ImaginationBatches(SampledBatches):
    """The segments imagination starts from: no real step, no episode, no state of their own."""

    uses_world_model = True
    num_env_steps = 0

    def pop_episodes(self) -> list[EpisodeStats]:
        return []

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise ValueError("imagination's batches have no state to load beyond their segment sampler's")

    def close(self) -> None:
        pass


@dataclass(kw_only=True)
class AgentTrainingSlot(TrainingSlot):
    """One of the agent's models with what trains it (``fitting.update.TrainingSlot``).

    ``segments`` draws the dataset segments behind ``batches`` (a model-free actor-critic's batches are real
    rollouts instead); the test losses go through the test episodes in segments of its shape."""

    segments: SegmentSampler
    training: EpochTrainingConfig


class Trainer(CheckpointedTrainer):
    checkpoint_keys = AGENT_STATE_KEYS
    resume_command = "diffworld train --resume"
    logger: MetricsLogger

    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False) -> None:
        self.cfg = cfg
        if cfg.logging.wandb:
            require_wandb()  # before anything is written
        super().__init__(run_dir)
        try:
            with self.disk_full_is_resumable():
                self._setup(cfg, resume)
        except BaseException:
            self._close()  # this process will not write the folder: another one may
            raise

    def _setup(self, cfg: Config, resume: bool) -> None:
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        c = cfg.collection

        self.train_envs = make_envs(cfg, cfg.env.num_train_envs, "train_env", life_loss_terminal=True)
        self.test_envs = make_envs(
            cfg,
            cfg.env.num_test_envs,
            "test_env",
            life_loss_terminal=False,
            max_frames_per_episode=c.test_max_frames_per_episode,
        )
        self.num_actions = self.train_envs.num_actions
        """The number of discrete actions, or of the components of a continuous action."""
        self.continuous = self.train_envs.continuous
        # Continuous actions: the agent's [-1, 1]^D (envs.continuous rescales them to the game's bounds).
        actions = box_spec(self.num_actions) if self.continuous else self.num_actions
        self.agent = Agent.build(cfg, actions).to(self.device)
        self.action_shape = self.agent.action_shape

        frame_shape = (cfg.env.size, cfg.env.size, 3)
        capacity = c.total_env_steps + c.steps_per_epoch
        state = self.open_checkpoint(resume)
        if state is not None:
            # Checkpoints saved before running episodes were stored have no lengths: all their episodes ended.
            lengths = state.get("dataset_lengths")
            set_aside_after_checkpoint(
                dataset_dir(self.run_dir), keep=state["dataset_num_episodes"], lengths=lengths
            )
            self.dataset = EpisodeDataset.load(
                dataset_dir(self.run_dir),
                max_episodes=state["dataset_num_episodes"],
                frame_shape=frame_shape,
                capacity_steps=capacity,
                action_shape=self.action_shape,
            )
            if lengths is not None and not np.array_equal(self.dataset.lengths, lengths):
                raise RuntimeError(
                    f"the episodes of {dataset_dir(self.run_dir)} differ from the checkpoint's"
                )
        else:
            if resume:  # stopped before its first checkpoint: its episodes go
                set_aside_after_checkpoint(dataset_dir(self.run_dir), keep=0)
            save_config(cfg, self.run_dir / CONFIG_FILE)
            self.dataset = EpisodeDataset(
                dataset_dir(self.run_dir),
                frame_shape=frame_shape,
                capacity_steps=capacity,
                action_shape=self.action_shape,
            )

        self.generators = {
            name: torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, name))
            for name in ("collector", "test_collector", "imagination")
        }

        def collector(
            name: str, envs: AtariEnvs, epsilon: float, dataset: EpisodeDataset | None
        ) -> Collector:
            """The policy's collector ``name`` (its random generator's name too) in ``envs``."""
            return Collector(
                envs,
                self.agent.actor_critic,
                epsilon=epsilon,
                temperature=cfg.policy_temperature(),
                device=self.device,
                generator=self.generators[name],
                dataset=dataset,
            )

        self.collector = collector("collector", self.train_envs, c.train_epsilon, self.dataset)
        self.test_collector = collector("test_collector", self.test_envs, c.test_epsilon, None)
        self.slots = self._build_slots()

        self.counters = Counters()
        self.recent_from: np.ndarray | None = None
        """The episodes' lengths before the last collection (None before the first epoch's)."""
        if state is not None:
            self._load_state(state)
        self.clock = RunClock(self.counters.train_seconds)
        wandb = (
            WandbLogger(self.run_dir, cfg.logging.wandb_project, to_dict(cfg)) if cfg.logging.wandb else None
        )
        self.open_logger(
            tensorboard=cfg.logging.tensorboard,
            resume=resume,
            resumed=state is not None,
            num_records=self.counters.num_records,
            step=self.env_steps,
            wandb=wandb,
        )
        if state is None:
            self._save_checkpoint()

    def _build_slots(self) -> dict[str, AgentTrainingSlot]:
        cfg = self.cfg
        num_cond = cfg.denoiser.num_cond_frames

        def segments_of(name: str, seq_length: int, beyond_end: bool) -> SegmentSampler:
            training = getattr(cfg, name).training
            return SegmentSampler(
                self.dataset,
                training.batch_size,
                seq_length,
                training.sample_weights,
                beyond_end,
                rng=make_rng(cfg.seed, f"sampler/{name}"),
                device=self.device,
            )

        ac_segments = segments_of("actor_critic", num_cond - 1, False)
        ac_loss: nn.Module
        ac_batches: ActorCriticBatches
        if cfg.training.model_free:
            # The baseline: real rollouts in envs of their own, every step spent from the run's budget.
            envs = make_envs(cfg, cfg.actor_critic.training.batch_size, "model_free", life_loss_terminal=True)
            generator = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, "model_free"))
            model_free_loss = ModelFreeActorCriticLoss(
                self.agent.actor_critic,
                RealEnvRollouts(
                    envs, self.device, generator, RewardKind(cfg.reward_model.reward_kind) is RewardKind.sign
                ),
                cfg.actor_critic,
                max_env_steps=cfg.collection.total_env_steps,
            )
            ac_loss, ac_batches = model_free_loss, RealRolloutBatches(model_free_loss)
        else:
            wm_env = WorldModelEnv(
                self.agent.denoiser,
                self.agent.reward_model,
                ac_segments,
                cfg.denoiser.sampler,
                cfg.actor_critic.imagination_horizon,
                self.generators["imagination"],
            )
            ac_loss = ImaginationActorCriticLoss(self.agent.actor_critic, wm_env, cfg.actor_critic)
            ac_batches = ImaginationBatches(ac_segments)
        self.actor_critic_batches = ac_batches
        denoiser_segments = segments_of(
            "denoiser", num_cond + cfg.denoiser.training.num_autoregressive_steps - 1, False
        )
        reward_segments = segments_of("reward_model", reward_model_seq_length(cfg), True)
        models: dict[str, tuple[nn.Module, BatchSource, SegmentSampler]] = {
            "denoiser": (self.agent.denoiser, SampledBatches(denoiser_segments), denoiser_segments),
            "reward_model": (self.agent.reward_model, SampledBatches(reward_segments), reward_segments),
            "actor_critic": (ac_loss, ac_batches, ac_segments),
        }
        slots = {}
        for name, (model, batches, model_segments) in models.items():
            model_cfg = getattr(cfg, name)
            optimizer = make_optimizer(model, model_cfg.optimizer)
            slots[name] = AgentTrainingSlot(
                model=model,
                batches=batches,
                segments=model_segments,
                optimizer=optimizer,
                scheduler=make_warmup_scheduler(optimizer, model_cfg.optimizer.warmup_steps),
                training=model_cfg.training,
                optim_cfg=model_cfg.optimizer,
            )
        return slots

    # ----------------------------------------------------------------------------------------- the schedule

    @property
    def num_epochs(self) -> int:
        # Final epochs train on the dataset without collecting; real rollouts end with the real steps.
        final = self.cfg.training.num_final_epochs if self.actor_critic_batches.uses_world_model else 0
        return self.counters.num_epochs_collect + final

    @property
    def trained_models(self) -> tuple[str, ...]:
        """The models an epoch trains, in order."""
        return MODEL_NAMES if self.actor_critic_batches.uses_world_model else ("actor_critic",)

    @property
    def env_steps(self) -> int:
        """Real agent steps taken so far: training collection, plus those of the actor-critic's batches."""
        return self.collector.num_steps_total + self.actor_critic_batches.num_env_steps

    def check_checkpoint(self, state: dict[str, Any], path: Path) -> None:
        if state.get("game", self.cfg.game) != self.cfg.game:  # older checkpoints lack "game"
            raise RunDirError(
                f"{path} was saved by a run of {state['game']}, but {self.run_dir / CONFIG_FILE} says "
                f"{self.cfg.game} (edited by hand?): put game: {state['game']} back to resume."
            )

    def run(self) -> dict[str, Any] | None:
        """Run (or finish) the schedule; returns the final evaluation report."""
        with self.disk_full_is_resumable():
            return self._run()

    def _run(self) -> dict[str, Any] | None:
        try:
            if self.counters.phase == "initial":
                if self.actor_critic_batches.uses_world_model:
                    self._initial_collection()
                else:
                    self._plan_real_rollouts()
            epochs = tqdm(
                total=self.num_epochs,
                initial=self.counters.epoch,
                desc="epochs",
                unit="epoch",
                dynamic_ncols=True,
            )
            with epochs:
                while self.counters.phase == "epochs":
                    metrics = self._run_epoch()
                    epochs.update(1)
                    epochs.set_postfix(_progress_summary(metrics, self.env_steps), refresh=True)
            if self.counters.phase == "final":
                return self._final_evaluation()
            return None
        finally:
            self._close()

    def _close(self) -> None:
        """The environments and real rollouts closed (those made before a failed setup included), the logger
        closed, the folder's lock given back."""
        for name in ("train_envs", "test_envs", "actor_critic_batches"):
            if hasattr(self, name):
                getattr(self, name).close()
        self.release()

    def _initial_collection(self) -> None:
        c = self.cfg.collection
        with tqdm(
            total=c.initial_min_steps, desc="initial collection", unit="step", dynamic_ncols=True
        ) as bar:
            bar.update(self.collector.num_steps_total)
            while True:
                # Training needs a stored episode (the running one counts), whatever the step counts.
                done_min = (
                    self.collector.num_steps_total >= c.initial_min_steps and self.dataset.num_episodes > 0
                )
                counts = self.dataset.reward_sign_counts()
                if done_min and (
                    has_enough_minority_rewards(counts, c.initial_min_minority_rewards)
                    or self.collector.num_steps_total >= c.initial_max_steps
                ):
                    break
                stats = self.collector.collect_steps(c.steps_per_epoch)
                bar.total = max(bar.total, self.collector.num_steps_total)
                bar.update(c.steps_per_epoch)
                bar.set_postfix(episodes=self.dataset.num_episodes, rewards=counts.tolist())
                self.logger.log(
                    _episode_metrics("collection/train", stats),
                    epoch=0,
                    env_steps=self.collector.num_steps_total,
                )
                self._save_checkpoint()
        remaining = c.total_env_steps - self.collector.num_steps_total
        self.counters.num_epochs_collect = max(0, math.ceil(remaining / c.steps_per_epoch))
        self.counters.phase = "epochs" if self.num_epochs > 0 else "final"
        self._save_checkpoint()

    def _plan_real_rollouts(self) -> None:
        """The model-free schedule: as many epochs of actor-critic steps as the real-step budget funds."""
        rollouts_left = self.actor_critic_batches.batches_left()
        assert rollouts_left is not None
        t = self.cfg.actor_critic.training
        updates = -(-rollouts_left // t.grad_acc_steps)
        if updates <= t.steps_first_epoch:
            epochs = min(updates, 1)
        else:
            epochs = 1 + -(-(updates - t.steps_first_epoch) // t.steps_per_epoch)  # validated >= 1
        self.counters.num_epochs_collect = epochs
        self.counters.phase = "epochs" if epochs > 0 else "final"
        self._save_checkpoint()

    def _run_epoch(self) -> dict[str, float]:
        t0 = time.monotonic()
        counters, cfg = self.counters, self.cfg
        counters.epoch += 1
        metrics: dict[str, float] = {}
        collects = self.actor_critic_batches.uses_world_model  # real rollouts spend the real steps instead
        if counters.epoch <= counters.num_epochs_collect and collects:
            lengths_before = self.dataset.lengths.copy()
            stats = self.collector.collect_steps(cfg.collection.steps_per_epoch)
            self.recent_from = lengths_before
            metrics |= _episode_metrics("collection/train", stats)
            neg, zero, pos = self.dataset.reward_sign_counts()
            metrics["collection/train/dataset_reward_rate"] = float((neg + pos) / max(1, neg + zero + pos))
            # The steps just collected, by the policy whose imagined rate is actor_critic/train/reward_rate.
            recent, _ = recent_and_old(self.dataset, lengths_before)
            metrics["collection/train/recent_reward_rate"] = reward_rate(self.dataset, recent)
        for name in self.trained_models:
            if name == "actor_critic" and collects and cfg.training.diagnostics:
                # The world model the actor-critic is about to learn in, on the policy's latest steps.
                t_diagnostics = time.monotonic()
                metrics |= self.diagnostics()
                metrics["time/diagnostics_seconds"] = time.monotonic() - t_diagnostics
            training = self.slots[name].training
            steps = training.steps_first_epoch if counters.epoch == 1 else training.steps_per_epoch
            t_model = time.monotonic()
            metrics |= self.train_model(name, steps)
            metrics[f"time/{name}_seconds"] = time.monotonic() - t_model
        metrics |= _episode_metrics("collection/model_free", self.actor_critic_batches.pop_episodes())
        if counters.epoch % cfg.collection.test_every_epochs == 0:
            t_test = time.monotonic()
            metrics |= self._test()
            metrics["time/test_seconds"] = time.monotonic() - t_test
        metrics["time/epoch_seconds"] = time.monotonic() - t0
        metrics["time/total_hours"] = self.clock.elapsed() / 3600
        self.logger.log(metrics, epoch=counters.epoch, env_steps=self.env_steps)
        if counters.epoch % cfg.training.save_agent_every == 0:
            save_agent_copy(self.agent.state_dict(), checkpoint_dir(self.run_dir), counters.epoch)
        if counters.epoch >= self.num_epochs:
            counters.phase = "final"
        self._save_checkpoint()
        return metrics

    def autocast(self) -> torch.autocast:
        """The number format of training's forward passes, the imagined rollouts included."""
        return autocast(self.device, self.cfg.training.precision)

    def train_model(self, name: str, steps: int) -> dict[str, float]:
        """``steps`` updates of one of ``MODEL_NAMES`` (``TrainingSlot.train``); its ``name/train/...``
        metrics."""
        # The world model only generates while the actor-critic learns in imagination.
        self.agent.eval()
        result = self.slots[name].train(steps, self.autocast, name)
        self.counters.num_updates[name] += result.num_updates
        return {f"{name}/train/{key}": value for key, value in result.metrics.items()}

    def diagnostics(self) -> dict[str, float]:
        """``training.diagnostics``' metrics of this epoch (``diffworld.agent.diagnostics``): the world
        model on the last collecting epoch's steps against the older ones, the policy imagined from them.

        Like a test, they draw nothing from the training's random streams: their generators are their own,
        seeded from the run seed and the epoch, and torch's global ones are put back as they were."""
        if self.recent_from is None:
            return {}
        recent, old = recent_and_old(self.dataset, self.recent_from)
        if len(recent) == 0:
            return {}
        return epoch_diagnostics(
            self.agent,
            self.dataset,
            recent,
            old,
            self.cfg,
            derive_seed(self.cfg.seed, f"diagnostics/{self.counters.epoch}"),
            self.autocast,
            denoiser_seq_length=self.slots["denoiser"].segments.seq_length,
        )

    def _test(self) -> dict[str, float]:
        """Test episodes, then the world model's losses on them (a fresh test dataset each time).

        A test draws nothing from the training's random streams, so the training that follows is the same
        whether and when tests ran: its episodes come from the test envs and the test collector's generator
        (checkpointed), the losses' noise from the global generators seeded for this test's epoch and put
        back as they were after it, the reward recall and the video from generators of their own."""
        with isolated_global_rng(derive_seed(self.cfg.seed, f"test/{self.counters.epoch}")):
            return self._test_metrics()

    @torch.no_grad()
    def _test_metrics(self) -> dict[str, float]:
        test_dataset = EpisodeDataset(
            frame_shape=(self.cfg.env.size, self.cfg.env.size, 3), action_shape=self.action_shape
        )
        self.test_collector.dataset = test_dataset
        stats = self.test_collector.collect_episodes(self.cfg.collection.num_test_episodes)
        self.test_collector.dataset = None  # the test episodes' frames go when this test is done
        metrics = _episode_metrics("collection/test", stats)
        if test_dataset.num_episodes == 0 or not self.actor_critic_batches.uses_world_model:
            return metrics
        for name in ("denoiser", "reward_model"):
            slot = self.slots[name]
            sums: dict[str, float] = {}
            num_batches = 0
            for batch in slot.segments.traverse(test_dataset):
                _, batch_metrics = slot.model(batch)
                for key, value in batch_metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                num_batches += 1
            metrics |= {f"{name}/test/{key}": value / max(1, num_batches) for key, value in sums.items()}
        detection = reward_detection(
            self.agent.denoiser,
            self.agent.reward_model,
            test_dataset,
            self.cfg.denoiser.sampler,
            seed=derive_seed(self.cfg.seed, f"reward_detection/{self.counters.epoch}"),
        )
        metrics |= _reward_detection_metrics(detection)
        if self.cfg.logging.video_steps > 0:
            # Real | imagined from the same start, to TensorBoard; its own generator leaves the run's alone.
            log_test_video(
                self.logger,
                self.agent.denoiser,
                self.cfg.denoiser.sampler,
                test_dataset,
                self.cfg.logging.video_steps,
                env_steps=self.env_steps,
                seed=derive_seed(self.cfg.seed, f"video/{self.counters.epoch}"),
            )
        return metrics

    def _final_evaluation(self) -> dict[str, Any]:
        c = self.cfg.collection
        tqdm.write(f"Final evaluation: {c.num_final_episodes} test episodes")
        report = evaluate_policy(
            self.agent.actor_critic,
            self.cfg,
            num_episodes=c.num_final_episodes,
            epsilon=c.test_epsilon,
            device=self.device,
            env_steps=self.env_steps,
            train_seconds=self.clock.elapsed(),
            checkpoint_epoch=self.counters.epoch,
        )
        write_eval_json(report, self.run_dir / EVAL_FILE)
        final = {"evaluation/final/return_mean": report["mean"], "evaluation/final/return_std": report["std"]}
        if report["hns"] is not None:
            final["evaluation/final/hns"] = report["hns"]
        self.logger.log(final, epoch=self.counters.epoch, env_steps=self.env_steps)
        export_agent(
            self.agent,
            self.cfg,
            self.num_actions,
            self.run_dir / "agent",
            metadata={"epoch": self.counters.epoch, "env_steps": self.env_steps},
            overwrite=True,
        )
        self.counters.phase = "done"
        self._save_checkpoint()
        tqdm.write(
            f"Final evaluation on {self.cfg.game}: mean return {report['mean']:.2f} +- {report['std']:.2f} "
            f"over {report['num_episodes']} episodes"
            + (f", human-normalized score {report['hns']:.3f}" if report["hns"] is not None else "")
        )
        return report

    # ------------------------------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        self.counters.train_seconds = self.clock.lap()
        self.counters.num_records = self.logger.num_records
        state = {
            "counters": asdict(self.counters),
            "agent": self.agent.state_dict(),
            "optimizers": {name: c.optimizer.state_dict() for name, c in self.slots.items()},
            "schedulers": {name: c.scheduler.state_dict() for name, c in self.slots.items()},
            "rng": rng_state(),
            "samplers": {name: generator_state(c.segments.rng) for name, c in self.slots.items()},
            "generators": {name: g.get_state() for name, g in self.generators.items()},
            "collector": self.collector.state_dict(),
            "test_collector": self.test_collector.state_dict(),
            "dataset_num_episodes": self.dataset.num_episodes,
            # Where each episode stood: a resumed run drops the steps that open episodes gained since.
            "dataset_lengths": self.dataset.lengths.copy(),
            "num_actions": self.num_actions,
            "game": self.cfg.game,  # checked against config.yaml by the commands that load the agent
            # The episodes' lengths before the last collection: its steps are the diagnostics' recent ones.
            "recent_from": None if self.recent_from is None else self.recent_from.copy(),
        }
        if self.continuous:  # discrete runs' checkpoints keep their keys
            state["action_space"] = self.agent.action_spec.to_json()
        batches_state = self.actor_critic_batches.state_dict()
        if batches_state is not None:
            state["model_free"] = batches_state
        save_checkpoint(state, checkpoint_dir(self.run_dir))

    def _load_state(self, state: dict[str, Any]) -> None:
        counters = dict(state["counters"])
        self.counters = Counters(**counters)
        self.agent.load_state_dict(state["agent"])
        for name, slot in self.slots.items():
            slot.optimizer.load_state_dict(state["optimizers"][name])
            slot.scheduler.load_state_dict(state["schedulers"][name])
            set_generator_state(slot.segments.rng, state["samplers"][name])
        for name, generator in self.generators.items():
            generator.set_state(state["generators"][name])
        self.collector.load_state_dict(state["collector"])
        self.test_collector.load_state_dict(state["test_collector"])
        self.recent_from = state.get("recent_from")  # absent from older checkpoints
        if "model_free" in state:
            self.actor_critic_batches.load_state_dict(state["model_free"])
        set_rng_state(state["rng"])


_PROGRESS_KEYS = {
    "den": "denoiser/train/loss_denoising",
    "rew": "reward_model/train/loss",
    "ac": "actor_critic/train/loss",
    "ret": "collection/train/return_mean",
    "test": "collection/test/return_mean",
    "mf": "collection/model_free/return_mean",
}


def _progress_summary(metrics: dict[str, float], env_steps: int) -> dict[str, str]:
    """The epoch bar's postfix: env steps and the latest losses and returns."""
    summary = {"env_steps": str(env_steps)}
    summary |= {short: f"{metrics[key]:.3g}" for short, key in _PROGRESS_KEYS.items() if key in metrics}
    return summary


def _episode_metrics(prefix: str, stats: list[EpisodeStats]) -> dict[str, float]:
    if not stats:
        return {}
    returns = np.array([s.episode_return for s in stats], dtype=np.float64)
    lengths = np.array([s.length for s in stats], dtype=np.float64)
    return {
        f"{prefix}/return_mean": float(returns.mean()),
        f"{prefix}/return_std": float(returns.std()),
        f"{prefix}/length_mean": float(lengths.mean()),
        f"{prefix}/num_episodes": float(len(stats)),
    }


def _reward_detection_metrics(detection: RewardDetection) -> dict[str, float]:
    """The reward model's sign on the denoiser's next frames (``denoiser/test``) and on the real ones
    (``reward_model/test``), or the absolute error of its reward (``reward_kind=value``); rates without
    steps to count (no reward in the test episodes) are left out."""
    d = detection
    metrics = {
        "denoiser/test/reward_recall": d.recall_predicted,
        "denoiser/test/reward_false_positive_rate": d.false_positive_rate_predicted,
        "reward_model/test/reward_recall": d.recall_real,
        "reward_model/test/reward_false_positive_rate": d.false_positive_rate_real,
        "denoiser/test/reward_abs_error": d.abs_error_predicted,
        "reward_model/test/reward_abs_error": d.abs_error_real,
    }
    return {key: value for key, value in metrics.items() if not math.isnan(value)}
