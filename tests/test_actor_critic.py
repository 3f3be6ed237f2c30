"""The actor-critic network, its action sampling and its imagination loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffworld.config.schema import ActorCriticConfig
from diffworld.models.actor_critic import (
    ActorCritic,
    actor_critic_loss,
    actor_critic_loss_terms,
    sample_actions,
)
from diffworld.models.returns import lambda_returns

NUM_ACTIONS = 5


def small_cfg() -> ActorCriticConfig:
    return ActorCriticConfig(channels=[8, 8, 16, 16], lstm_dim=32)


def small_model(seed: int = 0, random_heads: bool = False) -> ActorCritic:
    torch.manual_seed(seed)
    model = ActorCritic(small_cfg(), NUM_ACTIONS)
    if random_heads:
        for head in (model.actor, model.critic):
            torch.nn.init.normal_(head.weight, std=0.3)
            torch.nn.init.normal_(head.bias, std=0.3)
    return model


def frames(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, 3, 64, 64, generator=gen) * 2 - 1


def test_parameter_count_matches_paper() -> None:
    counts = {a: sum(p.numel() for p in ActorCritic(ActorCriticConfig(), a).parameters()) for a in (4, 18)}
    assert counts == {4: 3_229_637, 18: 3_236_819}
    assert all(abs(c / 3.23e6 - 1) < 0.005 for c in counts.values())


def test_shapes_and_uniform_untrained_policy() -> None:
    model = small_model()
    logits, value, (hx, cx) = model.step(frames(3))
    assert logits.shape == (3, NUM_ACTIONS) and value.shape == (3,)
    assert hx.shape == cx.shape == (3, 32)
    assert torch.equal(logits, torch.zeros_like(logits)) and torch.equal(value, torch.zeros_like(value))
    logits2, _, state2 = model.step(frames(3, seed=1), (hx, cx))
    assert torch.equal(logits2, torch.zeros_like(logits2)) and not torch.equal(state2[0], hx)
    action, state3 = model.act(frames(3), (hx, cx))
    assert action.shape == (3,) and action.dtype == torch.int64 and state3[0].shape == (3, 32)


def test_burn_in_ignores_padding() -> None:
    model = small_model(random_heads=True)
    real = frames(2, 4, seed=1)
    # two batch rows with 2 and 0 padding frames (left padding), padding frames full of garbage
    obs = torch.cat([frames(2, 2, seed=2) * 5, real], dim=1)
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    obs[1, :2] = frames(2, seed=3)
    hx, cx = model.burn_in(obs, mask)
    hx_ref, cx_ref = model.burn_in(real[:1], torch.ones(1, 4, dtype=torch.bool))
    torch.testing.assert_close(hx[0], hx_ref[0])
    torch.testing.assert_close(cx[0], cx_ref[0])
    state = None
    for t in range(6):  # the unpadded row matches stepping frame by frame
        _, _, state = model.step(obs[1:, t], state)
    assert state is not None
    torch.testing.assert_close(hx[1:], state[0])
    torch.testing.assert_close(cx[1:], state[1])
    # a fully masked sequence leaves the given state untouched
    hx0, cx0 = model.burn_in(obs, torch.zeros(2, 6, dtype=torch.bool), (hx, cx))
    assert torch.equal(hx0, hx) and torch.equal(cx0, cx)


def test_sampling_epsilon_and_temperature() -> None:
    n = 20_000
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]]).expand(n, 4)
    gen = torch.Generator().manual_seed(0)

    def freqs(epsilon: float, temperature: float) -> torch.Tensor:
        actions = sample_actions(logits, epsilon, temperature, gen)
        return torch.bincount(actions, minlength=4).float() / n

    torch.testing.assert_close(freqs(0.0, 1.0), torch.softmax(logits[0], 0), atol=0.015, rtol=0)
    torch.testing.assert_close(freqs(0.0, 2.0), torch.softmax(logits[0] / 2, 0), atol=0.015, rtol=0)
    assert freqs(0.0, 0.01)[0] == 1.0  # low temperature: greedy
    torch.testing.assert_close(freqs(1.0, 0.01), torch.full((4,), 0.25), atol=0.015, rtol=0)
    torch.testing.assert_close(freqs(0.2, 0.01), torch.tensor([0.85, 0.05, 0.05, 0.05]), atol=0.015, rtol=0)
    a1 = sample_actions(logits, 0.3, 1.0, torch.Generator().manual_seed(7))
    a2 = sample_actions(logits, 0.3, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(a1, a2)
    with pytest.raises(ValueError):
        sample_actions(logits, 0.0, 0.0)


def test_act_uses_policy() -> None:
    model = small_model()
    with torch.no_grad():
        model.actor.bias[3] = 100.0
    action, _ = model.act(frames(6), None, epsilon=0.0, temperature=1.0)
    assert torch.equal(action, torch.full((6,), 3))


def loss_inputs(b: int = 4, h: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    end = torch.rand(b, h, generator=gen) < 0.2
    return {
        "logits": torch.randn(b, h, NUM_ACTIONS, generator=gen).requires_grad_(),
        "values": torch.randn(b, h, generator=gen).requires_grad_(),
        "actions": torch.randint(NUM_ACTIONS, (b, h), generator=gen),
        "rew": torch.randn(b, h, generator=gen) * (torch.rand(b, h, generator=gen) < 0.4),
        "end": end,
        "trunc": (torch.rand(b, h, generator=gen) < 0.2) & ~end,
        "next_values": torch.randn(b, h, generator=gen),
    }


def test_loss_terms_match_direct_computation() -> None:
    cfg = ActorCriticConfig(value_loss_weight=0.7, entropy_weight=0.01)
    x = loss_inputs()
    loss, metrics = actor_critic_loss(**x, cfg=cfg)
    g = lambda_returns(x["rew"], x["end"], x["trunc"], x["next_values"], cfg.gamma, cfg.lambda_)
    logp = F.log_softmax(x["logits"], -1)
    logp_a = logp.gather(-1, x["actions"][..., None]).squeeze(-1)
    policy = (-logp_a * (g - x["values"]).detach()).mean()
    value = 0.7 * ((x["values"] - g) ** 2).mean()
    entropy = -(logp.exp() * logp).sum(-1).mean()
    torch.testing.assert_close(metrics["policy_loss"], policy)
    torch.testing.assert_close(metrics["value_loss"], value)
    torch.testing.assert_close(metrics["entropy"], entropy)
    torch.testing.assert_close(loss, policy + value - 0.01 * entropy)
    torch.testing.assert_close(metrics["return"], g.mean())
    torch.testing.assert_close(metrics["value"], x["values"].mean())
    nonzero = sum(float(r) != 0.0 for r in x["rew"].flatten().tolist())
    torch.testing.assert_close(metrics["reward_rate"], torch.tensor(nonzero / x["rew"].numel()))
    assert all(not v.requires_grad and v.ndim == 0 for v in metrics.values())
    # the targets are constants: the value gradient is the MSE's alone
    loss.backward()
    torch.testing.assert_close(x["values"].grad, 0.7 * 2 * (x["values"] - g).detach() / g.numel())


def test_scale_statistics_match_numpy() -> None:
    """The value, lambda-return and advantage scales, against numpy on the steps they cover (all, or the
    masked ones): population standard deviations, advantages G - V as they weigh REINFORCE (no
    normalisation), and the loss's terms kept apart sum to the loss."""
    cfg = ActorCriticConfig(value_loss_weight=0.5, entropy_weight=0.02)
    x = loss_inputs(b=5, h=7, seed=3)
    g = lambda_returns(x["rew"], x["end"], x["trunc"], x["next_values"], cfg.gamma, cfg.lambda_).numpy()
    v = x["values"].detach().numpy()
    mask = (torch.rand(5, 7, generator=torch.Generator().manual_seed(4)) < 0.7).numpy()
    for m in (None, mask):
        keep = np.ones_like(v, dtype=bool) if m is None else m
        terms = actor_critic_loss_terms(**x, cfg=cfg, mask=None if m is None else torch.from_numpy(m))
        gk, vk = g[keep].astype(np.float64), v[keep].astype(np.float64)
        expected = {
            "value": vk.mean(),
            "value_abs_mean": np.abs(vk).mean(),
            "return": gk.mean(),
            "return_std": gk.std(),
            "advantage": (gk - vk).mean(),
            "advantage_std": (gk - vk).std(),
        }
        for key, value in expected.items():
            assert terms.metrics[key].item() == pytest.approx(value, rel=1e-5, abs=1e-6), key
        torch.testing.assert_close(
            terms.loss, terms.policy_loss + terms.value_loss - cfg.entropy_weight * terms.entropy
        )
        assert terms.metrics["loss"].item() == pytest.approx(terms.loss.item())


