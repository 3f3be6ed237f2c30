"""What every part of the ``diffworld`` command shares: the one-line parser, the option types, the refusal
to write into a live run, the engine's sampler settings."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from diffworld.errors import UserError

ValueT = TypeVar("ValueT")

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


def with_former_spelling(
    command: str, value: ValueT | None, former: ValueT | None, option: str, former_option: str
) -> ValueT | None:
    """The value of ``option``, or that of ``former_option``, its former spelling, read with a warning on
    stderr (the former name means something else elsewhere); both given are refused. None: neither given."""
    if former is None:
        return value
    if value is not None:
        raise UserError(f"{command}: give {option} alone ({former_option} is its former spelling)")
    print(f"{command}: {former_option} is now {option} (the former spelling still works)", file=sys.stderr)
    return former


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
