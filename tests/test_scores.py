"""Human-normalized scores and the packaged reference data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffworld.evaluation.scores import human_normalized_score, paper_scores, reference_scores
from diffworld.games import ATARI100K_GAMES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"


def test_hns_is_zero_at_random_and_one_at_human() -> None:
    for game, ref in reference_scores().items():
        assert human_normalized_score(game, ref["random"]) == pytest.approx(0.0)
        assert human_normalized_score(game, ref["human"]) == pytest.approx(1.0)
    # Boxing: random 0.1, human 12.1
    assert human_normalized_score("Boxing", 6.1) == pytest.approx(0.5)
    assert human_normalized_score("Tennis", 1.0) is None


def test_reference_data_covers_the_benchmark() -> None:
    assert set(reference_scores()) == set(ATARI100K_GAMES) == set(paper_scores())
    assert all(len(seeds) == 5 for seeds in paper_scores().values())


@pytest.mark.skipif(not SHARED.is_dir(), reason="the project's shared/ folder is not beside this checkout")
def test_packaged_copies_match_the_shared_reference() -> None:
    assert reference_scores() == json.loads((SHARED / "atari100k_reference_scores.json").read_text())
    assert paper_scores() == json.loads((SHARED / "diamond_paper_scores.json").read_text())
