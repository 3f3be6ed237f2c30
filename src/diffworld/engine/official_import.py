"""Import the authors' published CS:GO model (github.com/eloialonso/diamond, its csgo branch) as an engine
folder that ``diffworld engine eval``, ``diffworld play`` and ``diffworld video`` read.

The official code saves its agent as one ``torch.save``'d state dict whose keys are prefixed by the model:
``denoiser.`` (the next-frame model) and ``upsampler.``. Each model's network is ``inner_model``, whose layers
are those of the world model's ``ConditionedUNet`` with the Atari denoiser's names (``official_name``),
except the action embedding: the official one is one table of 51 rows, one per column of the official
multi-hot action vector (11 keys, 2 clicks, 23 mouse-x bins, 15 mouse-y bins), where ``ActionEncoder`` has
one table per component of the action space, whose rows stacked in order are that table.

The file records no configuration, but its tensors' names and shapes give the architecture
(``infer_official_sizes``): the number of U-Net levels and blocks per level from the names, channels and
conditioning widths from the shapes, attention from the attention tensors' presence, the conditioning frames
from the input convolution's channels (3 per frame, plus the noisy frame and the upsampler's low-resolution
one), and the action table's rows. So a model trained by the official code at other sizes imports as well as
the published one; everything the weights cannot tell (the resolutions, the samplers, sigma_data) comes from
the ``csgo`` preset, or from the dataset given (``--data``): its action space and its frame size, the
upsampler's output. Every tensor is then checked by name and shape against the models built from that
configuration.

The file is read with ``torch.load(..., weights_only=True)`` (``read_official_state_dict``): a pickle that
holds anything but tensors and plain containers is refused without running its code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf
from torch import Tensor, nn

from diffworld.config.loading import parse_overrides, save_config
from diffworld.data.actions import ActionSpec
from diffworld.data.folder_store import EngineDataset
from diffworld.engine.config import (
    EngineConfig,
    EngineDenoiserConfig,
    build_engine_config,
    validate_engine_config,
)
from diffworld.engine.convert.from_csgo_hdf5 import CSGO_ACTION_SPEC
from diffworld.engine.denoiser import EngineDenoiser, Upsampler
from diffworld.engine.folder import save_action_space
from diffworld.models.action_encoder import ActionEncoder
from diffworld.models.official_names import official_name
from diffworld.run.checkpoint import save_checkpoint
from diffworld.run.folder import CONFIG_FILE, checkpoint_dir
from diffworld.run.official_file import (
    OfficialAgentError,
    checked_tensors,
    count_indexed,
    listed,
    mismatch,
    read_official_state_dict,
    unet_levels,
)
from diffworld.utils.atomic import atomic_write_text

OFFICIAL_ENGINE_PREFIXES = ("denoiser.", "upsampler.")
ACTION_TABLE = "act_emb.0.weight"
"""The official action embedding, under ``<model>.inner_model.``."""
_ACTION_TABLES = "net.act_emb.tables."


class OfficialEngineError(OfficialAgentError):
    """An official CS:GO model file that cannot be imported: the message names the file and what differs."""


def official_engine_names(model: nn.Module, prefix: str) -> dict[str, str]:
    """Official name -> our name, for every tensor of ``model`` (an ``EngineDenoiser`` or ``Upsampler``)
    but the action tables; ``prefix``: ``denoiser`` or ``upsampler``."""
    names = {}
    for name in model.state_dict():
        if name.startswith(_ACTION_TABLES):
            continue
        # The network's layers are named as the Atari denoiser's: its rules give their official names.
        names[prefix + official_name("denoiser." + name, 0).removeprefix("denoiser")] = name
    return names


@dataclass(frozen=True)
class OfficialSizes:
    """The architecture of one official model (``denoiser`` or ``upsampler``) read from its tensors."""

    cond_channels: int
    channels: list[int]
    depths: list[int]
    attn_depths: list[bool]
    num_cond_frames: int
    action_rows: int | None
    """Rows of the action table (the denoiser's), None for the upsampler."""

    def apply(self, cfg: EngineDenoiserConfig) -> None:
        for key in ARCHITECTURE_KEYS:
            setattr(cfg, key, getattr(self, key))

    def describe(self) -> str:
        attn = [int(a) for a in self.attn_depths]
        return (
            f"channels {self.channels}, depths {self.depths}, attention {attn}, cond_channels "
            f"{self.cond_channels}, {self.num_cond_frames} conditioning frame(s)"
        )


ARCHITECTURE_KEYS = ("cond_channels", "channels", "depths", "attn_depths", "num_cond_frames")
"""The configuration keys of each model that ``infer_official_sizes`` reads from the file."""


def infer_official_sizes(tensors: Mapping[str, Tensor], prefix: str, path: Path) -> OfficialSizes:
    """The architecture of the official model ``prefix`` (``denoiser`` or ``upsampler``) from the names and
    shapes of its tensors; a one-line ``OfficialEngineError`` naming the tensor that does not fit."""
    inner = f"{prefix}.inner_model."
    upsampler = prefix == "upsampler"

    def shape(name: str, ndim: int, what: str) -> tuple[int, ...]:
        tensor = tensors.get(inner + name)
        if tensor is None:
            raise OfficialEngineError(
                f"{path} lacks {inner}{name}, which gives the {prefix}'s {what}: not the official layout."
            )
        if tensor.ndim != ndim:
            raise OfficialEngineError(
                f"{path}: {inner}{name} has shape {tuple(tensor.shape)}, where the official layout has "
                f"{ndim} dimensions."
            )
        return tuple(int(n) for n in tensor.shape)

    cond = 2 * shape("noise_emb.weight", 2, "conditioning width")[1]  # Fourier features: cos and sin
    num_levels = count_indexed(tensors, inner + "unet.d_blocks.{}.resblocks.0.conv1.weight")
    if num_levels == 0:
        shape("unet.d_blocks.0.resblocks.0.conv1.weight", 4, "U-Net levels")
    for i in range(num_levels):
        shape(f"unet.d_blocks.{i}.resblocks.0.conv1.weight", 4, "U-Net channels")
    levels = unet_levels(tensors, inner + "unet.d_blocks", num_levels)
    conv_in = shape("conv_in.weight", 4, "conditioning frames")
    stacked = conv_in[1] // 3 - 1 - int(upsampler)  # frames of 3 channels: conditioning, (low-res,) noisy
    if conv_in[1] % 3 or stacked < 1:
        extra = " and the low-resolution frame" if upsampler else ""
        raise OfficialEngineError(
            f"{path}: {inner}conv_in.weight has shape {conv_in}: {conv_in[1]} input channels are not 3 per "
            f"frame for one or more conditioning frames{extra} and the noisy frame."
        )
    rows = None
    if not upsampler:
        table = shape(ACTION_TABLE, 2, "action embedding")
        rows = table[0]
        if table[1] * stacked != cond:
            raise OfficialEngineError(
                f"{path}: {inner}conv_in.weight has shape {conv_in}, which stacks {stacked} conditioning "
                f"frame(s), but the action embedding {inner}{ACTION_TABLE} has shape {table}, where "
                f"cond_channels {cond} (noise_emb) over {stacked} frame(s) need {cond / stacked:g} columns: "
                "not one consistent official model."
            )
    return OfficialSizes(
        cond_channels=cond,
        channels=levels["channels"],
        depths=levels["depths"],
        attn_depths=levels["attn_depths"],
        num_cond_frames=stacked,
        action_rows=rows,
    )


def split_action_table(table: Tensor, encoder: ActionEncoder, path: Path) -> dict[str, Tensor]:
    """The official action table (rows: the multi-hot vector's columns) as ``encoder``'s per-component
    tables, keyed by their names in the denoiser's state dict."""
    sizes = [int(t.weight.shape[0]) for t in encoder.tables if isinstance(t, nn.Embedding)]
    if table.ndim != 2 or table.shape[0] != sum(sizes) or table.shape[1] != encoder.dim:
        raise OfficialEngineError(
            f"{path}: the action embedding denoiser.inner_model.{ACTION_TABLE} has shape "
            f"{tuple(table.shape)}, but the action space {encoder.spec.describe()} and this architecture "
            f"expect ({sum(sizes)}, {encoder.dim})."
        )
    return {f"{_ACTION_TABLES}{i}.weight": part for i, part in enumerate(table.split(sizes))}


def _sizes_of(model: nn.Module) -> str:
    cfg = model.cfg
    assert isinstance(cfg, EngineDenoiserConfig)
    return OfficialSizes(
        cfg.cond_channels, cfg.channels, cfg.depths, cfg.attn_depths, cfg.num_cond_frames, None
    ).describe()


def _load_model(model: nn.Module, prefix: str, tensors: Mapping[str, Tensor], path: Path) -> None:
    """Load the file's ``prefix.*`` tensors into ``model``, every name and shape checked first."""
    names = official_engine_names(model, prefix)
    expected = model.state_dict()
    theirs = {k for k in tensors if k.startswith(prefix + ".")}
    if isinstance(model, EngineDenoiser):
        theirs.discard(f"{prefix}.inner_model.{ACTION_TABLE}")
    missing, unexpected = set(names) - theirs, theirs - set(names)
    if missing or unexpected:
        raise OfficialEngineError(
            f"{path} does not match the official {prefix} of {_sizes_of(model)} "
            f"({mismatch(missing, unexpected)})."
        )
    state = checked_tensors(
        names.items(),
        tensors,
        expected,
        path,
        lambda shape: f"the official {prefix} of {_sizes_of(model)} has {shape}",
        OfficialEngineError,
    )
    if isinstance(model, EngineDenoiser):
        table = tensors.get(f"{prefix}.inner_model.{ACTION_TABLE}")
        if table is None:
            raise OfficialEngineError(
                f"{path} lacks the action embedding {prefix}.inner_model.{ACTION_TABLE}."
            )
        assert isinstance(model.net.act_emb, ActionEncoder)
        state.update(split_action_table(table, model.net.act_emb, path))
    model.load_state_dict(state)


def convert_official_engine(
    tensors: Mapping[str, Tensor], cfg: EngineConfig, spec: ActionSpec, path: Path
) -> tuple[EngineDenoiser, Upsampler]:
    """The engine's two models built from ``cfg`` and ``spec`` with the official ``tensors`` loaded."""
    if cfg.upsampler is None:
        raise OfficialEngineError("The official CS:GO model has an upsampler: the configuration has none.")
    check_engine_prefixes(tensors, path)
    denoiser = EngineDenoiser(cfg.denoiser, spec)
    upsampler = Upsampler(cfg.upsampler)
    _load_model(denoiser, "denoiser", tensors, path)
    _load_model(upsampler, "upsampler", tensors, path)
    extra = {k for k in tensors if not k.startswith(OFFICIAL_ENGINE_PREFIXES)}
    if extra - {k for k in extra if k.startswith(("rew_end_model.", "actor_critic."))}:
        raise OfficialEngineError(f"{path} holds tensors of no model: {listed(extra)}.")
    return denoiser.eval(), upsampler.eval()


def check_engine_prefixes(tensors: Mapping[str, Tensor], path: Path) -> None:
    """Refuse a file without both the denoiser's and the upsampler's tensors."""
    present = {k.split(".", 1)[0] for k in tensors}
    absent = [p.rstrip(".") for p in OFFICIAL_ENGINE_PREFIXES if p.rstrip(".") not in present]
    if absent:
        raise OfficialEngineError(
            f"{path} has no {' and no '.join(absent)} tensors: not the official CS:GO model (an Atari agent? "
            "use 'diffworld import')."
        )


def official_engine_config(
    tensors: Mapping[str, Tensor], path: Path, data: str = "", overrides: tuple[str, ...] = ()
) -> tuple[EngineConfig, ActionSpec]:
    """The configuration and action space of the official model ``tensors``: the ``csgo`` preset with the
    architecture read from the tensors, the action space and frame size of ``data`` where given (else the
    CS:GO ones), then ``overrides``, which may not contradict the tensors."""
    check_engine_prefixes(tensors, path)
    sizes = {prefix: infer_official_sizes(tensors, prefix, path) for prefix in ("denoiser", "upsampler")}
    given = parse_overrides(overrides)
    for prefix in sizes:
        for key in ARCHITECTURE_KEYS:
            name, theirs = f"{prefix}.{key}", getattr(sizes[prefix], key)
            if name in given and _parsed(given[name]) != theirs:
                raise OfficialEngineError(
                    f"{name}={given[name]} contradicts {path}, whose tensors have {name} {theirs}: leave it "
                    "out (import reads the sizes from the file)."
                )
    # The architecture keys are left out of the overrides (equal to the file's, checked above) so that the
    # preset's four levels do not meet a file's other number of levels in the validation.
    rest = [f"{k}={v}" for k, v in given.items() if k.split(".", 1)[-1] not in ARCHITECTURE_KEYS]
    cfg = build_engine_config(["data=unset", "preset=csgo", *rest])
    cfg.data = data  # may be empty: a command-line value could not be
    if cfg.upsampler is None:
        raise OfficialEngineError("The official CS:GO model has an upsampler: the configuration has none.")
    sizes["denoiser"].apply(cfg.denoiser)
    sizes["upsampler"].apply(cfg.upsampler)
    spec = CSGO_ACTION_SPEC
    if data:
        dataset = EngineDataset(data)
        spec = dataset.spec
        if "low_res" not in given:
            cfg.low_res = _low_res_for(dataset.frame_size, cfg.upsampler.factor, data)
    validate_engine_config(cfg)
    rows = sizes["denoiser"].action_rows
    expected = sum(t.num_embeddings for t in ActionEncoder(spec, 1).tables if isinstance(t, nn.Embedding))
    if rows != expected:
        source = f"the dataset {data}" if data else "the CS:GO dataset"
        raise OfficialEngineError(
            f"{path}: the action embedding denoiser.inner_model.{ACTION_TABLE} has {rows} rows, but the "
            f"action space of {source} ({spec.describe()}) has {expected}: give --data <the engine dataset "
            "the model was trained on>."
        )
    return cfg, spec


def _parsed(value: str) -> Any:
    """A command-line value as the configuration reads it (a YAML scalar or list)."""
    parsed = OmegaConf.from_dotlist([f"v={value}"]).v
    return OmegaConf.to_container(parsed) if isinstance(parsed, ListConfig) else parsed


def _low_res_for(frame_size: tuple[int, int], factor: int, data: str) -> list[int]:
    """The denoiser's resolution under which the upsampler makes ``frame_size``."""
    h, w = frame_size
    if h % factor or w % factor:
        raise OfficialEngineError(
            f"{data} has frames of {h}x{w}, which upsampler.factor={factor} does not divide: add "
            "upsampler.factor=<a divisor of both> (the weights do not record the resolutions)."
        )
    return [h // factor, w // factor]


def import_official_engine(
    path: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    data: str = "",
    overrides: tuple[str, ...] = (),
    overwrite: bool = False,
) -> Path:
    """Write the official CS:GO model file at ``path`` as the engine folder ``folder``.

    ``data``: the engine dataset play and evaluation start from by default (the CS:GO dataset converted by
    ``diffworld engine convert``), whose action space and frame size the model takes; ``overrides``:
    configuration overrides on the ``csgo`` preset for what the weights do not record (see the module
    docstring; the architecture is read from the file).

    Raises:
        OfficialEngineError: the file cannot be read or is not one consistent official model.
        FileExistsError: ``folder`` exists and is not empty, and ``overwrite`` is False.
    """
    path, folder = Path(path), Path(folder)
    tensors = read_official_state_dict(path, prefixes=OFFICIAL_ENGINE_PREFIXES)
    cfg, spec = official_engine_config(tensors, path, data, overrides)
    denoiser, upsampler = convert_official_engine(tensors, cfg, spec, path)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{folder} exists and is not empty: choose another folder or add --overwrite"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "updates": 0,
        "models": {"denoiser": denoiser.state_dict(), "upsampler": upsampler.state_dict()},
    }
    save_checkpoint(state, checkpoint_dir(folder))
    save_action_space(folder, spec)
    atomic_write_text(
        folder / "imported.txt",
        "A model of the official CS:GO code (github.com/eloialonso/diamond, csgo branch), imported by "
        f"'diffworld engine import' from {path.name}, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}"
        f"\ndenoiser: {_sizes_of(denoiser)}\nupsampler: {_sizes_of(upsampler)}\n",
    )
    # Written last: the folder is an engine folder once its configuration exists.
    save_config(cfg, folder / CONFIG_FILE)
    return folder
