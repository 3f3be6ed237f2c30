"""viz/action_keymap.py and engine/play.py, headless: inputs -> action vectors, the play session's rules
with a fake engine whose frames show the action taken, recording, and key map files' one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from torch import Tensor

from diffworld.cli import main
from diffworld.data.actions import ActionSpec, bins, continuous, discrete, keys
from diffworld.data.folder_store import EngineDataset, EngineDatasetWriter
from diffworld.engine.imagine import EngineSamplers
from diffworld.engine.play import CONTROL_INPUTS, EnginePlaySession, EngineRecorder
from diffworld.viz.action_keymap import (
    InputState,
    KeyMapError,
    check_inputs,
    default_keymap,
    keymap_from_json,
    keymap_to_json,
    load_keymap,
)
from diffworld.viz.play_core import PlayCommand
from test_engine_quality import bar_dataset, engine_folder

MOUSE_X = [
    -1000,
    -500,
    -300,
    -200,
    -100,
    -60,
    -30,
    -20,
    -10,
    -4,
    -2,
    0,
    2,
    4,
    10,
    20,
    30,
    60,
    100,
    200,
    300,
    500,
    1000,
]
MOUSE_Y = [-200, -100, -50, -20, -10, -4, -2, 0, 2, 4, 10, 20, 50, 100, 200]
CSGO_LIKE = ActionSpec.of(
    keys(["w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r"]),
    keys(["l_click", "r_click"], name="clicks"),
    bins("mouse_x", MOUSE_X),
    bins("mouse_y", MOUSE_Y),
)
SPEC = ActionSpec.of(discrete("action", 3))
SIZE = (8, 10)


def held(*names: str, mouse: tuple[float, float] = (0.0, 0.0)) -> InputState:
    return InputState(frozenset(names), mouse)


# ---------------------------------------------------------------------------------------------- key maps


def test_csgo_like_default_keymap_follows_the_official_game() -> None:
    keymap = default_keymap(CSGO_LIKE)
    neutral = keymap.neutral()
    assert neutral[:13].sum() == 0
    assert MOUSE_X[int(neutral[13])] == 0 and MOUSE_Y[int(neutral[14])] == 0
    action = keymap.action(held("w", "left ctrl", "mouse left", mouse=(3.0, -0.6)))
    assert action[[0, 5, 11]].tolist() == [1, 1, 1] and action[:13].sum() == 3
    assert MOUSE_X[int(action[13])] == 30  # 3 pixels x 10, the nearest bin
    assert MOUSE_Y[int(action[14])] == -4  # -6 -> the nearest bin
    arrows = keymap.action(held("left", "down", mouse=(500.0, 0.0)))
    assert (MOUSE_X[int(arrows[13])], MOUSE_Y[int(arrows[14])]) == (-60, 50)  # the arrows win over the mouse
    assert MOUSE_X[int(keymap.action(held(mouse=(1e6, 0.0)))[13])] == 1000  # clipped
    CSGO_LIKE.validate(np.stack([neutral, action, arrows]))
    assert keymap.uses_mouse


def csgo_vector(keys_down: set[str], mouse_x: float = 0, mouse_y: float = 0) -> list[float]:
    """The CS:GO-like action of keys (the dataset's key names) and mouse amounts, written out by hand."""
    names = ["w", "a", "s", "d", "space", "ctrl", "shift", "1", "2", "3", "r"]
    return [float(k in keys_down) for k in names] + [0, 0, MOUSE_X.index(mouse_x), MOUSE_Y.index(mouse_y)]


def test_csgo_forbidden_combinations_keep_the_first_pressed() -> None:
    """The official game (csgo branch) drops, of forward+back, left+right, two weapons or opposite arrow
    turns held together, the key pressed later; the expected actions below apply that rule by hand."""
    keymap = default_keymap(CSGO_LIKE)
    everything = ("s", "w", "d", "a", "3", "1", "2", "right", "left", "space", "up", "down")
    state = InputState(frozenset(everything), (0.0, 0.0), everything)
    # s before w, d before a, 3 before 1 and 2, right before left, up before down: the first ones count.
    assert keymap.action(state).tolist() == csgo_vector({"s", "d", "3", "space"}, 60, -50)
    assert keymap.allowed(state).held == {"s", "d", "3", "right", "space", "up"}
    # Two weapons that are not forbidden with each other's survivor: 1 first, then 3 is dropped, then 2.
    weapons = ("1", "3", "2")
    assert keymap.action(InputState(frozenset(weapons), order=weapons)).tolist() == csgo_vector({"1"})
    # Once the first is released, the other counts.
    assert keymap.action(InputState(frozenset({"w"}), order=("s", "w"))).tolist() == csgo_vector({"w"})
    # Without an order, alphabetical: a before d, s before w.
    assert keymap.action(held("w", "s", "a", "d")).tolist() == csgo_vector({"a", "s"})
    # Combinations that are not forbidden are untouched.
    assert keymap.action(held("w", "a", "left ctrl", "1")).tolist() == csgo_vector({"w", "a", "ctrl", "1"})
    assert "never together (the first pressed counts): s+w, a+d, 1+2, 1+3, 2+3, down+up, left+right" in (
        keymap.describe()
    )
    assert default_keymap(SPEC).forbidden == ()


def test_forbidden_in_a_keymap_file_and_json_round_trip(tmp_path: Path) -> None:
    builtin = default_keymap(CSGO_LIKE)
    path = tmp_path / "csgo.json"
    path.write_text(json.dumps(keymap_to_json(builtin)))
    loaded = load_keymap(path, CSGO_LIKE)
    assert loaded == builtin
    assert json.loads(path.read_text())["forbidden"][0] == ["s", "w"]
    spec = ActionSpec.of(discrete("move", 4), keys(["jump", "duck"]), continuous("steer", -1, 1))
    data = {
        "name": "racer",
        "components": {
            "move": {"combos": {"up": 1, "down": 2, "up+space": 3}},
            "keys": {"jump": "space", "duck": "mouse right"},
            "steer": {"mouse": "x", "scale": 0.1, "keys": {"left": -1, "right": 1}},
        },
        "forbidden": [["Space", "mouse right"], ["left", "right", "up"]],
    }
    racer = keymap_from_json(data, spec)
    assert racer.forbidden == (frozenset({"space", "mouse right"}), frozenset({"left", "right", "up"}))
    assert keymap_from_json(json.loads(json.dumps(keymap_to_json(racer))), spec) == racer
    order = ("mouse right", "space", "right", "up", "left")
    # space comes after mouse right: dropped; left completes left+right+up: dropped; the rest counts.
    assert racer.action(InputState(frozenset(order), (0.0, 0.0), order)).tolist() == [1, 0, 1, 1]
    for state in (held("space"), held("up", "space", mouse=(3, 0)), held("left", "down")):
        assert (
            racer.action(state).tolist()
            == keymap_from_json({**data, "forbidden": []}, spec).action(state).tolist()
        )


@pytest.mark.parametrize(
    ("forbidden", "message"),
    [
        ([["w", "ctrl"]], "forbidden[0] names 'ctrl', which no binding reads"),
        ([["w", "s"], ["w"]], "forbidden[1] must name two or more different inputs"),
        ([["w", "W"]], "forbidden[0] must name two or more different inputs"),
        (["w+s"], 'forbidden[0] must be a list of inputs, e.g. ["w", "s"]'),
        ({"w": "s"}, "forbidden must be a list of input lists"),
    ],
)
def test_bad_forbidden_combinations(forbidden: object, message: str) -> None:
    data = keymap_to_json(default_keymap(CSGO_LIKE)) | {"forbidden": forbidden}
    with pytest.raises(KeyMapError) as info:
        keymap_from_json(data, CSGO_LIKE, "keys.json")
    assert str(info.value).startswith("keys.json: ") and message in str(info.value)
    assert "\n" not in str(info.value)
    if "no binding reads" in message:
        assert "'left ctrl'" in str(info.value)  # the fix: the input to name instead


def test_discrete_default_keymap() -> None:
    keymap = default_keymap(ActionSpec.of(discrete("action", 3), continuous("stick", -1, 1)))
    assert keymap.action(held()).tolist() == [0, 0]
    assert keymap.action(held("1")).tolist() == [1, 0]
    assert keymap.action(held("2", "z")).tolist() == [2, 0]
    ale = default_keymap(SPEC, ["NOOP", "FIRE", "UPFIRE"])
    assert ale.action(held("up", "space")).tolist() == [2]
    assert ale.action(held("space")).tolist() == [1]


def test_keymap_file(tmp_path: Path) -> None:
    spec = ActionSpec.of(discrete("move", 4), keys(["jump", "duck"]), continuous("steer", -1, 1))
    path = tmp_path / "map.json"
    path.write_text(
        json.dumps(
            {
                "name": "racer",
                "components": {
                    "move": {"combos": {"up": 1, "down": 2, "up+space": 3}},
                    "keys": {"jump": "space"},
                    "steer": {"mouse": "x", "scale": 0.1, "keys": {"left": -1, "right": 1}},
                },
            }
        )
    )
    keymap = load_keymap(path, spec)
    assert keymap.name == "racer"
    assert keymap.action(held("up", "space", mouse=(4, 0))).tolist() == pytest.approx([3, 1, 0, 0.4])
    assert keymap.action(held("right", mouse=(-4, 0))).tolist() == [0, 0, 0, 1]
    assert keymap.action(held("up", "x")).tolist() == [1, 0, 0, 0]  # the largest combination held


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"components": {"fly": {}}}', "has no component(s) ['fly']"),
        ('{"components": {"action": {"combos": {"up": 3}}}}', "must be an integer 0..2"),
        ('{"components": {"action": {"combo": {}}}}', "unknown field(s) ['combo']"),
        ('{"components": {"action": {"combos": {"": 1}}}}', "an input must be a key"),
        ('["action"]', "expected an object"),
        ('{"components": {}, "forbiden": []}', "unknown field(s) ['forbiden']"),
    ],
)
def test_bad_keymap_files_get_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(KeyMapError, match=".*") as info:
        load_keymap(path, SPEC)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(KeyMapError, match="No key map file"):
        load_keymap(tmp_path / "missing.json", SPEC)


