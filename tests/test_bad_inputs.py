"""Bad inputs end with one clear line, never a traceback, and are never silently replaced: run_dir that is a
file, negative or zero episode counts, an epsilon outside [0, 1], negative seeds, a score file without
scores, and a checkpoint that weights-only loading refuses (its message, by torch version)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from diffworld.cli import main
from diffworld.cluster.plan import SweepError, parse_seeds
from diffworld.config import build_config
from diffworld.config.loading import ConfigError
from diffworld.run.checkpoint import STATE_FILE, CheckpointError, describe_refusal, load_checkpoint


def _fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as e:  # the command line itself is refused
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------------- 3. no tracebacks


def test_run_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    err = _fails_in_one_line(["train", "game=Catch", "preset=smoke", f"run_dir={path}"], capsys)
    assert "is a file, not a folder" in err
    assert "not a folder" in _fails_in_one_line(["train", "--resume", str(path)], capsys)
    for command in ("eval", "video", "wm-eval", "export"):
        extra = {"video": ["--out", str(tmp_path / "v.gif")], "export": [str(tmp_path / "x")]}
        argv = [command, str(path), *extra.get(command, [])]
        assert "neither a run folder" in _fails_in_one_line(argv, capsys)
    assert path.read_text() == "x"


def test_eval_episode_counts(capsys: pytest.CaptureFixture[str]) -> None:
    # -1 was a ValueError traceback; 0 silently played the configuration's number of episodes.
    for count in ("-1", "0"):
        err = _fails_in_one_line(["eval", "run", "--episodes", count], capsys)
        assert f"argument --episodes: must be at least 1, got {count}" in err
    assert "expected an integer" in _fails_in_one_line(["eval", "run", "--episodes", "two"], capsys)


def test_report_of_a_score_file_without_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"Pong": []}))  # was an IndexError from rliable
    err = _fails_in_one_line(["report", str(path), "--out", str(tmp_path / "report")], capsys)
    assert "no score for Pong" in err
    assert not (tmp_path / "report").exists()


# --------------------------------------------------------------------------------- 4. nothing silent


@pytest.mark.parametrize("epsilon", ["2", "-0.1", "nan"])
def test_eval_epsilon_outside_0_1(epsilon: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails_in_one_line(["eval", "run", "--epsilon", epsilon], capsys)
    assert "argument --epsilon: must be within [0, 1]" in err


def test_negative_seeds_are_refused_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    # numpy's SeedSequence refuses negative seeds: so does diffworld, where they are given.
    with pytest.raises(ConfigError, match="seed=-1: a seed is an integer from 0 to 4294967295"):
        build_config(["game=Catch", "seed=-1"])
    with pytest.raises(ConfigError, match="seed="):
        build_config(["game=Catch", f"seed={2**32}"])
    build_config(["game=Catch", "seed=0"])
    build_config(["game=Catch", f"seed={2**32 - 1}"])
    assert "seed=-1" in _fails_in_one_line(["train", "game=Catch", "seed=-1"], capsys)
    with pytest.raises(SweepError, match="-1 is not a seed"):
        parse_seeds("[0,-1]")
    assert parse_seeds("[0,3]") == [0, 3]
    for argv in (
        ["play", "run", "--seed", "-1"],
        ["video", "run", "--out", "v.gif", "--seed", "-1"],
        ["wm-eval", "run", "--seed", "-1"],
        ["report", "run", "--seed", "-1"],
    ):
        assert "argument --seed: must be from 0 to 4294967295, got -1" in _fails_in_one_line(argv, capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "run", "--num-envs", "0"],
        ["wm-eval", "run", "--episodes", "0"],
        ["wm-eval", "run", "--horizons", "5", "0"],
        ["wm-eval", "run", "--denoising-steps", "0"],
        ["video", "run", "--out", "v.gif", "--steps", "0"],
        ["play", "run", "--scale", "0"],
        ["report", "run", "--reps", "0"],
        ["bench", "--repeats", "0"],
    ],
    ids=lambda argv: "_".join(argv[:1] + argv[2:]),
)
def test_other_counts_must_be_positive(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert "must be at least 1, got 0" in _fails_in_one_line(argv, capsys)


@pytest.mark.parametrize(
    ("argv", "fix"),
    [
        (
            ["video", "run", "--out", "v.gif", "--denoising-steps"],
            "to show each denoising step use --show-denoising",
        ),
        (["video", "--out", "v.gif", "run", "--denoising-steps", "--fps", "5"], "use --show-denoising"),
        (["wm-eval", "run", "--steps", "2"], "--steps is now --denoising-steps"),
        (["wm-eval", "run", "--steps"], "--steps is now --denoising-steps"),
        (["bench", "preset=smoke", "--steps", "2"], "--steps is now --repeats"),
    ],
    ids=["video_show", "video_show_then_option", "wm_eval_steps", "wm_eval_steps_alone", "bench_steps"],
)
def test_former_spellings_of_renamed_options_are_refused(
    argv: list[str], fix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An option renamed in this version has one name: its former spelling (main's ``video --denoising-steps``
    alone, ``wm-eval --steps N``, ``bench --steps N``), which means something else elsewhere, is refused in
    one line that names the option to use, before anything is loaded or run."""
    err = _fails_in_one_line(argv, capsys)
    assert err.startswith(f"diffworld {argv[0]}: ") and fix in err


