"""Key maps: what the player holds (keys, mouse buttons) and how the mouse moved -> an action vector
(``ActionSpec`` layout, docs/engine.md "Play"). Both products play with them: an engine over its dataset's
actions (``engine/play.py``), an agent of a continuous-control game over its ``[-1, 1]^D`` actions
(``agent/play_keys.py``); the Atari agent's button maps are ``viz/keymaps.py``'s.

Inputs are named as pygame names keys (``pygame.key.name``: ``w``, ``space``, ``left ctrl``, ``up``, ``1``),
plus ``mouse left``, ``mouse right`` and ``mouse middle`` for the mouse buttons. Each component of the action
space gets a binding:

- ``discrete``: ``{"combos": {"up": 2, "up+space": 6, ...}, "default": 0}``: the value of the held inputs'
  exact combination, else of the largest combination they contain, else ``default``;
- ``keys``: ``{"<key name of the action space>": "<input>", ...}``: each pressed while its input is held
  (keys left out are never pressed);
- ``bins`` and ``continuous``: ``{"mouse": "x" | "y", "scale": 10, "keys": {"left": -60, ...}}``: the mouse's
  movement since the last step times ``scale``, unless a listed input is held, whose value then wins (the
  last listed); clipped to the range and, for bins, snapped to the nearest bin.

A key map file is JSON: ``{"name": "...", "components": {"<component name>": <binding>, ...}, "forbidden":
[["w", "s"], ...]}``; components left out stay at their neutral value (``default``, no key, the value nearest
0). ``forbidden`` (optional) lists combinations of inputs never held together: inputs, not the dataset's key
names, because the official CS:GO game forbids the arrow keys' opposite camera turns, which drive mouse bins
and press no key. While a combination is held, the input pressed last does not count (``KeyMap.allowed``).
Built-in maps: the CS:GO one (the official game's keys: WASD, space, left ctrl, left shift, 1-3, r, the mouse,
the arrow keys turning the camera by fixed amounts, and its forbidden combinations), and a default for any
other action space (see ``default_keymap``).
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from diffworld.data.actions import ActionSpec, Bins, Continuous, Discrete, Keys
from diffworld.errors import UserError
from diffworld.viz.keymaps import BUTTON_KEYS, buttons_of

MOUSE_BUTTONS = ("mouse left", "mouse right", "mouse middle")
_DEFAULT_MOUSE_SCALE = 10.0
"""Mouse pixels -> action units: the official CS:GO game's default ``--mouse-multiplier``."""
_SELECT_KEYS = tuple(string.digits[1:] + "0" + string.ascii_lowercase)
"""Keys that select the values 1, 2, ... of a discrete component without known action meanings."""


class KeyMapError(UserError, ValueError):
    """A key map file or binding that does not fit the action space: the message names what is wrong."""


@dataclass(frozen=True)
class InputState:
    """What the player does during one step."""

    held: frozenset[str] = frozenset()
    """Names of the keys and mouse buttons held."""
    mouse: tuple[float, float] = (0.0, 0.0)
    """The mouse's movement (x right, y down) since the last step, in screen pixels."""
    order: tuple[str, ...] = ()
    """The held inputs in the order they were pressed, earliest first (play's window records it): of a
    forbidden combination, the input pressed last does not count. Held inputs not listed count as pressed
    after the listed ones, in alphabetical order."""

    def press_order(self) -> list[str]:
        """The held inputs, earliest pressed first (see ``order``)."""
        listed = [name for name in dict.fromkeys(self.order) if name in self.held]
        return listed + sorted(self.held - set(listed))


@dataclass(frozen=True)
class DiscreteBinding:
    combos: tuple[tuple[frozenset[str], int], ...]
    default: int = 0

    def value(self, state: InputState) -> float:
        best, best_size = self.default, 0
        for combo, value in self.combos:
            if combo == state.held:
                return float(value)
            if combo <= state.held and len(combo) > best_size:
                best, best_size = value, len(combo)
        return float(best)

    def inputs(self) -> set[str]:
        return {name for combo, _ in self.combos for name in combo}


@dataclass(frozen=True)
class KeysBinding:
    inputs_of: tuple[str | None, ...]
    """Per key of the component, the input that presses it (None: never pressed)."""

    def values(self, state: InputState) -> list[float]:
        return [float(i is not None and i in state.held) for i in self.inputs_of]

    def inputs(self) -> set[str]:
        return {i for i in self.inputs_of if i is not None}


