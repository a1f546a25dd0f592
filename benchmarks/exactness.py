#!/usr/bin/env python
"""Exactness of the integer export on briefly trained ResNet-20s (W2A2, W4A4) and the authors' checkpoints.

Not a speed benchmark: the record behind the README's exactness table. For each bit-width in ``--bits``, ResNet-20
WbAb starts from the authors' FP file and takes ``--steps`` SGD steps (the recipe's optimizers, SGD at lr 0.01) on
batches of 128 images of the JPEG copy's training set (a fixed random pick, ``--seed``); the authors' W1A1 and W1A32
checkpoints are taken as they are. On the exact first 1,000 CIFAR-10 test images the script then compares

* the fake-quant network (float32) with its integer form (``daq.export.to_integer``, float32 float parts):
  argmax agreement, share of activation levels that differ, max logit difference, both accuracies;
* the same two in float64 (the fake-quant network ``frozen``: its weights quantized once, in float32, as the integer
  form's levels were), and that float64 fake-quant network against the float32 one;
* the integer network's ONNX file (``export_onnx``) in ONNX Runtime against the PyTorch integer network.

Run from the repository root (needs the shared folder and the ``export`` extra)::

    python benchmarks/exactness.py --json exactness.json
"""
import argparse, sys, tempfile, time
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))                  # run from a checkout without installing
sys.path.insert(0, str(HERE))
from dasr import add_record_arguments, machine_info, write_record
from daq.checkpoints import load_authors_checkpoint, load_npz_images
from daq.data import cifar10_arrays, normalize
from daq.export import compare, export_onnx, frozen, onnx_logits, to_integer
from daq.models import resnet20
from daq.shared import shared_file
from daq.train import get_recipe, initialize_from, make_optimizers


def briefly_trained(bits: int, args) -> nn.Module:
    "ResNet-20 WbAb from the authors' FP file after `--steps` steps of 128 JPEG training images."
    torch.manual_seed(args.seed)
    images, labels = cifar10_arrays(shared_file('cifar10-jpeg', args.shared), 'train', progress=False)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:128 * args.steps]
    model = initialize_from(resnet20(bits, bits), shared_file('authors-fp', args.shared)).train()
    optimizers, _ = make_optimizers(model, get_recipe(f'cifar10-w{bits}a{bits}'))
    for group in optimizers[0].param_groups: group['lr'] = 0.01     # the recipe's 0.1 is for 400 epochs
    for batch in pick.split(128):
        loss = nn.functional.cross_entropy(model(normalize(images[batch])), labels[batch].long())
        for o in optimizers: o.zero_grad()
        loss.backward()
        for o in optimizers: o.step()
    return model.eval()


@torch.no_grad()
def measure(label: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, tmp: Path) -> dict:
    integer = to_integer(model)
    row = dict(network=label, float32=compare(model, integer, x, y))
    onnx_path = export_onnx(integer, tmp / 'model.onnx', x[:2])
    agree = onnx_logits(onnx_path, x).argmax(1) == integer(x).argmax(1)
    row['onnx_vs_integer_agreement'] = agree.float().mean().item()
    # float64: the fake-quant network with its float32-quantized weights (`frozen`; recomputing them in float64 would
    # move the weights that lie within float32 round-off of a rounding threshold), the integer one as it is
    fake64, fake32 = frozen(model).double(), model(x).argmax(1)
    integer.double()
    row['float64'] = compare(fake64, integer, x.double(), y)
    row['fake_float64_vs_float32_agreement'] = (fake64(x.double()).argmax(1) == fake32).float().mean().item()
    integer.float()
    f, d = row['float32'], row['float64']
    print(f"{label:28s} float32: agreement {100 * f['agreement']:.1f} %, levels differing {f['level_mismatch']:.2e}, "
          f"acc {100 * f['accuracy_fake']:.1f}/{100 * f['accuracy_integer']:.1f} % | float64: agreement "
          f"{100 * d['agreement']:.1f} %, levels {d['level_mismatch']:.2e} | fake f64 vs f32 "
          f"{100 * row['fake_float64_vs_float32_agreement']:.1f} % | ONNX vs integer "
          f"{100 * row['onnx_vs_integer_agreement']:.1f} %", flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--bits', type=lambda s: [int(b) for b in s.split(',') if b], default=[2, 4])
    p.add_argument('--steps', type=int, default=25, help='training steps of 128 images')
    p.add_argument('--images', type=int, default=1000, help='exact test images to compare on')
    p.add_argument('--authors', action=argparse.BooleanOptionalAction, default=True,
                   help="also the authors' W1A1 and W1A32 checkpoints")
    add_record_arguments(p, threads=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    x, y = load_npz_images(shared_file('cifar10-exact-1000', args.shared))
    x, y = x[:args.images], y[:args.images]
    networks = {}
    if args.authors:
        folder = shared_file('authors-checkpoints', args.shared)
        networks['authors W1A1'] = load_authors_checkpoint(folder / 'cifar10_W1A1.pth', 1, 1)
        networks['authors W1A32'] = load_authors_checkpoint(folder / 'cifar10_W1A32.pth', 1, None)
    for bits in args.bits: networks[f'W{bits}A{bits}, {args.steps} steps from FP'] = briefly_trained(bits, args)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(label, model, x, y, Path(tmp)) for label, model in networks.items()]
    record = dict(machine=machine_info(torch.device('cpu')), results=rows, wall_s=round(time.perf_counter() - start, 1))
    if args.json: write_record(args, **record)


if __name__ == '__main__':
    main()
