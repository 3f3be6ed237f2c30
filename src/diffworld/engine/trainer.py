"""Training of an engine: its denoiser and upsampler on an engine dataset (docs/engine.md, "Training").

Both models take their updates in turn, each through its ``fitting.update.TrainingSlot`` (the loop every
model of the project trains with), in chunks that end at the next log, test or checkpoint. A checkpoint
(``run/checkpoint.py``: atomic, weights-only) holds the models, optimizers, schedulers, every process's random
generators and the counters, so a run killed at any moment (SIGKILL included) resumes from its last
checkpoint and goes on as if it had not stopped: what was logged after the checkpoint is dropped and redone.
A model with ``training.ema_decay`` keeps an exponential moving average of its weights (``fitting/ema.py``),
updated after each of its optimizer updates and saved under the checkpoint's ``ema`` key (absent without
one); the tests measure it, not the live weights.
Test losses on the dataset's test split, from generators seeded anew at every test so that tests compare,
leave the training's random streams alone.

Under ``torchrun`` (``fitting/distributed.py``) every process trains a DDP replica on its share of each global
batch, and process 0 alone writes the run folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from diffworld.config.loading import save_config
from diffworld.data.folder_store import EngineDataset
from diffworld.engine.config import (
    EngineConfig,
    EngineDenoiserConfig,
    with_low_res,
)
from diffworld.engine.denoiser import EngineDenoiser, Upsampler
from diffworld.engine.folder import save_action_space
from diffworld.engine.open_engine import engine_samplers
from diffworld.engine.quality import evaluate_quality, quality_metrics
from diffworld.engine.segment_sampler import EngineSegmentSampler
from diffworld.engine.trained import TrainedEngine, weights_name
from diffworld.fitting import distributed
from diffworld.fitting.ema import exponential_average
from diffworld.fitting.optim import make_optimizer, make_warmup_scheduler
from diffworld.fitting.precision import autocast
from diffworld.fitting.trainer import CheckpointedTrainer, RunClock
from diffworld.fitting.update import SampledBatches, TrainingSlot
from diffworld.run.checkpoint import (
    generator_state,
    rng_state,
    save_checkpoint,
    set_generator_state,
    set_rng_state,
)
from diffworld.run.folder import CONFIG_FILE, checkpoint_dir
from diffworld.utils.seeding import derive_seed, make_rng, seed_everything

logger = logging.getLogger(__name__)

ENGINE_STATE_KEYS = (
    "updates",
    "train_seconds",
    "num_records",
    "pending_metrics",
    "models",
    "optimizers",
    "schedulers",
    "processes",
)


@dataclass(kw_only=True)
class EngineTrainingSlot(TrainingSlot):
    """One of the engine's models with what trains it (``fitting.update.TrainingSlot``)."""

    model: EngineDenoiser | Upsampler
    cfg: EngineDenoiserConfig
    batches: SampledBatches
    full_res: bool
    """Whether its batches carry the full-resolution frames (the upsampler's)."""

    def tested(self) -> EngineDenoiser | Upsampler:
        """The weights the tests measure and the trained engine plays with: the average's, else the live
        ones."""
        if self.ema is None:
            return self.model
        module = self.ema.module
        assert isinstance(module, EngineDenoiser | Upsampler)
        return module


