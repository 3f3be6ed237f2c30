"""The neural game engine's commands: ``diffworld engine record|convert|info|train|eval|import``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from diffworld.cli.common import (
    SAMPLER_SETTINGS_HELP,
    SETTINGS,
    Parser,
    command,
    float_in,
    non_negative_int,
    positive_int,
    refuse_live_run_output,
    seed_int,
)
from diffworld.errors import UserError

if TYPE_CHECKING:
    from diffworld.engine.convert.from_gym import LoadedPolicy


def _cmd_engine_train(args: argparse.Namespace) -> int:
    from diffworld.engine.config import build_engine_config, load_engine_config
    from diffworld.engine.folder import default_engine_run_dir
    from diffworld.fitting.distributed import launched_processes
    from diffworld.run.folder import CONFIG_FILE, check_resumable

    if args.resume is not None:
        if args.overrides:
            print("diffworld engine train: --resume takes no overrides", file=sys.stderr)
            return 2
        run_dir = check_resumable(Path(args.resume))
        cfg = load_engine_config(run_dir / CONFIG_FILE)
    else:
        cfg = build_engine_config(args.overrides)
        if cfg.run_dir is None and launched_processes().distributed:
            # Each process would name its own folder after its clock.
            raise UserError("Under torchrun, name the run folder: add run_dir=<path>.")
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_engine_run_dir(cfg)
    if launched_processes().is_main:
        print(f"Run folder: {run_dir}", flush=True)

    from diffworld.engine.trainer import EngineTrainer

    EngineTrainer(cfg, run_dir, resume=args.resume is not None).run()
    return 0


def _agent_policy(source: Path, device: str, seed: int) -> LoadedPolicy:
    """The engine's policy loader (``engine.convert.from_gym.PolicyLoader``): a trained agent, imported only
    when a recording or an action-fidelity check needs one."""
    from diffworld.agent.policy import load_agent_policy

    return load_agent_policy(source, device, seed)


def _cmd_engine_eval(args: argparse.Namespace) -> int:
    from diffworld.engine.action_fidelity import format_fidelity
    from diffworld.engine.open_engine import SamplerSettings
    from diffworld.engine.quality import QUALITY_FILE, QualitySettings, evaluate_engine, format_table

    out = Path(args.out) if args.out else Path(args.engine) / QUALITY_FILE
    refuse_live_run_output(out, "the quality report", "--out <file>")
    settings = QualitySettings(
        horizons=args.horizons,
        max_trajectories=args.trajectories,
        denoising_steps=args.denoising_steps,
        sampler_settings=SamplerSettings.named(args.sampler_settings),
        batch_size=args.batch_size,
        seed=args.seed,
    )
    report, path = evaluate_engine(
        Path(args.engine),
        out,
        settings,
        data=args.data,
        device=args.device,
        fidelity_states=args.fidelity_states,
        fidelity_every=args.fidelity_every,
        fidelity_seed=args.fidelity_seed,
        policy_loader=_agent_policy,
    )
    print(format_table(report))
    if "action_fidelity" in report:
        print(format_fidelity(report["action_fidelity"]))
    print(f"Wrote {path}")
    return 0


def _cmd_engine_import(args: argparse.Namespace) -> int:
    from diffworld.engine.official_import import import_official_engine

    folder = import_official_engine(
        Path(args.file),
        Path(args.folder),
        data=args.data or "",
        overrides=tuple(args.overrides),
        overwrite=args.overwrite,
    )
    print(f"Imported {args.file} as the engine folder {folder}")
    return 0


RECORD_KEYS = {
    "env": str,
    "steps": int,
    "policy": str,
    "out": str,
    "seed": int,
    "max_episode_steps": int,
    "test_fraction": float,
    "device": str,
}


def _env_arg_value(text: str) -> object:
    """``env.<key>=<value>`` values: an integer, a number, true/false, or else the text itself."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _parse_record_args(pairs: Sequence[str]) -> tuple[dict[str, object], dict[str, object]]:
    """``key=value`` pairs of ``diffworld engine record`` -> (its options, the environment's arguments)."""
    options: dict[str, object] = {}
    env_kwargs: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value:
            raise UserError(f"expected key=value, got {pair!r} (see 'diffworld engine record --help')")
        if key.startswith("env.") and len(key) > 4:
            env_kwargs[key[4:]] = _env_arg_value(value)
            continue
        if key not in RECORD_KEYS:
            raise UserError(f"unknown key {key!r}: use {', '.join(RECORD_KEYS)} or env.<argument>")
        try:
            options[key] = RECORD_KEYS[key](value)
        except ValueError:
            raise UserError(f"{key}={value}: expected {RECORD_KEYS[key].__name__}") from None
    for required in ("steps", "out"):
        if required not in options:
            raise UserError(f"give {required}=<...> (see 'diffworld engine record --help')")
    return options, env_kwargs


