"""Bad engine datasets and episodes: one-line errors naming the file, or skipped with a warning on request;
never silently mis-read."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from diffworld.data.actions import ActionMismatchError, ActionSpec, discrete, keys
from diffworld.data.folder_store import (
    DATASET_FILE,
    EPISODES_DIR,
    CorruptEpisodeFileError,
    EngineDataset,
    EngineDatasetError,
    EngineDatasetWriter,
)
from diffworld.errors import UserError

SPEC = ActionSpec.of(discrete("action", 3), keys(["jump"]))
SIZE = (8, 6)


def make(folder: Path, num_episodes: int = 3) -> Path:
    writer = EngineDatasetWriter(folder, SPEC, SIZE)
    for i in range(num_episodes):
        frames = np.full((5, *SIZE, 3), i, np.uint8)
        writer.add_episode(frames, np.tile([[2, 1]], (5, 1)))
    return writer.finish(test_fraction=0)


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert isinstance(error.value, UserError) and "\n" not in message
    return message


def test_missing_folder_or_description(tmp_path: Path) -> None:
    with pytest.raises(EngineDatasetError, match="no such dataset folder") as e:
        EngineDataset(tmp_path / "nowhere")
    one_line(e)
    (tmp_path / "plain").mkdir()
    with pytest.raises(EngineDatasetError, match=r"no dataset\.json.*diffworld engine convert") as e:
        EngineDataset(tmp_path / "plain")
    one_line(e)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m.update(episodes=[]), "holds no episodes"),
        (lambda m: m.update(format="other"), "not a diffworld-engine-dataset"),
        (lambda m: m.update(version=2), "version 2"),
        (lambda m: m.update(frame_size=[8]), "frame_size"),
        (lambda m: m.update(action_space={"components": [{"kind": "wheel"}]}), "action_space"),
        (lambda m: m["episodes"][0].update(length=0), "length 0"),
        (lambda m: m["episodes"].append(dict(m["episodes"][0])), "twice"),
        (lambda m: m.update(test_episodes=["ghost"]), "test_episodes"),
    ],
)
def test_malformed_description(tmp_path: Path, edit, words: str) -> None:  # type: ignore[no-untyped-def]
    folder = make(tmp_path / "d")
    meta = json.loads((folder / DATASET_FILE).read_text())
    edit(meta)
    (folder / DATASET_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=words) as e:
        EngineDataset(folder)
    one_line(e)


def test_unreadable_description(tmp_path: Path) -> None:
    folder = make(tmp_path / "d")
    (folder / DATASET_FILE).write_text("{not json")
    with pytest.raises(EngineDatasetError, match="cannot read") as e:
        EngineDataset(folder)
    one_line(e)


def truncate(path: Path, num_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-num_bytes])


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda p: truncate(p / "frames.npy", 10), "bytes where dataset.json records"),
        (lambda p: (p / "actions.npy").unlink(), "missing"),
        (lambda p: (p / "frames.npy").write_bytes(b"x" * (p / "frames.npy").stat().st_size), "header"),
        (lambda p: np.save(p / "frames.npy", np.zeros((5, 6, 8, 3), np.uint8)), "frames"),
    ],
)
def test_corrupt_episode_file_is_refused_with_its_name_or_skipped(  # type: ignore[no-untyped-def]
    tmp_path: Path, damage, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make(tmp_path / "d")
    episode = folder / EPISODES_DIR / "000001"
    damage(episode)
    with pytest.raises(CorruptEpisodeFileError) as e:
        EngineDataset(folder)
    message = one_line(e)
    assert str(episode) in message and "skip_corrupt" in message
    if words != "frames":
        assert words in message
    with caplog.at_level(logging.WARNING):
        data = EngineDataset(folder, skip_corrupt=True)
    assert data.episode_names == ["000000", "000002"] and data.skipped == ["000001"]
    assert "000001" in caplog.text
    assert (data.frames(1) == 2).all()  # the episodes after the skipped one keep their content


def test_frames_of_another_size_in_a_file_of_the_same_length(tmp_path: Path) -> None:
    """A frames file swapped for one of other HxW but the same byte count: its header gives it away."""
    folder = make(tmp_path / "d")
    path = folder / EPISODES_DIR / "000000" / "frames.npy"
    np.save(path, np.zeros((5, 6, 8, 3), np.uint8))  # 6x8 instead of 8x6: same size in bytes
    with pytest.raises(CorruptEpisodeFileError, match=r"\(5, 6, 8, 3\)"):
        EngineDataset(folder)


def test_every_episode_corrupt(tmp_path: Path) -> None:
    folder = make(tmp_path / "d", num_episodes=1)
    truncate(folder / EPISODES_DIR / "000000" / "actions.npy", 4)
    with pytest.raises(EngineDatasetError, match="every episode is corrupted"):
        EngineDataset(folder, skip_corrupt=True)


def test_changed_content_is_found_by_verify(tmp_path: Path) -> None:
    folder = make(tmp_path / "d")
    path = folder / EPISODES_DIR / "000002" / "frames.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size and header, one pixel changed
    path.write_bytes(bytes(data))
    dataset = EngineDataset(folder)  # opening checks sizes and headers only
    with pytest.raises(CorruptEpisodeFileError, match="SHA-256") as e:
        dataset.verify()
    assert str(path) in one_line(e)


def test_actions_outside_the_space_in_a_file_are_refused_on_read(tmp_path: Path) -> None:
    folder = make(tmp_path / "d")
    path = folder / EPISODES_DIR / "000001" / "actions.npy"
    np.save(path, np.tile(np.array([[3, 1]], np.float32), (5, 1)))  # index 3 of a 3-way choice
    dataset = EngineDataset(folder)
    with pytest.raises(ActionMismatchError, match=r"step 0, column 0") as e:
        dataset.actions(1)
    assert str(path) in one_line(e)


def test_writer_refuses_mixed_sizes_and_bad_actions(tmp_path: Path) -> None:
    writer = EngineDatasetWriter(tmp_path / "d", SPEC, SIZE)
    with pytest.raises(EngineDatasetError, match="8x6 frames") as e:
        writer.add_episode(np.zeros((4, 6, 8, 3), np.uint8), np.zeros((4, 2)))
    one_line(e)
    with pytest.raises(EngineDatasetError, match="uint8"):
        writer.add_episode(np.zeros((4, *SIZE, 3), np.float32), np.zeros((4, 2)))
    with pytest.raises(ActionMismatchError, match=r"\(T, 2\)") as e:
        writer.add_episode(np.zeros((4, *SIZE, 3), np.uint8), np.zeros((4, 3)))
    one_line(e)
    with pytest.raises(ActionMismatchError, match=r"step 1, column 1 \('jump'\)"):
        writer.add_episode(np.zeros((2, *SIZE, 3), np.uint8), np.array([[0, 0], [0, 2]]))
    with pytest.raises(ActionMismatchError, match="integer 0..2"):
        writer.add_episode(np.zeros((2, *SIZE, 3), np.uint8), np.array([[0, 0], [-1, 0]]))
    with pytest.raises(EngineDatasetError, match="3 frames but 2 actions"):
        writer.add_episode(np.zeros((3, *SIZE, 3), np.uint8), np.zeros((2, 2)))
    with pytest.raises(EngineDatasetError, match="episode name"):
        writer.add_episode(np.zeros((2, *SIZE, 3), np.uint8), np.zeros((2, 2)), name="../up")
    assert writer.num_episodes == 0  # nothing refused was stored
