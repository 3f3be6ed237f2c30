"""Continuous-control games in the configuration: their names (``dmc:``, ``gym:``, CatchContinuous), the
keys of continuous control and their checks, the presets; every error one line."""

from __future__ import annotations

import importlib.util

import pytest

from diffworld.config import ConfigError, build_config
from diffworld.games import has_continuous_actions, is_atari, is_dmc, is_gym, resolve_game

HAS_DMC = importlib.util.find_spec("dm_control") is not None


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_names_of_continuous_games() -> None:
    assert resolve_game("catchcontinuous") == "CatchContinuous"
    assert resolve_game("gym:Pendulum-v1") == "gym:Pendulum-v1"
    for game in ("CatchContinuous", "gym:Pendulum-v1"):
        assert has_continuous_actions(game) and not is_atari(game)
    assert is_gym("gym:Pendulum-v1") and not is_dmc("gym:Pendulum-v1")
    assert not has_continuous_actions("Catch") and not has_continuous_actions("Breakout")
    with pytest.raises(ConfigError) as caught:
        build_config(["game=gym:Pendulum-v9"])
    assert "Did you mean: gym:Pendulum-v1" in one_line(caught)


@pytest.mark.skipif(not HAS_DMC, reason="dm_control (the dmc extra) is not installed")
def test_dmc_tasks_in_the_configuration() -> None:
    cfg = build_config(["game=dmc:Cartpole_Swingup", "preset=dmc"])
    assert cfg.game == "dmc:cartpole-swingup" and is_dmc(cfg.game) and has_continuous_actions(cfg.game)
    assert cfg.env.action_repeat == 2 and cfg.env.size == 64
    with pytest.raises(ConfigError) as caught:
        build_config(["game=dmc:cartpole-swingupp"])
    assert "Did you mean: dmc:cartpole-swingup" in one_line(caught)


CONTINUOUS_KEYS = (
    "env.action_repeat",
    "actor_critic.continuous.min_std",
    "actor_critic.continuous.max_std",
    "actor_critic.continuous.std_offset",
)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("env.action_repeat=0", "env.action_repeat"),
        ("actor_critic.continuous.min_std=0", "actor_critic.continuous.min_std"),
        ("actor_critic.continuous.max_std=0.05", "actor_critic.continuous.max_std"),
        ("actor_critic.continuous.std_offset=inf", "actor_critic.continuous.std_offset"),
    ],
)
def test_bad_continuous_settings_name_their_key(override: str, key: str) -> None:
    """Each bad value is refused by a message that names its key, and no other of these keys."""
    with pytest.raises(ConfigError) as caught:
        build_config(["game=CatchContinuous", override])
    message = one_line(caught)
    assert [k for k in CONTINUOUS_KEYS if k in message] == [key]


def test_continuous_presets_hold_their_settings() -> None:
    cfg = build_config(["game=CatchContinuous", "preset=catch_continuous"])
    catch = build_config(["game=Catch", "preset=catch"])
    assert cfg.env.size == catch.env.size == 32  # Catch's learning-test settings
    assert cfg.reward_model.reward_kind == "sign" and cfg.actor_critic.return_normalization == "none"
    assert cfg.collection.total_env_steps == catch.collection.total_env_steps
    dmc = build_config(["game=dmc:cartpole-swingup", "preset=dmc"])
    assert dmc.reward_model.reward_kind == "value" and dmc.actor_critic.return_normalization == "percentile"
    assert dmc.env.action_repeat == 2 and dmc.env.size == 64
    assert dmc.collection.initial_min_steps == dmc.collection.initial_max_steps == 5_000  # 10 episodes
    assert dmc.collection.total_env_steps == 50_000 and dmc.collection.num_final_episodes == 10