def test_axis_and_keys_bindings_are_checked() -> None:
    with pytest.raises(KeyMapError, match="has no key"):
        keymap_from_json({"components": {"clicks": {"middle": "mouse middle"}}}, CSGO_LIKE)
    with pytest.raises(KeyMapError, match='mouse must be "x" or "y"'):
        keymap_from_json({"components": {"mouse_x": {"mouse": "z"}}}, CSGO_LIKE)
    with pytest.raises(KeyMapError, match="scale must be a finite number"):
        keymap_from_json({"components": {"mouse_x": {"scale": "fast"}}}, CSGO_LIKE)


def test_keymaps_may_not_take_the_control_keys() -> None:
    keymap = keymap_from_json({"components": {"action": {"combos": {"escape": 1}}}}, SPEC)
    with pytest.raises(KeyMapError, match="escape, which play keeps"):
        check_inputs(keymap, CONTROL_INPUTS)
    unknown = keymap_from_json({"components": {"action": {"combos": {"warp": 1}}}}, SPEC)
    with pytest.raises(KeyMapError, match="unknown key name"):
        check_inputs(unknown, CONTROL_INPUTS, known={"a", "b"})


# ------------------------------------------------------------------------------------------------ session


def level(value: Tensor) -> Tensor:
    return value / 127.5 - 1


