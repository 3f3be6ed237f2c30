"""The models, imagination, bfloat16 autocast and a whole run on ``$DIFFWORLD_TEST_DEVICE`` (default: CPU).

``DIFFWORLD_TEST_DEVICE=cuda pytest tests/test_device.py`` runs them on a GPU (``benchmarks/gpu_check.sh``
does). Each model's outputs and gradients there are compared with the same model's on the CPU: on CUDA,
convolutions may run in TF32 (cuDNN's default in PyTorch) and sum in another order, so outputs agree to 1 %
of their largest magnitude and gradients point the same way (cosine similarity above 0.999). The end-to-end
run (collection, training, tests with video, final evaluation, ``diffworld eval``) runs only when the
variable names a device, even ``cpu``: ``tests/test_train_e2e.py`` covers the CPU in the default suite.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffworld.agent.imagination import ImaginationActorCriticLoss, WorldModelEnv
from diffworld.config.schema import (
    ActorCriticConfig,
    DenoiserConfig,
    DiffusionKind,
    Precision,
    RewardTerminationConfig,
    SamplerConfig,
)
from diffworld.data import Episode, EpisodeDataset, SegmentSampler
from diffworld.data.batch import Batch
from diffworld.fitting.precision import autocast
from diffworld.models.actor_critic import ActorCritic
from diffworld.models.diffusion import DDPMDenoiser, EDMDenoiser, make_denoiser
from diffworld.models.reward_termination import RewardTerminationModel
from numerics_cases import nonzero_init

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
NUM_ACTIONS = 4
SIZE = 16
L = 4


def tiny_denoiser(kind: DiffusionKind) -> nn.Module:
    torch.manual_seed(0)
    cfg = DenoiserConfig(
        kind=kind, channels=[16, 16], depths=[1, 1], attn_depths=[False, True], cond_channels=32
    )
    return nonzero_init(make_denoiser(cfg, NUM_ACTIONS), 1)


def tiny_reward_model() -> RewardTerminationModel:
    torch.manual_seed(2)
    cfg = RewardTerminationConfig(
        channels=[8, 8], depths=[1, 1], attn_depths=[False, False], cond_channels=16, lstm_dim=24
    )
    return nonzero_init(RewardTerminationModel(cfg, NUM_ACTIONS, img_size=SIZE), 3)


def tiny_actor_critic(img_size: int = SIZE) -> ActorCritic:
    torch.manual_seed(4)
    model = ActorCritic(ActorCriticConfig(channels=[8, 8], lstm_dim=16), NUM_ACTIONS, img_size=img_size)
    return nonzero_init(model, 5)


def segments(b: int, t: int, seed: int, size: int = SIZE) -> Batch:
    """``b`` segments of ``t`` steps: rewards of every sign, one row left-padded, one ending early."""
    gen = torch.Generator().manual_seed(seed)
    obs = ((torch.rand(b, t + 1, 3, size, size, generator=gen) * 255).round() / 127.5) - 1
    act = torch.randint(NUM_ACTIONS, (b, t), generator=gen)
    rew = torch.randint(-1, 2, (b, t), generator=gen).float()
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, :2] = False
    end = torch.zeros(b, t, dtype=torch.bool)
    end[1, -2] = True
    mask[1, -1] = False
    rew[~mask] = 0
    return Batch.of_steps(obs, act, rew, end, torch.zeros_like(end), mask)


def assert_same_outputs(out: torch.Tensor, ref: torch.Tensor) -> None:
    out = out.detach().float().cpu()
    ref = ref.detach().float()
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out - ref).abs().max() <= 1e-2 * ref.abs().max() + 1e-6


def assert_same_gradients(model: nn.Module, ref: nn.Module, device: torch.device) -> None:
    grads, grads_ref = [], []
    for (name, p), (_, p_ref) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        if p_ref.grad is None:
            assert p.grad is None, name
            continue
        assert p.grad is not None and p.grad.device == device and torch.isfinite(p.grad).all(), name
        grads.append(p.grad.flatten().cpu())
        grads_ref.append(p_ref.grad.flatten())
    assert grads
    assert F.cosine_similarity(torch.cat(grads), torch.cat(grads_ref), dim=0) > 0.999


def on_both(
    model: nn.Module, device: torch.device, outputs: Callable[[nn.Module, torch.device], torch.Tensor]
) -> None:
    """``outputs(model, device)`` (a deterministic function of the model's outputs) on the CPU and on
    ``device``, with the gradients of its sum of squares."""
    moved = copy.deepcopy(model).to(device)
    ref = outputs(model, CPU)
    out = outputs(moved, device)
    assert out.device == device
    assert_same_outputs(out, ref)
    ref.square().sum().backward()
    out.square().sum().backward()
    assert_same_gradients(moved, model, device)


@pytest.mark.parametrize("kind", [DiffusionKind.edm, DiffusionKind.ddpm])
def test_denoiser_matches_the_cpu(kind: DiffusionKind, target_device: torch.device) -> None:
    model = tiny_denoiser(kind)
    batch = segments(3, L, seed=6)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 3, SIZE, SIZE, generator=gen)

    def outputs(m: nn.Module, device: torch.device) -> torch.Tensor:
        obs, act, noisy = batch.obs[:, :L].to(device), batch.act.to(device), x.to(device)
        if isinstance(m, EDMDenoiser):
            return m.denoise(noisy, torch.tensor([0.1, 1.0, 4.0], device=device), obs, act)
        assert isinstance(m, DDPMDenoiser)
        return m.predict_epsilon(noisy, torch.tensor([10, 400, 900], device=device), obs, act)

    on_both(model, target_device, outputs)


def test_reward_model_matches_the_cpu(target_device: torch.device) -> None:
    model = tiny_reward_model()
    batch = segments(4, 7, seed=8)

    def outputs(m: nn.Module, device: torch.device) -> torch.Tensor:
        b = batch.to(device)
        rew, end, (h, c) = m.predict(b.obs[:, :-1], b.act, b.obs[:, 1:], None, mask=b.step_mask)
        mask = b.step_mask[..., None]
        return torch.cat([(rew * mask).flatten(), (end * mask).flatten(), h.flatten(), c.flatten()])

    on_both(model, target_device, outputs)


def test_actor_critic_matches_the_cpu(target_device: torch.device) -> None:
    model = tiny_actor_critic()
    obs = segments(5, 2, seed=9).obs

    def outputs(m: nn.Module, device: torch.device) -> torch.Tensor:
        o = obs.to(device)
        state = m.burn_in(o[:, :2], torch.ones(5, 2, dtype=torch.bool, device=device))
        logits, value, _ = m.step(o[:, 2], state)
        return torch.cat([logits.flatten(), value.flatten()])

    on_both(model, target_device, outputs)


@pytest.mark.parametrize("kind", [DiffusionKind.edm, DiffusionKind.ddpm])
def test_training_losses_and_sampling_on_device(kind: DiffusionKind, target_device: torch.device) -> None:
    """Each model's training loss and backward pass, and the denoiser's sampler, on the device."""
    denoiser = tiny_denoiser(kind).to(target_device)
    reward_model = tiny_reward_model().to(target_device)
    for model, batch in ((denoiser, segments(3, L + 1, seed=10)), (reward_model, segments(4, 7, seed=11))):
        loss, metrics = model(batch.to(target_device))
        assert loss.device == target_device and torch.isfinite(loss)
        assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    batch = segments(3, L, seed=12).to(target_device)
    sampler_cfg = SamplerConfig(num_steps=3)
    sampler = denoiser.sampler(sampler_cfg)

    def sample(seed: int) -> torch.Tensor:
        gen = torch.Generator(target_device).manual_seed(seed)
        return sampler.predict_next(batch.obs[:, :L], batch.act, gen)

    frames = sample(13)
    assert frames.device == target_device and frames.shape == (3, 3, SIZE, SIZE)
    levels = (frames + 1) * 127.5
    assert frames.min() >= -1 and frames.max() <= 1 and torch.allclose(levels, levels.round(), atol=1e-3)
    torch.testing.assert_close(sample(13), frames, rtol=0, atol=0)  # the generator decides the sample


def test_bf16_autocast_on_device(target_device: torch.device) -> None:
    """Under ``training.precision=bf16`` on the device the convolutions run in bfloat16 and the loss and
    gradients stay within bfloat16's rounding of float32 (as ``tests/test_bf16.py`` checks on the CPU)."""
    model = tiny_denoiser(DiffusionKind.edm).to(target_device)
    batch = segments(3, L + 1, seed=14).to(target_device)
    conv_dtypes: list[torch.dtype] = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda module, args, out: conv_dtypes.append(out.dtype))

    def loss_and_grads(precision: Precision) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(15)  # the same noise levels and noise for both precisions (on every device)
        with autocast(target_device, precision):
            loss, _ = model(batch)
        loss.backward()
        return [loss.detach(), *(p.grad.flatten() for p in model.parameters() if p.grad is not None)]

    bf16 = loss_and_grads(Precision.bf16)
    assert conv_dtypes and set(conv_dtypes) == {torch.bfloat16}
    conv_dtypes.clear()
    fp32 = loss_and_grads(Precision.fp32)
    assert set(conv_dtypes) == {torch.float32}
    assert bf16[0].dtype == torch.float32
    torch.testing.assert_close(bf16[0], fp32[0], rtol=0.02, atol=0)
    assert F.cosine_similarity(torch.cat(bf16[1:]), torch.cat(fp32[1:]), dim=0) > 0.99


