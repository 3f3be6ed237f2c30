"""SIGKILL a process that appends episodes: every episode it reported must survive, intact and loadable.

The same for a process that stores episodes while they run (open, in parts) and extends them: every step it
reported must survive, and the folder brought back to the reported state (as a resume does) goes on.

This file is also the child process: ``python test_storage_crash.py DIRECTORY MODE``.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from diffworld.data import Episode, EpisodeDataset, set_aside_later_files
from diffworld.utils.atomic import TEMP_SUFFIX

NUM_RANDOM_KILLS = 3
MAX_KILL_DELAY_S = 0.3
STALLED_EPISODE_ID = 2
PIECE_STEPS = 7
"""Steps per part of an open episode (mode ``open``)."""


def make_episode(episode_id: int) -> Episode:
    """Deterministic content per id, so the parent can check what the child wrote."""
    rng = np.random.default_rng(episode_id)
    length = 20 + episode_id % 40
    # Incompressible frames make each write take tens of milliseconds: kills often land mid-write.
    return Episode.from_steps(
        list(rng.integers(0, 256, size=(length + 1, 64, 64, 3), dtype=np.uint8)),
        list(rng.integers(0, 18, size=length)),
        list(rng.normal(size=length)),
        terminated=episode_id % 2 == 0,
        truncated=False,
    )


def pieces_of(episode: Episode) -> list[Episode]:
    """``episode`` as stored while it runs: its first ``PIECE_STEPS`` steps, then the steps after each."""
    bounds = [*range(0, len(episode), PIECE_STEPS), len(episode)]
    return [prefix(episode, stop, start) for start, stop in itertools.pairwise(bounds)]


def prefix(episode: Episode, stop: int, start: int = 0) -> Episode:
    return Episode(
        obs=episode.obs[start : stop + 1],
        **{name: getattr(episode, name)[start:stop] for name in ("act", "rew", "terminated", "truncated")},
    )


def child_main(directory: Path, mode: str) -> None:
    dataset = EpisodeDataset(directory)
    if mode == "open":
        while True:
            pieces = pieces_of(make_episode(dataset.num_episodes))
            episode_id = dataset.add(pieces[0], partial=True)
            print(episode_id, len(dataset.get_episode(episode_id)), flush=True)
            for i, piece in enumerate(pieces[1:], start=2):
                dataset.extend(episode_id, piece, partial=i < len(pieces))
                print(episode_id, len(dataset.get_episode(episode_id)), flush=True)
    while True:
        if mode == "stall" and dataset.num_episodes == STALLED_EPISODE_ID:
            # The file is complete under its temporary name; hang just before the rename.
            def stalled_replace(*_: object, **__: object) -> None:
                print("stalled", flush=True)
                time.sleep(60)

            os.replace = stalled_replace
        episode_id = dataset.add(make_episode(dataset.num_episodes))
        print(episode_id, flush=True)


def spawn_child(directory: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, str(directory), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until_stalled(child: subprocess.Popen[str]) -> list[str]:
    assert child.stdout is not None
    lines: list[str] = []
    while (line := child.stdout.readline().strip()) != "stalled":
        assert line, "child exited before stalling"
        lines.append(line)
    return lines


def kill_and_collect(child: subprocess.Popen[str]) -> list[str]:
    """SIGKILL the child, return the ids it printed that were not read yet."""
    assert child.stdout is not None and child.stderr is not None
    child.send_signal(signal.SIGKILL)
    # Read through child.stdout, not communicate(): lines already buffered there must not be lost.
    rest = child.stdout.read()
    assert child.wait(timeout=10) == -signal.SIGKILL, f"child died on its own: {child.stderr.read()}"
    return rest.split()


def check_directory(directory: Path, reported_ids: list[int], context: str) -> EpisodeDataset:
    dataset = EpisodeDataset.load(directory)
    # Every reported episode is there; at most one more (written, killed before printing its id).
    assert reported_ids == list(range(len(reported_ids))), context
    assert len(reported_ids) <= dataset.num_episodes <= len(reported_ids) + 1, context
    for episode_id in range(dataset.num_episodes):
        expected = make_episode(episode_id)
        actual = dataset.get_episode(episode_id)
        for field in ("obs", "act", "rew", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(actual, field), getattr(expected, field), err_msg=context)
    assert all(name.startswith("episode_") or name.endswith(TEMP_SUFFIX) for name in os.listdir(directory))
    return dataset


def test_sigkill_at_random_moments_keeps_reported_episodes(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    delays = random.Random(seed).uniform  # printed on failure to replay the same kill moments
    directories = [tmp_path / f"run{i}" for i in range(NUM_RANDOM_KILLS + 1)]
    modes = ["stall"] + ["random"] * NUM_RANDOM_KILLS
    # Children start together so that their interpreter start-ups overlap.
    children = [spawn_child(directory, mode) for directory, mode in zip(directories, modes, strict=True)]

    try:
        for directory, mode, child in zip(directories, modes, children, strict=True):
            context = f"mode={mode}, seed={seed}"
            assert child.stdout is not None
            if mode == "stall":
                lines = read_until_stalled(child)
            else:
                # Wait for the first id (start-up is over), then kill at a random moment of the write loop.
                lines = [child.stdout.readline()]
                assert lines[0], f"child exited early: {child.communicate()[1]}"
                time.sleep(delays(0, MAX_KILL_DELAY_S))
            lines += kill_and_collect(child)
            reported_ids = [int(line) for line in lines]
            dataset = check_directory(directory, reported_ids, context)

            if mode == "stall":
                assert dataset.num_episodes == STALLED_EPISODE_ID
                assert len(list(directory.glob(f"*{TEMP_SUFFIX}"))) == 1
            # A resumed writer removes the leftovers and appends after the surviving episodes.
            assert dataset.add(make_episode(dataset.num_episodes)) == dataset.num_episodes - 1
            assert not list(directory.glob(f"*{TEMP_SUFFIX}"))
            check_directory(directory, list(range(dataset.num_episodes)), context)
    finally:
        for child in children:  # a failed check must not leave writers running
            if child.poll() is None:
                child.kill()
                child.wait()


def check_open_directory(directory: Path, reported: dict[int, int], context: str) -> EpisodeDataset:
    """Every reported step is there, each episode a prefix of its content; at most one write more."""
    dataset = EpisodeDataset.load(directory)
    assert list(reported) == list(range(len(reported))), context
    assert len(reported) <= dataset.num_episodes <= len(reported) + 1, context
    writes_ahead = 0
    for episode_id in range(dataset.num_episodes):
        expected, actual = make_episode(episode_id), dataset.get_episode(episode_id)
        length = len(actual)
        assert length >= reported.get(episode_id, 0), context
        writes_ahead += length > reported.get(episode_id, 0)
        assert dataset.is_open(episode_id) == (length < len(expected)), context
        for field in ("obs", "act", "rew", "terminated", "truncated"):
            np.testing.assert_array_equal(
                getattr(actual, field), getattr(prefix(expected, length), field), err_msg=context
            )
    assert writes_ahead <= 1, context
    assert all(name.startswith("episode_") or name.endswith(TEMP_SUFFIX) for name in os.listdir(directory))
    return dataset


def test_sigkill_while_episodes_are_open_keeps_reported_steps(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    delays = random.Random(seed).uniform
    directories = [tmp_path / f"run{i}" for i in range(NUM_RANDOM_KILLS)]
    children = [spawn_child(directory, "open") for directory in directories]
    try:
        for k, (directory, child) in enumerate(zip(directories, children, strict=True)):
            context = f"kill {k}, seed={seed}"
            assert child.stdout is not None
            lines = [child.stdout.readline()]
            assert lines[0], f"child exited early: {child.communicate()[1]}"
            time.sleep(delays(0, MAX_KILL_DELAY_S))
            lines += [" ".join(pair) for pair in zip(*[iter(kill_and_collect(child))] * 2, strict=True)]
            reported = {int(line.split()[0]): int(line.split()[1]) for line in lines}
            check_open_directory(directory, reported, context)

            # Brought back to the reported state, as a resume from a checkpoint taken then does; nothing lost.
            aside = tmp_path / f"aside{k}"
            before = {path.name: path.read_bytes() for path in directory.iterdir()}
            set_aside_later_files(directory, aside, len(reported), list(reported.values()))
            dataset = check_open_directory(directory, reported, context)
            assert dataset.lengths.tolist() == list(reported.values()), context
            for name, data in before.items():
                kept = directory / name if (directory / name).exists() else aside / name
                assert kept.read_bytes() == data or name.endswith(TEMP_SUFFIX), context
            # ... and goes on from there: the open episode grows to its end.
            last = dataset.num_episodes - 1
            if dataset.is_open(last):
                expected = make_episode(last)
                dataset.extend(last, prefix(expected, len(expected), int(dataset.lengths[last])))
            assert not dataset.open_episode_ids
            check_open_directory(directory, {i: len(make_episode(i)) for i in range(last + 1)}, context)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


if __name__ == "__main__":
    child_main(Path(sys.argv[1]), sys.argv[2])
