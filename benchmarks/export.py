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

Run from the repository root (needs the shared folder: ``--shared`` or ``$DAQ_SHARED``)::

    python benchmarks/export.py --threads 1 --json export.json
"""
import argparse, statistics, sys, tempfile, time, warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))                  # run from a checkout without installing
sys.path.insert(0, str(HERE))
from dasr import CpuShare, add_record_arguments, machine_info, write_record
from daq.checkpoints import load_authors_checkpoint, load_npz_images
from daq.export import export_onnx, save, to_integer
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
        sizes, sessions = sizes_and_sessions(nets, args, Path(tmp), images[:2])
        check(nets, sessions, images[:256])
        for name, s in sizes.items():
            print(f"# {name:5s}: packed/tensors {s['safetensors_bytes']:>10,} bytes   "
                  f"ONNX {s['onnx_bytes']:>10,} bytes")
        runs = methods(nets, sessions)
        rows = [row for b in args.batches for row in measure(runs, b, images, args)]
    import onnx, onnxruntime, safetensors
    versions = dict(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__, safetensors=safetensors.__version__)
    record = dict(machine=machine_info(torch.device('cpu')), versions=versions, sizes=sizes, results=rows,
                  wall_s=round(time.perf_counter() - start, 1))
    if args.json: write_record(args, **record)


if __name__ == '__main__':
    main()
