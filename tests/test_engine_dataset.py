"""The engine dataset format: writer -> reader round trips, memory-mapped reads, the test split, resuming an
unfinished writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffworld.data.actions import ActionSpec, discrete, keys
from diffworld.data.folder_store import (
    DATASET_FILE,
    EPISODES_DIR,
    WRITING_FILE,
    EngineDataset,
    EngineDatasetError,
    EngineDatasetWriter,
    split_test_ids,
)

SPEC = ActionSpec.of(discrete("action", 4), keys(["fire"]))
SIZE = (12, 20)  # not square: the aspect ratio is free


def episode(length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (length, *SIZE, 3), dtype=np.uint8)
    actions = np.stack([rng.integers(0, 4, length), rng.integers(0, 2, length)], axis=1).astype(np.float32)
    return frames, actions


def write_dataset(folder: Path, lengths: list[int], **finish: object) -> list[tuple[np.ndarray, np.ndarray]]:
    writer = EngineDatasetWriter(folder, SPEC, SIZE, source={"kind": "test"})
    episodes = [episode(n, i) for i, n in enumerate(lengths)]
    for frames, actions in episodes:
        writer.add_episode(frames, actions)
    writer.finish(**finish)  # type: ignore[arg-type]
    return episodes


def test_round_trip_memory_mapped(tmp_path: Path) -> None:
    episodes = write_dataset(tmp_path / "d", [5, 9, 3], test_fraction=0.0)
    data = EngineDataset(tmp_path / "d")
    assert data.spec == SPEC and data.frame_size == SIZE and data.source == {"kind": "test"}
    assert data.episode_names == ["000000", "000001", "000002"]
    assert data.lengths.tolist() == [5, 9, 3] and data.lengths.dtype == np.int64
    assert data.num_steps == 17 and len(data.test_ids) == 0 and data.train_ids.tolist() == [0, 1, 2]
    for i, (frames, actions) in enumerate(episodes):
        read_frames, read_actions = data.frames(i), data.actions(i)
        assert isinstance(read_frames, np.memmap) and isinstance(read_actions, np.memmap)
        assert read_frames.dtype == np.uint8 and read_frames.shape == (len(frames), *SIZE, 3)
        assert read_actions.dtype == np.float32 and read_actions.shape == (len(frames), 2)
        assert not read_frames.flags.writeable
        np.testing.assert_array_equal(read_frames, frames)
        np.testing.assert_array_equal(read_actions, actions)
    data.verify()
    meta = json.loads((tmp_path / "d" / DATASET_FILE).read_text())
    assert meta["format"] == "diffworld-engine-dataset" and meta["version"] == 1
    assert meta["frame_size"] == list(SIZE) and set(meta["episodes"][0]["sha256"]) == {
        "frames.npy",
        "actions.npy",
    }
    assert not (tmp_path / "d" / WRITING_FILE).exists()


def test_one_column_actions_may_be_a_vector(tmp_path: Path) -> None:
    spec = ActionSpec.of(discrete("action", 3))
    writer = EngineDatasetWriter(tmp_path / "d", spec, SIZE)
    writer.add_episode(np.zeros((4, *SIZE, 3), np.uint8), np.array([0, 1, 2, 1]), name="run-1")
    writer.finish(test_fraction=0)
    data = EngineDataset(tmp_path / "d")
    assert data.episode_names == ["run-1"] and data.actions(0)[:, 0].tolist() == [0, 1, 2, 1]


def test_test_split_by_fraction_and_by_name(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", [2] * 10, test_fraction=0.2)
    a = EngineDataset(tmp_path / "a")
    assert len(a.test_ids) == 2 and len(a.train_ids) == 8
    assert set(a.test_ids.tolist()).isdisjoint(a.train_ids.tolist())
    write_dataset(tmp_path / "b", [2, 3, 4], test_names=["000001"])
    b = EngineDataset(tmp_path / "b")
    assert b.test_ids.tolist() == [1] and b.train_ids.tolist() == [0, 2]
    with pytest.raises(EngineDatasetError, match="not in the dataset"):
        write_dataset(tmp_path / "c", [2], test_names=["nope"])


def test_split_test_ids() -> None:
    assert split_test_ids(1, 0.5) == []  # a single episode stays for training
    assert split_test_ids(2, 0.01) == [1]  # a positive fraction gives at least one
    assert split_test_ids(3, 0.9) == [0, 2]  # never all of them
    assert split_test_ids(100, 0.1) == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    with pytest.raises(EngineDatasetError):
        split_test_ids(10, 1.0)


def test_resume_keeps_complete_episodes_and_drops_a_partial_one(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    writer = EngineDatasetWriter(folder, SPEC, SIZE, source="first")
    first = [episode(4, 0), episode(6, 1)]
    for frames, actions in first:
        writer.add_episode(frames, actions)
    # A writer killed while writing the third episode: its folder holds frames only.
    partial = folder / EPISODES_DIR / "000002"
    partial.mkdir()
    np.save(partial / "frames.npy", first[0][0])
    with pytest.raises(EngineDatasetError, match="unfinished"):
        EngineDataset(folder)
    with pytest.raises(EngineDatasetError, match="resume"):
        EngineDatasetWriter(folder, SPEC, SIZE)
    with pytest.raises(EngineDatasetError, match="choose another folder"):
        EngineDatasetWriter(folder, ActionSpec.of(discrete("action", 5)), SIZE, resume=True)

    resumed = EngineDatasetWriter(folder, SPEC, SIZE, resume=True)
    assert resumed.episode_names == ["000000", "000001"] and not partial.exists()
    frames, actions = episode(3, 2)
    resumed.add_episode(frames, actions)
    resumed.finish(test_fraction=0)
    data = EngineDataset(folder)
    assert data.lengths.tolist() == [4, 6, 3] and data.source == "first"
    np.testing.assert_array_equal(data.frames(2), frames)


def test_writer_refuses_finished_or_foreign_folders(tmp_path: Path) -> None:
    write_dataset(tmp_path / "done", [2])
    with pytest.raises(EngineDatasetError, match="already holds a finished"):
        EngineDatasetWriter(tmp_path / "done", SPEC, SIZE, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(EngineDatasetError, match="not empty"):
        EngineDatasetWriter(tmp_path / "other", SPEC, SIZE)
    with pytest.raises(EngineDatasetError, match="no episodes were added"):
        EngineDatasetWriter(tmp_path / "empty", SPEC, SIZE).finish()
