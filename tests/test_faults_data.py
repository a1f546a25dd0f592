"""Regression tests for the faults of `daq.data` and `daq.shared.find_shared` seen in unattended runs."""
import io
import os
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daq.data import CIFAR10_CLASSES, cifar10_arrays
from daq.shared import find_shared


def png(value:int) -> bytes:
    "A 32x32 PNG of one grey level."
    buf = io.BytesIO()
    Image.new('RGB', (32, 32), (value,) * 3).save(buf, 'PNG')
    return buf.getvalue()


def tree(root:Path, per_class:dict, value:int=0) -> Path:
    "Write `<split>/<class>/<i>.png` under `root` for {split: images per class}; grey level `value + class index`."
    for split, n in per_class.items():
        for c, name in enumerate(CIFAR10_CLASSES):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n): (root / split / name / f'{i}.png').write_bytes(png(value + c))
    return root


def archive(path:Path, members:dict, mode:str='w') -> Path:
    "A tar archive of {member name: bytes}, with fixed member mtimes."
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name); info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def members(prefix:str, per_class:dict, value:int=0) -> dict:
    return {f'{prefix}{split}/{name}/{i}.png': png(value + c)
            for split, n in per_class.items() for c, name in enumerate(CIFAR10_CLASSES) for i in range(n)}


# 1. The cache follows the content of the source.
def test_cache_sees_images_added_replaced_removed_in_a_folder(tmp_path):
    src, cache = tree(tmp_path / 'src', {'train': 1}), tmp_path / 'cache'
    x, y = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert len(x) == 10
    (src / 'train/cat/new.png').write_bytes(png(200))
    x, y = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert len(x) == 11 and (y == CIFAR10_CLASSES.index('cat')).sum() == 2
    f = src / 'train/dog/0.png'; st = f.stat()
    f.write_bytes(png(77)); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    x, y = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert int(x[y == CIFAR10_CLASSES.index('dog')].float().mean()) == 77
    (src / 'train/cat/new.png').unlink()
    x, y = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert len(x) == 10


def test_cache_sees_an_archive_rewritten_with_same_size_and_mtime(tmp_path):
    src, cache = tmp_path / 'c.tar', tmp_path / 'cache'
    archive(src, members('cifar/', {'train': 1}, value=10))
    x, _ = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert int(x[0, 0, 0, 0]) == 10
    st = src.stat()
    archive(src, members('cifar/', {'train': 1}, value=90))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (src.stat().st_size, src.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    x, _ = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert int(x[0, 0, 0, 0]) == 90


# 2. Concurrent writers, damaged cache files, unusable cache locations.
def test_concurrent_loads_with_a_fresh_cache_all_succeed(tmp_path, monkeypatch):
    src, cache = tree(tmp_path / 'src', {'train': 2}), tmp_path / 'cache'
    n, save = 8, torch.save
    barrier = threading.Barrier(n, timeout=60)
    def slow_save(*args, **kwargs):                    # every writer has written before any of them renames
        save(*args, **kwargs); barrier.wait()
    monkeypatch.setattr(torch, 'save', slow_save)
    results, errors = [None] * n, []
    def load(i):
        try: results[i] = cifar10_arrays(src, 'train', cache=cache, progress=False)
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=load, args=(i,)) for i in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert errors == []
    for x, y in results: assert torch.equal(x, results[0][0]) and torch.equal(y, results[0][1])
    assert len(results[0][0]) == 20
    assert [p.suffix for p in cache.iterdir()] == ['.pt']                # no temporary files left behind


@pytest.mark.parametrize('garbage', [b'', b'garbage', b'PK\x03\x04' + b'\0' * 40, 'half'])
def test_damaged_cache_file_is_decoded_again_and_rewritten(tmp_path, garbage):
    src, cache = tree(tmp_path / 'src', {'train': 1}), tmp_path / 'cache'
    x0, y0 = cifar10_arrays(src, 'train', cache=cache, progress=False)
    [f] = cache.iterdir()
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2] if garbage == 'half' else garbage)
    with pytest.warns(UserWarning, match='damaged'):
        x, y = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                     # rewritten: no warning the next time
        x, y = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert torch.equal(x, x0)


def test_cache_location_that_is_a_file_means_no_cache(tmp_path):
    src, cache = tree(tmp_path / 'src', {'train': 1}), tmp_path / 'cache'
    cache.write_text('not a folder')
    with pytest.warns(UserWarning, match='without a cache'):
        x, y = cifar10_arrays(src, 'train', cache=cache, progress=False)
    assert len(x) == 10 and y.tolist() == list(range(10))
    with pytest.warns(UserWarning, match='without a cache'):
        x, y = cifar10_arrays(src, 'train', cache=cache / 'sub', progress=False)
    assert len(x) == 10


