"""Bit-identity of small runs between a base revision and the working tree: the guard of a refactor that must
not change behaviour (the C0 harness of the redesign plan).

    python tools/bit_identity.py BASE_REV [--keep DIR] [--only agent|engine|imports]

BASE_REV is checked out as a ``git worktree`` in a temporary folder; the working tree is the other side. Each
side runs the same commands, one after the other (``nice -n 19``, one thread: ``OMP_NUM_THREADS=1``, on the
CPU), as ``python -m diffworld ...`` with ``PYTHONPATH=<side>/src``:

- agent: ``train game=Catch preset=smoke seed=3``, alone and with ``denoiser.kind=ddpm``, with
  ``denoiser.convention=edm denoiser.sampler.s_churn=1`` and with ``training.model_free=true`` (about 25 s
  each on a busy 2-core machine);
- engine: ``engine train preset=smoke seed=0`` on the bars dataset of ``tests/test_engine_training.py``
  (``write_dataset``: Discrete + Keys actions), with and without ``upsampler=null``, and on the same bars
  moved by a Bins component beside a Continuous and a Keys one (a few seconds each). The tool writes both
  datasets once, with the working tree's ``diffworld``, and both sides read them;
- imports: ``import`` of ``tests/data/official/official_tiny_agent.pt`` (as Breakout, with the architecture
  of ``TINY_OVERRIDES`` in ``tests/test_official_equivalence.py``) and ``engine import`` of
  ``tests/data/official_csgo/official_tiny_csgo_agent.pt`` (its architecture read from the file). Both
  sides import the working tree's files.

Every run folder must hold the same files, and each file the same content (the first difference is reported,
looking at metrics first, then tensors and arrays, then the rest):

- ``.jsonl`` (metrics), ``.json``: equal JSON, floats compared bit for bit;
- ``.pt`` (checkpoints: weights, optimizer, scheduler and random states): torch.load(weights_only=True); the
  same key tree in the same order (the order of a state dict fixes the optimizer's indices), tensors of the
  same dtype, shape and bytes;
- ``.safetensors``: every tensor, as above (not the metadata, which holds a config digest);
- ``.npy``, ``.npz`` (datasets): arrays of the same dtype, shape and bytes (not the files: their zip
  timestamps vary);
- ``config.yaml`` and ``agent.json``'s ``config``: the same configuration tree (keys in any order) once
  ``normalise_config`` has read both sides in today's schema: renamed keys at their new address, and keys
  added since (issue 28) left out where they hold the value that keeps the old behaviour;
- other ``.yaml``, ``.txt``: the same lines;
- anything else: the same bytes.

Left out: wall-clock values (keys starting ``time/``, ``train_seconds``, ``*_wall_clock_seconds``) in any of
these files; ``agent.json``'s ``weights_sha256``, a hash of the safetensors file, whose metadata safetensors
writes in no fixed order (two processes exporting the same agent write different bytes: the tensors are
compared instead); the ``np_random`` state of an env that waits for its ``pending_seed`` (the next reset
replaces it; an env never reset, such as the agent collector's with ``training.model_free=true``, draws it
from the OS); TensorBoard event files, ``*.log`` and lock files. The run folder's own path, which differs
between the sides, reads ``<run>`` in text files (``config.yaml``'s ``run_dir``, ``agent.json``).

Prints ``OK <name>`` or ``DIFF <name>: <first difference>`` per run, then a summary; exits with 0 only if
every run is equal on both sides. ``--keep DIR`` writes the runs (``DIR/base``, ``DIR/head``), their logs and
the datasets into DIR and keeps them; the base worktree is always removed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_AGENT = ROOT / "tests/data/official/official_tiny_agent.pt"
OFFICIAL_ENGINE = ROOT / "tests/data/official_csgo/official_tiny_csgo_agent.pt"


def tiny_agent_overrides() -> tuple[str, ...]:
    """The architecture of official_tiny_agent.pt: ``TINY_OVERRIDES`` of tests/test_official_equivalence.py,
    read from that file's literal (importing the test would import a diffworld of neither side)."""
    tree = ast.parse((ROOT / "tests/test_official_equivalence.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "TINY_OVERRIDES" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise LookupError("TINY_OVERRIDES is gone from tests/test_official_equivalence.py")


TINY_AGENT = tiny_agent_overrides()
AGENT = ("train", "game=Catch", "preset=smoke", "seed=3", "run_dir={out}")
ENGINE = ("engine", "train", "preset=smoke", "seed=0", "run_dir={out}")
VOLATILE_KEYS = {"train_seconds", "weights_sha256"}


@dataclass(frozen=True)
class Run:
    """One ``python -m diffworld`` command; ``{out}`` is its output folder, ``{data}`` the datasets'."""

    name: str
    group: str
    args: tuple[str, ...]

    def argv(self, out: Path, data: Path) -> list[str]:
        return [arg.format(out=out, data=data) for arg in self.args]


RUNS = (
    Run("agent", "agent", AGENT),
    Run("agent-ddpm", "agent", (*AGENT, "denoiser.kind=ddpm")),
    Run("agent-edm-churn", "agent", (*AGENT, "denoiser.convention=edm", "denoiser.sampler.s_churn=1")),
    Run("agent-model-free", "agent", (*AGENT, "training.model_free=true")),
    Run("engine-bars", "engine", (*ENGINE, "data={data}/bars")),
    Run("engine-bars-no-upsampler", "engine", (*ENGINE, "data={data}/bars", "upsampler=null")),
    Run("engine-bins-continuous", "engine", (*ENGINE, "data={data}/bins_continuous")),
    Run("import-agent", "imports", ("import", str(OFFICIAL_AGENT), "{out}", "game=Breakout", *TINY_AGENT)),
    Run("import-engine", "imports", ("engine", "import", str(OFFICIAL_ENGINE), "{out}")),
)
GROUPS = ("agent", "engine", "imports")


# ---- the engine datasets -------------------------------------------------------------------------------


def _bars(actions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frames of a vertical bar that column 0 of ``actions`` moves by ``action - 1`` pixels per step."""
    h, w = size
    frames = np.zeros((len(actions), h, w, 3), dtype=np.uint8)
    x = w // 2
    for t, action in enumerate(actions[:, 0]):
        frames[t, :, x] = 255
        x = int(np.clip(x + action - 1, 0, w - 1))
    return frames


def _keys_actions(rng: np.random.Generator, length: int) -> np.ndarray:
    """Discrete(3) + Keys(2): the draws of ``write_dataset`` in tests/test_engine_training.py."""
    actions = np.zeros((length, 3), dtype=np.float32)
    actions[:, 0] = rng.integers(0, 3, length)
    actions[:, 1:] = rng.integers(0, 2, (length, 2))
    return actions


def _bins_continuous_actions(rng: np.random.Generator, length: int) -> np.ndarray:
    """Bins(-1, 0, 1) + Continuous[0, 1] + Keys(1)."""
    actions = np.zeros((length, 3), dtype=np.float32)
    actions[:, 0] = rng.integers(0, 3, length)
    actions[:, 1] = rng.random(length)
    actions[:, 2] = rng.integers(0, 2, length)
    return actions


def write_datasets(folder: Path) -> None:
    """The engine runs' datasets (4 episodes of 25 frames of 12x20, a quarter for test), written with the
    working tree's ``diffworld`` as ``write_dataset`` of tests/test_engine_training.py writes its own."""
    sys.path.insert(0, str(ROOT / "src"))  # the working tree's diffworld, whatever the venv installed
    from diffworld.data.actions import ActionSpec, bins, continuous, discrete, keys
    from diffworld.data.folder_store import EngineDatasetWriter

    datasets: dict[str, tuple[ActionSpec, Callable[[np.random.Generator, int], np.ndarray], int]] = {
        "bars": (ActionSpec.of(discrete("action", 3), keys(["fire", "jump"])), _keys_actions, 0),
        "bins_continuous": (
            ActionSpec.of(bins("move", [-1.0, 0.0, 1.0]), continuous("throttle", 0.0, 1.0), keys(["fire"])),
            _bins_continuous_actions,
            1,
        ),
    }
    size = (12, 20)
    for name, (spec, draw, seed) in datasets.items():
        rng = np.random.default_rng(seed)
        writer = EngineDatasetWriter(folder / name, spec, size, source="test")
        for _ in range(4):
            actions = draw(rng, 25)
            writer.add_episode(_bars(actions, size), actions)
        writer.finish(test_fraction=0.25)


# ---- running a side ------------------------------------------------------------------------------------


def side_env(tree: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(tree / "src"),
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "CUDA_VISIBLE_DEVICES": "",
    }


def check_imported_from(tree: Path, env: dict[str, str], cwd: Path) -> None:
    """Stop unless ``diffworld`` is imported from ``tree``: an installed copy could shadow PYTHONPATH."""
    code = "import diffworld; print(diffworld.__file__)"
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to((tree / "src").resolve()):
        raise SystemExit(f"bit_identity: {tree}'s diffworld is shadowed by {found}")


def run_side(tree: Path, runs: Sequence[Run], side: Path, data: Path) -> dict[str, str]:
    """Run every run of ``tree`` into ``side/<name>``; returns {name: failure} for the runs that failed."""
    (side / "logs").mkdir(parents=True)
    env = side_env(tree)
    check_imported_from(tree, env, side)
    failures: dict[str, str] = {}
    for run in runs:
        log = side / "logs" / f"{run.name}.log"
        start = time.monotonic()
        with log.open("w") as out:
            argv = ["nice", "-n", "19", sys.executable, "-m", "diffworld", *run.argv(side / run.name, data)]
            code = subprocess.run(argv, cwd=side, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        print(f"  {side.name} {run.name}: {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
        if code != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            failures[run.name] = f"{side.name} exited with {code}: {' '.join(tail)}"
    return failures


# ---- comparing -----------------------------------------------------------------------------------------


def volatile(mapping: Mapping[Any, Any], key: object) -> bool:
    """Whether ``mapping[key]`` differs between two processes that run the same code (module docstring)."""
    if key == "np_random" and mapping.get("pending_seed") is not None:
        return True
    return isinstance(key, str) and (
        key.startswith("time/") or key in VOLATILE_KEYS or key.endswith("_wall_clock_seconds")
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def tensor_difference(a: torch.Tensor, b: torch.Tensor) -> str | None:
    """None if ``a`` and ``b`` have the same dtype, shape and bytes (NaNs and signed zeros included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{a.dtype} {tuple(a.shape)} != {b.dtype} {tuple(b.shape)}"

    def raw(t: torch.Tensor) -> torch.Tensor:
        return t.detach().cpu().contiguous().view(-1).view(torch.uint8)

    if torch.equal(raw(a), raw(b)):
        return None
    differing = int((a != b).sum())
    largest = (
        f", largest |a - b| {(a.double() - b.double()).abs().max().item():.3g}"
        if a.is_floating_point()
        else ""
    )
    return f"{differing} of {a.numel()} values differ{largest}"


def array_difference(a: np.ndarray, b: np.ndarray) -> str | None:
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{a.dtype} {a.shape} != {b.dtype} {b.shape}"
    return None if a.tobytes() == b.tobytes() else f"{int(np.sum(a != b))} of {a.size} values differ"


def mapping_difference(a: Mapping[Any, Any], b: Mapping[Any, Any], path: str, ordered: bool) -> str | None:
    keys_a = [k for k in a if not volatile(a, k)]
    keys_b = [k for k in b if not volatile(b, k)]
    if set(keys_a) != set(keys_b):
        only_a = sorted(map(str, set(keys_a) - set(keys_b)))
        only_b = sorted(map(str, set(keys_b) - set(keys_a)))
        return f"{path or '/'}: keys only in base {only_a}, only in head {only_b}"
    if ordered and keys_a != keys_b:
        i = next(i for i, (x, y) in enumerate(zip(keys_a, keys_b, strict=True)) if x != y)
        return f"{path or '/'}: key {i} is {keys_a[i]!r} in base, {keys_b[i]!r} in head"
    for key in keys_a:
        found = first_difference(a[key], b[key], f"{path}/{key}", ordered)
        if found:
            return found
    return None


def first_difference(a: Any, b: Any, path: str = "", ordered: bool = False) -> str | None:
    """Where the trees ``a`` (base) and ``b`` (head) first differ, or None; ``ordered``: keys in order too."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return mapping_difference(a, b, path, ordered)
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} {_short(a)} != {type(b).__name__} {_short(b)}"
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]", ordered)
            if found:
                return found
        return None
    if isinstance(a, torch.Tensor):
        found = tensor_difference(a, b)
    elif isinstance(a, np.ndarray):
        found = array_difference(a, b)
    elif isinstance(a, float):
        found = None if a.hex() == b.hex() else f"{a!r} != {b!r}"
    else:
        found = None if a == b else f"{_short(a)} != {_short(b)}"
    return found and f"{path}: {found}"


def _text(path: Path, run: Path) -> str:
    return path.read_text().replace(str(run), "<run>")


def _npz(path: Path, run: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


RENAMED_CONFIG_KEYS = {"denoiser.num_autoregressive_steps": "denoiser.training.num_autoregressive_steps"}
"""Configuration keys renamed by the redesign (``config.loading.LEGACY_KEYS``): old -> new."""

NEW_CONFIG_KEYS: dict[str, object] = {
    "denoiser.convention": "official",
    "upsampler.convention": "official",
    "denoiser.noise_previous_obs": False,
    "denoiser.sampler.s_cond": 0.0,
    "denoiser.sigma_cond_distribution": None,
    "upsampler.sigma_cond_distribution": None,
    "denoiser.training.grad_accumulation": "mean",
    "reward_model.training.grad_accumulation": "mean",
    "actor_critic.training.grad_accumulation": "mean",
    # Continuous control (issue 29): unused by discrete games.
    "env.action_repeat": 2,
    "actor_critic.continuous.min_std": 0.1,
    "actor_critic.continuous.max_std": 1.0,
    "actor_critic.continuous.std_offset": 2.0,
    "reward_model.reward_kind": "sign",
    "actor_critic.return_normalization": "none",
}
"""Configuration keys that one of the two products' configurations lacked before the redesign (or that the
continuous-control change added), with the value that keeps the behaviour of a configuration without them; a
section that only such keys fill goes with them. The rules apply to both sides and to both products alike, so
a key that the other product already had is dropped from it too where it holds that value (the agent's
``denoiser.convention: official``): harmless, since both sides are normalised the same way, but an "OK" does
not say that such a key was compared."""


def normalise_config(tree: Any) -> Any:
    """A configuration tree (``config.yaml``, ``agent.json``'s ``config``) in today's schema: renamed keys at
    their new address, and the keys of ``NEW_CONFIG_KEYS`` left out where they hold that value."""
    if not isinstance(tree, dict):
        return tree
    tree = json.loads(json.dumps(tree))

    def parent_of(key: str, create: bool) -> tuple[dict[str, Any] | None, str]:
        *parents, leaf = key.split(".")
        node: Any = tree
        for name in parents:
            if create and isinstance(node, dict):
                node = node.setdefault(name, {})
            else:
                node = node.get(name) if isinstance(node, dict) else None
        return (node if isinstance(node, dict) else None), leaf

    for old, new in RENAMED_CONFIG_KEYS.items():
        parent, leaf = parent_of(old, create=False)
        if parent is not None and leaf in parent:
            value = parent.pop(leaf)
            new_parent, new_leaf = parent_of(new, create=True)
            assert new_parent is not None
            new_parent.setdefault(new_leaf, value)
    for key, value in NEW_CONFIG_KEYS.items():
        parent, leaf = parent_of(key, create=False)
        if parent is not None and leaf in parent and parent[leaf] == value:
            del parent[leaf]
            section = key.rsplit(".", 1)[0]
            if not parent and "." in section:  # a new section left empty: it goes too
                grandparent, name = parent_of(section, create=False)
                if grandparent is not None:
                    grandparent.pop(name, None)
    return tree


def _yaml(path: Path, run: Path) -> Any:
    if path.name == "config.yaml":
        return normalise_config(yaml.safe_load(_text(path, run)))
    return _text(path, run).splitlines()


def _json(path: Path, run: Path) -> Any:
    data = json.loads(_text(path, run))
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data["config"] = normalise_config(data["config"])
    return data


LOADERS: dict[str, Callable[[Path, Path], Any]] = {
    ".jsonl": lambda path, run: [json.loads(line) for line in _text(path, run).splitlines()],
    ".json": _json,
    ".yaml": _yaml,
    ".txt": lambda path, run: _text(path, run).splitlines(),
    ".pt": lambda path, run: torch.load(path, map_location="cpu", weights_only=True),
    ".safetensors": lambda path, run: safetensors.torch.load_file(path),
    ".npy": lambda path, run: np.load(path, allow_pickle=False),
    ".npz": _npz,
}


def load(path: Path, run: Path) -> Any:
    loader = LOADERS.get(path.suffix)
    return loader(path, run) if loader else path.read_bytes()


def ignored(name: str) -> bool:
    return name.startswith("events.out.tfevents.") or name.endswith((".lock", ".log"))


FIRST = (".jsonl", ".pt", ".safetensors", ".npy", ".npz")


def comparison_order(path: Path) -> tuple[int, str]:
    """Metrics, then tensors and arrays, then the rest: a config change does not hide a changed result."""
    rank = FIRST.index(path.suffix) if path.suffix in FIRST else len(FIRST)
    return rank, str(path)


def run_files(run: Path) -> list[Path]:
    files = (p.relative_to(run) for p in run.rglob("*") if p.is_file() and not ignored(p.name))
    return sorted(files, key=comparison_order)


def compare_run(base: Path, head: Path) -> str | None:
    """The first difference between the run folders ``base`` and ``head``, or None."""
    files, head_files = run_files(base), run_files(head)
    if files != head_files:
        only_base = [str(p) for p in files if p not in head_files]
        only_head = [str(p) for p in head_files if p not in files]
        return f"files only in base {only_base}, only in head {only_head}"
    for rel in files:
        found = first_difference(
            load(base / rel, base), load(head / rel, head), str(rel), rel.suffix == ".pt"
        )
        if found:
            return found
    return None


# ---- the command ---------------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def report(runs: Sequence[Run], work: Path, failures: dict[str, str]) -> int:
    """Print ``OK <name>`` or ``DIFF <name>: <first difference>`` per run; returns how many differ."""
    differing = 0
    for run in runs:
        found = failures.get(run.name) or compare_run(work / "base" / run.name, work / "head" / run.name)
        differing += found is not None
        print(f"DIFF {run.name}: {found}" if found else f"OK {run.name}", flush=True)
    return differing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_rev", metavar="BASE_REV", help="the revision to compare the working tree with")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="write the runs into DIR (new) and keep them"
    )
    parser.add_argument("--only", choices=GROUPS, help="run only this group")
    args = parser.parse_args(argv)
    runs = [run for run in RUNS if args.only in (None, run.group)]
    base_commit = git("rev-parse", "--verify", f"{args.base_rev}^{{commit}}").strip()

    if args.keep:
        args.keep.mkdir(parents=True)
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bit_identity_"))
    base_tree = Path(tempfile.mkdtemp(prefix="bit_identity_base_")) / "tree"
    git("worktree", "add", "--detach", str(base_tree), base_commit)
    try:
        if any(run.group == "engine" for run in runs):
            write_datasets(work / "data")
        failures: dict[str, str] = {}
        seconds: dict[str, float] = {}
        for side, tree in (("base", base_tree), ("head", ROOT)):
            start = time.monotonic()
            failures = run_side(tree, runs, work / side, work / "data") | failures
            seconds[side] = time.monotonic() - start
        differing = report(runs, work, failures)
    finally:
        git("worktree", "remove", "--force", str(base_tree))
        shutil.rmtree(base_tree.parent)
        if not args.keep:
            shutil.rmtree(work)
    print(
        f"{len(runs) - differing} of {len(runs)} runs equal, {args.base_rev} ({base_commit[:10]}) against "
        f"the working tree; base {seconds['base']:.0f} s, head {seconds['head']:.0f} s"
    )
    return 0 if differing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
