"""The one interface every reconstruction model implements.

A model takes views (B, V, H, W), values in [0, 1] (larger = more
attenuation), with one gantry angle per view in degrees (0 = frontal PA,
90 = lateral; see ``x2ct.models.lifting``), and returns a volume
(B, 1, D, D, D) in the canonical model frame, normalised by the model's
intensity protocol (``x2ct.data`` converts it back to HU).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from x2ct.errors import InputError


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a built model accepts and produces; saved in its model card."""

    name: str
    preset: str
    view_counts: tuple[int, ...]  # accepted numbers of views
    view_size: int  # H = W of each input view
    volume_size: int  # D of the output cube
    protocol: str = "x2ct"  # intensity protocol name (x2ct.data)
    default_angles: tuple[float, ...] = (0.0, 90.0)


class ReconstructionModel(nn.Module):
    """Base class: validates inputs before any computation, then calls ``reconstruct``."""

    spec: ModelSpec

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec

    def forward(self, views: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
        angles = self.check_input(views, angles)
        return self.reconstruct(views, angles)

    def reconstruct(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def default_angles(self, n_views: int) -> tuple[float, ...]:
        if n_views == len(self.spec.default_angles):
            return self.spec.default_angles
        return tuple(360.0 * i / (2 * n_views) for i in range(n_views)) if n_views > 1 else (0.0,)

    def check_input(self, views: torch.Tensor, angles: torch.Tensor | None) -> torch.Tensor:
        """Raise InputError naming the expected input; return angles as (B, V) float tensor."""
        spec = self.spec
        expected = (f"expected views of shape (B, V, {spec.view_size}, {spec.view_size}) with V in "
                    f"{list(spec.view_counts)}")
        if not isinstance(views, torch.Tensor) or views.ndim != 4:
            shape = tuple(views.shape) if isinstance(views, torch.Tensor) else type(views).__name__
            raise InputError(f"{spec.name}: {expected}, got {shape}.")
        b, v, h, w = views.shape
        if v not in spec.view_counts:
            raise InputError(f"{spec.name} takes {' or '.join(map(str, spec.view_counts))} view(s), got {v}: "
                             f"{expected}.")
        if (h, w) != (spec.view_size, spec.view_size):
            raise InputError(f"{spec.name}: views are {h}x{w} pixels, {expected}; resample them first "
                             "(x2ct.inference does).")
        if not torch.isfinite(views).all():
            raise InputError(f"{spec.name}: the views contain NaN or infinite values.")
        if angles is None:
            angles = torch.tensor(self.default_angles(v), dtype=torch.float32).expand(b, v)
        angles = torch.as_tensor(angles, dtype=torch.float32)
        if angles.ndim == 1:
            angles = angles.expand(b, -1)
        if tuple(angles.shape) != (b, v):
            raise InputError(f"{spec.name}: angles must be (B, V) = ({b}, {v}), got {tuple(angles.shape)}.")
        if not torch.isfinite(angles).all():
            raise InputError(f"{spec.name}: view angles must be finite.")
        return angles


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