def test_renamed_options_parse() -> None:
    """Their current spellings parse to what the commands read."""
    from diffworld.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["wm-eval", "run", "--denoising-steps", "1", "3"])
    assert args.denoising_steps == [1, 3] and args.former_steps is None
    assert parser.parse_args(["bench", "--repeats", "3"]).repeats == 3
    args = parser.parse_args(["video", "run", "--out", "v.gif", "--denoising-steps", "2", "--show-denoising"])
    assert args.denoising_steps == 2 and args.show_denoising


# ------------------------------------------------------------------------------------------ 6. wording


class _System:
    """Unpickles to ``os.system("...")``: weights-only loading must refuse it, and say so."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo ran > /dev/null",)


def test_a_checkpoint_calling_os_system_is_refused_in_words(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "x": _System()}, tmp_path / STATE_FILE)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    message = str(info.value)
    assert f"{os.system.__module__}.system" in message  # posix.system: the module and the function
    assert "loading was refused for safety (weights-only loading) and none of its code was run" in message
    assert "unknown reason" not in message


@pytest.mark.parametrize(
    ("torch_message", "expected"),
    [
        # torch >= 2.6, a blocked module (the message of issue 17, with torch 2.13)
        (
            "Trying to load unsupported GLOBAL posix.system whose module posix is blocked.",
            "references posix.system",
        ),
        # torch 2.4 to 2.13, any other global
        (
            "Weights only load failed.\n\tWeightsUnpickler error: Unsupported global: GLOBAL __main__.Evil "
            "was not an allowed global by default. Please use `torch.serialization.add_safe_globals([...])`",
            "references __main__.Evil",
        ),
        # torch 2.3 and older
        (
            "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will "
            "likely succeed, but it can result in arbitrary code execution.\n WeightsUnpickler error: "
            "Unsupported class __main__.Evil",
            "references __main__.Evil",
        ),
        ("Trying to call reduce for unrecognized function <built-in function system>", "calls system"),
        (
            "Can only build Tensor, Parameter, OrderedDict or types allowlisted via `add_safe_globals`, but "
            "got <class 'a.B'>",
            "builds an object of a.B",
        ),
        ("Trying to instantiate unsupported class <class 'a.B'>", "creates an object of a.B"),
        ("Unsupported operand 149", "pickle instruction 149"),
        ("WeightsUnpickler error: something new", "(something new)"),
    ],
)
def test_refusals_of_every_supported_torch_version_are_worded(torch_message: str, expected: str) -> None:
    message = describe_refusal(pickle.UnpicklingError(torch_message))
    assert expected in message
    assert message.endswith(
        "loading was refused for safety (weights-only loading) and none of its code was run"
    )
    assert "\n" not in message