def _cmd_engine_record(args: argparse.Namespace) -> int:
    from diffworld.engine.convert.from_gym import record_gym

    options, env_kwargs = _parse_record_args(args.settings)
    out = Path(str(options["out"]))
    refuse_live_run_output(out, "the engine dataset", "another out=<folder>")
    folder = record_gym(
        out,
        int(str(options["steps"])),
        env_id=None if "env" not in options else str(options["env"]),
        policy=str(options.get("policy", "random")),
        seed=int(str(options.get("seed", 0))),
        max_episode_steps=int(str(options.get("max_episode_steps", 1000))),
        test_fraction=float(str(options.get("test_fraction", 0.1))),
        env_kwargs=env_kwargs,
        device=str(options.get("device", "cpu")),
        resume=args.resume,
        policy_loader=_agent_policy,
    )
    return _print_dataset_summary(folder)


def _cmd_engine_convert(args: argparse.Namespace) -> int:
    from diffworld.engine.convert.from_csgo_hdf5 import convert_csgo_hdf5, csgo_files
    from diffworld.engine.convert.from_run import convert_run

    source, out = Path(args.source), Path(args.out)
    refuse_live_run_output(out, "the engine dataset", "another output folder")
    kind = args.kind or ("csgo" if source.is_dir() and csgo_files(source) else "run")
    if kind == "csgo":
        if args.num_actions is not None:
            raise UserError("--num-actions is for run datasets: the CS:GO action space is fixed")
        folder = convert_csgo_hdf5(
            source,
            out,
            test_split=Path(args.test_split) if args.test_split else None,
            test_fraction=args.test_fraction,
            skip_corrupt=args.skip_corrupt,
            resume=args.resume,
            max_files=args.max_files,
        )
    else:
        if args.test_split or args.max_files is not None:
            raise UserError("--test-split and --max-files are for the CS:GO files")
        folder = convert_run(
            source,
            out,
            num_actions=args.num_actions,
            test_fraction=args.test_fraction,
            skip_corrupt=args.skip_corrupt,
            resume=args.resume,
        )
    return _print_dataset_summary(folder)


def _print_dataset_summary(folder: Path, skip_corrupt: bool = False, verify: bool = False) -> int:
    from diffworld.data.folder_store import EngineDataset

    dataset = EngineDataset(folder, skip_corrupt=skip_corrupt)
    if verify:
        dataset.verify()
    print(dataset.describe())
    if verify:
        print("  verified: every file matches its SHA-256 and every action fits the action space")
    return 0


def _cmd_engine_info(args: argparse.Namespace) -> int:
    if args.json:
        import json

        from diffworld.data.folder_store import EngineDataset

        dataset = EngineDataset(Path(args.dataset), skip_corrupt=args.skip_corrupt)
        if args.verify:
            dataset.verify()
        print(json.dumps(dataset.summary(), indent=2))
        return 0
    return _print_dataset_summary(Path(args.dataset), args.skip_corrupt, args.verify)


