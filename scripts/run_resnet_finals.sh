#!/usr/bin/env bash
# The runs behind docs/RESULTS.md's ResNet tables, one after another (never two trainings at once on 2 cores), each
# into $FINALS/<exp>_s<seed>/ (default outputs/final) with its launch time (launched_at, seconds since the epoch) and
# its stdout/stderr (stdout.log):
#   nohup bash scripts/run_resnet_finals.sh resnet_short:0 resnet_short:1 resnet_short:2 > outputs/final/chain.log 2>&1 &
# With no arguments: resnet_short and resnet, seeds 0-2. Each run keeps a checkpoint per epoch (callbacks=every_epoch)
# so that scripts/time_to_accuracy.py can test them afterwards for the time-to-94%/95% columns, outside the timed run
# (testing inside it, report.test_each_epoch=true, adds a test pass per epoch to the wall time); the checkpoint is
# chosen on validation.
# precision=auto (the default) picks bf16-mixed where the CPU runs it natively and faster, fp32 elsewhere.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python}
# 2 threads on an idle machine; THREADS=1 when other processes share the 2 cores (two OpenMP threads then wait for
# each other: ~10x slower, docs/RESULTS.md). Recorded in each metrics.json.
THREADS=${THREADS:-2}
FINALS=${FINALS:-outputs/final}
RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(resnet_short:0 resnet_short:1 resnet_short:2 resnet:0 resnet:1 resnet:2)
for spec in "${RUNS[@]}"; do
    exp=${spec%%:*} seed=${spec##*:}
    dir=$FINALS/${exp}_s${seed}
    # never into an existing folder: a finished run, one still running, or a crashed one (resume it by hand)
    if [ -e "$dir" ]; then echo "$dir exists (finished, running or crashed: see its stdout.log): skipped"; continue; fi
    mkdir -p "$dir"
    date +%s.%N > "$dir/launched_at"
    $PY train.py experiment="$exp" seed="$seed" threads="$THREADS" callbacks=every_epoch \
        callbacks.progress_bar.refresh_rate=200 hydra.run.dir="$dir" > "$dir/stdout.log" 2>&1
    echo "$dir exit $? at $(date +%T)"
done
