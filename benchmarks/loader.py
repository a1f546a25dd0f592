#!/usr/bin/env python
"""ImageNet input-pipeline throughput: images/s of `daq.data.imagenet_loaders` per number of DataLoader workers.

The script writes (into a temporary folder, or ``--root``) an ImageFolder tree ``train/<class>/*.JPEG`` (and a small
``val/``, which ``imagenet_loaders`` requires) of full-size JPEGs: ``--images`` of them (default 256) in ``--classes``
classes (default 8), 500x375 pixels like a typical ImageNet photo, with random smooth content (noise summed over
several scales, so that it compresses like a photograph rather than like white noise), saved at JPEG quality 90.
A ``--root`` that already holds a non-empty ``train/`` is used as it is (e.g. a slice of the real ImageNet).

For each worker count (``--workers``, default 0,1,2) it builds ``imagenet_loaders(root, --batch, workers=W)`` and
iterates its training loader -- decoding, RandomResizedCrop(224), flip, ToTensor, Normalize and collation, all on the
CPU -- for ``--warmup`` untimed batches (worker start-up, first reads), then times ``--repeats`` passes of
``--batches`` batches each (default: one full epoch). It reports images/s per worker count: the median, minimum
and maximum over the repeats, and the median over the 0-worker median. The main process runs one torch thread
(``--threads``), as each DataLoader worker does, so that 0 workers means one process doing the same work.

The files are freshly written, so they are read from the page cache: this measures the decode-and-augment CPU cost,
not the disk.

Run from the repository root::

    python benchmarks/loader.py                                  # 256 images, workers 0,1,2, 3 repeats
    python benchmarks/loader.py --workers 0,4,8 --images 1024 --json loader.json
"""
import argparse, os, statistics, sys, tempfile, time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))                  # run from a checkout without installing
sys.path.insert(0, str(HERE))
# shared helpers of the quantizer benchmark
from dasr import machine_info, CpuShare, write_record
from daq.data import imagenet_loaders

IMAGE_SIZE = (500, 375)                               # (width, height): a typical ImageNet photograph


# ---------------------------------------------------------------------------------------------------------------
# The synthetic ImageNet tree
# ---------------------------------------------------------------------------------------------------------------

