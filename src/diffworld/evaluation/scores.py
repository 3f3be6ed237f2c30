"""Human-normalized scores against the reference random and human scores of the Atari 100k benchmark."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def reference_scores() -> dict[str, dict[str, float]]:
    """``{game: {"random": r, "human": h}}`` for the 26 games of the benchmark (package data)."""
    text = resources.files("diffworld.evaluation").joinpath("reference/atari100k_reference_scores.json")
    return json.loads(text.read_text())


@cache
def paper_scores() -> dict[str, list[float]]:
    """The DIAMOND paper's final score per game and seed (5 seeds, each the mean of 100 test episodes)."""
    text = resources.files("diffworld.evaluation").joinpath("reference/diamond_paper_scores.json")
    return json.loads(text.read_text())


def human_normalized_score(game: str, score: float) -> float | None:
    """HNS = (score - random) / (human - random); None for a game outside the benchmark."""
    ref = reference_scores().get(game)
    if ref is None:
        return None
    return (score - ref["random"]) / (ref["human"] - ref["random"])
