"""Reference data of the official DIAMOND CS:GO code (github.com/eloialonso/diamond, branch ``csgo``) at small
sizes, for ``tests/test_engine_official_equivalence.py``:

    git -C <a clone of eloialonso/diamond> archive csgo | tar -x -C /tmp/diamond_csgo
    python tools/official_csgo_reference.py --official /tmp/diamond_csgo --out tests/data/official_csgo

The official code is not part of diffworld: this script imports it from ``--official`` (a copy of the
branch, its ``src`` folder put on ``sys.path``; ``wandb``, which ``src/utils.py`` imports for logging only,
is replaced by an empty module). It builds a small official denoiser and upsampler, perturbs their
parameters, saves them in the official agent format and records the official code's outputs on fixed
inputs: denoiser and upsampler calls D(x; sigma), the training losses (with left padding), both samplers at
the ``fast`` and ``higher_quality`` settings, the action embedding of the 51-column CS:GO action vectors and
the low-resolution frame preparation. ``tests/data/official_csgo/README.md`` describes every file; running
the script again gives byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib
import json
import math
import platform
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn

OFFICIAL_COMMIT = "851cefb497733d27f1b85c804104638765860fca"
"""The commit of the csgo branch the committed data was made from (``git archive`` does not record it in
the files it writes, so it is given here, or with ``--commit``)."""

AGENT_FILE = "official_tiny_csgo_agent.pt"
TENSORS_FILE = "reference.safetensors"
JSON_FILE = "reference.json"

NUM_ACTIONS = 51  # 11 keys, 2 clicks, 23 mouse-x bins, 15 mouse-y bins (src/csgo/action_processing.py)
N_BUTTONS, N_MOUSE_X, N_MOUSE_Y = 13, 23, 15
LOW_RES = (6, 10)  # padded to 8x12 by the denoiser's three-level U-Net
FACTOR = 5  # the official upsampling factor: 30x50 full resolution, padded to 32x52 by the upsampler's U-Net
FULL_RES = (LOW_RES[0] * FACTOR, LOW_RES[1] * FACTOR)
NUM_COND = 4  # the official denoiser's num_steps_conditioning
DENOISER_ARCH: dict[str, Any] = {
    "img_channels": 3,
    "num_steps_conditioning": NUM_COND,
    "cond_channels": 16,
    "depths": [1, 1, 1],
    "channels": [8, 16, 16],
    "attn_depths": [0, 1, 0],
}
UPSAMPLER_ARCH: dict[str, Any] = {
    "img_channels": 3,
    "num_steps_conditioning": 1,
    "cond_channels": 16,
    "depths": [1, 1, 1],
    "channels": [8, 8, 16],
    "attn_depths": [0, 0, 0],
}
SIGMA_DISTRIBUTION = {"loc": -1.2, "scale": 1.2, "sigma_min": 2e-3, "sigma_max": 20.0}  # config/trainer.yaml
# config/world_model_env/{fast,higher_quality}.yaml
SAMPLERS: dict[str, dict[str, Any]] = {
    "denoiser_fast": {
        "num_steps_denoising": 1,
        "sigma_min": 2e-3,
        "sigma_max": 5.0,
        "rho": 7,
        "order": 1,
        "s_churn": 0.0,
        "s_tmin": 0.0,
        "s_tmax": math.inf,
        "s_noise": 1.0,
        "s_cond": 0.005,
    },
    "denoiser_higher_quality": {
        "num_steps_denoising": 3,
        "sigma_min": 2e-3,
        "sigma_max": 5.0,
        "rho": 7,
        "order": 1,
        "s_churn": 0.0,
        "s_tmin": 0.0,
        "s_tmax": math.inf,
        "s_noise": 1.0,
        "s_cond": 0.005,
    },
    "upsampler_fast": {
        "num_steps_denoising": 1,
        "sigma_min": 1.0,
        "sigma_max": 5.0,
        "rho": 7,
        "order": 2,
        "s_churn": 10.0,
        "s_tmin": 1.0,
        "s_tmax": 5.0,
        "s_noise": 0.9,
        "s_cond": 0.0,
    },
    "upsampler_higher_quality": {
        "num_steps_denoising": 10,
        "sigma_min": 1.0,
        "sigma_max": 5.0,
        "rho": 7,
        "order": 1,
        "s_churn": 10.0,
        "s_tmin": 1.0,
        "s_tmax": 5.0,
        "s_noise": 0.9,
        "s_cond": 0.0,
    },
}
SAMPLER_SEEDS = {
    "denoiser_fast": 20,
    "denoiser_higher_quality": 21,
    "upsampler_fast": 22,
    "upsampler_higher_quality": 23,
}
DENOISE_SIGMAS = [0.002, 0.1, 1.0, 5.0]
DENOISE_SIGMA_COND = [0.005, 0.5]  # per sample, the second case (the first has sigma_cond None)
# The training batches: official segments of n + 1 + num_autoregressive_steps frames.
DENOISER_AR_STEPS, UPSAMPLER_AR_STEPS = 2, 1
DENOISER_PADDING = [0, 5, 2]  # left padding of each sample's segment (7 frames)
UPSAMPLER_PADDING = [0, 2, 1]  # (3 frames)
LOSS_SEEDS = {
    "denoiser_padded": 10,
    "denoiser_unpadded": 11,
    "upsampler_padded": 12,
    "upsampler_unpadded": 13,
}
# The official code's files this data depends on (their SHA-256 are recorded).
OFFICIAL_FILES = [
    "src/models/blocks.py",
    "src/models/diffusion/__init__.py",
    "src/models/diffusion/denoiser.py",
    "src/models/diffusion/diffusion_sampler.py",
    "src/models/diffusion/inner_model.py",
    "src/data/batch.py",
    "src/agent.py",
    "src/envs/world_model_env.py",
    "src/process_csgo_tar_files.py",
    "src/csgo/action_processing.py",
    "config/agent/csgo.yaml",
    "config/trainer.yaml",
    "config/world_model_env/fast.yaml",
    "config/world_model_env/higher_quality.yaml",
]


def official_settings(root: Path) -> dict[str, Any]:
    """The official CS:GO settings of ``config/``: the sampler settings (checked equal to ``SAMPLERS``), the
    models' diffusion settings and architecture at the paper's sizes, and the training settings."""
    from omegaconf import OmegaConf

    inf = """${eval:'float("inf")'}"""  # the only interpolation of the sampler files

    def plain(node: Any) -> Any:
        value = OmegaConf.to_container(node, resolve=False)
        if isinstance(value, dict):
            return {k: math.inf if v == inf else v for k, v in value.items() if k != "_target_"}
        return value

    config = root / "config"
    for quality in ("fast", "higher_quality"):
        env: Any = OmegaConf.load(config / "world_model_env" / f"{quality}.yaml")
        for model, key in (
            ("denoiser", "diffusion_sampler_next_obs"),
            ("upsampler", "diffusion_sampler_upsampling"),
        ):
            if plain(env[key]) != SAMPLERS[f"{model}_{quality}"]:
                raise AssertionError(f"{quality}.yaml's {key} is not SAMPLERS[{model}_{quality}]")
    agent: Any = OmegaConf.load(config / "agent" / "csgo.yaml")
    trainer: Any = OmegaConf.load(config / "trainer.yaml")
    settings: dict[str, Any] = {}
    for model in ("denoiser", "upsampler"):
        settings[model] = {
            **{k: v for k, v in plain(agent[model]).items() if k != "inner_model"},
            "inner_model": plain(agent[model].inner_model),
            "training": OmegaConf.to_container(trainer[model].training, resolve=True),
            "optimizer": OmegaConf.to_container(trainer[model].optimizer, resolve=True),
            "sigma_distribution": plain(trainer.denoiser.sigma_distribution),  # the upsampler's refers to it
        }
        if settings[model]["sigma_distribution"] != SIGMA_DISTRIBUTION:
            raise AssertionError(f"trainer.yaml's {model}.sigma_distribution is not SIGMA_DISTRIBUTION")
    return settings


def import_official(root: Path) -> tuple[Any, Any]:
    """The official ``models.diffusion`` and ``data`` packages of the copy at ``root``."""
    src = root / "src"
    if not (src / "models" / "diffusion" / "denoiser.py").is_file():
        raise SystemExit(f"{root} is not a copy of the official csgo branch (no src/models/diffusion)")
    sys.modules["wandb"] = types.ModuleType("wandb")  # imported by src/utils.py, for logging only
    sys.path.insert(0, str(src))
    return importlib.import_module("models.diffusion"), importlib.import_module("data")


class OfficialAgent(nn.Module):
    """The official ``agent.Agent`` of the csgo configuration (no reward/termination model, no actor-critic):
    its two modules under the same names, so that its state dict has the official keys. (``agent.py`` itself
    imports the Atari environments and torcheval, which the denoisers do not need.)"""

    def __init__(self, denoiser: nn.Module, upsampler: nn.Module) -> None:
        super().__init__()
        self.denoiser: Any = denoiser  # official modules: untyped here
        self.upsampler: Any = upsampler


def levels_of(x: Tensor) -> Tensor:
    """The 8-bit levels k of values on (or next to) the grid k / 127.5 - 1, clamped to [0, 255]."""
    return x.double().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def multi_hot(num: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Random official action vectors (..., 51): 13 random buttons, one mouse-x and one mouse-y bin."""
    out = torch.zeros(*num, NUM_ACTIONS)
    out[..., :N_BUTTONS] = torch.randint(0, 2, (*num, N_BUTTONS), generator=gen).float()
    x = torch.randint(0, N_MOUSE_X, num, generator=gen)
    y = torch.randint(0, N_MOUSE_Y, num, generator=gen)
    out.scatter_(-1, (N_BUTTONS + x)[..., None], 1.0)
    out.scatter_(-1, (N_BUTTONS + N_MOUSE_X + y)[..., None], 1.0)
    return out


