"""The tools on a continuous-control agent (issue 29, points 4 and 5): play with keys (the shared key maps),
eval, video, wm-eval and its action fidelity (the engine's measurement, shared), the report of returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from diffworld.agent import INFO_FILE, Agent, export_agent
from diffworld.agent.action_fidelity import ContinuousProbeGame, WorldModelSamplers, probe_actions
from diffworld.agent.folder_kind import AGENT_FOLDER, AGENT_INFO_FILE
from diffworld.agent.play_keys import box_keys, default_box_keymap
from diffworld.agent.trained import TrainedAgent, load_trained_agent
from diffworld.cli import main
from diffworld.config import build_config
from diffworld.config.schema import Config
from diffworld.data import Episode, EpisodeDataset
from diffworld.data.actions import box_spec
from diffworld.data.frames import frames_to_tensor
from diffworld.errors import UserError
from diffworld.evaluation.action_fidelity import evaluate_action_fidelity
from diffworld.viz.action_keymap import InputState, KeyMapError
from diffworld.world_model_folder import PlayOptions, WmEvalOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 16
OVERRIDES = ["game=CatchContinuous", "preset=smoke", f"env.size={SIZE}", "env.num_test_envs=1"]


@pytest.fixture(scope="module")
def cfg() -> Config:
    return build_config(OVERRIDES)


@pytest.fixture(scope="module")
def agent_folder(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    agent = Agent.build(cfg, box_spec(1))
    return export_agent(agent, cfg, 1, tmp_path_factory.mktemp("agent") / "agent")


@pytest.fixture(scope="module")
def trained(agent_folder: Path) -> TrainedAgent:
    return load_trained_agent(agent_folder, "cpu")


# ----------------------------------------------------------------------------------------- action fidelity


def test_probe_actions_are_fixed_and_spread() -> None:
    a = probe_actions(1, 5, seed=0)
    assert a.shape == (5, 1) and a.dtype == np.float32 and np.abs(a).max() <= 1
    np.testing.assert_array_equal(a, probe_actions(1, 5, seed=0))
    assert not np.array_equal(a, probe_actions(1, 5, seed=1))
    gaps = np.diff(np.sort(a[:, 0]))
    assert gaps.min() > 0.3  # five points spread over [-1, 1], not clumped as random draws may be
    b = probe_actions(6, 5, seed=0)
    distances = np.linalg.norm(b[:, None] - b[None], axis=-1)[np.triu_indices(5, 1)]
    assert distances.min() > 1.0
    with pytest.raises(ValueError):
        probe_actions(2, 1, seed=0)


class Oracle:
    """Predicts the real outcome of each row's last action (the game's, from the state probed)."""

    def __init__(self, game: ContinuousProbeGame) -> None:
        self.game = game

    def predict_next(
        self, prev_obs: Tensor, prev_act: Tensor, generator: Any = None, callback: Any = None
    ) -> Tensor:
        outcomes = self.game.outcomes()
        actions = prev_act[:, -1].numpy()
        rows = [int(np.abs(self.game.actions - a).sum(1).argmin()) for a in actions]
        return frames_to_tensor(np.stack([outcomes[i] for i in rows]), prev_obs.device)


class Blind:
    """Ignores the action: predicts the last context frame."""

    def predict_next(
        self, prev_obs: Tensor, prev_act: Tensor, generator: Any = None, callback: Any = None
    ) -> Tensor:
        return prev_obs[:, -1].clone()


def test_action_fidelity_of_an_oracle_and_of_a_model_blind_to_the_action(cfg: Config) -> None:
    game = ContinuousProbeGame(cfg, 5, seed=3)
    try:
        oracle = evaluate_action_fidelity(
            WorldModelSamplers(Oracle(game), 3), game, states=6, every=2, seed=1
        )
        blind = evaluate_action_fidelity(WorldModelSamplers(Blind(), 3), game, states=6, every=2, seed=1)
    finally:
        game.close()
    assert oracle["states"] == 6 and oracle["trials"] == 30 and oracle["nondeterministic_steps"] == 0
    assert oracle["fidelity"] == 1.0 and oracle["resolution"] == "low_res" and "full_res" not in oracle
    assert 0.2 <= oracle["chance"] < 1.0  # 1 / K where all five outcomes differ (walls merge some)
    assert set(oracle["per_action"]) == set(game.action_names) and len(game.action_names) == 5
    # One prediction for every action: at each state, only the actions whose outcome is the closest to it
    # (several where actions share an outcome, as at a wall) can succeed.
    assert blind["trials"] == 30 and blind["fidelity"] <= 0.5
    assert {k: v for k, v in blind.items() if k not in ("fidelity", "low_res", "per_action")} == {
        k: v for k, v in oracle.items() if k not in ("fidelity", "low_res", "per_action")
    }  # the same play and states: the measurement is seeded


@pytest.mark.parametrize(
    ("game", "needs"),
    [("dmc:cartpole-swingup", "dm_control"), ("gym:Pendulum-v1", "pygame")],
)
def test_probe_states_are_restored_exactly(game: str, needs: str) -> None:
    """MuJoCo's state set back (DMC), the episode replayed (gym): the oracle's fidelity is 1 and every played
    step gives the frame probed for its action."""
    pytest.importorskip(needs)
    game_cfg = build_config([f"game={game}", "preset=smoke", f"env.size={SIZE}"])
    probe = ContinuousProbeGame(game_cfg, 5, seed=0)
    try:
        report = evaluate_action_fidelity(
            WorldModelSamplers(Oracle(probe), 3), probe, states=3, every=2, seed=2
        )
    finally:
        probe.close()
    assert report["states"] == 3 and report["fidelity"] == 1.0 and report["nondeterministic_steps"] == 0


def test_wm_eval_of_a_continuous_agent_reports_action_fidelity(agent_folder: Path, tmp_path: Path) -> None:
    options = WmEvalOptions(
        horizons=[1, 2],
        denoising_steps=[1],
        batch_size=8,
        seed=0,
        device="cpu",
        kinds=None,
        episodes=1,
        trajectories=None,
        data=None,
        sampler_settings=None,
    )
    lines = AGENT_FOLDER.wm_eval([agent_folder], tmp_path / "wm", options)
    report = json.loads((tmp_path / "wm" / "wm_quality.json").read_text())
    fidelity = report["runs"][0]["action_fidelity"]["1"]
    assert fidelity["env"] == "CatchContinuous" and fidelity["num_probe_actions"] == 5
    assert len(fidelity["probe_actions"]) == 5 and fidelity["states"] == 16
    assert 0.0 <= fidelity["fidelity"] <= 1.0 and fidelity["trials"] == 5 * fidelity["states"]
    assert fidelity["nondeterministic_steps"] == 0
    assert any("action fidelity" in line and "chance" in line for line in lines)
    assert report["runs"][0]["reward_detection"]["1"]["num_reward_steps"] >= 0


# ---------------------------------------------------------------------------------------- eval and video


def test_eval_and_video_of_a_continuous_agent(agent_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    assert main(["eval", str(agent_folder), "--episodes", "1", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["game"] == "CatchContinuous" and len(report["returns"]) == 1 and report["hns"] is None
    video = tmp_path / "clip.gif"
    assert main(["video", str(agent_folder), "--out", str(video), "--steps", "3", "--device", "cpu"]) == 0
    assert video.read_bytes()[:3] == b"GIF"


# ------------------------------------------------------------------------------------------------ report


def _eval_json(folder: Path, game: str, seed: int, score: float) -> None:
    folder.mkdir(parents=True)
    data = {"game": game, "seed": seed, "preset": "dmc", "mean": score, "env_steps": 50_000, "returns": []}
    (folder / "eval.json").write_text(json.dumps(data))


def test_report_of_returns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rliable", reason="the report needs the 'report' extra")
    from diffworld.evaluation.report import ReportError, build_report

    scores = {
        "dmc:cartpole-swingup": [410.0, 530.0],
        "dmc:cup-catch": [20.0, 880.0],
        "CatchContinuous": [3.0, 5.0],
    }
    for game, values in scores.items():
        for seed, score in enumerate(values):
            _eval_json(tmp_path / "runs" / f"{game.replace(':', '_')}_s{seed}", game, seed, score)
    report = build_report([tmp_path / "runs"], tmp_path / "out", reps=200)
    assert report["scores"] == "returns" and report["aggregate_games"] == [
        "dmc:cartpole-swingup",
        "dmc:cup-catch",
    ]
    assert set(report["dmc_vision_tasks"]) == {"dmc:cartpole-swingup", "dmc:cup-catch"}
    figures = report["aggregates"]["diffworld"]
    assert figures["mean"]["value"] == pytest.approx((470.0 + 450.0) / 2)
    assert figures["median"]["value"] == pytest.approx(460.0)
    assert figures["iqm"]["value"] == pytest.approx((410.0 + 530.0) / 2)  # the middle half of 4 runs
    assert figures["mean"]["ci_low"] <= figures["mean"]["value"] <= figures["mean"]["ci_high"]
    rows = {row["game"]: row for row in report["per_game"]}
    assert rows["CatchContinuous"]["mean_score"] == 4.0 and not rows["CatchContinuous"]["dmc"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Score report (returns)" in markdown and "| dmc:cup-catch | 2 | 450.0 |" in markdown
    assert "2 of the 20 DMC-vision tasks" in markdown
    assert (tmp_path / "out" / "per_game_returns.png").read_bytes()[:4] == b"\x89PNG"

    # An Atari game outside the benchmark, alone: per-game returns, no aggregates over DMC tasks.
    _eval_json(tmp_path / "tennis", "Tennis", 0, -3.0)
    assert main(["report", str(tmp_path / "tennis"), "--out", str(tmp_path / "o2")]) == 0
    other = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert other["scores"] == "returns" and other["aggregates"] == {} and other["games"] == ["Tennis"]
    capsys.readouterr()
    # Beside a benchmark game it is refused in one line: the Atari report keeps its human-normalized
    # aggregates, never silently replaced by returns.
    _eval_json(tmp_path / "pong", "Pong", 0, 5.0)
    assert (
        main(["report", str(tmp_path / "pong"), str(tmp_path / "tennis"), "--out", str(tmp_path / "o4")]) == 2
    )
    err = capsys.readouterr().err
    assert "Tennis is not an Atari 100k game" in err and "Pong" in err and "separately" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o4").exists()
    _eval_json(tmp_path / "more" / "s2", "dmc:cup-catch", 2, 500.0)
    with pytest.raises(ReportError, match="same number of runs"):
        build_report([tmp_path / "runs", tmp_path / "more"], tmp_path / "o3", reps=50)


# -------------------------------------------------------------------------------------------------- play


def test_box_keys() -> None:
    keys = box_keys("dmc:walker-walk", ["right_hip", "right_knee", "right_ankle"])
    assert keys.action(set()).tolist() == [0, 0, 0]
    assert keys.action({"right"}).tolist() == [1, 0, 0]
    assert keys.action({"left", "up", "a"}).tolist() == [-1, 1, -1]
    assert keys.action({"left", "right"}).tolist() == [1, 0, 0]  # both held: the second key wins
    assert "a0 (right_hip): left -> -1, right -> 1" in keys.describe()
    wide = default_box_keymap(14)
    assert wide.action(InputState()).shape == (14,)
    assert "a13: neutral" in wide.describe()  # past the twelve pairs of keys


def test_box_keys_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"name": "half", "components": {"a0": {"keys": {"space": 0.5, "b": -0.5}}}}))
    keys = box_keys("CatchContinuous", ["PADDLE_VELOCITY"], path)
    assert keys.action({"space"}).tolist() == [0.5] and keys.action({"b"}).tolist() == [-0.5]
    for binding, match in (({"mouse": "x"}, "keyboard only"), ({"keys": {"p": 1}}, "controls")):
        path.write_text(json.dumps({"components": {"a0": binding}}))
        with pytest.raises(KeyMapError, match=match):
            box_keys("CatchContinuous", ["PADDLE_VELOCITY"], path)
    path.write_text(json.dumps({"components": {"a1": {"keys": {"x": 1}}}}))
    with pytest.raises(KeyMapError, match="no component"):
        box_keys("CatchContinuous", ["PADDLE_VELOCITY"], path)


def _context() -> EpisodeDataset:
    rng = np.random.default_rng(0)
    dataset = EpisodeDataset(frame_shape=(SIZE, SIZE, 3), action_shape=(1,))
    for _ in range(3):
        dataset.add(
            Episode(
                obs=rng.integers(0, 256, (13, SIZE, SIZE, 3), dtype=np.uint8),
                act=rng.uniform(-1, 1, (12, 1)).astype(np.float32),
                rew=np.zeros(12, np.float32),
                terminated=np.eye(12, dtype=bool)[-1],
                truncated=np.zeros(12, dtype=bool),
            )
        )
    return dataset


def test_play_a_continuous_agent_with_keys(
    trained: TrainedAgent, agent_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pygame = pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    from diffworld.agent.play import PlayApp, build_session, help_text
    from diffworld.viz.dataset_browser import DatasetBrowser
    from diffworld.viz.episodes import EpisodeFiles

    def key(code: int, down: bool = True) -> None:
        kind = pygame.KEYDOWN if down else pygame.KEYUP
        pygame.event.post(pygame.event.Event(kind, key=code, mod=0, unicode=""))

    record_dir = tmp_path / "rec"
    session = build_session(
        trained, None, horizon=4, record_dir=record_dir, context_dataset=_context(), log=print
    )
    assert "a0 (PADDLE_VELOCITY): left -> -1, right -> 1" in help_text(session.keymap)
    app = PlayApp(session, scale=2, fps=0)
    app.open()
    try:
        app.frame()
        policy_action = session.last_action
        assert isinstance(policy_action, np.ndarray) and policy_action.shape == (1,)
        assert np.abs(policy_action).max() <= 1
        key(pygame.K_m)
        key(pygame.K_m, down=False)
        key(pygame.K_r)  # record
        key(pygame.K_r, down=False)
        key(pygame.K_RIGHT)
        app.frame()
        assert session.human and session.last_action.tolist() == [1.0]  # type: ignore[union-attr]
        key(pygame.K_RIGHT, down=False)
        key(pygame.K_LEFT)
        app.frame()
        assert session.last_action.tolist() == [-1.0]  # type: ignore[union-attr]
        key(pygame.K_LEFT, down=False)
        app.frame()
        assert session.last_action.tolist() == [0.0]  # type: ignore[union-attr]
        key(pygame.K_TAB)  # the real test game takes the vectors too (the recording is cut: kept)
        key(pygame.K_TAB, down=False)
        key(pygame.K_RIGHT)
        app.frame()
        assert session.env_kind.name == "TEST" and session.last_action.tolist() == [1.0]  # type: ignore[union-attr]
        key(pygame.K_RIGHT, down=False)
        key(pygame.K_r)
        key(pygame.K_r, down=False)
        app.frame()
    finally:
        app.close()
    dataset = EpisodeDataset.load(record_dir, frame_shape=(SIZE, SIZE, 3), action_shape=(1,))
    actions = np.concatenate([dataset.get_episode(i).act for i in range(dataset.num_episodes)])
    assert actions.dtype == np.float32 and actions[:4, 0].tolist() == [1.0, -1.0, 0.0, 1.0]
    browser = DatasetBrowser(EpisodeFiles(record_dir))
    assert "action +1.00" in browser.header()[1]

    # The command line, with a key map file; a key map that does not fit fails in one line.
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"components": {"a0": {"keys": {"space": 0.5}}}}))
    argv = ["play", str(agent_folder), "--max-frames", "2", "--fps", "0", "--device", "cpu", "--human"]
    assert main([*argv, "--env", "test", "--keymap", str(path), "--record-dir", str(tmp_path / "r2")]) == 0
    path.write_text(json.dumps({"components": {"a0": {"keys": {"q": 1}}}}))
    assert main([*argv, "--keymap", str(path)]) == 2


def test_keymap_of_a_discrete_agent_is_refused_before_loading(tmp_path: Path) -> None:
    """``play <discrete agent or run folder> --keymap``: refused in one line from the folder's game alone,
    before the agent (and torch) is loaded: these folders hold nothing else."""
    assert AGENT_INFO_FILE == INFO_FILE
    agent, run = tmp_path / "agent", tmp_path / "run"
    agent.mkdir()
    run.mkdir()
    (agent / INFO_FILE).write_text(json.dumps({"game": "Catch"}))
    (run / "config.yaml").write_text("game: Breakout\n")
    for folder, game in ((agent, "Catch"), (run, "Breakout")):
        with pytest.raises(UserError, match=f"^--keymap is for continuous-control games .* {game} plays"):
            AGENT_FOLDER.play(folder, PlayOptions(keymap=tmp_path / "keys.json"))
