"""Game-name resolution: the spellings users type, the error for unknown names, and the import cost."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest

from diffworld.games import ATARI100K_GAMES, UnknownGameError, available_games, env_id, resolve_game


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Breakout", "Breakout"),
        ("breakout", "Breakout"),
        ("BREAKOUT", "Breakout"),
        ("BreakoutNoFrameskip-v4", "Breakout"),
        ("ms_pacman", "MsPacman"),
        ("MsPacman", "MsPacman"),
        ("mspacman", "MsPacman"),
        ("MsPacmanNoFrameskip-v4", "MsPacman"),
        ("up_n_down", "UpNDown"),
        ("kung_fu_master", "KungFuMaster"),
        ("space_invaders", "SpaceInvaders"),  # valid although not one of the 26 Atari 100k games
    ],
)
def test_resolve_game_accepts_user_spellings(name: str, canonical: str) -> None:
    assert resolve_game(name) == canonical


def test_env_id() -> None:
    assert env_id("ms_pacman") == "MsPacmanNoFrameskip-v4"
    assert env_id("Pong") == "PongNoFrameskip-v4"


def test_atari100k_games_are_the_26_benchmark_games_and_all_registered() -> None:
    assert len(ATARI100K_GAMES) == 26
    assert {"Alien", "Breakout", "MsPacman", "UpNDown", "KungFuMaster"} <= set(ATARI100K_GAMES)
    for game in ATARI100K_GAMES:
        assert resolve_game(game) == game
        assert env_id(game) in gym.registry
    assert set(ATARI100K_GAMES) < set(available_games())


def test_unknown_game_suggests_close_names() -> None:
    with pytest.raises(UnknownGameError) as excinfo:
        resolve_game("Breakot")
    assert str(excinfo.value) == (
        "Unknown game 'Breakot'. Did you mean: Breakout? (run 'diffworld games' for the full list)"
    )
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(
    ("name", "suggestion"), [("ms-pacmann", "MsPacman"), ("SPACE_INVADER", "SpaceInvaders")]
)
def test_suggestions_ignore_case_and_underscores(name: str, suggestion: str) -> None:
    with pytest.raises(UnknownGameError, match=f"Did you mean: {suggestion}"):
        resolve_game(name)


def test_unknown_game_without_close_match() -> None:
    with pytest.raises(UnknownGameError, match=r"^Unknown game 'xyzzy' \(run 'diffworld games'"):
        resolve_game("xyzzy")


def test_rom_without_noframeskip_v4_registration_is_rejected() -> None:
    # ale-py ships a Tetris ROM but registers it only as ALE/Tetris-v5.
    with pytest.raises(UnknownGameError):
        resolve_game("tetris")


def test_name_check_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from diffworld.games import UnknownGameError, resolve_game\n"
        "try:\n    resolve_game('NotAGame')\nexcept UnknownGameError:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "False"
