"""Real-environment collection: the current policy steps the Atari envs and the stream becomes ``Episode``s.

The ``Collector`` keeps, per env, the steps of the running episode not stored yet (actions, raw rewards and
the frames from the last stored one) and the policy's LSTM state. As in the official code, ``collect_steps``
stores the running episodes at its end, so their steps so far are in the dataset (open episodes, sampled
like any others), and extends them in place at the next call; when an episode ends (game over, frame cap, or
a life loss in training mode) it is stored with its true final frame and closed, and the env's LSTM state
starts again from zero. Its ``state_dict`` holds everything the future of the collection depends on,
environments included, so a run resumed from a checkpoint takes the very same actions and sees the very same
frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffworld.config.schema import Config
from diffworld.data.episode import Episode
from diffworld.data.frame_chunks import FrameChunks
from diffworld.data.frames import frames_to_tensor
from diffworld.data.storage import EpisodeDataset
from diffworld.envs.from_config import seeded_envs
from diffworld.envs.vector import AtariEnvs
from diffworld.models.actor_critic import ActorCritic


@dataclass(frozen=True)
class EpisodeStats:
    """Summary of one completed episode."""

    episode_return: float
    """Sum of the raw (unclipped) rewards."""
    length: int
    """Agent steps."""
    terminated: bool
    """Game over, or a life loss when the envs treat it as terminal."""
    truncated: bool
    """The frame cap was reached."""


class Collector:
    """Steps ``envs`` with ``actor_critic`` in the loop and stores the episodes in ``dataset``.

    Observations reach the policy as float (n, 3, H, W) in [-1, 1], all envs in one call. Every random draw
    goes through ``generator`` (on ``device``) and the envs' own seeded generators, so collection is
    reproducible from the seeds and resumable with ``state_dict`` / ``load_state_dict``.

    Args:
        envs: the environments; training collection uses ``life_loss_terminal=True``, test episodes False.
        actor_critic: the policy, used as it is at each step (the trainer updates it between calls).
        epsilon: probability of a uniformly random action instead of a sampled one.
        temperature: of the policy's action sampling (docs/method.md §5, Freeway).
        device: where the policy runs.
        generator: torch generator on ``device`` for the action draws.
        dataset: where the episodes go (see ``collect_steps`` and ``collect_episodes``); None keeps only the
            stats of the completed ones.
    """

    def __init__(
        self,
        envs: AtariEnvs,
        actor_critic: ActorCritic,
        *,
        epsilon: float,
        temperature: float,
        device: torch.device,
        generator: torch.Generator,
        dataset: EpisodeDataset | None,
    ) -> None:
        self.envs = envs
        self.actor_critic = actor_critic
        self.epsilon = epsilon
        self.temperature = temperature
        self.device = device
        self.generator = generator
        self.dataset = dataset
        self.num_steps_total = 0
        self.num_episodes_total = 0
        # Per env, the steps of the running episode not in the dataset yet: the frames from the last one
        # stored (the episode's first if none is), actions, rewards. Empty lists until the envs are first
        # reset (``_started``). The frames go into blocks, not one array each: see FrameChunks.
        self._frames: list[FrameChunks] = []
        # Indices, or (D,) float32 vectors of a continuous game.
        self._actions: list[list[Any]] = []
        self._rewards: list[list[float]] = []
        # Per env, the dataset id of the running episode once its first steps are stored (it is open there).
        self._episode_ids: list[int | None] = []
        self._hx_cx: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def _started(self) -> bool:
        return bool(self._frames)

    def collect_steps(self, num_steps: int) -> list[EpisodeStats]:
        """Take exactly ``num_steps`` agent steps in all, continuing the running episodes.

        The envs advance together, so ``num_steps`` must be a multiple of the number of envs (each env takes
        ``num_steps / n`` steps). Returns the stats of the episodes completed meanwhile, in order of
        completion (envs in index order within a step); episodes still running go on at the next call.

        With a dataset, as in the official collector: an episode that ends is stored (closed) at once, under
        the id its first stored steps took; at the last step, each env's running episode is stored too
        (envs in index order, among the episodes that end at that step): a new open episode, or the steps
        since its last storage appended to it. So every step taken is in the dataset when this returns, and
        ids follow the order in which episodes were first stored.
        """
        n = self.envs.num_envs
        if num_steps < 0 or num_steps % n != 0:
            raise ValueError(
                f"num_steps must be a non-negative multiple of the number of envs ({n}), got {num_steps}: "
                f"all envs step together, so any other total would take steps that are not counted"
            )
        if not self._started:
            self._start()
        stats = []
        all_active = np.ones(n, dtype=bool)
        num_calls = num_steps // n
        for call in range(num_calls):
            ended = self._step(all_active)
            for i, episode in enumerate(ended):
                if episode is not None:
                    stats.append(self._record(i, episode))
                elif call == num_calls - 1 and self.dataset is not None:
                    self._store_running(i, self.dataset)
        return stats

    def collect_episodes(self, num_episodes: int) -> list[EpisodeStats]:
        """Reset every env and play until ``num_episodes`` fresh episodes are complete (test episodes).

        Episode ``k`` is the ``k // n``-th episode of env ``k % n``: the episodes are fixed before they are
        played, so short episodes are not over-represented, as they would be by keeping the first
        ``num_episodes`` to finish. An env whose share is done keeps stepping (the envs step together) but
        its further steps are neither counted nor stored. Returns the stats in order of ``k``; the episodes
        go to ``dataset`` in order of completion, whole (never open). Running episodes are dropped at the
        start (any stored steps of theirs stay, open, in the dataset), and none is left running at the end:
        the next ``collect_steps`` starts from a reset.
        """
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        n = self.envs.num_envs
        self._start()
        remaining = np.array([len(range(i, num_episodes, n)) for i in range(n)])
        per_env: list[list[EpisodeStats]] = [[] for _ in range(n)]
        while remaining.any():
            for i, episode in enumerate(self._step(remaining > 0)):
                if episode is not None:
                    per_env[i].append(self._record(i, episode))
                    remaining[i] -= 1
        self._frames, self._actions, self._rewards, self._episode_ids, self._hx_cx = [], [], [], [], None
        return [per_env[k % n][k // n] for k in range(num_episodes)]

    def collect_episode_start(self, max_steps: int) -> Episode:
        """Reset every env and play the first env's fresh episode until it ends or ``max_steps`` steps are
        taken; return its steps (whole, or cut there, neither terminated nor truncated). Nothing is stored
        or counted as an episode; the next collection starts from a reset."""
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self._start()
        only_first = np.arange(self.envs.num_envs) == 0
        episode = None
        for _ in range(max_steps):
            episode = self._step(only_first)[0]
            if episode is not None:
                break
        if episode is None:
            episode = Episode.from_steps(
                self._frames[0].array(),
                self._episode_actions(0),
                self._rewards[0],
                terminated=False,
                truncated=False,
            )
        self._frames, self._actions, self._rewards, self._episode_ids, self._hx_cx = [], [], [], [], None
        return episode

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue collecting exactly from here, envs included.

        Only tensors, python scalars, str, bytes, None, lists and dicts, so that it loads with
        ``torch.load(weights_only=True)``. The policy's weights and the dataset are not part of it.
        """
        return {
            "num_steps_total": self.num_steps_total,
            "num_episodes_total": self.num_episodes_total,
            "frames": [torch.from_numpy(frames.array()) for frames in self._frames],
            "actions": [self._actions_tensor(actions) for actions in self._actions],
            "rewards": [torch.tensor(rewards, dtype=torch.float32) for rewards in self._rewards],
            "episode_ids": list(self._episode_ids),
            "hx_cx": None if self._hx_cx is None else [state.cpu() for state in self._hx_cx],
            "generator": self.generator.get_state(),
            "envs": self.envs.get_states(),
        }

    def _actions_tensor(self, actions: list[Any]) -> torch.Tensor:
        if not self.envs.continuous:
            return torch.tensor(actions, dtype=torch.int64)
        return torch.from_numpy(np.asarray(actions, np.float32).reshape(len(actions), self.envs.num_actions))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` into this collector, whose envs must have the same game and settings.

        The dataset must hold what it held when the state was saved: the running episodes' stored steps.
        """
        if len(state["envs"]) != self.envs.num_envs:
            raise ValueError(f"the state has {len(state['envs'])} envs, this collector {self.envs.num_envs}")
        self.envs.set_states(state["envs"])
        self.generator.set_state(state["generator"])
        self.num_steps_total = int(state["num_steps_total"])
        self.num_episodes_total = int(state["num_episodes_total"])
        self._frames = [FrameChunks.from_array(frames.numpy()) for frames in state["frames"]]
        continuous = self.envs.continuous
        self._actions = [list(a.numpy()) if continuous else a.tolist() for a in state["actions"]]
        self._rewards = [rewards.tolist() for rewards in state["rewards"]]
        # States saved before running episodes were stored hold them whole, from their first frame.
        self._episode_ids = [
            None if i is None else int(i) for i in state.get("episode_ids", [None] * len(self._frames))
        ]
        self._check_stored_steps()
        hx_cx = state["hx_cx"]
        self._hx_cx = None if hx_cx is None else (hx_cx[0].to(self.device), hx_cx[1].to(self.device))

    def _start(self) -> None:
        """Reset every env and begin fresh episodes with a zero LSTM state."""
        obs = self.envs.reset()
        n = self.envs.num_envs
        self._frames = [FrameChunks(obs[i]) for i in range(n)]
        self._actions = [[] for _ in range(n)]
        self._rewards = [[] for _ in range(n)]
        self._episode_ids = [None] * n
        self._hx_cx = self.actor_critic.initial_state(n, self.device)

    def _step(self, active: np.ndarray) -> list[Episode | None]:
        """One policy call and one step of every env; per env, the unstored steps of its episode if it ended.

        Those steps end the episode (whole if none was stored before); None for the others. Inactive envs
        keep only their current frame; their steps are not counted.
        """
        obs = np.stack([frames.last for frames in self._frames])
        obs_t = frames_to_tensor(obs, self.device)
        actions_t, (hx, cx) = self.actor_critic.act(
            obs_t, self._hx_cx, self.epsilon, self.temperature, self.generator
        )
        actions = actions_t.cpu().numpy()
        result = self.envs.step(actions)
        done_t = torch.from_numpy(result.done).to(self.device)[:, None]
        self._hx_cx = (hx.masked_fill(done_t, 0), cx.masked_fill(done_t, 0))

        ended: list[Episode | None] = [None] * self.envs.num_envs
        for i in range(self.envs.num_envs):
            next_obs = result.obs[i]
            if not active[i]:
                self._frames[i] = FrameChunks(next_obs)
                continue
            self.num_steps_total += 1
            self._frames[i].append(result.final_obs[i])
            self._actions[i].append(actions[i].copy() if self.envs.continuous else int(actions[i]))
            self._rewards[i].append(float(result.reward[i]))
            if result.done[i]:
                episode = Episode.from_steps(
                    self._frames[i].array(),
                    self._episode_actions(i),
                    self._rewards[i],
                    terminated=bool(result.terminated[i]),
                    truncated=bool(result.truncated[i]),
                )
                ended[i] = episode
                # After a life loss (training mode) the game goes on: next_obs is the final frame again.
                self._frames[i], self._actions[i], self._rewards[i] = FrameChunks(next_obs), [], []
        return ended

    def _episode_actions(self, env: int) -> list[Any] | np.ndarray:
        """The unstored actions of ``env``: a list of indices, or (T, D) float32 for a continuous game."""
        if not self.envs.continuous:
            return self._actions[env]
        return self._actions_tensor(self._actions[env]).numpy()

    def _record(self, env: int, steps: Episode) -> EpisodeStats:
        """Store the ended episode of ``env``, whose unstored steps are ``steps``; return its stats."""
        episode_id, self._episode_ids[env] = self._episode_ids[env], None
        episode = steps
        if self.dataset is not None:
            if episode_id is None:
                episode_id = self.dataset.add(steps)
            else:
                self.dataset.extend(episode_id, steps)
            episode = self.dataset.get_episode(episode_id)
        self.num_episodes_total += 1
        return EpisodeStats(
            episode_return=float(episode.rew.sum(dtype=np.float64)),
            length=len(episode),
            terminated=bool(episode.terminated[-1]),
            truncated=bool(episode.truncated[-1]),
        )

    def _store_running(self, env: int, dataset: EpisodeDataset) -> None:
        """Store the steps of ``env``'s running episode taken since it was last stored; it stays open."""
        if not self._actions[env]:
            return
        steps = Episode.from_steps(
            self._frames[env].array(),
            self._episode_actions(env),
            self._rewards[env],
            terminated=False,
            truncated=False,
        )
        episode_id = self._episode_ids[env]
        if episode_id is None:
            self._episode_ids[env] = dataset.add(steps, partial=True)
        else:
            dataset.extend(episode_id, steps, partial=True)
        self._frames[env] = FrameChunks(self._frames[env].last)
        self._actions[env], self._rewards[env] = [], []

    def _check_stored_steps(self) -> None:
        """Each running episode with stored steps is open in the dataset, on the frame it goes on from."""
        for env, episode_id in enumerate(self._episode_ids):
            if episode_id is None:
                continue
            dataset = self.dataset
            if dataset is None or not (
                0 <= episode_id < dataset.num_episodes and dataset.is_open(episode_id)
            ):
                raise ValueError(
                    f"env {env}'s running episode is stored as episode {episode_id}, which the dataset does "
                    f"not hold open: restore the dataset that was saved with this state"
                )
            if not np.array_equal(dataset.get_episode(episode_id).obs[-1], self._frames[env].first):
                raise ValueError(
                    f"episode {episode_id} in the dataset does not end on the frame where env {env}'s "
                    f"running episode goes on: restore the dataset that was saved with this state"
                )


@torch.no_grad()
def collect_real_episode(
    actor_critic: ActorCritic, cfg: Config, num_steps: int, seed: int, device: torch.device
) -> tuple[Episode, list[str]]:
    """Play up to ``num_steps`` steps of a fresh test episode (no life-loss ends) with the policy, as the
    test episodes are played, in one env seeded with ``seed``; returns the episode (cut where it stops) and
    the game's action names."""
    envs = seeded_envs(cfg, 1, seed, life_loss_terminal=False, asynchronous=False)
    with envs:
        collector = Collector(
            envs,
            actor_critic,
            epsilon=cfg.collection.test_epsilon,
            temperature=cfg.policy_temperature(),
            device=device,
            generator=torch.Generator(device).manual_seed(seed),
            dataset=None,
        )
        return collector.collect_episode_start(num_steps), envs.action_meanings
