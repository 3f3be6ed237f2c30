from __future__ import annotations

import itertools
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
    part_path,
    read_stored_episode,
    set_aside_later_files,
    stored_episode_ids,
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


# Open episodes: stored while they run, extended in place


def split(episode: Episode, *cuts: int) -> list[Episode]:
    """``episode`` cut into pieces at steps ``cuts``: the first is an episode, the others continue it."""
    bounds = [0, *cuts, len(episode)]
    pieces = []
    for start, stop in itertools.pairwise(bounds):
        pieces.append(
            Episode(
                obs=episode.obs[start : stop + 1],
                act=episode.act[start:stop],
                rew=episode.rew[start:stop],
                terminated=episode.terminated[start:stop],
                truncated=episode.truncated[start:stop],
            )
        )
    return pieces


def test_open_episode_grows_in_place_then_closes(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE, capacity_steps=100)
    before = make_episode(rng, 4)
    running = make_episode(rng, 12, terminated=True)
    first, second, last = split(running, 5, 9)
    assert dataset.add(before) == 0
    assert dataset.add(first, partial=True) == 1
    assert dataset.open_episode_ids == [1] and dataset.is_open(1) and not dataset.is_open(0)
    assert_episodes_equal(dataset.get_episode(1), first)
    frames = dataset.frames
    dataset.extend(1, second, partial=True)
    assert dataset.num_episodes == 2 and dataset.lengths.tolist() == [4, 9]
    assert_episodes_equal(dataset.get_episode(1), split(running, 9)[0])
    assert np.shares_memory(frames, dataset.frames)  # appended where the episode ends: nothing moved
    # On disk: one file per stored piece, each holding only its new steps.
    assert sorted(os.listdir(tmp_path)) == [
        "episode_000000.npz",
        "episode_000001.steps_000000-000005.npz",
        "episode_000001.steps_000005-000009.npz",
    ]
    assert_episodes_equal(read_stored_episode(tmp_path, 1), split(running, 9)[0])
    reloaded = EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)
    assert reloaded.open_episode_ids == [1] and reloaded.lengths.tolist() == [4, 9]
    assert_episodes_equal(reloaded.get_episode(1), split(running, 9)[0])

    # It ends: written whole, as every closed episode is, and its parts are removed.
    counts = dataset.reward_sign_counts()
    dataset.extend(1, last)
    assert dataset.open_episode_ids == [] and dataset.lengths.tolist() == [4, 12]
    assert_episodes_equal(dataset.get_episode(1), running)
    assert sorted(os.listdir(tmp_path)) == ["episode_000000.npz", "episode_000001.npz"]
    np.testing.assert_array_equal(dataset.reward_sign_counts(), counts + _sign_counts(last.rew))
    reloaded = EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)
    assert reloaded.open_episode_ids == []
    assert_episodes_equal(reloaded.get_episode(1), running)
    np.testing.assert_array_equal(reloaded.reward_sign_counts(), dataset.reward_sign_counts())
    with pytest.raises(ValueError, match="not open"):
        dataset.extend(1, last)


def _sign_counts(rew: np.ndarray) -> np.ndarray:
    return np.array([(rew < 0).sum(), (rew == 0).sum(), (rew > 0).sum()])


def test_loaded_open_episode_goes_on(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)
    running = make_episode(rng, 10, terminated=False)  # truncated at its last step
    first, second, last = split(running, 3, 6)
    dataset.add(first, partial=True)
    dataset.extend(0, second, partial=True)
    resumed = EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)
    resumed.extend(0, last)
    assert_episodes_equal(EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE).get_episode(0), running)
    assert os.listdir(tmp_path) == ["episode_000000.npz"]


