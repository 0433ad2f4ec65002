"""X-ray augmentation of a batch (Repeat-and-Concatenate's recipe, seed 000).

* contrast: each view raised to a power gamma drawn from [1 - c, 1 + c]
  (views stay in [0, 1]);
* rotation: with probability p, each view rotated in its plane by an angle
  drawn from +-deg (the CT is not rotated: this models patient positioning);
* film (``film_p``, first): with probability p, each view goes through the
  film simulation (``x2ct.data.film``: blur, noise, scatter, grey-scale
  curve, borders, markers, rotation, magnification, offsets), its draws
  seeded from the generator; with ``film_p`` 0 nothing is drawn, so other
  configs' augmentations are unchanged; with ``film_prepare`` each film is
  then prepared as a real film is at inference (``x2ct.io.prepare``: borders
  cropped, framed by registration, histogram matched), so the network
  trains on what it will be given;
* flip: with probability p, the patient is mirrored left-right, i.e. the CT
  along its right-left axis (axis 2) *and* the views with it. A frontal view
  (0 or 180 degrees) then has its columns reversed; a lateral view (90 or 270)
  sums along the mirrored axis, so under parallel rays it does not change.
  The seed's code flips only the X-rays, which pairs them with the wrong CT.

All draws come from the ``torch.Generator`` passed in, so a resumed run
repeats them exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from x2ct.errors import InputError


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def check_flip_angles(angles) -> None:
    """The flip is exact only for views along the patient's axes (multiples of 90 degrees)."""
    bad = [float(a) for a in torch.as_tensor(angles).flatten() if float(a) % 90.0]
    if bad:
        raise InputError(f"augment.flip_p needs views at multiples of 90 degrees, got {bad[0]:g}; set flip_p: 0 "
                         "for oblique views.")


def rotate(views: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate images (N, 1, S, S) by ``degrees`` (N,) about their centres (bilinear, zero outside)."""
    theta = degrees * (math.pi / 180.0)
    cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
    matrix = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(matrix.to(views), list(views.shape), align_corners=False)
    return F.grid_sample(views, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(views: torch.Tensor, ct: torch.Tensor, angles: torch.Tensor, settings,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented (views (B, V, S, S), ct (B, 1, D, D, D)); ``settings`` is an AugmentConfig."""
    b, v, s, _ = views.shape
    if settings.film_p > 0:
        from x2ct.data.film import simulate_batch

        seed = int(torch.randint(2**62, (1,), generator=generator))
        views = simulate_batch(views, settings.film_p, seed,
                               angles=angles if settings.film_prepare else None)
    if settings.contrast > 0:
        gamma = _uniform(b * v, 1 - settings.contrast, 1 + settings.contrast, generator).reshape(b, v, 1, 1)
        views = views.clamp(0, 1) ** gamma.to(views)
    if settings.rotation_p > 0 and settings.rotation_deg > 0:
        chosen = torch.rand(b * v, generator=generator) < settings.rotation_p
        degrees = _uniform(b * v, -settings.rotation_deg, settings.rotation_deg, generator) * chosen
        views = rotate(views.reshape(b * v, 1, s, s), degrees).reshape(b, v, s, s)
    if settings.flip_p > 0:
        check_flip_angles(angles)
        flip = (torch.rand(b, generator=generator) < settings.flip_p).to(views.device)
        frontal = (torch.as_tensor(angles).to(views.device).reshape(-1, v) % 180 == 0).expand(b, v)
        flip_views = (flip[:, None] & frontal)[..., None, None]
        views = torch.where(flip_views, views.flip(-1), views)
        ct = torch.where(flip[:, None, None, None, None], ct.flip(-1), ct)
    return views, ct
