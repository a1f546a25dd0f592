#!/usr/bin/env python
"""Whole-epoch benchmark: how long the 400-epoch `cifar10-w1a1` recipe takes, estimated from measured epochs.

Runs ``daq.train.train`` -- the real loop: the GPU-resident data path, augmentation, both optimizers, evaluation on the
test set and the per-epoch checkpoints -- for a few epochs of the quantized recipe and of the full-precision baseline,
one after the other in this process, with the same batch size and speed settings. The first epoch (which pays for
``torch.compile`` and other warm-up) is left out when more than one is run. From the mean of the others it estimates a
full epoch (50,000 training and 10,000 test images; with ``--subset``/``--test-subset`` the measured times are scaled
per image) and the whole schedule (``--schedule-epochs``, default the recipe's own: 400 for ``cifar10-w1a1``).

Run from the repository root::

    python benchmarks/epoch.py --subset 5000 --epochs 2                          # CPU, a quick look
    python benchmarks/epoch.py --device cuda --epochs 3 --channels-last --compile --amp bf16
"""
import argparse, statistics, sys, tempfile, time, warnings
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))                  # run from a checkout without installing
sys.path.insert(0, str(HERE))
from dasr import machine_info, CpuShare, setup_device, write_record
from daq.train import get_recipe, train, read_metrics
from daq.runs import load_checkpoint, save_checkpoint
from daq.shared import find_shared, shared_file

CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000


