"""The fused kernels compile once for tensors of any shape and rank (issue 6/7: networks with 1x1 maps and Linear
layers hit dynamo's recompile limit)."""
import logging

import torch

from daq.dasr import FusedKernel, fused_mode


def _twice_plus(x, y, a:float): return 2 * x + y * a


def test_fused_kernel_compiles_once_for_many_shapes(caplog):
    "Shapes with dimensions of 1 and of other ranks (conv, linear, conv1d inputs) share one compiled kernel."
    kernel = FusedKernel(_twice_plus, min_numel=0)
    shapes = [(64,), (8, 8), (4, 16, 1, 1), (2, 32, 1, 1), (1, 64), (4, 4, 4), (2, 2, 4, 4), (1, 1, 8, 8),
              (16, 1, 4), (1, 64, 1), (2, 1, 1, 32), (3, 5, 7), (1, 3, 1, 5)]
    with fused_mode('1'), caplog.at_level(logging.WARNING, logger='torch._dynamo'):
        for shape in shapes:
            x, y = torch.randn(shape), torch.randn(shape)
            assert torch.equal(kernel(x, y, 0.5), _twice_plus(x, y, 0.5))
    assert not kernel.failed
    assert 'recompile' not in caplog.text, caplog.text
