"""Beer-Lambert fusion: make a reconstructed volume reproduce its input X-rays exactly.

Henzler et al. (seed 004, Sec. 4.2) correct a network's densities ray by
ray: along each pixel's ray the density error between the volume's line
integral and the one the X-ray demands is distributed over the voxels
proportionally to ``density ** beta`` (their Eq. 2, beta = 2), so that dense
structures absorb the correction and empty space stays empty. The corrected
volume then composes into the input X-ray exactly, and can be as fine as the
X-ray (the volume is resampled to the X-ray's pixel grid first).

Works on any model's output (densities >= 0, e.g. the x2ct or durham
normalised intensities, whose 0 is air).

Geometry: parallel beam along the view's rays, the convention of
``x2ct.models.lifting`` (0 degrees: rays along axis 1, columns along +axis 2;
90 degrees: rays along axis 2, columns along +axis 1; 180/270 mirrored).
Only multiples of 90 degrees are supported, where rays follow voxel rows
exactly; oblique views would need resampling that breaks exactness.
Cone-beam DRRs (the X2CT protocol's views) go through ``cone_beam_fusion``
instead: the same density-weighted correction, through the DRR projector in
the views' own geometry, iterated (not exact).

What the views are (``views_are``):

* ``"line_integral"`` (default; our DRR protocols): views proportional to the
  line integral of density, each normalised by its own maximum, so their
  absolute scale is unknown. Each view is rescaled so that its total equals
  the total of the volume's own projection in that view (proportional to
  the volume's mass, whatever the view), i.e. fusion redistributes the
  network's mass but never changes it. Pass ``scale`` (the mean density
  along a ray per unit of view value) to set the factor yourself.
* ``"opacity"`` (Henzler's rendering): view = 1 - exp(-chi * integral of the
  density along the ray), the ray crossing the volume's side taken as unit
  length (our reading of their Eq. 1; chi = 10 in the paper). A
  transmission image T is the opacity 1 - T.

Line integrals here are in "volume units times side length": the mean of the
densities along the ray.

Two or more views (ours; the paper has one): corrections alternate view by
view. A sweep corrects every view once; sweeps repeat until the largest ray
residual of every view, relative to that view's largest line integral, is at
most ``tolerance``, or ``iterations`` sweeps were made. The last corrected
view always matches exactly; views that are not consistent with one volume
(cone-beam DRRs, noise) keep a residual, which ``projection_residual``
reports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from x2ct.errors import InputError

VIEW_KINDS = ("line_integral", "opacity")
_OPACITY_CEILING = 1.0 - 1e-6  # an opacity of 1 would need infinite density


def parallel_projection(volume: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Mean density along the rays of a view at a multiple of 90 degrees: (B, 1, D, H, W) -> (B, D, cols).

    The adjoint of ``lift_view`` up to the factor 1/depth: rows are axis 0 and
    columns follow the lifting convention.
    """
    rays, flip = _rays(volume[:, 0], _quarter(angle_deg))
    projection = rays.mean(dim=-1)
    return projection.flip(-1) if flip else projection


@torch.no_grad()
def beer_lambert_fusion(volume: torch.Tensor, views: torch.Tensor, angles, beta: float = 2.0,
                        iterations: int = 100, tolerance: float = 1e-4, views_are: str = "line_integral",
                        chi: float = 10.0, scale: float | None = None) -> torch.Tensor:
    """Correct ``volume`` (B, 1, D, H, W) so that it reproduces ``views`` (B, V, R, C) along every ray.

    ``angles``: one gantry angle per view in degrees, (V,) or (B, V), each a
    multiple of 90. The result has rows R along axis 0 and columns C along the
    axis each view's columns follow (the volume is resampled trilinearly when
    the views are finer or coarser); other axes keep their size. Densities
    stay >= 0 (negative inputs are clipped to 0 first). See the module
    docstring for ``views_are``, ``chi``, ``scale`` and the stopping rule.
    """
    angle_table = _check(volume, views, angles, beta, views_are, chi, scale, iterations)
    out = []
    for b in range(volume.shape[0]):
        quarters = [_quarter(a) for a in angle_table[b]]
        mu = _resample(volume[b : b + 1, 0].double().clamp_min(0.0), views.shape[-2:], quarters)
        targets = [_line_integrals(views[b : b + 1, v].double(), mu, q, views_are, chi, scale)
                   for v, q in enumerate(quarters)]
        for _ in range(iterations):
            for target, q in zip(targets, quarters):
                mu = _correct_view(mu, target, q, beta)
            if max(_relative_residual(mu, t, q) for t, q in zip(targets, quarters)) <= tolerance:
                break
        out.append(mu.to(volume.dtype))
    if len({tuple(m.shape) for m in out}) > 1:
        raise InputError("Fusion: these views give the batch items different output grids; fuse them one by one.")
    return torch.cat(out).unsqueeze(1)


