"""float32 against bfloat16 (``training.precision``): does bfloat16 change what the denoiser learns?

Two denoisers of a run's configuration are trained from the same initialization on the same batches of the
run's stored episodes, one per precision, for ``--updates`` optimizer steps (the trainer's update,
``train_updates``: autocast, AdamW, warm-up and clipping; one batch per step). Printed and written as JSON:
seconds per update, the mean training loss of every ``--every`` updates, and the one-step PSNR of sampled next
frames against the real ones on ``--segments`` held-out segments (conditioned on the 4 real frames before them
and the real actions) with sampling in each precision, beside the copy-the-last-frame baseline.

Usage: python benchmarks/precision_compare.py runs/Boxing/<run> [--updates 600] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from diffworld.config.loading import load_config_file
from diffworld.config.schema import Precision
from diffworld.data import EpisodeDataset, SegmentSampler
from diffworld.envs.from_config import make_envs
from diffworld.evaluation.image_metrics import psnr
from diffworld.fitting.optim import make_optimizer, make_warmup_scheduler
from diffworld.fitting.precision import autocast
from diffworld.fitting.update import SampledBatches, train_updates
from diffworld.models.diffusion import make_denoiser
from diffworld.run.folder import CONFIG_FILE, dataset_dir


def mean_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(psnr(pred, target).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--segments", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cfg = load_config_file(args.run_dir / CONFIG_FILE)
    d = cfg.denoiser
    dataset = EpisodeDataset.load(dataset_dir(args.run_dir))
    envs = make_envs(cfg, 1, "precision_compare", life_loss_terminal=False)
    num_actions = envs.num_actions
    envs.close()
    cpu = torch.device("cpu")
    seq_length = d.num_cond_frames + d.training.num_autoregressive_steps - 1
    rng = np.random.default_rng(args.seed + 1)
    test = SegmentSampler(dataset, args.segments, d.num_cond_frames, None, False, rng=rng).sample()

    report: dict[str, object] = {"run_dir": str(args.run_dir), "updates": args.updates, "trained": {}}
    with torch.no_grad():
        report["copy_last_frame_psnr"] = mean_psnr(test.obs[:, -2], test.obs[:, -1])
    for precision in (Precision.fp32, Precision.bf16):
        torch.manual_seed(args.seed)
        denoiser = make_denoiser(d, num_actions)
        optimizer = make_optimizer(denoiser, d.optimizer)
        scheduler = make_warmup_scheduler(optimizer, d.optimizer.warmup_steps)
        rng = np.random.default_rng(args.seed)
        weights = d.training.sample_weights
        batches = SampledBatches(
            SegmentSampler(dataset, d.training.batch_size, seq_length, weights, False, rng=rng)
        )
        losses = []
        start = time.perf_counter()
        for _ in range(args.updates):
            result = train_updates(
                denoiser,
                batches,
                optimizer,
                scheduler,
                steps=1,
                grad_acc_steps=1,
                max_grad_norm=d.optimizer.max_grad_norm,
                autocast=partial(autocast, cpu, precision),
            )
            losses.append(result.metrics["loss_denoising"])
        seconds = (time.perf_counter() - start) / args.updates
        one_step = {}
        for sampling in (Precision.fp32, Precision.bf16):
            with torch.no_grad(), autocast(cpu, sampling):
                generator = torch.Generator().manual_seed(args.seed)
                prev_obs, prev_act = test.obs[:, :-1], test.act
                frames = denoiser.sampler(d.sampler).predict_next(prev_obs, prev_act, generator)
            one_step[f"sampled_{sampling.value}"] = mean_psnr(frames, test.obs[:, -1])
        curve = [float(np.mean(losses[i : i + args.every])) for i in range(0, args.updates, args.every)]
        report["trained"][precision.value] = {  # type: ignore[index]
            "seconds_per_update": seconds,
            "loss_every": args.every,
            "loss_curve": curve,
            "one_step_psnr": one_step,
        }
        print(
            f"trained in {precision.value}: {seconds:.3f} s/update; loss per {args.every} updates "
            + " ".join(f"{x:.4f}" for x in curve)
            + "; one-step PSNR "
            + ", ".join(f"{k} {v:.2f} dB" for k, v in one_step.items()),
            flush=True,
        )
    print(f"copy-the-last-frame PSNR {report['copy_last_frame_psnr']:.2f} dB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
