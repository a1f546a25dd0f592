#!/usr/bin/env python
"""Side-by-side forward+backward benchmark of DAQ's activation quantizer.

On the same tensor, in one run, this script times forward+backward of

* ``fused``     -- ``daq.quant.quantize_act`` on its default path (the ``torch.compile``'d kernels);
* ``eager``     -- the same call with ``DAQ_FUSED=0`` (plain PyTorch ops);
* ``ste``       -- ``quantize_act(..., rounding=STE())``: straight-through rounding on the same fused kernels;
* ``fakequant`` -- ``torch.fake_quantize_per_tensor_affine`` with ``scale = upper / n``, the baseline;
* ``lsq``       -- ``torch._fake_quantize_learnable_per_tensor_affine`` (fake-quant that, like ``quantize_act``,
  also returns the gradient of its clip parameter; informative only, ``--skip-lsq`` drops it);
* ``reference`` -- the literal autograd oracle ``daq.quant.quantize_reference`` (``--skip-reference`` drops it),

and measures autograd's saved bytes per input byte for each with ``torch.autograd.graph.saved_tensors_hooks``.
Every saved tensor counts, the input ``x`` included; distinct storages are counted once.

Before timing it checks that the fused and eager paths agree: outputs exactly, gradients with ``rtol=1e-5``.

Run from the repository root::

    python benchmarks/dasr.py                     # CPU, 1 bit
    python benchmarks/dasr.py --device cuda --bits 2 --json results.json
"""
import argparse, datetime, json, os, platform, statistics, sys, time, warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # run from a checkout without installing
from daq.quant import quantize_act, quantize_reference, _quantize_forward_body, _quantize_backward_body
from daq.dasr import check_bits, fused
from daq.dasr import STE, fused_mode
from daq.train import cpu_model, git_commit

SHAPES = [(256, 16, 32, 32), (256, 64, 8, 8)]
GAMMA, SIGMA = 2.0, 2.0        # quantize_act's defaults for activations


# ---------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------

daq_fused = fused_mode                            # the benchmarks' name for it


def recorded_args(args) -> dict:
    "The script's arguments for its record, with every file or folder named by its last part (no machine paths)."
    def named(v):
        if isinstance(v, (list, tuple)): return [named(x) for x in v]
        if isinstance(v, str) and '=' in v and os.sep in v.partition('=')[2]:     # NAME=FILE options
            return f"{v.partition('=')[0]}={Path(v.partition('=')[2]).name}"
        return Path(v).name if isinstance(v, Path) or (isinstance(v, str) and os.sep in v) else v
    return {k: named(v) for k, v in vars(args).items()}


def write_record(args, **record):
    "Write the --json record (the arguments as `recorded_args`) and say so by file name."
    Path(args.json).write_text(json.dumps(dict(args=recorded_args(args), **record), indent=2))
    print(f"# wrote {Path(args.json).name}")


def add_record_arguments(p: argparse.ArgumentParser, *, threads: int, seed: bool = True):
    "The arguments of the CPU benchmarks that write a record: --seed (if `seed`), --threads, --shared, --json."
    if seed: p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=threads)
    p.add_argument('--shared', default=None, help='the shared folder (default: $DAQ_SHARED or ../shared)')
    p.add_argument('--json', help='write the record here')


def machine_info(device: torch.device) -> dict:
    "What the numbers were measured on."
    info = dict(date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                cpu=cpu_model(), cores=os.cpu_count(), threads=torch.get_num_threads(),
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                python=platform.python_version(), torch=torch.__version__,
                git=git_commit(Path(__file__).resolve().parents[1]), device=str(device),
                load_average_at_start=load_average())
    info['device_name'] = torch.cuda.get_device_name(device) if device.type == 'cuda' else info['cpu']
    return info


