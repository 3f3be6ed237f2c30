"""Imagination: a batched environment simulated by the world model, and the actor-critic trained in it.

``WorldModelEnv`` steps B imagined trajectories at once, in torch: each starts from L real frames and
L-1 real actions drawn from the dataset (the reward/termination LSTM is burnt in on them), every step
makes ONE batched denoiser call per denoising step, terminations are sampled from the predicted
categoricals, rewards too (their sign), or with ``reward_model.reward_kind=value`` predicted (the value, no
draw), trajectories are truncated at the horizon, and finished ones restart from new dataset segments on
the spot. ``ImaginationVectorEnv`` exposes it with Gymnasium's vector-environment
API (numpy, uint8 frames like the real Atari environments) so that other agents can train inside a
world model; ``ImaginationEnv`` is the single-trajectory view that Gymnasium's checker accepts.

``ImaginationActorCriticLoss`` rolls the policy out for H steps (``agent/rollout.py``, the loop shared with
the real-environment baseline of ``agent/model_free.py``) and returns the docs/method.md §5 loss, with the
``forward(batch) -> (loss, metrics)`` contract shared by all models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor, nn

from diffworld.agent.rollout import EnvStep, Rollout, rollout
from diffworld.config.schema import ActorCriticConfig, RewardKind, SamplerConfig
from diffworld.data.actions import ActionSpec, action_spec_of, is_index_spec
from diffworld.data.batch import Batch
from diffworld.data.frames import tensor_to_frames
from diffworld.data.segment_sampler import SegmentSampler
from diffworld.envs.continuous import check_box_action
from diffworld.models.actor_critic import ActorCritic, LSTMState, actor_critic_loss
from diffworld.models.diffusion import Denoiser
from diffworld.models.reward_termination import RewardTerminationModel


@dataclass(frozen=True)
class ImaginedStep(EnvStep):
    """What one step of B imagined trajectories returns (all tensors on the world model's device).

    ``obs``: the frame to act on next (a restarted trajectory's first where one ended); ``rew``: sampled
    sign of the reward (``reward_model.reward_kind`` ``sign``) or its predicted value (``value``); ``end``:
    the termination model ended the trajectory; ``trunc``: it reached the horizon; ``final_obs``: the
    imagined frame this step reached (differs from ``obs`` where end | trunc).
    """

    history: Tensor
    """(B, L-1, 3, H, W): the frames before ``obs``; a recurrent agent burns in on them after a restart."""
    history_mask: Tensor
    """(B, L-1) bool: which history frames are real (segments may start before their episode)."""


def _sample_categorical(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


class WorldModelEnv:
    """B trajectories imagined at once by a denoiser and a reward/termination model (no gradients).

    ``segments`` draws the starting segments: ``seq_length = L - 1`` steps, i.e. L frames and L-1 actions;
    the agent's action completes the L actions the denoiser conditions on.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        reward_model: RewardTerminationModel,
        segments: SegmentSampler,
        sampler_cfg: SamplerConfig,
        horizon: int,
        generator: torch.Generator | None = None,
    ) -> None:
        num_cond = denoiser.cfg.num_cond_frames
        if segments.seq_length != num_cond - 1:
            raise ValueError(
                f"the sampler must draw segments of num_cond_frames - 1 = {num_cond - 1} steps, "
                f"got seq_length={segments.seq_length}"
            )
        self.denoiser = denoiser
        self.reward_model = reward_model
        self.segments = segments
        self.sampler_cfg = sampler_cfg
        self.frame_sampler = denoiser.sampler(sampler_cfg)
        self.horizon = horizon
        self.generator = generator
        self.num_envs = segments.batch_size
        self.num_cond = num_cond
        self._obs: Tensor | None = None  # (B, L, 3, H, W) the last L frames
        self._frame_mask: Tensor | None = None  # (B, L) which of them are real
        self._act: Tensor | None = None  # (B, L) actions; the last slot is filled by step()
        self._rew_state: tuple[Tensor, Tensor] | None = None  # LSTM (h, c), each (1, B, D)
        self._t: Tensor | None = None  # (B,) steps since each trajectory started

    @property
    def device(self) -> torch.device:
        return self.segments.device

    @torch.no_grad()
    def reset(self, batch: Batch | None = None) -> ImaginedStep:
        """Start all B trajectories, from ``batch`` (L-1 step segments) or from new dataset segments."""
        batch = self.segments.sample() if batch is None else batch
        b, frames = batch.obs.shape[:2]
        if b != self.num_envs or frames != self.num_cond:
            raise ValueError(f"need a batch of {self.num_envs} segments of {self.num_cond} frames")
        self._obs = batch.obs.clone()
        self._frame_mask = batch.frame_mask.clone()
        # (B, L) indices, or (B, L, D) action vectors of continuous actions.
        act_shape = (b, self.num_cond, *batch.act.shape[2:])
        self._act = torch.zeros(act_shape, dtype=batch.act.dtype, device=self.device)
        self._act[:, :-1] = batch.act
        self._t = torch.zeros(b, dtype=torch.long, device=self.device)
        self._rew_state = self._burn_in_reward_model(batch)
        obs = self._obs[:, -1]
        zeros = torch.zeros(b, dtype=torch.bool, device=self.device)
        return ImaginedStep(
            obs=obs,
            rew=zeros.float(),
            end=zeros,
            trunc=zeros,
            final_obs=obs,
            history=self._obs[:, :-1],
            history_mask=self._frame_mask[:, :-1],
        )

    def _burn_in_reward_model(self, batch: Batch) -> tuple[Tensor, Tensor]:
        # Padding steps (segments starting before their episode) leave the state alone, as in training.
        _, _, state = self.reward_model.predict(
            batch.obs[:, :-1], batch.act, batch.obs[:, 1:], None, mask=batch.step_mask
        )
        return state

    @torch.no_grad()
    def step(self, act: Tensor) -> ImaginedStep:
        """Advance every trajectory by one step with actions ``act`` ((B,) indices, or (B, D) action vectors
        in [-1, 1] for continuous actions) and restart the finished ones."""
        if self._obs is None or self._act is None or self._t is None or self._frame_mask is None:
            raise RuntimeError("call reset() before step()")
        self._act[:, -1] = act
        next_obs = self.frame_sampler.predict_next(self._obs, self._act, generator=self.generator)
        logits_rew, logits_end, self._rew_state = self.reward_model.predict(
            self._obs[:, -1:], act[:, None], next_obs[:, None], self._rew_state
        )
        rew = self.reward_model.sample_reward(logits_rew[:, 0], self.generator)
        end = _sample_categorical(logits_end[:, 0], self.generator).bool()
        self._t += 1
        trunc = (self._t >= self.horizon) & ~end

        # Slide the conditioning window by one frame; the last action slot is filled by the next step().
        self._obs = torch.cat([self._obs[:, 1:], next_obs[:, None]], dim=1)
        self._frame_mask = torch.cat([self._frame_mask[:, 1:], self._frame_mask[:, -1:]], dim=1)
        self._act = torch.cat([self._act[:, 1:], self._act[:, -1:]], dim=1)

        done = end | trunc
        if done.any():
            self._restart(done.nonzero().squeeze(1))
        return ImaginedStep(
            obs=self._obs[:, -1],
            rew=rew,
            end=end,
            trunc=trunc,
            final_obs=next_obs,
            history=self._obs[:, :-1],
            history_mask=self._frame_mask[:, :-1],
        )

    def _restart(self, idx: Tensor) -> None:
        assert self._obs is not None and self._act is not None and self._t is not None
        assert self._frame_mask is not None and self._rew_state is not None
        batch = self.segments.sample(batch_size=len(idx))
        self._obs[idx] = batch.obs
        self._frame_mask[idx] = batch.frame_mask
        self._act[idx, :-1] = batch.act
        self._t[idx] = 0
        h, c = self._burn_in_reward_model(batch)
        self._rew_state[0][:, idx] = h
        self._rew_state[1][:, idx] = c


def _reseed(env: WorldModelEnv, seed: int) -> None:
    env.segments.rng = np.random.default_rng(seed)
    if env.generator is not None:
        env.generator.manual_seed(seed)


def action_space_of(actions: int | ActionSpec) -> gym.spaces.Space[Any]:
    """The Gymnasium space of the agent's actions: ``Discrete(n)``, or a ``Box`` in [-1, 1]^D."""
    spec = action_spec_of(actions)
    if is_index_spec(spec):
        return gym.spaces.Discrete(spec.components[0].n)  # type: ignore[union-attr]
    return gym.spaces.Box(-1.0, 1.0, (spec.width,), np.float32)


def _actions_tensor(
    space: gym.spaces.Space[Any], actions: Any, num_envs: int, device: torch.device
) -> Tensor:
    """``num_envs`` actions for ``WorldModelEnv.step``: int64 indices, or float32 vectors checked like a real
    continuous env's (a one-line ``InvalidActionError`` for NaN, a wrong shape or a value outside [-1, 1])."""
    if not isinstance(space, gym.spaces.Box):
        return torch.as_tensor(np.asarray(actions), dtype=torch.long, device=device)
    shape = (num_envs, *space.shape)
    low = np.broadcast_to(space.low.astype(np.float32), shape)
    high = np.broadcast_to(space.high.astype(np.float32), shape)
    return torch.as_tensor(check_box_action(actions, low, high, "the world model"), device=device)


class ImaginationVectorEnv(gym.vector.VectorEnv):
    """Gymnasium vector-environment API over a ``WorldModelEnv``: uint8 (n, H, W, 3) frames, raw actions
    (indices, or vectors in [-1, 1]^D for continuous actions).

    Finished trajectories restart in the same step (``AutoresetMode.SAME_STEP``): ``obs`` is the new
    trajectory's first frame and ``info["final_obs"]`` the imagined frame the finished one reached.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012 (Gymnasium's convention)

    def __init__(self, world_model_env: WorldModelEnv, actions: int | ActionSpec) -> None:
        self.core = world_model_env
        self.num_envs = world_model_env.num_envs
        size = world_model_env.segments.dataset.frame_shape
        self.single_observation_space = gym.spaces.Box(0, 255, size, dtype=np.uint8)
        self.single_action_space = action_space_of(actions)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            _reseed(self.core, seed if isinstance(seed, int) else int(seed[0]))
        return tensor_to_frames(self.core.reset().obs), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        act = _actions_tensor(self.single_action_space, actions, self.num_envs, self.core.device)
        s = self.core.step(act)
        done = (s.end | s.trunc).cpu().numpy()
        info = {"final_obs": tensor_to_frames(s.final_obs), "_final_obs": done}
        rew = s.rew.cpu().numpy().astype(np.float32)
        return tensor_to_frames(s.obs), rew, s.end.cpu().numpy(), s.trunc.cpu().numpy(), info


class ImaginationEnv(gym.Env[np.ndarray, Any]):
    """One imagined trajectory with the plain Gymnasium API (the world-model environment of batch size 1)."""

    metadata = {"render_modes": []}  # noqa: RUF012 (Gymnasium's convention)

    def __init__(self, world_model_env: WorldModelEnv, actions: int | ActionSpec) -> None:
        if world_model_env.num_envs != 1:
            raise ValueError("ImaginationEnv steps one trajectory: build its WorldModelEnv with batch size 1")
        self.core = world_model_env
        size = world_model_env.segments.dataset.frame_shape
        self.observation_space = gym.spaces.Box(0, 255, size, dtype=np.uint8)
        self.action_space = action_space_of(actions)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            _reseed(self.core, seed)
        return tensor_to_frames(self.core.reset().obs[0]), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if isinstance(self.action_space, gym.spaces.Box):
            act = _actions_tensor(self.action_space, np.asarray(action)[None], 1, self.core.device)
        else:
            act = torch.tensor([int(action)], dtype=torch.long, device=self.core.device)
        s = self.core.step(act)
        # A finished trajectory reports the frame it reached; the caller resets, as with any gym.Env.
        return tensor_to_frames(s.final_obs[0]), float(s.rew[0]), bool(s.end[0]), bool(s.trunc[0]), {}


def _burn_in_rows(actor_critic: ActorCritic, state: LSTMState, s: ImaginedStep, rows: Tensor) -> LSTMState:
    """Replace the recurrent state of ``rows`` by one burnt in on their new trajectories' history."""
    h_new, c_new = actor_critic.burn_in(s.history[rows], s.history_mask[rows])
    h, c = state
    h, c = h.clone(), c.clone()
    h[rows], c[rows] = h_new, c_new
    return h, c


class _WorldModelPolicyEnv:
    """``PolicyEnv`` view of a ``WorldModelEnv`` for one rollout from the segments in ``batch``.

    The recurrent state is burnt in on the segments' frames, and on the history of every trajectory that
    restarts from a new segment; nothing carries over to the next rollout.
    """

    def __init__(self, env: WorldModelEnv, batch: Batch) -> None:
        self.env = env
        self.batch = batch

    @property
    def generator(self) -> torch.Generator | None:
        return self.env.generator

    def start(self, actor_critic: ActorCritic) -> tuple[Tensor, LSTMState]:
        s = self.env.reset(self.batch)
        return s.obs, actor_critic.burn_in(s.history, s.history_mask)

    def step(self, act: Tensor) -> ImaginedStep:
        return self.env.step(act)

    def restart(self, actor_critic: ActorCritic, state: LSTMState, s: EnvStep, rows: Tensor) -> LSTMState:
        assert isinstance(s, ImaginedStep)
        return _burn_in_rows(actor_critic, state, s, rows)

    def stop(self, state: LSTMState) -> None:
        pass


def imagine(actor_critic: ActorCritic, env: WorldModelEnv, batch: Batch, horizon: int) -> Rollout:
    """Roll the policy out in the world model for ``horizon`` steps from the segments in ``batch``."""
    return rollout(actor_critic, _WorldModelPolicyEnv(env, batch), horizon)


class ImaginationActorCriticLoss(nn.Module):
    """``forward(batch) -> (loss, metrics)`` for the actor-critic: imagine from ``batch``, then
    docs/method.md §5's loss.

    Only the actor-critic's parameters are registered: the world model is used, not trained, here.
    """

    def __init__(self, actor_critic: ActorCritic, env: WorldModelEnv, cfg: ActorCriticConfig) -> None:
        super().__init__()
        self.actor_critic = actor_critic
        self.env = env
        self.cfg = cfg

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        r = imagine(self.actor_critic, self.env, batch, self.cfg.imagination_horizon)
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
            clip_rewards=self.env.reward_model.reward_kind is RewardKind.sign,
        )
