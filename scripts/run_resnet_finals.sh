#!/usr/bin/env bash
# The issue-11 runs, one after another (never two trainings at once on 2 cores), each into its own folder with its
# launch time (launched_at, seconds since the epoch) and its stdout/stderr (stdout.log):
#   nohup bash scripts/run_resnet_finals.sh > outputs/final/chain.log 2>&1 &
# Per-epoch test accuracy (report.test_each_epoch) is only for the time-to-94%/95% columns: see
# scripts/time_to_accuracy.py. Selection stays on validation.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python}
# threads=1 by default: with other processes on the 2 cores, two threads ran ~10x slower than one (OpenMP threads
# wait for each other); THREADS=2 on an idle machine. Recorded in each metrics.json.
run() {  # run <folder name> <experiment> <seed>
    local dir=outputs/final/$1
    mkdir -p "$dir"
    date +%s.%N > "$dir/launched_at"
    $PY train.py experiment="$2" seed="$3" trainer.precision=bf16-mixed threads=${THREADS:-1} report.test_each_epoch=true \
        hydra.run.dir="$dir" > "$dir/stdout.log" 2>&1
    echo "$1 exit $? at $(date +%T)"
}
run resnet_short_s0 resnet_short 0
run resnet_s0 resnet 0
run resnet_short_s1 resnet_short 1
run resnet_short_s2 resnet_short 2