class CpuShare:
    """How much of the machine's CPU time other processes used between `start()` and `stop()` (Linux only).

    A 2-core box shared with a test run gives meaningless timings; this makes that visible in the report."""
    def start(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()
        return self

    def stop(self) -> float | None:
        "Share (0..1) of all CPUs' time spent in other processes, or None where /proc/stat is unreadable."
        if self.busy0 is None: return None
        wall, cores = time.perf_counter() - self.t0, os.cpu_count() or 1
        other = (self._busy() - self.busy0) - (self._own() - self.own0)
        return max(0.0, other / (wall * cores))

    @staticmethod
    def _busy():
        "Seconds of non-idle CPU time on all cores since boot."
        try: fields = [int(f) for f in Path('/proc/stat').read_text().split('\n', 1)[0].split()[1:]]
        except (OSError, ValueError): return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)        # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')      # user..steal, without guest (already in user)

    @staticmethod
    def _own():
        "Seconds of CPU time used by this process (all threads)."
        t = os.times()
        return t.user + t.system


def load_average() -> str:
    "The 1-minute load average, or '?'."
    try: return Path('/proc/loadavg').read_text().split()[0]
    except OSError: return '?'


def setup_device(args) -> torch.device:
    "Apply `--threads` and return `--device`, exiting with a message when CUDA is asked for but absent."
    if args.threads: torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda requested but CUDA is not available')
    return device


def sync(device: torch.device):
    "Wait for queued GPU work so that a host clock reads the true elapsed time (no-op on CPU)."
    if device.type == 'cuda': torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------------------
# Candidates: each is a function (x, upper) -> output, differentiable w.r.t. x (and upper where it can be)
# ---------------------------------------------------------------------------------------------------------------

def make_candidates(bits: int, with_reference: bool, with_lsq: bool) -> dict:
    "The quantizers to compare, by name, each a function `(x, upper) -> y` run under its own `DAQ_FUSED` setting."
    n = check_bits(bits)

    def daq_fused_path(x, upper):
        with daq_fused('auto'): return quantize_act(x, upper, bits, GAMMA, SIGMA)     # both shapes >= 2**15: compiled

    def daq_eager_path(x, upper):
        with daq_fused('0'): return quantize_act(x, upper, bits, GAMMA, SIGMA)

    def ste(x, upper):
        with daq_fused('auto'): return quantize_act(x, upper, bits, GAMMA, SIGMA, rounding=STE())

    def fake_quant(x, upper):
        scale = upper.detach() / n                    # fake_quantize_per_tensor_affine gives no gradient to scale
        zero_point = torch.zeros((), dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, n)

    def lsq(x, upper):
        scale = (upper / n).reshape(1)                # learnable fake-quant: gradient to scale, hence to upper
        zero_point = torch.zeros(1, device=x.device)
        return torch._fake_quantize_learnable_per_tensor_affine(x, scale, zero_point, 0, n, 1.0)

    def reference(x, upper):
        return quantize_reference(x, 0.0, upper, bits, signed=False, gamma=GAMMA, sigma=SIGMA)

    cands = dict(fused=daq_fused_path, eager=daq_eager_path, ste=ste, fakequant=fake_quant)
    if with_lsq: cands['lsq'] = lsq
    if with_reference: cands['reference'] = reference
    return cands


def make_inputs(shape: tuple, device: torch.device, seed: int = 0) -> tuple:
    "A ReLU-like activation `x`, a 0-d clip bound `upper = 3 std(x)` (both requiring grad), and an upstream grad."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).relu().to(device).requires_grad_()
    upper = (3 * x.detach().std()).requires_grad_()
    grad = torch.randn(shape, generator=g).to(device)
    return x, upper, grad


