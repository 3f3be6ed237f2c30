#!/usr/bin/env bash
# The neural game engine's hour on 2 CPU cores (issue 19; figures in benchmarks/results/README.md):
# record full-resolution Freeway, then train the cpu preset inside a memory cgroup smaller than the dataset,
# sampling the trainer's memory every 10 s. Needs root and cgroup v1's memory controller.
#
#   bash benchmarks/engine_hour_cpu.sh <data folder> <run folder> [limit GiB, default 2]
#
# Writes <run folder>.log (the trainer's output), .time (GNU time -v) and .mem (one line per sample: the
# trainer's VmRSS/RssAnon/RssFile, then the cgroup's usage, max usage, page cache and anonymous memory,
# ending with the exit status, the cgroup's peak and its count of hits on the limit); summarise with
# benchmarks/engine_memory_log.py.
set -u
DATA=$1 RUN=$2 GIB=${3:-2}
CG=/sys/fs/cgroup/memory/diffworld_engine_$$
mkdir -p "$CG" && echo $((GIB * 1024 * 1024 * 1024)) > "$CG/memory.limit_in_bytes"
if [ ! -f "$DATA/dataset.json" ]; then
  diffworld engine record env=ALE/Freeway-v5 steps=40000 out="$DATA" seed=0
fi
echo $$ > "$CG/tasks"  # this shell and all it starts from now on
/usr/bin/time -v -o "$RUN.time" diffworld engine train data="$DATA" preset=cpu run_dir="$RUN" > "$RUN.log" 2>&1 &
PID=$!
while kill -0 $PID 2>/dev/null; do
  TRAINER=$(pgrep -P $PID | head -1)
  STATUS=""
  [ -n "$TRAINER" ] && STATUS=$(grep -E 'VmRSS|RssAnon|RssFile' "/proc/$TRAINER/status" 2>/dev/null | tr -s ' \n' ' ')
  echo "$(date +%s) $STATUS usage=$(cat "$CG/memory.usage_in_bytes") max=$(cat "$CG/memory.max_usage_in_bytes")" \
    "cache=$(grep -w total_cache "$CG/memory.stat" | cut -d' ' -f2) rss=$(grep -w total_rss "$CG/memory.stat" | cut -d' ' -f2)" >> "$RUN.mem"
  sleep 10
done
wait $PID
echo "rc=$? max_usage=$(cat "$CG/memory.max_usage_in_bytes") failcnt=$(cat "$CG/memory.failcnt")" >> "$RUN.mem"
echo $$ > /sys/fs/cgroup/memory/tasks && rmdir "$CG"