@torch.no_grad()
def projection_residual(volume: torch.Tensor, views: torch.Tensor, angles, views_are: str = "line_integral",
                        chi: float = 10.0, scale: float | None = None) -> torch.Tensor:
    """Largest |projection - view| per view, relative to the view's largest line integral: (B, V).

    The volume must already be on the views' grid (as ``beer_lambert_fusion``
    returns it); views are converted to line integrals as fusion does.
    """
    angle_table = _check(volume, views, angles, 2.0, views_are, chi, scale, 1)
    rows = []
    for b in range(volume.shape[0]):
        mu = volume[b : b + 1, 0].double()
        rows.append([_relative_residual(mu, _line_integrals(views[b : b + 1, v].double(), mu, _quarter(a),
                                                            views_are, chi, scale), _quarter(a))
                     for v, a in enumerate(angle_table[b])])
    return torch.tensor(rows, dtype=torch.float64)


def distribute_along_rays(densities: torch.Tensor, target_sums: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Henzler's Eq. 2 on rays (N, n) so that each ray sums to ``target_sums`` (N,), keeping densities >= 0.

    The density error of a ray is shared out proportionally to
    ``density ** beta``. Adding density never goes negative; a ray with no
    density at all gets the addition evenly. Removing density is capped at
    each voxel's density: voxels whose share would exceed what they hold are
    emptied and the rest of the error is shared among the others (an exact
    active-set solve, at most n rounds, usually one). Rays whose target is
    <= 0 become empty.
    """
    excess = densities.sum(-1) - target_sums  # > 0: remove density
    weights = densities.pow(beta)  # 0 ** 0 = 1: beta = 0 spreads evenly over every voxel
    empty_ray = weights.sum(-1, keepdim=True) == 0
    weights = torch.where(empty_ray, torch.ones_like(weights), weights)

    adding = (excess <= 0).unsqueeze(-1)
    added = densities - excess.unsqueeze(-1) * weights / weights.sum(-1, keepdim=True)

    emptied = torch.zeros_like(densities, dtype=torch.bool)
    while True:  # each round empties at least one more voxel, so this ends within n rounds
        left = excess - (densities * emptied).sum(-1)
        active_weight = (weights * ~emptied).sum(-1)
        share = left / active_weight.clamp_min(torch.finfo(densities.dtype).tiny)
        removal = share.unsqueeze(-1) * weights
        newly = ~emptied & (removal > densities)
        if not newly.any():
            break
        emptied |= newly
    removed = torch.where(emptied, torch.zeros_like(densities), densities - removal)

    result = torch.where(adding, added, removed)
    return torch.where((target_sums <= 0).unsqueeze(-1), torch.zeros_like(result), result)


# --- helpers -----------------------------------------------------------------------------------------


def _quarter(angle_deg: float) -> int:
    angle = float(angle_deg) % 360.0
    quarter = round(angle / 90.0)
    if not math.isclose(angle, 90.0 * quarter, abs_tol=1e-6):
        raise InputError(f"Beer-Lambert fusion supports views at multiples of 90 degrees (0 = frontal, 90 = "
                         f"lateral), got {float(angle_deg)}; leave oblique views out of the fusion.")
    return quarter % 4


def _rays(mu: torch.Tensor, quarter: int) -> tuple[torch.Tensor, bool]:
    """(B, D, H, W) -> rays (B, D, cols, depth) of the view, and whether its columns run backwards."""
    rays = mu.transpose(-1, -2) if quarter in (0, 2) else mu
    return rays, quarter in (2, 3)


def _unrays(rays: torch.Tensor, quarter: int) -> torch.Tensor:
    return rays.transpose(-1, -2) if quarter in (0, 2) else rays


def _correct_view(mu: torch.Tensor, target: torch.Tensor, quarter: int, beta: float) -> torch.Tensor:
    """One exact correction of every ray of one view (target in mean-density units, view orientation)."""
    rays, flip = _rays(mu, quarter)
    if flip:
        target = target.flip(-1)
    shape = rays.shape
    flat = distribute_along_rays(rays.reshape(-1, shape[-1]), target.reshape(-1) * shape[-1], beta)
    return _unrays(flat.reshape(shape), quarter)


def _relative_residual(mu: torch.Tensor, target: torch.Tensor, quarter: int) -> float:
    rays, flip = _rays(mu, quarter)
    projection = rays.mean(-1)
    projection = projection.flip(-1) if flip else projection
    peak = target.abs().max().clamp_min(torch.finfo(target.dtype).tiny)
    return float((projection - target).abs().max() / peak)


def _line_integrals(view: torch.Tensor, mu: torch.Tensor, quarter: int, views_are: str, chi: float,
                    scale: float | None) -> torch.Tensor:
    """A view (1, R, C) as mean densities along its rays, in the orientation of the view."""
    if views_are == "opacity":
        return -torch.log1p(-view.clamp(0.0, _OPACITY_CEILING)) / chi
    if scale is not None:
        return view * scale
    rays, _ = _rays(mu, quarter)
    mass, total = rays.mean(-1).sum(), view.sum()
    if total <= 0:
        raise InputError("A view is blank (all zeros): fusion needs the X-ray's intensities; leave that view out.")
    if mass <= 0:
        raise InputError("The volume is empty (all zeros), so the scale of normalised views cannot be matched; "
                         "pass scale=... or views_are='opacity'.")
    return view * (mass / total)


def _resample(mu: torch.Tensor, view_shape, quarters: list[int]) -> torch.Tensor:
    """Resample (1, D, H, W) so that axis 0 has the views' rows and the column axes their columns."""
    rows, cols = view_shape
    size = list(mu.shape[1:])
    size[0] = rows
    for q in quarters:
        size[2 if q in (0, 2) else 1] = cols
    if size == list(mu.shape[1:]):
        return mu
    return F.interpolate(mu.unsqueeze(1), size=size, mode="trilinear", align_corners=False)[:, 0]


def _check(volume, views, angles, beta, views_are, chi, scale, iterations) -> list[list[float]]:
    if not isinstance(volume, torch.Tensor) or volume.ndim != 5 or volume.shape[1] != 1:
        shape = tuple(volume.shape) if isinstance(volume, torch.Tensor) else type(volume).__name__
        raise InputError(f"Fusion expects a volume tensor (B, 1, D, H, W), got {shape}.")
    if not isinstance(views, torch.Tensor) or views.ndim != 4 or views.shape[0] != volume.shape[0]:
        shape = tuple(views.shape) if isinstance(views, torch.Tensor) else type(views).__name__
        raise InputError(f"Fusion expects views (B, V, rows, cols) with the volume's batch size "
                         f"{volume.shape[0]}, got {shape}.")
    if not torch.isfinite(volume).all() or not torch.isfinite(views).all():
        raise InputError("Fusion: the volume or the views contain NaN or infinite values.")
    if views_are not in VIEW_KINDS:
        raise InputError(f"views_are must be one of {', '.join(VIEW_KINDS)}, got {views_are!r}.")
    if views.min() < 0 or (views_are == "opacity" and views.max() > 1):
        raise InputError("Fusion: view values must be >= 0 (larger = more attenuation)"
                         + (" and <= 1 for opacities." if views_are == "opacity" else "."))
    if not (math.isfinite(beta) and beta >= 0):
        raise InputError(f"beta must be a finite number >= 0, got {beta}.")
    if not (math.isfinite(chi) and chi > 0) or (scale is not None and not (math.isfinite(scale) and scale > 0)):
        raise InputError(f"chi and scale must be finite and > 0, got chi={chi}, scale={scale}.")
    if int(iterations) < 1:
        raise InputError(f"iterations must be >= 1, got {iterations}.")
    table = torch.as_tensor(angles, dtype=torch.float64)
    if table.ndim == 1:
        table = table.expand(views.shape[0], -1)
    if tuple(table.shape) != tuple(views.shape[:2]):
        raise InputError(f"Fusion: give one angle per view, (V,) or (B, V) = {tuple(views.shape[:2])}, "
                         f"got {tuple(table.shape)}.")
    return table.tolist()


@torch.no_grad()
def cone_beam_fusion(volume: torch.Tensor, views: torch.Tensor, angles, spacing, geometry,
                     beta: float = 2.0, iterations: int = 10) -> torch.Tensor:
    """Correct ``volume`` (B, 1, D, H, W) towards ``views`` (B, V, R, C) in the views' own geometry.

    For cone-beam DRRs (``x2ct.physics.DRRGeometry`` with ``pixels`` = (R, C))
    no voxel row is a ray, so Eq. 2 cannot be applied ray by ray exactly.
    Instead, each sweep corrects the views in turn: the residual e of every
    ray (view target minus the volume's line integral through
    ``x2ct.physics.project``) is spread back along the rays with weights
    ``density ** beta``, Delta = w * P^T(e / P w) / P^T 1 (w = density ** beta,
    P^T the projector's adjoint, through autograd). On parallel rays that
    match voxel rows this is Henzler's exact correction; on cone beams it is
    a SART-like step that lowers the residual sweep by sweep. Densities stay
    >= 0. Views are line integrals up to an unknown scale each (peak
    normalised DRRs): each is scaled so its total equals the volume's own
    projection total, as ``beer_lambert_fusion`` does. ``spacing``: voxel
    size (sD, sH, sW) in mm, the volume centred on the isocentre.
    """
    from x2ct.physics import project

    _check(volume, views, angles, beta, "line_integral", 1.0, None, iterations)
    if tuple(geometry.pixels) != tuple(views.shape[-2:]):
        raise InputError(f"Fusion: the geometry's detector has {geometry.pixels} pixels but the views are "
                         f"{tuple(views.shape[-2:])}; give the geometry of the views.")
    table = torch.as_tensor(angles, dtype=torch.float64)
    table = table.expand(views.shape[0], -1) if table.ndim == 1 else table
    out = []
    for b in range(volume.shape[0]):
        mu = volume[b : b + 1].double().clamp_min(0.0)
        view_angles = [float(a) for a in table[b]]
        steps = []
        for v, angle in enumerate(view_angles):
            projector = lambda x, a=angle: project(x, spacing, [a], geometry)[:, 0]  # noqa: E731
            view = views[b : b + 1, v].double()
            mass, total = projector(mu).sum(), view.sum()
            if total <= 0:
                raise InputError("A view is blank (all zeros): fusion needs the X-ray's intensities; leave that "
                                 "view out.")
            if mass <= 0:
                raise InputError("The volume is empty (all zeros), so the scale of normalised views cannot be "
                                 "matched; leave fusion off.")
            coverage = _adjoint(projector, mu, torch.ones_like(view))
            steps.append((projector, view * (mass / total), coverage))
        for _ in range(iterations):
            for projector, target, coverage in steps:
                weights = mu.pow(beta)
                weights = weights + 1e-6 * weights.max().clamp_min(1e-12)  # rays through empty space still correct
                ratio = (target - projector(mu)) / projector(weights)
                delta = weights * _adjoint(projector, mu, ratio) / coverage.clamp_min(1e-12)
                mu = (mu + torch.where(coverage > 0, delta, 0.0)).clamp_min(0.0)
        out.append(mu.to(volume.dtype))
    return torch.cat(out)


def cone_beam_residual(volume: torch.Tensor, views: torch.Tensor, angles, spacing, geometry) -> torch.Tensor:
    """Mean |projection - view| per view relative to the view's largest value, views scaled by their total: (B, V)."""
    from x2ct.physics import project

    with torch.no_grad():
        projection = project(volume.double(), spacing, angles, geometry)
        target = views.double() * projection.sum((-2, -1), keepdim=True) / views.double().sum((-2, -1), keepdim=True)
        return ((projection - target).abs().mean((-2, -1)) / target.amax((-2, -1))).float()


def _adjoint(projector, like: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """P^T image for the linear ``projector``, by autograd (the projector is linear in the volume)."""
    with torch.enable_grad():
        probe = torch.zeros_like(like, requires_grad=True)
        (projector(probe) * image).sum().backward()
    return probe.grad
