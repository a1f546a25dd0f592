#!/usr/bin/env python
"""Deployment speed and size: FP32 ResNet-20 vs its exported integer forms (W1A1, W2A2), in PyTorch and ONNX Runtime.

On the CPU, in one run, for each batch size (``--batches``, default 1 and 128) the script times inference of

* ``fp32``      -- the authors' full-precision ResNet-20 (``cifar10_fp.pth``);
* ``fakequant`` -- the authors' W1A1 network as trained (float fake-quant; PyTorch only, for reference);
* ``W1A1``      -- the authors' W1A1 network in integer form (``daq.export.to_integer``);
* ``W2A2``      -- ``resnet20(2, 2)`` from the FP file, calibrated on 256 test images (the values do not change the
  speed; it shows the 2-bit thresholds and weights),
* ``W1A1-packed``, ``W2A2-packed`` -- the same integer networks on ``daq.packed``'s AND/popcount kernels (PyTorch
  only; checked to give the integer path's logits bit for bit),

each in PyTorch (eager) and in ONNX Runtime (``export_onnx`` / the TorchScript exporter for FP32), and reports
images/s and the ratio to FP32 in the same runtime. Measurements are interleaved round-robin with a rotating start
(``--rounds``), so machine noise hits all of them alike; the report gives the median over rounds and the spread
(min..max) of the per-round ratio, to FP32 in the same runtime and to the faster of the two FP32 engines. Before
timing it checks that ONNX Runtime gives the PyTorch integer network's predictions. Sizes: the packed file
(``daq.export.save``), the ONNX file, and FP32's tensors as safetensors.

How far from the hardware: ``peak.cpp`` (compiled here with the machine's C++ compiler) measures this core's binary
multiply-accumulate rate (AND + VPOPCNTQ on 512-bit words, as the packed kernels do them) and its float32 FMA rate;
with each network's multiply-accumulates (float ones at the FMA rate; a b_W x b_A-bit layer's as b_W b_A binary
planes) that gives the time an image takes at peak arithmetic on ``--threads`` such cores, and each row's fraction
of it (``of_peak``). Peak memory: how much a fresh process's peak resident set grows while it loads the network (from
its saved file for the integer ones) and classifies a batch, after torch's own first-use set-up.

Run from the repository root (needs the shared folder: ``--shared`` or ``$DAQ_SHARED``)::

    python benchmarks/export.py --threads 1 --json export.json
"""
import argparse, ctypes, os, shutil, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))                  # run from a checkout without installing
sys.path.insert(0, str(HERE))
from dasr import CpuShare, add_record_arguments, machine_info, write_record
from daq.checkpoints import load_authors_checkpoint, load_npz_images
from daq.export import IntegerLayer, export_onnx, save, to_integer
from daq.models import resnet20
from daq.networks import calibrate
from daq.shared import shared_file
from daq.train import initialize_from


def networks(args) -> dict:
    "name -> (PyTorch module, ONNX-exportable module or None, file to size)."
    fp = load_authors_checkpoint(shared_file('authors-fp', args.shared), None, None)
    w1a1 = load_authors_checkpoint(shared_file('authors-checkpoints', args.shared) / 'cifar10_W1A1.pth', 1, 1)
    w2a2 = initialize_from(resnet20(2, 2), shared_file('authors-fp', args.shared))
    images = load_npz_images(shared_file('cifar10-exact-1000', args.shared))[0]
    calibrate(w2a2, [images[:256]], progress=False)
    return {'fp32': (fp, fp), 'fakequant': (w1a1, None), 'W1A1': (to_integer(w1a1, packed=False), None),
            'W2A2': (to_integer(w2a2, packed=False), None), 'W1A1-packed': (to_integer(w1a1), None),
            'W2A2-packed': (to_integer(w2a2), None)}


