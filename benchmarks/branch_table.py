"""The branches of a shared checkpoint side by side: their final evaluation and what their diagnostics say.

    python benchmarks/branch_table.py RUN [RUN ...] [--json out.json]

For each run folder (a branch made by ``diffworld train --branch``, or the run it came from): the final
evaluation's mean +- standard error (``eval.json``), the periodic tests' means after the branch point, and
the epoch means, over the epochs after the branch point, of the metrics that issue 27 asks about: the
imagined reward rate against the real one of the same policy, the world model's loss and reward recall on
the latest steps against older ones, policy entropy, value and lambda-return scales, advantage spread and
the actor's gradient norm. Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from diffworld.agent.branch import BRANCH_FILE
from diffworld.run.metrics_file import read_metrics

COLUMNS = {
    "imagined reward rate": "actor_critic/train/reward_rate",
    "real reward rate (latest steps)": "collection/train/recent_reward_rate",
    "imagined from latest steps": "actor_critic/diagnostic/reward_rate_recent",
    "denoiser loss latest / older": (
        "denoiser/diagnostic/loss_denoising_recent",
        "denoiser/diagnostic/loss_denoising_old",
    ),
    "reward recall, real frames, latest / older": (
        "reward_model/diagnostic/reward_recall_recent",
        "reward_model/diagnostic/reward_recall_old",
    ),
    "reward recall, imagined frames, latest / older": (
        "denoiser/diagnostic/reward_recall_recent",
        "denoiser/diagnostic/reward_recall_old",
    ),
    "policy entropy": "actor_critic/train/entropy",
    "value |mean|": "actor_critic/train/value_abs_mean",
    "return std": "actor_critic/train/return_std",
    "advantage std": "actor_critic/train/advantage_std",
    "actor grad norm": "actor_critic/diagnostic/grad_norm_actor",
}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarize(run_dir: Path) -> dict[str, Any]:
    """The final evaluation, the tests and the diagnostics' means after the branch point of one run."""
    branch_file = run_dir / BRANCH_FILE
    start = json.loads(branch_file.read_text())["epoch"] if branch_file.is_file() else 0
    records = [r for r in read_metrics(run_dir) if r.get("epoch", 0) > start]
    summary: dict[str, Any] = {"run": run_dir.name, "after_epoch": start}
    eval_file = run_dir / "eval.json"
    if eval_file.is_file():
        report = json.loads(eval_file.read_text())
        returns = report["returns"]
        summary["final_mean"] = report["mean"]
        summary["final_sem"] = report["std"] / math.sqrt(len(returns))
        summary["final_env_steps"] = report.get("env_steps")
    test_key = "collection/test/return_mean"
    summary["tests"] = [(r["env_steps"], r[test_key]) for r in records if test_key in r]
    for name, keys in COLUMNS.items():
        pair = keys if isinstance(keys, tuple) else (keys,)
        summary[name] = [_mean([r[k] for r in records if k in r]) for k in pair]
    return summary


def _cell(values: list[float]) -> str:
    return " / ".join("-" if math.isnan(v) else f"{v:.3g}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the summaries here")
    args = parser.parse_args()
    summaries = [summarize(run) for run in args.runs]
    print("| run | final mean +- s.e. | tests (env steps: mean of 4) |")
    print("| --- | --- | --- |")
    for s in summaries:
        final = f"{s['final_mean']:.1f} +- {s['final_sem']:.1f}" if "final_mean" in s else "-"
        tests = ", ".join(f"{steps}: {mean:.0f}" for steps, mean in s["tests"])
        print(f"| {s['run']} | {final} | {tests} |")
    print()
    print("| run | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for s in summaries:
        print(f"| {s['run']} | " + " | ".join(_cell(s[name]) for name in COLUMNS) + " |")
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2) + "\n")


if __name__ == "__main__":
    main()
