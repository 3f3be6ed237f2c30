"""``diffworld engine import``: the official CS:GO model's state dict (written here by hand, at tiny sizes,
with the names and shapes of the official csgo branch's modules) -> an engine folder; one-line errors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from diffworld.agent.official_import import OfficialAgentError
from diffworld.cli import main
from diffworld.data.actions import ActionSpec, discrete
from diffworld.data.folder_store import EngineDatasetWriter
from diffworld.engine.convert.from_csgo_hdf5 import CSGO_ACTION_SPEC, CSGO_MOUSE_X, CSGO_MOUSE_Y
from diffworld.engine.official_import import import_official_engine
from diffworld.engine.open_engine import open_engine

ATARI_AGENT = Path(__file__).parent / "data" / "official" / "official_tiny_agent.pt"
COND, CHANNELS, NUM_COND = 16, [8, 8], 4
TINY = (
    f"denoiser.cond_channels={COND}",
    f"denoiser.channels={CHANNELS}",
    "denoiser.depths=[1,1]",
    "denoiser.attn_depths=[false,true]",
    f"upsampler.cond_channels={COND}",
    f"upsampler.channels={CHANNELS}",
    "upsampler.depths=[1,1]",
    "upsampler.attn_depths=[false,false]",
)


def official_inner_model(
    prefix: str,
    attn: list[bool],
    num_cond: int,
    upsampler: bool,
    gen: torch.Generator,
    *,
    channels: list[int] = CHANNELS,
    depths: list[int] | None = None,
    cond: int = COND,
    action_rows: int = 51,
) -> dict[str, Tensor]:
    """The state dict of the official ``Denoiser``'s ``inner_model`` (csgo branch: InnerModel, UNet,
    ResBlock, AdaGroupNorm, SelfAttention2d, FourierFeatures), written from its module structure."""
    sd: dict[str, Tensor] = {}
    depths = depths or [1] * len(channels)

    def add(name: str, *shape: int) -> None:
        sd[f"{prefix}.inner_model.{name}"] = torch.randn(*shape, generator=gen)

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        add(f"{name}.weight", cout, cin, k, k)
        add(f"{name}.bias", cout)

    def resblock(name: str, cin: int, cout: int, with_attn: bool) -> None:
        if cin != cout:
            conv(f"{name}.proj", cout, cin, 1)
        add(f"{name}.norm1.linear.weight", 2 * cin, cond)
        add(f"{name}.norm1.linear.bias", 2 * cin)
        conv(f"{name}.conv1", cout, cin, 3)
        add(f"{name}.norm2.linear.weight", 2 * cout, cond)
        add(f"{name}.norm2.linear.bias", 2 * cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if with_attn:
            add(f"{name}.attn.norm.norm.weight", cout)
            add(f"{name}.attn.norm.norm.bias", cout)
            conv(f"{name}.attn.qkv_proj", 3 * cout, cout, 1)
            conv(f"{name}.attn.out_proj", cout, cout, 1)

    add("noise_emb.weight", 1, cond // 2)
    add("noise_cond_emb.weight", 1, cond // 2)
    if not upsampler:
        add("act_emb.0.weight", action_rows, cond // num_cond)
    for i in (0, 2):
        add(f"cond_proj.{i}.weight", cond, cond)
        add(f"cond_proj.{i}.bias", cond)
    conv("conv_in", channels[0], (num_cond + int(upsampler) + 1) * 3, 3)
    levels = len(channels)
    for i in range(levels):
        c1, c2 = channels[max(0, i - 1)], channels[i]
        for j in range(depths[i]):
            resblock(f"unet.d_blocks.{i}.resblocks.{j}", c1 if j == 0 else c2, c2, attn[i])
        # u_blocks are built per level, then reversed: level i is u_blocks[levels - 1 - i]; one block more
        # than the level's depth, the last one back to the previous level's channels.
        u = levels - 1 - i
        for j in range(depths[i]):
            resblock(f"unet.u_blocks.{u}.resblocks.{j}", 2 * c2, c2, attn[i])
        resblock(f"unet.u_blocks.{u}.resblocks.{depths[i]}", c1 + c2, c1, attn[i])
    for j in range(2):
        resblock(f"unet.mid_blocks.resblocks.{j}", channels[-1], channels[-1], True)
    for k, c in enumerate(channels[:-1], start=1):
        conv(f"unet.downsamples.{k}.conv", c, c, 3)
    for k, c in enumerate(reversed(channels[:-1]), start=1):
        conv(f"unet.upsamples.{k}.conv", c, c, 3)
    add("norm_out.norm.weight", channels[0])
    add("norm_out.norm.bias", channels[0])
    conv("conv_out", 3, channels[0], 3)
    return sd


@pytest.fixture(scope="module")
def official() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        **official_inner_model("denoiser", [False, True], NUM_COND, False, gen),
        **official_inner_model("upsampler", [False, False], 1, True, gen),
    }


def saved(state: object, tmp_path: Path, name: str = "csgo.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def import_error(path: Path, tmp_path: Path, overrides: tuple[str, ...] = TINY) -> str:
    with pytest.raises(OfficialAgentError) as info:  # OfficialEngineError for a model that does not fit
        import_official_engine(path, tmp_path / "engine", overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    assert not (tmp_path / "engine").exists()
    return message


def test_import_maps_every_tensor(official: dict[str, Tensor], tmp_path: Path) -> None:
    folder = import_official_engine(saved(official, tmp_path), tmp_path / "engine", overrides=TINY)
    engine = open_engine(folder, "cpu")
    assert engine.spec == CSGO_ACTION_SPEC and engine.upsampler is not None
    ours = {
        **{f"denoiser.{k}": v for k, v in engine.denoiser.state_dict().items()},
        **{f"upsampler.{k}": v for k, v in engine.upsampler.state_dict().items()},
    }
    theirs = {k: v for k, v in official.items() if not k.endswith("act_emb.0.weight")}
    assert len(ours) == len(theirs) + len(CSGO_ACTION_SPEC.components)  # the action table is split
    net = engine.denoiser.net
    assert torch.equal(net.conv_in.weight, official["denoiser.inner_model.conv_in.weight"])
    assert torch.equal(net.noise_cond_emb.weight, official["denoiser.inner_model.noise_cond_emb.weight"])
    up_norm = engine.upsampler.net.norm_out.state_dict()
    assert torch.equal(next(iter(up_norm.values())), official["upsampler.inner_model.norm_out.norm.weight"])
    total = sum(float(v.double().sum()) for v in official.values())
    assert sum(float(v.double().sum()) for v in ours.values()) == pytest.approx(total)


def test_action_embedding_is_the_official_multi_hot_product(
    official: dict[str, Tensor], tmp_path: Path
) -> None:
    """The official model embeds the 51-wide multi-hot vector (11 keys, 2 clicks, one-hot mouse x among 23
    bins, one-hot mouse y among 15) times its table: so must the imported encoder, from our action vector."""
    engine = open_engine(import_official_engine(saved(official, tmp_path), tmp_path / "e", overrides=TINY))
    ours = torch.zeros(CSGO_ACTION_SPEC.width)
    multi_hot = torch.zeros(51)
    for key in (0, 4):  # w, space
        ours[key] = multi_hot[key] = 1
    ours[11] = multi_hot[11] = 1  # left click
    ours[13], multi_hot[13 + 17] = 17, 1  # mouse x: bin 17
    ours[14], multi_hot[13 + 23 + 3] = 3, 1  # mouse y: bin 3
    assert engine.denoiser.net.act_emb is not None
    embedding = engine.denoiser.net.act_emb(ours[None, None])[0, 0]
    expected = multi_hot @ official["denoiser.inner_model.act_emb.0.weight"]
    assert torch.allclose(embedding, expected, atol=1e-6)


def test_mismatched_checkpoints(official: dict[str, Tensor], tmp_path: Path) -> None:
    missing = dict(official)
    del missing["upsampler.inner_model.conv_out.bias"]
    assert "1 missing: upsampler.inner_model.conv_out.bias" in import_error(
        saved(missing, tmp_path), tmp_path
    )
    extra = {**official, "denoiser.inner_model.extra.weight": torch.zeros(1)}
    assert "1 unexpected" in import_error(saved(extra, tmp_path), tmp_path)
    shape = {**official, "denoiser.inner_model.conv_in.weight": torch.zeros(8, 9, 3, 3)}
    assert "has shape (8, 9, 3, 3)" in import_error(saved(shape, tmp_path), tmp_path)
    table = {**official, "denoiser.inner_model.act_emb.0.weight": torch.zeros(50, COND // NUM_COND)}
    assert "the action embedding" in import_error(saved(table, tmp_path), tmp_path)
    denoiser_only = {k: v for k, v in official.items() if k.startswith("denoiser.")}
    assert "no upsampler tensors" in import_error(saved(denoiser_only, tmp_path), tmp_path)
    assert "no upsampler tensors" in import_error(ATARI_AGENT, tmp_path)


class _Payload:
    """Unpickling this object would create a folder: a stand-in for code in a malicious pickle."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.path,)


