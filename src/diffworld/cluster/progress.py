"""The sweep's live table: each run's state, env steps and last return, read from its run folder.

Progress comes from the end of each run's ``metrics.jsonl`` (the last 64 KiB: a sweep of 130 runs is
polled every few seconds, and the files grow to megabytes), so the table needs nothing from the workers
but the files they write anyway.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from diffworld.run.metrics_file import METRICS_FILE

TAIL_BYTES = 64 * 1024
RETURN_KEYS = (
    ("evaluation/final/return_mean", "final"),
    ("collection/test/return_mean", "test"),
    ("collection/train/return_mean", "train"),
)
"""Where a return comes from, most telling first: in one record, the final evaluation wins over the rest."""


@dataclass
class Progress:
    env_steps: int | None = None
    last_return: str = ""
    """Like ``-12.5 (test)``: the latest return in the metrics and what kind of episodes it is from."""


def read_progress(run_dir: Path, previous: Progress | None = None) -> Progress:
    """The run's env steps and latest return; a return older than the tail read is kept from ``previous``."""
    path = run_dir / METRICS_FILE
    progress = Progress(last_return=previous.last_return if previous else "")
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            lines = file.read().decode(errors="replace").splitlines()[1 if size > TAIL_BYTES else 0 :]
    except FileNotFoundError:
        return progress
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written
    if records:
        progress.env_steps = records[-1].get("env_steps")
    for record in reversed(records):
        found = next(((key, kind) for key, kind in RETURN_KEYS if key in record), None)
        if found:
            progress.last_return = f"{record[found[0]]:.1f} ({found[1]})"
            break
    return progress


@dataclass
class Row:
    run: str
    state: str
    attempt: str
    progress: Progress
    where: str = ""
    """The worker's host and pid while it runs; the log file when the run failed."""


def render_table(rows: list[Row], total_env_steps: int) -> str:
    header = ("run", "state", "attempt", f"env steps (of {total_env_steps})", "last return", "worker / error")
    cells = [
        (
            r.run,
            r.state,
            r.attempt,
            "" if r.progress.env_steps is None else str(r.progress.env_steps),
            r.progress.last_return,
            r.where,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    lines = [
        "  ".join(value.ljust(w) for value, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:], summary]) + "\n"


class LiveTable:
    """Redraws the table in place on a terminal; elsewhere (a log file) prints it only when it changed."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._in_place = stream.isatty()
        self._last = ""

    def show(self, text: str) -> None:
        if text == self._last:
            return
        if self._in_place and self._last:
            self.stream.write(f"\x1b[{self._last.count(chr(10))}F\x1b[J")  # up to the table's start, clear
        self.stream.write(text if self._in_place else text + "\n")
        self.stream.flush()
        self._last = text