def test_extend_checks_its_input(rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(frame_shape=FRAME_SHAPE)
    running = make_episode(rng, 6)
    first, rest = split(running, 3)
    with pytest.raises(ValueError, match="has ended, so it cannot stay open"):
        dataset.add(running, partial=True)
    dataset.add(first, partial=True)
    with pytest.raises(ValueError, match="has ended, so it cannot stay open"):
        dataset.extend(0, rest, partial=True)
    with pytest.raises(ValueError, match="last frame of episode 0"):
        dataset.extend(0, split(make_episode(rng, 6), 3)[1])
    with pytest.raises(ValueError, match="episode 1 is not open"):
        dataset.extend(1, rest)
    assert dataset.lengths.tolist() == [3]  # nothing stored by the refused calls
    dataset.extend(0, rest)
    assert_episodes_equal(dataset.get_episode(0), running)


def test_several_open_episodes_interleaved(tmp_path: Path, rng: np.random.Generator) -> None:
    """Several envs: open episodes that are not last in RAM move to the end when they grow."""
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE, capacity_steps=8)
    episodes = {i: make_episode(rng, 9 + i, terminated=i % 2 == 0) for i in range(3)}
    pieces = {i: split(episode, 2, 5) for i, episode in episodes.items()}
    closed = make_episode(rng, 4)
    dataset.add(pieces[0][0], partial=True)
    dataset.add(closed)
    dataset.add(pieces[1][0], partial=True)
    dataset.add(pieces[2][0], partial=True)
    stored = {0: 1, 1: 1, 2: 1}  # pieces of each episode stored so far
    ids = {0: 0, 1: 2, 2: 3}
    for i in (0, 2, 1, 1, 0, 2):  # grows out of order, each one closing with its last piece
        last = stored[i] == 2
        dataset.extend(ids[i], pieces[i][stored[i]], partial=not last)
        stored[i] += 1
        for j, episode in episodes.items():
            expected = episode if stored[j] == 3 else split(episode, [2, 5][stored[j] - 1])[0]
            assert_episodes_equal(dataset.get_episode(ids[j]), expected)
        assert_episodes_equal(dataset.get_episode(1), closed)
        # The index arrays still partition the RAM arrays among the episodes.
        starts_lengths = zip(dataset.step_starts, dataset.lengths, strict=True)
        steps = np.concatenate([np.arange(start, start + n) for start, n in starts_lengths])
        assert sorted(steps.tolist()) == list(range(dataset.num_steps))
    assert dataset.open_episode_ids == []
    reloaded = EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)
    for i, episode in episodes.items():
        assert_episodes_equal(reloaded.get_episode(ids[i]), episode)
    np.testing.assert_array_equal(reloaded.reward_sign_counts(), dataset.reward_sign_counts())


def test_a_new_part_costs_its_own_steps_only(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=(64, 64, 3))
    running = make_episode(rng, 400, frame_shape=(64, 64, 3), terminated=False)
    pieces = split(running, *range(50, 400, 50))
    dataset.add(pieces[0], partial=True)
    sizes = []
    for piece in pieces[1:-1]:
        files_before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
        dataset.extend(0, piece, partial=True)
        new = [p for p in tmp_path.iterdir() if p not in files_before]
        assert len(new) == 1  # one new file; the earlier parts are untouched
        assert all(p.stat().st_mtime_ns == mtime for p, mtime in files_before.items())
        sizes.append(new[0].stat().st_size)
    assert max(sizes) < 1.2 * min(sizes)  # no growth with the episode's length


def test_new_dataset_refuses_folder_with_an_open_episode(tmp_path: Path, rng: np.random.Generator) -> None:
    EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE).add(split(make_episode(rng, 3), 2)[0], partial=True)
    assert stored_episode_ids(tmp_path) == [0]
    with pytest.raises(FileExistsError, match="EpisodeDataset.load"):
        EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)


