"""Reading the JSON reports of the commands strictly: NaN and Infinity, which Python writes by default but
JSON does not have, fail the test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_strict_json(path: Path) -> Any:
    def no_constant(name: str) -> None:
        raise ValueError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=no_constant)
