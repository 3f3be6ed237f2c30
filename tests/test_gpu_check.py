"""``benchmarks/gpu_check.sh``: its dry run on the CPU (slow), and how it reads pytest's output."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_pytest_record_reads_the_summary() -> None:
    gc = gpu_check()
    output = (
        "..F.s\n"
        "FAILED tests/test_device.py::test_bf16_autocast_on_device - AssertionError\n"
        "ERROR tests/test_x.py::test_y - RuntimeError: CUDA error\n"
        "2 failed, 380 passed, 3 skipped, 1 error in 52.10s\n"
    )
    record = gc.pytest_record(gc.CommandResult(["pytest"], 1, 52.1, False, output))
    assert record["counts"] == {"failed": 2, "passed": 380, "skipped": 3, "error": 1}
    assert record["status"] == "failed"
    assert record["failures"] == output.splitlines()[1:3]
    cut = gc.pytest_record(gc.CommandResult(["pytest"], -2, 60.0, True, "....\n"))
    assert cut["status"] == "timeout" and cut["counts"] == {}
    ok = gc.pytest_record(gc.CommandResult(["pytest"], 0, 3.0, False, "9 passed in 3.61s\n"))
    assert ok["status"] == "ok" and ok["counts"] == {"passed": 9}


@pytest.mark.slow
def test_dry_run(tmp_path: Path) -> None:
    """Every stage on the CPU with tiny settings (about 3 minutes on 2 busy cores)."""
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    stages = report["stages"]
    assert {name: stages[name]["status"] for name in stages} == dict.fromkeys(gpu_check().STAGES, "ok")
    assert stages["tests"]["device_tests"]["counts"]["passed"] >= 9
    for precision in ("fp32", "bf16"):
        assert stages[f"bench_{precision}"]["figures"]["precision"] == precision
        assert stages["projection"][precision]["longest"]["total_seconds"] > 0
    train = stages["train"]
    assert train["finished"] and train["test_returns"] and train["evaluation"]["of"] == "final evaluation"
    assert (out / "train_metrics.jsonl").is_file() and (out / "gpu_check.log").is_file()
    assert "GPU check (dry run)" in result.stdout
