"""engine/action_fidelity.py: the real game rebuilt from a recording, probed with every action from cloned
states, and the counting of an engine's successes, checked with fake engines whose answers are known (the
true outcomes, or one that ignores the action) on diffworld's Catch; then ``diffworld engine eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from torch import Tensor

from diffworld.cli import main
from diffworld.data.actions import ActionSpec, discrete
from diffworld.data.folder_store import EngineDataset
from diffworld.data.frames import frames_to_tensor
from diffworld.engine.action_fidelity import (
    SEED_OFFSET,
    GymGame,
    evaluate_action_fidelity,
    fidelity_seed,
    open_game,
)
from diffworld.engine.config import LowResFilter
from diffworld.engine.convert.from_gym import record_gym
from diffworld.engine.imagine import EngineSamplers
from diffworld.errors import UserError

SPEC = ActionSpec.of(discrete("action", 3))
SIZE = 16
"""Catch frames of 16x16 (cells of 2 pixels); the engine's low resolution is 8x8."""


@pytest.fixture(scope="module")
def catch_data(tmp_path_factory: pytest.TempPathFactory) -> EngineDataset:
    out = tmp_path_factory.mktemp("catch") / "rec"
    record_gym(out, 40, env_id="diffworld/Catch-v0", seed=2, env_kwargs={"size": SIZE}, test_fraction=0.5)
    return EngineDataset(out)


