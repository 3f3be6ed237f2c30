"""A sweep's plan: which (game, seed) runs, their folders, and what state each is in on disk. No Ray here.

A sweep folder holds one run folder per (game, seed), ``<Game>_s<seed>``, made and resumed exactly as
``diffworld train`` makes and resumes one, and ``logs/`` with each run's output and the identity of the
process training it now. Nothing else records the sweep's progress: the run folders are the truth, so a
sweep command run again (after a crash of the driver, a reboot, with more games or seeds) skips finished
runs and resumes the others.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffworld.config import Config, build_config, load_config_file
from diffworld.config.loading import MAX_SEED
from diffworld.errors import UserError
from diffworld.games import ATARI100K_GAMES, UnknownGameError, resolve_game
from diffworld.run.folder import CONFIG_FILE, EVAL_FILE

PER_RUN_KEYS = ("game", "seed", "run_dir")
"""Training keys the sweep sets for each run; giving them is a mistake that :class:`SweepError` explains."""
FINISHED_MARKER = Path("agent") / "agent.json"
"""Written after ``eval.json`` by the trainer's last step: with both present, the run is complete."""


class SweepError(UserError, ValueError):
    """A sweep that cannot run as asked; the message names the problem and the fix."""


class RunState(enum.Enum):
    NEW = "new"
    """No run folder yet (or an empty one): the run starts from scratch."""
    UNFINISHED = "unfinished"
    """A run folder with its configuration: the run resumes from its last checkpoint (or starts over)."""
    FINISHED = "finished"


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep."""

    game: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]
    """The whole ``diffworld train`` configuration of the run, ``key=value``."""

    @property
    def name(self) -> str:
        return self.run_dir.name


@dataclass(frozen=True)
class SweepPlan:
    sweep_dir: Path
    runs: tuple[RunSpec, ...]
    total_env_steps: int
    """The configured env-step budget of every run (the initial collection can end slightly beyond it)."""

    @property
    def logs_dir(self) -> Path:
        return self.sweep_dir / "logs"


def parse_games(value: str) -> list[str]:
    """``atari100k`` (the 26 benchmark games) or a list, ``Pong,Breakout`` or ``[Pong, Breakout]``."""
    if value.strip().lower() == "atari100k":
        return list(ATARI100K_GAMES)
    names = _split_list(value)
    if not names:
        raise SweepError("games= is empty: give games=atari100k or a list such as games=Pong,Breakout.")
    try:
        games = [resolve_game(name) for name in names]
    except UnknownGameError as e:
        raise SweepError(f"games=: {e}") from None
    return list(dict.fromkeys(games))


def parse_seeds(value: str) -> list[int]:
    """A count, ``seeds=5`` meaning seeds 0 to 4, or a list, ``seeds=[0,3,7]`` or ``seeds=0,3,7``."""
    is_list = value.strip().startswith("[") or "," in value
    try:
        numbers = [int(item) for item in _split_list(value)]
    except ValueError:
        raise SweepError(
            f"seeds={value!r} is not a count or a list of integers (seeds=5 or seeds=[0,3,7])."
        ) from None
    if not numbers:
        raise SweepError("seeds= is empty: give a count (seeds=5) or a list (seeds=[0,3,7]).")
    if is_list:
        bad = [n for n in numbers if not 0 <= n <= MAX_SEED]
        if bad:
            raise SweepError(
                f"seeds={value!r}: {bad[0]} is not a seed; seeds are integers from 0 to {MAX_SEED}."
            )
        return list(dict.fromkeys(numbers))
    if numbers[0] < 1:
        raise SweepError(
            f"seeds={numbers[0]}: a count must be at least 1 (seeds=[0] names the seed 0 alone)."
        )
    return list(range(numbers[0]))


def _split_list(value: str) -> list[str]:
    return [
        item.strip() for item in value.strip().removeprefix("[").removesuffix("]").split(",") if item.strip()
    ]


def plan_sweep(args: Sequence[str]) -> SweepPlan:
    """The plan for ``games=... seeds=... [sweep_dir=...] [training overrides]``.

    The training overrides are validated here, once, with the first game: a typo fails before Ray starts.
    Without ``sweep_dir=``, the folder is ``sweeps/<preset>_<hash of the overrides>``: the same command
    finds the same folder again, and a sweep with other settings gets its own.
    """
    sweep: dict[str, str] = {}
    overrides: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise SweepError(f"Expected key=value, got {arg!r} (for example: games=Pong,Breakout seeds=3).")
        if key in PER_RUN_KEYS:
            raise SweepError(
                f"{key}= is set by the sweep for each run: use games=<list|atari100k> and seeds=<n|list> "
                "(and sweep_dir=<folder> for where the runs go)."
            )
        (sweep if key in ("games", "seeds", "sweep_dir") else overrides)[key] = value
    for key in ("games", "seeds"):
        if key not in sweep:
            raise SweepError(
                f"No {key}= given: for example games=Pong,Breakout seeds=3 (or games=atari100k)."
            )
    games, seeds = parse_games(sweep["games"]), parse_seeds(sweep["seeds"])
    training = [f"{key}={value}" for key, value in overrides.items()]
    cfg = build_config([*training, f"game={games[0]}"])
    sweep_dir = (
        Path(sweep["sweep_dir"]) if "sweep_dir" in sweep else _default_sweep_dir(cfg.preset, overrides)
    )
    sweep_dir = sweep_dir.resolve()  # runs may execute in another working directory, or on another node
    runs = tuple(
        RunSpec(
            game,
            seed,
            run_dir := sweep_dir / f"{game}_s{seed}",
            (*training, f"game={game}", f"seed={seed}", f"run_dir={run_dir}"),
        )
        for game in games
        for seed in seeds
    )
    return SweepPlan(sweep_dir, runs, cfg.collection.total_env_steps)


def _default_sweep_dir(preset: str, overrides: dict[str, str]) -> Path:
    """The preset is in the name (given or the default, it is the same sweep), the other overrides hashed."""
    others = sorted((key, value) for key, value in overrides.items() if key != "preset")
    digest = hashlib.sha256(json.dumps(others).encode()).hexdigest()[:8]
    return Path("sweeps") / f"{preset}_{digest}"


def run_state(run: RunSpec) -> RunState:
    if (run.run_dir / EVAL_FILE).is_file() and (run.run_dir / FINISHED_MARKER).is_file():
        return RunState.FINISHED
    if (run.run_dir / CONFIG_FILE).is_file():
        return RunState.UNFINISHED
    return RunState.NEW


def check_existing_runs(runs: Iterable[RunSpec]) -> None:
    """Refuse a sweep whose existing run folders were made with other settings than the command's.

    Otherwise re-running a sweep with a changed override would silently keep (and report) runs trained
    with the old value.
    """
    for run in runs:
        if run_state(run) is RunState.NEW:
            continue
        saved = _flatten(dataclasses.asdict(load_config_file(run.run_dir / CONFIG_FILE)))
        wanted = _flatten(dataclasses.asdict(build_config(run.overrides)))
        differ = sorted(
            k for k in saved.keys() | wanted.keys() if k != "run_dir" and saved.get(k) != wanted.get(k)
        )
        if differ:
            detail = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} here" for k in differ[:5])
            raise SweepError(
                f"{run.run_dir} was made with other settings than this sweep's ({detail}). Use another "
                "sweep_dir= for these settings, or the original overrides to continue that sweep."
            )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


def config_of(run: RunSpec) -> Config:
    """The configuration the run trains with: its saved one once it exists (the sweep checked it)."""
    if run_state(run) is RunState.NEW:
        return build_config(run.overrides)
    return load_config_file(run.run_dir / CONFIG_FILE)
