"""The collector checked against the raw stream of the envs it steps, and its exact resumption."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from diffworld.agent.collector import Collector, EpisodeStats
from diffworld.config.schema import ActorCriticConfig
from diffworld.data.episode import Episode
from diffworld.data.storage import EpisodeDataset
from diffworld.envs import StepResult, make_atari_env
from diffworld.models.actor_critic import ActorCritic, LSTMState
from recording_envs import RecordingEnvs

CPU = torch.device("cpu")


class RecordingActorCritic(ActorCritic):
    """``ActorCritic`` that keeps the inputs of every ``act`` call."""

    def __init__(self, num_actions: int) -> None:
        torch.manual_seed(0)  # same weights in every collector of a test
        super().__init__(ActorCriticConfig(channels=[8, 8, 8, 8], lstm_dim=16), num_actions)
        self.calls: list[tuple[Tensor, Tensor, Tensor]] = []

    def act(
        self, obs: Tensor, hx_cx: LSTMState | None, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, LSTMState]:
        assert hx_cx is not None  # the collector always passes its per-env state
        self.calls.append((obs.clone(), hx_cx[0].clone(), hx_cx[1].clone()))
        return super().act(obs, hx_cx, *args, **kwargs)


@contextlib.contextmanager
def make_collector(
    game: str,
    num_envs: int,
    *,
    life_loss_terminal: bool = True,
    max_frames: int = 108_000,
    env_seed: int = 0,
    generator_seed: int = 0,
    epsilon: float = 0.01,
    asynchronous: bool | None = None,
) -> Iterator[Collector]:
    envs = RecordingEnvs(
        game,
        num_envs,
        env_seed,
        life_loss_terminal=life_loss_terminal,
        max_frames_per_episode=max_frames,
        asynchronous=asynchronous,
    )
    with envs:
        yield Collector(
            envs,
            RecordingActorCritic(envs.num_actions),
            epsilon=epsilon,
            temperature=1.0,
            device=CPU,
            generator=torch.Generator().manual_seed(generator_seed),
            dataset=EpisodeDataset(),
        )


def recorded(collector: Collector) -> tuple[RecordingEnvs, RecordingActorCritic, EpisodeDataset]:
    assert isinstance(collector.envs, RecordingEnvs)
    assert isinstance(collector.actor_critic, RecordingActorCritic)
    assert collector.dataset is not None
    return collector.envs, collector.actor_critic, collector.dataset


def replay(
    first_obs: np.ndarray, results: list[StepResult], actions: list[np.ndarray]
) -> list[list[Episode]]:
    """Per env, the episodes completed in a raw env stream that starts at ``first_obs``."""
    num_envs = len(first_obs)
    frames: list[list[np.ndarray]] = [[obs] for obs in first_obs]
    acts: list[list[int]] = [[] for _ in range(num_envs)]
    rews: list[list[float]] = [[] for _ in range(num_envs)]
    episodes: list[list[Episode]] = [[] for _ in range(num_envs)]
    for result, action in zip(results, actions, strict=True):
        for i in range(num_envs):
            frames[i].append(result.final_obs[i])
            acts[i].append(int(action[i]))
            rews[i].append(float(result.reward[i]))
            if result.done[i]:
                ends = {"terminated": bool(result.terminated[i]), "truncated": bool(result.truncated[i])}
                episodes[i].append(Episode.from_steps(frames[i], acts[i], rews[i], **ends))
                frames[i], acts[i], rews[i] = [result.obs[i]], [], []
    return episodes


def in_completion_order(
    per_env: list[list[Episode]], results: list[StepResult], max_per_env: list[int] | None = None
) -> list[Episode]:
    """The episodes of ``replay``'s output in the order they ended, envs in index order within a step."""
    taken = [0] * len(per_env)
    ordered = []
    for result in results:
        for i in np.flatnonzero(result.done):
            if max_per_env is None or taken[i] < max_per_env[i]:
                ordered.append(per_env[i][taken[i]])
                taken[i] += 1
    return ordered


def stored_episodes(dataset: EpisodeDataset, first: int = 0) -> list[Episode]:
    return [dataset.get_episode(i) for i in range(first, dataset.num_episodes)]


