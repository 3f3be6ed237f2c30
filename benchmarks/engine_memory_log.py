"""Summary of the memory samples that ``benchmarks/engine_hour_cpu.sh`` writes while an engine trains.

    python benchmarks/engine_memory_log.py <run>.mem [--time <run>.time] [--dataset <data>] [--json out]

Peaks of the trainer's resident memory (all of it, its anonymous part, its file-backed part), of the cgroup's
usage (page cache included, so it sits at the limit once the dataset has been read that far) and of its
anonymous memory, with the cgroup's limit hits and the exit status; GNU time's peak resident set and wall
clock when given, and the dataset's size on disk when given.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from diffworld.utils.atomic import atomic_write_text

_KB = re.compile(r"(VmRSS|RssAnon|RssFile):\s*(\d+) kB")
_BYTES = re.compile(r"(usage|max|cache|rss|max_usage|failcnt|rc)=(-?\d+)")
_MB = 1e6


def summarise(mem_log: Path) -> dict[str, float | int | None]:
    peaks: dict[str, int] = {}
    samples, end = 0, {}
    for line in mem_log.read_text().splitlines():
        if line.startswith("rc="):
            end = {k: int(v) for k, v in _BYTES.findall(line)}
            continue
        samples += 1
        for key, kb in _KB.findall(line):
            peaks[key] = max(peaks.get(key, 0), int(kb) * 1024)
        for key, value in _BYTES.findall(line):
            peaks[f"cgroup_{key}"] = max(peaks.get(f"cgroup_{key}", 0), int(value))
    return {
        "samples_every_10s": samples,
        "trainer_peak_rss_mb": peaks.get("VmRSS", 0) / _MB,
        "trainer_peak_anon_mb": peaks.get("RssAnon", 0) / _MB,
        "trainer_peak_file_mb": peaks.get("RssFile", 0) / _MB,
        "cgroup_peak_usage_mb": end.get("max_usage", peaks.get("cgroup_max", 0)) / _MB,
        "cgroup_peak_anon_mb": peaks.get("cgroup_rss", 0) / _MB,
        "cgroup_peak_page_cache_mb": peaks.get("cgroup_cache", 0) / _MB,
        "cgroup_limit_hits": end.get("failcnt"),
        "exit_status": end.get("rc"),
    }


def _gnu_time(path: Path) -> dict[str, float]:
    text = path.read_text()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    out: dict[str, float] = {}
    if rss:
        out["time_v_max_rss_mb"] = int(rss.group(1)) * 1024 / _MB
    if wall:
        seconds = 0.0
        for part in wall.group(1).split(":"):
            seconds = 60 * seconds + float(part)
        out["wall_clock_s"] = seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mem_log", type=Path)
    parser.add_argument("--time", type=Path, help="GNU time -v's output for the same run")
    parser.add_argument("--dataset", type=Path, help="the engine dataset: its size on disk")
    parser.add_argument("--limit-gib", type=float, default=2.0, help="the cgroup's limit the run had")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result: dict[str, object] = {"cgroup_limit_mb": args.limit_gib * 2**30 / _MB, **summarise(args.mem_log)}
    if args.time:
        result.update(_gnu_time(args.time))
    if args.dataset:
        result["dataset_mb"] = sum(p.stat().st_size for p in args.dataset.rglob("*") if p.is_file()) / _MB
    print(json.dumps(result, indent=2))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
