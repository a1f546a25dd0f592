#!/usr/bin/env bash
# The CPU training campaign of issue 2/7: five 15-epoch runs on all 50,000 training images of the JPEG copy.
# Resumable: run the same command again and every unfinished run continues from its last.pt, bit for bit.
#   bash results/cifar10-cpu-15ep/run.sh [RUNS_DIR]        (default RUNS_DIR: ~/daq-runs/cifar10-cpu-15ep)
# Environment: PYTHON (default: .venv/bin/python), SHARED (default: ../shared), LANES (1: one run at a time with
# THREADS=2 by default; 2: two runs side by side, one thread each), THREADS (torch threads per run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs=${1:-$HOME/daq-runs/cifar10-cpu-15ep}
py=${PYTHON:-.venv/bin/python}
shared=${SHARED:-../shared}
lanes=${LANES:-1}
threads=${THREADS:-$((lanes == 1 ? 2 : 1))}
mkdir -p "$runs"
common=(--data "$shared/data/cifar10/cifar10-jpeg75.tar.xz" --shared "$shared" --epochs 15 --seed 0 --device cpu
        --exact-test "$shared/data/cifar10/test-exact-1000.npz" --no-progress)
run() {   # name, daq-train arguments...
    local name=$1; shift
    [ -f "$runs/$name/summary.json" ] && [ "$(grep -c . "$runs/$name/metrics.jsonl")" -ge 15 ] && return 0
    echo "$(date -u +%FT%TZ) start $name" >> "$runs/campaign.log"
    OMP_NUM_THREADS=$threads "$py" -c 'from daq.train import train_cli; train_cli()' "${common[@]}" \
        --run-dir "$runs/$name" "$@" > "$runs/$name.out" 2>&1
    echo "$(date -u +%FT%TZ) done $name" >> "$runs/campaign.log"
}
w1a1() { run w1a1-dasr --recipe cifar10-w1a1; run w1a1-ste --recipe cifar10-w1a1 --set rounding=ste; }
w1a32() { run w1a32-dasr --recipe cifar10-w1a32; run w1a32-ste --recipe cifar10-w1a32 --set rounding=ste; }
fp() { run fp --recipe cifar10-fp --init authors-fp --set lr=0.01; }     # fine-tuning: the recipe's lr 0.1 scaled by 1/10
if [ "$lanes" = 2 ]; then { w1a1; fp; } & w1a32 & wait; else w1a1; w1a32; fp; fi
