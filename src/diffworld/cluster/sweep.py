"""The sweep driver: run every unfinished (game, seed) of a plan, retry failures as resumes, show a table.

Where runs execute is an :class:`Executor`: :class:`diffworld.cluster.ray_backend.RayExecutor` on a Ray
cluster (or a local Ray instance), or anything with the same four methods (the tests use one without
Ray). The driver keeps the retry loop itself rather than leaving it to Ray's ``max_retries``: it shows
the attempts in the table, and it does not retry a run that failed on a user error (a bad configuration
would fail the same way every time).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from diffworld.cluster.plan import RunSpec, RunState, SweepError, SweepPlan, check_existing_runs, run_state
from diffworld.cluster.progress import LiveTable, Progress, Row, read_progress, render_table
from diffworld.cluster.task import log_file, worker_file
from diffworld.evaluation.report import DEFAULT_REPS, ReportError, build_report
from diffworld.evaluation.report_metrics import METRIC_TITLES

LOCK_FILE = ".driver.lock"


class RunCrashed(Exception):
    """A run's attempt ended without finishing; ``retryable`` unless it was the user's error."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Executor(Protocol):
    def submit(self, run: RunSpec, logs_dir: Path, token: str) -> object:
        """Start ``train_run(run, logs_dir, token)`` somewhere; returns a handle."""

    def wait(self, handles: list[object], timeout: float) -> list[object]:
        """The handles that are done, as soon as one is, or none after ``timeout`` seconds."""

    def result(self, handle: object) -> None:
        """Nothing if the attempt finished the run; raises :class:`RunCrashed` otherwise."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SweepOptions:
    max_retries: int = 3
    """Attempts after the first, each resuming from the run's last checkpoint."""
    refresh: float = 10.0
    """Seconds between two updates of the table."""
    report_reps: int | None = DEFAULT_REPS
    """Bootstrap replications of the report built when every run is finished; None: no report."""


@dataclass
class RunStatus:
    run: RunSpec
    state: str
    """skipped (finished before this sweep), queued, running, finished or failed."""
    attempt: int = 0
    token: str = ""
    error: str = ""
    progress: Progress = field(default_factory=Progress)
    progress_is_final: bool = False
    """Read once more after the run ended (its final evaluation), then no more."""

    @property
    def done(self) -> bool:
        return self.state in ("skipped", "finished", "failed")


def run_sweep(
    plan: SweepPlan,
    executor_factory: Callable[[], Executor],
    options: SweepOptions,
    stream: TextIO = sys.stdout,
) -> list[RunStatus]:
    """Train the plan's unfinished runs with the executor ``executor_factory()`` makes; returns each status.

    Finished runs are skipped without starting the executor (Ray). When every run has finished, the
    score report is written to ``<sweep>/report``.
    """
    with _driver_lock(plan.sweep_dir):
        return _run_sweep(plan, executor_factory, options, stream)


