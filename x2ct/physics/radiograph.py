"""``drr``: a CT volume in HU (any orientation) -> a simulated radiograph record.

Modes:

* ``beer-lambert``: the line integral of attenuation, sum(mu * length) with mu
  from ``hu_to_mu`` (water 0.0206 /mm). By Beer-Lambert this is
  ``-ln(I / I0)``, the log-transformed image a digital radiograph is
  displayed from: larger = more attenuation, linear in the volume, unitless.
* ``x2ct``: the X2CT benchmark's DRR (``x2ct.physics.x2ct_mode``), values in
  [0, 1] on ``X2CT_SIZE``^2 pixels.

View ``ap`` renders with the source anterior (gantry angle 180) and then
flips the columns, so that it is displayed like a PA film (patient's right on
the viewer's left), as radiographs are read.
"""

from __future__ import annotations

import numpy as np
import torch

from x2ct.errors import InputError
from x2ct.image import View, Volume, XRay, normalise_view, to_canonical, view_angle
from x2ct.physics.attenuation import MU_WATER, hu_to_mu
from x2ct.physics.geometry import X2CT_GEOMETRY, DRRGeometry
from x2ct.physics.projector import project
from x2ct.physics.x2ct_mode import X2CT_SIZE, x2ct_views

MODES = ("beer-lambert", "x2ct")


def drr(volume: Volume, view: View = "frontal", geometry: DRRGeometry = X2CT_GEOMETRY,
        mode: str = "beer-lambert", device: str | torch.device = "cpu", x2ct_size: int = X2CT_SIZE) -> XRay:
    """Render one view of ``volume`` (HU) as an ``XRay`` with its detector geometry.

    ``x2ct_size`` is the side the x2ct mode resizes its images to.
    """
    if mode not in MODES:
        raise InputError(f"DRR mode must be one of {', '.join(MODES)}, got {mode!r}.")
    view = normalise_view(view)
    angle = view_angle(view)
    canonical = to_canonical(volume.check_finite())
    spacing = (canonical.spacing[2], canonical.spacing[1], canonical.spacing[0])  # (sD, sH, sW)
    hu = torch.from_numpy(np.asarray(canonical.array, dtype=np.float32))[None, None].to(device)
    with torch.no_grad():
        if mode == "x2ct":
            image = x2ct_views(hu, spacing, [angle], x2ct_size, geometry)[0, 0]
            pixel_mm = tuple(size / x2ct_size for size in geometry.detector_mm)
        else:
            image = project(hu_to_mu(hu), spacing, [angle], geometry)[0, 0]
            pixel_mm = geometry.pixel_mm
    image = image.cpu().numpy()
    if view == "ap":
        image = image[:, ::-1]
    cone = geometry.beam == "cone"
    metadata = {"source": "x2ct drr", "mode": mode, "gantry_angle_deg": angle, "beam": geometry.beam,
                "detector_mm": list(geometry.detector_mm), "isocentre_offset_mm": list(geometry.isocentre),
                "ct_spacing_mm": list(volume.spacing)}
    if mode == "beer-lambert":
        metadata["mu_water_per_mm"] = MU_WATER
    if view == "ap":
        metadata["display"] = "columns flipped: patient's right on the viewer's left"
    return XRay(image=np.ascontiguousarray(image, dtype=np.float32), pixel_spacing=pixel_mm, view=view,
                sad=geometry.sad if cone else None, sid=geometry.sid if cone else None, metadata=metadata)

