"""The agent with continuous actions: imagined rollouts (the env gets tanh(u), the loss keeps u), their loss's
gradients, imagination's Gymnasium views and their one-line errors, the model-free switch with the same
actor, and agent folders that record the action space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffworld.agent import Agent, export_agent, load_agent
from diffworld.agent.imagination import (
    ImaginationActorCriticLoss,
    ImaginationEnv,
    ImaginationVectorEnv,
    WorldModelEnv,
    imagine,
)
from diffworld.agent.model import AgentFolderError
from diffworld.agent.model_free import ModelFreeActorCriticLoss, RealEnvRollouts
from diffworld.agent.rollout import rollout
from diffworld.config import build_config
from diffworld.data import Episode, EpisodeDataset, SegmentSampler
from diffworld.data.actions import box_spec
from diffworld.envs.continuous import InvalidActionError
from diffworld.envs.vector import AtariEnvs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 2
SIZE = 16
OVERRIDES = [
    "game=CatchContinuous",
    "preset=smoke",
    f"env.size={SIZE}",
    "actor_critic.imagination_horizon=4",
    "actor_critic.training.batch_size=3",
]


def cfg_and_agent(seed: int = 0) -> tuple[object, Agent]:
    cfg = build_config(OVERRIDES)
    torch.manual_seed(seed)
    return cfg, Agent.build(cfg, box_spec(D))


def dataset(num_episodes: int = 4, length: int = 10) -> EpisodeDataset:
    rng = np.random.default_rng(0)
    data = EpisodeDataset(frame_shape=(SIZE, SIZE, 3), action_shape=(D,))
    for _ in range(num_episodes):
        data.add(
            Episode(
                obs=rng.integers(0, 256, (length + 1, SIZE, SIZE, 3), dtype=np.uint8),
                act=rng.uniform(-1, 1, (length, D)).astype(np.float32),
                rew=rng.choice([-1.0, 0.0, 1.0], length).astype(np.float32),
                terminated=np.eye(length, dtype=bool)[-1],
                truncated=np.zeros(length, dtype=bool),
            )
        )
    return data


def world_model_env(agent: Agent, cfg: object, batch_size: int = 3, seed: int = 0) -> WorldModelEnv:
    sampler = SegmentSampler(dataset(), batch_size, 3, rng=np.random.default_rng(seed))
    return WorldModelEnv(
        agent.denoiser,
        agent.reward_model,
        sampler,
        cfg.denoiser.sampler,  # type: ignore[attr-defined]
        horizon=4,
        generator=torch.Generator().manual_seed(seed),
    )


def test_imagined_rollouts_give_the_env_tanh_u_and_keep_u_for_the_loss() -> None:
    cfg, agent = cfg_and_agent()
    env = world_model_env(agent, cfg)
    seen: list[torch.Tensor] = []
    step = env.step

    def recording_step(act: torch.Tensor):  # type: ignore[no-untyped-def]
        seen.append(act.clone())
        return step(act)

    env.step = recording_step  # type: ignore[method-assign]
    r = imagine(agent.actor_critic, env, env.segments.sample(), 4)
    assert r.logits.shape == (3, 4, 2 * D) and r.actions.shape == (3, 4, D)
    got = torch.stack(seen, dim=1)
    torch.testing.assert_close(got, torch.tanh(r.actions))
    assert bool((got.abs() <= 1).all())
    # Reproducible from the generators.
    cfg2, agent2 = cfg_and_agent()
    env2 = world_model_env(agent2, cfg2)
    r2 = imagine(agent2.actor_critic, env2, env2.segments.sample(), 4)
    assert torch.equal(r.actions, r2.actions)


def test_the_imagination_loss_trains_the_actor_and_the_critic() -> None:
    cfg, agent = cfg_and_agent()
    for head in (agent.actor_critic.actor, agent.actor_critic.critic):
        torch.nn.init.normal_(head.weight, std=0.1)
    env = world_model_env(agent, cfg)
    loss_fn = ImaginationActorCriticLoss(agent.actor_critic, env, cfg.actor_critic)  # type: ignore[attr-defined]
    loss, metrics = loss_fn(env.segments.sample())
    loss.backward()
    assert torch.isfinite(loss)
    assert {"policy_std", "policy_mean_abs", "entropy"} <= set(metrics)
    grads = [p.grad for p in agent.actor_critic.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(agent.actor_critic.actor.weight.grad.abs().sum()) > 0  # type: ignore[union-attr]
    assert all(p.grad is None for p in agent.denoiser.parameters())  # the world model is used, not trained


def test_gymnasium_views_take_vectors_and_refuse_bad_ones() -> None:
    cfg, agent = cfg_and_agent()
    venv = ImaginationVectorEnv(world_model_env(agent, cfg), box_spec(D))
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, SIZE, SIZE, 3) and venv.single_action_space.shape == (D,)
    venv.step(np.zeros((3, D), np.float32))
    for bad, expected in ((np.full((3, D), 2.0), "outside the bounds"), (np.zeros((3, D + 1)), "shape")):
        with pytest.raises(InvalidActionError, match=expected):
            venv.step(bad)
    env = ImaginationEnv(world_model_env(agent, cfg, batch_size=1), box_spec(D))
    env.reset(seed=1)
    env.step(np.array([0.3, -0.3], np.float32))
    with pytest.raises(InvalidActionError, match="NaN"):
        env.step(np.array([np.nan, 0.0], np.float32))


def test_model_free_switch_trains_the_same_actor_on_the_real_game() -> None:
    cfg = build_config(OVERRIDES)
    torch.manual_seed(0)
    agent = Agent.build(cfg, box_spec(1))
    envs = AtariEnvs("CatchContinuous", 3, 0, life_loss_terminal=True, size=SIZE, asynchronous=False)
    rollouts = RealEnvRollouts(envs, torch.device("cpu"), torch.Generator().manual_seed(0))
    loss_fn = ModelFreeActorCriticLoss(agent.actor_critic, rollouts, cfg.actor_critic, max_env_steps=24)
    loss, metrics = loss_fn()
    loss.backward()
    assert torch.isfinite(loss) and "policy_std" in metrics
    assert rollouts.num_steps_total == 12 and loss_fn.steps_left == 12
    state = rollouts.state_dict()
    assert state["obs"].shape == (3, SIZE, SIZE, 3)
    envs.close()


def test_model_free_rollouts_give_the_real_game_tanh_u_and_keep_u_for_the_loss() -> None:
    cfg = build_config(OVERRIDES)
    torch.manual_seed(0)
    agent = Agent.build(cfg, box_spec(1))
    envs = AtariEnvs("CatchContinuous", 3, 0, life_loss_terminal=True, size=SIZE, asynchronous=False)
    seen: list[np.ndarray] = []
    step = envs.step

    def recording_step(actions: np.ndarray):  # type: ignore[no-untyped-def]
        seen.append(np.array(actions, copy=True))
        return step(actions)

    envs.step = recording_step  # type: ignore[method-assign]
    rollouts = RealEnvRollouts(envs, torch.device("cpu"), torch.Generator().manual_seed(0))
    r = rollout(agent.actor_critic, rollouts, 4)
    assert r.actions.shape == (3, 4, 1)
    got = torch.from_numpy(np.stack(seen, axis=1))
    torch.testing.assert_close(got, torch.tanh(r.actions))
    assert bool((got.abs() <= 1).all()) and bool((r.actions.abs() > 0).any())
    envs.close()


def test_agent_folders_record_the_action_space(tmp_path: Path) -> None:
    cfg, agent = cfg_and_agent()
    assert agent.continuous and agent.action_shape == (D,) and agent.action_spec == box_spec(D)
    folder = export_agent(agent, cfg, D, tmp_path / "agent")  # type: ignore[arg-type]
    info = json.loads((folder / "agent.json").read_text())
    assert info["num_actions"] == D and info["action_space"] == box_spec(D).to_json()
    loaded, _, _ = load_agent(folder)
    assert loaded.continuous and loaded.actor_critic.num_actions == D
    for key, value in agent.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    info["action_space"]["components"][0]["high"] = 2.0
    (folder / "agent.json").write_text(json.dumps(info))
    with pytest.raises(AgentFolderError, match="action_space") as caught:
        load_agent(folder)
    assert "\n" not in str(caught.value)