def expected_dataset(
    first_obs: np.ndarray, results: list[StepResult], actions: list[np.ndarray], call_ends: list[int]
) -> tuple[list[Episode], set[int]]:
    """The official collector's dataset for a raw env stream: (episodes by id, ids of the open ones).

    An episode takes the next id when first stored: when it ends, or at the last step of a collection
    (``call_ends``: the number of env steps after each call) while it runs; it is then extended in place.
    """
    num_envs = len(first_obs)
    frames: list[list[np.ndarray]] = [[obs] for obs in first_obs]
    acts: list[list[int]] = [[] for _ in range(num_envs)]
    rews: list[list[float]] = [[] for _ in range(num_envs)]
    ids: list[int | None] = [None] * num_envs
    episodes: list[Episode] = []
    open_ids: set[int] = set()

    def store(i: int, episode: Episode) -> int:
        episode_id = ids[i]
        if episode_id is None:
            episode_id = len(episodes)
            episodes.append(episode)
        episodes[episode_id] = episode
        return episode_id

    for t, (result, action) in enumerate(zip(results, actions, strict=True)):
        for i in range(num_envs):
            frames[i].append(result.final_obs[i])
            acts[i].append(int(action[i]))
            rews[i].append(float(result.reward[i]))
            if result.done[i]:
                ends = {"terminated": bool(result.terminated[i]), "truncated": bool(result.truncated[i])}
                open_ids.discard(store(i, Episode.from_steps(frames[i], acts[i], rews[i], **ends)))
                frames[i], acts[i], rews[i], ids[i] = [result.obs[i]], [], [], None
            elif t + 1 in call_ends:
                ids[i] = store(
                    i, Episode.from_steps(frames[i], acts[i], rews[i], terminated=False, truncated=False)
                )
                open_ids.add(ids[i])
    return episodes, open_ids


def assert_dataset_is(dataset: EpisodeDataset, episodes: list[Episode], open_ids: set[int]) -> None:
    assert dataset.num_episodes == len(episodes)
    assert set(dataset.open_episode_ids) == open_ids
    for episode_id, (got, expected) in enumerate(zip(stored_episodes(dataset), episodes, strict=True)):
        assert_same_episode(got, expected)
        assert dataset.is_open(episode_id) == (episode_id in open_ids)


def copy_dataset(dataset: EpisodeDataset) -> EpisodeDataset:
    """A RAM copy of ``dataset``, open episodes still open."""
    copy = EpisodeDataset(frame_shape=dataset.frame_shape)  # type: ignore[arg-type]
    for i in range(dataset.num_episodes):
        episode = dataset.get_episode(i)
        copy.add(Episode(**{k: v.copy() for k, v in vars(episode).items()}), partial=dataset.is_open(i))
    return copy


def assert_same_episode(got: Episode, expected: Episode) -> None:
    for name in ("obs", "act", "rew", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)


def stats_of(episode: Episode) -> EpisodeStats:
    return EpisodeStats(
        episode_return=float(sum(episode.rew.tolist())),
        length=len(episode),
        terminated=bool(episode.terminated[-1]),
        truncated=bool(episode.truncated[-1]),
    )


def torch_roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("num_envs", [1, 2])
def test_collect_steps_takes_exactly_the_requested_steps(num_envs: int) -> None:
    with make_collector("Breakout", num_envs) as collector:
        envs, _, dataset = recorded(collector)
        stats = collector.collect_steps(6) + collector.collect_steps(0) + collector.collect_steps(50)
        assert collector.num_steps_total == 56 and len(envs.results) == 56 // num_envs
        assert collector.num_episodes_total == len(stats) > 0
        # Every step taken is stored: the running episodes' steps too, in open episodes.
        assert dataset.num_steps == 56
        assert dataset.num_episodes == len(stats) + len(dataset.open_episode_ids)
        assert len(dataset.open_episode_ids) == num_envs
        assert all(len(actions) == 0 for actions in collector.state_dict()["actions"])
        with pytest.raises(ValueError, match="multiple"):
            collector.collect_steps(-num_envs)
        if num_envs == 2:
            with pytest.raises(ValueError, match="multiple"):
                collector.collect_steps(7)
        assert len(envs.resets) == 1  # episodes run on across calls


