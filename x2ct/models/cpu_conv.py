"""Faster CPU paths for the 3D convolutions PyTorch runs slowly at batch 1 (issue 14, point 1).

The same sums, computed by kernels that are fast on a CPU; nothing in a
model's maths, parameters or state dict changes.

* PyTorch hands a batch-1 3D convolution whose input has C*D*H <= 20480
  (the coarse levels of every 3D decoder: 4 x 64^3, 16 x 32^3...) to its
  unvectorised ``slow_conv3d`` / ``slow_conv_transpose3d`` kernels, and only
  a batch of two or more (or a larger input) to oneDNN, which is 5-10x
  faster there. ``conv3d_in_slabs`` cuts the volume into two depth slabs,
  each with the rows of its neighbour the kernel reaches (the halo), runs
  them as a batch of two, and puts the halves back together.
* oneDNN's 3D kernel is slow with very few output channels and a large
  kernel (X2CT's 7x7x7 output head: 4 -> 1 channels, a quarter of a
  training step). ``conv3d_by_depth`` runs it as one 2D convolution over the
  depth slices that outputs one map per depth tap, then adds the maps shifted
  along depth: about 3x faster, forward and backward.

``use_fast_cpu_convolutions(model)`` switches a model's ``nn.Conv3d`` and
``nn.ConvTranspose3d`` layers to these paths (the layers keep their class's
parameters; they only choose a different kernel on the CPU). On other
devices, for other dtypes than float32, under autocast, and for layers the
paths do not cover, the layers run as before.
Results equal PyTorch's to float32 rounding (tests in
Testing/core/test_cpu_conv.py); the measurements are in
docs/benchmarks/profiles/README.md.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

SLOW_PATH_LIMIT = 20480  # PyTorch's batch-1 rule: C * D * H of the input at most this -> slow_conv3d
SLAB_PIECES = 2
DEPTH_CHUNKS = 8  # depth pieces of conv3d_by_depth: 8 keeps a step's peak memory at PyTorch's own (x2ct-cnn small)
CHANNELS_LAST = torch.channels_last_3d


def _plain_float_on_cpu(x: torch.Tensor) -> bool:
    """The paths are for float32 on the CPU outside autocast (oneDNN's float path; the backward of the
    channels-last convolution expects its own dtype)."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    try:
        return not torch.is_autocast_enabled("cpu")
    except TypeError:  # torch before 2.4 takes no device type
        return not torch.is_autocast_cpu_enabled()


def _on_slow_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Would PyTorch run this batch-1 CPU convolution on its unvectorised kernel?"""
    small_kernel = not (weight.shape[-1] > 3 and weight.shape[-2] > 3)
    return x.shape[0] == 1 and small_kernel and x.shape[1] * x.shape[2] * x.shape[3] <= SLOW_PATH_LIMIT


def _stack_slabs(x: torch.Tensor, starts: list[int], length: int) -> torch.Tensor:
    """Depth slabs x[:, :, s : s + length] of a batch-1 volume, stacked along the batch."""
    return torch.cat([x[:, :, s : s + length] for s in starts], dim=0)


def _unstack_slabs(y: torch.Tensor) -> torch.Tensor:
    """(pieces, C, d, H, W) -> (1, C, pieces * d, H, W): the slabs' outputs back in depth order."""
    return torch.cat(y.unbind(0), dim=1).unsqueeze(0)


def _padded_slabs(x: torch.Tensor, before: int, after: int, starts: list[int], length: int) -> torch.Tensor:
    """The depth slabs of x zero-padded in depth by ``before`` and ``after`` rows."""
    return _stack_slabs(F.pad(x, (0, 0, 0, 0, before, after)), starts, length)


def _depth_chunk_as_slices(x: torch.Tensor, first: int, last: int) -> torch.Tensor:
    """Depth rows first..last - 1 of x (zeros outside it) as a batch of 2D slices (B * depth, C, H, W)."""
    depth = x.shape[2]
    rows = x[:, :, max(first, 0) : min(last, depth)]
    rows = F.pad(rows, (0, 0, 0, 0, max(-first, 0), max(last - depth, 0)))
    b, c, d, height, width = rows.shape
    return rows.transpose(1, 2).reshape(b * d, c, height, width)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=CHANNELS_LAST)