def sizes_and_sessions(nets: dict, args, tmp: Path, example: torch.Tensor) -> tuple:
    "({name: {bytes}}, {name: onnxruntime session}) with the ONNX files written to `tmp`."
    import onnxruntime as ort
    from safetensors.torch import save_file
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    sizes, sessions = {}, {}
    for name, (model, _) in nets.items():
        if name == 'fakequant' or name.endswith('-packed'): continue       # PyTorch only
        onnx_path = tmp / f'{name}.onnx'
        if name == 'fp32':
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / 'fp32.safetensors'))
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                torch.onnx.export(model, (example,), str(onnx_path), dynamo=False, opset_version=17,
                                  input_names=['images'], dynamic_axes={'images': {0: 'batch'}})
            tensors = tmp / 'fp32.safetensors'
        else:
            save(model, tmp / f'{name}.safetensors'); export_onnx(model, onnx_path, example)
            tensors = tmp / f'{name}.safetensors'
        sizes[name] = dict(safetensors_bytes=tensors.stat().st_size, onnx_bytes=onnx_path.stat().st_size)
        sessions[name] = ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
    return sizes, sessions


def check(nets: dict, sessions: dict, images: torch.Tensor):
    "ONNX Runtime gives the PyTorch network's predictions, the packed path the integer one's logits (else the timings "
    "compare different things)."
    for name in [n for n in nets if n.endswith('-packed')]:
        with torch.no_grad(): same = torch.equal(nets[name][0](images), nets[name.removesuffix('-packed')][0](images))
        if not same: sys.exit(f"error: {name}: the packed path's logits differ from the integer path's")
        print(f"# {name}: logits == the integer path's on {len(images)} images")
    for name, session in sessions.items():
        with torch.no_grad(): want = nets[name][0](images).argmax(1)
        got = torch.from_numpy(session.run(None, {'images': images.numpy()})[0]).argmax(1)
        agree = (got == want).float().mean().item()
        if agree < 0.99: sys.exit(f"error: {name}: ONNX Runtime agrees with PyTorch on only {100 * agree:.1f} %")
        print(f"# {name}: ONNX Runtime == PyTorch on {100 * agree:.1f} % of {len(images)} predictions")


def arithmetic_peak() -> dict | None:
    "This core's binary and float32 multiply-accumulates per second (peak.cpp, best of 5), or None where it cannot run."
    compiler = next((c for c in (os.environ.get('CXX'), 'c++', 'g++', 'clang++') if c and shutil.which(c)), None)
    if compiler is None: return None
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / 'peak.so'
        built = subprocess.run([compiler, '-O3', '-shared', '-fPIC', '-o', str(library), str(HERE / 'peak.cpp')],
                               capture_output=True)
        if built.returncode: return None                            # not x86-64, or no AVX-512 support in the compiler
        lib = ctypes.CDLL(str(library))
        if not lib.daq_peak_supported(): return None
        lib.daq_peak_binary.argtypes = lib.daq_peak_fma.argtypes = [ctypes.c_int64]
        lib.daq_peak_binary.restype, lib.daq_peak_fma.restype = ctypes.c_int64, ctypes.c_double
        rates = {}
        for name, fn, macs, iterations in (('binary_mac_per_s', lib.daq_peak_binary, 8 * 4 * 512, 4_000_000),
                                           ('fp32_mac_per_s', lib.daq_peak_fma, 12 * 16, 8_000_000)):
            best = 0.0
            for _ in range(5):
                start = time.perf_counter(); fn(iterations)
                best = max(best, iterations * macs / (time.perf_counter() - start))
            rates[name] = best
    return rates


