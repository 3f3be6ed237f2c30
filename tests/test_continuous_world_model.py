"""The world model and the reward/termination model conditioned on continuous actions: the action encoder
as a linear map of the vector (against a matrix product), the padding's zero embedding, the shapes of
training and sampling, outputs that follow the action; discrete actions given as a count or as a one-component
index spec build one model, with the official modules and names. (That the discrete path is bit-identical to
the code before the continuous actions is tools/bit_identity.py's to check, not these tests'.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffworld.config.schema import DenoiserConfig, DiffusionKind, RewardTerminationConfig, SamplerConfig
from diffworld.data.actions import box_spec, index_spec
from diffworld.data.batch import Batch
from diffworld.models.action_encoder import ActionEncoder
from diffworld.models.diffusion import EDMDenoiser, make_denoiser
from diffworld.models.diffusion.layout import WorldModelLayout
from diffworld.models.reward_termination import RewardTerminationModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3
SIZE = 16
KINDS = [DiffusionKind.edm, DiffusionKind.ddpm]


def tiny_cfg(kind: DiffusionKind = DiffusionKind.edm) -> DenoiserConfig:
    return DenoiserConfig(
        kind=kind, cond_channels=32, channels=[16, 16], depths=[1, 1], attn_depths=[False, False]
    )


def tiny_reward_cfg() -> RewardTerminationConfig:
    return RewardTerminationConfig(
        channels=[8, 8], depths=[1, 1], attn_depths=[False, False], cond_channels=16, lstm_dim=16
    )


def batch(act: torch.Tensor, seed: int = 0) -> Batch:
    """Segments of ``act.shape[1]`` steps with random frames."""
    gen = torch.Generator().manual_seed(seed)
    b, t = act.shape[:2]
    obs = ((torch.rand(b, t + 1, 3, SIZE, SIZE, generator=gen) * 255).round() / 127.5) - 1
    shape = (b, t)
    return Batch.of_steps(
        obs=obs,
        act=act,
        rew=torch.zeros(shape),
        end=torch.zeros(shape, dtype=torch.bool),
        trunc=torch.zeros(shape, dtype=torch.bool),
        step_mask=torch.ones(shape, dtype=torch.bool),
    )


def actions(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, t, D, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def perturb(model: nn.Module, std: float = 0.05) -> None:
    """Off the initialization: the zero-initialized output layers make F ignore everything at first."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen))


def test_the_encoder_of_continuous_actions_is_a_linear_map_and_padding_embeds_to_zero() -> None:
    torch.manual_seed(0)
    encoder = ActionEncoder(box_spec(D), 8)
    weight = torch.cat([table.weight for table in encoder.tables])  # (D, 8): one row per component
    a = actions(2, 5)
    torch.testing.assert_close(encoder(a), a @ weight)
    assert torch.equal(encoder(torch.zeros(2, 5, D)), torch.zeros(2, 5, 8))


@pytest.mark.parametrize("kind", KINDS)
def test_world_model_takes_action_vectors_in_training_and_sampling(kind: DiffusionKind) -> None:
    cfg = tiny_cfg(kind)
    torch.manual_seed(0)
    denoiser = make_denoiser(cfg, box_spec(D))
    names = [n for n in denoiser.state_dict() if "act_emb" in n]
    assert names == [f"net.act_emb.tables.{i}.weight" for i in range(D)]
    assert all(denoiser.state_dict()[n].shape == (1, cfg.cond_channels // cfg.num_cond_frames) for n in names)
    n_frames = cfg.num_cond_frames + cfg.training.num_autoregressive_steps
    loss, metrics = denoiser(batch(actions(2, n_frames - 1)))
    loss.backward()
    assert torch.isfinite(loss) and "loss_denoising" in metrics
    embedding_grads = [p.grad for n, p in denoiser.named_parameters() if "act_emb" in n]
    assert all(g is not None for g in embedding_grads)
    prev_obs = batch(actions(2, cfg.num_cond_frames)).obs[:, : cfg.num_cond_frames]
    sampler = denoiser.sampler(SamplerConfig(num_steps=2))
    nxt = sampler.predict_next(prev_obs, actions(2, cfg.num_cond_frames), torch.Generator().manual_seed(0))
    assert nxt.shape == (2, 3, SIZE, SIZE)


def test_the_world_model_follows_the_action() -> None:
    torch.manual_seed(0)
    denoiser = EDMDenoiser(tiny_cfg(), box_spec(D))
    perturb(denoiser)
    prev_obs = batch(actions(2, 4)).obs[:, :4]
    noisy = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((2,), 1.0)
    a = actions(2, 4, seed=1)
    b = a.clone()
    b[:, -1] = -b[:, -1]  # only the last action differs
    out_a = denoiser.denoise(noisy, sigma, prev_obs, a)
    assert torch.equal(out_a, denoiser.denoise(noisy, sigma, prev_obs, a.clone()))
    assert (out_a - denoiser.denoise(noisy, sigma, prev_obs, b)).abs().max() > 1e-4


def test_reward_model_takes_action_vectors_and_follows_them() -> None:
    torch.manual_seed(0)
    model = RewardTerminationModel(tiny_reward_cfg(), box_spec(D), img_size=SIZE)
    assert isinstance(model.act_emb, ActionEncoder)
    perturb(model)
    a = actions(2, 5)
    data = batch(a)
    loss, _ = model(data)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.act_emb.parameters())
    obs, nxt = data.obs[:, :-1], data.obs[:, 1:]
    logits, _, _ = model.predict(obs, a, nxt)
    assert logits.shape == (2, 5, 3)
    other, _, _ = model.predict(obs, -a, nxt)
    assert (logits - other).abs().max() > 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_an_index_spec_builds_what_its_action_count_builds(kind: DiffusionKind) -> None:
    """An action count and a one-component index spec are one action space: they build the same modules with
    the same draws and outputs, the action tables under the official names (``net.act_emb.weight``,
    ``act_emb.weight``, nn.Embedding) and in the Atari layout."""
    cfg = tiny_cfg(kind)
    models = []
    for actions_arg in (4, index_spec(4)):
        torch.manual_seed(0)
        models.append(
            (make_denoiser(cfg, actions_arg), RewardTerminationModel(tiny_reward_cfg(), actions_arg, SIZE))
        )
    (den_a, rew_a), (den_b, rew_b) = models
    for a, b in ((den_a, den_b), (rew_a, rew_b)):
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert isinstance(den_a.net.act_emb, nn.Embedding)
    assert den_a.state_dict()["net.act_emb.weight"].shape == (4, cfg.cond_channels // cfg.num_cond_frames)
    assert type(rew_a.act_emb) is nn.Embedding
    assert WorldModelLayout.agent(4) == WorldModelLayout.atari(4)
    assert WorldModelLayout.agent(index_spec(4)) == WorldModelLayout.atari(4)
    # The same outputs for the same indices.
    act = torch.randint(4, (2, cfg.num_cond_frames), generator=torch.Generator().manual_seed(0))
    prev_obs = batch(act).obs[:, : cfg.num_cond_frames]
    perturb(den_a)
    perturb(den_b)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    c_noise = torch.zeros(2)
    assert torch.equal(den_a.net(x, c_noise, None, prev_obs, act), den_b.net(x, c_noise, None, prev_obs, act))
