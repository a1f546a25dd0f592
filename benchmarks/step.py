#!/usr/bin/env python
"""Side-by-side training-step benchmark: ResNet-20 in full precision vs DAQ vs STE vs DAQ's eager reference path.

One training step = forward, cross-entropy, zero_grad, backward, optimizer step(s) (SGD for the network, plus Adam
for the quantizer parameters as in the `cifar10-w1a1` recipe), on the same random batch, with no host
synchronisation inside the step. Methods:

* ``fp``     -- ``resnet20(None, None)``: the full-precision network (the baseline);
* ``daq``    -- ``resnet20(bits, bits)`` on its default path (fused quantizer kernels);
* ``ste``    -- the same network with ``rounding='ste'`` (round, identity gradient): the cheapest quantized step;
* ``eager``  -- ``daq`` with ``DAQ_FUSED=0`` (plain PyTorch ops, the reference the fused kernels are tested against).

``--arch resnet18`` times torchvision's ResNet-18 instead (``daq.train.build_model`` of the ``imagenet-r18-w2a2``
recipe with the bits of ``--bits``, random weights, 1000 classes, 224x224 inputs; the FP net is the same recipe
without quantizers), with that recipe's optimizers.

Before timing, the script checks that ``daq`` and ``eager`` give the same loss and gradients on the same weights.
It reports the median and minimum step time per method (methods interleaved round-robin), the ratio to ``fp``,
images/s, and memory: on CUDA the peak allocated memory during a step; everywhere, the bytes autograd saves for
the backward (distinct storages), each over ``fp``'s.

Run from the repository root::

    python benchmarks/step.py                                 # CPU, batch 128, 1 bit
    python benchmarks/step.py --device cuda --batch 256 --channels-last
    python benchmarks/step.py --arch resnet18 --bits 2 --batch 32 --methods fp,daq
"""
import argparse, statistics, sys, time, warnings
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))                  # run from a checkout without installing
sys.path.insert(0, str(HERE))
# shared helpers of the quantizer benchmark
from dasr import daq_fused, machine_info, CpuShare, sync, setup_device, write_record
from daq.models import resnet20
from daq.train import get_recipe, build_model, make_optimizers, check_compiled_gradients
from daq.dasr import check_bits
from daq.quant import DAQConv2d

METHODS = ('fp', 'daq', 'ste', 'eager')
# arch -> (title, the recipe its networks come from (None: resnet20 as below), default input size, classes)
ARCHS = {'resnet20': ('ResNet-20, CIFAR-10 shapes', None, 32, 10),
         'resnet18': ('ResNet-18, ImageNet shapes', 'imagenet-r18-w2a2', 224, 1000)}


def imagenet_recipe(arch: str, method: str, bits: int):
    "The `arch`'s ImageNet recipe for `method`: its bits (none for fp), STE rounding for ste, random initial weights."
    fp = method == 'fp'
    return get_recipe(ARCHS[arch][1], wbits=None if fp else bits, abits=None if fp else bits, init=None,
                      rounding='ste' if method == 'ste' else 'dasr')


def build(method: str, bits: int, device: torch.device, channels_last: bool, save_levels=None, seed: int = 0,
          arch: str = 'resnet20'):
    "(model, optimizers, DAQ_FUSED mode) for `method`, weights from `seed` (the same for every quantized method)."
    torch.manual_seed(seed)
    if arch != 'resnet20':
        recipe = imagenet_recipe(arch, method, bits)
        model = build_model(recipe)
    elif method == 'fp': model = resnet20(None, None)
    else: model = resnet20(bits, bits, rounding='ste' if method == 'ste' else 'dasr')
    for m in model.modules():
        if isinstance(m, DAQConv2d): m.save_levels = save_levels
    model = model.to(device)
    if channels_last: model = model.to(memory_format=torch.channels_last)
    if arch == 'resnet20':
        recipe = get_recipe('cifar10-fp' if method == 'fp' else 'cifar10-w1a1',
                            wbits=None if method == 'fp' else bits, abits=None if method == 'fp' else bits)
    optimizers, _ = make_optimizers(model, recipe)
    return model.train(), optimizers, '0' if method == 'eager' else 'auto'


def make_batch(batch: int, device: torch.device, channels_last: bool, seed: int = 0, size: int = 32,
               classes: int = 10):
    "A normalized-image-like batch and labels."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    return (x.to(memory_format=torch.channels_last) if channels_last else x), y


def train_step(model, optimizers, x, y, amp_dtype=None):
    "One optimisation step; returns the loss tensor (not synchronised)."
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = F.cross_entropy(model(x), y)
    for o in optimizers: o.zero_grad(set_to_none=True)
    loss.backward()
    for o in optimizers: o.step()
    return loss


