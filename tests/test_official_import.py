"""``diffworld import``: official DIAMOND agent files to agent folders, and one-line errors for bad files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffworld.agent import INFO_FILE, load_agent
from diffworld.agent.official_import import OfficialAgentError, import_official_agent
from diffworld.cli import main
from diffworld.config import Config, build_config
from test_official_equivalence import TINY_OVERRIDES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AGENT_FILE = Path(__file__).parent / "data" / "official" / "official_tiny_agent.pt"
# Breakout episodes of the random-looking tiny policy would last up to 27,000 steps: cap them at 100.
SHORT_EPISODES = "env.max_frames_per_episode=400"


@pytest.fixture(scope="module")
def cfg() -> Config:
    return build_config(["game=Breakout", *TINY_OVERRIDES])


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    return torch.load(AGENT_FILE, weights_only=True)


def _import_error(cfg: Config, path: Path, tmp_path: Path) -> str:
    with pytest.raises(OfficialAgentError) as info:
        import_official_agent(path, cfg, tmp_path / "agent", num_actions=4)
    message = str(info.value)
    assert "\n" not in message
    assert not (tmp_path / "agent").exists()
    return message


def _saved(state: object, tmp_path: Path, name: str = "edited.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"diffworld {argv[0]}: ") and err.count("\n") == 1, err
    return err


def test_cli_import_then_eval_video_wm_eval_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "Breakout"
    assert (
        main(["import", str(AGENT_FILE), str(folder), "game=breakout", *TINY_OVERRIDES, SHORT_EPISODES]) == 0
    )
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["game"] == "Breakout" and info["num_actions"] == 4
    assert info["config"]["denoiser"]["channels"] == [8, 16]
    assert info["config"]["denoiser"]["convention"] == "official"
    assert info["metadata"]["imported_file"] == AGENT_FILE.name
    assert info["metadata"]["imported_file_sha256"] == hashlib.sha256(AGENT_FILE.read_bytes()).hexdigest()
    agent, cfg, _ = load_agent(folder)
    assert cfg.game == "Breakout" and agent.actor_critic.num_actions == 4

    assert main(["eval", str(folder), "--episodes", "1", "--device", "cpu"]) == 0
    report = json.loads((folder / "eval.json").read_text())
    assert report["game"] == "Breakout" and report["num_episodes"] == 1
    video = tmp_path / "video.gif"
    assert (
        main(["video", str(folder), "--out", str(video), "--steps", "2", "--device", "cpu", "--scale", "1"])
        == 0
    )
    with Image.open(video) as gif:
        assert gif.n_frames == cfg.denoiser.num_cond_frames + 2
    wm_argv = [
        "wm-eval",
        str(folder),
        "--kinds",
        "edm",
        "--horizons",
        "1",
        "--denoising-steps",
        "1",
        "--episodes",
        "1",
    ]
    assert main([*wm_argv, "--device", "cpu", "--out-dir", str(tmp_path / "wm")]) == 0
    assert (tmp_path / "wm" / "wm_quality.json").is_file()
    assert main(["report", str(folder), "--reps", "50", "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file()

    _one_line_error(capsys, ["import", str(AGENT_FILE), str(folder), "game=Breakout", *TINY_OVERRIDES])
    assert (
        main(["import", str(AGENT_FILE), str(folder), "game=Breakout", *TINY_OVERRIDES, "--overwrite"]) == 0
    )
    assert load_agent(folder)[1].env.max_frames_per_episode != 400


def test_cli_needs_the_game(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(capsys, ["import", str(AGENT_FILE), str(tmp_path / "agent")])
    assert "game=<Game>" in err


def test_cli_another_games_agent(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(
        capsys, ["import", str(AGENT_FILE), str(tmp_path / "a"), "game=Pong", *TINY_OVERRIDES]
    )
    assert "built for 4 actions but Pong has 6" in err


def test_cli_another_architecture_names_the_overrides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The paper's configuration (the default) against the small file: the overrides that fit are named."""
    err = _one_line_error(capsys, ["import", str(AGENT_FILE), str(tmp_path / "a"), "game=Breakout"])
    assert "another architecture" in err
    for override in TINY_OVERRIDES:
        assert override in err


