#!/usr/bin/env bash
# Copy the campaign's run records (not its checkpoints) from its run directories into this folder.
#   bash results/cifar10-cpu-seeds/collect.sh [RUNS_DIR]        (default RUNS_DIR: ~/daq-runs/cifar10-cpu-seeds)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runs=${1:-$HOME/daq-runs/cifar10-cpu-seeds}
for d in "$runs"/*/; do
    name=$(basename "$d")
    [ -s "$d/metrics.jsonl" ] || continue          # a run that has not finished an epoch yet
    mkdir -p "$here/$name"
    for f in config.json metrics.jsonl summary.json; do
        if [ -f "$d/$f" ]; then cp "$d/$f" "$here/$name/$f"; else rm -f "$here/$name/$f"; fi
    done
    echo "$name: $(grep -c . "$d/metrics.jsonl") epochs$([ -f "$d/summary.json" ] && echo ', finished')"
done
