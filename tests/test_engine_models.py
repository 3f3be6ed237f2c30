"""The engine's models: action encoder, network, denoiser with noise augmentation, upsampler and their
samplers, each formula checked against an independent computation (docs/engine.md, "Models")."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from diffworld.config.schema import SigmaDistributionConfig
from diffworld.data.actions import ActionSpec, bins, continuous, discrete, keys
from diffworld.data.batch import Batch
from diffworld.engine.config import (
    EngineConfig,
    EngineDenoiserConfig,
    EngineSamplerConfig,
    UpsamplerConfig,
    build_engine_config,
    with_low_res,
)
from diffworld.engine.denoiser import EngineDenoiser, Upsampler
from diffworld.models.action_encoder import ActionEncoder
from diffworld.models.diffusion.layout import WorldModelLayout
from diffworld.models.diffusion.sampling import quantize, quantize_floor
from diffworld.models.diffusion.unet import ConditionedUNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ActionSpec.of(
    keys(["w", "a", "s"]),
    discrete("weapon", 3),
    bins("mouse_x", [-10.0, 0.0, 10.0, 20.0]),
    continuous("stick", -2, 2),
)


def random_actions(spec: ActionSpec, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    columns = []
    for component, cols in spec.columns():
        n = cols.stop - cols.start
        if component.kind == "keys":
            columns.append(torch.randint(0, 2, (*shape, n), generator=generator).float())
        elif component.kind in ("discrete", "bins"):
            columns.append(torch.randint(0, component.n, (*shape, 1), generator=generator).float())  # type: ignore[union-attr]
        else:
            columns.append(torch.rand((*shape, 1), generator=generator) * 4 - 2)
    return torch.cat(columns, dim=-1)


def small_cfg(**changes: Any) -> EngineDenoiserConfig:
    cfg = EngineDenoiserConfig(
        num_cond_frames=2,
        cond_channels=16,
        channels=[8, 8, 8, 8],
        depths=[1, 1, 1, 1],
        attn_depths=[False, False, False, True],
    )
    cfg.training.num_autoregressive_steps = 1
    return dataclasses.replace(cfg, **changes)


def small_upsampler_cfg(**changes: Any) -> UpsamplerConfig:
    base = small_cfg(num_cond_frames=1, noise_previous_obs=False)
    return UpsamplerConfig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, **changes)


def nonzero_init(module: torch.nn.Module) -> None:
    """Random output layers: the zero-initialized ones would hide the network's inputs."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in module.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


# --- action encoder -------------------------------------------------------------------------------


def test_action_encoder_is_one_table_times_the_one_hot_layout() -> None:
    g = torch.Generator().manual_seed(0)
    encoder = ActionEncoder(SPEC, dim=5)
    act = random_actions(SPEC, (4, 3), g)
    # Independent computation: keys as they are, discrete and bins one-hot, continuous mapped to [-1, 1],
    # times the tables stacked (the official CS:GO model's form).
    layout = torch.cat(
        [
            act[..., 0:3],
            F.one_hot(act[..., 3].long(), 3).float(),
            F.one_hot(act[..., 4].long(), 4).float(),
            act[..., 5:6] / 2,
        ],
        dim=-1,
    )
    table = torch.cat([t.weight for t in encoder.tables])  # type: ignore[union-attr]
    assert table.shape == (3 + 3 + 4 + 1, 5)
    torch.testing.assert_close(encoder(act), layout @ table)


def test_action_encoder_of_one_discrete_component_is_an_embedding() -> None:
    spec = ActionSpec.of(discrete("action", 6))
    encoder = ActionEncoder(spec, dim=4)
    act = torch.tensor([[[0.0], [5.0]], [[2.0], [3.0]]])
    torch.testing.assert_close(encoder(act), encoder.tables[0].weight[act[..., 0].long()])  # type: ignore[index]


def test_action_encoder_refuses_another_width() -> None:
    with pytest.raises(ValueError, match="width 3"):
        ActionEncoder(SPEC, 4)(torch.zeros(1, 2, 3))


