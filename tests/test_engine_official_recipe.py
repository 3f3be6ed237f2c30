"""The engine follows the official CS:GO training recipe (docs/engine.md, "The official CS:GO recipe"):
segment lengths, padding without actions, summed gradient accumulation, per-process batch sizes, the
conditioning frames re-noised at every denoising step, the ``higher_quality`` samplers and the bicubic
low-resolution frames of older engines' configurations. Each is checked against an independent
computation; the official code's own outputs are in ``test_engine_official_equivalence.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from diffworld.cli import SETTINGS
from diffworld.config.loading import to_yaml
from diffworld.data.batch import Batch
from diffworld.engine.config import (
    EngineSamplerConfig,
    LowResFilter,
    build_engine_config,
    load_engine_config,
)
from diffworld.engine.denoiser import EngineDenoiser
from diffworld.engine.open_engine import SamplerSettings, sampler_configs
from diffworld.errors import UserError
from diffworld.fitting.distributed import Processes, per_process_batch_size
from diffworld.fitting.update import train_updates
from diffworld.models.action_encoder import ActionEncoder
from test_engine_models import SPEC, make_batch, nonzero_init, random_actions, small_cfg

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_csgo_preset_trains_the_official_segment_lengths_with_per_process_batches() -> None:
    # The official csgo trainer: num_autoregressive_steps 4 (denoiser) and 1 (upsampler) after the first
    # prediction, so segments of L + 5 and 1 + 2 frames; batch sizes per GPU; summed accumulation.
    cfg = build_engine_config(["data=x"])
    assert cfg.upsampler is not None
    assert cfg.denoiser.num_cond_frames + cfg.denoiser.training.num_autoregressive_steps == 4 + 1 + 4
    assert cfg.upsampler.num_cond_frames + cfg.upsampler.training.num_autoregressive_steps == 1 + 1 + 1
    assert cfg.training.batch_size_per_process
    assert cfg.denoiser.training.grad_accumulation.value == "sum"
    assert cfg.low_res_filter is LowResFilter.bicubic


def test_padding_steps_have_no_action_embedding() -> None:
    encoder = ActionEncoder(SPEC, 8)
    g = torch.Generator().manual_seed(0)
    act = random_actions(SPEC, (2, 3), g)
    valid = torch.tensor([[False, True, True], [True, True, True]])
    out = encoder(act, valid)
    assert torch.equal(out[0, 0], torch.zeros(8))
    torch.testing.assert_close(out[0, 1:], encoder(act)[0, 1:])
    torch.testing.assert_close(out[1], encoder(act)[1])


def test_the_loss_does_not_see_the_actions_of_padding_steps() -> None:
    model = EngineDenoiser(small_cfg(), SPEC)
    nonzero_init(model)
    batch = make_batch(3, 3, (6, 10), SPEC)
    mask = torch.tensor([[False, True, True], [True, True, True], [True, True, True]])
    padded = Batch(obs=batch.obs * mask[:, :, None, None, None], act=batch.act, frame_mask=mask)
    other_act = batch.act.clone()
    other_act[0, 0] = random_actions(SPEC, (1,), torch.Generator().manual_seed(9))[0]
    assert not torch.equal(other_act, batch.act)

    def loss(b: Batch) -> torch.Tensor:
        torch.manual_seed(1)
        return model(b)[0]

    assert torch.equal(loss(padded), loss(dataclasses.replace(padded, act=other_act)))
    other_real = batch.act.clone()
    other_real[0, 1] = other_act[0, 0]
    assert not torch.equal(loss(padded), loss(dataclasses.replace(padded, act=other_real)))


class _Batches:
    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = iter(batches)

    def sample(self) -> torch.Tensor:
        return next(self.batches)

    def batches_left(self) -> None:
        return None


class _Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = (self.w * x).sum() ** 2
        return loss, {"loss": loss.detach()}


@pytest.mark.parametrize("sum_accumulated", [True, False])
def test_accumulated_gradients_are_summed_as_the_official_trainer(sum_accumulated: bool) -> None:
    batches = [torch.tensor([1.0, 2.0]), torch.tensor([-3.0, 0.5]), torch.tensor([0.25, 4.0])]
    # Independently: d/dw (w . x)^2 = 2 (w . x) x per batch, at w = (1, -2).
    w = torch.tensor([1.0, -2.0])
    grads = [2 * (w @ x) * x for x in batches]
    expected = sum(grads) if sum_accumulated else sum(grads) / 3
    assert isinstance(expected, torch.Tensor)
    model = _Quadratic()
    seen: list[torch.Tensor] = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    optimizer.register_step_pre_hook(lambda *_: seen.append(model.w.grad.clone()))  # type: ignore[union-attr]
    result = train_updates(
        model,
        _Batches(batches),
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
        steps=1,
        grad_acc_steps=3,
        max_grad_norm=1e9,
        autocast=contextlib.nullcontext,
        sum_accumulated=sum_accumulated,
    )
    torch.testing.assert_close(seen[0], expected)
    torch.testing.assert_close(result.metrics["grad_norm"], float(expected.norm()))


def test_batch_sizes_global_or_per_process() -> None:
    four = Processes(rank=1, world_size=4, local_rank=1)
    assert per_process_batch_size(16, four, "denoiser.training.batch_size") == 4
    assert per_process_batch_size(16, four, "denoiser.training.batch_size", per_process=True) == 16
    assert per_process_batch_size(6, four, "k", per_process=True) == 6
    with pytest.raises(UserError, match="multiple of 4"):
        per_process_batch_size(6, four, "k")


def test_the_conditioning_frames_are_noised_again_at_every_step() -> None:
    # Two Euler steps with s_cond: the official sampler adds fresh noise of std s_cond to the (already
    # noised) conditioning frames before each step, and tells the network the level s_cond both times.
    model = EngineDenoiser(small_cfg(), SPEC)
    nonzero_init(model)
    batch = make_batch(2, 2, (6, 10), SPEC)
    calls: list[tuple[torch.Tensor | None, ...]] = []
    original = model.net.forward
    model.net.forward = lambda *a: calls.append(a) or original(*a)  # type: ignore[method-assign]
    cfg = EngineSamplerConfig(num_steps=2, sigma_min=0.5, sigma_max=5.0, s_cond=0.01)
    model.sampler(cfg).predict_next(batch.obs, batch.act, torch.Generator().manual_seed(4))

    g = torch.Generator().manual_seed(4)
    torch.randn(2, 3, 6, 10, generator=g)  # the initial noise
    flat = batch.obs.flatten(1, 2)
    expected = []
    for _ in range(2):
        torch.randn(2, 6, 1, 1, generator=g)  # the zero offset noise's draw
        flat = flat + 0.01 * torch.randn(flat.shape, generator=g)
        expected.append(flat.view_as(batch.obs) / 0.5)
    assert len(calls) == 2
    for call, cond in zip(calls, expected, strict=True):
        torch.testing.assert_close(call[3], cond)
        torch.testing.assert_close(call[2], torch.full((2,), math.log(0.01) / 4))


def test_higher_quality_samplers_are_the_official_files() -> None:
    cfg = build_engine_config(["data=x"])
    fast_d, fast_u = sampler_configs(cfg, SamplerSettings.fast)
    assert fast_d == cfg.denoiser.sampler and fast_u == cfg.upsampler.sampler  # type: ignore[union-attr]
    assert (fast_d.num_steps, fast_d.order, fast_d.s_cond) == (1, 1, 0.005)
    assert fast_u is not None and (fast_u.num_steps, fast_u.order, fast_u.s_churn) == (1, 2, 10.0)
    hq_d, hq_u = sampler_configs(cfg, SamplerSettings.higher_quality)
    # config/world_model_env/higher_quality.yaml of the official csgo branch.
    assert (hq_d.num_steps, hq_d.order, hq_d.s_cond, hq_d.sigma_min, hq_d.sigma_max) == (
        3,
        1,
        0.005,
        2e-3,
        5.0,
    )
    assert hq_u is not None
    assert (hq_u.num_steps, hq_u.order, hq_u.sigma_min, hq_u.sigma_max) == (10, 1, 1.0, 5.0)
    assert (hq_u.s_churn, hq_u.s_tmin, hq_u.s_tmax, hq_u.s_noise, hq_u.s_cond) == (10.0, 1.0, 5.0, 0.9, 0.0)


def test_the_command_line_names_every_sampler_setting() -> None:
    assert tuple(s.value for s in SamplerSettings) == SETTINGS


def test_a_configuration_written_before_the_bicubic_filter_reads_as_area(tmp_path: Path) -> None:
    cfg = build_engine_config(["data=x", "preset=smoke"])
    text = to_yaml(cfg)
    assert "low_res_filter: bicubic" in text
    (tmp_path / "new.yaml").write_text(text)
    assert load_engine_config(tmp_path / "new.yaml").low_res_filter is LowResFilter.bicubic
    (tmp_path / "old.yaml").write_text(text.replace("low_res_filter: bicubic\n", ""))
    assert load_engine_config(tmp_path / "old.yaml").low_res_filter is LowResFilter.area
