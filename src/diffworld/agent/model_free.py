"""The model-free baseline (``training.model_free=true``): the actor-critic trained on the real game.

Same loss as in imagination (docs/method.md §5: lambda-returns, REINFORCE with the value baseline, entropy
bonus), on rollouts of ``actor_critic.imagination_horizon`` steps of ``actor_critic.training.batch_size`` real
Atari environments stepped in parallel, through the very loop imagination uses (``agent/rollout.py``). The
real environments are treated exactly as imagined ones are:

- rewards enter the returns as ``sign(r)`` (with ``reward_model.reward_kind=value``: as they are, as the
  reward model's predicted values do in imagination);
- an episode ends at game over and, as in training collection, at a life loss (the game goes on, the next
  episode starts from that frame); termination zeroes the bootstrap;
- the episode cap truncates: bootstrapped with the critic's value of the true final frame
  (``StepResult.final_obs``), computed with the recurrent state the episode had reached;
- actions are sampled from ``softmax(logits)`` (no epsilon, no temperature: on-policy, as in imagination).

Unlike imagined rollouts, real ones continue each other: episodes span rollouts, and the policy's LSTM
state carries over from one rollout to the next (detached: gradients stay within a rollout) and starts from
zero at every new episode, as in collection. Every step taken here is real interaction and counts toward
the run's budget: ``ModelFreeActorCriticLoss`` never takes more than ``max_env_steps`` in all.
``RealEnvRollouts.state_dict`` holds everything their future depends on, the emulators included, so a run
resumed from a checkpoint continues exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from diffworld.agent.collector import EpisodeStats
from diffworld.agent.rollout import EnvStep, rollout
from diffworld.config.schema import ActorCriticConfig
from diffworld.data.batch import Batch
from diffworld.data.frames import frames_to_tensor
from diffworld.envs.vector import AtariEnvs
from diffworld.models.actor_critic import ActorCritic, LSTMState, actor_critic_loss


class RealEnvRollouts:
    """``PolicyEnv`` over real Atari environments whose rollouts continue each other (resumable).

    The first ``start`` resets the envs; later ones continue from the observation and recurrent state the
    previous rollout stopped at. ``num_steps_total`` counts agent steps (``num_envs`` per ``step``), and
    ``episodes`` collects the stats of completed episodes (raw returns) until ``pop_episodes``.

    Args:
        envs: training-mode environments (``life_loss_terminal=True``), one per trajectory of a rollout.
        device: where the policy runs.
        generator: torch generator on ``device`` for the action draws.
        clip_rewards: the steps' rewards are ``sign(r)`` (``reward_model.reward_kind=sign``), else ``r``.
    """

    def __init__(
        self, envs: AtariEnvs, device: torch.device, generator: torch.Generator, clip_rewards: bool = True
    ) -> None:
        self.envs = envs
        self.device = device
        self._generator = generator
        self.clip_rewards = clip_rewards
        self.num_steps_total = 0
        self.num_episodes_total = 0
        self.episodes: list[EpisodeStats] = []
        n = envs.num_envs
        self._obs: np.ndarray | None = None  # (n, H, W, 3) uint8 to act on next; None until the first reset
        self._state: LSTMState | None = None  # recurrent state to act on _obs with
        self._returns = np.zeros(n, dtype=np.float64)  # raw return of each running episode
        self._lengths = np.zeros(n, dtype=np.int64)
        self._done = np.zeros(n, dtype=bool)  # episodes that ended at the last step

    @property
    def num_envs(self) -> int:
        return self.envs.num_envs

    @property
    def generator(self) -> torch.Generator:
        return self._generator

    def start(self, actor_critic: ActorCritic) -> tuple[Tensor, LSTMState]:
        if self._obs is None or self._state is None:
            self._obs = self.envs.reset()
            self._state = actor_critic.initial_state(self.num_envs, self.device)
            self._returns[:] = 0
            self._lengths[:] = 0
        return frames_to_tensor(self._obs, self.device), self._state

    def step(self, act: Tensor) -> EnvStep:
        if self._obs is None:
            raise RuntimeError("call start() before step()")
        result = self.envs.step(act.cpu().numpy())
        self.num_steps_total += self.num_envs
        self._returns += result.reward
        self._lengths += 1
        for i in np.flatnonzero(result.done):
            self.episodes.append(
                EpisodeStats(
                    episode_return=float(self._returns[i]),
                    length=int(self._lengths[i]),
                    terminated=bool(result.terminated[i]),
                    truncated=bool(result.truncated[i]),
                )
            )
            self.num_episodes_total += 1
            self._returns[i], self._lengths[i] = 0, 0
        self._obs = result.obs
        self._done = result.done
        obs = frames_to_tensor(result.obs, self.device)
        end = torch.from_numpy(result.terminated).to(self.device)
        return EnvStep(
            obs=obs,
            rew=torch.from_numpy(np.sign(result.reward) if self.clip_rewards else result.reward).to(
                self.device
            ),
            end=end,
            trunc=torch.from_numpy(result.truncated).to(self.device) & ~end,
            final_obs=frames_to_tensor(result.final_obs, self.device) if result.done.any() else obs,
        )

    def restart(self, actor_critic: ActorCritic, state: LSTMState, s: EnvStep, rows: Tensor) -> LSTMState:
        # A new episode starts from its first frame with a zero state (no history to burn in on).
        mask = torch.zeros(self.num_envs, 1, dtype=torch.bool, device=state[0].device)
        mask[rows] = True
        return state[0].masked_fill(mask, 0), state[1].masked_fill(mask, 0)

    def stop(self, state: LSTMState) -> None:
        # The rollout skipped restart() at its last step: the episodes that ended there start now.
        h, c = state
        if self._done.any():
            mask = torch.from_numpy(self._done).to(h.device)[:, None]
            h, c = h.masked_fill(mask, 0), c.masked_fill(mask, 0)
        self._state = (h.detach(), c.detach())
        self._done = np.zeros(self.num_envs, dtype=bool)

    def pop_episodes(self) -> list[EpisodeStats]:
        """The episodes completed since the last call, in order of completion (envs in index order)."""
        episodes, self.episodes = self.episodes, []
        return episodes

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here, envs included (loads with ``weights_only``).

        Taken between rollouts (``stop`` was called): the policy's weights are not part of it.
        """
        return {
            "num_steps_total": self.num_steps_total,
            "num_episodes_total": self.num_episodes_total,
            "episodes": [[s.episode_return, s.length, s.terminated, s.truncated] for s in self.episodes],
            "obs": None if self._obs is None else torch.from_numpy(self._obs.copy()),
            "state": None if self._state is None else [x.cpu() for x in self._state],
            "returns": torch.from_numpy(self._returns.copy()),
            "lengths": torch.from_numpy(self._lengths.copy()),
            "generator": self._generator.get_state(),
            "envs": self.envs.get_states(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` into rollouts whose envs have the same game, settings and number."""
        if len(state["envs"]) != self.num_envs:
            raise ValueError(f"the state has {len(state['envs'])} envs, these rollouts {self.num_envs}")
        self.envs.set_states(state["envs"])
        self._generator.set_state(state["generator"])
        self.num_steps_total = int(state["num_steps_total"])
        self.num_episodes_total = int(state["num_episodes_total"])
        self.episodes = [
            EpisodeStats(float(r), int(n), bool(term), bool(trunc)) for r, n, term, trunc in state["episodes"]
        ]
        self._obs = None if state["obs"] is None else state["obs"].numpy().copy()
        hx_cx = state["state"]
        self._state = None if hx_cx is None else (hx_cx[0].to(self.device), hx_cx[1].to(self.device))
        self._returns = state["returns"].numpy().astype(np.float64, copy=True)
        self._lengths = state["lengths"].numpy().astype(np.int64, copy=True)
        self._done = np.zeros(self.num_envs, dtype=bool)


class ModelFreeActorCriticLoss(nn.Module):
    """``forward() -> (loss, metrics)`` for the actor-critic: one real rollout, then docs/method.md §5's loss.

    Each call takes ``imagination_horizon`` steps of every env (``num_envs * H`` agent steps), fewer on the
    last call if that is all ``max_env_steps`` leaves, and none once it is spent (``forward`` then raises).
    So the rollouts take exactly ``max_env_steps`` steps in all when it is a multiple of ``num_envs``, and
    the largest multiple below it otherwise. Only the actor-critic's parameters are registered.
    """

    def __init__(
        self, actor_critic: ActorCritic, env: RealEnvRollouts, cfg: ActorCriticConfig, max_env_steps: int
    ) -> None:
        super().__init__()
        self.actor_critic = actor_critic
        self.env = env
        self.cfg = cfg
        self.max_env_steps = max_env_steps

    @property
    def steps_left(self) -> int:
        """Agent steps the rollouts may still take (a multiple of ``num_envs``)."""
        n = self.env.num_envs
        return max(0, self.max_env_steps - self.env.num_steps_total) // n * n

    @property
    def rollouts_left(self) -> int:
        """Calls of ``forward`` the budget still funds."""
        per_rollout = self.env.num_envs * self.cfg.imagination_horizon
        return -(-self.steps_left // per_rollout)

    def forward(self, batch: Batch | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``batch`` is ignored (the rollouts draw their own real data); accepted for the common contract."""
        horizon = min(self.cfg.imagination_horizon, self.steps_left // self.env.num_envs)
        if horizon < 1:
            raise RuntimeError(f"the real-step budget ({self.max_env_steps} agent steps) is spent")
        r = rollout(self.actor_critic, self.env, horizon)
        return actor_critic_loss(
            r.logits,
            r.values,
            r.actions,
            r.rew,
            r.end,
            r.trunc,
            r.next_values,
            self.cfg,
            policy=self.actor_critic.policy,
            return_scale=self.actor_critic.return_scale,
            clip_rewards=self.env.clip_rewards,
        )


class RealRolloutBatches:
    """The actor-critic's batch source in the model-free baseline: one real rollout per batch.

    ``loss`` takes each rollout itself (``sample`` returns None), as many as the real-step budget funds.
    The trainer reads the real steps taken, the episodes completed and the state to checkpoint from here.
    """

    uses_world_model = False

    def __init__(self, loss: ModelFreeActorCriticLoss) -> None:
        self.loss = loss

    def sample(self) -> None:
        return None

    def batches_left(self) -> int:
        return self.loss.rollouts_left

    @property
    def num_env_steps(self) -> int:
        return self.loss.env.num_steps_total

    def pop_episodes(self) -> list[EpisodeStats]:
        return self.loss.env.pop_episodes()

    def state_dict(self) -> dict[str, Any]:
        return self.loss.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss.env.load_state_dict(state)

    def close(self) -> None:
        self.loss.env.envs.close()
