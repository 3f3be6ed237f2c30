"""The ``diffworld`` command.

Heavy imports (torch, the models) happen inside the subcommands, after the configuration has been
validated, so that a typo fails in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffworld import __version__
from diffworld.errors import UserError

OVERRIDES_HELP = (
    "configuration as key=value with dotted keys, e.g. game=Pong seed=3 preset=quick "
    "denoiser.optimizer.lr=3e-4 (see 'diffworld config --keys')"
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
    from diffworld.envs.games import ATARI100K_GAMES, available_games

    games = ATARI100K_GAMES if args.atari100k else available_games()
    print("\n".join(games))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.config import build_config, load_config_file
    from diffworld.training.run_dir import CONFIG_FILE, check_resumable, create_run_dir, default_run_dir

    if args.resume is not None:
        if args.overrides:
            print(
                "diffworld train: --resume takes no overrides (the run keeps its configuration)",
                file=sys.stderr,
            )
            return 2
        run_dir = check_resumable(Path(args.resume))
        cfg = load_config_file(run_dir / CONFIG_FILE)
    else:
        cfg = build_config(args.overrides)
        run_dir = create_run_dir(Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg))
    print(f"Run folder: {run_dir}", flush=True)

    from diffworld.training.trainer import Trainer

    Trainer(cfg, run_dir, resume=args.resume is not None).run()
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.evaluation.evaluate import evaluate_policy, write_eval_json
    from diffworld.training.loading import load_trained_agent

    source = Path(args.source)
    trained = load_trained_agent(source, args.device)
    cfg = trained.cfg
    report = evaluate_policy(
        trained.agent.actor_critic,
        cfg,
        num_episodes=args.episodes or cfg.collection.num_final_episodes,
        epsilon=cfg.collection.test_epsilon if args.epsilon is None else args.epsilon,
        device=trained.device,
        env_steps=trained.env_steps,
        train_seconds=trained.train_seconds,
        checkpoint_epoch=trained.epoch,
        num_envs=args.num_envs,
    )
    out = Path(args.out) if args.out else source / "eval.json"
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
    from diffworld.training.loading import load_trained_agent

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffworld",
        description="DIAMOND: an RL agent trained inside a diffusion world model (Atari 100k).",
    )
    parser.add_argument("--version", action="version", version=f"diffworld {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train an agent on an Atari game")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="play test episodes with a trained agent and write eval.json")
    p.add_argument("source", help="a run folder or an exported agent folder")
    p.add_argument("--episodes", type=int, help="test episodes (default: the config's num_final_episodes)")
    p.add_argument("--epsilon", type=float, help="epsilon-greedy exploration (default: the config's)")
    p.add_argument("--num-envs", type=int, help="environments stepped in parallel")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--out", help="where to write the report (default: <source>/eval.json)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="write a run's agent as a portable folder (safetensors + JSON)")
    p.add_argument("run_dir")
    p.add_argument("folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing agent folder")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("config", help="print the resolved configuration for a preset and overrides")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--keys", action="store_true", help="list every configuration key instead")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("games", help="list the Atari games you can name")
    p.add_argument("--atari100k", action="store_true", help="only the 26 games of the benchmark")
    p.set_defaults(func=_cmd_games)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UserError, FileExistsError) as e:
        print(f"diffworld {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