def test_corrupted_part_gives_clear_error(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = EpisodeDataset(tmp_path, frame_shape=FRAME_SHAPE)
    dataset.add(make_episode(rng, 3))
    first, second, _ = split(make_episode(rng, 9), 3, 6)
    dataset.add(first, partial=True)
    dataset.extend(1, second, partial=True)
    part_path(tmp_path, 1, 3, 6).write_bytes(b"garbage")
    with pytest.raises(CorruptEpisodeError, match=r"episode_000001.steps_000003-000006.npz") as info:
        EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)
    assert "max_episodes=1" in str(info.value)
    # A part from another episode does not continue this one.
    other = split(make_episode(rng, 9), 3, 6)[1]
    with atomic_write(part_path(tmp_path, 1, 3, 6)) as file:
        np.savez_compressed(file, **vars(other))
    with pytest.raises(CorruptEpisodeError, match="different runs"):
        EpisodeDataset.load(tmp_path, frame_shape=FRAME_SHAPE)


def test_episode_files_read_open_episodes(tmp_path: Path, rng: np.random.Generator) -> None:
    from diffworld.viz.episodes import EpisodeFiles, find_episode_folder

    directory = tmp_path / "dataset" / "train"
    dataset = EpisodeDataset(directory, frame_shape=FRAME_SHAPE)
    running = make_episode(rng, 8)
    first, second, _ = split(running, 2, 5)
    dataset.add(first, partial=True)
    assert find_episode_folder(tmp_path / "dataset") == directory  # a run's first episode, still running
    closed = make_episode(rng, 3)
    dataset.add(closed)
    dataset.extend(0, second, partial=True)
    files = EpisodeFiles(directory)
    assert len(files) == 2 and stored_episode_ids(directory) == [0, 1]
    assert_episodes_equal(files[0], split(running, 5)[0])
    assert_episodes_equal(files[1], closed)


# Resuming from a checkpoint: the folder brought back to an earlier moment


def grown_folder(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, list[Episode], EpisodeDataset]:
    """A folder where episode 1 is open with 4 steps (the 'checkpoint'), as are later parts of it."""
    directory = tmp_path / "train"
    dataset = EpisodeDataset(directory, frame_shape=FRAME_SHAPE)
    episodes = [make_episode(rng, 5), make_episode(rng, 12, terminated=False), make_episode(rng, 3)]
    dataset.add(episodes[0])
    dataset.add(split(episodes[1], 4)[0], partial=True)
    return directory, episodes, dataset


def assert_folder_holds(directory: Path, episodes: list[Episode], open_ids: list[int]) -> None:
    loaded = EpisodeDataset.load(directory, frame_shape=FRAME_SHAPE)
    assert loaded.num_episodes == len(episodes) and loaded.open_episode_ids == open_ids
    for i, episode in enumerate(episodes):
        assert_episodes_equal(loaded.get_episode(i), episode)


@pytest.mark.parametrize("after", ["grew", "ended", "ended_parts_left", "ended_some_parts_removed"])
def test_set_aside_later_files(tmp_path: Path, rng: np.random.Generator, after: str) -> None:
    directory, episodes, dataset = grown_folder(tmp_path, rng)
    pieces = split(episodes[1], 4, 8)
    # After the checkpoint: episode 1 grows (and maybe ends), episode 2 is stored.
    dataset.extend(1, pieces[1], partial=True)
    if after == "grew":
        dataset.extend(1, split(episodes[1], 8, 10)[1], partial=True)
    else:
        dataset.extend(1, pieces[2])
        if after == "ended_parts_left":  # killed between writing the whole episode and removing its parts
            for piece, (start, stop) in zip(pieces[:2], [(0, 4), (4, 8)], strict=True):
                with atomic_write(part_path(directory, 1, start, stop)) as file:
                    np.savez_compressed(file, **vars(piece))
        elif after == "ended_some_parts_removed":
            with atomic_write(part_path(directory, 1, 4, 8)) as file:
                np.savez_compressed(file, **vars(pieces[1]))
    dataset.add(episodes[2])
    later = {p.name: p.read_bytes() for p in directory.iterdir()}

    aside = tmp_path / "aside"
    moved = set_aside_later_files(directory, aside, 2, [5, 4])
    assert_folder_holds(directory, [episodes[0], pieces[0]], open_ids=[1])
    assert sorted(p.name for p in moved) == sorted(os.listdir(aside))
    # Nothing lost: what was written after the checkpoint is all in `aside`, unchanged.
    for name in os.listdir(aside):
        assert (aside / name).read_bytes() == later[name]
    assert set(later) <= set(os.listdir(aside)) | set(os.listdir(directory))
    assert "episode_000002.npz" in os.listdir(aside)
    # Run again (as after a crash during the first call): nothing more to do.
    assert set_aside_later_files(directory, tmp_path / "aside2", 2, [5, 4]) == []
    # And the resumed run goes on from there.
    resumed = EpisodeDataset.load(directory, frame_shape=FRAME_SHAPE)
    resumed.extend(1, split(episodes[1], 4)[1])
    assert_folder_holds(directory, episodes[:2], open_ids=[])


