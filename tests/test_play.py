"""Interactive play and the dataset browser, headless (SDL's dummy video driver) with scripted key events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffworld.agent import Agent, export_agent
from diffworld.agent.trained import TrainedAgent, load_trained_agent
from diffworld.cli import main
from diffworld.config import build_config
from diffworld.data import Episode, EpisodeDataset
from diffworld.viz.keymaps import ButtonMap, buttons_of

pygame = pytest.importorskip("pygame")

from diffworld.agent.play import EnvKind, PlayApp, PlaySession, Recorder, build_session  # noqa: E402
from diffworld.viz.dataset_browser import BrowserApp, DatasetBrowser  # noqa: E402
from diffworld.viz.episodes import EpisodeFiles  # noqa: E402

BREAKOUT = ["NOOP", "FIRE", "RIGHT", "LEFT"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


@pytest.fixture(scope="module")
def agent_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = build_config(["game=Breakout", "preset=smoke"])
    folder = tmp_path_factory.mktemp("agent") / "agent"
    export_agent(Agent.build(cfg, len(BREAKOUT)), cfg, len(BREAKOUT), folder)
    return folder


@pytest.fixture(scope="module")
def trained(agent_folder: Path) -> TrainedAgent:
    return load_trained_agent(agent_folder, "cpu")


def _episode(rng: np.random.Generator, length: int) -> Episode:
    return Episode(
        obs=rng.integers(0, 256, size=(length + 1, 64, 64, 3), dtype=np.uint8),
        act=rng.integers(0, len(BREAKOUT), size=length).astype(np.int64),
        rew=rng.choice([0.0, 1.0], size=length).astype(np.float32),
        terminated=np.eye(length, dtype=bool)[-1],
        truncated=np.zeros(length, dtype=bool),
    )


def _context() -> EpisodeDataset:
    rng = np.random.default_rng(0)
    dataset = EpisodeDataset()
    for _ in range(3):
        dataset.add(_episode(rng, 12))
    return dataset


def _key(key: int, release: bool = True) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode=""))
    if release:
        pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key, mod=0))


def _release(key: int) -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key, mod=0))


@pytest.fixture
def app(trained: TrainedAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PlayApp]:
    # The untrained termination model ends imagined episodes at random: here they end at the horizon only.
    predict = trained.agent.reward_model.predict

    def never_end(*args: Any, **kwargs: Any) -> Any:
        logits_rew, logits_end, state = predict(*args, **kwargs)
        logits_end = torch.stack(
            [torch.full_like(logits_end[..., 0], 50), torch.full_like(logits_end[..., 1], -50)], -1
        )
        return logits_rew, logits_end, state

    monkeypatch.setattr(trained.agent.reward_model, "predict", never_end)
    logs: list[str] = []
    session = build_session(
        trained, None, horizon=4, record_dir=tmp_path / "rec", context_dataset=_context(), log=logs.append
    )
    session.logs = logs  # type: ignore[attr-defined]
    play = PlayApp(session, scale=2, fps=0)
    play.open()
    yield play
    play.close()


def test_keymaps_from_action_names() -> None:
    assert buttons_of("NOOP") == frozenset()
    assert buttons_of("DOWNLEFTFIRE") == {"down", "left", "fire"}
    with pytest.raises(ValueError):
        buttons_of("JUMP")
    boxing = ButtonMap.for_game(
        "Boxing",
        ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "UPFIRE", "UPRIGHTFIRE"],
    )
    assert boxing.action(set()) == 0
    assert boxing.action({"up", "right"}) == 6
    assert boxing.action({"up", "right", "fire"}) == 9
    assert boxing.action({"down", "fire"}) == 1  # no DOWNFIRE here: the largest combination held
    breakout = ButtonMap.for_game("Breakout", BREAKOUT)
    assert breakout.action({"up", "right"}) == 2  # a stray UP is ignored
    pong = ButtonMap.for_game("Pong", ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"])
    assert pong.action({"up"}) == 2 and pong.action({"down", "fire"}) == 5  # Pong's RIGHT moves up
    assert "Space" in breakout.describe() and "Right" in breakout.describe()


def test_header_and_window(app: PlayApp) -> None:
    session = app.session
    assert app.frame()
    assert app.window.size == (128, 128 + app.window.header_height)
    assert pygame.display.get_surface().get_size() == app.window.size
    first, second = session.header(12.5)
    assert "world model" in first and "policy" in first and "step 1" in first and "12.5 fps" in first
    assert "return" in first and "horizon 4" in second


def test_every_control(app: PlayApp, tmp_path: Path) -> None:
    session: PlaySession = app.session
    logs: list[str] = session.logs  # type: ignore[attr-defined]
    app.frame()
    assert session.controller == "policy" and session.t == 1

    # m: human control; arrow keys and space choose the action, a tap within one frame counts.
    _key(pygame.K_m)
    app.frame()
    assert session.controller == "human"
    _key(pygame.K_RIGHT, release=False)
    app.frame()
    assert session.last_action == BREAKOUT.index("RIGHT")
    _release(pygame.K_RIGHT)
    app.frame()
    assert session.last_action == BREAKOUT.index("NOOP")
    _key(pygame.K_SPACE)
    app.frame()
    assert session.last_action == BREAKOUT.index("FIRE")
    _key(pygame.K_LEFT, release=False)
    app.frame()
    app.frame()
    assert session.last_action == BREAKOUT.index("LEFT")
    _release(pygame.K_LEFT)
    _key(pygame.K_m)
    app.frame()
    assert session.controller == "policy"

    # p pauses, "." steps one frame (pausing first), p resumes.
    _key(pygame.K_p)
    steps = session.num_steps_taken
    app.frame()
    app.frame()
    assert session.paused and session.num_steps_taken == steps and "PAUSED" in session.header()[1]
    _key(pygame.K_PERIOD)
    app.frame()
    app.frame()
    assert session.num_steps_taken == steps + 1 and session.paused
    _key(pygame.K_p)
    app.frame()
    assert not session.paused and session.num_steps_taken == steps + 2
    _key(pygame.K_PERIOD)  # while running: pauses, then one step
    app.frame()
    app.frame()
    assert session.paused and session.num_steps_taken == steps + 3
    _key(pygame.K_p)

    # [ and ] halve and double the horizon of the world model.
    _key(pygame.K_RIGHTBRACKET)
    app.frame()
    assert session.horizon == 8
    _key(pygame.K_LEFTBRACKET)
    _key(pygame.K_LEFTBRACKET)
    _key(pygame.K_LEFTBRACKET)
    app.frame()
    assert session.horizon == 1 and session.env.env.horizon == 1  # type: ignore[attr-defined]
    app.frame()
    assert session.t == 0  # every imagined step now reaches the horizon: the trajectory restarts
    assert any("truncated" in line or "terminated" in line for line in logs)

    # Enter resets the episode.
    _key(pygame.K_RIGHTBRACKET)
    _key(pygame.K_RIGHTBRACKET)
    _key(pygame.K_RIGHTBRACKET)
    _key(pygame.K_RIGHTBRACKET)  # horizon 16
    for _ in range(3):
        app.frame()
    _key(pygame.K_RETURN)
    app.frame()
    assert session.t == 1

    # Tab cycles world model -> real test -> real train -> world model; 1, 2, 3 choose directly.
    for key, kind in [
        (pygame.K_TAB, EnvKind.TEST),
        (pygame.K_TAB, EnvKind.TRAIN),
        (pygame.K_TAB, EnvKind.WORLD_MODEL),
        (pygame.K_3, EnvKind.TRAIN),
        (pygame.K_2, EnvKind.TEST),
        (pygame.K_1, EnvKind.WORLD_MODEL),
    ]:
        _key(key)
        app.frame()
        assert session.env_kind is kind and session.t == 1, kind
        assert session.frame.shape == (64, 64, 3) and session.frame.dtype == np.uint8
        assert kind.value in session.header()[0]

    # h prints the keys again.
    _key(pygame.K_h)
    app.frame()
    assert any("Controls:" in line and "FIRE" in line for line in logs)

    # Esc quits (q too: see test_quit_with_q).
    _key(pygame.K_ESCAPE)
    assert not app.frame()
    assert not session.running


def test_quit_with_q_and_window_close(app: PlayApp) -> None:
    _key(pygame.K_q)
    assert not app.frame()
    assert not app.session.running


def test_recording_writes_a_loadable_dataset(app: PlayApp, tmp_path: Path) -> None:
    session = app.session
    record_dir = tmp_path / "rec"
    _key(pygame.K_LEFTBRACKET)  # horizon 2: imagined episodes end every 2 steps
    app.frame()
    _key(pygame.K_r)
    for _ in range(5):
        app.frame()
    assert session.recording and "REC" in session.header()[1]
    _key(pygame.K_TAB)  # a switch cuts the running episode (kept), recording goes on in the real game
    for _ in range(3):
        app.frame()
    _key(pygame.K_r)  # stop: the running episode is written too
    app.frame()
    assert not session.recording
    for _ in range(2):
        app.frame()  # not recorded

    # Imagined episodes of 1 (recording started mid-episode), 2 and 2 steps, each ended by the horizon, then
    # 3 real steps cut by stopping the recording.
    dataset = EpisodeDataset.load(record_dir)
    assert dataset.num_episodes == session.recorder.num_saved == 4
    assert dataset.lengths.tolist() == [1, 2, 2, 3]
    episodes = [dataset.get_episode(i) for i in range(4)]
    assert [(bool(e.terminated[-1]), bool(e.truncated[-1])) for e in episodes] == [(False, True)] * 3 + [
        (False, False)
    ]
    assert episodes[3].obs.shape == (4, 64, 64, 3)
    info = json.loads((record_dir / "recording.json").read_text())
    assert info["game"] == "Breakout" and info["action_meanings"] == BREAKOUT

    # Recording again, in this session or another one, appends to the folder.
    _key(pygame.K_r)
    app.frame()
    app.frame()
    app.close()
    assert EpisodeDataset.load(record_dir).lengths.tolist() == [1, 2, 2, 3, 2]
    recorder = Recorder(record_dir, (64, 64, 3), info)
    recorder.on = True
    recorder.begin(episodes[0].obs[0])
    recorder.add_step((1, 0.0), episodes[0].obs[1])
    assert recorder.finish(terminated=True) == record_dir / "episode_000005.npz"
    assert EpisodeDataset.load(record_dir).lengths.tolist() == [1, 2, 2, 3, 2, 1]


def test_cli_play_agent_folder_without_dataset(agent_folder: Path, tmp_path: Path) -> None:
    # An agent folder has no dataset: world-model starts come from a few real steps of the policy.
    record_dir = tmp_path / "rec"
    argv = ["play", str(agent_folder), "--max-frames", "3", "--fps", "0", "--device", "cpu"]
    assert main([*argv, "--record-dir", str(record_dir), "--human", "--env", "test"]) == 0
    assert main([*argv, "--record-dir", str(record_dir)]) == 0
    assert not record_dir.exists()  # nothing recorded without r
    assert main(["play", str(tmp_path), "--dataset"]) == 2  # no episodes there


def _browse_folder(tmp_path: Path, lengths: list[int]) -> Path:
    folder = tmp_path / "episodes"
    dataset = EpisodeDataset(folder)
    rng = np.random.default_rng(1)
    for length in lengths:
        dataset.add(_episode(rng, length))
    (folder / "recording.json").write_text(json.dumps({"game": "Breakout", "action_meanings": BREAKOUT}))
    return folder


def test_dataset_browser_controls(tmp_path: Path) -> None:
    folder = _browse_folder(tmp_path, [5, 25, 3])
    browser = DatasetBrowser(EpisodeFiles(folder), BREAKOUT)
    app = BrowserApp(browser, scale=2, fps=0)
    app.open()

    def press(key: int) -> tuple[int, int]:
        _key(key)
        assert app.frame()
        return browser.index, browser.t

    assert press(pygame.K_RIGHT) == (0, 1)
    assert press(pygame.K_LEFT) == (0, 0)
    assert press(pygame.K_LEFT) == (0, 0)
    assert press(pygame.K_UP) == (0, 5)  # a jump of 10 stops at the final frame
    assert "final frame: terminated" in browser.header()[1]
    assert press(pygame.K_n) == (1, 0)
    assert press(pygame.K_UP) == (1, 10)
    assert press(pygame.K_UP) == (1, 20)
    assert press(pygame.K_DOWN) == (1, 10)
    assert press(pygame.K_RIGHT) == (1, 11)
    header = browser.header()
    assert "episode 2/3" in header[0] and "step 11/25" in header[0]
    assert BREAKOUT[int(browser.episode.act[11])] in header[1]
    assert np.array_equal(browser.frame, browser.episode.obs[11])
    assert press(pygame.K_END) == (1, 25)
    assert press(pygame.K_HOME) == (1, 0)
    assert press(pygame.K_PAGEDOWN) == (2, 0)
    assert press(pygame.K_PAGEDOWN) == (2, 0)  # no episode after the last
    assert press(pygame.K_b) == (1, 0)
    assert press(pygame.K_PAGEUP) == (0, 0)
    # Space plays on, into the next episodes.
    press(pygame.K_SPACE)
    for _ in range(8):
        app.frame()
    assert browser.playing and browser.index == 1
    press(pygame.K_SPACE)
    assert not browser.playing
    _key(pygame.K_q)
    assert not app.frame()
    app.close()


def test_cli_dataset_browser(tmp_path: Path) -> None:
    folder = _browse_folder(tmp_path, [4])
    assert main(["play", str(folder), "--dataset", "--max-frames", "2", "--fps", "0"]) == 0
    # A folder holding a train/ folder of episodes works too.
    assert main(["play", str(tmp_path), "--dataset", "--max-frames", "1", "--fps", "0"]) == 2
    (tmp_path / "run").mkdir()
    folder.rename(tmp_path / "run" / "train")
    assert main(["play", str(tmp_path / "run"), "--dataset", "--max-frames", "1", "--fps", "0"]) == 0
