"""The aggregate metrics of the score report and the label of the paper's scores, named once for the report
(of human-normalized scores, ``report.py``, or of returns, ``report_returns.py``) and its plots; the
report's error and its seeded bootstrap."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

from diffworld.errors import UserError

METRICS = ("mean", "median", "iqm", "optimality_gap")
METRIC_TITLES = {"mean": "Mean", "median": "Median", "iqm": "IQM", "optimality_gap": "Optimality gap"}
PAPER_LABEL = "DIAMOND (paper)"
CONFIDENCE = 0.95


class ReportError(UserError, ValueError):
    """Inputs that cannot make a report: the message names the file and the fix."""


@contextlib.contextmanager
def global_numpy_seed(seed: int) -> Iterator[None]:
    """numpy's global generator seeded with ``seed`` (rliable draws from it), its state put back after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval_estimates(
    matrices: dict[str, np.ndarray], func: Callable[[np.ndarray], np.ndarray], reps: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's point estimates and stratified-bootstrap ``CONFIDENCE`` intervals of ``func`` on each
    ``(runs, games)`` matrix, seeded by ``seed``."""
    from rliable import library

    with global_numpy_seed(seed):
        return library.get_interval_estimates(matrices, func, reps=reps, confidence_interval_size=CONFIDENCE)
