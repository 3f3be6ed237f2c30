"""Keys -> continuous actions, for ``diffworld play`` of a continuous-control agent (issue 29).

The agent's actions are vectors in ``[-1, 1]^D`` (``data.actions.box_spec``: components ``a0`` .. ``a{D-1}``).
They are played through the key maps both products share (``viz/action_keymap.py``: one ``continuous``
binding per component). The built-in map gives component i a pair of keys from ``AXIS_KEYS``: while the
first is held the component is -1, while the second is held +1 (the second wins when both are), else 0.
So ``a0`` is the arrow keys left / right and ``a1`` down / up, then ``a`` / ``d``, ``s`` / ``w``, ... for the
next components; components past the twelve pairs stay at 0. A key map file (``diffworld play --keymap``,
JSON as in docs/engine.md "Play", over the components ``a0`` ..) sets other keys or values (0.5, say); it
may not use play's control keys, nor the mouse (agent play reads the keyboard only).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffworld.data.actions import box_spec
from diffworld.errors import UserError
from diffworld.viz.action_keymap import (
    InputState,
    KeyMap,
    KeyMapError,
    check_inputs,
    keymap_from_json,
    load_keymap,
)
from diffworld.viz.play_core import ControlKey, PlayCommand

AXIS_KEYS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("down", "up"),
    ("a", "d"),
    ("s", "w"),
    ("j", "l"),
    ("k", "i"),
    ("z", "x"),
    ("c", "v"),
    ("b", "n"),
    ("f", "g"),
    ("t", "y"),
    ("u", "o"),
)
"""Per component of the built-in map, (the key for -1, the key for +1), by pygame name; none is a control
key of play (``CONTROL_INPUTS``)."""

CONTROL_KEYS: tuple[ControlKey, ...] = (
    ("m", PlayCommand.TOGGLE_CONTROLLER, "switch the controller: policy / human"),
    ("Tab", PlayCommand.NEXT_ENV, "next environment: world model -> real test -> real train"),
    ("1", PlayCommand.ENV_WORLD_MODEL, "the world model"),
    ("2", PlayCommand.ENV_TEST, "the real test environment"),
    ("3", PlayCommand.ENV_TRAIN, "the real training environment (a life loss ends an episode)"),
    ("[", PlayCommand.HORIZON_DOWN, "halve the imagination horizon"),
    ("]", PlayCommand.HORIZON_UP, "double the imagination horizon"),
    ("p", PlayCommand.PAUSE, "pause / resume"),
    (".", PlayCommand.STEP, "one step (pauses first)"),
    ("Enter", PlayCommand.RESET, "reset the episode"),
    ("r", PlayCommand.RECORD, "start / stop recording episodes"),
    ("h", PlayCommand.HELP, "print the keys again"),
    ("Esc / q", PlayCommand.QUIT, "quit"),
)
"""Agent play's control keys, as printed (``Esc / q``: either key); ``play.pygame_bindings`` maps them to
pygame key codes, ``CONTROL_INPUTS`` to pygame names."""

PYGAME_NAMES = {"Tab": "tab", "Enter": "return", "Esc": "escape"}
"""The labels of ``CONTROL_KEYS`` that are not their keys' pygame names (the others are, lowercase)."""

CONTROL_INPUTS = frozenset(
    PYGAME_NAMES.get(key, key.lower()) for label, _, _ in CONTROL_KEYS for key in label.split(" / ")
) | {"enter"}  # the keypad's Enter, which resets too (``play.pygame_bindings``)
"""Play's control keys by pygame name: a key map may not read them."""


@dataclass(frozen=True)
class BoxKeys:
    """The held keys -> an action in ``[-1, 1]^D`` of one continuous-control game."""

    game: str
    keymap: KeyMap
    """A key map over ``box_spec(D)``."""
    meanings: tuple[str, ...]
    """The names of the components (the env's ``action_meanings``: DMC actuators, say)."""

    def action(self, held: Collection[str]) -> np.ndarray:
        """(D,) float32 action of the keys ``held`` (pygame names)."""
        return self.keymap.action(InputState(frozenset(held)))

    def describe(self) -> str:
        """One line per component: its name, what drives it."""
        lines = []
        for meaning, label in zip(self.meanings, self.keymap.labels, strict=False):
            name, _, how = label.strip().partition(": ")
            lines.append(f"  {name} ({meaning}): {how}" if meaning != name else f"  {name}: {how}")
        return "\n".join(lines + list(self.keymap.labels[len(self.meanings) :]))


def keymap_refusal(game: str) -> UserError:
    """The one-line refusal of ``--keymap`` for ``game``, a game of discrete actions."""
    return UserError(
        f"--keymap is for continuous-control games and engines; {game} plays with the arrow keys and space"
    )


def default_box_keymap(dim: int) -> KeyMap:
    """The built-in map of ``dim`` components (see the module docstring)."""
    components = {
        f"a{i}": {"keys": {negative: -1.0, positive: 1.0}}
        for i, (negative, positive) in zip(range(dim), AXIS_KEYS, strict=False)
    }
    return keymap_from_json({"name": "continuous", "components": components}, box_spec(dim))


def box_keys(game: str, meanings: Sequence[str], keymap_file: Path | None = None) -> BoxKeys:
    """The keys of a continuous-control game with the components ``meanings``: the built-in map, or the key
    map file ``keymap_file`` (a one-line ``KeyMapError`` where it does not fit the actions or uses the mouse
    or a control key)."""
    dim = len(meanings)
    keymap = default_box_keymap(dim) if keymap_file is None else load_keymap(keymap_file, box_spec(dim))
    if keymap.uses_mouse:
        raise KeyMapError(f"key map {keymap.name!r} uses the mouse: an agent's play reads the keyboard only")
    check_inputs(keymap, CONTROL_INPUTS)
    return BoxKeys(game, keymap, tuple(meanings))
