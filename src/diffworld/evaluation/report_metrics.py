"""The aggregate metrics of the score report and the label of the paper's scores, named once for the report
and its plots."""

from __future__ import annotations

METRICS = ("mean", "median", "iqm", "optimality_gap")
METRIC_TITLES = {"mean": "Mean", "median": "Median", "iqm": "IQM", "optimality_gap": "Optimality gap"}
PAPER_LABEL = "DIAMOND (paper)"
