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
devices, and for layers the paths do not cover, the layers run as before.
Results equal PyTorch's to float32 rounding (tests in
Testing/core/test_cpu_conv.py); the measurements are in
docs/benchmarks/profiles/README.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SLOW_PATH_LIMIT = 20480  # PyTorch's batch-1 rule: C * D * H of the input at most this -> slow_conv3d
SLAB_PIECES = 2
CHANNELS_LAST = torch.channels_last_3d


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


def conv3d_in_slabs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Stride-1, zero-padded ``F.conv3d`` of a batch-1 volume as a batch of depth slabs (oneDNN's path)."""
    depth = x.shape[2]
    step = depth // SLAB_PIECES
    padded = F.pad(x, (0, 0, 0, 0, padding, padding))
    slabs = _stack_slabs(padded, [i * step for i in range(SLAB_PIECES)], step + 2 * padding)
    return _unstack_slabs(F.conv3d(slabs, weight, bias, padding=(0, padding, padding)))


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
    padded = F.pad(x, (0, 0, 0, 0, before, after))
    length = last - first + 1
    slabs = _stack_slabs(padded, [i * step + first + before for i in range(SLAB_PIECES)], length)
    y = F.conv_transpose3d(slabs, weight, bias, stride=stride, padding=(0, padding, padding),
                           output_padding=(0, output_padding, output_padding))
    begin = padding - stride * first  # local output row of global row stride * a (no padding in depth)
    return _unstack_slabs(y[:, :, begin : begin + stride * step])


def conv3d_by_depth(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Stride-1, zero-padded ``F.conv3d`` as one 2D convolution over the depth slices.

    The 2D convolution gives, for every slice d and depth tap t, the
    in-plane sum y[d, t]; the 3D output at depth d is the sum over t of
    y[d + t - padding, t].
    """
    b, c_in, depth, height, width = x.shape
    c_out, k = weight.shape[0], weight.shape[2]
    slices = x.transpose(1, 2).reshape(b * depth, c_in, height, width)
    per_tap = weight.permute(2, 0, 1, 3, 4).reshape(k * c_out, c_in, k, k)  # (tap, out) x in x kh x kw
    y = F.conv2d(slices, per_tap, padding=padding).reshape(b, depth, k, c_out, height, width)
    # Shift each tap's maps along depth by tap - padding with a pad that crops one end and zero-fills the
    # other: its backward is the opposite pad, where slicing would zero-fill all of y once per tap.
    out = None
    for tap, maps in enumerate(y.unbind(2)):
        shifted = F.pad(maps, (0, 0, 0, 0, 0, 0, padding - tap, tap - padding))
        out = shifted if out is None else out + shifted
    out = out.transpose(1, 2).contiguous()
    return out if bias is None else out + bias.view(1, -1, 1, 1, 1)


def conv3d_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
                         dilation, groups: int) -> torch.Tensor:
    """``F.conv3d`` in oneDNN's preferred channels-last layout; the output is given back in the usual layout."""
    y = F.conv3d(x.contiguous(memory_format=CHANNELS_LAST), weight.contiguous(memory_format=CHANNELS_LAST), bias,
                 stride, padding, dilation, groups)
    return y.contiguous()


def _cube(values) -> int | None:
    """The one value of an all-equal 3-tuple, else None."""
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,) * 3
    return values[0] if len(set(values)) == 1 else None


class CpuConv3d(nn.Conv3d):
    """``nn.Conv3d`` that takes ``conv3d_in_slabs`` or ``conv3d_by_depth`` on the CPU where they apply."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        k, padding = _cube(self.kernel_size), _cube(self.padding) if not isinstance(self.padding, str) else None
        same = (k is not None and padding == k // 2 and self.padding_mode == "zeros" and _cube(self.stride) == 1
                and _cube(self.dilation) == 1 and self.groups == 1)
        if x.device.type == "cpu" and same:
            if _on_slow_path(x, weight) and x.shape[2] % SLAB_PIECES == 0 and x.shape[2] >= 2 * k:
                return conv3d_in_slabs(x, weight, bias, padding)
            if k >= 5 and self.out_channels < 8:
                return conv3d_by_depth(x, weight, bias, padding)
        if x.device.type == "cpu" and not _on_slow_path(x, weight):
            return conv3d_channels_last(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return super()._conv_forward(x, weight, bias)


class CpuConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` that takes ``conv_transpose3d_in_slabs`` on the CPU's batch-1 slow path."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        k, stride, padding = _cube(self.kernel_size), _cube(self.stride), _cube(self.padding)
        output_padding = _cube(self.output_padding)
        doubling = (None not in (k, stride, padding, output_padding)
                    and k - 2 * padding + output_padding == stride)  # output depth = stride * input depth
        if (x.device.type == "cpu" and output_size is None and doubling and self.padding_mode == "zeros"
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
