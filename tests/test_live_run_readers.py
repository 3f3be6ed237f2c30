"""A live run (another process holds its writer lock) is read, never written: eval, play, video, wm-eval,
report and export write nothing into it, and the agent is read from a complete checkpoint while the
trainer saves new ones."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from diffworld.cli import main
from diffworld.run.checkpoint import load_checkpoint
from diffworld.run.folder import checkpoint_dir, live_run_containing, lock_run_dir, unlock_run_dir
from run_helpers import new_run, snapshot, start_holder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_run(tmp_path_factory.mktemp("live") / "run")


@pytest.fixture
def live(run: Path) -> Iterator[Path]:
    holder = start_holder(run)
    yield run
    holder.kill()
    holder.wait()


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_eval_of_a_live_run_writes_only_where_told(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(live)
    assert main(["eval", str(live), "--episodes", "1", "--device", "cpu"]) == 2
    err = _one_line_error(capsys)
    assert "live run" in err and "--out" in err and str(live / "eval.json") in err
    # Also when told to write into the run: its eval.json is the trainer's.
    assert main(["eval", str(live), "--episodes", "1", "--out", str(live / "eval.json")]) == 2
    _one_line_error(capsys)

    out = tmp_path / "eval.json"
    assert main(["eval", str(live), "--episodes", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert out.is_file()
    assert snapshot(live) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["video", "{run}", "--out", "{run}/video.gif"],
        ["wm-eval", "{run}"],  # default: <run>/wm_eval
        ["wm-eval", "{run}", "--out-dir", "{run}/wm"],
        ["export", "{run}", "{run}/exported"],
        ["play", "{run}", "--record-dir", "{run}/dataset/train"],
        ["plot", "{run}", "--out", "{run}/curves.png"],
        ["report", "{run}"],
    ],
    ids=lambda argv: "-".join(a for a in argv if "{" not in a),
)
def test_commands_write_nothing_into_a_live_run(
    live: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(live)
    assert main([a.format(run=live) for a in argv]) == 2
    err = _one_line_error(capsys)
    assert "live run" in err or "still training" in err
    assert "process" in err  # names the trainer
    assert snapshot(live) == before


def test_outputs_beside_a_live_run_and_of_finished_runs_are_allowed(run: Path, tmp_path: Path) -> None:
    assert live_run_containing(run / "eval.json") is None  # nobody trains it
    holder = start_holder(run)
    try:
        assert live_run_containing(run / "wm_eval" / "x.json") == run
        assert live_run_containing(tmp_path / "eval.json") is None
    finally:
        holder.kill()
        holder.wait()
    lock_run_dir(run)  # this process's own run: its trainer writes there
    try:
        assert live_run_containing(run / "eval.json") is None
    finally:
        unlock_run_dir(run)


WRITER = """
import sys, torch
from diffworld.run.checkpoint import save_checkpoint
i = 0
while True:
    save_checkpoint({"i": i, "x": torch.full((300_000,), float(i))}, sys.argv[1])
    if i == 1:
        print("saving", flush=True)
    i += 1
"""


def test_a_checkpoint_read_while_the_trainer_saves_is_always_complete(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "saving"
        seen = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            state, _ = load_checkpoint(directory, ("i", "x"))
            assert torch.equal(state["x"], torch.full((300_000,), float(state["i"])))
            seen.add(state["i"])
    finally:
        writer.kill()
        writer.wait()
    assert len(seen) > 1  # the reads did overlap the saves


def test_the_agent_of_a_live_run_is_its_last_checkpoint(live: Path) -> None:
    from diffworld.agent.trained import load_trained_agent

    state, _ = load_checkpoint(checkpoint_dir(live), ("agent",))
    trained = load_trained_agent(live, "cpu")
    for key, value in trained.agent.state_dict().items():
        assert torch.equal(value, state["agent"][key]), key


PROBER = """
import sys
from pathlib import Path
from diffworld.run.folder import is_run_dir_locked
print("probing", flush=True)
while True:
    is_run_dir_locked(Path(sys.argv[1]))
"""


def test_readers_asking_whether_a_run_is_live_do_not_lock_out_its_trainer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    prober = subprocess.Popen([sys.executable, "-c", PROBER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert prober.stdout is not None and prober.stdout.readline().strip() == "probing"
        for _ in range(20):
            lock_run_dir(run)
            unlock_run_dir(run)
    finally:
        prober.kill()
        prober.wait()
