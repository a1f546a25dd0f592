"""Issue 7/7, "something to deploy": integer form, packed file, ONNX (fake-quant through dynamo, integer through
ConvInteger), the `daq-export` command. Needs the `export` extra (safetensors, onnx, onnxruntime, onnxscript)."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from daq.checkpoints import load_npz_images
from daq.export import compare, export_onnx, frozen, load, onnx_logits, save, to_integer
from daq.models import resnet20
from daq.networks import calibrate, quantize_model
from daq.quant import DAQConv2d
from daq.runs import save_checkpoint
from daq.shared import shared_file
from daq.train import get_recipe


def test_dynamo_export_of_a_fake_quant_layer(tmp_path):
    "torch.onnx.export(dynamo=True) failed on the quantizer (init check, clamp overload, amax without dims); now exact."
    torch.manual_seed(0)
    layer = DAQConv2d(8, 4, 3, padding=1, wbits=2, abits=2)
    x = torch.rand(2, 8, 6, 6)
    layer.train()(x); layer.eval()
    torch.onnx.export(layer, (x,), dynamo=True, verbose=False).save(str(tmp_path / 'layer.onnx'))
    with torch.no_grad(): want = layer(x)
    torch.testing.assert_close(onnx_logits(tmp_path / 'layer.onnx', x), want, rtol=1e-5, atol=1e-6)   # summation order


@pytest.fixture(scope='module')
def exact_images():
    return load_npz_images(shared_file('cifar10-exact-1000'))


@pytest.fixture(scope='module', params=[2, 4])
def trained(request):
    "ResNet-20 WbAb from the authors' FP file after 25 steps of 128 JPEG training images, as in the exactness record."
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
    from exactness import briefly_trained                                   # benchmarks/exactness.py
    return request.param, briefly_trained(request.param, SimpleNamespace(seed=0, steps=25, shared=None))


def test_briefly_trained_networks_are_exact_in_integer_form(trained, exact_images, tmp_path):
    "W2A2 and W4A4: >= 99.9 % argmax agreement on the exact 1,000, thresholds folded, the same through the file."
    bits, model = trained
    integer = to_integer(model)
    assert sum(1 for f in integer.folds if f['levels_to']) == 9
    assert {integer.get_submodule(f['layer']).thresholds.shape[0] for f in integer.folds if f['levels_to']} == \
        {2 ** bits - 1}
    r = compare(model, integer, *exact_images)
    print(f"W{bits}A{bits}: {r}")
    # measured (results/benchmarks/exactness-cpu.json): W2A2 100 % (1.5e-5 of the levels differ), W4A4 99.8 %
    # (1.6e-3); the W4A4 fake-quant network in float64 agrees with its own float32 run on 99.7 %
    assert r['agreement'] >= {2: 0.999, 4: 0.995}[bits] and r['level_mismatch'] < {2: 1e-4, 4: 4e-3}[bits]
    assert abs(r['accuracy_fake'] - r['accuracy_integer']) <= 0.003 and r['accuracy_fake'] > 0.5
    # in float64 (both networks, the same weights) the same levels up to the float32 rounding of the stored scales
    r64 = compare(frozen(model).double(), integer.double(), exact_images[0].double(), exact_images[1])
    integer.float()
    assert r64['agreement'] == 1.0 and r64['level_mismatch'] < 1e-4
    header = save(model, tmp_path / 'model.safetensors')
    assert header['architecture'] == dict(name='resnet20', wbits=bits, abits=bits, num_classes=10)
    loaded = load(tmp_path / 'model.safetensors')
    with torch.no_grad(): assert torch.equal(loaded(exact_images[0][:64]), integer(exact_images[0][:64]))
    fp_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert (tmp_path / 'model.safetensors').stat().st_size < fp_bytes * (bits / 32 + 0.05)


@pytest.mark.parametrize('trained', [2], indirect=True)        # W4A4's ONNX agreement is in the exactness record
def test_briefly_trained_networks_run_in_onnxruntime(trained, exact_images, tmp_path):
    "The integer ONNX file (ConvInteger on uint8 levels) gives the integer network's predictions."
    import onnx
    bits, model = trained
    integer = to_integer(model)
    path = export_onnx(integer, tmp_path / 'model.onnx', exact_images[0][:2])
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count('ConvInteger') == 18 and ops.count('BatchNormalization') == 1     # the classifier's BatchNorm1d
    with torch.no_grad(): want = integer(exact_images[0])
    got = onnx_logits(path, exact_images[0])
    assert (got.argmax(1) == want.argmax(1)).float().mean() >= 0.999


def _small_net(signed:bool=False) -> nn.Module:
    "conv -> BN -> ReLU -> conv -> BN -> ReLU -> conv -> pool -> linear, every conv a DAQ layer (W2A2)."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.running_mean.uniform_(-0.5, 0.5); bn.running_var.uniform_(0.5, 2)
            bn.weight.copy_(torch.tensor([1.5, -0.7, 0.0, 1.0, -2.0, 0.3, 1.0, 0.8]))    # negative and zero scales
    quantize_model(net, 2, 2, keep_first=False, keep_classifier=signed, keep_mean=False, init_rule='authors')
    calibrate(net, [torch.randn(16, 3, 8, 8) if signed else torch.rand(16, 3, 8, 8)], progress=False)
    return net.eval()


def test_thresholds_equal_batch_norm_and_quantizer_with_negative_and_zero_scales():
    "The folded integer thresholds give the levels the unfolded float path gives (BN scales < 0, = 0 included)."
    net = _small_net()
    folded, plain = to_integer(net), to_integer(net, fold=False)
    assert [bool(f['levels_to']) for f in folded.folds] == [True, True, False, False]
    x = torch.rand(64, 3, 8, 8)
    with torch.no_grad(): torch.testing.assert_close(folded(x), plain(x), rtol=1e-5, atol=1e-5)
    r = compare(net, folded, x)
    assert r['agreement'] == 1.0 and r['level_mismatch'] < 1e-3


def test_saved_file_of_your_own_network_needs_that_network(tmp_path):
    "A network daq cannot build is loaded into the network it was saved from; another network is refused."
    net = _small_net(signed=True)
    assert any(getattr(m, 'signed_input', False) for m in net.modules())
    header = save(net, tmp_path / 'net.safetensors')
    assert header['architecture'] is None
    with pytest.raises(ValueError, match='pass the network it was saved from'): load(tmp_path / 'net.safetensors')
    skeleton = _small_net(signed=True)                    # built the same way; its values do not matter
    for m in skeleton.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)): nn.init.zeros_(m.weight)
    loaded = load(tmp_path / 'net.safetensors', skeleton)
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad(): assert torch.equal(loaded(x), to_integer(net)(x))
    with pytest.raises(ValueError, match='not the saved network|structure|does not fit'):
        load(tmp_path / 'net.safetensors', resnet20(2, 2))
    (tmp_path / 'junk.safetensors').write_bytes(b'not a file')
    with pytest.raises(ValueError, match='not a safetensors file'): load(tmp_path / 'junk.safetensors')


def test_missing_extra_is_named(monkeypatch, tmp_path):
    "Without the export extra, ONNX Runtime's absence is one message naming the extra."
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(ImportError, match=r'daq\[export\]'): onnx_logits(tmp_path / 'x.onnx', torch.zeros(1, 3))


@pytest.mark.parametrize('trained', [2], indirect=True)              # one bit-width is enough for the command
def test_daq_export_command(trained, tmp_path):
    "daq-export on a daq-train checkpoint (its recipe inside) writes both files and checks them; errors are one line."
    bits, model = trained
    config = dict(recipe=dict(vars(get_recipe('cifar10-w2a2'))))
    save_checkpoint(dict(model=model.state_dict(), epoch=0, test_acc=0.5, config=config), tmp_path / 'best.pt')
    exe = [str(Path(sys.executable).parent / 'daq-export')]                   # the console script
    out = subprocess.run([*exe, str(tmp_path / 'best.pt'), str(tmp_path / 'w2a2.safetensors'), '--onnx',
                          str(tmp_path / 'w2a2.onnx'), '--check', '200'], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert 'argmax agreement 100.0 %' in out.stdout and 'ONNX' in out.stdout, out.stdout
    assert 'images/s, FP32' in out.stdout and 'batch 128' in out.stdout, out.stdout       # the speed next to FP32's
    assert (tmp_path / 'w2a2.onnx').is_file() and load(tmp_path / 'w2a2.safetensors')
    torch.save(model.state_dict(), tmp_path / 'bare.pt')
    out = subprocess.run([*exe, str(tmp_path / 'bare.pt'), str(tmp_path / 'x.safetensors')], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 1 and out.stderr.startswith('daq-export: error:') and '--recipe' in out.stderr
    assert 'Traceback' not in out.stderr


@pytest.mark.parametrize('bits, keep_mean, signed', [(8, True, True), (2, True, True), (3, False, False),
                                                      (4, True, False)])
def test_onnx_of_every_layer_kind_and_setting(bits, keep_mean, signed, tmp_path):
    "Grouped and 1x1 convs, Linear (MatMulInteger), keep_mean, signed inputs, 8-bit weights (two ConvIntegers)."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 1), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    quantize_model(net, bits, bits, keep_first=False, keep_classifier=False, keep_mean=keep_mean)
    data = torch.randn(32, 3, 8, 8) if signed else torch.rand(32, 3, 8, 8)
    calibrate(net, [data], progress=False)
    integer = to_integer(net.eval())
    export_onnx(integer, tmp_path / 'net.onnx', data[:2])          # 8 bits, groups 2: failed in ONNX Runtime before
    with torch.no_grad(): want, fake = integer(data), net(data)
    torch.testing.assert_close(onnx_logits(tmp_path / 'net.onnx', data), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(want, fake, rtol=1e-5, atol=1e-6)
    other = torch.rand(3, 3, 11, 11)                                   # the file takes another batch and image size
    with torch.no_grad(): torch.testing.assert_close(onnx_logits(tmp_path / 'net.onnx', other), integer(other),
                                                     rtol=1e-5, atol=1e-6)


def test_daq_predict_command(tmp_path):
    "daq-predict runs a saved file on an .npz (with its accuracy) and on a folder of images; errors are one line."
    import numpy as np
    from PIL import Image
    from daq.checkpoints import load_authors_checkpoint
    from daq.shared import read_image_npz
    w1a1 = load_authors_checkpoint(shared_file('authors-checkpoints') / 'cifar10_W1A1.pth', 1, 1)
    save(to_integer(w1a1), tmp_path / 'w1a1.safetensors')
    images, labels = read_image_npz(shared_file('cifar10-exact-1000'))
    np.savez(tmp_path / 'some.npz', images=images[:300], labels=labels[:300])
    (tmp_path / 'pictures' / 'more').mkdir(parents=True)
    for j in range(4):
        Image.fromarray(images[j]).save(tmp_path / 'pictures' / ('more' if j % 2 else '.') / f'{j}.png')
    exe = str(Path(sys.executable).parent / 'daq-predict')
    out = subprocess.run([exe, str(tmp_path / 'w1a1.safetensors'), str(tmp_path / 'some.npz'), '--batch-size', '64'],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = [line.split('\t') for line in out.stdout.splitlines()]
    assert len(rows) == 300 and rows[0][0] == 'some.npz[0]' and all(0 < float(r[2]) <= 1 for r in rows)
    with torch.no_grad():
        want = load(tmp_path / 'w1a1.safetensors')(load_npz_images(tmp_path / 'some.npz')[0]).argmax(1)
    from daq.data import CIFAR10_CLASSES
    assert [CIFAR10_CLASSES.index(r[1]) for r in rows] == want.tolist()
    accuracy = (want == torch.from_numpy(labels[:300])).float().mean().item()
    assert f'accuracy {100 * accuracy:.1f} %' in out.stderr, out.stderr
    out = subprocess.run([exe, str(tmp_path / 'w1a1.safetensors'), str(tmp_path / 'pictures')], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert [r.split('\t')[1] for r in out.stdout.splitlines()] == [rows[j][1] for j in (0, 2, 1, 3)]
    (tmp_path / 'pictures' / 'broken.jpg').write_bytes(b'not an image')
    for args in ([str(tmp_path / 'pictures')], [str(tmp_path / 'none.npz')],
                 [str(tmp_path / 'some.npz'), '--batch-size', '0']):
        out = subprocess.run([exe, str(tmp_path / 'w1a1.safetensors'), *args], capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 1 and out.stderr.startswith('daq-predict: error:'), (args, out.stderr)
        assert 'Traceback' not in out.stderr