@dataclass(frozen=True)
class AxisBinding:
    """A bins or continuous component driven by a mouse axis and/or held inputs."""

    low: float
    high: float
    bins: tuple[float, ...] | None
    """The bin values (a bins component), None for a continuous one."""
    mouse: str | None = None
    scale: float = _DEFAULT_MOUSE_SCALE
    keys: tuple[tuple[str, float], ...] = ()

    def value(self, state: InputState) -> float:
        raw = 0.0
        if self.mouse is not None:
            raw = state.mouse[0 if self.mouse == "x" else 1] * self.scale
        for name, v in self.keys:
            if name in state.held:
                raw = v
        raw = min(max(raw, self.low), self.high)
        if self.bins is None:
            return raw
        return float(min(range(len(self.bins)), key=lambda i: abs(self.bins[i] - raw)))  # type: ignore[index]

    def inputs(self) -> set[str]:
        return {name for name, _ in self.keys}


Binding: TypeAlias = DiscreteBinding | KeysBinding | AxisBinding


@dataclass(frozen=True)
class KeyMap:
    """The action vector of a held set of inputs and a mouse movement, for one action space."""

    name: str
    spec: ActionSpec
    bindings: tuple[Binding, ...]
    """One per component of ``spec``, in order."""
    labels: tuple[str, ...] = field(default=())
    """One line per binding (and one for ``forbidden``), for the help text."""
    forbidden: tuple[frozenset[str], ...] = ()
    """Combinations of inputs never held together (see ``allowed``)."""

    def allowed(self, state: InputState) -> InputState:
        """``state`` less the inputs that complete a forbidden combination: the held inputs are taken in the
        order they were pressed, and one that would complete a combination with those taken before it is
        dropped. So of w and s held together, the first pressed counts, and the other counts once the first
        is released: the official CS:GO game's rule for its forbidden keys (docs/engine.md "Play")."""
        if not self.forbidden:
            return state
        kept: list[str] = []
        for name in state.press_order():
            with_it = {*kept, name}
            if not any(combo <= with_it for combo in self.forbidden):
                kept.append(name)
        return InputState(frozenset(kept), state.mouse, tuple(kept))

    def action(self, state: InputState) -> np.ndarray:
        """(D,) float32 action vector of the inputs ``allowed`` in ``state``."""
        state = self.allowed(state)
        out: list[float] = []
        for binding in self.bindings:
            if isinstance(binding, KeysBinding):
                out += binding.values(state)
            else:
                out.append(binding.value(state))
        return np.array(out, dtype=np.float32)

    def neutral(self) -> np.ndarray:
        """The action of a player who does nothing."""
        return self.action(InputState())

    @property
    def inputs(self) -> set[str]:
        """Every key or mouse-button name the map's bindings read."""
        return set().union(*(b.inputs() for b in self.bindings))

    @property
    def uses_mouse(self) -> bool:
        return any(isinstance(b, AxisBinding) and b.mouse is not None for b in self.bindings) or any(
            i in MOUSE_BUTTONS for i in self.inputs
        )

    def describe(self) -> str:
        return "\n".join(self.labels)


# ------------------------------------------------------------------------------------------ from JSON


def _fail(source: str, message: str) -> KeyMapError:
    return KeyMapError(f"{source}: {message}")


def _input_name(value: object, source: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, f"{where}: an input must be a key or mouse button name, got {value!r}")
    return value.strip().lower()


