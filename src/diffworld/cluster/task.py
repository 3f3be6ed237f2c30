"""One run of a sweep, trained in the calling process (a Ray worker), resuming its run folder if it has one.

The sweep driver calls :func:`train_run` again after a crash, a kill or a lost node; every call continues
from the run's last checkpoint, so a retry is a resume. It records who runs it (pid, host, attempt) in
``logs/<run>.worker.json`` (the driver's live table reads it, and it is how a test kills the worker), and
sends the process's output, the training's progress bars included, to ``logs/<run>.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffworld.cluster.plan import RunSpec, RunState, config_of, run_state
from diffworld.run.folder import EVAL_FILE
from diffworld.utils.atomic import atomic_write_text


def worker_file(logs_dir: Path, run: RunSpec) -> Path:
    return logs_dir / f"{run.name}.worker.json"


def log_file(logs_dir: Path, run: RunSpec) -> Path:
    return logs_dir / f"{run.name}.log"


def train_run(run: RunSpec, logs_dir: Path, token: str) -> dict[str, Any]:
    """Train ``run`` to the end (from scratch or from its checkpoint); returns its ``eval.json``.

    ``token`` identifies this attempt to the driver, which shows the run as running once the worker file
    carries it.
    """
    from diffworld.utils.malloc import configure_malloc

    configure_malloc()  # a Ray worker does not start through the diffworld command
    logs_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        worker_file(logs_dir, run),
        json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "token": token, "started": time.time()}
        ),
    )
    with _output_to(log_file(logs_dir, run)):
        print(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {token} on {socket.gethostname()}",
            flush=True,
        )
        state = run_state(run)
        if state is not RunState.FINISHED:
            from diffworld.agent.trainer import Trainer

            try:
                Trainer(config_of(run), run.run_dir, resume=state is RunState.UNFINISHED).run()
            except BaseException:
                traceback.print_exc()  # the driver gets the error too, but the log keeps it beside the output
                raise
    return json.loads((run.run_dir / EVAL_FILE).read_text())


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors too: native code prints) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
