"""Where an engine's long-horizon error comes from: the low-resolution denoiser's drift or the upsampler's.

    python benchmarks/engine_drift_sources.py <engine folder> [--trajectories 16] [--horizon 100]
        [--bands 0 16 57 93 185 196 210] [--json out.json]

On the test split's open-loop trajectories of ``diffworld engine eval`` (same plan: ``plan_trajectories``;
only those that reach ``--horizon``), the full-resolution PSNR at horizons 1, 10 and the last, of four ways to
make each frame:

- ``engine``: what ``engine eval`` measures, both models on their own outputs;
- ``upsampler_on_real_low_res``: the upsampler on the real low-resolution frame, conditioned on its own
  previous full-resolution outputs: the upsampler's drift alone;
- ``denoiser_with_real_full_res``: the engine's low-resolution frames, upsampled with the real previous
  full-resolution frames as conditioning: the denoiser's drift alone;
- ``one_step``: the upsampler on the real low-resolution frame and the real previous frames: the floor.

And where the engine's squared error lies at the last horizon: its share in each band of rows (``--bands``,
row edges of the full-resolution frame; default ten equal bands), against the share of the frame's area.
Each way draws from its own generator seeded by ``--seed``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from diffworld.data.frames import frames_to_tensor
from diffworld.engine.open_engine import engine_samplers, open_engine, open_start_dataset
from diffworld.engine.quality import plan_trajectories
from diffworld.evaluation.image_metrics import psnr
from diffworld.models.diffusion.open_loop import predict_open_loop

WAYS = ("engine", "upsampler_on_real_low_res", "denoiser_with_real_full_res", "one_step")


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("engine", type=Path)
    p.add_argument("--trajectories", type=int, default=16)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--bands", type=int, nargs="+", default=None, help="row edges, from 0 to the frame height")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    engine = open_engine(args.engine, "cpu")
    dataset = open_start_dataset(engine, args.engine)
    s = engine_samplers(engine)
    if s.upsampler is None:
        raise SystemExit(f"{args.engine} has no upsampler: nothing to separate")
    context, horizon = s.context_length, args.horizon
    plan = [
        t
        for t in plan_trajectories(dataset.lengths, dataset.test_ids, context, horizon, 10**9)
        if t.length == horizon
    ][: args.trajectories]
    height = dataset.frame_size[0]
    edges = args.bands or [round(height * k / 10) for k in range(11)]
    if edges[0] != 0 or edges[-1] != height or sorted(edges) != edges:
        raise SystemExit(f"--bands: increasing row edges from 0 to {height}, got {edges}")
    horizons = sorted({1, 10, horizon} & set(range(1, horizon + 1)))
    sums = {w: {h: 0.0 for h in horizons} for w in WAYS}
    band_error = np.zeros(len(edges) - 1)
    gens = {w: torch.Generator().manual_seed(args.seed) for w in WAYS}

    for first in range(0, len(plan), args.batch_size):
        rows = plan[first : first + args.batch_size]
        last = [t.start + context + horizon for t in rows]  # one past each trajectory's last target
        windows = [dataset.frames(t.episode)[t.start : end] for t, end in zip(rows, last, strict=True)]
        real = torch.stack([frames_to_tensor(w) for w in windows])  # (B, context + horizon, 3, H, W)
        actions = [
            torch.tensor(dataset.actions(t.episode)[t.start + context - s.num_cond : end - 1])
            for t, end in zip(rows, last, strict=True)
        ]
        real_low = s.low_res_of(real)
        start = real_low[:, context - s.num_cond : context]
        predicted_low = predict_open_loop(s.predictor, start, actions, [horizon] * len(rows), gens["engine"])
        # The denoiser-drift way reuses the engine's low-resolution frames (same draws), upsampled its own way
        prev = {w: real[:, context - s.num_cond_full : context] for w in WAYS}
        for h, low in enumerate(predicted_low, start=1):
            i = context + h - 1  # the target's index in ``real``
            lows = {
                "engine": low,
                "upsampler_on_real_low_res": real_low[:, i],
                "denoiser_with_real_full_res": low,
                "one_step": real_low[:, i],
            }
            for w in WAYS:
                full = s.upsampler.upsample(lows[w], prev[w], generator=gens[w])
                own_outputs = w in ("engine", "upsampler_on_real_low_res")
                nxt = full if own_outputs else real[:, i]
                prev[w] = torch.cat([prev[w][:, 1:], nxt[:, None]], dim=1)
                if h in sums[w]:
                    sums[w][h] += float(psnr(full, real[:, i]).sum())
                if w == "engine" and h == horizon:
                    err = (full - real[:, i]).square().mean(dim=(0, 1, 3)).numpy()  # per row
                    band_error += [err[a:b].sum() for a, b in itertools.pairwise(edges)]

    n = len(plan)
    report = {
        "engine": str(args.engine),
        "updates": engine.updates,
        "trajectories": n,
        "horizon": horizon,
        "seed": args.seed,
        "psnr_full_res": {w: {str(h): sums[w][h] / n for h in horizons} for w in WAYS},
        "error_share_by_rows_at_last_horizon": [
            {"rows": [a, b], "error_share": float(e / band_error.sum()), "area_share": (b - a) / height}
            for (a, b), e in zip(itertools.pairwise(edges), band_error, strict=True)
        ],
    }
    print(f"{n} trajectories of {horizon} steps, {args.engine} at {engine.updates} updates")
    print("full-resolution PSNR (dB):")
    print(f"{'way':30s}" + "".join(f"{'h' + str(h):>8s}" for h in horizons))
    for w in WAYS:
        print(f"{w:30s}" + "".join(f"{sums[w][h] / n:8.2f}" for h in horizons))
    print(f"the engine's squared error at h{horizon} by rows (share of error / share of area):")
    for band in report["error_share_by_rows_at_last_horizon"]:
        a, b = band["rows"]
        print(f"  rows {a:3d}-{b:3d}: {100 * band['error_share']:5.1f} % / {100 * band['area_share']:5.1f} %")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
