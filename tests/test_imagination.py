"""Imagination: the batched world-model environment, its Gymnasium views, the actor-critic's loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from diffworld.agent.imagination import (
    ImaginationActorCriticLoss,
    ImaginationEnv,
    ImaginationVectorEnv,
    WorldModelEnv,
)
from diffworld.config.schema import (
    ActorCriticConfig,
    DenoiserConfig,
    RewardTerminationConfig,
    SamplerConfig,
)
from diffworld.data import Episode, EpisodeDataset, SegmentSampler
from diffworld.models.actor_critic import ActorCritic
from diffworld.models.diffusion import make_denoiser
from diffworld.models.reward_termination import RewardTerminationModel

NUM_ACTIONS = 4
L = 4


def _dataset(num_episodes: int = 6, length: int = 12) -> EpisodeDataset:
    rng = np.random.default_rng(0)
    dataset = EpisodeDataset()
    for _ in range(num_episodes):
        dataset.add(
            Episode(
                obs=rng.integers(0, 256, size=(length + 1, 64, 64, 3), dtype=np.uint8),
                act=rng.integers(0, NUM_ACTIONS, size=length).astype(np.int64),
                rew=rng.choice([-1.0, 0.0, 1.0], size=length).astype(np.float32),
                terminated=np.eye(length, dtype=bool)[-1],
                truncated=np.zeros(length, dtype=bool),
            )
        )
    return dataset


def _models() -> tuple[torch.nn.Module, RewardTerminationModel, ActorCritic]:
    torch.manual_seed(0)
    denoiser = make_denoiser(
        DenoiserConfig(channels=[8, 8], depths=[1, 1], attn_depths=[False, False], cond_channels=16),
        NUM_ACTIONS,
    )
    reward_model = RewardTerminationModel(
        RewardTerminationConfig(
            channels=[8, 8, 8, 8], depths=[1, 1, 1, 1], attn_depths=[False] * 4, cond_channels=16, lstm_dim=16
        ),
        NUM_ACTIONS,
    )
    actor_critic = ActorCritic(ActorCriticConfig(channels=[8, 8, 8, 8], lstm_dim=16), NUM_ACTIONS)
    return denoiser, reward_model, actor_critic


def _env(batch_size: int = 3, horizon: int = 5, seed: int = 0, num_steps: int = 2) -> WorldModelEnv:
    denoiser, reward_model, _ = _models()
    sampler = SegmentSampler(_dataset(), batch_size, L - 1, rng=np.random.default_rng(seed))
    return WorldModelEnv(
        denoiser,
        reward_model,
        sampler,
        SamplerConfig(num_steps=num_steps),
        horizon=horizon,
        generator=torch.Generator().manual_seed(seed),
    )


def test_reset_and_step_shapes() -> None:
    env = _env()
    s = env.reset()
    assert s.obs.shape == (3, 3, 64, 64) and s.history.shape == (3, L - 1, 3, 64, 64)
    s = env.step(torch.zeros(3, dtype=torch.long))
    assert s.obs.shape == s.final_obs.shape == (3, 3, 64, 64)
    assert s.rew.shape == s.end.shape == s.trunc.shape == (3,)
    assert set(s.rew.tolist()) <= {-1.0, 0.0, 1.0}
    # Imagined frames are quantized to 8-bit levels.
    levels = (s.final_obs + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-3)


def test_one_batched_denoiser_call_per_denoising_step() -> None:
    env = _env(batch_size=5, num_steps=3)
    calls: list[int] = []
    env.denoiser.net.register_forward_hook(lambda module, inputs, output: calls.append(output.shape[0]))
    env.reset()
    env.step(torch.ones(5, dtype=torch.long))
    assert calls == [5, 5, 5]


def test_trajectories_are_truncated_at_the_horizon_and_restart() -> None:
    env = _env(batch_size=4, horizon=3)
    never_end = env.reward_model.predict

    def predict_no_end(*args, **kwargs):  # type: ignore[no-untyped-def]
        logits_rew, logits_end, state = never_end(*args, **kwargs)
        return logits_rew, torch.stack([logits_end[..., 0] * 0 + 50, logits_end[..., 1] * 0 - 50], -1), state

    env.reward_model.predict = predict_no_end  # type: ignore[method-assign]
    env.reset()
    for t in range(1, 7):
        s = env.step(torch.zeros(4, dtype=torch.long))
        assert not s.end.any()
        assert s.trunc.all() == (t % 3 == 0)
        if t % 3 == 0:
            # A restarted trajectory shows the last real frame of a new dataset segment, not the imagined one.
            assert not torch.equal(s.obs, s.final_obs)


def test_termination_restarts_from_dataset_frames() -> None:
    env = _env(batch_size=4, horizon=10)
    predict = env.reward_model.predict

    def predict_always_end(*args, **kwargs):  # type: ignore[no-untyped-def]
        logits_rew, logits_end, state = predict(*args, **kwargs)
        return logits_rew, torch.stack([logits_end[..., 0] * 0 - 50, logits_end[..., 1] * 0 + 50], -1), state

    env.reward_model.predict = predict_always_end  # type: ignore[method-assign]
    env.reset()
    s = env.step(torch.zeros(4, dtype=torch.long))
    assert s.end.all() and not s.trunc.any()
    frames = torch.from_numpy(np.array(env.segments.dataset.frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    for row in range(4):
        # Every restart frame is a stored frame (or padding).
        assert (frames - s.obs[row]).abs().flatten(1).amax(1).min() < 1e-5 or not s.obs[row].any()


def test_rollouts_are_reproducible_from_the_seeds() -> None:
    def run() -> list[torch.Tensor]:
        env = _env(seed=3)
        out = [env.reset().obs]
        for a in range(4):
            out.append(env.step(torch.full((3,), a % NUM_ACTIONS, dtype=torch.long)).final_obs)
        return out

    for x, y in zip(run(), run(), strict=True):
        assert torch.equal(x, y)


def test_gymnasium_checker_accepts_the_single_env() -> None:
    check_env(ImaginationEnv(_env(batch_size=1), NUM_ACTIONS), skip_render_check=True)


def test_vector_env_api() -> None:
    venv = ImaginationVectorEnv(_env(batch_size=3, horizon=2), NUM_ACTIONS)
    obs, _ = venv.reset(seed=1)
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    assert venv.observation_space.contains(obs)
    obs2, _ = venv.reset(seed=1)
    np.testing.assert_array_equal(obs, obs2)
    venv.step(venv.action_space.sample())
    obs, rew, end, trunc, info = venv.step(np.zeros(3, dtype=np.int64))
    assert obs.dtype == np.uint8 and rew.dtype == np.float32 and rew.shape == (3,)
    assert (end | trunc).all()  # horizon 2
    assert info["final_obs"].shape == (3, 64, 64, 3) and info["_final_obs"].all()


def test_actor_critic_loss_in_imagination_reaches_only_the_actor_critic() -> None:
    env = _env(batch_size=4, horizon=5)
    _, _, actor_critic = _models()
    loss_fn = ImaginationActorCriticLoss(actor_critic, env, ActorCriticConfig(imagination_horizon=5))
    assert {id(p) for p in loss_fn.parameters()} == {id(p) for p in actor_critic.parameters()}
    batch = env.segments.sample()
    loss, metrics = loss_fn(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(not v.requires_grad for v in metrics.values())
    loss.backward()
    for name, p in actor_critic.named_parameters():
        assert p.grad is not None, name
    assert all(p.grad is None for p in env.denoiser.parameters())
    assert all(p.grad is None for p in env.reward_model.parameters())


@pytest.mark.parametrize("horizon", [1, 3])
def test_rollout_shapes(horizon: int) -> None:
    from diffworld.agent.imagination import imagine

    env = _env(batch_size=2, horizon=2)
    _, _, actor_critic = _models()
    r = imagine(actor_critic, env, env.segments.sample(), horizon)
    assert r.logits.shape == (2, horizon, NUM_ACTIONS)
    for x in (r.values, r.actions, r.rew, r.end, r.trunc, r.next_values):
        assert x.shape == (2, horizon)
    assert not r.next_values.requires_grad
