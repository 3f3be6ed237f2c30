"""reward_model.reward_kind: ``sign`` (the paper's, unchanged) and ``value`` (dense rewards: symlog MSE, the
predicted reward in imagination, unclipped lambda-returns), each against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffworld.config import ConfigError, build_config
from diffworld.config.schema import ActorCriticConfig, RewardKind, RewardTerminationConfig
from diffworld.models.actor_critic import actor_critic_loss
from diffworld.models.returns import lambda_returns
from diffworld.models.reward_termination import RewardTerminationModel, symexp, symlog
from test_returns import n_step_return
from test_reward_model import SIZE, make_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model(kind: RewardKind, seed: int = 0) -> RewardTerminationModel:
    torch.manual_seed(seed)
    cfg = RewardTerminationConfig(channels=[8, 8, 8, 8], cond_channels=16, lstm_dim=32, reward_kind=kind)
    return RewardTerminationModel(cfg, 3, img_size=SIZE)


def masked_mean(x: np.ndarray, mask: np.ndarray) -> float:
    return float(x[mask].mean())


def test_config_key_and_presets() -> None:
    assert build_config(["game=Breakout"]).reward_model.reward_kind is RewardKind.sign
    assert (
        build_config(["game=CatchContinuous", "preset=catch_continuous"]).reward_model.reward_kind == "sign"
    )
    assert build_config(["game=dmc:cup-catch", "preset=dmc"]).reward_model.reward_kind == "value"
    assert build_config(["game=Pong", "reward_model.reward_kind=value"]).reward_model.reward_kind == "value"
    with pytest.raises(ConfigError) as caught:
        build_config(["game=Pong", "reward_model.reward_kind=magnitude"])
    assert "\n" not in str(caught.value)


def test_sign_keeps_the_parameters_and_value_changes_only_the_last_layer() -> None:
    sign, value = model(RewardKind.sign), model(RewardKind.value)
    shapes = {name: tuple(p.shape) for name, p in sign.state_dict().items()}
    assert shapes["head.2.weight"] == (5, 32)  # the official head: 3 reward logits, 2 termination logits
    value_shapes = {name: tuple(p.shape) for name, p in value.state_dict().items()}
    # The same names in the same order, and the bound of imagined rewards (a buffer of the model itself).
    assert [n for n in value_shapes if n != "reward_bound"] == list(shapes)
    assert value_shapes["reward_bound"] == ()
    assert {n for n in shapes if shapes[n] != value_shapes[n]} == {"head.2.weight"}
    assert value_shapes["head.2.weight"] == (3, 32)


def test_sign_loss_and_imagined_reward_as_the_paper() -> None:
    m = model(RewardKind.sign)
    batch = make_batch()
    loss, metrics = m(batch)
    logits_rew, logits_end, _ = m.predict(
        batch.obs[:, :-1], batch.act, batch.obs[:, 1:], mask=batch.step_mask
    )
    assert logits_rew.shape == (4, 6, 3)
    mask, rew, end = batch.step_mask, batch.rew, batch.end
    target = rew.sign().long() + 1
    ce_rew = F.cross_entropy(logits_rew[mask], target[mask])
    ce_end = F.cross_entropy(logits_end[mask], end[mask].long())
    torch.testing.assert_close(metrics["loss_rew"], ce_rew)
    torch.testing.assert_close(loss, ce_rew + ce_end)
    assert list(metrics) == ["loss", "loss_rew", "loss_end", "acc_rew", "acc_end"]
    torch.testing.assert_close(
        metrics["acc_rew"], (logits_rew[mask].argmax(-1) == target[mask]).float().mean()
    )
    # Imagination's draw: one multinomial over the softmax, minus 1, from the imagination's generator.
    logits = torch.randn(7, 3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected = (torch.multinomial(logits.softmax(-1), 1, generator=g1).squeeze(-1) - 1).float()
    assert torch.equal(m.sample_reward(logits, g2), expected)
    assert torch.equal(g1.get_state(), g2.get_state())
    assert torch.equal(m.reward_of(logits), logits.argmax(-1) - 1)


def test_symlog_and_symexp() -> None:
    x = torch.tensor([-100.0, -2.5, -1.0, 0.0, 0.3, 1.0, 7.0, 1000.0], dtype=torch.float64)
    expected = [math.copysign(math.log1p(abs(v)), v) for v in x.tolist()]
    torch.testing.assert_close(symlog(x), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(symexp(symlog(x)), x)


def test_value_loss_against_an_independent_computation() -> None:
    m = model(RewardKind.value)
    batch = make_batch()  # rewards of several sizes and signs, padding steps masked
    loss, metrics = m(batch)
    out, logits_end, _ = m.predict(batch.obs[:, :-1], batch.act, batch.obs[:, 1:], mask=batch.step_mask)
    assert out.shape == (4, 6, 1)
    pred = out[..., 0].detach().double().numpy()
    rew = batch.rew.double().numpy()
    mask = batch.step_mask.numpy()
    target = np.sign(rew) * np.log(1 + np.abs(rew))
    expected_rew = masked_mean((pred - target) ** 2, mask)
    expected_end = float(
        F.cross_entropy(logits_end[batch.step_mask].detach(), batch.end[batch.step_mask].long())
    )
    assert float(metrics["loss_rew"]) == pytest.approx(expected_rew, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(expected_rew + expected_end, rel=1e-5)
    assert list(metrics) == ["loss", "loss_rew", "loss_end", "rew_abs_error", "acc_end"]
    predicted = np.sign(pred) * (np.exp(np.abs(pred)) - 1)
    assert float(metrics["rew_abs_error"]) == pytest.approx(
        masked_mean(np.abs(predicted - rew), mask), rel=1e-5
    )
    loss.backward()
    assert m.head[2].weight.grad is not None and m.head[2].weight.grad[0].abs().sum() > 0


def test_value_prediction_path_draws_nothing_and_is_bounded() -> None:
    m = model(RewardKind.value)
    m.reward_bound.fill_(2.0)
    out = torch.tensor([[0.0], [0.5], [-1.5], [3.0]])
    expected = torch.tensor([0.0, math.expm1(0.5), -math.expm1(1.5), math.expm1(3.0)])
    g = torch.Generator().manual_seed(3)
    before = g.get_state()
    # Imagination's reward: the output clamped to the symlog rewards seen, 3.0 to 2.0.
    bounded = torch.tensor([0.0, math.expm1(0.5), -math.expm1(1.5), math.expm1(2.0)])
    torch.testing.assert_close(m.sample_reward(out, g), bounded)
    assert torch.equal(g.get_state(), before)  # no draw: the termination's is the step's only one
    torch.testing.assert_close(m.reward_of(out), expected)  # the measurements read the model as it is


def test_value_reward_bound_is_the_largest_symlog_reward_trained_on() -> None:
    m = model(RewardKind.value)
    batch = make_batch()  # rewards of several sizes and signs, padding steps masked
    rew, _, _, mask = batch.step_targets()
    m.eval()
    m(batch)
    assert float(m.reward_bound) == 0.0  # evaluation leaves it
    m.train()
    m(batch)
    largest = float(np.log1p(np.abs(rew.double().numpy()[mask.numpy()])).max())
    assert float(m.reward_bound) == pytest.approx(largest, rel=1e-6) and largest > 0
    small = make_batch()
    small.rew.mul_(0.01)
    m(small)
    assert float(m.reward_bound) == pytest.approx(largest, rel=1e-6)  # a maximum: it never goes down


def test_value_model_learns_a_dense_reward() -> None:
    """A dense reward of the frame pair (its mean brightness change, scaled): the regression head fits it."""
    m = model(RewardKind.value)
    batch = make_batch()
    with torch.no_grad():
        batch.rew.copy_((batch.obs[:, 1:] - batch.obs[:, :-1]).mean(dim=(2, 3, 4)) * 40 + 1.5)
        batch.rew[~batch.step_mask] = 0
    optimizer = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = float(m(batch)[1]["rew_abs_error"])
    for _ in range(60):
        optimizer.zero_grad()
        loss, metrics = m(batch)
        loss.backward()
        optimizer.step()
    assert float(metrics["rew_abs_error"]) < 0.5 * first


def naive_unclipped(
    rew: torch.Tensor, end: torch.Tensor, trunc: torch.Tensor, val: torch.Tensor
) -> torch.Tensor:
    gamma, lambda_ = 0.9, 0.8
    out = torch.zeros_like(val, dtype=torch.float64)
    horizon = rew.size(1)
    for b in range(rew.size(0)):
        r, e, tr, v = rew[b].tolist(), end[b].tolist(), trunc[b].tolist(), val[b].tolist()
        for t in range(horizon):
            n_max = horizon - t
            g = sum(
                (1 - lambda_) * lambda_ ** (n - 1) * n_step_return(r, e, tr, v, t, n, gamma)
                for n in range(1, n_max)
            )
            out[b, t] = g + lambda_ ** (n_max - 1) * n_step_return(r, e, tr, v, t, n_max, gamma)
    return out


def test_unclipped_returns_and_the_actor_critic_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    rew = torch.rand(6, 9, generator=gen) * 2  # dense, 0..2 per agent step (2 control steps of DMC)
    end = torch.rand(6, 9, generator=gen) < 0.15
    trunc = (torch.rand(6, 9, generator=gen) < 0.15) & ~end
    val = torch.randn(6, 9, generator=gen)
    got = lambda_returns(rew, end, trunc, val, 0.9, 0.8, clip_rewards=False)
    torch.testing.assert_close(got.double(), naive_unclipped(rew, end, trunc, val), rtol=1e-5, atol=1e-5)
    clipped = lambda_returns(rew, end, trunc, val, 0.9, 0.8)
    torch.testing.assert_close(clipped, lambda_returns(rew.sign(), end, trunc, val, 0.9, 0.8))
    assert not torch.allclose(got, clipped)

    cfg = ActorCriticConfig(gamma=0.9, lambda_=0.8)
    logits = torch.randn(6, 9, 3, generator=gen, requires_grad=True)
    values = torch.randn(6, 9, generator=gen, requires_grad=True)
    actions = torch.randint(3, (6, 9), generator=gen)
    _, metrics = actor_critic_loss(logits, values, actions, rew, end, trunc, val, cfg, clip_rewards=False)
    assert float(metrics["return"]) == pytest.approx(float(got.mean()), rel=1e-5)
    assert float(metrics["reward_mean"]) == pytest.approx(float(rew.mean()), rel=1e-5)
    _, metrics_sign = actor_critic_loss(logits, values, actions, rew, end, trunc, val, cfg)
    assert "reward_mean" not in metrics_sign
    assert float(metrics_sign["return"]) == pytest.approx(float(clipped.mean()), rel=1e-5)
