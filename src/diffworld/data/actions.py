"""The action space of a world model: named components laid out as the columns of a float vector.

An engine dataset declares its own; the Atari world model's is one ``Discrete`` component
(``models/diffusion/layout.py``), whose actions it takes as indices rather than vectors.

A step's action is a float32 vector of ``spec.width`` columns, the components' columns side by side in order:

- ``Discrete(name, n)``: one column holding an integer 0 .. n-1 (an Atari or Catch action);
- ``Keys(names)``: one column per key, 0 (up) or 1 (pressed), several at once (multi-hot);
- ``Bins(name, values)``: one column holding the index 0 .. len(values)-1 of a discretised value (the CS:GO
  mouse movements);
- ``Continuous(name, low, high)``: one float column within [low, high] (an analog stick).

Indices are stored as floats so that every kind fits one array; they are exact up to 2**24.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np

from diffworld.errors import UserError

_NAME = re.compile(r"[A-Za-z0-9_.+\-]+")


class ActionSpecError(UserError, ValueError):
    """An action space described wrongly (its JSON or its constructor's arguments)."""


class ActionMismatchError(UserError, ValueError):
    """Actions that do not fit the declared action space."""


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ActionSpecError(f"{what} must be a non-empty name of letters, digits and _.+-, got {name!r}")
    return name


class _OneColumn:
    """A component of one column, named as the component."""

    name: str

    @property
    def width(self) -> int:
        return 1

    @property
    def column_names(self) -> tuple[str, ...]:
        return (self.name,)


@dataclass(frozen=True)
class Discrete(_OneColumn):
    """One column holding a choice among ``n`` (0 .. n-1)."""

    name: str
    n: int
    kind: ClassVar[str] = "discrete"

    def __post_init__(self) -> None:
        _check_name(self.name, "a discrete component's name")
        # Any integer type (numpy's too, as a game's action count may be), stored as int; not a bool.
        if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 1:
            raise ActionSpecError(
                f"discrete component {self.name!r}: n must be an integer >= 1, got {self.n!r}"
            )
        object.__setattr__(self, "n", int(self.n))


@dataclass(frozen=True)
class Keys:
    """One 0/1 column per key (pressed or not), any number pressed at once."""

    names: tuple[str, ...]
    name: str = "keys"
    kind: ClassVar[str] = "keys"

    def __post_init__(self) -> None:
        _check_name(self.name, "a keys component's name")
        if isinstance(self.names, str) or not isinstance(self.names, Sequence) or not self.names:
            raise ActionSpecError(f"keys component {self.name!r}: give a non-empty list of key names")
        object.__setattr__(self, "names", tuple(_check_name(n, "a key name") for n in self.names))

    @property
    def width(self) -> int:
        return len(self.names)

    @property
    def column_names(self) -> tuple[str, ...]:
        return self.names


@dataclass(frozen=True)
class Bins(_OneColumn):
    """One column holding the index of a bin: the action's value is ``values[index]``."""

    name: str
    values: tuple[float, ...]
    kind: ClassVar[str] = "bins"

    def __post_init__(self) -> None:
        _check_name(self.name, "a bins component's name")
        try:
            values = tuple(float(v) for v in self.values)
        except (TypeError, ValueError):
            raise ActionSpecError(f"bins component {self.name!r}: values must be numbers") from None
        if not values or not all(math.isfinite(v) for v in values):
            raise ActionSpecError(f"bins component {self.name!r}: give a non-empty list of finite values")
        object.__setattr__(self, "values", values)

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Continuous(_OneColumn):
    """One float column within [low, high]."""

    name: str
    low: float
    high: float
    kind: ClassVar[str] = "continuous"

    def __post_init__(self) -> None:
        _check_name(self.name, "a continuous component's name")
        try:
            low, high = float(self.low), float(self.high)
        except (TypeError, ValueError):
            raise ActionSpecError(
                f"continuous component {self.name!r}: low and high must be numbers"
            ) from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ActionSpecError(
                f"continuous component {self.name!r}: low and high must be finite with low < high, got "
                f"{self.low!r} and {self.high!r}"
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)


ActionComponent: TypeAlias = Discrete | Keys | Bins | Continuous


def discrete(name: str, n: int) -> Discrete:
    return Discrete(name, n)


def keys(names: Iterable[str], name: str = "keys") -> Keys:
    return Keys(tuple(names), name)


def bins(name: str, values: Iterable[float]) -> Bins:
    return Bins(name, tuple(values))


def continuous(name: str, low: float, high: float) -> Continuous:
    return Continuous(name, low, high)


@dataclass(frozen=True)
class ActionSpec:
    """The components of an action vector, in column order (see the module docstring)."""

    components: tuple[ActionComponent, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", tuple(self.components))
        if not self.components:
            raise ActionSpecError("an action space needs at least one component")
        seen: set[str] = set()
        for component in self.components:
            for column in component.column_names:
                if column in seen:
                    raise ActionSpecError(f"the action space names the column {column!r} twice")
                seen.add(column)

    @classmethod
    def of(cls, *components: ActionComponent) -> ActionSpec:
        return cls(tuple(components))

    @property
    def width(self) -> int:
        """D, the number of columns of an action vector."""
        return sum(c.width for c in self.components)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for c in self.components for name in c.column_names)

    def columns(self) -> list[tuple[ActionComponent, slice]]:
        """Each component with the columns it occupies."""
        out, start = [], 0
        for component in self.components:
            out.append((component, slice(start, start + component.width)))
            start += component.width
        return out

    def validate(self, actions: np.ndarray, source: str = "the actions") -> None:
        """Raise a one-line ``ActionMismatchError`` naming the first bad step and column of ``actions``.

        ``actions`` is (T, D); ``source`` names them in the message (a file, an episode).
        """
        actions = np.asarray(actions)
        if actions.dtype == np.bool_:  # pressed keys given as booleans
            actions = actions.astype(np.float32)
        if actions.ndim != 2 or actions.shape[1] != self.width:
            raise ActionMismatchError(
                f"{source} have shape {actions.shape}; the action space {self.describe()} needs "
                f"(T, {self.width})"
            )
        if not np.issubdtype(actions.dtype, np.number) or np.issubdtype(actions.dtype, np.complexfloating):
            raise ActionMismatchError(f"{source} have dtype {actions.dtype}; actions must be real numbers")
        for component, cols in self.columns():
            values = actions[:, cols].astype(np.float64)
            bad = ~np.isfinite(values)
            if isinstance(component, Discrete | Bins):
                n = component.n
                bad |= (values != np.round(values)) | (values < 0) | (values >= n)
                rule = f"an integer 0..{n - 1}"
            elif isinstance(component, Keys):
                bad |= (values != 0) & (values != 1)
                rule = "0 or 1"
            else:
                bad |= (values < component.low) | (values > component.high)
                rule = f"within [{component.low:g}, {component.high:g}]"
            if bad.any():
                step, col = (int(i) for i in np.argwhere(bad)[0])
                name = component.column_names[col]
                raise ActionMismatchError(
                    f"{source}: step {step}, column {cols.start + col} ({name!r}) is {values[step, col]!r}, "
                    f"but {component.kind} component {component.name!r} takes {rule}"
                )

    def describe(self) -> str:
        """A one-line summary: ``discrete action (4) + keys (w, a, s, d) + bins mouse_x (23)``."""
        parts = []
        for c in self.components:
            if isinstance(c, Discrete):
                parts.append(f"discrete {c.name} ({c.n})")
            elif isinstance(c, Keys):
                parts.append(f"keys {c.name} ({', '.join(c.names)})")
            elif isinstance(c, Bins):
                parts.append(f"bins {c.name} ({c.n})")
            else:
                parts.append(f"continuous {c.name} [{c.low:g}, {c.high:g}]")
        return " + ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``action_space`` of dataset.json)."""
        components: list[dict[str, Any]] = []
        for c in self.components:
            if isinstance(c, Discrete):
                components.append({"kind": c.kind, "name": c.name, "n": c.n})
            elif isinstance(c, Keys):
                components.append({"kind": c.kind, "name": c.name, "names": list(c.names)})
            elif isinstance(c, Bins):
                components.append({"kind": c.kind, "name": c.name, "values": list(c.values)})
            else:
                components.append({"kind": c.kind, "name": c.name, "low": c.low, "high": c.high})
        return {"components": components}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "the action space") -> ActionSpec:
        """Inverse of ``to_json``; a malformed description raises ``ActionSpecError`` naming ``source``."""
        try:
            items = data["components"]
            if not isinstance(items, list):
                raise TypeError
            components: list[ActionComponent] = []
            for item in items:
                kind = item["kind"]
                if kind == "discrete":
                    components.append(Discrete(item["name"], item["n"]))
                elif kind == "keys":
                    components.append(Keys(tuple(item["names"]), item.get("name", "keys")))
                elif kind == "bins":
                    components.append(Bins(item["name"], tuple(item["values"])))
                elif kind == "continuous":
                    components.append(Continuous(item["name"], item["low"], item["high"]))
                else:
                    raise ActionSpecError(
                        f"{source}: unknown component kind {kind!r} (discrete, keys, bins or continuous)"
                    )
            return cls(tuple(components))
        except ActionSpecError as e:
            if str(e).startswith(source):
                raise
            raise ActionSpecError(f"{source}: {e}") from None
        except (KeyError, TypeError, AttributeError):
            raise ActionSpecError(
                f'{source} is malformed: expected {{"components": [{{"kind": ..., "name": ..., ...}}]}}'
            ) from None


