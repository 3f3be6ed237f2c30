"""The score report: the paper's published aggregates, the files it writes, runs as inputs, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rliable", reason="the report needs the 'report' extra")

from diffworld.cli import main
from diffworld.evaluation.report import (
    ReportError,
    build_report,
    collect_scores,
    compute_report,
    hns_matrix,
)
from diffworld.evaluation.report_metrics import PAPER_LABEL
from diffworld.evaluation.scores import paper_scores

REPS = 200  # enough for the intervals to be sane, fast enough for a test


def _figures(report: dict, name: str) -> dict[str, float]:
    return {metric: round(a["value"], 3) for metric, a in report["aggregates"][name].items()}


def test_paper_scores_give_the_published_aggregates() -> None:
    report = compute_report(paper_scores(), label="paper", reps=REPS)
    assert _figures(report, "paper") == {
        "mean": 1.459,
        "median": 0.373,
        "iqm": 0.641,
        "optimality_gap": 0.480,
    }
    assert list(report["aggregates"]) == ["paper"]  # no comparison of the paper with itself
    for a in report["aggregates"]["paper"].values():
        assert a["ci_low"] <= a["value"] <= a["ci_high"]
    # The published median is over games of per-game means; over all 130 runs it would be 0.338.
    _, matrix = hns_matrix(paper_scores())
    assert matrix.shape == (5, 26)
    assert round(float(np.median(matrix)), 3) == 0.338


def test_bootstrap_is_seeded_and_leaves_numpy_alone() -> None:
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    first = compute_report(paper_scores(), label="p", reps=50, seed=7)
    assert np.random.random() == expected_next
    again = compute_report(paper_scores(), label="p", reps=50, seed=7)
    other = compute_report(paper_scores(), label="p", reps=50, seed=8)
    assert first["aggregates"] == again["aggregates"]
    assert first["aggregates"] != other["aggregates"]


def _assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # not a blank canvas


def test_report_of_the_paper_score_file(tmp_path: Path) -> None:
    source = tmp_path / "diamond_paper_scores.json"
    source.write_text(json.dumps(paper_scores()))
    out = tmp_path / "report"
    assert main(["report", str(source), "--out", str(out), "--reps", str(REPS)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["label"] == "diamond_paper_scores"
    assert _figures(report, "diamond_paper_scores")["iqm"] == 0.641
    assert len(report["per_game"]) == 26 and report["runs_per_game"] == 5
    markdown = (out / "report.md").read_text()
    assert "| IQM | 0.641 [" in markdown and "| Boxing | 5 |" in markdown
    assert set(report["plots"].values()) == {
        "performance_profile.png",
        "aggregate_metrics.png",
        "per_game_hns.png",
    }
    for file in report["plots"].values():
        assert f"({file})" in markdown
        _assert_png(out / file)


def _fake_run(folder: Path, game: str, seed: int, score: float) -> Path:
    folder.mkdir(parents=True)
    eval_json = {
        "game": game,
        "seed": seed,
        "preset": "smoke",
        "mean": score,
        "env_steps": 300,
        "returns": [],
    }
    (folder / "eval.json").write_text(json.dumps(eval_json))
    return folder


def test_report_of_run_folders_beside_the_paper(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "Pong_s0", "Pong", 0, 0.0)
    run = _fake_run(sweep / "Breakout_s0", "Breakout", 0, 30.5)  # human level: HNS 1
    # A run reached twice (through its sweep and directly) counts once.
    scores = collect_scores([sweep, run])
    assert scores.per_game == {"Breakout": [30.5], "Pong": [0.0]}
    assert {(r["game"], r["seed"]) for r in scores.runs} == {("Pong", 0), ("Breakout", 0)}

    report = build_report([sweep], tmp_path / "out", reps=REPS)
    assert report["label"] == "diffworld" and list(report["aggregates"]) == ["diffworld", PAPER_LABEL]
    pong_hns = (0.0 + 20.7) / (14.6 + 20.7)
    assert report["aggregates"]["diffworld"]["mean"]["value"] == pytest.approx((1 + pong_hns) / 2)
    breakout = next(row for row in report["per_game"] if row["game"] == "Breakout")
    assert breakout["mean_hns"] == pytest.approx(1.0)
    assert breakout["paper_mean_score"] == pytest.approx(np.mean(paper_scores()["Breakout"]))
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Only 2 of the 26 benchmark games" in markdown and "preset smoke" in markdown
    for file in report["plots"].values():
        _assert_png(tmp_path / "out" / file)


def test_bad_inputs_are_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match="same number of runs"):
        hns_matrix({"Pong": [1.0, 2.0], "Breakout": [3.0]})
    # A game outside the benchmark has no human-normalized score: alone it is reported by its returns
    # (tests/test_continuous_tools.py); beside a benchmark game, refused (the report would lose its
    # human-normalized aggregates).
    assert collect_scores([_fake_run(tmp_path / "tennis", "Tennis", 0, 1.0)]).per_game == {"Tennis": [1.0]}
    with pytest.raises(ReportError, match=r"^Tennis is not an Atari 100k game, .* unlike Pong: report"):
        compute_report({"Pong": [1.0], "Tennis": [2.0]}, label="x", reps=10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no finished run"):
        collect_scores([tmp_path / "empty"])
    twin = _fake_run(tmp_path / "a" / "Pong_s0", "Pong", 0, 1.0).parent
    _fake_run(tmp_path / "b" / "Pong_s0", "Pong", 0, 2.0)
    with pytest.raises(ReportError, match="Two runs of Pong with seed 0"):
        collect_scores([twin, tmp_path / "b"])
    (tmp_path / "bad.json").write_text(json.dumps({"Pong": "high"}))
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "score file like the paper's" in capsys.readouterr().err