def fwd_bwd(fn, x: torch.Tensor, upper: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    "One training step of the quantizer alone: clear the grads, forward, backward with `grad`; returns the output."
    x.grad = upper.grad = None
    y = fn(x, upper)
    y.backward(grad)
    return y


# ---------------------------------------------------------------------------------------------------------------
# Checks and measurements
# ---------------------------------------------------------------------------------------------------------------

def check_fused_matches_eager(cands: dict, x, upper, grad, rtol: float = 1e-5):
    "Raise unless fused and eager give identical outputs and gradients equal to `rtol`, and fused really compiled."
    results = {}
    for name in ('fused', 'eager'):
        y = fwd_bwd(cands[name], x, upper, grad).detach()
        results[name] = (y, x.grad.clone(), upper.grad.clone())
    for k in (_quantize_forward_body, _quantize_backward_body):
        kern = fused(k)
        if kern.failed or not kern.compiled:
            raise RuntimeError(f"the fused path did not run a compiled kernel for {k.__name__} (failed={kern.failed})")
    (yf, gxf, guf), (ye, gxe, gue) = results['fused'], results['eager']
    if not torch.equal(yf, ye):
        bad = (yf != ye).sum().item()
        raise AssertionError(f"fused and eager outputs differ at {bad} of {yf.numel()} elements")
    # upper.grad is a float32 sum of millions of terms of both signs, added in another order by each path: 100x looser
    for what, a, b, tol in (('x.grad', gxf, gxe, rtol), ('upper.grad', guf, gue, 100 * rtol)):
        if not torch.allclose(a, b, rtol=tol, atol=0.0):
            err = ((a - b).abs() / b.abs().clamp_min(torch.finfo(b.dtype).tiny)).max().item()
            raise AssertionError(f"fused and eager {what} differ: max relative error {err:.3g} > rtol {tol}")


def saved_bytes_ratio(fn, x, upper, grad) -> tuple:
    """(saved bytes / input bytes, saved bytes other than x's own storage / input bytes) for one forward of `fn`.

    Every tensor autograd packs for the backward is counted once per distinct storage, by its full
    `untyped_storage().nbytes()`; a view of `x` therefore counts as `x`."""
    storages = {}
    def pack(t):
        s = t.untyped_storage()
        storages[(s.device, s.data_ptr())] = s.nbytes()
        return t
    x.grad = upper.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x, upper)
    y.backward(grad)                                  # free the graph the same way the timed runs do
    xs = x.untyped_storage()
    total = sum(storages.values())
    other = total - storages.get((xs.device, xs.data_ptr()), 0)
    return total / x.nbytes, other / x.nbytes


def time_round_robin(cands: dict, x, upper, grad, device, warmup: int, repeats: int) -> dict:
    """Median milliseconds of `fwd_bwd` per candidate, candidates interleaved round-robin.

    Each round runs every candidate once, starting from a different candidate each round, so that slow
    drifts of the machine (turbo, other tenants) hit all candidates alike. Warm-up rounds (which include
    `torch.compile`'s first compilation) are not recorded."""
    names = list(cands)
    times = {k: [] for k in names}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            fwd_bwd(cands[name], x, upper, grad)
            sync(device)
            if r >= warmup: times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: dict(median_ms=statistics.median(v), min_ms=min(v), max_ms=max(v), runs=len(v), times_ms=v)
            for k, v in times.items()}


# ---------------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------------

def print_header(info: dict, args):
    "Print where and how the numbers were measured."
    print(f"# daq DASR benchmark -- {info['date']}")
    print(f"# cpu: {info['cpu']} ({info['cores']} cores, capability {info['cpu_capability']}), "
          f"torch threads: {info['threads']}")
    print(f"# device: {info['device']} ({info['device_name']}), torch {info['torch']}, "
          f"python {info['python']}, git {info['git']}")
    print(f"# load average at start: {info['load_average_at_start']}")
    print(f"# bits={args.bits} (n={check_bits(args.bits)}), gamma={GAMMA}, sigma={SIGMA}, float32, "
          f"warmup={args.warmup}, repeats={args.repeats}, fwd+bwd per call, median of repeats")


