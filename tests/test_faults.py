"""Faults a run left alone for days meets (issue 4/7), each reproduced: two runs on one directory, a crash between
a checkpoint and its record, a torn record, a longer schedule forced onto a finished run, a damaged checkpoint, a full
disk, Ctrl-C, divergence, a last batch of one image, and bad command-line input. The data and quantizer faults are in
test_faults_data.py and test_faults_quant.py. Everything here trains a ResNet-20 for a few steps on a few random
images, on the CPU."""
import contextlib, io, json, os, signal, subprocess, sys, time, warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from daq.runs import RunLock, RunDirBusy, DamagedCheckpoint, load_checkpoint, read_metrics
from daq.train import get_recipe, train, train_cli, TrainingDiverged
import daq.train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def images(random_cifar_npz) -> Path: return random_cifar_npz(64)


def fp(**kw):
    return get_recipe('cifar10-fp', **{'init': None, 'batch_size': 16, 'epochs': 2, **kw})


def quiet_train(recipe, data, run_dir, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')            # the .npz source warns that it is also the test set
        return train(recipe, data, run_dir, progress=False, **kw)


def cli(*args) -> tuple:
    "`daq-train args` in this process: (exit status, stderr)."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: train_cli([str(a) for a in args]); return 0, err.getvalue()
        except SystemExit as e: return e.code, err.getvalue()


def _interruptible():
    "Give the child the default Ctrl-C: a test suite started in the background (`cmd &`) has SIGINT ignored, inherited."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def daq_train(*args, **kw) -> subprocess.Popen:
    "`daq-train args` in a subprocess (Ctrl-C stops it, however the tests were started)."
    return subprocess.Popen([sys.executable, '-c', 'from daq.train import train_cli; train_cli()', *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible,
                            **kw)


def weights(run_dir) -> dict: return load_checkpoint(Path(run_dir) / 'last.pt')['model']


# --- records that could be corrupted -------------------------------------------------------------------------------

def test_second_run_on_a_busy_run_dir_is_refused(images, tmp_path):
    with RunLock(tmp_path):                       # a run in progress (this process holds the lock)
        with pytest.raises(RunDirBusy, match=f'pid {os.getpid()}'): quiet_train(fp(), images, tmp_path)
        p = daq_train('--recipe', 'cifar10-fp', '--data', images, '--run-dir', tmp_path, '--init', 'none',
                      '--epochs', 2, '--batch-size', 16, '--no-progress', '--device', 'cpu')
        err = p.communicate(timeout=120)[1]
    assert p.returncode == 1 and 'is in use by another run' in err and 'Traceback' not in err, err
    assert not (tmp_path / 'metrics.jsonl').exists()
    quiet_train(fp(), images, tmp_path)           # the lock is gone with its holder
    assert [m['epoch'] for m in read_metrics(tmp_path)] == [0, 1]


class Crash(Exception): "A crash at a chosen moment."


def test_crash_between_checkpoint_and_record_loses_nothing(images, tmp_path, monkeypatch):
    real = daq.train.write_metrics
    def crash_after_second_checkpoint(run_dir, records):
        if len(records) == 2: raise Crash()       # last.pt of epoch 2 is saved, its metrics line is not
        return real(run_dir, records)
    monkeypatch.setattr(daq.train, 'write_metrics', crash_after_second_checkpoint)
    with pytest.raises(Crash): quiet_train(fp(epochs=3), images, tmp_path)
    monkeypatch.setattr(daq.train, 'write_metrics', real)
    assert [m['epoch'] for m in read_metrics(tmp_path)] == [0]
    quiet_train(fp(epochs=3), images, tmp_path)
    assert [m['epoch'] for m in read_metrics(tmp_path)] == [0, 1, 2]


def test_torn_metrics_line_does_not_stop_a_resume(images, tmp_path):
    quiet_train(fp(), images, tmp_path)
    with open(tmp_path / 'metrics.jsonl', 'a') as f: f.write('{"epoch": 2, "train_lo')
    s = quiet_train(fp(), images, tmp_path)
    assert s['epochs'] == 2 and [m['epoch'] for m in read_metrics(tmp_path)] == [0, 1]
    assert all(line.endswith('}') for line in (tmp_path / 'metrics.jsonl').read_text().splitlines())


@pytest.mark.parametrize('change', [dict(epochs=4), dict(lr=0.01)])
def test_forced_resume_with_another_schedule_is_refused(images, tmp_path, change):
    quiet_train(fp(), images, tmp_path)
    field = next(iter(change))
    with pytest.raises(ValueError, match=f'holds a run with {field}=.*not even with --force'):
        quiet_train(fp(**change), images, tmp_path, force=True)
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 2


def test_damaged_last_checkpoint_falls_back_to_the_previous_one(images, tmp_path, monkeypatch):
    whole = tmp_path / 'whole'
    quiet_train(fp(epochs=3), images, whole)
    real = daq.train._epoch
    def stop_before_third(run, epoch):
        if epoch == 2: raise Crash()
        return real(run, epoch)
    monkeypatch.setattr(daq.train, '_epoch', stop_before_third)
    with pytest.raises(Crash): quiet_train(fp(epochs=3), images, tmp_path)
    monkeypatch.setattr(daq.train, '_epoch', real)
    last = tmp_path / 'last.pt'
    data = bytearray(last.read_bytes())
    fc = load_checkpoint(last)['model']['linear.weight']
    data[data.find(fc.numpy().tobytes()[:64]) + 5] ^= 0x01        # one flipped bit in a weight
    last.write_bytes(bytes(data))
    with pytest.raises(DamagedCheckpoint): load_checkpoint(last)
    with pytest.warns(UserWarning, match='resuming from last.pt.prev'):
        train(fp(epochs=3), images, tmp_path, progress=False)
    assert (tmp_path / 'last.pt.damaged').exists()
    assert [m['epoch'] for m in read_metrics(tmp_path)] == [0, 1, 2]
    for k, v in weights(whole).items(): assert torch.equal(v, weights(tmp_path)[k]), k   # as if never damaged


def test_damaged_checkpoint_without_a_previous_one_says_restart(images, tmp_path):
    quiet_train(fp(epochs=1), images, tmp_path)
    (tmp_path / 'last.pt').write_bytes(b'')
    with pytest.raises(DamagedCheckpoint, match='last.pt is empty; there is no earlier checkpoint: run with --restart'):
        quiet_train(fp(epochs=1), images, tmp_path)
    status, err = cli('--recipe', 'cifar10-fp', '--data', images, '--run-dir', tmp_path, '--init', 'none',
                      '--epochs', 1, '--batch-size', 16, '--no-progress', '--device', 'cpu')
    assert status == 1 and '--restart' in err and 'Traceback' not in err, err
    quiet_train(fp(epochs=1), images, tmp_path, restart=True)
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 1


@pytest.fixture
def small_disk(tmp_path):
    "A 4.5 MB tmpfs: room for epoch 1's best.pt and last.pt, not for a second last.pt beside the first."
    mnt = tmp_path / 'disk'
    mnt.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4500k', 'tmpfs', str(mnt)], capture_output=True)
    if r.returncode: pytest.skip(f'cannot mount a tmpfs here: {r.stderr.decode().strip()}')
    yield mnt
    subprocess.run(['umount', str(mnt)])


def test_full_disk_is_named_and_keeps_the_previous_checkpoint(images, small_disk):
    with pytest.raises(OSError, match=f'no space left on {small_disk} while writing last.pt'):
        quiet_train(fp(epochs=3), images, small_disk)
    assert load_checkpoint(small_disk / 'last.pt')['epoch'] == 1
    assert not [p.name for p in small_disk.iterdir() if p.name.endswith('.tmp')]


def test_ctrl_c_stops_cleanly_and_the_run_resumes(images, tmp_path):
    args = ['--recipe', 'cifar10-w1a1', '--data', images, '--run-dir', tmp_path, '--init', 'none', '--epochs', 3,
            '--batch-size', 16, '--no-progress', '--device', 'cpu']
    p = daq_train(*args)
    while not read_metrics(tmp_path) and p.poll() is None: time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130 and 'run the same command again to resume' in err and 'Traceback' not in err, err
    assert cli(*args)[0] == 0 and [m['epoch'] for m in read_metrics(tmp_path)] == [0, 1, 2]


# --- silent wrong results ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('recipe', ['cifar10-fp', 'cifar10-w2a2'])
def test_divergence_stops_the_run_and_keeps_finite_checkpoints(images, tmp_path, recipe):
    r = get_recipe(recipe, init=None, batch_size=16, epochs=2, lr=1e6)
    with pytest.raises(TrainingDiverged, match='training diverged'): quiet_train(r, images, tmp_path)
    if (tmp_path / 'last.pt').exists():
        assert all(torch.isfinite(v).all() for v in weights(tmp_path).values() if v.is_floating_point())


def test_last_batch_of_one_image_is_dropped(images, tmp_path):
    with pytest.warns(UserWarning, match='dropped a last batch of 1 image'):
        s = train(fp(batch_size=21), images, tmp_path, progress=False)     # 64 = 3 x 21 + 1
    assert s['epochs'] == 2


def test_training_on_an_npz_says_the_test_set_is_the_training_set(images, tmp_path):
    with pytest.warns(UserWarning, match='trains and tests on the same images'):
        s = train(fp(epochs=1), images, tmp_path, progress=False)
    assert s['test_is_train'] and json.loads((tmp_path / 'config.json').read_text())['test_is_train']


@pytest.mark.parametrize('kw', [dict(subset=0), dict(test_subset=0), dict(subset=-5)])
def test_empty_subsets_are_refused(images, tmp_path, kw):
    with pytest.raises(ValueError, match='must be a whole number >= 1'): quiet_train(fp(), images, tmp_path, **kw)


# --- clear errors from the command line ----------------------------------------------------------------------------

@pytest.mark.parametrize('args, says', [
    (['--set', 'lr=abc'], "lr='abc' is not valid"), (['--set', 'epochs=1.5'], 'epochs=1.5 is not valid'),
    (['--set', 'seed=abc'], "seed='abc' is not valid"), (['--set', 'lr=nan'], 'lr=nan is not valid'),
    (['--set', 'lr=inf'], 'lr=inf is not valid'), (['--set', 'gamma_a=800'], 'gamma_a=800 is not valid'),
    (['--epochs', '-3'], 'epochs=-3 is not valid'), (['--set', 'dataset=mnist'], "dataset='mnist' is not valid")])
def test_bad_recipe_values_are_usage_errors(images, tmp_path, args, says):
    status, err = cli('--recipe', 'cifar10-w1a1', '--data', images, '--run-dir', tmp_path, *args)
    assert status == 2 and says in err and 'Traceback' not in err, err


def test_bad_files_are_named_without_a_traceback(images, tmp_path):
    common = ['--recipe', 'cifar10-w1a1', '--run-dir', tmp_path / 'run', '--epochs', 1, '--batch-size', 16,
              '--no-progress', '--device', 'cpu']
    np.savez(tmp_path / 'empty.npz', images=np.zeros((0, 32, 32, 3), np.uint8), labels=np.zeros(0, np.int64))
    np.savez(tmp_path / 'labels.npz', images=np.zeros((4, 32, 32, 3), np.uint8), labels=np.array([0, 1, 10, -1]))
    (tmp_path / 'cut.pt').write_bytes(b'PK\x03\x04 not really a zip')
    (tmp_path / 'a-file').write_text('')
    for args, says in ((['--data', tmp_path / 'empty.npz', '--init', 'none'], 'empty.npz holds images'),
                       (['--data', tmp_path / 'labels.npz', '--init', 'none'], 'labels.npz'),
                       (['--data', images, '--init', tmp_path / 'cut.pt'], 'cut.pt is damaged, truncated'),
                       (['--data', images, '--shared', tmp_path / 'a-file'], 'is a file, not a folder')):
        status, err = cli(*common, *args)
        assert status == 1 and says in err and 'Traceback' not in err and 'weights_only' not in err, (args, err)


def test_debug_shows_the_traceback(images, tmp_path):
    quiet_train(fp(), images, tmp_path)
    args = ['--recipe', 'cifar10-fp', '--data', images, '--init', 'none', '--run-dir', tmp_path, '--batch-size', 16,
            '--epochs', 3, '--no-progress']
    status, err = cli(*args)
    assert status == 1 and 'holds a run with epochs=2' in err and 'Traceback' not in err, err
    with pytest.raises(ValueError, match='holds a run with epochs=2'):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore'); train_cli([str(a) for a in args] + ['--debug'])


# --- daq-eval: no number that only looks like a result -------------------------------------------------------------

def eval_cli_result(*args) -> tuple:
    "`daq-eval args` in this process: (exit status, stdout + stderr)."
    from daq.checkpoints import eval_cli
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        try: eval_cli([str(a) for a in args]); return 0, out.getvalue()
        except SystemExit as e: return e.code, out.getvalue()


def test_daq_eval_refuses_what_it_cannot_evaluate(tmp_path):
    from daq.shared import find_shared
    try: ckpts = find_shared() / 'checkpoints/official-daq'
    except FileNotFoundError: pytest.skip('no shared/ folder with the authors\' checkpoints')
    w1a1, exact = ckpts / 'cifar10_W1A1.pth', ckpts.parents[1] / 'data/cifar10/test-exact-1000.npz'
    x = np.zeros((4, 32, 32, 3), np.uint8)
    np.savez(tmp_path / 'big.npz', images=np.zeros((4, 64, 64, 3), np.uint8), labels=np.zeros(4, np.int64))
    np.savez(tmp_path / 'column.npz', images=x, labels=np.zeros((4, 1), np.int64))
    np.savez(tmp_path / 'range.npz', images=x, labels=np.array([0, 1, 10, -1]))
    for args, status, says in (
            (['--wbits', 2, '--abits', 2, '--data', exact], 1, 'load with wbits=1, abits=1'),
            (['--batch-size', -5, '--data', exact], 2, 'must be a whole number > 0'),
            (['--batch-size', 0, '--data', exact], 2, 'must be a whole number > 0'),
            (['--data', tmp_path / 'big.npz'], 1, 'holds 64x64 images'),
            (['--data', tmp_path / 'column.npz'], 1, "expected an .npz with 'images'"),
            (['--data', tmp_path / 'range.npz'], 1, 'holds labels -1..10')):
        got, out = eval_cli_result('--checkpoint', w1a1, *args)
        assert got == status and says in out and 'Traceback' not in out and 'accuracy' not in out, (args, out)
