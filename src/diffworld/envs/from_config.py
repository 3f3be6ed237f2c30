"""The run's environments, built from its configuration."""

from __future__ import annotations

from diffworld.config.schema import Config
from diffworld.envs.vector import AtariEnvs
from diffworld.games import is_atari
from diffworld.utils.seeding import derive_seed


def make_envs(
    cfg: Config,
    num_envs: int,
    purpose: str,
    life_loss_terminal: bool,
    max_frames_per_episode: int | None = None,
) -> AtariEnvs:
    """Environments of the run's game, seeded from the run seed and ``purpose``, with episodes capped at
    ``max_frames_per_episode`` frames (None: ``env.max_frames_per_episode``).

    Atari games step in one process each when there are several; Catch's steps cost microseconds, less
    than passing them between processes, so its environments all step in this one, as the continuous-control
    games' do (MuJoCo's headless rendering is made once per process).
    """
    return seeded_envs(
        cfg, num_envs, derive_seed(cfg.seed, purpose), life_loss_terminal, max_frames_per_episode
    )


def seeded_envs(
    cfg: Config,
    num_envs: int,
    seed: int,
    life_loss_terminal: bool,
    max_frames_per_episode: int | None = None,
    asynchronous: bool | None = None,
) -> AtariEnvs:
    """``make_envs`` seeded with ``seed`` as it is: every setting of ``cfg.env`` that the game uses, the one
    place that passes them. ``asynchronous`` None: as ``make_envs`` says (Atari games in processes of their
    own when there are several)."""
    return AtariEnvs(
        cfg.game,
        num_envs,
        seed,
        life_loss_terminal,
        max_frames_per_episode=(
            cfg.env.max_frames_per_episode if max_frames_per_episode is None else max_frames_per_episode
        ),
        noop_max=cfg.env.noop_max,
        frame_skip=cfg.env.frame_skip,
        size=cfg.env.size,
        asynchronous=(None if is_atari(cfg.game) else False) if asynchronous is None else asynchronous,
        action_repeat=cfg.env.action_repeat,
    )
