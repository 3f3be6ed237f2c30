"""The ``diffworld`` command.

Heavy imports (torch, the models) happen inside the subcommands, after the configuration has been
validated, so that a typo fails in a fraction of a second.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from diffworld import __version__
from diffworld.errors import UserError

if TYPE_CHECKING:
    from diffworld.engine.convert.from_gym import LoadedPolicy
    from diffworld.engine.open_engine import SamplerSettings

MAX_SEED = 2**32 - 1
"""As ``diffworld.config.loading.MAX_SEED`` (not imported here: it would load the configuration modules)."""

OVERRIDES_HELP = (
    "configuration as key=value with dotted keys, e.g. game=Pong seed=3 preset=quick "
    "denoiser.optimizer.lr=3e-4 (see 'diffworld config --keys')"
)


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (``diffworld eval: argument --episodes: ...``), like every other
    error of the command, instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def _float_in(low: float, high: float = math.inf, low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above_low = value > low if low_open else value >= low
        if not (above_low and value <= high):  # NaN fails both
            if high == math.inf:
                bound = f"{'greater than' if low_open else 'at least'} {low:g}"
            else:
                bound = f"within {'(' if low_open else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)
seed_int = _int_at_least(0, MAX_SEED)
probability = _float_in(0.0, 1.0)
positive_float = _float_in(0.0, low_open=True)
non_negative_float = _float_in(0.0)


def _refuse_live_run_output(path: str | Path, what: str, flag: str) -> None:
    """A command writes nothing into a run folder that another process is training (see ``run.folder``)."""
    from diffworld.run.folder import refuse_writing_into_live_run

    refuse_writing_into_live_run(Path(path), what, f"pass {flag} to write it outside the run folder")


def _cmd_config(args: argparse.Namespace) -> int:
    from diffworld.config import all_keys, build_config, to_yaml

    if args.keys:
        print("\n".join(all_keys()))
        return 0
    overrides = list(args.overrides)
    if not any(o.startswith("game=") for o in overrides):
        overrides.append("game=Breakout")  # any game: the schema does not depend on it
    print(to_yaml(build_config(overrides)), end="")
    return 0


def _cmd_games(args: argparse.Namespace) -> int:
    from diffworld.games import ATARI100K_GAMES, available_games

    games = ATARI100K_GAMES if args.atari100k else available_games()
    print("\n".join(games))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.config import build_config, load_config_file
    from diffworld.fitting.wandb_logger import require_wandb
    from diffworld.run.folder import CONFIG_FILE, check_resumable, create_run_dir, default_run_dir

    if args.resume is not None and args.branch is not None:
        print("diffworld train: --resume and --branch exclude each other", file=sys.stderr)
        return 2
    if args.resume is not None:
        if args.overrides:
            print(
                "diffworld train: --resume takes no overrides (the run keeps its configuration; to change "
                "settings from its last checkpoint on, use --branch)",
                file=sys.stderr,
            )
            return 2
        run_dir = check_resumable(Path(args.resume))
        cfg = load_config_file(run_dir / CONFIG_FILE)
    elif args.branch is not None:
        from diffworld.agent.branch import branch_run

        cfg, run_dir = branch_run(Path(args.branch), args.overrides)
        print(f"Branched from {args.branch}", flush=True)
    else:
        cfg = build_config(args.overrides)
        if cfg.logging.wandb:
            require_wandb()  # before the run folder is created
        run_dir = create_run_dir(Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg))
    print(f"Run folder: {run_dir}", flush=True)

    from diffworld.agent.trainer import Trainer

    Trainer(cfg, run_dir, resume=args.resume is not None or args.branch is not None).run()
    return 0


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
    from diffworld.engine.quality import QUALITY_FILE, evaluate_engine, format_table

    out = Path(args.out) if args.out else Path(args.engine) / QUALITY_FILE
    _refuse_live_run_output(out, "the quality report", "--out <file>")
    report, path = evaluate_engine(
        Path(args.engine),
        out,
        data=args.data,
        horizons=args.horizons,
        max_trajectories=args.trajectories,
        denoising_steps=args.denoising_steps,
        sampler_settings=_sampler_settings(args.sampler_settings),
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
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


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.agent.evaluate import evaluate_policy, write_eval_json
    from diffworld.agent.trained import load_trained_agent

    source = Path(args.source)
    out = Path(args.out) if args.out else source / "eval.json"
    # A live run writes its own eval.json when it ends: this evaluation goes elsewhere (--out).
    _refuse_live_run_output(out, "the evaluation report", "--out <file>")
    trained = load_trained_agent(source, args.device)
    cfg = trained.cfg
    report = evaluate_policy(
        trained.agent.actor_critic,
        cfg,
        num_episodes=cfg.collection.num_final_episodes if args.episodes is None else args.episodes,
        epsilon=cfg.collection.test_epsilon if args.epsilon is None else args.epsilon,
        device=trained.device,
        env_steps=trained.env_steps,
        train_seconds=trained.train_seconds,
        checkpoint_epoch=trained.epoch,
        num_envs=args.num_envs,
    )
    write_eval_json(report, out)
    hns = f", HNS {report['hns']:.3f}" if report["hns"] is not None else ""
    print(
        f"{cfg.game}: mean return {report['mean']:.2f} +- {report['std']:.2f} over {report['num_episodes']} "
        f"episodes{hns}. Wrote {out}"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.agent import export_agent
    from diffworld.agent.trained import load_trained_agent

    _refuse_live_run_output(args.folder, "the agent folder", "another folder")
    trained = load_trained_agent(Path(args.run_dir), "cpu")
    export_agent(
        trained.agent,
        trained.cfg,
        trained.num_actions,
        Path(args.folder),
        metadata={"epoch": trained.epoch, "env_steps": trained.env_steps, "source": str(args.run_dir)},
        overwrite=args.overwrite,
    )
    print(f"Exported the agent of {args.run_dir} to {args.folder}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.config import build_config

    if not any(o.startswith("game=") for o in args.overrides):
        print(
            "diffworld import: give the agent's game as game=<Game> (the official file does not record it)",
            file=sys.stderr,
        )
        return 2
    cfg = build_config(args.overrides)
    _refuse_live_run_output(args.folder, "the agent folder", "another folder")

    from diffworld.agent.official_import import import_official_agent

    folder = import_official_agent(Path(args.file), cfg, Path(args.folder), overwrite=args.overwrite)
    print(f"Imported {args.file} as the {cfg.game} agent folder {folder}")
    return 0


def _cmd_play(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.dataset:
        from diffworld.viz.dataset_browser import run_browser

        run_browser(Path(args.source), scale=args.scale or 8, fps=args.fps, max_frames=args.max_frames)
        return 0
    from diffworld.engine.folder import is_engine_run

    if args.record_dir:
        _refuse_live_run_output(args.record_dir, "recorded episodes", "another --record-dir")
    if is_engine_run(Path(args.source)):
        from diffworld.engine.play import run_engine_play

        run_engine_play(
            Path(args.source),
            keymap_path=Path(args.keymap) if args.keymap else None,
            data=args.data,
            horizon=args.horizon,
            denoising_steps=args.denoising_steps,
            sampler_settings=_sampler_settings(args.sampler_settings),
            fps=args.fps,
            scale=args.scale or 2,
            record_dir=Path(args.record_dir) if args.record_dir else None,
            seed=args.seed,
            device=args.device,
            max_frames=args.max_frames,
        )
        return 0
    if args.keymap or args.data or args.denoising_steps or args.sampler_settings:
        raise UserError("--keymap, --data, --denoising-steps and --sampler-settings are for engine folders")
    from diffworld.agent.play import ENV_CHOICES, run_play

    run_play(
        Path(args.source),
        env=ENV_CHOICES[args.env],
        human=args.human,
        horizon=args.horizon,
        fps=args.fps,
        scale=args.scale or 8,
        record_dir=Path(args.record_dir) if args.record_dir else None,
        seed=args.seed,
        device=args.device,
        max_frames=args.max_frames,
    )
    return 0


SETTINGS = ("fast", "higher_quality")
"""The values of ``engine.open_engine.SamplerSettings`` (named here so that the parser imports no torch)."""
SAMPLER_SETTINGS_HELP = (
    "engine: its samplers, 'fast' (its own; the official CS:GO model's fast file) or 'higher_quality' (the "
    "official file: 3 denoising steps, 10 upsampling steps)"
)


def _sampler_settings(value: str | None) -> SamplerSettings:
    from diffworld.engine.open_engine import SamplerSettings

    return SamplerSettings(value or "fast")


SHOW_DENOISING = 0
"""``--denoising-steps`` without a number: a run's video shows each denoising step."""


