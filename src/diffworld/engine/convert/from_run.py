"""A diffworld episode folder (a run's training dataset, or episodes recorded in ``diffworld play``) as an
engine dataset: its frames as they are (64x64) and its actions as one discrete component, or, for a
continuous-control game (action vectors stored), as its D continuous components ``a0`` .. within [-1, 1]
(``data.actions.box_spec``, the agent's action unit).

A stored episode of T steps holds T+1 frames, the last one following the last action. Every frame is kept;
the action of the last frame, which no frame follows (so no prediction uses it), repeats the episode's last
action.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from diffworld.data.actions import ActionSpec, box_spec, discrete
from diffworld.data.folder_store import EngineDatasetWriter
from diffworld.errors import UserError
from diffworld.viz.dataset_browser import action_meanings_for
from diffworld.viz.episodes import EpisodeFiles, find_episode_folder

logger = logging.getLogger(__name__)


def convert_run(
    source: Path,
    out: Path,
    *,
    num_actions: int | None = None,
    test_fraction: float = 0.1,
    skip_corrupt: bool = False,
    resume: bool = False,
) -> Path:
    """Write the episodes of ``source`` (a run folder, a folder of ``episode_*.npz`` files, or one with a
    ``train`` subfolder of them) as the engine dataset ``out``; return ``out``.

    The number of actions comes from the run's game or the recording's ``recording.json``; a bare episode
    folder needs ``num_actions``. A corrupt episode file is refused (``UserError`` naming it), or skipped
    with a warning if ``skip_corrupt``. ``resume`` continues an interrupted conversion into ``out``.
    """
    folder = find_episode_folder(source)
    meanings = action_meanings_for(folder, source)
    if meanings is not None and num_actions is not None and num_actions != len(meanings):
        raise UserError(
            f"{source} has {len(meanings)} actions ({', '.join(meanings)}), not num_actions={num_actions}"
        )
    n = len(meanings) if meanings is not None else num_actions
    if n is None:
        raise UserError(
            f"{source} does not say how many actions its game has (no run configuration, no recording.json): "
            "give its number of actions (--num-actions)"
        )
    files = EpisodeFiles(folder)
    source_info: dict[str, Any] = {"converter": "run", "path": str(folder.resolve())}
    if meanings is not None:
        source_info["action_meanings"] = meanings
    writer: EngineDatasetWriter | None = None
    done: set[str] = set()  # converted before an interruption
    for index, episode_id in enumerate(files.ids):
        name = f"{episode_id:06d}"
        try:
            episode = files[index]
        except UserError as e:  # the file cannot be read back
            if not skip_corrupt:
                raise
            logger.warning("Skipping episode %d of %s: %s", episode_id, folder, e)
            continue
        if writer is None:  # the first readable episode gives the frame size and the kind of actions
            spec = _action_spec(episode.act, n, folder)
            writer = EngineDatasetWriter(out, spec, episode.obs.shape[1:3], source_info, resume=resume)
            done = set(writer.episode_names)
        if name in done:
            continue
        actions = np.concatenate([episode.act, episode.act[-1:]]).astype(np.float32)
        writer.add_episode(episode.obs, actions, name=name)
    if writer is None:
        raise UserError(f"no episode of {folder} could be read")
    return writer.finish(test_fraction)


def _action_spec(act: np.ndarray, n: int, folder: Path) -> ActionSpec:
    """One discrete component of ``n`` actions for stored indices; ``n`` continuous components within
    [-1, 1] for stored action vectors (a continuous-control game's, ``n`` of them per step)."""
    if act.ndim == 1:
        return ActionSpec.of(discrete("action", n))
    if act.ndim != 2 or act.shape[1] != n:
        raise UserError(
            f"the episodes of {folder} hold actions of shape {act.shape[1:]}, but their game has {n} action "
            "components"
        )
    return box_spec(n)
