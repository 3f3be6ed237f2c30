#!/usr/bin/env bash
# An engine that plays Breakout, trained on 2 CPU cores (issue 26 B; figures in benchmarks/results/README.md,
# "An engine that plays Breakout"). Each step is resumable: run the script again after a kill or in a later
# session and it goes on where it stopped (the recording with --resume, the training from its checkpoint;
# the cpu preset stops at 180 minutes of training summed over resumes).
#
#   bash benchmarks/engine_breakout_cpu.sh <data folder> <run folder> <results folder>
#
# Why Breakout: its objects are large (a wall of bricks, a 16-pixel paddle) and what the player does shows
# at once (the paddle moves left or right every step), so the engine's action fidelity can be measured on a
# policy that moves: random play, which also keeps the ball in play (FIRE a quarter of the time). Sticky
# actions are off (repeat_action_probability 0), so that the real game's outcome of an action is a function
# of its state, as action fidelity assumes.
set -eu
DATA=$1 RUN=$2 OUT=$3
export OMP_NUM_THREADS=2
if [ ! -f "$DATA/dataset.json" ]; then
  RESUME=""
  [ -d "$DATA" ] && RESUME="--resume"
  diffworld engine record $RESUME env=ALE/Breakout-v5 env.repeat_action_probability=0.0 steps=40000 \
    out="$DATA" seed=0
fi
if [ -f "$RUN/config.yaml" ]; then
  diffworld engine train --resume "$RUN" >> "$RUN.log" 2>&1
else
  diffworld engine train data="$DATA" preset=cpu seed=0 run_dir="$RUN" > "$RUN.log" 2>&1
fi
mkdir -p "$OUT"
# Held-out play: the dataset's test episodes (quality), and the real game from another seed (action fidelity).
diffworld engine eval "$RUN" --trajectories 32 --fidelity-states 200 --out "$OUT/quality.json"
diffworld wm-eval "$RUN" --out-dir "$OUT/wm_eval"
diffworld video "$RUN" --out "$OUT/real_vs_imagined.mp4" --steps 200
python benchmarks/engine_play_fps.py "$RUN" --steps 200 --threads 2 --json "$OUT/play_fps_cpu2.json"
diffworld plot "$RUN" --out "$OUT/learning_curves.png"
diffworld plot "$RUN" --out "$OUT/test_psnr_full_res.png" --keys engine/test/psnr_full_h1 engine/test/psnr_full_h10 \
  engine/test/psnr_full_h100 engine/test/psnr_full_h10_copy_last_frame engine/test/psnr_full_h100_copy_last_frame
cp "$RUN/config.yaml" "$RUN/metrics.jsonl" "$OUT/"