@dataclasses.dataclass(frozen=True)
class _Conv:
    """The arguments of one ``aten.convolution`` call (2D or 3D, plain or transposed) and its layout."""

    stride: tuple
    padding: tuple
    dilation: tuple
    transposed: bool = False
    output_padding: tuple = (0, 0, 0)
    groups: int = 1
    layout: torch.memory_format = torch.contiguous_format


class _ConvOfPrepared(torch.autograd.Function):
    """``convolution(prepare(x), weight, bias)`` that keeps only x and the weight for the backward.

    Autograd would keep the prepared input (a padded, re-sliced or
    channels-last copy of x) as well as x itself, which the layer before
    usually keeps too; preparing x again in the backward costs a copy and
    keeps a step's memory what PyTorch's own layer needs.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, prepare, conv: _Conv):
        ctx.save_for_backward(x, weight)
        ctx.prepare, ctx.conv, ctx.has_bias = prepare, conv, bias is not None
        return torch.ops.aten.convolution(prepare(x), weight.contiguous(memory_format=conv.layout), bias,
                                          conv.stride, conv.padding, conv.dilation, conv.transposed,
                                          conv.output_padding, conv.groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        conv = ctx.conv
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        with torch.enable_grad():
            source = x.detach().requires_grad_(wanted[0])
            prepared = ctx.prepare(source)
        outputs = weight.shape[1] * conv.groups if conv.transposed else weight.shape[0]
        grad_prepared, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad.contiguous(memory_format=conv.layout), prepared.detach(),
            weight.contiguous(memory_format=conv.layout), [outputs] if ctx.has_bias else None, conv.stride,
            conv.padding, conv.dilation, conv.transposed, conv.output_padding, conv.groups, wanted)
        grad_x = torch.autograd.grad(prepared, source, grad_prepared)[0] if wanted[0] else None
        del prepared, grad_prepared  # freed before the copy below: a step's peak memory is often here
        grad_x = grad_x.contiguous() if grad_x is not None else None
        grad_weight = grad_weight.contiguous() if grad_weight is not None else None
        return grad_x, grad_weight, grad_bias, None, None


def conv3d_in_slabs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Stride-1, zero-padded ``F.conv3d`` of a batch-1 volume as a batch of depth slabs (oneDNN's path)."""
    step = x.shape[2] // SLAB_PIECES
    prepare = functools.partial(_padded_slabs, before=padding, after=padding,
                                starts=[i * step for i in range(SLAB_PIECES)], length=step + 2 * padding)
    conv = _Conv(stride=(1, 1, 1), padding=(0, padding, padding), dilation=(1, 1, 1))
    return _unstack_slabs(_ConvOfPrepared.apply(x, weight, bias, prepare, conv))


