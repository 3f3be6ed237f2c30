"""How many updates does a Catch run's reward model need to tell catches from misses?

    python benchmarks/catch_reward_model_plateau.py RUN_DIR [--episodes 200] [--updates 1000]
        [--seeds 0 1 2 3] [--json out.json]

Fresh reward/termination models of the run's configuration are trained by the trainer's own loop
(``train_updates``, the run's optimizer, warm-up, batch size and segment sampling) on the run's first
``--episodes`` episodes: with the ``catch`` preset, the random-policy episodes its first epoch trains on.
Every 100 updates, the recall of each reward sign (-1, 0, +1) is measured on 1,024 segments of those
episodes (a fixed draw; the question is whether the model has found the signs in its training data at all,
not how it generalises).

Under random play one landing in 8 is a catch. A reward model first learns when a ball lands and predicts
a miss for every landing (loss about H(1/8) / 7 = 0.054 nats per step); only later does it read the
landing's colour and find the catches. The seeds say how long that plateau lasts, and so how many
first-epoch updates the preset needs. Each seed draws its own initial weights and batches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.config.loading import load_config_file, reward_model_seq_length
from diffworld.data import EpisodeDataset, SegmentSampler
from diffworld.data.batch import Batch
from diffworld.envs.catch import ACTION_MEANINGS
from diffworld.fitting.optim import make_optimizer, make_warmup_scheduler
from diffworld.fitting.update import SampledBatches, train_updates
from diffworld.models.reward_termination import RewardTerminationModel
from diffworld.run.folder import dataset_dir

EVAL_SEGMENTS = 1024
EVERY = 100


@torch.no_grad()
def recall_per_sign(model: RewardTerminationModel, segments: Batch) -> list[float]:
    """Recall of sign -1, 0, +1 over the real steps of ``segments``."""
    logits, _, _ = model.predict(
        segments.obs[:, :-1], segments.act, segments.obs[:, 1:], mask=segments.step_mask
    )
    target, predicted, real = segments.rew.sign().long() + 1, logits.argmax(-1), segments.step_mask
    return [float((predicted[real & (target == c)] == c).float().mean()) for c in range(3)]


def plateau(run_dir: Path, episodes: int, updates: int, seed: int) -> dict[str, Any]:
    cfg = load_config_file(run_dir / "config.yaml")
    dataset = EpisodeDataset.load(
        dataset_dir(run_dir), max_episodes=episodes, frame_shape=(cfg.env.size, cfg.env.size, 3)
    )
    seq_length = reward_model_seq_length(cfg)
    training, optim_cfg = cfg.reward_model.training, cfg.reward_model.optimizer
    torch.manual_seed(seed)
    model = RewardTerminationModel(cfg.reward_model, len(ACTION_MEANINGS), img_size=cfg.env.size)
    optimizer = make_optimizer(model, optim_cfg)
    scheduler = make_warmup_scheduler(optimizer, optim_cfg.warmup_steps)
    batches = SampledBatches(
        SegmentSampler(
            dataset,
            training.batch_size,
            seq_length,
            training.sample_weights,
            True,
            rng=np.random.default_rng(seed),
        )
    )
    eval_rng = np.random.default_rng(10_000)
    segments = SegmentSampler(dataset, EVAL_SEGMENTS, seq_length, None, True, rng=eval_rng).sample()
    curve: list[dict[str, Any]] = []
    for done in range(EVERY, updates + 1, EVERY):
        result = train_updates(
            model,
            batches,
            optimizer,
            scheduler,
            steps=EVERY,
            grad_acc_steps=training.grad_acc_steps,
            max_grad_norm=optim_cfg.max_grad_norm,
            autocast=contextlib.nullcontext,
            desc=f"seed {seed}",
        )
        recall = recall_per_sign(model, segments)
        curve.append({"updates": done, "loss": result.metrics["loss"], "recall": recall})
    found = next((point["updates"] for point in curve if point["recall"][2] >= 0.9), None)
    return {"seed": seed, "catches_found_at": found, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=200, help="the run's first episodes to train on")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [plateau(args.run_dir, args.episodes, args.updates, seed) for seed in args.seeds]
    for r in results:
        points = " ".join(f"{p['updates']}:{p['recall'][2]:.2f}" for p in r["curve"])
        found = r["catches_found_at"]
        print(f"seed {r['seed']}: catches found (recall >= 0.9) at {found}; recall of +1 by updates {points}")
    if args.json:
        report = {"run_dir": str(args.run_dir), "episodes": args.episodes, "results": results}
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
