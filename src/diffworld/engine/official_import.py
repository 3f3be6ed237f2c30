"""Import the authors' published CS:GO model (github.com/eloialonso/diamond, its csgo branch) as an engine
folder that ``diffworld engine eval``, ``diffworld play`` and ``diffworld video`` read.

The official code saves its agent as one ``torch.save``'d state dict whose keys are prefixed by the model:
``denoiser.`` (the next-frame model) and ``upsampler.``. Each model's network is ``inner_model``, whose layers
are those of the engine's ``EngineNetwork`` with the Atari denoiser's names (``official_name``), except the
action embedding: the official one is one table of 51 rows, one per column of the official multi-hot action
vector (11 keys, 2 clicks, 23 mouse-x bins, 15 mouse-y bins), where ``ActionEncoder`` has one table per
component of the action space, whose rows stacked in order are that table. The file records neither the
architecture nor the action space: both are the official CS:GO ones (the ``csgo`` preset and the CS:GO
action space of the dataset converter), against which every name and shape of the file is checked.

The file is read with ``torch.load(..., weights_only=True)`` (``read_official_state_dict``): a pickle that
holds anything but tensors and plain containers is refused without running its code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from diffworld.engine.action_encoder import ActionEncoder
from diffworld.engine.actions import ActionSpec
from diffworld.engine.config import EngineConfig, build_engine_config, save_engine_config
from diffworld.engine.convert.from_csgo_hdf5 import CSGO_ACTION_SPEC
from diffworld.engine.denoiser import EngineDenoiser, Upsampler
from diffworld.engine.folder import save_action_space
from diffworld.official_import import OfficialAgentError, official_name, read_official_state_dict
from diffworld.run.checkpoint import save_checkpoint
from diffworld.run.folder import CONFIG_FILE, checkpoint_dir
from diffworld.utils.atomic import atomic_write_text

OFFICIAL_ENGINE_PREFIXES = ("denoiser.", "upsampler.")
ACTION_TABLE = "act_emb.0.weight"
"""The official action embedding, under ``<model>.inner_model.``."""
_ACTION_TABLES = "net.act_emb.tables."
_MAX_LISTED = 3


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


def split_action_table(table: Tensor, encoder: ActionEncoder, path: Path) -> dict[str, Tensor]:
    """The official action table (rows: the multi-hot vector's columns) as ``encoder``'s per-component
    tables, keyed by their names in the denoiser's state dict."""
    sizes = [int(t.weight.shape[0]) for t in encoder.tables if isinstance(t, nn.Embedding)]
    if table.ndim != 2 or table.shape[0] != sum(sizes) or table.shape[1] != encoder.dim:
        raise OfficialEngineError(
            f"{path}: the action embedding denoiser.inner_model.{ACTION_TABLE} has shape "
            f"{tuple(table.shape)}, "
            f"but the CS:GO action space and this architecture expect ({sum(sizes)}, {encoder.dim})."
        )
    return {f"{_ACTION_TABLES}{i}.weight": part for i, part in enumerate(table.split(sizes))}


def _listed(names: set[str]) -> str:
    shown = sorted(names)[:_MAX_LISTED]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return ", ".join(shown) + more


def _load_model(model: nn.Module, prefix: str, tensors: Mapping[str, Tensor], path: Path) -> None:
    """Load the file's ``prefix.*`` tensors into ``model``, every name and shape checked first."""
    names = official_engine_names(model, prefix)
    expected = model.state_dict()
    theirs = {k for k in tensors if k.startswith(prefix + ".")}
    if isinstance(model, EngineDenoiser):
        theirs.discard(f"{prefix}.inner_model.{ACTION_TABLE}")
    missing, unexpected = set(names) - theirs, theirs - set(names)
    if missing or unexpected:
        problems = [
            f"{len(s)} {what}: {_listed(s)}"
            for s, what in ((missing, "missing"), (unexpected, "unexpected"))
            if s
        ]
        raise OfficialEngineError(
            f"{path} does not match the official CS:GO {prefix} ({'; '.join(problems)})."
        )
    state: dict[str, Tensor] = {}
    for official, ours in names.items():
        tensor = tensors[official]
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise OfficialEngineError(
                f"{path}: tensor {official!r} has shape {tuple(tensor.shape)}, but the official CS:GO "
                f"architecture has {tuple(expected[ours].shape)}."
            )
        if expected[ours].is_floating_point() and not tensor.is_floating_point():
            raise OfficialEngineError(f"{path}: tensor {official!r} is {tensor.dtype}, not floating point.")
        state[ours] = tensor
    if isinstance(model, EngineDenoiser):
        table = tensors.get(f"{prefix}.inner_model.{ACTION_TABLE}")
        if table is None:
            raise OfficialEngineError(
                f"{path} lacks the action embedding {prefix}.inner_model.{ACTION_TABLE}."
            )
        assert model.net.act_emb is not None
        state.update(split_action_table(table, model.net.act_emb, path))
    model.load_state_dict(state)


def convert_official_engine(
    tensors: Mapping[str, Tensor], cfg: EngineConfig, spec: ActionSpec, path: Path
) -> tuple[EngineDenoiser, Upsampler]:
    """The engine's two models built from ``cfg`` and ``spec`` with the official ``tensors`` loaded."""
    if cfg.upsampler is None:
        raise OfficialEngineError("The official CS:GO model has an upsampler: the configuration has none.")
    present = {k.split(".", 1)[0] for k in tensors}
    absent = [p.rstrip(".") for p in OFFICIAL_ENGINE_PREFIXES if p.rstrip(".") not in present]
    if absent:
        raise OfficialEngineError(
            f"{path} has no {' and no '.join(absent)} tensors: not the official CS:GO model (an Atari agent? "
            "use 'diffworld import')."
        )
    denoiser = EngineDenoiser(cfg.denoiser, spec)
    upsampler = Upsampler(cfg.upsampler)
    _load_model(denoiser, "denoiser", tensors, path)
    _load_model(upsampler, "upsampler", tensors, path)
    extra = {k for k in tensors if not k.startswith(OFFICIAL_ENGINE_PREFIXES)}
    if extra - {k for k in extra if k.startswith(("rew_end_model.", "actor_critic."))}:
        raise OfficialEngineError(f"{path} holds tensors of no model: {_listed(extra)}.")
    return denoiser.eval(), upsampler.eval()


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
    ``diffworld engine convert``); ``overrides``: configuration overrides on the ``csgo`` preset where the
    file was trained with other settings.

    Raises:
        OfficialEngineError: the file cannot be read or does not match the CS:GO architecture.
        FileExistsError: ``folder`` exists and is not empty, and ``overwrite`` is False.
    """
    path, folder = Path(path), Path(folder)
    tensors = read_official_state_dict(path, prefixes=OFFICIAL_ENGINE_PREFIXES)
    cfg = build_engine_config(["data=unset", "preset=csgo", *overrides])
    cfg.data = data  # may be empty: a command-line value could not be
    denoiser, upsampler = convert_official_engine(tensors, cfg, CSGO_ACTION_SPEC, path)
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
    save_action_space(folder, CSGO_ACTION_SPEC)
    atomic_write_text(
        folder / "imported.txt",
        "The official CS:GO model (github.com/eloialonso/diamond, csgo branch), imported by 'diffworld "
        "engine "
        f"import' from {path.name}, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}\n",
    )
    # Written last: the folder is an engine folder once its configuration exists.
    save_engine_config(cfg, folder / CONFIG_FILE)
    return folder