def print_table(rows: list):
    "Print the results, one row per (shape, method)."
    head = (f"{'shape':<16} {'method':<10} {'median ms':>10} {'min ms':>9} {'x fakequant':>12} {'(min/min)':>9} "
            f"{'saved/in':>9} {'saved-x/in':>11}")
    print(head); print('-' * len(head))
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):<16} {r['method']:<10} {r['median_ms']:>10.2f} {r['min_ms']:>9.2f} "
              f"{r['ratio_vs_fakequant']:>11.2f}x {r['min_ratio_vs_fakequant']:>8.2f}x {r['saved_per_input']:>9.4f} "
              f"{r['saved_other_per_input']:>11.2g}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--bits', type=int, default=1, help='bit-width, 1..8 (default 1)')
    p.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda' / 'cuda:N'")
    p.add_argument('--repeats', type=int, default=20, help='timed rounds per shape (default 20)')
    p.add_argument('--warmup', type=int, default=3, help='untimed rounds per shape, compilation included (default 3)')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: leave as is)')
    p.add_argument('--shapes', default=None, help="override shapes, e.g. '256x16x32x32,256x64x8x8'")
    p.add_argument('--skip-reference', action='store_true', help='do not time the slow literal quantize_reference')
    p.add_argument('--skip-lsq', action='store_true', help='do not time the learnable fake-quant row')
    p.add_argument('--json', metavar='PATH', help='also write the results and machine info as JSON to PATH')
    args = p.parse_args(argv)
    check_bits(args.bits)
    if args.repeats < 1 or args.warmup < 1: p.error('--repeats and --warmup must be >= 1 (warm-up compiles)')
    return args


def main(argv=None):
    args = parse_args(argv)
    device = setup_device(args)
    # quantize_act validates a CPU `upper` with float(upper), which warns once when upper requires grad;
    # not ours to fix here
    warnings.filterwarnings('ignore', message='Converting a tensor with requires_grad=True to a scalar')
    shapes = SHAPES if not args.shapes else [tuple(int(d) for d in s.split('x')) for s in args.shapes.split(',')]
    info = machine_info(device)
    print_header(info, args)
    cands = make_candidates(args.bits, not args.skip_reference, not args.skip_lsq)
    rows = []
    for shape in shapes:
        x, upper, grad = make_inputs(shape, device)
        t0 = time.perf_counter()
        check_fused_matches_eager(cands, x, upper, grad)          # also the first (compiling) call of the fused path
        print(f"# {'x'.join(map(str, shape))}: fused == eager checked "
              f"({time.perf_counter() - t0:.1f} s incl. compilation)", flush=True)
        saved = {k: saved_bytes_ratio(fn, x, upper, grad) for k, fn in cands.items()}
        share = CpuShare().start()
        timing = time_round_robin(cands, x, upper, grad, device, args.warmup, args.repeats)
        other = share.stop()
        if other is not None:
            print(f"# {'x'.join(map(str, shape))}: other processes used {100 * other:.0f}% of the CPUs while timing"
                  + ("  <-- WARNING: the machine was busy, timings are unreliable" if other > 0.1 else ''), flush=True)
        base, base_min = timing['fakequant']['median_ms'], timing['fakequant']['min_ms']
        for k in cands:
            rows.append(dict(shape=list(shape), method=k, **timing[k], ratio_vs_fakequant=timing[k]['median_ms'] / base,
                             min_ratio_vs_fakequant=timing[k]['min_ms'] / base_min,
                             saved_per_input=saved[k][0], saved_other_per_input=saved[k][1], other_cpu_share=other))
    print()
    print_table(rows)
    print("\n# x fakequant: median time / fakequant's median time on the same shape; (min/min): the same with the"
          "\n#   fastest run of each (less sensitive to other processes on a shared machine)."
          "\n# saved/in: bytes autograd saves for backward (all distinct storages, x itself included) / x.nbytes;"
          "\n# saved-x/in: the same without x's own storage.")
    if args.json:
        write_record(args, machine=info, results=rows)
    return rows


if __name__ == '__main__':
    main()
