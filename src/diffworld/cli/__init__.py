"""The ``diffworld`` command: ``common`` (shared option types and checks), ``agent`` (the Atari agent's
commands), ``engine`` (``diffworld engine ...``) and ``world_model`` (play, video, wm-eval and plot on a
folder of either product).

Heavy imports (torch, the models) happen inside the subcommands, after the configuration has been
validated, so that a typo fails in a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffworld import __version__
from diffworld.cli import agent, engine, world_model
from diffworld.cli.common import SETTINGS, Parser
from diffworld.errors import UserError

__all__ = ["SETTINGS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="diffworld",
        description="DIAMOND: an RL agent trained inside a diffusion world model (Atari 100k).",
    )
    parser.add_argument("--version", action="version", version=f"diffworld {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    agent.add_train(sub)
    agent.add_eval(sub)
    agent.add_export(sub)
    agent.add_import(sub)
    world_model.add_play(sub)
    world_model.add_video(sub)
    world_model.add_plot(sub)
    agent.add_config(sub)
    agent.add_sweep(sub)
    agent.add_report(sub)
    agent.add_bench(sub)
    world_model.add_wm_eval(sub)
    agent.add_games(sub)
    engine.add_engine(sub)
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
