#!/usr/bin/env python
"""How close `quantize_model` + `calibrate` get to full precision without training (issue 6/7's numbers).

Two measurements, both with the default 'mse' rule and `keep_mean`, per tensor and per channel:

* **trained**: the authors' FP ResNet-20 (`cifar10_fp.pth`) quantized at each of ``--bits`` (weights and inputs),
  calibrated on ``--calibration`` images of the JPEG copy's training set (a fixed random pick, ``--seed``), and
  evaluated on the exact first 1,000 CIFAR-10 test images (full precision: 91.8 %);
* **zoo**: torchvision models with random weights (batch norm in eval mode; ViT's zero-initialised head drawn
  normal(0, 0.02)) at W8A8, calibrated on ``--zoo-images`` random ``--size`` px inputs: the relative norm of the
  logits' difference to full precision on the same inputs, beside `minmax_baseline` (plain per-tensor min/max 8-bit
  fake quantization of the same layers) as the yardstick.

Run from the repository root (needs the shared folder: ``--shared`` or ``$DAQ_SHARED``)::

    python benchmarks/calibration.py --json calibration.json
"""
import argparse, sys, time, warnings
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))                  # run from a checkout without installing
sys.path.insert(0, str(HERE))
from dasr import add_record_arguments, machine_info, write_record
from daq.checkpoints import accuracy, load_authors_checkpoint, load_npz_images
from daq.data import cifar10_arrays, normalize
from daq.networks import calibrate, minmax_baseline, quantize_model
from daq.shared import shared_file


def trained(args) -> list:
    "The authors' FP ResNet-20 at each bit-width, calibrated, on the exact 1,000."
    images, _ = cifar10_arrays(shared_file('cifar10-jpeg', args.shared), 'train', progress=False)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:args.calibration]
    calib, (x, y) = normalize(images[pick]), load_npz_images(shared_file('cifar10-exact-1000', args.shared))
    rows = []
    for bits in args.bits:
        for per_channel in (False, True):
            model = load_authors_checkpoint(shared_file('authors-fp', args.shared), None, None)
            quantize_model(model, bits, bits, per_channel=per_channel)
            start = time.perf_counter()
            calibrate(model, calib.split(64), progress=False)
            rows.append(dict(bits=bits, per_channel=per_channel, accuracy=accuracy(model, x, y),
                             calibration_s=round(time.perf_counter() - start, 2)))
            print(f"ResNet-20 W{bits}A{bits} {'per channel' if per_channel else 'per tensor '}: "
                  f"{100 * rows[-1]['accuracy']:.1f} %", flush=True)
    return rows


def zoo_model(arch: str, size: int) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10, **(dict(image_size=size) if arch.startswith('vit')
                                                                  else {})).eval()
    if arch.startswith('vit'): nn.init.normal_(model.heads.head.weight, std=0.02)    # torchvision zeroes it
    return model


@torch.no_grad()
def zoo(args) -> list:
    "W8A8 logits error after calibration, per tensor, per channel and plain min/max."
    rows = []
    for arch in args.zoo:
        fp = zoo_model(arch, args.size)
        x = torch.randn(args.zoo_images, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
        ref, batches = fp(x), x.split(max(1, args.zoo_images // 2))
        def relative(model): return float((model(x) - ref).norm() / ref.norm())
        row = dict(model=arch, minmax=relative(minmax_baseline(fp, batches)))
        for per_channel in (False, True):
            model = zoo_model(arch, args.size)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')
                quantize_model(model, 8, 8, per_channel=per_channel)
            calibrate(model, batches, progress=False)
            row['per_channel' if per_channel else 'per_tensor'] = relative(model)
            row['left_full_precision'] = [str(w.message) for w in caught]
        rows.append(row)
        print(f"{arch:16s} per tensor {100 * row['per_tensor']:.2f} %  per channel {100 * row['per_channel']:.2f} %  "
              f"min/max {100 * row['minmax']:.2f} %", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--bits', type=lambda s: [int(b) for b in s.split(',')], default=[8, 4, 3, 2])
    p.add_argument('--calibration', type=int, default=256, help='calibration images of the JPEG training set')
    p.add_argument('--zoo', type=lambda s: [a for a in s.split(',') if a],
                   default=['resnet18', 'mobilenet_v2', 'efficientnet_b0', 'convnext_tiny', 'vit_b_16'])
    p.add_argument('--zoo-images', type=int, default=8)
    p.add_argument('--size', type=int, default=32)
    add_record_arguments(p, threads=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    record = dict(machine=machine_info(torch.device('cpu')), trained=trained(args) if args.bits else [],
                  zoo=zoo(args))
    record['wall_s'] = round(time.perf_counter() - start, 1)
    if args.json: write_record(args, **record)


if __name__ == '__main__':
    main()
