"""Atari run and agent folders as a ``world_model_folder.WorldModelFolder``: ``diffworld play``, ``video``
and ``wm-eval`` on an agent's world model (its play, video and evaluation modules are imported only when
used)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from diffworld.errors import UserError
from diffworld.games import has_continuous_actions
from diffworld.run.folder import CONFIG_FILE
from diffworld.world_model_folder import PlayOptions, VideoOptions, VideoSummary, WmEvalOptions


class AgentFolder:
    """A run folder or an exported agent folder: any folder that is not an engine's (their loaders say
    what is missing from one that is neither)."""

    kind = "agent"

    def recognizes(self, path: Path) -> bool:
        return True

    def play(self, path: Path, options: PlayOptions) -> None:
        if options.data or options.denoising_steps or options.sampler_settings:
            raise UserError("--data, --denoising-steps and --sampler-settings are for engine folders")
        if options.keymap is not None:
            game = _game_of(path)
            if game is not None and not has_continuous_actions(game):
                from diffworld.agent.play_keys import keymap_refusal  # no torch: refused before loading

                raise keymap_refusal(game)
        from diffworld.agent.play import run_play

        run_play(path, options)

    def video(self, path: Path, out: Path, options: VideoOptions) -> VideoSummary:
        if (
            options.data
            or options.episode is not None
            or options.sampler_settings
            or options.denoising_steps is not None
        ):
            raise UserError(
                "--data, --episode, --sampler-settings and --denoising-steps are for engine folders (a run's "
                "video takes --show-denoising, to show each denoising step)."
            )
        from diffworld.agent.video import run_video

        return run_video(path, out, options)

    def wm_eval(self, paths: Sequence[Path], out_dir: Path, options: WmEvalOptions) -> list[str]:
        if options.data is not None or options.trajectories is not None or options.sampler_settings:
            raise UserError("--data, --trajectories and --sampler-settings are for engine folders.")
        from diffworld.agent.action_fidelity import format_action_fidelity
        from diffworld.agent.wm_quality import WmEvalSettings, evaluate_world_models

        report = evaluate_world_models(paths, out_dir, WmEvalSettings.of(options))
        lines = []
        for run in report["runs"]:
            h = run["horizons_evaluated"]
            for steps, modes in run["denoising_steps"].items():
                figures = ", ".join(f"h{k} {modes['autoregressive']['psnr'][str(k)]:.1f} dB" for k in h)
                name = f"{run['game']} {run['kind'].upper()} {steps} step(s)"
                lines.append(f"{name}, autoregressive PSNR: {figures}")
                if "action_fidelity" in run:
                    lines.append(f"{name}, {format_action_fidelity(run['action_fidelity'][steps])}")
        return lines


def _game_of(path: Path) -> str | None:
    """The game of the agent folder (``agent.json``) or run folder (``config.yaml``) ``path``, read without
    torch; None where it cannot be read (the loader then says why)."""
    import json

    import yaml

    try:
        if (path / AGENT_INFO_FILE).is_file():
            data = json.loads((path / AGENT_INFO_FILE).read_text())
        elif (path / CONFIG_FILE).is_file():
            data = yaml.safe_load((path / CONFIG_FILE).read_text())
        else:
            return None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    game = data.get("game") if isinstance(data, dict) else None
    return game if isinstance(game, str) else None


AGENT_INFO_FILE = "agent.json"
"""``agent.model.INFO_FILE``, named here so as not to import that module (it needs torch)."""

AGENT_FOLDER = AgentFolder()
