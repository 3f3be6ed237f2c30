from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from diffworld.data import (
    CorruptEpisodeError,
    Episode,
    EpisodeDataset,
    episode_path,
    has_enough_minority_rewards,
)
from diffworld.utils.atomic import TEMP_SUFFIX, atomic_write, atomic_write_bytes, atomic_write_text

FRAME_SHAPE = (8, 8, 3)


def make_episode(
    rng: np.random.Generator,
    length: int,
    *,
    frame_shape: tuple[int, int, int] = FRAME_SHAPE,
    rewards: list[float] | None = None,
    terminated: bool = True,
) -> Episode:
    rew = rng.choice([-1.0, 0.0, 0.0, 1.0, 3.5], size=length) if rewards is None else rewards
    return Episode.from_steps(
        list(rng.integers(0, 256, size=(length + 1, *frame_shape), dtype=np.uint8)),
        list(rng.integers(0, 6, size=length)),
        list(rew),
        terminated=terminated,
        truncated=not terminated,
    )


def assert_episodes_equal(actual: Episode, expected: Episode) -> None:
    for field in ("obs", "act", "rew", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(actual, field), getattr(expected, field), err_msg=field)
        assert getattr(actual, field).dtype == getattr(expected, field).dtype


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# Episode


def test_episode_from_steps_sets_last_step_flags(rng: np.random.Generator) -> None:
    episode = make_episode(rng, 5, terminated=False)
    assert len(episode) == 5
    assert episode.obs.shape == (6, *FRAME_SHAPE)
    assert episode.act.dtype == np.int64 and episode.rew.dtype == np.float32
    assert not episode.terminated.any()
    assert episode.truncated.tolist() == [False] * 4 + [True]


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("obs", np.zeros((4, 8, 8, 3), dtype=np.float32), TypeError, "obs must have dtype uint8"),
        ("obs", np.zeros((1, 8, 8, 3), dtype=np.uint8), ValueError, "T >= 1"),
        ("act", np.zeros(3, dtype=np.int32), TypeError, "act must have dtype int64"),
        ("rew", np.zeros(2, dtype=np.float32), ValueError, r"rew must have shape \(3,\)"),
        ("rew", np.array([0, np.nan, 0], dtype=np.float32), ValueError, "finite"),
        ("terminated", np.array([True, False, False]), ValueError, "only be True at the last step"),
        ("truncated", [False, False, True], TypeError, "numpy array"),
    ],
)
def test_episode_validation(field: str, value: object, error: type[Exception], match: str) -> None:
    fields = {
        "obs": np.zeros((4, 8, 8, 3), dtype=np.uint8),
        "act": np.zeros(3, dtype=np.int64),
        "rew": np.zeros(3, dtype=np.float32),
        "terminated": np.zeros(3, dtype=bool),
        "truncated": np.zeros(3, dtype=bool),
    }
    fields[field] = value
    with pytest.raises(error, match=match):
        Episode(**fields)  # type: ignore[arg-type]


# RAM storage