def test_unsafe_and_unreadable_files(official: dict[str, Tensor], tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    message = import_error(saved({**official, "denoiser.payload": _Payload(marker)}, tmp_path), tmp_path)
    assert "objects other than tensors" in message and not marker.exists()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    assert "not a file saved by torch.save" in import_error(garbage, tmp_path)
    other = saved({"encoder.weight": torch.zeros(1)}, tmp_path, "other.pt")
    assert "not an official DIAMOND agent" in import_error(other, tmp_path)


def test_cli(official: dict[str, Tensor], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = saved(official, tmp_path)
    assert main(["engine", "import", str(path), str(tmp_path / "engine"), *TINY]) == 0
    assert "Imported" in capsys.readouterr().out
    assert main(["engine", "import", str(path), str(tmp_path / "engine"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffworld engine: ") and err.count("\n") == 1 and "--overwrite" in err
    assert main(["engine", "import", str(path), str(tmp_path / "engine"), *TINY, "--overwrite"]) == 0


# ------------------------------------------------------------------------ sizes read from the file


def reference_inner_model(
    sd: dict[str, Tensor],
    prefix: str,
    noisy: Tensor,
    c_noise: Tensor,
    c_noise_cond: Tensor,
    obs: Tensor,
    multi_hot: Tensor | None,
) -> Tensor:
    """The official ``InnerModel.forward`` computed from its state dict alone, by torch.nn.functional calls
    written from the official modules' structure (csgo branch ``models/blocks.py``): an independent check of
    the imported network. ``obs``: (B, K * 3, H, W); ``multi_hot``: (B, L, rows) or None (the upsampler)."""
    p = f"{prefix}.inner_model."

    def w(name: str) -> Tensor:
        return sd[p + name]

    def conv(name: str, x: Tensor, stride: int = 1) -> Tensor:
        weight = w(f"{name}.weight")
        return F.conv2d(x, weight, w(f"{name}.bias"), stride=stride, padding=weight.shape[-1] // 2)

    def groups(c: int) -> int:
        return max(1, c // 32)  # groups of 32 channels, at least one

    def fourier(name: str, x: Tensor) -> Tensor:
        f = 2 * math.pi * x[:, None] @ w(name)
        return torch.cat([f.cos(), f.sin()], dim=-1)

    cond = fourier("noise_emb.weight", c_noise) + fourier("noise_cond_emb.weight", c_noise_cond)
    if multi_hot is not None:
        cond = cond + (multi_hot @ w("act_emb.0.weight")).flatten(1)
    cond = F.linear(
        F.silu(F.linear(cond, w("cond_proj.0.weight"), w("cond_proj.0.bias"))),
        w("cond_proj.2.weight"),
        w("cond_proj.2.bias"),
    )

    def ada_norm(name: str, x: Tensor) -> Tensor:
        scale, shift = F.linear(cond, w(f"{name}.linear.weight"), w(f"{name}.linear.bias"))[
            ..., None, None
        ].chunk(2, 1)
        return F.group_norm(x, groups(x.shape[1]), eps=1e-5) * (1 + scale) + shift

    def attention(name: str, x: Tensor) -> Tensor:
        n, c, h, wd = x.shape
        x = F.group_norm(x, groups(c), w(f"{name}.norm.norm.weight"), w(f"{name}.norm.norm.bias"), eps=1e-5)
        heads = max(1, c // 8)  # heads of 8 channels
        qkv = conv(f"{name}.qkv_proj", x).reshape(n, 3 * heads, c // heads, h * wd).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)
        y = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]), dim=-1) @ v
        return x + conv(
            f"{name}.out_proj", y.transpose(2, 3).reshape(n, c, h, wd)
        )  # residual on the normed x

    def resblock(name: str, x: Tensor) -> Tensor:
        skip = conv(f"{name}.proj", x) if f"{p}{name}.proj.weight" in sd else x
        y = conv(f"{name}.conv1", F.silu(ada_norm(f"{name}.norm1", x)))
        y = conv(f"{name}.conv2", F.silu(ada_norm(f"{name}.norm2", y))) + skip
        return attention(f"{name}.attn", y) if f"{p}{name}.attn.qkv_proj.weight" in sd else y

    def count(pattern: str) -> int:
        return sum(1 for i in range(100) if f"{p}{pattern.format(i)}" in sd)

    levels = count("unet.d_blocks.{}.resblocks.0.conv1.weight")
    depths = [count(f"unet.d_blocks.{i}.resblocks.{{}}.conv1.weight") for i in range(levels)]
    x = conv("conv_in", torch.cat([obs, noisy], dim=1))
    h, wd = x.shape[-2:]
    m = 2 ** (levels - 1)
    x = F.pad(x, (0, (m - wd % m) % m, 0, (m - h % m) % m))  # bottom and right, to a multiple of m
    skips = []
    for i in range(levels):
        if i > 0:
            x = conv(f"unet.downsamples.{i}.conv", x, stride=2)
        outputs = [x]
        for j in range(depths[i]):
            x = resblock(f"unet.d_blocks.{i}.resblocks.{j}", x)
            outputs.append(x)
        skips.append(outputs)
    for j in range(2):
        x = resblock(f"unet.mid_blocks.resblocks.{j}", x)
    for u in range(levels):
        level = levels - 1 - u
        if u > 0:
            x = conv(f"unet.upsamples.{u}.conv", F.interpolate(x, scale_factor=2.0, mode="nearest"))
        for j, skip in enumerate(reversed(skips[level])):  # the last output first, the level's input last
            x = resblock(f"unet.u_blocks.{u}.resblocks.{j}", torch.cat([x, skip], dim=1))
    x = x[..., :h, :wd]
    x = F.group_norm(x, groups(x.shape[1]), w("norm_out.norm.weight"), w("norm_out.norm.bias"), eps=1e-5)
    return conv("conv_out", F.silu(x))


SMALL_DENOISER = {"channels": [8, 16, 64], "depths": [2, 1, 1], "cond": 24}
SMALL_UPSAMPLER = {"channels": [8, 8], "depths": [1, 2], "cond": 12}


@pytest.fixture(scope="module")
def small() -> dict[str, Tensor]:
    """An official-layout model of other sizes than the published one: three levels, depths 2 1 1, 64
    channels (two norm groups), 3 conditioning frames; an upsampler of 2 frames and depths 1 2."""
    gen = torch.Generator().manual_seed(1)
    return {
        **official_inner_model("denoiser", [False, True, False], 3, False, gen, **SMALL_DENOISER),
        **official_inner_model("upsampler", [False, False], 2, True, gen, **SMALL_UPSAMPLER),
    }


def csgo_multi_hot(actions: Tensor) -> Tensor:
    """Our (..., 15) CS:GO action vectors as the official 51-wide multi-hot vectors."""
    out = torch.zeros(*actions.shape[:-1], 51, dtype=actions.dtype)
    out[..., :13] = actions[..., :13]
    x, y = actions[..., 13].long(), actions[..., 14].long()
    out.scatter_(-1, (13 + x)[..., None], 1.0)
    out.scatter_(-1, (13 + len(CSGO_MOUSE_X) + y)[..., None], 1.0)
    return out


def test_a_smaller_official_model_imports_with_its_sizes_read_from_the_file(
    small: dict[str, Tensor], tmp_path: Path
) -> None:
    folder = import_official_engine(saved(small, tmp_path), tmp_path / "engine")  # no overrides
    engine = open_engine(folder, "cpu")
    assert engine.upsampler is not None and engine.cfg.upsampler is not None
    den, up = engine.cfg.denoiser, engine.cfg.upsampler
    assert (den.channels, den.depths, den.attn_depths) == ([8, 16, 64], [2, 1, 1], [False, True, False])
    assert (den.cond_channels, den.num_cond_frames) == (24, 3)
    assert (up.channels, up.depths, up.attn_depths, up.cond_channels) == ([8, 8], [1, 2], [False, False], 12)
    assert up.num_cond_frames == 2 and engine.spec == CSGO_ACTION_SPEC
    assert "channels [8, 16, 64], depths [2, 1, 1]" in (folder / "imported.txt").read_text()

    gen = torch.Generator().manual_seed(2)
    sd = {k: v.double() for k, v in small.items()}
    b, (h, w) = 2, (6, 10)  # 6x10: padded to 8x12 by the three-level U-Net
    noisy = torch.randn(b, 3, h, w, generator=gen, dtype=torch.float64)
    c_noise = torch.randn(b, generator=gen, dtype=torch.float64)
    c_noise_cond = torch.randn(b, generator=gen, dtype=torch.float64)
    frames = torch.randn(b, 3, 3, h, w, generator=gen, dtype=torch.float64)
    actions = torch.zeros(b, 3, CSGO_ACTION_SPEC.width, dtype=torch.float64)
    actions[..., :13] = torch.randint(0, 2, (b, 3, 13), generator=gen).double()
    actions[..., 13] = torch.randint(0, len(CSGO_MOUSE_X), (b, 3), generator=gen).double()
    actions[..., 14] = torch.randint(0, len(CSGO_MOUSE_Y), (b, 3), generator=gen).double()
    with torch.no_grad():
        ours = engine.denoiser.net.double()(noisy, c_noise, c_noise_cond, frames, actions)
        theirs = reference_inner_model(
            sd, "denoiser", noisy, c_noise, c_noise_cond, frames.flatten(1, 2), csgo_multi_hot(actions)
        )
        assert ours.shape == (b, 3, h, w) and theirs.abs().max() > 1
        assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-9 * float(theirs.abs().max()))
        noisy_full = torch.randn(b, 3, 7, 11, generator=gen, dtype=torch.float64)  # odd: padded to 8x12
        cond_full = torch.randn(b, 3, 3, 7, 11, generator=gen, dtype=torch.float64)  # 2 frames + low-res
        ours = engine.upsampler.net.double()(noisy_full, c_noise, c_noise_cond, cond_full, None)
        theirs = reference_inner_model(
            sd, "upsampler", noisy_full, c_noise, c_noise_cond, cond_full.flatten(1, 2), None
        )
        assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-9 * float(theirs.abs().max()))


def test_the_dataset_gives_the_action_space_and_the_resolutions(tmp_path: Path) -> None:
    """With --data, a model of another action space (a 6-row table: one discrete component of 6) imports,
    and the denoiser's resolution is the dataset's frames over the upsampler's factor."""
    spec = ActionSpec.of(discrete("action", 6))
    writer = EngineDatasetWriter(tmp_path / "data", spec, (12, 20), source="test")
    writer.add_episode(np.zeros((5, 12, 20, 3), np.uint8), np.zeros((5, 1), np.float32))
    writer.finish(test_fraction=0.0)
    gen = torch.Generator().manual_seed(3)
    model = {
        **official_inner_model("denoiser", [False, True], 2, False, gen, action_rows=6),
        **official_inner_model("upsampler", [False, False], 1, True, gen),
    }
    path, data = saved(model, tmp_path), str(tmp_path / "data")
    with pytest.raises(OfficialAgentError, match="which upsampler.factor=5 does not divide: add") as info:
        import_official_engine(path, tmp_path / "engine", data=data)
    assert "\n" not in str(info.value)
    engine = open_engine(
        import_official_engine(path, tmp_path / "e", data=data, overrides=("upsampler.factor=4",))
    )
    assert engine.spec == spec and engine.cfg.low_res == [3, 5] and engine.cfg.full_res() == (12, 20)
    assert engine.denoiser.net.act_emb is not None
    embedded = engine.denoiser.net.act_emb(torch.tensor([[[4.0], [1.0]]]))[0]
    table = model["denoiser.inner_model.act_emb.0.weight"]
    assert torch.equal(embedded, table[[4, 1]])  # the official Embedding's rows 4 and 1
    no_data = import_error(path, tmp_path)
    assert "has 6 rows, but the action space of the CS:GO dataset" in no_data and "--data" in no_data


def test_files_that_cannot_be_mapped(small: dict[str, Tensor], tmp_path: Path) -> None:
    # The deepest level (u_blocks.0) lacks its last block: its d_blocks say depth 1, so 2 u_blocks.
    short = {k: v for k, v in small.items() if ".u_blocks.0.resblocks.1." not in k}
    message = import_error(saved(short, tmp_path), tmp_path, ())
    assert "does not match the official denoiser of channels [8, 16, 64], depths [2, 1, 1]" in message
    assert "missing: denoiser.inner_model.unet.u_blocks.0.resblocks.1." in message
    no_unet = {k: v for k, v in small.items() if ".upsampler.inner_model.unet." not in f".{k}"}
    assert "lacks upsampler.inner_model.unet.d_blocks.0.resblocks.0.conv1.weight" in import_error(
        saved(no_unet, tmp_path), tmp_path, ()
    )
    flat = {**small, "denoiser.inner_model.noise_emb.weight": torch.zeros(12)}
    assert "noise_emb.weight has shape (12,), where the official layout has 2 dimensions" in import_error(
        saved(flat, tmp_path), tmp_path, ()
    )
    with pytest.raises(OfficialAgentError) as info:
        import_official_engine(
            saved(small, tmp_path), tmp_path / "engine", overrides=("denoiser.depths=[2,2,2]",)
        )
    assert str(info.value).startswith("denoiser.depths=[2,2,2] contradicts") and "[2, 1, 1]" in str(
        info.value
    )
