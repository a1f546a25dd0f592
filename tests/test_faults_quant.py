"""Regression tests for the quantizer faults of issue "4/7 unattended runs" (daq.quant, from nbs/01_quant.ipynb)."""
import pytest
import torch
import torch.nn as nn

from daq.dasr import fused, fused_mode
from daq.networks import quantize_model
from daq.quant import (DAQConv2d, quantize_act, quantize_reference, quantize_scaled_weight, quantize_weight,
                       split_quantizer_parameters, standardize, _scaled_weight_backward_body,
                       _scaled_weight_forward_body)

INF, NAN = float('inf'), float('nan')


def _daq_layers(model): return [m for m in model.modules() if isinstance(m, DAQConv2d)]


def _net(shared=None):
    "Stem, two quantizable convs (or one `shared` conv used twice), linear classifier; zeros in: zeros to the second."
    a = shared or nn.Conv2d(8, 8, 3, padding=1, bias=False)
    b = shared or nn.Conv2d(8, 8, 3, padding=1, bias=True)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), a, nn.ReLU(), b, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


# 1. ±inf inputs are clipped to the end levels, as by the reference; NaN stays NaN
@pytest.mark.parametrize('bits, soft, fuse', [(b, s, '0') for b in (1, 2, 4, 8) for s in (True, False)]
                         + [(2, s, '1') for s in (True, False)])
