"""The model-free baseline: real-environment rollouts checked against a replay, its budget, its resumption."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from diffworld.agent.collector import EpisodeStats
from diffworld.agent.model_free import ModelFreeActorCriticLoss, RealEnvRollouts
from diffworld.agent.rollout import Rollout, rollout
from diffworld.agent.trained import load_trained_agent
from diffworld.agent.trainer import Trainer
from diffworld.config import build_config
from diffworld.config.schema import ActorCriticConfig
from diffworld.data import EpisodeDataset
from diffworld.models.actor_critic import ActorCritic
from diffworld.run.checkpoint import from_safe, load_checkpoint, to_safe
from diffworld.run.metrics_file import read_metrics
from recording_envs import RecordingEnvs

CPU = torch.device("cpu")


def _envs(seed: int = 1, num_envs: int = 2, cap: int = 120) -> RecordingEnvs:
    # A cap of 120 frames (at most 30 steps) truncates every episode that no life loss ends first.
    return RecordingEnvs(
        "Breakout", num_envs, seed, life_loss_terminal=True, max_frames_per_episode=cap, asynchronous=False
    )


def _actor_critic(num_actions: int) -> ActorCritic:
    torch.manual_seed(0)
    model = ActorCritic(ActorCriticConfig(channels=[8, 8, 8, 8], lstm_dim=16), num_actions)
    for head in (model.actor, model.critic):  # non-zero values, so that bootstraps are visible
        torch.nn.init.normal_(head.weight, std=0.3)
        torch.nn.init.normal_(head.bias, std=0.3)
    return model


def _policy_input(obs: np.ndarray) -> Tensor:
    return torch.from_numpy(obs).permute(0, 3, 1, 2).float() / 127.5 - 1


def _cat(rollouts: list[Rollout], name: str) -> Tensor:
    return torch.cat([getattr(r, name) for r in rollouts], dim=1)


def test_real_rollouts_match_a_step_by_step_replay() -> None:
    """Rollouts continue each other; the LSTM restarts at zero at every new episode (within a rollout and at
    its last step); truncation bootstraps with V(final_obs); rewards are signs; every step is counted."""
    horizon, num_rollouts = 5, 8
    with _envs() as envs:
        actor_critic = _actor_critic(envs.num_actions)
        env = RealEnvRollouts(envs, CPU, torch.Generator().manual_seed(1))
        rollouts = []
        for k in range(num_rollouts):
            r = rollout(actor_critic, env, horizon)
            assert r.logits.shape == (2, horizon, envs.num_actions)
            for x in (r.values, r.actions, r.rew, r.end, r.trunc, r.next_values):
                assert x.shape == (2, horizon)
            assert r.logits.requires_grad and r.values.requires_grad and not r.next_values.requires_grad
            assert env.num_steps_total == (k + 1) * horizon * 2
            rollouts.append(r)
        assert len(envs.resets) == 1  # rollouts continue each other: one reset, at the start
        results = envs.results
        assert len(results) == horizon * num_rollouts

        # The replay: one env step at a time, state zeroed where an episode ended.
        obs, state = _policy_input(envs.resets[0]), actor_critic.initial_state(2)
        logits, next_values = [], []
        returns, lengths = np.zeros(2), np.zeros(2, dtype=int)
        episodes = []
        with torch.no_grad():
            for res in results:
                step_logits, _, state = actor_critic.step(obs, state)
                # final_obs equals obs where the episode goes on: one formula for every step.
                next_values.append(actor_critic.step(_policy_input(res.final_obs), state)[1])
                logits.append(step_logits)
                done = torch.from_numpy(res.done)[:, None]
                state = (state[0].masked_fill(done, 0), state[1].masked_fill(done, 0))
                obs = _policy_input(res.obs)
                returns += res.reward
                lengths += 1
                for i in np.flatnonzero(res.done):
                    term, trunc = bool(res.terminated[i]), bool(res.truncated[i])
                    episodes.append(EpisodeStats(float(returns[i]), int(lengths[i]), term, trunc))
                    returns[i], lengths[i] = 0, 0

        torch.testing.assert_close(_cat(rollouts, "logits"), torch.stack(logits, 1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            _cat(rollouts, "next_values"), torch.stack(next_values, 1), atol=1e-5, rtol=1e-5
        )
        terminated = torch.from_numpy(np.stack([r.terminated for r in results], 1))
        truncated = torch.from_numpy(np.stack([r.truncated for r in results], 1))
        rewards = torch.from_numpy(np.stack([r.reward for r in results], 1))
        assert torch.equal(_cat(rollouts, "end"), terminated)
        assert torch.equal(_cat(rollouts, "trunc"), truncated & ~terminated)
        assert torch.equal(_cat(rollouts, "rew"), rewards.sign())
        assert env.episodes == episodes and env.num_episodes_total == len(episodes)
        assert env.pop_episodes() == episodes and env.episodes == []

        # What the replay covered: life losses, truncations, episodes ending inside and at the end of one.
        assert terminated.any() and (truncated & ~terminated).any()
        done = [r.end | r.trunc for r in rollouts]
        assert any(d[:, :-1].any() for d in done) and any(d[:, -1].any() for d in done)


def test_the_budget_is_spent_exactly_and_never_exceeded() -> None:
    cfg = ActorCriticConfig(channels=[8, 8, 8, 8], lstm_dim=16, imagination_horizon=4)
    with _envs(cap=108_000) as envs:
        actor_critic = _actor_critic(envs.num_actions)
        env = RealEnvRollouts(envs, CPU, torch.Generator().manual_seed(0))
        # 21 steps: two rollouts of 2 x 4 steps, a last one of 2 x 2; the odd step cannot be taken.
        loss_fn = ModelFreeActorCriticLoss(actor_critic, env, cfg, max_env_steps=21)
        assert {id(p) for p in loss_fn.parameters()} == {id(p) for p in actor_critic.parameters()}
        spent = []
        while loss_fn.rollouts_left:
            loss, metrics = loss_fn()
            assert loss.ndim == 0 and torch.isfinite(loss)
            assert all(not v.requires_grad for v in metrics.values())
            loss.backward()
            spent.append(env.num_steps_total)
        assert spent == [8, 16, 20] and loss_fn.steps_left == 0
        assert all(p.grad is not None for p in actor_critic.parameters())
        with pytest.raises(RuntimeError, match="budget"):
            loss_fn()
        assert env.num_steps_total == 20


def test_state_dict_resumes_exactly() -> None:
    with _envs(seed=1) as envs, _envs(seed=7) as other_envs:
        actor_critic = _actor_critic(envs.num_actions)
        env = RealEnvRollouts(envs, CPU, torch.Generator().manual_seed(1))
        for _ in range(5):
            rollout(actor_critic, env, 5)
        buffer = io.BytesIO()
        torch.save(to_safe(env.state_dict()), buffer)
        expected = [rollout(actor_critic, env, 5) for _ in range(3)]

        # Other envs, another generator: loading the state makes them continue as the first ones did.
        resumed = RealEnvRollouts(other_envs, CPU, torch.Generator().manual_seed(123))
        buffer.seek(0)
        resumed.load_state_dict(from_safe(torch.load(buffer, weights_only=True)))
        got = [rollout(actor_critic, resumed, 5) for _ in range(3)]
        for name in ("logits", "values", "actions", "rew", "end", "trunc", "next_values"):
            assert torch.equal(_cat(got, name), _cat(expected, name)), name
        assert resumed.episodes == env.episodes and resumed.num_steps_total == env.num_steps_total
        assert np.array_equal(other_envs.results[-1].obs, envs.results[-1].obs)


# ------------------------------------------------------------------------------------------- end to end

MODEL_FREE = ["game=Breakout", "preset=smoke", "seed=1", "training.model_free=true"]


def _train(run_dir: Path, resume: bool = False) -> dict[str, Any] | None:
    cfg = build_config([*MODEL_FREE, f"run_dir={run_dir}"])
    return Trainer(cfg, run_dir, resume=resume).run()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model_free") / "run"
    _train(path)
    return path


def test_model_free_run_spends_the_budget_on_real_rollouts(run_dir: Path) -> None:
    cfg = build_config([*MODEL_FREE, f"run_dir={run_dir}"])
    c, t = cfg.collection, cfg.actor_critic.training
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["env_steps"] == c.total_env_steps
    assert len(report["returns"]) == c.num_final_episodes
    assert load_trained_agent(run_dir, device="cpu").env_steps == c.total_env_steps  # diffworld eval's count

    # 300 steps of 4 envs: 18 rollouts of 4 steps and one of 3, i.e. 19 updates: 3, then 2 per epoch.
    state, _ = load_checkpoint(run_dir / "checkpoints")
    assert state["counters"]["num_updates"] == {"denoiser": 0, "reward_model": 0, "actor_critic": 19}
    assert state["counters"]["phase"] == "done" and state["counters"]["epoch"] == 9
    assert state["model_free"]["num_steps_total"] == c.total_env_steps

    records = read_metrics(run_dir)
    epochs = [r for r in records if "time/epoch_seconds" in r]
    assert [r["epoch"] for r in epochs] == list(range(1, 10))
    steps = [r["env_steps"] for r in epochs]
    assert steps == [t.batch_size * 4 * n for n in (3, 5, 7, 9, 11, 13, 15, 17)] + [c.total_env_steps]
    assert all("actor_critic/train/policy_loss" in r for r in epochs)
    assert any("collection/model_free/return_mean" in r for r in epochs)
    tested = [r for r in epochs if r["epoch"] % c.test_every_epochs == 0]
    assert tested and all("collection/test/return_mean" in r for r in tested)
    # No world-model training, no collector: nothing of theirs is logged, nothing is stored.
    assert not any(
        k.startswith(("denoiser/", "reward_model/", "collection/train/")) for r in records for k in r
    )
    assert EpisodeDataset.load(run_dir / "dataset" / "train").num_episodes == 0
    assert records[-1]["env_steps"] == c.total_env_steps and "evaluation/final/return_mean" in records[-1]


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_model_free_run_resumed_mid_epoch_ends_as_the_unbroken_one(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken"
    forward = ModelFreeActorCriticLoss.forward
    calls = []

    def crash_on_ninth_rollout(self: ModelFreeActorCriticLoss, batch: Any = None) -> Any:
        calls.append(1)
        if len(calls) == 9:  # epoch 4's second update: its first one and its env steps must be redone
            raise _Crash
        return forward(self, batch)

    monkeypatch.setattr(ModelFreeActorCriticLoss, "forward", crash_on_ninth_rollout)
    with pytest.raises(_Crash):
        _train(broken)
    monkeypatch.setattr(ModelFreeActorCriticLoss, "forward", forward)
    _train(broken, resume=True)

    report, expected = (json.loads((d / "eval.json").read_text()) for d in (broken, run_dir))
    assert report["returns"] == expected["returns"] and report["env_steps"] == expected["env_steps"]

    def comparable(path: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(path)]

    assert comparable(broken) == comparable(run_dir)
    ours, theirs = (load_checkpoint(d / "checkpoints")[0]["agent"] for d in (broken, run_dir))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
