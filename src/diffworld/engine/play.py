"""Interactive play of an engine: you hold keys and move the mouse, the engine imagines the next frame.

As ``agent/play.py``, the game logic (:class:`EnginePlaySession`, fed with ``PlayCommand`` values and an
:class:`~diffworld.viz.action_keymap.InputState` per step) is separate from pygame (:class:`EnginePlayApp`),
so that tests drive it headless; the rules both products' sessions share (pause, step, horizon, recording,
help, quit) and the pygame loop are ``viz/play_core.py``'s. A trajectory starts from the first frames of a
test episode of the engine's dataset (``Enter`` moves to the next one) and restarts there when it reaches
the horizon. Control is yours or the dataset's: the episode's own actions replayed (``F2``), to watch what
the engine makes of them. The frame shown is the upsampler's (full resolution), or the denoiser's without
one. Denoising steps change the samplers at once (``-`` / ``=``). Recording (``F5``) writes each imagined
trajectory as an episode of an engine dataset (the frames shown and the actions taken, the last step's
action the neutral one).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffworld.data.actions import ActionSpec
from diffworld.data.folder_store import EngineDataset, EngineDatasetWriter
from diffworld.data.frames import frames_to_tensor, tensor_to_frames
from diffworld.engine.imagine import EngineSamplers, OpenLoopRollout
from diffworld.engine.open_engine import (
    SamplerSettings,
    engine_samplers,
    open_engine,
    open_start_dataset,
    sampler_configs,
)
from diffworld.errors import UserError
from diffworld.viz.action_keymap import MOUSE_BUTTONS, InputState, KeyMap, check_inputs, keymap_for
from diffworld.viz.display import Window, import_pygame
from diffworld.viz.play_core import (
    ControlKey,
    PlayAppCore,
    PlayCommand,
    PlaySessionCore,
    TrajectoryRecorder,
    controls_text,
    default_record_dir,
    play_until_quit,
)
from diffworld.world_model_folder import PlayOptions

NO_INPUT = InputState()
MAX_DENOISING_STEPS = 100
SCALE = 2
"""Screen pixels per frame pixel (``--scale``'s default for an engine)."""


CONTROL_KEYS: tuple[ControlKey, ...] = (
    ("f2", PlayCommand.TOGGLE_CONTROLLER, "switch control: you / the dataset's actions"),
    ("[", PlayCommand.HORIZON_DOWN, "halve the horizon (steps before restarting from the dataset)"),
    ("]", PlayCommand.HORIZON_UP, "double the horizon"),
    ("-", PlayCommand.STEPS_DOWN, "one denoising step less"),
    ("=", PlayCommand.STEPS_UP, "one denoising step more"),
    ("f3", PlayCommand.PAUSE, "pause / resume"),
    ("f4", PlayCommand.STEP, "one step (pauses first)"),
    ("return", PlayCommand.RESET, "restart from the next test episode's start"),
    ("f5", PlayCommand.RECORD, "start / stop recording"),
    ("f1", PlayCommand.HELP, "print the keys again"),
    ("escape", PlayCommand.QUIT, "quit"),
)
"""The control keys, by pygame name: a key map may not use them."""
CONTROL_INPUTS = frozenset(key for key, _, _ in CONTROL_KEYS)


class EngineRecorder(TrajectoryRecorder[np.ndarray]):
    """Imagined trajectories written to ``directory`` as an engine dataset, one episode each.

    The dataset's writer opens with the first episode; ``close`` finishes it (no test split), after which
    ``diffworld engine info`` and training read it.
    """

    def __init__(
        self, directory: Path, spec: ActionSpec, neutral: np.ndarray, source: dict[str, Any]
    ) -> None:
        super().__init__(directory)
        self.spec = spec
        self.neutral = neutral
        self.source = source
        self._writer: EngineDatasetWriter | None = None

    def finish(self) -> str | None:
        """Write the running trajectory if it has a step; returns its episode's name."""
        return self._written(self._write)

    def _write(self) -> str:
        frames = np.stack(self.frames)
        if self._writer is None:
            self._writer = EngineDatasetWriter(
                self.directory, self.spec, (frames.shape[1], frames.shape[2]), self.source
            )
        return self._writer.add_episode(frames, np.stack([*self.steps, self.neutral]))

    def close(self) -> Path | None:
        """Write the running trajectory and finish the dataset; its folder (None: nothing recorded)."""
        self.finish()
        if self._writer is None:
            return None
        folder = self._writer.finish(test_fraction=0.0)
        self._writer = None
        return folder


class EnginePlaySession(PlaySessionCore[InputState]):
    """The state of play and its rules, without any display (see the module docstring).

    ``make_samplers(steps)`` gives the engine's samplers with ``steps`` denoising steps (of the next-frame
    model; the upsampler keeps its own); ``starts`` are the dataset episodes trajectories start from.
    """

    controller_names = ("dataset actions", "you")
    controller_message = "Control: {}"
    horizon_message = "Horizon: {}"
    recording_off_message = "Recording off: {num_saved} trajectories for {directory}"
    cut_message = "Recorded episode {}"
    recordings_message = "Recordings go to {}"
    recorder: EngineRecorder

    def __init__(
        self,
        make_samplers: Callable[[int], EngineSamplers],
        dataset: EngineDataset,
        starts: list[int],
        keymap: KeyMap,
        *,
        recorder: EngineRecorder,
        denoising_steps: int = 1,
        horizon: int = 1000,
        human: bool = True,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        if not starts:
            raise UserError(f"{dataset.folder} has no episode to start from")
        super().__init__(recorder=recorder, horizon=horizon, human=human, log=log)
        self._make_samplers = make_samplers
        self.denoising_steps = denoising_steps
        self.engine = make_samplers(denoising_steps)
        self.dataset = dataset
        self.starts = starts
        self.keymap = keymap
        self.device = torch.device(device)
        self.generator = generator
        self.last_action = keymap.neutral()
        self._start_index = -1
        self.episode = starts[0]
        self.t = 0
        self._replay: np.ndarray = np.zeros((0, keymap.spec.width), np.float32)
        self._imagination: OpenLoopRollout | None = None
        self._restart()

    def help(self) -> str:
        return help_text(self.keymap)

    def _status(self) -> str:
        """Episode, step, controller."""
        return f"from {self.dataset.episode_names[self.episode]} | step {self.t} | {self.controller}"

    def _flags(self) -> list[str]:
        return [f"horizon {self.horizon}", f"{self.denoising_steps} denoising step(s)"]

    # ---------------------------------------------------------------------------------------- commands

    def _handle(self, command: PlayCommand) -> None:
        if command in (PlayCommand.STEPS_DOWN, PlayCommand.STEPS_UP):
            change = 1 if command is PlayCommand.STEPS_UP else -1
            steps = min(MAX_DENOISING_STEPS, max(1, self.denoising_steps + change))
            if steps != self.denoising_steps:
                self.denoising_steps = steps
                self.engine = self._make_samplers(steps)
                if self._imagination is not None:
                    self._imagination.engine = self.engine
            self.log(f"Denoising steps: {self.denoising_steps}")

    def _reset(self) -> None:
        self._restart()

    def _release(self) -> None:
        """Finish the recorded dataset."""
        folder = self.recorder.close()
        if folder is not None:
            self.log(f"Recorded {self.recorder.num_saved} trajectories: the engine dataset {folder}")

    def update(self, state: InputState = NO_INPUT) -> bool:
        """Advance one step unless paused (a STEP command steps once while paused); returns if it did."""
        return super().update(state)

    # ----------------------------------------------------------------------------------------- internals

    def _advance(self, state: InputState) -> None:
        action = self.keymap.action(state) if self.human else self._replay[self.t]
        assert self._imagination is not None
        low, full = self._imagination.step(torch.tensor(action, device=self.device)[None])
        self.frame = tensor_to_frames((low if full is None else full)[0])
        self.last_action = action
        self.t += 1
        self.num_steps_taken += 1
        self.recorder.add_step(action, self.frame)
        if self.t >= self.horizon or (not self.human and self.t >= len(self._replay)):
            self.log(f"Restart after {self.t} steps")
            self._cut_recording()
            self._restart(next_start=False)

    def _restart(self, next_start: bool = True) -> None:
        """Start a trajectory from the first frames of a start episode (the next one, or the same)."""
        if next_start:
            self._start_index = (self._start_index + 1) % len(self.starts)
        self.episode = self.starts[self._start_index]
        engine = self.engine
        context = engine.context_length
        frames = self.dataset.frames(self.episode)
        actions = np.asarray(self.dataset.actions(self.episode), dtype=np.float32)
        full = frames_to_tensor(frames[:context], self.device)[None]
        low = engine.low_res_of(full)
        past = torch.tensor(actions[context - engine.num_cond : context - 1], device=self.device)[None]
        self._imagination = OpenLoopRollout(
            engine,
            low[:, context - engine.num_cond :],
            past,
            full[:, context - engine.num_cond_full :] if engine.upsampler is not None else None,
            self.generator,
        )
        # The dataset's actions from the last context frame on, for replay.
        self._replay = actions[context - 1 :]
        self.t = 0
        self.frame = (
            np.asarray(frames[context - 1]) if engine.upsampler is not None else tensor_to_frames(low[0, -1])
        )
        self.recorder.begin(self.frame)


def help_text(keymap: KeyMap) -> str:
    return f"{controls_text(CONTROL_KEYS)}\nGame ({keymap.name} key map):\n{keymap.describe()}"


def check_start_episodes(dataset: EngineDataset, ids: list[int], context: int) -> list[int]:
    """The episodes of ``ids`` long enough to start from (``context`` frames and one more)."""
    usable = [i for i in ids if int(dataset.lengths[i]) > context]
    if not usable:
        raise UserError(
            f"{dataset.folder}: no episode has the {context + 1} frames a trajectory needs to start from"
        )
    return usable


class EnginePlayApp(PlayAppCore[InputState]):
    """The pygame front end of an :class:`EnginePlaySession`: key and mouse events in, frames out.

    Keys are read by their pygame names; a key pressed and released within one frame still counts for that
    frame's step. The held inputs keep the order they were pressed in, which decides the input that counts
    of a forbidden combination (``KeyMap.allowed``). Where the key map reads the mouse, the window grabs and
    hides it (Esc quits).
    """

    session: EnginePlaySession

    def __init__(self, session: EnginePlaySession, *, scale: int = SCALE, fps: float = 15.0) -> None:
        h, w = session.frame.shape[:2]
        window = Window(f"diffworld play: {session.keymap.name}", (h, w), scale, header_lines=2)
        super().__init__(session, window, fps)
        check_inputs(session.keymap, CONTROL_INPUTS)
        self.held: dict[str, None] = {}
        """The held inputs, in the order they were pressed (a dict keeps its insertion order)."""
        self._controls = {key: command for key, command, _ in CONTROL_KEYS}

    def open(self) -> None:
        super().open()
        self._check_key_names()
        if self.session.keymap.uses_mouse:
            self.pg.mouse.set_visible(False)
            self.pg.event.set_grab(True)

    def _check_key_names(self) -> None:
        unknown = []
        for name in sorted(self.session.keymap.inputs - set(MOUSE_BUTTONS)):
            try:
                self.pg.key.key_code(name)
            except ValueError:
                unknown.append(name)
        if unknown:
            self.window.close()
            check_inputs(self.session.keymap, CONTROL_INPUTS, self.session.keymap.inputs - set(unknown))

    def read_events(self) -> InputState:
        pg = self.pg
        pressed: dict[str, None] = {}  # pressed during this frame, in order, released or not
        dx = dy = 0.0
        buttons = {1: MOUSE_BUTTONS[0], 3: MOUSE_BUTTONS[1], 2: MOUSE_BUTTONS[2]}
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.session.handle(PlayCommand.QUIT)
            elif event.type == pg.KEYDOWN:
                name = pg.key.name(event.key)
                if name in self._controls:
                    self.session.handle(self._controls[name])
                else:
                    self.held.setdefault(name)
                    pressed.setdefault(name)
            elif event.type == pg.KEYUP:
                self.held.pop(pg.key.name(event.key), None)
            elif event.type == pg.MOUSEBUTTONDOWN and event.button in buttons:
                self.held.setdefault(buttons[event.button])
                pressed.setdefault(buttons[event.button])
            elif event.type == pg.MOUSEBUTTONUP and event.button in buttons:
                self.held.pop(buttons[event.button], None)
            elif event.type == pg.MOUSEMOTION:
                dx += event.rel[0]
                dy += event.rel[1]
        # Held since earlier frames first, then this frame's presses (held or already released), in order.
        order = (*(name for name in self.held if name not in pressed), *pressed)
        return InputState(frozenset(order), (dx, dy), order)


def _action_meanings(dataset: EngineDataset) -> list[str] | None:
    """The dataset's action names where its converter recorded them (an Atari game's)."""
    source = dataset.source
    meanings = source.get("action_meanings") if isinstance(source, dict) else None
    if isinstance(meanings, list) and all(isinstance(m, str) for m in meanings):
        return meanings
    return None


def build_engine_session(
    folder: Path, options: PlayOptions, log: Callable[[str], None] = print
) -> EnginePlaySession:
    """A play session of the engine in ``folder``, starting from the test episodes of its dataset (or of
    ``options.data``; all its episodes where it has no test split)."""
    sampler_settings = SamplerSettings.named(options.sampler_settings)
    engine = open_engine(folder, options.device)
    dataset = open_start_dataset(engine, folder, options.data)
    keymap = keymap_for(engine.spec, options.keymap, _action_meanings(dataset))
    check_inputs(keymap, CONTROL_INPUTS)
    steps = options.denoising_steps or sampler_configs(engine.cfg, sampler_settings)[0].num_steps
    context = engine_samplers(engine).context_length
    ids = [int(i) for i in dataset.test_ids] or list(range(dataset.num_episodes))
    torch_device = next(engine.denoiser.parameters()).device
    source = {"engine": str(folder), "recorded_by": "diffworld play", "keymap": keymap.name}
    return EnginePlaySession(
        lambda n: engine_samplers(engine, n, sampler_settings),
        dataset,
        check_start_episodes(dataset, ids, context),
        keymap,
        recorder=EngineRecorder(
            options.record_dir or default_record_dir("engine"), engine.spec, keymap.neutral(), source
        ),
        denoising_steps=steps,
        horizon=options.horizon,
        device=torch_device,
        generator=torch.Generator(torch_device).manual_seed(options.seed),
        log=log,
    )


def run_engine_play(folder: Path, options: PlayOptions) -> EnginePlaySession:
    """``diffworld play <engine folder>``: load the engine, print the keys, play until quit."""
    import_pygame()  # fail before loading anything where the viz extra is missing
    session = build_engine_session(folder, options)
    app = partial(EnginePlayApp, scale=options.scale or SCALE, fps=options.fps)
    return play_until_quit(session, app, options.max_frames)