def area(frames: Tensor) -> Tensor:
    return F.interpolate(frames, size=(SIZE // 2, SIZE // 2), mode="area")


class Oracle:
    """Knows the real game: predicts the true next frame of each action (``pick`` chooses the action whose
    outcome it shows: the one given, or a fixed one to ignore the action)."""

    def __init__(self, game: GymGame, pick=lambda a: a) -> None:
        self.game = game
        self.pick = pick
        self.full: Tensor | None = None

    def predict_next(self, prev_obs: Tensor, prev_act: Tensor, generator=None, callback=None) -> Tensor:
        outcomes = self.game.outcomes()  # leaves the game where it is
        chosen = [outcomes[self.pick(int(a))] for a in prev_act[:, -1, 0].tolist()]
        self.full = frames_to_tensor(np.stack(chosen), prev_obs.device)
        return area(self.full)

    def upsample(self, low_res_next: Tensor, prev_full: Tensor, generator=None) -> Tensor:
        assert self.full is not None and prev_full.shape[-2:] == (SIZE, SIZE)
        return self.full


class Recording:
    """The game, keeping what each probe found."""

    def __init__(self, game: GymGame) -> None:
        self.game = game
        self.probes: list[list[np.ndarray]] = []
        self.name, self.spec, self.action_names = game.name, game.spec, game.action_names

    @property
    def num_actions(self) -> int:
        return self.game.num_actions

    def action_vector(self, action: int) -> np.ndarray:
        return self.game.action_vector(action)

    def reset(self, seed: int | None) -> np.ndarray:
        return self.game.reset(seed)

    def step(self, action: int) -> tuple[np.ndarray, bool]:
        return self.game.step(action)

    def outcomes(self) -> list[np.ndarray]:
        self.probes.append(self.game.outcomes())
        return self.probes[-1]


def samplers(oracle: Oracle, upsampler: bool = True) -> EngineSamplers:
    return EngineSamplers(
        oracle, 2, (SIZE // 2, SIZE // 2), oracle if upsampler else None, 1, LowResFilter.area
    )


def test_the_game_is_rebuilt_and_probed_without_changing_it(catch_data: EngineDataset) -> None:
    game = open_game(catch_data, SPEC)
    assert game.frame_size == (SIZE, SIZE) and game.action_names == ["NOOP", "RIGHT", "LEFT"]
    first = game.reset(7)
    outcomes = game.outcomes()
    assert len({o.tobytes() for o in outcomes}) >= 2
    assert all(np.array_equal(a, b) for a, b in zip(outcomes, game.outcomes(), strict=True))
    frame, _ = game.step(1)
    assert np.array_equal(frame, outcomes[1]) and not np.array_equal(frame, first)
    game.close()


def test_an_engine_that_knows_the_game_scores_one(catch_data: EngineDataset) -> None:
    game = open_game(catch_data, SPEC)
    report = evaluate_action_fidelity(samplers(Oracle(game)), game, states=12, every=2, seed=5)
    assert report["fidelity"] == 1.0 and report["resolution"] == "full_res"
    assert report["low_res"] == {"fidelity": 1.0, "successes": 36} and report["full_res"]["successes"] == 36
    assert report["states"] == 12 and report["trials"] == 36 and report["nondeterministic_steps"] == 0
    assert report["per_action"] == {
        name: {"trials": 12, "low_res": 12, "full_res": 12} for name in game.action_names
    }
    assert 1 / 3 <= report["chance"] <= 1 / 2
    json.dumps(report)
    without = evaluate_action_fidelity(
        samplers(Oracle(game), upsampler=False), game, states=4, every=3, seed=5
    )
    assert without["resolution"] == "low_res" and without["fidelity"] == 1.0 and "full_res" not in without


def test_an_engine_that_ignores_the_action_scores_the_share_of_its_outcome(catch_data: EngineDataset) -> None:
    """Always the outcome of NOOP: a success exactly for the actions whose real outcome is NOOP's, which the
    test counts from the probes itself, as it computes chance (the mean of 1 / distinct outcomes)."""
    game = Recording(open_game(catch_data, SPEC))
    report = evaluate_action_fidelity(
        samplers(Oracle(game.game, pick=lambda a: 0)), game, states=20, every=1, seed=11
    )
    kept = [p for p in game.probes if len({o.tobytes() for o in p}) > 1]
    assert len(kept) == report["states"] == 20 and report["skipped_states"] == len(game.probes) - 20 == 0
    successes = sum(np.array_equal(o, p[0]) for p in kept for o in p)
    chance = np.mean([1 / len({o.tobytes() for o in p}) for p in kept for _ in p])
    assert (
        report["trials"] == 60
        and report["full_res"]["successes"] == report["low_res"]["successes"] == successes
    )
    assert report["chance"] == pytest.approx(chance) and report["fidelity"] == pytest.approx(successes / 60)
    assert (
        report["fidelity"] < report["chance"] + 0.25
    )  # near chance, far below an engine that knows the game
    assert report["per_action"]["NOOP"]["full_res"] == 20
    assert sum(report["distinct_outcomes"].values()) == 20
    again = evaluate_action_fidelity(
        samplers(Oracle(game.game, pick=lambda a: 0)), game.game, states=20, every=1, seed=11
    )
    assert again == report  # seeded


def test_states_with_one_outcome_are_skipped() -> None:
    """A game where no action changes anything has no trial."""

    class Still:
        name, spec, action_names = "still", SPEC, ["a", "b", "c"]
        num_actions = 3

        def action_vector(self, action: int) -> np.ndarray:
            return np.array([action], np.float32)

        def reset(self, seed: int | None) -> np.ndarray:
            return np.zeros((SIZE, SIZE, 3), np.uint8)

        def step(self, action: int) -> tuple[np.ndarray, bool]:
            return self.reset(None), False

        def outcomes(self) -> list[np.ndarray]:
            return [self.reset(None)] * 3

    oracle = Oracle(None)  # type: ignore[arg-type]  # never asked: no state has two outcomes
    report = evaluate_action_fidelity(
        samplers(oracle, upsampler=False), Still(), states=3, every=2, seed=0, max_steps=40
    )
    assert report["trials"] == 0 and report["fidelity"] is None and report["chance"] is None
    assert report["skipped_states"] == 20 and report["steps"] == 40


def test_sticky_ale_outcomes_are_reproducible() -> None:
    """ALE v5 games have sticky actions: the probe restores the emulator's RNG with its state."""
    from diffworld.engine.convert.from_gym import _make_gym_env

    game = GymGame(_make_gym_env("ALE/Pong-v5", {}), "ALE/Pong-v5")
    game.reset(0)
    for action in np.random.default_rng(0).integers(0, 6, 60).tolist():
        game.step(action)
    outcomes = game.outcomes()
    assert all(np.array_equal(a, b) for a, b in zip(outcomes, game.outcomes(), strict=True))
    assert len({o.tobytes() for o in outcomes}) > 1
    assert np.array_equal(game.step(3)[0], outcomes[3])
    game.close()


def test_a_recording_by_an_agent_is_played_in_its_env(tmp_path: Path) -> None:
    from diffworld.agent import Agent, export_agent
    from diffworld.agent.policy import load_agent_policy
    from diffworld.config import build_config

    cfg = build_config(["game=Catch", "preset=smoke"])
    agent = export_agent(Agent.build(cfg, 3), cfg, 3, tmp_path / "agent")
    loader = load_agent_policy
    recording = record_gym(tmp_path / "rec", 10, policy=str(agent), test_fraction=0, policy_loader=loader)
    data = EngineDataset(recording)
    with pytest.raises(UserError, match="needs an agent policy loader"):
        open_game(data, SPEC)
    game = open_game(data, SPEC, load_agent_policy)
    assert game.frame_size == data.frame_size == (64, 64)
    game.reset(1)
    assert len({o.tobytes() for o in game.outcomes()}) >= 2
    game.close()


def test_bad_input_is_refused_in_one_line(catch_data: EngineDataset, tmp_path: Path) -> None:
    from diffworld.data.folder_store import EngineDatasetWriter

    oracle = Oracle(open_game(catch_data, SPEC))
    writer = EngineDatasetWriter(tmp_path / "csgo", SPEC, (SIZE, SIZE), source={"converter": "csgo_hdf5"})
    writer.add_episode(np.zeros((4, SIZE, SIZE, 3), np.uint8), np.zeros((4, 1), np.float32))
    writer.finish(test_fraction=0)
    with pytest.raises(UserError, match="not recorded from a Gymnasium environment"):
        open_game(EngineDataset(tmp_path / "csgo"), SPEC)
    with pytest.raises(UserError, match="the engine takes"):
        open_game(catch_data, ActionSpec.of(discrete("action", 4)))
    assert fidelity_seed(catch_data, None) == 2 + SEED_OFFSET and fidelity_seed(catch_data, 3) == 3
    with pytest.raises(UserError, match="recorded with"):
        fidelity_seed(catch_data, 2)
    with pytest.raises(UserError, match=">= 1"):
        evaluate_action_fidelity(samplers(oracle), None, states=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- diffworld engine eval


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_cli_eval_measures_action_fidelity(
    catch_data: EngineDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_engine_quality import engine_folder

    engine = engine_folder(tmp_path / "engine", catch_data.folder)
    argv = ["engine", "eval", str(engine), "--horizons", "1", "--device", "cpu"]
    assert main([*argv, "--fidelity-states", "5", "--fidelity-every", "3"]) == 0
    out = capsys.readouterr().out
    assert "Action fidelity on diffworld/Catch-v0 (held-out play, seed 1000002)" in out and "NOOP" in out
    report = json.loads((engine / "quality.json").read_text())["action_fidelity"]
    assert report["states"] == 5 and report["trials"] == 15 and report["every"] == 3
    assert report["env_kwargs"] == {"size": SIZE} and 0 <= report["fidelity"] <= 1
    assert main([*argv, "--fidelity-states", "0"]) == 0  # off
    assert "action_fidelity" not in json.loads((engine / "quality.json").read_text())
    assert "recorded with" in one_line_error(capsys, [*argv, "--fidelity-seed", "2"])


def test_cli_eval_without_a_game(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dataset that names no env: no action fidelity by default, a one-line error when asked for; one
    whose env cannot be rebuilt as recorded: skipped by default (and said), an error when asked for."""
    from test_engine_quality import bar_dataset, engine_folder

    engine = engine_folder(tmp_path / "engine", bar_dataset(tmp_path / "bars"))
    assert main(["engine", "eval", str(engine), "--horizons", "1"]) == 0
    assert "Action fidelity" not in capsys.readouterr().out
    err = one_line_error(capsys, ["engine", "eval", str(engine), "--fidelity-states", "4"])
    assert "was not recorded from a Gymnasium environment" in err

    old = tmp_path / "old"
    record_gym(old, 30, env_id="diffworld/Catch-v0", seed=2, env_kwargs={"size": SIZE}, test_fraction=0.5)
    meta = json.loads((old / "dataset.json").read_text())
    del meta["source"]["env_kwargs"]  # as recorded before they were kept
    (old / "dataset.json").write_text(json.dumps(meta))
    engine = engine_folder(tmp_path / "old_engine", old)
    assert main(["engine", "eval", str(engine), "--horizons", "1"]) == 0
    assert (
        "Action fidelity: not measured (diffworld/Catch-v0 made with no arguments gives frames of 64x64"
        in (capsys.readouterr().out)
    )
    assert "skipped" in json.loads((engine / "quality.json").read_text())["action_fidelity"]
    assert "record it again" in one_line_error(
        capsys, ["engine", "eval", str(engine), "--fidelity-states", "4"]
    )


def test_evaluate_engine_needs_the_agent_policy_loader_from_python(tmp_path: Path) -> None:
    """From Python, a dataset recorded by a diffworld agent without ``policy_loader``: a one-line error that
    names the loader to pass, never an action fidelity quietly skipped (the command line passes it)."""
    from diffworld.engine.convert.from_gym import NoPolicyLoaderError
    from diffworld.engine.quality import evaluate_engine
    from test_engine_quality import bar_dataset, engine_folder

    data = bar_dataset(tmp_path / "bars")
    meta = json.loads((data / "dataset.json").read_text())
    meta["source"] = {"converter": "gym", "env": "diffworld/Catch-v0", "policy": str(tmp_path), "seed": 2}
    (data / "dataset.json").write_text(json.dumps(meta))
    engine = engine_folder(tmp_path / "engine", data)
    with pytest.raises(NoPolicyLoaderError, match="policy_loader=diffworld.agent.policy.load_agent_policy"):
        evaluate_engine(engine, device="cpu")
    assert not (engine / "quality.json").exists()
