"""Shared fixtures for the notebook tests."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def repo() -> Path:
    "The repository root (the folder holding settings.ini), derived from this file's location."
    assert (REPO / 'settings.ini').is_file(), f'settings.ini not found in {REPO}'
    return REPO


@pytest.fixture(scope='session')
def bin_dir() -> Path:
    "The running interpreter's bin dir: nbdev_test, nbdev_export, ... of the same environment live here."
    return Path(sys.executable).parent


@pytest.fixture
def kernel_env(monkeypatch, repo, bin_dir):
    """Environment under which jupyter's `python3` kernel is this interpreter and imports this checkout's `daq`.

    The venv's kernelspec (share/jupyter/kernels/python3/kernel.json, installed by ipykernel) has argv[0] `python`;
    jupyter_client replaces argv[0] `python`/`python3`/`python3.X` with `sys.executable`, and the PATH entry covers
    anything the kernel itself spawns as `python`. JUPYTER_PREFER_ENV_PATH makes the venv's kernelspec win over one in
    ~/.local/share/jupyter. PYTHONPATH mirrors nbdev_test, which puts the repo root on the kernel's sys.path."""
    monkeypatch.setenv('PATH', os.pathsep.join([str(bin_dir), os.environ.get('PATH', '')]))
    monkeypatch.setenv('JUPYTER_PREFER_ENV_PATH', '1')
    pp = os.environ.get('PYTHONPATH')
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(repo)] + ([pp] if pp else [])))
    monkeypatch.delenv('IN_TEST', raising=False)


@pytest.fixture(scope='session', autouse=True)
def fresh_notebook_executions():
    """Each test session executes every notebook once, shared by tests/test_notebooks.py and the site build
    (docs_build.build.execute keeps executions in _proc/docs_build/). Executions from earlier sessions are
    forgotten first, unless DAQ_DOCS_REUSE=1 (a local shortcut: reuse those whose cells, library and settings.ini are
    unchanged)."""
    if os.environ.get('DAQ_DOCS_REUSE', '') != '1':
        for stamp in (REPO / '_proc' / 'docs_build').glob('*.sha256'): stamp.unlink()
    yield


@pytest.fixture(scope='session')
def random_cifar_npz(tmp_path_factory):
    "A function of n: an .npz CIFAR-10 source of n random 32x32 images with labels 0..9 (made once per n)."
    import numpy as np
    made = {}
    def make(n: int) -> Path:
        if n not in made:
            rng = np.random.default_rng(0)
            made[n] = tmp_path_factory.mktemp('data') / f'random{n}.npz'
            np.savez(made[n], images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels=np.arange(n) % 10)
        return made[n]
    return make