def check_daq_matches_eager(bits, device, channels_last, x, y, save_levels=None, arch='resnet20'):
    "Raise unless the fused and eager DAQ paths give the same loss and gradients from the same weights."
    grads = {}
    for mode in ('auto', '0'):
        model, _, _ = build('daq', bits, device, channels_last, save_levels, arch=arch)
        with daq_fused(mode):
            model(x)                                  # data-dependent quantizer init (first training forward)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        grads[mode] = (loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    (la, ga), (le, ge) = grads['auto'], grads['0']
    if not torch.allclose(la, le, rtol=1e-5, atol=0):
        raise AssertionError(f"fused loss {la.item()} != eager loss {le.item()}")
    # Summation orders differ, so compare each gradient's error norm to its own norm: 1e-4 for weight tensors, 1e-2
    # for the 0-d clip bounds (float32 sums of ~1e6 terms of both signs). Not `beta`: each feeds a BatchNorm, which
    # makes the loss invariant to it; its gradient is large terms cancelling to ~0, i.e. rounding noise on any path.
    for k in ga:
        if k.endswith('.beta'): continue
        err, tol = ((ga[k] - ge[k]).norm() / ge[k].norm().clamp_min(1e-30)).item(), 1e-4 if ga[k].dim() else 1e-2
        if err > tol: raise AssertionError(f"fused and eager gradients of {k} differ: relative error {err:.3g} > {tol}")


