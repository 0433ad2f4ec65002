"""The faster CPU convolution paths give PyTorch's results, forward and backward, and are taken where they apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from x2ct.models import build
from x2ct.models import cpu_conv
from x2ct.models.cpu_conv import CpuConv3d, CpuConvTranspose3d, use_fast_cpu_convolutions


def _output_and_gradients(run, layer: nn.Module, x: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    layer.zero_grad()
    y = run(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    grads = [x.grad] + [p.grad.clone() for p in layer.parameters()]
    return y.detach(), grads


def _assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = b.abs().max().item()
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= 1e-5 * max(scale, 1.0), f"differs by {(a - b).abs().max().item()}"


CASES = [
    # (layer, input shape, the path it must take)
    (lambda: nn.Conv3d(4, 4, 3, padding=1), (1, 4, 16, 16, 16), "conv3d_in_slabs"),  # batch-1 slow path
    (lambda: nn.Conv3d(3, 5, 3, padding=1, bias=False), (1, 3, 12, 10, 14), "conv3d_in_slabs"),  # not a cube
    (lambda: nn.Conv3d(4, 1, 7, padding=3), (1, 4, 14, 14, 14), "conv3d_by_depth"),  # X2CT's output head
    (lambda: nn.Conv3d(4, 2, 5, padding=2, bias=False), (2, 4, 11, 9, 10), "conv3d_by_depth"),  # batch 2, odd depth
    (lambda: nn.Conv3d(2, 4, 3, padding=1), (2, 2, 8, 8, 8), "conv3d_channels_last"),  # batch 2: oneDNN
    (lambda: nn.Conv3d(2, 4, 4, stride=2, padding=2), (1, 2, 12, 12, 12), "conv3d_channels_last"),  # a critic's
    (lambda: nn.ConvTranspose3d(4, 3, 3, stride=2, padding=1, output_padding=1), (1, 4, 8, 8, 8),
     "conv_transpose3d_in_slabs"),  # X2CT's upsampling
    (lambda: nn.ConvTranspose3d(4, 3, 2, stride=2), (1, 4, 8, 6, 8), "conv_transpose3d_in_slabs"),  # DuoLift, Swin
    (lambda: nn.ConvTranspose3d(4, 3, 3, stride=2, padding=1, output_padding=1), (1, 4, 7, 8, 8), None),  # odd depth
    (lambda: nn.Conv3d(2, 4, 3, padding=1, padding_mode="reflect"), (2, 2, 8, 8, 8), None),  # PyTorch pads itself
    (lambda: nn.Conv3d(2, 4, 3, padding="same"), (2, 2, 8, 8, 8), None),
]


@pytest.mark.parametrize("make, shape, path", CASES)
def test_a_fast_layer_gives_pytorchs_output_and_gradients(make, shape, path, monkeypatch):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(*shape)
    expected, expected_grads = _output_and_gradients(layer, layer, x)  # still PyTorch's own layer
    taken = []
    for name in ("conv3d_in_slabs", "conv3d_by_depth", "conv3d_channels_last", "conv_transpose3d_in_slabs"):
        original = getattr(cpu_conv, name)
        monkeypatch.setattr(cpu_conv, name, lambda *a, _f=original, _n=name, **k: taken.append(_n) or _f(*a, **k))
    use_fast_cpu_convolutions(layer)
    got, got_grads = _output_and_gradients(layer, layer, x)
    assert taken == ([path] if path else [])
    _assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads):
        _assert_close(g, e)


def test_every_3d_convolution_of_a_built_model_is_switched_and_its_weights_are_unchanged():
    model = build("x2ct-cnn", "tiny")
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert convs and all(type(m) in (CpuConv3d, CpuConvTranspose3d) for m in convs)
    plain = nn.Conv3d(2, 2, 3)
    keys = set(plain.state_dict())
    use_fast_cpu_convolutions(plain)
    assert set(plain.state_dict()) == keys


def test_a_built_model_reconstructs_as_with_pytorchs_own_convolutions():
    """The whole x2ct-cnn tiny network, fast paths against plain layers: the same volume and weight gradients."""
    torch.manual_seed(0)
    fast = build("x2ct-cnn", "tiny", n_views=1)
    plain = build("x2ct-cnn", "tiny", n_views=1)
    plain.load_state_dict(fast.state_dict())
    for m in plain.modules():
        if type(m) is CpuConv3d:
            m.__class__ = nn.Conv3d
        elif type(m) is CpuConvTranspose3d:
            m.__class__ = nn.ConvTranspose3d
    views, angles = torch.rand(1, 1, 16, 16), torch.zeros(1, 1)
    outputs = []
    for model in (fast, plain):
        model.eval()
        out = model(views, angles)
        out.square().mean().backward()
        outputs.append((out.detach(), [p.grad for p in model.parameters()]))
    _assert_close(outputs[0][0], outputs[1][0])
    for g, e in zip(outputs[0][1], outputs[1][1]):
        if e is not None:
            _assert_close(g, e)


@pytest.mark.parametrize("dtype, autocast", [(torch.float64, False), (torch.float32, True)])
def test_other_dtypes_and_autocast_run_pytorchs_own_convolution(dtype, autocast):
    torch.manual_seed(0)
    layer = nn.Conv3d(2, 4, 3, padding=1).to(dtype)
    x = torch.randn(2, 2, 8, 8, 8, dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        expected = layer(x)
        use_fast_cpu_convolutions(layer)
        got = layer(x)
        got.float().sum().backward()  # the backward runs too
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)