def test_uniform_policy_entropy() -> None:
    x = loss_inputs()
    x["logits"] = torch.zeros_like(x["logits"])
    _, metrics = actor_critic_loss(**x, cfg=ActorCriticConfig())
    assert metrics["entropy"].item() == pytest.approx(math.log(NUM_ACTIONS))


def test_masked_steps_contribute_nothing() -> None:
    cfg = ActorCriticConfig()
    x = loss_inputs(seed=1)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(2)) < 0.6
    loss, metrics = actor_critic_loss(**x, cfg=cfg, mask=mask)
    loss.backward()
    assert torch.all(x["values"].grad[~mask] == 0) and torch.all(x["logits"].grad[~mask] == 0)
    y = {k: v.detach().clone() for k, v in x.items()}
    y["logits"][~mask] = torch.randn_like(y["logits"][~mask]) * 10
    y["values"][~mask] = 123.0
    y["actions"][~mask] = 0
    loss2, metrics2 = actor_critic_loss(**y, cfg=cfg, mask=mask)
    torch.testing.assert_close(loss2, loss.detach())
    for key in ("policy_loss", "value_loss", "entropy", "value"):
        torch.testing.assert_close(metrics2[key], metrics[key])
    # all-True mask equals no mask
    full, _ = actor_critic_loss(**y, cfg=cfg, mask=torch.ones(4, 6, dtype=torch.bool))
    torch.testing.assert_close(full, actor_critic_loss(**y, cfg=cfg)[0])


def test_gradients_reach_every_parameter() -> None:
    model = small_model(random_heads=True)
    b, h = 3, 4
    obs = frames(b, h + 1, seed=4)
    gen = torch.Generator().manual_seed(5)
    state = model.burn_in(obs[:, :1], torch.ones(b, 1, dtype=torch.bool))
    logits, values, next_values = [], [], []
    for t in range(h):
        lg, v, state = model.step(obs[:, t], state)
        logits.append(lg)
        values.append(v)
        with torch.no_grad():
            next_values.append(model.step(obs[:, t + 1], state)[1])
    loss, _ = actor_critic_loss(
        torch.stack(logits, 1),
        torch.stack(values, 1),
        torch.randint(NUM_ACTIONS, (b, h), generator=gen),
        torch.randn(b, h, generator=gen),
        torch.zeros(b, h, dtype=torch.bool),
        torch.zeros(b, h, dtype=torch.bool),
        torch.stack(next_values, 1),
        ActorCriticConfig(),
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
