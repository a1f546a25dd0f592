#!/usr/bin/env python
"""Why does STE learn faster than DASR on our short schedules? An instrumented look at a few hundred training steps.

From each starting network (the authors' FP ResNet-20 by default; `--start NAME=FILE` adds a trained checkpoint,
e.g. a 15-epoch run's `last.pt`), this trains `cifar10-w1a1` twice for `--steps` steps on the same batches (same
order, same augmentation), once with DASR and once with `rounding=ste`, at the recipe's first-epoch learning rates,
and records per DAQ layer:

* ``gw``, ``gx``   -- norms of the gradient reaching the latent weights and the input of the activation quantizer;
* ``nzw``, ``nzx`` -- the fractions of those gradients' elements that are non-zero;
* ``g_lW``, ``g_uW``, ``g_uA`` -- the clip bounds' gradients;
* ``slope_w``, ``slope_x`` -- the rounding's own factor, averaged over the elements inside the clip range (STE: 1;
  DASR: ``daq.dasr.dasr_grad`` of each element's offset from its lower level);
* ``flips``        -- the fraction of the layer's binary weights whose sign changed in each step (summed over an
  epoch's steps this is the flip rate per epoch);
* ``rel_step``     -- the relative update of the latent weights, ||Δw|| / ||w||, in each step.

`--rules` names the trajectories: `dasr`, `ste`, and `RULE@F` for the same rule with the SGD learning rate (the
latent weights' and batch norms') times F, e.g. `dasr@2`: does a larger step alone make DASR learn like STE?

Step 0 of the two trajectories is a paired measurement: the same parameters and the same batch, two backward rules.

    python results/mechanism/measure.py --json results/mechanism/mechanism-cpu.json
    python results/mechanism/measure.py --start dasr-15ep=RUN/last.pt --start ste-15ep=RUN2/last.pt --steps 100 ...
"""
import argparse, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

root = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(root)); sys.path.insert(0, str(root / 'benchmarks'))    # run from a checkout
from daq.dasr import dasr_grad
from daq.data import DeviceLoader, cifar10_arrays
from daq.quant import DAQConv2d, standardize
from daq.shared import shared_file
from daq.train import build_model, data_record, get_recipe, initialize_from, make_optimizers
from dasr import add_record_arguments, machine_info, write_record


def mean_slope(t: torch.Tensor, n: int, rule: str, gamma: float, sigma: float) -> float:
    "The rounding's factor averaged over the elements of `t` (level units) inside [0, n]."
    inside = t[(t >= 0) & (t <= n)]
    if rule == 'ste' or not len(inside): return 1.0 if len(inside) else float('nan')
    return dasr_grad(inside.double(), gamma, sigma).mean().item()


def weight_levels(layer: DAQConv2d) -> torch.Tensor:
    "The layer's hard quantized weights (±1 at 1 bit), for counting sign changes."
    with torch.no_grad(): return layer.quantized_weight(soft=False).clone()


def weight_offsets(layer: DAQConv2d) -> torch.Tensor:
    "Each weight in level units of its quantizer, (ŵ - ℓ_W) / (u_W - ℓ_W) · n."
    with torch.no_grad():
        n = 2 ** layer.wbits - 1
        return (standardize(layer.weight) - layer.lW) / (layer.uW - layer.lW) * n


def layer_stats(name: str, layer: DAQConv2d, x: torch.Tensor, gx: torch.Tensor, rule: str) -> dict:
    "One layer's gradient statistics after a backward."
    gw, n_a = layer.weight.grad, 2 ** layer.abits - 1
    t_x = x.detach() / layer.uA.detach() * n_a
    grad = lambda p: None if p.grad is None else p.grad.item()
    return dict(gw=gw.norm().item(), gx=gx.norm().item(), nzw=(gw != 0).float().mean().item(),
                nzx=(gx != 0).float().mean().item(), g_lW=grad(layer.lW), g_uW=grad(layer.uW), g_uA=grad(layer.uA),
                slope_w=mean_slope(weight_offsets(layer), 2 ** layer.wbits - 1, rule, layer.gamma_w, layer.sigma_w),
                slope_x=mean_slope(t_x, n_a, rule, layer.gamma_a, layer.sigma_a))


def epochs_of(loader: DeviceLoader):
    "The loader's batches, epoch after epoch."
    epoch = 0
    while True:
        loader.set_epoch(epoch); yield from loader; epoch += 1