def to_float(frames: Tensor) -> Tensor:
    """uint8 frames as the official dataset gives them: ``x / 255 * 2 - 1``."""
    return frames.float().div(255).mul(2).sub(1)


@contextmanager
def float64(model: Any) -> Iterator[None]:
    """The official ``model`` in float64 and float64 as the default dtype (so that the official code's
    ``randn`` calls draw float64 noise), then back to float32. The action table stays float32: the official
    ``InnerModel.forward`` casts the action vectors with ``act.float()`` before multiplying them by it (the
    float32 embedding is then added to the float64 noise embeddings)."""
    model.double()
    act_emb = model.inner_model.act_emb
    if act_emb is not None:
        act_emb[0].float()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(torch.float32)
        model.float()


def jsonable(value: Any) -> Any:
    """``value`` with infinite floats as the string ``"inf"`` (JSON has no infinity)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Recorder:
    """The tensors to save and their descriptions."""

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self.descriptions: dict[str, str] = {}

    def __call__(self, name: str, tensor: Tensor, description: str) -> Tensor:
        if name in self.tensors:
            raise AssertionError(f"{name} recorded twice")
        self.tensors[name] = tensor.detach().clone().contiguous()
        self.descriptions[name] = (
            f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}: {description}"
        )
        return tensor


def build_agent(diffusion: Any) -> tuple[OfficialAgent, Any, Any]:
    """The official denoiser and upsampler (official initialisation, seed 0), every parameter perturbed."""
    den_cfg = diffusion.DenoiserConfig(
        inner_model=diffusion.InnerModelConfig(**DENOISER_ARCH, num_actions=NUM_ACTIONS),
        sigma_data=0.5,
        sigma_offset_noise=0.1,
        noise_previous_obs=True,
        upsampling_factor=None,
    )
    up_cfg = diffusion.DenoiserConfig(
        inner_model=diffusion.InnerModelConfig(**UPSAMPLER_ARCH, num_actions=NUM_ACTIONS),
        sigma_data=0.5,
        sigma_offset_noise=0.1,
        noise_previous_obs=False,
        upsampling_factor=FACTOR,
    )
    torch.manual_seed(0)
    agent = OfficialAgent(diffusion.Denoiser(den_cfg), diffusion.Denoiser(up_cfg))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in agent.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    sigma_cfg = diffusion.SigmaDistributionConfig(**SIGMA_DISTRIBUTION)
    agent.denoiser.setup_training(sigma_cfg)
    agent.upsampler.setup_training(sigma_cfg)
    return agent.eval(), den_cfg, up_cfg


def record_denoiser_calls(
    rec: Recorder,
    model: Any,
    prefix: str,
    noisy_of: Callable[[Tensor], Tensor],
    obs: Tensor,
    act: Tensor | None,
    sigma_conds: list[Tensor | None],
) -> None:
    """D(x; sigma) before quantization, the levels of ``denoise`` in float32 and float64, for every sigma of
    ``DENOISE_SIGMAS`` (the same for every sample) and sigma_cond of ``sigma_conds``."""
    b = obs.size(0)
    for j, sigma_cond in enumerate(sigma_conds):
        for i, value in enumerate(DENOISE_SIGMAS):
            sigma = torch.full((b,), value)
            noisy = noisy_of(sigma)
            with torch.no_grad():
                cs = model.compute_conditioners(sigma, sigma_cond)
                output = model.compute_model_output(noisy, obs, act, cs)
                raw = cs.c_skip * noisy + cs.c_out * output
                denoised = model.denoise(noisy, sigma, sigma_cond, obs, act)
                with float64(model):
                    cond64 = None if sigma_cond is None else sigma_cond.double()
                    denoised64 = model.denoise(
                        noisy_of(sigma.double()), sigma.double(), cond64, obs.double(), act
                    )
            levels = None if sigma_cond is None else [float(f"{v:.6g}") for v in sigma_cond.tolist()]
            what = f"sigma {value}, sigma_cond {levels}"
            rec(f"{prefix}_{j}_{i}_raw", raw, f"c_skip * x + c_out * F, {what}")
            rec(f"{prefix}_{j}_{i}_levels", levels_of(denoised), f"8-bit levels of Denoiser.denoise, {what}")
            rec(f"{prefix}_{j}_{i}_levels_f64", levels_of(denoised64), f"the same in float64, {what}")


def official_batch(data: Any, obs: Tensor, act: Tensor, mask: Tensor, full_res: Tensor | None) -> Any:
    b, t = obs.shape[:2]
    info = [{} if full_res is None else {"full_res": full_res[i]} for i in range(b)]
    zeros = torch.zeros(b, t)
    return data.Batch(obs, act, zeros, zeros.long(), zeros.long(), mask, info, [None] * b)


def padded(x: Tensor, padding: list[int]) -> Tensor:
    """``x`` (B, T, ...) with the first ``padding[i]`` steps of sample i zeroed, as the official pads."""
    x = x.clone()
    for i, p in enumerate(padding):
        x[i, :p] = 0
    return x


def padding_mask(t: int, padding: list[int]) -> Tensor:
    return torch.stack([torch.arange(t) >= p for p in padding])


def record_loss(
    rec: Recorder,
    data: Any,
    model: Any,
    name: str,
    obs: Tensor,
    act: Tensor,
    mask: Tensor,
    full_res: Tensor | None,
    grads: list[str],
) -> None:
    """``Denoiser.forward(batch)`` after ``torch.manual_seed(seed)`` in float32 (with the gradient's norm and
    the gradients of ``grads``) and in float64; ``seed``: ``LOSS_SEEDS[name]``."""
    seed = LOSS_SEEDS[name]
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, _ = model(official_batch(data, obs, act, mask, full_res))
    loss.backward()
    params = dict(model.named_parameters())
    norm = torch.stack([p.grad.norm() for p in params.values() if p.grad is not None]).norm()
    rec(f"loss_{name}", loss, f"Denoiser.forward(batch) after torch.manual_seed({seed})")
    rec(f"loss_{name}_grad_norm", norm, "the global L2 norm of the loss's gradient")
    for param in grads:
        grad = params[param].grad
        assert grad is not None
        rec(f"loss_{name}_grad.{param}", grad, f"the gradient of {param}")
    model.zero_grad(set_to_none=True)
    with torch.no_grad(), float64(model):
        torch.manual_seed(seed)
        full64 = None if full_res is None else full_res.double()
        loss64, _ = model(official_batch(data, obs.double(), act, mask, full64))
    rec(f"loss_{name}_f64", loss64, "the same loss in float64 (float64 default dtype: float64 noise)")
    # (In float64 the denoiser's action table stays float32: see ``float64``.)


def record_sampler(
    rec: Recorder, diffusion: Any, model: Any, name: str, prev_obs: Tensor, act: Tensor | None
) -> dict[str, Any]:
    """``DiffusionSampler.sample`` after ``torch.manual_seed(seed)``, in float32 and float64."""
    cfg = diffusion.DiffusionSamplerConfig(**SAMPLERS[name])
    seed = SAMPLER_SEEDS[name]
    sampler = diffusion.DiffusionSampler(model, cfg)
    torch.manual_seed(seed)
    x, trajectory = sampler.sample(prev_obs, act)
    rec(f"sampler_{name}_sigmas", sampler.sigmas, "the sampler's noise levels (float32, as it computes them)")
    rec(f"sampler_{name}_out", x, f"the sample after torch.manual_seed({seed}) (not quantized, as returned)")
    rec(f"sampler_{name}_out_levels", levels_of(x), "its 8-bit levels (rounded)")
    with float64(model):
        sampler64 = diffusion.DiffusionSampler(model, cfg)
        torch.manual_seed(seed)
        x64, _ = sampler64.sample(prev_obs.double(), act)
    rec(f"sampler_{name}_sigmas_f64", sampler64.sigmas, "the noise levels in float64")
    rec(f"sampler_{name}_out_levels_f64", levels_of(x64), "the levels of the same sample in float64")
    return {"seed": seed, "denoising_steps": len(trajectory) - 1}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="a copy of the official csgo branch")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write the files in")
    parser.add_argument("--commit", default=OFFICIAL_COMMIT, help="the commit of the --official copy")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    diffusion, data = import_official(args.official)
    agent, den_cfg, up_cfg = build_agent(diffusion)
    den, up = agent.denoiser, agent.upsampler
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(agent.state_dict(), args.out / AGENT_FILE)
    rec = Recorder()

    # Inputs, all from one generator in this order.
    gen = torch.Generator().manual_seed(2)
    h, w = LOW_RES
    hf, wf = FULL_RES
    den_frames = rec(
        "den_frames",
        torch.randint(0, 256, (2, NUM_COND + 1, 3, h, w), generator=gen, dtype=torch.uint8),
        "frames 0-3: the conditioning frames, frame 4: the clean next frame",
    )
    den_act = rec("den_act", multi_hot((2, NUM_COND), gen).to(torch.uint8), "51-column action vectors")
    den_noise = rec("den_noise", torch.randn(2, 3, h, w, generator=gen), "eps of the noisy next frame")
    up_full = rec(
        "up_full",
        torch.randint(0, 256, (2, 2, 3, hf, wf), generator=gen, dtype=torch.uint8),
        "frame 0: the previous full-resolution frame, frame 1: the clean next one",
    )
    up_low = rec(
        "up_low",
        torch.randint(0, 256, (2, 3, h, w), generator=gen, dtype=torch.uint8),
        "the low-resolution next frame",
    )
    up_noise = rec("up_noise", torch.randn(2, 3, hf, wf, generator=gen), "eps of the noisy next full frame")
    den_seg_len = NUM_COND + 1 + DENOISER_AR_STEPS
    up_seg_len = 1 + 1 + UPSAMPLER_AR_STEPS
    den_seg = rec(
        "loss_den_frames",
        torch.randint(0, 256, (3, den_seg_len, 3, h, w), generator=gen, dtype=torch.uint8),
        "the denoiser's training segments (before padding)",
    )
    den_seg_act = rec("loss_den_act", multi_hot((3, den_seg_len), gen).to(torch.uint8), "their actions")
    up_seg_low = rec(
        "loss_up_low",
        torch.randint(0, 256, (3, up_seg_len, 3, h, w), generator=gen, dtype=torch.uint8),
        "the upsampler's training segments, low resolution (before padding)",
    )
    up_seg_full = rec(
        "loss_up_full",
        torch.randint(0, 256, (3, up_seg_len, 3, hf, wf), generator=gen, dtype=torch.uint8),
        "the same segments at full resolution (before padding)",
    )
    emb_act = multi_hot((3, NUM_COND), gen)
    emb_act[2, :2] = 0  # two padding steps: all-zero vectors
    rec(
        "emb_act",
        emb_act.to(torch.uint8),
        "51-column action vectors; sample 2's first two are padding (zeros)",
    )
    prep_frames = rec(
        "prep_frames",
        torch.randint(48, 208, (2, 3, hf, wf), generator=gen, dtype=torch.uint8),
        "full-resolution frames for the low-resolution preparation",
    )

    # a. The denoiser's D(x; sigma).
    prev_obs = to_float(den_frames[:, :NUM_COND]).reshape(2, NUM_COND * 3, h, w)
    next_obs = to_float(den_frames[:, NUM_COND])

    def den_noisy(sigma: Tensor) -> Tensor:
        return next_obs.to(sigma.dtype) + sigma[:, None, None, None] * den_noise.to(sigma.dtype)

    record_denoiser_calls(
        rec, den, "denoise", den_noisy, prev_obs, den_act.long(), [None, torch.tensor(DENOISE_SIGMA_COND)]
    )

    # a'. Padding steps in the conditioning: sample 1's first two frames and actions are padding.
    pad_obs = padded(to_float(den_frames[:, :NUM_COND]), [0, 2]).reshape(2, NUM_COND * 3, h, w)
    pad_act = padded(den_act, [0, 2]).long()
    sigma, sigma_cond = torch.ones(2), torch.tensor(DENOISE_SIGMA_COND)
    with torch.no_grad():
        cs = den.compute_conditioners(sigma, sigma_cond)
        noisy = den_noisy(sigma)
        raw = cs.c_skip * noisy + cs.c_out * den.compute_model_output(noisy, pad_obs, pad_act, cs)
    rec("denoise_padded_raw", raw, "D(x; 1) with sigma_cond [0.005, 0.5], sample 1's first 2 steps padding")

    # b. The upsampler's D(x; sigma): the previous full frame and the bicubic-upsampled low-resolution frame.
    low_up = F.interpolate(to_float(up_low), scale_factor=FACTOR, mode="bicubic")
    rec("up_low_upsampled", low_up, "F.interpolate(up_low, scale_factor=5, mode='bicubic')")
    up_obs = torch.cat([to_float(up_full[:, 0]), low_up], dim=1)
    up_next = to_float(up_full[:, 1])

    def up_noisy(sigma: Tensor) -> Tensor:
        return up_next.to(sigma.dtype) + sigma[:, None, None, None] * up_noise.to(sigma.dtype)

    record_denoiser_calls(rec, up, "upsample", up_noisy, up_obs, None, [None])

    # c. Training losses.
    den_grads = ["inner_model.conv_in.weight", "inner_model.act_emb.0.weight", "inner_model.conv_out.weight"]
    up_grads = ["inner_model.conv_in.weight", "inner_model.conv_out.weight"]
    den_mask = padding_mask(den_seg_len, DENOISER_PADDING)
    up_mask = padding_mask(up_seg_len, UPSAMPLER_PADDING)
    rec("loss_den_mask", den_mask, f"mask_padding: left padding {DENOISER_PADDING}")
    rec("loss_up_mask", up_mask, f"mask_padding: left padding {UPSAMPLER_PADDING}")
    seg_obs, seg_act = to_float(den_seg), den_seg_act.long()
    up_zero_act = torch.zeros(3, up_seg_len, NUM_ACTIONS, dtype=torch.long)  # the upsampler has no actions
    up_low_f, up_full_f = to_float(up_seg_low), to_float(up_seg_full)
    pad_den = functools.partial(padded, padding=DENOISER_PADDING)
    pad_up = functools.partial(padded, padding=UPSAMPLER_PADDING)
    all_den, all_up = torch.ones_like(den_mask), torch.ones_like(up_mask)
    loss_cases = [
        ("denoiser_padded", den, pad_den(seg_obs), pad_den(seg_act), den_mask, None, den_grads),
        ("denoiser_unpadded", den, seg_obs, seg_act, all_den, None, den_grads),
        ("upsampler_padded", up, pad_up(up_low_f), up_zero_act, up_mask, pad_up(up_full_f), up_grads),
        ("upsampler_unpadded", up, up_low_f, up_zero_act, all_up, up_full_f, up_grads),
    ]
    for name, model, obs, act, mask, full_res, grads in loss_cases:
        record_loss(rec, data, model, name, obs, act, mask, full_res, grads)

    # d. The samplers.
    samplers = {}
    for name in ("denoiser_fast", "denoiser_higher_quality"):
        samplers[name] = record_sampler(
            rec, diffusion, den, name, to_float(den_frames[:, :NUM_COND]), den_act.long()
        )
    # As WorldModelEnv.upsample_next_obs: the previous full frame, then the upsampled low-resolution one.
    up_prev = torch.cat([to_float(up_full[:, :1]), low_up[:, None]], dim=1)
    for name in ("upsampler_fast", "upsampler_higher_quality"):
        samplers[name] = record_sampler(rec, diffusion, up, name, up_prev, None)

    # e. The action embedding, as InnerModel.forward embeds (B, L, 51) vectors.
    table = den.inner_model.act_emb[0].weight
    with torch.no_grad():
        embedding = den.inner_model.act_emb[1](emb_act.long().float() @ table)
    rec("emb_out", embedding, "act_emb[1](act.float() @ act_emb[0].weight), flattened over the 4 steps")

    # f. The low-resolution frames of process_csgo_tar_files.py: torchvision's resize of float frames in
    # [-1, 1] (bicubic, antialias=True by default) is this interpolate call; then Episode.save's levels.
    low = F.interpolate(
        to_float(prep_frames), size=LOW_RES, mode="bicubic", align_corners=False, antialias=True
    )
    if low.min() < -1 or low.max() > 1:
        raise AssertionError("the prepared frames leave [-1, 1]: .byte() would depend on the platform")
    rec(
        "prep_low", low, "F.interpolate(frames, (6, 10), mode='bicubic', align_corners=False, antialias=True)"
    )
    rec("prep_low_levels", low.add(1).div(2).mul(255).byte(), "its levels as Episode.save stores them")

    safetensors.torch.save_file(rec.tensors, args.out / TENSORS_FILE)
    agent_path = args.out / AGENT_FILE
    state = agent.state_dict()
    counts = {
        name: sum(p.numel() for p in m.parameters()) for name, m in (("denoiser", den), ("upsampler", up))
    }
    meta = {
        "official": {
            "repository": "https://github.com/eloialonso/diamond",
            "branch": "csgo",
            "commit": args.commit,
            "files_sha256": {f: sha256(args.official / f) for f in OFFICIAL_FILES},
            "stubbed_modules": ["wandb"],
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "torch_num_threads": torch.get_num_threads(),
        },
        "command": "python tools/official_csgo_reference.py --official <csgo branch copy> --out <folder>",
        "agent_file": {
            "name": AGENT_FILE,
            "bytes": agent_path.stat().st_size,
            "sha256": sha256(agent_path),
            "tensors": len(state),
        },
        "parameter_counts": counts,
        "denoiser_config": dataclasses.asdict(den_cfg),
        "upsampler_config": dataclasses.asdict(up_cfg),
        "sigma_distribution": SIGMA_DISTRIBUTION,
        "official_settings": official_settings(args.official),
        "num_actions": NUM_ACTIONS,
        "low_res": list(LOW_RES),
        "full_res": list(FULL_RES),
        "seeds": {
            "init": 0,
            "perturbation": 1,
            "inputs": 2,
            "losses": LOSS_SEEDS,
            "samplers": SAMPLER_SEEDS,
        },
        "denoise_sigmas": DENOISE_SIGMAS,
        "denoise_sigma_conds": [None, DENOISE_SIGMA_COND],
        "losses": {
            "denoiser_num_autoregressive_steps": DENOISER_AR_STEPS,
            "upsampler_num_autoregressive_steps": UPSAMPLER_AR_STEPS,
            "denoiser_padding": DENOISER_PADDING,
            "upsampler_padding": UPSAMPLER_PADDING,
        },
        "samplers": {name: {**SAMPLERS[name], **samplers[name]} for name in SAMPLERS},
        "low_res_preparation": (
            "process_csgo_tar_files.py: torchvision.transforms.functional.resize(obs, (30, 56), BICUBIC) of "
            "float frames in [-1, 1] (antialias True by default), which for a float tensor is "
            "F.interpolate(obs, size, mode='bicubic', align_corners=False, antialias=True) with no clamping; "
            "torchvision is not installed here, so that interpolate call was run, at 30x50 -> 6x10 (the "
            "same factor 5). Episode.save stores obs.add(1).div(2).mul(255).byte() (truncation, no clamping: "
            "the frames were drawn within [48, 207] so that the result stays within [-1, 1])."
        ),
        "tensors": rec.descriptions,
    }
    (args.out / JSON_FILE).write_text(json.dumps(jsonable(meta), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {AGENT_FILE}, {TENSORS_FILE} ({len(rec.tensors)} tensors) and {JSON_FILE} in {args.out}")


if __name__ == "__main__":
    main()
