"""Baselines: the floor every trained model must beat.

None of them is a trained network:

* ``back-projection``: each view repeated along its rays (``lift_views``,
  the lifting every model uses) and the views averaged, optionally followed
  by an affine intensity map ``a * x + b`` fitted by least squares on
  training pairs;
* ``mean-ct``: the voxel-wise mean of the training volumes, whatever the views;
* ``nearest-neighbour``: the training volume whose views are closest (L2 over
  all views) to the input views (Henzler et al., seed 004, uses it);
* ``oracle``: the training volume closest (L2) to the ground truth. It needs
  the ground truth, so it is an upper bound for retrieval, for reports only.

Back-projection and mean CT keep no training data at inference, so they are
``ReconstructionModel``s (inference and the metrics run them like any
model; their few numbers are buffers saved in the state dict). Nearest
neighbour and oracle search the training set and are plain modules.

Tensors: training volumes (N, 1, D, D, D) or (N, D, D, D) in the model
protocol's normalised intensities; views (N, V, S, S) in [0, 1]; angles in
degrees, (V,) or (N, V).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from x2ct.errors import InputError
from x2ct.models.base import ModelSpec, ReconstructionModel
from x2ct.models.lifting import lift_views_per_sample

VIEW_COUNTS = tuple(range(1, 9))


def _volumes(volumes: torch.Tensor, what: str = "training volumes") -> torch.Tensor:
    """(N, D, D, D) or (N, 1, D, D, D) -> float (N, 1, D, D, D)."""
    volumes = torch.as_tensor(volumes)
    if volumes.ndim == 4:
        volumes = volumes.unsqueeze(1)
    if volumes.ndim != 5 or volumes.shape[1] != 1 or len(set(volumes.shape[2:])) != 1 or volumes.shape[0] < 1:
        raise InputError(f"The {what} must be cubes (N, 1, D, D, D) or (N, D, D, D) with N >= 1, got "
                         f"{tuple(volumes.shape)}.")
    return volumes.float()


def _angles(angles, n: int, v: int) -> torch.Tensor:
    angles = torch.as_tensor(angles, dtype=torch.float32)
    if angles.ndim == 1:
        angles = angles.expand(n, -1)
    if tuple(angles.shape) != (n, v):
        raise InputError(f"Give one angle per view: (V={v},) or (N={n}, V={v}), got {tuple(angles.shape)}.")
    return angles


def back_project(views: torch.Tensor, angles: torch.Tensor, volume_size: int) -> torch.Tensor:
    """Average of the views lifted along their rays: (B, V, S, S) -> (B, 1, D, D, D)."""
    if views.shape[-2:] != (volume_size, volume_size):
        views = F.interpolate(views, size=(volume_size, volume_size), mode="bilinear", align_corners=False,
                              antialias=True)
    return lift_views_per_sample(views, angles, volume_size).mean(dim=1, keepdim=True)


class BackProjection(ReconstructionModel):
    """Unfiltered parallel back-projection with an optional fitted affine intensity map."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("offset", torch.zeros(()))

    def reconstruct(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        return self.scale * back_project(views, angles, self.spec.volume_size) + self.offset

    @torch.no_grad()
    def fit(self, volumes: torch.Tensor, views: torch.Tensor, angles, batch_size: int = 8) -> "BackProjection":
        """Least-squares ``a, b`` so that ``a * back_projection + b`` best matches the training volumes."""
        volumes = _volumes(volumes)
        if volumes.shape[-1] != self.spec.volume_size or views.shape[0] != volumes.shape[0]:
            raise InputError(f"Fit back-projection on N volumes of side {self.spec.volume_size} and their N view "
                             f"sets; got {tuple(volumes.shape)} and {tuple(views.shape)}.")
        self.check_input(views[:1], None)
        angles = _angles(angles, views.shape[0], views.shape[1])
        moments = torch.zeros(5, dtype=torch.float64)  # n, sum x, sum y, sum xx, sum xy
        for start in range(0, volumes.shape[0], batch_size):
            x = back_project(views[start:start + batch_size].float(), angles[start:start + batch_size],
                             self.spec.volume_size).double()
            y = volumes[start:start + batch_size].double()
            moments += torch.stack([torch.tensor(x.numel(), dtype=torch.float64), x.sum(), y.sum(),
                                    (x * x).sum(), (x * y).sum()])
        n, sx, sy, sxx, sxy = moments
        variance = n * sxx - sx * sx
        if variance <= 1e-12 * n * n:
            raise InputError("The training views are constant: an intensity map cannot be fitted to them.")
        scale = (n * sxy - sx * sy) / variance
        self.scale.fill_(float(scale))
        self.offset.fill_(float((sy - scale * sx) / n))
        return self


class MeanCT(ReconstructionModel):
    """The voxel-wise mean of the training volumes, returned for any input."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.register_buffer("mean", torch.zeros(1, 1, *(spec.volume_size,) * 3))

    def reconstruct(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        return self.mean.expand(views.shape[0], -1, -1, -1, -1)

    @torch.no_grad()
    def fit(self, volumes: torch.Tensor) -> "MeanCT":
        volumes = _volumes(volumes)
        if volumes.shape[-1] != self.spec.volume_size:
            raise InputError(f"mean-ct was built for volumes of side {self.spec.volume_size}, got "
                             f"{tuple(volumes.shape)}.")
        self.mean.copy_(volumes.mean(dim=0, keepdim=True))
        return self


class _Retrieval(nn.Module):
    """Keeps the training volumes and returns the one whose key is closest (L2) to the query's."""

    def __init__(self, volumes: torch.Tensor, keys: torch.Tensor):
        super().__init__()
        self.key_shape = tuple(keys.shape[1:])
        self.register_buffer("volumes", volumes)
        self.register_buffer("keys", keys.flatten(1).float())

    def retrieve(self, query: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (volumes (B, 1, D, D, D), indices (B,) into the training set)."""
        if tuple(query.shape[1:]) != self.key_shape:
            raise InputError(f"{type(self).__name__} compares {what} shaped {self.key_shape}, got "
                             f"{tuple(query.shape[1:])}; resample them like the training set.")
        if not torch.isfinite(query).all():
            raise InputError(f"The {what} contain NaN or infinite values.")
        index = torch.cdist(query.flatten(1).float(), self.keys).argmin(dim=1)
        return self.volumes[index], index


class NearestNeighbour(_Retrieval):
    """The training volume whose views are closest to the input views (same view angles assumed)."""

    def __init__(self, volumes: torch.Tensor, views: torch.Tensor):
        volumes = _volumes(volumes)
        if views.ndim != 4 or views.shape[0] != volumes.shape[0]:
            raise InputError(f"nearest-neighbour needs one view set (V, S, S) per training volume: got "
                             f"{volumes.shape[0]} volumes and views {tuple(views.shape)}.")
        super().__init__(volumes, views)

    def forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.retrieve(views, "views")


class Oracle(_Retrieval):
    """The training volume closest to the ground truth: a retrieval upper bound, needs the ground truth."""

    def __init__(self, volumes: torch.Tensor):
        volumes = _volumes(volumes)
        super().__init__(volumes, volumes)

    def forward(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.retrieve(_volumes(target, "ground-truth volumes"), "volumes")


def _spec(name: str, view_size: int, volume_size: int, protocol: str) -> ModelSpec:
    return ModelSpec(name=name, preset="baseline", view_counts=VIEW_COUNTS, view_size=view_size,
                     volume_size=volume_size, protocol=protocol)


def build(name: str, volumes: torch.Tensor | None = None, views: torch.Tensor | None = None, angles=None, *,
          view_size: int | None = None, volume_size: int | None = None, protocol: str = "x2ct") -> nn.Module:
    """Build (and fit, where training data are given) a baseline by name.

    * ``back-projection``: ``view_size`` and ``volume_size``, or training data
      ``volumes``, ``views``, ``angles`` to fit the affine intensity map;
    * ``mean-ct``: ``volumes`` (and ``view_size`` for its input check);
    * ``nearest-neighbour``: ``volumes`` and ``views``;
    * ``oracle``: ``volumes``.
    """
    if name not in BASELINES:
        raise InputError(f"Unknown baseline {name!r}; known baselines: {', '.join(BASELINES)}.")
    if name != "back-projection" and volumes is None:
        raise InputError(f"The {name} baseline needs the training volumes.")
    if volumes is not None:
        volumes = _volumes(volumes)
        volume_size = volume_size or volumes.shape[-1]
    if views is not None:
        view_size = view_size or views.shape[-1]
    if name == "nearest-neighbour":
        if views is None:
            raise InputError("The nearest-neighbour baseline needs the training views.")
        return NearestNeighbour(volumes, views)
    if name == "oracle":
        return Oracle(volumes)
    if view_size is None or volume_size is None:
        raise InputError(f"The {name} baseline needs view_size and volume_size (or training data to read them from).")
    if name == "mean-ct":
        return MeanCT(_spec(name, view_size, volume_size, protocol)).fit(volumes)
    model = BackProjection(_spec(name, view_size, volume_size, protocol))
    if volumes is not None:
        if views is None or angles is None:
            raise InputError("Fitting back-projection's intensity map needs the training views and their angles.")
        model.fit(volumes, views, angles)
    return model


#: Baseline name -> one line on what it returns.
BASELINES = {
    "back-projection": "views repeated along their rays and averaged, affine intensity map fitted on training data",
    "mean-ct": "voxel-wise mean of the training volumes",
    "nearest-neighbour": "training volume whose views are closest (L2) to the input views",
    "oracle": "training volume closest (L2) to the ground truth (needs the ground truth; reports only)",
}


def names() -> list[str]:
    return list(BASELINES)
