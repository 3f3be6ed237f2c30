"""What every part of the ``diffworld`` command shares: the one-line parser, the option types, the refusal
of renamed options' former spellings, the refusal to write into a live run, the engine's sampler settings."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from diffworld.errors import UserError

MAX_SEED = 2**32 - 1
"""As ``diffworld.config.loading.MAX_SEED`` (not imported here: it would load the configuration modules)."""


OVERRIDES_HELP = (
    "configuration as key=value with dotted keys, e.g. game=Pong seed=3 preset=quick "
    "denoiser.optimizer.lr=3e-4 (see 'diffworld config --keys')"
)


class Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (``diffworld eval: argument --episodes: ...``), like every other
    error of the command, instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
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


def float_in(low: float, high: float = math.inf, low_open: bool = False) -> Callable[[str], float]:
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


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
seed_int = int_at_least(0, MAX_SEED)
probability = float_in(0.0, 1.0)
positive_float = float_in(0.0, low_open=True)
non_negative_float = float_in(0.0)


def command(
    sub: argparse._SubParsersAction[Parser],
    name: str,
    run: Callable[[argparse.Namespace], int],
    **kwargs: Any,
) -> Parser:
    """The subcommand ``name`` (``kwargs``: its ``help``, ``description``), which ``run`` carries out."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(func=run)
    return p


def add_former_spelling(p: Parser, former_option: str) -> None:
    """Declare ``former_option``, the former spelling of a renamed option, hidden: with or without values it
    is parsed (not taken for another option, or its values for the command's own), so that the command can
    refuse it with ``refuse_former_spelling``."""
    p.add_argument(former_option, nargs="*", dest=former_dest(former_option), help=argparse.SUPPRESS)


def former_dest(former_option: str) -> str:
    """Where ``add_former_spelling`` stores the values of ``former_option`` in the parsed options."""
    return "former_" + former_option.lstrip("-").replace("-", "_")


def refuse_former_spelling(args: argparse.Namespace, former_option: str, fix: str) -> None:
    """A one-line error (``UserError``) where the command line gives ``former_option`` (declared with
    ``add_former_spelling``); ``fix`` names the option to use. A renamed option has one name: its former
    spelling means something else elsewhere, so it is not read as an alias."""
    if getattr(args, former_dest(former_option)) is not None:
        raise UserError(f"{former_option} {fix}")


def refuse_live_run_output(path: str | Path, what: str, flag: str) -> None:
    """A command writes nothing into a run folder that another process is training (see ``run.folder``)."""
    from diffworld.run.folder import refuse_writing_into_live_run

    refuse_writing_into_live_run(Path(path), what, f"pass {flag} to write it outside the run folder")


SETTINGS = ("fast", "higher_quality")
"""The values of ``engine.open_engine.SamplerSettings`` (named here so that the parser imports no torch)."""


SAMPLER_SETTINGS_HELP = (
    "engine: its samplers, 'fast' (its own; the official CS:GO model's fast file) or 'higher_quality' (the "
    "official file: 3 denoising steps, 10 upsampling steps)"
)
