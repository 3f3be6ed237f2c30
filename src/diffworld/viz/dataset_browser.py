"""``diffworld play --dataset``: browse stored episodes frame by frame (a run's dataset, or recorded play).

As with play, the browsing logic (:class:`DatasetBrowser`) is separate from pygame (:class:`BrowserApp`).
Episodes are read one file at a time as they are visited, so a run's whole dataset opens at once.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from diffworld.data.actions import format_action_vector
from diffworld.viz.display import Window, WindowApp, import_pygame
from diffworld.viz.episodes import RECORDING_INFO, EpisodeFiles, find_episode_folder

JUMP = 10


class BrowseCommand(enum.Enum):
    FORWARD = "one step forward"
    BACK = "one step back"
    FORWARD_10 = f"{JUMP} steps forward"
    BACK_10 = f"{JUMP} steps back"
    NEXT_EPISODE = "next episode"
    PREVIOUS_EPISODE = "previous episode"
    FIRST = "first frame of the episode"
    LAST = "last frame of the episode"
    PLAY = "play / pause (goes on to the next episodes)"
    QUIT = "quit"


BROWSE_KEYS: tuple[tuple[str, BrowseCommand], ...] = (
    ("Right", BrowseCommand.FORWARD),
    ("Left", BrowseCommand.BACK),
    ("Up", BrowseCommand.FORWARD_10),
    ("Down", BrowseCommand.BACK_10),
    ("n / PageDown", BrowseCommand.NEXT_EPISODE),
    ("b / PageUp", BrowseCommand.PREVIOUS_EPISODE),
    ("Home", BrowseCommand.FIRST),
    ("End", BrowseCommand.LAST),
    ("Space", BrowseCommand.PLAY),
    ("Esc / q", BrowseCommand.QUIT),
)


class DatasetBrowser:
    """Where the viewer stands in the episodes: episode index and frame index (0 .. episode length)."""

    def __init__(self, episodes: EpisodeFiles, action_meanings: Sequence[str] | None = None) -> None:
        self.episodes = episodes
        self.action_meanings = list(action_meanings) if action_meanings is not None else None
        self.index = 0
        self.t = 0
        self.playing = False
        self.running = True

    @property
    def episode(self) -> Any:
        return self.episodes[self.index]

    @property
    def frame(self) -> Any:
        return self.episode.obs[self.t]

    def handle(self, command: BrowseCommand) -> None:
        length = len(self.episode)
        if command is BrowseCommand.FORWARD:
            self.t = min(length, self.t + 1)
        elif command is BrowseCommand.BACK:
            self.t = max(0, self.t - 1)
        elif command is BrowseCommand.FORWARD_10:
            self.t = min(length, self.t + JUMP)
        elif command is BrowseCommand.BACK_10:
            self.t = max(0, self.t - JUMP)
        elif command is BrowseCommand.NEXT_EPISODE:
            self._go_to(min(len(self.episodes) - 1, self.index + 1))
        elif command is BrowseCommand.PREVIOUS_EPISODE:
            self._go_to(max(0, self.index - 1))
        elif command is BrowseCommand.FIRST:
            self.t = 0
        elif command is BrowseCommand.LAST:
            self.t = length
        elif command is BrowseCommand.PLAY:
            self.playing = not self.playing
        elif command is BrowseCommand.QUIT:
            self.running = False

    def update(self) -> None:
        """While playing: one step forward, on to the next episode at the end, stopping after the last."""
        if not self.playing:
            return
        if self.t < len(self.episode):
            self.t += 1
        elif self.index + 1 < len(self.episodes):
            self._go_to(self.index + 1)
        else:
            self.playing = False

    def header(self) -> list[str]:
        episode = self.episode
        length = len(episode)
        ret = float(episode.rew[: self.t].sum())
        first = (
            f"episode {self.index + 1}/{len(self.episodes)} (id {self.episodes.ids[self.index]}) | "
            f"step {self.t}/{length} | return {ret:g}"
        )
        if self.t < length and episode.act.ndim == 2:  # a continuous action vector
            values = format_action_vector(episode.act[self.t])
            second = f"action {values} | reward {float(episode.rew[self.t]):g}"
        elif self.t < length:
            a = int(episode.act[self.t])
            name = (
                self.action_meanings[a] if self.action_meanings and a < len(self.action_meanings) else str(a)
            )
            second = f"action {name} | reward {float(episode.rew[self.t]):g}"
        elif episode.terminated[-1]:
            second = "final frame: terminated"
        elif episode.truncated[-1]:
            second = "final frame: truncated"
        else:
            second = "final frame: cut (collection stopped)"
        return [first, second + (" | playing" if self.playing else "")]

    def _go_to(self, index: int) -> None:
        if index != self.index:
            self.index = index
            self.t = 0


def pygame_bindings(pg: Any) -> dict[int, BrowseCommand]:
    keys = {
        "Right": pg.K_RIGHT,
        "Left": pg.K_LEFT,
        "Up": pg.K_UP,
        "Down": pg.K_DOWN,
        "n": pg.K_n,
        "PageDown": pg.K_PAGEDOWN,
        "b": pg.K_b,
        "PageUp": pg.K_PAGEUP,
        "Home": pg.K_HOME,
        "End": pg.K_END,
        "Space": pg.K_SPACE,
        "Esc": pg.K_ESCAPE,
        "q": pg.K_q,
    }
    return {keys[key]: command for label, command in BROWSE_KEYS for key in label.split(" / ")}


def help_text() -> str:
    return "Dataset browser:\n" + "\n".join(f"  {key:<13} {command.value}" for key, command in BROWSE_KEYS)


class BrowserApp(WindowApp):
    """The pygame front end of a :class:`DatasetBrowser`."""

    def __init__(self, browser: DatasetBrowser, *, scale: int = 8, fps: float = 15.0) -> None:
        height, width = browser.frame.shape[:2]
        super().__init__(
            Window(f"diffworld dataset: {browser.episodes.folder}", (height, width), scale, 2), fps
        )
        self.browser = browser
        self.bindings = pygame_bindings(self.pg)

    def update(self) -> bool:
        pg = self.pg
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.browser.handle(BrowseCommand.QUIT)
            elif event.type == pg.KEYDOWN and event.key in self.bindings:
                self.browser.handle(self.bindings[event.key])
        if not self.browser.running:
            return False
        self.browser.update()
        self.window.draw(self.browser.frame, self.browser.header())
        return True

    def running(self) -> bool:
        return self.browser.running


def action_meanings_for(folder: Path, source: Path) -> list[str] | None:
    """Action names for the episodes of ``folder``: from a recording's ``recording.json``, or from the game
    of the run folder ``source``; None when neither says."""
    info_path = folder / RECORDING_INFO
    if info_path.is_file():
        meanings = json.loads(info_path.read_text()).get("action_meanings")
        return list(meanings) if isinstance(meanings, list) else None
    from diffworld.run.folder import CONFIG_FILE

    if (source / CONFIG_FILE).is_file():
        from diffworld.config.loading import load_config_file
        from diffworld.envs.make import make_env

        env = make_env(load_config_file(source / CONFIG_FILE).game)
        meanings = env.action_meanings
        env.close()
        return meanings
    return None


def run_browser(
    source: Path,
    *,
    scale: int = 8,
    fps: float = 15.0,
    max_frames: int | None = None,
    log: Callable[[str], None] = print,
) -> DatasetBrowser:
    """``diffworld play --dataset``: browse the episodes of a run folder or of a folder of episodes."""
    import_pygame()
    folder = find_episode_folder(source)
    episodes = EpisodeFiles(folder)
    browser = DatasetBrowser(episodes, action_meanings_for(folder, source))
    log(help_text())
    log(f"{len(episodes)} episodes in {folder}")
    BrowserApp(browser, scale=scale, fps=fps).run(max_frames)
    return browser
