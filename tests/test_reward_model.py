"""The reward/termination model: shapes, size, padding, recurrent state, gradients, and that it can learn."""

from __future__ import annotations

import pytest
import torch

from diffworld.config.schema import RewardTerminationConfig
from diffworld.data.batch import Batch
from diffworld.models.reward_termination import RewardTerminationModel

NUM_ACTIONS = 3
SIZE = 32
"""Small frames keep the tests fast; the paper's 64x64 size is checked on the full model."""


def small_model(seed: int = 0) -> RewardTerminationModel:
    torch.manual_seed(seed)
    cfg = RewardTerminationConfig(channels=[8, 8, 8, 8], cond_channels=16, lstm_dim=32)
    return RewardTerminationModel(cfg, NUM_ACTIONS, img_size=SIZE)


def make_batch(b: int = 4, t: int = 6, seed: int = 0) -> Batch:
    """Row 0 fully real, row 1 left-padded by 2 steps, row 2 ends (terminates) at step 3 then right padding,
    row 3 both; padding frames are 0 and padding steps have act 0, rew 0, end/trunc False."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, :2] = False
    mask[2, 4:] = False
    mask[3, :1] = False
    mask[3, 3:] = False
    end = torch.zeros(b, t, dtype=torch.bool)
    end[2, 3] = True
    end[3, 2] = True
    rew = torch.randint(-1, 2, (b, t), generator=gen).float() * torch.rand(b, t, generator=gen) * 5
    act = torch.randint(NUM_ACTIONS, (b, t), generator=gen)
    obs = torch.rand(b, t + 1, 3, SIZE, SIZE, generator=gen) * 2 - 1
    batch = Batch.of_steps(obs, act, rew, end, torch.zeros(b, t, dtype=torch.bool), mask)
    obs[~batch.frame_mask] = 0.0
    act[~mask] = 0
    rew[~mask] = 0.0
    return batch


def perturb_zero_init(model: torch.nn.Module) -> None:
    """Give the zero-initialized parameters (residual convs, attention outputs) random values, so that
    gradients reach the parameters upstream of them too."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if torch.all(p == 0):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def test_full_size_model() -> None:
    """The paper's settings: 5,900,864 parameters (the official model's count), 64x64 pairs encoded into
    32 x 8 x 8 = 2,048 features."""
    full = RewardTerminationModel(RewardTerminationConfig(), 4)
    assert sum(p.numel() for p in full.parameters()) == 5_900_864
    assert abs(5_900_864 + 14 * 128 - 5.90e6) < 5e3  # 18 actions: 14 more embedding rows of 128
    assert full.lstm.input_size == 2048
    with torch.no_grad():
        feats = full.encoder(torch.zeros(2, 6, 64, 64), full.act_emb(torch.tensor([0, 1])))
    assert feats.shape == (2, 32, 8, 8)


def test_predict_shapes() -> None:
    model = small_model()
    batch = make_batch()
    logits_rew, logits_end, (h, c) = model.predict(batch.obs[:, :-1], batch.act, batch.obs[:, 1:])
    assert logits_rew.shape == (4, 6, 3) and logits_end.shape == (4, 6, 2)
    assert h.shape == c.shape == (1, 4, 32)


@pytest.mark.parametrize("masked", [False, True])
def test_state_carried_across_calls(masked: bool) -> None:
    model = small_model()
    batch = make_batch()
    obs, act, next_obs = batch.obs[:, :-1], batch.act, batch.obs[:, 1:]
    mask = batch.step_mask if masked else None
    with torch.no_grad():
        rew_all, end_all, state_all = model.predict(obs, act, next_obs, mask=mask)
        rew_a, end_a, state = model.predict(
            obs[:, :4], act[:, :4], next_obs[:, :4], mask=None if mask is None else mask[:, :4]
        )
        for i in range(4, 6):  # then step by step, as in imagination
            step_mask = None if mask is None else mask[:, i : i + 1]
            rew_i, end_i, state = model.predict(
                obs[:, i : i + 1], act[:, i : i + 1], next_obs[:, i : i + 1], state, step_mask
            )
            rew_a, end_a = torch.cat([rew_a, rew_i], 1), torch.cat([end_a, end_i], 1)
    torch.testing.assert_close(rew_a, rew_all)
    torch.testing.assert_close(end_a, end_all)
    torch.testing.assert_close(state[0], state_all[0])
    torch.testing.assert_close(state[1], state_all[1])