def test_episodes_are_the_env_stream_with_true_final_frames() -> None:
    # Breakout in training mode with a frame cap: episodes end by life loss, by game over and by the cap.
    with make_collector("Breakout", 2, max_frames=700) as collector:
        envs, actor_critic, dataset = recorded(collector)
        stats = collector.collect_steps(180)
        open_before = {i: len(dataset.get_episode(i)) for i in dataset.open_episode_ids}
        stats += collector.collect_steps(220)
    in_order = in_completion_order(replay(envs.resets[0], envs.results, envs.actions), envs.results)
    assert len(stats) == len(in_order)
    for expected_episode, episode_stats in zip(in_order, stats, strict=True):
        assert episode_stats == stats_of(expected_episode)
    # The dataset: the same episodes, and the running ones stored at the end of each call, then extended.
    episodes, open_ids = expected_dataset(envs.resets[0], envs.results, envs.actions, [90, 200])
    assert_dataset_is(dataset, episodes, open_ids)
    assert dataset.num_steps == 400 and len(open_ids) == 2
    # Episodes running at the end of the first call kept their ids, grew, and one of them has ended since.
    assert len(open_before) == 2
    assert all(len(dataset.get_episode(i)) > length for i, length in open_before.items())
    assert any(not dataset.is_open(i) for i in open_before)

    # The frame each step's action was chosen on is the last frame of the running episode, scaled to [-1, 1].
    for t, (obs, _, _) in enumerate(actor_critic.calls):
        current = envs.resets[0] if t == 0 else envs.results[t - 1].obs
        scaled = current.astype(np.float32) / np.float32(127.5) - np.float32(1)
        np.testing.assert_array_equal(obs.permute(0, 2, 3, 1).numpy(), scaled)

    life_losses = truncations = game_overs = 0
    ends = [(t, i) for t, result in enumerate(envs.results) for i in np.flatnonzero(result.done)]
    for t, i in ends:
        result = envs.results[t]
        final, next_first = result.final_obs[i], result.obs[i]
        if result.truncated[i]:
            truncations += 1
        elif result.life_loss[i] and not np.array_equal(final, next_first):
            game_overs += 1  # the last life: the game was reset
        else:
            # A life loss ends the episode but not the game: the next episode starts on the same frame.
            assert result.terminated[i] and result.life_loss[i]
            np.testing.assert_array_equal(final, next_first)
            life_losses += 1
    assert life_losses > 0 and truncations > 0 and game_overs > 0
    assert sum(stat.episode_return for stat in stats) > 0  # returns were actually checked


def test_lstm_state_is_reset_only_for_envs_whose_episode_ended() -> None:
    with make_collector("Breakout", 2) as collector:
        envs, actor_critic, _ = recorded(collector)
        collector.collect_steps(200)
    one_env_ended = 0
    for t, (_, hx, cx) in enumerate(actor_critic.calls):
        reset = np.ones(2, dtype=bool) if t == 0 else envs.results[t - 1].done
        one_env_ended += t > 0 and reset.sum() == 1
        for i in range(2):
            assert bool(hx[i].eq(0).all() and cx[i].eq(0).all()) == reset[i], f"step {t} env {i}"
    assert one_env_ended > 0


def run_test_episodes(num_episodes: int) -> tuple[list[EpisodeStats], Collector]:
    with make_collector("Breakout", 2, life_loss_terminal=False, max_frames=400, epsilon=0.0) as collector:
        return collector.collect_episodes(num_episodes), collector


def test_collect_episodes_plays_a_fixed_assignment_of_fresh_episodes() -> None:
    stats, collector = run_test_episodes(3)
    envs, _, dataset = recorded(collector)
    # Env 0 plays episodes 0 and 2, env 1 episode 1; a step of an env whose share is done is not counted.
    per_env = replay(envs.resets[0], envs.results, envs.actions)
    assert len(per_env[0]) == 2 and len(per_env[1]) >= 1
    expected = [per_env[0][0], per_env[1][0], per_env[0][1]]
    assert stats == [stats_of(episode) for episode in expected]
    assert {len(e) for e in expected} != {len(expected[0])}  # lengths vary, so the order is really checked
    assert dataset.num_episodes == collector.num_episodes_total == 3
    assert collector.num_steps_total == dataset.num_steps == sum(stat.length for stat in stats)
    stored_order = in_completion_order(per_env, envs.results, max_per_env=[2, 1])
    for episode, expected_episode in zip(stored_episodes(dataset), stored_order, strict=True):
        assert_same_episode(episode, expected_episode)
    # Test episodes run on after a life loss.
    assert any(result.life_loss.any() and not result.done.any() for result in envs.results)

    again, _ = run_test_episodes(3)
    assert again == stats