def smooth_image(g: torch.Generator, size=IMAGE_SIZE) -> Image.Image:
    """An RGB image of random noise summed over several scales, coarse ones strongest: a photo-like spectrum.

    At JPEG quality 90 such a 500x375 image takes ~95 KiB, near the ~110 KB of an average ImageNet training file."""
    w, h = size
    img = torch.zeros(1, 3, h, w)
    for cells, amp in ((4, 1.0), (16, 0.6), (64, 0.45), (250, 0.45), (500, 0.2)):
        noise = torch.randn(1, 3, max(1, cells * h // w), cells, generator=g)
        img += amp * F.interpolate(noise, size=(h, w), mode='bicubic', align_corners=False)
    img = (128 + 45 * img).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).contiguous()
    return Image.fromarray(img.numpy(), 'RGB')


def write_tree(root: Path, images: int, classes: int, quality: int = 90, val_per_class: int = 1,
               seed: int = 0) -> dict:
    "Write `images` training JPEGs (round-robin over `classes`) and `val_per_class` validation JPEGs per class."
    g = torch.Generator().manual_seed(seed)
    sizes = []
    for split, count in (('train', images), ('val', val_per_class * classes)):
        for i in range(count):
            folder = root / split / f'n{i % classes:08d}'
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f'{split}_{i:06d}.JPEG'
            smooth_image(g).save(path, 'JPEG', quality=quality)
            if split == 'train': sizes.append(path.stat().st_size)
    return dict(generated=True, train_images=images, classes=classes, width=IMAGE_SIZE[0], height=IMAGE_SIZE[1],
                jpeg_quality=quality, mean_file_kib=statistics.mean(sizes) / 1024)


def describe_tree(root: Path) -> dict:
    "What an existing tree holds (not generated here)."
    files = [p for p in (root / 'train').rglob('*') if p.is_file()]
    classes = [p for p in (root / 'train').iterdir() if p.is_dir()]
    return dict(generated=False, train_images=len(files), classes=len(classes),
                mean_file_kib=statistics.mean(p.stat().st_size for p in files) / 1024 if files else 0.0)


# ---------------------------------------------------------------------------------------------------------------
# CPU accounting with worker processes
# ---------------------------------------------------------------------------------------------------------------

def children_cpu_seconds() -> float:
    "User + system seconds of this process's live child processes (the DataLoader workers), from /proc."
    me, total, tick = str(os.getpid()), 0.0, os.sysconf('SC_CLK_TCK')
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try: fields = stat.read_text().rsplit(')', 1)[1].split()
        except (OSError, IndexError): continue
        if fields[1] == me: total += (int(fields[11]) + int(fields[12])) / tick   # ppid; utime, stime
    return total


class PipelineCpuShare(CpuShare):
    "`CpuShare` that counts the DataLoader workers as ours: 'other' is then only other programs."
    def _own(self):
        return CpuShare._own() + children_cpu_seconds()


# ---------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------

def take(loader, batches: int):
    "Iterate `batches` batches of `loader` (cycling over epochs); returns the number of images seen."
    seen, it = 0, iter(loader)
    for _ in range(batches):
        try: x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        seen += x.shape[0]
    return seen


def measure(root: Path, workers: int, args) -> dict:
    "images/s of the training loader with `workers` workers over `args.repeats` timed passes."
    train, _ = imagenet_loaders(root, batch_size=args.batch, workers=workers)
    batches = args.batches or len(train)
    t0 = time.perf_counter()
    take(train, args.warmup)
    print(f"# workers={workers}: {args.warmup} warm-up batch(es) in {time.perf_counter() - t0:.2f} s "
          f"(worker start-up included)", flush=True)
    rates, share = [], PipelineCpuShare().start()
    for r in range(args.repeats):
        t0 = time.perf_counter()
        seen = take(train, batches)
        dt = time.perf_counter() - t0
        rates.append(seen / dt)
        print(f"#   repeat {r + 1}/{args.repeats}: {seen} images in {dt:.2f} s = {rates[-1]:.1f} images/s", flush=True)
    other = share.stop()
    del train                                         # stop the persistent workers before the next count starts
    if other is not None:
        print(f"# workers={workers}: other processes used {100 * other:.0f}% of the CPUs while timing"
              + ("  <-- WARNING: the machine was busy, timings are unreliable" if other > 0.1 else ''), flush=True)
    return dict(workers=workers, batches=batches, images_per_pass=batches * args.batch,
                median_images_per_s=statistics.median(rates), min_images_per_s=min(rates),
                max_images_per_s=max(rates), images_per_s=rates, other_cpu_share=other)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default=None,
                   help='ImageFolder tree to use (an existing train/ is used as is; else one is written there); '
                        'default: a temporary folder, removed at the end')
    p.add_argument('--images', type=int, default=256, help='training images to write (default 256)')
    p.add_argument('--classes', type=int, default=8, help='classes to write (default 8)')
    p.add_argument('--quality', type=int, default=90, help='JPEG quality of the written images (default 90)')
    p.add_argument('--batch', type=int, default=32, help='batch size (default 32)')
    p.add_argument('--workers', default='0,1,2', help='comma-separated DataLoader worker counts (default 0,1,2)')
    p.add_argument('--batches', type=int, default=0, help='batches per timed pass (default 0: one full epoch)')
    p.add_argument('--warmup', type=int, default=2, help='untimed batches first, per worker count (default 2)')
    p.add_argument('--repeats', type=int, default=3, help='timed passes per worker count (default 3)')
    p.add_argument('--threads', type=int, default=1,
                   help="torch.set_num_threads of the main process (default 1, as in each worker; 0: leave as is). "
                        "With 0 workers the transforms' tensor ops run on these threads, which on a busy machine "
                        "wait for each other")
    p.add_argument('--json', metavar='PATH', help='also write the results and machine info as JSON to PATH')
    args = p.parse_args(argv)
    try: args.workers = [int(w) for w in args.workers.split(',') if w.strip()]
    except ValueError: p.error(f"--workers must be comma-separated integers, got {args.workers!r}")
    if not args.workers or min(args.workers) < 0: p.error('--workers needs one or more counts >= 0')
    if args.repeats < 1 or args.warmup < 0 or args.batches < 0: p.error('--repeats >= 1, --warmup and --batches >= 0')
    if args.images < args.batch: p.error(f"--images {args.images} < --batch {args.batch}: no full batch (drop_last)")
    if args.classes < 1 or args.classes > args.images: p.error('--classes must be in 1..--images')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    info = machine_info(torch.device('cpu'))
    print(f"# daq ImageNet input-pipeline benchmark (imagenet_loaders, training transform) -- {info['date']}")
    print(f"# cpu: {info['cpu']} ({info['cores']} cores, capability {info['cpu_capability']}), "
          f"torch threads: {info['threads']}")
    print(f"# torch {info['torch']}, python {info['python']}, git {info['git']}")
    print(f"# load average at start: {info['load_average_at_start']}", flush=True)
    with tempfile.TemporaryDirectory(prefix='daq-loader-') as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        if (root / 'train').is_dir() and any((root / 'train').iterdir()):
            data = describe_tree(root)
            print(f"# using the existing tree: {data['train_images']} training images in {data['classes']} classes, "
                  f"mean file {data['mean_file_kib']:.1f} KiB", flush=True)
        else:
            t0 = time.perf_counter()
            data = write_tree(root, args.images, args.classes, args.quality)
            print(f"# wrote {args.images} training JPEGs ({IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, quality {args.quality}, "
                  f"{args.classes} classes, mean file {data['mean_file_kib']:.1f} KiB) "
                  f"in {time.perf_counter() - t0:.1f} s", flush=True)
        print(f"# batch={args.batch}, crop 224, workers={args.workers}, warmup={args.warmup} batch(es), "
              f"repeats={args.repeats}, batches per pass={args.batches or 'one epoch'}", flush=True)
        rows = [measure(root, w, args) for w in args.workers]
    base = rows[0]['median_images_per_s']
    for r in rows: r['ratio_vs_first'] = r['median_images_per_s'] / base
    print()
    first = f"x {rows[0]['workers']} workers"
    head = (f"{'workers':>7} {'median img/s':>13} {'min':>8} {'max':>8} {first:>12} "
            f"{'ms/image':>9} {'other CPU':>10}")
    print(head); print('-' * len(head))
    for r in rows:
        other = '-' if r['other_cpu_share'] is None else f"{100 * r['other_cpu_share']:.0f}%"
        print(f"{r['workers']:>7} {r['median_images_per_s']:>13.1f} {r['min_images_per_s']:>8.1f} "
              f"{r['max_images_per_s']:>8.1f} {r['ratio_vs_first']:>11.2f}x {1e3 / r['median_images_per_s']:>9.2f} "
              f"{other:>10}")
    print(f"\n# img/s: images delivered per second by the training loader over {args.repeats} timed pass(es): median,"
          "\n#   min and max; x: median over the first worker count's median; ms/image: 1000 / median img/s."
          "\n# other CPU: share of all CPUs used by other programs while timing (the workers count as ours).")
    if args.json:
        write_record(args, machine=info, data=data, results=rows)
    return rows


if __name__ == '__main__':
    main()
