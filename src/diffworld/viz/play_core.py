"""What ``diffworld play`` is for both products (``agent/play.py``, ``engine/play.py``): the commands, the
rules of a session (pause, one step, the horizon, recording, help, quit), its two header lines, the
trajectory a recorder keeps while recording, the pygame loop that feeds a session its inputs and draws its
frame, and the start of play (``play_until_quit``).

Each product's session supplies the rest: what a step does (the policy or you in an imagined or real game;
you or a dataset's actions in an engine), where a trajectory restarts, where its recorder writes (a run
dataset's episodes or an engine dataset), its key table and its words. The game logic stays apart from
pygame, so that tests drive a session headless.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from diffworld.viz.display import FrameRate, Window, WindowApp

MAX_HORIZON = 1 << 20
"""The longest horizon ``]`` doubles to."""


class PlayCommand(enum.Enum):
    """What a control key asks of a session; each product binds the ones it has (its key table)."""

    TOGGLE_CONTROLLER = "toggle_controller"
    HORIZON_DOWN = "horizon_down"
    HORIZON_UP = "horizon_up"
    PAUSE = "pause"
    STEP = "step"
    RESET = "reset"
    RECORD = "record"
    HELP = "help"
    QUIT = "quit"
    # The agent's: which environment.
    NEXT_ENV = "next_env"
    ENV_WORLD_MODEL = "env_world_model"
    ENV_TEST = "env_test"
    ENV_TRAIN = "env_train"
    # The engine's: its denoising steps.
    STEPS_DOWN = "steps_down"
    STEPS_UP = "steps_up"


ControlKey = tuple[str, PlayCommand, str]
"""(key, command, what it does): one line of a product's key table."""


def controls_text(keys: Sequence[ControlKey]) -> str:
    """The ``Controls:`` block of a session's help: one line per key."""
    return "Controls:\n" + "\n".join(f"  {key:<8} {what}" for key, _, what in keys)


def default_record_dir(name: str) -> Path:
    """``recordings/<name>/<date>_<time>``: where a session records by default."""
    return Path("recordings") / name / time.strftime("%Y-%m-%d_%H-%M-%S")


StepT = TypeVar("StepT")
"""What a recorder keeps of a step besides the frame it reached: the action and reward (the agent), the
action vector (the engine)."""
WrittenT = TypeVar("WrittenT")


