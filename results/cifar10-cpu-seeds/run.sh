#!/usr/bin/env bash
# The seeds-and-schedule campaign of issue 1/5 (does DAQ beat STE?): W1A1 DASR and STE at 15 epochs with seeds 1 and
# 2 (seed 0 is in ../cifar10-cpu-15ep), and at 30 epochs with seed 0; then, if the machine has time, W1A32 at 15
# epochs with seeds 1 and 2, and W1A1 at 60 epochs with seed 0. Two lanes side by side, one torch thread each:
# lane 1 runs the DASR runs, lane 2 the STE runs, in the same order, so each pair finishes at about the same time.
# Resumable: run the same command again and every unfinished run continues from its last.pt, bit for bit.
#   bash results/cifar10-cpu-seeds/run.sh [RUNS_DIR]        (default RUNS_DIR: ~/daq-runs/cifar10-cpu-seeds)
# Environment: PYTHON (default: .venv/bin/python), SHARED (default: ../shared), STAGE (w1a1: the six W1A1 runs only;
# all, the default: the optional runs after them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs=${1:-$HOME/daq-runs/cifar10-cpu-seeds}
py=${PYTHON:-.venv/bin/python}
shared=${SHARED:-../shared}
stage=${STAGE:-all}
mkdir -p "$runs"
common=(--data "$shared/data/cifar10/cifar10-jpeg75.tar.xz" --shared "$shared" --device cpu
        --exact-test "$shared/data/cifar10/test-exact-1000.npz" --no-progress)
run() {   # name, epochs, seed, daq-train arguments...
    local name=$1 epochs=$2 seed=$3; shift 3
    [ -f "$runs/$name/summary.json" ] && [ "$(grep -c . "$runs/$name/metrics.jsonl")" -ge "$epochs" ] && return 0
    echo "$(date -u +%FT%TZ) start $name" >> "$runs/campaign.log"
    OMP_NUM_THREADS=1 "$py" -c 'from daq.train import train_cli; train_cli()' "${common[@]}" \
        --epochs "$epochs" --seed "$seed" --run-dir "$runs/$name" "$@" >> "$runs/$name.out" 2>&1
    echo "$(date -u +%FT%TZ) done $name" >> "$runs/campaign.log"
}
lane() {  # rounding: dasr | ste
    local r=$1 extra=(); [ "$1" = ste ] && extra=(--set rounding=ste)
    run "w1a1-$r-15ep-s1" 15 1 --recipe cifar10-w1a1 "${extra[@]}"
    run "w1a1-$r-15ep-s2" 15 2 --recipe cifar10-w1a1 "${extra[@]}"
    run "w1a1-$r-30ep-s0" 30 0 --recipe cifar10-w1a1 "${extra[@]}"
    [ "$stage" = w1a1 ] && return 0
    run "w1a32-$r-15ep-s1" 15 1 --recipe cifar10-w1a32 "${extra[@]}"
    run "w1a32-$r-15ep-s2" 15 2 --recipe cifar10-w1a32 "${extra[@]}"
    run "w1a1-$r-60ep-s0" 60 0 --recipe cifar10-w1a1 "${extra[@]}"
}
lane dasr & lane ste & wait
