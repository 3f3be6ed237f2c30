"""``diffworld engine record|convert|info``: what they print, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffworld.cli import main
from diffworld.data.actions import ActionSpec, discrete
from diffworld.data.folder_store import EPISODES_DIR, EngineDataset, EngineDatasetWriter


def fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as e:  # the command line itself is refused
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def small_dataset(folder: Path) -> Path:
    writer = EngineDatasetWriter(folder, ActionSpec.of(discrete("action", 2)), (4, 6))
    for _ in range(3):
        writer.add_episode(np.zeros((5, 4, 6, 3), np.uint8), np.zeros(5))
    return writer.finish(test_fraction=0.3)


def test_record_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "catch"
    argv = ["engine", "record", "env=diffworld/Catch-v0", "steps=20", f"out={out}", "seed=2", "env.size=16"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "16x16 RGB" in printed and "discrete action (3)" in printed
    assert EngineDataset(out).num_steps >= 20
    assert main(["engine", "info", str(out), "--verify", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frame_size"] == [16, 16] and summary["action_width"] == 1


def test_info_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = small_dataset(tmp_path / "d")
    assert main(["engine", "info", str(folder), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "4x6 RGB, 15 in 3 episodes" in printed and "1 test episodes" in printed and "verified" in printed


def test_convert_recordings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from diffworld.data import Episode, EpisodeDataset

    stored = EpisodeDataset(tmp_path / "rec")
    stored.add(
        Episode.from_steps(
            np.zeros((3, 64, 64, 3), np.uint8), [1, 0], [0.0, 0.0], terminated=True, truncated=False
        )
    )
    assert (
        main(["engine", "convert", str(tmp_path / "rec"), str(tmp_path / "out"), "--num-actions", "2"]) == 0
    )
    assert "64x64 RGB, 3 in 1 episodes" in capsys.readouterr().out


def test_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert "no dataset.json" in fails_in_one_line(["engine", "info", str(tmp_path / "empty")], capsys)
    assert "No episode files" in fails_in_one_line(
        ["engine", "convert", str(tmp_path / "empty"), str(tmp_path / "o"), "--num-actions", "3"], capsys
    )
    assert "no .hdf5 files" in fails_in_one_line(
        ["engine", "convert", str(tmp_path / "empty"), str(tmp_path / "o"), "--from", "csgo"], capsys
    )
    assert "unknown key 'stepz'" in fails_in_one_line(["engine", "record", "stepz=3", "out=x"], capsys)
    assert "steps=3x" in fails_in_one_line(["engine", "record", "steps=3x", "out=x"], capsys)
    assert "give out=" in fails_in_one_line(["engine", "record", "steps=3"], capsys)
    assert "unknown key" not in fails_in_one_line(
        ["engine", "record", "steps=3", "out=x", "env=Nope-v9"], capsys
    )

    folder = small_dataset(tmp_path / "d")
    frames = folder / EPISODES_DIR / "000001" / "frames.npy"
    frames.write_bytes(frames.read_bytes()[:-7])
    err = fails_in_one_line(["engine", "info", str(folder)], capsys)
    assert str(frames) in err and "truncated" in err
    assert main(["engine", "info", str(folder), "--skip-corrupt"]) == 0
    assert "skipped (corrupt): 000001" in capsys.readouterr().out
