"""Human key maps, derived per game from the ALE names of its minimal action set.

An ALE action name is a combination of directions and FIRE (``NOOP``, ``FIRE``, ``UP``, ``UPRIGHT``,
``DOWNLEFTFIRE``, ...). Each becomes a set of buttons among ``up``, ``down``, ``left``, ``right`` and
``fire``; the arrow keys and the space bar press them. The held buttons select the action whose set matches
them exactly or, failing that, the largest one they contain (NOOP when nothing is held), so that a game with
only LEFT and RIGHT ignores a stray UP. A few games get overrides where the ALE names mislead: in Pong,
RIGHT moves the paddle up and LEFT moves it down.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

BUTTONS = ("up", "down", "left", "right", "fire")
BUTTON_KEYS = {"up": "Up", "down": "Down", "left": "Left", "right": "Right", "fire": "Space"}
"""How each button is written in the printed key map (the arrow keys and the space bar)."""

GAME_OVERRIDES: dict[str, dict[str, frozenset[str]]] = {
    # The paddle moves vertically: ALE's RIGHT is up and LEFT is down.
    "Pong": {
        "RIGHT": frozenset({"up"}),
        "LEFT": frozenset({"down"}),
        "RIGHTFIRE": frozenset({"up", "fire"}),
        "LEFTFIRE": frozenset({"down", "fire"}),
    },
}


def buttons_of(meaning: str) -> frozenset[str]:
    """The buttons of an ALE action name: ``"UPLEFTFIRE"`` -> {up, left, fire}; ``"NOOP"`` -> {}.

    Raises:
        ValueError: a name that is not a combination of UP/DOWN, LEFT/RIGHT and FIRE.
    """
    rest = meaning.upper()
    if rest == "NOOP":
        return frozenset()
    buttons = set()
    for group in (("UP", "DOWN"), ("RIGHT", "LEFT")):
        for name in group:
            if rest.startswith(name):
                buttons.add(name.lower())
                rest = rest[len(name) :]
                break
    if rest == "FIRE":
        buttons.add("fire")
        rest = ""
    if rest or not buttons:
        raise ValueError(f"not an ALE action name: {meaning!r}")
    return frozenset(buttons)


@dataclass(frozen=True)
class ButtonMap:
    """Which action the held buttons select in one game."""

    game: str
    action_meanings: tuple[str, ...]
    combos: tuple[frozenset[str], ...]
    """The buttons of each action, in action-index order."""

    @classmethod
    def for_game(cls, game: str, action_meanings: Sequence[str]) -> ButtonMap:
        overrides = GAME_OVERRIDES.get(game, {})
        combos = tuple(overrides.get(m, buttons_of(m)) for m in action_meanings)
        return cls(game, tuple(action_meanings), combos)

    @property
    def num_actions(self) -> int:
        return len(self.action_meanings)

    def action(self, held: Collection[str]) -> int:
        """The action for the ``held`` buttons: the exact combination, else the largest one held."""
        held_set = frozenset(held)
        best, best_size = 0, -1
        for index, combo in enumerate(self.combos):
            if combo == held_set:
                return index
            if combo <= held_set and len(combo) > best_size:
                best, best_size = index, len(combo)
        return best

    def describe(self) -> str:
        """One line per action: ``  UPFIRE        Up + Space``."""
        width = max(len(m) for m in self.action_meanings)
        lines = []
        for meaning, combo in zip(self.action_meanings, self.combos, strict=True):
            keys = " + ".join(BUTTON_KEYS[b] for b in BUTTONS if b in combo) or "(no key)"
            lines.append(f"  {meaning:<{width}}  {keys}")
        return "\n".join(lines)
