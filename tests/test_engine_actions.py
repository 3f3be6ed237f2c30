"""ActionSpec: the column layout of each component kind, validation of actions, the JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffworld.data.actions import (
    ActionMismatchError,
    ActionSpec,
    ActionSpecError,
    bins,
    continuous,
    discrete,
    keys,
)
from diffworld.errors import UserError


def mixed_spec() -> ActionSpec:
    return ActionSpec.of(
        keys(["w", "a", "s", "d"]),
        discrete("weapon", 3),
        bins("mouse_x", [-10, -1, 0, 1, 10]),
        continuous("stick", -1.0, 1.0),
    )


def test_width_and_column_layout() -> None:
    spec = mixed_spec()
    assert spec.width == 7
    assert spec.column_names == ("w", "a", "s", "d", "weapon", "mouse_x", "stick")
    layout = [(c.name, s.start, s.stop) for c, s in spec.columns()]
    assert layout == [("keys", 0, 4), ("weapon", 4, 5), ("mouse_x", 5, 6), ("stick", 6, 7)]
    assert spec.components[2].n == 5  # type: ignore[union-attr]


def test_json_round_trip_is_equal_and_strict_json() -> None:
    spec = mixed_spec()
    text = json.dumps(spec.to_json(), allow_nan=False)
    assert ActionSpec.from_json(json.loads(text)) == spec
    assert ActionSpec.from_json(json.loads(text)).describe() == spec.describe()


def test_valid_actions_pass() -> None:
    actions = np.array([[1, 0, 0, 1, 2, 4, -1.0], [0, 0, 0, 0, 0, 0, 0.25]], dtype=np.float32)
    mixed_spec().validate(actions)


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        (1, 0.5, "'a'"),  # a key neither 0 nor 1
        (4, 3.0, "integer 0..2"),  # out-of-range discrete index
        (4, 1.5, "integer 0..2"),  # non-integer index
        (5, -1.0, "integer 0..4"),  # negative bin
        (6, 1.5, "within [-1, 1]"),  # continuous out of range
        (6, np.nan, "within [-1, 1]"),
    ],
)
def test_bad_value_names_step_and_column(column: int, value: float, words: str) -> None:
    actions = np.zeros((3, 7), dtype=np.float32)
    actions[2, column] = value
    with pytest.raises(ActionMismatchError, match=rf"step 2, column {column}") as info:
        mixed_spec().validate(actions, "ep.npy")
    message = str(info.value)
    assert words in message and "ep.npy" in message and "\n" not in message
    assert isinstance(info.value, UserError)


def test_boolean_keys_are_accepted() -> None:
    ActionSpec.of(keys(["a", "b"])).validate(np.array([[True, False]]))


def test_wrong_width_is_refused() -> None:
    with pytest.raises(ActionMismatchError, match=r"shape \(3, 6\).*\(T, 7\)"):
        mixed_spec().validate(np.zeros((3, 6), dtype=np.float32))


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"components": "keys"},
        {"components": [{"kind": "wheel", "name": "x"}]},
        {"components": [{"kind": "discrete", "name": "x", "n": 0}]},
        {"components": [{"kind": "discrete", "name": "x"}]},
        {"components": [{"kind": "continuous", "name": "x", "low": 1, "high": 1}]},
        {"components": [{"kind": "keys", "names": []}]},
        {"components": [{"kind": "keys", "names": ["a", "a"]}]},
        {"components": []},
    ],
)
def test_malformed_json_is_one_line_user_error(data: dict) -> None:
    with pytest.raises(ActionSpecError) as info:
        ActionSpec.from_json(data, "dataset.json: action_space")
    assert "\n" not in str(info.value) and str(info.value).startswith("dataset.json: action_space")
