"""DreamerV3's published DMC-vision returns at a few step counts, to compare a diffworld run on the same task
with (issue 29: "how far it is from the published DreamerV3 figure on that task at the same number of steps").

The source is the score file the DreamerV3 authors publish in their repository (danijar/dreamerv3,
``scores/dmc_vision-dreamerv3.json.gz``: a list of runs, each ``{"task", "method", "seed", "xs", "ys"}``, the
test return ``ys`` logged at environment steps ``xs``). Its steps go by 2 from 8,002: they count environment
frames, two per agent step at the usual action repeat 2. Fetch the repository and point this script at the
file; it writes the mean and standard error over seeds of the first logged return at or after each step count:

    git --git-dir=<dreamerv3 mirror> show HEAD:scores/dmc_vision-dreamerv3.json.gz > dmcv.json.gz
    python benchmarks/dreamerv3_reference.py dmcv.json.gz --commit <sha> \
        --json benchmarks/results/dreamerv3_dmc_vision.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
from pathlib import Path
from typing import Any

STEPS = (10_000, 20_000, 50_000, 100_000, 200_000, 500_000)
"""Environment frames (agent steps x action repeat 2) at which returns are read."""


def return_at(xs: list[float], ys: list[float], steps: int) -> float | None:
    """The first logged return at or after ``steps``; None if the run stops before."""
    for x, y in zip(xs, ys, strict=True):
        if x >= steps:
            return float(y)
    return None


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | int]]]:
    """{task: {steps: {mean, standard_error, seeds}}} over the runs of each task."""
    tasks: dict[str, dict[str, dict[str, float | int]]] = {}
    for task in sorted({str(r["task"]) for r in runs}):
        per_step: dict[str, dict[str, float | int]] = {}
        for steps in STEPS:
            found = [return_at(r["xs"], r["ys"], steps) for r in runs if r["task"] == task]
            values = [v for v in found if v is not None]
            if not values:
                continue
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
            per_step[str(steps)] = {
                "mean": round(mean, 1),
                "standard_error": round(math.sqrt(var / len(values)), 1),
                "seeds": len(values),
            }
        tasks[task.removeprefix("dmc_")] = per_step
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", type=Path, help="dmc_vision-dreamerv3.json.gz of danijar/dreamerv3")
    parser.add_argument("--commit", required=True, help="the dreamerv3 commit the file was read from")
    parser.add_argument("--json", type=Path, required=True, help="where to write the summary")
    args = parser.parse_args()
    runs = json.loads(gzip.decompress(args.scores.read_bytes()))
    summary = {
        "source": f"github.com/danijar/dreamerv3 at {args.commit}, scores/dmc_vision-dreamerv3.json.gz",
        "steps": "environment frames (agent steps x action repeat 2), as the file's xs",
        "value": "test return, the first logged at or after the step count: mean and s.e. over seeds",
        "tasks": summarise(runs),
    }
    args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"Wrote {args.json}: {len(summary['tasks'])} tasks")


if __name__ == "__main__":
    main()