def multiply_accumulates(model: nn.Module, example: torch.Tensor) -> dict:
    "Per image: float32 MACs, and binary-plane MACs (a b_W x b_A-bit integer layer's MACs times b_W b_A)."
    counts, hooks = dict(fp32=0, binary=0), []
    def count(m, inputs, out):
        per_output = (m.weight_levels if isinstance(m, IntegerLayer) else m.weight)[0].numel()
        macs = out[0].numel() * per_output                             # out[0]: one image's outputs
        if isinstance(m, IntegerLayer) and m.config['abits'] is not None:
            counts['binary'] += macs * m.config['wbits'] * m.config['abits']
        else: counts['fp32'] += macs
    for m in model.modules():
        if isinstance(m, IntegerLayer) or (isinstance(m, (nn.Conv2d, nn.Linear)) and not list(m.children())):
            hooks.append(m.register_forward_hook(count))
    with torch.no_grad(): model(example[:1])
    for h in hooks: h.remove()
    return counts


MEMORY_PROBE = """
import re, sys, torch
torch.set_num_threads(1)
from daq.checkpoints import load_authors_checkpoint
from daq.export import load
def status(key): return int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))   # KiB
kind, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = torch.rand(batch, 3, 32, 32)
torch.conv2d(torch.rand(1, 3, 8, 8), torch.rand(4, 3, 3, 3))    # torch's own first-use set-up, not the network's
with open('/proc/self/clear_refs', 'w') as f: f.write('5')       # the peak resident set starts again from here
before = status('VmRSS')
model = load_authors_checkpoint(path, None, None).eval() if kind == 'fp32' else load(path, packed=kind == 'packed')
with torch.no_grad(): model(x)
print((status('VmHWM') - before) / 1024)
"""


