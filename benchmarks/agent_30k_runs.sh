#!/usr/bin/env bash
# Does the quick preset's agent keep learning past 10,000 env steps? (issue 27, point 2; figures in
# benchmarks/results/README.md, "The agent past 10,000 steps".)
#
#   taskset -c <core> bash benchmarks/agent_30k_runs.sh <seed> <runs folder> [<game>] [<last env step>]
#
# One seed: the quick preset on <game> (default Krull) to its 10,000 env steps, with its final evaluation
# (20 whole games), then the same run on to <last env step> (default 30,000) as a branch of its last
# checkpoint (diffworld train --branch) with the same final evaluation: the two means compare on one protocol,
# and the second run trains exactly what one unbroken run to 30,000 steps trains (tests/test_branch.py).
# Resumable: run the script again and it goes on where it stopped; finished runs are skipped.
set -eu
SEED=$1 ROOT=$2 GAME=${3:-Krull} LAST=${4:-30000}
export OMP_NUM_THREADS=1
BASE="$ROOT/${GAME,,}_s$SEED"
LONG="${BASE}_to$((LAST / 1000))k"

finished() { [ -f "$1/eval.json" ]; }

if ! finished "$BASE"; then
  if [ -f "$BASE/config.yaml" ]; then
    diffworld train --resume "$BASE" >> "$BASE.log" 2>&1
  else
    diffworld train game="$GAME" preset=quick seed="$SEED" run_dir="$BASE" > "$BASE.log" 2>&1
  fi
fi
if ! finished "$LONG"; then
  if [ -f "$LONG/config.yaml" ]; then
    diffworld train --resume "$LONG" >> "$LONG.log" 2>&1
  else
    diffworld train --branch "$BASE" collection.total_env_steps="$LAST" run_dir="$LONG" > "$LONG.log" 2>&1
  fi
fi
diffworld wm-eval "$LONG" --out-dir "$LONG/wm_eval" >> "$LONG.log" 2>&1
