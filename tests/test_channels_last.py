"""Channels-last networks give the plain (N, C, H, W) networks' results.

The three networks run in channels-last memory order (``blocks.channels_last``). oneDNN then sums the
convolutions in another order: the denoiser's loss and samples, the reward model's loss, the actor-critic's
outputs and every gradient agree with the plain (N, C, H, W) networks to 1e-4 (absolute and relative;
typical differences are around 1e-6).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from diffworld.models import actor_critic, blocks, reward_termination
from diffworld.models.diffusion import unet
from numerics_cases import actor_critic_case, denoiser_batch, loss_and_grads, reward_model_case, tiny_denoiser


@pytest.fixture
def plain_networks(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Calling the fixture's value switches the networks to their plain paths: (N, C, H, W) memory order and
    no recomputation."""

    def switch() -> None:
        for module in (unet, reward_termination, actor_critic):
            monkeypatch.setattr(module, "channels_last", lambda x: x)
        monkeypatch.setattr(blocks, "norm_act_conv", blocks._norm_act_conv)

    return switch


CL_TOL = {"atol": 1e-4, "rtol": 1e-4}


def assert_all_close(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> None:
    assert len(xs) == len(ys) > 1
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x, y, **CL_TOL)


def test_denoiser_loss_and_sampler_match_plain_networks(plain_networks: Callable[[], None]) -> None:
    model, batch = tiny_denoiser(), denoiser_batch()
    prev_obs, prev_act = batch.obs[:, :4], batch.act[:, :4]
    sampler = model.sampler(model.cfg.sampler)

    def run() -> tuple[list[torch.Tensor], torch.Tensor]:
        torch.manual_seed(3)  # the same training noise for both paths
        grads = loss_and_grads(model, lambda: model(batch)[0])
        sample = sampler.predict_next(prev_obs, prev_act, torch.Generator().manual_seed(4))
        return grads, sample

    layouts: list[bool] = []
    model.net.conv_in.register_forward_hook(
        lambda module, args, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    grads, sample = run()
    plain_networks()
    grads_ref, sample_ref = run()
    assert layouts[0] and not layouts[-1]  # the two paths really differ in memory order
    assert_all_close(grads, grads_ref)
    # Samples are quantized to 8-bit levels: a 1e-6 difference may cross a rounding boundary (one level).
    assert (sample - sample_ref).abs().max() <= 2 / 255 + 1e-6
    assert (sample != sample_ref).float().mean() < 0.01


def test_reward_model_loss_matches_plain_networks(plain_networks: Callable[[], None]) -> None:
    model, loss = reward_model_case()
    grads = loss_and_grads(model, loss)
    plain_networks()
    assert_all_close(grads, loss_and_grads(model, loss))


def test_actor_critic_matches_plain_networks(plain_networks: Callable[[], None]) -> None:
    model, outputs = actor_critic_case()
    grads = loss_and_grads(model, outputs)
    plain_networks()
    assert_all_close(grads, loss_and_grads(model, outputs))
