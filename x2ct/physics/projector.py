"""Differentiable DRR projector: line integrals of attenuation through a volume.

The method is Joseph's (1982): for each view pick the volume axis the rays
run most nearly along, cut the volume into its slices (planes), and sum, over
the planes, the bilinear sample of each plane where the ray crosses it times
the ray's length through one slice (slice thickness / |cos| of the ray's angle
to that axis). Views at multiples of 90 degrees are the common case
(frontal, lateral): there a plane lies parallel to the detector, the ray
crossings form a grid that is the detector grid scaled by the plane's distance
from the source, so the bilinear sample is separable into one interpolation
along the plane's in-plane axis and one along rows. The first is one
``grid_sample`` per chunk of planes with the volume's axis-0 slices as its
batch, so each slice is read in place while it sits in cache; the second
gathers whole rows of the result (``index_select``). Both read only what the
rays pass and are far cheaper than general 2D sampling of every plane, for
the same bilinear model. Other angles use ``grid_sample`` on the planes. Everything is torch, so gradients reach the
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
    """Volumes (B, D, H, W) shared by all the views of one ``project`` call."""

    def __init__(self, volume: torch.Tensor):
        self.volume = volume


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


def _row_taps(index: np.ndarray, size: int, base: np.ndarray, batch: int, device):
    """Linear-interpolation taps of fractional row indices: flat row numbers and weights.

    ``index`` is (k, rows) for k planes, ``base`` their plane numbers in the
    chunk; a tap's flat number is ``item * size * k + base + row * k``, a row
    of the chunk's (batch * size * k, cols) matrix of samples, for each of the
    ``batch`` items (numbers and weights repeat item after item). Taps outside
    ``0 .. size-1`` get weight 0 (the volume is zero outside).
    """
    low = np.floor(index)
    frac = index - low
    low = low.astype(np.int64)
    items = np.arange(batch)[:, None] * (size * index.shape[0])
    taps = []
    for offset, weight in ((0, 1.0 - frac), (1, frac)):
        at = low + offset
        inside = (at >= 0) & (at < size)
        flat = base + np.clip(at, 0, size - 1) * index.shape[0]
        taps.append((torch.from_numpy((items + flat.ravel()).ravel()).to(device),
                     torch.from_numpy(np.tile(np.where(inside, weight, 0.0).ravel(), batch))))
    return taps


def _sweep_separable(voxels: _Voxels, axis: int, rays: _Rays) -> torch.Tensor:
    """Sum over planes of separable bilinear samples; planes parallel to the detector.

    Step 1 interpolates the planes along their in-plane axis at the
    detector's columns with one ``grid_sample`` whose batch is the axis-0
    slices (one 2D image each, sampled at the same points): each slice is
    read in place while it sits in cache (the volume is never copied or
    transposed; as channels, the slices would be visited a megabyte apart
    for every sample), giving (B, D, planes, cols). Step 2
    interpolates that along axis 0 at the detector's rows by gathering whole
    rows of columns (``index_select``) and sums over the planes. Planes go in
    chunks to bound the intermediate images' memory.
    """
    volume = voxels.volume  # (B, D, H, W): axis-0 slices as grid_sample's batch
    b, depth, height, width = volume.shape
    row_index, col_index = rays.separable_crossings()  # (K, rows), (K, cols)
    n_planes, n_rows, n_cols = row_index.shape[0], row_index.shape[1], col_index.shape[1]
    total = None
    for chunk in _chunks(n_planes, n_cols * max(depth, n_rows)):
        count = chunk.stop - chunk.start
        planes = np.broadcast_to(np.arange(chunk.start, chunk.stop, dtype=np.float64)[:, None], (count, n_cols))
        h, w = (planes, col_index[chunk]) if axis == 1 else (col_index[chunk], planes)
        # grid_sample, align_corners=False: normalised x = (2 * index + 1) / size - 1; zero outside
        grid = np.stack([(2 * w + 1) / width - 1, (2 * h + 1) / height - 1], axis=-1)
        grid = torch.from_numpy(grid).to(device=volume.device, dtype=volume.dtype)
        sampled = F.grid_sample(volume.reshape(b * depth, 1, height, width), grid.expand(b * depth, -1, -1, -1),
                                mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*D, 1, k, cols)
        # Rows item * D * k + d * k + plane, gathered along dim 0 (a contiguous copy per row): index_select along
        # a middle dim takes torch's general path, 1.7-2.4x slower on two threads at 128-320 detector columns.
        rows = sampled.reshape(b * depth * count, n_cols)
        (flat0, w0), (flat1, w1) = _row_taps(row_index[chunk], depth, np.arange(count)[:, None], b, volume.device)
        out = rows.index_select(0, flat0).mul_(w0.to(volume)[:, None])  # in place: autograd keeps the weights
        out = out.addcmul_(rows.index_select(0, flat1), w1.to(volume)[:, None])
        sampled = out.reshape(b, count, n_rows, n_cols).sum(dim=1)
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