def test_infinite_inputs_clip_like_the_reference(bits, soft, fuse):
    v = torch.tensor([INF, -INF, NAN, 0.7, -5.0, 9.0])
    with fused_mode(fuse):
        ya, yw = quantize_act(v, 2.0, bits, soft=soft), quantize_weight(v, -3.0, 3.0, bits, soft=soft)
    ra, rw = quantize_reference(v, 0.0, 2.0, bits, False), quantize_reference(v, -3.0, 3.0, bits, True)
    torch.testing.assert_close(ya, ra, rtol=0, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(yw, rw, rtol=0, atol=1e-6, equal_nan=True)
    assert ya[0] == 1 and ya[1] == 0 and yw[0] == 1 and yw[1] == -1
    assert torch.isnan(ya[2]) and torch.isnan(yw[2])


def test_infinite_inputs_get_no_gradient_and_leave_the_bounds_finite():
    v = torch.tensor([INF, -INF, 0.7, 1.5], requires_grad=True)
    lo, up = torch.tensor(-1.0, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    quantize_weight(v, lo, up, 2).sum().backward()
    assert torch.equal(v.grad[:2], torch.zeros(2)) and torch.isfinite(v.grad).all()
    assert torch.isfinite(lo.grad) and torch.isfinite(up.grad)


# 2. a NaN weight shows in the output instead of becoming a constant weight
@pytest.mark.parametrize('fuse', ['0', '1'])
@pytest.mark.parametrize('soft', [True, False])
def test_nan_weight_propagates(fuse, soft):
    w = torch.randn(8, 4, 3, 3)
    w[2, 1, 0, 0] = NAN
    with fused_mode(fuse):
        y = quantize_scaled_weight(w.requires_grad_(soft), -3.0, 3.0, 0.5, 2, soft=soft)
    assert torch.isnan(y).all()
    assert torch.isnan(standardize(w)).all()
    y = quantize_scaled_weight(w.detach().double(), -3.0, 3.0, 0.5, 2, soft=soft)
    assert torch.isnan(y).all()


def test_nan_weight_reaches_the_layer_output():
    torch.manual_seed(0)
    conv, x = DAQConv2d(4, 8, 3, padding=1), torch.rand(2, 4, 6, 6)
    conv.train()(x)                                                      # initialise
    with torch.no_grad(): conv.weight[0, 0, 0, 0] = NAN
    assert torch.isnan(conv(x)).any()
    with torch.no_grad(): assert torch.isnan(conv.eval()(x)).any()


# 3. non-finite and too small (subnormal) clip bounds are refused on the CPU
@pytest.mark.parametrize('upper', [INF, NAN, torch.tensor(INF), 0.0, -1.0])
def test_act_refuses_non_finite_or_non_positive_upper(upper):
    with pytest.raises(ValueError, match='upper must be > 0 and finite'): quantize_act(torch.rand(4), upper, 2)


@pytest.mark.parametrize('upper', [1e-45, 1e-40, torch.tensor(1e-45)])
def test_act_refuses_a_subnormal_step(upper):
    with pytest.raises(ValueError, match='too narrow for 3 steps'): quantize_act(torch.rand(4), upper, 2)


@pytest.mark.parametrize('lower, upper, message', [(-3.0, INF, 'both finite'), (-INF, 3.0, 'both finite'),
                                                   (NAN, 3.0, 'both finite'), (0.0, 1e-45, 'too narrow'),
                                                   (0.0, 1e-38, 'too narrow'), (-3e38, 3e38, 'too wide')])
def test_weight_refuses_bad_ranges(lower, upper, message):
    for f in (lambda: quantize_weight(torch.randn(5), lower, upper, 2),
              lambda: quantize_scaled_weight(torch.randn(5), lower, upper, 1.0, 2)):
        with pytest.raises(ValueError, match=message): f()


def test_small_but_normal_ranges_still_work():
    assert torch.isfinite(quantize_act(torch.rand(4) * 1e-30, 1e-30, 8)).all()
    assert torch.isfinite(quantize_weight(torch.randn(4), -1e-20, 1e-20, 2)).all()


# 4. DASR settings whose constants overflow are refused at construction / argument check
@pytest.mark.parametrize('kwargs, message', [(dict(gamma_w=800), 'gamma_w=800 is too large'),
                                             (dict(gamma_a=800.0), 'gamma_a=800 is too large'),
                                             (dict(sigma_w=1e-200), 'sigma_w=1e-200 is too small'),
                                             (dict(sigma_a=1e200), 'sigma_a=1e\\+200 is too large')])
def test_layer_refuses_overflowing_settings_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message): DAQConv2d(3, 3, 3, **kwargs)


def test_functional_quantizers_refuse_overflowing_settings():
    v = torch.randn(6)
    with pytest.raises(ValueError, match='gamma=800 is too large.*use gamma ≤ 700'): quantize_act(v, 1.0, 2, gamma=800)
    with pytest.raises(ValueError, match='sigma=1e-200 is too small'): quantize_weight(v, -3.0, 3.0, 2, sigma=1e-200)
    with pytest.raises(ValueError, match='gamma=800 is too large'): quantize_scaled_weight(v, -3.0, 3.0, 1.0, 2,
                                                                                         gamma=800)


def test_ste_has_no_constants_to_overflow():
    conv = DAQConv2d(3, 4, 3, gamma_w=800, rounding='ste').train()
    assert torch.isfinite(conv(torch.rand(1, 3, 5, 5))).all()


# 5. a first training batch of zeros does not make an invalid bound; the next batch with spread initialises
def test_all_zero_first_batch_then_a_normal_one():
    torch.manual_seed(0)
    model = quantize_model(_net()).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for x in (torch.zeros(2, 3, 8, 8), torch.randn(2, 3, 8, 8)):
        opt.zero_grad(); model(x).square().mean().backward(); opt.step()
        if not x.any(): assert [int(m.init) for m in _daq_layers(model)] == [1, 1]      # not initialised yet
    for m in _daq_layers(model):
        assert int(m.init) == 0 and m.uA.item() > 0 and torch.isfinite(m.uA)
    with torch.no_grad(): assert torch.isfinite(model.eval()(torch.randn(2, 3, 8, 8))).all()


def test_layer_initialises_on_the_first_input_with_spread():
    conv, x = DAQConv2d(4, 8, 3).train(), torch.rand(2, 4, 6, 6)
    for placeholder in (torch.zeros_like(x), torch.full_like(x, 0.5)):       # zeros, or any constant
        conv(placeholder)
        assert int(conv.init) == 1 and conv.uA.item() == 3.0
    conv(x)
    assert int(conv.init) == 0 and abs(conv.uA.item() - 3 * x.std().item()) < 1e-5
    conv(2 * x)
    assert abs(conv.uA.item() - 3 * x.std().item()) < 1e-5                   # initialised once


# 6. an empty weight is refused before any kernel is tried, and leaves the fused kernels on
def test_empty_weight_is_refused_and_kernels_stay_fused():
    fwd, bwd = fused(_scaled_weight_forward_body, 0), fused(_scaled_weight_backward_body, 0)
    with fused_mode('1'):
        for soft in (True, False):
            with pytest.raises(ValueError, match=r'the weight is empty \(shape \(0, 3, 3, 3\)\)'):
                quantize_scaled_weight(torch.zeros(0, 3, 3, 3, requires_grad=True), -3.0, 3.0, 1.0, 2, soft=soft)
        with pytest.raises(ValueError, match='the weight is empty'): quantize_weight(torch.zeros(0), -3.0, 3.0, 2)
        assert fwd.failed == set() and bwd.failed == set()
        w = torch.randn(8, 3, 3, 3)
        assert fwd.wants_fused(w)
        y = quantize_scaled_weight(w, -3.0, 3.0, 1.0, 2, soft=False)
        assert (3.0,) in fwd.compiled and fwd.failed == set()                # the compiled kernel ran
    with fused_mode('0'): assert torch.equal(y, quantize_scaled_weight(w, -3.0, 3.0, 1.0, 2, soft=False))


# 7. quantize_model refuses a model that is already quantized
def test_quantize_model_twice_is_refused():
    model = quantize_model(_net(), wbits=2, abits=2)
    with pytest.raises(ValueError, match=r'already quantized \(DAQ layers: 2, 4\).*full-precision model'):
        quantize_model(model, wbits=4, abits=4)
    assert [(m.wbits, m.abits) for m in _daq_layers(model)] == [(2, 2), (2, 2)]
    hand_built = nn.Sequential(nn.Conv2d(3, 8, 3), DAQConv2d(8, 8, 3), nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match='already quantized'): quantize_model(hand_built)


# 8. a conv used twice becomes one DAQConv2d everywhere
def test_shared_conv_is_one_quantized_layer_everywhere():
    shared = nn.Conv2d(8, 8, 3, padding=1)
    w = shared.weight.detach().clone()
    model = nn.Module()
    model.body, model.alias = _net(shared), shared             # a third reference, by attribute
    model.forward = model.body.forward
    quantize_model(model)
    body = model.body
    assert isinstance(body[2], DAQConv2d) and body[2] is body[4] is model.alias
    assert len(_daq_layers(model)) == 1 and torch.equal(body[2].weight.detach(), w)
    assert not any(type(m) is nn.Conv2d and m is not body[0] for m in model.modules())
    assert len(split_quantizer_parameters(model)[0]) == 5          # uW, lW, uA, beta and the (undecided) lA
    model.train()(torch.randn(2, 3, 8, 8)).sum().backward()


def test_shared_block_and_kept_shared_stem():
    block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    stem = nn.Conv2d(8, 8, 1)
    model = nn.Sequential(stem, block, block, stem, nn.Flatten(), nn.Linear(8 * 16, 2))
    quantize_model(model)
    assert model[1] is model[2] and isinstance(model[1][0], DAQConv2d)
    assert model[0] is model[3] and type(model[0]) is nn.Conv2d              # the stem is kept under both names
    assert torch.isfinite(model.train()(torch.randn(2, 8, 4, 4))).all()


# 9. frozen weights stay frozen; the new quantizer parameters are trainable
def test_requires_grad_is_kept():
    model = _net()
    model[2].requires_grad_(False)
    model[4].bias.requires_grad_(False)
    quantize_model(model)
    assert not model[2].weight.requires_grad and model[4].weight.requires_grad and not model[4].bias.requires_grad
    frozen = quantize_model(_net().requires_grad_(False))
    for m in _daq_layers(frozen):
        assert not any(p.requires_grad for p in (m.weight, m.bias) if p is not None)
        assert all(p.requires_grad for p in (m.uW, m.lW, m.uA, m.beta))
    assert not any(p.requires_grad for p in split_quantizer_parameters(frozen)[1])


# 10. batch-norm folding on a DAQ layer was silently wrong (8-25 % output error, issue 7/7): refused
def test_fuse_conv_bn_eval_is_refused():
    conv, bn = DAQConv2d(4, 8, 3).train(), nn.BatchNorm2d(8)
    conv(torch.rand(2, 4, 6, 6)); conv.eval(); bn.eval()
    with pytest.raises(RuntimeError, match='fuse_conv_bn_eval does to fold a batch norm'):
        torch.nn.utils.fuse_conv_bn_eval(conv, bn)
    with torch.no_grad(): conv.weight.copy_(torch.randn_like(conv.weight))     # in place: fine
    conv.load_state_dict(conv.state_dict())
