"""Issue 2/5, the packed AND/popcount kernels (daq.packed) as daq.export uses them: every dispatch level and the plain
C++ build on the network paths the kernels cover (1-4 bits, linear, conv1d, stride 2, odd channel counts), the fallbacks
(a layer the kernels do not cover; no compiler; DAQ_PACKED=0), and a fresh build from the package's own source."""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from daq.export import load, save, to_integer, use_packed
from daq.networks import calibrate
from daq.packed import available_isas, native_library
from daq.quant import DAQConv1d, DAQConv2d, DAQLinear

LEVELS = [(isa, False) for isa in available_isas(native_library())] + [('portable', True)]


class Mixed(nn.Module):
    "Conv (stride 2, 37 channels) -> BN -> ReLU -> conv (3 bits) -> conv1d -> linear: every kind the kernels take."
    def __init__(self, wbits, abits):
        super().__init__()
        self.stem = nn.Conv2d(3, 37, 3, padding=1)
        self.c1 = DAQConv2d(37, 70, 3, stride=2, padding=1, wbits=wbits, abits=abits)
        self.bn1 = nn.BatchNorm2d(70)
        self.c2 = DAQConv2d(70, 65, 3, padding=2, dilation=2, wbits=wbits, abits=abits)
        self.c3 = DAQConv1d(65, 33, 3, stride=2, padding=1, wbits=wbits, abits=abits)
        self.fc = DAQLinear(33 * 4, 10, wbits=wbits, abits=abits)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.c2(torch.relu(self.bn1(self.c1(x))))
        x = self.c3(torch.relu(x).flatten(2)[..., :8])
        return self.fc(torch.relu(x).flatten(1))


def mixed_network(wbits, abits, seed=0):
    torch.manual_seed(seed)
    net = Mixed(wbits, abits)
    images = torch.randn(16, 3, 9, 9)
    net.train()
    for _ in range(3): net(images)
    calibrate(net, [images], progress=False)
    return net.eval(), images


@pytest.mark.parametrize('bits', [(1, 1), (2, 2), (3, 4), (4, 1)])
def test_packed_equals_the_integer_reference_on_every_level(bits):
    net, images = mixed_network(*bits)
    reference = to_integer(net, packed=False)
    packed = to_integer(net)
    assert sorted(use_packed(packed)) == ['c1', 'c2', 'c3', 'fc']
    with torch.no_grad(): want = reference(images)
    for isa, portable in LEVELS:
        use_packed(packed, isa=isa, portable=portable)
        with torch.no_grad(): got = packed(images)
        assert torch.equal(got, want), (isa, portable, (got - want).abs().max())
    assert seen_levels(packed, images) == seen_levels(reference, images)


def seen_levels(integer, images) -> dict:
    "Every integer layer's input levels (uint8, as lists), read from the packed words on the packed path."
    layers = {n: m for n, m in integer.named_modules() if hasattr(m, 'levels_seen') and m.config['abits']}
    for m in layers.values(): m.levels_seen = []
    with torch.no_grad(): integer(images)
    result = {n: [k.tolist() for k in m.levels_seen] for n, m in layers.items()}
    for m in layers.values(): m.levels_seen = None
    return result


def test_a_layer_the_kernels_do_not_cover_keeps_the_integer_path_with_its_partner():
    "c1 emits levels into c2: when c2 cannot be packed (grouped), c1 must not hand it packed words either."
    net, images = mixed_network(2, 2)
    net.c2 = DAQConv2d(70, 65, 3, padding=2, dilation=2, groups=5, wbits=2, abits=2)
    net.train()(images); calibrate(net, [images], progress=False); net.eval()
    packed, reference = to_integer(net), to_integer(net, packed=False)
    assert sorted(use_packed(packed)) == ['c3', 'fc']
    with torch.no_grad(): assert torch.equal(packed(images), reference(images))


def test_saved_file_loads_onto_the_packed_path(tmp_path):
    net, images = mixed_network(1, 1)
    save(net, tmp_path / 'net.safetensors')
    loaded = load(tmp_path / 'net.safetensors', Mixed(1, 1))
    assert sorted(use_packed(loaded)) == ['c1', 'c2', 'c3', 'fc']
    with torch.no_grad(): assert torch.equal(loaded(images), to_integer(net, packed=False)(images))
    assert all(m.packed is None for m in load(tmp_path / 'net.safetensors', Mixed(1, 1), packed=False).modules()
               if hasattr(m, 'packed'))