class EngineTrainer(CheckpointedTrainer):
    """Trains an engine in ``run_dir`` (created, or resumed with ``resume``); under ``torchrun``, process 0
    writes it."""

    checkpoint_keys = ENGINE_STATE_KEYS
    resume_command = "diffworld engine train --resume"

    def __init__(self, cfg: EngineConfig, run_dir: Path, resume: bool = False) -> None:
        self.cfg = cfg
        self.processes = distributed.launched_processes()
        self.device = distributed.process_device(cfg.device, self.processes)
        distributed.start(self.processes, self.device)
        super().__init__(run_dir, writes=self.processes.is_main)
        try:
            with self.disk_full_is_resumable():
                self._setup(resume)
        except BaseException:
            self._close(failed=True)
            raise

    def _setup(self, resume: bool) -> None:
        self.dataset = EngineDataset(self.cfg.data)
        # low_res derived from the frames where not given (config.yaml saves it, so a resume keeps it).
        self.cfg = with_low_res(self.cfg, self.dataset.frame_size)
        cfg, p = self.cfg, self.processes
        seed_everything(cfg.seed)  # every process builds the same models
        self.slots = {"denoiser": self._slot("denoiser", EngineDenoiser(cfg.denoiser, self.dataset.spec))}
        if cfg.upsampler is not None:
            self.slots["upsampler"] = self._slot("upsampler", Upsampler(cfg.upsampler))
        # Each process draws its own noise from here on.
        torch.manual_seed(derive_seed(cfg.seed, f"training/process{p.rank}"))

        self.updates = 0
        self._pending: list[tuple[int, dict[str, float]]] = []
        num_records = 0
        state = self.open_checkpoint(resume, map_location=self.device)
        self._resumed = state is not None
        if state is not None:
            num_records = self._load_state(state)
        elif p.is_main:
            save_config(cfg, self.run_dir / CONFIG_FILE)
            save_action_space(self.run_dir, self.dataset.spec)
        if p.is_main:
            self.open_logger(
                tensorboard=cfg.logging.tensorboard,
                resume=resume,
                resumed=state is not None,
                num_records=num_records,
                step=self.updates,
            )
        # The clock runs from here: loading the dataset is not training.
        self.clock = RunClock(float(state["train_seconds"]) if state is not None else 0.0)
        if state is None:
            self._save_checkpoint()

    def _slot(self, name: str, model: EngineDenoiser | Upsampler) -> EngineTrainingSlot:
        cfg, p, mcfg = self.cfg, self.processes, model.cfg
        model = model.to(self.device)
        optimizer = make_optimizer(model, mcfg.optimizer)
        batch_size = distributed.per_process_batch_size(
            mcfg.training.batch_size,
            p,
            f"{name}.training.batch_size",
            per_process=cfg.training.batch_size_per_process,
        )
        full_res = name == "upsampler"
        segments = EngineSegmentSampler(
            self.dataset,
            self.dataset.train_ids,
            batch_size,
            mcfg.num_cond_frames + mcfg.training.num_autoregressive_steps,
            cfg.low_res_size(),
            make_rng(cfg.seed, f"sampler/{name}/process{p.rank}"),
            self.device,
            full_res=full_res,
            low_res_filter=cfg.low_res_filter,
        )
        decay = mcfg.training.ema_decay
        return EngineTrainingSlot(
            model=model,
            replica=distributed.wrap(model, p, self.device),
            cfg=mcfg,
            optimizer=optimizer,
            scheduler=make_warmup_scheduler(optimizer, mcfg.optimizer.warmup_steps),
            training=mcfg.training,
            optim_cfg=mcfg.optimizer,
            batches=SampledBatches(segments),
            full_res=full_res,
            # Of the unwrapped module, whose parameters the DDP replica shares.
            ema=None if decay is None else exponential_average(model, decay),
        )

    def autocast(self) -> AbstractContextManager[object]:
        return autocast(self.device, self.cfg.training.precision)

    # ------------------------------------------------------------------------------------------------ loop

    def run(self) -> dict[str, float]:
        """Train to ``training.num_updates`` updates or ``training.max_minutes``, whichever comes first; the
        last test's metrics (empty without a test split)."""
        t = self.cfg.training
        last_test: dict[str, float] = {}
        try:
            with tqdm(
                total=t.num_updates, initial=self.updates, desc="engine", disable=not self.processes.is_main
            ) as bar:
                # A resumed run that had run out of time stops at once.
                out_of_time = self._resumed and self._out_of_time(self.clock.seconds)
                while self.updates < t.num_updates and not out_of_time:
                    steps = self._steps_to_next_event()
                    self._train(steps)
                    bar.update(steps)
                    out_of_time = self._out_of_time(self.clock.elapsed())
                    done = self.updates == t.num_updates or out_of_time
                    if self.updates % t.log_every == 0 or done:
                        self._log_train()
                    if self.updates % t.test_every == 0 or done:
                        last_test = self._test()
                    if self.updates % t.checkpoint_every == 0 or done:
                        self._save_checkpoint()
        except BaseException:
            self._close(failed=True)
            raise
        self._close()
        return last_test

    def _out_of_time(self, seconds: float) -> bool:
        """Whether ``seconds`` of training reach ``training.max_minutes``; process 0's decides for all."""
        limit = self.cfg.training.max_minutes
        if limit <= 0:
            return False
        return bool(distributed.gather(seconds >= 60 * limit, self.processes)[0])

    def _steps_to_next_event(self) -> int:
        t = self.cfg.training
        return min(
            [every - self.updates % every for every in (t.log_every, t.test_every, t.checkpoint_every)]
            + [t.num_updates - self.updates]
        )

    def _train(self, steps: int) -> None:
        metrics: dict[str, float] = {}
        for name, c in self.slots.items():
            result = c.train(steps, self.autocast, name)
            metrics.update({f"{name}/train/{key}": value for key, value in result.metrics.items()})
        self.updates += steps
        self._pending.append((steps, distributed.mean_over_processes(metrics, self.processes)))

    def _log_train(self) -> None:
        """One record of the training metrics averaged over the updates since the last one."""
        total = sum(n for n, _ in self._pending)
        keys = {key for _, m in self._pending for key in m}
        metrics = {key: sum(n * m.get(key, 0.0) for n, m in self._pending) / total for key in sorted(keys)}
        self._pending = []
        self._log(metrics)

    def _log(self, metrics: dict[str, float]) -> None:
        if self.logger is not None:
            record = {"updates": self.updates, "train_seconds": round(self.clock.elapsed(), 1), **metrics}
            self.logger.log_record(record, metrics, step=self.updates)

    @torch.no_grad()
    def _test(self) -> dict[str, float]:
        """Mean loss of each model on ``num_test_batches`` batches of test segments, and the quality of
        ``quality_trajectories`` open-loop trajectories (process 0 only)."""
        if not self.processes.is_main or len(self.dataset.test_ids) == 0:
            return {}
        cfg = self.cfg
        metrics: dict[str, float] = {}
        with _forked_torch_rng(self.device):
            torch.manual_seed(derive_seed(cfg.seed, "test"))
            for name, c in self.slots.items():
                segments = EngineSegmentSampler(
                    self.dataset,
                    self.dataset.test_ids,
                    c.cfg.training.batch_size,
                    c.cfg.num_cond_frames + c.cfg.training.num_autoregressive_steps,
                    cfg.low_res_size(),
                    make_rng(cfg.seed, f"test/{name}"),
                    self.device,
                    full_res=c.full_res,
                    low_res_filter=cfg.low_res_filter,
                )
                model = c.tested().eval()
                losses = []
                for _ in range(cfg.training.num_test_batches):
                    with self.autocast():
                        loss, _ = model(segments.sample())
                    losses.append(float(loss))
                metrics[f"{name}/test/loss"] = sum(losses) / len(losses)
            if cfg.training.quality_trajectories > 0:
                metrics.update(self._quality())
        self._log(metrics)
        return metrics

    def _quality(self) -> dict[str, float]:
        """``engine/test/...``: PSNR and SSIM of open-loop trajectories from the test split, as ``diffworld
        engine eval`` measures them on a checkpoint (in full precision, as it does). Their draws come from
        a generator of their own, seeded anew at every test, so that a run measures the same trajectories
        every time and, resumed, logs again what it had logged (docs/engine.md, "Training")."""
        cfg = self.cfg
        denoiser = self.slots["denoiser"].tested()
        upsampler = self.slots["upsampler"].tested() if "upsampler" in self.slots else None
        assert isinstance(denoiser, EngineDenoiser)
        assert upsampler is None or isinstance(upsampler, Upsampler)
        weights = weights_name({name: c.ema is not None for name, c in self.slots.items()})
        engine = TrainedEngine(cfg, self.dataset.spec, denoiser.eval(), upsampler, self.updates, weights)
        if upsampler is not None:
            upsampler.eval()  # train_updates sets training mode back
        report = evaluate_quality(
            self.dataset,
            engine_samplers(engine),
            horizons=cfg.training.quality_horizons,
            max_trajectories=cfg.training.quality_trajectories,
            device=self.device,
            generator=torch.Generator(self.device).manual_seed(quality_seed(cfg.seed)),
        )
        return quality_metrics(report, "engine/test")

    # ----------------------------------------------------------------------------------------- checkpoints

    def _save_checkpoint(self) -> None:
        # Collective: every process hands its random generators to process 0, which writes them all.
        per_process = distributed.gather(
            {
                "rng": rng_state(),
                "samplers": {name: generator_state(c.batches.segments.rng) for name, c in self.slots.items()},
            },
            self.processes,
        )
        if self.processes.is_main:
            assert self.logger is not None
            state = {
                "updates": self.updates,
                "train_seconds": self.clock.lap(),
                "num_records": self.logger.num_records,
                # Training metrics of the updates since the last record, which the next one averages.
                "pending_metrics": [[n, metrics] for n, metrics in self._pending],
                "world_size": self.processes.world_size,
                "models": {name: c.model.state_dict() for name, c in self.slots.items()},
                "optimizers": {name: c.optimizer.state_dict() for name, c in self.slots.items()},
                "schedulers": {name: c.scheduler.state_dict() for name, c in self.slots.items()},
                "processes": per_process,
            }
            averages = {name: c.ema.state_dict() for name, c in self.slots.items() if c.ema is not None}
            if averages:  # a run without averages writes what it always did
                state["ema"] = averages
            save_checkpoint(state, checkpoint_dir(self.run_dir))
        distributed.barrier(self.processes)

    def _load_state(self, state: dict[str, Any]) -> int:
        """Restore the training state; returns the metrics records the checkpoint had seen."""
        for name, c in self.slots.items():
            c.model.load_state_dict(state["models"][name])
            c.optimizer.load_state_dict(state["optimizers"][name])
            c.scheduler.load_state_dict(state["schedulers"][name])
            if c.ema is not None:
                saved_ema = state.get("ema", {}).get(name)
                if saved_ema is not None:
                    c.ema.load_state_dict(saved_ema)
                else:  # config.yaml asks for an average the checkpoint lacks: it starts from these weights
                    if self.processes.is_main:
                        logger.warning(
                            "The checkpoint has no weight average of the %s: it starts anew.", name
                        )
                    c.ema.update_parameters(c.model)
        self.updates = int(state["updates"])
        self._pending = [(int(n), dict(metrics)) for n, metrics in state["pending_metrics"]]
        saved = state["processes"]
        if len(saved) == self.processes.world_size:
            mine = saved[self.processes.rank]
            for name, c in self.slots.items():
                set_generator_state(c.batches.segments.rng, mine["samplers"][name])
            set_rng_state(mine["rng"])
        elif self.processes.is_main:
            logger.warning(
                "The checkpoint was saved by %d processes, this run has %d: the random streams start anew.",
                len(saved),
                self.processes.world_size,
            )
        return int(state["num_records"])

    def _close(self, failed: bool = False) -> None:
        """The logger closed and the folder's lock given back, then the process group left (at once if this
        process ``failed``)."""
        self.release()
        distributed.stop(self.processes, failed=failed)


def quality_seed(seed: int) -> int:
    """The seed of the generator of every test's quality trajectories (``diffworld engine eval --seed``
    with it measures a checkpoint as its run did)."""
    return derive_seed(seed, "test/quality")


@contextmanager
def _forked_torch_rng(device: torch.device) -> Iterator[None]:
    """Torch's generators (the CPU's and ``device``'s) as they were, after the block."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
