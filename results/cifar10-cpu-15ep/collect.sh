#!/usr/bin/env bash
# Copy the campaign's run records (not its checkpoints) from its run directories into this folder.
#   bash results/cifar10-cpu-15ep/collect.sh [RUNS_DIR]        (default RUNS_DIR: ~/daq-runs/cifar10-cpu-15ep)
# DEST: the folder the records go to (default: this one; other campaigns call this script with theirs).
set -euo pipefail
here=${DEST:-"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"}
runs=${1:-$HOME/daq-runs/cifar10-cpu-15ep}
for d in "$runs"/*/; do
    name=$(basename "$d")
    [ -s "$d/metrics.jsonl" ] || continue          # a run that has not finished an epoch yet
    mkdir -p "$here/$name"
    for f in config.json metrics.jsonl summary.json; do
        if [ -f "$d/$f" ]; then cp "$d/$f" "$here/$name/$f"; else rm -f "$here/$name/$f"; fi
    done
    echo "$name: $(grep -c . "$d/metrics.jsonl") epochs$([ -f "$d/summary.json" ] && echo ', finished')"
done