def test_imagination_on_device(target_device: torch.device) -> None:
    """The world-model environment and the actor-critic's imagination loss, dataset segments drawn onto the
    device and sampled with the device's generator."""
    rng = np.random.default_rng(0)
    dataset = EpisodeDataset()
    for _ in range(3):
        length = 12
        dataset.add(
            Episode(
                obs=rng.integers(0, 256, size=(length + 1, 64, 64, 3), dtype=np.uint8),
                act=rng.integers(0, NUM_ACTIONS, size=length).astype(np.int64),
                rew=rng.choice([-1.0, 0.0, 1.0], size=length).astype(np.float32),
                terminated=np.eye(length, dtype=bool)[-1],
                truncated=np.zeros(length, dtype=bool),
            )
        )
    torch.manual_seed(16)
    denoiser = make_denoiser(
        DenoiserConfig(channels=[8, 8], depths=[1, 1], attn_depths=[False, False], cond_channels=16),
        NUM_ACTIONS,
    ).to(target_device)
    reward_model = RewardTerminationModel(
        RewardTerminationConfig(
            channels=[8, 8, 8, 8], depths=[1, 1, 1, 1], attn_depths=[False] * 4, cond_channels=16, lstm_dim=16
        ),
        NUM_ACTIONS,
    ).to(target_device)
    actor_critic = tiny_actor_critic(img_size=64).to(target_device)
    sampler = SegmentSampler(dataset, 3, L - 1, rng=np.random.default_rng(1), device=target_device)
    gen = torch.Generator(target_device).manual_seed(17)
    env = WorldModelEnv(denoiser, reward_model, sampler, SamplerConfig(num_steps=2), horizon=4, generator=gen)
    step = env.reset()
    for _ in range(5):  # past the horizon: trajectories restart from new segments
        step = env.step(torch.randint(NUM_ACTIONS, (3,), device=target_device, generator=gen))
        for value in (step.obs, step.rew, step.end, step.trunc, step.final_obs):
            assert value.device == target_device
    assert step.obs.shape == (3, 3, 64, 64)
    cfg = ActorCriticConfig(channels=[8, 8], lstm_dim=16, imagination_horizon=4)
    loss, metrics = ImaginationActorCriticLoss(actor_critic, env, cfg)(sampler.sample())
    assert loss.device == target_device and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in actor_critic.parameters() if p.grad is not None]
    assert grads and all(g.device == target_device and torch.isfinite(g).all() for g in grads)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in metrics.values())


