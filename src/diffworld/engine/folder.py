"""The run folder of an engine (docs/engine.md, "Training"):

```
runs/engine/<dataset name>/<date>_<time>_s<seed>/
  config.yaml          # the resolved EngineConfig
  action_space.json    # the dataset's ActionSpec: the engine's actions, even if the dataset moves
  checkpoints/         # state.pt and state.backup.pt (run/checkpoint.py): models, optimizers, counters, rngs
  metrics.jsonl        # one record per log, against "updates"
  tensorboard/
```

The writer lock, the refusal to reuse a folder and the checkpoints are those of an Atari run
(``run/folder.py``, ``run/checkpoint.py``).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from diffworld.data.actions import ActionSpec
from diffworld.engine.config import EngineConfig
from diffworld.run.folder import CONFIG_FILE, RunDirError
from diffworld.utils.atomic import atomic_write_text

ACTION_SPACE_FILE = "action_space.json"


def default_engine_run_dir(cfg: EngineConfig, now: datetime.datetime | None = None) -> Path:
    """``runs/engine/<dataset folder's name>/<date>_<time>_s<seed>``."""
    now = now or datetime.datetime.now()
    return Path("runs") / "engine" / Path(cfg.data).resolve().name / f"{now:%Y-%m-%d_%H-%M-%S}_s{cfg.seed}"


def is_engine_run(path: Path) -> bool:
    """Whether ``path`` is an engine's run folder (rather than an Atari run's)."""
    return (path / CONFIG_FILE).is_file() and (path / ACTION_SPACE_FILE).is_file()


def save_action_space(run_dir: Path, spec: ActionSpec) -> None:
    atomic_write_text(run_dir / ACTION_SPACE_FILE, json.dumps(spec.to_json(), indent=1) + "\n")


def load_action_space(run_dir: Path) -> ActionSpec:
    path = run_dir / ACTION_SPACE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} is not an engine run folder (no {ACTION_SPACE_FILE}).") from None
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"Cannot read {path}: {e}") from None
    return ActionSpec.from_json(data, source=str(path))