def test_set_aside_after_a_crash_in_the_middle(tmp_path: Path, rng: np.random.Generator) -> None:
    directory, episodes, dataset = grown_folder(tmp_path, rng)
    dataset.extend(1, split(episodes[1], 4)[1])  # ended after the checkpoint: its parts are gone
    assert sorted(os.listdir(directory)) == ["episode_000000.npz", "episode_000001.npz"]
    # The first call wrote steps 0..3 as a part of their own and was killed before moving the whole file.
    with atomic_write(part_path(directory, 1, 0, 4)) as file:
        np.savez_compressed(file, **vars(split(episodes[1], 4)[0]))
    set_aside_later_files(directory, tmp_path / "aside", 2, [5, 4])
    assert_folder_holds(directory, [episodes[0], split(episodes[1], 4)[0]], open_ids=[1])
    assert os.listdir(tmp_path / "aside") == ["episode_000001.npz"]


def test_set_aside_count_only_and_missing_steps(tmp_path: Path, rng: np.random.Generator) -> None:
    directory, episodes, dataset = grown_folder(tmp_path, rng)
    dataset.add(episodes[2])
    moved = set_aside_later_files(directory, tmp_path / "aside", 2)
    assert [p.name for p in moved] == ["episode_000002.npz"]
    with pytest.raises(FileNotFoundError, match="lacks steps 4..5 of episode 1"):
        set_aside_later_files(directory, tmp_path / "aside", 2, [5, 6])
    with pytest.raises(ValueError, match="2 lengths for 1 episodes"):
        set_aside_later_files(directory, tmp_path / "aside", 1, [5, 4])


def test_stale_files_of_a_discarded_history_are_replaced(tmp_path: Path, rng: np.random.Generator) -> None:
    """Loaded with max_episodes, a dataset replaces the later files as it reaches their ids."""
    directory, episodes, dataset = grown_folder(tmp_path, rng)
    dataset.extend(1, split(episodes[1], 4)[1])
    dataset.add(split(make_episode(rng, 9), 6)[0], partial=True)  # id 2, open, in the discarded history
    resumed = EpisodeDataset.load(directory, max_episodes=2, frame_shape=FRAME_SHAPE)
    new = make_episode(rng, 10)
    first, second, _ = split(new, 3, 8)
    assert resumed.add(first, partial=True) == 2
    resumed.extend(2, second, partial=True)
    assert_folder_holds(directory, [*episodes[:2], split(new, 8)[0]], open_ids=[2])
    # Parts outside the chain loaded (an episode stored whole since) are removed at the first write.
    with atomic_write(part_path(directory, 1, 0, 4)) as file:
        np.savez_compressed(file, **vars(split(episodes[1], 4)[0]))
    EpisodeDataset.load(directory, frame_shape=FRAME_SHAPE).add(make_episode(rng, 2))
    assert not part_path(directory, 1, 0, 4).exists()


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
