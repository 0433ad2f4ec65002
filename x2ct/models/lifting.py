"""Lift 2D views into the 3D model frame by repeating them along their rays.

Shared by Repeat-and-Concatenate, X2CT's connection B/C, DuoLift's lifting
branches and the back-projection baseline, so that every method and the
projector agree on one view convention (see ``x2ct.image``):

* the volume is (D, H, W) = (axis 0 superior->inferior, axis 1
  anterior->posterior, axis 2 patient right->left);
* a view at gantry angle ``theta`` is seen from the detector side, looking
  at the source, superior up. Its rows follow axis 0 and its column direction
  is ``cos(theta) * e2 + sin(theta) * e1`` in the axial plane: theta = 0 is the
  PA frontal view (columns = axis 2), theta = 90 the left lateral view
  (columns = axis 1, anterior on the left).

Lifting is parallel-beam (what the papers do): cone divergence is ignored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def lift_view(view: torch.Tensor, angle_deg: float, depth: int) -> torch.Tensor:
    """Repeat views (B, C, R, S) along their ray direction -> volumes (B, C, R, depth, depth).

    ``R`` (rows) becomes axis 0; the view's columns are resampled to a
    ``depth`` x ``depth`` axial grid. 0 and 90 degrees (and their multiples)
    are exact repeats; other angles interpolate bilinearly in the axial plane.
    """
    if view.ndim != 4:
        raise ValueError(f"lift_view expects (B, C, rows, cols), got {tuple(view.shape)}")
    b, c, rows, cols = view.shape
    if cols != depth:
        view = F.interpolate(view, size=(rows, depth), mode="bilinear", align_corners=False)
    angle = float(angle_deg) % 360.0
    quarter = round(angle / 90.0)
    if math.isclose(angle, 90.0 * quarter, abs_tol=1e-6):
        return _lift_quarter(view, quarter % 4, depth)
    theta = math.radians(angle)
    # Normalised axial coordinates: a1 (axis 1) and a2 (axis 2) in [-1, 1].
    coords = torch.linspace(-1 + 1 / depth, 1 - 1 / depth, depth, device=view.device, dtype=view.dtype)
    a1, a2 = torch.meshgrid(coords, coords, indexing="ij")
    column = math.cos(theta) * a2 + math.sin(theta) * a1  # position along the view's column axis
    # Sample each view row independently: treat rows as the batch of a 1D lookup.
    flat = view.permute(0, 2, 1, 3).reshape(b * rows, c, 1, depth)  # (B*R, C, 1, cols)
    grid = torch.stack([column, torch.zeros_like(column)], dim=-1)  # x = column, y = 0
    grid = grid.reshape(1, depth * depth, 1, 2).expand(b * rows, -1, -1, -1)
    sampled = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(b, rows, c, depth, depth).permute(0, 2, 1, 3, 4)
    return sampled.contiguous()


def _lift_quarter(view: torch.Tensor, quarter: int, depth: int) -> torch.Tensor:
    """Exact lifting at 0, 90, 180 and 270 degrees."""
    b, c, rows, _ = view.shape
    if quarter == 0:  # columns along +axis 2, rays along axis 1
        return view.unsqueeze(3).expand(b, c, rows, depth, depth).contiguous()
    if quarter == 1:  # columns along +axis 1, rays along axis 2
        return view.unsqueeze(4).expand(b, c, rows, depth, depth).contiguous()
    if quarter == 2:  # columns along -axis 2
        return view.flip(-1).unsqueeze(3).expand(b, c, rows, depth, depth).contiguous()
    return view.flip(-1).unsqueeze(4).expand(b, c, rows, depth, depth).contiguous()


def lift_views(views: torch.Tensor, angles_deg, depth: int) -> torch.Tensor:
    """Views (B, V, R, S) with one angle per view -> channels (B, V, R, depth, depth)."""
    if views.ndim != 4:
        raise ValueError(f"lift_views expects (B, V, rows, cols), got {tuple(views.shape)}")
    angles = [float(a) for a in angles_deg]
    if len(angles) != views.shape[1]:
        raise ValueError(f"{views.shape[1]} views but {len(angles)} angles")
    return torch.cat([lift_view(views[:, i : i + 1], a, depth) for i, a in enumerate(angles)], dim=1)


def lift_per_sample(features: torch.Tensor, angles: torch.Tensor, depth: int) -> torch.Tensor:
    """Lift features (B, C, R, S) along each sample's own view angle (B,) -> (B, C, R, depth, depth).

    A batch usually shares its angles: then it is one ``lift_view`` call.
    """
    values = [float(a) for a in angles.detach().reshape(-1).cpu()]
    if len(values) != features.shape[0]:
        raise ValueError(f"{features.shape[0]} samples but {len(values)} angles")
    if all(v == values[0] for v in values):
        return lift_view(features, values[0], depth)
    return torch.cat([lift_view(features[i : i + 1], v, depth) for i, v in enumerate(values)])


def lift_views_per_sample(views: torch.Tensor, angles: torch.Tensor, depth: int) -> torch.Tensor:
    """Views (B, V, R, S) with angles (B, V) -> one lifted channel per view (B, V, R, depth, depth)."""
    return torch.cat([lift_per_sample(views[:, i : i + 1], angles[:, i], depth) for i in range(views.shape[1])],
                     dim=1)