def box_spec(dim: int) -> ActionSpec:
    """The agent's continuous action space: ``dim`` components ``a0`` .. ``a{dim-1}`` within [-1, 1], the
    units every continuous game's actions are rescaled from (``envs.continuous.NormalizedActions``). ``dim``:
    an integer of any type (numpy's too, as for ``index_spec``), not a bool."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise ActionSpecError(
            f"a continuous action space's number of components must be an integer, got {dim!r}"
        )
    if dim < 1:
        raise ActionSpecError(f"a continuous action space needs at least one component, got {dim!r}")
    return ActionSpec(tuple(Continuous(f"a{i}", -1.0, 1.0) for i in range(int(dim))))


def format_action_vector(action: Iterable[float]) -> str:
    """A continuous action for display: each component signed with 2 decimals (``+0.50 -1.00``)."""
    return " ".join(f"{float(v):+.2f}" for v in action)


def index_spec(num_actions: int) -> ActionSpec:
    """One discrete component ``action`` of ``num_actions`` choices: an Atari or Catch action space, whose
    actions the agent takes as int64 indices."""
    return ActionSpec.of(Discrete("action", num_actions))


def action_spec_of(actions: int | ActionSpec) -> ActionSpec:
    """What the agent's models take as ``actions``, as a spec: a count of discrete actions (any integer type,
    numpy's too, as a game's count may be; not a bool) is ``index_spec(actions)``."""
    return actions if isinstance(actions, ActionSpec) else index_spec(actions)


def is_index_spec(spec: ActionSpec) -> bool:
    """Whether ``spec`` is one discrete component (actions as indices: the Atari agent's)."""
    return len(spec.components) == 1 and isinstance(spec.components[0], Discrete)


def is_box_spec(spec: ActionSpec) -> bool:
    """Whether every component of ``spec`` is continuous (actions as float vectors in their bounds)."""
    return all(isinstance(c, Continuous) for c in spec.components)