class TrajectoryRecorder(ABC, Generic[StepT]):
    """A session's recorder: the running trajectory's frames and steps while recording is ``on``, which
    the product's ``finish`` writes to ``directory`` (a run dataset's episodes, or an engine dataset)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.on = False
        self.num_saved = 0
        """Trajectories written so far."""
        self.frames: list[np.ndarray] = []
        self.steps: list[StepT] = []

    def begin(self, frame: np.ndarray) -> None:
        """A trajectory starts at ``frame`` (kept only while ``on``)."""
        self.frames = [frame.copy()] if self.on else []
        self.steps = []

    def add_step(self, step: StepT, reached: np.ndarray) -> None:
        """``step`` of the running trajectory led to the frame ``reached`` (kept only while its start was)."""
        if self.on and self.frames:
            self.steps.append(step)
            self.frames.append(reached.copy())

    @abstractmethod
    def finish(self) -> object:
        """Write the running trajectory if it has a step (``_written``); what was written (None: nothing)."""

    def _written(self, write: Callable[[], WrittenT]) -> WrittenT | None:
        """``write()``'s result where the running trajectory has a step, else None; recording goes on from a
        new trajectory."""
        written = None
        if self.steps:
            written = write()
            self.num_saved += 1
        self.frames, self.steps = [], []
        return written


InputsT = TypeVar("InputsT")
"""What the player holds at a step: game buttons (the agent), an ``InputState`` (the engine)."""


class PlaySessionCore(ABC, Generic[InputsT]):
    """The rules both products' play sessions share, without any display.

    A step happens at each ``update`` unless paused (``STEP`` pauses and steps once). ``RESET`` cuts the
    recording and restarts; ``RECORD`` starts recording from the frame shown or stops it, writing what was
    recorded; ``QUIT`` writes it too, releases what the session holds and stops. The product's texts are
    class attributes; its commands other than the shared ones go to ``_handle``. ``frame`` is what is
    shown, (H, W, 3) uint8, which the product's steps and restarts set.
    """

    controller_names: ClassVar[tuple[str, str]]
    """Who plays, in words: (the program, the human)."""
    controller_message: ClassVar[str]
    """Logged when control changes hands, ``{}`` the new controller."""
    horizon_message: ClassVar[str]
    """Logged when the horizon changes, ``{}`` the new one."""
    recording_off_message: ClassVar[str]
    """Logged when recording stops, with ``{num_saved}`` and ``{directory}``."""
    cut_message: ClassVar[str]
    """Logged when a recorded trajectory is cut short and written, ``{}`` what ``finish`` returned."""
    recordings_message: ClassVar[str]
    """Printed before play starts, ``{}`` where the recordings go."""

    def __init__(
        self,
        *,
        recorder: TrajectoryRecorder[Any],
        horizon: int,
        human: bool,
        log: Callable[[str], None] = print,
    ) -> None:
        self.recorder = recorder
        self.horizon = horizon
        self.human = human
        self.log = log
        self.paused = False
        self.running = True
        self.num_steps_taken = 0
        self._step_once = False
        self.frame = np.zeros((1, 1, 3), np.uint8)

    # ------------------------------------------------------------------------------- the product's part

    @abstractmethod
    def help(self) -> str:
        """The keys, as printed at the start and by ``HELP``."""

    @abstractmethod
    def _advance(self, inputs: InputsT) -> None:
        """One step with the player's ``inputs``."""

    @abstractmethod
    def _reset(self) -> None:
        """Restart (``RESET``), the recording already cut."""

    @abstractmethod
    def _status(self) -> str:
        """The header's first line, before the frame rate."""

    def _flags(self) -> list[str]:
        """The header's second line, before the pause and recording flags."""
        return []

    def _horizon_changed(self) -> None:
        """``self.horizon`` changed (before it is logged)."""

    def _handle(self, command: PlayCommand) -> None:
        """A command that only this product has (others are ignored)."""

    def _release(self) -> None:
        """Let go of what the session holds (environments, the recorder), once, when it stops."""

    # ------------------------------------------------------------------------------------- the rules

    @property
    def controller(self) -> str:
        """Who plays, in words (``controller_names``)."""
        return self.controller_names[self.human]

    @property
    def recording(self) -> bool:
        return self.recorder.on

    def header(self, fps: float | None = None) -> list[str]:
        """Two lines: the session's status and frames per second; its flags, paused, recording."""
        first = self._status()
        if fps is not None:
            first += f" | {fps:.1f} fps"
        flags = self._flags()
        if self.paused:
            flags.append("PAUSED")
        if self.recorder.on:
            flags.append(f"REC ({self.recorder.num_saved} saved)")
        return [first, " | ".join(flags)]

    def handle(self, command: PlayCommand) -> None:
        if command is PlayCommand.TOGGLE_CONTROLLER:
            self.human = not self.human
            self.log(self.controller_message.format(self.controller))
        elif command in (PlayCommand.HORIZON_DOWN, PlayCommand.HORIZON_UP):
            factor = 2 if command is PlayCommand.HORIZON_UP else 0.5
            self.horizon = int(min(MAX_HORIZON, max(1, self.horizon * factor)))
            self._horizon_changed()
            self.log(self.horizon_message.format(self.horizon))
        elif command is PlayCommand.PAUSE:
            self.paused = not self.paused
        elif command is PlayCommand.STEP:
            self.paused = True
            self._step_once = True
        elif command is PlayCommand.RESET:
            self._cut_recording()
            self._reset()
        elif command is PlayCommand.RECORD:
            if self.recorder.on:
                self._cut_recording()
                self.recorder.on = False
                self.log(
                    self.recording_off_message.format(
                        num_saved=self.recorder.num_saved, directory=self.recorder.directory
                    )
                )
            else:
                self.recorder.on = True
                self.recorder.begin(self.frame)  # from the current frame, mid-trajectory
                self.log(f"Recording to {self.recorder.directory}")
        elif command is PlayCommand.HELP:
            self.log(self.help())
        elif command is PlayCommand.QUIT:
            self.close()
        else:
            self._handle(command)

    def update(self, inputs: InputsT) -> bool:
        """Advance one step unless paused (a STEP command steps once while paused); returns if it did."""
        if not self.running or (self.paused and not self._step_once):
            return False
        self._step_once = False
        self._advance(inputs)
        return True

    def close(self) -> None:
        """Write what is being recorded, release what the session holds, stop."""
        if not self.running:
            return
        self._cut_recording()
        self._release()
        self.running = False

    def _cut_recording(self) -> None:
        """Write the recorded part of the running trajectory; recording goes on from the next one."""
        if self.recorder.on:
            written = self.recorder.finish()
            if written is not None:
                self.log(self.cut_message.format(written))


class PlayAppCore(WindowApp, Generic[InputsT]):
    """The pygame front end of a session: each frame, the pending events (control keys become commands),
    one step with the inputs held, and the frame drawn under the header."""

    def __init__(self, session: PlaySessionCore[InputsT], window: Window, fps: float) -> None:
        super().__init__(window, fps)
        self.session = session
        self.rate = FrameRate()

    @abstractmethod
    def read_events(self) -> InputsT:
        """Handle the pending events, handing control keys to the session; the inputs of this frame's
        step."""

    def update(self) -> bool:
        inputs = self.read_events()
        if not self.session.running:
            return False
        if self.session.update(inputs):
            self.rate.step()
        else:
            self.rate.pause()
        self.window.draw(self.session.frame, self.session.header(self.rate.per_second))
        return True

    def running(self) -> bool:
        return self.session.running

    def close(self) -> None:
        self.session.close()
        super().close()


SessionT = TypeVar("SessionT", bound=PlaySessionCore[Any])


def play_until_quit(
    session: SessionT, open_app: Callable[[SessionT], PlayAppCore[Any]], max_frames: int | None
) -> SessionT:
    """``diffworld play`` once a product has built its ``session``: print the keys and where recordings
    go, then play in the window ``open_app`` opens until quit (or for ``max_frames`` frames)."""
    print(session.help())
    print(session.recordings_message.format(session.recorder.directory), flush=True)
    open_app(session).run(max_frames)
    return session
