"""The commands on a world-model folder of either product: play, video, wm-eval, plot. Each folder goes to
its kind (``world_model_folder.WorldModelFolder``), which applies its defaults and refuses the options that
are not for it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from diffworld.cli.common import (
    SAMPLER_SETTINGS_HELP,
    SETTINGS,
    Parser,
    add_former_spelling,
    command,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    refuse_former_spelling,
    refuse_live_run_output,
    seed_int,
)
from diffworld.errors import UserError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from diffworld.world_model_folder import WorldModelFolder

    OptionsT = TypeVar("OptionsT", bound=DataclassInstance)


FOLDER_KINDS = ("diffworld.engine.folder_kind:ENGINE_FOLDER", "diffworld.agent.folder_kind:AGENT_FOLDER")
"""The kinds of world-model folder, tried in this order (an engine folder is recognized by its files; any
other folder is taken for a run or agent folder), as import strings so that the parser imports neither
product."""


def folder_kind(path: Path) -> WorldModelFolder:
    """The kind of the world-model folder ``path`` (``world_model_folder.WorldModelFolder``)."""
    import importlib

    for name in FOLDER_KINDS:
        module, _, attribute = name.partition(":")
        kind: WorldModelFolder = getattr(importlib.import_module(module), attribute)
        if kind.recognizes(path):
            return kind
    raise AssertionError("the last folder kind recognizes every folder")


def _options(args: argparse.Namespace, cls: type[OptionsT], **given: object) -> OptionsT:
    """The options dataclass ``cls`` of a command: each field the parsed option of its name, or its value in
    ``given`` (where the command line's needs converting)."""
    names = (f.name for f in dataclasses.fields(cls))
    return cls(**{name: given[name] if name in given else getattr(args, name) for name in names})


def _cmd_play(args: argparse.Namespace) -> int:
    if args.dataset:
        from diffworld.viz.dataset_browser import run_browser

        run_browser(Path(args.source), scale=args.scale or 8, fps=args.fps, max_frames=args.max_frames)
        return 0
    from diffworld.world_model_folder import PlayOptions

    if args.record_dir:
        refuse_live_run_output(args.record_dir, "recorded episodes", "another --record-dir")
    record_dir, keymap = (Path(path) if path else None for path in (args.record_dir, args.keymap))
    options = _options(args, PlayOptions, record_dir=record_dir, keymap=keymap)
    folder_kind(Path(args.source)).play(Path(args.source), options)
    return 0


NO_NUMBER = 0
"""``video --denoising-steps`` given without its number (which is at least 1): main's spelling of
``--show-denoising``, refused."""


def _cmd_video(args: argparse.Namespace) -> int:
    from diffworld.world_model_folder import VideoOptions

    if args.denoising_steps == NO_NUMBER:
        raise UserError(
            "--denoising-steps takes a number (the count of denoising steps); to show each denoising step "
            "use --show-denoising"
        )
    refuse_live_run_output(args.out, "the video", "--out <file>")
    options = _options(args, VideoOptions)
    summary = folder_kind(Path(args.source)).video(Path(args.source), Path(args.out), options)
    print(f"Wrote {args.out}: {summary.num_frames} frames of {summary.width}x{summary.height}")
    return 0


def _cmd_wm_eval(args: argparse.Namespace) -> int:
    from diffworld.evaluation.wm_quality_plot import JSON_FILE, PNG_FILE
    from diffworld.world_model_folder import WmEvalOptions, default_wm_eval_dir

    refuse_former_spelling(
        args, "--steps", "is now --denoising-steps (the denoising steps evaluated): give --denoising-steps N"
    )
    run_dirs = [Path(p) for p in args.run_dirs]
    kinds = [folder_kind(p) for p in run_dirs]
    if len({kind.kind for kind in kinds}) > 1:
        raise UserError(
            "Give either engine folders or Atari run/agent folders, not both: evaluate them in separate "
            "calls."
        )
    out = Path(args.out_dir) if args.out_dir else default_wm_eval_dir(run_dirs)
    refuse_live_run_output(out, "the world-model evaluation", "--out-dir <folder>")
    options = _options(args, WmEvalOptions)
    for line in kinds[0].wm_eval(run_dirs, out, options):
        print(line)
    print(f"Wrote {out / JSON_FILE} and {out / PNG_FILE}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffworld.viz.plots import plot_runs

    refuse_live_run_output(args.out, "the plot", "--out <file>")
    out = plot_runs([Path(p) for p in args.run_dirs], Path(args.out), keys=args.keys, x=args.x)
    print(f"Wrote {out}")
    return 0


def add_play(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub,
        "play",
        _cmd_play,
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
    p.add_argument(
        "--keymap",
        help="a key map file (JSON, docs/engine.md): an engine's dataset actions, or a continuous-control "
        "agent's",
    )
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


def add_video(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub,
        "video",
        _cmd_video,
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
        "--show-denoising",
        action="store_true",
        help="a run or agent: show each denoising step too (a strip under the frames)",
    )
    p.add_argument(
        "--denoising-steps",
        type=positive_int,
        nargs="?",  # without its number: main's spelling of --show-denoising, refused in one line
        const=NO_NUMBER,
        metavar="N",
        help="an engine: N next-frame denoising steps (default: the engine's)",
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


def add_plot(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(sub, "plot", _cmd_plot, help="learning curves of one or more runs (metrics.jsonl) as a PNG")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="learning_curves.png", help="the PNG (default: learning_curves.png)")
    p.add_argument("--keys", nargs="+", help="plot these metric keys instead of returns and losses")
    p.add_argument(
        "--x",
        choices=["env_steps", "epoch", "updates"],
        help="the x axis (default: env_steps; an engine's: updates)",
    )


def add_wm_eval(sub: argparse._SubParsersAction[Parser]) -> None:
    p = command(
        sub,
        "wm-eval",
        _cmd_wm_eval,
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
        "--denoising-steps",
        type=positive_int,
        nargs="+",
        metavar="N",
        help="next-frame denoising steps, each evaluated (default: runs 1 3 10; an engine: its own)",
    )
    add_former_spelling(p, "--steps")  # now --denoising-steps; '--steps' is video's imagined steps
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
        help="predictions per denoiser call at most, one per trajectory stepped together (default: runs 64, "
        "engines 8)",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--out-dir", help="where the JSON and PNG go (default: <run or engine>/wm_eval, or wm_eval)"
    )