def test_collect_episodes_starts_fresh_each_call() -> None:
    with make_collector("Boxing", 1, life_loss_terminal=False, max_frames=200, epsilon=0.0) as collector:
        envs, _, _ = recorded(collector)
        collector.collect_steps(10)
        first = collector.collect_episodes(2)
        second = collector.collect_episodes(1)
        collector.collect_steps(5)
    assert len(envs.resets) == 4  # collect_steps, both collect_episodes, and collect_steps after them
    assert [stat.truncated for stat in first + second] == [True] * 3
    assert collector.num_episodes_total == 3  # the 10 steps cut by collect_episodes were dropped
    # ... from the collection: they stay stored, open. The test episodes are stored whole, the last 5 steps
    # open again.
    dataset = recorded(collector)[2]
    assert dataset.open_episode_ids == [0, 4] and dataset.lengths[[0, 4]].tolist() == [10, 5]


@pytest.mark.parametrize(("num_envs", "steps_before"), [(1, 0), (1, 36), (2, 80)])
def test_state_dict_resumes_collection_exactly(num_envs: int, steps_before: int) -> None:
    steps_after = 120 * num_envs
    with make_collector("Breakout", num_envs, max_frames=400) as original:
        original.collect_steps(steps_before)
        state = torch_roundtrip(original.state_dict())
        envs, _, dataset = recorded(original)
        dataset_then = copy_dataset(dataset)
        steps_seen = len(envs.results)
        expected_stats = original.collect_steps(steps_after)
        expected_episodes = stored_episodes(dataset)
        expected_open = dataset.open_episode_ids
        expected_results, expected_actions = envs.results[steps_seen:], envs.actions[steps_seen:]
        expected_counts = (original.num_steps_total, original.num_episodes_total)
    if steps_before:
        # Saved in the middle of episodes, whose steps so far are stored (open) in the dataset.
        assert all(episode_id is not None for episode_id in state["episode_ids"])
        assert all(dataset_then.is_open(episode_id) for episode_id in state["episode_ids"])

    # Other seeds everywhere: everything that matters must come from the state.
    with make_collector("Breakout", num_envs, max_frames=400, env_seed=7, generator_seed=7) as resumed:
        resumed.dataset = dataset_then
        resumed.load_state_dict(state)
        stats = resumed.collect_steps(steps_after)
        envs, _, dataset = recorded(resumed)
    assert stats == expected_stats
    assert any(stat.truncated for stat in stats) and any(stat.terminated for stat in stats)
    assert (resumed.num_steps_total, resumed.num_episodes_total) == expected_counts
    for got, expected in zip(envs.actions, expected_actions, strict=True):
        np.testing.assert_array_equal(got, expected)
    for t, (got, expected) in enumerate(zip(envs.results, expected_results, strict=True)):
        for name in ("obs", "reward", "terminated", "truncated", "final_obs", "life_loss"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=f"{name} {t}")
    assert dataset is dataset_then
    assert_dataset_is(dataset, expected_episodes, set(expected_open))


def test_state_dict_refuses_a_dataset_without_the_running_episodes() -> None:
    with make_collector("Breakout", 1) as original:
        original.collect_steps(20)
        state = torch_roundtrip(original.state_dict())
        other_dataset = copy_dataset(recorded(original)[2])
    with make_collector("Breakout", 1) as resumed:
        with pytest.raises(ValueError, match="does not hold open"):
            resumed.load_state_dict(state)  # its dataset is empty
        other_dataset.extend(0, make_steps(other_dataset.get_episode(0).obs[-1]), partial=True)
        resumed.dataset = other_dataset
        with pytest.raises(ValueError, match="does not end on the frame"):
            resumed.load_state_dict(state)


