"""Converters to engine datasets: a Gymnasium env (random policy and a diffworld agent), a run's episode
folder and play recordings, the official CS:GO HDF5 layout (small files written here with h5py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from diffworld.data import Episode, EpisodeDataset
from diffworld.data.actions import Bins, Continuous, Discrete, Keys
from diffworld.data.folder_store import EngineDataset
from diffworld.engine.convert.from_csgo_hdf5 import (
    CSGO_ACTION_SPEC,
    CSGO_MOUSE_X,
    CSGO_MOUSE_Y,
    CSGOFileError,
    convert_csgo_hdf5,
)
from diffworld.engine.convert.from_gym import action_spec_for, as_rgb, record_gym
from diffworld.engine.convert.from_run import convert_run
from diffworld.errors import UserError
from diffworld.viz.episodes import RECORDING_INFO

h5py = pytest.importorskip("h5py")


# Gymnasium ---------------------------------------------------------------------------------------------


def test_catch_random_policy_at_a_larger_size(tmp_path: Path) -> None:
    folder = record_gym(
        tmp_path / "catch",
        40,
        env_id="diffworld/Catch-v0",
        seed=1,
        max_episode_steps=5,
        env_kwargs={"size": 96},
        test_fraction=0.2,
    )
    data = EngineDataset(folder)
    assert data.frame_size == (96, 96) and data.spec.components == (Discrete("action", 3),)
    assert data.num_steps >= 40 and len(data.test_ids) >= 1
    assert data.source["action_meanings"] == ["NOOP", "RIGHT", "LEFT"]
    # Catch ends after 7 steps: 5 frames then a cut, then 3 frames, the final one included.
    assert data.lengths[:2].tolist() == [5, 3]
    for i in range(data.num_episodes):
        assert set(np.unique(data.actions(i))) <= {0.0, 1.0, 2.0}
    # The cut episode goes on in the next one: the ball (red+green) falls one row per step across the cut.
    ball_rows = [
        int(np.flatnonzero((frames[..., 0] > 200).any(axis=1))[0])
        for frames in (data.frames(0)[-1], data.frames(1)[0])
    ]
    assert ball_rows[1] == ball_rows[0] + 96 // 8


def test_same_seed_same_recording(tmp_path: Path) -> None:
    a = EngineDataset(record_gym(tmp_path / "a", 12, env_id="diffworld/Catch-v0", seed=3))
    b = EngineDataset(record_gym(tmp_path / "b", 12, env_id="diffworld/Catch-v0", seed=3))
    assert a.lengths.tolist() == b.lengths.tolist()
    for i in range(a.num_episodes):
        np.testing.assert_array_equal(a.frames(i), b.frames(i))
        np.testing.assert_array_equal(a.actions(i), b.actions(i))


def test_atari_full_resolution(tmp_path: Path) -> None:
    folder = record_gym(tmp_path / "pong", 12, env_id="ALE/Pong-v5", max_episode_steps=6, test_fraction=0)
    data = EngineDataset(folder)
    assert data.frame_size == (210, 160)
    assert data.spec.components == (Discrete("action", 6),) and data.source["action_meanings"][0] == "NOOP"
    assert data.lengths.tolist() == [6, 7]  # a cut, then the rest with the frame after the last action


def test_resume_records_up_to_the_total(tmp_path: Path) -> None:
    from diffworld.data.actions import ActionSpec, discrete
    from diffworld.data.folder_store import EngineDatasetWriter

    out = tmp_path / "catch"
    interrupted = EngineDatasetWriter(out, ActionSpec.of(discrete("action", 3)), (64, 64))
    first = np.full((4, 64, 64, 3), 7, np.uint8)
    interrupted.add_episode(first, np.zeros(4))
    with pytest.raises(UserError, match="resume"):
        record_gym(out, 20, env_id="diffworld/Catch-v0", max_episode_steps=4)
    data = EngineDataset(record_gym(out, 20, env_id="diffworld/Catch-v0", max_episode_steps=4, resume=True))
    assert 20 <= data.num_steps <= 21 and data.lengths[0] == 4
    np.testing.assert_array_equal(data.frames(0), first)


def test_agent_policy_records_its_game(tmp_path: Path) -> None:
    from diffworld.agent import Agent, export_agent
    from diffworld.agent.policy import load_agent_policy
    from diffworld.config import build_config

    cfg = build_config(["game=Catch", "preset=smoke"])
    agent_folder = export_agent(Agent.build(cfg, 3), cfg, 3, tmp_path / "agent")
    with pytest.raises(UserError, match="needs an agent policy loader"):
        record_gym(tmp_path / "rec0", 10, policy=str(agent_folder))
    loader = load_agent_policy
    data = EngineDataset(
        record_gym(tmp_path / "rec", 10, policy=str(agent_folder), test_fraction=0, policy_loader=loader)
    )
    assert data.frame_size == (64, 64) and data.spec.width == 1 and data.num_steps >= 10
    assert data.source["env"] == "Catch" and data.source["policy"] == str(agent_folder.resolve())
    with pytest.raises(UserError, match="not ALE/Pong-v5"):
        record_gym(
            tmp_path / "rec2", 10, policy=str(agent_folder), env_id="ALE/Pong-v5", policy_loader=loader
        )


def test_action_spaces() -> None:
    spec, to_vec = action_spec_for(gym.spaces.Discrete(4, start=1))
    assert spec.components == (Discrete("action", 4),) and to_vec(1).tolist() == [0]
    spec, to_vec = action_spec_for(gym.spaces.MultiBinary(3))
    assert isinstance(spec.components[0], Keys) and spec.width == 3
    assert to_vec(np.array([1, 0, 1])).tolist() == [1, 0, 1]
    spec, to_vec = action_spec_for(gym.spaces.MultiDiscrete([2, 5]))
    assert spec.components == (Discrete("action0", 2), Discrete("action1", 5))
    spec, to_vec = action_spec_for(gym.spaces.Box(-1, 2, (2,), np.float32))
    assert spec.components == (Continuous("action0", -1, 2), Continuous("action1", -1, 2))
    spec.validate(to_vec(np.array([0.5, 2.0], np.float32))[None])
    with pytest.raises(UserError, match="unbounded"):
        action_spec_for(gym.spaces.Box(-np.inf, np.inf, (1,), np.float32))
    with pytest.raises(UserError, match="no engine action layout"):
        action_spec_for(gym.spaces.Text(5))


def test_image_observations() -> None:
    assert as_rgb(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)  # type: ignore[union-attr]
    assert as_rgb(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5, 3)  # type: ignore[union-attr]
    assert as_rgb(np.zeros((4,), np.float32)) is None


def test_env_without_images_or_unknown(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot make the Gymnasium environment"):
        record_gym(tmp_path / "x", 5, env_id="NoSuchEnv-v0")
    with pytest.raises(UserError, match="env=<Gymnasium id>"):
        record_gym(tmp_path / "x", 5)


# diffworld runs and recordings -------------------------------------------------------------------------


def _episodes(folder: Path, lengths: list[int]) -> list[Episode]:
    stored = EpisodeDataset(folder)
    rng = np.random.default_rng(0)
    episodes = []
    for length in lengths:
        episode = Episode.from_steps(
            rng.integers(0, 256, (length + 1, 64, 64, 3), dtype=np.uint8),
            rng.integers(0, 4, length).tolist(),
            [0.0] * length,
            terminated=True,
            truncated=False,
        )
        stored.add(episode)
        episodes.append(episode)
    return episodes


def test_recording_folder(tmp_path: Path) -> None:
    episodes = _episodes(tmp_path / "rec", [3, 5])
    meanings = ["NOOP", "FIRE", "RIGHT", "LEFT"]
    (tmp_path / "rec" / RECORDING_INFO).write_text(
        json.dumps({"game": "Breakout", "action_meanings": meanings})
    )
    data = EngineDataset(convert_run(tmp_path / "rec", tmp_path / "out", test_fraction=0))
    assert data.spec.components == (Discrete("action", 4),) and data.frame_size == (64, 64)
    assert data.source["action_meanings"] == meanings
    assert data.lengths.tolist() == [4, 6]  # every frame, the final one included
    for i, episode in enumerate(episodes):
        np.testing.assert_array_equal(data.frames(i), episode.obs)
        assert data.actions(i)[:, 0].tolist() == [*episode.act.tolist(), episode.act[-1]]


def test_bare_episode_folder_needs_the_number_of_actions(tmp_path: Path) -> None:
    _episodes(tmp_path / "eps", [2])
    with pytest.raises(UserError, match="number of actions"):
        convert_run(tmp_path / "eps", tmp_path / "out")
    data = EngineDataset(convert_run(tmp_path / "eps", tmp_path / "out", num_actions=6))
    assert data.spec.components == (Discrete("action", 6),)


def test_run_folder_with_a_corrupt_episode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _episodes(tmp_path / "eps", [2, 3, 2])
    path = tmp_path / "eps" / "episode_000001.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="episode 1"):
        convert_run(tmp_path / "eps", tmp_path / "out", num_actions=4)
    with caplog.at_level(logging.WARNING):
        folder = convert_run(tmp_path / "eps", tmp_path / "out2", num_actions=4, skip_corrupt=True)
    assert EngineDataset(folder).episode_names == ["000000", "000002"] and "episode 1" in caplog.text


def test_first_episode_corrupt_is_skipped_too(tmp_path: Path) -> None:
    _episodes(tmp_path / "eps", [2, 3])
    (tmp_path / "eps" / "episode_000000.npz").write_bytes(b"not a zip")
    data = EngineDataset(convert_run(tmp_path / "eps", tmp_path / "out", num_actions=4, skip_corrupt=True))
    assert data.episode_names == ["000001"]


def test_folder_without_episodes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="No episode files"):
        convert_run(tmp_path / "empty", tmp_path / "out", num_actions=3)


# The official CS:GO HDF5 layout ------------------------------------------------------------------------


def official_actions(rng: np.random.Generator, steps: int) -> np.ndarray:
    """(steps, 51) vectors in the official layout, and the engine vectors they should become."""
    y = np.zeros((steps, 51), np.float64)
    y[:, :13] = rng.integers(0, 2, (steps, 13))
    y[np.arange(steps), 13 + rng.integers(0, 23, steps)] = 1
    y[np.arange(steps), 36 + rng.integers(0, 15, steps)] = 1
    return y


def write_csgo_file(path: Path, steps: int, seed: int, size: tuple[int, int] = (150, 280)) -> tuple:
    rng = np.random.default_rng(seed)
    frames_bgr = rng.integers(0, 256, (steps, *size, 3), dtype=np.uint8)
    y = official_actions(rng, steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for i in range(steps):
            f.create_dataset(f"frame_{i}_x", data=frames_bgr[i])
            f.create_dataset(f"frame_{i}_y", data=y[i])
            f.create_dataset(f"frame_{i}_xaux", data=np.zeros(3))  # the official files hold more: ignored
    return frames_bgr, y


def test_csgo_files_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "full_res"
    written = {
        n: write_csgo_file(src / ("1-10" if n < 10 else "11-20") / f"hdf5_dm_july2021_{n}.hdf5", 4, n)
        for n in (10, 2, 3)
    }
    split = tmp_path / "test_split.txt"
    split.write_text("hdf5_dm_july2021_3.hdf5\nhdf5_dm_july2021_999.hdf5\n")
    data = EngineDataset(convert_csgo_hdf5(src, tmp_path / "out", test_split=split))
    assert data.spec == CSGO_ACTION_SPEC and data.spec.width == 15 and data.frame_size == (150, 280)
    assert data.episode_names == ["hdf5_dm_july2021_2", "hdf5_dm_july2021_3", "hdf5_dm_july2021_10"]
    assert data.test_ids.tolist() == [1]
    names = [c.name for c in data.spec.components]
    assert names == ["keys", "clicks", "mouse_x", "mouse_y"]
    assert isinstance(data.spec.components[2], Bins) and data.spec.components[2].values[0] == -1000
    for i, n in enumerate((2, 3, 10)):
        frames_bgr, y = written[n]
        np.testing.assert_array_equal(data.frames(i), frames_bgr[..., ::-1])  # RGB
        actions = data.actions(i)
        np.testing.assert_array_equal(actions[:, :13], y[:, :13])
        mouse_x = [CSGO_MOUSE_X[int(j)] for j in actions[:, 13]]
        mouse_y = [CSGO_MOUSE_Y[int(j)] for j in actions[:, 14]]
        assert mouse_x == [CSGO_MOUSE_X[j] for j in y[:, 13:36].argmax(1)]
        assert mouse_y == [CSGO_MOUSE_Y[j] for j in y[:, 36:].argmax(1)]
    data.verify()


def test_csgo_truncated_file_refused_or_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    for n in (1, 2, 3):
        write_csgo_file(src / f"hdf5_dm_july2021_{n}.hdf5", 3, n, size=(15, 28))
    bad = src / "hdf5_dm_july2021_2.hdf5"
    bad.write_bytes(bad.read_bytes()[:2000])
    with pytest.raises(CSGOFileError) as e:
        convert_csgo_hdf5(src, tmp_path / "out")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with caplog.at_level(logging.WARNING):
        data = EngineDataset(convert_csgo_hdf5(src, tmp_path / "out2", skip_corrupt=True, test_fraction=0))
    assert data.episode_names == ["hdf5_dm_july2021_1", "hdf5_dm_july2021_3"] and str(bad) in caplog.text


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda y: y.__setitem__((1, 13), 1), "step 1"),  # two mouse-x bins at once
        (lambda y: y.__setitem__((2, slice(36, 51)), 0), "step 2"),  # no mouse-y bin
        (lambda y: y.__setitem__((0, 4), 0.5), "step 0"),  # a key half pressed
    ],
)
def test_csgo_actions_not_of_the_official_form(tmp_path: Path, edit, words: str) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    y = official_actions(rng, 3)
    y[:, 13:36] = 0
    y[:, 24] = 1  # mouse x 0 everywhere, so that setting another bin makes two
    edit(y)
    path = tmp_path / "src" / "hdf5_dm_july2021_1.hdf5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        for i in range(3):
            f.create_dataset(f"frame_{i}_x", data=np.zeros((6, 8, 3), np.uint8))
            f.create_dataset(f"frame_{i}_y", data=y[i])
    with pytest.raises(CSGOFileError, match=words) as e:
        convert_csgo_hdf5(tmp_path / "src", tmp_path / "out")
    assert str(path) in str(e.value)


def test_csgo_missing_step_and_empty_folder(tmp_path: Path) -> None:
    path = tmp_path / "src" / "hdf5_dm_july2021_1.hdf5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f.create_dataset("frame_0_x", data=np.zeros((6, 8, 3), np.uint8))
        f.create_dataset("frame_2_x", data=np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(CSGOFileError, match="frame_1_x is missing"):
        convert_csgo_hdf5(tmp_path / "src", tmp_path / "out")
    (tmp_path / "none").mkdir()
    with pytest.raises(UserError, match="no .hdf5 files"):
        convert_csgo_hdf5(tmp_path / "none", tmp_path / "out2")