class ShowAction:
    """Each frame uniform at level 40 + 30 a (the last action) + 10 (denoising steps)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def predict_next(self, prev_obs: Tensor, prev_act: Tensor, generator=None, callback=None) -> Tensor:
        value = level(40 + 30 * prev_act[:, -1, 0] + 10 * self.steps)
        return value[:, None, None, None].expand(-1, *prev_obs.shape[2:]).clone()


def make_dataset(folder: Path) -> EngineDataset:
    writer = EngineDatasetWriter(folder, SPEC, SIZE, source="test")
    for n, a in ((12, 1), (9, 2)):
        writer.add_episode(np.full((n, *SIZE, 3), 5 * n, np.uint8), np.full((n, 1), a, np.float32))
    writer.finish(test_names=["000000", "000001"])
    return EngineDataset(folder)


def make_session(tmp_path: Path, **kwargs) -> tuple[EnginePlaySession, list[int], list[str]]:
    dataset = make_dataset(tmp_path / "data")
    keymap = default_keymap(SPEC)
    built: list[int] = []
    logs: list[str] = []

    def make_samplers(steps: int) -> EngineSamplers:
        built.append(steps)
        return EngineSamplers(ShowAction(steps), 2, SIZE)

    recorder = EngineRecorder(tmp_path / "rec", SPEC, keymap.neutral(), {"engine": "fake"})
    session = EnginePlaySession(
        make_samplers, dataset, [0, 1], keymap, recorder=recorder, log=logs.append, **kwargs
    )
    return session, built, logs


def test_session_plays_the_held_keys(tmp_path: Path) -> None:
    session, built, _ = make_session(tmp_path)
    assert built == [1] and session.frame.shape == (*SIZE, 3)
    assert (session.frame == 60).all()  # the last context frame of episode 0 (12 frames at 5 * 12)
    assert session.update(held("2"))
    assert (session.frame == 40 + 60 + 10).all() and session.t == 1
    session.handle(PlayCommand.STEPS_UP)
    assert built == [1, 2] and session.denoising_steps == 2
    session.update(held())
    assert (session.frame == 40 + 20).all()
    session.handle(PlayCommand.PAUSE)
    assert not session.update(held("1"))
    session.handle(PlayCommand.STEP)
    assert session.update(held("1")) and not session.update(held("1"))
    assert (session.frame == 40 + 30 + 20).all()
    assert "2 denoising step(s)" in session.header(12.5)[1] and "12.5 fps" in session.header(12.5)[0]


def test_session_restarts_at_the_horizon_and_on_reset(tmp_path: Path) -> None:
    session, _, logs = make_session(tmp_path, horizon=2)
    session.update(held())
    session.update(held())
    assert session.t == 0 and session.episode == 0 and "Restart after 2 steps" in logs
    session.handle(PlayCommand.RESET)
    assert session.episode == 1 and (session.frame == 45).all()
    session.handle(PlayCommand.HORIZON_UP)
    assert session.horizon == 4
    session.handle(PlayCommand.RESET)
    assert session.episode == 0


def test_replay_uses_the_dataset_actions(tmp_path: Path) -> None:
    session, _, _ = make_session(tmp_path, human=False)
    session.handle(PlayCommand.RESET)  # episode 1, whose actions are all 2
    session.update(held("1"))
    assert (session.frame == 40 + 60 + 10).all()
    steps = 1
    while session.t > 0:
        session.update(held())
        steps += 1
    assert steps == 8 and session.episode == 1  # 9 frames, 2 of context: 8 actions from the last context on


def test_recording_writes_an_engine_dataset(tmp_path: Path) -> None:
    session, _, _ = make_session(tmp_path)
    session.handle(PlayCommand.RECORD)
    session.update(held("1"))
    session.update(held("2"))
    session.handle(PlayCommand.RESET)  # cuts the recorded trajectory
    session.update(held("1"))
    session.handle(PlayCommand.QUIT)
    assert not session.running
    recorded = EngineDataset(tmp_path / "rec")
    assert recorded.num_episodes == 2 and recorded.spec == SPEC
    first = np.asarray(recorded.frames(0))
    assert [int(f[0, 0, 0]) for f in first] == [60, 80, 110]
    assert np.asarray(recorded.actions(0))[:, 0].tolist() == [1, 2, 0]  # the last: the neutral action
    assert np.asarray(recorded.actions(1))[:, 0].tolist() == [1, 0]


def test_a_session_needs_a_long_enough_start(tmp_path: Path) -> None:
    from diffworld.engine.play import check_start_episodes
    from diffworld.errors import UserError

    dataset = make_dataset(tmp_path / "data")
    assert check_start_episodes(dataset, [0, 1], 10) == [0]
    with pytest.raises(UserError, match="no episode has the 13 frames"):
        check_start_episodes(dataset, [0, 1], 12)


# ------------------------------------------------------------------------------------ diffworld play, pygame


def test_cli_plays_an_engine_headless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    engine = engine_folder(tmp_path / "engine", bar_dataset(tmp_path / "bars"))
    argv = ["play", str(engine), "--max-frames", "3", "--fps", "0", "--device", "cpu"]
    assert main([*argv, "--record-dir", str(tmp_path / "rec")]) == 0
    out = capsys.readouterr().out
    assert "Controls:" in out and "right -> 1, left -> 2" in out  # the dataset's ALE action names
    keymap = tmp_path / "keys.json"
    keymap.write_text('{"components": {"action": {"combos": {"return": 1}}}}')
    assert main([*argv, "--keymap", str(keymap)]) == 2
    err = capsys.readouterr().err
    assert "return, which play keeps for its controls" in err and err.count("\n") == 1
    assert main(["play", str(tmp_path / "bars"), "--keymap", str(keymap)]) == 2


def test_app_turns_events_into_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pg = pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    from diffworld.engine.play import EnginePlayApp

    session, _, _ = make_session(tmp_path)
    app = EnginePlayApp(session, scale=2, fps=0)
    app.open()
    try:
        pg.event.post(pg.event.Event(pg.KEYDOWN, key=pg.K_2))
        app.frame()
        assert (session.frame == 40 + 60 + 10).all() and list(app.held) == ["2"]
        pg.event.post(pg.event.Event(pg.KEYUP, key=pg.K_2))
        pg.event.post(pg.event.Event(pg.KEYDOWN, key=pg.K_RIGHTBRACKET))
        app.frame()
        assert session.horizon == 2000 and (session.frame == 40 + 10).all()
    finally:
        app.close()
    assert not session.running