def make_steps(first_frame: np.ndarray) -> Episode:
    return Episode.from_steps(
        [first_frame, np.zeros_like(first_frame)], [0], [0.0], terminated=False, truncated=False
    )


def test_env_state_round_trip_continues_through_the_cap_and_resets() -> None:
    def play(env: Any, steps: int) -> list[tuple]:
        out = []
        for t in range(steps):
            obs, reward, terminated, truncated, info = env.step(t % 4)
            out.append((obs, reward, terminated, truncated, info["life_loss"], info["lives"]))
            if terminated or truncated:
                out.append((env.reset()[0],))  # its no-op count comes from the env's np_random
        return out

    env = make_atari_env("Breakout", seed=0, max_frames_per_episode=300)
    env.reset()
    play(env, 30)
    state = torch_roundtrip({"env": env.get_state()})["env"]
    expected = play(env, 150)
    other = make_atari_env("Breakout", seed=1, max_frames_per_episode=300)
    other.set_state(state)  # never reset: a fresh env can take a state directly
    got = play(other, 150)
    assert sum(len(step) == 1 for step in expected) >= 2  # went through the cap and reset twice
    for t, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y, err_msg=f"step {t}")


def test_untrained_policy_acts_uniformly() -> None:
    # 4 envs in one process: 4 draws per policy call, the cheapest way to many draws.
    with make_collector("Breakout", 4, epsilon=0.0, asynchronous=False) as collector:
        envs, _, _ = recorded(collector)
        collector.collect_steps(1_200)
    counts = np.bincount(np.concatenate(envs.actions), minlength=envs.num_actions)
    expected = 1_200 / envs.num_actions
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.27, counts  # p = 0.001 with 3 degrees of freedom; deterministic given the seeds


@pytest.mark.parametrize("max_steps", [3, 200])
def test_collect_episode_start_is_the_first_envs_episode_whole_or_cut(max_steps: int) -> None:
    with make_collector("Catch", 2, life_loss_terminal=False) as collector:
        envs, _, dataset = recorded(collector)
        episode = collector.collect_episode_start(max_steps)
        (whole, *_) = replay(envs.resets[-1], envs.results, envs.actions)[0] or [None]
        if whole is not None:  # the episode ended within max_steps: all of it, with its end
            assert len(episode) == len(whole) <= max_steps and episode.terminated[-1] == whole.terminated[-1]
            np.testing.assert_array_equal(episode.obs, whole.obs)
        else:  # cut after max_steps: the steps taken, open
            assert len(episode) == max_steps == len(envs.results)
            assert not episode.terminated[-1] and not episode.truncated[-1]
            np.testing.assert_array_equal(episode.obs[1:], [r.final_obs[0] for r in envs.results])
        np.testing.assert_array_equal(episode.act, [a[0] for a in envs.actions])
        assert dataset.num_episodes == 0 and collector.num_episodes_total == 0


def test_a_running_episode_is_held_in_few_arrays() -> None:
    # One array per frame fragmented the heap until a Krull test episode of 27,000 steps took 21 GB
    # (benchmarks/results/README.md); the running frames must sit in a few blocks.
    with make_collector("Boxing", 2, life_loss_terminal=False, max_frames=4000, epsilon=0.0) as collector:
        collector.dataset = None
        blocks: list[tuple[int, int, int]] = []
        act = collector.actor_critic.act

        def watching_act(*args: Any, **kwargs: Any) -> tuple[Tensor, LSTMState]:
            if collector._frames:
                frames = collector._frames[0]
                blocks.append((len(frames), frames.num_blocks, frames.nbytes))
            return act(*args, **kwargs)

        collector.actor_critic.act = watching_act  # type: ignore[method-assign]
        collector.collect_steps(2 * 600)
    num_frames, num_blocks, nbytes = max(blocks)
    assert num_frames == 600  # the episode ran on through all of them (Boxing lasts 2 minutes)
    assert num_blocks <= 11  # blocks of 1, 1, 2, 4, ... frames
    assert nbytes <= 2 * num_frames * 64 * 64 * 3
