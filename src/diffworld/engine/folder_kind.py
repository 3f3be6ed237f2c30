"""Engine folders as a ``world_model_folder.WorldModelFolder``: ``diffworld play``, ``video`` and
``wm-eval`` on an engine (its play, video and quality modules are imported only when used)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from diffworld.engine.folder import is_engine_run
from diffworld.errors import UserError
from diffworld.world_model_folder import PlayOptions, VideoOptions, VideoSummary, WmEvalOptions


class EngineFolder:
    """An engine's run folder (``engine/folder.py``): ``config.yaml`` beside ``action_space.json``."""

    kind = "engine"

    def recognizes(self, path: Path) -> bool:
        return is_engine_run(path)

    def play(self, path: Path, options: PlayOptions) -> None:
        from diffworld.engine.play import run_engine_play

        run_engine_play(path, options)

    def video(self, path: Path, out: Path, options: VideoOptions) -> VideoSummary:
        if options.show_denoising:
            raise UserError(
                "An engine's video does not show the denoising steps: give --denoising-steps N to set the "
                "number of steps of its sampler."
            )
        from diffworld.engine.video import run_engine_video

        return run_engine_video(path, out, options)

    def wm_eval(self, paths: Sequence[Path], out_dir: Path, options: WmEvalOptions) -> list[str]:
        if options.kinds is not None or options.episodes is not None:
            raise UserError(
                "--kinds and --episodes are for Atari runs: an engine is evaluated on the test split of its "
                "dataset (--data, --trajectories)."
            )
        from diffworld.engine.wm_eval import evaluate_engine_world_models, summary_lines

        report = evaluate_engine_world_models(paths, out_dir, options)
        return list(summary_lines(report))


ENGINE_FOLDER = EngineFolder()
