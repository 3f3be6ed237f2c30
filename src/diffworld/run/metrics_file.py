"""A run's metrics file, ``metrics.jsonl``: one JSON object per line, written by the trainer's logger and
read by the plots and the sweep's progress table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run, in order."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash is the last one: everything before it is intact
    return records