# 3. The split is the folder right above the class folder.
def test_archive_with_top_folder_test_keeps_the_splits_apart(tmp_path):
    src = archive(tmp_path / 'c.tar.gz', members('test/', {'train': 2, 'test': 1}), 'w:gz')
    x, y = cifar10_arrays(src, 'train', cache=False, progress=False)
    assert len(x) == 20
    x, y = cifar10_arrays(src, 'test', cache=False, progress=False)
    assert len(x) == 10 and y.tolist() == list(range(10))


def test_folder_called_test_keeps_the_splits_apart(tmp_path):
    src = tree(tmp_path / 'test', {'train': 2, 'test': 1})
    assert len(cifar10_arrays(src, 'train', cache=False, progress=False)[0]) == 20
    assert len(cifar10_arrays(src, 'test', cache=False, progress=False)[0]) == 10


# 4. Corrupt images and damaged archives are named.
def test_corrupt_image_in_a_folder_is_named(tmp_path):
    src = tree(tmp_path / 'src', {'train': 1})
    (src / 'train/cat/bad.jpg').write_bytes(b'\xff\xd8 not a jpeg at all')
    with pytest.raises(ValueError) as e: cifar10_arrays(src, 'train', cache=False, progress=False)
    msg = str(e.value)
    assert str(src / 'train/cat/bad.jpg') in msg and 'remove or replace' in msg and 'BytesIO' not in msg


def test_corrupt_image_in_an_archive_is_named(tmp_path):
    src = archive(tmp_path / 'c.tar', {**members('', {'train': 1}), 'train/cat/bad.jpg': b'garbage bytes'})
    with pytest.raises(ValueError) as e: cifar10_arrays(src, 'train', cache=False, progress=False)
    msg = str(e.value)
    assert str(src) in msg and 'train/cat/bad.jpg' in msg and 'remove or replace' in msg and 'BytesIO' not in msg


def test_image_of_wrong_size_is_named(tmp_path):
    src = tree(tmp_path / 'src', {'train': 1})
    Image.new('RGB', (28, 28)).save(src / 'train/cat/small.png')
    with pytest.raises(ValueError, match='small.png'): cifar10_arrays(src, 'train', cache=False, progress=False)


def test_truncated_archive_is_named(tmp_path):
    rng = np.random.default_rng(0)
    noisy = {}
    for name in members('', {'train': 2}):                                # noise compresses badly: a real payload
        buf = io.BytesIO(); Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, 'PNG')
        noisy[name] = buf.getvalue()
    src = archive(tmp_path / 'c.tar.xz', noisy, 'w:xz')
    src.write_bytes(src.read_bytes()[:src.stat().st_size // 2])
    with pytest.raises(OSError) as e: cifar10_arrays(src, 'train', cache=False, progress=False)
    msg = str(e.value)
    assert f'{src} is truncated or damaged' in msg and 'download or rebuild it' in msg


# 5. An .npz that is not CIFAR-10.
@pytest.mark.parametrize('bad', [10, -1])
def test_npz_labels_out_of_range_are_refused(tmp_path, bad):
    labels = np.arange(10); labels[3] = bad
    np.savez(tmp_path / 'x.npz', images=np.zeros((10, 32, 32, 3), np.uint8), labels=labels)
    with pytest.raises(ValueError, match=r'CIFAR-10 labels are 0\.\.9'): cifar10_arrays(tmp_path / 'x.npz', 'test')


def test_npz_images_of_another_size_are_refused(tmp_path):
    np.savez(tmp_path / 'x.npz', images=np.zeros((10, 28, 28, 3), np.uint8), labels=np.arange(10))
    with pytest.raises(ValueError, match='32x32'): cifar10_arrays(tmp_path / 'x.npz', 'test')


# 6. DAQ_SHARED pointing at a file.
def test_shared_folder_that_is_a_file(tmp_path, monkeypatch):
    f = tmp_path / 'shared.txt'; f.write_text('x')
    with pytest.raises(NotADirectoryError, match='is a file, not a folder'): find_shared(f)
    monkeypatch.setenv('DAQ_SHARED', str(f))
    with pytest.raises(NotADirectoryError, match='DAQ_SHARED'): find_shared()
    monkeypatch.setenv('DAQ_SHARED', str(tmp_path / 'missing'))
    with pytest.raises(FileNotFoundError, match='does not exist'): find_shared()