def test_ram_round_trip_ids_and_index_arrays(rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(frame_shape=FRAME_SHAPE)
    episodes = [make_episode(rng, length) for length in (3, 1, 7, 4)]
    assert [dataset.add(episode) for episode in episodes] == [0, 1, 2, 3]
    assert dataset.num_episodes == 4 and dataset.num_steps == 15
    np.testing.assert_array_equal(dataset.lengths, [3, 1, 7, 4])
    np.testing.assert_array_equal(dataset.step_starts, [0, 3, 4, 11])
    np.testing.assert_array_equal(dataset.frame_starts, [0, 4, 6, 14])
    assert dataset.frames.shape == (15 + 4, *FRAME_SHAPE)
    for i, episode in enumerate(episodes):
        assert_episodes_equal(dataset.get_episode(i), episode)
    with pytest.raises(IndexError):
        dataset.get_episode(4)


def test_get_episode_returns_read_only_views(rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(frame_shape=FRAME_SHAPE)
    for _ in range(3):
        dataset.add(make_episode(rng, 5))
    episode = dataset.get_episode(1)
    assert np.shares_memory(episode.obs, dataset.frames)
    assert np.shares_memory(episode.act, dataset.actions)
    assert np.shares_memory(episode.rew, dataset.rewards)
    assert not episode.obs.flags.writeable and not dataset.lengths.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        episode.obs[0] = 0


def test_capacity_hint_avoids_growth_copies(rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(frame_shape=FRAME_SHAPE, capacity_steps=100)
    dataset.add(make_episode(rng, 10))
    first_frames = dataset.frames
    for _ in range(8):
        dataset.add(make_episode(rng, 10))
    assert np.shares_memory(first_frames, dataset.frames)


def test_growth_beyond_capacity_keeps_data(rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(frame_shape=FRAME_SHAPE, capacity_steps=4)
    episodes = [make_episode(rng, int(length)) for length in rng.integers(1, 20, size=30)]
    for episode in episodes:
        dataset.add(episode)
    for i, episode in enumerate(episodes):
        assert_episodes_equal(dataset.get_episode(i), episode)


def test_rejects_wrong_frame_shape(rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(frame_shape=FRAME_SHAPE)
    with pytest.raises(ValueError, match=r"frames of shape \(4, 4, 3\)"):
        dataset.add(make_episode(rng, 3, frame_shape=(4, 4, 3)))


def test_reward_sign_counts(rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(frame_shape=FRAME_SHAPE)
    np.testing.assert_array_equal(dataset.reward_sign_counts(), [0, 0, 0])
    dataset.add(make_episode(rng, 4, rewards=[0.0, 2.0, -0.5, 0.0]))
    dataset.add(make_episode(rng, 3, rewards=[1.0, 1.0, 0.0]))
    np.testing.assert_array_equal(dataset.reward_sign_counts(), [1, 3, 3])
    dataset.reward_sign_counts()[0] = 100  # a copy: the dataset's counts are unaffected
    assert dataset.reward_sign_counts()[0] == 1


@pytest.mark.parametrize(
    ("counts", "min_count", "expected"),
    [
        ([3, 900, 40], 43, True),
        ([3, 900, 40], 44, False),
        ([0, 10, 0], 1, False),
        ([0, 0, 0], 0, True),
        ([50, 20, 30], 50, True),  # the most common class need not be "0 reward"
        ([50, 20, 30], 51, False),
    ],
)
def test_has_enough_minority_rewards(counts: list[int], min_count: int, expected: bool) -> None:
    assert has_enough_minority_rewards(np.array(counts), min_count) is expected


# Disk storage


def test_disk_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)
    episodes = [make_episode(rng, length, terminated=length % 2 == 0) for length in (5, 2, 9)]
    for episode in episodes:
        dataset.add(episode)
    assert sorted(os.listdir(tmp_path)) == [f"episode_00000{i}.npz" for i in range(3)]

    loaded = EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)
    assert loaded.num_episodes == 3 and loaded.num_steps == 16
    for i, episode in enumerate(episodes):
        assert_episodes_equal(loaded.get_episode(i), episode)
    np.testing.assert_array_equal(loaded.reward_sign_counts(), dataset.reward_sign_counts())

    assert loaded.add(make_episode(rng, 3)) == 3
    assert episode_path(tmp_path, 3).is_file()


def test_ram_only_dataset_writes_nothing(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    EpisodeDataset(frame_shape=FRAME_SHAPE).add(make_episode(rng, 3))
    assert os.listdir(tmp_path) == []


def test_new_dataset_refuses_folder_with_episodes(tmp_path: Path, rng: np.random.Generator) -> None:
    EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE).add(make_episode(rng, 3))
    with pytest.raises(FileExistsError, match="EpisodeDataset.load"):
        EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)


def test_load_max_episodes(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)
    episodes = [make_episode(rng, 4) for _ in range(5)]
    for episode in episodes:
        dataset.add(episode)

    resumed = EpisodeDataset.load(tmp_path, max_episodes=3, frame_shape=FRAME_SHAPE)
    assert resumed.num_episodes == 3 and resumed.num_steps == 12
    # The resumed run's next episode takes id 3 and replaces the stale file.
    replacement = make_episode(rng, 6)
    assert resumed.add(replacement) == 3
    assert_episodes_equal(EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE).get_episode(3), replacement)

    assert EpisodeDataset.load(tmp_path, max_episodes=0, frame_shape=FRAME_SHAPE).num_episodes == 0
    with pytest.raises(FileNotFoundError, match=r"lacks ids \[5, 6\]"):
        EpisodeDataset.load(tmp_path, max_episodes=7, frame_shape=FRAME_SHAPE)


def test_load_detects_missing_episode(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)
    for _ in range(3):
        dataset.add(make_episode(rng, 2))
    episode_path(tmp_path, 1).unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks ids \[1\]"):
        EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupted_episode_file_gives_clear_error(
    tmp_path: Path, rng: np.random.Generator, damage: str
) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)
    for _ in range(3):
        dataset.add(make_episode(rng, 20))
    path = episode_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not an npz file at all")
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0xFF  # inside the compressed frames: caught by zlib or the CRC check
    path.write_bytes(bytes(data))

    with pytest.raises(CorruptEpisodeError, match="episode_000001.npz") as info:
        EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)
    assert "max_episodes=1" in str(info.value)
    assert EpisodeDataset.load(tmp_path, max_episodes=1, frame_shape=FRAME_SHAPE).num_episodes == 1


def test_leftover_temp_file_is_ignored_then_cleaned(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)
    for _ in range(2):
        dataset.add(make_episode(rng, 3))
    leftover = episode_path(tmp_path, 2).with_name(f".episode_000002.npz.0123456789ab{TEMP_SUFFIX}")
    leftover.write_bytes(b"half an episode")

    resumed = EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)
    assert resumed.num_episodes == 2
    assert leftover.exists()  # loading alone never deletes: another process may still be writing
    assert resumed.add(make_episode(rng, 3)) == 2
    assert not leftover.exists()
    assert EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE).num_episodes == 3


# Atomic writes


def test_atomic_write_helpers(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_text(path, "{}")
    atomic_write_text(path, '{"step": 1}')
    assert path.read_text(encoding="utf-8") == '{"step": 1}'
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["state.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as file:
        file.write(b"new, but incomplete")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.bin"]
    with pytest.raises(ValueError, match="modes"):
        atomic_write(path, "ab").__enter__()
