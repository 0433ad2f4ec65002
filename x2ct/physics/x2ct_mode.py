"""DRRs made the way the X2CT-GAN benchmark made them (methods.md, X2CT's CT2XRAY scripts).

X2CT rendered each CT with Plastimatch ``drr`` (cone beam, SAD 541 mm, SID
949 mm, 320x320 pixels on a 500x500 mm detector, isocentre at the volume
centre), took the raw line integrals of Plastimatch's HU conversion, and
saved each view as an 8-bit PNG: ``uint8(image / max * 255)`` (truncating),
written with ``matplotlib.pyplot.imsave``, which stretches the image's own
min..max over the 256 grey levels of its "gray" colormap. The loader resized it to 128^2 with
``scipy.ndimage.zoom(order=1)`` and divided by 255.

``faithful=True`` reproduces that chain, quantisation and stretch included
(no gradient). ``faithful=False`` keeps only what is differentiable: divide
by the maximum, resize; use it inside a loss.

Views follow our angle convention (``x2ct.physics.geometry``): 0 is PA
(X2CT's view 1 after its left-right flip), 90 the left lateral (source on the
patient's right). X2CT's own lateral had the source on the patient's left
(``-nrm "1 0 0"``); both show anterior on the left and differ only in which
side the cone magnifies more. Render angle 270 and flip the columns to get
X2CT's exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from x2ct.physics.attenuation import plastimatch_mu
from x2ct.physics.geometry import X2CT_GEOMETRY, DRRGeometry
from x2ct.physics.projector import project

#: Side of the images the X2CT models take.
X2CT_SIZE = 128

#: The 8-bit values of matplotlib's 256-level "gray" colormap: its table is np.linspace(0, 1, 256),
#: truncated after * 255, so 24 of the levels come out one lower (33 -> 32, ...).
_GREY_LEVELS = torch.from_numpy((np.linspace(0.0, 1.0, 256) * 255).astype(np.uint8)).float()


def x2ct_views(hu: torch.Tensor, spacing, angles, size: int = X2CT_SIZE,
               geometry: DRRGeometry = X2CT_GEOMETRY, faithful: bool = True) -> torch.Tensor:
    """Canonical HU volumes (B, 1, D, H, W) -> X2CT-protocol views (B, V, size, size) in [0, 1]."""
    integrals = project(plastimatch_mu(hu), spacing, angles, geometry)
    return x2ct_normalise(integrals, size, faithful)


def x2ct_normalise(integrals: torch.Tensor, size: int = X2CT_SIZE, faithful: bool = True) -> torch.Tensor:
    """Line-integral images (B, V, rows, cols) -> X2CT's 8-bit-PNG-then-resize values in [0, 1]."""
    peak = integrals.amax(dim=(-2, -1), keepdim=True).clamp(min=torch.finfo(integrals.dtype).tiny)
    image = integrals / peak * 255.0
    if faithful:
        image = torch.floor(image).clamp(0, 255).float()  # numpy astype(uint8) truncates
        low = image.amin(dim=(-2, -1), keepdim=True)
        high = image.amax(dim=(-2, -1), keepdim=True)
        # imsave: normalise to [0, 1] over the image's range (in float32, as matplotlib does for
        # uint8), then index its 256-level grey colormap (truncating)
        level = torch.floor((image - low) / (high - low).clamp(min=1.0) * 256.0).clamp(0, 255).long()
        image = _GREY_LEVELS.to(image.device)[level]
    if image.shape[-2:] != (size, size):
        # scipy.ndimage.zoom(order=1) samples the corners exactly, as align_corners=True does
        image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=True)
    return image / 255.0
