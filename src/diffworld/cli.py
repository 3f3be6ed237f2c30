"""The ``diffworld`` command.

Heavy imports (torch, the models) happen inside the subcommands, after the configuration has been
validated, so that a typo fails in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffworld import __version__

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
    from diffworld.config import build_config, to_yaml

    cfg = build_config(args.overrides)
    print(to_yaml(cfg), end="")
    print(
        "diffworld train: the configuration above is valid, but the training run itself is not part of this "
        "version yet (see the project's issue 'The training run end to end').",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffworld",
        description="DIAMOND: an RL agent trained inside a diffusion world model (Atari 100k).",
    )
    parser.add_argument("--version", action="version", version=f"diffworld {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train an agent on an Atari game (validates the configuration)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("config", help="print the resolved configuration for a preset and overrides")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--keys", action="store_true", help="list every configuration key instead")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("games", help="list the Atari games you can name")
    p.add_argument("--atari100k", action="store_true", help="only the 26 games of the benchmark")
    p.set_defaults(func=_cmd_games)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from diffworld.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"diffworld {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