def saved_bytes(model, x, y) -> int:
    """Bytes autograd saves for the backward of one training forward (distinct storages, parameters excluded).

    A `DAQConv2d` that saves its quantized input as uint8 levels does so with its own saved-tensor hooks, which
    take the place of ours for that convolution: those inputs are counted at one byte per element instead."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages, levels = {}, []
    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params: storages[(s.device, s.data_ptr())] = s.nbytes()
        return t
    def count_levels(conv, args):
        x = args[0]
        if conv.save_levels if conv.save_levels is not None else x.is_cuda: levels.append(x.numel())
    handles = [m.register_forward_pre_hook(count_levels) for m in model.modules() if isinstance(m, DAQConv2d)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(x), y)
    finally:
        for h in handles: h.remove()
    loss.backward()
    for p in model.parameters(): p.grad = None
    return sum(storages.values()) + sum(levels)


def peak_memory(model, optimizers, x, y, device, amp_dtype) -> int | None:
    "Peak CUDA memory allocated during one training step (model, optimizer state and batch included), or None on CPU."
    if device.type != 'cuda': return None
    sync(device); torch.cuda.reset_peak_memory_stats(device)
    train_step(model, optimizers, x, y, amp_dtype); sync(device)
    return torch.cuda.max_memory_allocated(device)


def time_round_robin(setups: dict, x, y, device, warmup, repeats, amp_dtype) -> dict:
    "Step times (ms) per method, methods interleaved with a rotating start; warm-up rounds not recorded."
    names, times = list(setups), {k: [] for k in setups}
    for r in range(warmup + repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            model, opts, mode = setups[name]
            with daq_fused(mode):
                sync(device); t0 = time.perf_counter()
                train_step(model, opts, x, y, amp_dtype)
                sync(device)
            if r >= warmup: times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: dict(median_ms=statistics.median(v), min_ms=min(v), runs=len(v), times_ms=v) for k, v in times.items()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda' / 'cuda:N'")
    p.add_argument('--arch', choices=list(ARCHS), default='resnet20',
                   help='resnet20 (default; CIFAR-10 shapes) or resnet18 (torchvision, ImageNet shapes)')
    p.add_argument('--image-size', type=int, default=None,
                   help="input height and width (default the arch's: 32 for resnet20, 224 for resnet18)")
    p.add_argument('--batch', type=int, default=None, help='batch size (default 128 on CPU, 256 on CUDA)')
    p.add_argument('--bits', type=int, default=1,
                   help='weight and activation bits of the quantized methods (default 1)')
    p.add_argument('--methods', default=','.join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (fp is always run)")
    p.add_argument('--repeats', type=int, default=10, help='timed rounds (default 10)')
    p.add_argument('--warmup', type=int, default=3, help='untimed rounds, compilation included (default 3)')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: leave as is)')
    p.add_argument('--channels-last', action='store_true', help='channels_last model and batch')
    p.add_argument('--save-levels', choices=['auto', 'on', 'off'], default='auto',
                   help="DAQConv2d.save_levels: keep quantized inputs for backward as uint8 levels "
                        "(auto: on GPUs only)")
    p.add_argument('--compile', action='store_true',
                   help='torch.compile every model (after checking compiled == eager gradients)')
    p.add_argument('--amp', choices=['bf16', 'fp16'], default=None,
                   help='autocast the step (the quantizers still compute in float32)')
    p.add_argument('--json', metavar='PATH', help='also write the results and machine info as JSON to PATH')
    args = p.parse_args(argv)
    check_bits(args.bits)
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad: p.error(f"unknown method(s) {bad}; choose from {METHODS}")
    args.methods = ['fp'] + [m for m in methods if m != 'fp']
    if args.repeats < 1 or args.warmup < 1: p.error('--repeats and --warmup must be >= 1')
    if args.image_size is None: args.image_size = ARCHS[args.arch][2]
    if args.image_size < 32: p.error('--image-size must be >= 32')
    return args


def main(argv=None):
    args = parse_args(argv)
    device = setup_device(args)
    if args.batch is None: args.batch = 256 if device.type == 'cuda' else 128
    amp_dtype = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.amp]
    warnings.filterwarnings('ignore', message='Converting a tensor with requires_grad=True to a scalar')
    info = machine_info(device)
    title, _, _, classes = ARCHS[args.arch]
    print(f"# daq training-step benchmark ({title}) -- {info['date']}")
    print(f"# cpu: {info['cpu']} ({info['cores']} cores, capability {info['cpu_capability']}), "
          f"torch threads: {info['threads']}")
    print(f"# device: {info['device']} ({info['device_name']}), torch {info['torch']}, "
          f"python {info['python']}, git {info['git']}")
    print(f"# load average at start: {info['load_average_at_start']}")
    size = '' if (args.arch, args.image_size) == ('resnet20', 32) else f", {args.image_size}x{args.image_size} inputs"
    print(f"# batch={args.batch}, W{args.bits}A{args.bits}, channels_last={args.channels_last}, amp={args.amp}, "
          f"save_levels={args.save_levels}, compile={args.compile}, warmup={args.warmup}, repeats={args.repeats}"
          f"{size}", flush=True)
    x, y = make_batch(args.batch, device, args.channels_last, size=args.image_size, classes=classes)
    save_levels = {'auto': None, 'on': True, 'off': False}[args.save_levels]
    quantized = [m for m in args.methods if m != 'fp']
    if 'daq' in quantized and 'eager' in quantized:
        t0 = time.perf_counter()
        check_daq_matches_eager(args.bits, device, args.channels_last, x, y, save_levels, args.arch)
        print(f"# daq (fused) == eager: same loss and gradients ({time.perf_counter() - t0:.1f} s incl. compilation)",
              flush=True)
    setups = {m: build(m, args.bits, device, args.channels_last, save_levels, arch=args.arch) for m in args.methods}
    if args.compile:
        t0 = time.perf_counter()
        errors = check_compiled_gradients(setups[quantized[0] if quantized else 'fp'][0], x[:8], y[:8])
        print(f"# compiled == eager gradients (float64, largest relative error {max(errors.values()):.1e}; "
              f"{time.perf_counter() - t0:.1f} s incl. compilation)", flush=True)
        setups = {m: (torch.compile(model), opts, mode) for m, (model, opts, mode) in setups.items()}
    saved, peak = {}, {}
    for m, (model, opts, mode) in setups.items():
        with daq_fused(mode):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                with torch.no_grad(): model(x)                # the first training forward initialises the quantizers
                saved[m] = saved_bytes(model, x, y)           # a later forward: what every step saves
            peak[m] = peak_memory(model, opts, x, y, device, amp_dtype)
    share = CpuShare().start()
    timing = time_round_robin(setups, x, y, device, args.warmup, args.repeats, amp_dtype)
    other = share.stop()
    if other is not None:
        print(f"# other processes used {100 * other:.0f}% of the CPUs while timing"
              + ("  <-- WARNING: the machine was busy, timings are unreliable" if other > 0.1 else ''))
    fp = timing['fp']
    rows = []
    for m in args.methods:
        t = timing[m]
        rows.append(dict(method=m, median_ms=t['median_ms'], min_ms=t['min_ms'],
                         ratio_vs_fp=t['median_ms'] / fp['median_ms'], min_ratio_vs_fp=t['min_ms'] / fp['min_ms'],
                         images_per_s=args.batch / t['median_ms'] * 1e3,
                         saved_mib=saved[m] / 2**20, saved_vs_fp=saved[m] / saved['fp'],
                         peak_mib=None if peak[m] is None else peak[m] / 2**20,
                         peak_vs_fp=None if peak[m] is None else peak[m] / peak['fp'], times_ms=t['times_ms']))
    print()
    head = (f"{'method':<7} {'median ms':>10} {'min ms':>8} {'x fp':>7} {'(min/min)':>9} {'img/s':>8} "
            f"{'saved MiB':>10} {'x fp':>6} {'peak MiB':>9} {'x fp':>6}")
    print(head); print('-' * len(head))
    for r in rows:
        peak_cols = (f"{r['peak_mib']:>9.1f} {r['peak_vs_fp']:>5.2f}x" if r['peak_mib'] is not None
                     else f"{'-':>9} {'-':>6}")
        print(f"{r['method']:<7} {r['median_ms']:>10.2f} {r['min_ms']:>8.2f} {r['ratio_vs_fp']:>6.2f}x "
              f"{r['min_ratio_vs_fp']:>8.2f}x {r['images_per_s']:>8.0f} {r['saved_mib']:>10.1f} "
              f"{r['saved_vs_fp']:>5.2f}x {peak_cols}")
    print("\n# x fp: median step time / fp's median step time; (min/min): the same with the fastest step of each."
          "\n# saved MiB: bytes autograd saves for the backward (activations; parameters excluded); "
          "peak MiB: CUDA only,"
          "\n#   peak allocated memory during one step including weights, optimizer state and the batch.")
    if args.json:
        write_record(args, machine=info, other_cpu_share=other, results=rows)
    return rows


if __name__ == '__main__':
    main()
