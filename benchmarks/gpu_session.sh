#!/bin/bash
# The GPU checks and benchmarks of daq as one script, for a lent GPU machine with a short time budget.
#
#   bash benchmarks/gpu_session.sh prepare     # here, before: copy CIFAR-10 + the authors' FP checkpoint into .gpu/
#   bash benchmarks/gpu_session.sh run         # there, from the checkout root (carry .gpu); results under $OUT
#   bash benchmarks/gpu_session.sh run step-cuda epoch-cuda     # only these parts (names below), in this order
#
# Parts, correctness first, then cheapest first: compile-check (compiled == eager gradients of a W1A1 and a W2A2
# ResNet-20 step on CUDA, in float64), dasr-cuda (~1 min with compilation), step-cuda, step-cuda-cl,
# step-cuda-compiled, epoch-cuda (3 epochs of cifar10-w1a1 and of cifar10-fp), epoch-cuda-compiled (the same with
# --compile: several minutes of compilation), train-w1a1 (the full cifar10-w1a1 recipe on the JPEG copy for as long
# as TRAIN_TIMEOUT allows, default 240 s; its run record, written every epoch, lands in $OUT/cifar10-w1a1/).
# Each part runs under STEP_TIMEOUT seconds (default 300); with a 10-minute limit per call, run the last one alone.
#
# `run` needs only torch (+ numpy, tqdm) and this checkout on PYTHONPATH. Each benchmark first checks that the fused
# GPU kernels equal the eager reference (outputs exactly, gradients to float32 precision) and stops otherwise; then it
# prints its ratios and writes JSON. Logs, JSON and nvidia-smi's view go to $OUT (default gpu-results/).
set -u
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
    src="${DAQ_SHARED:-../shared}"
    mkdir -p .gpu/shared/data/cifar10 .gpu/shared/checkpoints/official-daq
    cp "$src/data/cifar10/cifar10-jpeg75.tar.xz" .gpu/shared/data/cifar10/
    cp "$src/checkpoints/official-daq/cifar10_fp.pth" .gpu/shared/checkpoints/official-daq/
    cp "$src/data/cifar10/test-exact-1000.npz" .gpu/shared/data/cifar10/
    du -sh .gpu ;;
run)
    OUT="${OUT:-gpu-results}"; mkdir -p "$OUT"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" DAQ_SHARED="${DAQ_SHARED:-$PWD/.gpu/shared}" DAQ_CACHE="${DAQ_CACHE:-$PWD/.gpu/cache}"
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    status=0
    step() { name=$1; shift; echo "== $name: $*"; timeout "${STEP_TIMEOUT:-300}" python "$@" --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.txt"; s=${PIPESTATUS[0]}; [ "$s" = 0 ] || { echo "!! $name exited $s"; status=1; }; }
    shift
    parts=("$@"); [ ${#parts[@]} -gt 0 ] || parts=(compile-check dasr-cuda step-cuda step-cuda-cl epoch-cuda train-w1a1)
    for part in "${parts[@]}"; do
        case "$part" in
        compile-check) echo "== compile-check"; timeout "${STEP_TIMEOUT:-300}" python -c '
import torch, torch.nn.functional as F
from daq.models import resnet20
from daq.train import check_compiled_gradients
for bits in (1, 2):
    torch.manual_seed(0); x, y = torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    e = check_compiled_gradients(resnet20(bits, bits).cuda(), x, y)
    print(f"W{bits}A{bits}: compiled == eager, largest relative error {max(e.values()):.1e} over {len(e)} gradients")
' 2>&1 | tee "$OUT/compile-check.txt"; [ "${PIPESTATUS[0]}" = 0 ] || { echo "!! compile-check failed"; status=1; } ;;
        dasr-cuda) step dasr-cuda benchmarks/dasr.py --device cuda --bits 1 --skip-reference ;;
        step-cuda-compiled) step step-cuda-compiled benchmarks/step.py --device cuda --batch 256 --compile --methods fp,daq ;;
        train-w1a1) echo "== train-w1a1"; timeout "${TRAIN_TIMEOUT:-240}" python -c 'from daq.train import train_cli; train_cli()' \
                --recipe cifar10-w1a1 --device cuda --no-progress --run-dir "$OUT/cifar10-w1a1" \
                --exact-test "$DAQ_SHARED/data/cifar10/test-exact-1000.npz" 2>&1 | tail -5 | tee "$OUT/train-w1a1.txt"
            rm -f "$OUT"/cifar10-w1a1/*.pt ;;   # the record (config, metrics, summary) comes back, not the checkpoints
        step-cuda) step step-cuda benchmarks/step.py --device cuda --batch 256 ;;
        step-cuda-cl) step step-cuda-cl benchmarks/step.py --device cuda --batch 256 --channels-last ;;
        epoch-cuda) step epoch-cuda benchmarks/epoch.py --device cuda --epochs 3 --channels-last --no-progress ;;
        epoch-cuda-compiled) step epoch-cuda-compiled benchmarks/epoch.py --device cuda --epochs 3 --channels-last --compile --no-progress ;;
        *) echo "unknown part $part" >&2; status=2 ;;
        esac
    done
    exit $status ;;
*)
    echo "usage: $0 prepare | run [part ...]" >&2; exit 2 ;;
esac
