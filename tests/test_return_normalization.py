"""actor_critic.return_normalization: ``none`` (the paper's, no state added) and ``percentile`` (DreamerV3's:
the advantages divided by max(1, P95 - P5) of the returns, the percentiles moving averages kept in the
actor-critic's state), against a numpy computation written from DreamerV3's definition."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from diffworld.config import ConfigError, build_config
from diffworld.config.schema import ActorCriticConfig, ReturnNormalization
from diffworld.models.actor_critic import ActorCritic, PercentileReturnScale, actor_critic_loss

NUM_ACTIONS = 3


def _small(normalization: ReturnNormalization = ReturnNormalization.none) -> ActorCriticConfig:
    return ActorCriticConfig(channels=[4, 4], lstm_dim=8, return_normalization=normalization)


def _inputs(seed: int, b: int = 6, h: int = 5, reward_scale: float = 40.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(b, h, NUM_ACTIONS, generator=gen).requires_grad_(),
        "values": (torch.randn(b, h, generator=gen) * 10).requires_grad_(),
        "actions": torch.randint(NUM_ACTIONS, (b, h), generator=gen),
        "rew": torch.rand(b, h, generator=gen) * reward_scale + seed,  # dense, a scale far above 1
        "end": torch.zeros(b, h, dtype=torch.bool),
        "trunc": torch.zeros(b, h, dtype=torch.bool),
        "next_values": torch.randn(b, h, generator=gen),
    }


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_the_key() -> None:
    assert build_config(["game=Breakout"]).actor_critic.return_normalization is ReturnNormalization.none
    assert (
        build_config(["game=dmc:cup-catch", "preset=dmc"]).actor_critic.return_normalization == "percentile"
    )
    with pytest.raises(ConfigError, match="return_normalization"):
        build_config(["game=Pong", "actor_critic.return_normalization=zscore"])


def test_none_adds_no_state_and_percentile_draws_nothing() -> None:
    torch.manual_seed(0)
    plain = ActorCritic(_small(), NUM_ACTIONS, img_size=16)
    rng_plain = torch.get_rng_state()
    torch.manual_seed(0)
    normed = ActorCritic(_small(ReturnNormalization.percentile), NUM_ACTIONS, img_size=16)
    assert plain.return_scale is None
    assert not any("return_scale" in name for name in plain.state_dict())
    extra = [name for name in normed.state_dict() if name not in plain.state_dict()]
    assert extra == ["return_scale.low", "return_scale.high"]
    # The buffers come after every parameter, which keep their names, order and values.
    for (n1, p1), (n2, p2) in zip(plain.named_parameters(), normed.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    assert torch.equal(rng_plain, torch.get_rng_state())


@pytest.mark.parametrize("masked", [False, True])
def test_percentile_scale_against_numpy(masked: bool) -> None:
    """Three updates of growing reward scale: the EMAs of P5 and P95 (from 0, decay 0.99, linear
    interpolation), the scale max(1, high - low) dividing the REINFORCE weights only, and the critic's raw
    targets. gamma = 0 makes the lambda-returns the (unclipped) rewards themselves."""
    cfg = ActorCriticConfig(gamma=0.0, value_loss_weight=0.5, entropy_weight=0.0)
    scale_module = PercentileReturnScale()
    low = high = 0.0
    for step in range(3):
        x = _inputs(step, reward_scale=40.0 * 10**step)
        mask = torch.rand(6, 5, generator=torch.Generator().manual_seed(10 + step)) < 0.7 if masked else None
        _, metrics = actor_critic_loss(**x, cfg=cfg, mask=mask, clip_rewards=False, return_scale=scale_module)
        _, plain = actor_critic_loss(**x, cfg=cfg, mask=mask, clip_rewards=False)

        g = x["rew"].double().numpy()
        v = x["values"].detach().double().numpy()
        keep = np.ones_like(g, dtype=bool) if mask is None else mask.numpy()
        p5, p95 = np.percentile(g[keep], [5, 95])
        low, high = 0.99 * low + 0.01 * p5, 0.99 * high + 0.01 * p95
        scale = max(1.0, high - low)
        logp = _log_softmax(x["logits"].detach().double().numpy())
        logp_a = np.take_along_axis(logp, x["actions"].numpy()[..., None], -1)[..., 0]
        policy_loss = (-logp_a * (g - v) / scale)[keep].mean()
        value_loss = 0.5 * ((v - g) ** 2)[keep].mean()

        assert float(scale_module.low) == pytest.approx(low, rel=1e-5)
        assert float(scale_module.high) == pytest.approx(high, rel=1e-5)
        assert float(metrics["return_scale"]) == pytest.approx(scale, rel=1e-5)
        assert float(metrics["policy_loss"]) == pytest.approx(policy_loss, rel=1e-4)
        assert float(metrics["value_loss"]) == pytest.approx(value_loss, rel=1e-5)
        assert float(plain["value_loss"]) == pytest.approx(value_loss, rel=1e-5)
        assert "return_scale" not in plain
        if step == 0:
            assert scale == 1.0  # the EMA starts at 0: the first spreads are below 1
    assert scale > 1.0  # the last: the spread has grown past 1


def test_the_percentiles_are_checkpointed_and_diagnostics_leave_them() -> None:
    cfg = _small(ReturnNormalization.percentile)
    model = ActorCritic(cfg, NUM_ACTIONS, img_size=16)
    assert model.return_scale is not None
    loss_cfg = ActorCriticConfig(gamma=0.0)
    for step in range(2):
        actor_critic_loss(**_inputs(step), cfg=loss_cfg, clip_rewards=False, return_scale=model.return_scale)
    before = model.return_scale.low.clone(), model.return_scale.high.clone()
    assert before[1] > before[0]
    _, metrics = actor_critic_loss(
        **_inputs(5),
        cfg=loss_cfg,
        clip_rewards=False,
        return_scale=model.return_scale,
        update_return_scale=False,
    )
    assert torch.equal(model.return_scale.low, before[0]) and torch.equal(model.return_scale.high, before[1])
    assert float(metrics["return_scale"]) == max(1.0, float(before[1] - before[0]))

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = ActorCritic(cfg, NUM_ACTIONS, img_size=16)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.return_scale is not None
    assert torch.equal(restored.return_scale.low, before[0])
    assert torch.equal(restored.return_scale.high, before[1])
