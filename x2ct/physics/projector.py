"""Differentiable DRR projector: line integrals of attenuation through a volume.

The method is Joseph's (1982): for each view pick the volume axis the rays
run most nearly along, cut the volume into its slices (planes), and sum, over
the planes, the bilinear sample of each plane where the ray crosses it times
the ray's length through one slice (slice thickness / |cos| of the ray's angle
to that axis). Views at multiples of 90 degrees are the common case
(frontal, lateral): there a plane lies parallel to the detector, the ray
crossings form a grid that is the detector grid scaled by the plane's distance
from the source, so the bilinear sample is separable into one interpolation
along columns and one along rows. Both are gathers of whole contiguous voxel
rows (``index_select`` on a copy of the volume with axis 0 innermost, made
once for all views), which read only the voxels the rays pass and are far
cheaper than general 2D sampling, for the same bilinear model. Other angles
use ``grid_sample`` on the planes. Everything is torch, so gradients reach the
volume and it runs on CPU or CUDA.

Geometry and view convention: ``x2ct.physics.geometry``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from x2ct.errors import InputError
from x2ct.physics.geometry import DRRGeometry, view_frame

#: Intermediate values (per batch item) computed at once: planes go in chunks below this.
_CHUNK_ELEMENTS = 1 << 22


def project(mu: torch.Tensor, spacing, angles, geometry: DRRGeometry = DRRGeometry()) -> torch.Tensor:
    """Line integrals of ``mu`` (B, 1, D, H, W) in 1/mm -> images (B, V, rows, cols), unitless.

    ``mu`` is in the canonical frame with voxel size ``spacing`` = (sD, sH, sW)
    mm, centred on the isocentre (plus ``geometry.isocentre``); ``angles`` are
    gantry angles in degrees, (V,) shared by the batch or (B, V).
    """
    if not isinstance(mu, torch.Tensor) or mu.ndim != 5 or mu.shape[1] != 1:
        shape = tuple(mu.shape) if isinstance(mu, torch.Tensor) else type(mu).__name__
        raise InputError(f"project expects a volume tensor (B, 1, D, H, W), got {shape}.")
    if not mu.is_floating_point():
        raise InputError(f"project needs a floating-point volume, got {mu.dtype}.")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"Voxel spacing must be 3 positive numbers of mm, got {spacing}.")
    angles = np.asarray(torch.as_tensor(angles, dtype=torch.float64).cpu(), dtype=np.float64)
    batch = mu.shape[0]
    if angles.ndim == 1:
        angles = np.broadcast_to(angles, (batch, angles.shape[0]))
    if angles.ndim != 2 or angles.shape[0] != batch or angles.shape[1] < 1 or not np.isfinite(angles).all():
        raise InputError(f"Angles must be finite, shaped (V,) or (B={batch}, V), got shape {angles.shape}.")
    geometry.check_volume([n * s for n, s in zip(mu.shape[2:], spacing)])

    shared = bool((angles == angles[:1]).all())
    groups = [_Voxels(mu[:, 0])] if shared else [_Voxels(mu[b:b + 1, 0]) for b in range(batch)]
    views = []
    for v in range(angles.shape[1]):
        views.append(torch.cat([_project_view(voxels, spacing, angles[0 if shared else n, v], geometry)
                                for n, voxels in enumerate(groups)]))
    return torch.stack(views, dim=1)


class _Voxels:
    """Volumes (B, D, H, W) and, made once for all the views that use it, a copy with axis 0 innermost."""

    def __init__(self, volume: torch.Tensor):
        self.volume = volume
        self._columns = None

    def columns(self) -> torch.Tensor:
        """(B, H*W, D): the voxel columns along axis 0, column (h, w) at h*W + w."""
        if self._columns is None:
            b, depth, height, width = self.volume.shape
            # a batched 2D transpose (D, H*W) -> (H*W, D): several times faster than the 3D permute
            self._columns = self.volume.reshape(b, depth, height * width).transpose(1, 2).contiguous()
        return self._columns


def _project_view(voxels: _Voxels, spacing, angle: float, geometry: DRRGeometry,
                  separable: bool | None = None) -> torch.Tensor:
    """One view of the volumes -> (B, rows, cols).

    ``separable`` forces (True/False) the path; by default quarter angles take
    the separable one.
    """
    volume = voxels.volume
    d, c = view_frame(angle)
    axis = 1 if abs(d[1]) >= abs(d[2]) else 2  # the axis the rays run most nearly along
    rays = _Rays(geometry, d, c, axis, volume.shape[1:], spacing)
    if separable is None:
        separable = c[axis] == 0.0
    if separable:
        if c[axis] != 0.0:
            raise ValueError("the separable path needs a view at a multiple of 90 degrees")
        image = _sweep_separable(voxels, axis, rays)
    else:
        image = _sweep_general(volume, axis, rays)
    return image * rays.path_length().to(volume)


class _Rays:
    """The rays of one view and where they cross each plane, in fractional voxel indices."""

    def __init__(self, geometry: DRRGeometry, d, c, axis: int, shape, spacing):
        rows, cols = geometry.pixels
        row_mm, col_mm = geometry.pixel_mm
        self.geometry, self.axis, self.other = geometry, axis, 3 - axis
        self.shape, self.spacing = tuple(shape), tuple(spacing)
        self.v = (np.arange(rows) - (rows - 1) / 2) * row_mm  # detector offsets along e0
        self.u = (np.arange(cols) - (cols - 1) / 2) * col_mm  # and along c
        self.d, self.c = np.asarray(d), np.asarray(c)
        self.iso = np.asarray(geometry.isocentre)
        # Plane positions along the chosen axis, relative to the isocentre.
        n = self.shape[axis]
        self.planes = (np.arange(n) - (n - 1) / 2) * self.spacing[axis] - self.iso[axis]

    def _origin_direction(self):
        """Per-ray origin and direction, arrays (rows, cols, 3)."""
        e0 = np.array([1.0, 0.0, 0.0])
        offsets = self.v[:, None, None] * e0 + self.u[None, :, None] * self.c
        if self.geometry.beam == "parallel":
            return offsets, np.broadcast_to(self.d, offsets.shape)
        source = -self.geometry.sad * self.d
        return np.broadcast_to(source, offsets.shape), self.geometry.sid * self.d + offsets

    def path_length(self) -> torch.Tensor:
        """Length (mm) of each ray inside one slice: thickness * |direction| / |direction . axis|."""
        _, direction = self._origin_direction()
        length = self.spacing[self.axis] * np.linalg.norm(direction, axis=-1) / np.abs(direction[..., self.axis])
        return torch.from_numpy(np.ascontiguousarray(length))

    def index(self, position, axis: int):
        """Canonical position (mm from the isocentre) along ``axis`` -> fractional voxel index."""
        return (position + self.iso[axis]) / self.spacing[axis] + (self.shape[axis] - 1) / 2

    def crossings(self, planes: slice = slice(None)):
        """Fractional (row index, column index) of every ray in the chosen planes: two (K, rows, cols) arrays."""
        origin, direction = self._origin_direction()
        a, o = self.axis, self.other
        step = (self.planes[planes, None, None] - origin[None, ..., a]) / direction[None, ..., a]
        rows = self.index(origin[None, ..., 0] + step * direction[None, ..., 0], 0)
        cols = self.index(origin[None, ..., o] + step * direction[None, ..., o], o)
        return rows, cols

    def separable_crossings(self):
        """At quarter angles: row index per (plane, row) and column index per (plane, column)."""
        a, o = self.axis, self.other
        if self.geometry.beam == "parallel":
            scale = np.ones_like(self.planes)
        else:  # distance of each plane from the source over the SID (a pure magnification)
            scale = (self.planes + self.geometry.sad * self.d[a]) / (self.geometry.sid * self.d[a])
        rows = self.index(scale[:, None] * self.v[None, :], 0)
        cols = self.index(scale[:, None] * self.u[None, :] * self.c[o], o)
        return rows, cols


def _linear_taps(index: np.ndarray, size: int, stride: int, base: np.ndarray, device):
    """Bilinear taps of fractional indices: flat row numbers (base + index * stride) and weights.

    Taps outside ``0 .. size-1`` get weight 0 (the volume is zero outside).
    """
    low = np.floor(index)
    frac = index - low
    low = low.astype(np.int64)
    taps = []
    for offset, weight in ((0, 1.0 - frac), (1, frac)):
        at = low + offset
        inside = (at >= 0) & (at < size)
        flat = base + np.clip(at, 0, size - 1) * stride
        taps.append((torch.from_numpy(flat.ravel()).to(device),
                     torch.from_numpy(np.where(inside, weight, 0.0).ravel())))
    return taps


def _gather(rows: torch.Tensor, taps, dtype) -> torch.Tensor:
    """sum_t weight_t * rows[:, flat_t]  for rows (B, N, L) -> (B, len(flat), L)."""
    (flat0, w0), (flat1, w1) = taps
    w0 = w0.to(device=rows.device, dtype=dtype)[:, None]
    w1 = w1.to(device=rows.device, dtype=dtype)[:, None]
    out = rows.index_select(1, flat0).mul_(w0)  # in place: autograd keeps only the weights
    return out.addcmul_(rows.index_select(1, flat1), w1)


def _sweep_separable(voxels: _Voxels, axis: int, rays: _Rays) -> torch.Tensor:
    """Sum over planes of separable bilinear samples; planes parallel to the detector.

    Step 1 interpolates along the plane's columns by gathering whole voxel
    columns (axis 0 innermost, so only the voxels the rays need are read),
    step 2 along the rows after one transpose per plane. Planes go in chunks
    to bound the intermediate images' memory.
    """
    columns = voxels.columns()
    b, (depth, height, width) = columns.shape[0], voxels.volume.shape[1:]
    row_index, col_index = rays.separable_crossings()  # (K, rows), (K, cols)
    n_planes, n_rows, n_cols = row_index.shape[0], row_index.shape[1], col_index.shape[1]
    # voxel column (plane k, in-plane index j) sits at k * plane_stride + j * stride
    other, plane_stride, stride = (width, width, 1) if axis == 1 else (height, 1, width)
    total = None
    for chunk in _chunks(n_planes, n_cols * max(depth, n_rows)):
        planes = np.arange(chunk.start, chunk.stop)[:, None]
        count = len(planes)
        taps = _linear_taps(col_index[chunk], other, stride, planes * plane_stride, columns.device)
        sampled = _gather(columns, taps, columns.dtype)  # (B, k*cols, D), order (k, c)
        sampled = sampled.reshape(b, count, n_cols, depth).transpose(2, 3).reshape(b, count * depth, n_cols)
        taps = _linear_taps(row_index[chunk], depth, 1, (planes - chunk.start) * depth, columns.device)
        sampled = _gather(sampled, taps, columns.dtype).reshape(b, count, n_rows, n_cols).sum(dim=1)
        total = sampled if total is None else total + sampled
    return total


def _chunks(n_planes: int, per_plane: int) -> list[slice]:
    """Consecutive plane ranges of at most ``_CHUNK_ELEMENTS`` intermediate values each."""
    step = max(1, _CHUNK_ELEMENTS // max(per_plane, 1))
    return [slice(start, min(start + step, n_planes)) for start in range(0, n_planes, step)]


def _sweep_general(volume: torch.Tensor, axis: int, rays: _Rays) -> torch.Tensor:
    """Sum over planes of bilinear samples at arbitrary ray crossings (grid_sample)."""
    planes = volume.movedim(axis + 1, 0)  # (K, B, D, J): batch as channels
    depth, other = planes.shape[2], planes.shape[3]
    total = None
    for chunk in _chunks(planes.shape[0], 2 * rays.geometry.pixels[0] * rays.geometry.pixels[1]):
        row_index, col_index = rays.crossings(chunk)
        # grid_sample, align_corners=False: normalised x = (2 * index + 1) / size - 1
        grid = np.stack([(2 * col_index + 1) / other - 1, (2 * row_index + 1) / depth - 1], axis=-1)
        grid = torch.from_numpy(grid).to(device=volume.device, dtype=volume.dtype)
        sampled = F.grid_sample(planes[chunk], grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False).sum(dim=0)
        total = sampled if total is None else total + sampled
    return total