def trajectory(start: Path, rule: str, loader: DeviceLoader, steps: int, every: int, desc: str,
               lr_scale: float = 1.0) -> dict:
    "Train `steps` steps from `start` with `rule`, recording every `every` steps (and the sign flips of each)."
    recipe = get_recipe('cifar10-w1a1', rounding=rule, lr=get_recipe('cifar10-w1a1').lr * lr_scale)
    model = initialize_from(build_model(recipe), start)
    optimizers, _ = make_optimizers(model, recipe)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, DAQConv2d) and m.wbits is not None}
    inputs = {}

    def keep_input(name):
        def hook(module, args):
            if args[0].requires_grad:
                inputs[name] = [args[0], None]
                args[0].register_hook(lambda g: inputs[name].__setitem__(1, g))
        return hook
    handles = [m.register_forward_pre_hook(keep_input(n)) for n, m in layers.items()]
    model.train()
    rec = dict(step=[], loss=[], layers={n: {} for n in layers}, flips={n: [] for n in layers},
               rel_step={n: [] for n in layers})
    before, batches = None, epochs_of(loader)
    for i in tqdm(range(steps), desc=desc, leave=False):
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        for o in optimizers: o.zero_grad(set_to_none=True)
        loss.backward()
        if i % every == 0 or i == steps - 1:
            rec['step'].append(i); rec['loss'].append(loss.item())
            for n, m in layers.items():
                for k, v in layer_stats(n, m, *inputs[n], rule).items(): rec['layers'][n].setdefault(k, []).append(v)
        if before is None: before = {n: (weight_levels(m), m.weight.detach().clone()) for n, m in layers.items()}
        for o in optimizers: o.step()
        for n, m in layers.items():
            levels, w = weight_levels(m), m.weight.detach()
            rec['flips'][n].append((levels != before[n][0]).float().mean().item())
            rec['rel_step'][n].append(((w - before[n][1]).norm() / before[n][1].norm()).item())
            before[n] = (levels, w.clone())
        inputs.clear()
    for h in handles: h.remove()
    rec['steps_per_epoch'] = len(loader)
    return rec


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--start', action='append', default=[], metavar='NAME=FILE',
                   help="a starting checkpoint (repeatable); the authors' FP file is always the first, 'authors-fp'")
    p.add_argument('--steps', type=int, default=200, help='training steps per trajectory (one epoch is 196)')
    p.add_argument('--every', type=int, default=5, help='record the gradient statistics every this many steps')
    p.add_argument('--rules', default='dasr,ste,dasr@2', help='trajectories: RULE or RULE@LR_FACTOR, comma-separated')
    p.add_argument('--data', help='CIFAR-10 copy (default: the JPEG archive in shared/)')
    add_record_arguments(p, threads=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    starts = {'authors-fp': shared_file('authors-fp', args.shared)}
    for s in args.start:
        name, sep, path = s.partition('=')
        if not sep or not Path(path).is_file(): p.error(f"--start {s!r}: give NAME=FILE with an existing file")
        starts[name] = Path(path)
    data = args.data or shared_file('cifar10-jpeg', args.shared)
    images, labels = cifar10_arrays(data, 'train')
    t0, out = time.perf_counter(), {}
    for name, path in starts.items():
        for label in args.rules.split(','):
            rule, _, factor = label.partition('@')
            if rule not in ('dasr', 'ste'): p.error(f"--rules: unknown rule {rule!r} in {label!r} (dasr or ste)")
            torch.manual_seed(args.seed)
            loader = DeviceLoader(images, labels, 256, True, 'cpu', args.seed)
            out.setdefault(name, {})[label] = trajectory(path, rule, loader, args.steps, args.every,
                                                         f'{name} {label}', float(factor or 1))
            r = out[name][label]
            flips = sum(sum(f) for f in r['flips'].values()) / len(r['flips']) * r['steps_per_epoch'] / args.steps
            print(f"{name:>12} {label:>7}: loss {r['loss'][0]:.3f} -> {r['loss'][-1]:.3f}, "
                  f"sign flips per epoch (mean over layers) {flips:.3f}")
    record = dict(machine=machine_info(torch.device('cpu')), wall_s=time.perf_counter() - t0,
                  starts={k: data_record(v) for k, v in starts.items()}, data=Path(data).name, trajectories=out)
    if args.json: write_record(args, **record)


if __name__ == '__main__':
    main()
