"""The benchmark scripts run end to end (tiny sizes) and their built-in checks pass.

Timings are not asserted here (shared CI machines are noisy): the scripts print ratios, the README quotes them.
What is asserted: each script exits 0, runs its fused-vs-eager equality check, and prints a row per method.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, *args, tmp_path: Path) -> tuple:
    "Run benchmarks/<name> with this interpreter; (stdout, parsed --json output)."
    out = tmp_path / f'{name}.json'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, str(REPO / 'benchmarks' / name), *args, '--json', str(out)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:]
    record = out.read_text()
    # records name files, not this machine's paths
    for path in (str(tmp_path), str(REPO), str(REPO.parent)):
        assert path not in record and path not in proc.stdout, f'{path} in the record or output of {name}'
    return proc.stdout, json.loads(record)


def test_dasr_benchmark(tmp_path):
    stdout, result = run_script('dasr.py', '--shapes', '8x16x16x16', '--repeats', '2', '--warmup', '1',
                                '--threads', '1', '--skip-reference', tmp_path=tmp_path)
    assert 'fused == eager checked' in stdout
    assert {r['method'] for r in result['results']} == {'fused', 'eager', 'ste', 'fakequant', 'lsq'}
    assert result['machine']['torch'] and result['machine']['cpu']


def test_step_benchmark(tmp_path):
    stdout, result = run_script('step.py', '--batch', '8', '--repeats', '2', '--warmup', '1', '--threads', '1',
                                tmp_path=tmp_path)
    assert 'daq (fused) == eager: same loss and gradients' in stdout
    rows = {r['method']: r for r in result['results']}
    assert set(rows) == {'fp', 'daq', 'ste', 'eager'}
    assert rows['fp']['ratio_vs_fp'] == 1.0 and all(r['median_ms'] > 0 for r in rows.values())
    # memory accounting: the quantized nets save more than fp, the same whichever rounding path
    assert rows['daq']['saved_mib'] > rows['fp']['saved_mib'] and rows['daq']['saved_mib'] == rows['eager']['saved_mib']


def test_step_benchmark_saved_levels(tmp_path):
    "With --save-levels on, the quantized inputs are counted at one byte per element: less saved memory than off."
    _, on = run_script('step.py', '--batch', '8', '--repeats', '1', '--warmup', '1', '--threads', '1',
                       '--methods', 'fp,daq', '--save-levels', 'on', tmp_path=tmp_path)
    _, off = run_script('step.py', '--batch', '8', '--repeats', '1', '--warmup', '1', '--threads', '1',
                        '--methods', 'fp,daq', '--save-levels', 'off', tmp_path=tmp_path)
    saved = {name: {r['method']: r['saved_mib'] for r in res['results']} for name, res in (('on', on), ('off', off))}
    assert saved['on']['fp'] == saved['off']['fp'] and saved['on']['daq'] < saved['off']['daq']


def test_epoch_benchmark(tmp_path):
    "Needs the JPEG CIFAR-10 copy and the authors' FP checkpoint from shared/ ($DAQ_SHARED or the nearest shared/)."
    stdout, result = run_script('epoch.py', '--subset', '256', '--test-subset', '200', '--epochs', '1',
                                '--batch-size', '64', '--no-progress', '--threads', '1', tmp_path=tmp_path)
    rows = {r['recipe']: r for r in result['results']}
    assert set(rows) == {'cifar10-w1a1', 'cifar10-fp'}
    assert rows['cifar10-w1a1']['schedule_epochs'] == 400 and rows['cifar10-w1a1']['full_epoch_s'] > 0
    assert '400 epochs estimated at' in stdout


def test_step_benchmark_resnet18(tmp_path):
    "--arch resnet18 at tiny sizes: torchvision ResNet-18 W2A2 from the imagenet-r18-w2a2 recipe vs FP."
    stdout, result = run_script('step.py', '--arch', 'resnet18', '--bits', '2', '--batch', '2', '--image-size', '64',
                                '--methods', 'fp,daq,eager', '--repeats', '1', '--warmup', '1', '--threads', '1',
                                tmp_path=tmp_path)
    assert 'ResNet-18' in stdout and '64x64 inputs' in stdout
    assert 'daq (fused) == eager: same loss and gradients' in stdout
    assert result['args']['arch'] == 'resnet18' and result['args']['image_size'] == 64
    rows = {r['method']: r for r in result['results']}
    assert set(rows) == {'fp', 'daq', 'eager'} and rows['fp']['ratio_vs_fp'] == 1.0
    assert all(r['median_ms'] > 0 for r in rows.values()) and rows['daq']['saved_mib'] > rows['fp']['saved_mib']


def test_loader_benchmark(tmp_path):
    "The ImageNet input pipeline at tiny sizes: 16 written JPEGs, 0 and 1 workers, one timed pass each."
    stdout, result = run_script('loader.py', '--images', '16', '--batch', '4', '--workers', '0,1', '--repeats', '1',
                                '--warmup', '1', '--threads', '1', tmp_path=tmp_path)
    assert result['data']['generated'] and result['data']['train_images'] == 16 and result['data']['mean_file_kib'] > 0
    rows = {r['workers']: r for r in result['results']}
    assert set(rows) == {0, 1}
    for r in rows.values():
        assert r['batches'] == 4 and len(r['images_per_s']) == 1
        assert r['min_images_per_s'] <= r['median_images_per_s'] <= r['max_images_per_s'] and r['min_images_per_s'] > 0
    assert rows[0]['ratio_vs_first'] == 1.0 and 'repeat 1/1' in stdout


def test_loader_benchmark_existing_root(tmp_path):
    "--root: a tree is written there once, and a later run uses it as it is."
    root = tmp_path / 'imagenet'
    args = ('--root', str(root), '--images', '8', '--batch', '4', '--workers', '0', '--repeats', '1', '--warmup', '0')
    _, first = run_script('loader.py', *args, tmp_path=tmp_path)
    assert first['data']['generated'] and len(list((root / 'train').rglob('*.JPEG'))) == 8
    stdout, second = run_script('loader.py', *args, tmp_path=tmp_path)
    assert not second['data']['generated'] and second['data']['train_images'] == 8 and 'existing tree' in stdout


def test_calibration_benchmark(tmp_path):
    "ResNet-20 at one bit-width on 64 calibration images and one small zoo model; the record holds both."
    stdout, result = run_script('calibration.py', '--bits', '8', '--calibration', '64', '--zoo', 'resnet18',
                                '--zoo-images', '2', '--threads', '1', tmp_path=tmp_path)
    assert [(r['bits'], r['per_channel']) for r in result['trained']] == [(8, False), (8, True)]
    assert all(r['accuracy'] > 0.9 for r in result['trained'])
    assert result['zoo'][0]['model'] == 'resnet18' and 0 < result['zoo'][0]['per_tensor'] < 0.1
    assert 'ResNet-20 W8A8 per channel' in stdout and result['machine']['torch']


def test_export_benchmark(tmp_path):
    "FP32 vs the integer W1A1 and W2A2 ResNet-20 in PyTorch and ONNX Runtime, tiny batches; the record holds sizes."
    stdout, result = run_script('export.py', '--batches', '1,2', '--rounds', '1', '--min-time', '0.01',
                                tmp_path=tmp_path)
    assert 'W1A1: ONNX Runtime == PyTorch on 100.0 %' in stdout
    assert 'W1A1-packed: logits == the integer path' in stdout and 'W2A2-packed: logits ==' in stdout
    assert {(r['runtime'], r['network']) for r in result['results'] if r['batch'] == 2} == {
        ('torch', 'fp32'), ('torch', 'fakequant'), ('torch', 'W1A1'), ('torch', 'W2A2'), ('onnxruntime', 'fp32'),
        ('onnxruntime', 'W1A1'), ('onnxruntime', 'W2A2'), ('torch', 'W1A1-packed'), ('torch', 'W2A2-packed')}
    assert all(r['ratio_to_faster_fp32'] <= r['ratio_to_fp32'] + 1e-9 for r in result['results'])
    assert result['sizes']['W1A1']['safetensors_bytes'] < result['sizes']['fp32']['safetensors_bytes'] / 10


def test_exactness_record_script(tmp_path):
    "Two training steps, 100 images, W2A2 only: the record holds float32, float64 and ONNX comparisons."
    stdout, result = run_script('exactness.py', '--bits', '2', '--steps', '2', '--images', '100', '--no-authors',
                                '--threads', '1', tmp_path=tmp_path)
    row = result['results'][0]
    assert row['network'] == 'W2A2, 2 steps from FP' and row['float32']['images'] == 100
    assert row['float64']['agreement'] == 1.0 and row['onnx_vs_integer_agreement'] >= 0.99
    assert 'ONNX vs integer' in stdout


def test_records_name_files_in_lists_and_name_file_options(tmp_path):
    "A repeatable NAME=FILE option (measure.py's --start) is recorded by file name, never by this machine's path."
    import argparse
    sys.path.insert(0, str(REPO / 'benchmarks'))
    from dasr import recorded_args
    args = argparse.Namespace(start=[f'dasr-15ep={tmp_path}/runs/last.pt'], json=str(tmp_path / 'r.json'),
                              shared=str(tmp_path), steps=200)
    recorded = recorded_args(args)
    assert recorded == dict(start=['dasr-15ep=last.pt'], json='r.json', shared=tmp_path.name, steps=200)
    assert str(tmp_path) not in json.dumps(recorded)
