#!/usr/bin/env bash
# Copy the campaign's run records (not its checkpoints) from its run directories into this folder.
#   bash results/cifar10-cpu-seeds/collect.sh [RUNS_DIR]        (default RUNS_DIR: ~/daq-runs/cifar10-cpu-seeds)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST=$here exec bash "$here/../cifar10-cpu-15ep/collect.sh" "${1:-$HOME/daq-runs/cifar10-cpu-seeds}"