def test_smoke_run_on_device(target_device: torch.device, device_explicit: bool, tmp_path: Path) -> None:
    """A whole smoke run on the device: collection with the policy there, the three models' training,
    a test (episodes, world-model test losses, reward detection, video) every epoch, the final evaluation,
    then ``diffworld eval`` of the run folder on the device."""
    if not device_explicit:
        pytest.skip("set DIFFWORLD_TEST_DEVICE to run it (tests/test_train_e2e.py runs it on the CPU)")
    from diffworld.agent.trainer import Trainer
    from diffworld.cli import main
    from diffworld.config import build_config
    from diffworld.run.metrics_file import read_metrics

    run_dir = tmp_path / "run"
    cfg = build_config(
        [
            "game=Breakout",
            "preset=smoke",
            "seed=3",
            f"device={target_device}",
            f"run_dir={run_dir}",
            "collection.test_every_epochs=1",
        ]
    )
    trainer = Trainer(cfg, run_dir)
    assert trainer.device == target_device
    assert all(p.device == target_device for p in trainer.agent.parameters())
    report = trainer.run()
    assert report is not None and np.isfinite(report["mean"])
    tests = [r for r in read_metrics(run_dir) if "collection/test/return_mean" in r]
    assert tests and all(np.isfinite(r["denoiser/test/loss_denoising"]) for r in tests)
    out = tmp_path / "eval.json"
    argv = ["eval", str(run_dir), "--episodes", "1", "--device", str(target_device), "--out", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["num_episodes"] == 1