def conv_transpose3d_in_slabs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                              padding: int, output_padding: int) -> torch.Tensor:
    """``F.conv_transpose3d`` of a batch-1 volume whose output is ``stride`` times the input, in depth slabs.

    Output row o gets input rows i with o = stride * i - padding + tap, so the
    rows [stride * a, stride * b) of one slab's output need the input rows
    from ceil((stride * a + padding - k + 1) / stride) to
    floor((stride * b - 1 + padding) / stride); rows outside the volume are zeros.
    """
    k, depth = weight.shape[2], x.shape[2]
    step = depth // SLAB_PIECES
    first = -((k - 1 - padding) // stride)  # first input row, relative to a, that output row stride * a needs
    last = (stride * step - 1 + padding) // stride  # last input row, relative to a, for rows up to stride * b
    before, after = max(0, -first), max(0, last - step + 1)  # rows before 0 and from depth on
    prepare = functools.partial(_padded_slabs, before=before, after=after,
                                starts=[i * step + first + before for i in range(SLAB_PIECES)],
                                length=last - first + 1)
    conv = _Conv(stride=(stride,) * 3, padding=(0, padding, padding), dilation=(1, 1, 1), transposed=True,
                 output_padding=(0, output_padding, output_padding))
    y = _ConvOfPrepared.apply(x, weight, bias, prepare, conv)
    begin = padding - stride * first  # local output row of global row stride * a (no padding in depth)
    return _unstack_slabs(y[:, :, begin : begin + stride * step])


def conv3d_by_depth(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Stride-1, zero-padded ``F.conv3d`` as 2D convolutions over the depth slices.

    A 2D convolution gives, for every slice d and depth tap t, the in-plane
    sum y[d, t]; the 3D output at depth d is the sum over t of
    y[d + t - padding, t]. y is k times the output, so the depth is done in
    ``DEPTH_CHUNKS`` pieces (each with the slices its taps reach) to keep
    the memory of a step what PyTorch's own kernel needs.
    """
    depth, k = x.shape[2], weight.shape[2]
    per_tap = weight.permute(2, 0, 1, 3, 4).reshape(k * weight.shape[0], weight.shape[1], k, k)  # (tap, out)
    conv = _Conv(stride=(1, 1), padding=(padding, padding), dilation=(1, 1), output_padding=(0, 0))
    bounds = [depth * i // DEPTH_CHUNKS for i in range(DEPTH_CHUNKS + 1)]
    pieces = []
    for a, b in zip(bounds, bounds[1:]):
        if b > a:
            prepare = functools.partial(_depth_chunk_as_slices, first=a - padding, last=b + padding)
            y = _ConvOfPrepared.apply(x, per_tap, None, prepare, conv)
            pieces.append(_sum_of_shifted_taps(y, x.shape[0], k, b - a))
    out = torch.cat(pieces, dim=2)
    return out if bias is None else out + bias.view(1, -1, 1, 1, 1)


def _sum_of_shifted_taps(y: torch.Tensor, batch: int, k: int, n: int) -> torch.Tensor:
    """The n output slices of a depth chunk from its 2D maps y (B * (n + k - 1), k * out, H, W)."""
    y = y.reshape(batch, n + k - 1, k, -1, y.shape[-2], y.shape[-1])
    out = None
    for tap, maps in enumerate(y.unbind(2)):
        shifted = maps.narrow(1, tap, n)
        out = shifted if out is None else out + shifted
    return out.transpose(1, 2).contiguous()


def conv3d_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
                         dilation, groups: int) -> torch.Tensor:
    """``F.conv3d`` in oneDNN's preferred channels-last layout; the output comes back in the usual layout."""
    conv = _Conv(stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation), groups=groups,
                 layout=CHANNELS_LAST)
    return _ConvOfPrepared.apply(x, weight, bias, _channels_last, conv).contiguous()


def _cube(values) -> int | None:
    """The one value of an all-equal 3-tuple, else None."""
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,) * 3
    return values[0] if len(set(values)) == 1 else None


class CpuConv3d(nn.Conv3d):
    """``nn.Conv3d`` that takes the paths above on the CPU where they apply (zero padding given as numbers)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not _plain_float_on_cpu(x) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(x, weight, bias)
        k, padding = _cube(self.kernel_size), _cube(self.padding)
        same = (k is not None and padding == k // 2 and _cube(self.stride) == 1 and _cube(self.dilation) == 1
                and self.groups == 1)
        slow = _on_slow_path(x, weight)
        if same and slow and x.shape[2] % SLAB_PIECES == 0 and x.shape[2] >= 2 * k:
            return conv3d_in_slabs(x, weight, bias, padding)
        if same and k >= 5 and self.out_channels < 8:
            return conv3d_by_depth(x, weight, bias, padding)
        if not slow:
            return conv3d_channels_last(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return super()._conv_forward(x, weight, bias)


class CpuConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` that takes ``conv_transpose3d_in_slabs`` on the CPU's batch-1 slow path."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        k, stride, padding = _cube(self.kernel_size), _cube(self.stride), _cube(self.padding)
        output_padding = _cube(self.output_padding)
        doubling = (None not in (k, stride, padding, output_padding)
                    and k - 2 * padding + output_padding == stride)  # output depth = stride * input depth
        if (_plain_float_on_cpu(x) and output_size is None and doubling and self.padding_mode == "zeros"
                and _cube(self.dilation) == 1 and self.groups == 1 and x.shape[2] % SLAB_PIECES == 0
                and x.shape[2] >= 2 * k and _on_slow_path(x, self.weight)):
            return conv_transpose3d_in_slabs(x, self.weight, self.bias, stride, padding, output_padding)
        return super().forward(x, output_size)


def use_fast_cpu_convolutions(model: nn.Module) -> nn.Module:
    """Switch ``model``'s 3D convolutions to the faster CPU paths, in place; returns ``model``."""
    for module in model.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = CpuConv3d
        elif type(module) is nn.ConvTranspose3d:
            module.__class__ = CpuConvTranspose3d
    return model