FRESH = """
import warnings, torch
from daq.export import to_integer
from daq.models import resnet20
from daq.packed import native_library
net = resnet20(1, 1); net.train()(torch.randn(4, 3, 32, 32)); net.eval()
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter('always')
    integer = to_integer(net)
packed = sum(getattr(m, 'packed', None) is not None for m in integer.modules())
print(packed, native_library() is not None, '|'.join(str(w.message) for w in seen), sep=';')
"""


def run_fresh(tmp_path, **env):
    import os
    environment = {**os.environ, 'DAQ_CACHE_DIR': str(tmp_path / 'cache'), **env}
    done = subprocess.run([sys.executable, '-c', FRESH], capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";", 2)


def test_fresh_build_from_the_package_source(tmp_path):
    packed, available, warned = run_fresh(tmp_path)
    assert (packed, available) == ('18', 'True') and 'unavailable' not in warned
    assert len(list((tmp_path / 'cache').glob('daq-packed-*.so'))) == 1


def test_no_compiler_warns_once_and_keeps_the_integer_path(tmp_path):
    packed, available, warned = run_fresh(tmp_path, CXX=str(tmp_path / 'no-such-compiler'))
    assert (packed, available) == ('0', 'False')
    assert warned.count('packed kernels are unavailable') == 1 and 'integer path' in warned


def test_daq_packed_0_switches_the_kernels_off(tmp_path):
    packed, available, _ = run_fresh(tmp_path, DAQ_PACKED='0')
    assert (packed, available) == ('0', 'False')


def test_forced_level_that_this_machine_lacks_is_a_clear_error():
    import os
    env = {**os.environ, 'DAQ_PACKED_ISA': 'neon'}                   # the user's cache: built once already
    done = subprocess.run([sys.executable, '-c', FRESH], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode != 0 and "packed kernel level 'neon' is not available here" in done.stderr


def test_a_copied_packed_network_runs_and_agrees():
    "copy.deepcopy rebuilds each PackedConv (ctypes state is not copyable), its input quantizer included."
    import copy
    net, images = mixed_network(2, 2)
    packed = to_integer(net)
    twin = copy.deepcopy(packed)
    assert twin.get_submodule('c1').packed.input_packer is not None
    with torch.no_grad(): assert torch.equal(twin(images), packed(images))


@pytest.mark.parametrize('cin,kernel,stride,padding,dilation_h,bits', [
    (16, (3, 3), (1, 1), (1, 1), 1, (1, 1)),     # ResNet-20's stage 1: one word a kernel row
    (32, (3, 3), (2, 2), (1, 1), 1, (2, 2)),     # stage 2's first layer: two words a row
    (21, (3, 3), (1, 2), (2, 0), 2, (3, 1)),     # 3-byte pixels: the last tap straddles two words
    (3, (5, 5), (1, 1), (2, 2), 1, (4, 4)),
    (40, (1, 3), (1, 1), (0, 1), 1, (1, 3)),
])
def test_short_channel_counts_exact(cin, kernel, stride, padding, dilation_h, bits):
    "The kernels that pack a kernel row's taps into one or two words (C_in <= 40) equal a float64 convolution."
    from daq.packed import PackedConv, pack_words
    torch.manual_seed(cin)
    wbits, abits = bits
    k = torch.randint(0, 2 ** abits, (3, cin, 11, 13), dtype=torch.uint8)
    levels = torch.randint(0, 2 ** wbits, (24, cin, *kernel), dtype=torch.uint8)
    want = torch.nn.functional.conv2d(k.double(), 2 * levels.double() - (2 ** wbits - 1), None, stride, padding,
                                      (dilation_h, 1)).float()
    for isa, portable in LEVELS:
        conv = PackedConv(levels, wbits=wbits, abits=abits, stride=stride, padding=padding, dilation=(dilation_h, 1),
                          scale=torch.ones(24), bias=torch.zeros(24), isa=isa, portable=portable)
        assert torch.equal(conv(pack_words(k, abits)), want), (isa, portable)
