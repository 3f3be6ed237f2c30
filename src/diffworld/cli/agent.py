"""The Atari agent's commands: train, eval, export, import, config, games, sweep, report, bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffworld.cli.common import (
    OVERRIDES_HELP,
    Parser,
    add_former_spelling,
    command,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    refuse_former_spelling,
    refuse_live_run_output,
    seed_int,
)


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
    from diffworld.games import ATARI100K_GAMES, DMC_VISION_TASKS, available_dmc_tasks, available_games

    if args.dmc:
        games = DMC_VISION_TASKS if args.atari100k else available_dmc_tasks()
    else:
        games = ATARI100K_GAMES if args.atari100k else available_games()
    print("\n".join(games))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:

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


def _cmd_eval(args: argparse.Namespace) -> int:

    from diffworld.agent.evaluate import evaluate_policy, write_eval_json
    from diffworld.agent.trained import load_trained_agent

    source = Path(args.source)
    out = Path(args.out) if args.out else source / "eval.json"
    # A live run writes its own eval.json when it ends: this evaluation goes elsewhere (--out).
    refuse_live_run_output(out, "the evaluation report", "--out <file>")
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

    from diffworld.agent import export_agent
    from diffworld.agent.trained import load_trained_agent

    refuse_live_run_output(args.folder, "the agent folder", "another folder")
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

    from diffworld.config import build_config

    if not any(o.startswith("game=") for o in args.overrides):
        print(
            "diffworld import: give the agent's game as game=<Game> (the official file does not record it)",
            file=sys.stderr,
        )
        return 2
    cfg = build_config(args.overrides)
    refuse_live_run_output(args.folder, "the agent folder", "another folder")

    from diffworld.agent.official_import import import_official_agent

    folder = import_official_agent(Path(args.file), cfg, Path(args.folder), overwrite=args.overwrite)
    print(f"Imported {args.file} as the {cfg.game} agent folder {folder}")
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
    refuse_live_run_output(out, "the report", "--out <folder>")
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
    refuse_former_spelling(
        args, "--steps", "is now --repeats (the timed repetitions of each part): give --repeats N"
    )
    from diffworld.benchmark import DEFAULT_OVERRIDES, REPEATS, format_table, run_bench, write_bench_json

    report = run_bench(
        args.overrides or DEFAULT_OVERRIDES,
        device=args.device,
        repeats=args.repeats or REPEATS,
        warmup=args.warmup,
        collect=args.collect,
        parts=args.parts,
        keep_terminations=args.keep_terminations,
    )
    print(format_table(report))
    if args.json:
        refuse_live_run_output(args.json, "the benchmark report", "--json <file>")
        write_bench_json(report, Path(args.json))
        print(f"Wrote {args.json}")
    return 0


def add_train(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(sub, "train", _cmd_train, help="train an agent on a game (Atari, Catch, dmc:..., gym:...)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument(
        "--branch",
        metavar="RUN_DIR",
        help="start a new run (run_dir=... or a default folder) from RUN_DIR's last checkpoint with the "
        "overrides changed from then on: a controlled experiment (README, 'Controlled runs')",
    )


def add_eval(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(sub, "eval", _cmd_eval, help="play test episodes with a trained agent and write eval.json")
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


def add_export(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub, "export", _cmd_export, help="write a run's agent as a portable folder (safetensors + JSON)"
    )
    p.add_argument("run_dir")
    p.add_argument("folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing agent folder")


def add_import(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub,
        "import",
        _cmd_import,
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


def add_config(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub, "config", _cmd_config, help="print the resolved configuration for a preset and overrides"
    )
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--keys", action="store_true", help="list every configuration key instead")


def add_sweep(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub,
        "sweep",
        _cmd_sweep,
        help="one training run per (game, seed) on Ray; re-running it resumes unfinished runs",
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


def add_report(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub,
        "report",
        _cmd_report,
        help="score report (rliable): Atari 100k human-normalized aggregates with CIs, tables, plots; other "
        "games (DeepMind Control tasks), reported apart from them, by their returns",
    )
    p.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="sweep or run folders, eval.json or score JSON files"
    )
    p.add_argument("--out", help="report folder (default: <sweep>/report for one sweep folder, else report)")
    p.add_argument("--reps", type=positive_int, default=50_000, help="bootstrap replications (default 50000)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the bootstrap")
    p.add_argument("--label", help="the name of these scores in tables and plots")


def add_bench(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub,
        "bench",
        _cmd_bench,
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
        "--repeats", type=positive_int, help="timed repetitions of each part, the median kept (default 5)"
    )
    add_former_spelling(p, "--steps")  # now --repeats; '--steps' is video's imagined steps
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


def add_games(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub, "games", _cmd_games, help="list the Atari games (or DeepMind Control tasks) you can name"
    )
    p.add_argument("--atari100k", action="store_true", help="only the 26 games of the benchmark")
    p.add_argument(
        "--dmc",
        action="store_true",
        help="DeepMind Control tasks (dmc:<domain>-<task>, needs the dmc extra) instead; with --atari100k "
        "only the 20 of the DMC-vision benchmark",
    )