# --- network --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(30, 56), (42, 32), (7, 9)])
def test_network_keeps_any_frame_size(h: int, w: int) -> None:
    cfg = small_cfg()
    net = ConditionedUNet(cfg, WorldModelLayout.engine_denoiser(SPEC))
    nonzero_init(net)
    g = torch.Generator().manual_seed(1)
    out = net(
        torch.randn(2, 3, h, w),
        torch.randn(2),
        torch.randn(2),
        torch.randn(2, 2, 3, h, w),
        random_actions(SPEC, (2, 2), g),
    )
    assert out.shape == (2, 3, h, w)
    assert out.abs().sum() > 0


def test_network_pads_like_a_padded_input() -> None:
    # The output on a 30x56 frame is the top-left of the U-Net's output on its zero-padded 32x56 features.
    cfg = small_cfg()
    net = ConditionedUNet(cfg, WorldModelLayout.engine_denoiser(SPEC))
    nonzero_init(net)
    g = torch.Generator().manual_seed(2)
    args = (torch.randn(1, 3, 30, 56), torch.randn(1), torch.randn(1), torch.randn(1, 2, 3, 30, 56))
    act = random_actions(SPEC, (1, 2), g)
    seen: dict[str, torch.Tensor] = {}
    hook = net.unet.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0], out=out))
    net(*args, act)
    hook.remove()
    assert seen["x"].shape[-2:] == (32, 56)
    assert seen["x"][..., 30:, :].abs().sum() == 0
    cond = net.cond_proj(net.noise_emb(args[1]) + net.noise_cond_emb(args[2]) + net.act_emb(act).flatten(1))  # type: ignore[misc]
    features = net.conv_in(torch.cat([args[3].flatten(1, 2), args[0]], dim=1))
    unet_out = net.unet(F.pad(features, (0, 0, 0, 2)), cond)[..., :30, :]
    expected = net.conv_out(F.silu(net.norm_out(unet_out)))
    torch.testing.assert_close(net(*args, act), expected, rtol=1e-4, atol=1e-5)


# --- denoiser: noise augmentation -----------------------------------------------------------------


def make_batch(b: int, t: int, size: tuple[int, int], spec: ActionSpec, factor: int | None = None) -> Batch:
    g = torch.Generator().manual_seed(3)
    full = None
    if factor is not None:
        full = torch.rand(b, t, 3, size[0] * factor, size[1] * factor, generator=g) * 2 - 1
        obs = F.interpolate(full.flatten(0, 1), size=size, mode="area").unflatten(0, (b, t))
    else:
        obs = torch.rand(b, t, 3, *size, generator=g) * 2 - 1
    return Batch(
        obs=obs,
        act=random_actions(spec, (b, t), g),
        frame_mask=torch.ones(b, t, dtype=torch.bool),
        obs_full=full,
    )


def sigma_training(n: int, cfg: SigmaDistributionConfig) -> torch.Tensor:
    return (torch.randn(n) * cfg.scale + cfg.loc).exp().clamp(cfg.sigma_min, cfg.sigma_max)


def edm_constants(sigma: torch.Tensor, sigma_data: float, offset: float) -> tuple[torch.Tensor, ...]:
    s = torch.sqrt(sigma**2 + offset**2)
    c_in = 1 / torch.sqrt(s**2 + sigma_data**2)
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s * sigma_data / torch.sqrt(s**2 + sigma_data**2)
    return c_in, c_skip, c_out, torch.log(s) / 4


def noised(x: torch.Tensor, sigma: torch.Tensor, offset: float) -> torch.Tensor:
    """x + offset noise + sigma eps, drawn in the official code's order: the per-channel offsets, then eps."""
    shift = offset * torch.randn(*x.shape[:2], 1, 1)
    eps = torch.randn(x.shape)
    return x + shift + sigma[:, None, None, None] * eps


COND_LAW = SigmaDistributionConfig(loc=-1.2, scale=1.2, sigma_min=2e-3, sigma_max=20.0)
"""A law of the conditioning frames' noise of its own (the ``cpu`` preset's), other than the training law."""