@contextlib.contextmanager
def _driver_lock(sweep_dir: Path) -> Iterator[None]:
    """One driver per sweep folder: two would train the same run folders at once (the same command run
    twice by mistake). The lock is the OS's (``flock``): it goes away with the driver, even killed."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with (sweep_dir / LOCK_FILE).open("a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            raise SweepError(
                f"Another sweep driver ({file.read().strip() or 'unknown'}) is running on {sweep_dir}: "
                "let it finish, or stop it (Ctrl-C) and run this command again to resume its runs."
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        file.flush()
        yield


def _run_sweep(
    plan: SweepPlan, executor_factory: Callable[[], Executor], options: SweepOptions, stream: TextIO
) -> list[RunStatus]:
    check_existing_runs(plan.runs)
    statuses = [
        RunStatus(run, "skipped" if run_state(run) is RunState.FINISHED else "queued") for run in plan.runs
    ]
    todo = [s for s in statuses if not s.done]
    print(
        f"Sweep folder: {plan.sweep_dir}\n"
        f"{len(plan.runs)} runs: {len(plan.runs) - len(todo)} finished before, "
        f"{sum(run_state(s.run) is RunState.UNFINISHED for s in todo)} to resume, "
        f"{sum(run_state(s.run) is RunState.NEW for s in todo)} to start.",
        file=stream,
        flush=True,
    )
    table = LiveTable(stream)
    if todo:
        executor = executor_factory()
        try:
            _drive(plan, executor, todo, options, lambda: table.show(_table(plan, statuses, options)))
        finally:
            executor.close()
    table.show(_table(plan, statuses, options))
    _summarize(plan, statuses, options, stream)
    return statuses


def _drive(
    plan: SweepPlan,
    executor: Executor,
    todo: list[RunStatus],
    options: SweepOptions,
    redraw: Callable[[], None],
) -> None:
    session = uuid.uuid4().hex[:8]
    pending: dict[object, RunStatus] = {}

    def submit(status: RunStatus) -> None:
        status.attempt += 1
        status.token = f"{session}-{status.attempt}"
        status.state = "queued"
        pending[executor.submit(status.run, plan.logs_dir, status.token)] = status

    for status in todo:
        submit(status)
    redraw()
    while pending:
        for handle in executor.wait(list(pending), timeout=options.refresh):
            status = pending.pop(handle)
            try:
                executor.result(handle)
                status.state, status.error = "finished", ""
            except RunCrashed as e:
                status.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if e.retryable and status.attempt <= options.max_retries:
                    submit(status)
                else:
                    status.state = "failed"
        redraw()


def _table(plan: SweepPlan, statuses: list[RunStatus], options: SweepOptions) -> str:
    """The table's text; on the way, reads each run's progress and whether its worker has started."""
    rows = []
    for status in statuses:
        if not status.progress_is_final:
            status.progress = read_progress(status.run.run_dir, status.progress)
            status.progress_is_final = status.done
        if status.state == "queued":
            status.state, where = _worker_state(plan, status)
        elif status.state == "running":
            where = _worker_state(plan, status)[1]
        elif status.state == "failed":
            where = f"{_shorten(status.error)} (see {log_file(plan.logs_dir, status.run)})"
        else:
            where = ""
        if status.error and status.state in ("queued", "running"):
            where = f"{where} (retry after {_shorten(status.error)})".strip()
        attempt = f"{status.attempt}/{options.max_retries + 1}" if status.attempt else ""
        rows.append(Row(status.run.name, status.state, attempt, status.progress, where))
    return render_table(rows, plan.total_env_steps)


def _shorten(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _worker_state(plan: SweepPlan, status: RunStatus) -> tuple[str, str]:
    """``running`` with the worker's host:pid once this attempt's worker has announced itself."""
    try:
        worker = json.loads(worker_file(plan.logs_dir, status.run).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "queued", ""
    if worker.get("token") != status.token:
        return "queued", ""
    return "running", f"{worker['host']}:{worker['pid']}"


def _summarize(plan: SweepPlan, statuses: list[RunStatus], options: SweepOptions, stream: TextIO) -> None:
    failed = [s for s in statuses if s.state == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed:", file=stream)
        for s in failed:
            print(f"  {s.run.name}: {s.error} (log: {log_file(plan.logs_dir, s.run)})", file=stream)
        print("Fix the cause, then run the same sweep command again: it resumes them.", file=stream)
        return
    if options.report_reps is None:
        return
    out = plan.sweep_dir / "report"
    try:
        report = build_report([s.run.run_dir for s in statuses], out, reps=options.report_reps)
    except ReportError as e:
        print(f"No score report: {e}", file=stream)
        return
    figures = ", ".join(
        f"{METRIC_TITLES[m]} {a['value']:.3f}"
        for m, a in report["aggregates"].get(report["label"], {}).items()
    )
    kind = "Returns" if report.get("scores") == "returns" else "Human-normalized score"
    print(f"{kind}: {figures or 'per game only'}. Report: {out / 'report.md'}", file=stream, flush=True)


def sweep_finished(statuses: list[RunStatus]) -> bool:
    return all(s.state in ("skipped", "finished") for s in statuses)