def _cmd_video(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.engine.folder import is_engine_run

    _refuse_live_run_output(args.out, "the video", "--out <file>")
    if is_engine_run(Path(args.source)):
        from diffworld.engine.video import run_engine_video

        if args.denoising_steps == SHOW_DENOISING:
            raise UserError(
                "An engine's video does not show the denoising steps: give --denoising-steps N to set the "
                "number of steps of its sampler."
            )
        summary = run_engine_video(
            Path(args.source),
            Path(args.out),
            steps=args.steps,
            start=args.start,
            episode=args.episode or 0,
            scale=args.scale or 2,
            fps=args.fps,
            denoising_steps=args.denoising_steps,
            sampler_settings=_sampler_settings(args.sampler_settings),
            data=args.data,
            seed=args.seed,
            device=args.device,
        )
        num_frames, height, width = summary.num_frames, summary.height, summary.width
    else:
        if (
            args.data
            or args.episode is not None
            or args.sampler_settings
            or (args.denoising_steps or SHOW_DENOISING) > 0
        ):
            raise UserError(
                "--data, --episode, --sampler-settings and --denoising-steps N are for engine folders (a "
                "run's video takes --denoising-steps alone, to show each denoising step)."
            )
        from diffworld.agent.video import run_video

        frames = run_video(
            Path(args.source),
            Path(args.out),
            steps=args.steps,
            start=args.start,
            scale=args.scale or 4,
            fps=args.fps,
            denoising_steps=args.denoising_steps == SHOW_DENOISING,
            seed=args.seed,
            device=args.device,
        )
        num_frames, height, width = frames.shape[:3]
    print(f"Wrote {args.out}: {num_frames} frames of {width}x{height}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.viz.plots import plot_runs

    _refuse_live_run_output(args.out, "the plot", "--out <file>")
    out = plot_runs([Path(p) for p in args.run_dirs], Path(args.out), keys=args.keys, x=args.x)
    print(f"Wrote {out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from diffworld.cluster.plan import plan_sweep
    from diffworld.cluster.sweep import Executor, SweepOptions, run_sweep, sweep_finished

    plan = plan_sweep(args.overrides)  # validates everything before Ray starts
    options = SweepOptions(
        max_retries=args.max_retries, refresh=args.refresh, report_reps=None if args.no_report else args.reps
    )

    def ray_executor() -> Executor:  # started only when some run is left to train
        from diffworld.cluster.ray_backend import RayExecutor

        return RayExecutor(
            sys.stdout,
            address=args.address,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
            local_cpus=args.num_cpus,
        )

    return 0 if sweep_finished(run_sweep(plan, ray_executor, options)) else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.evaluation.report import build_report, collect_scores
    from diffworld.evaluation.report_metrics import METRIC_TITLES

    sources = [Path(s) for s in args.sources]
    collect_scores(sources)  # first: a run still training, or no score at all, says so before the output
    if args.out:
        out = Path(args.out)
    elif len(sources) == 1 and sources[0].is_dir() and not (sources[0] / "eval.json").is_file():
        out = sources[0] / "report"  # a sweep folder keeps its report
    else:
        out = Path("report")
    _refuse_live_run_output(out, "the report", "--out <folder>")
    report = build_report(sources, out, reps=args.reps, seed=args.seed, label=args.label)
    for name, aggregates in report["aggregates"].items():
        figures = ", ".join(
            f"{METRIC_TITLES[m]} {a['value']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
            for m, a in aggregates.items()
        )
        print(f"{name}: {figures}")
    print(f"Wrote {out / 'report.md'}, {out / 'report.json'} and the plots")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.benchmark import DEFAULT_OVERRIDES, format_table, run_bench, write_report

    report = run_bench(
        args.overrides or DEFAULT_OVERRIDES,
        device=args.device,
        steps=args.steps,
        warmup=args.warmup,
        collect=args.collect,
        parts=args.parts,
        keep_terminations=args.keep_terminations,
    )
    print(format_table(report))
    if args.json:
        _refuse_live_run_output(args.json, "the benchmark report", "--json <file>")
        write_report(report, Path(args.json))
        print(f"Wrote {args.json}")
    return 0


def _cmd_wm_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.agent.wm_quality import default_out_dir
    from diffworld.engine.folder import is_engine_run
    from diffworld.evaluation.wm_quality_plot import JSON_FILE, PNG_FILE

    run_dirs = [Path(p) for p in args.run_dirs]
    engines = [is_engine_run(p) for p in run_dirs]
    if any(engines) and not all(engines):
        raise UserError(
            "Give either engine folders or Atari run/agent folders, not both: evaluate them in separate "
            "calls."
        )
    out = Path(args.out_dir) if args.out_dir else default_out_dir(run_dirs)
    _refuse_live_run_output(out, "the world-model evaluation", "--out-dir <folder>")
    if all(engines):
        if args.kinds is not None or args.episodes is not None:
            raise UserError(
                "--kinds and --episodes are for Atari runs: an engine is evaluated on the test split of its "
                "dataset (--data, --trajectories)."
            )
        from diffworld.engine.quality import HORIZONS as ENGINE_HORIZONS
        from diffworld.engine.wm_eval import evaluate_engine_world_models, summary_lines

        report = evaluate_engine_world_models(
            run_dirs,
            out,
            horizons=args.horizons or list(ENGINE_HORIZONS),
            denoising_steps=args.steps,
            sampler_settings=_sampler_settings(args.sampler_settings),
            max_trajectories=args.trajectories or 32,
            batch_size=args.batch_size or 8,
            data=args.data,
            device=args.device,
            seed=args.seed,
        )
        for line in summary_lines(report):
            print(line)
        print(f"Wrote {out / JSON_FILE} and {out / PNG_FILE}")
        return 0
    if args.data is not None or args.trajectories is not None or args.sampler_settings:
        raise UserError("--data, --trajectories and --sampler-settings are for engine folders.")
    from diffworld.agent.wm_quality import DENOISING_STEPS, HORIZONS, KINDS, evaluate_world_models

    report = evaluate_world_models(
        run_dirs,
        out,
        horizons=args.horizons or list(HORIZONS),
        denoising_steps=args.steps or DENOISING_STEPS,
        kinds=args.kinds or KINDS,
        num_episodes=args.episodes or 4,
        device=args.device,
        seed=args.seed,
        batch_size=args.batch_size or 64,
    )
    for run in report["runs"]:
        h = run["horizons_evaluated"]
        for steps, modes in run["denoising_steps"].items():
            figures = ", ".join(f"h{k} {modes['autoregressive']['psnr'][str(k)]:.1f} dB" for k in h)
            print(f"{run['game']} {run['kind'].upper()} {steps} step(s), autoregressive PSNR: {figures}")
    print(f"Wrote {out / JSON_FILE} and {out / PNG_FILE}")
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
    _refuse_live_run_output(out, "the engine dataset", "another out=<folder>")
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
    _refuse_live_run_output(out, "the engine dataset", "another output folder")
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
    from diffworld.engine.dataset import EngineDataset

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

        from diffworld.engine.dataset import EngineDataset

        dataset = EngineDataset(Path(args.dataset), skip_corrupt=args.skip_corrupt)
        if args.verify:
            dataset.verify()
        print(json.dumps(dataset.summary(), indent=2))
        return 0
    return _print_dataset_summary(Path(args.dataset), args.skip_corrupt, args.verify)


def _add_engine_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``diffworld engine <command>``: the neural game engine (docs/engine.md)."""
    engine = sub.add_parser(
        "engine",
        help="the neural game engine: a world model trained on recorded play (docs/engine.md)",
        description="The neural game engine (DIAMOND's CS:GO mode): datasets of recorded play, the "
        "diffusion world model trained on them, and playing it. See docs/engine.md.",
    )
    commands = engine.add_subparsers(dest="engine_command", metavar="ENGINE_COMMAND", required=True)

    p = commands.add_parser(
        "record",
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
    p.set_defaults(func=_cmd_engine_record)

    p = commands.add_parser(
        "convert",
        help="convert a diffworld run's dataset, play recordings or the official CS:GO HDF5 files",
        description="Convert episodes into an engine dataset: a run folder or a folder of episode_*.npz "
        "files (diffworld play --record recordings), or a folder of the official CS:GO .hdf5 files "
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
        type=_float_in(0.0, 1.0),
        default=0.1,
        help="share of the episodes held out for testing, spread evenly (default 0.1)",
    )
    p.add_argument("--max-files", type=positive_int, help="CS:GO: convert only the first N files")
    p.add_argument(
        "--skip-corrupt", action="store_true", help="leave out unreadable episodes (with a warning)"
    )
    p.add_argument("--resume", action="store_true", help="finish an interrupted conversion into OUT")
    p.set_defaults(func=_cmd_engine_convert)

    p = commands.add_parser("info", help="describe an engine dataset; --verify checks every file")
    p.add_argument("dataset")
    p.add_argument("--verify", action="store_true", help="check every file's SHA-256 and every action")
    p.add_argument("--skip-corrupt", action="store_true", help="leave out corrupt episodes (with a warning)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_cmd_engine_info)

    p = commands.add_parser("train", help="train an engine's denoiser and upsampler on an engine dataset")
    p.add_argument(
        "overrides",
        nargs="*",
        help="configuration as key=value, e.g. data=<dataset folder> preset=cpu seed=3",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an engine run from its last checkpoint")
    p.set_defaults(func=_cmd_engine_train)
    p = commands.add_parser(
        "eval",
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
    p.add_argument("--batch-size", type=positive_int, default=8, help="trajectories imagined together")
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
    p.set_defaults(func=_cmd_engine_eval)
    p = commands.add_parser(
        "import",
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
    p.set_defaults(func=_cmd_engine_import)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="diffworld",
        description="DIAMOND: an RL agent trained inside a diffusion world model (Atari 100k).",
    )
    parser.add_argument("--version", action="version", version=f"diffworld {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train an agent on an Atari game")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument(
        "--branch",
        metavar="RUN_DIR",
        help="start a new run (run_dir=... or a default folder) from RUN_DIR's last checkpoint with the "
        "overrides changed from then on: a controlled experiment (README, 'Controlled runs')",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="play test episodes with a trained agent and write eval.json")
    p.add_argument("source", help="a run folder or an exported agent folder")
    p.add_argument(
        "--episodes",
        type=positive_int,
        help="test episodes, at least 1 (default: the config's num_final_episodes)",
    )
    p.add_argument(
        "--epsilon",
        type=probability,
        help="epsilon-greedy exploration, within [0, 1] (default: the config's)",
    )
    p.add_argument("--num-envs", type=positive_int, help="environments stepped in parallel")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--out",
        help="where to write the report (default: <source>/eval.json; required while the run trains)",
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="write a run's agent as a portable folder (safetensors + JSON)")
    p.add_argument("run_dir")
    p.add_argument("folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing agent folder")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "import",
        help="turn an agent file of the official DIAMOND code (<Game>.pt) into an agent folder",
        description="Convert an agent saved by the official DIAMOND code (one state dict with keys "
        "denoiser.*, rew_end_model.*, actor_critic.*: a published atari_100k/models/<Game>.pt or a run's "
        "agent_versions/agent_epoch_*.pt) into an agent folder for eval, play, video and report. The file is "
        "read as tensors only (no code runs). It records neither its game nor its architecture: give the "
        "game; the architecture is the paper's unless overridden.",
    )
    p.add_argument("file", help="the official agent file (.pt)")
    p.add_argument("folder", help="the agent folder to write")
    p.add_argument(
        "overrides",
        nargs="*",
        help="game=<Game> (required), then configuration overrides as for 'diffworld train' if the agent "
        "was not built with the paper's settings",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing agent folder")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser(
        "play",
        help="play inside the world model or the real game, as the policy or yourself (pygame); "
        "--dataset browses stored episodes",
    )
    p.add_argument(
        "source", help="a run folder or an exported agent folder (--dataset: or a folder of episodes)"
    )
    p.add_argument("--dataset", action="store_true", help="browse the stored episodes instead of playing")
    p.add_argument("--env", choices=["world-model", "test", "train"], default="world-model", help="start in")
    p.add_argument("--human", action="store_true", help="start with you in control (default: the policy)")
    p.add_argument(
        "--horizon", type=positive_int, default=1000, help="imagination horizon (steps) in the world model"
    )
    p.add_argument(
        "--fps", type=non_negative_float, default=15.0, help="frames per second at most (0: no limit)"
    )
    p.add_argument(
        "--scale", type=positive_int, help="window pixels per frame pixel (default: 8, an engine's 2)"
    )
    p.add_argument(
        "--record-dir",
        help="where recorded episodes go (default: recordings/<game>/<time>, an engine's "
        "recordings/engine/<time>)",
    )
    p.add_argument("--keymap", help="engine: a key map file (JSON, docs/engine.md) for the dataset's actions")
    p.add_argument("--data", help="engine: the dataset to start from (default: the engine's own)")
    p.add_argument(
        "--denoising-steps", type=positive_int, help="engine: denoising steps (default: the engine's)"
    )
    p.add_argument("--sampler-settings", choices=SETTINGS, help=SAMPLER_SETTINGS_HELP + " (default: fast)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--max-frames", type=positive_int, help="quit after this many frames (headless and scripted runs)"
    )
    p.set_defaults(func=_cmd_play)

    p = sub.add_parser(
        "video",
        help="a real episode and the world model's imagination of it, side by side (no screen); "
        "an engine's: a test episode of its dataset",
    )
    p.add_argument("source", help="a run folder, an exported agent folder or an engine folder")
    p.add_argument("--out", required=True, help="the video file: .mp4 or .gif")
    p.add_argument("--steps", type=positive_int, default=100, help="imagined steps")
    p.add_argument(
        "--start", type=non_negative_int, default=0, help="real steps before the world model's context"
    )
    p.add_argument(
        "--denoising-steps",
        type=positive_int,
        nargs="?",
        const=SHOW_DENOISING,
        metavar="N",
        help="a run or agent: alone, show each denoising step too; an engine: N next-frame denoising steps "
        "(default: the engine's)",
    )
    p.add_argument("--sampler-settings", choices=SETTINGS, help=SAMPLER_SETTINGS_HELP + " (default: fast)")
    p.add_argument(
        "--scale", type=positive_int, help="video pixels per frame pixel (default: 4, an engine's 2)"
    )
    p.add_argument("--fps", type=positive_float, default=15.0)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--episode",
        type=non_negative_int,
        help="engine: which episode of the dataset's test split (default: 0, the first)",
    )
    p.add_argument("--data", help="engine: the dataset to take the episode from (default: the engine's own)")
    p.set_defaults(func=_cmd_video)

    p = sub.add_parser("plot", help="learning curves of one or more runs (metrics.jsonl) as a PNG")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="learning_curves.png", help="the PNG (default: learning_curves.png)")
    p.add_argument("--keys", nargs="+", help="plot these metric keys instead of returns and losses")
    p.add_argument(
        "--x",
        choices=["env_steps", "epoch", "updates"],
        help="the x axis (default: env_steps; an engine's: updates)",
    )
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("config", help="print the resolved configuration for a preset and overrides")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--keys", action="store_true", help="list every configuration key instead")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser(
        "sweep", help="one training run per (game, seed) on Ray; re-running it resumes unfinished runs"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="games=<list|atari100k> seeds=<n|list> [sweep_dir=<folder>] and training overrides as for "
        "'diffworld train' (preset=quick ...)",
    )
    p.add_argument(
        "--address",
        help="an existing Ray cluster: auto (on one of its nodes) or ray://<head>:10001; "
        "default: start a Ray instance on this machine",
    )
    p.add_argument(
        "--cpus-per-run", type=non_negative_float, default=1, help="CPUs each run asks for (default 1)"
    )
    p.add_argument(
        "--gpus-per-run",
        type=non_negative_float,
        help="GPUs each run asks for (default: 1 if the cluster has any, else 0)",
    )
    p.add_argument("--num-cpus", type=positive_int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument(
        "--max-retries", type=non_negative_int, default=3, help="resumes of a failed run (default 3)"
    )
    p.add_argument(
        "--refresh", type=positive_float, default=10.0, help="seconds between table updates (default 10)"
    )
    p.add_argument(
        "--reps", type=positive_int, default=50_000, help="bootstrap replications of the final report"
    )
    p.add_argument("--no-report", action="store_true", help="no score report when the sweep is done")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("report", help="Atari 100k score report (rliable): aggregates with CIs, tables, plots")
    p.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="sweep or run folders, eval.json or score JSON files"
    )
    p.add_argument("--out", help="report folder (default: <sweep>/report for one sweep folder, else report)")
    p.add_argument("--reps", type=positive_int, default=50_000, help="bootstrap replications (default 50000)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the bootstrap")
    p.add_argument("--label", help="the name of these scores in tables and plots")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "bench",
        help="seconds per training step of each model, imagined frames/s, env steps/s, parameters, "
        "peak memory (default: the paper's settings)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="configuration as for 'diffworld train' (default: preset=atari100k game=Breakout), "
        "e.g. preset=smoke",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--steps", type=positive_int, default=5, help="timed repetitions of each part (median kept)"
    )
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed repetitions first")
    p.add_argument(
        "--collect", type=non_negative_int, default=1000, help="real steps collected before timing"
    )
    p.add_argument(
        "--parts",
        nargs="+",
        default=["denoiser", "reward_model", "actor_critic", "imagination", "collection"],
        choices=["denoiser", "reward_model", "actor_critic", "imagination", "collection"],
        help="what to time (default: all)",
    )
    p.add_argument(
        "--keep-terminations",
        action="store_true",
        help="let the untrained termination model end imagined trajectories (about half of the steps; "
        "default: only the horizon ends them, as with a trained model)",
    )
    p.add_argument("--json", help="also write the report here")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "wm-eval",
        help="world-model prediction error (PSNR, SSIM) on held-out episodes, one-step and autoregressive; "
        "an engine's open-loop, low-res and upsampled, on its dataset's test split",
    )
    p.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders (EDM against DDPM needs two runs, one trained with denoiser.kind=ddpm), or engine "
        "folders",
    )
    p.add_argument(
        "--horizons",
        type=positive_int,
        nargs="+",
        help="predicted steps (default: runs 1 5 15 50 200 1000; engines 1 10 100, as engine eval)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        nargs="+",
        help="denoising steps (default: 1 3 10; an engine's: its own)",
    )
    p.add_argument("--kinds", nargs="+", choices=["edm", "ddpm"], help="runs: denoiser kinds (default: both)")
    p.add_argument("--episodes", type=positive_int, help="runs: fresh test episodes per run (default 4)")
    p.add_argument(
        "--trajectories", type=positive_int, help="engines: open-loop trajectories at most (default 32)"
    )
    p.add_argument("--data", help="engines: the dataset whose test split they imagine (default: their own)")
    p.add_argument("--sampler-settings", choices=SETTINGS, help=SAMPLER_SETTINGS_HELP + " (default: fast)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help="runs: predictions per denoiser call at most (default 64); engines: trajectories imagined "
        "together (default 8)",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--out-dir", help="where the JSON and PNG go (default: <run or engine>/wm_eval, or wm_eval)"
    )
    p.set_defaults(func=_cmd_wm_eval)

    p = sub.add_parser("games", help="list the Atari games you can name")
    p.add_argument("--atari100k", action="store_true", help="only the 26 games of the benchmark")
    p.set_defaults(func=_cmd_games)

    _add_engine_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from diffworld.utils.malloc import configure_malloc

    configure_malloc()  # before the first large allocation; DIFFWORLD_KEEP_MALLOC=1 opts out
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UserError, FileExistsError) as e:
        print(f"diffworld {args.command}: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:
        from diffworld.utils.atomic import is_disk_full

        if not is_disk_full(e):
            raise
        # A write that is not atomic (a video, a plot) ran out of space: what it left is incomplete.
        where = f" while writing {e.filename}" if isinstance(e, OSError) and e.filename else ""
        print(
            f"diffworld {args.command}: no space left on the device{where} ({e}); free some space and run "
            "the command again.",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