@pytest.mark.parametrize(
    ("noise_previous_obs", "cond_law"),
    [(True, None), (True, COND_LAW), (False, None)],
    ids=["noised context, the training law", "noised context, a law of its own", "clean context"],
)
def test_denoiser_loss_with_noise_augmentation(
    noise_previous_obs: bool, cond_law: SigmaDistributionConfig | None
) -> None:
    cfg = small_cfg(
        noise_previous_obs=noise_previous_obs,
        sigma_distribution=SigmaDistributionConfig(loc=1.2, scale=0.5, sigma_min=2e-3, sigma_max=20.0),
        sigma_cond_distribution=cond_law,
    )
    model = EngineDenoiser(cfg, SPEC)
    nonzero_init(model)
    batch = make_batch(3, 3, (6, 10), SPEC)
    torch.manual_seed(11)
    loss, metrics = model(batch)

    # Independently: sigma_cond and the noised past frames (then c_noise_cond = log(sigma_cond) / 4), sigma
    # and the noisy target, EDM's preconditioning and target, the mean squared error.
    torch.manual_seed(11)
    prev, target_frame, act = batch.obs[:, :2], batch.obs[:, 2], batch.act[:, :2]
    noise_cond = torch.zeros(3)
    if noise_previous_obs:
        sigma_cond = sigma_training(3, cond_law or cfg.sigma_distribution)
        prev = noised(prev.flatten(1, 2), sigma_cond, cfg.sigma_offset_noise).view_as(prev)
        noise_cond = sigma_cond.log() / 4
    sigma = sigma_training(3, cfg.sigma_distribution)
    noisy = noised(target_frame, sigma, cfg.sigma_offset_noise)
    c_in, c_skip, c_out, c_noise = (c.view(-1, 1, 1, 1) for c in edm_constants(sigma, 0.5, 0.1))
    output = model.net(c_in * noisy, c_noise.flatten(), noise_cond, prev / 0.5, act)
    expected = ((output - (target_frame - c_skip * noisy) / c_out) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    assert metrics["loss"] == loss.detach()


def test_denoiser_training_is_deterministic() -> None:
    batch = make_batch(2, 3, (6, 10), SPEC)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = EngineDenoiser(small_cfg(), SPEC)
        losses.append(model(batch)[0])
    assert losses[0].item() == losses[1].item()


def test_denoiser_refuses_a_segment_of_another_length() -> None:
    model = EngineDenoiser(small_cfg(), SPEC)
    with pytest.raises(ValueError, match="3 frames"):
        model(make_batch(1, 4, (6, 10), SPEC))


def test_denoiser_sampler_noises_the_conditioning_at_s_cond() -> None:
    cfg = small_cfg()
    model = EngineDenoiser(cfg, SPEC)
    nonzero_init(model)
    batch = make_batch(2, 2, (6, 10), SPEC)
    calls: list[tuple[torch.Tensor, ...]] = []
    original = model.net.forward
    model.net.forward = lambda *a: calls.append(a) or original(*a)  # type: ignore[method-assign]
    sampler_cfg = EngineSamplerConfig(num_steps=1, sigma_min=2e-3, sigma_max=5.0, s_cond=0.005)
    frames = model.sampler(sampler_cfg).predict_next(batch.obs, batch.act, torch.Generator().manual_seed(4))

    # Independently, with the generator's draws in the official sampler's order: the initial unit noise, then
    # the conditioning noise (the zero offset's draw, then eps); one Euler step from sigma 5 lands on D,
    # floored.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 6, 10, generator=g)
    flat = batch.obs.flatten(1, 2)
    torch.randn(2, 6, 1, 1, generator=g)
    eps = torch.randn(flat.shape, generator=g)
    prev = (flat + 0.005 * eps).view_as(batch.obs)
    c_in, c_skip, c_out, c_noise = (
        c.view(-1, 1, 1, 1) for c in edm_constants(torch.full((2,), 5.0), 0.5, 0.1)
    )
    assert len(calls) == 1
    torch.testing.assert_close(calls[0][2], torch.full((2,), math.log(0.005) / 4))
    torch.testing.assert_close(calls[0][3], prev / 0.5)
    out = original(c_in * x, c_noise.flatten(), torch.full((2,), math.log(0.005) / 4), prev / 0.5, batch.act)
    torch.testing.assert_close(frames, quantize(quantize_floor(c_skip * x + c_out * out)))


def test_denoiser_sampler_is_deterministic() -> None:
    model = EngineDenoiser(small_cfg(), SPEC)
    nonzero_init(model)
    batch = make_batch(2, 2, (6, 10), SPEC)
    sampler = model.sampler(EngineSamplerConfig(num_steps=3, s_cond=0.005))
    a = sampler.predict_next(batch.obs, batch.act, torch.Generator().manual_seed(9))
    b = sampler.predict_next(batch.obs, batch.act, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert a.shape == (2, 3, 6, 10)


# --- upsampler ------------------------------------------------------------------------------------


def test_upsampler_input_assembly_30x56_to_150x280() -> None:
    cfg = small_upsampler_cfg(factor=5)
    model = Upsampler(cfg)
    nonzero_init(model)
    batch = make_batch(2, 2, (30, 56), SPEC, factor=5)
    assert batch.obs_full is not None and batch.obs_full.shape == (2, 2, 3, 150, 280)
    calls: list[tuple[torch.Tensor, ...]] = []
    original = model.net.forward
    model.net.forward = lambda *a: calls.append(a) or original(*a)  # type: ignore[method-assign]
    torch.manual_seed(0)
    loss, _ = model(batch)
    assert torch.isfinite(loss)
    (noisy, _, noise_cond, cond_images, act, act_valid) = calls[0]
    assert act_valid is None
    assert noisy.shape == (2, 3, 150, 280) and act is None
    # The previous full-resolution frame, then the target's low-resolution frame bicubic-upsampled
    # (independent: interpolation to the size), both / sigma_data; no augmentation: c_noise_cond 0.
    low_up = F.interpolate(batch.obs[:, 1], size=(150, 280), mode="bicubic", align_corners=False)
    torch.testing.assert_close(cond_images, torch.stack([batch.obs_full[:, 0], low_up], dim=1) / 0.5)
    assert torch.equal(noise_cond, torch.zeros(2))


def test_upsampler_sampler_heun_with_churn_as_the_official() -> None:
    # With F = 0, D(x; sigma) = c_skip(sigma) x. One step of the official fast settings: churn raises sigma
    # 5 to sigma_hat = 5 (1 + min(10, sqrt 2 - 1)), the denoiser is told 5, and the Euler step to 0 lands
    # on D.
    cfg = small_upsampler_cfg(factor=2)
    model = Upsampler(cfg)
    low = torch.rand(2, 3, 6, 10) * 2 - 1
    prev_full = torch.rand(2, 1, 3, 12, 20) * 2 - 1
    sampler_cfg = EngineSamplerConfig(
        num_steps=1, sigma_min=1.0, sigma_max=5.0, order=2, s_churn=10.0, s_tmin=1.0, s_tmax=5.0, s_noise=0.9
    )
    frames = model.sampler(sampler_cfg).upsample(low, prev_full, torch.Generator().manual_seed(3))
    assert frames.shape == (2, 3, 12, 20)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 12, 20, generator=g)
    sigma_hat = 5 * math.sqrt(2)
    x = x + torch.randn(x.shape, generator=g) * 0.9 * math.sqrt(sigma_hat**2 - 25)
    c_skip = edm_constants(torch.tensor(5.0), 0.5, 0.1)[1]
    torch.testing.assert_close(frames, quantize(quantize_floor(c_skip * x)))


def test_upsampler_refuses_a_batch_without_full_frames() -> None:
    model = Upsampler(small_upsampler_cfg())
    with pytest.raises(ValueError, match="obs_full"):
        model(make_batch(1, 2, (6, 10), SPEC))


# --- config ---------------------------------------------------------------------------------------


def test_presets_build_and_the_csgo_sizes() -> None:
    csgo = build_engine_config(["data=x"])
    assert csgo.denoiser.channels == [128, 256, 512, 1024] and csgo.denoiser.cond_channels == 2048
    assert csgo.upsampler is not None and csgo.upsampler.channels == [64, 64, 128, 256]
    # low_res is derived from the data: the CS:GO dataset's 150x280 frames / 5.
    assert csgo.low_res is None and with_low_res(csgo, (150, 280)).low_res == [30, 56]
    assert with_low_res(csgo, (150, 280)).full_res() == (150, 280)
    cpu = with_low_res(build_engine_config(["data=x", "preset=cpu"]), (210, 160))  # Atari frames
    assert cpu.low_res == [42, 32] and cpu.full_res() == (210, 160)
    # The cpu preset's training sigmas are its own; its context noise has the official law and s_cond.
    assert csgo.denoiser.noise_previous_obs and csgo.denoiser.sigma_cond_distribution is None
    assert cpu.denoiser.noise_previous_obs and cpu.denoiser.sigma_cond_distribution == COND_LAW
    assert cpu.denoiser.sampler.s_cond == csgo.denoiser.sampler.s_cond == 0.005
    assert (cpu.denoiser.sigma_distribution.loc, cpu.denoiser.sigma_distribution.scale) == (1.2, 0.5)
    smoke = build_engine_config(["data=x", "preset=smoke", "upsampler=null", "seed=3"])
    assert smoke.upsampler is None and smoke.seed == 3 and smoke.full_res() is None
    assert with_low_res(smoke, (12, 20)).low_res == [12, 20]  # no upsampler: the frames' size


def _one_line_config_error(cfg: EngineConfig, frame_size: tuple[int, int]) -> str:
    from diffworld.config.loading import ConfigError

    with pytest.raises(ConfigError) as info:
        with_low_res(cfg, frame_size)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_low_res_from_the_data_or_given() -> None:
    atari = (210, 160)
    given = build_engine_config(["data=x", "upsampler.factor=2", "low_res=[105, 80]"])
    assert with_low_res(given, atari).low_res == [105, 80]
    alone = build_engine_config(["data=x", "upsampler=null", "low_res=[42, 32]"])
    assert with_low_res(alone, atari).low_res == [42, 32]  # the denoiser alone: any size up to the frames'
    assert build_engine_config(["data=x", "upsampler.factor=10"]).low_res is None
    assert with_low_res(build_engine_config(["data=x", "upsampler.factor=10"]), atari).low_res == [21, 16]

    wrong = build_engine_config(["data=x", "low_res=[30, 56]"])  # CS:GO's, on Atari frames
    message = _one_line_config_error(wrong, atari)
    assert "makes 150x280, but the dataset's frames are 210x160: set low_res=[42, 32]" in message
    # 4 does not divide 210: the factors that divide both 210 and 160 are those of gcd(210, 160) = 10.
    message = _one_line_config_error(build_engine_config(["data=x", "upsampler.factor=4"]), atari)
    assert "set upsampler.factor to one of 2, 5, 10," in message and "upsampler=null" in message
    message = _one_line_config_error(build_engine_config(["data=x", "upsampler.factor=3"]), (211, 160))
    assert "no factor divides both sides" in message
    message = _one_line_config_error(alone, (32, 32))
    assert "low_res=[42, 32] is larger than the dataset's 32x32 frames" in message


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["preset=cpu"], "data="),
        (["data=x", "preset=gpu"], "Unknown engine preset"),
        (["data=x", "denoiser.chanels=[1]"], "denoiser.channels"),
        (["data=x", "denoiser.num_cond_frames=3"], "divisible"),
        (["data=x", "training.num_updates=__import__('os')"], "Bad value"),
        (
            ["data=x", "denoiser.noise_previous_obs=false", "denoiser.sigma_cond_distribution={loc: 0}"],
            "denoiser.sigma_cond_distribution is set but denoiser.noise_previous_obs is false: set "
            "denoiser.noise_previous_obs=true or denoiser.sigma_cond_distribution=null",
        ),
        (["data=x", "denoiser.sigma_cond_distribution={scale: 0}"], "need 0 < sigma_min < sigma_max"),
        (["data=x", "denoiser.sigma_cond_distribution={lok: 0}"], "Key 'lok' not in"),
        (["data=x", "denoiser.sigma_cond_distribution.loc=0"], "is null; set the whole section"),
    ],
)
def test_bad_engine_configs_are_one_line_errors(args: list[str], match: str) -> None:
    from diffworld.config.loading import ConfigError

    with pytest.raises(ConfigError, match=match):
        build_engine_config(args)