def checkpoint_seconds(last: Path, repeats: int = 3) -> float:
    """Seconds to write a run's last.pt again, as each epoch does (best.pt, written when the test accuracy
    improves, is smaller: it holds no optimizer state)."""
    state = load_checkpoint(last)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        save_checkpoint(state, last.with_name(f'timing{i}.pt'), keep_previous=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(recipe_name: str, args, data, shared) -> dict:
    "Train `recipe_name` for `args.epochs` epochs in a temporary run directory; per-epoch times and the estimate."
    recipe = get_recipe(recipe_name, epochs=args.epochs, batch_size=args.batch_size)
    schedule = args.schedule_epochs or get_recipe(recipe_name).epochs
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        train(recipe, data, d, device=args.device, subset=args.subset, test_subset=args.test_subset,
              progress=not args.no_progress,
              shared=shared, amp=args.amp, channels_last=args.channels_last, compile=args.compile)
        wall = time.perf_counter() - t0
        m = read_metrics(d)
        checkpoint_s = checkpoint_seconds(Path(d) / 'last.pt')
    timed = m[1:] if len(m) > 1 else m
    n_train, n_test = args.subset or CIFAR10_TRAIN, args.test_subset or CIFAR10_TEST
    train_s = statistics.mean(r['epoch_wall_s'] for r in timed)
    eval_s = statistics.mean(r['eval_wall_s'] for r in timed)
    full_epoch_s = train_s * CIFAR10_TRAIN / n_train + eval_s * CIFAR10_TEST / n_test + checkpoint_s
    return dict(recipe=recipe_name, epochs_run=len(m), epochs_timed=len(timed), first_epoch_s=m[0]['total_wall_s'],
                train_s=train_s, eval_s=eval_s, checkpoint_s=checkpoint_s,
                images_per_s=statistics.mean(r['images_per_s'] for r in timed),
                full_epoch_s=full_epoch_s, schedule_epochs=schedule, schedule_min=full_epoch_s * schedule / 60,
                wall_s=wall,
                step_ms=1e3 * train_s / -(-n_train // args.batch_size))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    p.add_argument('--recipe', default='cifar10-w1a1', help='quantized recipe to time (default cifar10-w1a1)')
    p.add_argument('--baseline', default='cifar10-fp', help="full-precision recipe to compare with ('none' to skip)")
    p.add_argument('--epochs', type=int, default=2,
                   help='epochs to run per recipe; the first is not timed if > 1 (default 2)')
    p.add_argument('--schedule-epochs', type=int, help="epochs of the schedule to estimate (default: the recipe's own)")
    p.add_argument('--batch-size', type=int, default=256, help='batch size (default 256, the recipes\')')
    p.add_argument('--subset', type=int, help='train on this many images per epoch (times are scaled to 50,000)')
    p.add_argument('--test-subset', type=int, help='evaluate on this many test images (times are scaled to 10,000)')
    p.add_argument('--data', help='CIFAR-10 folder/archive/.npz (default: the JPEG copy in shared/)')
    p.add_argument('--shared', help='folder with data/ and checkpoints/ (default: $DAQ_SHARED or the nearest shared/)')
    p.add_argument('--amp', choices=['bf16'], help='bfloat16 autocast')
    p.add_argument('--channels-last', action='store_true', help='NHWC model and batches')
    p.add_argument('--compile', action='store_true', help='torch.compile the model (the first epoch compiles)')
    p.add_argument('--target-min', type=float, default=10.0,
                   help='wall-time target for the schedule, minutes (default 10)')
    p.add_argument('--threads', type=int, help='torch.set_num_threads')
    p.add_argument('--no-progress', action='store_true', help='no tqdm bars')
    p.add_argument('--json', metavar='PATH', help='also write the results and machine info as JSON to PATH')
    args = p.parse_args(argv)
    if args.epochs < 1: p.error('--epochs must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    device = setup_device(args)
    shared = find_shared(args.shared) if args.data is None or args.recipe == 'cifar10-w1a1' else args.shared
    data = args.data or shared_file('cifar10-jpeg', shared)
    warnings.filterwarnings('ignore', message='Converting a tensor with requires_grad=True to a scalar')
    info = machine_info(device)
    print(f"# daq epoch benchmark -- {info['date']}")
    print(f"# cpu: {info['cpu']} ({info['cores']} cores), torch threads: {info['threads']}; device: {info['device']} "
          f"({info['device_name']}), torch {info['torch']}, git {info['git']}")
    print(f"# batch={args.batch_size}, epochs run={args.epochs}, subset={args.subset}, test_subset={args.test_subset}, "
          f"amp={args.amp}, channels_last={args.channels_last}, compile={args.compile}, data={Path(data).name}",
          flush=True)
    names = [args.recipe] + ([] if args.baseline.lower() == 'none' else [args.baseline])
    share = CpuShare().start()
    rows = [measure(name, args, data, shared) for name in names]
    other = share.stop()
    if other is not None and device.type == 'cpu':
        print(f"# other processes used {100 * other:.0f}% of the CPUs"
              + ("  <-- WARNING: busy machine" if other > 0.1 else ''))
    base = rows[-1] if len(rows) > 1 else None
    print()
    head = (f"{'recipe':<16} {'epochs':>6} {'1st s':>7} {'step ms':>8} {'img/s':>7} {'train s':>8} {'eval s':>7} "
            f"{'ckpt s':>7} {'full epoch s':>13} {'schedule':>9} {'x fp':>6}")
    print(head); print('-' * len(head))
    for r in rows:
        ratio = f"{r['full_epoch_s'] / base['full_epoch_s']:>5.2f}x" if base else f"{'-':>6}"
        sched = f"{r['schedule_min']:.1f} min" if r['schedule_min'] < 120 else f"{r['schedule_min'] / 60:.1f} h"
        print(f"{r['recipe']:<16} {r['epochs_timed']:>3}/{r['epochs_run']:<2} {r['first_epoch_s']:>7.1f} "
              f"{r['step_ms']:>8.1f} {r['images_per_s']:>7.0f} {r['train_s']:>8.2f} {r['eval_s']:>7.2f} "
              f"{r['checkpoint_s']:>7.2f} {r['full_epoch_s']:>13.2f} {sched:>9} {ratio}")
    q = rows[0]
    verdict = 'meets' if q['schedule_min'] <= args.target_min else 'misses'
    print(f"\n# {q['recipe']}: {q['schedule_epochs']} epochs estimated at {q['schedule_min']:.1f} min "
          f"on {info['device_name']} -- {verdict} the {args.target_min:g}-minute target")
    print("# epochs: timed/run (the first is warm-up when more than one ran); "
          "train/eval/ckpt s: measured per epoch on the"
          "\n#   subsets; full epoch s: scaled to 50,000 + 10,000 images; schedule: full epoch x schedule epochs.")
    if args.json:
        write_record(args, machine=info, other_cpu_share=other, results=rows)
    return rows


if __name__ == '__main__':
    main()