def _number(value: object, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(source, f"{where} must be a finite number, got {value!r}")
    return float(value)


def _discrete_binding(component: Discrete, raw: Mapping[str, Any], source: str) -> DiscreteBinding:
    where = f"component {component.name!r}"
    unknown = set(raw) - {"combos", "default"}
    if unknown:
        raise _fail(source, f"{where}: unknown field(s) {sorted(unknown)} (discrete takes combos, default)")

    def index(value: object, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < component.n:
            raise _fail(source, f"{where}: {what} must be an integer 0..{component.n - 1}, got {value!r}")
        return value

    combos_raw = raw.get("combos", {})
    if not isinstance(combos_raw, Mapping):
        raise _fail(source, f'{where}: combos must be an object {{"key+key": value}}')
    combos = tuple(
        (frozenset(_input_name(n, source, where) for n in combo.split("+")), index(v, f"combos[{combo!r}]"))
        for combo, v in combos_raw.items()
    )
    return DiscreteBinding(combos, index(raw.get("default", 0), "default"))


def _keys_binding(component: Keys, raw: Mapping[str, Any], source: str) -> KeysBinding:
    where = f"component {component.name!r}"
    unknown = set(raw) - set(component.names)
    if unknown:
        raise _fail(
            source, f"{where} has no key(s) {sorted(unknown)} (its keys: {', '.join(component.names)})"
        )
    return KeysBinding(
        tuple(
            _input_name(raw[k], source, f"{where}, key {k!r}") if k in raw else None for k in component.names
        )
    )


def _axis_binding(component: Bins | Continuous, raw: Mapping[str, Any], source: str) -> AxisBinding:
    where = f"component {component.name!r}"
    unknown = set(raw) - {"mouse", "scale", "keys"}
    if unknown:
        raise _fail(
            source, f"{where}: unknown field(s) {sorted(unknown)} ({component.kind} takes mouse, scale, keys)"
        )
    mouse = raw.get("mouse")
    if mouse is not None and mouse not in ("x", "y"):
        raise _fail(source, f'{where}: mouse must be "x" or "y", got {mouse!r}')
    keys_raw = raw.get("keys", {})
    if not isinstance(keys_raw, Mapping):
        raise _fail(source, f'{where}: keys must be an object {{"key": value}}')
    keys = tuple(
        (_input_name(k, source, where), _number(v, source, f"{where}, keys[{k!r}]"))
        for k, v in keys_raw.items()
    )
    scale = _number(raw.get("scale", _DEFAULT_MOUSE_SCALE), source, f"{where}: scale")
    if isinstance(component, Bins):
        return AxisBinding(min(component.values), max(component.values), component.values, mouse, scale, keys)
    return AxisBinding(component.low, component.high, None, mouse, scale, keys)


def _forbidden(raw: object, bindings: Sequence[Binding], source: str) -> tuple[frozenset[str], ...]:
    """The ``forbidden`` field: a list of combinations, each a list of two or more inputs the map reads."""
    if not isinstance(raw, list):
        raise _fail(source, 'forbidden must be a list of input lists, e.g. [["w", "s"], ["a", "d"]]')
    read = set().union(*(b.inputs() for b in bindings))
    combos: list[frozenset[str]] = []
    for i, entry in enumerate(raw):
        where = f"forbidden[{i}]"
        if isinstance(entry, str) or not isinstance(entry, list):
            raise _fail(source, f'{where} must be a list of inputs, e.g. ["w", "s"], got {entry!r}')
        combo = frozenset(_input_name(name, source, where) for name in entry)
        if len(combo) < 2:
            raise _fail(source, f"{where} must name two or more different inputs, got {entry!r}")
        unknown = sorted(combo - read)
        if unknown:
            raise _fail(
                source,
                f"{where} names {', '.join(map(repr, unknown))}, which no binding reads: list inputs the "
                f"bindings use (keys by pygame name, e.g. 'left ctrl', not the dataset's key names): "
                f"{', '.join(sorted(read)) or 'none'}",
            )
        combos.append(combo)
    return tuple(combos)


def keymap_from_json(data: object, spec: ActionSpec, source: str = "the key map") -> KeyMap:
    """A key map for ``spec`` from its JSON description (see the module docstring)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("components"), Mapping):
        raise _fail(source, 'expected an object {"name": ..., "components": {"<component>": <binding>}}')
    unknown_fields = set(data) - {"name", "components", "forbidden"}
    if unknown_fields:
        raise _fail(
            source, f"unknown field(s) {sorted(unknown_fields)} (a key map has name, components, forbidden)"
        )
    components = data["components"]
    by_name = {c.name: c for c in spec.components}
    unknown = set(components) - set(by_name)
    if unknown:
        raise _fail(
            source,
            f"the action space has no component(s) {sorted(unknown)} (it has: {', '.join(by_name)})",
        )
    bindings: list[Binding] = []
    for component in spec.components:
        raw = components.get(component.name, {})
        if not isinstance(raw, Mapping):
            raise _fail(source, f"component {component.name!r}: its binding must be an object")
        if isinstance(component, Discrete):
            bindings.append(_discrete_binding(component, raw, source))
        elif isinstance(component, Keys):
            bindings.append(_keys_binding(component, raw, source))
        else:
            bindings.append(_axis_binding(component, raw, source))
    name = data.get("name", Path(source).stem)
    return _labelled(str(name), spec, bindings, _forbidden(data.get("forbidden", []), bindings, source))


def keymap_to_json(keymap: KeyMap) -> dict[str, Any]:
    """The JSON description of ``keymap`` (``keymap_from_json`` reads it back): a built-in map written out
    to be edited."""
    components: dict[str, Any] = {}
    for component, binding in zip(keymap.spec.components, keymap.bindings, strict=True):
        if isinstance(binding, DiscreteBinding):
            for combo, _ in binding.combos:
                if any("+" in name for name in combo):
                    raise KeyMapError(
                        f"key map {keymap.name!r}: an input named with '+' cannot be written in a combination"
                    )
            combos = {"+".join(sorted(combo)): value for combo, value in binding.combos}
            components[component.name] = {"combos": combos, "default": binding.default}
        elif isinstance(binding, KeysBinding):
            keys = component.column_names
            components[component.name] = {
                k: i for k, i in zip(keys, binding.inputs_of, strict=True) if i is not None
            }
        else:
            axis: dict[str, Any] = {"scale": binding.scale, "keys": dict(binding.keys)}
            if binding.mouse is not None:
                axis["mouse"] = binding.mouse
            components[component.name] = axis
    out: dict[str, Any] = {"name": keymap.name, "components": components}
    if keymap.forbidden:
        out["forbidden"] = [sorted(combo) for combo in keymap.forbidden]
    return out


def load_keymap(path: str | os.PathLike[str], spec: ActionSpec) -> KeyMap:
    """The key map file ``path`` for ``spec``; a one-line ``KeyMapError`` where it is missing or wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeyMapError(f"No key map file at {path}.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KeyMapError(f"Cannot read the key map {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise KeyMapError(f"{path} is not valid JSON: {e}") from None
    return keymap_from_json(data, spec, str(path))


# ------------------------------------------------------------------------------------------- built-in

CSGO_ARROWS = {"x": {"left": -60.0, "right": 60.0}, "y": {"up": -50.0, "down": 50.0}}
"""As the official game: the arrow keys turn the camera by these mouse amounts, overriding the mouse."""
CSGO_FORBIDDEN = (
    frozenset({"w", "s"}),
    frozenset({"a", "d"}),
    frozenset({"1", "2"}),
    frozenset({"1", "3"}),
    frozenset({"2", "3"}),
    frozenset({"up", "down"}),
    frozenset({"left", "right"}),
)
"""The official game's forbidden combinations (forward and back, left and right, two weapons, opposite camera
turns by the arrow keys), as the inputs of the built-in map: combinations its dataset never shows."""
_KEY_ALIASES = {
    "ctrl": "left ctrl",
    "lctrl": "left ctrl",
    "crouch": "left ctrl",
    "shift": "left shift",
    "lshift": "left shift",
    "walk": "left shift",
    "jump": "space",
    "fire": "space",
    "l_click": "mouse left",
    "left_click": "mouse left",
    "lmb": "mouse left",
    "r_click": "mouse right",
    "right_click": "mouse right",
    "rmb": "mouse right",
    "up": "up",
    "down": "down",
    "left": "left",
    "right": "right",
}


def _mouse_axis(name: str) -> str | None:
    """``x`` or ``y`` for a component named like a mouse or camera axis (``mouse_x``, ``dy``), else None."""
    lowered = name.lower()
    for axis in ("x", "y"):
        if lowered in (axis, f"d{axis}") or lowered.endswith((f"_{axis}", f"mouse{axis}", f"_d{axis}")):
            return axis
    return None


def _default_discrete(component: Discrete, action_meanings: Sequence[str] | None) -> DiscreteBinding:
    """ALE-named actions: the arrow keys and space, as ``diffworld play``; otherwise 1-9, 0, a-z select
    values 1, 2, ... (nothing held: 0)."""
    if action_meanings is not None and len(action_meanings) == component.n:
        try:
            combos = [buttons_of(m) for m in action_meanings]
        except ValueError:
            pass
        else:
            keys = {b: BUTTON_KEYS[b].lower() for b in BUTTON_KEYS}
            return DiscreteBinding(tuple((frozenset(keys[b] for b in c), i) for i, c in enumerate(combos)))
    selectable = min(component.n - 1, len(_SELECT_KEYS))
    return DiscreteBinding(tuple((frozenset({_SELECT_KEYS[i]}), i + 1) for i in range(selectable)))


def default_keymap(spec: ActionSpec, action_meanings: Sequence[str] | None = None) -> KeyMap:
    """A key map for any action space: discrete components by ``_default_discrete``; each key pressed by the
    keyboard key (or mouse button) of its name or a usual alias (``ctrl``, ``jump``, ``l_click``, ...);
    bins and continuous components named as mouse axes (``mouse_x``, ``dy``, ...) follow the mouse, and the
    CS:GO ones also the arrow keys as in the official game; other axes stay neutral. With mouse bins (the
    CS:GO map), the official forbidden combinations (``CSGO_FORBIDDEN``) whose inputs the map reads."""
    csgo_like = any(isinstance(c, Bins) and _mouse_axis(c.name) for c in spec.components)
    bindings: list[Binding] = []
    for component in spec.components:
        if isinstance(component, Discrete):
            bindings.append(_default_discrete(component, action_meanings))
        elif isinstance(component, Keys):
            bindings.append(KeysBinding(tuple(_default_key_input(k) for k in component.names)))
        else:
            axis = _mouse_axis(component.name)
            arrows = tuple(CSGO_ARROWS[axis].items()) if axis and csgo_like else ()
            if isinstance(component, Bins):
                low, high, values = min(component.values), max(component.values), component.values
                arrows = tuple((k, v) for k, v in arrows if low <= v <= high)
            else:
                low, high, values = component.low, component.high, None
                arrows = ()
            bindings.append(AxisBinding(low, high, values, axis, _DEFAULT_MOUSE_SCALE, arrows))
    if not csgo_like:
        return _labelled("default", spec, bindings)
    read = set().union(*(b.inputs() for b in bindings))
    return _labelled("mouse and keys", spec, bindings, tuple(c for c in CSGO_FORBIDDEN if c <= read))


def _default_key_input(name: str) -> str | None:
    lowered = name.lower()
    if lowered in _KEY_ALIASES:
        return _KEY_ALIASES[lowered]
    if len(lowered) == 1 or lowered in ("space", "tab", "left ctrl", "left shift", "left alt"):
        return lowered
    return None


def _labelled(
    name: str, spec: ActionSpec, bindings: Sequence[Binding], forbidden: tuple[frozenset[str], ...] = ()
) -> KeyMap:
    labels = []
    for component, binding in zip(spec.components, bindings, strict=True):
        if isinstance(binding, DiscreteBinding):
            combos = ", ".join(f"{'+'.join(sorted(c)) or '(nothing)'} -> {v}" for c, v in binding.combos)
            labels.append(f"  {component.name}: {combos or 'always ' + str(binding.default)}")
        elif isinstance(binding, KeysBinding):
            keys = component.column_names
            pairs = ", ".join(f"{i} -> {k}" for k, i in zip(keys, binding.inputs_of, strict=True) if i)
            unbound = [k for k, i in zip(keys, binding.inputs_of, strict=True) if i is None]
            labels.append(
                f"  {component.name}: {pairs}"
                + (f" (never pressed: {', '.join(unbound)})" if unbound else "")
            )
        else:
            how = [f"mouse {binding.mouse} x {binding.scale:g}"] if binding.mouse else []
            how += [f"{k} -> {v:g}" for k, v in binding.keys]
            labels.append(f"  {component.name}: {', '.join(how) or 'neutral'}")
    if forbidden:
        combos = ", ".join("+".join(sorted(c)) for c in forbidden)
        labels.append(f"  never together (the first pressed counts): {combos}")
    return KeyMap(name, spec, tuple(bindings), tuple(labels), forbidden)


def keymap_for(
    spec: ActionSpec, path: str | os.PathLike[str] | None = None, action_meanings: Sequence[str] | None = None
) -> KeyMap:
    """The key map file ``path`` if given, else the built-in map for ``spec``."""
    return load_keymap(path, spec) if path is not None else default_keymap(spec, action_meanings)


def check_inputs(keymap: KeyMap, reserved: Collection[str], known: Collection[str] | None = None) -> None:
    """Refuse a key map that reads a control key of play (``reserved``) or, given the ``known`` input names,
    a name that is not among them."""
    clash = sorted(keymap.inputs & set(reserved))
    if clash:
        raise KeyMapError(
            f"key map {keymap.name!r} uses {', '.join(clash)}, which play keeps for its controls"
        )
    if known is not None:
        unknown = sorted(keymap.inputs - set(known) - set(MOUSE_BUTTONS))
        if unknown:
            raise KeyMapError(f"key map {keymap.name!r}: unknown key name(s) {', '.join(unknown)}")
