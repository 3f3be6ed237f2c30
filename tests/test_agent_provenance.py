"""An agent folder (or run folder) that lies about its game is refused: the weights file records the game,
the number of actions and the configuration's digest; agent.json must agree with it and with itself, and
the agent's number of actions with the game's environment (the one check left for older folders)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from diffworld.agent import (
    INFO_FILE,
    WEIGHTS_FILE,
    Agent,
    AgentFolderError,
    config_digest,
    export_agent,
    load_agent,
    read_weights_metadata,
)
from diffworld.agent.official_import import official_names
from diffworld.agent.trained import GameMismatchError, load_trained_agent
from diffworld.cli import main
from diffworld.config import build_config
from run_helpers import new_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    cfg = build_config(["game=Breakout", "preset=smoke"])
    return export_agent(Agent.build(cfg, 4), cfg, 4, tmp_path / "agent")


def _edit(folder: Path, change: Any) -> None:
    info = json.loads((folder / INFO_FILE).read_text())
    change(info)
    (folder / INFO_FILE).write_text(json.dumps(info))


def _error(folder: Path) -> str:
    with pytest.raises(AgentFolderError) as info:
        load_agent(folder)
    return str(info.value)


def test_the_weights_record_what_they_were_trained_on(folder: Path) -> None:
    metadata = read_weights_metadata((folder / WEIGHTS_FILE).read_bytes())
    info = json.loads((folder / INFO_FILE).read_text())
    assert metadata["game"] == "Breakout" and metadata["num_actions"] == "4"
    assert metadata["config_sha256"] == config_digest(info["config"])
    assert load_agent(folder)[1].game == "Breakout"


def test_config_edited_to_another_game_is_refused(folder: Path) -> None:
    # Atlantis has Breakout's 4 actions: before, it was evaluated without a word.
    _edit(folder, lambda i: i["config"].update(game="Atlantis"))
    assert "contradicts itself: its game is Breakout but its configuration's is Atlantis" in _error(folder)


def test_both_games_edited_is_refused_by_the_weights(folder: Path) -> None:
    _edit(folder, lambda i: (i.update(game="Atlantis"), i["config"].update(game="Atlantis")))
    message = _error(folder)
    assert f"{folder / WEIGHTS_FILE} was trained with game Breakout, but" in message
    assert "says Atlantis" in message and "lies about its agent" in message


def test_other_configuration_is_refused_by_the_digest(folder: Path) -> None:
    _edit(folder, lambda i: i["config"]["actor_critic"].update(gamma=0.9))
    assert "configuration (SHA-256" in _error(folder)


def test_weights_of_another_agent_are_refused(folder: Path, tmp_path: Path) -> None:
    cfg = build_config(["game=Atlantis", "preset=smoke"])
    other = export_agent(Agent.build(cfg, 4), cfg, 4, tmp_path / "atlantis")
    shutil.copy(other / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    assert "was trained with game Atlantis" in _error(folder)


def test_older_folders_are_checked_against_the_game(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An older export: weights without metadata (and agent.json's checksum of them).
    tensors = safetensors.torch.load_file(folder / WEIGHTS_FILE)
    data = safetensors.torch.save(tensors)
    (folder / WEIGHTS_FILE).write_bytes(data)
    _edit(folder, lambda i: i.update(weights_sha256=hashlib.sha256(data).hexdigest()))
    assert load_agent(folder)[1].game == "Breakout"  # still loads
    # Edited to Freeway (3 actions against the agent's 4): before, an IndexError in the environment.
    _edit(folder, lambda i: (i.update(game="Freeway"), i["config"].update(game="Freeway")))
    with pytest.raises(GameMismatchError, match="trained with 4 actions but Freeway has 3"):
        load_trained_agent(folder, "cpu")
    assert (
        main(
            [
                "eval",
                str(folder),
                "--episodes",
                "1",
                "--device",
                "cpu",
                "--out",
                str(folder.parent / "x.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Freeway has 3" in err and len(err.strip().splitlines()) == 1


def test_run_folder_edited_to_another_game_is_refused(tmp_path: Path) -> None:
    run = new_run(tmp_path / "run")  # Catch, 3 actions
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("game: Catch", "game: Freeway"))  # also 3 actions
    with pytest.raises(GameMismatchError, match="saved by a run of Catch, but .* says Freeway"):
        load_trained_agent(run, "cpu")


def test_imported_agents_record_their_game(tmp_path: Path) -> None:
    from diffworld.agent.official_import import import_official_agent

    cfg = build_config(["game=Breakout", "preset=smoke"])
    agent = Agent.build(cfg, 4)
    names = official_names(agent, len(cfg.reward_model.channels))
    ours = agent.state_dict()
    torch.save({official: ours[name] for official, name in names.items()}, tmp_path / "Breakout.pt")
    folder = import_official_agent(tmp_path / "Breakout.pt", cfg, tmp_path / "imported", num_actions=4)
    metadata = read_weights_metadata((folder / WEIGHTS_FILE).read_bytes())
    assert (metadata["game"], metadata["num_actions"]) == ("Breakout", "4")