def test_all_true_mask_equals_no_mask() -> None:
    model = small_model()
    batch = make_batch()
    args = (batch.obs[:, :-1], batch.act, batch.obs[:, 1:])
    with torch.no_grad():
        a = model.predict(*args)
        b = model.predict(*args, mask=torch.ones(4, 6, dtype=torch.bool))
    for x, y in zip(a[:2] + a[2], b[:2] + b[2], strict=True):
        torch.testing.assert_close(x, y)


def test_padding_contributes_nothing() -> None:
    model = small_model()
    batch = make_batch()
    loss, metrics = model(batch)
    gen = torch.Generator().manual_seed(3)
    pad_frames, pad_steps = ~batch.frame_mask, ~batch.step_mask
    obs, act, rew, end = batch.obs.clone(), batch.act.clone(), batch.rew.clone(), batch.end.clone()
    obs[pad_frames] = torch.rand(int(pad_frames.sum()), 3, SIZE, SIZE, generator=gen) * 2 - 1
    act[pad_steps] = torch.randint(NUM_ACTIONS, (int(pad_steps.sum()),), generator=gen)
    rew[pad_steps] = 1.0
    end[pad_steps] = True
    changed = Batch.of_steps(obs, act, rew, end, batch.trunc, batch.step_mask)
    loss2, metrics2 = model(changed)
    torch.testing.assert_close(loss2, loss)
    for key, value in metrics.items():
        torch.testing.assert_close(metrics2[key], value)
    # a real step does count
    rew[0, 0] = -rew[0, 0] if rew[0, 0] != 0 else 1.0
    assert not torch.allclose(
        model(Batch.of_steps(obs, act, rew, end, batch.trunc, batch.step_mask))[0], loss
    )


def test_loss_is_mean_cross_entropy_over_real_steps() -> None:
    model = small_model()
    batch = make_batch()
    loss, metrics = model(batch)
    logits_rew, logits_end, _ = model.predict(
        batch.obs[:, :-1], batch.act, batch.obs[:, 1:], mask=batch.step_mask
    )
    m = batch.step_mask
    ce = torch.nn.functional.cross_entropy
    loss_rew = ce(logits_rew[m], batch.rew[m].sign().long() + 1)
    loss_end = ce(logits_end[m], batch.end[m].long())
    torch.testing.assert_close(metrics["loss_rew"], loss_rew.detach())
    torch.testing.assert_close(metrics["loss_end"], loss_end.detach())
    torch.testing.assert_close(loss, loss_rew + loss_end)
    acc = (logits_end[m].argmax(-1) == batch.end[m]).float().mean()
    torch.testing.assert_close(metrics["acc_end"], acc)
    assert all(not v.requires_grad and v.ndim == 0 for v in metrics.values())


def test_gradients_reach_every_parameter() -> None:
    model = small_model()
    perturb_zero_init(model)
    batch = make_batch()
    batch.act[0, :3] = torch.arange(NUM_ACTIONS)  # every action embedding is used
    loss, _ = model(batch)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_overfits_one_batch() -> None:
    model = small_model()
    batch = make_batch(b=4, t=6, seed=5)
    real = batch.step_mask
    batch.rew[real] = torch.tensor([-1.0, 0.0, 2.0]).repeat(10)[: int(real.sum())]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model(batch)[0].item()
    for _ in range(40):
        loss, metrics = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first, (first, loss.item())
    assert metrics["acc_rew"] > 0.9 and metrics["acc_end"] == 1.0
