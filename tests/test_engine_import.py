"""``diffworld engine import``: the official CS:GO model's state dict (written here by hand, at tiny sizes,
with the names and shapes of the official csgo branch's modules) -> an engine folder; one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import Tensor

from diffworld.cli import main
from diffworld.engine.convert.from_csgo_hdf5 import CSGO_ACTION_SPEC
from diffworld.engine.official_import import import_official_engine
from diffworld.engine.open_engine import open_engine
from diffworld.official_import import OfficialAgentError

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
    prefix: str, attn: list[bool], num_cond: int, upsampler: bool, gen: torch.Generator
) -> dict[str, Tensor]:
    """The state dict of the official ``Denoiser``'s ``inner_model`` (csgo branch: InnerModel, UNet,
    ResBlock, AdaGroupNorm, SelfAttention2d, FourierFeatures), written from its module structure."""
    sd: dict[str, Tensor] = {}

    def add(name: str, *shape: int) -> None:
        sd[f"{prefix}.inner_model.{name}"] = torch.randn(*shape, generator=gen)

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        add(f"{name}.weight", cout, cin, k, k)
        add(f"{name}.bias", cout)

    def resblock(name: str, cin: int, cout: int, with_attn: bool) -> None:
        if cin != cout:
            conv(f"{name}.proj", cout, cin, 1)
        add(f"{name}.norm1.linear.weight", 2 * cin, COND)
        add(f"{name}.norm1.linear.bias", 2 * cin)
        conv(f"{name}.conv1", cout, cin, 3)
        add(f"{name}.norm2.linear.weight", 2 * cout, COND)
        add(f"{name}.norm2.linear.bias", 2 * cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if with_attn:
            add(f"{name}.attn.norm.norm.weight", cout)
            add(f"{name}.attn.norm.norm.bias", cout)
            conv(f"{name}.attn.qkv_proj", 3 * cout, cout, 1)
            conv(f"{name}.attn.out_proj", cout, cout, 1)

    add("noise_emb.weight", 1, COND // 2)
    add("noise_cond_emb.weight", 1, COND // 2)
    if not upsampler:
        add("act_emb.0.weight", 51, COND // num_cond)
    for i in (0, 2):
        add(f"cond_proj.{i}.weight", COND, COND)
        add(f"cond_proj.{i}.bias", COND)
    conv("conv_in", CHANNELS[0], (num_cond + int(upsampler) + 1) * 3, 3)
    levels = len(CHANNELS)
    for i in range(levels):
        c1, c2 = CHANNELS[max(0, i - 1)], CHANNELS[i]
        resblock(f"unet.d_blocks.{i}.resblocks.0", c1, c2, attn[i])
        # u_blocks are built per level, then reversed: level i is u_blocks[levels - 1 - i].
        u = levels - 1 - i
        resblock(f"unet.u_blocks.{u}.resblocks.0", 2 * c2, c2, attn[i])
        resblock(f"unet.u_blocks.{u}.resblocks.1", c1 + c2, c1, attn[i])
    for j in range(2):
        resblock(f"unet.mid_blocks.resblocks.{j}", CHANNELS[-1], CHANNELS[-1], True)
    for k, c in enumerate(CHANNELS[:-1], start=1):
        conv(f"unet.downsamples.{k}.conv", c, c, 3)
    for k, c in enumerate(reversed(CHANNELS[:-1]), start=1):
        conv(f"unet.upsamples.{k}.conv", c, c, 3)
    add("norm_out.norm.weight", CHANNELS[0])
    add("norm_out.norm.bias", CHANNELS[0])
    conv("conv_out", 3, CHANNELS[0], 3)
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


def import_error(path: Path, tmp_path: Path) -> str:
    with pytest.raises(OfficialAgentError) as info:  # OfficialEngineError for a model that does not fit
        import_official_engine(path, tmp_path / "engine", overrides=TINY)
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