def add_engine(sub: argparse._SubParsersAction[Parser]) -> None:
    """``diffworld engine <command>``: the neural game engine (docs/engine.md)."""
    engine = sub.add_parser(
        "engine",
        help="the neural game engine: a world model trained on recorded play (docs/engine.md)",
        description="The neural game engine (DIAMOND's CS:GO mode): datasets of recorded play, the "
        "diffusion world model trained on them, and playing it. See docs/engine.md.",
    )
    commands = engine.add_subparsers(dest="engine_command", metavar="ENGINE_COMMAND", required=True)

    p = command(
        commands,
        "record",
        _cmd_engine_record,
        help="record an engine dataset from a Gymnasium environment (random policy or a diffworld agent)",
        description="Play a Gymnasium environment with image observations (or rgb_array rendering) and "
        "record its frames at full resolution and its actions as an engine dataset. Settings as key=value: "
        "env=<Gymnasium id, e.g. ALE/Pong-v5 or diffworld/Catch-v0>, steps=<frames to record>, "
        "out=<folder>, policy=random|<agent or run folder> (default random; an agent plays its own game), "
        "seed=0, max_episode_steps=1000 (longer episodes are cut), test_fraction=0.1, device=cpu, and "
        "env.<argument>=<value> passed to gymnasium.make (e.g. env.size=128 for Catch).",
    )
    p.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="go on recording into an unfinished dataset")

    p = command(
        commands,
        "convert",
        _cmd_engine_convert,
        help="convert a diffworld run's dataset, play recordings or the official CS:GO HDF5 files",
        description="Convert episodes into an engine dataset: a run folder or a folder of episode_*.npz "
        "files (episodes recorded in diffworld play), or a folder of the official CS:GO .hdf5 files "
        "(found by their extension; --from forces the kind).",
    )
    p.add_argument("source", help="a run folder, a folder of episodes, or a folder of CS:GO .hdf5 files")
    p.add_argument("out", help="the engine dataset folder to write (new or empty)")
    p.add_argument(
        "--from", dest="kind", choices=["run", "csgo"], help="the kind of source (default: guessed)"
    )
    p.add_argument(
        "--num-actions",
        type=positive_int,
        help="a folder of episodes that names no game: its number of actions",
    )
    p.add_argument("--test-split", help="CS:GO: a file listing the test files (the official test_split.txt)")
    p.add_argument(
        "--test-fraction",
        type=float_in(0.0, 1.0),
        default=0.1,
        help="share of the episodes held out for testing, spread evenly (default 0.1)",
    )
    p.add_argument("--max-files", type=positive_int, help="CS:GO: convert only the first N files")
    p.add_argument(
        "--skip-corrupt", action="store_true", help="leave out unreadable episodes (with a warning)"
    )
    p.add_argument("--resume", action="store_true", help="finish an interrupted conversion into OUT")

    p = command(
        commands, "info", _cmd_engine_info, help="describe an engine dataset; --verify checks every file"
    )
    p.add_argument("dataset")
    p.add_argument("--verify", action="store_true", help="check every file's SHA-256 and every action")
    p.add_argument("--skip-corrupt", action="store_true", help="leave out corrupt episodes (with a warning)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    p = command(
        commands,
        "train",
        _cmd_engine_train,
        help="train an engine's denoiser and upsampler on an engine dataset",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="configuration as key=value, e.g. data=<dataset folder> preset=cpu seed=3",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an engine run from its last checkpoint")
    p = command(
        commands,
        "eval",
        _cmd_engine_eval,
        help="PSNR/SSIM of an engine's open-loop predictions on the test split at horizons 1, 10, 100 "
        "(low resolution and upsampled), against copying the last real frame, blurring it and the mean "
        "training frame; and its action fidelity on the real game of a recorded dataset",
    )
    p.add_argument("engine", help="an engine folder (engine train or engine import)")
    p.add_argument("--data", help="the engine dataset to evaluate on (default: the engine's)")
    p.add_argument(
        "--horizons", type=positive_int, nargs="+", default=[1, 10, 100], help="horizons (steps) reported"
    )
    p.add_argument("--trajectories", type=positive_int, default=32, help="open-loop trajectories at most")
    p.add_argument(
        "--denoising-steps", type=positive_int, help="next-frame denoising steps (default: the engine's)"
    )
    p.add_argument("--sampler-settings", choices=SETTINGS, default="fast", help=SAMPLER_SETTINGS_HELP)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="predictions per denoiser call at most, one per trajectory stepped together",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--fidelity-states",
        type=non_negative_int,
        help="action fidelity: real-game states probed with every action, 0 for none (default: 64 when the "
        "dataset was recorded from a Gymnasium env with 'engine record', else 0)",
    )
    p.add_argument(
        "--fidelity-every", type=positive_int, default=10, help="steps between probed states of an episode"
    )
    p.add_argument(
        "--fidelity-seed",
        type=seed_int,
        help="seed of the held-out play (default: the recording's seed + 1000000; not the recording's)",
    )
    p.add_argument("--out", help="the JSON report (default: <engine>/quality.json)")
    p = command(
        commands,
        "import",
        _cmd_engine_import,
        help="turn the authors' published CS:GO model (csgo.pt: denoiser.* and upsampler.* tensors) into an "
        "engine folder",
    )
    p.add_argument("file", help="the official model file (.pt), read as tensors only (no code runs)")
    p.add_argument("folder", help="the engine folder to write")
    p.add_argument(
        "overrides",
        nargs="*",
        help="configuration overrides of the csgo preset for what the weights do not record (resolutions, "
        "samplers); the architecture is read from the file",
    )
    p.add_argument(
        "--data",
        help="the engine dataset play and eval start from by default (the converted CS:GO one); the model "
        "takes its action space and makes its frame size",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