def test_missing_tensor(cfg: Config, official: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = dict(official)
    del state["rew_end_model.head.2.weight"]
    message = _import_error(cfg, _saved(state, tmp_path), tmp_path)
    assert "1 missing: rew_end_model.head.2.weight" in message


def test_unexpected_tensor(cfg: Config, official: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = {**official, "actor_critic.extra.weight": torch.zeros(3)}
    message = _import_error(cfg, _saved(state, tmp_path), tmp_path)
    assert "1 unexpected: actor_critic.extra.weight" in message


def test_wrong_shape(cfg: Config, official: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = {**official, "denoiser.inner_model.conv_out.bias": torch.zeros(4)}
    message = _import_error(cfg, _saved(state, tmp_path), tmp_path)
    assert "'denoiser.inner_model.conv_out.bias' has shape (4,)" in message and "expects (3,)" in message


def test_action_tensors_that_disagree(cfg: Config, official: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = {**official, "actor_critic.actor_linear.weight": torch.zeros(5, 16)}
    message = _import_error(cfg, _saved(state, tmp_path), tmp_path)
    assert "actor_critic.actor_linear.weight has 5 rows" in message


def test_action_count_of_the_game(cfg: Config, tmp_path: Path) -> None:
    with pytest.raises(OfficialAgentError, match="built for 4 actions but Breakout has 18"):
        import_official_agent(AGENT_FILE, cfg, tmp_path / "agent", num_actions=18)


class _Payload:
    """Unpickling this object would create a folder: a stand-in for code in a malicious pickle."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.path,)


def test_pickled_objects_are_refused_without_running_them(
    cfg: Config, official: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    marker = tmp_path / "code_ran"
    state = {**official, "denoiser.payload": _Payload(marker)}
    message = _import_error(cfg, _saved(state, tmp_path), tmp_path)
    assert "objects other than tensors: it references posix.mkdir" in message
    assert "loading was refused for safety (weights-only loading) and none of its code was run" in message
    assert not marker.exists()


def test_files_that_are_not_agent_state_dicts(
    cfg: Config, official: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    assert "not a file saved by torch.save" in _import_error(cfg, garbage, tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(AGENT_FILE.read_bytes()[:5000])
    assert "truncated or another format" in _import_error(cfg, truncated, tmp_path)
    assert "No file at" in _import_error(cfg, tmp_path / "absent.pt", tmp_path)
    checkpoint = _saved({"agent": official, "epoch": 3}, tmp_path, "state.pt")
    assert "not an agent's state dict" in _import_error(cfg, checkpoint, tmp_path)
    assert "holds a list" in _import_error(cfg, _saved([torch.zeros(1)], tmp_path, "list.pt"), tmp_path)
    other = _saved({"encoder.weight": torch.zeros(1)}, tmp_path, "other.pt")
    assert "not an official DIAMOND agent" in _import_error(cfg, other, tmp_path)


def test_ddpm_is_refused(tmp_path: Path) -> None:
    cfg = build_config(["game=Breakout", "denoiser.kind=ddpm", *TINY_OVERRIDES])
    assert "EDM" in _import_error(cfg, AGENT_FILE, tmp_path)


def test_settings_beyond_the_paper_are_refused(tmp_path: Path) -> None:
    """Official agents are Atari agents of the paper's settings: a continuous game, value rewards and return
    normalisation are refused in one line, before the file is read."""
    cfg = build_config(["game=CatchContinuous", *TINY_OVERRIDES])
    message = _import_error(cfg, tmp_path / "absent.pt", tmp_path)
    assert "CatchContinuous takes continuous ones" in message
    cfg = build_config(["game=Breakout", "reward_model.reward_kind=value", *TINY_OVERRIDES])
    assert "reward_kind=value" in _import_error(cfg, tmp_path / "absent.pt", tmp_path)
    cfg = build_config(["game=Breakout", "actor_critic.return_normalization=percentile", *TINY_OVERRIDES])
    assert "return_normalization=percentile" in _import_error(cfg, tmp_path / "absent.pt", tmp_path)
