#!/usr/bin/env bash
# Why does the quick preset's agent get worse after 10,000 env steps? (issue 27, point 1; figures in
# benchmarks/results/README.md, "The agent past 10,000 steps: controlled runs".)
#
#   taskset -c <core> bash benchmarks/agent_controlled_runs.sh <seed> <runs folder> [<last env step>]
#
# One seed: the quick preset on Krull to 10,000 env steps (the shared checkpoint), then branches of its last
# checkpoint to <last env step> (default 15,000), each changing one thing (diffworld train --branch):
#   on           nothing (the control: the preset run on)
#   frozen_wm    the world model frozen at 10,000 steps (no denoiser or reward-model updates), the actor-critic on
#   frozen_ac    the reverse: the actor-critic frozen, the world model on
#   uniform      imagination starts drawn uniformly over the dataset instead of 70 % from the newest quarter
#   updates_x2   twice the updates per collected step for all three models
# Every run is resumable: run the script again and it goes on where it stopped; finished runs are skipped.
set -eu
SEED=$1 ROOT=$2 LAST=${3:-15000}
export OMP_NUM_THREADS=1
BASE="$ROOT/krull_s$SEED"

finished() { [ -f "$1/eval.json" ]; }

if ! finished "$BASE"; then
  if [ -f "$BASE/config.yaml" ]; then
    diffworld train --resume "$BASE" > "$BASE.log" 2>&1
  else
    diffworld train game=Krull preset=quick seed="$SEED" run_dir="$BASE" > "$BASE.log" 2>&1
  fi
fi

branch() {
  local name=$1
  shift
  local run="$ROOT/krull_s${SEED}_$name"
  finished "$run" && return 0
  if [ -f "$run/config.yaml" ]; then
    diffworld train --resume "$run" > "$run.log" 2>&1
  else
    diffworld train --branch "$BASE" collection.total_env_steps="$LAST" run_dir="$run" "$@" > "$run.log" 2>&1
  fi
}

branch on
branch frozen_wm denoiser.training.steps_per_epoch=0 reward_model.training.steps_per_epoch=0
branch frozen_ac actor_critic.training.steps_per_epoch=0
branch uniform "actor_critic.training.sample_weights=[0.25,0.25,0.25,0.25]"
branch updates_x2 denoiser.training.steps_per_epoch=40 reward_model.training.steps_per_epoch=30 \
  actor_critic.training.steps_per_epoch=30