def peak_memory(files: dict, batches: list) -> dict:
    "{network: {batch: MB}}: the peak resident set a fresh process adds to load the network and classify a batch."
    def probe(kind, path, batch):
        out = subprocess.run([sys.executable, '-c', MEMORY_PROBE, kind, str(path), str(batch)], capture_output=True,
                             text=True, cwd=HERE.parent, env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
        if out.returncode: sys.exit(f"error: the memory probe of {kind} failed:\n{out.stderr[-2000:]}")
        return round(float(out.stdout.split()[-1]), 1)
    return {name: {b: probe(kind, path, b) for b in batches} for name, (kind, path) in files.items()}


def timer(fn, batch: torch.Tensor, min_time: float) -> float:
    "Images per second of `fn(batch)`, calling it until `min_time` seconds have passed (at least twice)."
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_time:
        fn(batch); calls += 1
    return calls * len(batch) / (time.perf_counter() - start)


def methods(nets: dict, sessions: dict) -> dict:
    "(runtime, network) -> function of a batch."
    result = {}
    for name, (model, _) in nets.items():
        result['torch', name] = lambda x, m=model: m(x)
        if name in sessions:
            result['onnxruntime', name] = lambda x, s=sessions[name]: s.run(None, {'images': x.numpy()})
    return result


@torch.no_grad()
def measure(runs: dict, batch_size: int, images: torch.Tensor, args) -> list:
    "Rows per (runtime, network): median images/s over rounds and the ratio to FP32 in the same runtime."
    batch = images.repeat(batch_size // len(images) + 1, 1, 1, 1)[:batch_size]
    keys, speeds, share = list(runs), {k: [] for k in runs}, CpuShare().start()
    for k in keys: timer(runs[k], batch, 0.0)                                  # warm-up
    for r in range(args.rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]: speeds[k].append(timer(runs[k], batch, args.min_time))
    other = share.stop()
    rows = []
    best_fp32 = [max(pair) for pair in zip(*(speeds[k] for k in keys if k[1] == 'fp32'))]   # per round
    for (runtime, name), s in speeds.items():
        ratios = [a / b for a, b in zip(s, speeds[runtime, 'fp32'])]
        best = [a / b for a, b in zip(s, best_fp32)]
        rows.append(dict(batch=batch_size, runtime=runtime, network=name, images_per_s=statistics.median(s),
                         ratio_to_fp32=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                         ratio_to_faster_fp32=statistics.median(best), faster_fp32_min=min(best),
                         faster_fp32_max=max(best), rounds=len(s), other_cpu_share=other))
        print(f"batch {batch_size:4d}  {runtime:12s} {name:12s} {rows[-1]['images_per_s']:10.1f} img/s  "
              f"x{rows[-1]['ratio_to_fp32']:.2f} of FP32 ({rows[-1]['ratio_min']:.2f}..{rows[-1]['ratio_max']:.2f})"
              f"  x{rows[-1]['ratio_to_faster_fp32']:.2f} of the faster FP32 engine "
              f"({rows[-1]['faster_fp32_min']:.2f}..{rows[-1]['faster_fp32_max']:.2f})", flush=True)
    if other is not None and other > 0.1: print(f"# warning: other processes used {100 * other:.0f} % of the CPUs")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batches', type=lambda s: [int(b) for b in s.split(',')], default=[1, 128])
    p.add_argument('--rounds', type=int, default=5, help='interleaved timing rounds')
    p.add_argument('--min-time', type=float, default=1.0, help='seconds per measurement')
    add_record_arguments(p, threads=1, seed=False)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    nets = networks(args)
    images = load_npz_images(shared_file('cifar10-exact-1000', args.shared))[0][:max(args.batches + [256])]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sizes, sessions = sizes_and_sessions(nets, args, tmp, images[:2])
        check(nets, sessions, images[:256])
        for name, s in sizes.items():
            print(f"# {name:5s}: packed/tensors {s['safetensors_bytes']:>10,} bytes   "
                  f"ONNX {s['onnx_bytes']:>10,} bytes")
        runs = methods(nets, sessions)
        rows = [row for b in args.batches for row in measure(runs, b, images, args)]
        files = {'fp32': ('fp32', shared_file('authors-fp', args.shared)),
                 'W1A1': ('integer', tmp / 'W1A1.safetensors'), 'W1A1-packed': ('packed', tmp / 'W1A1.safetensors'),
                 'W2A2-packed': ('packed', tmp / 'W2A2.safetensors')}
        memory = peak_memory(files, args.batches)
    for name, m in memory.items():
        print(f"# peak memory {name:12s} " + '  '.join(f"batch {b}: {m[b]:6.1f} MB" for b in args.batches)
              + "  (loading the file and classifying the batch, in a fresh process)")
    peak = arithmetic_peak()
    macs = {name: multiply_accumulates(model, images) for name, (model, _) in nets.items()
            if not name.endswith('-packed')}                  # packed layers output words: count their reference
    if peak:
        print(f"# this core's peak: {peak['binary_mac_per_s'] / 1e9:,.0f} G binary MAC/s, "
              f"{peak['fp32_mac_per_s'] / 1e9:,.1f} G float32 MAC/s (times {args.threads} threads below)")
        for row in rows:
            count, cores = macs[row['network'].removesuffix('-packed')], args.threads
            at_peak = (count['fp32'] / peak['fp32_mac_per_s'] + count['binary'] / peak['binary_mac_per_s']) / cores
            row.update(peak_images_per_s=1 / at_peak, of_peak=row['images_per_s'] * at_peak)
            print(f"batch {row['batch']:4d}  {row['runtime']:12s} {row['network']:12s} "
                  f"{100 * row['of_peak']:5.1f} % of its arithmetic peak ({row['peak_images_per_s']:,.0f} img/s)")
    import onnx, onnxruntime, safetensors
    versions = dict(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__, safetensors=safetensors.__version__)
    from daq.packed import ISAS, available_isas, chosen_isa, native_library
    lib = native_library()
    isa = dict(chosen=ISAS[chosen_isa(lib)], available=list(available_isas(lib)))
    print(f"# packed kernels: {isa['chosen']} (this CPU has {', '.join(isa['available'])})")
    record = dict(machine=machine_info(torch.device('cpu')), versions=versions, packed_isa=isa,
                  sizes=sizes, results=rows,
                  arithmetic_peak=peak, multiply_accumulates=macs, peak_memory_mb=memory,
                  wall_s=round(time.perf_counter() - start, 1))
    if args.json: write_record(args, **record)


if __name__ == '__main__':
    main()
