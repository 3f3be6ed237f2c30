"""Configuration: paper defaults, presets, key=value overrides and the errors users see."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from diffworld.config import (
    PRESETS,
    Config,
    ConfigError,
    DiffusionKind,
    all_keys,
    build_config,
    load_config_file,
    reward_model_seq_length,
    save_config,
)


def test_defaults_are_the_papers_settings() -> None:
    cfg = build_config(["game=Breakout"])
    # docs/method.md §1-2
    assert (cfg.env.frame_skip, cfg.env.noop_max, cfg.env.size) == (4, 30, 64)
    assert cfg.env.max_frames_per_episode == 108_000
    c = cfg.collection
    assert (c.total_env_steps, c.initial_min_steps, c.initial_max_steps) == (100_000, 5_000, 10_000)
    assert (c.initial_min_minority_rewards, c.steps_per_epoch, c.train_epsilon) == (10, 100, 0.01)
    assert (c.test_every_epochs, c.num_test_episodes, c.num_final_episodes) == (10, 4, 100)
    assert c.test_epsilon == 0.0
    assert cfg.training.num_final_epochs == 50 and cfg.training.save_agent_every == 5
    for name, first in (("denoiser", 10_000), ("reward_model", 10_000), ("actor_critic", 5_000)):
        t = getattr(cfg, name).training
        assert (t.steps_first_epoch, t.steps_per_epoch, t.batch_size) == (first, 400, 32)
        assert t.sample_weights == [0.1, 0.1, 0.1, 0.7]
    # docs/method.md §3
    d = cfg.denoiser
    assert d.kind is DiffusionKind.edm
    assert (d.num_cond_frames, d.cond_channels, d.channels, d.depths) == (4, 256, [64] * 4, [2] * 4)
    assert (d.sigma_data, d.sigma_offset_noise, d.training.num_autoregressive_steps) == (0.5, 0.3, 2)
    sd = d.sigma_distribution
    assert (sd.loc, sd.scale, sd.sigma_min, sd.sigma_max) == (-0.4, 1.2, 0.002, 20.0)
    s = d.sampler
    assert (s.num_steps, s.sigma_min, s.sigma_max, s.rho, s.order, s.s_churn) == (3, 0.002, 5.0, 7.0, 1, 0.0)
    assert d.ddpm_num_train_timesteps == 1000
    # docs/method.md §4-5
    r = cfg.reward_model
    assert (r.channels, r.depths, r.cond_channels, r.lstm_dim) == ([32] * 4, [2] * 4, 128, 512)
    assert reward_model_seq_length(cfg) == 18  # 19 frames: 3 burn-in pairs, then the horizon's 15
    a = cfg.actor_critic
    assert (a.channels, a.lstm_dim, a.imagination_horizon) == ([32, 32, 64, 64], 512, 15)
    assert (a.gamma, a.lambda_, a.value_loss_weight, a.entropy_weight) == (0.985, 0.95, 1.0, 0.001)
    # docs/method.md §6
    expected = {"denoiser": (1e-2, 1.0), "reward_model": (1e-2, 100.0), "actor_critic": (0.0, 100.0)}
    for name, (wd, clip) in expected.items():
        o = getattr(cfg, name).optimizer
        assert (o.lr, o.weight_decay, o.eps, o.warmup_steps, o.max_grad_norm) == (1e-4, wd, 1e-8, 100, clip)


def test_result_is_a_typed_dataclass() -> None:
    cfg = build_config(["game=pong"])
    assert isinstance(cfg, Config)
    assert cfg.game == "Pong"
    assert isinstance(cfg.denoiser.optimizer.lr, float)


def test_policy_temperature_is_the_games_override_else_the_default() -> None:
    assert build_config(["game=Freeway"]).policy_temperature() == 0.01
    assert build_config(["game=Pong"]).policy_temperature() == 1.0
    cfg = build_config(
        ["game=Pong", "actor_critic.temperature=0.5", "actor_critic.temperature_per_game={Pong: 0.2}"]
    )
    assert cfg.policy_temperature() == 0.2


def test_dotted_overrides_are_parsed_and_typed() -> None:
    cfg = build_config(
        [
            "game=Pong",
            "seed=3",
            "denoiser.optimizer.lr=3e-4",
            "denoiser.channels=[32,32,64,64]",
            "denoiser.kind=ddpm",
        ]
    )
    assert cfg.seed == 3
    assert cfg.denoiser.optimizer.lr == pytest.approx(3e-4)
    assert cfg.denoiser.channels == [32, 32, 64, 64]
    assert cfg.denoiser.kind is DiffusionKind.ddpm
    assert cfg.actor_critic.optimizer.lr == 1e-4  # untouched


def test_presets_apply_and_overrides_win() -> None:
    smoke = build_config(["game=Breakout", "preset=smoke"])
    assert smoke.preset == "smoke"
    assert smoke.collection.total_env_steps == PRESETS["smoke"]["collection.total_env_steps"]
    tuned = build_config(["game=Breakout", "preset=smoke", "collection.total_env_steps=400"])
    assert tuned.collection.total_env_steps == 400
    for name in PRESETS:
        build_config(["game=Boxing", f"preset={name}"])  # every preset is valid


def test_unknown_key_names_the_closest_valid_ones() -> None:
    with pytest.raises(ConfigError) as e:
        build_config(["game=Pong", "denoiser.optimizer.lrr=1e-3"])
    assert "denoiser.optimizer.lrr" in str(e.value)
    assert "denoiser.optimizer.lr" in str(e.value).split("Did you mean:")[1]
    with pytest.raises(ConfigError, match="collection.total_env_steps"):
        build_config(["game=Pong", "collection.total_steps=10"])


def test_badly_typed_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match="'seed'"):
        build_config(["game=Pong", "seed=abc"])
    with pytest.raises(ConfigError, match="denoiser.kind"):
        build_config(["game=Pong", "denoiser.kind=flow"])


def test_malformed_argument_and_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        build_config(["game=Pong", "seed"])
    with pytest.raises(ConfigError, match="Did you mean 'quick'"):
        build_config(["game=Pong", "preset=quik"])


def test_game_is_required_and_resolved() -> None:
    with pytest.raises(ConfigError, match="game="):
        build_config([])
    with pytest.raises(ConfigError, match="Breakout"):
        build_config(["game=Breakot"])
    assert build_config(["game=BreakoutNoFrameskip-v4"]).game == "Breakout"


def test_semantic_checks_name_the_key() -> None:
    with pytest.raises(ConfigError, match="sample_weights"):
        build_config(["game=Pong", "denoiser.training.sample_weights=[0.5,0.6]"])
    with pytest.raises(ConfigError, match="denoiser.depths"):
        build_config(["game=Pong", "denoiser.depths=[2,2]"])
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        build_config(["game=Pong", "collection.initial_min_steps=5050"])
    with pytest.raises(ConfigError, match="order"):
        build_config(["game=Pong", "denoiser.sampler.order=3"])
    with pytest.raises(ConfigError, match="denoiser.sigma_cond_distribution must be null"):
        build_config(["game=Pong", "denoiser.sigma_cond_distribution={loc: 0.5}"])
    assert build_config(["game=Pong", "training.model_free=true"]).training.model_free
    with pytest.raises(ConfigError, match="model_free"):
        build_config(["game=Pong", "training.model_free=true", "actor_critic.training.steps_per_epoch=0"])


def test_values_are_never_evaluated_as_code() -> None:
    with pytest.raises(ConfigError):
        build_config(["game=Pong", "run_dir=${eval:'__import__(\"os\").getcwd()'}"])
    cfg = build_config(["game=Pong", "run_dir=__import__('os')"])
    assert cfg.run_dir == "__import__('os')"


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = build_config(["game=MsPacman", "preset=quick", "seed=7", "denoiser.sampler.s_churn=0.5"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config_file(tmp_path / "config.yaml")
    assert again == cfg
    assert math.isinf(again.denoiser.sampler.s_tmax)


def test_saved_config_with_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("game: Pong\ndenoiser:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match="lrr"):
        load_config_file(path)


def test_all_keys_lists_leaves() -> None:
    keys = all_keys()
    assert "denoiser.sampler.num_steps" in keys and "game" in keys
    assert "denoiser" not in keys and len(keys) == len(set(keys))
