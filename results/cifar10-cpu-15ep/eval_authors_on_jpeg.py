#!/usr/bin/env python
"""The authors' three ResNet-20 checkpoints on the JPEG copy's 10,000 test images and on the exact 1,000: how much
of a gap the lossy copy alone makes for networks trained on the real CIFAR-10. Writes a record next to this file.

    python results/cifar10-cpu-15ep/eval_authors_on_jpeg.py [--shared SHARED]
"""
import argparse, json, os, sys, time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))              # run from a checkout without installing
from daq.checkpoints import AUTHORS_FILES, accuracy, load_authors_checkpoint, load_npz_images
from daq.data import cifar10_arrays, normalize
from daq.shared import shared_file
from daq.train import cpu_model, data_record, git_commit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--shared', help='the shared folder (default: $DAQ_SHARED or the nearest shared/)')
    args = p.parse_args(argv)
    start = time.perf_counter()
    jpeg, exact = shared_file('cifar10-jpeg', args.shared), shared_file('cifar10-exact-1000', args.shared)
    images, labels = cifar10_arrays(jpeg, 'test', progress=False)
    sets = {'jpeg_test': (normalize(images), labels), 'exact_1000': load_npz_images(exact)}
    rows = {}
    for name, (file, wbits, abits, _) in AUTHORS_FILES.items():
        model = load_authors_checkpoint(shared_file('authors-checkpoints', args.shared) / file, wbits, abits)
        rows[name] = {k: accuracy(model, x, y) for k, (x, y) in sets.items()}
        print(f"{file:20s} JPEG test {100 * rows[name]['jpeg_test']:.1f} %   exact 1,000 "
              f"{100 * rows[name]['exact_1000']:.1f} %", flush=True)
    record = dict(results=rows, data=dict(jpeg_test=data_record(jpeg), exact_1000=data_record(exact)),
                  commit=git_commit(HERE), torch=torch.__version__, cpu=cpu_model(), cores=os.cpu_count(),
                  threads=torch.get_num_threads(), wall_s=round(time.perf_counter() - start, 1))
    (HERE / 'authors-checkpoints-on-jpeg.json').write_text(json.dumps(record, indent=2) + '\n')


if __name__ == '__main__':
    main()
